//! Hostile input on every route (issue 8): property-based requests (malformed JSON, wrong types,
//! huge numbers, huge strings, unicode, missing fields, odd multipart forms, traversal in paths,
//! junk queries) and a fixed list of known-nasty bodies. Nothing may answer 5xx, hang or panic,
//! every error is the JSON error body, and the server still answers `/health` afterwards.
//!
//! Requests go out through a raw socket (`common::raw_http`) so paths reach the server exactly as
//! generated. The generators are seeded (fixed seeds, bounded case counts): a failure reproduces.

#[path = "../common/mod.rs"]
mod common;
mod auth;
mod strategies;
mod traversal;

use std::time::Duration;

use common::panics::panics_so_far;
use common::raw_http::{self, RawResponse};
use common::{start_loaded, ServerThread};
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use serde_json::Value;
use strategies::{HostileRequest, BOUNDARY};

/// Generated requests per property run.
const CASES: u32 = 600;
/// No request may take longer (a hang).
const TIMEOUT: Duration = Duration::from_secs(15);

fn runner(cases: u32, seed: u64) -> TestRunner {
    TestRunner::new(Config { cases, rng_seed: RngSeed::Fixed(seed), failure_persistence: None, max_shrink_iters: 256, ..Config::default() })
}

fn send(server: &ServerThread, req: &HostileRequest) -> Result<RawResponse, String> {
    let mut headers = Vec::new();
    if let Some(ct) = &req.content_type {
        headers.push(("Content-Type", ct.as_str()));
    }
    raw_http::send(&server.base, &req.method, &req.path, &headers, &req.body, TIMEOUT)
}

/// The properties every answer must have: no 5xx, and an error body that is the JSON error shape
/// (the Swagger UI's own pages aside).
fn check_answer(req: &HostileRequest, resp: &RawResponse) -> Result<(), TestCaseError> {
    proptest::prop_assert!(resp.status < 500, "{} {} -> {} {}", req.method, req.path, resp.status, resp.text());
    if resp.status >= 400 && req.method != "HEAD" && !req.path.starts_with("/api/docs") {
        let v: Value = resp.json().ok_or_else(|| TestCaseError::fail(format!("{} {} -> {}: not JSON: {}", req.method, req.path, resp.status, resp.text())))?;
        proptest::prop_assert!(v["code"].is_string() && v["error"].is_string(), "{} {} -> {}: {v}", req.method, req.path, resp.status);
    }
    if resp.status == 429 {
        proptest::prop_assert!(resp.header("retry-after").is_some(), "429 without Retry-After");
    }
    Ok(())
}

fn assert_still_healthy(server: &ServerThread) {
    let health = raw_http::send(&server.base, "GET", "/health", &[], b"", TIMEOUT).expect("health answers");
    assert_eq!(health.status, 200, "{}", health.text());
}

#[test]
fn generated_requests_on_every_route_get_no_5xx_no_hang_no_panic() {
    let panics = panics_so_far();
    let server = ServerThread::start(|_| {});
    let mut runner = runner(CASES, 0x5eed_0008);
    let statuses = std::cell::RefCell::new(std::collections::BTreeMap::new());
    let result = runner.run(&strategies::request(wan_server::server::ROUTES), |req| {
        let resp = send(&server, &req).map_err(|e| TestCaseError::fail(format!("{} {}: {e} (a hang or a dropped connection)", req.method, req.path)))?;
        *statuses.borrow_mut().entry(resp.status).or_insert(0usize) += 1;
        check_answer(&req, &resp)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert_still_healthy(&server);
    assert_eq!(panics_so_far(), panics, "a handler panicked");
    let statuses = statuses.into_inner();
    // The generators reach past the first check: some requests are admitted or served.
    let ok = statuses.iter().filter(|(s, _)| **s < 300).map(|(_, n)| n).sum::<usize>();
    assert!(ok > 0 && statuses.keys().any(|s| *s == 400) && statuses.keys().any(|s| *s == 404), "{statuses:?}");
    eprintln!("hostile: {CASES} generated requests, statuses {statuses:?}");
}

#[test]
fn generated_multipart_forms_on_the_upload_routes_get_no_5xx() {
    let panics = panics_so_far();
    let server = ServerThread::start(|c| c.max_image_bytes = 64 * 1024);
    let uploads = server.data_dir.join("uploads");
    const ROUTES: [&str; 3] = ["/api/v1/generate/image-to-video", "/api/v1/generate/video-to-video", "/api/v1/storage/upload"];
    let strategy = (proptest::sample::select(&ROUTES[..]), strategies::multipart_body());
    let mut runner = runner(CASES / 2, 0x5eed_f0f0);
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    let result = runner.run(&strategy, |(path, body)| {
        let req = HostileRequest { method: "POST".into(), path: path.to_string(), content_type: Some(ct.clone()), body };
        let resp = send(&server, &req).map_err(|e| TestCaseError::fail(format!("POST {path}: {e}")))?;
        check_answer(&req, &resp)?;
        // Random bytes are never an image or a video: nothing is stored, not even a temporary.
        proptest::prop_assert!(resp.status >= 400, "random form accepted: {}", resp.text());
        let left: Vec<_> = std::fs::read_dir(&uploads).map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect()).unwrap_or_default();
        proptest::prop_assert!(left.is_empty(), "a refused upload left {left:?}");
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert_still_healthy(&server);
    assert_eq!(panics_so_far(), panics, "a handler panicked");
}

#[actix_web::test]
async fn known_nasty_bodies_get_no_5xx() {
    use rand::{Rng, SeedableRng};
    let panics = panics_so_far();
    let s = start_loaded(|_| {}).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut bodies: Vec<Vec<u8>> = vec![
        b"{".to_vec(),
        b"null".to_vec(),
        br#"{"prompt": 12}"#.to_vec(),
        br#"{"prompt": "x", "num_frames": 1e300}"#.to_vec(),
        br#"{"prompt": "x", "num_frames": 99999999999999999999999}"#.to_vec(),
        br#"{"prompt": "x", "seed": 18446744073709551616}"#.to_vec(),
        br#"{"prompt": "x", "guidance_scale": "NaN"}"#.to_vec(),
        format!(r#"{{"prompt": "{}"}}"#, "\u{1F600}\u{202E}".repeat(20_000)).into_bytes(),
        br#"{"prompts": []}"#.to_vec(),
        br#"{"prompts": [1, 2]}"#.to_vec(),
        br#"{"model_id": "../../etc"}"#.to_vec(),
        br#"{"model_id": "a/b", "revision": "../../x"}"#.to_vec(),
        br#"{"image_start": "!!!notbase64"}"#.to_vec(),
        br#"{"image_start": "aGVsbG8="}"#.to_vec(),
    ];
    for _ in 0..40 {
        let len = rng.random_range(0..300);
        bodies.push((0..len).map(|_| rng.random::<u8>()).collect());
    }
    let paths = [
        ("POST", "/api/v1/generate/text-to-video"),
        ("POST", "/api/v1/generate/image-to-video"),
        ("POST", "/api/v1/generate/video-to-video"),
        ("POST", "/api/v1/models/download"),
        ("POST", "/api/v1/models/load"),
        ("POST", "/api/v1/storage/upload"),
        ("POST", "/api/v1/job/%00%ff/cancel"),
        ("GET", "/api/v1/jobs?limit=-1&offset=999999999999999999999"),
        ("GET", "/api/v1/outputs?limit=99999999999999999999"),
        ("GET", "/api/v1/preview/%2e%2e?width=abc"),
        ("GET", "/api/v1/job/%F0%9F%98%80"),
        ("DELETE", "/api/v1/queue/..%2f.."),
    ];
    let mut count = 0;
    for (method, path) in paths {
        for (i, b) in bodies.iter().enumerate() {
            let ct = ["application/json", "multipart/form-data; boundary=xyz", "text/plain", "multipart/form-data"][i % 4];
            let resp = tokio::time::timeout(
                Duration::from_secs(10),
                s.client.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), s.url(path)).header("Content-Type", ct).body(b.clone()).send(),
            )
            .await
            .expect("no hang")
            .unwrap();
            let st = resp.status().as_u16();
            assert!(st < 500, "{method} {path} body #{i} -> {st}");
            if st >= 400 {
                let v: Value = resp.json().await.unwrap_or_else(|_| panic!("{method} {path} #{i}: error body is not JSON"));
                assert!(v["code"].is_string() && v["error"].is_string(), "{v}");
            }
            count += 1;
        }
    }
    assert!(count > 500);
    assert_eq!(s.client.get(s.url("/health")).send().await.unwrap().status(), 200);
    assert_eq!(panics_so_far(), panics, "a handler panicked");
    s.stop().await;
}
