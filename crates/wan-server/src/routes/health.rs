//! `GET /health`: open even with an API key; 503 with the reason when no model can serve.

use actix_web::{get, web, HttpResponse};
use serde::Serialize;
use wan_jobs::Readiness;

use crate::state::AppState;

#[derive(Serialize, utoipa::ToSchema)]
pub struct HealthBody {
    /// `healthy` or `unhealthy`.
    pub status: &'static str,
    pub service: &'static str,
    pub version: &'static str,
    /// Why the server cannot serve (only when unhealthy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[utoipa::path(get, path = "/health", tag = "health",
    responses((status = 200, body = HealthBody), (status = 503, description = "No model can serve, or the server is stopping", body = HealthBody)))]
#[get("/health")]
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let reason = if state.is_stopping() {
        Some("the server is shutting down".to_string())
    } else {
        match state.jobs.readiness() {
            Readiness::Ready => None,
            Readiness::NotReady(why) => Some(format!("Model not loaded: {why}")),
        }
    };
    let body = |status, reason| HealthBody { status, service: "wan2-video-server", version: env!("CARGO_PKG_VERSION"), reason };
    match reason {
        None => HttpResponse::Ok().json(body("healthy", None)),
        Some(r) => HttpResponse::ServiceUnavailable().json(body("unhealthy", Some(r))),
    }
}
