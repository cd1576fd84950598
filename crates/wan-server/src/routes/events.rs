//! `GET /api/v1/job/{id}/events`: Server-Sent Events of one job. The current state comes first
//! (so a late client catches up), then every change; the stream ends after a terminal event.

use actix_web::{get, web, HttpResponse};
use futures_util::stream;

use crate::error::ApiError;
use crate::state::AppState;

#[utoipa::path(get, path = "/api/v1/job/{id}/events", tag = "jobs", params(("id" = String, Path)),
    responses((status = 200, content_type = "text/event-stream", description = "Events `queued`, `started`, `progress`, `completed`, `failed`, `cancelled`, each with the job object as data"),
        (status = 404, body = crate::error::ErrorBody)))]
#[get("/api/v1/job/{id}/events")]
pub async fn job_events(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let events = state.jobs.subscribe(&id)?;
    let body = stream::unfold((events, false), |(mut events, done)| async move {
        if done {
            return None;
        }
        let ev = events.next().await?;
        let data = serde_json::to_string(&ev.job).unwrap_or_else(|_| "{}".into());
        let frame = web::Bytes::from(format!("event: {}\ndata: {}\n\n", ev.event.as_str(), data));
        Some((Ok::<_, actix_web::Error>(frame), (events, ev.event.is_terminal())))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}
