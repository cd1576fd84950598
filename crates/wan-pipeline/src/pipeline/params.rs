//! What one generation asks for, and the checks diffusers' `check_inputs` makes (plus ours).

use image::RgbImage;

use crate::{Error, Result};

/// The input that conditions the video besides the prompt.
#[derive(Debug, Clone)]
pub enum Conditioning {
    /// Text-to-video.
    Text,
    /// Image-to-video: the first frame (any size; resized to the output size).
    Image(RgbImage),
    /// Video-to-video (SDEdit): the input frames and how much of the schedule to re-run (0..=1).
    Video { frames: Vec<RgbImage>, strength: f64 },
}

/// The parameters of one generation, as the pipelines take them.
#[derive(Debug, Clone)]
pub struct GenerationParams {
    pub prompt: String,
    /// `None` means "" (as diffusers does).
    pub negative_prompt: Option<String>,
    pub height: usize,
    pub width: usize,
    /// Frames wanted in the output; any count, generated as the next 4k+1 and cut.
    pub num_frames: usize,
    pub num_inference_steps: usize,
    pub guidance_scale: f64,
    /// Wan2.2 A14B: the guidance of the low-noise expert's steps (`None`: `guidance_scale`).
    /// Whether guidance runs at all is decided by `guidance_scale` alone, as in diffusers.
    pub guidance_scale_2: Option<f64>,
    /// Overrides the scheduler's `flow_shift` when given.
    pub shift: Option<f64>,
    /// The seed of the noise; the pipeline does not draw one itself (see `draw_seed`).
    pub seed: u64,
    /// Text tokens given to the transformer (512 for the real models; i2v requires 512).
    pub max_sequence_length: usize,
}

impl GenerationParams {
    /// A request with diffusers' defaults for the rest.
    pub fn new(prompt: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            negative_prompt: None,
            height: 480,
            width: 832,
            num_frames: 81,
            num_inference_steps: 50,
            guidance_scale: 5.0,
            guidance_scale_2: None,
            shift: None,
            seed: 0,
            max_sequence_length: 512,
        }
    }

    /// Checks what the model itself requires (the server adds its own, stricter bounds).
    pub fn check(&self, spatial_multiple: usize) -> Result<()> {
        let multiple = spatial_multiple.max(1);
        for (name, v) in [("height", self.height), ("width", self.width)] {
            if v == 0 || v % multiple != 0 {
                return Err(Error::InvalidInput(format!("{name} must be a positive multiple of {multiple}, got {v}")));
            }
        }
        if self.num_frames == 0 {
            return Err(Error::InvalidInput("num_frames must be at least 1, got 0".into()));
        }
        if self.num_inference_steps == 0 {
            return Err(Error::InvalidInput("num_inference_steps must be at least 1, got 0".into()));
        }
        if !self.guidance_scale.is_finite() || self.guidance_scale < 0.0 {
            return Err(Error::InvalidInput(format!("guidance_scale must be a finite number >= 0, got {}", self.guidance_scale)));
        }
        if let Some(s) = self.shift {
            if !s.is_finite() || s <= 0.0 {
                return Err(Error::InvalidInput(format!("shift must be a finite number > 0, got {s}")));
            }
        }
        if self.max_sequence_length == 0 {
            return Err(Error::InvalidInput("max_sequence_length must be at least 1".into()));
        }
        Ok(())
    }

    /// Classifier-free guidance runs only when the scale is above 1, as in diffusers.
    pub fn do_classifier_free_guidance(&self) -> bool {
        self.guidance_scale > 1.0
    }
}

/// The Wan VAE works on 4k+1 frames: the smallest such count that is at least `frames`.
pub fn round_up_frames(frames: usize, temporal_factor: usize) -> usize {
    let t = temporal_factor.max(1);
    if frames <= 1 {
        return 1;
    }
    (frames - 1).div_ceil(t) * t + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_up_to_4k_plus_1() {
        let got: Vec<usize> = [1, 2, 4, 5, 6, 9, 10, 64, 81, 128].iter().map(|&f| round_up_frames(f, 4)).collect();
        assert_eq!(got, vec![1, 5, 5, 5, 9, 9, 13, 65, 81, 129]);
    }

    #[test]
    fn check_names_the_field() {
        let mut p = GenerationParams::new("x");
        p.width = 100;
        let msg = p.check(16).unwrap_err().to_string();
        assert!(msg.contains("width") && msg.contains("16") && msg.contains("100"), "{msg}");
        p.width = 64;
        p.num_inference_steps = 0;
        assert!(p.check(16).unwrap_err().to_string().contains("num_inference_steps"));
    }
}
