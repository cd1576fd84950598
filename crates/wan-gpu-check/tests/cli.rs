//! The check binary on the CPU, on the shared tiny models: the same code the GPU check runs,
//! so a broken measurement is found here and not in a scarce GPU session.

use std::path::PathBuf;
use std::process::Command;

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

/// Runs the binary and returns its stdout, failing the test with its stderr when it fails.
fn check(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_wan-gpu-check")).args(args).output().expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{args:?} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// The value of `key=` in the output.
fn value(out: &str, key: &str) -> String {
    let pattern = format!("{key}=");
    out.split_whitespace()
        .find_map(|w| w.strip_prefix(&pattern))
        .unwrap_or_else(|| panic!("no {key}= in:\n{out}"))
        .to_string()
}

#[test]
fn parity_runs_the_fixtures_of_a_root_and_counts_them() {
    let root = tempfile::tempdir().unwrap();
    // One transformer fixture in a root of its own; its model path is relative to the fixture.
    let fixture = shared().join("fixtures/transformer_t2v");
    std::os::unix::fs::symlink(&fixture, root.path().join("transformer_t2v")).unwrap();
    let out = check(&["--device", "cpu", "--dtype", "f32", "parity", root.path().to_str().unwrap()]);
    assert_eq!(value(&out, "parity_passed"), "1", "{out}");
    assert_eq!(value(&out, "parity_failed"), "0", "{out}");
    let err: f64 = value(&out, "parity_max_abs_err").parse().unwrap();
    assert!(err < 1e-4, "{out}");
}

#[test]
fn forward_times_both_attention_paths() {
    let transformer = shared().join("models/wan-tiny-t2v/transformer");
    let t = transformer.to_str().unwrap();
    for attention in ["fused", "chunked"] {
        let out = check(&[
            "--device", "cpu", "--dtype", "f32", "forward", "--transformer", t, "--width", "64", "--height", "48",
            "--frames", "9", "--runs", "2", "--attention", attention,
        ]);
        assert_eq!(value(&out, "forward_attention"), attention);
        // (9 - 1) / 4 + 1 = 3 latent frames of 6 x 8, patches of 1 x 2 x 2.
        assert_eq!(value(&out, "forward_tokens"), "36");
        let median: f64 = value(&out, "forward_median_s").parse().unwrap();
        assert!(median > 0.0, "{out}");
    }
}

#[test]
fn a_whole_job_reports_its_stages_frames_and_memory() {
    let model = shared().join("models/wan-tiny-t2v");
    let out = check(&[
        "--device", "cpu", "--dtype", "f32", "job", "--model", model.to_str().unwrap(), "--width", "64", "--height", "48",
        "--frames", "9", "--steps", "2",
    ]);
    assert_eq!(value(&out, "job_frames"), "9", "{out}");
    assert_eq!(value(&out, "job_size"), "64x48x9");
    let estimate: f64 = value(&out, "job_estimate_mib").parse().unwrap();
    let weights: f64 = value(&out, "job_weights_mib").parse().unwrap();
    assert!(estimate > weights && weights > 0.0, "{out}");
    assert_ne!(value(&out, "job_sampled_peak_mib"), "unknown", "{out}");
}
