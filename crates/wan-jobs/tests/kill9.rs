//! No admitted job is lost when the process is killed with SIGKILL at any point.
//!
//! This test binary has its own `main` (harness = false): run normally it is the parent, which
//! starts itself again as a child (marked by an environment variable) that runs the manager with
//! the fake generator and submits jobs, printing `ADMITTED <id>` once `submit` has returned. The
//! parent kills the child at random moments, again and again, then lets a last child run until
//! every job has ended, and checks: every admitted job exists and is completed, each output is
//! whole, and `outputs/` holds nothing else.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rand::Rng;
use wan_jobs::{JobFilter, JobManager, JobStatus, JobStore, SqliteStore};

const CHILD_DIR: &str = "WAN_JOBS_KILL9_DIR";
const CHILD_SUBMIT: &str = "WAN_JOBS_KILL9_SUBMIT";
const CHILD_FINISH: &str = "WAN_JOBS_KILL9_FINISH";
const ROUNDS: usize = 12;
const STEPS: i64 = 5;

fn main() {
    match std::env::var(CHILD_DIR) {
        Ok(dir) => child(Path::new(&dir)),
        Err(_) => {
            // `cargo test -- --list` and filters: behave like one test named kill9_loses_no_admitted_job.
            let args: Vec<String> = std::env::args().skip(1).collect();
            if args.iter().any(|a| a == "--list") {
                println!("kill9_loses_no_admitted_job: test");
                return;
            }
            let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
            if !filters.is_empty() && !filters.iter().any(|f| "kill9_loses_no_admitted_job".contains(f.as_str())) {
                return;
            }
            kill9_loses_no_admitted_job();
            println!("test kill9_loses_no_admitted_job ... ok");
        }
    }
}

fn child_config(root: &Path) -> wan_jobs::JobsConfig {
    let mut c = wan_jobs::JobsConfig::new(root.join("data"), root.join("outputs"));
    c.admission.max_concurrent_requests = 10_000;
    // The cap is tested elsewhere; here every job must end completed however often it is hit.
    c.max_attempts = 10_000;
    c.limits.num_inference_steps = wan_jobs::Bounds::new(1, 100);
    c
}

fn child(root: &Path) {
    let submit: usize = std::env::var(CHILD_SUBMIT).ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let finish = std::env::var(CHILD_FINISH).is_ok();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let m = JobManager::open(child_config(root), FakeGenerator::new(8)).unwrap();
        for i in 0..submit {
            let job = m.submit(request(&format!("job {i}"), STEPS)).unwrap();
            println!("ADMITTED {}", job.job_id);
            let pause = rand::rng().random_range(0..40);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        if finish {
            let open = || {
                let s = m.stats().unwrap().counts;
                s.pending + s.processing
            };
            assert!(wait_for(Duration::from_secs(120), || open() == 0).await, "jobs did not finish");
            m.shutdown().await;
            println!("DONE");
        } else {
            // Wait to be killed (bounded, in case the parent is gone).
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
    });
}

/// Runs a child; kills it after `kill_after` if given. Returns the ids it reported admitted and
/// whether it printed DONE.
fn run_child(root: &Path, submit: usize, kill_after: Option<Duration>) -> (Vec<String>, bool) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.env(CHILD_DIR, root).env(CHILD_SUBMIT, submit.to_string()).stdout(Stdio::piped()).stderr(Stdio::null());
    if kill_after.is_none() {
        cmd.env(CHILD_FINISH, "1");
    }
    let mut proc = cmd.spawn().unwrap();
    let stdout = proc.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut ids = Vec::new();
        let mut done = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(id) = line.strip_prefix("ADMITTED ") {
                ids.push(id.to_string());
            } else if line == "DONE" {
                done = true;
            }
        }
        (ids, done)
    });
    match kill_after {
        Some(after) => {
            std::thread::sleep(after);
            proc.kill().unwrap(); // SIGKILL
            proc.wait().unwrap();
        }
        None => {
            let start = Instant::now();
            loop {
                if let Some(status) = proc.try_wait().unwrap() {
                    assert!(status.success(), "final child failed: {status}");
                    break;
                }
                assert!(start.elapsed() < Duration::from_secs(180), "final child did not finish");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    reader.join().unwrap()
}

/// Right after a kill: every job reported admitted is stored, and every file in `outputs/` is
/// a whole output (a run in progress never writes there).
fn check_after_kill(root: &Path, admitted: &BTreeSet<String>) {
    let store = SqliteStore::open(&child_config(root).database_path()).unwrap();
    let (all, _) = store.list(&JobFilter { limit: 100_000, ..Default::default() }).unwrap();
    let by_id: HashMap<String, _> = all.into_iter().map(|j| (j.job_id.to_string(), j)).collect();
    for id in admitted {
        assert!(by_id.contains_key(id), "admitted job {id} is not in the store after a kill");
    }
    for file in files_in(&root.join("outputs")) {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let id = name.strip_suffix(".mp4").unwrap_or_else(|| panic!("unexpected file {name} in outputs/"));
        let job = by_id.get(id).unwrap_or_else(|| panic!("{name} belongs to no stored job"));
        assert_eq!(std::fs::read(&file).unwrap(), expected_output(id, job.seed, STEPS as u32), "half-written {name}");
    }
    store.close().unwrap();
}

fn kill9_loses_no_admitted_job() {
    let dirs = TestDirs::new();
    let root = dirs.root.path();
    let mut admitted: BTreeSet<String> = BTreeSet::new();
    let mut rng = rand::rng();
    for _ in 0..ROUNDS {
        let after = Duration::from_millis(rng.random_range(20..400));
        let (ids, _) = run_child(root, 4, Some(after));
        admitted.extend(ids);
        check_after_kill(root, &admitted);
    }
    assert!(admitted.len() >= ROUNDS, "too few jobs were admitted before the kills: {}", admitted.len());
    let (ids, done) = run_child(root, 2, None);
    assert!(done, "the final child did not report completion");
    admitted.extend(ids);

    let store = SqliteStore::open(&child_config(root).database_path()).unwrap();
    let (all, total) = store.list(&JobFilter { limit: 100_000, ..Default::default() }).unwrap();
    assert_eq!(all.len() as u64, total);
    let by_id: HashMap<String, _> = all.into_iter().map(|j| (j.job_id.to_string(), j)).collect();
    for id in &admitted {
        let job = by_id.get(id).unwrap_or_else(|| panic!("admitted job {id} was lost"));
        assert_eq!(job.status, JobStatus::Completed, "{job:?}");
        assert!(job.attempts >= 1);
    }
    // Jobs stored but killed before their ADMITTED line still count: all must be complete.
    for job in by_id.values() {
        assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    }
    let outputs = root.join("outputs");
    let expected_files: BTreeSet<_> = by_id.values().map(|j| outputs.join(j.job_id.output_file_name())).collect();
    let files: BTreeSet<_> = files_in(&outputs).into_iter().collect();
    assert_eq!(files, expected_files, "outputs/ must hold exactly the completed jobs' files");
    for job in by_id.values() {
        let body = std::fs::read(outputs.join(job.job_id.output_file_name())).unwrap();
        assert_eq!(body, expected_output(job.job_id.as_str(), job.seed, STEPS as u32), "half-written {}", job.job_id);
    }
    assert!(files_in(&outputs.join(".partial")).is_empty());
    let interrupted = by_id.values().filter(|j| j.attempts > 1).count();
    eprintln!("kill9: {ROUNDS} kills, {} jobs admitted, {interrupted} re-run after a kill", by_id.len());
}
