//! `DiagonalGaussianDistribution`: the encoder's output read as a per-element Gaussian.

use candle_core::Tensor;

use crate::Result;

/// diffusers clamps the log-variance to this range before using it.
const LOGVAR_MIN: f64 = -30.0;
const LOGVAR_MAX: f64 = 20.0;

/// The latent distribution of a video: `mean` and (clamped) `logvar`, each `(B, z, f, h, w)`.
#[derive(Debug, Clone)]
pub struct DiagonalGaussian {
    pub mean: Tensor,
    pub logvar: Tensor,
}

impl DiagonalGaussian {
    /// Splits `moments` `(B, 2z, f, h, w)` into mean (first z channels) and log-variance (last z),
    /// clamping the latter to [-30, 20].
    pub fn from_moments(moments: &Tensor) -> Result<Self> {
        let z = moments.dim(1)? / 2;
        let mean = moments.narrow(1, 0, z)?.contiguous()?;
        let logvar = moments.narrow(1, z, z)?.clamp(LOGVAR_MIN, LOGVAR_MAX)?;
        Ok(Self { mean, logvar })
    }

    /// `exp(0.5 * logvar)`.
    pub fn std(&self) -> Result<Tensor> {
        Ok((&self.logvar * 0.5)?.exp()?)
    }

    /// The most likely latent: the mean (what the i2v/v2v pipelines use; no sampling, no RNG).
    pub fn mode(&self) -> &Tensor {
        &self.mean
    }
}
