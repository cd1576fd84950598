//! The OpenAPI 3 document (`/api/openapi.json`) and the Swagger UI page (`/api/docs`, served from
//! files compiled into the binary, so it works offline).
//!
//! The job manager's types carry no schema derive (that crate knows nothing of HTTP), so the
//! shapes it serialises are described here; a test checks the documented paths are exactly the
//! routes the server registers ([`crate::server::ROUTES`]).

#![allow(dead_code)] // the schema structs only exist to be described

use utoipa::{Modify, OpenApi, ToSchema};

use crate::routes;

/// JSON body of text-to-video: 002's fields and defaults plus API.md's extras.
#[derive(ToSchema)]
pub struct TextToVideoRequest {
    /// Required unless `prompts` is given.
    #[schema(example = "A cat playing with a ball of yarn")]
    prompt: Option<String>,
    /// A batch: one job per prompt, all admitted or none.
    prompts: Option<Vec<String>>,
    #[schema(default = "")]
    negative_prompt: Option<String>,
    /// 1..=128 (generated as the next 4k+1 and cut back).
    #[schema(default = 64)]
    num_frames: Option<i64>,
    #[schema(default = 24)]
    fps: Option<i64>,
    /// A multiple of 16.
    #[schema(default = 512)]
    width: Option<i64>,
    #[schema(default = 512)]
    height: Option<i64>,
    /// -1 draws a random seed (reported in the job).
    #[schema(default = -1)]
    seed: Option<i64>,
    #[schema(default = 7.5)]
    guidance_scale: Option<f64>,
    /// 25..=100 by default (server settings).
    #[schema(default = 50)]
    num_inference_steps: Option<i64>,
    /// `high`, `normal` or `low`.
    #[schema(default = "normal")]
    priority: Option<String>,
    user_id: Option<String>,
    /// POSTed the final job JSON; only allowlisted hosts.
    callback_url: Option<String>,
}

/// Form of image-to-video (002's fields).
#[derive(ToSchema)]
pub struct ImageToVideoForm {
    /// JPG or PNG (or WebP), judged from the bytes.
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
    /// Instead of `image`: a key from `/api/v1/storage/upload`.
    image_key: Option<String>,
    prompt: Option<String>,
    negative_prompt: Option<String>,
    num_frames: Option<i64>,
    fps: Option<i64>,
    width: Option<i64>,
    height: Option<i64>,
    seed: Option<i64>,
    guidance_scale: Option<f64>,
    num_inference_steps: Option<i64>,
    priority: Option<String>,
    user_id: Option<String>,
    callback_url: Option<String>,
}

/// Form of video-to-video (002's fields).
#[derive(ToSchema)]
pub struct VideoToVideoForm {
    /// MP4 or AVI (or MOV, WebM, MKV), judged from the bytes.
    #[schema(value_type = String, format = Binary)]
    video: Vec<u8>,
    /// Instead of `video`: a key from `/api/v1/storage/upload`.
    video_key: Option<String>,
    prompt: Option<String>,
    negative_prompt: Option<String>,
    fps: Option<i64>,
    /// 0..=1.
    #[schema(default = 0.8)]
    strength: Option<f64>,
    seed: Option<i64>,
    guidance_scale: Option<f64>,
    num_inference_steps: Option<i64>,
    priority: Option<String>,
    user_id: Option<String>,
    callback_url: Option<String>,
}

#[derive(ToSchema)]
pub struct UploadForm {
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// The job object (002's fields plus API.md's).
#[derive(ToSchema)]
pub struct JobSchema {
    #[schema(example = "job_1705314600_abcdef123456")]
    job_id: String,
    /// pending, processing, completed, failed or cancelled.
    status: String,
    message: String,
    output_path: Option<String>,
    /// RFC 3339 UTC.
    created_at: String,
    updated_at: String,
    seed: u64,
    /// The request as validated.
    params: serde_json::Value,
    progress: f64,
    current_step: u32,
    total_steps: u32,
    position: Option<usize>,
    eta_seconds: Option<f64>,
    started_at: Option<String>,
    completed_at: Option<String>,
    error: Option<String>,
    output_url: Option<String>,
    attempts: u32,
}

#[derive(ToSchema)]
pub struct JobListSchema {
    jobs: Vec<JobSchema>,
    total: u64,
    limit: usize,
    offset: usize,
}

#[derive(ToSchema)]
pub struct QueueTaskSchema {
    /// The job id.
    id: String,
    prompt: String,
    status: String,
    /// 0 while processing, else the place in the pending queue.
    position: usize,
    priority: String,
    kind: String,
    progress: f64,
    current_step: u32,
    total_steps: u32,
    eta_seconds: Option<f64>,
    created_at: String,
    user_id: Option<String>,
}

#[derive(ToSchema)]
pub struct QueueSchema {
    total_tasks: usize,
    current_task_id: Option<String>,
    is_processing: bool,
    tasks: Vec<QueueTaskSchema>,
}

#[derive(ToSchema)]
pub struct StatusCountsSchema {
    pending: u64,
    processing: u64,
    completed: u64,
    failed: u64,
    cancelled: u64,
}

#[derive(ToSchema)]
pub struct StatsSchema {
    counts: StatusCountsSchema,
    mean_queue_seconds: Option<f64>,
    mean_run_seconds: Option<f64>,
    queue_depth: usize,
}

#[derive(ToSchema)]
pub struct ModelListSchema {
    models: Vec<crate::models::ModelEntry>,
}

#[derive(ToSchema)]
pub struct ModelInfoSchema {
    name: String,
    version: String,
    provider: String,
    gpu_enabled: bool,
    gpu_device_id: Option<u32>,
    cache_dir: String,
    models_dir: String,
    /// State of the t2v and i2v slots.
    loaded: serde_json::Value,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Wan2.1 Video Server", description = "Text-, image- and video-to-video generation with Wan2.1. Every error body is {\"error\", \"code\"}. With an API key configured, every route but /health needs `Authorization: Bearer <key>` (else 401)."),
    paths(
        routes::health::health,
        routes::models::model_info,
        routes::generate::text_to_video,
        routes::generate::image_to_video,
        routes::generate::video_to_video,
        routes::jobs::get_job,
        routes::jobs::cancel_job,
        routes::jobs::list_jobs,
        routes::events::job_events,
        routes::queue::get_queue,
        routes::queue::remove_pending,
        routes::queue::clear_pending,
        routes::outputs::serve_output,
        routes::outputs::list_outputs,
        routes::preview::preview,
        routes::models::list_models,
        routes::models::download_model,
        routes::models::load_model,
        routes::storage::upload,
        routes::config::get_config,
        routes::stats::stats,
        routes::metrics::metrics,
    ),
    components(schemas(crate::error::ErrorBody, crate::routes::health::HealthBody, crate::routes::generate::Accepted, crate::routes::generate::BatchAccepted)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// The document served at `/api/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// (method, path) of every documented operation, upper-case methods, `{param}` paths.
pub fn documented_routes() -> Vec<(String, String)> {
    let doc = document();
    let mut out = Vec::new();
    let json = serde_json::to_value(&doc.paths).unwrap_or_default();
    if let Some(paths) = json.get("paths").and_then(|p| p.as_object()).or_else(|| json.as_object()) {
        for (path, item) in paths {
            if let Some(ops) = item.as_object() {
                for method in ["get", "post", "put", "delete", "patch", "head"] {
                    if ops.contains_key(method) {
                        out.push((method.to_ascii_uppercase(), path.clone()));
                    }
                }
            }
        }
    }
    out.sort();
    out
}
