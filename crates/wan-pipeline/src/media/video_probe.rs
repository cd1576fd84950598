//! Header facts of a video container, read by FFmpeg without decoding a frame.

use std::path::Path;

use ffmpeg_next as ffmpeg;

use super::ffmpeg_guard::{av_error, guarded};
use super::limits::MediaLimits;
use super::probe::{MediaKind, VideoInfo};
use crate::{Error, Result};

/// Opens the container and reads the best video stream's parameters; no frame is decoded.
pub(crate) fn probe_video(path: &Path, kind: MediaKind, limits: &MediaLimits) -> Result<VideoInfo> {
    check_container(path, kind)?;
    guarded("probing video", || {
        let input = ffmpeg::format::input(path).map_err(|e| av_error("cannot open video", e))?;
        video_info(&input, kind, limits)
    })
}

/// Structural checks FFmpeg does not make when it opens a file: an MP4 or MOV cut short.
pub(crate) fn check_container(path: &Path, kind: MediaKind) -> Result<()> {
    match kind {
        MediaKind::Mp4 | MediaKind::Mov => super::isobmff::check_top_level_boxes(path),
        _ => Ok(()),
    }
}

/// Reads and checks the header facts of an opened container (shared with the decoder).
pub(crate) fn video_info(
    input: &ffmpeg::format::context::Input,
    kind: MediaKind,
    limits: &MediaLimits,
) -> Result<VideoInfo> {
    let stream = input
        .streams()
        .best(ffmpeg::media::Type::Video)
        .ok_or_else(|| Error::Media("the file has no video stream".to_string()))?;
    let params = ffmpeg::codec::context::Context::from_parameters(stream.parameters())
        .map_err(|e| av_error("cannot read the video stream parameters", e))?;
    let codec = ffmpeg::codec::decoder::find(params.id())
        .map(|c| c.name().to_string())
        .ok_or_else(|| Error::Media(format!("no decoder for codec {:?}", params.id())))?;
    let decoder = params
        .decoder()
        .video()
        .map_err(|e| av_error("cannot open the video decoder", e))?;
    let (width, height) = (decoder.width(), decoder.height());
    limits.check_dimensions(width, height)?;

    let fps = rate_to_f64(stream.avg_frame_rate())
        .or_else(|| rate_to_f64(stream.rate()))
        .unwrap_or(0.0);
    let duration_s = stream_duration_s(&stream)
        .or_else(|| (input.duration() > 0).then(|| input.duration() as f64 / 1e6))
        .unwrap_or(0.0);
    let (frames, frames_exact) = if stream.frames() > 0 {
        (stream.frames() as u64, true)
    } else {
        ((duration_s * fps).ceil().clamp(0.0, u64::MAX as f64) as u64, false)
    };
    limits.check_frames(frames)?;
    limits.check_duration(duration_s)?;
    Ok(VideoInfo { kind, width, height, frames, frames_exact, duration_s, fps, codec })
}

fn stream_duration_s(stream: &ffmpeg::format::stream::Stream) -> Option<f64> {
    let tb = stream.time_base();
    (stream.duration() > 0 && tb.denominator() != 0)
        .then(|| stream.duration() as f64 * f64::from(tb.numerator()) / f64::from(tb.denominator()))
}

fn rate_to_f64(r: ffmpeg::Rational) -> Option<f64> {
    (r.numerator() > 0 && r.denominator() > 0)
        .then(|| f64::from(r.numerator()) / f64::from(r.denominator()))
}
