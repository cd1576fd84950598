//! The one error type of the HTTP layer and its mapping to a status and a
//! `{"error": "<sentence>", "code": "<stable_snake_case>"}` body.
//!
//! Every failure a handler can meet ends up here, including actix's own extractor errors (bad
//! JSON, bad query, bad path), so no route ever answers with actix's plain-text default body.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;

/// An error answered to a client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: a request the server will not act on. `code` is stable, `message` names the field.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// 401: missing or wrong API key.
    #[error("Missing or invalid API key: send the header `Authorization: Bearer <key>`")]
    Unauthorized,
    /// 404: no such job, file, model or route.
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    /// 405: the path exists with another method.
    #[error("Method not allowed")]
    MethodNotAllowed,
    /// 409: the operation does not apply to the current state.
    #[error("{0}")]
    Conflict(String),
    /// 413: an upload or body over the configured limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: the upload is not an image/video of an accepted type (judged from its bytes).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 429: admission refused; `Retry-After` is sent.
    #[error("{message}")]
    TooManyRequests { retry_after_s: u64, message: String },
    /// 503: no model can serve, or the server is stopping.
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    /// 500: a fault of the server. The message is logged in full and answered in short.
    #[error("Internal server error: {0}")]
    Internal(String),
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A sentence saying what went wrong and, where it helps, what to do.
    pub error: String,
    /// A stable machine-readable code.
    pub code: String,
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest { code, message: message.into() }
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::NotFound { code, message: message.into() }
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        ApiError::Internal(message.to_string())
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. } | ApiError::NotFound { code, .. } | ApiError::Unavailable { code, .. } => code,
            ApiError::Unauthorized => "unauthorized",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::TooManyRequests { .. } => "too_many_requests",
            ApiError::Internal(_) => "internal_error",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(m) = self {
            tracing::error!(error = %m, "internal error");
        }
        let mut resp = HttpResponse::build(self.status_code());
        match self {
            ApiError::TooManyRequests { retry_after_s, .. } => {
                resp.insert_header((header::RETRY_AFTER, retry_after_s.to_string()));
            }
            ApiError::Unauthorized => {
                resp.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            _ => {}
        }
        resp.json(ErrorBody { error: self.to_string(), code: self.code().to_string() })
    }
}

impl From<wan_jobs::Error> for ApiError {
    fn from(e: wan_jobs::Error) -> Self {
        use wan_jobs::Error as E;
        let code = e.code();
        match e {
            E::Validation { field, message } => ApiError::BadRequest { code, message: format!("Invalid request: {field}: {message}") },
            E::NotFound(id) => ApiError::NotFound { code, message: format!("Job {id} not found") },
            E::Overloaded { retry_after_s, .. } => ApiError::TooManyRequests { retry_after_s, message: e.to_string() },
            E::NotReady(_) | E::ShuttingDown => ApiError::Unavailable { code, message: e.to_string() },
            E::Conflict(m) => ApiError::Conflict(m),
            E::Internal(m) => ApiError::Internal(m),
        }
    }
}

/// `web::JsonConfig` error handler: a body that does not parse, a missing field, a wrong type or an
/// unknown enum value is a 400 naming what serde found; an oversized body is a 413.
pub fn json_error(err: actix_web::error::JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as J;
    let api = match &err {
        J::Overflow { limit } | J::OverflowKnownLength { limit, .. } => {
            ApiError::PayloadTooLarge(format!("JSON body over the limit of {limit} bytes"))
        }
        J::ContentType => ApiError::UnsupportedMediaType("Content-Type must be application/json".into()),
        J::Deserialize(e) => ApiError::bad_request("invalid_json", format!("Invalid request: {e}")),
        other => ApiError::bad_request("invalid_json", format!("Invalid request body: {other}")),
    };
    api.into()
}

/// `web::QueryConfig` error handler.
pub fn query_error(err: actix_web::error::QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::bad_request("invalid_query", format!("Invalid query string: {err}")).into()
}

/// `web::PathConfig` error handler.
pub fn path_error(err: actix_web::error::PathError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::bad_request("invalid_path", format!("Invalid path: {err}")).into()
}

/// The body of any route that does not exist.
pub async fn not_found_route(req: HttpRequest) -> ApiError {
    ApiError::not_found("route_not_found", format!("No route {} {}", req.method(), req.path()))
}

impl actix_web::Responder for ApiError {
    type Body = actix_web::body::BoxBody;
    fn respond_to(self, _req: &HttpRequest) -> HttpResponse {
        self.error_response()
    }
}
