//! The real `wan-server serve` binary, killed with SIGKILL again and again while 100 jobs are
//! admitted, on a real SQLite store and the real pipeline (the tiny demo model): no admitted job
//! is ever lost, every one ends completed with a whole mp4, and `outputs/` never holds a
//! half-written file under a final name.
//!
//! The kill points are random (a seeded generator; the seed is printed, and `WAN_CRASH_SEED`
//! replays one). Every wait is bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use wan_pipeline::media::{read_video, MediaLimits, ResizeMode};

/// Jobs to admit.
const JOBS: usize = 100;
/// SIGKILLs while jobs are still open (issue 8 asks for at least ten).
const KILLS: usize = 20;
/// The smallest job the demo model runs: frames, side, steps.
const FRAMES: u64 = 5;
const SIDE: u64 = 32;
const STEPS: u64 = 2;
/// A kill comes this long after the server starts listening, at random (ms).
const KILL_WINDOW_MS: std::ops::Range<u64> = 0..1500;
/// The last run, left alone, must end every job within this.
const FINISH_TIMEOUT: Duration = Duration::from_secs(240);

/// One `wan-server serve` process on a free port, with its stderr in a file.
struct Server {
    child: Child,
    base: String,
}

fn spawn_server(root: &Path, round: usize) -> Server {
    let log = root.join(format!("server-{round}.log"));
    let stderr = std::fs::File::create(&log).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_wan-server"))
        .args(["serve", "--host", "127.0.0.1", "--port", "0", "--model", "demo", "--min-steps", "1"])
        .args(["--max-concurrent-requests", "1000", "--max-attempts", "1000", "--log-format", "json"])
        .arg("--models-dir")
        .arg(root.join("models"))
        .arg("--data-dir")
        .arg(root.join("data"))
        .arg("--hub-cache-dir")
        .arg(root.join("hub"))
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("wan-server starts");
    // The binary prints `wan-server listening on http://ADDR` once bound.
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(addr) = text.lines().find_map(|l| l.strip_prefix("wan-server listening on ")) {
            return Server { child, base: addr.trim().to_string() };
        }
        assert!(start.elapsed() < Duration::from_secs(60), "the server did not start listening:\n{text}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Server {
    fn kill9(mut self) {
        self.child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
        self.child.wait().expect("reaped");
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap()
}

async fn get_json(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = client.get(url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

/// Submits up to `count` jobs one after another (stopping at [`JOBS`] admitted in all, or after
/// 60 s); stops at the first transport error (the server was killed under the request: its fate
/// is unknown, and the final check covers every job in the store, admitted or not).
async fn submit_count(client: &reqwest::Client, base: &str, admitted: &mut BTreeSet<String>, count: usize, rng: &mut rand::rngs::StdRng) {
    let target = (admitted.len() + count).min(JOBS);
    let deadline = Instant::now() + Duration::from_secs(60);
    while admitted.len() < target && Instant::now() < deadline {
        let body = json!({"prompt": format!("crash job {}", admitted.len()), "num_frames": FRAMES, "width": SIDE,
                          "height": SIDE, "num_inference_steps": STEPS, "fps": 8, "seed": admitted.len()});
        let Ok(resp) = client.post(format!("{base}/api/v1/generate/text-to-video")).json(&body).send().await else { return };
        let st = resp.status().as_u16();
        if st == 503 {
            // The model is still loading after the restart.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        assert_eq!(st, 202, "generation request refused: {:?}", resp.text().await);
        let Ok(v) = resp.json::<Value>().await else { return };
        admitted.insert(v["job_id"].as_str().expect("job_id").to_string());
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..15))).await;
    }
}

/// Every final-named file in `outputs/` decodes whole to the frames asked for. `seen` remembers
/// files already checked (by size) so each is decoded once; a checked file must never change.
fn check_outputs(outputs: &Path, seen: &mut BTreeMap<PathBuf, u64>) {
    let Ok(dir) = std::fs::read_dir(outputs) else { return };
    for entry in dir {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue; // .partial/: in-progress files, never served
        }
        let path = entry.path();
        assert!(name.starts_with("job_") && name.ends_with(".mp4"), "unexpected file in outputs/: {name}");
        let size = std::fs::metadata(&path).unwrap().len();
        match seen.get(&path) {
            Some(&known) => assert_eq!(known, size, "{name} changed after it was published"),
            None => {
                let video = read_video(&path, SIDE as u32, SIDE as u32, 1000, ResizeMode::Stretch, &MediaLimits::default())
                    .unwrap_or_else(|e| panic!("{name} is not a whole mp4: {e}"));
                assert_eq!(video.frames.len() as u64, FRAMES, "{name} has {} frames", video.frames.len());
                seen.insert(path, size);
            }
        }
    }
}

#[tokio::test]
async fn kill9_of_the_server_loses_no_admitted_job_and_publishes_only_whole_files() {
    let seed: u64 = std::env::var("WAN_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("crash: seed {seed} (replay with WAN_CRASH_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    wan_server::demo_model::write_demo_model(&root.join("models/demo"), 0).expect("demo model");
    let outputs = root.join("data/outputs");
    let client = client();
    let started = Instant::now();

    let mut admitted = BTreeSet::new();
    let mut seen = BTreeMap::new();
    let mut kills = 0;
    let mut kills_with_open_jobs = 0;
    let mut round = 0;
    while kills_with_open_jobs < KILLS {
        assert!(round < 2 * KILLS, "every job ended before {KILLS} kills came while jobs were open ({kills} kills)");
        let server = spawn_server(root, round);
        round += 1;
        // Every job admitted before is still known after the restart.
        for id in &admitted {
            let (st, job) = get_json(&client, &format!("{}/api/v1/job/{id}", server.base)).await;
            assert_eq!(st, 200, "admitted job {id} is unknown after a restart: {job}");
        }
        // Spread the admissions over the kills still to come, so that every round has jobs of its
        // own open at its kill (with everything admitted at once, the tiny jobs could all end
        // before the later kills came).
        let per_round = (JOBS - admitted.len()).div_ceil(KILLS - kills_with_open_jobs);
        submit_count(&client, &server.base, &mut admitted, per_round, &mut rng).await;
        // Kill at a random moment of the window, or earlier, while the last job is still open.
        let kill_at = Instant::now() + Duration::from_millis(rng.random_range(KILL_WINDOW_MS));
        let open = loop {
            let (_, stats) = get_json(&client, &format!("{}/api/v1/stats", server.base)).await;
            let open = stats["counts"]["pending"].as_u64().unwrap_or(0) + stats["counts"]["processing"].as_u64().unwrap_or(0);
            if open <= 1 || Instant::now() >= kill_at {
                break open;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        server.kill9();
        kills += 1;
        if open > 0 {
            kills_with_open_jobs += 1;
        }
        check_outputs(&outputs, &mut seen);
    }
    assert_eq!(admitted.len(), JOBS, "the kill rounds admit every job");

    // A last run, left alone: every job in the store (admitted or fate unknown) completes.
    let server = spawn_server(root, round);
    let deadline = Instant::now() + FINISH_TIMEOUT;
    let jobs = loop {
        let (st, list) = get_json(&client, &format!("{}/api/v1/jobs?limit=500", server.base)).await;
        assert_eq!(st, 200, "{list}");
        let jobs = list["jobs"].as_array().cloned().unwrap_or_default();
        if jobs.iter().all(|j| j["status"] == "completed") && list["total"].as_u64() == Some(jobs.len() as u64) {
            break jobs;
        }
        assert!(jobs.iter().all(|j| j["status"] != "failed" && j["status"] != "cancelled"), "a job did not complete: {list}");
        assert!(Instant::now() < deadline, "jobs still open after {FINISH_TIMEOUT:?}: {}", list["total"]);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let stored: BTreeSet<String> = jobs.iter().map(|j| j["job_id"].as_str().unwrap().to_string()).collect();
    assert!(admitted.is_subset(&stored), "admitted jobs missing: {:?}", admitted.difference(&stored).collect::<Vec<_>>());
    check_outputs(&outputs, &mut seen);
    let files: BTreeSet<String> = seen.keys().map(|p| p.file_name().unwrap().to_string_lossy().trim_end_matches(".mp4").to_string()).collect();
    assert_eq!(files, stored, "outputs/ holds exactly one whole mp4 per job");
    for job in &jobs {
        let url = job["output_url"].as_str().expect("output_url");
        let resp = client.get(format!("{}{url}", server.base)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{url}");
    }
    let reruns = jobs.iter().filter(|j| j["attempts"].as_u64().unwrap_or(1) > 1).count();
    server.kill9();
    eprintln!(
        "crash: {kills} kills ({kills_with_open_jobs} with jobs open), {} jobs admitted, {} stored, {reruns} re-run, {:.1} s",
        admitted.len(),
        stored.len(),
        started.elapsed().as_secs_f64()
    );
}
