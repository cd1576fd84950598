//! The pending/processing queue: view it, remove one pending job, clear all pending ones.

use actix_web::{delete, get, web, HttpResponse};
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;

#[utoipa::path(get, path = "/api/v1/queue", tag = "queue", responses((status = 200, body = crate::openapi::QueueSchema)))]
#[get("/api/v1/queue")]
pub async fn get_queue(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.jobs.queue())
}

#[utoipa::path(delete, path = "/api/v1/queue/{id}", tag = "queue", params(("id" = String, Path)),
    responses((status = 200, body = crate::openapi::JobSchema, description = "Removed (now cancelled)"), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody, description = "The job is not pending")))]
#[delete("/api/v1/queue/{id}")]
pub async fn remove_pending(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.jobs.remove_pending(&id)?))
}

#[utoipa::path(delete, path = "/api/v1/queue", tag = "queue", responses((status = 200, description = "`{\"removed\": n, \"jobs\": [...]}`")))]
#[delete("/api/v1/queue")]
pub async fn clear_pending(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let jobs = state.jobs.clear_pending()?;
    Ok(HttpResponse::Ok().json(json!({ "removed": jobs.len(), "jobs": jobs })))
}
