//! `wan-server generate` end to end on the tiny models: the mp4 it writes is checked with
//! ffprobe (codec, frame count, size, fps).

use std::path::{Path, PathBuf};
use std::process::Command;

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

fn out_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wan-generate-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// (codec, frames, width, height, fps) as ffprobe counts them (decoding every frame).
fn ffprobe(path: &Path) -> (String, u64, u64, u64, String) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries"])
        .arg("stream=codec_name,nb_read_frames,width,height,r_frame_rate,pix_fmt")
        .args(["-of", "default=noprint_wrappers=1"])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(out.status.success(), "ffprobe failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("ffprobe gave no {k}: {text}"))
            .to_string()
    };
    assert_eq!(get("pix_fmt"), "yuv420p");
    (get("codec_name"), get("nb_read_frames").parse().unwrap(), get("width").parse().unwrap(), get("height").parse().unwrap(), get("r_frame_rate"))
}

fn generate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wan-server")).arg("generate").args(args).output().expect("wan-server runs")
}

#[test]
fn text_to_video_writes_the_requested_mp4() {
    let dir = out_dir("t2v");
    let out = dir.join("fox.mp4");
    let model = shared().join("models/wan-tiny-t2v");
    // 6 frames is not 4k+1: generated as 9 and cut to exactly 6.
    let o = generate(&[
        "--model", model.to_str().unwrap(), "--prompt", "A red fox runs through the snow",
        "--frames", "6", "--fps", "12", "--width", "64", "--height", "48", "--steps", "3",
        "--seed", "42", "--out", out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "generate failed: {}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(ffprobe(&out), ("h264".to_string(), 6, 64, 48, "12/1".to_string()));
    assert!(!dir.join("fox.mp4.part").exists(), "the temporary file is gone");

    // The same seed gives the same video.
    let again = dir.join("again.mp4");
    let o = generate(&[
        "--model", model.to_str().unwrap(), "--prompt", "A red fox runs through the snow",
        "--frames", "6", "--fps", "12", "--width", "64", "--height", "48", "--steps", "3",
        "--seed", "42", "--out", again.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn image_to_video_writes_the_requested_mp4() {
    let dir = out_dir("i2v");
    let out = dir.join("boat.mp4");
    let model = shared().join("models/wan-tiny-i2v");
    let image = shared().join("fixtures/pipeline_i2v/image.png");
    let o = generate(&[
        "--model", model.to_str().unwrap(), "--prompt", "The boat drifts", "--image", image.to_str().unwrap(),
        "--frames", "5", "--fps", "8", "--width", "48", "--height", "64", "--steps", "2",
        "--seed", "-1", "--out", out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "generate failed: {}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("seed "), "the drawn seed is reported: {stdout}");
    assert_eq!(ffprobe(&out), ("h264".to_string(), 5, 48, 64, "8/1".to_string()));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = out_dir("bad");
    let model = shared().join("models/wan-tiny-t2v");
    let text_as_image = dir.join("not-an-image.png");
    std::fs::write(&text_as_image, "this is text, not a picture").unwrap();
    let out = dir.join("x.mp4");
    let o = generate(&[
        "--model", shared().join("models/wan-tiny-i2v").to_str().unwrap(), "--prompt", "x",
        "--image", text_as_image.to_str().unwrap(), "--frames", "5", "--width", "48", "--height", "64",
        "--steps", "2", "--out", out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not-an-image.png"), "names the file: {err}");
    assert!(!err.contains("panicked"), "{err}");

    let o = generate(&[
        "--model", model.to_str().unwrap(), "--prompt", "x", "--width", "50", "--height", "48",
        "--frames", "5", "--steps", "2", "--out", out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("width") && err.contains("50"), "{err}");
    assert!(!out.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
