//! `POST /api/v1/storage/upload`: stores an image or video once so generation requests can name it
//! by `key` (`image_key` / `video_key`) instead of uploading again.

use actix_multipart::Multipart;
use actix_web::{post, web, HttpResponse};
use serde::Serialize;

use crate::error::ApiError;
use crate::state::AppState;
use crate::upload::{read_form, MediaKind, UploadLimits};

#[derive(Serialize, utoipa::ToSchema)]
pub struct StoredBody {
    /// How to name the upload in a request (same as `key`; uploads are not served back).
    pub url: String,
    pub key: String,
    pub content_type: String,
}

#[utoipa::path(post, path = "/api/v1/storage/upload", tag = "storage", request_body(content = crate::openapi::UploadForm, content_type = "multipart/form-data"),
    responses((status = 201, body = StoredBody), (status = 400, body = crate::error::ErrorBody), (status = 413, body = crate::error::ErrorBody), (status = 415, body = crate::error::ErrorBody)))]
#[post("/api/v1/storage/upload")]
pub async fn upload(state: web::Data<AppState>, payload: Multipart) -> Result<HttpResponse, ApiError> {
    let limits = UploadLimits { max_image_bytes: state.config.max_image_bytes, max_video_bytes: state.config.max_video_bytes };
    let form = read_form(payload, "file", &[MediaKind::Image, MediaKind::Video], limits, &state.config.uploads_dir()).await?;
    let file = form.file.ok_or_else(|| ApiError::bad_request("invalid_request", "Invalid request: the file field `file` is required"))?;
    Ok(HttpResponse::Created().json(StoredBody { url: format!("storage:{}", file.key), key: file.key, content_type: file.content_type.to_string() }))
}
