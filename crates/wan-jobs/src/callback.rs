//! Callbacks: when a job with a `callback_url` ends, POST its job JSON there, retrying with
//! exponential backoff, on tasks of their own so a slow or dead receiver never holds a worker.
//!
//! The URL was checked against the host allowlist at admission; redirects are not followed, so
//! a receiver cannot bounce the request to a host that is not on it.

use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::job::Job;

/// Delivery settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CallbackConfig {
    /// Attempts in all (the first one included).
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Per-request timeout.
    pub timeout_ms: u64,
    /// How long shutdown waits for deliveries still under way.
    pub shutdown_grace_ms: u64,
}

impl Default for CallbackConfig {
    fn default() -> Self {
        CallbackConfig {
            max_attempts: 6,
            initial_backoff_ms: 500,
            max_backoff_ms: 60_000,
            timeout_ms: 10_000,
            shutdown_grace_ms: 2_000,
        }
    }
}

impl CallbackConfig {
    /// Backoff before attempt `n + 1` (n >= 1): initial * 2^(n-1), capped.
    pub fn backoff(&self, n: u32) -> Duration {
        let factor = 1u64.checked_shl(n.saturating_sub(1)).unwrap_or(u64::MAX);
        Duration::from_millis(self.initial_backoff_ms.saturating_mul(factor).min(self.max_backoff_ms))
    }
}

/// Sends callbacks in the background.
pub(crate) struct Callbacks {
    client: reqwest::Client,
    config: CallbackConfig,
    tasks: Mutex<JoinSet<()>>,
}

impl Callbacks {
    pub(crate) fn new(config: CallbackConfig) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(config.timeout_ms.max(1)))
            .user_agent(concat!("wan-server/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the callback HTTP client: {e}"))?;
        Ok(Callbacks { client, config, tasks: Mutex::new(JoinSet::new()) })
    }

    /// Queues the delivery of `job` to its callback URL, if it has one. Must be called from
    /// within the Tokio runtime (or with `handle`).
    pub(crate) fn send(&self, job: &Job, handle: &tokio::runtime::Handle) {
        let Some(url) = job.params.callback_url.clone() else { return };
        let body = match serde_json::to_vec(job) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(job_id = %job.job_id, "cannot serialise the job for its callback: {e}");
                return;
            }
        };
        let client = self.client.clone();
        let config = self.config.clone();
        let job_id = job.job_id.clone();
        let mut tasks = self.tasks.lock();
        while tasks.try_join_next().is_some() {}
        tasks.spawn_on(
            async move {
                for attempt in 1..=config.max_attempts.max(1) {
                    let result = client
                        .post(&url)
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    match result {
                        Ok(resp) if resp.status().is_success() => {
                            tracing::debug!(%job_id, attempt, "callback delivered");
                            return;
                        }
                        Ok(resp) => tracing::warn!(%job_id, attempt, status = %resp.status(), "callback refused"),
                        Err(e) => tracing::warn!(%job_id, attempt, "callback failed: {e}"),
                    }
                    if attempt < config.max_attempts {
                        tokio::time::sleep(config.backoff(attempt)).await;
                    }
                }
                tracing::error!(%job_id, "callback given up after {} attempts", config.max_attempts);
            },
            handle,
        );
    }

    /// Waits up to the grace period for deliveries under way, then drops the rest.
    pub(crate) async fn drain(&self) {
        let mut tasks = std::mem::take(&mut *self.tasks.lock());
        let grace = Duration::from_millis(self.config.shutdown_grace_ms);
        let _ = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        tasks.abort_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let c = CallbackConfig { initial_backoff_ms: 100, max_backoff_ms: 1000, ..Default::default() };
        let b: Vec<u64> = (1..=6).map(|n| c.backoff(n).as_millis() as u64).collect();
        assert_eq!(b, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(c.backoff(200).as_millis(), 1000);
    }
}
