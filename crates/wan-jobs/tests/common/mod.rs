//! Test doubles and helpers shared by the integration tests.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use wan_jobs::{
    Control, GenerationError, GenerationOutcome, GenerationRequest, Generator, JobManager, JobSpec, JobsConfig, Priority,
    Readiness, StepProgress,
};

/// A generator double: each step sleeps `step_ms` and appends a chunk to the output. The prompt
/// steers it: containing "panic" panics at step 2, "fail" fails at step 2. It can be held before
/// its first step with `hold()` / `release()`, and records the order in which jobs start.
pub struct FakeGenerator {
    pub step_ms: AtomicU64,
    pub ready: AtomicBool,
    gate_open: Mutex<bool>,
    gate: Condvar,
    pub started: Mutex<Vec<String>>,
    pub runs: AtomicU64,
}

impl FakeGenerator {
    pub fn new(step_ms: u64) -> Arc<Self> {
        Arc::new(FakeGenerator {
            step_ms: AtomicU64::new(step_ms),
            ready: AtomicBool::new(true),
            gate_open: Mutex::new(true),
            gate: Condvar::new(),
            started: Mutex::new(Vec::new()),
            runs: AtomicU64::new(0),
        })
    }

    pub fn hold(&self) {
        *self.gate_open.lock() = false;
    }

    pub fn release(&self) {
        *self.gate_open.lock() = true;
        self.gate.notify_all();
    }

    pub fn started_prompts(&self) -> Vec<String> {
        self.started.lock().clone()
    }
}

/// The bytes the fake writes for a job: one line per step.
pub fn expected_output(spec_id: &str, seed: u64, steps: u32) -> Vec<u8> {
    (0..steps).flat_map(|i| format!("{spec_id} seed={seed} step={i}\n").into_bytes()).collect()
}

impl Generator for FakeGenerator {
    fn generate(
        &self,
        job: &JobSpec,
        output_tmp: &Path,
        progress: &mut dyn FnMut(StepProgress) -> Control,
    ) -> Result<GenerationOutcome, GenerationError> {
        self.started.lock().push(job.params.prompt.clone());
        self.runs.fetch_add(1, Ordering::SeqCst);
        {
            let mut open = self.gate_open.lock();
            while !*open {
                self.gate.wait(&mut open);
            }
        }
        let total = job.params.num_inference_steps;
        let mut file = std::fs::File::create(output_tmp).map_err(|e| GenerationError::Failed(e.to_string()))?;
        for i in 0..total {
            std::thread::sleep(Duration::from_millis(self.step_ms.load(Ordering::SeqCst)));
            if i == 1 && job.params.prompt.contains("panic") {
                panic!("fake generator panics on purpose");
            }
            if i == 1 && job.params.prompt.contains("fail") {
                return Err(GenerationError::Failed("Out of memory (on purpose)".into()));
            }
            file.write_all(format!("{} seed={} step={i}\n", job.job_id, job.params.seed).as_bytes())
                .and_then(|_| file.flush())
                .map_err(|e| GenerationError::Failed(e.to_string()))?;
            if progress(StepProgress { step: i + 1, total }) == Control::Stop {
                return Err(GenerationError::Cancelled);
            }
        }
        file.sync_all().map_err(|e| GenerationError::Failed(e.to_string()))?;
        Ok(GenerationOutcome { frames: Some(total) })
    }

    fn ready(&self) -> Readiness {
        if self.ready.load(Ordering::SeqCst) {
            Readiness::Ready
        } else {
            Readiness::NotReady("no model loaded (test)".into())
        }
    }
}

pub struct TestDirs {
    pub root: tempfile::TempDir,
}

impl TestDirs {
    pub fn new() -> Self {
        TestDirs { root: tempfile::tempdir().unwrap() }
    }

    pub fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }

    pub fn outputs(&self) -> PathBuf {
        self.root.path().join("outputs")
    }

    /// Test settings: step bounds opened down to 1 so jobs are short.
    pub fn config(&self, limit: usize) -> JobsConfig {
        let mut c = JobsConfig::new(self.data(), self.outputs());
        c.admission.max_concurrent_requests = limit;
        c.limits.num_inference_steps = wan_jobs::Bounds::new(1, 100);
        c.not_ready_poll_ms = 20;
        c
    }
}

pub fn request(prompt: &str, steps: i64) -> GenerationRequest {
    GenerationRequest {
        prompt: Some(prompt.into()),
        num_inference_steps: Some(steps),
        num_frames: Some(17),
        width: Some(64),
        height: Some(64),
        ..Default::default()
    }
}

pub fn request_with_priority(prompt: &str, steps: i64, priority: Priority) -> GenerationRequest {
    GenerationRequest { priority: Some(priority), ..request(prompt, steps) }
}

/// Polls `f` until it is true or `timeout` passes.
pub async fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    f()
}

/// Waits until the job is in a terminal state and returns it.
pub async fn wait_terminal(m: &JobManager, id: &str, timeout: Duration) -> wan_jobs::Job {
    let ok = wait_for(timeout, || m.get(id).map(|j| j.status.is_terminal()).unwrap_or(false)).await;
    let job = m.get(id).unwrap();
    assert!(ok, "job {id} did not end in {timeout:?}: {job:?}");
    job
}

/// Files directly in a directory (not in sub-directories).
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    v.sort();
    v
}
