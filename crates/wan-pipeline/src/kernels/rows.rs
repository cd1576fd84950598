//! Multi-threaded CPU row kernels of a DiT block: layer norm with a per-group affine, the gated
//! residual and the tanh GELU, each one pass over its input on all cores.
//!
//! Why: on the CPU every candle elementwise op is one single-threaded pass over memory. A block
//! made of separate ops (layer norm as mean / sub / sqr / mean / mul, then the modulation, the
//! GELU, the gated residual...) spends ~45 passes over its activations; at 320 tokens of the
//! 1.3B model that was a quarter of the forward's time next to the matmuls. The model files
//! (`transformer/fused.rs`) hold the candle-ops formulation of each step and call the entry
//! points here first; each returns `None` unless the backend is native on the tensors' device
//! ([`crate::backend::native_on`]) and the layout and dtypes are ones these kernels handle.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::elem::{contiguous, sum_f64, Elem};
use super::gelu::gelu_tanh;
use super::isa::{isa, Isa};
use crate::Result;

/// Whether the kernels apply: the native backend on the tensors' device, contiguous, of a float
/// dtype they handle.
fn ready(tensors: &[&Tensor]) -> bool {
    tensors.iter().all(|t| {
        crate::backend::native_on(t.device()) && t.is_contiguous() && matches!(t.dtype(), DType::F32 | DType::BF16 | DType::F16)
    })
}

// ---------------------------------------------------------------------------------------------
// Layer norm + per-group affine: `((x - mean) / sqrt(var + eps)) * mul + add`.

struct NormAffine {
    eps: f64,
    /// Rows sharing one row of `mul` / `add` (the tokens of one batch element; or all rows).
    rows_per_group: usize,
}

impl NormAffine {
    fn run<T: Elem>(&self, x: &[T], mul: &[f32], add: &[f32], dim: usize) -> Vec<T> {
        let mut out = vec![T::from_f32(0.0); x.len()];
        let groups = mul.len() / dim;
        let isa = isa();
        out.par_chunks_mut(dim).zip(x.par_chunks(dim)).enumerate().for_each(|(row, (o, x))| {
            let g = (row / self.rows_per_group).min(groups - 1);
            let (m, a) = (&mul[g * dim..(g + 1) * dim], &add[g * dim..(g + 1) * dim]);
            #[cfg(target_arch = "x86_64")]
            match isa {
                // SAFETY: `isa()` detected the instruction set each variant is compiled for.
                Isa::Avx512 => return unsafe { norm_affine_row_avx512(o, x, m, a, self.eps) },
                Isa::Avx2Fma => return unsafe { norm_affine_row_avx2(o, x, m, a, self.eps) },
                Isa::Baseline => {}
            }
            norm_affine_row(o, x, m, a, self.eps)
        });
        out
    }
}

/// One row: two passes in f64 (the mean, then the variance of the centred values), as accurate
/// as PyTorch's kernel, then `(x - mean) / std * m + a` in f32.
#[inline(always)]
fn norm_affine_row<T: Elem>(o: &mut [T], x: &[T], m: &[f32], a: &[f32], eps: f64) {
    let n = x.len() as f64;
    let mean = sum_f64(x, f64::from) / n;
    let var = sum_f64(x, |v| (f64::from(v) - mean).powi(2)) / n;
    let inv_std = (1.0 / (var + eps).sqrt()) as f32;
    let mean = mean as f32;
    for (((o, x), m), a) in o.iter_mut().zip(x).zip(m).zip(a) {
        let normed = (x.to_f32() - mean) * inv_std;
        *o = T::from_f32(normed * m + a);
    }
}

/// [`norm_affine_row`] compiled for AVX-512F, so its loops run 16 lanes wide.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn norm_affine_row_avx512<T: Elem>(o: &mut [T], x: &[T], m: &[f32], a: &[f32], eps: f64) {
    norm_affine_row(o, x, m, a, eps)
}

/// [`norm_affine_row`] compiled for AVX2 + FMA (8 lanes).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn norm_affine_row_avx2<T: Elem>(o: &mut [T], x: &[T], m: &[f32], a: &[f32], eps: f64) {
    norm_affine_row(o, x, m, a, eps)
}

impl CustomOp3 for NormAffine {
    fn name(&self) -> &'static str {
        "wan-norm-affine"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dim = l1.shape().dims().last().copied().unwrap_or(1).max(1);
        let (CpuStorage::F32(mul), CpuStorage::F32(add)) = (s2, s3) else {
            candle_core::bail!("norm-affine: mul and add must be f32")
        };
        let (mul, add) = (contiguous(mul, l2)?, contiguous(add, l3)?);
        if mul.len() % dim != 0 || mul.len() != add.len() || mul.is_empty() {
            candle_core::bail!("norm-affine: mul/add must be (G, {dim})")
        }
        let storage = match s1 {
            CpuStorage::F32(x) => CpuStorage::F32(self.run(contiguous(x, l1)?, mul, add, dim)),
            CpuStorage::BF16(x) => CpuStorage::BF16(self.run(contiguous(x, l1)?, mul, add, dim)),
            CpuStorage::F16(x) => CpuStorage::F16(self.run(contiguous(x, l1)?, mul, add, dim)),
            _ => candle_core::bail!("norm-affine: unsupported dtype"),
        };
        Ok((storage, l1.shape().clone()))
    }
}

/// Layer norm of x (B, L, D) over D, then `* mul + add` with mul/add (B, 1, D) or (1, 1, D) f32,
/// in x's dtype; `None` where the kernel does not apply (see [`ready`]).
pub fn norm_affine(x: &Tensor, mul: &Tensor, add: &Tensor, eps: f64) -> Result<Option<Tensor>> {
    if !ready(&[x]) {
        return Ok(None);
    }
    norm_affine_cpu(x, mul, add, eps)
}

/// [`norm_affine`] without the backend check (the tests compare it with the candle-ops form).
pub fn norm_affine_cpu(x: &Tensor, mul: &Tensor, add: &Tensor, eps: f64) -> Result<Option<Tensor>> {
    let (b, l, d) = x.dims3()?;
    let groups = mul.elem_count() / d.max(1);
    if !(mul.dtype() == DType::F32 && add.dtype() == DType::F32 && (groups == b || groups == 1)) {
        return Ok(None);
    }
    let (mul, add) = (mul.contiguous()?, add.contiguous()?);
    let rows_per_group = if groups == 1 { b * l } else { l };
    Ok(Some(x.apply_op3_no_bwd(&mul, &add, &NormAffine { eps, rows_per_group: rows_per_group.max(1) })?))
}

// ---------------------------------------------------------------------------------------------
// Gated residual: `x + u * gate` in f32.

struct GatedResidual {
    rows_per_group: usize,
}

impl GatedResidual {
    fn run<T: Elem>(&self, x: &[T], u: &[T], gate: &[f32], dim: usize) -> Vec<T> {
        let mut out = vec![T::from_f32(0.0); x.len()];
        let groups = gate.len() / dim;
        let isa = isa();
        out.par_chunks_mut(dim).zip(x.par_chunks(dim).zip(u.par_chunks(dim))).enumerate().for_each(|(row, (o, (x, u)))| {
            let g = (row / self.rows_per_group).min(groups - 1);
            let gate = &gate[g * dim..(g + 1) * dim];
            #[cfg(target_arch = "x86_64")]
            match isa {
                // SAFETY: `isa()` detected the instruction set each variant is compiled for.
                Isa::Avx512 => return unsafe { gated_row_avx512(o, x, u, gate) },
                Isa::Avx2Fma => return unsafe { gated_row_avx2(o, x, u, gate) },
                Isa::Baseline => {}
            }
            gated_row(o, x, u, gate)
        });
        out
    }
}

#[inline(always)]
fn gated_row<T: Elem>(o: &mut [T], x: &[T], u: &[T], gate: &[f32]) {
    for (((o, x), u), g) in o.iter_mut().zip(x).zip(u).zip(gate) {
        *o = T::from_f32(x.to_f32() + u.to_f32() * g);
    }
}

/// [`gated_row`] compiled for AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn gated_row_avx512<T: Elem>(o: &mut [T], x: &[T], u: &[T], gate: &[f32]) {
    gated_row(o, x, u, gate)
}

/// [`gated_row`] compiled for AVX2 + FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn gated_row_avx2<T: Elem>(o: &mut [T], x: &[T], u: &[T], gate: &[f32]) {
    gated_row(o, x, u, gate)
}

impl CustomOp3 for GatedResidual {
    fn name(&self) -> &'static str {
        "wan-gated-residual"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dim = l1.shape().dims().last().copied().unwrap_or(1).max(1);
        let CpuStorage::F32(gate) = s3 else { candle_core::bail!("gated-residual: gate must be f32") };
        let gate = contiguous(gate, l3)?;
        if gate.len() % dim != 0 || gate.is_empty() || l1.shape() != l2.shape() {
            candle_core::bail!("gated-residual: shapes do not match")
        }
        let storage = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(u)) => CpuStorage::F32(self.run(contiguous(x, l1)?, contiguous(u, l2)?, gate, dim)),
            (CpuStorage::BF16(x), CpuStorage::BF16(u)) => CpuStorage::BF16(self.run(contiguous(x, l1)?, contiguous(u, l2)?, gate, dim)),
            (CpuStorage::F16(x), CpuStorage::F16(u)) => CpuStorage::F16(self.run(contiguous(x, l1)?, contiguous(u, l2)?, gate, dim)),
            _ => candle_core::bail!("gated-residual: x and u must share a supported dtype"),
        };
        Ok((storage, l1.shape().clone()))
    }
}

/// `x + u` for x, u (B, L, D) of one dtype, the sum in f32 rounded once; `None` where the kernel
/// does not apply.
pub fn residual_add(x: &Tensor, u: &Tensor) -> Result<Option<Tensor>> {
    if !ready(&[x, u]) {
        return Ok(None);
    }
    residual_add_cpu(x, u)
}

/// [`residual_add`] without the backend check.
pub fn residual_add_cpu(x: &Tensor, u: &Tensor) -> Result<Option<Tensor>> {
    let (b, _, d) = x.dims3()?;
    // A gate of ones: x + u * 1 is x + u exactly, in f32.
    let ones = Tensor::ones((b, 1, d), DType::F32, x.device())?;
    gated_residual_cpu(x, u, &ones)
}

/// `(x.float() + u.float() * gate).type_as(x)` for x, u (B, L, D) and gate (B, 1, D) f32; `None`
/// where the kernel does not apply.
pub fn gated_residual(x: &Tensor, u: &Tensor, gate: &Tensor) -> Result<Option<Tensor>> {
    if !ready(&[x, u]) {
        return Ok(None);
    }
    gated_residual_cpu(x, u, gate)
}

/// [`gated_residual`] without the backend check.
pub fn gated_residual_cpu(x: &Tensor, u: &Tensor, gate: &Tensor) -> Result<Option<Tensor>> {
    let (b, l, d) = x.dims3()?;
    if !(x.dtype() == u.dtype() && gate.dtype() == DType::F32 && gate.elem_count() == b * d) {
        return Ok(None);
    }
    let gate = gate.contiguous()?;
    Ok(Some(x.apply_op3_no_bwd(u, &gate, &GatedResidual { rows_per_group: l.max(1) })?))
}

// ---------------------------------------------------------------------------------------------
// GELU, tanh approximation.

struct GeluTanh;

#[inline(always)]
fn gelu_slice<T: Elem>(o: &mut [T], x: &[T]) {
    for (o, x) in o.iter_mut().zip(x) {
        *o = T::from_f32(gelu_tanh(x.to_f32()));
    }
}

/// [`gelu_slice`] compiled for AVX2 + FMA, so the loop runs 8 lanes wide.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn gelu_slice_avx2<T: Elem>(o: &mut [T], x: &[T]) {
    gelu_slice(o, x)
}

impl GeluTanh {
    fn run<T: Elem>(x: &[T]) -> Vec<T> {
        let mut out = vec![T::from_f32(0.0); x.len()];
        let avx2 = isa() != Isa::Baseline;
        out.par_chunks_mut(4096).zip(x.par_chunks(4096)).for_each(|(o, x)| {
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: the CPU supports AVX2 and FMA (AVX-512 CPUs have both).
                unsafe { gelu_slice_avx2(o, x) };
                return;
            }
            gelu_slice(o, x)
        });
        out
    }
}

impl CustomOp1 for GeluTanh {
    fn name(&self) -> &'static str {
        "wan-gelu-tanh"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let storage = match s {
            CpuStorage::F32(x) => CpuStorage::F32(Self::run(contiguous(x, l)?)),
            CpuStorage::BF16(x) => CpuStorage::BF16(Self::run(contiguous(x, l)?)),
            CpuStorage::F16(x) => CpuStorage::F16(Self::run(contiguous(x, l)?)),
            _ => candle_core::bail!("gelu-tanh: unsupported dtype"),
        };
        Ok((storage, l.shape().clone()))
    }
}

/// GELU (tanh approximation), multi-threaded; `None` where the kernel does not apply.
pub fn gelu(x: &Tensor) -> Result<Option<Tensor>> {
    if !ready(&[x]) {
        return Ok(None);
    }
    gelu_cpu(x)
}

/// [`gelu`] without the backend check.
pub fn gelu_cpu(x: &Tensor) -> Result<Option<Tensor>> {
    Ok(Some(x.contiguous()?.apply_op1_no_bwd(&GeluTanh)?))
}
