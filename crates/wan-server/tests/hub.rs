//! The hf-hub client against a local hub on 127.0.0.1 serving ../shared/models/wan-tiny-t2v:
//! success, a 404 repo, a connection dropped mid-file then a retry, two concurrent requests, and
//! a pre-filled cache answered without any request. Also through the HTTP routes.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::fake_hub::{start_hub, COMMIT, REPO};
use serde_json::{json, Value};
use wan_server::models::hub::{download_repo, Downloads, HubConfig, StartOutcome};
use wan_server::models::registry;

fn tiny() -> std::path::PathBuf {
    common::shared().join("models/wan-tiny-t2v")
}

fn hub_config(cache: &std::path::Path, endpoint: &str) -> HubConfig {
    HubConfig { cache_dir: cache.to_path_buf(), endpoint: Some(endpoint.to_string()), token: None }
}

#[actix_web::test]
async fn a_download_lands_in_the_python_cache_layout_complete_and_only_needed_files() {
    let hub = start_hub(&tiny()).await;
    let cache = tempfile::tempdir().unwrap();
    let cfg = hub_config(cache.path(), &hub.base);
    let state = Downloads::foreground_state(REPO, "main");
    let dir = download_repo(&cfg, REPO, "main", state.clone()).await.unwrap();
    let repo_dir = cache.path().join("models--test-org--wan-tiny");
    assert_eq!(dir, repo_dir.join("snapshots").join(COMMIT));
    assert_eq!(std::fs::read_to_string(repo_dir.join("refs/main")).unwrap().trim(), COMMIT);
    assert!(repo_dir.join("blobs").is_dir());
    // Same bytes as the source, through the snapshot symlinks.
    for f in ["model_index.json", "transformer/diffusion_pytorch_model.safetensors", "tokenizer/tokenizer.json", "vae/config.json"] {
        assert_eq!(std::fs::read(dir.join(f)).unwrap(), std::fs::read(tiny().join(f)).unwrap(), "{f}");
        assert!(std::fs::symlink_metadata(dir.join(f)).unwrap().file_type().is_symlink(), "{f} links to a blob");
    }
    assert!(!dir.join("README.md").exists(), "not a pipeline file");
    assert!(!dir.join("transformer/diffusion_pytorch_model.fp16.safetensors").exists(), "variants are skipped");
    let p = state.progress();
    assert_eq!(p.bytes_done, p.bytes_total);
    assert_eq!(p.bytes_total, registry::dir_size(&tiny()));
    let found = registry::resolve(REPO, std::path::Path::new("/nonexistent"), cache.path(), false).unwrap();
    assert!(found.complete);
    assert_eq!(registry::check_loadable(&found).unwrap(), wan_server::generator::Role::T2v);

    // Pre-filled cache: no request at all.
    let before = hub.state.requests.load(Ordering::SeqCst);
    let again = download_repo(&cfg, REPO, "main", Downloads::foreground_state(REPO, "main")).await.unwrap();
    assert_eq!(again, dir);
    assert_eq!(hub.state.requests.load(Ordering::SeqCst), before, "a complete cached model is not requested");
    hub.stop().await;
}

#[actix_web::test]
async fn a_missing_repo_is_a_clear_error() {
    let hub = start_hub(&tiny()).await;
    let cache = tempfile::tempdir().unwrap();
    let err = download_repo(&hub_config(cache.path(), &hub.base), "test-org/absent", "main", Downloads::foreground_state("test-org/absent", "main")).await.unwrap_err();
    assert!(matches!(err, wan_server::models::hub::HubError::RepoNotFound(_)), "{err}");
    assert!(!cache.path().join("models--test-org--absent/snapshots").exists());
    hub.stop().await;
}

#[actix_web::test]
async fn a_dropped_connection_leaves_no_complete_model_and_a_retry_finishes_it() {
    let hub = start_hub(&tiny()).await;
    let cache = tempfile::tempdir().unwrap();
    let cfg = hub_config(cache.path(), &hub.base);
    *hub.state.drop_once.lock().unwrap() = Some("transformer/diffusion_pytorch_model.safetensors".into());
    let err = download_repo(&cfg, REPO, "main", Downloads::foreground_state(REPO, "main")).await.unwrap_err();
    assert!(err.to_string().contains("transformer/diffusion_pytorch_model.safetensors"), "{err}");
    let listed = registry::scan(std::path::Path::new("/nonexistent"), cache.path());
    if let Some(m) = listed.iter().find(|m| m.id == REPO) {
        assert!(!m.complete, "an interrupted download is not complete");
    }
    assert!(registry::resolve(REPO, std::path::Path::new("/nonexistent"), cache.path(), false).map(|m| !m.complete).unwrap_or(true));
    let gets_before = hub.state.file_gets.load(Ordering::SeqCst);
    let dir = download_repo(&cfg, REPO, "main", Downloads::foreground_state(REPO, "main")).await.unwrap();
    assert_eq!(
        std::fs::read(dir.join("transformer/diffusion_pytorch_model.safetensors")).unwrap(),
        std::fs::read(tiny().join("transformer/diffusion_pytorch_model.safetensors")).unwrap()
    );
    assert!(matches!(registry::first_missing(&dir), Ok(None)));
    // Files finished by the first attempt were not fetched again.
    let refetched = hub.state.file_gets.load(Ordering::SeqCst) - gets_before;
    let needed = 11; // model_index.json + the 10 component files of the tiny t2v pipeline
    assert!(refetched < needed, "{refetched} files fetched again");
    hub.stop().await;
}

#[actix_web::test]
async fn concurrent_requests_share_one_download_and_the_routes_report_it() {
    let hub = start_hub(&tiny()).await;
    let s = common::start_server(|c| c.hub_endpoint = None).await;
    // The server under test talks to the fake hub through its own settings.
    let cache = s.tmp.path().join("hub");
    let downloads = Arc::new(Downloads::new(hub_config(&cache, &hub.base)));
    let (a, sa) = downloads.start(REPO, "main").unwrap();
    let (b, sb) = downloads.start(REPO, "main").unwrap();
    assert_eq!(a, StartOutcome::Started);
    assert_eq!(b, StartOutcome::AlreadyRunning);
    assert!(Arc::ptr_eq(&sa, &sb));
    Downloads::wait(&sa).await.unwrap();
    assert_eq!(hub.state.file_gets.load(Ordering::SeqCst), 11, "each needed file fetched once");
    s.stop().await;

    // Over HTTP: a server whose hub is the fake one.
    let s = common::start_server(|c| c.hub_endpoint = Some(hub.base.clone())).await;
    let client = &s.client;
    let post = || client.post(s.url("/api/v1/models/download")).json(&json!({"model_id": REPO})).send();
    let (r1, r2) = tokio::join!(post(), post());
    let (v1, v2): (Value, Value) = (r1.unwrap().json().await.unwrap(), r2.unwrap().json().await.unwrap());
    let messages = [v1["message"].as_str().unwrap().to_string(), v2["message"].as_str().unwrap().to_string()];
    assert!(messages.contains(&"Model download started".to_string()), "{messages:?}");
    let mut complete = false;
    for _ in 0..200 {
        let v: Value = client.get(s.url("/api/v1/models")).send().await.unwrap().json().await.unwrap();
        if let Some(m) = v["models"].as_array().unwrap().iter().find(|m| m["id"] == REPO) {
            assert_eq!(m["provider"], "huggingface");
            if m["complete"] == true {
                assert_eq!(m["downloaded"], true);
                assert_eq!(m["role"], "t2v");
                assert_eq!(m["download"]["bytes_done"], m["download"]["bytes_total"]);
                complete = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(complete, "the model became complete");
    let resp = client.post(s.url("/api/v1/models/download")).json(&json!({"model_id": "not a repo"})).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    // Then it loads by repo id and serves.
    let resp = client.post(s.url("/api/v1/models/load")).json(&json!({"model_id": REPO})).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    s.wait_healthy().await;
    let info: Value = client.get(s.url("/api/v1/model/info")).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["provider"], "huggingface");
    s.stop().await;
    hub.stop().await;
}

#[actix_web::test]
async fn a_configured_model_is_loaded_when_its_download_completes() {
    let hub = start_hub(&tiny()).await;
    let s = common::start_server(|c| {
        c.hub_endpoint = Some(hub.base.clone());
        c.model = Some(REPO.into());
    })
    .await;
    let (st, v): (u16, Value) = {
        let r = s.client.get(s.url("/health")).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    };
    assert_eq!(st, 503, "not there yet: {v}");
    let r = s.client.post(s.url("/api/v1/models/download")).json(&json!({"model_id": REPO})).send().await.unwrap();
    assert_eq!(r.status(), 202);
    s.wait_healthy().await;
    s.stop().await;
    hub.stop().await;
}
