//! Callbacks against a local HTTP receiver on 127.0.0.1: retried with backoff, never on the
//! worker's path, only to allowlisted hosts.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wan_jobs::{Error, JobManager, JobStatus};

const LONG: Duration = Duration::from_secs(20);

/// A minimal HTTP/1.1 receiver: answers the first `failures` requests 500 and the rest 200, or
/// never answers at all when `hang`. Records (arrival time, body) of each request.
struct Receiver {
    url: String,
    seen: Arc<Mutex<Vec<(Instant, serde_json::Value)>>>,
}

async fn read_request(conn: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    assert!(head.starts_with("post /hook "), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < header_end + len {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(buf[header_end..header_end + len].to_vec())
}

async fn receiver(failures: usize, hang: bool) -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://127.0.0.1:{}/hook", listener.local_addr().unwrap().port());
    let seen: Arc<Mutex<Vec<(Instant, serde_json::Value)>>> = Arc::default();
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { return };
            let seen = seen2.clone();
            tokio::spawn(async move {
                let Some(body) = read_request(&mut conn).await else { return };
                let n = {
                    let mut s = seen.lock();
                    s.push((Instant::now(), serde_json::from_slice(&body).unwrap()));
                    s.len()
                };
                if hang {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                let status = if n <= failures { "500 Internal Server Error" } else { "200 OK" };
                let resp = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = conn.write_all(resp.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    Receiver { url, seen }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_is_retried_with_backoff_until_delivered() {
    let rx = receiver(2, false).await;
    let dirs = TestDirs::new();
    let mut config = dirs.config(4);
    config.callbacks.initial_backoff_ms = 100;
    config.callbacks.max_attempts = 5;
    let m = JobManager::open(config, FakeGenerator::new(1)).unwrap();
    let mut req = request("with a hook", 2);
    req.callback_url = Some(rx.url.clone());
    let job = m.submit(req).unwrap();
    assert_eq!(wait_terminal(&m, job.job_id.as_str(), LONG).await.status, JobStatus::Completed);

    assert!(wait_for(LONG, || rx.seen.lock().len() >= 3).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = rx.seen.lock().clone();
    assert_eq!(seen.len(), 3, "delivered on the third attempt, then no more");
    for (_, body) in &seen {
        assert_eq!(body["job_id"], job.job_id.as_str());
        assert_eq!(body["status"], "completed");
        assert_eq!(body["output_url"], format!("/outputs/{}", job.job_id.output_file_name()));
    }
    let gap1 = seen[1].0 - seen[0].0;
    let gap2 = seen[2].0 - seen[1].0;
    assert!(gap1 >= Duration::from_millis(100), "{gap1:?}");
    assert!(gap2 >= Duration::from_millis(200), "backoff doubles: {gap2:?}");
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_never_holds_the_worker() {
    let rx = receiver(0, true).await;
    let dirs = TestDirs::new();
    let mut config = dirs.config(4);
    config.callbacks.timeout_ms = 30_000;
    config.callbacks.shutdown_grace_ms = 100;
    let m = JobManager::open(config, FakeGenerator::new(1)).unwrap();
    let mut req = request("hook hangs", 2);
    req.callback_url = Some(rx.url.clone());
    let a = m.submit(req).unwrap();
    wait_terminal(&m, a.job_id.as_str(), LONG).await;
    assert!(wait_for(LONG, || rx.seen.lock().len() == 1).await);

    let started = Instant::now();
    let b = m.submit(request("next", 2)).unwrap();
    assert_eq!(wait_terminal(&m, b.job_id.as_str(), LONG).await.status, JobStatus::Completed);
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    tokio::time::timeout(Duration::from_secs(5), m.shutdown()).await.expect("shutdown does not wait for the hung callback");
}

#[tokio::test]
async fn callback_hosts_off_the_allowlist_are_refused() {
    let dirs = TestDirs::new();
    let m = JobManager::open(dirs.config(4), FakeGenerator::new(1)).unwrap();
    let mut req = request("a", 2);
    req.callback_url = Some("http://10.0.0.1/hook".into());
    match m.submit(req).unwrap_err() {
        Error::Validation { field, message } => {
            assert_eq!(field, "callback_url");
            assert!(message.contains("10.0.0.1") && message.contains("allowlist"), "{message}");
        }
        e => panic!("{e:?}"),
    }
    m.shutdown().await;
}
