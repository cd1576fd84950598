//! The linear layer every model of the pipeline is built from (the DiT, the UMT5 text encoder
//! and the CLIP image encoder): packed for the native CPU kernels where the backend runs them
//! (decided when the layer loads), candle's elsewhere.

use std::sync::Arc;

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use crate::kernels::{packed_linear, widened_linear, PackedWeight};
use crate::Result;

/// A linear layer (`weight` (out, in), `bias` (out)) as `torch.nn.Linear`.
///
/// Under the native backend, on a CPU with a packed kernel of [`crate::kernels`] for its dtype
/// (f32 with AVX-512F or AVX2 + FMA, bf16 with AVX-512 BF16), the weight is packed at load time
/// and the product runs there; the original layout is not kept, so the weights are in memory
/// once. A half-precision weight without a packed kernel multiplies in f32
/// ([`crate::kernels::widened_linear`]). Otherwise this is `candle_nn::Linear`.
#[derive(Debug, Clone)]
pub enum Linear {
    Packed(Arc<PackedWeight>),
    Candle(candle_nn::Linear),
}

/// `weight` (out_dim, in_dim) and `bias` (out_dim) from `vb`.
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    Linear::new(candle_nn::linear(in_dim, out_dim, vb)?)
}

/// `weight` (out_dim, in_dim) from `vb`, no bias (T5's layers).
pub fn linear_no_bias(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    Linear::new(candle_nn::linear_no_bias(in_dim, out_dim, vb)?)
}

impl Linear {
    /// Packs the layer for the native backend's kernel where there is one; keeps candle's layer
    /// otherwise.
    fn new(inner: candle_nn::Linear) -> Result<Self> {
        Ok(match PackedWeight::pack(inner.weight(), inner.bias())? {
            Some(packed) => Linear::Packed(Arc::new(packed)),
            None => Linear::Candle(inner),
        })
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let inner = match self {
            Linear::Packed(w) => return packed_linear(x, w),
            Linear::Candle(inner) => inner,
        };
        match widened_linear(x, inner.weight(), inner.bias()) {
            Ok(Some(y)) => Ok(y),
            Ok(None) => inner.forward(x),
            Err(e) => Err(candle_core::Error::Msg(e.to_string())),
        }
    }
}
