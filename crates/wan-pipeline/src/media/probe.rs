//! What a file is and how big it claims to be, read from its first bytes and its header only.
//!
//! Sniffing and the still-image probe need only the `image` crate; a video's header is read by
//! FFmpeg in `video_probe`, so without the `media-ffmpeg` feature [`probe_file`] recognises a video
//! and refuses it with [`Error::NoVideoSupport`] instead of failing to build for its callers.

use std::fs::File;
use std::io::{BufReader, Cursor, Read};
use std::path::Path;

use image::{ImageFormat, ImageReader};

use super::limits::MediaLimits;
#[cfg(feature = "media-ffmpeg")]
use super::video_probe::probe_video;
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
///
/// A video needs the `media-ffmpeg` feature; without it the answer is [`Error::NoVideoSupport`].
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

/// Without FFmpeg a video is still recognised (so the error can say what it is), never opened.
#[cfg(not(feature = "media-ffmpeg"))]
fn probe_video(_path: &Path, kind: MediaKind, _limits: &MediaLimits) -> Result<VideoInfo> {
    Err(Error::NoVideoSupport { kind })
}

fn unrecognised(head: &[u8]) -> Error {
    let shown: String = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Error::Media(format!(
        "not a recognised image or video (PNG, JPEG, WebP, GIF, MP4, MOV, AVI, WebM, MKV); \
         the file starts with {shown:?}"
    ))
}

#[cfg(all(test, not(feature = "media-ffmpeg")))]
mod tests {
    use super::*;

    #[test]
    fn without_ffmpeg_videos_are_refused_by_type_and_images_still_probe() {
        let dir = tempfile::tempdir().unwrap();
        let video = dir.path().join("clip.mp4");
        std::fs::write(&video, b"\0\0\0\x18ftypisom\0\0\x02\0isomiso2\0\0\0\x08free").unwrap();
        let err = probe_file(&video, &MediaLimits::default()).unwrap_err();
        assert!(matches!(err, Error::NoVideoSupport { kind: MediaKind::Mp4 }), "{err:?}");
        assert!(err.to_string().contains("media-ffmpeg"), "{err}");

        let still = dir.path().join("still.png");
        image::RgbImage::new(6, 4).save_with_format(&still, ImageFormat::Png).unwrap();
        let info = probe_file(&still, &MediaLimits::default()).unwrap();
        assert_eq!(info, MediaInfo::Image(ImageInfo { kind: MediaKind::Png, width: 6, height: 4 }));
    }
}
