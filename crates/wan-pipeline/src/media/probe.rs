//! What a file is and how big it claims to be, read from its first bytes and its header only.

use std::fs::File;
use std::io::{BufReader, Cursor, Read};
use std::path::Path;

use ffmpeg_next as ffmpeg;
use image::{ImageFormat, ImageReader};

use super::ffmpeg_guard::{av_error, guarded};
use super::limits::MediaLimits;
use crate::{Error, Result};

/// How many leading bytes the sniffer looks at (Matroska/WebM put their doc type within 256).
const SNIFF_BYTES: usize = 4096;

/// A media type recognised from a file's leading bytes (never from its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Png,
    Jpeg,
    WebP,
    /// GIF is decoded as a video through FFmpeg (it may be animated).
    Gif,
    Mp4,
    Mov,
    Avi,
    WebM,
    Mkv,
    Mpeg,
    Flv,
    Wmv,
}

impl MediaKind {
    /// True for the still-image formats decoded with the `image` crate.
    pub fn is_image(self) -> bool {
        matches!(self, MediaKind::Png | MediaKind::Jpeg | MediaKind::WebP)
    }

    /// True for containers decoded with FFmpeg.
    pub fn is_video(self) -> bool {
        !self.is_image()
    }

    /// The `image` crate's format for a still image.
    pub(crate) fn image_format(self) -> Option<ImageFormat> {
        match self {
            MediaKind::Png => Some(ImageFormat::Png),
            MediaKind::Jpeg => Some(ImageFormat::Jpeg),
            MediaKind::WebP => Some(ImageFormat::WebP),
            _ => None,
        }
    }
}

/// Header facts of a still image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    pub kind: MediaKind,
    pub width: u32,
    pub height: u32,
}

/// Header facts of a video's best video stream.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoInfo {
    pub kind: MediaKind,
    pub width: u32,
    pub height: u32,
    /// Frame count: the container's own count when it has one, else duration x frame rate.
    pub frames: u64,
    /// Whether `frames` is the container's count (true) or an estimate (false).
    pub frames_exact: bool,
    pub duration_s: f64,
    /// Average frame rate (0 when the container does not say).
    pub fps: f64,
    /// FFmpeg's short codec name, e.g. `h264`, `vp9`, `mpeg4`.
    pub codec: String,
}

/// The result of probing a file.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaInfo {
    Image(ImageInfo),
    Video(VideoInfo),
}

/// Recognises a media type from leading bytes. `None` for anything else (text, archives, ...).
pub fn sniff(bytes: &[u8]) -> Option<MediaKind> {
    let head = &bytes[..bytes.len().min(SNIFF_BYTES)];
    let kind = infer::get(head).and_then(|t| match t.mime_type() {
        "image/png" => Some(MediaKind::Png),
        "image/jpeg" => Some(MediaKind::Jpeg),
        "image/webp" => Some(MediaKind::WebP),
        "image/gif" => Some(MediaKind::Gif),
        "video/mp4" | "video/x-m4v" => Some(MediaKind::Mp4),
        "video/quicktime" => Some(MediaKind::Mov),
        "video/x-msvideo" => Some(MediaKind::Avi),
        "video/webm" => Some(MediaKind::WebM),
        "video/x-matroska" => Some(MediaKind::Mkv),
        "video/mpeg" => Some(MediaKind::Mpeg),
        "video/x-flv" => Some(MediaKind::Flv),
        "video/x-ms-wmv" => Some(MediaKind::Wmv),
        _ => None,
    });
    // An ISO-BMFF file whose brand `infer` does not list is still an mp4 for FFmpeg.
    kind.or_else(|| (head.len() >= 12 && &head[4..8] == b"ftyp").then_some(MediaKind::Mp4))
}

/// Sniffs a file and reads its header facts, checking every limit, without decoding pixels.
pub fn probe_file(path: &Path, limits: &MediaLimits) -> Result<MediaInfo> {
    let kind = sniff_file(path, limits)?;
    if kind.is_image() {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        probe_image_reader(BufReader::new(file), kind, limits).map(MediaInfo::Image)
    } else {
        probe_video(path, kind, limits).map(MediaInfo::Video)
    }
}

/// Header facts of an image held in memory, with the limits checked.
pub fn probe_image_bytes(bytes: &[u8], limits: &MediaLimits) -> Result<ImageInfo> {
    limits.check_bytes(bytes.len() as u64)?;
    let kind = require_image(sniff(bytes))?;
    probe_image_reader(Cursor::new(bytes), kind, limits)
}

/// Checks the file size, then sniffs its type from the first bytes.
pub(crate) fn sniff_file(path: &Path, limits: &MediaLimits) -> Result<MediaKind> {
    let size = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    limits.check_bytes(size)?;
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    File::open(path)
        .and_then(|f| f.take(SNIFF_BYTES as u64).read_to_end(&mut head))
        .map_err(|e| Error::io(path, e))?;
    sniff(&head).ok_or_else(|| unrecognised(&head))
}

/// Refuses anything that is not a still image this crate decodes.
pub(crate) fn require_image(kind: Option<MediaKind>) -> Result<MediaKind> {
    match kind {
        Some(k) if k.is_image() => Ok(k),
        Some(k) => Err(Error::Media(format!("expected a PNG, JPEG or WebP image, found {k:?}"))),
        None => Err(Error::Media(
            "not a recognised image: expected PNG, JPEG or WebP".to_string(),
        )),
    }
}

/// The `image` crate's limits for our limits.
///
/// Width and height are left to our own check, made right after the header is read, because the
/// crate's error does not say which value was too large; its allocation cap stays as a backstop.
pub(crate) fn image_crate_limits(limits: &MediaLimits) -> image::Limits {
    let mut l = image::Limits::default();
    l.max_image_width = None;
    l.max_image_height = None;
    // RGBA at 16 bits per channel is the largest buffer a decoder allocates for one picture.
    l.max_alloc = Some(limits.max_pixels.saturating_mul(8).max(1 << 20));
    l
}

/// Refuses a JPEG without an end-of-image marker after its last scan: the decoder would otherwise
/// fill a truncated picture with grey and report success.
///
/// Inside entropy-coded data every 0xFF byte is followed by 0x00 or a restart marker, so an
/// `FF D9` (end of image) after the last `FF DA` (start of scan) can only be the real end marker.
pub(crate) fn check_jpeg_complete(bytes: &[u8]) -> Result<()> {
    let last = |marker: u8| bytes.windows(2).rposition(|w| w[0] == 0xff && w[1] == marker);
    match (last(0xda), last(0xd9)) {
        (Some(scan), Some(end)) if end > scan => Ok(()),
        (None, _) => Err(Error::Media("the JPEG has no image data (no start-of-scan marker)".into())),
        _ => Err(Error::Media("the JPEG is truncated: no end-of-image marker after its data".into())),
    }
}

fn probe_image_reader<R: std::io::BufRead + std::io::Seek>(
    reader: R,
    kind: MediaKind,
    limits: &MediaLimits,
) -> Result<ImageInfo> {
    let format = require_image(Some(kind))?
        .image_format()
        .ok_or_else(|| Error::Media(format!("{kind:?} has no image decoder")))?;
    let mut reader = ImageReader::with_format(reader, format);
    reader.limits(image_crate_limits(limits));
    let (width, height) = reader
        .into_dimensions()
        .map_err(|e| Error::Media(format!("cannot read the {kind:?} header: {e}")))?;
    limits.check_dimensions(width, height)?;
    Ok(ImageInfo { kind, width, height })
}

/// Opens the container and reads the best video stream's parameters; no frame is decoded.
fn probe_video(path: &Path, kind: MediaKind, limits: &MediaLimits) -> Result<VideoInfo> {
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

fn unrecognised(head: &[u8]) -> Error {
    let shown: String = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Error::Media(format!(
        "not a recognised image or video (PNG, JPEG, WebP, GIF, MP4, MOV, AVI, WebM, MKV); \
         the file starts with {shown:?}"
    ))
}
