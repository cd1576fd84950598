//! A local stand-in for the Hugging Face hub on 127.0.0.1 that serves one directory of
//! ../shared/models as the repo `test-org/wan-tiny` on the routes hf-hub calls: the repo info
//! (`/api/models/{org}/{name}/revision/{rev}`) and `HEAD`/`GET /{org}/{name}/resolve/{rev}/{path}`
//! with `ETag`, `X-Repo-Commit`, `Content-Length` and `Range` (206, clamped). It counts requests
//! and can drop the connection in the middle of one file, once.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

pub const REPO: &str = "test-org/wan-tiny";
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

#[derive(Clone)]
pub struct HubState {
    pub root: PathBuf,
    pub requests: Arc<AtomicUsize>,
    pub file_gets: Arc<AtomicUsize>,
    /// A file whose next full download is cut off half-way.
    pub drop_once: Arc<Mutex<Option<String>>>,
}

pub struct FakeHub {
    pub base: String,
    pub state: HubState,
    handle: actix_web::dev::ServerHandle,
}

impl FakeHub {
    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

fn files(root: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
                out.push((rel, std::fs::metadata(&p).unwrap().len()));
            }
        }
    }
    out.sort();
    out
}

fn etag(bytes: &[u8]) -> String {
    // FNV-1a, enough to tell the files apart (blobs are named by it).
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}{:08x}", bytes.len())
}

async fn info(st: web::Data<HubState>, path: web::Path<(String, String, String)>) -> HttpResponse {
    st.requests.fetch_add(1, Ordering::SeqCst);
    let (org, name, _rev) = path.into_inner();
    if format!("{org}/{name}") != REPO {
        return HttpResponse::NotFound().json(serde_json::json!({"error": "Repository not found"}));
    }
    let mut siblings: Vec<serde_json::Value> = files(&st.root).into_iter().map(|(f, size)| serde_json::json!({"rfilename": f, "size": size})).collect();
    // Files a pipeline does not need must not be fetched.
    siblings.push(serde_json::json!({"rfilename": "README.md", "size": 5}));
    siblings.push(serde_json::json!({"rfilename": "transformer/diffusion_pytorch_model.fp16.safetensors", "size": 5}));
    HttpResponse::Ok().json(serde_json::json!({"id": REPO, "sha": COMMIT, "siblings": siblings}))
}

async fn resolve(st: web::Data<HubState>, req: HttpRequest, path: web::Path<(String, String, String, String)>) -> HttpResponse {
    st.requests.fetch_add(1, Ordering::SeqCst);
    let (org, name, _rev, file) = path.into_inner();
    if format!("{org}/{name}") != REPO || file.contains("..") {
        return HttpResponse::NotFound().finish();
    }
    let Ok(bytes) = std::fs::read(st.root.join(&file)) else { return HttpResponse::NotFound().finish() };
    let len = bytes.len() as u64;
    let range = req.headers().get("range").and_then(|v| v.to_str().ok()).and_then(|r| r.strip_prefix("bytes=")).and_then(|r| {
        let (a, b) = r.split_once('-')?;
        let a: u64 = a.parse().ok()?;
        let b: u64 = if b.is_empty() { len - 1 } else { b.parse().ok()? };
        Some((a, b.min(len.saturating_sub(1))))
    });
    let mut resp = match range {
        Some(_) => HttpResponse::PartialContent(),
        None => HttpResponse::Ok(),
    };
    resp.insert_header(("ETag", format!("\"{}\"", etag(&bytes)))).insert_header(("X-Repo-Commit", COMMIT)).insert_header(("Accept-Ranges", "bytes"));
    let (a, b) = range.unwrap_or((0, len.saturating_sub(1)));
    if range.is_some() {
        resp.insert_header(("Content-Range", format!("bytes {a}-{b}/{len}")));
    }
    if req.method() == actix_web::http::Method::HEAD {
        return resp.insert_header(("Content-Length", len.to_string())).finish();
    }
    let body = bytes[a as usize..=(b as usize).min(bytes.len().saturating_sub(1))].to_vec();
    let full = body.len() > 1;
    if full {
        st.file_gets.fetch_add(1, Ordering::SeqCst);
    }
    let cut = full && st.drop_once.lock().unwrap().as_deref() == Some(file.as_str());
    if cut {
        *st.drop_once.lock().unwrap() = None;
        let half = body[..body.len() / 2].to_vec();
        let n = body.len();
        let stream = futures_util::stream::iter(vec![Ok(web::Bytes::from(half)), Err(std::io::Error::other("connection dropped by the test"))]);
        return resp.no_chunking(n as u64).streaming(stream);
    }
    resp.body(body)
}

/// Serves `root` as the repo [`REPO`] on 127.0.0.1 (a free port).
pub async fn start_hub(root: &Path) -> FakeHub {
    let state = HubState { root: root.to_path_buf(), requests: Default::default(), file_gets: Default::default(), drop_once: Default::default() };
    let data = web::Data::new(state.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/api/models/{org}/{name}/revision/{rev}", web::get().to(info))
            .route("/{org}/{name}/resolve/{rev}/{file:.*}", web::get().to(resolve))
            .route("/{org}/{name}/resolve/{rev}/{file:.*}", web::head().to(resolve))
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    FakeHub { base: format!("http://{addr}"), state, handle }
}
