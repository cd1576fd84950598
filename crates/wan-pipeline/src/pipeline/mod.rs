//! The text-, image- and video-to-video pipelines.
