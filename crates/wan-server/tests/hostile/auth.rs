//! With an API key set, every route but `/health` refuses a missing or wrong key with 401 and the
//! JSON error body: every registered route with every method it has, the docs and the OpenAPI
//! document, unknown paths, other methods (OPTIONS, HEAD), and `/health` look-alikes.

use std::time::Duration;

use crate::common::raw_http;
use crate::common::ServerThread;

const KEY: &str = "s3cret-key-0123";
const TIMEOUT: Duration = Duration::from_secs(15);

/// Authorization headers that must not pass (None: no header at all).
const WRONG: &[Option<&str>] = &[
    None,
    Some(""),
    Some("Bearer"),
    Some("Bearer "),
    Some("Bearer wrong-key"),
    Some("Bearer s3cret-key-012"),
    Some("Bearer s3cret-key-01234"),
    Some("Bearer S3CRET-KEY-0123"),
    Some("Basic s3cret-key-0123"),
    Some("s3cret-key-0123"),
    Some("Bearer s3cret-key-0123 extra"),
];

fn paths() -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = wan_server::server::ROUTES
        .iter()
        .filter(|(_, p)| *p != "/health")
        .map(|(m, p)| (m.to_string(), p.replace("{id}", "job_1_abcdef123456").replace("{filename}", "x.mp4")))
        .collect();
    for (m, p) in [
        ("GET", "/api/openapi.json"),
        ("GET", "/api/docs/"),
        ("GET", "/api/docs/index.html"),
        ("GET", "/no/such/route"),
        ("OPTIONS", "/api/v1/jobs"),
        ("HEAD", "/api/v1/jobs"),
        ("PUT", "/api/v1/queue"),
        ("GET", "/health/"),
        ("GET", "//health"),
        ("GET", "/%68ealth"),
        ("GET", "/HEALTH"),
        ("GET", "/outputs/..%2f..%2fetc%2fpasswd"),
    ] {
        all.push((m.to_string(), p.to_string()));
    }
    all
}

#[test]
fn every_route_but_health_refuses_a_missing_or_wrong_key() {
    // No model loaded: /health answers 503 "unhealthy", without asking for the key.
    let server = ServerThread::start_unloaded(|c| c.api_key = Some(KEY.into()));
    let health = raw_http::send(&server.base, "GET", "/health", &[], b"", TIMEOUT).unwrap();
    assert_eq!(health.status, 503, "health is open: {}", health.text());
    assert_eq!(health.json().unwrap()["status"], "unhealthy");
    let mut refused = 0;
    for (method, path) in paths() {
        for auth in WRONG {
            let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
            let resp = raw_http::send(&server.base, &method, &path, &headers, b"", TIMEOUT).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            assert_eq!(resp.status, 401, "{method} {path} with {auth:?} -> {} {}", resp.status, resp.text());
            if method != "HEAD" {
                assert_eq!(resp.json().map(|v| v["code"].clone()), Some("unauthorized".into()), "{method} {path}: {}", resp.text());
            }
            assert_eq!(resp.header("www-authenticate"), Some("Bearer"));
            refused += 1;
        }
        // The right key gets past the guard (whatever the route then answers).
        let ok = raw_http::send(&server.base, &method, &path, &[("Authorization", &format!("Bearer {KEY}"))], b"", TIMEOUT).unwrap();
        assert_ne!(ok.status, 401, "{method} {path} refused the right key");
        // (No model is loaded: the generation routes answer 503 model_not_loaded.)
        assert!(ok.status < 500 || ok.status == 503, "{method} {path} with the key -> {}", ok.status);
    }
    assert!(refused > 300, "{refused}");
    let cfg = raw_http::send(&server.base, "GET", "/api/v1/config", &[("Authorization", &format!("Bearer {KEY}"))], b"", TIMEOUT).unwrap();
    assert_eq!(cfg.json().unwrap()["auth_enabled"], true);
    assert!(!cfg.text().contains(KEY), "the key is never shown");
}

/// With CORS on, a browser's preflight (which never carries the key) is answered by the CORS
/// layer, in front of the key check; an OPTIONS request that is not a preflight still needs it.
#[test]
fn cors_preflights_pass_without_the_key_and_other_options_requests_do_not() {
    let server = ServerThread::start_unloaded(|c| {
        c.api_key = Some(KEY.into());
        c.cors_origins = vec!["http://app.example".into()];
    });
    let preflight = [("Origin", "http://app.example"), ("Access-Control-Request-Method", "GET"), ("Access-Control-Request-Headers", "authorization")];
    let resp = raw_http::send(&server.base, "OPTIONS", "/api/v1/jobs", &preflight, b"", TIMEOUT).unwrap();
    assert_eq!(resp.status, 200, "{:?} {}", resp.headers, resp.text());
    assert_eq!(resp.header("access-control-allow-origin"), Some("http://app.example"));
    let plain = raw_http::send(&server.base, "OPTIONS", "/api/v1/jobs", &[], b"", TIMEOUT).unwrap();
    assert_eq!(plain.status, 401, "{}", plain.text());
    // The actual cross-origin request still needs the key.
    let get = raw_http::send(&server.base, "GET", "/api/v1/jobs", &[("Origin", "http://app.example")], b"", TIMEOUT).unwrap();
    assert_eq!(get.status, 401);
}
