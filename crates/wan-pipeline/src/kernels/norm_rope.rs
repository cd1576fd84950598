//! The RMS norm of an attention's queries or keys across all heads, then optionally the 3D RoPE
//! rotation of each head's interleaved pairs: one pass per token row, on all cores.
//!
//! Why fused: through candle these are a norm, a widening to f32, a copy to (B, H, L, D) for
//! candle's rope, the rope and a narrowing back, each a pass over q or k and most of them on one
//! thread. `transformer/qk_norm.rs` holds the candle-ops formulation and calls [`norm_rope`]
//! first.
//!
//! Rounding follows PyTorch 2.15 on the CPU, which diffusers runs: the norm is computed in f32
//! and rounded to the model dtype once (`x * rsqrt(mean(x^2) + eps) * weight`); the rotation
//! reads that rounded value, computes `x1 * cos - x2 * sin` (and `x1 * sin + x2 * cos`) in f32,
//! and rounds again, as diffusers' `apply_rotary_emb` stores into a tensor of the input's dtype.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use half::{bf16, f16};
use rayon::prelude::*;

use super::elem::{contiguous, sum_f64, Elem};
use super::isa::{isa, Isa};
use crate::Result;

/// The fused op; x (B, L, H * D) and the norm's weight (H * D) are its inputs.
struct NormRope<'a> {
    eps: f32,
    heads: usize,
    /// cos and sin tables, (L, D / 2) row-major each.
    rope: Option<(&'a [f32], &'a [f32])>,
}

impl NormRope<'_> {
    fn run<T: Elem>(&self, x: &[T], weight: &[T], tokens: usize) -> Vec<T> {
        let width = weight.len();
        if width == 0 || tokens == 0 {
            return x.to_vec();
        }
        let half = width / self.heads / 2;
        let mut out = vec![T::from_f32(0.0); x.len()];
        let isa = isa();
        out.par_chunks_mut(width).zip(x.par_chunks(width)).enumerate().for_each(|(row, (o, x))| {
            let token = row % tokens;
            let rope = self.rope.map(|(cos, sin)| (&cos[token * half..(token + 1) * half], &sin[token * half..(token + 1) * half]));
            #[cfg(target_arch = "x86_64")]
            match isa {
                // SAFETY: `isa()` detected the instruction set each variant is compiled for.
                Isa::Avx512 => return unsafe { norm_rope_row_avx512(o, x, weight, self.eps, rope) },
                Isa::Avx2Fma => return unsafe { norm_rope_row_avx2(o, x, weight, self.eps, rope) },
                Isa::Baseline => {}
            }
            norm_rope_row(o, x, weight, self.eps, rope)
        });
        out
    }
}

/// One token's row: the norm, then each head's pairs rotated by `rope` (this token's cos, sin).
#[inline(always)]
fn norm_rope_row<T: Elem>(o: &mut [T], x: &[T], weight: &[T], eps: f32, rope: Option<(&[f32], &[f32])>) {
    let mean_sq = (sum_f64(x, |v| f64::from(v) * f64::from(v)) / x.len() as f64) as f32;
    let inv_rms = 1.0 / (mean_sq + eps).sqrt();
    for ((o, x), w) in o.iter_mut().zip(x).zip(weight) {
        *o = T::from_f32(x.to_f32() * inv_rms * w.to_f32());
    }
    let Some((cos, sin)) = rope else { return };
    for head in o.chunks_exact_mut(2 * cos.len()) {
        for (pair, (&c, &s)) in head.chunks_exact_mut(2).zip(cos.iter().zip(sin)) {
            let (x1, x2) = (pair[0].to_f32(), pair[1].to_f32());
            pair[0] = T::from_f32(x1 * c - x2 * s);
            pair[1] = T::from_f32(x1 * s + x2 * c);
        }
    }
}

/// [`norm_rope_row`] compiled for AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn norm_rope_row_avx512<T: Elem>(o: &mut [T], x: &[T], weight: &[T], eps: f32, rope: Option<(&[f32], &[f32])>) {
    norm_rope_row(o, x, weight, eps, rope)
}

/// [`norm_rope_row`] compiled for AVX2 + FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn norm_rope_row_avx2<T: Elem>(o: &mut [T], x: &[T], weight: &[T], eps: f32, rope: Option<(&[f32], &[f32])>) {
    norm_rope_row(o, x, weight, eps, rope)
}

impl CustomOp2 for NormRope<'_> {
    fn name(&self) -> &'static str {
        "wan-qk-norm-rope"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let &[_, tokens, width] = l1.dims() else { candle_core::bail!("q/k norm: x must be (B, L, H * D), got {:?}", l1.dims()) };
        if l2.dims() != [width] || self.heads == 0 || width % (2 * self.heads) != 0 {
            candle_core::bail!("q/k norm: weight {:?} does not fit x {:?} with {} heads", l2.dims(), l1.dims(), self.heads);
        }
        if let Some((cos, sin)) = self.rope {
            let want = tokens * width / self.heads / 2;
            if cos.len() != want || sin.len() != want {
                candle_core::bail!("q/k norm: rope tables of {} values, {want} needed for {tokens} tokens", cos.len());
            }
        }
        let storage = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(w)) => CpuStorage::F32(self.run(contiguous(x, l1)?, contiguous(w, l2)?, tokens)),
            (CpuStorage::BF16(x), CpuStorage::BF16(w)) => CpuStorage::BF16(self.run::<bf16>(contiguous(x, l1)?, contiguous(w, l2)?, tokens)),
            (CpuStorage::F16(x), CpuStorage::F16(w)) => CpuStorage::F16(self.run::<f16>(contiguous(x, l1)?, contiguous(w, l2)?, tokens)),
            _ => candle_core::bail!("q/k norm: x and weight must share one float dtype"),
        };
        Ok((storage, l1.shape().clone()))
    }
}

/// The norm (weight `weight` (H * D), `eps`) of x (B, L, H * D) over its last dimension, then,
/// with `rope` (this geometry's cos and sin tables, (L, D / 2) each, row-major on the host), the
/// rotation of each head's pairs. `None` unless the native backend runs on x's device and x and
/// the weight share one float dtype.
pub fn norm_rope(x: &Tensor, weight: &Tensor, eps: f32, rope: Option<(&[f32], &[f32])>, heads: usize) -> Result<Option<Tensor>> {
    if !crate::backend::native_on(x.device()) {
        return Ok(None);
    }
    norm_rope_cpu(x, weight, eps, rope, heads)
}

/// [`norm_rope`] without the backend check (the tests compare it with the candle-ops form).
pub fn norm_rope_cpu(x: &Tensor, weight: &Tensor, eps: f32, rope: Option<(&[f32], &[f32])>, heads: usize) -> Result<Option<Tensor>> {
    if !(x.dtype() == weight.dtype() && matches!(x.dtype(), DType::F32 | DType::BF16 | DType::F16)) {
        return Ok(None);
    }
    let op = NormRope { eps, heads, rope };
    Ok(Some(x.contiguous()?.apply_op2_no_bwd(weight, &op)?))
}
