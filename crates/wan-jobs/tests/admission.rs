//! Admission: one decision under the lock; exactly `limit` of many concurrent submissions are
//! admitted, and nothing is stored for the refused ones.

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};

use common::*;
use wan_jobs::{Error, JobFilter, JobManager, JobStatus};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_submissions_admit_exactly_the_limit() {
    const LIMIT: usize = 3;
    const N: usize = 32;
    let dirs = TestDirs::new();
    let generator = FakeGenerator::new(5);
    generator.hold(); // nothing finishes, so no slot frees up during the race
    let m = JobManager::open(dirs.config(LIMIT), generator.clone()).unwrap();

    let barrier = Arc::new(Barrier::new(N));
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..N)
            .map(|i| {
                let (m, barrier) = (m.clone(), barrier.clone());
                s.spawn(move || {
                    barrier.wait();
                    m.submit(request(&format!("race {i}"), 3))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let admitted: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(admitted.len(), LIMIT);
    for r in &results {
        match r {
            Ok(job) => assert!(matches!(job.status, JobStatus::Pending | JobStatus::Processing)),
            Err(Error::Overloaded { retry_after_s, limit, .. }) => {
                assert!(*retry_after_s >= 1);
                assert_eq!(*limit, LIMIT);
            }
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    let stored = m.list(JobFilter { limit: 1000, ..Default::default() }).unwrap();
    assert_eq!(stored.total as usize, LIMIT, "refused submissions must not be stored");
    let mut stored_ids: Vec<_> = stored.jobs.iter().map(|j| j.job_id.clone()).collect();
    let mut admitted_ids: Vec<_> = admitted.iter().map(|j| j.job_id.clone()).collect();
    stored_ids.sort();
    admitted_ids.sort();
    assert_eq!(stored_ids, admitted_ids);
    assert_eq!(m.stats().unwrap().rejected_total as usize, N - LIMIT);

    generator.release();
    for id in &admitted_ids {
        assert_eq!(wait_terminal(&m, id.as_str(), std::time::Duration::from_secs(10)).await.status, JobStatus::Completed);
    }
    // Slots are free again.
    assert!(m.submit(request("after", 1)).is_ok());
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_is_all_or_none_and_validation_comes_first() {
    let dirs = TestDirs::new();
    let generator = FakeGenerator::new(5);
    generator.hold();
    let m = JobManager::open(dirs.config(3), generator.clone()).unwrap();
    m.submit(request("one", 2)).unwrap();

    // Two slots left: a batch of three is refused whole.
    let err = m.submit_batch(vec![request("a", 2), request("b", 2), request("c", 2)]).unwrap_err();
    assert!(matches!(err, Error::Overloaded { active: 1, limit: 3, .. }), "{err:?}");
    assert_eq!(m.list(JobFilter::default()).unwrap().total, 1);

    // A batch with one invalid item is a 400 naming the item and the field, nothing stored.
    let mut bad = request("b", 2);
    bad.fps = Some(500);
    match m.submit_batch(vec![request("a", 2), bad]).unwrap_err() {
        Error::Validation { field, message } => {
            assert_eq!(field, "fps");
            assert!(message.contains("batch item 1") && message.contains("500") && message.contains("60"), "{message}");
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(m.list(JobFilter::default()).unwrap().total, 1);

    let jobs = m.submit_batch(vec![request("a", 2), request("b", 2)]).unwrap();
    assert_eq!(jobs.len(), 2);
    assert_eq!(m.list(JobFilter::default()).unwrap().total, 3);

    // Full now: an invalid request is still answered 400 (validated before admission).
    let err = m.submit(request("", 2)).unwrap_err();
    assert_eq!(err.code(), "invalid_request");
    let err = m.submit(request("x", 2)).unwrap_err();
    assert_eq!(err.code(), "too_many_requests");

    generator.release();
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_and_shutting_down_are_refused_without_storing() {
    let dirs = TestDirs::new();
    let generator = FakeGenerator::new(1);
    generator.ready.store(false, Ordering::SeqCst);
    let m = JobManager::open(dirs.config(2), generator.clone()).unwrap();
    let err = m.submit(request("a", 1)).unwrap_err();
    assert!(matches!(err, Error::NotReady(_)), "{err:?}");
    assert_eq!(err.code(), "model_not_loaded");
    assert_eq!(m.list(JobFilter::default()).unwrap().total, 0);

    generator.ready.store(true, Ordering::SeqCst);
    let job = m.submit(request("a", 1)).unwrap();
    wait_terminal(&m, job.job_id.as_str(), std::time::Duration::from_secs(10)).await;
    m.shutdown().await;
    let err = m.submit(request("b", 1)).unwrap_err();
    assert!(matches!(err, Error::ShuttingDown));
    assert_eq!(err.code(), "shutting_down");
}

#[tokio::test]
async fn seed_minus_one_is_drawn_and_reported() {
    let dirs = TestDirs::new();
    let generator = FakeGenerator::new(1);
    let m = JobManager::open(dirs.config(2), generator).unwrap();
    let mut req = request("a", 1);
    req.seed = Some(-1);
    let job = m.submit(req).unwrap();
    assert_eq!(job.seed, job.params.seed);
    let done = wait_terminal(&m, job.job_id.as_str(), std::time::Duration::from_secs(10)).await;
    assert_eq!(done.seed, job.seed);
    let body = std::fs::read(dirs.outputs().join(job.job_id.output_file_name())).unwrap();
    assert_eq!(body, expected_output(job.job_id.as_str(), job.seed, 1));
    m.shutdown().await;
}
