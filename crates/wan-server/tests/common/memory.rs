//! Resident memory of a process, sampled from `/proc/<pid>/status` on a background thread so a
//! short peak is seen (VmHWM cannot be reset portably, and it counts what ran before the test).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// VmRSS of `pid` (None: this process) in KiB.
pub fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_string(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Samples RSS every 2 ms from [`RssSampler::start`] until [`RssSampler::finish`].
pub struct RssSampler {
    baseline_kib: u64,
    peak_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// Baseline and peak RSS over a sampled stretch, in MiB.
#[derive(Debug, Clone, Copy)]
pub struct RssReport {
    pub baseline_mib: f64,
    pub peak_mib: f64,
}

impl RssReport {
    pub fn growth_mib(&self) -> f64 {
        self.peak_mib - self.baseline_mib
    }
}

impl RssSampler {
    pub fn start(pid: Option<u32>) -> Self {
        let baseline_kib = rss_kib(pid).expect("/proc/<pid>/status has VmRSS (Linux)");
        let peak_kib = Arc::new(AtomicU64::new(baseline_kib));
        let stop = Arc::new(AtomicBool::new(false));
        let (peak, halt) = (peak_kib.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                if let Some(now) = rss_kib(pid) {
                    peak.fetch_max(now, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        RssSampler { baseline_kib, peak_kib, stop, thread }
    }

    pub fn finish(self) -> RssReport {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("sampler thread");
        RssReport { baseline_mib: self.baseline_kib as f64 / 1024.0, peak_mib: self.peak_kib.load(Ordering::Relaxed) as f64 / 1024.0 }
    }
}
