//! Downloads from the Hugging Face hub with the hf-hub crate into the standard hub cache
//! (`models--org--name/{blobs,snapshots,refs}`, the layout Python's huggingface_hub uses), so a model
//! fetched by either is found by the other.
//!
//! Only the files a diffusers pipeline needs are fetched (model_index.json, then each component's
//! configs and weights, the shards a weight index names). A repo already complete in the cache is
//! not requested at all; a second request for a repo being downloaded joins the first; a failed
//! download leaves no snapshot entry for the file it was writing, so the model is not complete.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hf_hub::api::tokio::{ApiBuilder, ApiError, Progress};
use hf_hub::{Cache, Repo, RepoType};
use serde::Serialize;

use super::registry::{first_missing, hub_snapshot, is_needed_file, is_repo_id, PipelineIndex};

/// Where and how to reach the hub.
#[derive(Clone, Debug)]
pub struct HubConfig {
    pub cache_dir: PathBuf,
    /// `HF_ENDPOINT`, else huggingface.co.
    pub endpoint: Option<String>,
    /// `HF_TOKEN`, else the token file of the cache's parent (`huggingface-cli login`).
    pub token: Option<String>,
}

impl HubConfig {
    /// The cache given, with `HF_ENDPOINT` and `HF_TOKEN` from the environment.
    pub fn from_env(cache_dir: PathBuf) -> Self {
        let nonempty = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let token = nonempty("HF_TOKEN").or_else(|| Cache::new(cache_dir.clone()).token());
        HubConfig { cache_dir, endpoint: nonempty("HF_ENDPOINT"), token }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{0:?} is not a hub repo id (expected org/name)")]
    BadRepoId(String),
    #[error("repo {0} was not found on the hub (or needs a token: set HF_TOKEN)")]
    RepoNotFound(String),
    #[error("downloading {file} from {repo} failed: {reason}")]
    Download { repo: String, file: String, reason: String },
    #[error("the hub's answer for {repo} is invalid: {reason}")]
    BadAnswer { repo: String, reason: String },
    #[error("the download of {repo} ended but {missing} is still missing")]
    Incomplete { repo: String, missing: String },
}

/// Progress of one repo download, shared by the task and the readers.
#[derive(Debug)]
pub struct DownloadState {
    pub repo: String,
    pub revision: String,
    started: Instant,
    bytes_done: AtomicU64,
    bytes_total: AtomicU64,
    outcome: Mutex<Option<Result<PathBuf, String>>>,
}

/// A snapshot of [`DownloadState`] for the API (`download` in `GET /api/v1/models`).
#[derive(Clone, Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub struct DownloadProgress {
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub rate_bytes_per_s: f64,
    pub eta_seconds: Option<f64>,
    /// `running`, `completed` or `failed`.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl DownloadState {
    fn new(repo: &str, revision: &str) -> Self {
        DownloadState {
            repo: repo.to_string(),
            revision: revision.to_string(),
            started: Instant::now(),
            bytes_done: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
            outcome: Mutex::new(None),
        }
    }

    pub fn is_running(&self) -> bool {
        self.outcome.lock().map(|o| o.is_none()).unwrap_or(false)
    }

    pub fn progress(&self) -> DownloadProgress {
        let done = self.bytes_done.load(Ordering::Relaxed);
        let total = self.bytes_total.load(Ordering::Relaxed).max(done);
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = done as f64 / secs;
        let outcome = self.outcome.lock().ok().and_then(|o| o.clone());
        let (state, error) = match outcome {
            None => ("running", None),
            Some(Ok(_)) => ("completed", None),
            Some(Err(e)) => ("failed", Some(e)),
        };
        let eta = (state == "running" && rate > 0.0).then(|| (total - done) as f64 / rate);
        DownloadProgress { bytes_done: done, bytes_total: total, rate_bytes_per_s: rate, eta_seconds: eta, state: state.into(), error }
    }

    fn finish(&self, outcome: Result<PathBuf, String>) {
        if let Ok(mut o) = self.outcome.lock() {
            *o = Some(outcome);
        }
    }
}

/// hf-hub's per-file progress callback, adding into the repo's byte counters.
#[derive(Clone)]
struct Counter(Arc<DownloadState>, bool);

impl Progress for Counter {
    async fn init(&mut self, size: usize, _filename: &str) {
        // Sizes are known up front when the hub lists them; otherwise add each file as it starts.
        if self.1 {
            self.0.bytes_total.fetch_add(size as u64, Ordering::Relaxed);
        }
    }
    async fn update(&mut self, size: usize) {
        self.0.bytes_done.fetch_add(size as u64, Ordering::Relaxed);
    }
    async fn finish(&mut self) {}
}

/// Downloads every file `repo` needs into the cache and returns its snapshot directory. Makes no
/// request when the cache already holds a complete pipeline for `revision`.
pub async fn download_repo(hub: &HubConfig, repo_id: &str, revision: &str, state: Arc<DownloadState>) -> Result<PathBuf, HubError> {
    if !is_repo_id(repo_id) {
        return Err(HubError::BadRepoId(repo_id.to_string()));
    }
    if let Some(dir) = hub_snapshot(&hub.cache_dir, repo_id, revision) {
        if matches!(first_missing(&dir), Ok(None)) {
            let size = super::registry::dir_size(&dir);
            state.bytes_total.store(size, Ordering::Relaxed);
            state.bytes_done.store(size, Ordering::Relaxed);
            return Ok(dir);
        }
    }
    let mut builder = ApiBuilder::from_cache(Cache::new(hub.cache_dir.clone())).with_progress(false).with_token(hub.token.clone());
    if let Some(endpoint) = &hub.endpoint {
        builder = builder.with_endpoint(endpoint.trim_end_matches('/').to_string());
    }
    let bad = |reason: String| HubError::BadAnswer { repo: repo_id.to_string(), reason };
    let api = builder.build().map_err(|e| bad(e.to_string()))?;
    let repo = api.repo(Repo::with_revision(repo_id.to_string(), RepoType::Model, revision.to_string()));

    // The file list, with sizes when the hub gives them (`blobs=true`).
    let resp = repo.info_request().query(&[("blobs", "true")]).send().await.map_err(|e| bad(e.to_string()))?;
    if matches!(resp.status().as_u16(), 401 | 404) {
        return Err(HubError::RepoNotFound(repo_id.to_string()));
    }
    let info: serde_json::Value = resp.error_for_status().map_err(|e| bad(e.to_string()))?.json().await.map_err(|e| bad(e.to_string()))?;
    let siblings: Vec<(String, Option<u64>)> = info
        .get("siblings")
        .and_then(|s| s.as_array())
        .ok_or_else(|| bad("no siblings in the repo info".into()))?
        .iter()
        .filter_map(|s| Some((s.get("rfilename")?.as_str()?.to_string(), s.get("size").and_then(|v| v.as_u64()))))
        .collect();

    let fetch = |file: String, counted: bool| {
        let repo = &repo;
        let state = state.clone();
        async move {
            repo.download_with_progress(&file, Counter(state, counted)).await.map_err(|e| HubError::Download {
                repo: repo_id.to_string(),
                file: file.clone(),
                reason: describe(&e),
            })
        }
    };

    let index = if siblings.iter().any(|(f, _)| f == "model_index.json") {
        let path = cached_or(&hub.cache_dir, repo_id, revision, "model_index.json", || fetch("model_index.json".into(), true)).await?;
        let text = std::fs::read_to_string(&path).map_err(|e| bad(format!("model_index.json unreadable: {e}")))?;
        Some(PipelineIndex::parse(&text).map_err(bad)?)
    } else {
        None
    };
    let mut wanted: Vec<(String, Option<u64>)> =
        siblings.iter().filter(|(f, _)| f != "model_index.json" && is_needed_file(f, index.as_ref())).cloned().collect();

    // Weight indexes first: the shards they name are the only weights of their component.
    let indexes: Vec<String> = wanted.iter().map(|(f, _)| f.clone()).filter(|f| f.ends_with(".safetensors.index.json")).collect();
    for idx_file in &indexes {
        let path = cached_or(&hub.cache_dir, repo_id, revision, idx_file, || fetch(idx_file.clone(), true)).await?;
        let text = std::fs::read_to_string(&path).map_err(|e| bad(format!("{idx_file} unreadable: {e}")))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("{idx_file}: {e}")))?;
        let shards: Vec<String> = v.get("weight_map").and_then(|m| m.as_object()).map(|m| m.values().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default();
        let dir = idx_file.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        wanted.retain(|(f, _)| {
            let in_dir = f.rsplit_once('/').map(|(d, _)| d).unwrap_or("") == dir;
            !(in_dir && f.ends_with(".safetensors")) || shards.iter().any(|s| f.rsplit('/').next() == Some(s.as_str()))
        });
    }
    wanted.retain(|(f, _)| !indexes.contains(f));

    let sizes_known = wanted.iter().all(|(_, s)| s.is_some());
    if sizes_known {
        let total: u64 = wanted.iter().filter_map(|(_, s)| *s).sum();
        state.bytes_total.fetch_add(total, Ordering::Relaxed);
    }
    for (file, size) in &wanted {
        if let Some(path) = cached(&hub.cache_dir, repo_id, revision, file) {
            let n = size.or_else(|| std::fs::metadata(&path).ok().map(|m| m.len())).unwrap_or(0);
            if !sizes_known {
                state.bytes_total.fetch_add(n, Ordering::Relaxed);
            }
            state.bytes_done.fetch_add(n, Ordering::Relaxed);
            continue;
        }
        fetch(file.clone(), !sizes_known).await?;
    }

    let dir = hub_snapshot(&hub.cache_dir, repo_id, revision).ok_or_else(|| bad("no snapshot was written".into()))?;
    if index.is_some() {
        if let Ok(Some(missing)) = first_missing(&dir) {
            return Err(HubError::Incomplete { repo: repo_id.to_string(), missing });
        }
    }
    Ok(dir)
}

fn describe(e: &ApiError) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

fn cached(cache_dir: &Path, repo_id: &str, revision: &str, file: &str) -> Option<PathBuf> {
    let p = hub_snapshot(cache_dir, repo_id, revision)?.join(file);
    p.exists().then_some(p)
}

async fn cached_or<F, Fut>(cache_dir: &Path, repo_id: &str, revision: &str, file: &str, fetch: F) -> Result<PathBuf, HubError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<PathBuf, HubError>>,
{
    match cached(cache_dir, repo_id, revision, file) {
        Some(p) => Ok(p),
        None => fetch().await,
    }
}

/// What starting a download did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartOutcome {
    Started,
    /// The same repo is already being downloaded: that download is the answer.
    AlreadyRunning,
}

/// The downloads of this server: at most one per repo at a time.
pub struct Downloads {
    hub: HubConfig,
    running: Mutex<HashMap<String, Arc<DownloadState>>>,
}

impl Downloads {
    pub fn new(hub: HubConfig) -> Self {
        Downloads { hub, running: Mutex::new(HashMap::new()) }
    }

    pub fn hub(&self) -> &HubConfig {
        &self.hub
    }

    /// Starts downloading `repo` in the background unless it is already being downloaded.
    pub fn start(self: &Arc<Self>, repo_id: &str, revision: &str) -> Result<(StartOutcome, Arc<DownloadState>), HubError> {
        if !is_repo_id(repo_id) {
            return Err(HubError::BadRepoId(repo_id.to_string()));
        }
        let key = format!("{repo_id}@{revision}");
        let state = {
            let mut running = self.running.lock().map_err(|_| HubError::BadAnswer { repo: repo_id.into(), reason: "download table poisoned".into() })?;
            if let Some(s) = running.get(&key).filter(|s| s.is_running()) {
                return Ok((StartOutcome::AlreadyRunning, s.clone()));
            }
            let s = Arc::new(DownloadState::new(repo_id, revision));
            running.insert(key, s.clone());
            s
        };
        let this = self.clone();
        let task_state = state.clone();
        tokio::spawn(async move {
            let outcome = download_repo(&this.hub, &task_state.repo, &task_state.revision, task_state.clone()).await;
            match &outcome {
                Ok(dir) => tracing::info!(repo = %task_state.repo, dir = %dir.display(), "download complete"),
                Err(e) => tracing::warn!(repo = %task_state.repo, error = %e, "download failed"),
            }
            task_state.finish(outcome.map_err(|e| e.to_string()));
        });
        Ok((StartOutcome::Started, state))
    }

    /// The latest download of `repo` (any revision), running or finished.
    pub fn progress(&self, repo_id: &str) -> Option<DownloadProgress> {
        let running = self.running.lock().ok()?;
        running.values().filter(|s| s.repo == repo_id).max_by_key(|s| s.started).map(|s| s.progress())
    }

    /// Repos with a download under way (listed even before their first file lands).
    pub fn running_repos(&self) -> Vec<String> {
        let Ok(running) = self.running.lock() else { return Vec::new() };
        running.values().filter(|s| s.is_running()).map(|s| s.repo.clone()).collect()
    }

    pub fn is_running(&self, repo_id: &str) -> bool {
        self.running_repos().iter().any(|r| r == repo_id)
    }

    /// Waits for a download's outcome (the command line and tests).
    pub async fn wait(state: &DownloadState) -> Result<PathBuf, String> {
        loop {
            if let Some(outcome) = state.outcome.lock().ok().and_then(|o| o.clone()) {
                return outcome;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// A state for a download run in the foreground (the `download` command).
    pub fn foreground_state(repo_id: &str, revision: &str) -> Arc<DownloadState> {
        Arc::new(DownloadState::new(repo_id, revision))
    }
}
