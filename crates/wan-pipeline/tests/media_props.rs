//! Property-based tests of the media probes and readers (issue 8's fuzz target, as a bounded
//! proptest run in the normal test suite; fixed seeds, so a failure reproduces):
//! - mutated PNG/JPEG/WebP/MP4/AVI bytes never panic (nor panic inside FFmpeg, caught), and
//!   whatever is accepted is within the limits;
//! - every proper prefix of a whole PNG, JPEG or MP4 is refused (a truncated upload never passes);
//! - a PNG header is accepted exactly when the size it claims is within the limits.
//!
//! The video properties need the `media-ffmpeg` feature (on by default).

use std::io::Cursor;
#[cfg(feature = "media-ffmpeg")]
use std::path::Path;
#[cfg(feature = "media-ffmpeg")]
use std::process::Command;

use image::{ImageFormat, RgbImage};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use wan_pipeline::media::{probe_image_bytes, read_image_bytes, sniff, MediaLimits};
#[cfg(feature = "media-ffmpeg")]
use wan_pipeline::media::{probe_file, read_video, MediaInfo, ResizeMode};
#[cfg(feature = "media-ffmpeg")]
use wan_pipeline::Error;

#[path = "../../../tests/support/png.rs"]
mod png;

fn runner(cases: u32, seed: u64) -> TestRunner {
    TestRunner::new(Config { cases, rng_seed: RngSeed::Fixed(seed), failure_persistence: None, max_shrink_iters: 128, ..Config::default() })
}

fn run<S: Strategy>(mut runner: TestRunner, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}

fn encoded(format: ImageFormat, w: u32, h: u32) -> Vec<u8> {
    let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 11) as u8, ((x + y) * 3) as u8]));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// A video from the ffmpeg program's test pattern (`+faststart` for mp4s: the index first).
#[cfg(feature = "media-ffmpeg")]
fn ffmpeg_video(dir: &Path, name: &str, frames: u32) -> Vec<u8> {
    let path = dir.join(name);
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=32x32:rate=8", "-frames:v"])
        .arg(frames.to_string())
        .args(["-pix_fmt", "yuv420p", "-c:v", "mpeg4"]);
    if name.ends_with(".mp4") {
        cmd.args(["-movflags", "+faststart"]);
    }
    assert!(cmd.arg(&path).status().expect("the ffmpeg program runs").success());
    std::fs::read(&path).unwrap()
}

/// One edit of a file's bytes.
#[derive(Debug, Clone)]
enum Edit {
    /// Bytes overwritten at random places.
    Overwrite(Vec<(prop::sample::Index, u8)>),
    /// The file cut short.
    Cut(prop::sample::Index),
    /// Random bytes inserted.
    Insert(prop::sample::Index, Vec<u8>),
    /// A 4-byte field (a size, count or dimension) set to an extreme value.
    Field(prop::sample::Index, u32),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16).prop_map(Edit::Overwrite),
        any::<prop::sample::Index>().prop_map(Edit::Cut),
        (any::<prop::sample::Index>(), prop::collection::vec(any::<u8>(), 1..64)).prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<prop::sample::Index>(), prop::sample::select(&[0u32, 1, 0x7fff_ffff, 0xffff_ffff, 100_000, 1_000_000][..])).prop_map(|(i, v)| Edit::Field(i, v)),
    ]
}

/// `seed` with one to three edits applied.
fn mutated(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(edit(), 1..4).prop_map(move |edits| {
        let mut bytes = seed.clone();
        for e in edits {
            match e {
                Edit::Overwrite(at) if !bytes.is_empty() => {
                    for (i, b) in at {
                        let k = i.index(bytes.len());
                        bytes[k] = b;
                    }
                }
                Edit::Overwrite(_) => {}
                Edit::Cut(i) => bytes.truncate(i.index(bytes.len() + 1)),
                Edit::Insert(i, b) => {
                    let k = i.index(bytes.len() + 1);
                    bytes.splice(k..k, b);
                }
                Edit::Field(i, v) if bytes.len() > 4 => {
                    let k = i.index(bytes.len() - 4);
                    bytes[k..k + 4].copy_from_slice(&v.to_be_bytes());
                }
                Edit::Field(..) => {}
            }
        }
        bytes
    })
}

/// A panic caught inside an FFmpeg call (reported as "FFmpeg failed (...)") would hide a bug.
#[cfg(feature = "media-ffmpeg")]
fn no_caught_panic<T>(result: &wan_pipeline::Result<T>) -> Result<(), TestCaseError> {
    if let Err(Error::Media(m)) = result {
        prop_assert!(!m.contains("FFmpeg failed ("), "a panic was caught: {m}");
    }
    Ok(())
}

fn limits() -> MediaLimits {
    MediaLimits { max_pixels: 1 << 20, max_width: 4096, max_height: 4096, ..MediaLimits::default() }
}

#[test]
fn mutated_images_never_panic_and_what_passes_is_within_the_limits() {
    let seeds = vec![
        encoded(ImageFormat::Png, 24, 16),
        encoded(ImageFormat::Jpeg, 24, 16),
        encoded(ImageFormat::WebP, 24, 16),
        png::png_claiming(70_000, 3),
    ];
    let strategy = prop::sample::select(seeds).prop_flat_map(mutated);
    run(runner(768, 0x1ea7_0001), strategy, |bytes| {
        let limits = limits();
        let _ = sniff(&bytes);
        let probed = probe_image_bytes(&bytes, &limits);
        if let Ok(info) = &probed {
            prop_assert!(info.width <= limits.max_width && info.height <= limits.max_height);
            prop_assert!(u64::from(info.width) * u64::from(info.height) <= limits.max_pixels);
        }
        if let Ok(img) = read_image_bytes(&bytes, &limits) {
            let info = probed.map_err(|e| TestCaseError::fail(format!("decoded but the probe refused: {e}")))?;
            prop_assert_eq!((img.width(), img.height()), (info.width, info.height));
        }
        Ok(())
    });
}

#[test]
fn every_proper_prefix_of_a_png_or_jpeg_is_refused() {
    let png = encoded(ImageFormat::Png, 40, 30);
    let jpeg = encoded(ImageFormat::Jpeg, 40, 30);
    // A PNG ends with its 12-byte IEND chunk, which carries no data: a cut inside it loses nothing.
    let png_data_end = png.len() - 12;
    let strategy = prop_oneof![(0..png_data_end).prop_map(|n| (true, n)), (0..jpeg.len()).prop_map(|n| (false, n))];
    run(runner(384, 0x1ea7_0002), strategy, |(is_png, keep)| {
        let bytes = if is_png { &png[..keep] } else { &jpeg[..keep] };
        prop_assert!(read_image_bytes(bytes, &limits()).is_err(), "{} cut to {keep} bytes was accepted", if is_png { "PNG" } else { "JPEG" });
        Ok(())
    });
}

#[test]
fn a_png_header_is_accepted_exactly_within_the_limits() {
    let limits = limits();
    let side = prop_oneof![0u32..5000, Just(u32::MAX), Just(100_000u32), Just(0x8000_0000u32)];
    run(runner(512, 0x1ea7_0003), (side.clone(), side), |(w, h)| {
        let within = w > 0 && h > 0 && w <= limits.max_width && h <= limits.max_height && u64::from(w) * u64::from(h) <= limits.max_pixels;
        match probe_image_bytes(&png::png_claiming(w, h), &limits) {
            Ok(info) => prop_assert!(within && (info.width, info.height) == (w, h), "{w}x{h} accepted as {info:?}"),
            // The PNG format itself caps sides at 2^31-1; anything else must be our limit.
            Err(e) => prop_assert!(!within, "{w}x{h} refused: {e}"),
        }
        Ok(())
    });
}

#[test]
#[cfg(feature = "media-ffmpeg")]
fn mutated_and_cut_videos_never_panic_and_every_cut_mp4_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mp4 = ffmpeg_video(dir.path(), "seed.mp4", 6);
    let avi = ffmpeg_video(dir.path(), "seed.avi", 4);
    let path = dir.path().join("case.bin");
    let mp4_len = mp4.len();

    // Any proper prefix of a whole mp4 is refused by the probe and by the reader.
    let cut = dir.path().join("cut.mp4");
    run(runner(96, 0x1ea7_0004), 0..mp4_len, |keep| {
        std::fs::write(&cut, &mp4[..keep]).unwrap();
        prop_assert!(probe_file(&cut, &limits()).is_err(), "mp4 cut to {keep} of {mp4_len} bytes passed the probe");
        let read = read_video(&cut, 16, 16, 8, ResizeMode::Stretch, &limits());
        no_caught_panic(&read)?;
        prop_assert!(read.is_err(), "mp4 cut to {keep} bytes was read");
        Ok(())
    });

    let strategy = prop::sample::select(vec![mp4, avi]).prop_flat_map(mutated);
    run(runner(128, 0x1ea7_0005), strategy, |bytes| {
        std::fs::write(&path, &bytes).unwrap();
        let probed = probe_file(&path, &limits());
        no_caught_panic(&probed)?;
        if let Ok(MediaInfo::Video(info)) = &probed {
            prop_assert!(info.frames <= limits().max_frames && info.width <= limits().max_width);
        }
        let read = read_video(&path, 16, 16, 8, ResizeMode::Stretch, &limits());
        no_caught_panic(&read)?;
        if let Ok(v) = read {
            prop_assert!(!v.frames.is_empty() && v.frames.len() <= 8);
            prop_assert!(v.frames.iter().all(|f| f.dimensions() == (16, 16)));
        }
        Ok(())
    });
}
