//! `GET /api/v1/config`: the settings that are not secret (the API key is never shown).

use actix_web::{get, web, HttpResponse};
use serde_json::json;

use crate::state::AppState;

#[utoipa::path(get, path = "/api/v1/config", tag = "server", responses((status = 200, description = "Every setting but the API key, plus `auth_enabled`")))]
#[get("/api/v1/config")]
pub async fn get_config(state: web::Data<AppState>) -> HttpResponse {
    let mut v = serde_json::to_value(&*state.config).unwrap_or_else(|_| json!({}));
    if let Some(obj) = v.as_object_mut() {
        obj.insert("auth_enabled".into(), json!(state.config.api_key.is_some()));
        obj.insert("outputs_dir".into(), json!(state.config.outputs_dir().display().to_string()));
        obj.insert("hub_cache_dir".into(), json!(state.config.hub_cache_dir().display().to_string()));
    }
    HttpResponse::Ok().json(v)
}
