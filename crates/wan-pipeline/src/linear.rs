//! The linear layer every model of the pipeline is built from (the DiT, the UMT5 text encoder
//! and the CLIP image encoder): packed for our CPU kernels where they run, candle's elsewhere.

use std::sync::Arc;

use candle_core::{DType, Module, Tensor};
use candle_nn::VarBuilder;

use crate::kernels::{packed_linear, to_f32, PackedWeight};
use crate::Result;

/// A linear layer (`weight` (out, in), `bias` (out)) as `torch.nn.Linear`.
///
/// On a CPU with the AVX-512 kernels of [`crate::kernels`] (f32, or bf16 with AVX-512 BF16) the
/// weight is packed at load time and the product runs there; the original layout is not kept, so
/// the weights are in memory once. Otherwise a bf16/f16 model multiplies in f32 through candle
/// (its CPU matmul has no half-precision kernels): the weight is widened for the one product (a
/// transient copy of one layer) and the result narrowed back. On other devices this is
/// `candle_nn::Linear`.
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
    /// Packs the layer for this CPU's kernel where there is one; keeps candle's layer otherwise.
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
        let w = inner.weight();
        if !(w.device().is_cpu() && matches!(w.dtype(), DType::BF16 | DType::F16)) {
            return inner.forward(x);
        }
        let dtype = x.dtype();
        let (out_dim, in_dim) = w.dims2()?;
        let rows = x.elem_count() / in_dim.max(1);
        let mut out_shape = x.dims().to_vec();
        if let Some(last) = out_shape.last_mut() {
            *last = out_dim;
        }
        // (..., in) -> (rows, in) f32 x (in, out) f32 -> (rows, out)
        let x32 = to_f32(&x.contiguous()?.reshape((rows, in_dim))?)?;
        let mut y = x32.matmul(&to_f32(w)?.t()?)?;
        if let Some(b) = inner.bias() {
            y = y.broadcast_add(&b.to_dtype(DType::F32)?)?;
        }
        y.to_dtype(dtype)?.reshape(out_shape)
    }
}
