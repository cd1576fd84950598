//! [`JobManager`]: the single owner of the queue state, and the API the HTTP server calls (one
//! call per handler).
//!
//! All queue state lives in one `parking_lot::Mutex<State>` that is never held across an
//! `.await`. Under it, each change is written to the store and then announced, so admission is
//! one decision (validated requests are admitted and stored, or refused with nothing stored),
//! and what subscribers see is always what a restart would find.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::admission::AdmissionPolicy;
use crate::callback::{CallbackConfig, Callbacks};
use crate::error::{Error, Result};
use crate::finished::FinishedJobs;
use crate::generator::{Generator, Readiness};
use crate::job::{messages, GenerationRequest, Job, JobId, JobStatus};
use crate::progress::{Broadcaster, EventKind, JobEvents};
use crate::queue::{Lane, PendingQueue, QueueTask, QueueView};
use crate::stats::{plan_completion, work_units, Stats, StepClock};
use crate::store::{JobFilter, JobList, JobStore, SqliteStore, StateChange};
use crate::validate::Limits;
use crate::worker::StopFlag;

/// Settings of the job manager.
#[derive(Clone, Debug)]
pub struct JobsConfig {
    /// Holds the SQLite database (`jobs.sqlite3`).
    pub data_dir: PathBuf,
    /// Where finished videos are renamed into (served at `outputs_url_prefix`).
    pub outputs_dir: PathBuf,
    /// Where videos are written while they are generated; must be on the same file system as
    /// `outputs_dir` (rename). Default: `<outputs_dir>/.partial` (hidden: never served).
    pub partial_dir: Option<PathBuf>,
    /// URL prefix of `outputs_dir`, for `output_url`.
    pub outputs_url_prefix: String,
    /// Jobs generated at the same time (default 1: one GPU).
    pub workers: usize,
    /// Runs of one job that may be started before an interrupted job is failed instead of re-run.
    pub max_attempts: u32,
    pub admission: AdmissionPolicy,
    pub limits: Limits,
    pub callbacks: CallbackConfig,
    /// Events buffered per subscriber before a slow one skips ahead.
    pub event_capacity: usize,
    /// How often an idle worker checks whether the generator became ready.
    pub not_ready_poll_ms: u64,
}

impl JobsConfig {
    /// Defaults of API.md under `data_dir` and `outputs_dir`.
    pub fn new(data_dir: impl Into<PathBuf>, outputs_dir: impl Into<PathBuf>) -> Self {
        JobsConfig {
            data_dir: data_dir.into(),
            outputs_dir: outputs_dir.into(),
            partial_dir: None,
            outputs_url_prefix: "/outputs".into(),
            workers: 1,
            max_attempts: 3,
            admission: AdmissionPolicy::default(),
            limits: Limits::default(),
            callbacks: CallbackConfig::default(),
            event_capacity: 1024,
            not_ready_poll_ms: 500,
        }
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("jobs.sqlite3")
    }

    pub fn partial_dir(&self) -> PathBuf {
        self.partial_dir.clone().unwrap_or_else(|| self.outputs_dir.join(".partial"))
    }
}

/// A pending or processing job.
pub(crate) struct LiveJob {
    pub(crate) job: Job,
    pub(crate) seq: i64,
    /// Set while processing: how the worker is asked to stop.
    pub(crate) stop: Option<Arc<StopFlag>>,
}

/// Everything behind the lock.
pub(crate) struct State {
    pub(crate) queue: PendingQueue,
    pub(crate) live: HashMap<JobId, LiveJob>,
    pub(crate) clock: StepClock,
    /// Jobs that ended since the start, for status reads without the store.
    pub(crate) finished: FinishedJobs,
}

pub struct JobManager {
    pub(crate) config: JobsConfig,
    pub(crate) generator: Arc<dyn Generator>,
    pub(crate) store: Arc<dyn JobStore>,
    pub(crate) state: Mutex<State>,
    pub(crate) events: Broadcaster,
    pub(crate) wake: Notify,
    pub(crate) callbacks: Callbacks,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) stopping: AtomicBool,
    rejected: AtomicU64,
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// For event streams, which read the current state again when they fall behind.
    self_ref: Weak<JobManager>,
}

impl JobManager {
    /// Opens the SQLite store in `config.data_dir`, re-queues what a previous run left unfinished,
    /// and starts the workers. Must be called within a Tokio runtime.
    pub fn open(config: JobsConfig, generator: Arc<dyn Generator>) -> Result<Arc<Self>> {
        let store = SqliteStore::open(&config.database_path())?;
        Self::open_with_store(config, generator, Arc::new(store))
    }

    /// As [`JobManager::open`] with another store.
    pub fn open_with_store(config: JobsConfig, generator: Arc<dyn Generator>, store: Arc<dyn JobStore>) -> Result<Arc<Self>> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::Internal("the job manager must be opened within a Tokio runtime".into()))?;
        for dir in [config.outputs_dir.clone(), config.partial_dir()] {
            std::fs::create_dir_all(&dir).map_err(|e| Error::Internal(format!("cannot create {}: {e}", dir.display())))?;
        }
        remove_partials(&config.partial_dir());
        let callbacks = Callbacks::new(config.callbacks.clone()).map_err(Error::Internal)?;
        let manager = Arc::new_cyclic(|self_ref| JobManager {
            events: Broadcaster::new(config.event_capacity),
            config,
            generator,
            store,
            state: Mutex::new(State { queue: PendingQueue::new(), live: HashMap::new(), clock: StepClock::default(), finished: FinishedJobs::default() }),
            wake: Notify::new(),
            callbacks,
            runtime,
            stopping: AtomicBool::new(false),
            rejected: AtomicU64::new(0),
            workers: Mutex::new(Vec::new()),
            self_ref: self_ref.clone(),
        });
        manager.recover()?;
        let handles = (0..manager.config.workers.max(1))
            .map(|i| manager.runtime.spawn(crate::worker::run_worker(manager.clone(), i)))
            .collect();
        *manager.workers.lock() = handles;
        Ok(manager)
    }

    /// Queues again what the store holds unfinished: jobs that were processing run first (a
    /// fresh run from the start), unless they were started `max_attempts` times already; pending
    /// ones follow in admission order within their priority.
    fn recover(&self) -> Result<()> {
        let unfinished = self.store.unfinished()?;
        let mut st = self.state.lock();
        for u in unfinished {
            let mut job = u.job;
            let lane = match job.status {
                JobStatus::Processing if job.attempts >= self.config.max_attempts => {
                    let why = format!(
                        "the job was interrupted {} times while processing (max_attempts is {}); it is not run again",
                        job.attempts, self.config.max_attempts
                    );
                    job.set_status(JobStatus::Failed, format!("Error: {why}"));
                    job.error = Some(why);
                    self.store.save(&[&job])?;
                    tracing::warn!(job_id = %job.job_id, "{}", job.message);
                    continue;
                }
                JobStatus::Processing => {
                    job.set_status(JobStatus::Pending, messages::REQUEUED_RESTART);
                    reset_progress(&mut job);
                    self.store.save(&[&job])?;
                    Lane::Resumed
                }
                _ => Lane::from(job.params.priority),
            };
            st.queue.push(job.job_id.clone(), lane, u.seq);
            st.live.insert(job.job_id.clone(), LiveJob { job, seq: u.seq, stop: None });
        }
        Ok(())
    }

    pub fn config(&self) -> &JobsConfig {
        &self.config
    }

    /// Whether the generator can serve jobs (for `/health`).
    pub fn readiness(&self) -> Readiness {
        self.generator.ready()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Validates and admits one job (202), or refuses it with nothing stored.
    pub fn submit(&self, req: GenerationRequest) -> Result<Job> {
        let mut jobs = self.submit_batch(vec![req])?;
        jobs.pop().ok_or_else(|| Error::Internal("admission returned no job".into()))
    }

    /// Validates and admits several jobs all or none (a `prompts` batch).
    pub fn submit_batch(&self, reqs: Vec<GenerationRequest>) -> Result<Vec<Job>> {
        if self.is_shutting_down() {
            return Err(Error::ShuttingDown);
        }
        if reqs.is_empty() {
            return Err(Error::validation("prompts", "a batch needs at least one prompt (got 0)"));
        }
        let batch = reqs.len() > 1;
        let mut jobs = Vec::with_capacity(reqs.len());
        for (i, req) in reqs.iter().enumerate() {
            let in_batch = |e: Error| match e {
                Error::Validation { field, message } if batch => {
                    Error::Validation { field, message: format!("batch item {i}: {message}") }
                }
                other => other,
            };
            let params = self.config.limits.validate(req).map_err(in_batch)?;
            self.generator
                .check(&params)
                .map_err(|p| in_batch(Error::Validation { field: p.field, message: p.message }))?;
            jobs.push(Job::new_pending(params));
        }
        if let Readiness::NotReady(why) = self.generator.ready() {
            return Err(Error::NotReady(why));
        }

        let mut st = self.state.lock();
        // Checked again under the lock: shutdown flips the flag under it.
        if self.is_shutting_down() {
            return Err(Error::ShuttingDown);
        }
        let slot_frees_in = self.first_slot_frees_in(&st);
        if let Err(e) = self.config.admission.decide(st.live.len(), jobs.len(), slot_frees_in) {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        let seqs = self.store.insert(&jobs)?;
        for (job, seq) in jobs.iter().zip(seqs) {
            st.queue.push(job.job_id.clone(), Lane::from(job.params.priority), seq);
            st.live.insert(job.job_id.clone(), LiveJob { job: job.clone(), seq, stop: None });
        }
        let annotated: Vec<Job> = jobs.iter().map(|j| self.annotated(&st, &j.job_id).unwrap_or_else(|| j.clone())).collect();
        for job in &annotated {
            self.events.announce(EventKind::Queued, job);
        }
        drop(st);
        self.wake.notify_waiters();
        Ok(annotated)
    }

    /// The job as it is now (live fields such as position and ETA filled in).
    pub fn get(&self, id: &str) -> Result<Job> {
        let id = parse_id(id)?;
        let st = self.state.lock();
        if let Some(job) = self.annotated(&st, &id) {
            return Ok(job);
        }
        if let Some(job) = st.finished.get(&id) {
            return Ok(job.clone());
        }
        drop(st);
        self.store.get(&id)?.ok_or_else(|| Error::NotFound(id.to_string()))
    }

    /// A job's state changes, oldest first.
    pub fn history(&self, id: &str) -> Result<Vec<StateChange>> {
        let id = parse_id(id)?;
        let changes = self.store.history(&id)?;
        if changes.is_empty() {
            return Err(Error::NotFound(id.to_string()));
        }
        Ok(changes)
    }

    /// Job history, newest first. `limit` is clamped to 1..=1000.
    pub fn list(&self, filter: JobFilter) -> Result<JobList> {
        let filter = JobFilter { limit: filter.limit.clamp(1, 1000), ..filter };
        let (jobs, total) = self.store.list(&filter)?;
        let st = self.state.lock();
        let jobs = jobs.into_iter().map(|j| self.annotated(&st, &j.job_id).unwrap_or(j)).collect();
        Ok(JobList { jobs, total, limit: filter.limit, offset: filter.offset })
    }

    /// Cancels a job: a pending one at once, a processing one at its next step (the returned job
    /// is then still `processing`; it ends `cancelled`). A finished job is a conflict.
    pub fn cancel(&self, id: &str) -> Result<Job> {
        let id = parse_id(id)?;
        let mut st = self.state.lock();
        let Some(live) = st.live.get_mut(&id) else {
            drop(st);
            return Err(self.not_live(&id, "cancelled"));
        };
        if live.job.status == JobStatus::Processing {
            if let Some(stop) = &live.stop {
                stop.request_cancel();
            }
            live.job.message = messages::CANCEL_REQUESTED.into();
            let job = live.job.clone();
            if let Err(e) = self.store.save(&[&job]) {
                tracing::error!(job_id = %id, "cannot store the cancel request: {e}");
            }
            return Ok(self.annotated(&st, &id).unwrap_or(job));
        }
        let mut ended = self.end_pending(&mut st, std::slice::from_ref(&id), messages::CANCELLED)?;
        drop(st);
        ended.pop().ok_or_else(|| Error::Internal("cancel ended no job".into()))
    }

    /// Removes one pending job from the queue (it ends `cancelled`). A processing job is a
    /// conflict: cancel it instead.
    pub fn remove_pending(&self, id: &str) -> Result<Job> {
        let id = parse_id(id)?;
        let mut st = self.state.lock();
        let status = st.live.get(&id).map(|l| l.job.status);
        match status {
            Some(JobStatus::Pending) => {
                let mut ended = self.end_pending(&mut st, std::slice::from_ref(&id), messages::REMOVED)?;
                ended.pop().ok_or_else(|| Error::Internal("remove ended no job".into()))
            }
            Some(_) => Err(Error::Conflict(format!("job {id} is processing, not pending; cancel it instead"))),
            None => {
                drop(st);
                Err(self.not_live(&id, "removed from the queue"))
            }
        }
    }

    /// Removes every pending job (they end `cancelled`); returns them.
    pub fn clear_pending(&self) -> Result<Vec<Job>> {
        let mut st = self.state.lock();
        let ids: Vec<JobId> = st.queue.iter().cloned().collect();
        self.end_pending(&mut st, &ids, messages::REMOVED)
    }

    /// The processing jobs, then the pending ones in the order they will run.
    pub fn queue(&self) -> QueueView {
        let st = self.state.lock();
        let mut processing: Vec<&LiveJob> =
            st.live.values().filter(|l| l.job.status == JobStatus::Processing).collect();
        processing.sort_by_key(|l| (l.job.started_at, l.seq));
        let mut tasks: Vec<QueueTask> =
            processing.iter().filter_map(|l| self.annotated(&st, &l.job.job_id)).map(|j| QueueTask::from_job(&j)).collect();
        let current_task_id = tasks.first().map(|t| t.id.clone());
        tasks.extend(st.queue.iter().filter_map(|id| self.annotated(&st, id)).map(|j| QueueTask::from_job(&j)));
        QueueView { total_tasks: tasks.len(), is_processing: current_task_id.is_some(), current_task_id, tasks }
    }

    pub fn stats(&self) -> Result<Stats> {
        let s = self.store.stats()?;
        let st = self.state.lock();
        Ok(Stats {
            counts: s.counts,
            mean_queue_seconds: s.mean_queue_seconds,
            mean_run_seconds: s.mean_run_seconds,
            queue_depth: st.queue.len(),
            mean_step_seconds: st.clock.default_step_seconds(),
            rejected_total: self.rejected.load(Ordering::Relaxed),
        })
    }

    /// The job's events: its current state first, then every change until it ends.
    pub fn subscribe(&self, id: &str) -> Result<JobEvents> {
        let id = parse_id(id)?;
        let weak = self.self_ref.clone();
        let resync = Box::new(move |id: &JobId| weak.upgrade().and_then(|m| m.get(id.as_str()).ok()));
        let st = self.state.lock();
        if let Some(job) = self.annotated(&st, &id) {
            return Ok(self.events.subscribe(job, resync));
        }
        // Not live: finished (or unknown). Read under the lock so a job finishing right now is
        // either live above or already stored as finished here.
        let job = self.store.get(&id)?.ok_or_else(|| Error::NotFound(id.to_string()))?;
        Ok(self.events.subscribe(job, resync))
    }

    /// Stops admitting (new submissions get `ShuttingDown`), asks running jobs to stop at their
    /// next step and puts them back in the queue, waits for the workers, gives callbacks under way
    /// a short grace period, and closes the store.
    pub async fn shutdown(&self) {
        {
            let st = self.state.lock();
            self.stopping.store(true, Ordering::SeqCst);
            for live in st.live.values() {
                if let Some(stop) = &live.stop {
                    stop.request_shutdown();
                }
            }
        }
        self.wake.notify_waiters();
        let handles = std::mem::take(&mut *self.workers.lock());
        for h in handles {
            if let Err(e) = h.await {
                tracing::error!("a worker ended abnormally: {e}");
            }
        }
        self.callbacks.drain().await;
        if let Err(e) = self.store.close() {
            tracing::error!("closing the job store failed: {e}");
        }
    }

    /// Ends pending jobs as `cancelled`: stored in one transaction, then announced.
    fn end_pending(&self, st: &mut State, ids: &[JobId], message: &str) -> Result<Vec<Job>> {
        let mut ended = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(live) = st.live.get(id).filter(|l| l.job.status == JobStatus::Pending) {
                let mut job = live.job.clone();
                job.set_status(JobStatus::Cancelled, message);
                ended.push(job);
            }
        }
        self.store.save(&ended.iter().collect::<Vec<_>>())?;
        for job in &ended {
            st.queue.remove(&job.job_id);
            st.live.remove(&job.job_id);
            st.finished.insert(job.clone());
            self.events.announce(EventKind::Cancelled, job);
            self.callbacks.send(job, &self.runtime);
        }
        if !ended.is_empty() {
            self.announce_positions(st);
        }
        Ok(ended)
    }

    /// After the queue moved: a `queued` event with the new position and ETA for each pending
    /// job, so a client watching a queued job sees it advance.
    pub(crate) fn announce_positions(&self, st: &State) {
        for id in st.queue.iter() {
            if let Some(job) = self.annotated(st, id) {
                self.events.announce(EventKind::Queued, &job);
            }
        }
    }

    /// The error for an operation on a job that is not pending/processing.
    fn not_live(&self, id: &JobId, what: &str) -> Error {
        match self.store.get(id) {
            Ok(Some(job)) => Error::Conflict(format!("job {id} is already {} and cannot be {what}", job.status.as_str())),
            Ok(None) => Error::NotFound(id.to_string()),
            Err(e) => e.into(),
        }
    }

    /// Seconds until a processing job is expected to end, each (in start order).
    fn running_remaining(&self, st: &State) -> Vec<Option<f64>> {
        st.live
            .values()
            .filter(|l| l.job.status == JobStatus::Processing)
            .map(|l| {
                let left = l.job.total_steps.saturating_sub(l.job.current_step);
                st.clock.estimate(left, work_units(&l.job.params))
            })
            .collect()
    }

    fn first_slot_frees_in(&self, st: &State) -> Option<f64> {
        self.running_remaining(st).into_iter().flatten().min_by(f64::total_cmp)
    }

    /// A live job with `position` and `eta_seconds` computed now; `None` if not live.
    pub(crate) fn annotated(&self, st: &State, id: &JobId) -> Option<Job> {
        let live = st.live.get(id)?;
        let mut job = live.job.clone();
        match job.status {
            JobStatus::Processing => {
                let left = job.total_steps.saturating_sub(job.current_step);
                job.eta_seconds = st.clock.estimate(left, work_units(&job.params));
                job.position = None;
            }
            JobStatus::Pending => {
                let position = st.queue.position(id);
                job.position = position;
                let mut free = self.running_remaining(st);
                free.resize(self.config.workers.max(1).max(free.len()), Some(0.0));
                let ahead: Vec<Option<f64>> = st
                    .queue
                    .iter()
                    .take(position.unwrap_or(0))
                    .map(|q| st.live.get(q).and_then(|l| st.clock.estimate(l.job.total_steps, work_units(&l.job.params))))
                    .collect();
                job.eta_seconds = plan_completion(&free, &ahead).last().copied().flatten();
            }
            _ => {}
        }
        Some(job)
    }
}

fn parse_id(id: &str) -> Result<JobId> {
    JobId::parse(id).ok_or_else(|| Error::NotFound(id.to_string()))
}

pub(crate) fn reset_progress(job: &mut Job) {
    job.progress = 0.0;
    job.current_step = 0;
    job.eta_seconds = None;
}

/// Leftovers of runs that were interrupted: never complete, never served.
fn remove_partials(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_file() {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!("cannot remove the partial file {}: {e}", path.display());
            }
        }
    }
}
