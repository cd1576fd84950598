//! `GET /api/v1/stats`: counts per status and mean queue and run times.

use actix_web::{get, web, HttpResponse};
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;

#[utoipa::path(get, path = "/api/v1/stats", tag = "jobs", responses((status = 200, body = crate::openapi::StatsSchema)))]
#[get("/api/v1/stats")]
pub async fn stats(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let s = state.jobs.stats()?;
    Ok(HttpResponse::Ok().json(json!({
        "counts": s.counts,
        "mean_queue_seconds": s.mean_queue_seconds,
        "mean_run_seconds": s.mean_run_seconds,
        "queue_depth": s.queue_depth,
    })))
}
