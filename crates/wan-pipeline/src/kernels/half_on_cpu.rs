//! Half-precision (bf16 / f16) products on the CPU, computed in f32.
//!
//! candle 0.11's CPU matmul widens bf16 to f32 on one thread for every call and has no f16 or
//! bf16 conv2d kernel at all. The native backend widens with [`super::to_f32`] (all cores) and
//! multiplies in f32, at least as exact as PyTorch, whose CPU kernels accumulate in f32. Under the
//! generic backend the products stay candle's, except the convolution, which candle cannot run
//! in bf16 on the CPU on either backend.

use candle_core::{DType, Tensor};

use super::widen::to_f32;
use crate::Result;

fn is_half(dtype: DType) -> bool {
    matches!(dtype, DType::BF16 | DType::F16)
}

/// The q, k, v an attention should compute with: widened to f32 where the native backend runs
/// half-precision attention on the CPU, else the tensors themselves. The caller rounds its result
/// back to q's dtype.
pub fn attention_operands(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    if is_half(q.dtype()) && crate::backend::native_on(q.device()) {
        let widen = |t: &Tensor| to_f32(&t.contiguous()?);
        return Ok((widen(q)?, widen(k)?, widen(v)?));
    }
    Ok((q.clone(), k.clone(), v.clone()))
}

/// `x W^T (+ b)` for a half-precision weight (out, in) under the native backend on the CPU: the
/// weight widened for this one product (a transient copy of one layer), the result narrowed back
/// to x's dtype. `None` elsewhere (the caller runs candle's linear).
pub fn widened_linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Option<Tensor>> {
    if !(is_half(weight.dtype()) && crate::backend::native_on(weight.device())) {
        return Ok(None);
    }
    let dtype = x.dtype();
    let (out_dim, in_dim) = weight.dims2()?;
    let rows = x.elem_count() / in_dim.max(1);
    let mut out_shape = x.dims().to_vec();
    if let Some(last) = out_shape.last_mut() {
        *last = out_dim;
    }
    // (..., in) -> (rows, in) f32 x (in, out) f32 -> (rows, out)
    let x32 = to_f32(&x.contiguous()?.reshape((rows, in_dim))?)?;
    let mut y = x32.matmul(&to_f32(weight)?.t()?)?;
    if let Some(b) = bias {
        y = y.broadcast_add(&b.to_dtype(DType::F32)?)?;
    }
    Ok(Some(y.to_dtype(dtype)?.reshape(out_shape)?))
}

/// `x` (N, C, H, W) conv `kernel` (O, C, kh, kw), no bias: candle's conv2d, in f32 for a
/// half-precision input on the CPU (on both backends: candle has no CPU kernel for it).
pub fn conv2d(x: &Tensor, kernel: &Tensor, padding: usize, stride: usize) -> Result<Tensor> {
    if x.device().is_cpu() && is_half(x.dtype()) {
        let y = to_f32(x)?.conv2d(&to_f32(kernel)?, padding, stride, 1, 1)?;
        return Ok(y.to_dtype(x.dtype())?);
    }
    Ok(x.conv2d(kernel, padding, stride, 1, 1)?)
}
