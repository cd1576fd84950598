//! A job's life: events, outputs, cancel, priority order, failures and panics, queue operations.

mod common;

use std::time::{Duration, Instant};

use common::*;
use wan_jobs::{Error, EventKind, JobFilter, JobManager, JobStatus, Priority};

const LONG: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_to_completion_with_events_history_and_output() {
    let dirs = TestDirs::new();
    let m = JobManager::open(dirs.config(2), FakeGenerator::new(10)).unwrap();
    let job = m.submit(request("a cat", 4)).unwrap();
    assert_eq!(job.status, JobStatus::Pending);
    assert_eq!(job.position, Some(1));
    let mut events = m.subscribe(job.job_id.as_str()).unwrap();

    let mut kinds = Vec::new();
    let mut last = None;
    while let Some(ev) = tokio::time::timeout(LONG, events.next()).await.unwrap() {
        assert_eq!(ev.job.job_id, job.job_id);
        kinds.push(ev.event);
        last = Some(ev.job);
    }
    // The first event is the state at subscription (queued, or later if the worker was quick).
    assert_eq!(kinds.last(), Some(&EventKind::Completed));
    assert_eq!(kinds.iter().filter(|k| **k == EventKind::Completed).count(), 1);
    let steps = kinds.iter().filter(|k| **k == EventKind::Progress).count();
    assert!(steps >= 1, "{kinds:?}");

    let done = last.unwrap();
    assert_eq!(done.status, JobStatus::Completed);
    assert_eq!(done.progress, 100.0);
    assert_eq!((done.current_step, done.total_steps), (4, 4));
    assert_eq!(done.attempts, 1);
    let file = job.job_id.output_file_name();
    assert_eq!(done.output_url.as_deref(), Some(format!("/outputs/{file}").as_str()));
    assert_eq!(done.output_path.as_deref(), Some(dirs.outputs().join(&file).display().to_string().as_str()));
    assert_eq!(std::fs::read(dirs.outputs().join(&file)).unwrap(), expected_output(job.job_id.as_str(), job.seed, 4));
    assert!(files_in(&dirs.outputs().join(".partial")).is_empty());
    assert!(done.started_at.is_some() && done.completed_at >= done.started_at);

    let history: Vec<_> = m.history(job.job_id.as_str()).unwrap().into_iter().map(|c| c.status).collect();
    assert_eq!(history, vec![JobStatus::Pending, JobStatus::Processing, JobStatus::Completed]);

    // The JSON has 002's fields and the extras.
    let v = serde_json::to_value(m.get(job.job_id.as_str()).unwrap()).unwrap();
    for key in ["job_id", "status", "message", "output_path", "created_at", "updated_at", "seed", "params", "progress",
        "current_step", "total_steps", "position", "eta_seconds", "started_at", "completed_at", "error", "output_url"]
    {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["status"], "completed");
    assert_eq!(v["params"]["kind"], "text-to-video");

    // A late subscriber gets the current state first, then the stream ends.
    let mut late = m.subscribe(job.job_id.as_str()).unwrap();
    let first = late.next().await.unwrap();
    assert_eq!(first.event, EventKind::Completed);
    assert!(late.next().await.is_none());

    let stats = m.stats().unwrap();
    assert_eq!(stats.counts.completed, 1);
    assert!(stats.mean_run_seconds.unwrap() >= 0.0 && stats.mean_queue_seconds.is_some());
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_during_a_run_stops_within_a_step_and_removes_the_partial_file() {
    let dirs = TestDirs::new();
    let step = Duration::from_millis(100);
    let m = JobManager::open(dirs.config(2), FakeGenerator::new(step.as_millis() as u64)).unwrap();
    let job = m.submit(request("long", 100)).unwrap();
    let id = job.job_id.as_str();
    assert!(wait_for(LONG, || m.get(id).unwrap().current_step >= 2).await);
    let partial = dirs.outputs().join(".partial");
    assert_eq!(files_in(&partial).len(), 1, "a run in progress writes under .partial");

    let asked = Instant::now();
    let answer = m.cancel(id).unwrap();
    assert_eq!(answer.status, JobStatus::Processing, "a running job ends at its next step");
    let ended = wait_terminal(&m, id, LONG).await;
    let took = asked.elapsed();
    assert_eq!(ended.status, JobStatus::Cancelled);
    assert!(took < step * 3, "cancel took {took:?} with {step:?} steps");
    assert!(ended.current_step < 100);
    assert!(files_in(&partial).is_empty(), "partial file left behind");
    assert!(!dirs.outputs().join(job.job_id.output_file_name()).exists());

    // A finished job cannot be cancelled; an unknown one is not found.
    assert!(matches!(m.cancel(id), Err(Error::Conflict(_))));
    assert!(matches!(m.cancel("job_1_000000000000"), Err(Error::NotFound(_))));
    assert!(matches!(m.get("../../etc/passwd"), Err(Error::NotFound(_))));
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_jobs_run_by_priority_then_arrival() {
    let dirs = TestDirs::new();
    let g = FakeGenerator::new(1);
    g.hold();
    let m = JobManager::open(dirs.config(10), g.clone()).unwrap();
    let first = m.submit(request("first", 1)).unwrap();
    assert!(wait_for(LONG, || g.started_prompts().len() == 1).await);
    let order = [
        ("low", Priority::Low),
        ("normal-1", Priority::Normal),
        ("high-1", Priority::High),
        ("normal-2", Priority::Normal),
        ("high-2", Priority::High),
    ];
    let mut ids = Vec::new();
    for (p, prio) in order {
        ids.push(m.submit(request_with_priority(p, 1, prio)).unwrap().job_id);
    }
    let q = m.queue();
    assert_eq!(q.current_task_id.as_ref(), Some(&first.job_id));
    assert!(q.is_processing);
    let queued: Vec<_> = q.tasks.iter().map(|t| (t.prompt.as_str(), t.position)).collect();
    assert_eq!(
        queued,
        vec![("first", 0), ("high-1", 1), ("high-2", 2), ("normal-1", 3), ("normal-2", 4), ("low", 5)]
    );
    assert_eq!(m.get(ids[0].as_str()).unwrap().position, Some(5));

    g.release();
    for id in &ids {
        wait_terminal(&m, id.as_str(), LONG).await;
    }
    assert_eq!(g.started_prompts(), vec!["first", "high-1", "high-2", "normal-1", "normal-2", "low"]);
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_and_panics_fail_the_job_not_the_worker() {
    let dirs = TestDirs::new();
    let m = JobManager::open(dirs.config(10), FakeGenerator::new(1)).unwrap();
    let panics = m.submit(request("please panic", 3)).unwrap();
    let fails = m.submit(request("please fail", 3)).unwrap();
    let fine = m.submit(request("fine", 3)).unwrap();

    let p = wait_terminal(&m, panics.job_id.as_str(), LONG).await;
    assert_eq!(p.status, JobStatus::Failed);
    assert!(p.error.as_deref().unwrap().contains("panicked"), "{p:?}");
    assert!(p.message.starts_with("Error: "));
    let f = wait_terminal(&m, fails.job_id.as_str(), LONG).await;
    assert_eq!(f.status, JobStatus::Failed);
    assert_eq!(f.error.as_deref(), Some("Out of memory (on purpose)"));
    assert_eq!(wait_terminal(&m, fine.job_id.as_str(), LONG).await.status, JobStatus::Completed);

    assert!(files_in(&dirs.outputs().join(".partial")).is_empty());
    assert_eq!(files_in(&dirs.outputs()), vec![dirs.outputs().join(fine.job_id.output_file_name())]);
    let failed = m.list(JobFilter { status: Some(JobStatus::Failed), ..Default::default() }).unwrap();
    assert_eq!(failed.total, 2);
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_operations_remove_and_clear_pending_jobs() {
    let dirs = TestDirs::new();
    let g = FakeGenerator::new(1);
    g.hold();
    let m = JobManager::open(dirs.config(10), g.clone()).unwrap();
    let running = m.submit(request("running", 1)).unwrap();
    assert!(wait_for(LONG, || g.started_prompts().len() == 1).await);
    let a = m.submit(request("a", 1)).unwrap();
    let b = m.submit(request("b", 1)).unwrap();
    let c = m.submit(request("c", 1)).unwrap();
    let mut watch_c = m.subscribe(c.job_id.as_str()).unwrap();
    let first = watch_c.next().await.unwrap();
    assert_eq!((first.event, first.job.position), (EventKind::Queued, Some(3)));

    // Cancelling a pending job ends it at once, and the jobs behind it move up.
    let cancelled = m.cancel(a.job_id.as_str()).unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    let moved = tokio::time::timeout(LONG, watch_c.next()).await.unwrap().unwrap();
    assert_eq!((moved.event, moved.job.position), (EventKind::Queued, Some(2)));
    let mut ev = m.subscribe(a.job_id.as_str()).unwrap();
    assert_eq!(ev.next().await.unwrap().event, EventKind::Cancelled);

    assert!(matches!(m.remove_pending(running.job_id.as_str()), Err(Error::Conflict(_))));
    assert_eq!(m.remove_pending(b.job_id.as_str()).unwrap().status, JobStatus::Cancelled);
    assert!(matches!(m.remove_pending(b.job_id.as_str()), Err(Error::Conflict(_))));
    assert_eq!(m.get(c.job_id.as_str()).unwrap().position, Some(1));
    let d = m.submit(request("d", 1)).unwrap();
    let cleared: Vec<_> = m.clear_pending().unwrap().into_iter().map(|j| j.job_id).collect();
    assert_eq!(cleared, vec![c.job_id.clone(), d.job_id.clone()]);
    assert_eq!(m.queue().total_tasks, 1);

    g.release();
    assert_eq!(wait_terminal(&m, running.job_id.as_str(), LONG).await.status, JobStatus::Completed);
    assert_eq!(g.started_prompts(), vec!["running"]);
    let counts = m.stats().unwrap().counts;
    assert_eq!((counts.completed, counts.cancelled, counts.pending), (1, 4, 0));
    let mine = m.list(JobFilter { status: Some(JobStatus::Cancelled), limit: 2, offset: 1, ..Default::default() }).unwrap();
    assert_eq!(mine.total, 4);
    // newest first
    assert_eq!(mine.jobs.iter().map(|j| j.job_id.clone()).collect::<Vec<_>>(), vec![c.job_id.clone(), b.job_id.clone()]);
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_filter_and_eta_from_measured_steps() {
    let dirs = TestDirs::new();
    let g = FakeGenerator::new(20);
    let m = JobManager::open(dirs.config(10), g.clone()).unwrap();
    let mut r = request("mine", 5);
    r.user_id = Some("alice".into());
    let warm = m.submit(r).unwrap();
    wait_terminal(&m, warm.job_id.as_str(), LONG).await;

    let long = m.submit(request("long", 50)).unwrap();
    let next = m.submit(request("next", 50)).unwrap();
    assert!(wait_for(LONG, || m.get(long.job_id.as_str()).unwrap().current_step >= 3).await);
    let running = m.get(long.job_id.as_str()).unwrap();
    let pending = m.get(next.job_id.as_str()).unwrap();
    let (eta_run, eta_next) = (running.eta_seconds.unwrap(), pending.eta_seconds.unwrap());
    // About 47 steps of ~20 ms left; the next job adds 50 more.
    assert!(eta_run > 0.3 && eta_run < 5.0, "{eta_run}");
    assert!(eta_next > eta_run, "{eta_next} vs {eta_run}");

    let alice = m.list(JobFilter { user_id: Some("alice".into()), ..Default::default() }).unwrap();
    assert_eq!(alice.total, 1);
    assert_eq!(alice.jobs[0].job_id, warm.job_id);
    m.cancel(long.job_id.as_str()).unwrap();
    m.cancel(next.job_id.as_str()).unwrap();
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_falls_behind_resyncs_to_the_current_state() {
    let dirs = TestDirs::new();
    let mut config = dirs.config(10);
    config.event_capacity = 16;
    let m = JobManager::open(config, FakeGenerator::new(1)).unwrap();
    let watched = m.submit(request("watched", 2)).unwrap();
    let mut events = m.subscribe(watched.job_id.as_str()).unwrap();
    wait_terminal(&m, watched.job_id.as_str(), LONG).await;
    // Another job floods the channel far past its capacity before the subscriber reads anything.
    let other = m.submit(request("other", 60)).unwrap();
    wait_terminal(&m, other.job_id.as_str(), LONG).await;

    let mut seen = Vec::new();
    while let Some(ev) = tokio::time::timeout(LONG, events.next()).await.expect("stream must end, not hang") {
        assert_eq!(ev.job.job_id, watched.job_id);
        seen.push(ev.event);
    }
    assert_eq!(seen.last(), Some(&EventKind::Completed), "{seen:?}");
    m.shutdown().await;
}
