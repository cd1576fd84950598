//! The real pipeline behind the real server: the README's curl examples run as written (host and
//! port changed) against the demo model, and a text-, image- and video-to-video job each end in a
//! downloadable mp4 that ffprobe accepts.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use wan_server::config::ServerConfig;
use wan_server::server::{start, Running};
use wan_server::wan_adapter::WanPipelineFactory;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn shared() -> PathBuf {
    repo_root().join("../shared")
}

/// (codec, frames, width, height) as ffprobe counts them.
fn ffprobe(path: &Path) -> (String, u64, u64, u64) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries", "stream=codec_name,nb_read_frames,width,height", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(out.status.success(), "ffprobe failed on {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let f: Vec<&str> = text.split(',').collect();
    (f[0].to_string(), f[3].parse().unwrap(), f[1].parse().unwrap(), f[2].parse().unwrap())
}

async fn serve(models_dir: PathBuf, data_dir: PathBuf, model: &str, i2v: Option<&str>) -> (Running, String) {
    let cfg = ServerConfig {
        port: 0,
        data_dir,
        models_dir,
        model: Some(model.to_string()),
        i2v_model: i2v.map(str::to_string),
        hub_cache_dir: Some(std::env::temp_dir().join("wan-readme-empty-hub")),
        hub_endpoint: Some("http://127.0.0.1:9".into()),
        min_steps: 1,
        ..ServerConfig::default()
    };
    let running = start(cfg, Arc::new(WanPipelineFactory::cpu())).await.expect("server starts");
    let base = format!("http://{}", running.addr);
    (running, base)
}

async fn wait_loaded(client: &reqwest::Client, base: &str, roles: &[&str]) {
    for _ in 0..600 {
        let info: serde_json::Value = client.get(format!("{base}/api/v1/model/info")).send().await.unwrap().json().await.unwrap();
        if roles.iter().all(|r| info["loaded"][*r]["state"] == "loaded") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("models {roles:?} never loaded");
}

async fn wait_job(client: &reqwest::Client, base: &str, id: &str) -> serde_json::Value {
    for _ in 0..1200 {
        let j: serde_json::Value = client.get(format!("{base}/api/v1/job/{id}")).send().await.unwrap().json().await.unwrap();
        if ["completed", "failed", "cancelled"].contains(&j["status"].as_str().unwrap_or("")) {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {id} never ended");
}

/// Downloads a completed job's mp4 into `dir` and returns its path.
async fn download(client: &reqwest::Client, base: &str, job: &serde_json::Value, dir: &Path) -> PathBuf {
    assert_eq!(job["status"], "completed", "{job}");
    let url = job["output_url"].as_str().expect("output_url");
    let resp = client.get(format!("{base}{url}")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "video/mp4");
    let path = dir.join(url.rsplit('/').next().unwrap());
    std::fs::write(&path, resp.bytes().await.unwrap()).unwrap();
    path
}

/// Submits a generation request, waits for the job, and downloads its mp4 into `dir`.
async fn run_job(client: &reqwest::Client, base: &str, request: reqwest::RequestBuilder, dir: &Path) -> (serde_json::Value, PathBuf) {
    let r = request.send().await.unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<serde_json::Value>().await.unwrap()["job_id"].as_str().unwrap().to_string();
    let job = wait_job(client, base, &id).await;
    let path = download(client, base, &job, dir).await;
    (job, path)
}

#[actix_web::test]
async fn readme_curl_examples_produce_a_video_with_the_demo_model() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    wan_server::demo_model::write_demo_model(&models.join("demo"), 0).expect("demo model");
    let (running, base) = serve(models, tmp.path().join("data"), "demo", None).await;
    let client = reqwest::Client::new();
    wait_loaded(&client, &base, &["t2v"]).await;

    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let start = readme.find("<!-- curl-examples").expect("README marks its curl examples");
    let block = &readme[start..readme.find("<!-- /curl-examples -->").expect("end marker")];
    let script = block.split("```bash").nth(1).and_then(|b| b.split("```").next()).expect("a bash block");
    let script = script.replace("http://localhost:8080", &base);
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("timeout").arg("600").arg("bash").arg("-euo").arg("pipefail").arg("-c").arg(script).current_dir(&work).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "README examples failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("\"status\":\"completed\""), "{stdout}");
    assert_eq!(ffprobe(&tmp.path().join("work/sunset.mp4")), ("h264".to_string(), 9, 64, 48));
    running.shutdown().await;
}

#[actix_web::test]
async fn text_image_and_video_to_video_jobs_end_in_mp4s() {
    let tmp = tempfile::tempdir().unwrap();
    let (running, base) = serve(shared().join("models"), tmp.path().join("data"), "wan-tiny-t2v", Some("wan-tiny-i2v")).await;
    let client = reqwest::Client::new();
    wait_loaded(&client, &base, &["t2v", "i2v"]).await;

    // Text-to-video: 6 frames asked (not 4k+1) -> exactly 6 in the file.
    let request = client
        .post(format!("{base}/api/v1/generate/text-to-video"))
        .json(&serde_json::json!({"prompt": "A red fox runs", "num_frames": 6, "fps": 8, "width": 64, "height": 48,
                                  "num_inference_steps": 3, "seed": 7}));
    let (job, t2v) = run_job(&client, &base, request, tmp.path()).await;
    assert_eq!(job["seed"], 7);
    assert_eq!(ffprobe(&t2v), ("h264".to_string(), 6, 64, 48));

    // Image-to-video from an upload.
    let png = std::fs::read(shared().join("fixtures/pipeline_i2v/image.png")).unwrap();
    let form = reqwest::multipart::Form::new()
        .part("image", reqwest::multipart::Part::bytes(png).file_name("boat.png"))
        .text("prompt", "The boat drifts")
        .text("num_frames", "5")
        .text("fps", "8")
        .text("width", "48")
        .text("height", "64")
        .text("num_inference_steps", "2");
    let r = client.post(format!("{base}/api/v1/generate/image-to-video")).multipart(form).send().await.unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let id = r.json::<serde_json::Value>().await.unwrap()["job_id"].as_str().unwrap().to_string();
    let job = wait_job(&client, &base, &id).await;
    let i2v = download(&client, &base, &job, tmp.path()).await;
    assert_eq!(ffprobe(&i2v), ("h264".to_string(), 5, 48, 64));

    // Video-to-video from the text-to-video result.
    let form = reqwest::multipart::Form::new()
        .part("video", reqwest::multipart::Part::bytes(std::fs::read(&t2v).unwrap()).file_name("fox.mp4"))
        .text("prompt", "Transform into anime style")
        .text("strength", "0.6")
        .text("fps", "8")
        .text("num_inference_steps", "3");
    let r = client.post(format!("{base}/api/v1/generate/video-to-video")).multipart(form).send().await.unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let id = r.json::<serde_json::Value>().await.unwrap()["job_id"].as_str().unwrap().to_string();
    let job = wait_job(&client, &base, &id).await;
    let v2v = download(&client, &base, &job, tmp.path()).await;
    // Same size and frame count as the input video.
    assert_eq!(ffprobe(&v2v), ("h264".to_string(), 6, 64, 48));
    running.shutdown().await;
}

/// The Wan2.2 A14B layout (two experts, no CLIP for image-to-video) served as it is, with the
/// DiT blocks in fp8 and the text encoder kept between jobs: both jobs end in mp4s.
#[actix_web::test]
async fn wan22_two_expert_models_serve_text_and_image_to_video() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = ServerConfig {
        port: 0,
        data_dir: tmp.path().join("data"),
        models_dir: shared().join("models"),
        model: Some("wan22-tiny-t2v-moe".into()),
        i2v_model: Some("wan22-tiny-i2v-moe".into()),
        hub_cache_dir: Some(std::env::temp_dir().join("wan-readme-empty-hub")),
        hub_endpoint: Some("http://127.0.0.1:9".into()),
        min_steps: 1,
        ..ServerConfig::default()
    };
    let factory = WanPipelineFactory::cpu().with_weights(wan_pipeline::fp8::WeightStorage::Fp8E4m3).with_text_encoder_kept(true);
    let running = start(cfg, Arc::new(factory)).await.expect("server starts");
    let base = format!("http://{}", running.addr);
    let client = reqwest::Client::new();
    wait_loaded(&client, &base, &["t2v", "i2v"]).await;

    let request = client
        .post(format!("{base}/api/v1/generate/text-to-video"))
        .json(&serde_json::json!({"prompt": "A paper boat", "num_frames": 9, "fps": 8, "width": 64, "height": 48,
                                  "num_inference_steps": 4, "seed": 3}));
    let (_, t2v) = run_job(&client, &base, request, tmp.path()).await;
    assert_eq!(ffprobe(&t2v), ("h264".to_string(), 9, 64, 48));

    let png = std::fs::read(shared().join("fixtures/pipeline_i2v_moe/image.png")).unwrap();
    let form = reqwest::multipart::Form::new()
        .part("image", reqwest::multipart::Part::bytes(png).file_name("lighthouse.png"))
        .text("prompt", "The beam sweeps")
        .text("num_frames", "5")
        .text("width", "48")
        .text("height", "64")
        .text("num_inference_steps", "4");
    let request = client.post(format!("{base}/api/v1/generate/image-to-video")).multipart(form);
    let (_, i2v) = run_job(&client, &base, request, tmp.path()).await;
    assert_eq!(ffprobe(&i2v), ("h264".to_string(), 5, 48, 64));
    running.shutdown().await;
}
