//! Workers: each takes the next pending job, runs the generator on a blocking thread, and
//! records how the run ended. A panic in the generator fails that job; the worker goes on.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::generator::{Control, GenerationError, GenerationOutcome, JobSpec, Readiness, StepProgress};
use crate::job::{messages, JobId, JobStatus, Timestamp};
use crate::manager::{reset_progress, JobManager};
use crate::progress::EventKind;
use crate::queue::Lane;
use crate::stats::work_units;

/// How a running job is asked to stop; checked by the step callback.
#[derive(Debug, Default)]
pub(crate) struct StopFlag(AtomicU8);

const RUN: u8 = 0;
const CANCEL: u8 = 1;
const SHUTDOWN: u8 = 2;

impl StopFlag {
    pub(crate) fn request_cancel(&self) {
        self.0.store(CANCEL, Ordering::SeqCst);
    }

    /// A cancel already requested wins over a shutdown.
    pub(crate) fn request_shutdown(&self) {
        let _ = self.0.compare_exchange(RUN, SHUTDOWN, Ordering::SeqCst, Ordering::SeqCst);
    }

    fn get(&self) -> u8 {
        self.0.load(Ordering::SeqCst)
    }
}

/// How a run ended, before it is recorded.
enum RunEnd {
    Done(GenerationOutcome),
    Cancelled,
    Requeue,
    Failed(String),
}

pub(crate) async fn run_worker(manager: Arc<JobManager>, index: usize) {
    tracing::debug!(worker = index, "worker started");
    loop {
        let notified = manager.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if manager.is_shutting_down() {
            break;
        }
        if let Readiness::NotReady(_) = manager.generator.ready() {
            let poll = Duration::from_millis(manager.config.not_ready_poll_ms.max(10));
            let _ = tokio::time::timeout(poll, notified).await;
            continue;
        }
        match take_next(&manager) {
            Some((id, stop)) => run_job(&manager, id, stop).await,
            None => notified.await,
        }
    }
    tracing::debug!(worker = index, "worker stopped");
}

/// Pops the next job and marks it processing (stored, then announced).
fn take_next(manager: &JobManager) -> Option<(JobId, Arc<StopFlag>)> {
    let mut st = manager.state.lock();
    loop {
        // Under the lock, so a job never starts after shutdown flagged the running ones.
        if manager.is_shutting_down() {
            return None;
        }
        let id = st.queue.pop()?;
        let Some(live) = st.live.get_mut(&id) else { continue };
        let stop = Arc::new(StopFlag::default());
        let mut job = live.job.clone();
        job.set_status(JobStatus::Processing, messages::STARTED);
        job.attempts += 1;
        job.started_at = Some(job.updated_at);
        job.error = None;
        reset_progress(&mut job);
        if let Err(e) = manager.store.save(&[&job]) {
            // Not recorded as started: leave it pending and try again later.
            tracing::error!(job_id = %id, "cannot record the start of the job: {e}");
            let seq = live.seq;
            st.queue.push(id, Lane::from(job.params.priority), seq);
            return None;
        }
        live.job = job;
        live.stop = Some(stop.clone());
        if let Some(job) = manager.annotated(&st, &id) {
            manager.events.announce(EventKind::Started, &job);
        }
        manager.announce_positions(&st);
        return Some((id, stop));
    }
}

/// The file a run writes to: the final name (so a muxer that picks the container from the
/// extension sees `.mp4`), in the hidden partial directory that is never served.
fn partial_path(manager: &JobManager, id: &JobId) -> PathBuf {
    manager.config.partial_dir().join(id.output_file_name())
}

async fn run_job(manager: &Arc<JobManager>, id: JobId, stop: Arc<StopFlag>) {
    let Some(spec) = manager.state.lock().live.get(&id).map(|l| JobSpec { job_id: id.clone(), params: l.job.params.clone() })
    else {
        return;
    };
    let tmp = partial_path(manager, &id);
    remove_file_if_exists(&tmp);

    let m = manager.clone();
    let (stop2, tmp2) = (stop.clone(), tmp.clone());
    let joined = tokio::task::spawn_blocking(move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let units = work_units(&spec.params);
            let mut last = Instant::now();
            let mut report = |p: StepProgress| on_step(&m, &spec.job_id, p, units, &mut last, &stop2);
            m.generator.generate(&spec, &tmp2, &mut report)
        }))
    })
    .await;

    let end = match joined {
        Err(e) => RunEnd::Failed(format!("the generation task ended abnormally: {e}")),
        Ok(Err(panic)) => RunEnd::Failed(format!("the generator panicked: {}", panic_message(&*panic))),
        Ok(Ok(result)) => match (stop.get(), result) {
            (CANCEL, _) => RunEnd::Cancelled,
            (SHUTDOWN, Err(GenerationError::Cancelled)) => RunEnd::Requeue,
            (_, Ok(outcome)) => RunEnd::Done(outcome),
            (_, Err(GenerationError::Cancelled)) => RunEnd::Failed("the generator stopped without being asked to".into()),
            (_, Err(e)) => RunEnd::Failed(e.to_string()),
        },
    };
    let end = match end {
        RunEnd::Done(outcome) => publish_output(manager, &id, &tmp).map(|_| RunEnd::Done(outcome)).unwrap_or_else(RunEnd::Failed),
        other => other,
    };
    if !matches!(end, RunEnd::Done(_)) {
        remove_file_if_exists(&tmp);
    }
    finish(manager, &id, end);
}

/// Moves the finished file into `outputs/` under the name made from the job id.
fn publish_output(manager: &JobManager, id: &JobId, tmp: &Path) -> Result<(), String> {
    if !tmp.is_file() {
        return Err("the generator reported success but wrote no output file".into());
    }
    let dest = manager.config.outputs_dir.join(id.output_file_name());
    std::fs::rename(tmp, &dest).map_err(|e| format!("cannot move the output into {}: {e}", dest.display()))
}

/// Records how the run ended (stored, then announced) and sends the callback.
fn finish(manager: &JobManager, id: &JobId, end: RunEnd) {
    let mut st = manager.state.lock();
    let Some(live) = st.live.get_mut(id) else { return };
    let mut job = live.job.clone();
    let (event, requeue) = match end {
        RunEnd::Done(_) if live.stop.as_ref().is_some_and(|s| s.get() == CANCEL) => {
            // Cancelled between the last step and now: honour it.
            remove_file_if_exists(&manager.config.outputs_dir.join(id.output_file_name()));
            job.set_status(JobStatus::Cancelled, messages::CANCELLED);
            (EventKind::Cancelled, false)
        }
        RunEnd::Done(_) => {
            let file = id.output_file_name();
            job.set_status(JobStatus::Completed, messages::COMPLETED);
            job.output_path = Some(manager.config.outputs_dir.join(&file).display().to_string());
            job.output_url = Some(format!("{}/{}", manager.config.outputs_url_prefix.trim_end_matches('/'), file));
            job.progress = 100.0;
            job.current_step = job.total_steps;
            (EventKind::Completed, false)
        }
        RunEnd::Cancelled => {
            job.set_status(JobStatus::Cancelled, messages::CANCELLED);
            (EventKind::Cancelled, false)
        }
        RunEnd::Failed(why) => {
            job.set_status(JobStatus::Failed, format!("Error: {why}"));
            job.error = Some(why);
            (EventKind::Failed, false)
        }
        RunEnd::Requeue => {
            // Not a failed attempt: the server stopped it.
            job.set_status(JobStatus::Pending, messages::REQUEUED_SHUTDOWN);
            job.attempts = job.attempts.saturating_sub(1);
            job.started_at = None;
            reset_progress(&mut job);
            (EventKind::Queued, true)
        }
    };
    if let Err(e) = manager.store.save(&[&job]) {
        // The store still says processing, so a restart runs the job again; nothing is lost.
        tracing::error!(job_id = %id, "cannot record the end of the job: {e}");
    }
    live.stop = None;
    live.job = job.clone();
    if requeue {
        let seq = live.seq;
        st.queue.push(id.clone(), Lane::Resumed, seq);
    } else {
        st.live.remove(id);
        st.finished.insert(job.clone());
    }
    manager.events.announce(event, &job);
    manager.announce_positions(&st);
    if !requeue {
        manager.callbacks.send(&job, &manager.runtime);
    }
    tracing::info!(job_id = %id, status = job.status.as_str(), "{}", job.message);
}

/// The per-step callback: records the step (progress and measured step time), stores and
/// announces it, and tells the generator whether to go on.
fn on_step(
    manager: &JobManager,
    id: &JobId,
    p: StepProgress,
    units: f64,
    last: &mut Instant,
    stop: &StopFlag,
) -> Control {
    let now = Instant::now();
    let step_seconds = now.duration_since(*last).as_secs_f64();
    *last = now;
    let mut st = manager.state.lock();
    // The first step also holds the run's setup (text encoding...): only used if nothing better.
    if p.step > 1 || st.clock.estimate(1, units).is_none() {
        st.clock.record(step_seconds, units);
    }
    if let Some(live) = st.live.get_mut(id) {
        let job = &mut live.job;
        job.current_step = p.step.min(p.total);
        job.total_steps = p.total;
        job.progress = if p.total > 0 { 100.0 * job.current_step as f64 / p.total as f64 } else { 0.0 };
        job.updated_at = Timestamp::now();
        if let Err(e) = manager.store.save(&[&*job]) {
            tracing::warn!(job_id = %id, "cannot store progress: {e}");
        }
        if let Some(job) = manager.annotated(&st, id) {
            manager.events.announce(EventKind::Progress, &job);
        }
    }
    if stop.get() == RUN {
        Control::Continue
    } else {
        Control::Stop
    }
}

fn remove_file_if_exists(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".into()
    }
}
