//! Media I/O: images and videos in, H.264 mp4 out.
