//! The normalisation of an attention's queries and keys: the RMS norm across all heads
//! (`norm_q` / `norm_k`), then, in self-attention, the 3D RoPE. The native backend runs both in
//! one pass ([`crate::kernels::norm_rope`]); otherwise they are candle ops, as a GPU runs them.

use candle_core::Tensor;

use super::layers::RmsNorm;
use super::rope::RopeTables;
use crate::Result;

/// `norm` of x (B, L, H * D) over its last dimension, then, with `rope`, the rotation of each
/// head's interleaved pairs by token. Returns (B, L, H * D) in x's dtype.
pub fn norm_rope(x: &Tensor, norm: &RmsNorm, rope: Option<&RopeTables>, heads: usize) -> Result<Tensor> {
    let host = rope.map(|r| (r.host.0.as_slice(), r.host.1.as_slice()));
    if let Some(out) = crate::kernels::norm_rope(x, norm.weight(), norm.eps(), host, heads)? {
        return Ok(out);
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
    use candle_core::{DType, Device, D};
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
            // The dispatching function, whichever backend runs it. In bf16 the generic path rounds
            // as candle's rms_norm does (not PyTorch's order), judged by the bf16 parity rule.
            if dtype == DType::F32 {
                let e = excess(&norm_rope(&x, &norm, Some(&rope), heads).unwrap(), &rotated);
                assert!(e <= 0.0, "q/k norm + rope differs from the separate steps by {e} beyond rounding");
            }
            let host = Some((rope.host.0.as_slice(), rope.host.1.as_slice()));
            let fused = crate::kernels::norm_rope_cpu(&x, &weight, 1e-6, host, heads).unwrap().unwrap();
            let e = excess(&fused, &rotated);
            assert!(e <= 0.0, "{dtype:?}: fused q/k norm + rope differs from the separate steps by {e} beyond rounding");
            // Without the rotation it is the norm alone.
            let fused = crate::kernels::norm_rope_cpu(&x, &weight, 1e-6, None, heads).unwrap().unwrap();
            let e = excess(&fused, &normed);
            assert!(e <= 0.0, "{dtype:?}: fused q/k norm differs from the norm by {e} beyond rounding");
        }
    }
}
