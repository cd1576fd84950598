//! Optional API key: `Authorization: Bearer <key>` on every route but `/health`, compared in
//! constant time so response timing reveals nothing about the key.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, Error};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::AppState;

/// Whether the `Authorization` header carries `expected`.
pub fn bearer_matches(header: Option<&str>, expected: &str) -> bool {
    let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer "))) else { return false };
    // ct_eq on slices of different lengths is false without comparing contents; the length of
    // the key is not a secret worth protecting.
    given.trim().as_bytes().ct_eq(expected.as_bytes()).into()
}

/// Middleware refusing requests without the key (when one is configured) with 401.
pub async fn require_api_key(req: ServiceRequest, next: Next<impl MessageBody>) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let expected = req.app_data::<web::Data<AppState>>().and_then(|s| s.config.api_key.clone());
    if let Some(key) = expected {
        let open = req.path() == "/health";
        let header = req.headers().get(actix_web::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        // OPTIONS is no exception: CORS preflights are answered by the CORS middleware, which
        // runs before this one; any other OPTIONS request is an ordinary request.
        if !open && !bearer_matches(header, &key) {
            return Err(ApiError::Unauthorized.into());
        }
    }
    next.call(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_key_passes() {
        assert!(bearer_matches(Some("Bearer s3cret"), "s3cret"));
        for bad in [None, Some("s3cret"), Some("Bearer s3cre"), Some("Bearer s3cret2"), Some("Basic s3cret"), Some("Bearer ")] {
            assert!(!bearer_matches(bad, "s3cret"), "{bad:?}");
        }
    }
}
