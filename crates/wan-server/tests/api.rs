//! The real server on port 0, driven over HTTP: every route, every error status, the flows of
//! API.md (with a fake pipeline standing in for the model; readme.rs covers the real one).
//! Load, faults and hostile input live in flood.rs, crash.rs, bad_media.rs and hostile/.

mod common;

use std::time::Duration;

use common::{sample_png, start_loaded, start_server};
use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};

async fn body(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    (status, v)
}

fn assert_error(status: u16, v: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{v}");
    assert_eq!(v["code"], want_code, "{v}");
    assert!(v["error"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
}

#[actix_web::test]
async fn without_a_model_health_and_generation_are_503_and_load_fixes_it() {
    let s = start_server(|_| {}).await;
    let (st, v) = body(s.client.get(s.url("/health")).send().await.unwrap()).await;
    assert_eq!(st, 503);
    assert_eq!(v["status"], "unhealthy");
    assert_eq!(v["service"], "wan2-video-server");
    assert!(v["reason"].as_str().unwrap().contains("Model not loaded"), "{v}");

    let (st, v) = body(s.client.post(s.url("/api/v1/generate/text-to-video")).json(&json!({"prompt": "a cat"})).send().await.unwrap()).await;
    assert_error(st, &v, 503, "model_not_loaded");
    assert!(v["error"].as_str().unwrap().starts_with("Model not loaded"), "{v}");
    assert!(v["error"].as_str().unwrap().contains("/api/v1/models/load"), "says what to do: {v}");

    // The catalogue lists the local tiny models, complete, with their roles, none loaded.
    let (st, v) = body(s.client.get(s.url("/api/v1/models")).send().await.unwrap()).await;
    assert_eq!(st, 200);
    let models = v["models"].as_array().unwrap();
    let t2v = models.iter().find(|m| m["id"] == "wan-tiny-t2v").expect("tiny t2v listed");
    assert_eq!(t2v["complete"], true);
    assert_eq!(t2v["downloaded"], true);
    assert_eq!(t2v["role"], "t2v");
    assert_eq!(t2v["loaded"], false);
    assert!(t2v["size_bytes"].as_u64().unwrap() > 0);
    assert_eq!(models.iter().find(|m| m["id"] == "wan-tiny-i2v").unwrap()["role"], "i2v");

    // Load errors: unknown model 404, a non-Wan directory 400, a wrong role 400, paths refused.
    let (st, v) = body(s.client.post(s.url("/api/v1/models/load")).json(&json!({"model_id": "nope"})).send().await.unwrap()).await;
    assert_error(st, &v, 404, "model_not_found");
    let (st, v) = body(s.client.post(s.url("/api/v1/models/load")).json(&json!({"model_id": "scheduler-flow-match-euler"})).send().await.unwrap()).await;
    assert_error(st, &v, 404, "model_not_found");
    let (st, v) = body(s.client.post(s.url("/api/v1/models/load")).json(&json!({"model_id": "wan-tiny-t2v", "role": "i2v"})).send().await.unwrap()).await;
    assert_error(st, &v, 400, "role_mismatch");
    let (st, v) = body(s.client.post(s.url("/api/v1/models/load")).json(&json!({"model_id": "/etc"})).send().await.unwrap()).await;
    assert_error(st, &v, 404, "model_not_found");
    let (st, v) = body(s.client.post(s.url("/api/v1/models/load")).json(&json!({"model_id": "wan-tiny-t2v", "role": "x2v"})).send().await.unwrap()).await;
    assert_error(st, &v, 400, "invalid_json");

    let (st, v) = body(s.client.post(s.url("/api/v1/models/load")).json(&json!({"model_id": "wan-tiny-t2v"})).send().await.unwrap()).await;
    assert_eq!(st, 202, "{v}");
    assert_eq!(v["role"], "t2v");
    s.wait_healthy().await;
    let (_, v) = body(s.client.get(s.url("/health")).send().await.unwrap()).await;
    assert_eq!(v["status"], "healthy");
    let (_, v) = body(s.client.get(s.url("/api/v1/models")).send().await.unwrap()).await;
    assert_eq!(v["models"].as_array().unwrap().iter().find(|m| m["id"] == "wan-tiny-t2v").unwrap()["loaded"], true);
    let (st, v) = body(s.client.get(s.url("/api/v1/model/info")).send().await.unwrap()).await;
    assert_eq!(st, 200);
    for k in ["name", "version", "provider", "gpu_enabled", "gpu_device_id", "cache_dir"] {
        assert!(v.get(k).is_some(), "model/info lacks {k}: {v}");
    }
    assert_eq!(v["provider"], "local");
    // i2v still has no model: 503 for image-to-video only.
    let form = Form::new().part("image", Part::bytes(sample_png()).file_name("a.png"));
    let (st, v) = body(s.client.post(s.url("/api/v1/generate/image-to-video")).multipart(form).send().await.unwrap()).await;
    assert_error(st, &v, 503, "model_not_loaded");
    s.stop().await;
}

#[actix_web::test]
async fn text_to_video_runs_to_a_downloadable_mp4_with_ranges_and_etag() {
    let s = start_loaded(|_| {}).await;
    // 002's example body.
    let resp = s
        .client
        .post(s.url("/api/v1/generate/text-to-video"))
        .json(&json!({"prompt": "A beautiful sunset over the ocean", "num_frames": 64, "fps": 24, "guidance_scale": 7.5}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let (_, v) = body(resp).await;
    let id = v["job_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("job_") && id.len() == "job_".len() + 10 + 1 + 12, "{id}");
    assert_eq!(location, format!("/api/v1/job/{id}"));
    assert_eq!(v["message"], "Video generation started");
    assert!(["pending", "processing"].contains(&v["status"].as_str().unwrap()));

    let job = s.wait_job(&id).await;
    assert_eq!(job["status"], "completed", "{job}");
    for k in ["job_id", "status", "message", "output_path", "created_at", "updated_at", "seed", "params", "progress", "output_url", "started_at", "completed_at"] {
        assert!(job.get(k).is_some(), "job lacks {k}: {job}");
    }
    assert_eq!(job["params"]["num_frames"], 64);
    assert_eq!(job["progress"].as_f64().unwrap(), 100.0);
    let url = job["output_url"].as_str().unwrap().to_string();
    assert!(url.starts_with("/outputs/") && url.ends_with(".mp4"), "{url}");

    let full = s.client.get(s.url(&url)).send().await.unwrap();
    assert_eq!(full.status(), 200);
    assert_eq!(full.headers()["content-type"], "video/mp4");
    let etag = full.headers()["etag"].to_str().unwrap().to_string();
    assert!(full.headers().contains_key("last-modified"));
    let bytes = full.bytes().await.unwrap();
    assert!(bytes.len() > 100);
    assert_eq!(&bytes[4..8], b"ftyp");

    let part = s.client.get(s.url(&url)).header("Range", "bytes=4-7").send().await.unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"].to_str().unwrap(), format!("bytes 4-7/{}", bytes.len()));
    assert_eq!(&part.bytes().await.unwrap()[..], b"ftyp");
    let unsat = s.client.get(s.url(&url)).header("Range", format!("bytes={}-", bytes.len() + 10)).send().await.unwrap();
    assert_eq!(unsat.status(), 416);
    let cached = s.client.get(s.url(&url)).header("If-None-Match", &etag).send().await.unwrap();
    assert_eq!(cached.status(), 304);

    // The outputs listing and the preview of the first frame.
    let (st, v) = body(s.client.get(s.url("/api/v1/outputs?limit=10&file_type=video")).send().await.unwrap()).await;
    assert_eq!(st, 200);
    assert_eq!(v["total"], 1);
    assert_eq!(v["outputs"][0]["url"], url);
    let (st, v) = body(s.client.get(s.url("/api/v1/outputs?file_type=image")).send().await.unwrap()).await;
    assert_eq!((st, v["total"].as_u64()), (200, Some(0)));
    let (st, v) = body(s.client.get(s.url("/api/v1/outputs?limit=0")).send().await.unwrap()).await;
    assert_error(st, &v, 400, "invalid_query");
    let name = url.trim_start_matches("/outputs/");
    let prev = s.client.get(s.url(&format!("/api/v1/preview/{name}?width=40"))).send().await.unwrap();
    assert_eq!(prev.status(), 200);
    assert_eq!(prev.headers()["content-type"], "image/jpeg");
    let img = image::load_from_memory(&prev.bytes().await.unwrap()).unwrap();
    assert_eq!(img.width(), 40);
    assert_eq!(img.height(), 30, "64x48 scaled to width 40 keeps the aspect");
    let (st, v) = body(s.client.get(s.url(&format!("/api/v1/preview/{name}?width=5"))).send().await.unwrap()).await;
    assert_error(st, &v, 400, "invalid_query");
    let (st, v) = body(s.client.get(s.url("/api/v1/preview/nothing.mp4")).send().await.unwrap()).await;
    assert_error(st, &v, 404, "file_not_found");

    // History, stats, metrics.
    let (st, v) = body(s.client.get(s.url("/api/v1/jobs?status=completed")).send().await.unwrap()).await;
    assert_eq!(st, 200);
    assert_eq!(v["total"], 1);
    assert_eq!(v["jobs"][0]["job_id"], id);
    let (st, v) = body(s.client.get(s.url("/api/v1/jobs?status=bogus")).send().await.unwrap()).await;
    assert_error(st, &v, 400, "invalid_query");
    let (st, v) = body(s.client.get(s.url("/api/v1/jobs?limit=abc")).send().await.unwrap()).await;
    assert_error(st, &v, 400, "invalid_query");
    let (st, v) = body(s.client.get(s.url("/api/v1/stats")).send().await.unwrap()).await;
    assert_eq!(st, 200);
    assert_eq!(v["counts"]["completed"], 1);
    let metrics = s.client.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("wan_jobs{status=\"completed\"} 1"), "{metrics}");
    assert!(metrics.contains("wan_queue_depth 0"));
    s.stop().await;
}

#[actix_web::test]
async fn validation_errors_are_400_json_naming_the_field() {
    let s = start_loaded(|_| {}).await;
    let post = |b: &'static str| s.client.post(s.url("/api/v1/generate/text-to-video")).header("Content-Type", "application/json").body(b).send();
    for (b, needle) in [
        (r#"{"num_frames": 16}"#, "prompt"),
        (r#"{"prompt": ""}"#, "prompt"),
        (r#"{"prompt": "x", "num_frames": 500}"#, "num_frames"),
        (r#"{"prompt": "x", "width": 500}"#, "width"),
        (r#"{"prompt": "x", "guidance_scale": 50}"#, "guidance_scale"),
        (r#"{"prompt": "x", "fps": 0}"#, "fps"),
        (r#"{"prompt": "x", "seed": -5}"#, "seed"),
        (r#"{"prompt": "x", "num_inference_steps": 1000}"#, "num_inference_steps"),
        (r#"{"prompt": "x", "callback_url": "http://example.com/hook"}"#, "callback"),
    ] {
        let (st, v) = body(post(b).await.unwrap()).await;
        assert_error(st, &v, 400, "invalid_request");
        assert!(v["error"].as_str().unwrap().contains(needle), "{b} -> {v}");
    }
    for b in [r#"{"prompt": "#, r#"{"prompt": "x", "num_frames": "many"}"#, r#"{"prompt": "x", "priority": "urgent"}"#, "[]", ""] {
        let (st, v) = body(post(b).await.unwrap()).await;
        assert_error(st, &v, 400, "invalid_json");
    }
    let (st, v) = body(s.client.post(s.url("/api/v1/generate/text-to-video")).body("prompt=x").send().await.unwrap()).await;
    assert_error(st, &v, 415, "unsupported_media_type");
    let (st, v) = body(s.client.get(s.url("/api/v1/job/job_1_abcdef123456")).send().await.unwrap()).await;
    assert_error(st, &v, 404, "job_not_found");
    let (st, v) = body(s.client.get(s.url("/api/v1/job/..%2f..%2fetc")).send().await.unwrap()).await;
    assert_error(st, &v, 404, "job_not_found");
    let (st, v) = body(s.client.get(s.url("/no/such/route")).send().await.unwrap()).await;
    assert_error(st, &v, 404, "route_not_found");
    let (st, v) = body(s.client.put(s.url("/api/v1/queue")).send().await.unwrap()).await;
    assert_eq!(st, 404, "{v}");
    assert!(v["code"].is_string());
    // Nothing was admitted by any of these.
    let (_, v) = body(s.client.get(s.url("/api/v1/jobs")).send().await.unwrap()).await;
    assert_eq!(v["total"], 0, "{v}");
    s.stop().await;
}

#[actix_web::test]
async fn the_limit_answers_429_with_retry_after_and_cancel_frees_it() {
    let s = start_loaded(|c| c.max_concurrent_requests = 2).await;
    s.step_ms.store(100, std::sync::atomic::Ordering::Relaxed);
    let req = json!({"prompt": "slow", "num_inference_steps": 50});
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (st, v) = body(s.client.post(s.url("/api/v1/generate/text-to-video")).json(&req).send().await.unwrap()).await;
        assert_eq!(st, 202, "{v}");
        ids.push(v["job_id"].as_str().unwrap().to_string());
    }
    let resp = s.client.post(s.url("/api/v1/generate/text-to-video")).json(&req).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    let (st, v) = body(resp).await;
    assert_error(st, &v, 429, "too_many_requests");
    // A batch of two is refused whole.
    let (st, _) = body(s.client.post(s.url("/api/v1/generate/text-to-video")).json(&json!({"prompts": ["a", "b"]})).send().await.unwrap()).await;
    assert_eq!(st, 429);

    // The queue shows one processing (or about to) and one pending.
    let (st, q) = body(s.client.get(s.url("/api/v1/queue")).send().await.unwrap()).await;
    assert_eq!(st, 200);
    assert_eq!(q["total_tasks"], 2, "{q}");
    assert!(q["tasks"].as_array().unwrap().iter().all(|t| ids.contains(&t["id"].as_str().unwrap().to_string())));

    // Remove the pending one through the queue route, cancel the other.
    let pending = q["tasks"].as_array().unwrap().iter().find(|t| t["status"] == "pending").map(|t| t["id"].as_str().unwrap().to_string());
    if let Some(p) = &pending {
        let (st, v) = body(s.client.delete(s.url(&format!("/api/v1/queue/{p}"))).send().await.unwrap()).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["status"], "cancelled");
    }
    for id in &ids {
        let (st, v) = body(s.client.post(s.url(&format!("/api/v1/job/{id}/cancel"))).send().await.unwrap()).await;
        if Some(id) == pending.as_ref() {
            assert_error(st, &v, 409, "conflict");
        } else {
            assert_eq!(st, 200, "{v}");
        }
    }
    for id in &ids {
        assert_eq!(s.wait_job(id).await["status"], "cancelled");
    }
    let (st, v) = body(s.client.post(s.url("/api/v1/job/job_1_abcdef123456/cancel")).send().await.unwrap()).await;
    assert_error(st, &v, 404, "job_not_found");
    // Room again; a batch answers one job per prompt.
    s.step_ms.store(1, std::sync::atomic::Ordering::Relaxed);
    let (st, v) = body(s.client.post(s.url("/api/v1/generate/text-to-video")).json(&json!({"prompts": ["a", "b"], "num_inference_steps": 2})).send().await.unwrap()).await;
    assert_eq!(st, 202, "{v}");
    assert_eq!(v["jobs"].as_array().unwrap().len(), 2);
    let (st, v) = body(s.client.delete(s.url("/api/v1/queue")).send().await.unwrap()).await;
    assert_eq!(st, 200, "{v}");
    let metrics = s.client.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("wan_rejected_total 2"), "{metrics}");
    s.stop().await;
}

#[actix_web::test]
async fn server_sent_events_come_in_order_and_late_clients_catch_up() {
    let s = start_loaded(|_| {}).await;
    s.step_ms.store(30, std::sync::atomic::Ordering::Relaxed);
    let (_, v) = body(s.client.post(s.url("/api/v1/generate/text-to-video")).json(&json!({"prompt": "events", "num_inference_steps": 5})).send().await.unwrap()).await;
    let id = v["job_id"].as_str().unwrap().to_string();
    let resp = s.client.get(s.url(&format!("/api/v1/job/{id}/events"))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let text = tokio::time::timeout(Duration::from_secs(30), resp.text()).await.expect("stream ends after the terminal event").unwrap();
    let events: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
    assert!(matches!(events.first(), Some(&"queued") | Some(&"started") | Some(&"progress")), "{events:?}");
    assert_eq!(events.last(), Some(&"completed"), "{events:?}");
    let order = |e: &str| ["queued", "started", "progress", "completed"].iter().position(|x| *x == e).unwrap();
    assert!(events.windows(2).all(|w| order(w[0]) <= order(w[1])), "{events:?}");
    let steps: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str::<Value>(d).unwrap()["current_step"].as_u64().unwrap())
        .collect();
    assert!(steps.windows(2).all(|w| w[0] <= w[1]), "{steps:?}");
    // A late client gets the final state at once, and the stream ends.
    let late = tokio::time::timeout(Duration::from_secs(5), async { s.client.get(s.url(&format!("/api/v1/job/{id}/events"))).send().await.unwrap().text().await.unwrap() }).await.unwrap();
    assert!(late.starts_with("event: completed\n"), "{late}");
    let (st, v) = body(s.client.get(s.url("/api/v1/job/job_1_abcdef123456/events")).send().await.unwrap()).await;
    assert_error(st, &v, 404, "job_not_found");
    s.stop().await;
}

#[actix_web::test]
async fn uploads_are_typed_by_content_and_limited() {
    let s = start_loaded(|c| c.max_image_bytes = 10_000).await;
    let png = sample_png();
    // 002's image-to-video form.
    let form = Form::new()
        .part("image", Part::bytes(png.clone()).file_name("image.jpg").mime_str("image/jpeg").unwrap())
        .text("prompt", "A dog running in a park")
        .text("num_frames", "64")
        .text("fps", "24")
        .text("num_inference_steps", "2");
    let (st, v) = body(s.client.post(s.url("/api/v1/generate/image-to-video")).multipart(form).send().await.unwrap()).await;
    assert_eq!(st, 202, "{v}");
    let job = s.wait_job(v["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["params"]["kind"], "image-to-video");

    // Text with an image name: 415, nothing stored.
    let uploads = s.tmp.path().join("data/uploads");
    let before = std::fs::read_dir(&uploads).unwrap().count();
    let form = Form::new().part("image", Part::bytes(b"just some text, honestly".to_vec()).file_name("cat.png").mime_str("image/png").unwrap());
    let (st, v) = body(s.client.post(s.url("/api/v1/generate/image-to-video")).multipart(form).send().await.unwrap()).await;
    assert_error(st, &v, 415, "unsupported_media_type");
    // Over the limit: 413.
    let mut big = png.clone();
    big.resize(50_000, 0);
    let form = Form::new().part("image", Part::bytes(big).file_name("big.png"));
    let (st, v) = body(s.client.post(s.url("/api/v1/generate/image-to-video")).multipart(form).send().await.unwrap()).await;
    assert_error(st, &v, 413, "payload_too_large");
    // A video given to image-to-video: 415.
    let mp4 = std::fs::read(common::sample_mp4(s.tmp.path())).unwrap();
    let form = Form::new().part("image", Part::bytes(mp4.clone()).file_name("x.png"));
    let (st, v) = body(s.client.post(s.url("/api/v1/generate/image-to-video")).multipart(form).send().await.unwrap()).await;
    assert_error(st, &v, 415, "unsupported_media_type");
    // Missing file, bad number field.
    let (st, v) = body(s.client.post(s.url("/api/v1/generate/image-to-video")).multipart(Form::new().text("prompt", "x")).send().await.unwrap()).await;
    assert_error(st, &v, 400, "invalid_request");
    let form = Form::new().part("image", Part::bytes(png.clone()).file_name("a.png")).text("num_frames", "lots");
    let (st, v) = body(s.client.post(s.url("/api/v1/generate/image-to-video")).multipart(form).send().await.unwrap()).await;
    assert_error(st, &v, 400, "invalid_request");
    assert!(v["error"].as_str().unwrap().contains("num_frames"));
    let after: Vec<_> = std::fs::read_dir(&uploads).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(after.len(), before, "refused uploads leave nothing: {after:?}");

    // Base64 image_start in JSON.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
    let (st, v) = body(s.client.post(s.url("/api/v1/generate/image-to-video")).json(&json!({"image_start": format!("data:image/png;base64,{b64}"), "num_inference_steps": 2})).send().await.unwrap()).await;
    assert_eq!(st, 202, "{v}");

    // Storage upload then reuse by key, for video-to-video (002's form fields).
    let form = Form::new().part("file", Part::bytes(mp4.clone()).file_name("clip.mp4"));
    let (st, up) = body(s.client.post(s.url("/api/v1/storage/upload")).multipart(form).send().await.unwrap()).await;
    assert_eq!(st, 201, "{up}");
    assert_eq!(up["content_type"], "video/mp4");
    let key = up["key"].as_str().unwrap();
    s.wait_job(v["job_id"].as_str().unwrap()).await;
    let form = Form::new().text("video_key", key.to_string()).text("prompt", "Transform into anime style").text("strength", "0.8").text("num_inference_steps", "2");
    let (st, v) = body(s.client.post(s.url("/api/v1/generate/video-to-video")).multipart(form).send().await.unwrap()).await;
    assert_eq!(st, 202, "{v}");
    let job = s.wait_job(v["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["params"]["strength"], 0.8);
    let (st, v) = body(s.client.post(s.url("/api/v1/generate/video-to-video")).json(&json!({"video_key": "uploads/../../etc/passwd"})).send().await.unwrap()).await;
    assert_error(st, &v, 400, "invalid_request");
    let form = Form::new().part("video", Part::bytes(mp4).file_name("v.mp4")).text("strength", "1.5");
    let (st, v) = body(s.client.post(s.url("/api/v1/generate/video-to-video")).multipart(form).send().await.unwrap()).await;
    assert_error(st, &v, 400, "invalid_request");
    assert!(v["error"].as_str().unwrap().contains("strength"), "{v}");
    s.stop().await;
}

#[actix_web::test]
async fn the_openapi_document_matches_the_routes_and_the_docs_page_is_served() {
    let s = start_server(|_| {}).await;
    let mut documented = wan_server::openapi::documented_routes();
    let mut registered: Vec<(String, String)> = wan_server::server::ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    documented.sort();
    registered.sort();
    assert_eq!(documented, registered);
    let (st, spec) = body(s.client.get(s.url("/api/openapi.json")).send().await.unwrap()).await;
    assert_eq!(st, 200);
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    // Every registered route is really served (not the JSON 404 of unknown routes).
    for (method, path) in wan_server::server::ROUTES {
        let p = path.replace("{id}", "job_1_abcdef123456").replace("{filename}", "x.mp4");
        let resp = s.client.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), s.url(&p)).send().await.unwrap();
        let text = resp.text().await.unwrap();
        assert!(!text.contains("route_not_found"), "{method} {path} is not registered");
    }
    let page = s.client.get(s.url("/api/docs/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().to_lowercase().contains("swagger"));
    let redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap().get(s.url("/api/docs")).send().await.unwrap();
    assert!(redirect.status().is_redirection());
    s.stop().await;
}

#[actix_web::test]
async fn curl_examples_of_002_run_as_written() {
    if std::process::Command::new("curl").arg("--version").output().is_err() {
        eprintln!("curl not installed: skipped");
        return;
    }
    let s = start_loaded(|_| {}).await;
    let base = s.base.clone();
    let img = s.tmp.path().join("image.png");
    std::fs::write(&img, sample_png()).unwrap();
    let video = common::sample_mp4(s.tmp.path());
    let curl = |args: Vec<String>| {
        let out = std::process::Command::new("curl").arg("-s").arg("-w").arg("\n%{http_code}").args(args).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.parse::<u16>().unwrap(), serde_json::from_str::<Value>(body).unwrap_or(Value::Null))
    };
    let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (st, v) = curl(a(&[&format!("{base}/health")]));
    assert_eq!((st, v["status"].as_str()), (200, Some("healthy")));
    let (st, _) = curl(a(&[&format!("{base}/api/v1/model/info")]));
    assert_eq!(st, 200);
    let (st, v) = curl(a(&["-X", "POST", &format!("{base}/api/v1/generate/text-to-video"), "-H", "Content-Type: application/json", "-d",
        r#"{
    "prompt": "A beautiful sunset over the ocean",
    "num_frames": 64,
    "fps": 24,
    "guidance_scale": 7.5
  }"#]));
    assert_eq!(st, 202, "{v}");
    let t2v = v["job_id"].as_str().unwrap().to_string();
    s.wait_job(&t2v).await;
    let (st, v) = curl(a(&["-X", "POST", &format!("{base}/api/v1/generate/image-to-video"), "-F", &format!("image=@{}", img.display()), "-F", "prompt=A dog running in a park", "-F", "num_frames=64", "-F", "fps=24"]));
    assert_eq!(st, 202, "{v}");
    s.wait_job(v["job_id"].as_str().unwrap()).await;
    let (st, v) = curl(a(&["-X", "POST", &format!("{base}/api/v1/generate/video-to-video"), "-F", &format!("video=@{}", video.display()), "-F", "prompt=Transform into anime style", "-F", "strength=0.8"]));
    assert_eq!(st, 202, "{v}");
    s.wait_job(v["job_id"].as_str().unwrap()).await;
    let (st, v) = curl(a(&[&format!("{base}/api/v1/job/{t2v}")]));
    assert_eq!((st, v["status"].as_str()), (200, Some("completed")));
    let (st, v) = curl(a(&[&format!("{base}/api/v1/models")]));
    assert_eq!(st, 200);
    assert!(v["models"].is_array());
    let (st, v) = curl(a(&["-X", "POST", &format!("{base}/api/v1/models/download"), "-H", "Content-Type: application/json", "-d", r#"{"model_id": "Lightricks/LTX-Video"}"#]));
    assert_eq!(st, 202, "{v}");
    assert_eq!(v["message"], "Model download started");
    assert_eq!(v["model_id"], "Lightricks/LTX-Video");
    let out = v["model_id"].as_str().unwrap();
    assert!(!out.is_empty());
    let file = s.wait_job(&t2v).await["output_url"].as_str().unwrap().to_string();
    let (st, _) = curl(a(&["-o", "/dev/null", &format!("{base}{file}")]));
    assert_eq!(st, 200);
    s.stop().await;
}

#[actix_web::test]
async fn shutdown_stops_admitting_and_jobs_survive_a_restart() {
    let s = start_loaded(|_| {}).await;
    s.step_ms.store(50, std::sync::atomic::Ordering::Relaxed);
    let (_, v) = body(s.client.post(s.url("/api/v1/generate/text-to-video")).json(&json!({"prompt": "long", "num_inference_steps": 100})).send().await.unwrap()).await;
    let id = v["job_id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let data_dir = s.tmp.path().join("data");
    let TestServerParts { tmp, running } = split(s);
    running.shutdown().await;
    // Restart on the same data: the interrupted job is there again and completes.
    let s2 = common::start_server(|c| {
        c.data_dir = data_dir.clone();
        c.model = Some("wan-tiny-t2v".into());
    })
    .await;
    s2.wait_healthy().await;
    let job = s2.wait_job(&id).await;
    assert_eq!(job["status"], "completed", "{job}");
    drop(tmp);
    s2.stop().await;
}

struct TestServerParts {
    tmp: tempfile::TempDir,
    running: wan_server::server::Running,
}

fn split(mut s: common::TestServer) -> TestServerParts {
    let running = s.running.take().unwrap();
    let tmp = std::mem::replace(&mut s.tmp, tempfile::tempdir().unwrap());
    TestServerParts { tmp, running }
}

#[actix_web::test]
async fn a_stopping_server_refuses_generation_with_503() {
    let s = start_loaded(|_| {}).await;
    s.running.as_ref().unwrap().state.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
    let (st, v) = body(s.client.post(s.url("/api/v1/generate/text-to-video")).json(&json!({"prompt": "late"})).send().await.unwrap()).await;
    assert_error(st, &v, 503, "shutting_down");
    let (st, v) = body(s.client.get(s.url("/health")).send().await.unwrap()).await;
    assert_eq!((st, v["status"].as_str()), (503, Some("unhealthy")));
    s.stop().await;
}
