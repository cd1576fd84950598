//! Media I/O: the mp4 writer checked by ffprobe, decoding back, images, resizing, and bad media.
//!
//! Every input is generated here (with the `image` crate, our own writer or the `ffmpeg` CLI).
//! The video tests need the `media-ffmpeg` feature (on by default); the image ones run without it.

#[cfg(feature = "media-ffmpeg")]
use std::path::{Path, PathBuf};
#[cfg(feature = "media-ffmpeg")]
use std::process::Command;

use candle_core::{Device, Tensor};
use image::{ImageEncoder, Rgb, RgbImage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wan_pipeline::media::{
    probe_file, probe_image_bytes, read_image, read_image_bytes, read_image_resized, resize_rgb,
    sniff, tensor_to_frames, MediaInfo, MediaKind, MediaLimits, ResizeMode,
};
#[cfg(feature = "media-ffmpeg")]
use wan_pipeline::media::{first_frame_jpeg, read_video, write_mp4, Mp4Writer};
use wan_pipeline::Error;

#[path = "../../../tests/support/png.rs"]
mod png;

// ---------------------------------------------------------------------------------------------
// helpers

/// A frame whose colours vary smoothly with x, y and the frame index (easy for H.264, and each
/// frame differs from the others).
fn gradient_frame(w: u32, h: u32, index: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            ((x * 255) / w.max(1)) as u8,
            ((y * 255) / h.max(1)) as u8,
            ((index * 37) % 200 + 20) as u8,
        ])
    })
}

#[cfg(feature = "media-ffmpeg")]
fn gradient_frames(w: u32, h: u32, n: u32) -> Vec<RgbImage> {
    (0..n).map(|i| gradient_frame(w, h, i)).collect()
}

#[cfg(feature = "media-ffmpeg")]
#[derive(Debug)]
struct Probed {
    codec: String,
    pix_fmt: String,
    width: u64,
    height: u64,
    frames: u64,
    avg_frame_rate: String,
}

/// What ffprobe, decoding every frame (`-count_frames`), says about the first video stream.
#[cfg(feature = "media-ffmpeg")]
fn ffprobe(path: &Path) -> Probed {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries"])
        .arg("stream=codec_name,pix_fmt,width,height,nb_read_frames,avg_frame_rate")
        .args(["-of", "json"])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(out.status.success(), "ffprobe failed: {}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &json["streams"][0];
    Probed {
        codec: s["codec_name"].as_str().unwrap().to_string(),
        pix_fmt: s["pix_fmt"].as_str().unwrap().to_string(),
        width: s["width"].as_u64().unwrap(),
        height: s["height"].as_u64().unwrap(),
        frames: s["nb_read_frames"].as_str().unwrap().parse().unwrap(),
        avg_frame_rate: s["avg_frame_rate"].as_str().unwrap().to_string(),
    }
}

/// Top-level ISO-BMFF box names in file order.
#[cfg(feature = "media-ffmpeg")]
fn top_level_boxes(bytes: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut pos = 0usize;
    while pos + 8 <= bytes.len() {
        let size = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        names.push(String::from_utf8_lossy(&bytes[pos + 4..pos + 8]).to_string());
        if size < 8 {
            break;
        }
        pos += size;
    }
    names
}

fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let sum: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| (*x as i64 - *y as i64).unsigned_abs())
        .sum();
    sum as f64 / a.as_raw().len() as f64
}

fn media_message(err: Error) -> String {
    match err {
        Error::Media(m) => m,
        other => panic!("expected Error::Media, got {other:?}"),
    }
}

fn png_bytes(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

fn jpeg_bytes(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95).encode_image(img).unwrap();
    out
}

/// Runs the `ffmpeg` CLI on a synthetic test pattern to make inputs in other containers/codecs.
#[cfg(feature = "media-ffmpeg")]
fn ffmpeg_testsrc(out: &Path, frames: u32, codec_args: &[&str]) {
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10"])
        .args(["-frames:v", &frames.to_string()])
        .args(codec_args)
        .arg(out)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg could not write {}", out.display());
}

#[cfg(feature = "media-ffmpeg")]
fn write_test_mp4(dir: &Path, name: &str, w: u32, h: u32, n: u32, fps: u32) -> PathBuf {
    let path = dir.join(name);
    write_mp4(&path, &gradient_frames(w, h, n), fps).unwrap();
    path
}

// ---------------------------------------------------------------------------------------------
// mp4 out and back in

#[test]
#[cfg(feature = "media-ffmpeg")]
fn mp4_round_trip_has_exact_frames_size_fps_and_faststart() {
    let dir = tempfile::tempdir().unwrap();
    for (n, fps, w, h) in [(1u32, 16u32, 32u32, 32u32), (17, 8, 64, 48), (33, 24, 48, 64)] {
        let path = dir.path().join(format!("rt_{n}_{fps}.mp4"));
        let frames = gradient_frames(w, h, n);
        // Stream through the writer one frame at a time, as the VAE does.
        let mut writer = Mp4Writer::create(&path, w, h, fps).unwrap();
        for f in &frames {
            writer.push_frame(f).unwrap();
        }
        assert_eq!(writer.frames_written(), n as u64);
        writer.finish().unwrap();

        let p = ffprobe(&path);
        assert_eq!(p.codec, "h264", "{p:?}");
        assert_eq!(p.pix_fmt, "yuv420p", "{p:?}");
        assert_eq!((p.width, p.height), (w as u64, h as u64), "{p:?}");
        assert_eq!(p.frames, n as u64, "frame count for n={n} fps={fps}: {p:?}");
        assert_eq!(p.avg_frame_rate, format!("{fps}/1"), "{p:?}");

        // +faststart: the index (moov) precedes the media data (mdat).
        let boxes = top_level_boxes(&std::fs::read(&path).unwrap());
        let moov = boxes.iter().position(|b| b == "moov").expect("moov box");
        let mdat = boxes.iter().position(|b| b == "mdat").expect("mdat box");
        assert!(moov < mdat, "not faststart: {boxes:?}");

        // Our own probe agrees, and the frames decode back close to what was written.
        match probe_file(&path, &MediaLimits::default()).unwrap() {
            MediaInfo::Video(v) => {
                assert_eq!(v.kind, MediaKind::Mp4);
                assert_eq!((v.width, v.height, v.frames), (w, h, n as u64));
                assert_eq!(v.codec, "h264");
                assert!((v.fps - fps as f64).abs() < 1e-6, "fps {}", v.fps);
            }
            other => panic!("expected a video, got {other:?}"),
        }
        let back = read_video(&path, w, h, 1000, ResizeMode::Stretch, &MediaLimits::default())
            .unwrap();
        assert_eq!(back.frames.len(), n as usize);
        for (orig, dec) in frames.iter().zip(&back.frames) {
            let err = mean_abs_diff(orig, dec);
            assert!(err < 4.0, "decoded frame differs by {err} on average");
        }
    }
}

#[test]
#[cfg(feature = "media-ffmpeg")]
fn read_video_stops_at_max_frames_and_resizes() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_test_mp4(dir.path(), "long.mp4", 64, 48, 20, 10);
    let got = read_video(&path, 32, 16, 5, ResizeMode::Cover, &MediaLimits::default()).unwrap();
    assert_eq!(got.frames.len(), 5);
    assert!(got.frames.iter().all(|f| f.dimensions() == (32, 16)));
    assert_eq!(got.info.frames, 20);
}

#[test]
fn writer_streams_tensors_and_truncates_like_diffusers() {
    let (f, h, w) = (3usize, 8usize, 10usize);
    let values: Vec<f32> =
        (0..f * h * w * 3).map(|i| (i % 300) as f32 / 250.0 - 0.1).collect();
    let t = Tensor::from_vec(values.clone(), (f, h, w, 3), &Device::Cpu).unwrap();

    let frames = tensor_to_frames(&t).unwrap();
    assert_eq!(frames.len(), f);
    let flat: Vec<u8> = frames.iter().flat_map(|fr| fr.as_raw().clone()).collect();
    for (v, b) in values.iter().zip(&flat) {
        // numpy's (clip(v, 0, 1) * 255).astype(uint8) truncates toward zero.
        assert_eq!(*b, (v.clamp(0.0, 1.0) * 255.0) as u8, "value {v}");
    }

    #[cfg(feature = "media-ffmpeg")]
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tensor.mp4");
        let mut writer = Mp4Writer::create(&path, w as u32, h as u32, 12).unwrap();
        writer.push_tensor(&t.narrow(0, 0, 2).unwrap()).unwrap();
        writer.push_tensor(&t.narrow(0, 2, 1).unwrap()).unwrap();
        writer.finish().unwrap();
        assert_eq!(ffprobe(&path).frames, f as u64);
    }

    let bad = Tensor::zeros((2, 4, 4, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(tensor_to_frames(&bad), Err(Error::InvalidInput(_))));
}

#[test]
#[cfg(feature = "media-ffmpeg")]
fn writer_refuses_odd_sizes_wrong_frames_and_empty_videos() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odd.mp4");
    assert!(matches!(Mp4Writer::create(&path, 63, 48, 16), Err(Error::InvalidInput(_))));
    assert!(matches!(Mp4Writer::create(&path, 64, 47, 16), Err(Error::InvalidInput(_))));
    assert!(matches!(Mp4Writer::create(&path, 64, 48, 0), Err(Error::InvalidInput(_))));

    let mut writer = Mp4Writer::create(&path, 64, 48, 16).unwrap();
    let wrong = gradient_frame(32, 48, 0);
    assert!(matches!(writer.push_frame(&wrong), Err(Error::InvalidInput(_))));
    assert!(matches!(writer.finish(), Err(Error::InvalidInput(_))));
}

#[test]
#[cfg(feature = "media-ffmpeg")]
fn first_frame_preview_is_a_scaled_jpeg_of_frame_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("preview.mp4");
    let red = RgbImage::from_pixel(64, 48, Rgb([220, 20, 20]));
    let blue = RgbImage::from_pixel(64, 48, Rgb([20, 20, 220]));
    write_mp4(&path, &[red, blue.clone(), blue], 8).unwrap();

    let jpeg = first_frame_jpeg(&path, 32).unwrap();
    assert_eq!(sniff(&jpeg), Some(MediaKind::Jpeg));
    let img = image::load_from_memory(&jpeg).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (32, 24));
    let Rgb([r, g, b]) = *img.get_pixel(16, 12);
    assert!(r > 180 && g < 60 && b < 60, "first frame is red, got {r},{g},{b}");

    assert!(matches!(first_frame_jpeg(&path, 0), Err(Error::InvalidInput(_))));
}

#[test]
#[cfg(feature = "media-ffmpeg")]
fn decodes_other_containers_and_codecs() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[&str], MediaKind, &str); 4] = [
        ("vp9.webm", &["-c:v", "libvpx-vp9", "-b:v", "200k"], MediaKind::WebM, "vp9"),
        ("mpeg4.avi", &["-c:v", "mpeg4"], MediaKind::Avi, "mpeg4"),
        ("vp8.mkv", &["-c:v", "libvpx"], MediaKind::Mkv, "vp8"),
        ("anim.gif", &[], MediaKind::Gif, "gif"),
    ];
    for (name, args, kind, codec) in cases {
        let path = dir.path().join(name);
        ffmpeg_testsrc(&path, 12, args);
        match probe_file(&path, &MediaLimits::default()).unwrap() {
            MediaInfo::Video(v) => {
                assert_eq!(v.kind, kind, "{name}");
                assert_eq!(v.codec, codec, "{name}");
                assert_eq!((v.width, v.height), (64, 48), "{name}");
            }
            other => panic!("{name}: expected a video, got {other:?}"),
        }
        let got = read_video(&path, 32, 32, 100, ResizeMode::Stretch, &MediaLimits::default())
            .unwrap();
        assert_eq!(got.frames.len(), 12, "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// images and resizing

#[test]
fn images_read_back_exactly_in_png_and_webp_and_closely_in_jpeg() {
    let img = gradient_frame(40, 30, 3);
    let dir = tempfile::tempdir().unwrap();

    let png = png_bytes(&img);
    assert_eq!(sniff(&png), Some(MediaKind::Png));
    assert_eq!(read_image_bytes(&png, &MediaLimits::default()).unwrap(), img);
    let png_path = dir.path().join("in.png");
    std::fs::write(&png_path, &png).unwrap();
    assert_eq!(read_image(&png_path, &MediaLimits::default()).unwrap(), img);
    match probe_file(&png_path, &MediaLimits::default()).unwrap() {
        MediaInfo::Image(i) => assert_eq!((i.kind, i.width, i.height), (MediaKind::Png, 40, 30)),
        other => panic!("expected an image, got {other:?}"),
    }

    let mut webp = Vec::new();
    image::codecs::webp::WebPEncoder::new_lossless(&mut webp)
        .write_image(img.as_raw(), 40, 30, image::ExtendedColorType::Rgb8)
        .unwrap();
    assert_eq!(sniff(&webp), Some(MediaKind::WebP));
    assert_eq!(read_image_bytes(&webp, &MediaLimits::default()).unwrap(), img);

    let jpeg = jpeg_bytes(&img);
    assert_eq!(sniff(&jpeg), Some(MediaKind::Jpeg));
    let back = read_image_bytes(&jpeg, &MediaLimits::default()).unwrap();
    assert!(mean_abs_diff(&img, &back) < 3.0);

    let resized =
        read_image_resized(&png_path, 16, 24, ResizeMode::Stretch, &MediaLimits::default())
            .unwrap();
    assert_eq!(resized.dimensions(), (16, 24));
}

#[test]
fn stretch_keeps_everything_and_cover_crops_the_centre() {
    // Three vertical bands: red | green | blue, 50 + 100 + 50 pixels wide.
    let src = RgbImage::from_fn(200, 100, |x, _| match x {
        0..=49 => Rgb([255, 0, 0]),
        50..=149 => Rgb([0, 255, 0]),
        _ => Rgb([0, 0, 255]),
    });
    let cover = resize_rgb(&src, 100, 100, ResizeMode::Cover).unwrap();
    assert_eq!(cover.dimensions(), (100, 100));
    assert!(cover.pixels().all(|p| p.0 == [0, 255, 0]), "cover keeps only the centre band");

    let stretch = resize_rgb(&src, 100, 100, ResizeMode::Stretch).unwrap();
    assert_eq!(stretch.dimensions(), (100, 100));
    assert_eq!(stretch.get_pixel(2, 50).0, [255, 0, 0]);
    assert_eq!(stretch.get_pixel(50, 50).0, [0, 255, 0]);
    assert_eq!(stretch.get_pixel(97, 50).0, [0, 0, 255]);

    // Same size: an unchanged copy, as Pillow returns.
    assert_eq!(resize_rgb(&src, 200, 100, ResizeMode::Stretch).unwrap(), src);
    assert!(matches!(resize_rgb(&src, 0, 10, ResizeMode::Stretch), Err(Error::InvalidInput(_))));
}

// ---------------------------------------------------------------------------------------------
// bad media

#[test]
fn truncated_images_are_media_errors() {
    let img = gradient_frame(64, 64, 1);
    for (name, bytes) in [("png", png_bytes(&img)), ("jpeg", jpeg_bytes(&img))] {
        for keep in [bytes.len() / 2, 40, 8] {
            let err = read_image_bytes(&bytes[..keep], &MediaLimits::default())
                .expect_err(&format!("{name} cut to {keep} bytes must fail"));
            assert!(!media_message(err).is_empty());
        }
    }
}

#[test]
fn huge_image_headers_are_refused_before_decoding() {
    let png = png::png_claiming(100_000, 100_000);
    let limits = MediaLimits::default();
    let msg = media_message(probe_image_bytes(&png, &limits).unwrap_err());
    assert!(msg.contains("100000"), "{msg}");
    let msg = media_message(read_image_bytes(&png, &limits).unwrap_err());
    assert!(msg.contains("100000"), "{msg}");

    // A JPEG whose SOF0 header is patched to claim 60000 x 60000.
    let mut jpeg = jpeg_bytes(&gradient_frame(16, 16, 0));
    let sof = jpeg.windows(2).position(|w| w == [0xff, 0xc0]).expect("SOF0 marker");
    jpeg[sof + 5..sof + 7].copy_from_slice(&60000u16.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&60000u16.to_be_bytes());
    let msg = media_message(read_image_bytes(&jpeg, &limits).unwrap_err());
    assert!(msg.contains("60000"), "{msg}");

    // Within the default limits but over a tighter area limit.
    let tight = MediaLimits { max_pixels: 1000, ..MediaLimits::default() };
    let msg = media_message(read_image_bytes(&png_bytes(&gradient_frame(40, 30, 0)), &tight).unwrap_err());
    assert!(msg.contains("1200") && msg.contains("1000"), "{msg}");
}

#[test]
#[cfg(feature = "media-ffmpeg")]
fn truncated_and_fake_videos_are_media_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_test_mp4(dir.path(), "good.mp4", 64, 48, 24, 8);
    let bytes = std::fs::read(&good).unwrap();
    let limits = MediaLimits::default();

    for keep in [bytes.len() * 6 / 10, bytes.len() / 4, 600, 16] {
        let cut = dir.path().join(format!("cut_{keep}.mp4"));
        std::fs::write(&cut, &bytes[..keep]).unwrap();
        let err = read_video(&cut, 64, 48, 1000, ResizeMode::Stretch, &limits)
            .expect_err(&format!("mp4 cut to {keep} of {} bytes must fail", bytes.len()));
        assert!(!media_message(err).is_empty());
    }

    let text = dir.path().join("notes.mp4");
    std::fs::write(&text, "this is a plain text file, not a video\n".repeat(20)).unwrap();
    let msg = media_message(probe_file(&text, &limits).unwrap_err());
    assert!(msg.contains("not a recognised"), "{msg}");
    let msg = media_message(
        read_video(&text, 64, 48, 10, ResizeMode::Stretch, &limits).unwrap_err(),
    );
    assert!(msg.contains("not a recognised"), "{msg}");

    let empty = dir.path().join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(probe_file(&empty, &limits), Err(Error::Media(_))));

    // An image handed to the video reader, and a video to the image reader.
    let png = dir.path().join("still.png");
    std::fs::write(&png, png_bytes(&gradient_frame(8, 8, 0))).unwrap();
    assert!(matches!(
        read_video(&png, 8, 8, 1, ResizeMode::Stretch, &limits),
        Err(Error::Media(_))
    ));
    assert!(matches!(read_image(&good, &limits), Err(Error::Media(_))));

    let missing = dir.path().join("missing.mp4");
    assert!(matches!(probe_file(&missing, &limits), Err(Error::Io { .. })));
}

/// Patches an AVI's main header (`avih` dwTotalFrames) and stream header (`strh` dwLength).
#[cfg(feature = "media-ffmpeg")]
fn avi_claiming_frames(bytes: &mut [u8], frames: u32) {
    let avih = bytes.windows(4).position(|w| w == b"avih").expect("avih chunk");
    bytes[avih + 8 + 16..avih + 8 + 20].copy_from_slice(&frames.to_le_bytes());
    let strh = bytes.windows(4).position(|w| w == b"strh").expect("strh chunk");
    bytes[strh + 8 + 32..strh + 8 + 36].copy_from_slice(&frames.to_le_bytes());
}

#[test]
#[cfg(feature = "media-ffmpeg")]
fn video_limits_are_checked_from_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_test_mp4(dir.path(), "limits.mp4", 64, 48, 17, 8);
    let size = std::fs::metadata(&path).unwrap().len();
    let run = |limits: MediaLimits| {
        media_message(read_video(&path, 64, 48, 100, ResizeMode::Stretch, &limits).unwrap_err())
    };
    let base = MediaLimits::default();

    let msg = run(MediaLimits { max_bytes: size - 1, ..base });
    assert!(msg.contains("file size") && msg.contains(&size.to_string()), "{msg}");
    let msg = run(MediaLimits { max_frames: 5, ..base });
    assert!(msg.contains("frame count 17"), "{msg}");
    let msg = run(MediaLimits { max_duration_s: 1.0, ..base });
    assert!(msg.contains("duration"), "{msg}");
    let msg = run(MediaLimits { max_width: 32, ..base });
    assert!(msg.contains("width 64"), "{msg}");
    let msg = run(MediaLimits { max_height: 32, ..base });
    assert!(msg.contains("height 48"), "{msg}");

    // A video whose header claims a million frames is refused by the probe.
    let avi = dir.path().join("million.avi");
    ffmpeg_testsrc(&avi, 5, &["-c:v", "mpeg4"]);
    let mut bytes = std::fs::read(&avi).unwrap();
    avi_claiming_frames(&mut bytes, 1_000_000);
    std::fs::write(&avi, &bytes).unwrap();
    let msg = media_message(probe_file(&avi, &base).unwrap_err());
    assert!(msg.contains("1000000"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// fuzz-ish: random and mutated bytes never panic

fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    match rng.random_range(0..4) {
        0 => {
            for _ in 0..rng.random_range(1..16) {
                let i = rng.random_range(0..bytes.len());
                bytes[i] = rng.random();
            }
        }
        1 => bytes.truncate(rng.random_range(0..bytes.len())),
        2 => {
            let i = rng.random_range(0..bytes.len());
            let n = rng.random_range(1..64);
            bytes.splice(i..i, (0..n).map(|_| rng.random::<u8>()));
        }
        _ => {
            // Overwrite a 4-byte field with an extreme value (sizes, counts, dimensions).
            if bytes.len() > 4 {
                let i = rng.random_range(0..bytes.len() - 4);
                let v: u32 = [0, 1, 0x7fff_ffff, 0xffff_ffff, 100_000][rng.random_range(0..5)];
                bytes[i..i + 4].copy_from_slice(&v.to_be_bytes());
            }
        }
    }
    bytes
}

/// An error from a panic caught inside FFmpeg calls would hide a bug: none may occur.
#[cfg(feature = "media-ffmpeg")]
fn assert_not_a_caught_panic<T>(result: wan_pipeline::Result<T>) {
    if let Err(Error::Media(m)) = &result {
        assert!(!m.contains("FFmpeg failed ("), "a panic was caught: {m}");
    }
}

#[test]
fn probes_survive_random_and_mutated_bytes() {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let limits = MediaLimits { max_pixels: 1 << 20, ..MediaLimits::default() };
    let img = gradient_frame(24, 16, 2);
    let seeds = [png_bytes(&img), jpeg_bytes(&img), png::png_claiming(70_000, 3)];
    for i in 0..600 {
        let bytes = if i % 5 == 0 {
            (0..rng.random_range(0..512)).map(|_| rng.random()).collect()
        } else {
            mutate(&mut rng, &seeds[i % seeds.len()])
        };
        let _ = sniff(&bytes);
        let _ = probe_image_bytes(&bytes, &limits);
        let _ = read_image_bytes(&bytes, &limits);
    }

    #[cfg(feature = "media-ffmpeg")]
    {
        let dir = tempfile::tempdir().unwrap();
        let mp4 = std::fs::read(write_test_mp4(dir.path(), "seed.mp4", 32, 32, 6, 8)).unwrap();
        let avi_path = dir.path().join("seed.avi");
        ffmpeg_testsrc(&avi_path, 4, &["-c:v", "mpeg4", "-s", "32x32"]);
        let avi = std::fs::read(&avi_path).unwrap();
        let path = dir.path().join("fuzz.bin");
        for i in 0..80 {
            let bytes = mutate(&mut rng, if i % 2 == 0 { &mp4 } else { &avi });
            std::fs::write(&path, &bytes).unwrap();
            assert_not_a_caught_panic(probe_file(&path, &limits));
            assert_not_a_caught_panic(read_video(&path, 16, 16, 8, ResizeMode::Stretch, &limits));
        }
    }
}

#[test]
#[cfg(feature = "media-ffmpeg")]
fn writer_can_move_to_a_worker_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<Mp4Writer>();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("thread.mp4");
    let mut writer = Mp4Writer::create(&path, 32, 32, 8).unwrap();
    writer.push_frame(&gradient_frame(32, 32, 0)).unwrap();
    let handle = std::thread::spawn(move || {
        writer.push_frame(&gradient_frame(32, 32, 1)).unwrap();
        writer.finish().unwrap();
    });
    handle.join().unwrap();
    assert_eq!(ffprobe(&path).frames, 2);
}
