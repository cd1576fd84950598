//! Models: the catalogue, hub downloads, loading, and 002's model info.

use actix_web::{get, post, web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiError;
use crate::generator::{Role, SlotState};
use crate::models::hub::StartOutcome;
use crate::models::registry::{check_loadable, resolve, ModelError};
use crate::models::catalog;
use crate::state::AppState;

#[utoipa::path(get, path = "/api/v1/models", tag = "models", responses((status = 200, body = crate::openapi::ModelListSchema)))]
#[get("/api/v1/models")]
pub async fn list_models(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let st = state.clone();
    let models = web::block(move || catalog(&st.config.models_dir, &st.config.hub_cache_dir(), &st.downloads, &st.slots)).await.map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(json!({ "models": models })))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct DownloadRequest {
    /// A hub repo id, `org/name`.
    pub model_id: String,
    /// Branch, tag or commit (default `main`).
    pub revision: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/models/download", tag = "models", request_body = DownloadRequest,
    responses((status = 202, description = "`{\"message\": \"Model download started\", \"model_id\"}`"), (status = 400, body = crate::error::ErrorBody)))]
#[post("/api/v1/models/download")]
pub async fn download_model(state: web::Data<AppState>, body: web::Json<DownloadRequest>) -> Result<HttpResponse, ApiError> {
    let revision = body.revision.clone().filter(|r| !r.is_empty()).unwrap_or_else(|| "main".into());
    if revision.contains("..") || revision.starts_with('/') || revision.chars().any(|c| c.is_control() || c == '\\') {
        return Err(ApiError::bad_request("invalid_request", format!("Invalid request: revision {revision:?} is not a branch, tag or commit")));
    }
    let (outcome, _) = state
        .downloads
        .start(&body.model_id, &revision)
        .map_err(|e| ApiError::bad_request("invalid_model_id", format!("Invalid request: {e}")))?;
    let message = match outcome {
        StartOutcome::Started => "Model download started",
        StartOutcome::AlreadyRunning => "Model download already in progress",
    };
    Ok(HttpResponse::Accepted().json(json!({ "message": message, "model_id": body.model_id, "revision": revision })))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct LoadRequest {
    /// A hub repo id (downloaded) or a directory name under the models directory.
    pub model_id: String,
    /// `t2v` or `i2v`; defaults from the model's config.
    pub role: Option<Role>,
}

fn model_error(e: ModelError) -> ApiError {
    match e {
        ModelError::NotFound(_) => ApiError::not_found("model_not_found", e.to_string()),
        ModelError::NotWan { .. } => ApiError::bad_request("not_a_wan_pipeline", e.to_string()),
        ModelError::Incomplete { .. } => ApiError::bad_request("model_incomplete", e.to_string()),
    }
}

#[utoipa::path(post, path = "/api/v1/models/load", tag = "models", request_body = LoadRequest,
    responses((status = 202, description = "Loading; `/health` turns healthy when done"), (status = 400, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody, description = "A model of this role is loading")))]
#[post("/api/v1/models/load")]
pub async fn load_model(state: web::Data<AppState>, body: web::Json<LoadRequest>) -> Result<HttpResponse, ApiError> {
    let cfg = state.config.clone();
    let id = body.model_id.clone();
    let found = web::block(move || resolve(&id, &cfg.models_dir, &cfg.hub_cache_dir(), false)).await.map_err(ApiError::internal)?.map_err(model_error)?;
    if state.downloads.is_running(&found.id) {
        return Err(ApiError::Conflict(format!("model {} is still downloading", found.id)));
    }
    let role = check_loadable(&found).map_err(model_error)?;
    if let Some(asked) = body.role.filter(|r| *r != role) {
        return Err(ApiError::bad_request("role_mismatch", format!("Invalid request: model {} is a {} pipeline, not {}", found.id, role.as_str(), asked.as_str())));
    }
    crate::server::spawn_load(&state, role, found.id.clone(), found.dir.clone()).map_err(ApiError::Conflict)?;
    Ok(HttpResponse::Accepted().json(json!({ "message": "Model loading started", "model_id": found.id, "role": role })))
}

#[utoipa::path(get, path = "/api/v1/model/info", tag = "models", responses((status = 200, body = crate::openapi::ModelInfoSchema)))]
#[get("/api/v1/model/info")]
pub async fn model_info(state: web::Data<AppState>) -> HttpResponse {
    let t2v = state.slots.state(Role::T2v);
    let i2v = state.slots.state(Role::I2v);
    let provider = match (&t2v, &i2v) {
        (SlotState::Loaded { dir, .. }, _) | (_, SlotState::Loaded { dir, .. }) if dir.starts_with(state.config.hub_cache_dir()) => "huggingface",
        (SlotState::Loaded { .. }, _) | (_, SlotState::Loaded { .. }) => "local",
        _ => "huggingface",
    };
    // Where the models actually run, not what the build could do.
    let gpu_device_id = state.slots.gpu_device_id();
    HttpResponse::Ok().json(json!({
        "name": "Wan2.1",
        "version": env!("CARGO_PKG_VERSION"),
        "provider": provider,
        "gpu_enabled": gpu_device_id.is_some(),
        "gpu_device_id": gpu_device_id,
        "cache_dir": state.config.hub_cache_dir().display().to_string(),
        "models_dir": state.config.models_dir.display().to_string(),
        "loaded": { "t2v": t2v, "i2v": i2v },
    }))
}
