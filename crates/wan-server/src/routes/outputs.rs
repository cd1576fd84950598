//! The generated files: `GET /outputs/{filename}` (byte ranges, ETag, Last-Modified, Content-Type
//! by actix-files) and the paged listing `GET /api/v1/outputs`.
//!
//! A name is served only when it is one plain file name directly in the outputs directory: no
//! separators (decoded or not), no `..`, no hidden names (in-progress files live in the hidden
//! `.partial/` directory and temporary names start with a dot), and never through a symlink.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use actix_files::NamedFile;
use actix_web::http::header::{ContentDisposition, DispositionType};
use actix_web::{get, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::state::AppState;

/// A safe plain file name, or None.
pub fn safe_name(name: &str) -> Option<&str> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains("..")
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    ok.then_some(name)
}

/// The regular file `name` directly in `dir` (not a symlink, not a directory), if it exists.
pub fn output_file(dir: &Path, name: &str) -> Result<PathBuf, ApiError> {
    let not_found = || ApiError::not_found("file_not_found", format!("No output file named {name:?}"));
    let name = safe_name(name).ok_or_else(not_found)?;
    let path = dir.join(name);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_file() => Ok(path),
        _ => Err(not_found()),
    }
}

#[utoipa::path(get, path = "/outputs/{filename}", tag = "outputs", params(("filename" = String, Path)),
    responses((status = 200, description = "The file (video/mp4, ...)"), (status = 206, description = "A byte range"), (status = 304, description = "Not modified"),
        (status = 404, body = crate::error::ErrorBody), (status = 416, description = "Range not satisfiable")))]
#[get("/outputs/{filename}")]
pub async fn serve_output(state: web::Data<AppState>, req: HttpRequest, filename: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let path = output_file(&state.config.outputs_dir(), &filename)?;
    let file = NamedFile::open_async(&path).await.map_err(|_| ApiError::not_found("file_not_found", format!("No output file named {:?}", filename.as_str())))?;
    let file = file.use_etag(true).use_last_modified(true).set_content_disposition(ContentDisposition { disposition: DispositionType::Inline, parameters: vec![] });
    Ok(file.into_response(&req))
}

/// `GET /api/v1/outputs` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutputsQuery {
    /// 1..=500, default 50.
    pub limit: Option<usize>,
    pub offset: Option<usize>,
    /// `video` or `image`.
    pub file_type: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct OutputEntry {
    pub filename: String,
    pub url: String,
    pub size_bytes: u64,
    /// RFC 3339 UTC.
    pub modified_at: String,
    /// `video` or `image`.
    pub file_type: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct OutputList {
    pub outputs: Vec<OutputEntry>,
    pub total: usize,
    pub limit: usize,
    pub offset: usize,
}

pub fn file_type_of(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    match ext.as_str() {
        "mp4" | "webm" | "mov" | "avi" | "mkv" => Some("video"),
        "png" | "jpg" | "jpeg" | "webp" | "gif" => Some("image"),
        _ => None,
    }
}

fn rfc3339(secs: u64) -> String {
    wan_jobs::Timestamp(secs as i64 * 1000).to_rfc3339()
}

#[utoipa::path(get, path = "/api/v1/outputs", tag = "outputs", params(OutputsQuery),
    responses((status = 200, body = OutputList), (status = 400, body = crate::error::ErrorBody)))]
#[get("/api/v1/outputs")]
pub async fn list_outputs(state: web::Data<AppState>, q: web::Query<OutputsQuery>) -> Result<HttpResponse, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("invalid_query", format!("Invalid query: limit must be 1..=500, got {limit}")));
    }
    let wanted = match q.file_type.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(t @ ("video" | "image")) => Some(t.to_string()),
        Some(t) => return Err(ApiError::bad_request("invalid_query", format!("Invalid query: file_type must be video or image, got {t:?}"))),
    };
    let dir = state.config.outputs_dir();
    let offset = q.offset.unwrap_or(0);
    let listing = web::block(move || -> Vec<(u64, OutputEntry)> {
        let Ok(rd) = std::fs::read_dir(&dir) else { return Vec::new() };
        let mut entries: Vec<(u64, OutputEntry)> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                safe_name(&name)?;
                let meta = std::fs::symlink_metadata(e.path()).ok().filter(|m| m.file_type().is_file())?;
                let ft = file_type_of(&name)?;
                if wanted.as_deref().is_some_and(|w| w != ft) {
                    return None;
                }
                let mtime = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs()).unwrap_or(0);
                Some((mtime, OutputEntry { url: format!("/outputs/{name}"), filename: name, size_bytes: meta.len(), modified_at: rfc3339(mtime), file_type: ft.into() }))
            })
            .collect();
        entries.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.filename.cmp(&b.1.filename)));
        entries
    })
    .await
    .map_err(ApiError::internal)?;
    let total = listing.len();
    let outputs = listing.into_iter().skip(offset).take(limit).map(|(_, e)| e).collect();
    Ok(HttpResponse::Ok().json(OutputList { outputs, total, limit, offset }))
}
