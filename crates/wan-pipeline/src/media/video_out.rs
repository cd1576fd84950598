//! Frames -> H.264 mp4 (libx264, yuv420p, `+faststart`), streamed one frame at a time.

use std::path::{Path, PathBuf};

use candle_core::Tensor;
use ffmpeg_next as ffmpeg;
use ffmpeg::format::Pixel;
use ffmpeg::software::scaling::{Context as Scaler, Flags};
use ffmpeg::util::frame::video::Video as Frame;
use ffmpeg::{Dictionary, Rational};
use image::RgbImage;

use super::ffmpeg_guard::{av_error, guarded};
use super::frames::tensor_to_frames;
use crate::{Error, Result};

/// x264 settings: `crf 18` is visually lossless for generated video, `medium` the default speed.
const X264_PRESET: &str = "medium";
const X264_CRF: &str = "18";

/// A streaming H.264 mp4 writer.
///
/// ```no_run
/// # fn f(frames: &[image::RgbImage]) -> wan_pipeline::Result<()> {
/// use wan_pipeline::media::Mp4Writer;
/// let mut writer = Mp4Writer::create(std::path::Path::new("out.mp4"), 832, 480, 16)?;
/// for frame in frames {
///     writer.push_frame(frame)?;
/// }
/// writer.finish()?;
/// # Ok(()) }
/// ```
///
/// The file is complete only after [`Mp4Writer::finish`]: `+faststart` moves the index to the
/// front in that last step. A writer dropped before then leaves a partial file, so callers write to
/// a temporary name and rename it once `finish` returns. The muxer is chosen explicitly (mp4), so
/// that temporary name may have any extension.
pub struct Mp4Writer {
    output: ffmpeg::format::context::Output,
    encoder: ffmpeg::encoder::Video,
    scaler: SendScaler,
    rgb: Frame,
    width: u32,
    height: u32,
    encoder_time_base: Rational,
    stream_time_base: Rational,
    frames_written: i64,
    path: PathBuf,
}

impl Mp4Writer {
    /// Opens `path` for an H.264 video of `width` x `height` at `fps` frames per second.
    ///
    /// yuv420p stores colour at half resolution, so width and height must be even: odd sizes are
    /// refused (`Error::InvalidInput`) rather than silently padded or cropped, since either would
    /// change the size the caller asked for. Wan's sizes are multiples of 16.
    pub fn create(path: &Path, width: u32, height: u32, fps: u32) -> Result<Self> {
        if width == 0 || height == 0 || (width | height) & 1 != 0 {
            return Err(Error::InvalidInput(format!(
                "an H.264 yuv420p video needs an even, non-zero width and height, got {width}x{height}"
            )));
        }
        if fps == 0 || fps > i32::MAX as u32 {
            return Err(Error::InvalidInput(format!("fps must be positive, got {fps}")));
        }
        guarded("creating mp4", || Self::open(path, width, height, fps))
    }

    fn open(path: &Path, width: u32, height: u32, fps: u32) -> Result<Self> {
        let what = |step: &str| format!("creating {}: {step}", path.display());
        let codec = ffmpeg::encoder::find_by_name("libx264")
            .ok_or_else(|| Error::Media("the libx264 encoder is not available in FFmpeg".into()))?;
        let mut output = ffmpeg::format::output_as(path, "mp4")
            .map_err(|e| av_error(&what("opening the output"), e))?;
        let global_header = output.format().flags().contains(ffmpeg::format::Flags::GLOBAL_HEADER);

        let encoder_time_base = Rational::new(1, fps as i32);
        let mut setup = ffmpeg::codec::context::Context::new_with_codec(codec)
            .encoder()
            .video()
            .map_err(|e| av_error(&what("allocating the encoder"), e))?;
        setup.set_width(width);
        setup.set_height(height);
        setup.set_format(Pixel::YUV420P);
        setup.set_time_base(encoder_time_base);
        setup.set_frame_rate(Some(Rational::new(fps as i32, 1)));
        // swscale converts RGB with BT.601 coefficients into limited range: say so in the stream,
        // so players convert back with the same matrix.
        setup.set_colorspace(ffmpeg::color::Space::SMPTE170M);
        setup.set_color_range(ffmpeg::color::Range::MPEG);
        if global_header {
            setup.set_flags(ffmpeg::codec::Flags::GLOBAL_HEADER);
        }
        let mut options = Dictionary::new();
        options.set("preset", X264_PRESET);
        options.set("crf", X264_CRF);
        let encoder = setup.open_with(options).map_err(|e| av_error(&what("opening libx264"), e))?;

        {
            let mut stream =
                output.add_stream(codec).map_err(|e| av_error(&what("adding the stream"), e))?;
            stream.set_parameters(&encoder);
            stream.set_time_base(encoder_time_base);
            stream.set_avg_frame_rate(Rational::new(fps as i32, 1));
        }
        let mut mux_options = Dictionary::new();
        mux_options.set("movflags", "+faststart");
        output
            .write_header_with(mux_options)
            .map_err(|e| av_error(&what("writing the header"), e))?;
        // The muxer may pick its own time base in write_header; packets are rescaled to it.
        let stream_time_base = output
            .stream(0)
            .map(|s| s.time_base())
            .ok_or_else(|| Error::Media(what("the stream vanished")))?;

        let flags = Flags::BICUBIC | Flags::ACCURATE_RND;
        let scaler = Scaler::get(Pixel::RGB24, width, height, Pixel::YUV420P, width, height, flags)
            .map_err(|e| av_error(&what("creating the RGB to YUV converter"), e))?;
        Ok(Mp4Writer {
            output,
            encoder,
            scaler: SendScaler(scaler),
            rgb: Frame::new(Pixel::RGB24, width, height),
            width,
            height,
            encoder_time_base,
            stream_time_base,
            frames_written: 0,
            path: path.to_path_buf(),
        })
    }

    /// Frames pushed so far.
    pub fn frames_written(&self) -> u64 {
        self.frames_written as u64
    }

    /// Appends one RGB frame of the writer's size.
    pub fn push_frame(&mut self, frame: &RgbImage) -> Result<()> {
        if frame.dimensions() != (self.width, self.height) {
            return Err(Error::InvalidInput(format!(
                "frame is {}x{}, the video is {}x{}",
                frame.width(),
                frame.height(),
                self.width,
                self.height
            )));
        }
        guarded("encoding a frame", || {
            fill_rgb_frame(frame, &mut self.rgb);
            let mut yuv = Frame::empty();
            self.scaler
                .0
                .run(&self.rgb, &mut yuv)
                .map_err(|e| av_error("converting a frame to YUV", e))?;
            yuv.set_pts(Some(self.frames_written));
            self.encoder.send_frame(&yuv).map_err(|e| av_error("encoding a frame", e))?;
            self.frames_written += 1;
            self.write_ready_packets()
        })
    }

    /// Appends every frame of an `(F, H, W, 3)` tensor of values in [0, 1] (see [`tensor_to_frames`]).
    pub fn push_tensor(&mut self, frames: &Tensor) -> Result<()> {
        for frame in tensor_to_frames(frames)? {
            self.push_frame(&frame)?;
        }
        Ok(())
    }

    /// Flushes the encoder and writes the index (moved to the front by `+faststart`).
    pub fn finish(mut self) -> Result<()> {
        if self.frames_written == 0 {
            return Err(Error::InvalidInput(format!(
                "no frame was written to {}",
                self.path.display()
            )));
        }
        guarded("finishing mp4", || {
            self.encoder.send_eof().map_err(|e| av_error("flushing the encoder", e))?;
            self.write_ready_packets()?;
            self.output.write_trailer().map_err(|e| av_error("writing the mp4 index", e))
        })
    }

    /// Moves every packet the encoder has ready into the file.
    fn write_ready_packets(&mut self) -> Result<()> {
        let mut packet = ffmpeg::Packet::empty();
        while self.encoder.receive_packet(&mut packet).is_ok() {
            packet.set_stream(0);
            // libx264 leaves the duration at 0; without it the mp4 edit list ends one frame early.
            // It must be set in the encoder's time base, before rescaling.
            if packet.duration() <= 0 {
                packet.set_duration(1);
            }
            packet.rescale_ts(self.encoder_time_base, self.stream_time_base);
            packet
                .write_interleaved(&mut self.output)
                .map_err(|e| av_error("writing a packet", e))?;
        }
        Ok(())
    }
}

/// An swscale context that may move between threads.
///
/// ffmpeg-next marks its format and codec contexts `Send` but not the swscale one. An `SwsContext`
/// is plain heap state with no thread affinity; it is only unsafe to use from two threads at once,
/// which `&mut self` on every use rules out. This lets a job hand its writer to a blocking thread.
struct SendScaler(Scaler);

// SAFETY: see the type's documentation: exclusive ownership, no thread-local state in swscale.
unsafe impl Send for SendScaler {}

/// Writes all `frames` to an mp4 at `fps` in one call.
pub fn write_mp4(path: &Path, frames: &[RgbImage], fps: u32) -> Result<()> {
    let first = frames
        .first()
        .ok_or_else(|| Error::InvalidInput("no frames to write".to_string()))?;
    let mut writer = Mp4Writer::create(path, first.width(), first.height(), fps)?;
    for frame in frames {
        writer.push_frame(frame)?;
    }
    writer.finish()
}

/// Copies a tight RGB picture into an RGB24 frame (whose rows may be padded).
fn fill_rgb_frame(img: &RgbImage, frame: &mut Frame) {
    let row = img.width() as usize * 3;
    let stride = frame.stride(0);
    let dst = frame.data_mut(0);
    for (y, src_row) in img.as_raw().chunks_exact(row).enumerate() {
        dst[y * stride..y * stride + row].copy_from_slice(src_row);
    }
}
