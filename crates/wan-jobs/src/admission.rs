//! The admission decision: admit a group of jobs (one, or a batch all-or-none) or refuse it as
//! overloaded with a retry-after estimate. Pure, so the manager can make it under its lock
//! together with storing the jobs, as one step.

use crate::error::Error;

/// Settings of admission.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdmissionPolicy {
    /// Most jobs pending or processing at once (002's `max_concurrent_requests`).
    pub max_concurrent_requests: usize,
    /// Retry-after answered when nothing has been measured yet to estimate it.
    pub default_retry_after_s: u64,
    /// Upper bound of any retry-after answered.
    pub max_retry_after_s: u64,
}

impl Default for AdmissionPolicy {
    fn default() -> Self {
        AdmissionPolicy { max_concurrent_requests: 2, default_retry_after_s: 10, max_retry_after_s: 3600 }
    }
}

impl AdmissionPolicy {
    /// Admits `incoming` more jobs when `active` (pending + processing) are already admitted, or
    /// refuses them all. `slot_frees_in_s` is the estimated time until the first active job ends,
    /// if one could be estimated.
    pub fn decide(&self, active: usize, incoming: usize, slot_frees_in_s: Option<f64>) -> Result<(), Error> {
        if active.saturating_add(incoming) <= self.max_concurrent_requests {
            return Ok(());
        }
        let retry_after_s = slot_frees_in_s
            .filter(|s| s.is_finite())
            .map(|s| s.ceil().max(1.0) as u64)
            .unwrap_or(self.default_retry_after_s)
            .clamp(1, self.max_retry_after_s.max(1));
        Err(Error::Overloaded { retry_after_s, active, limit: self.max_concurrent_requests })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_counts_the_whole_batch() {
        let p = AdmissionPolicy { max_concurrent_requests: 3, ..Default::default() };
        assert!(p.decide(0, 3, None).is_ok());
        assert!(p.decide(2, 1, None).is_ok());
        assert!(matches!(p.decide(2, 2, None), Err(Error::Overloaded { active: 2, limit: 3, .. })));
    }

    #[test]
    fn retry_after_from_estimate_or_default() {
        let p = AdmissionPolicy { max_concurrent_requests: 0, default_retry_after_s: 7, max_retry_after_s: 100 };
        let ra = |e: Option<f64>| match p.decide(0, 1, e) {
            Err(Error::Overloaded { retry_after_s, .. }) => retry_after_s,
            other => panic!("{other:?}"),
        };
        assert_eq!(ra(None), 7);
        assert_eq!(ra(Some(12.2)), 13);
        assert_eq!(ra(Some(0.01)), 1);
        assert_eq!(ra(Some(1e9)), 100);
    }
}
