//! Media I/O: images and videos in, H.264 mp4 out.
//!
//! Every input is checked in the same order: file size, then the sniffed type (from the bytes, never
//! the file name), then the header facts (dimensions, frame count, duration) against
//! [`MediaLimits`], and only then decoded. That way a hostile upload (a 100000x100000 PNG header, a
//! video claiming a million frames, a text file named `.mp4`) is refused before it costs memory.
//!
//! Output goes through `Mp4Writer`, a streaming H.264 (libx264, yuv420p, `+faststart`) writer that
//! takes frames one at a time so the VAE decoder can hand them over chunk by chunk.
//!
//! Everything that calls FFmpeg (video decoding and probing, the mp4 writer, video previews) is
//! compiled only with the default `media-ffmpeg` feature, so a build for a machine without the
//! FFmpeg libraries still reads and resizes images and turns generated tensors into frames.

#[cfg(feature = "media-ffmpeg")]
mod ffmpeg_guard;
pub mod frames;
pub mod image_in;
#[cfg(feature = "media-ffmpeg")]
mod isobmff;
pub mod limits;
#[cfg(feature = "media-ffmpeg")]
pub mod preview;
pub mod probe;
pub mod resize;
#[cfg(feature = "media-ffmpeg")]
pub mod video_in;
#[cfg(feature = "media-ffmpeg")]
pub mod video_out;
#[cfg(feature = "media-ffmpeg")]
mod video_probe;

pub use frames::tensor_to_frames;
pub use image_in::{read_image, read_image_bytes, read_image_resized};
pub use limits::MediaLimits;
#[cfg(feature = "media-ffmpeg")]
pub use preview::first_frame_jpeg;
pub use probe::{probe_file, probe_image_bytes, sniff, ImageInfo, MediaInfo, MediaKind, VideoInfo};
pub use resize::{resize_rgb, ResizeMode};
#[cfg(feature = "media-ffmpeg")]
pub use video_in::{read_video, VideoFrames};
#[cfg(feature = "media-ffmpeg")]
pub use video_out::{write_mp4, Mp4Writer};
