//! Finding models in the Hugging Face hub cache, the layout Python's huggingface_hub writes:
//! `$HF_HUB_CACHE` (default `$HF_HOME/hub`, default `~/.cache/huggingface/hub`) /
//! `models--{org}--{name}/{blobs,refs,snapshots}`, with `refs/{revision}` holding the commit and
//! `snapshots/{commit}/` holding the files (symlinks into `blobs/`).
//!
//! Read-only: downloading is the server's business (hf-hub); the pipeline only resolves a repo id
//! to the snapshot directory a download left behind.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The hub cache directory from the environment, as huggingface_hub resolves it.
pub fn hub_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(home) = std::env::var_os("HF_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home).join("hub");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("huggingface").join("hub")
}

/// Whether `spec` has the form of a hub repo id (`org/name`, no other separators).
pub fn is_repo_id(spec: &str) -> bool {
    let mut parts = spec.split('/');
    let (Some(org), Some(name), None) = (parts.next(), parts.next(), parts.next()) else { return false };
    let ok = |s: &str| !s.is_empty() && s != "." && s != ".." && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    ok(org) && ok(name)
}

/// `models--org--name` under the cache.
pub fn repo_cache_dir(cache: &Path, repo_id: &str) -> PathBuf {
    cache.join(format!("models--{}", repo_id.replace('/', "--")))
}

/// The snapshot directory of `repo_id` at `revision` (a branch/tag in refs/, or a commit hash).
pub fn snapshot_dir(cache: &Path, repo_id: &str, revision: &str) -> Option<PathBuf> {
    let repo = repo_cache_dir(cache, repo_id);
    let commit = match std::fs::read_to_string(repo.join("refs").join(revision)) {
        Ok(c) => c.trim().to_string(),
        Err(_) => revision.to_string(),
    };
    if commit.is_empty() || commit.contains('/') || commit.contains("..") {
        return None;
    }
    let dir = repo.join("snapshots").join(commit);
    dir.is_dir().then_some(dir)
}

/// Resolves a model given on the command line or in the config: an existing directory is used
/// as it is; otherwise a repo id is looked up in the hub cache (revision `main`).
pub fn resolve_model(spec: &str) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if is_repo_id(spec) {
        let cache = hub_cache_dir();
        return snapshot_dir(&cache, spec, "main").ok_or_else(|| Error::MissingModelFile {
            path: repo_cache_dir(&cache, spec),
            what: format!("a downloaded snapshot of {spec} (run `wan-server download {spec}` first)"),
        });
    }
    Err(Error::InvalidInput(format!("model {spec:?} is neither a directory nor a hub repo id (org/name)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_are_recognised() {
        assert!(is_repo_id("Wan-AI/Wan2.1-T2V-1.3B-Diffusers"));
        assert!(!is_repo_id("../etc"));
        assert!(!is_repo_id("a/b/c"));
        assert!(!is_repo_id("a/.."));
        assert!(!is_repo_id("/abs"));
    }

    #[test]
    fn snapshot_is_found_through_refs() {
        let cache = std::env::temp_dir().join(format!("wan-hubcache-{}", std::process::id()));
        let repo = repo_cache_dir(&cache, "org/model");
        let commit = "0123456789abcdef0123456789abcdef01234567";
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots").join(commit)).unwrap();
        std::fs::write(repo.join("refs").join("main"), commit).unwrap();
        assert_eq!(snapshot_dir(&cache, "org/model", "main"), Some(repo.join("snapshots").join(commit)));
        assert_eq!(snapshot_dir(&cache, "org/other", "main"), None);
        std::fs::remove_dir_all(&cache).unwrap();
    }
}
