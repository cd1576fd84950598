//! Out of memory is a refused or failed job, never a dead server: the real pipeline on the tiny
//! t2v model behind the real server, with an artificially small `--vram-budget` (between what a
//! small job and a large one are estimated to need).
//!
//! - A text-to-video job over the budget is refused at admission (400) with the estimate.
//! - A video-to-video job without a size takes its size from the upload, so admission cannot
//!   estimate it: it is admitted, then fails when it starts, with the figures in its error.
//! - After both, a small job runs to a complete mp4 and `/health` answers.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use candle_core::{DType, Device};
use wan_pipeline::device::DeviceChoice;
use wan_pipeline::memory::{estimate, JobShape, WeightBytes};
use wan_pipeline::pipeline::WanModels;
use wan_server::config::ServerConfig;
use wan_server::server::start;
use wan_server::wan_adapter::WanPipelineFactory;

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
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

#[actix_web::test]
async fn jobs_over_the_memory_budget_are_refused_or_fail_and_the_server_keeps_serving() {
    let model_dir = shared().join("models/wan-tiny-t2v");
    // The budget sits between the estimates of a small job and of the two large ones below.
    let models = WanModels::load(&model_dir, DType::F32, &Device::Cpu).unwrap();
    let weights = WeightBytes::of_dir(&model_dir, models.kind, DType::F32).unwrap();
    let shape = |width, height, num_frames, encodes_input| JobShape { width, height, num_frames, guidance: true, encodes_input };
    let small = estimate(&models, weights, shape(64, 48, 9, false)).peak();
    let big_t2v = estimate(&models, weights, shape(1024, 1024, 81, false)).peak();
    let big_v2v = estimate(&models, weights, shape(640, 480, 9, true)).peak();
    let budget = small + (big_t2v.min(big_v2v) - small) / 2;
    assert!(small < budget && budget < big_t2v && budget < big_v2v, "{small} {budget} {big_t2v} {big_v2v}");
    drop(models);

    let tmp = tempfile::tempdir().unwrap();
    let cfg = ServerConfig {
        port: 0,
        data_dir: tmp.path().join("data"),
        models_dir: shared().join("models"),
        model: Some("wan-tiny-t2v".into()),
        hub_cache_dir: Some(tmp.path().join("hub")),
        hub_endpoint: Some("http://127.0.0.1:9".into()),
        min_steps: 1,
        vram_budget: Some(budget.to_string()),
        ..ServerConfig::default()
    };
    let factory = WanPipelineFactory::new(DeviceChoice::Cpu, cfg.vram_budget_bytes().unwrap()).unwrap();
    let running = start(cfg, Arc::new(factory)).await.unwrap();
    let base = format!("http://{}", running.addr);
    let client = reqwest::Client::new();
    for _ in 0..600 {
        if client.get(format!("{base}/health")).send().await.map(|r| r.status() == 200).unwrap_or(false) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Over the budget at admission: 400, with what was asked, the estimate and the budget.
    let r = client
        .post(format!("{base}/api/v1/generate/text-to-video"))
        .json(&serde_json::json!({"prompt": "a fox", "num_frames": 81, "width": 1024, "height": 1024, "num_inference_steps": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains("1024x1024x81") && error.contains("needs about") && error.contains("memory budget"), "{body}");
    assert_eq!(body["code"], "invalid_request", "{body}");

    // Admitted (its size comes from the upload), then failed when it starts, with the figures.
    let clip = tmp.path().join("wide.mp4");
    let made = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=640x480:rate=8", "-frames:v", "9", "-pix_fmt", "yuv420p", "-c:v", "mpeg4"])
        .arg(&clip)
        .status()
        .expect("ffmpeg runs");
    assert!(made.success());
    let form = reqwest::multipart::Form::new()
        .part("video", reqwest::multipart::Part::bytes(std::fs::read(&clip).unwrap()).file_name("wide.mp4"))
        .text("prompt", "anime")
        .text("strength", "0.5")
        .text("num_inference_steps", "2");
    let r = client.post(format!("{base}/api/v1/generate/video-to-video")).multipart(form).send().await.unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let id = r.json::<serde_json::Value>().await.unwrap()["job_id"].as_str().unwrap().to_string();
    let job = wait_job(&client, &base, &id).await;
    assert_eq!(job["status"], "failed", "{job}");
    let why = job["error"].as_str().or(job["message"].as_str()).unwrap_or_default();
    assert!(why.contains("out of memory") && why.contains("640x480x9") && why.contains("memory budget"), "{job}");

    // The server goes on: a job that fits runs to a whole mp4.
    let r = client
        .post(format!("{base}/api/v1/generate/text-to-video"))
        .json(&serde_json::json!({"prompt": "a fox", "num_frames": 9, "fps": 8, "width": 64, "height": 48, "num_inference_steps": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let id = r.json::<serde_json::Value>().await.unwrap()["job_id"].as_str().unwrap().to_string();
    let job = wait_job(&client, &base, &id).await;
    assert_eq!(job["status"], "completed", "{job}");
    let mp4 = client.get(format!("{base}{}", job["output_url"].as_str().unwrap())).send().await.unwrap();
    assert_eq!(mp4.status(), 200);
    assert!(mp4.bytes().await.unwrap().len() > 100);
    assert_eq!(client.get(format!("{base}/health")).send().await.unwrap().status(), 200);
    running.shutdown().await;
}
