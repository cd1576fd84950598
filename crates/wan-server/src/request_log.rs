//! Request ids, access logs and HTTP counters: every request gets an id (the client's sane
//! `X-Request-Id`, else a new one), logged in a tracing span and echoed in the response.

use std::sync::atomic::Ordering;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, Error};
use tracing::Instrument;

use crate::state::AppState;

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn request_id(req: &ServiceRequest) -> String {
    req.headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()))
}

pub async fn log_requests(req: ServiceRequest, next: Next<impl MessageBody>) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = request_id(&req);
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.path());
    let started = Instant::now();
    let result = next.call(req).instrument(span.clone()).await;
    let status = match &result {
        Ok(res) => res.status(),
        Err(e) => e.as_response_error().status_code(),
    };
    if let Some(state) = state {
        let m = &state.metrics;
        m.requests.fetch_add(1, Ordering::Relaxed);
        if status.is_client_error() {
            m.responses_4xx.fetch_add(1, Ordering::Relaxed);
        }
        if status.is_server_error() {
            m.responses_5xx.fetch_add(1, Ordering::Relaxed);
        }
        if status.as_u16() == 429 {
            m.responses_429.fetch_add(1, Ordering::Relaxed);
        }
    }
    span.in_scope(|| tracing::info!(status = status.as_u16(), ms = started.elapsed().as_secs_f64() * 1000.0, "handled"));
    let mut res = result?;
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID.clone(), v);
    }
    Ok(res)
}
