//! Small layers the DiT is built from: f32 layer norms, the across-heads RMS norm and the
//! two-linear feed-forward of diffusers' `FeedForward`.

use candle_core::{DType, Module, Tensor, D};
use candle_nn::VarBuilder;

use crate::kernels::{packed_linear_with, Epilogue};
use crate::fp8::WeightStorage;
use crate::linear::{linear_stored, Linear};

use crate::Result;

/// Layer norm over the last dimension, computed in f32 with two passes (mean, then the variance
/// of the centred values) as PyTorch does; the single-pass `E[x^2] - mean^2` of
/// `candle_nn::ops::layer_norm` loses digits once the residual stream grows. Returns f32.
pub fn layer_norm_f32(x: &Tensor, eps: f64) -> Result<Tensor> {
    let x = x.to_dtype(DType::F32)?;
    let mean = x.mean_keepdim(D::Minus1)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let inv_std = (var + eps)?.sqrt()?.recip()?;
    Ok(centred.broadcast_mul(&inv_std)?)
}

/// diffusers' `FP32LayerNorm`: the input is normalised in f32 and the optional affine weight and
/// bias (kept in f32, as diffusers keeps `norm*` modules in f32) applied there. Returns f32; the
/// caller casts back where diffusers does.
#[derive(Debug, Clone)]
pub struct Fp32LayerNorm {
    affine: Option<(Tensor, Tensor)>,
    eps: f64,
}

impl Fp32LayerNorm {
    /// Without weight and bias (`elementwise_affine=False`).
    pub fn plain(eps: f64) -> Self {
        Self { affine: None, eps }
    }

    /// With `weight` and `bias` of size `dim`, read in f32 whatever the model dtype.
    pub fn affine(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let vb = vb.set_dtype(DType::F32);
        Ok(Self { affine: Some((vb.get(dim, "weight")?, vb.get(dim, "bias")?)), eps })
    }

    /// The norm and affine in f32, returned in x's dtype, in one fused pass where possible.
    pub fn forward_fused(&self, x: &Tensor) -> Result<Tensor> {
        match &self.affine {
            Some((w, b)) if x.rank() == 3 => super::fused::norm_affine(x, &w.reshape((1, 1, ()))?, &b.reshape((1, 1, ()))?, self.eps),
            _ => Ok(self.forward(x)?.to_dtype(x.dtype())?),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let normed = layer_norm_f32(x, self.eps)?;
        match &self.affine {
            None => Ok(normed),
            Some((w, b)) => Ok(normed.broadcast_mul(w)?.broadcast_add(b)?),
        }
    }
}

/// `torch.nn.RMSNorm(dim)` with a weight, applied over the last dimension. For the DiT's q/k norms
/// `dim` is the whole inner dimension (all heads at once: "rms_norm_across_heads").
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self { weight: vb.get(dim, "weight")?, eps: eps as f32 })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::rms_norm(x, &self.weight, self.eps)?)
    }

    /// (dim,) in the model dtype.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn eps(&self) -> f32 {
        self.eps
    }
}

/// The activation between the two linears of a [`FeedForward`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu-approximate` / `gelu_tanh`: the tanh approximation (DiT blocks, text embedder).
    GeluTanh,
    /// `gelu`: the exact erf form (image embedder).
    GeluErf,
}

impl Activation {
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::GeluTanh => x.gelu()?,
            Activation::GeluErf => x.gelu_erf()?,
        })
    }
}

/// diffusers' `FeedForward`: `net.0.proj` (dim -> hidden), activation, `net.2` (hidden -> out).
#[derive(Debug, Clone)]
pub struct FeedForward {
    proj_in: Linear,
    proj_out: Linear,
    activation: Activation,
}

impl FeedForward {
    /// `storage`: how both Linears are held (the blocks' may be fp8, the image embedder's not).
    pub fn new(dim: usize, hidden: usize, out: usize, activation: Activation, storage: WeightStorage, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            proj_in: linear_stored(dim, hidden, storage, vb.pp("net").pp("0").pp("proj"))?,
            proj_out: linear_stored(hidden, out, storage, vb.pp("net").pp("2"))?,
            activation,
        })
    }

    /// `net.0.proj` or `net.2`.
    pub fn linear_at(&self, name: &str) -> Option<&Linear> {
        match name {
            "net.0.proj" => Some(&self.proj_in),
            "net.2" => Some(&self.proj_out),
            _ => None,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let hidden = match (&self.proj_in, self.activation) {
            // The GELU runs on each output tile of the packed product while it is in L1.
            (Linear::Packed(w), Activation::GeluTanh) => packed_linear_with(x, w, Epilogue::GeluTanh)?,
            (_, Activation::GeluTanh) => super::fused::gelu(&self.proj_in.forward(x)?)?,
            (_, Activation::GeluErf) => self.activation.apply(&self.proj_in.forward(x)?)?,
        };
        Ok(self.proj_out.forward(&hidden)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn layer_norm_is_exact_on_large_offsets() {
        // A row with a large common offset: the single-pass formula would cancel catastrophically.
        let row: Vec<f32> = (0..64).map(|i| 1000.0 + (i as f32) * 0.01).collect();
        let x = Tensor::from_vec(row.clone(), (1, 64), &Device::Cpu).unwrap();
        let y: Vec<f32> = layer_norm_f32(&x, 1e-6).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let mean: f64 = row.iter().map(|&v| v as f64).sum::<f64>() / 64.0;
        let var: f64 = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / 64.0;
        for (got, &v) in y.iter().zip(&row) {
            let want = (v as f64 - mean) / (var + 1e-6).sqrt();
            assert!((*got as f64 - want).abs() < 1e-3, "{got} vs {want}");
        }
    }
}
