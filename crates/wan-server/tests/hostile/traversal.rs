//! Traversal on every route that takes a file name, a job id or a stored key: `..`, `%2e%2e`,
//! `%2f`, backslashes, absolute paths, overlong UTF-8, and symlinks planted in `outputs/` and
//! `uploads/` (to a file, to a directory, to an absolute path) never reach outside; in-progress and
//! hidden files are never served; a job's output is never served before it is whole.

use std::time::{Duration, Instant};

use crate::common::raw_http;
use crate::common::ServerThread;

const SECRET: &str = "TOP-SECRET-CONTENT";
const TIMEOUT: Duration = Duration::from_secs(15);

/// Names that try to leave the directory, as they appear in a request path.
const ESCAPES: &[&str] = &[
    "..", "%2e%2e", "%2E%2E", ".%2e", "%2e.", "..%2fsecret.txt", "%2e%2e%2fsecret.txt", "%2e%2e/secret.txt", "../secret.txt",
    "..%5csecret.txt", "..\\secret.txt", "%2fetc%2fpasswd", "%2Fetc%2Fpasswd", "/etc/passwd", "..%2f..%2f..%2f..%2fetc%2fpasswd",
    "%252e%252e%252fsecret.txt", "%c0%ae%c0%ae%2fsecret.txt", "....//secret.txt", "link.mp4", "abs.mp4", "linkdir%2fsecret.txt",
    "linkdir/secret.txt", "linkdir", ".partial%2fjob.mp4", ".partial/job.mp4", ".partial", ".hidden.mp4", "ok.mp4%00.txt",
    "ok.mp4%2f..%2f..%2fsecret.txt", "%00", "",
];

/// Routes with a file-name or id parameter (`{}` is replaced), as (method, template).
const NAMED_ROUTES: &[(&str, &str)] = &[
    ("GET", "/outputs/{}"),
    ("HEAD", "/outputs/{}"),
    ("GET", "/api/v1/preview/{}"),
    ("GET", "/api/v1/preview/{}?width=64"),
    ("GET", "/api/v1/job/{}"),
    ("POST", "/api/v1/job/{}/cancel"),
    ("GET", "/api/v1/job/{}/events"),
    ("DELETE", "/api/v1/queue/{}"),
];

/// Plants the secret outside `outputs/` and the traps inside it; returns the data directory.
fn plant(server: &ServerThread) -> std::path::PathBuf {
    let data = server.data_dir.clone();
    let outside = data.parent().unwrap();
    let outputs = data.join("outputs");
    std::fs::write(outside.join("secret.txt"), SECRET).unwrap();
    std::fs::write(data.join("secret.txt"), SECRET).unwrap();
    std::fs::write(outputs.join("ok.mp4"), b"\x00\x00\x00\x18ftypmp42 whole video").unwrap();
    std::fs::create_dir_all(outputs.join(".partial")).unwrap();
    std::fs::write(outputs.join(".partial/job.mp4"), SECRET).unwrap();
    std::fs::write(outputs.join(".hidden.mp4"), SECRET).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), outputs.join("link.mp4")).unwrap();
    std::os::unix::fs::symlink(outside, outputs.join("linkdir")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", outputs.join("abs.mp4")).unwrap();
    data
}

fn assert_refused(method: &str, path: &str, resp: &raw_http::RawResponse) {
    let text = resp.text();
    assert!((400..500).contains(&resp.status), "{method} {path} -> {} {text}", resp.status);
    assert!(!text.contains(SECRET) && !text.contains("root:"), "{method} {path} leaked: {text}");
}

#[test]
fn no_route_taking_a_name_or_id_reaches_outside_its_directory() {
    let server = ServerThread::start(|_| {});
    let data = plant(&server);
    let ok = raw_http::send(&server.base, "GET", "/outputs/ok.mp4", &[], b"", TIMEOUT).unwrap();
    assert_eq!(ok.status, 200, "the control file is served");
    let mut tried = 0;
    for (method, template) in NAMED_ROUTES {
        for name in ESCAPES {
            let path = template.replace("{}", name);
            let resp = raw_http::send(&server.base, method, &path, &[], b"", TIMEOUT).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            assert_refused(method, &path, &resp);
            tried += 1;
        }
    }
    // The listing shows only the one complete regular file.
    let list = raw_http::send(&server.base, "GET", "/api/v1/outputs", &[], b"", TIMEOUT).unwrap().json().unwrap();
    let names: Vec<&str> = list["outputs"].as_array().unwrap().iter().map(|o| o["filename"].as_str().unwrap()).collect();
    assert_eq!(names, ["ok.mp4"]);
    assert!(tried >= 200, "{tried}");
    let _ = data;
}

/// Stored keys and model ids in request bodies: traversal, absolute paths and a symlink planted in
/// `uploads/` under a valid key name are all refused.
#[test]
fn keys_and_model_ids_in_bodies_never_name_a_file_outside() {
    let server = ServerThread::start(|_| {});
    let data = plant(&server);
    let uploads = data.join("uploads");
    let outside_png = data.parent().unwrap().join("outside.png");
    std::fs::write(&outside_png, crate::common::sample_png()).unwrap();
    let png_link = "up_0123456789abcdef01234567.png";
    let mp4_link = "up_0123456789abcdef01234567.mp4";
    std::os::unix::fs::symlink(&outside_png, uploads.join(png_link)).unwrap();
    std::os::unix::fs::symlink(data.parent().unwrap().join("secret.txt"), uploads.join(mp4_link)).unwrap();
    let json = [("Content-Type", "application/json")];
    let keys = [
        format!("uploads/{png_link}"),
        format!("uploads/{mp4_link}"),
        "uploads/../secret.txt".into(),
        "uploads/../../secret.txt".into(),
        "/etc/passwd".into(),
        "uploads/%2e%2e/secret.txt".into(),
        "uploads/up_0123456789abcdef01234567.png/../../secret.txt".into(),
        "../outputs/ok.mp4".into(),
    ];
    for key in &keys {
        for (route, field) in [("/api/v1/generate/image-to-video", "image_key"), ("/api/v1/generate/video-to-video", "video_key")] {
            let body = serde_json::json!({ field: key, "prompt": "x", "num_inference_steps": 2 }).to_string();
            let resp = raw_http::send(&server.base, "POST", route, &json, body.as_bytes(), TIMEOUT).unwrap();
            assert_refused("POST", &format!("{route} {field}={key}"), &resp);
            assert_eq!(resp.json().unwrap()["code"], "invalid_request", "{}", resp.text());
        }
    }
    for id in ["..", "../secret.txt", "/etc", "/etc/passwd", "%2e%2e", "wan-tiny-t2v/../../..", "./wan-tiny-t2v", "~/.ssh"] {
        let body = serde_json::json!({ "model_id": id }).to_string();
        let resp = raw_http::send(&server.base, "POST", "/api/v1/models/load", &json, body.as_bytes(), TIMEOUT).unwrap();
        assert_refused("POST", &format!("/api/v1/models/load {id}"), &resp);
    }
    for (id, rev) in [("../../etc", "main"), ("org/name", "../../x"), ("/abs/path", "main"), ("org/..", "main")] {
        let body = serde_json::json!({ "model_id": id, "revision": rev }).to_string();
        let resp = raw_http::send(&server.base, "POST", "/api/v1/models/download", &json, body.as_bytes(), TIMEOUT).unwrap();
        assert_refused("POST", &format!("/api/v1/models/download {id}@{rev}"), &resp);
    }
    let jobs = raw_http::send(&server.base, "GET", "/api/v1/jobs", &[], b"", TIMEOUT).unwrap().json().unwrap();
    assert_eq!(jobs["total"], 0, "nothing was admitted: {jobs}");
}

/// While a job runs, its output name answers 404; from the first 200 on, every answer is the
/// whole file (the pipeline writes under `.partial/` and the manager renames when done).
#[test]
fn a_job_output_is_never_served_before_it_is_whole() {
    let server = ServerThread::start(|_| {});
    server.step_ms.store(20, std::sync::atomic::Ordering::Relaxed);
    let json = [("Content-Type", "application/json")];
    // The fake pipeline's output: the sample video start_server made next to data/.
    let whole = std::fs::read(server.data_dir.parent().unwrap().join("sample.mp4")).unwrap();
    for round in 0..3 {
        let body = serde_json::json!({ "prompt": format!("whole {round}"), "num_inference_steps": 30 }).to_string();
        let resp = raw_http::send(&server.base, "POST", "/api/v1/generate/text-to-video", &json, body.as_bytes(), TIMEOUT).unwrap();
        assert_eq!(resp.status, 202, "{}", resp.text());
        let id = resp.json().unwrap()["job_id"].as_str().unwrap().to_string();
        let path = format!("/outputs/{id}.mp4");
        let (mut misses, mut hits) = (0, 0);
        let deadline = Instant::now() + Duration::from_secs(60);
        while hits < 5 {
            assert!(Instant::now() < deadline, "{id} never served");
            let resp = raw_http::send(&server.base, "GET", &path, &[], b"", TIMEOUT).unwrap();
            match resp.status {
                404 => {
                    assert_eq!(hits, 0, "{path} went back to 404 after it was served");
                    misses += 1;
                }
                200 => {
                    assert_eq!(resp.body.len(), whole.len(), "{path} served with {} of {} bytes", resp.body.len(), whole.len());
                    assert!(resp.body == whole, "{path} served different bytes");
                    hits += 1;
                }
                other => panic!("{path} -> {other}"),
            }
        }
        assert!(misses > 0, "the output was polled while the job ran");
    }
}
