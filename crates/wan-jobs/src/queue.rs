//! The pending queue: priority high > normal > low, first come first within a priority, and a
//! class ahead of all of them for jobs that were interrupted mid-run (they run again first).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::job::{Job, JobId, JobStatus, Priority, Timestamp};

/// Where a job sits in the queue: lower runs first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lane {
    /// Jobs that were processing when the server stopped: re-run before anything else.
    Resumed = 0,
    High = 1,
    Normal = 2,
    Low = 3,
}

impl From<Priority> for Lane {
    fn from(p: Priority) -> Self {
        match p {
            Priority::High => Lane::High,
            Priority::Normal => Lane::Normal,
            Priority::Low => Lane::Low,
        }
    }
}

/// Ordered set of pending job ids. `seq` is the admission order (kept by the store), so an order
/// rebuilt after a restart is the order of admission.
#[derive(Debug, Default)]
pub struct PendingQueue {
    order: BTreeMap<(Lane, i64), JobId>,
    keys: HashMap<JobId, (Lane, i64)>,
}

impl PendingQueue {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, id: JobId, lane: Lane, seq: i64) {
        if let Some(old) = self.keys.insert(id.clone(), (lane, seq)) {
            self.order.remove(&old);
        }
        self.order.insert((lane, seq), id);
    }

    /// Takes the job that should run next.
    pub fn pop(&mut self) -> Option<JobId> {
        let (_, id) = self.order.pop_first()?;
        self.keys.remove(&id);
        Some(id)
    }

    /// Removes one job; false if it was not queued.
    pub fn remove(&mut self, id: &JobId) -> bool {
        match self.keys.remove(id) {
            Some(key) => {
                self.order.remove(&key);
                true
            }
            None => false,
        }
    }

    /// Empties the queue and returns the ids in queue order.
    pub fn clear(&mut self) -> Vec<JobId> {
        self.keys.clear();
        std::mem::take(&mut self.order).into_values().collect()
    }

    pub fn contains(&self, id: &JobId) -> bool {
        self.keys.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The ids in the order they will run.
    pub fn iter(&self) -> impl Iterator<Item = &JobId> {
        self.order.values()
    }

    /// 1-based position, `None` if not queued.
    pub fn position(&self, id: &JobId) -> Option<usize> {
        let key = self.keys.get(id)?;
        Some(self.order.range(..key).count() + 1)
    }
}

/// `GET /api/v1/queue`: the processing jobs (position 0) then the pending ones in run order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QueueView {
    pub total_tasks: usize,
    /// The processing job that started first, if any.
    pub current_task_id: Option<JobId>,
    pub is_processing: bool,
    pub tasks: Vec<QueueTask>,
}

/// One entry of [`QueueView`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QueueTask {
    /// The job id.
    pub id: JobId,
    pub prompt: String,
    pub status: JobStatus,
    /// 0 while processing, else the 1-based place in the pending queue.
    pub position: usize,
    pub priority: Priority,
    pub kind: &'static str,
    pub progress: f64,
    pub current_step: u32,
    pub total_steps: u32,
    pub eta_seconds: Option<f64>,
    pub created_at: Timestamp,
    pub user_id: Option<String>,
}

impl QueueTask {
    pub(crate) fn from_job(job: &Job) -> Self {
        QueueTask {
            id: job.job_id.clone(),
            prompt: job.params.prompt.clone(),
            status: job.status,
            position: job.position.unwrap_or(0),
            priority: job.params.priority,
            kind: job.params.mode.name(),
            progress: job.progress,
            current_step: job.current_step,
            total_steps: job.total_steps,
            eta_seconds: job.eta_seconds,
            created_at: job.created_at,
            user_id: job.params.user_id.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<JobId> {
        (0..n).map(|_| JobId::generate()).collect()
    }

    #[test]
    fn lanes_then_fifo() {
        let v = ids(6);
        let mut q = PendingQueue::new();
        q.push(v[0].clone(), Lane::Low, 0);
        q.push(v[1].clone(), Lane::Normal, 1);
        q.push(v[2].clone(), Lane::High, 2);
        q.push(v[3].clone(), Lane::Normal, 3);
        q.push(v[4].clone(), Lane::High, 4);
        q.push(v[5].clone(), Lane::Resumed, 5);
        assert_eq!(q.position(&v[0]), Some(6));
        assert_eq!(q.position(&v[5]), Some(1));
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, vec![v[5].clone(), v[2].clone(), v[4].clone(), v[1].clone(), v[3].clone(), v[0].clone()]);
    }

    #[test]
    fn remove_and_clear() {
        let v = ids(3);
        let mut q = PendingQueue::new();
        for (i, id) in v.iter().enumerate() {
            q.push(id.clone(), Lane::Normal, i as i64);
        }
        assert!(q.remove(&v[1]));
        assert!(!q.remove(&v[1]));
        assert_eq!(q.position(&v[2]), Some(2));
        assert_eq!(q.clear(), vec![v[0].clone(), v[2].clone()]);
        assert!(q.is_empty() && q.pop().is_none());
    }
}
