//! `GET /metrics`: Prometheus text exposition of the job and HTTP counters.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use actix_web::{get, web, HttpResponse};

use crate::error::ApiError;
use crate::state::AppState;

#[utoipa::path(get, path = "/metrics", tag = "server", responses((status = 200, content_type = "text/plain", description = "Prometheus text format")))]
#[get("/metrics")]
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let s = state.jobs.stats()?;
    let m = &state.metrics;
    let mut out = String::new();
    let _ = writeln!(out, "# HELP wan_jobs Jobs by status.\n# TYPE wan_jobs gauge");
    for (status, n) in [("pending", s.counts.pending), ("processing", s.counts.processing), ("completed", s.counts.completed), ("failed", s.counts.failed), ("cancelled", s.counts.cancelled)] {
        let _ = writeln!(out, "wan_jobs{{status=\"{status}\"}} {n}");
    }
    let _ = writeln!(out, "# HELP wan_queue_depth Pending jobs.\n# TYPE wan_queue_depth gauge\nwan_queue_depth {}", s.queue_depth);
    let opt = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_else(|| "NaN".into());
    let _ = writeln!(out, "# HELP wan_step_seconds Mean seconds per denoising step.\n# TYPE wan_step_seconds gauge\nwan_step_seconds {}", opt(s.mean_step_seconds));
    let _ = writeln!(out, "# HELP wan_generation_seconds Mean run time of completed jobs.\n# TYPE wan_generation_seconds gauge\nwan_generation_seconds {}", opt(s.mean_run_seconds));
    let _ = writeln!(out, "# HELP wan_queue_seconds Mean time jobs waited in the queue.\n# TYPE wan_queue_seconds gauge\nwan_queue_seconds {}", opt(s.mean_queue_seconds));
    let _ = writeln!(out, "# HELP wan_rejected_total Generation requests refused with 429.\n# TYPE wan_rejected_total counter\nwan_rejected_total {}", s.rejected_total);
    let _ = writeln!(out, "# HELP wan_http_requests_total HTTP requests.\n# TYPE wan_http_requests_total counter\nwan_http_requests_total {}", m.requests.load(Ordering::Relaxed));
    let _ = writeln!(out, "# HELP wan_http_responses_total HTTP error responses by class.\n# TYPE wan_http_responses_total counter");
    let _ = writeln!(out, "wan_http_responses_total{{class=\"4xx\"}} {}", m.responses_4xx.load(Ordering::Relaxed));
    let _ = writeln!(out, "wan_http_responses_total{{class=\"5xx\"}} {}", m.responses_5xx.load(Ordering::Relaxed));
    let _ = writeln!(out, "wan_http_responses_total{{class=\"429\"}} {}", m.responses_429.load(Ordering::Relaxed));
    let _ = writeln!(out, "# HELP wan_uptime_seconds Seconds since start.\n# TYPE wan_uptime_seconds gauge\nwan_uptime_seconds {:.0}", state.started.elapsed().as_secs_f64());
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(out))
}
