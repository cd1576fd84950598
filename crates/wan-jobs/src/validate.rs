//! Request validation against the server's limits (API.md "Validation").
//!
//! The bounds are settings, not constants, so a distilled few-step model can lower the step
//! range, and a model with another supported resolution range can change the size bounds. Every
//! error names the field, the limit and the value given.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::job::{GenerationMode, GenerationModeRequest, GenerationRequest, JobParams, Priority};

/// An inclusive range setting.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bounds<T> {
    pub min: T,
    pub max: T,
}

impl<T: PartialOrd + Copy> Bounds<T> {
    pub const fn new(min: T, max: T) -> Self {
        Bounds { min, max }
    }

    pub fn contains(&self, v: T) -> bool {
        v >= self.min && v <= self.max
    }
}

/// The bounds and defaults a request is checked against.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    pub num_frames: Bounds<i64>,
    pub fps: Bounds<i64>,
    /// Width and height bounds (pixels); both must also be multiples of `size_multiple`.
    pub width: Bounds<i64>,
    pub height: Bounds<i64>,
    pub size_multiple: i64,
    pub guidance_scale: Bounds<f64>,
    pub num_inference_steps: Bounds<i64>,
    pub strength: Bounds<f64>,
    /// Longest prompt / negative prompt accepted, in characters.
    pub max_prompt_chars: usize,
    pub max_user_id_chars: usize,
    /// Hosts a `callback_url` may point at (exact, case-insensitive; IPv6 without brackets).
    pub callback_hosts: Vec<String>,
    pub default_num_frames: i64,
    pub default_fps: i64,
    pub default_width: i64,
    pub default_height: i64,
    pub default_guidance_scale: f64,
    pub default_num_inference_steps: i64,
    pub default_strength: f64,
}

impl Default for Limits {
    /// API.md's bounds and 002's defaults.
    fn default() -> Self {
        Limits {
            num_frames: Bounds::new(1, 128),
            fps: Bounds::new(1, 60),
            width: Bounds::new(16, 1920),
            height: Bounds::new(16, 1920),
            size_multiple: 16,
            guidance_scale: Bounds::new(1.0, 20.0),
            num_inference_steps: Bounds::new(25, 100),
            strength: Bounds::new(0.0, 1.0),
            max_prompt_chars: 10_000,
            max_user_id_chars: 128,
            callback_hosts: vec!["127.0.0.1".into(), "localhost".into(), "::1".into()],
            default_num_frames: 64,
            default_fps: 24,
            default_width: 512,
            default_height: 512,
            default_guidance_scale: 7.5,
            default_num_inference_steps: 50,
            default_strength: 0.8,
        }
    }
}

const SEED_MAX: i64 = u32::MAX as i64;

impl Limits {
    /// Checks a request and returns the parameters to store. A seed of -1 is drawn here, so the
    /// job reports the seed it runs with from the moment it is admitted, and a re-run after a
    /// restart produces the same video.
    pub fn validate(&self, req: &GenerationRequest) -> Result<JobParams> {
        let prompt = req.prompt.clone().unwrap_or_default();
        if matches!(req.mode, GenerationModeRequest::TextToVideo) && prompt.trim().is_empty() {
            return Err(Error::validation("prompt", "prompt is required and must not be empty"));
        }
        check_len("prompt", &prompt, self.max_prompt_chars)?;
        let negative_prompt = req.negative_prompt.clone().unwrap_or_default();
        check_len("negative_prompt", &negative_prompt, self.max_prompt_chars)?;

        let is_v2v = matches!(req.mode, GenerationModeRequest::VideoToVideo { .. });
        // Video-to-video takes frame count and size from the input video unless given.
        let or_default = |v: Option<i64>, d: i64| if is_v2v { v } else { Some(v.unwrap_or(d)) };
        let num_frames = or_default(req.num_frames, self.default_num_frames)
            .map(|v| check_int("num_frames", v, self.num_frames))
            .transpose()?;
        let fps = check_int("fps", req.fps.unwrap_or(self.default_fps), self.fps)?;
        let width = or_default(req.width, self.default_width)
            .map(|v| self.check_size("width", v, self.width))
            .transpose()?;
        let height = or_default(req.height, self.default_height)
            .map(|v| self.check_size("height", v, self.height))
            .transpose()?;
        let guidance_scale = check_float(
            "guidance_scale",
            req.guidance_scale.unwrap_or(self.default_guidance_scale),
            self.guidance_scale,
        )?;
        let num_inference_steps = check_int(
            "num_inference_steps",
            req.num_inference_steps.unwrap_or(self.default_num_inference_steps),
            self.num_inference_steps,
        )?;
        let seed = match req.seed.unwrap_or(-1) {
            -1 => rand::random::<u32>() as u64,
            s if (0..=SEED_MAX).contains(&s) => s as u64,
            s => {
                return Err(Error::validation("seed", format!("seed must be -1 (random) or between 0 and {SEED_MAX} (got {s})")))
            }
        };
        let mode = match &req.mode {
            GenerationModeRequest::TextToVideo => {
                if req.strength.is_some() {
                    return Err(Error::validation("strength", "strength applies to video-to-video only"));
                }
                GenerationMode::TextToVideo
            }
            GenerationModeRequest::ImageToVideo { image } => {
                if req.strength.is_some() {
                    return Err(Error::validation("strength", "strength applies to video-to-video only"));
                }
                GenerationMode::ImageToVideo { image: image.clone() }
            }
            GenerationModeRequest::VideoToVideo { video } => {
                let strength = check_float("strength", req.strength.unwrap_or(self.default_strength), self.strength)?;
                GenerationMode::VideoToVideo { video: video.clone(), strength }
            }
        };
        if let Some(user_id) = &req.user_id {
            check_len("user_id", user_id, self.max_user_id_chars)?;
        }
        if let Some(url) = &req.callback_url {
            self.check_callback_url(url)?;
        }
        Ok(JobParams {
            mode,
            prompt,
            negative_prompt,
            num_frames,
            fps,
            width,
            height,
            seed,
            guidance_scale,
            num_inference_steps,
            priority: req.priority.unwrap_or(Priority::Normal),
            user_id: req.user_id.clone(),
            callback_url: req.callback_url.clone(),
        })
    }

    fn check_size(&self, field: &str, v: i64, bounds: Bounds<i64>) -> Result<u32> {
        let v = check_int(field, v, bounds)?;
        if self.size_multiple > 0 && (v as i64) % self.size_multiple != 0 {
            return Err(Error::validation(field, format!("{field} must be a multiple of {} (got {v})", self.size_multiple)));
        }
        Ok(v)
    }

    /// Only `http`/`https` URLs whose host is on the allowlist: the server must never be made to
    /// send requests to arbitrary hosts (SSRF).
    pub fn check_callback_url(&self, url: &str) -> Result<()> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| Error::validation("callback_url", format!("callback_url is not a valid URL ({e}): {url:?}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::validation(
                "callback_url",
                format!("callback_url must use http or https (got {:?})", parsed.scheme()),
            ));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(Error::validation("callback_url", "callback_url must not carry credentials"));
        }
        let host = match parsed.host_str() {
            Some(h) => h.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase(),
            None => return Err(Error::validation("callback_url", format!("callback_url has no host: {url:?}"))),
        };
        if !self.callback_hosts.iter().any(|h| h.eq_ignore_ascii_case(&host)) {
            return Err(Error::validation(
                "callback_url",
                format!("callback_url host {host:?} is not on the allowlist ({})", self.callback_hosts.join(", ")),
            ));
        }
        Ok(())
    }
}

fn check_len(field: &str, s: &str, max: usize) -> Result<()> {
    let n = s.chars().count();
    if n > max {
        return Err(Error::validation(field, format!("{field} must be at most {max} characters (got {n})")));
    }
    Ok(())
}

fn check_int(field: &str, v: i64, b: Bounds<i64>) -> Result<u32> {
    if !b.contains(v) {
        return Err(Error::validation(field, format!("{field} must be between {} and {} (got {v})", b.min, b.max)));
    }
    u32::try_from(v).map_err(|_| Error::validation(field, format!("{field} must be between 0 and {} (got {v})", u32::MAX)))
}

fn check_float(field: &str, v: f64, b: Bounds<f64>) -> Result<f64> {
    if !v.is_finite() || !b.contains(v) {
        return Err(Error::validation(field, format!("{field} must be between {} and {} (got {v})", b.min, b.max)));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t2v(prompt: &str) -> GenerationRequest {
        GenerationRequest { prompt: Some(prompt.into()), ..Default::default() }
    }

    fn field_of(e: Error) -> String {
        match e {
            Error::Validation { field, message } => format!("{field}: {message}"),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_filled_and_seed_drawn() {
        let l = Limits::default();
        let p = l.validate(&t2v("a cat")).unwrap();
        assert_eq!(p.num_frames, Some(l.default_num_frames as u32));
        assert_eq!(p.width, Some(l.default_width as u32));
        assert_eq!(p.num_inference_steps, l.default_num_inference_steps as u32);
        assert!(p.seed <= SEED_MAX as u64);
        let fixed = l.validate(&GenerationRequest { seed: Some(42), ..t2v("a") }).unwrap();
        assert_eq!(fixed.seed, 42);
    }

    #[test]
    fn errors_name_field_limit_and_value() {
        let l = Limits::default();
        let e = field_of(l.validate(&GenerationRequest { num_frames: Some(500), ..t2v("a") }).unwrap_err());
        assert!(e.starts_with("num_frames:") && e.contains("128") && e.contains("500"), "{e}");
        let e = field_of(l.validate(&GenerationRequest { width: Some(500), ..t2v("a") }).unwrap_err());
        assert!(e.starts_with("width:") && e.contains("16") && e.contains("500"), "{e}");
        let e = field_of(l.validate(&GenerationRequest { seed: Some(-2), ..t2v("a") }).unwrap_err());
        assert!(e.starts_with("seed:") && e.contains("-2"), "{e}");
        let e = field_of(l.validate(&GenerationRequest { guidance_scale: Some(f64::NAN), ..t2v("a") }).unwrap_err());
        assert!(e.starts_with("guidance_scale:"), "{e}");
        let e = field_of(l.validate(&t2v("  ")).unwrap_err());
        assert!(e.starts_with("prompt:"), "{e}");
    }

    #[test]
    fn step_bounds_are_a_setting() {
        let mut l = Limits::default();
        let req = GenerationRequest { num_inference_steps: Some(4), ..t2v("a") };
        assert!(l.validate(&req).is_err());
        l.num_inference_steps = Bounds::new(1, 8);
        assert_eq!(l.validate(&req).unwrap().num_inference_steps, 4);
    }

    #[test]
    fn v2v_strength_and_sizes_from_input() {
        let l = Limits::default();
        let req = GenerationRequest {
            mode: GenerationModeRequest::VideoToVideo { video: "in.mp4".into() },
            ..Default::default()
        };
        let p = l.validate(&req).unwrap();
        assert_eq!(p.num_frames, None);
        assert_eq!(p.mode, GenerationMode::VideoToVideo { video: "in.mp4".into(), strength: l.default_strength });
        let e = field_of(l.validate(&GenerationRequest { strength: Some(1.5), ..req }).unwrap_err());
        assert!(e.starts_with("strength:") && e.contains("1.5"), "{e}");
    }

    #[test]
    fn callback_hosts_are_allowlisted() {
        let l = Limits::default();
        assert!(l.check_callback_url("http://127.0.0.1:9000/hook").is_ok());
        assert!(l.check_callback_url("http://[::1]:9000/hook").is_ok());
        assert!(l.check_callback_url("http://LOCALHOST/hook").is_ok());
        for bad in ["http://169.254.169.254/latest", "file:///etc/passwd", "http://user:pw@127.0.0.1/", "not a url"] {
            let e = field_of(l.check_callback_url(bad).unwrap_err());
            assert!(e.starts_with("callback_url:"), "{bad}: {e}");
        }
    }
}
