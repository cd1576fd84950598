//! The normalisation of an attention's queries and keys: the RMS norm across all heads
//! (`norm_q` / `norm_k`), then, in self-attention, the 3D RoPE; one pass on the CPU.
//!
//! Why fused: through candle these are a norm, a widening to f32, a copy to (B, H, L, D) for
//! candle's rope, the rope and a narrowing back, each a pass over q or k and most of them on one
//! thread. Here each row (one token, all heads) is read once and written once, on all cores.
//!
//! Rounding follows PyTorch 2.15 on the CPU, which diffusers runs: the norm is computed in f32
//! and rounded to the model dtype once (`x * rsqrt(mean(x^2) + eps) * weight`); the rotation
//! reads that rounded value, computes `x1 * cos - x2 * sin` (and `x1 * sin + x2 * cos`) in f32,
//! and rounds again, as diffusers' `apply_rotary_emb` stores into a tensor of the input's dtype.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use half::{bf16, f16};
use rayon::prelude::*;

use super::layers::RmsNorm;
use super::rope::RopeTables;
use crate::kernels::{contiguous, has_avx512f, sum_f64, Elem};
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
        let wide = has_avx512f();
        out.par_chunks_mut(width).zip(x.par_chunks(width)).enumerate().for_each(|(row, (o, x))| {
            let token = row % tokens;
            let rope = self.rope.map(|(cos, sin)| (&cos[token * half..(token + 1) * half], &sin[token * half..(token + 1) * half]));
            if wide {
                // SAFETY: the CPU has AVX-512F (checked by `has_avx512f`).
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    norm_rope_row_avx512(o, x, weight, self.eps, rope);
                    return;
                }
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

/// `norm` of x (B, L, H * D) over its last dimension, then, with `rope`, the rotation of each
/// head's interleaved pairs by token. Returns (B, L, H * D) in x's dtype.
pub fn norm_rope(x: &Tensor, norm: &RmsNorm, rope: Option<&RopeTables>, heads: usize) -> Result<Tensor> {
    let weight = norm.weight();
    let fused = x.device().is_cpu() && x.dtype() == weight.dtype() && matches!(x.dtype(), DType::F32 | DType::BF16 | DType::F16);
    if fused {
        let rope = rope.map(|r| (r.host.0.as_slice(), r.host.1.as_slice()));
        let op = NormRope { eps: norm.eps(), heads, rope };
        return Ok(x.contiguous()?.apply_op2_no_bwd(weight, &op)?);
    }
    let normed = norm.forward(x)?;
    match rope {
        Some(rope) => rope.apply(&normed, heads),
        None => Ok(normed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transformer::embeddings::PatchGrid;
    use crate::transformer::rope::RotaryEmbedding;
    use candle_core::{Device, D};
    use candle_nn::VarBuilder;

    /// PyTorch's composition on the same values: the norm in f32 rounded once, and the rotation
    /// in f32 of those rounded values, rounded again. Returns (normed, rotated).
    fn reference(x: &Tensor, weight: &Tensor, eps: f64, rope: &RopeTables, heads: usize) -> (Tensor, Tensor) {
        let dtype = x.dtype();
        let x32 = x.to_dtype(DType::F32).unwrap();
        let ms = x32.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let inv = (ms + eps).unwrap().sqrt().unwrap().recip().unwrap();
        let normed = x32.broadcast_mul(&inv).unwrap().broadcast_mul(&weight.to_dtype(DType::F32).unwrap()).unwrap().to_dtype(dtype).unwrap();
        let rotated = rope.apply(&normed, heads).unwrap();
        (normed, rotated)
    }

    /// Largest amount by which |got - want| exceeds the rounding allowed for the dtype.
    fn excess(got: &Tensor, want: &Tensor) -> f32 {
        // f32: the sums differ in order only. bf16: at most one unit in the last place of each of
        // the two roundings, where the f64 and f32 sums of squares fall either side of a tie.
        let rel = if want.dtype() == DType::BF16 { 2.0 / 128.0 } else { 1e-6 };
        let (got, want) = (got.to_dtype(DType::F32).unwrap(), want.to_dtype(DType::F32).unwrap());
        let bound = want.abs().unwrap().affine(rel, 1e-6).unwrap();
        ((&got - &want).unwrap().abs().unwrap() - bound).unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn fused_norm_and_rope_equal_the_separate_steps() {
        let dev = Device::Cpu;
        let (heads, head_dim) = (3, 12);
        let width = heads * head_dim;
        let grid = PatchGrid { frames: 2, height: 3, width: 4 };
        let rope = RotaryEmbedding::new(head_dim, 16).tables(grid, &dev).unwrap();
        for dtype in [DType::F32, DType::BF16] {
            let x = (Tensor::randn(0f32, 2.0, (2, grid.tokens(), width), &dev).unwrap() + 0.5).unwrap().to_dtype(dtype).unwrap();
            let weight = Tensor::randn(1f32, 0.3, width, &dev).unwrap().to_dtype(dtype).unwrap();
            let vb = VarBuilder::from_tensors([("weight".to_string(), weight.clone())].into(), dtype, &dev);
            let norm = RmsNorm::new(width, 1e-6, vb).unwrap();
            let (normed, rotated) = reference(&x, &weight, 1e-6, &rope, heads);
            let e = excess(&norm_rope(&x, &norm, Some(&rope), heads).unwrap(), &rotated);
            assert!(e <= 0.0, "{dtype:?}: fused q/k norm + rope differs from the separate steps by {e} beyond rounding");
            // Without the rotation it is the norm alone.
            let e = excess(&norm_rope(&x, &norm, None, heads).unwrap(), &normed);
            assert!(e <= 0.0, "{dtype:?}: fused q/k norm differs from the norm by {e} beyond rounding");
        }
    }
}
