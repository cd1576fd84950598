//! Test support: the real server on port 0 with temporary directories and a fake pipeline
//! (test double: sleeps per step, honours cancellation, writes a prepared mp4).

#![allow(dead_code)]

pub mod fake_hub;
pub mod memory;
pub mod panics;
pub mod raw_http;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wan_jobs::{Control, GenerationError, GenerationOutcome, JobSpec, StepProgress};
use wan_server::config::ServerConfig;
use wan_server::generator::{LoadedPipeline, PipelineFactory, Role};
use wan_server::server::{start, Running};

pub fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

/// A small real mp4 (made once with the ffmpeg program), or a fixed byte string where ffmpeg
/// is absent (then only byte-level checks are meaningful).
pub fn sample_mp4(dir: &Path) -> PathBuf {
    let p = dir.join("sample.mp4");
    let ok = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=8", "-frames:v", "9", "-pix_fmt", "yuv420p", "-c:v", "mpeg4"])
        .arg(&p)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "the ffmpeg program is needed to make the sample video");
    p
}

pub fn sample_png() -> Vec<u8> {
    let img = image::RgbImage::from_fn(32, 24, |x, y| image::Rgb([(x * 8) as u8, (y * 10) as u8, 128]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

pub struct FakeFactory {
    pub step_ms: Arc<AtomicU64>,
    pub video: PathBuf,
}

struct FakePipeline {
    step_ms: Arc<AtomicU64>,
    video: PathBuf,
}

impl LoadedPipeline for FakePipeline {
    fn generate(&self, job: &JobSpec, output_tmp: &Path, progress: &mut dyn FnMut(StepProgress) -> Control) -> Result<GenerationOutcome, GenerationError> {
        let total = job.params.num_inference_steps;
        for step in 1..=total {
            std::thread::sleep(Duration::from_millis(self.step_ms.load(Ordering::Relaxed)));
            if progress(StepProgress { step, total }) == Control::Stop {
                return Err(GenerationError::Cancelled);
            }
        }
        std::fs::copy(&self.video, output_tmp).map_err(|e| GenerationError::Failed(e.to_string()))?;
        Ok(GenerationOutcome { frames: Some(9) })
    }
}

impl PipelineFactory for FakeFactory {
    fn load(&self, dir: &Path, _role: Role) -> Result<Box<dyn LoadedPipeline>, String> {
        if !dir.join("model_index.json").is_file() {
            return Err("no model_index.json".into());
        }
        Ok(Box::new(FakePipeline { step_ms: self.step_ms.clone(), video: self.video.clone() }))
    }
}

pub struct TestServer {
    pub running: Option<Running>,
    pub base: String,
    pub tmp: tempfile::TempDir,
    pub step_ms: Arc<AtomicU64>,
    pub client: reqwest::Client,
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    /// Polls until `/health` is 200 (a model loaded).
    pub async fn wait_healthy(&self) {
        for _ in 0..200 {
            if self.client.get(self.url("/health")).send().await.map(|r| r.status() == 200).unwrap_or(false) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("server never became healthy");
    }

    /// Polls a job until it reaches a terminal status and returns it.
    pub async fn wait_job(&self, id: &str) -> serde_json::Value {
        for _ in 0..600 {
            let j: serde_json::Value = self.client.get(self.url(&format!("/api/v1/job/{id}"))).send().await.unwrap().json().await.unwrap();
            if ["completed", "failed", "cancelled"].contains(&j["status"].as_str().unwrap_or("")) {
                return j;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("job {id} never ended");
    }
}

/// Starts the server with the shared tiny models as its models directory; `tweak` edits the
/// settings (the directories are temporary).
pub async fn start_server(tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
    let tmp = tempfile::tempdir().unwrap();
    let video = sample_mp4(tmp.path());
    let mut cfg = ServerConfig {
        port: 0,
        data_dir: tmp.path().join("data"),
        models_dir: shared().join("models"),
        hub_cache_dir: Some(tmp.path().join("hub")),
        hub_endpoint: Some("http://127.0.0.1:9".into()),
        min_steps: 1,
        shutdown_timeout_s: 5,
        ..ServerConfig::default()
    };
    tweak(&mut cfg);
    let step_ms = Arc::new(AtomicU64::new(1));
    let running = start(cfg, Arc::new(FakeFactory { step_ms: step_ms.clone(), video })).await.unwrap();
    let base = format!("http://{}", running.addr);
    TestServer { running: Some(running), base, tmp, step_ms, client: reqwest::Client::new() }
}

/// As [`start_server`] with the tiny t2v and i2v models loaded.
pub async fn start_loaded(tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
    let s = start_server(|c| {
        c.model = Some("wan-tiny-t2v".into());
        c.i2v_model = Some("wan-tiny-i2v".into());
        tweak(c)
    })
    .await;
    s.wait_healthy().await;
    // Both slots: wait for i2v too.
    for _ in 0..200 {
        let info: serde_json::Value = s.client.get(s.url("/api/v1/model/info")).send().await.unwrap().json().await.unwrap();
        if info["loaded"]["i2v"]["state"] == "loaded" && info["loaded"]["t2v"]["state"] == "loaded" {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("models never loaded");
}

/// A loaded test server running on its own thread (its own actix system), for tests whose driver
/// is synchronous (proptest runs each case as a plain closure).
pub struct ServerThread {
    pub base: String,
    /// The server's `data/` directory.
    pub data_dir: PathBuf,
    /// Milliseconds the fake pipeline sleeps per step.
    pub step_ms: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerThread {
    /// As [`start_loaded`], on a new thread.
    pub fn start(tweak: impl FnOnce(&mut ServerConfig) + Send + 'static) -> ServerThread {
        Self::spawn(true, tweak)
    }

    /// As [`start_server`] (no model loaded), on a new thread.
    pub fn start_unloaded(tweak: impl FnOnce(&mut ServerConfig) + Send + 'static) -> ServerThread {
        Self::spawn(false, tweak)
    }

    fn spawn(loaded: bool, tweak: impl FnOnce(&mut ServerConfig) + Send + 'static) -> ServerThread {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let s = if loaded { start_loaded(tweak).await } else { start_server(tweak).await };
                ready_tx.send((s.base.clone(), s.tmp.path().join("data"), s.step_ms.clone())).unwrap();
                let _ = stop_rx.await;
                s.stop().await;
            })
        });
        let (base, data_dir, step_ms) = ready_rx.recv_timeout(Duration::from_secs(60)).expect("the server thread started");
        ServerThread { base, data_dir, step_ms, stop: Some(stop_tx), thread: Some(thread) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
