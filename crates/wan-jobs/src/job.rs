//! The job object and its parts: ids, status, priority, the request as received and as validated.
//!
//! [`Job`] serialises to exactly the job object of API.md: 002's fields (`job_id`, `status`,
//! `message`, `output_path`, `created_at`, `updated_at`) plus the extras (`seed`, `params`,
//! `progress`, `current_step`, `total_steps`, `position`, `eta_seconds`, `started_at`,
//! `completed_at`, `error`, `output_url`, `attempts`).

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize, Serializer};

/// A point in time, kept as Unix milliseconds (what the store holds) and written as RFC 3339
/// UTC with whole seconds (`2024-01-15T10:30:00Z`), the format 002 shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        Timestamp(ms)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    /// Seconds from `self` to `later` (0 if `later` is earlier).
    pub fn seconds_until(self, later: Timestamp) -> f64 {
        (later.0 - self.0).max(0) as f64 / 1000.0
    }

    pub fn to_rfc3339(self) -> String {
        let t = UNIX_EPOCH + Duration::from_millis(self.0.max(0) as u64);
        humantime::format_rfc3339_seconds(t).to_string()
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

/// A job id, `job_<unix-seconds>_<12 hex>` as in 002. Ids are made only by [`JobId::generate`], so
/// an id is always safe to use in a file name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    pub fn generate() -> Self {
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let suffix: u64 = rand::random::<u64>() & 0xffff_ffff_ffff;
        JobId(format!("job_{secs}_{suffix:012x}"))
    }

    /// Accepts only strings of the generated shape, so a path segment from a request can never
    /// name anything else (a file, another table's key).
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix("job_")?;
        let (secs, hex) = rest.split_once('_')?;
        let secs_ok = !secs.is_empty() && secs.len() <= 20 && secs.bytes().all(|b| b.is_ascii_digit());
        let hex_ok = hex.len() == 12 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        (secs_ok && hex_ok).then(|| JobId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name of the job's output file in `outputs/`.
    pub fn output_file_name(&self) -> String {
        format!("{}.mp4", self.0)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The life cycle: `pending` -> `processing` -> `completed` | `failed` | `cancelled`
/// (a pending job may also go straight to `cancelled`, and a processing one back to `pending`
/// when the server stops or restarts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Pending,
    Processing,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 5] =
        [JobStatus::Pending, JobStatus::Processing, JobStatus::Completed, JobStatus::Failed, JobStatus::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Processing => "processing",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// A job in a terminal state never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled)
    }
}

/// Orders the pending queue: high before normal before low, first come first within one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    High,
    #[default]
    Normal,
    Low,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Priority::High, Priority::Normal, Priority::Low].into_iter().find(|p| p.as_str() == s)
    }
}

/// What is generated from what. The input files are paths the server chose (uploads it stored),
/// never URLs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum GenerationMode {
    #[default]
    TextToVideo,
    ImageToVideo { image: PathBuf },
    VideoToVideo { video: PathBuf, strength: f64 },
}

impl GenerationMode {
    pub fn name(&self) -> &'static str {
        match self {
            GenerationMode::TextToVideo => "text-to-video",
            GenerationMode::ImageToVideo { .. } => "image-to-video",
            GenerationMode::VideoToVideo { .. } => "video-to-video",
        }
    }
}

/// A generation request as the server received it (JSON body or form fields), before validation.
/// Absent fields take 002's defaults. `mode` is set by the route (and carries the stored upload).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct GenerationRequest {
    #[serde(skip)]
    pub mode: GenerationModeRequest,
    pub prompt: Option<String>,
    pub negative_prompt: Option<String>,
    pub num_frames: Option<i64>,
    pub fps: Option<i64>,
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub seed: Option<i64>,
    pub guidance_scale: Option<f64>,
    pub num_inference_steps: Option<i64>,
    /// Video-to-video only: how far from the input video to go (0-1, default 0.8).
    pub strength: Option<f64>,
    pub priority: Option<Priority>,
    pub user_id: Option<String>,
    pub callback_url: Option<String>,
}

/// The route's part of a request: which generation, and the input file it stored.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum GenerationModeRequest {
    #[default]
    TextToVideo,
    ImageToVideo { image: PathBuf },
    VideoToVideo { video: PathBuf },
}

/// A request as validated: every field within bounds, defaults filled in, the seed drawn if it
/// was -1. This is what is stored and what the generator receives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobParams {
    #[serde(flatten)]
    pub mode: GenerationMode,
    pub prompt: String,
    pub negative_prompt: String,
    /// `None` for video-to-video without an explicit value: taken from the input video.
    pub num_frames: Option<u32>,
    pub fps: u32,
    /// `None` for video-to-video without an explicit value: taken from the input video.
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// The seed actually used (drawn at admission when the request said -1).
    pub seed: u64,
    pub guidance_scale: f64,
    pub num_inference_steps: u32,
    pub priority: Priority,
    pub user_id: Option<String>,
    pub callback_url: Option<String>,
}

/// One job: what the API shows and the store keeps.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Job {
    pub job_id: JobId,
    pub status: JobStatus,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_path: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The seed actually used.
    pub seed: u64,
    pub params: JobParams,
    /// 0-100.
    pub progress: f64,
    pub current_step: u32,
    pub total_steps: u32,
    /// 1-based place in the pending queue; `None` unless pending.
    pub position: Option<usize>,
    /// Estimated seconds until the job completes, from measured step times; `None` when finished
    /// or when nothing has been measured yet.
    pub eta_seconds: Option<f64>,
    pub started_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_url: Option<String>,
    /// How many times a run of this job was started.
    pub attempts: u32,
}

pub(crate) mod messages {
    pub const QUEUED: &str = "Job queued";
    pub const STARTED: &str = "Generating video...";
    pub const COMPLETED: &str = "Generation complete";
    pub const CANCELLED: &str = "Job cancelled";
    pub const REMOVED: &str = "Removed from the queue";
    pub const CANCEL_REQUESTED: &str = "Cancelling at the next step...";
    pub const REQUEUED_RESTART: &str = "Job queued again after a restart";
    pub const REQUEUED_SHUTDOWN: &str = "Job queued again: the server stopped during the run";
}

impl Job {
    /// A freshly admitted job.
    pub fn new_pending(params: JobParams) -> Self {
        let now = Timestamp::now();
        Job {
            job_id: JobId::generate(),
            status: JobStatus::Pending,
            message: messages::QUEUED.to_string(),
            output_path: None,
            created_at: now,
            updated_at: now,
            seed: params.seed,
            total_steps: params.num_inference_steps,
            params,
            progress: 0.0,
            current_step: 0,
            position: None,
            eta_seconds: None,
            started_at: None,
            completed_at: None,
            error: None,
            output_url: None,
            attempts: 0,
        }
    }

    /// Sets status and message and stamps `updated_at`.
    pub(crate) fn set_status(&mut self, status: JobStatus, message: impl Into<String>) {
        self.status = status;
        self.message = message.into();
        self.updated_at = Timestamp::now();
        if status != JobStatus::Pending {
            self.position = None;
        }
        if status.is_terminal() {
            self.completed_at = Some(self.updated_at);
            self.eta_seconds = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_and_garbage_does_not() {
        let id = JobId::generate();
        assert_eq!(JobId::parse(id.as_str()), Some(id.clone()));
        assert!(id.as_str().starts_with("job_"));
        for bad in ["", "job_", "job_1_abc", "job_1_ABCDEF123456", "job_x_abcdef123456", "../etc/passwd", "job_1_abcdef12345/"] {
            assert_eq!(JobId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc_seconds() {
        assert_eq!(Timestamp(1_705_314_600_123).to_rfc3339(), "2024-01-15T10:30:00Z");
    }
}
