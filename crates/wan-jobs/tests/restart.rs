//! Restart on a real SQLite file: pending jobs are queued again in order, jobs that were
//! processing run again first, and a job interrupted `max_attempts` times fails instead.

mod common;

use std::time::Duration;

use common::*;
use wan_jobs::{Job, JobManager, JobStatus, JobStore, Limits, Priority, SqliteStore};

const LONG: Duration = Duration::from_secs(20);

fn stored_job(store: &SqliteStore, prompt: &str, priority: Priority, processing_attempts: Option<u32>) -> Job {
    let mut limits = Limits::default();
    limits.num_inference_steps = wan_jobs::Bounds::new(1, 100);
    let params = limits.validate(&request_with_priority(prompt, 2, priority)).unwrap();
    let mut job = Job::new_pending(params);
    store.insert(std::slice::from_ref(&job)).unwrap();
    if let Some(attempts) = processing_attempts {
        job.status = JobStatus::Processing;
        job.message = "Generating video...".into();
        job.attempts = attempts;
        job.current_step = 1;
        store.save(&[&job]).unwrap();
    }
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_requeues_pending_and_reruns_processing_first_with_an_attempts_cap() {
    let dirs = TestDirs::new();
    let config = dirs.config(10);
    let (p1, r1, p2, r2, dead, p3) = {
        let store = SqliteStore::open(&config.database_path()).unwrap();
        let jobs = (
            stored_job(&store, "p1", Priority::Normal, None),
            stored_job(&store, "r1", Priority::Low, Some(1)),
            stored_job(&store, "p2", Priority::High, None),
            stored_job(&store, "r2", Priority::Normal, Some(2)),
            stored_job(&store, "dead", Priority::High, Some(3)),
            stored_job(&store, "p3", Priority::Normal, None),
        );
        store.close().unwrap();
        jobs
    };
    // A half-written file of the interrupted run.
    std::fs::create_dir_all(config.partial_dir()).unwrap();
    std::fs::write(config.partial_dir().join(r1.job_id.output_file_name()), b"half").unwrap();

    let g = FakeGenerator::new(1);
    g.hold();
    let m = JobManager::open(config, g.clone()).unwrap();
    // The fake holds before it creates its file, so only a stale partial could be there.
    assert!(files_in(&dirs.outputs().join(".partial")).is_empty(), "stale partials are removed on open");

    let dead_now = m.get(dead.job_id.as_str()).unwrap();
    assert_eq!(dead_now.status, JobStatus::Failed);
    let why = dead_now.error.unwrap();
    assert!(why.contains("interrupted 3 times") && why.contains("max_attempts is 3"), "{why}");

    g.release();
    for j in [&p1, &r1, &p2, &r2, &p3] {
        let done = wait_terminal(&m, j.job_id.as_str(), LONG).await;
        assert_eq!(done.status, JobStatus::Completed, "{done:?}");
        assert_eq!(
            std::fs::read(dirs.outputs().join(j.job_id.output_file_name())).unwrap(),
            expected_output(j.job_id.as_str(), j.seed, 2)
        );
    }
    assert_eq!(g.started_prompts(), vec!["r1", "r2", "p2", "p1", "p3"]);
    assert_eq!(m.get(r1.job_id.as_str()).unwrap().attempts, 2);
    assert_eq!(m.get(r2.job_id.as_str()).unwrap().attempts, 3);
    assert_eq!(m.get(p1.job_id.as_str()).unwrap().attempts, 1);
    let history: Vec<_> = m.history(r1.job_id.as_str()).unwrap().into_iter().map(|c| c.status).collect();
    assert_eq!(
        history,
        vec![JobStatus::Pending, JobStatus::Processing, JobStatus::Pending, JobStatus::Processing, JobStatus::Completed]
    );
    assert!(!dirs.outputs().join(dead.job_id.output_file_name()).exists());
    assert!(files_in(&dirs.outputs().join(".partial")).is_empty());
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_requeues_the_running_job_and_the_next_start_finishes_it() {
    let dirs = TestDirs::new();
    let g = FakeGenerator::new(20);
    let m = JobManager::open(dirs.config(10), g.clone()).unwrap();
    let running = m.submit(request("running", 50)).unwrap();
    let waiting = m.submit(request("waiting", 2)).unwrap();
    assert!(wait_for(LONG, || m.get(running.job_id.as_str()).unwrap().current_step >= 2).await);
    tokio::time::timeout(Duration::from_secs(5), m.shutdown()).await.expect("shutdown waits one step, not the job");
    drop(m);

    let store = SqliteStore::open(&dirs.config(10).database_path()).unwrap();
    let r = store.get(&running.job_id).unwrap().unwrap();
    assert_eq!(r.status, JobStatus::Pending);
    assert_eq!(r.attempts, 0, "a run stopped by shutdown is not a failed attempt");
    assert_eq!(store.get(&waiting.job_id).unwrap().unwrap().status, JobStatus::Pending);
    store.close().unwrap();
    assert!(files_in(&dirs.outputs()).is_empty());

    g.step_ms.store(1, std::sync::atomic::Ordering::SeqCst);
    let m = JobManager::open(dirs.config(10), g.clone()).unwrap();
    for j in [&running, &waiting] {
        let done = wait_terminal(&m, j.job_id.as_str(), LONG).await;
        assert_eq!((done.status, done.attempts), (JobStatus::Completed, 1));
    }
    assert_eq!(g.started_prompts(), vec!["running", "running", "waiting"]);
    m.shutdown().await;
}
