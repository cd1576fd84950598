//! One job, its cancellation, and the job history.

use actix_web::{get, post, web, HttpResponse};
use serde::Deserialize;
use wan_jobs::{JobFilter, JobStatus};

use crate::error::ApiError;
use crate::state::AppState;

#[utoipa::path(get, path = "/api/v1/job/{id}", tag = "jobs", params(("id" = String, Path, description = "job_<unix>_<12 hex>")),
    responses((status = 200, body = crate::openapi::JobSchema), (status = 404, body = crate::error::ErrorBody)))]
#[get("/api/v1/job/{id}")]
pub async fn get_job(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.jobs.get(&id)?))
}

#[utoipa::path(post, path = "/api/v1/job/{id}/cancel", tag = "jobs", params(("id" = String, Path)),
    responses((status = 200, body = crate::openapi::JobSchema, description = "Cancelled (pending) or cancelling at the next step (processing)"),
        (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody, description = "The job already ended")))]
#[post("/api/v1/job/{id}/cancel")]
pub async fn cancel_job(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.jobs.cancel(&id)?))
}

/// `GET /api/v1/jobs` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobsQuery {
    /// pending, processing, completed, failed or cancelled.
    pub status: Option<String>,
    pub user_id: Option<String>,
    /// 1..=500, default 50.
    pub limit: Option<usize>,
    pub offset: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(JobsQuery),
    responses((status = 200, body = crate::openapi::JobListSchema), (status = 400, body = crate::error::ErrorBody)))]
#[get("/api/v1/jobs")]
pub async fn list_jobs(state: web::Data<AppState>, q: web::Query<JobsQuery>) -> Result<HttpResponse, ApiError> {
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(JobStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request("invalid_query", format!("Invalid query: status must be pending, processing, completed, failed or cancelled, got {s:?}"))
        })?),
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("invalid_query", format!("Invalid query: limit must be 1..=500, got {limit}")));
    }
    let filter = JobFilter { status, user_id: q.user_id.clone(), limit, offset: q.offset.unwrap_or(0) };
    Ok(HttpResponse::Ok().json(state.jobs.list(filter)?))
}
