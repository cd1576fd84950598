//! The parity test: every fixture directory under `$WAN_FIXTURES` (default `../shared/fixtures`)
//! is loaded, its computation run, and every output compared with the reference's tolerance.
//! New fixture directories of a known kind are picked up with no code change.
//!
//! Run with `cargo test --release --test parity`. Optional: `WAN_PARITY_FILTER=substring` runs only
//! the fixtures whose name contains it.

use std::path::PathBuf;
use std::process::ExitCode;

use wan_pipeline::parity::{compare, discover, prepare, Fixture, RunOptions};

fn fixtures_root() -> PathBuf {
    match std::env::var_os("WAN_FIXTURES") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"),
    }
}

fn main() -> ExitCode {
    let root = fixtures_root();
    let filter = std::env::var("WAN_PARITY_FILTER").unwrap_or_default();
    let dirs = match discover(&root) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("parity: cannot read fixtures at {}: {e}", root.display());
            return ExitCode::FAILURE;
        }
    };
    if dirs.is_empty() {
        eprintln!("parity: no fixture directories under {}", root.display());
        return ExitCode::FAILURE;
    }
    let opts = RunOptions::default();
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for dir in dirs {
        let label = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if !filter.is_empty() && !label.contains(&filter) {
            continue;
        }
        let fixture = match Fixture::load(&dir) {
            Ok(f) => f,
            Err(e) => {
                println!("fixture {label} (?): FAIL cannot load: {e}");
                failed += 1;
                continue;
            }
        };
        let started = std::time::Instant::now();
        let result = prepare(&fixture, &opts).and_then(|c| match c {
            None => Ok(None),
            Some(mut run) => run().and_then(|out| compare(&fixture, &out)).map(Some),
        });
        let secs = started.elapsed().as_secs_f64();
        match result {
            Ok(None) => {
                println!("fixture {} ({}): skipped: {} not implemented yet", fixture.name, fixture.kind, fixture.kind);
                skipped += 1;
            }
            Ok(Some(report)) if report.passed() => {
                println!(
                    "fixture {} ({}): ok, max_abs_err={:.3e} (in {}) [{secs:.1} s]",
                    fixture.name, fixture.kind, report.max_abs_err, report.worst_tensor
                );
                passed += 1;
            }
            Ok(Some(report)) => {
                println!("fixture {} ({}): FAIL max_abs_err={:.3e} [{secs:.1} s]", fixture.name, fixture.kind, report.max_abs_err);
                for m in &report.mismatches {
                    println!("    {}: {}", m.tensor, m.detail);
                }
                failed += 1;
            }
            Err(e) => {
                println!("fixture {} ({}): FAIL error: {e}", fixture.name, fixture.kind);
                failed += 1;
            }
        }
    }
    println!("parity: {passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
