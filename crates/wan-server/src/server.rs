//! The app factory and the running server: state, middleware, routes, signal handling.
//!
//! [`start`] binds (port 0 picks a free port) and returns the bound address, so tests drive the
//! real server over HTTP; [`Running::shutdown`] is the graceful stop SIGINT/SIGTERM trigger: stop
//! admitting, let the job manager re-queue or finish the running job and close its store, then
//! stop the HTTP server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_cors::Cors;
use actix_web::dev::ServerHandle;
use actix_web::middleware::{from_fn, Condition};
use actix_web::{web, App, HttpServer};
use utoipa_swagger_ui::SwaggerUi;
use wan_jobs::{AdmissionPolicy, JobManager, JobsConfig};

use crate::config::ServerConfig;
use crate::error::{json_error, not_found_route, path_error, query_error};
use crate::generator::{ModelSlots, PipelineFactory, Role, SlotState};
use crate::models::hub::{Downloads, HubConfig};
use crate::models::registry;
use crate::routes;
use crate::state::{AppState, HttpMetrics};

/// Every API route (method, path), as registered below; the OpenAPI test compares the spec to it.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("GET", "/api/v1/model/info"),
    ("POST", "/api/v1/generate/text-to-video"),
    ("POST", "/api/v1/generate/image-to-video"),
    ("POST", "/api/v1/generate/video-to-video"),
    ("GET", "/api/v1/job/{id}"),
    ("POST", "/api/v1/job/{id}/cancel"),
    ("GET", "/api/v1/job/{id}/events"),
    ("GET", "/api/v1/jobs"),
    ("GET", "/api/v1/queue"),
    ("DELETE", "/api/v1/queue/{id}"),
    ("DELETE", "/api/v1/queue"),
    ("GET", "/outputs/{filename}"),
    ("GET", "/api/v1/outputs"),
    ("GET", "/api/v1/preview/{filename}"),
    ("GET", "/api/v1/models"),
    ("POST", "/api/v1/models/download"),
    ("POST", "/api/v1/models/load"),
    ("POST", "/api/v1/storage/upload"),
    ("GET", "/api/v1/config"),
    ("GET", "/api/v1/stats"),
    ("GET", "/metrics"),
];

/// Registers the routes of [`ROUTES`] and the extractor error handlers.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::JsonConfig::default().limit(1024 * 1024).error_handler(json_error))
        .app_data(web::QueryConfig::default().error_handler(query_error))
        .app_data(web::PathConfig::default().error_handler(path_error))
        .service(routes::health::health)
        .service(routes::models::model_info)
        .service(routes::generate::text_to_video)
        .service(routes::generate::image_to_video)
        .service(routes::generate::video_to_video)
        .service(routes::events::job_events)
        .service(routes::jobs::cancel_job)
        .service(routes::jobs::get_job)
        .service(routes::jobs::list_jobs)
        .service(routes::queue::get_queue)
        .service(routes::queue::clear_pending)
        .service(routes::queue::remove_pending)
        .service(routes::outputs::serve_output)
        .service(routes::outputs::list_outputs)
        .service(routes::preview::preview)
        .service(routes::models::list_models)
        .service(routes::models::download_model)
        .service(routes::models::load_model)
        .service(routes::storage::upload)
        .service(routes::config::get_config)
        .service(routes::stats::stats)
        .service(routes::metrics::metrics)
        .service(web::redirect("/api/docs", "/api/docs/"))
        .service(SwaggerUi::new("/api/docs/{_:.*}").url("/api/openapi.json", crate::openapi::document()));
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create {path}: {source}")]
    Dir { path: String, source: std::io::Error },
    #[error("cannot open the job manager: {0}")]
    Jobs(#[from] wan_jobs::Error),
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
}

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    pub state: web::Data<AppState>,
    handle: ServerHandle,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops admitting (503), lets the job manager stop the running job at its next step and
    /// re-queue it, closes the store, then stops the HTTP server (finishing requests in flight).
    pub async fn shutdown(self) {
        self.state.stopping.store(true, Ordering::SeqCst);
        let timeout = Duration::from_secs(self.state.config.shutdown_timeout_s);
        if tokio::time::timeout(timeout, self.state.jobs.shutdown()).await.is_err() {
            tracing::warn!("the job manager did not stop within {timeout:?}");
        }
        self.handle.stop(true).await;
        let _ = self.server.await;
    }

    /// Waits until the HTTP server stops by itself.
    pub async fn wait(self) -> std::io::Result<()> {
        self.server.await.unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

/// Builds the state, opens the job manager, binds, and starts serving. Must run inside a Tokio
/// (actix) runtime. Configured models are loaded in the background (health is 503 until then).
pub async fn start(config: ServerConfig, factory: Arc<dyn PipelineFactory>) -> Result<Running, StartError> {
    let config = Arc::new(config);
    for dir in [config.data_dir.clone(), config.outputs_dir(), config.uploads_dir()] {
        std::fs::create_dir_all(&dir).map_err(|source| StartError::Dir { path: dir.display().to_string(), source })?;
    }
    let slots = Arc::new(ModelSlots::new(factory));
    let mut jobs_cfg = JobsConfig::new(config.data_dir.clone(), config.outputs_dir());
    jobs_cfg.workers = config.workers;
    jobs_cfg.max_attempts = config.max_attempts;
    jobs_cfg.admission = AdmissionPolicy { max_concurrent_requests: config.max_concurrent_requests, ..AdmissionPolicy::default() };
    jobs_cfg.limits = config.limits();
    let jobs = JobManager::open(jobs_cfg, slots.clone())?;
    let mut hub = HubConfig::from_env(config.hub_cache_dir());
    if config.hub_endpoint.is_some() {
        hub.endpoint = config.hub_endpoint.clone();
    }
    let downloads = Arc::new(Downloads::new(hub));
    let state = web::Data::new(AppState {
        config: config.clone(),
        jobs,
        slots,
        downloads,
        metrics: HttpMetrics::default(),
        started: Instant::now(),
        stopping: Default::default(),
    });

    let app_state = state.clone();
    let server = HttpServer::new(move || {
        // No allowlist: no CORS middleware at all (same-origin requests, which also carry an
        // Origin header, must not be refused).
        let origins = &app_state.config.cors_origins;
        let cors = origins.iter().fold(Cors::default(), |c, o| c.allowed_origin(o)).allow_any_method().allow_any_header().max_age(3600);
        let cors = Condition::new(!origins.is_empty(), cors);
        App::new()
            .app_data(app_state.clone())
            .configure(configure)
            .default_service(web::to(not_found_route))
            .wrap(from_fn(crate::auth::require_api_key))
            .wrap(cors)
            .wrap(from_fn(crate::request_log::log_requests))
    })
    .workers(2)
    .disable_signals()
    .shutdown_timeout(config.shutdown_timeout_s);
    let addr = format!("{}:{}", config.host, config.port);
    let server = server.bind(&addr).map_err(|source| StartError::Bind { addr: addr.clone(), source })?;
    let bound = server.addrs().first().copied().ok_or_else(|| StartError::Bind { addr, source: std::io::Error::other("no address bound") })?;
    let server = server.run();
    let handle = server.handle();
    let server = actix_web::rt::spawn(server);
    tracing::info!(addr = %bound, "serving");

    for (role, reference) in [(Role::T2v, config.model.clone()), (Role::I2v, config.i2v_model.clone())] {
        if let Some(reference) = reference {
            spawn_configured_load(state.clone(), role, reference);
        }
    }
    Ok(Running { addr: bound, state, handle, server })
}

/// Starts loading `dir` into the slot of `role` on a blocking thread.
pub fn spawn_load(state: &web::Data<AppState>, role: Role, model_id: String, dir: PathBuf) -> Result<(), String> {
    if !state.slots.begin_load(role, &model_id) {
        return Err(format!("a {} model is already loading", role.as_str()));
    }
    let slots = state.slots.clone();
    tokio::task::spawn_blocking(move || {
        let _ = slots.finish_load(role, &model_id, &dir);
    });
    Ok(())
}

/// Loads a configured model (`--model`, `--i2v-model`) as soon as it is complete on disk, so a
/// server started before (or during) a download begins serving when it ends.
fn spawn_configured_load(state: web::Data<AppState>, role: Role, reference: String) {
    tokio::spawn(async move {
        let mut warned = false;
        loop {
            if state.stopping.load(Ordering::SeqCst) || !matches!(state.slots.state(role), SlotState::Empty) {
                return;
            }
            let cfg = state.config.clone();
            let r = reference.clone();
            let found = tokio::task::spawn_blocking(move || {
                registry::resolve(&r, &cfg.models_dir, &cfg.hub_cache_dir(), true).and_then(|m| registry::check_loadable(&m).map(|role| (m, role)))
            })
            .await;
            match found {
                Ok(Ok((model, _))) if state.downloads.is_running(&model.id) => {} // wait for the download's end
                Ok(Ok((model, model_role))) => {
                    if model_role != role {
                        tracing::error!(model = %reference, "configured as {} but it is a {} pipeline", role.as_str(), model_role.as_str());
                        return;
                    }
                    if let Err(e) = spawn_load(&state, role, model.id, model.dir) {
                        tracing::warn!("{e}");
                    }
                    return;
                }
                Ok(Err(e)) => {
                    if !warned {
                        tracing::warn!(model = %reference, "waiting for the configured model: {e}");
                        warned = true;
                    }
                }
                Err(e) => tracing::error!("model lookup failed: {e}"),
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
}

/// Serves until SIGINT or SIGTERM, then stops gracefully.
pub async fn run(config: ServerConfig, factory: Arc<dyn PipelineFactory>) -> Result<(), StartError> {
    let running = start(config, factory).await?;
    eprintln!("wan-server listening on http://{}", running.addr);
    wait_for_signal().await;
    tracing::info!("signal received: stopping (new generation requests get 503)");
    running.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
