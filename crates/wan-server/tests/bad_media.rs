//! Bad media on every upload route (issue 8): truncated and corrupt PNG/JPEG/MP4, an image whose
//! header claims 100000x100000 pixels, a video that claims a million frames, text named `.mp4`,
//! an empty file and uploads past the limit. Each is a 4xx with a clear JSON error, memory stays
//! bounded (nothing is decoded at the size it claims), and nothing is stored: no upload, no
//! temporary file, no job, no output.

mod common;

use std::path::Path;
use std::process::Command;

use base64::Engine;
use common::memory::RssSampler;
use common::{sample_png, start_loaded, TestServer};
use reqwest::multipart::{Form, Part};
use serde_json::Value;

#[path = "../../../tests/support/png.rs"]
mod png;

const MAX_IMAGE_BYTES: u64 = 256 * 1024;
const MAX_VIDEO_BYTES: u64 = 512 * 1024;
/// Bound on the process's resident-memory growth over all the bad uploads. A decoder that
/// believed the 100000x100000 header would need 28 GiB for RGB.
const MAX_RSS_GROWTH_MIB: f64 = 160.0;

fn jpeg() -> Vec<u8> {
    let img = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, 90]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

/// The JPEG with its frame header (SOF0) claiming 65535x65535, the most a JPEG can say.
fn jpeg_claiming_max() -> Vec<u8> {
    let mut j = jpeg();
    let sof = j.windows(2).position(|w| w == [0xff, 0xc0]).expect("SOF0");
    j[sof + 5..sof + 9].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
    j
}

/// A PNG with its image data scrambled (its chunk CRC no longer matches).
fn corrupt_png() -> Vec<u8> {
    let mut p = sample_png();
    let idat = p.windows(4).position(|w| w == b"IDAT").expect("IDAT") + 4;
    for b in &mut p[idat..idat + 40] {
        *b ^= 0x5a;
    }
    p
}

/// A 17-frame mp4 from the ffmpeg program; `faststart` puts the index (moov) first.
fn mp4(dir: &Path, faststart: bool) -> Vec<u8> {
    let p = dir.join(format!("clip-{faststart}.mp4"));
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=8", "-frames:v", "17", "-pix_fmt", "yuv420p", "-c:v", "mpeg4"]);
    if faststart {
        cmd.args(["-movflags", "+faststart"]);
    }
    assert!(cmd.arg(&p).status().expect("ffmpeg runs").success());
    std::fs::read(&p).unwrap()
}

/// The mp4 with its time-to-sample table claiming a million frames.
fn mp4_claiming_a_million_frames(dir: &Path) -> Vec<u8> {
    let mut m = mp4(dir, true);
    let stts = m.windows(4).position(|w| w == b"stts").expect("stts box");
    // stts: version/flags (4), entry count (4), then (sample count, sample delta) pairs.
    m[stts + 12..stts + 16].copy_from_slice(&1_000_000u32.to_be_bytes());
    m
}

async fn post_form(s: &TestServer, route: &str, field: &str, name: &str, bytes: Vec<u8>) -> (u16, Value) {
    let form = Form::new().part(field.to_string(), Part::bytes(bytes).file_name(name.to_string())).text("prompt", "bad media");
    let resp = s.client.post(s.url(route)).multipart(form).send().await.unwrap();
    let st = resp.status().as_u16();
    (st, resp.json().await.unwrap_or(Value::Null))
}

/// Files in `dir` (hidden temporaries included).
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir).map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default()
}

#[actix_web::test]
async fn bad_media_is_refused_on_every_upload_route_and_nothing_is_stored() {
    let s = start_loaded(|c| {
        c.max_image_bytes = MAX_IMAGE_BYTES;
        c.max_video_bytes = MAX_VIDEO_BYTES;
    })
    .await;
    let dir = s.tmp.path();
    let uploads = dir.join("data/uploads");
    let outputs = dir.join("data/outputs");
    let outputs_before = entries(&outputs);
    let png = sample_png();
    let jpg = jpeg();
    let faststart = mp4(dir, true);
    let plain = mp4(dir, false);
    let mut big_png = png.clone();
    big_png.resize(MAX_IMAGE_BYTES as usize + 1, 0);
    let mut big_mp4 = faststart.clone();
    big_mp4.resize(MAX_VIDEO_BYTES as usize + 1, 0);

    // (what, bytes, file name, status, code, words the message must hold)
    let images: Vec<(&str, Vec<u8>, &str, u16, &str, &str)> = vec![
        ("truncated PNG", png[..png.len() / 2].to_vec(), "a.png", 400, "invalid_media", "PNG"),
        ("corrupt PNG", corrupt_png(), "a.png", 400, "invalid_media", "PNG"),
        ("PNG claiming 100000x100000", png::png_claiming(100_000, 100_000), "huge.png", 400, "invalid_media", "100000"),
        ("truncated JPEG", jpg[..jpg.len() * 2 / 3].to_vec(), "a.jpg", 400, "invalid_media", "truncated"),
        ("JPEG claiming 65535x65535", jpeg_claiming_max(), "huge.jpg", 400, "invalid_media", "65535"),
        ("text named .png", b"just text pretending to be an image\n".repeat(10), "cat.png", 415, "unsupported_media_type", "image"),
        ("empty file", Vec::new(), "empty.png", 400, "invalid_form", "empty"),
        ("image past the limit", big_png, "big.png", 413, "payload_too_large", "262144"),
    ];
    let videos: Vec<(&str, Vec<u8>, &str, u16, &str, &str)> = vec![
        ("faststart MP4 cut at 60%", faststart[..faststart.len() * 6 / 10].to_vec(), "a.mp4", 400, "invalid_media", "truncated"),
        ("MP4 without its index (cut at 60%)", plain[..plain.len() * 6 / 10].to_vec(), "a.mp4", 400, "invalid_media", "video"),
        ("MP4 claiming a million frames", mp4_claiming_a_million_frames(dir), "long.mp4", 400, "invalid_media", "1000000"),
        ("text named .mp4", b"this is a plain text file, not a video\n".repeat(20), "notes.mp4", 415, "unsupported_media_type", "video"),
        ("video past the limit", big_mp4, "big.mp4", 413, "payload_too_large", "524288"),
    ];

    let memory = RssSampler::start(None);
    let mut checked = 0;
    let routes = [
        ("/api/v1/generate/image-to-video", "image", &images),
        ("/api/v1/storage/upload", "file", &images),
        ("/api/v1/generate/video-to-video", "video", &videos),
        ("/api/v1/storage/upload", "file", &videos),
    ];
    for (route, field, cases) in routes {
        for (what, bytes, name, status, code, words) in cases.iter() {
            let (st, v) = post_form(&s, route, field, name, bytes.clone()).await;
            assert_eq!((st, v["code"].as_str()), (*status, Some(*code)), "{what} on {route}: {v}");
            let msg = v["error"].as_str().unwrap_or_default();
            assert!(msg.to_lowercase().contains(&words.to_lowercase()), "{what} on {route}: the error should say {words:?}: {msg}");
            assert!(!msg.contains(dir.to_str().unwrap()), "{what}: the error shows a server path: {msg}");
            assert!(entries(&uploads).is_empty(), "{what} on {route} left {:?}", entries(&uploads));
            checked += 1;
        }
    }
    // Base64 images in JSON go through the same checks.
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    for (what, bytes, _, status, code, words) in images.iter().filter(|c| !c.1.is_empty()) {
        let body = serde_json::json!({"image_start": format!("data:image/png;base64,{}", b64(bytes)), "prompt": "x"});
        let resp = s.client.post(s.url("/api/v1/generate/image-to-video")).json(&body).send().await.unwrap();
        let st = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap();
        assert_eq!((st, v["code"].as_str()), (*status, Some(*code)), "{what} as image_start: {v}");
        assert!(v["error"].as_str().unwrap().to_lowercase().contains(&words.to_lowercase()), "{what} as image_start: {v}");
        assert!(entries(&uploads).is_empty(), "{what} as image_start left {:?}", entries(&uploads));
        checked += 1;
    }
    let rss = memory.finish();
    assert!(rss.growth_mib() < MAX_RSS_GROWTH_MIB, "RSS grew {:.1} MiB over the bad uploads", rss.growth_mib());

    let jobs: Value = s.client.get(s.url("/api/v1/jobs")).send().await.unwrap().json().await.unwrap();
    assert_eq!(jobs["total"], 0, "no job for bad media: {jobs}");
    assert_eq!(entries(&outputs), outputs_before, "outputs/ unchanged");

    // Controls: the same routes take the good files.
    let (st, v) = post_form(&s, "/api/v1/storage/upload", "file", "ok.png", png.clone()).await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = post_form(&s, "/api/v1/storage/upload", "file", "ok.jpg", jpg).await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = post_form(&s, "/api/v1/storage/upload", "file", "ok.mp4", faststart).await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(entries(&uploads).len(), 3, "{:?}", entries(&uploads));
    let (st, v) = post_form(&s, "/api/v1/generate/video-to-video", "video", "ok.mp4", plain).await;
    assert_eq!(st, 202, "{v}");
    eprintln!(
        "bad media: {checked} refused uploads, RSS {:.1} -> {:.1} MiB (growth {:.1} MiB, bound {MAX_RSS_GROWTH_MIB})",
        rss.baseline_mib,
        rss.peak_mib,
        rss.growth_mib()
    );
    s.stop().await;
}
