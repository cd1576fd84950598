//! A flood of 1000 concurrent generation requests at an admission limit of 2 (issue 8): exactly 2
//! admitted, 998 answered 429 with `Retry-After`, no 5xx and no transport error, `/health`
//! answering all through, and the process's memory growth bounded.
//!
//! The real server runs in this process on port 0 with the fake pipeline of `common` (slow
//! steps, so the two admitted jobs hold the limit for the whole flood). This file holds one test,
//! so the resident memory sampled is the flood's alone (server and client together).

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::memory::RssSampler;
use common::start_loaded;
use serde_json::{json, Value};

const REQUESTS: usize = 1000;
const LIMIT: usize = 2;
/// Bound on the resident-memory growth of the whole process (server + 1000 client connections)
/// during the flood. Measured at about 40 MiB; the bound leaves room for allocator noise but
/// catches a per-request leak or buffering of anything large.
const MAX_RSS_GROWTH_MIB: f64 = 128.0;
/// No single request (generation or health) may take longer than this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Raises this process's open-file limit to its hard limit: 1000 client sockets plus 1000 server
/// sockets do not fit in the common default soft limit of 1024.
fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0, "getrlimit");
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0, "setrlimit");
        }
    }
    lim.rlim_cur as u64
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[actix_web::test]
async fn a_flood_of_1000_admits_exactly_the_limit_and_health_answers_throughout() {
    let fds = raise_fd_limit();
    assert!(fds >= 2 * REQUESTS as u64 + 200, "open-file limit {fds} is too low for the flood");
    let s = start_loaded(|c| c.max_concurrent_requests = LIMIT).await;
    // 100 steps of 300 ms: the two admitted jobs outlast the flood many times over.
    s.step_ms.store(300, Ordering::Relaxed);
    let uploads_before = std::fs::read_dir(s.tmp.path().join("data/uploads")).unwrap().count();

    // A fresh connection per request (no pooling): 1000 sockets really are open at once.
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).timeout(REQUEST_TIMEOUT).build().unwrap();
    let url = s.url("/api/v1/generate/text-to-video");
    let memory = RssSampler::start(None);
    let started = Instant::now();
    let flood = (0..REQUESTS).map(|i| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let t = Instant::now();
            let body = json!({"prompt": format!("flood {i}"), "num_inference_steps": 100});
            match client.post(&url).json(&body).send().await {
                Ok(r) => {
                    let retry_after = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
                    let status = r.status().as_u16();
                    let code = r.json::<Value>().await.ok().and_then(|v| v["code"].as_str().map(str::to_string));
                    Ok((status, retry_after, code, t.elapsed()))
                }
                Err(e) => Err(e.to_string()),
            }
        }
    });
    // /health, one request after another, while the flood runs (it lasts a fraction of a second).
    let flood_done = std::sync::atomic::AtomicBool::new(false);
    let health = async {
        let mut answers = Vec::new();
        while !flood_done.load(Ordering::Relaxed) {
            let t = Instant::now();
            let st = client.get(s.url("/health")).send().await.map(|r| r.status().as_u16()).unwrap_or(0);
            answers.push((st, t.elapsed()));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        answers
    };
    let flood = async {
        let results = futures_util::future::join_all(flood).await;
        flood_done.store(true, Ordering::Relaxed);
        results
    };
    let (results, health) = tokio::join!(flood, health);
    let elapsed = started.elapsed();
    let rss = memory.finish();

    let answers: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    let refused: Vec<_> = answers.iter().filter(|a| a.0 == 429).collect();
    let admitted = answers.iter().filter(|a| a.0 == 202).count();
    let health_max = health.iter().map(|h| h.1).max().unwrap_or_default();
    let mut lat: Vec<Duration> = refused.iter().map(|a| a.3).collect();
    lat.sort();
    eprintln!(
        "flood: {REQUESTS} requests in {:.2} s: {admitted} admitted, {} x 429 (latency p50 {:?}, p99 {:?}, max {:?}); \
         /health {} polls, all 200, max {:?}; RSS {:.1} -> {:.1} MiB (growth {:.1} MiB, bound {MAX_RSS_GROWTH_MIB})",
        elapsed.as_secs_f64(),
        refused.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or_default(),
        health.len(),
        health_max,
        rss.baseline_mib,
        rss.peak_mib,
        rss.growth_mib()
    );
    eprintln!("flood: health latencies {:?}", health.iter().map(|h| h.1).collect::<Vec<_>>());
    let errors: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(errors.is_empty(), "{} requests failed in transport, e.g. {:?}", errors.len(), errors.first());
    let others: Vec<_> = answers.iter().filter(|a| a.0 != 202 && a.0 != 429).map(|a| a.0).collect();
    assert!(others.is_empty(), "statuses other than 202/429 (none may be 5xx): {others:?}");
    assert_eq!(admitted, LIMIT, "exactly the limit is admitted");
    assert_eq!(refused.len(), REQUESTS - LIMIT);
    assert!(refused.iter().all(|a| a.1.is_some_and(|s| s >= 1)), "every 429 has a Retry-After of at least 1 s");
    assert!(refused.iter().all(|a| a.2.as_deref() == Some("too_many_requests")), "every 429 has the JSON error body");

    assert!(health.len() >= 2, "health was polled during the flood ({} times)", health.len());
    assert!(health_max < Duration::from_secs(2), "health took {health_max:?} during the flood");
    assert!(health.iter().all(|(st, _)| *st == 200), "health answered 200 all through: {:?}", health.iter().map(|h| h.0).collect::<Vec<_>>());

    assert!(rss.growth_mib() < MAX_RSS_GROWTH_MIB, "RSS grew {:.1} MiB during the flood (bound {MAX_RSS_GROWTH_MIB})", rss.growth_mib());

    // Nothing stored for the refused: two jobs, no uploads.
    let list: Value = s.client.get(s.url("/api/v1/jobs")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["total"], LIMIT, "{list}");
    assert_eq!(std::fs::read_dir(s.tmp.path().join("data/uploads")).unwrap().count(), uploads_before);
    let metrics = s.client.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(&format!("wan_rejected_total {}", REQUESTS - LIMIT)), "{metrics}");

    for j in list["jobs"].as_array().unwrap() {
        let _ = s.client.post(s.url(&format!("/api/v1/job/{}/cancel", j["job_id"].as_str().unwrap()))).send().await;
    }
    s.stop().await;
}
