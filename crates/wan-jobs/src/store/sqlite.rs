//! The embedded default store: one SQLite file in the data directory.
//!
//! WAL journal with `synchronous = NORMAL`: a committed transaction survives the process being
//! killed at any point (what a crash of the server is); only a power loss may drop the last
//! commits, and the database stays consistent either way.

use std::path::Path;
use std::sync::LazyLock;

use parking_lot::Mutex;
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row, Transaction};

use super::{JobFilter, JobStore, StateChange, StoreError, UnfinishedJob};
use crate::job::{Job, JobId, JobParams, JobStatus, Timestamp};
use crate::stats::{StatusCounts, StoreStats};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT    NOT NULL UNIQUE,
    status       TEXT    NOT NULL,
    message      TEXT    NOT NULL,
    params       TEXT    NOT NULL,
    seed         INTEGER NOT NULL,
    priority     TEXT    NOT NULL,
    user_id      TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    started_at   INTEGER,
    completed_at INTEGER,
    progress     REAL    NOT NULL,
    current_step INTEGER NOT NULL,
    total_steps  INTEGER NOT NULL,
    output_path  TEXT,
    output_url   TEXT,
    error        TEXT,
    attempts     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs(status, seq);
CREATE INDEX IF NOT EXISTS jobs_by_user ON jobs(user_id, seq);
CREATE TABLE IF NOT EXISTS job_state_changes (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id  TEXT    NOT NULL REFERENCES jobs(id),
    status  TEXT    NOT NULL,
    message TEXT    NOT NULL,
    at      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS job_state_changes_by_job ON job_state_changes(job_id, id);
";

const COLUMNS: &str = "seq, id, status, message, params, created_at, updated_at, started_at, completed_at, \
     progress, current_step, total_steps, output_path, output_url, error, attempts";

/// The columns a job's life changes: the insert and the update both write exactly these, bound
/// from [`progress_values`] in this order as parameters ?2 onwards (?1 is the id).
const PROGRESS_COLUMNS: [&str; 12] = [
    "status",
    "message",
    "updated_at",
    "started_at",
    "completed_at",
    "progress",
    "current_step",
    "total_steps",
    "output_path",
    "output_url",
    "error",
    "attempts",
];

/// The values of [`PROGRESS_COLUMNS`] for `job`.
fn progress_values(job: &Job) -> [Value; 12] {
    [
        job.status.as_str().to_owned().into(),
        job.message.clone().into(),
        job.updated_at.millis().into(),
        job.started_at.map(Timestamp::millis).into(),
        job.completed_at.map(Timestamp::millis).into(),
        job.progress.into(),
        job.current_step.into(),
        job.total_steps.into(),
        job.output_path.clone().into(),
        job.output_url.clone().into(),
        job.error.clone().into(),
        job.attempts.into(),
    ]
}

/// The columns set once, when a job is admitted, bound from [`fixed_values`] in this order.
const FIXED_COLUMNS: [&str; 5] = ["params", "seed", "priority", "user_id", "created_at"];

/// The values of [`FIXED_COLUMNS`] for `job`, whose params are given as their JSON.
fn fixed_values(job: &Job, params_json: String) -> [Value; 5] {
    [
        params_json.into(),
        (job.seed as i64).into(),
        job.params.priority.as_str().to_owned().into(),
        job.params.user_id.clone().into(),
        job.created_at.millis().into(),
    ]
}

/// Inserts a job: the id, the [`PROGRESS_COLUMNS`], then the [`FIXED_COLUMNS`].
static INSERT_JOB: LazyLock<String> = LazyLock::new(|| {
    let slots: Vec<String> = (1..=1 + PROGRESS_COLUMNS.len() + FIXED_COLUMNS.len()).map(|i| format!("?{i}")).collect();
    format!(
        "INSERT INTO jobs (id, {}, {}) VALUES ({})",
        PROGRESS_COLUMNS.join(", "),
        FIXED_COLUMNS.join(", "),
        slots.join(", ")
    )
});

/// Updates the [`PROGRESS_COLUMNS`] of the job with id ?1.
static UPDATE_JOB: LazyLock<String> = LazyLock::new(|| {
    let sets: Vec<String> = PROGRESS_COLUMNS.iter().enumerate().map(|(i, c)| format!("{c} = ?{}", i + 2)).collect();
    format!("UPDATE jobs SET {} WHERE id = ?1", sets.join(", "))
});

pub struct SqliteStore {
    conn: Mutex<Option<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|source| StoreError::Io { path: dir.display().to_string(), source })?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteStore { conn: Mutex::new(Some(conn)) })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut guard = self.conn.lock();
        let conn = guard.as_mut().ok_or(StoreError::Closed)?;
        f(conn)
    }
}

fn record_change(tx: &Transaction<'_>, job: &Job) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO job_state_changes (job_id, status, message, at) VALUES (?1, ?2, ?3, ?4)",
        params![job.job_id.as_str(), job.status.as_str(), job.message, job.updated_at.millis()],
    )?;
    Ok(())
}

fn row_to_job(row: &Row<'_>) -> Result<(i64, Job), StoreError> {
    let id: String = row.get(1)?;
    let job_id = JobId::parse(&id).ok_or_else(|| StoreError::Corrupt(format!("invalid job id {id:?}")))?;
    let status: String = row.get(2)?;
    let status = JobStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("job {id}: status {status:?}")))?;
    let params: String = row.get(4)?;
    let params: JobParams = serde_json::from_str(&params)?;
    let ts = |i: usize| -> Result<Option<Timestamp>, StoreError> { Ok(row.get::<_, Option<i64>>(i)?.map(Timestamp)) };
    let job = Job {
        job_id,
        status,
        message: row.get(3)?,
        seed: params.seed,
        params,
        created_at: Timestamp(row.get(5)?),
        updated_at: Timestamp(row.get(6)?),
        started_at: ts(7)?,
        completed_at: ts(8)?,
        progress: row.get(9)?,
        current_step: row.get(10)?,
        total_steps: row.get(11)?,
        output_path: row.get(12)?,
        output_url: row.get(13)?,
        error: row.get(14)?,
        attempts: row.get(15)?,
        position: None,
        eta_seconds: None,
    };
    Ok((row.get(0)?, job))
}

fn collect_jobs(stmt: &mut rusqlite::Statement<'_>, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<(i64, Job)>, StoreError> {
    let mut rows = stmt.query(args)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(row_to_job(row)?);
    }
    Ok(out)
}

impl JobStore for SqliteStore {
    fn insert(&self, jobs: &[Job]) -> Result<Vec<i64>, StoreError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            let mut seqs = Vec::with_capacity(jobs.len());
            for job in jobs {
                let params = serde_json::to_string(&job.params)?;
                let id = Value::from(job.job_id.as_str().to_owned());
                let values = std::iter::once(id).chain(progress_values(job)).chain(fixed_values(job, params));
                tx.prepare_cached(&INSERT_JOB)?.execute(params_from_iter(values))?;
                seqs.push(tx.last_insert_rowid());
                record_change(&tx, job)?;
            }
            tx.commit()?;
            Ok(seqs)
        })
    }

    fn save(&self, jobs: &[&Job]) -> Result<(), StoreError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            for job in jobs {
                let old: Option<String> = tx
                    .query_row("SELECT status FROM jobs WHERE id = ?1", [job.job_id.as_str()], |r| r.get(0))
                    .optional()?;
                let Some(old) = old else {
                    return Err(StoreError::Corrupt(format!("job {} is not stored", job.job_id)));
                };
                let id = Value::from(job.job_id.as_str().to_owned());
                tx.prepare_cached(&UPDATE_JOB)?.execute(params_from_iter(std::iter::once(id).chain(progress_values(job))))?;
                if old != job.status.as_str() {
                    record_change(&tx, job)?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn get(&self, id: &JobId) -> Result<Option<Job>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"))?;
            Ok(collect_jobs(&mut stmt, &[&id.as_str()])?.pop().map(|(_, j)| j))
        })
    }

    fn list(&self, filter: &JobFilter) -> Result<(Vec<Job>, u64), StoreError> {
        self.with(|conn| {
            let status = filter.status.map(JobStatus::as_str);
            let cond = "(?1 IS NULL OR status = ?1) AND (?2 IS NULL OR user_id = ?2)";
            let total: i64 = conn.query_row(
                &format!("SELECT COUNT(*) FROM jobs WHERE {cond}"),
                params![status, filter.user_id],
                |r| r.get(0),
            )?;
            let mut stmt =
                conn.prepare_cached(&format!("SELECT {COLUMNS} FROM jobs WHERE {cond} ORDER BY seq DESC LIMIT ?3 OFFSET ?4"))?;
            let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
            let offset = i64::try_from(filter.offset).unwrap_or(i64::MAX);
            let jobs = collect_jobs(&mut stmt, &[&status, &filter.user_id, &limit, &offset])?;
            Ok((jobs.into_iter().map(|(_, j)| j).collect(), total.max(0) as u64))
        })
    }

    fn unfinished(&self) -> Result<Vec<UnfinishedJob>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM jobs WHERE status IN ('pending', 'processing') ORDER BY seq ASC"
            ))?;
            Ok(collect_jobs(&mut stmt, &[])?.into_iter().map(|(seq, job)| UnfinishedJob { seq, job }).collect())
        })
    }

    fn history(&self, id: &JobId) -> Result<Vec<StateChange>, StoreError> {
        self.with(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT status, message, at FROM job_state_changes WHERE job_id = ?1 ORDER BY id")?;
            let mut rows = stmt.query([id.as_str()])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                let s: String = row.get(0)?;
                let status = JobStatus::parse(&s).ok_or_else(|| StoreError::Corrupt(format!("status {s:?}")))?;
                out.push(StateChange { status, message: row.get(1)?, at: Timestamp(row.get(2)?) });
            }
            Ok(out)
        })
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        self.with(|conn| {
            let mut counts = StatusCounts::default();
            let mut stmt = conn.prepare_cached("SELECT status, COUNT(*) FROM jobs GROUP BY status")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let s: String = row.get(0)?;
                let n = row.get::<_, i64>(1)?.max(0) as u64;
                match JobStatus::parse(&s) {
                    Some(JobStatus::Pending) => counts.pending = n,
                    Some(JobStatus::Processing) => counts.processing = n,
                    Some(JobStatus::Completed) => counts.completed = n,
                    Some(JobStatus::Failed) => counts.failed = n,
                    Some(JobStatus::Cancelled) => counts.cancelled = n,
                    None => return Err(StoreError::Corrupt(format!("status {s:?}"))),
                }
            }
            let mean_queue_seconds: Option<f64> = conn.query_row(
                "SELECT AVG((started_at - created_at) / 1000.0) FROM jobs WHERE started_at IS NOT NULL",
                [],
                |r| r.get(0),
            )?;
            let mean_run_seconds: Option<f64> = conn.query_row(
                "SELECT AVG((completed_at - started_at) / 1000.0) FROM jobs \
                 WHERE status = 'completed' AND started_at IS NOT NULL AND completed_at IS NOT NULL",
                [],
                |r| r.get(0),
            )?;
            Ok(StoreStats { counts, mean_queue_seconds, mean_run_seconds })
        })
    }

    fn close(&self) -> Result<(), StoreError> {
        let conn = self.conn.lock().take();
        if let Some(conn) = conn {
            // Folds the WAL back into the main file so the database is one self-contained file.
            let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
            conn.close().map_err(|(_, e)| StoreError::Sqlite(e))?;
        }
        Ok(())
    }
}
