//! Models: what is on disk (registry), what is being fetched (hub), and the merged catalogue that
//! `GET /api/v1/models` and `wan-server models` show.

pub mod hub;
pub mod registry;

use std::path::Path;

use serde::Serialize;

use crate::generator::{ModelSlots, Role, SlotState};
use hub::{DownloadProgress, Downloads};

/// One entry of `GET /api/v1/models`: 002's fields plus API.md's.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ModelEntry {
    pub id: String,
    /// 002's `name`: the model family.
    pub name: String,
    /// `huggingface` (hub cache) or `local` (models directory).
    pub provider: String,
    pub cache_dir: String,
    /// Every needed file is present (same as `complete`, 002's name).
    pub downloaded: bool,
    pub complete: bool,
    pub size_bytes: u64,
    /// `t2v`, `i2v`, or null for a pipeline that is not Wan.
    pub role: Option<Role>,
    pub loaded: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download: Option<DownloadProgress>,
}

/// Every model found on disk or being downloaded, with its load state.
pub fn catalog(models_dir: &Path, hub_cache: &Path, downloads: &Downloads, slots: &ModelSlots) -> Vec<ModelEntry> {
    let loaded_dirs: Vec<_> = [Role::T2v, Role::I2v]
        .into_iter()
        .filter_map(|r| match slots.state(r) {
            SlotState::Loaded { dir, .. } => Some(dir),
            _ => None,
        })
        .collect();
    let mut entries: Vec<ModelEntry> = registry::scan(models_dir, hub_cache)
        .into_iter()
        .map(|m| {
            let running = downloads.is_running(&m.id);
            ModelEntry {
                name: "Wan2.1".into(),
                provider: m.provider.into(),
                cache_dir: m.cache_dir.display().to_string(),
                downloaded: m.complete && !running,
                complete: m.complete && !running,
                size_bytes: m.size_bytes,
                role: m.role,
                loaded: loaded_dirs.iter().any(|d| d == &m.dir),
                download: if m.provider == "huggingface" { downloads.progress(&m.id) } else { None },
                id: m.id,
            }
        })
        .collect();
    for repo in downloads.running_repos() {
        if !entries.iter().any(|e| e.id == repo) {
            entries.push(ModelEntry {
                id: repo.clone(),
                name: "Wan2.1".into(),
                provider: "huggingface".into(),
                cache_dir: downloads.hub().cache_dir.display().to_string(),
                downloaded: false,
                complete: false,
                size_bytes: 0,
                role: None,
                loaded: false,
                download: downloads.progress(&repo),
            });
        }
    }
    entries
}
