//! Widening a half-precision CPU tensor to f32 on all cores (candle's `to_dtype` is one
//! single-threaded pass): the fallback paths that multiply in f32 through candle use it.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::elem::{contiguous, Elem};

struct ToF32;

impl ToF32 {
    fn run<T: Elem>(x: &[T]) -> Vec<f32> {
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(1 << 16).zip(x.par_chunks(1 << 16)).for_each(|(o, x)| {
            for (o, x) in o.iter_mut().zip(x) {
                *o = x.to_f32();
            }
        });
        out
    }
}

impl CustomOp1 for ToF32 {
    fn name(&self) -> &'static str {
        "wan-to-f32"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::BF16(x) => Self::run(contiguous(x, l)?),
            CpuStorage::F16(x) => Self::run(contiguous(x, l)?),
            _ => candle_core::bail!("to-f32: expects bf16 or f16"),
        };
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

/// `x.to_dtype(F32)`, multi-threaded for contiguous half-precision CPU tensors.
pub fn to_f32(x: &Tensor) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && x.is_contiguous() && matches!(x.dtype(), DType::BF16 | DType::F16) {
        return x.apply_op1_no_bwd(&ToF32);
    }
    x.to_dtype(DType::F32)
}
