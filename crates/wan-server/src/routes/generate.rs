//! The three generation routes. Text-to-video takes JSON (one `prompt` or a `prompts` batch);
//! image- and video-to-video take `multipart/form-data` (the file streamed to disk) or JSON naming
//! a stored upload (`image_key` / `video_key`) or carrying a base64 `image_start`.
//! Each answers 202 with `{job_id, status, message}` and a `Location` header to the job.

use std::collections::HashMap;
use std::path::PathBuf;

use actix_multipart::Multipart;
use actix_web::http::header;
use actix_web::{post, web, HttpRequest, HttpResponse};
use base64::Engine;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use wan_jobs::{GenerationModeRequest, GenerationRequest, Job, Priority};

use crate::error::ApiError;
use crate::generator::Role;
use crate::media_check::{self, MediaCheckError};
use crate::state::AppState;
use crate::upload::{read_form, resolve_key, sniff, MediaKind, UploadLimits};

/// 002's answer to a generation request.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Accepted {
    pub job_id: String,
    pub status: String,
    pub message: String,
}

/// A `prompts` batch answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct BatchAccepted {
    pub jobs: Vec<Accepted>,
}

/// JSON body of the generation routes: 002's fields plus API.md's extras.
#[derive(Deserialize, Default)]
pub struct GenerateBody {
    #[serde(flatten)]
    pub request: GenerationRequest,
    /// A batch: one job per prompt, admitted all or none (text-to-video only).
    pub prompts: Option<Vec<String>>,
    /// Image-to-video: the image as base64 (optionally a `data:` URL).
    pub image_start: Option<String>,
    pub image_key: Option<String>,
    pub video_key: Option<String>,
}

fn accepted(job: &Job) -> Accepted {
    Accepted { job_id: job.job_id.to_string(), status: job.status.as_str().to_string(), message: "Video generation started".into() }
}

fn respond_one(job: &Job) -> HttpResponse {
    HttpResponse::Accepted().insert_header((header::LOCATION, format!("/api/v1/job/{}", job.job_id))).json(accepted(job))
}

/// 503 unless a model of `role` is loaded and the server is not stopping.
fn require_model(state: &AppState, role: Role) -> Result<(), ApiError> {
    if state.is_stopping() {
        return Err(wan_jobs::Error::ShuttingDown.into());
    }
    state.slots.require(role).map_err(|why| ApiError::Unavailable { code: "model_not_loaded", message: format!("Model not loaded: {why}") })
}

fn limits(state: &AppState) -> UploadLimits {
    UploadLimits { max_image_bytes: state.config.max_image_bytes, max_video_bytes: state.config.max_video_bytes }
}

fn is_multipart(req: &HttpRequest) -> bool {
    req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"))
}

fn is_json(req: &HttpRequest) -> bool {
    req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"))
}

/// Reads a JSON body with the configured size limit.
async fn read_json(state: &AppState, mut payload: web::Payload) -> Result<GenerateBody, ApiError> {
    let max = state.config.max_json_bytes;
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request("invalid_json", format!("Invalid request body: {e}")))?;
        if body.len() + chunk.len() > max {
            return Err(ApiError::PayloadTooLarge(format!("JSON body over the limit of {max} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| ApiError::bad_request("invalid_json", format!("Invalid request: {e}")))
}

/// Submits, removing a file this request uploaded when the job is not admitted (nothing is kept
/// for a refused request).
fn submit(state: &AppState, req: GenerationRequest, uploaded: Option<PathBuf>) -> Result<HttpResponse, ApiError> {
    match state.jobs.submit(req) {
        Ok(job) => Ok(respond_one(&job)),
        Err(e) => {
            if let Some(p) = uploaded {
                let _ = std::fs::remove_file(p);
            }
            Err(e.into())
        }
    }
}

#[utoipa::path(post, path = "/api/v1/generate/text-to-video", tag = "generation",
    request_body(content = crate::openapi::TextToVideoRequest, content_type = "application/json"),
    responses((status = 202, body = Accepted, description = "Admitted (a `prompts` batch answers `{\"jobs\": [...]}`)", headers(("Location" = String, description = "The job"))),
        (status = 400, body = crate::error::ErrorBody), (status = 413, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody, headers(("Retry-After" = u64))),
        (status = 503, body = crate::error::ErrorBody)))]
#[post("/api/v1/generate/text-to-video")]
pub async fn text_to_video(state: web::Data<AppState>, req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    if !is_json(&req) {
        return Err(ApiError::UnsupportedMediaType("Content-Type must be application/json".into()));
    }
    let body = read_json(&state, payload).await?;
    require_model(&state, Role::T2v)?;
    let mut request = body.request;
    request.mode = GenerationModeRequest::TextToVideo;
    match body.prompts {
        None => submit(&state, request, None),
        Some(prompts) => {
            if request.prompt.is_some() {
                return Err(ApiError::bad_request("invalid_request", "Invalid request: give either prompt or prompts, not both"));
            }
            let reqs = prompts.into_iter().map(|p| GenerationRequest { prompt: Some(p), ..request.clone() }).collect();
            let jobs = state.jobs.submit_batch(reqs)?;
            Ok(HttpResponse::Accepted().json(BatchAccepted { jobs: jobs.iter().map(accepted).collect() }))
        }
    }
}

/// Form fields into a request, each parsed with an error that names it.
fn request_from_fields(fields: &HashMap<String, String>) -> Result<GenerationRequest, ApiError> {
    fn int(f: &HashMap<String, String>, k: &str) -> Result<Option<i64>, ApiError> {
        f.get(k).filter(|v| !v.trim().is_empty()).map(|v| v.trim().parse::<i64>().map_err(|_| ApiError::bad_request("invalid_request", format!("Invalid request: {k} must be an integer, got {v:?}")))).transpose()
    }
    fn float(f: &HashMap<String, String>, k: &str) -> Result<Option<f64>, ApiError> {
        f.get(k)
            .filter(|v| !v.trim().is_empty())
            .map(|v| v.trim().parse::<f64>().ok().filter(|x| x.is_finite()).ok_or_else(|| ApiError::bad_request("invalid_request", format!("Invalid request: {k} must be a number, got {v:?}"))))
            .transpose()
    }
    let priority = match fields.get("priority").map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => None,
        Some(p) => Some(Priority::parse(p).ok_or_else(|| ApiError::bad_request("invalid_request", format!("Invalid request: priority must be high, normal or low, got {p:?}")))?),
    };
    Ok(GenerationRequest {
        mode: GenerationModeRequest::TextToVideo,
        prompt: fields.get("prompt").cloned(),
        negative_prompt: fields.get("negative_prompt").cloned(),
        num_frames: int(fields, "num_frames")?,
        fps: int(fields, "fps")?,
        width: int(fields, "width")?,
        height: int(fields, "height")?,
        seed: int(fields, "seed")?,
        guidance_scale: float(fields, "guidance_scale")?,
        num_inference_steps: int(fields, "num_inference_steps")?,
        strength: float(fields, "strength")?,
        priority,
        user_id: fields.get("user_id").cloned(),
        callback_url: fields.get("callback_url").cloned().filter(|s| !s.is_empty()),
    })
}

/// An input named by a stored key, or a 400 naming the field.
fn input_from_key(state: &AppState, field: &str, key: &str, kind: MediaKind) -> Result<PathBuf, ApiError> {
    match resolve_key(key, &state.config.uploads_dir()) {
        Some((path, k)) if k == kind => Ok(path),
        _ => Err(ApiError::bad_request("invalid_request", format!("Invalid request: {field} {key:?} names no stored {} upload", kind.as_str()))),
    }
}

/// A base64 `image_start`, checked and stored like an upload. Blocking (decodes the image).
fn store_base64_image(state: &AppState, data: &str) -> Result<PathBuf, ApiError> {
    let b64 = data.split_once(";base64,").map(|(_, b)| b).unwrap_or(data);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| ApiError::bad_request("invalid_request", format!("Invalid request: image_start is not base64: {e}")))?;
    if bytes.len() as u64 > state.config.max_image_bytes {
        return Err(ApiError::PayloadTooLarge(format!("image_start is over the limit of {} bytes", state.config.max_image_bytes)));
    }
    let Some((_, ext, MediaKind::Image)) = sniff(&bytes) else {
        return Err(ApiError::UnsupportedMediaType("image_start is not a PNG, JPEG or WebP image (judged from its content)".into()));
    };
    media_check::check_image_bytes(&bytes, &media_check::upload_limits(state.config.max_image_bytes)).map_err(|e| match e {
        MediaCheckError::Invalid { .. } => ApiError::bad_request("invalid_media", e.to_string()),
        MediaCheckError::Io(_) => ApiError::internal(e),
    })?;
    let dir = state.config.uploads_dir();
    std::fs::create_dir_all(&dir).map_err(ApiError::internal)?;
    let hex: String = (0..24).map(|_| char::from_digit(rand::random_range(0..16u32), 16).unwrap_or('0')).collect();
    let path = dir.join(format!("up_{hex}.{ext}"));
    let tmp = dir.join(format!(".tmp-{hex}"));
    std::fs::write(&tmp, &bytes).and_then(|_| std::fs::rename(&tmp, &path)).map_err(ApiError::internal)?;
    Ok(path)
}

#[utoipa::path(post, path = "/api/v1/generate/image-to-video", tag = "generation",
    request_body(content = crate::openapi::ImageToVideoForm, content_type = "multipart/form-data", description = "Or JSON with `image_start` (base64) or `image_key` plus the same fields"),
    responses((status = 202, body = Accepted, headers(("Location" = String))), (status = 400, body = crate::error::ErrorBody), (status = 413, body = crate::error::ErrorBody),
        (status = 415, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
#[post("/api/v1/generate/image-to-video")]
pub async fn image_to_video(state: web::Data<AppState>, req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    generate_from_media(state, req, payload, MediaKind::Image).await
}

#[utoipa::path(post, path = "/api/v1/generate/video-to-video", tag = "generation",
    request_body(content = crate::openapi::VideoToVideoForm, content_type = "multipart/form-data", description = "Or JSON with `video_key` plus the same fields"),
    responses((status = 202, body = Accepted, headers(("Location" = String))), (status = 400, body = crate::error::ErrorBody), (status = 413, body = crate::error::ErrorBody),
        (status = 415, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
#[post("/api/v1/generate/video-to-video")]
pub async fn video_to_video(state: web::Data<AppState>, req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    generate_from_media(state, req, payload, MediaKind::Video).await
}

async fn generate_from_media(state: web::Data<AppState>, req: HttpRequest, payload: web::Payload, kind: MediaKind) -> Result<HttpResponse, ApiError> {
    let (role, file_field, key_field) = match kind {
        MediaKind::Image => (Role::I2v, "image", "image_key"),
        MediaKind::Video => (Role::T2v, "video", "video_key"),
    };
    // Refuse before reading a possibly large upload.
    require_model(&state, role)?;
    let (mut request, input, uploaded) = if is_multipart(&req) {
        let form = read_form(Multipart::new(req.headers(), payload), file_field, &[kind], limits(&state), &state.config.uploads_dir()).await?;
        let request = match request_from_fields(&form.fields) {
            Ok(r) => r,
            Err(e) => {
                if let Some(f) = &form.file {
                    let _ = std::fs::remove_file(&f.path);
                }
                return Err(e);
            }
        };
        match (form.file, form.fields.get(key_field)) {
            (Some(f), _) => (request, f.path.clone(), Some(f.path)),
            (None, Some(key)) => (request, input_from_key(&state, key_field, key, kind)?, None),
            (None, None) => return Err(ApiError::bad_request("invalid_request", format!("Invalid request: the file field {file_field} (or {key_field}) is required"))),
        }
    } else if is_json(&req) {
        let body = read_json(&state, payload).await?;
        let key = if kind == MediaKind::Image { body.image_key } else { body.video_key };
        match (key, body.image_start.filter(|_| kind == MediaKind::Image)) {
            (Some(key), _) => {
                let path = input_from_key(&state, key_field, &key, kind)?;
                (body.request, path, None)
            }
            (None, Some(b64)) => {
                let st = state.clone();
                let path = web::block(move || store_base64_image(&st, &b64)).await.map_err(ApiError::internal)??;
                (body.request, path.clone(), Some(path))
            }
            (None, None) => {
                let also = if kind == MediaKind::Image { " or image_start" } else { "" };
                return Err(ApiError::bad_request("invalid_request", format!("Invalid request: {key_field}{also} is required in a JSON request")));
            }
        }
    } else {
        return Err(ApiError::UnsupportedMediaType("Content-Type must be multipart/form-data or application/json".into()));
    };
    request.mode = match kind {
        MediaKind::Image => GenerationModeRequest::ImageToVideo { image: input },
        MediaKind::Video => GenerationModeRequest::VideoToVideo { video: input },
    };
    submit(&state, request, uploaded)
}
