//! Broadcast of job state changes, and the per-job event stream behind the SSE route.
//!
//! Every event carries the whole job as it is after the change, so a client never has to merge
//! partial updates. A subscriber first receives the job's current state (taken under the same
//! lock that orders announcements, so nothing is missed or seen twice between the snapshot and
//! the live events), then every later change, and the stream ends after a terminal event.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::Serialize;
use tokio::sync::broadcast;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::Stream;

use crate::job::{Job, JobId, JobStatus};

/// The SSE event names of API.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Queued,
    Started,
    Progress,
    Completed,
    Failed,
    Cancelled,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Queued => "queued",
            EventKind::Started => "started",
            EventKind::Progress => "progress",
            EventKind::Completed => "completed",
            EventKind::Failed => "failed",
            EventKind::Cancelled => "cancelled",
        }
    }

    /// The event that describes a job's current state (what a late subscriber gets first).
    pub fn for_state(job: &Job) -> Self {
        match job.status {
            JobStatus::Pending => EventKind::Queued,
            JobStatus::Processing if job.current_step > 0 => EventKind::Progress,
            JobStatus::Processing => EventKind::Started,
            JobStatus::Completed => EventKind::Completed,
            JobStatus::Failed => EventKind::Failed,
            JobStatus::Cancelled => EventKind::Cancelled,
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, EventKind::Completed | EventKind::Failed | EventKind::Cancelled)
    }
}

/// One state change of one job.
#[derive(Clone, Debug, Serialize)]
pub struct JobEvent {
    pub event: EventKind,
    pub job: Job,
}

/// The sending side, owned by the manager.
#[derive(Clone, Debug)]
pub(crate) struct Broadcaster {
    tx: broadcast::Sender<Arc<JobEvent>>,
}

impl Broadcaster {
    pub(crate) fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(16));
        Broadcaster { tx }
    }

    pub(crate) fn announce(&self, event: EventKind, job: &Job) {
        // No receiver is not an error: nobody is listening.
        let _ = self.tx.send(Arc::new(JobEvent { event, job: job.clone() }));
    }

    /// Must be called under the manager's state lock, with `current` read under that same lock.
    /// `resync` reads a job's current state; it is used when the subscriber lagged behind.
    pub(crate) fn subscribe(&self, current: Job, resync: Resync) -> JobEvents {
        let first = JobEvent { event: EventKind::for_state(&current), job: current };
        let done = first.event.is_terminal();
        JobEvents {
            id: first.job.job_id.clone(),
            first: Some(first),
            rx: BroadcastStream::new(self.tx.subscribe()),
            done,
            resync,
        }
    }
}

/// Reads a job's current state (from the manager, which may be gone).
pub(crate) type Resync = Box<dyn Fn(&JobId) -> Option<Job> + Send + Sync>;

/// The events of one job: its current state first, then each change; ends after a terminal one.
/// If the subscriber falls so far behind that events were dropped, it gets the job's current
/// state instead (each event holds the full job, so only intermediate progress is skipped).
pub struct JobEvents {
    id: JobId,
    first: Option<JobEvent>,
    rx: BroadcastStream<Arc<JobEvent>>,
    done: bool,
    resync: Resync,
}

impl JobEvents {
    pub fn job_id(&self) -> &JobId {
        &self.id
    }

    /// The next event, `None` once the job has ended.
    pub async fn next(&mut self) -> Option<JobEvent> {
        tokio_stream::StreamExt::next(self).await
    }
}

impl Stream for JobEvents {
    type Item = JobEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<JobEvent>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(first));
        }
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.rx).poll_next(cx) {
                Poll::Ready(Some(Ok(ev))) if ev.job.job_id == this.id => {
                    this.done = ev.event.is_terminal();
                    return Poll::Ready(Some((*ev).clone()));
                }
                Poll::Ready(Some(Ok(_))) => continue,
                Poll::Ready(Some(Err(BroadcastStreamRecvError::Lagged(_)))) => match (this.resync)(&this.id) {
                    Some(job) => {
                        let event = EventKind::for_state(&job);
                        this.done = event.is_terminal();
                        return Poll::Ready(Some(JobEvent { event, job }));
                    }
                    None => continue,
                },
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
