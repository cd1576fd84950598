//! Decoding an input video (any container and codec FFmpeg reads) into RGB8 frames.

use std::path::Path;

use ffmpeg_next as ffmpeg;
use ffmpeg::format::Pixel;
use ffmpeg::software::scaling::{Context as Scaler, Flags};
use ffmpeg::util::frame::video::Video as Frame;
use image::RgbImage;

use super::ffmpeg_guard::{av_error, guarded};
use super::limits::MediaLimits;
use super::probe::{sniff_file, VideoInfo};
use super::resize::{resize_rgb, ResizeMode};
use super::video_probe::{check_container, video_info};
use crate::{Error, Result};

/// Corrupt packets tolerated (skipped) before a file is declared broken: a damaged but playable
/// file may have a few, a fuzzed one has many.
const MAX_CORRUPT_PACKETS: usize = 16;

/// The frames read from a video, with the header facts of the stream they came from.
#[derive(Debug, Clone)]
pub struct VideoFrames {
    pub frames: Vec<RgbImage>,
    pub info: VideoInfo,
}

/// Decodes up to `max_frames` frames from the start of a video, each fitted to (width, height).
///
/// Limits are checked on the header before the first packet is decoded, and again on every frame
/// (a stream may change size mid-way). Frames are converted to RGB at their own size and then
/// resized with the same Lanczos filter as images, as diffusers' `preprocess_video` does with PIL
/// frames; only the resized frames are kept, so memory is bounded by `max_frames` output frames.
/// A video that ends before `max_frames` is returned short (the caller decides if that is enough),
/// unless its header promised more frames than could be decoded: that is a truncated file.
pub fn read_video(
    path: &Path,
    width: u32,
    height: u32,
    max_frames: usize,
    mode: ResizeMode,
    limits: &MediaLimits,
) -> Result<VideoFrames> {
    if width == 0 || height == 0 || max_frames == 0 {
        return Err(Error::InvalidInput(format!(
            "video size {width}x{height} and frame count {max_frames} must be positive"
        )));
    }
    let mut frames = Vec::with_capacity(max_frames.min(1024));
    let info = decode_frames(path, max_frames, limits, |frame| {
        frames.push(resize_rgb(&frame, width, height, mode)?);
        Ok(())
    })?;
    Ok(VideoFrames { frames, info })
}

/// Decodes up to `max_frames` frames at their own size, handing each to `on_frame` as it comes.
pub(crate) fn decode_frames(
    path: &Path,
    max_frames: usize,
    limits: &MediaLimits,
    mut on_frame: impl FnMut(RgbImage) -> Result<()>,
) -> Result<VideoInfo> {
    let kind = sniff_file(path, limits)?;
    if kind.is_image() {
        return Err(Error::Media(format!("expected a video, found a {kind:?} image")));
    }
    check_container(path, kind)?;
    guarded("decoding video", || {
        let mut input = ffmpeg::format::input(path).map_err(|e| av_error("cannot open video", e))?;
        let info = video_info(&input, kind, limits)?;
        let stream = input
            .streams()
            .best(ffmpeg::media::Type::Video)
            .ok_or_else(|| Error::Media("the file has no video stream".to_string()))?;
        let stream_index = stream.index();
        let mut decoder = ffmpeg::codec::context::Context::from_parameters(stream.parameters())
            .and_then(|c| c.decoder().video())
            .map_err(|e| av_error("cannot open the video decoder", e))?;

        let mut sink = FrameSink { max_frames, limits, converter: None, count: 0, on_frame: &mut on_frame };
        let mut corrupt = 0usize;
        while !sink.full() {
            let mut packet = ffmpeg::Packet::empty();
            match packet.read(&mut input) {
                Ok(()) if packet.stream() != stream_index => continue,
                Ok(()) => match decoder.send_packet(&packet) {
                    Ok(()) => sink.drain(&mut decoder)?,
                    Err(ffmpeg::Error::InvalidData) => corrupt += 1,
                    Err(e) => return Err(av_error("decoding a video packet", e)),
                },
                Err(ffmpeg::Error::Eof) => {
                    decoder.send_eof().map_err(|e| av_error("flushing the decoder", e))?;
                    sink.drain(&mut decoder)?;
                    break;
                }
                Err(ffmpeg::Error::InvalidData) => corrupt += 1,
                Err(e) => return Err(av_error("reading the video", e)),
            }
            if corrupt > MAX_CORRUPT_PACKETS {
                return Err(Error::Media(format!(
                    "the video is corrupt: more than {MAX_CORRUPT_PACKETS} unreadable packets"
                )));
            }
        }

        let decoded = sink.count;
        if decoded == 0 {
            return Err(Error::Media("the video has no decodable frame".to_string()));
        }
        if !sink.full() && info.frames_exact && (decoded as u64) < info.frames {
            return Err(Error::Media(format!(
                "the video is truncated: its header declares {} frames, only {decoded} decode",
                info.frames
            )));
        }
        Ok(info)
    })
}

/// Receives decoded frames, checks them, converts them to RGB and hands them on.
struct FrameSink<'a, F: FnMut(RgbImage) -> Result<()>> {
    max_frames: usize,
    limits: &'a MediaLimits,
    converter: Option<RgbConverter>,
    count: usize,
    on_frame: &'a mut F,
}

impl<F: FnMut(RgbImage) -> Result<()>> FrameSink<'_, F> {
    fn full(&self) -> bool {
        self.count >= self.max_frames
    }

    /// Takes every frame the decoder has ready (EAGAIN / EOF end the drain).
    fn drain(&mut self, decoder: &mut ffmpeg::decoder::Video) -> Result<()> {
        let mut frame = Frame::empty();
        while !self.full() && decoder.receive_frame(&mut frame).is_ok() {
            self.limits.check_dimensions(frame.width(), frame.height())?;
            let mut converter = match self.converter.take() {
                Some(c) if c.accepts(&frame) => c,
                _ => RgbConverter::new(&frame)?,
            };
            let rgb = converter.convert(&frame);
            self.converter = Some(converter);
            (self.on_frame)(rgb?)?;
            self.count += 1;
        }
        Ok(())
    }
}

/// swscale from a decoder's pixel format to packed RGB24 at the same size.
struct RgbConverter {
    scaler: Scaler,
}

impl RgbConverter {
    fn new(frame: &Frame) -> Result<Self> {
        if frame.format() == Pixel::None {
            return Err(Error::Media("the video frame has an unknown pixel format".to_string()));
        }
        let (w, h) = (frame.width(), frame.height());
        // Full chroma interpolation and accurate rounding: what `ffmpeg -pix_fmt rgb24` does.
        let flags = Flags::BICUBIC | Flags::FULL_CHR_H_INT | Flags::ACCURATE_RND;
        let scaler = Scaler::get(frame.format(), w, h, Pixel::RGB24, w, h, flags).map_err(|e| {
            av_error(&format!("cannot convert {:?} {w}x{h} to RGB", frame.format()), e)
        })?;
        Ok(RgbConverter { scaler })
    }

    fn accepts(&self, frame: &Frame) -> bool {
        let input = self.scaler.input();
        (input.format, input.width, input.height) == (frame.format(), frame.width(), frame.height())
    }

    fn convert(&mut self, frame: &Frame) -> Result<RgbImage> {
        let mut rgb = Frame::empty();
        self.scaler.run(frame, &mut rgb).map_err(|e| av_error("converting a frame to RGB", e))?;
        packed_rgb(&rgb)
    }
}

/// Copies an RGB24 frame, whose rows are padded to `stride`, into a tight `RgbImage`.
fn packed_rgb(frame: &Frame) -> Result<RgbImage> {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let stride = frame.stride(0);
    let data = frame.data(0);
    let row = w * 3;
    if stride < row || data.len() < stride * (h.saturating_sub(1)) + row {
        return Err(Error::Media("the converted frame buffer is too small".to_string()));
    }
    let mut pixels = Vec::with_capacity(row * h);
    for y in 0..h {
        pixels.extend_from_slice(&data[y * stride..y * stride + row]);
    }
    RgbImage::from_raw(w as u32, h as u32, pixels)
        .ok_or_else(|| Error::Media("the converted frame has the wrong size".to_string()))
}
