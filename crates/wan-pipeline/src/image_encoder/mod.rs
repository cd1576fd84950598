//! The CLIP vision encoder and its image preprocessing, for image-to-video.
