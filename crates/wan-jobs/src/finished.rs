//! Recently ended jobs kept in memory, so that status polls of a finished job (what every client
//! does at the end) are answered without a store read. A job in a terminal status never changes
//! again, so the copy cannot go stale; the store stays the source of truth for older jobs.

use std::collections::{HashMap, VecDeque};

use crate::job::{Job, JobId};

/// How many ended jobs are kept; older ones are read from the store.
const CAPACITY: usize = 4096;

#[derive(Default)]
pub(crate) struct FinishedJobs {
    jobs: HashMap<JobId, Job>,
    order: VecDeque<JobId>,
}

impl FinishedJobs {
    pub(crate) fn insert(&mut self, job: Job) {
        let id = job.job_id.clone();
        if self.jobs.insert(id.clone(), job).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.jobs.remove(&old);
            }
        }
    }

    pub(crate) fn get(&self, id: &JobId) -> Option<&Job> {
        self.jobs.get(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::GenerationRequest;
    use crate::validate::Limits;

    fn job() -> Job {
        let req = GenerationRequest { prompt: Some("a cat".into()), ..Default::default() };
        Job::new_pending(Limits::default().validate(&req).unwrap())
    }

    #[test]
    fn keeps_the_newest_and_evicts_the_oldest_past_capacity() {
        let mut f = FinishedJobs::default();
        let first = job();
        f.insert(first.clone());
        assert_eq!(f.get(&first.job_id), Some(&first));
        // Re-inserting the same job does not take a second place in the order.
        f.insert(first.clone());
        assert_eq!(f.order.len(), 1);
        let mut last = first.clone();
        for _ in 0..CAPACITY {
            last = job();
            f.insert(last.clone());
        }
        assert_eq!(f.get(&first.job_id), None, "the oldest was evicted");
        assert_eq!(f.get(&last.job_id), Some(&last));
        assert_eq!(f.jobs.len(), CAPACITY);
    }
}
