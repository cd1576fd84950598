//! Fused attention on CUDA through candle-flash-attn (the `flash-attn` feature).
//!
//! Why: on a GPU the chunked attention of [`crate::transformer::attention`] materialises each
//! chunk's (H, c, Lk) scores in global memory and runs matmul, softmax and matmul as separate
//! kernels; FlashAttention-2 keeps the scores in on-chip memory and reads q, k and v once. It has
//! no per-key additive bias, so callers use it only when there is none.
//!
//! The vendored crate (third_party/candle-flash-attn) compiles the head-dim-128 kernels only (all
//! of Wan's models use 128); for any case it does not cover this returns `None` and the caller
//! keeps its own path, without error.

use candle_core::Tensor;

/// `softmax(q k^T * softmax_scale) v` for q (B, Lq, H * D) and k, v (B, Lk, H * D) as the DiT
/// holds them (head h in columns `h * D .. (h + 1) * D`); returns (B, Lq, H * D). `None` when
/// flash attention does not apply: not all on CUDA, dtype not bf16/f16 (or not one dtype), shapes
/// that do not split into `heads` heads, or a head dim without compiled kernels.
#[cfg(feature = "flash-attn")]
pub fn flash_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    softmax_scale: f32,
) -> candle_core::Result<Option<Tensor>> {
    use candle_core::DType;

    if ![q, k, v].iter().all(|t| t.device().is_cuda()) {
        return Ok(None);
    }
    let dtype = q.dtype();
    if !matches!(dtype, DType::BF16 | DType::F16) || k.dtype() != dtype || v.dtype() != dtype {
        return Ok(None);
    }
    let (b, lq, inner) = q.dims3()?;
    let (kb, lk, k_inner) = k.dims3()?;
    if heads == 0 || inner % heads != 0 || kb != b || k_inner != inner || v.dims3()? != (kb, lk, k_inner) {
        return Ok(None);
    }
    let d = inner / heads;
    // The kernels read D in 8-element vectors, and only some head dims are compiled.
    if d % 8 != 0 || !candle_flash_attn::supports_head_dim(d) {
        return Ok(None);
    }
    // (B, L, H * D) -> (B, L, H, D): the layout flash_attn takes; a view when already contiguous.
    let q4 = q.reshape((b, lq, heads, d))?;
    let k4 = k.reshape((b, lk, heads, d))?;
    let v4 = v.reshape((b, lk, heads, d))?;
    let out = candle_flash_attn::flash_attn(&q4, &k4, &v4, softmax_scale, false)?;
    Ok(Some(out.reshape((b, lq, inner))?))
}

/// Without the `flash-attn` feature there is no fused kernel: always `None`, so callers need no
/// `cfg` of their own.
#[cfg(not(feature = "flash-attn"))]
pub fn flash_attention(
    _q: &Tensor,
    _k: &Tensor,
    _v: &Tensor,
    _heads: usize,
    _softmax_scale: f32,
) -> candle_core::Result<Option<Tensor>> {
    Ok(None)
}
