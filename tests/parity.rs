//! The parity test: every fixture directory under the project's own `fixtures/` and under
//! `$WAN_FIXTURES` (default `../shared/fixtures`) is loaded, its computation run, and every output
//! compared with the reference's tolerance. New fixture directories of a known kind are picked up
//! with no code change.
//!
//! Both roots run by default: the shared set is a floor, the project's set (made by
//! `scripts/fixtures/make_fixtures.py` from configs where every pair of sizes differs) covers what
//! the shared tiny models cannot. A fixture name present in both roots runs twice, labelled with
//! its root, so a collision never hides one.
//!
//! Every fixture runs on both kernel paths of `wan_pipeline::backend`: the native CPU kernels and
//! the generic one (candle's ops, the code a GPU runs), so the CPU tests check what CUDA runs.
//!
//! Run with `cargo test --release --test parity`. Optional: `WAN_PARITY_FILTER=substring` runs only
//! the fixtures whose name contains it; `WAN_KERNELS=native` or `generic` runs only that path.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use wan_pipeline::backend::{set_kernel_choice, KernelChoice};
use wan_pipeline::parity::{compare, discover, prepare, Fixture, RunOptions};

/// One root of fixture directories and whether it must exist.
struct Root {
    label: &'static str,
    path: PathBuf,
    required: bool,
}

fn fixture_roots() -> Vec<Root> {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shared = match std::env::var_os("WAN_FIXTURES") {
        Some(p) => PathBuf::from(p),
        None => manifest_dir.join("../shared/fixtures"),
    };
    vec![
        Root { label: "shared", path: shared, required: true },
        Root { label: "project", path: manifest_dir.join("fixtures"), required: false },
    ]
}

/// Every fixture directory of every root, each with the name it is reported under: its directory
/// name, or `name [root]` when another root has a fixture of the same name.
fn fixture_dirs() -> Result<Vec<(String, PathBuf)>, String> {
    let mut found = Vec::new();
    for root in fixture_roots() {
        if !root.path.is_dir() && !root.required {
            continue;
        }
        let dirs = discover(&root.path).map_err(|e| format!("cannot read fixtures at {}: {e}", root.path.display()))?;
        found.extend(dirs.into_iter().map(|d| (root.label, d)));
    }
    let name = |d: &PathBuf| d.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for (_, d) in &found {
        *counts.entry(name(d)).or_default() += 1;
    }
    Ok(found
        .into_iter()
        .map(|(label, d)| {
            let n = name(&d);
            let shown = if counts[&n] > 1 { format!("{n} [{label}]") } else { n };
            (shown, d)
        })
        .collect())
}

/// The kernel paths to check every fixture on: both (the native CPU kernels, and candle's ops,
/// which is the code a GPU runs), or the one `WAN_KERNELS` names.
fn kernel_paths() -> Result<Vec<KernelChoice>, String> {
    match wan_pipeline::backend::kernel_choice_from_env().map_err(|e| e.to_string())? {
        KernelChoice::Auto => Ok(vec![KernelChoice::Native, KernelChoice::Generic]),
        one => Ok(vec![one]),
    }
}

/// What one fixture on one kernel path came to.
enum Outcome {
    Passed,
    Failed,
    Skipped,
}

/// Loads, runs and compares one fixture, printing its line.
fn run_fixture(label: &str, dir: &std::path::Path, opts: &RunOptions) -> Outcome {
    let fixture = match Fixture::load(dir) {
        Ok(f) => f,
        Err(e) => {
            println!("fixture {label} (?): FAIL cannot load: {e}");
            return Outcome::Failed;
        }
    };
    let started = std::time::Instant::now();
    let result = prepare(&fixture, opts).and_then(|c| match c {
        None => Ok(None),
        Some(mut run) => run().and_then(|out| compare(&fixture, &out)).map(Some),
    });
    let secs = started.elapsed().as_secs_f64();
    match result {
        Ok(None) => {
            println!("fixture {label} ({}): skipped: {} not implemented yet", fixture.kind, fixture.kind);
            Outcome::Skipped
        }
        Ok(Some(report)) if report.passed() => {
            println!(
                "fixture {label} ({}): ok, max_abs_err={:.3e} (in {}) [{secs:.1} s]",
                fixture.kind, report.max_abs_err, report.worst_tensor
            );
            Outcome::Passed
        }
        Ok(Some(report)) => {
            println!("fixture {label} ({}): FAIL max_abs_err={:.3e} [{secs:.1} s]", fixture.kind, report.max_abs_err);
            for m in &report.mismatches {
                println!("    {}: {}", m.tensor, m.detail);
            }
            Outcome::Failed
        }
        Err(e) => {
            println!("fixture {label} ({}): FAIL error: {e}", fixture.kind);
            Outcome::Failed
        }
    }
}

fn main() -> ExitCode {
    let filter = std::env::var("WAN_PARITY_FILTER").unwrap_or_default();
    let dirs = match fixture_dirs() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("parity: {e}");
            return ExitCode::FAILURE;
        }
    };
    if dirs.is_empty() {
        eprintln!("parity: no fixture directories under any root");
        return ExitCode::FAILURE;
    }
    let paths = match kernel_paths() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("parity: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = RunOptions::default();
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for choice in paths {
        // The models load inside `prepare`, after this: their layers pack (or not) for this path.
        set_kernel_choice(choice);
        println!("parity: kernel path {choice}: {}", wan_pipeline::backend::describe(&opts.device));
        for (label, dir) in &dirs {
            if !filter.is_empty() && !label.contains(&filter) {
                continue;
            }
            match run_fixture(&format!("{label} [{choice}]"), dir, &opts) {
                Outcome::Passed => passed += 1,
                Outcome::Failed => failed += 1,
                Outcome::Skipped => skipped += 1,
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
