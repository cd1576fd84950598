//! Measured step times, ETAs, and the counters behind `GET /api/v1/stats`.

use serde::Serialize;

use crate::job::JobParams;

/// Counts per status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StatusCounts {
    pub pending: u64,
    pub processing: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
}

/// What the store can aggregate over every job it holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StoreStats {
    pub counts: StatusCounts,
    /// Mean seconds from admission to the start of the (last) run, over jobs that started.
    pub mean_queue_seconds: Option<f64>,
    /// Mean seconds from start to completion, over completed jobs.
    pub mean_run_seconds: Option<f64>,
}

/// `GET /api/v1/stats`: the store's aggregates plus live figures of this process.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    pub counts: StatusCounts,
    pub mean_queue_seconds: Option<f64>,
    pub mean_run_seconds: Option<f64>,
    /// Pending jobs.
    pub queue_depth: usize,
    /// Mean seconds of one denoising step at the default size, from measured steps.
    pub mean_step_seconds: Option<f64>,
    /// Submissions refused with 429 since this process started.
    pub rejected_total: u64,
}

/// A measure of the work of one denoising step: latent tokens (frames are 4k+1, compressed 4x in
/// time, 8x in space, then 2x2 patches). Step time is assumed proportional to it, which is only an
/// approximation (attention is quadratic), good enough for an ETA.
pub fn work_units(params: &JobParams) -> f64 {
    let frames = params.num_frames.unwrap_or(64).max(1) as f64;
    let w = params.width.unwrap_or(512).max(16) as f64;
    let h = params.height.unwrap_or(512).max(16) as f64;
    (((frames - 1.0) / 4.0).ceil() + 1.0) * (w / 16.0) * (h / 16.0)
}

/// An exponential moving average of seconds per step per work unit.
#[derive(Clone, Debug, Default)]
pub struct StepClock {
    secs_per_unit: Option<f64>,
}

impl StepClock {
    const WEIGHT: f64 = 0.2;

    pub fn record(&mut self, step_seconds: f64, units: f64) {
        if !(step_seconds.is_finite() && step_seconds >= 0.0 && units > 0.0) {
            return;
        }
        let x = step_seconds / units;
        self.secs_per_unit = Some(match self.secs_per_unit {
            Some(avg) => avg + Self::WEIGHT * (x - avg),
            None => x,
        });
    }

    /// Seconds for `steps` steps of a job of `units` work units; `None` before any measurement.
    pub fn estimate(&self, steps: u32, units: f64) -> Option<f64> {
        self.secs_per_unit.map(|s| s * units * steps as f64)
    }

    /// Seconds per step of a job of the default size.
    pub fn default_step_seconds(&self) -> Option<f64> {
        let default_units = ((64.0f64 - 1.0) / 4.0).ceil() + 1.0;
        self.secs_per_unit.map(|s| s * default_units * 32.0 * 32.0)
    }
}

/// Completion times of queued jobs, given when each worker becomes free and the run time of each
/// pending job in queue order: each job goes to the worker that frees up first.
/// `None` (unknown) propagates to every later job.
pub fn plan_completion(worker_free_in: &[Option<f64>], pending_run: &[Option<f64>]) -> Vec<Option<f64>> {
    let mut free: Vec<Option<f64>> = if worker_free_in.is_empty() { vec![Some(0.0)] } else { worker_free_in.to_vec() };
    pending_run
        .iter()
        .map(|run| {
            // The earliest free worker; an unknown time sorts last.
            let (idx, start) = free
                .iter()
                .enumerate()
                .min_by(|a, b| match (a.1, b.1) {
                    (Some(x), Some(y)) => x.total_cmp(y),
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (None, None) => std::cmp::Ordering::Equal,
                })
                .map(|(i, v)| (i, *v))
                .unwrap_or((0, None));
            let done = start.zip(*run).map(|(s, r)| s + r);
            free[idx] = done;
            done
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_scales_with_work() {
        let mut c = StepClock::default();
        assert_eq!(c.estimate(10, 100.0), None);
        c.record(2.0, 100.0);
        let one = c.estimate(10, 100.0).unwrap();
        let two = c.estimate(10, 200.0).unwrap();
        assert!((two - 2.0 * one).abs() < 1e-9 && (one - 20.0).abs() < 1e-9);
    }

    #[test]
    fn plan_assigns_to_the_first_free_worker() {
        // two workers free in 10 s and 4 s; three jobs of 5 s each
        let p = plan_completion(&[Some(10.0), Some(4.0)], &[Some(5.0), Some(5.0), Some(5.0)]);
        assert_eq!(p, vec![Some(9.0), Some(14.0), Some(15.0)]);
        let unknown = plan_completion(&[Some(1.0)], &[None, Some(5.0)]);
        assert_eq!(unknown, vec![None, None]);
    }
}
