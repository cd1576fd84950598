//! `y = x W^T + b` with a [`PackedWeight`], as a candle op on CPU tensors.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use super::gemm::{matmul, Activations, Epilogue, Output};
use super::packed_weight::PackedWeight;

struct PackedLinearOp<'a> {
    weight: &'a PackedWeight,
    epilogue: Epilogue,
}

impl CustomOp1 for PackedLinearOp<'_> {
    fn name(&self) -> &'static str {
        "packed-linear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let w = self.weight;
        let dims = layout.dims();
        if dims.last() != Some(&w.in_dim) {
            candle_core::bail!("packed linear: input {dims:?} does not end in {}", w.in_dim);
        }
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("packed linear: input must be contiguous");
        };
        let rows = layout.shape().elem_count() / w.in_dim.max(1);
        let mut out_dims = dims.to_vec();
        if let Some(last) = out_dims.last_mut() {
            *last = w.out_dim;
        }
        let len = rows * w.out_dim;
        let storage = match storage {
            // The outputs are not zeroed first: `matmul` writes every element.
            CpuStorage::F32(x) => {
                let mut out = Vec::with_capacity(len);
                matmul(w, Activations::F32(&x[start..end]), rows, self.epilogue, Output::F32(&mut out.spare_capacity_mut()[..len]));
                // SAFETY: `matmul` wrote all `len` elements.
                unsafe { out.set_len(len) };
                CpuStorage::F32(out)
            }
            CpuStorage::BF16(x) => {
                let mut out = Vec::with_capacity(len);
                matmul(w, Activations::Bf16(&x[start..end]), rows, self.epilogue, Output::Bf16(&mut out.spare_capacity_mut()[..len]));
                // SAFETY: `matmul` wrote all `len` elements.
                unsafe { out.set_len(len) };
                CpuStorage::BF16(out)
            }
            _ => candle_core::bail!("packed linear: input must be f32 or bf16"),
        };
        Ok((storage, Shape::from(out_dims)))
    }
}

/// `x W^T + b` over the last dimension of a CPU tensor `x` (f32 or bf16; any leading dims), in
/// x's dtype.
pub fn packed_linear(x: &Tensor, weight: &PackedWeight) -> candle_core::Result<Tensor> {
    packed_linear_with(x, weight, Epilogue::None)
}

/// [`packed_linear`] followed by `epilogue` on each output while it is still in cache, before
/// the result is rounded to x's dtype.
pub fn packed_linear_with(x: &Tensor, weight: &PackedWeight, epilogue: Epilogue) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&PackedLinearOp { weight, epilogue })
}
