//! Fused elementwise steps of a DiT block, with a multi-threaded CPU kernel and a generic
//! candle-ops fallback for every other device (or layout).
//!
//! Why: on the CPU every candle elementwise op is one single-threaded pass over memory. A block
//! made of separate ops (layer norm as mean / sub / sqr / mean / mul, then the modulation, the
//! GELU, the gated residual...) spends ~45 passes over its activations; at 320 tokens of the
//! 1.3B model that was a quarter of the forward's time next to the matmuls. Each kernel here
//! reads its inputs once and writes once, on all cores. The results equal the generic path up
//! to float rounding (checked by the tests below and by the parity fixtures).

use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::layers::layer_norm_f32;
use crate::kernels::{contiguous, gelu_tanh, has_avx512f, sum_f64, Elem};
use crate::Result;

/// Whether the CPU kernels apply: tensors on the CPU, contiguous, of a float dtype they handle.
fn cpu_ready(tensors: &[&Tensor]) -> bool {
    tensors.iter().all(|t| t.device().is_cpu() && t.is_contiguous() && matches!(t.dtype(), DType::F32 | DType::BF16 | DType::F16))
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
        let wide = has_avx512f();
        out.par_chunks_mut(dim).zip(x.par_chunks(dim)).enumerate().for_each(|(row, (o, x))| {
            let g = (row / self.rows_per_group).min(groups - 1);
            let (m, a) = (&mul[g * dim..(g + 1) * dim], &add[g * dim..(g + 1) * dim]);
            if wide {
                // SAFETY: the CPU has AVX-512F (checked by `has_avx512f`).
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    norm_affine_row_avx512(o, x, m, a, self.eps);
                    return;
                }
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
/// computed in f32 and returned in x's dtype. Used for the modulated norms (`mul = 1 + scale`,
/// `add = shift`) and the affine `norm2` (`mul = weight`, `add = bias`).
pub fn norm_affine(x: &Tensor, mul: &Tensor, add: &Tensor, eps: f64) -> Result<Tensor> {
    let (b, l, d) = x.dims3()?;
    let groups = mul.elem_count() / d.max(1);
    if cpu_ready(&[x]) && mul.dtype() == DType::F32 && add.dtype() == DType::F32 && (groups == b || groups == 1) {
        let (mul, add) = (mul.contiguous()?, add.contiguous()?);
        let rows_per_group = if groups == 1 { b * l } else { l };
        return Ok(x.apply_op3_no_bwd(&mul, &add, &NormAffine { eps, rows_per_group: rows_per_group.max(1) })?);
    }
    let normed = layer_norm_f32(x, eps)?;
    Ok(normed.broadcast_mul(mul)?.broadcast_add(add)?.to_dtype(x.dtype())?)
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
        let wide = has_avx512f();
        out.par_chunks_mut(dim).zip(x.par_chunks(dim).zip(u.par_chunks(dim))).enumerate().for_each(|(row, (o, (x, u)))| {
            let g = (row / self.rows_per_group).min(groups - 1);
            let gate = &gate[g * dim..(g + 1) * dim];
            if wide {
                // SAFETY: the CPU has AVX-512F (checked by `has_avx512f`).
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    gated_row_avx512(o, x, u, gate);
                    return;
                }
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

/// `x + u` for x, u (B, L, D) of one dtype: the sum in f32 rounded once, as PyTorch adds two
/// half-precision tensors; multi-threaded on the CPU (candle's add is one single-threaded pass).
pub fn residual_add(x: &Tensor, u: &Tensor) -> Result<Tensor> {
    let (b, _, d) = x.dims3()?;
    if cpu_ready(&[x, u]) && x.dtype() == u.dtype() {
        // A gate of ones: x + u * 1 is x + u exactly, in f32.
        let ones = Tensor::ones((b, 1, d), DType::F32, x.device())?;
        return gated_residual(x, u, &ones);
    }
    Ok((x + u)?)
}

/// `(x.float() + u.float() * gate).type_as(x)` for x, u (B, L, D) and gate (B, 1, D) f32.
pub fn gated_residual(x: &Tensor, u: &Tensor, gate: &Tensor) -> Result<Tensor> {
    let (b, l, d) = x.dims3()?;
    if cpu_ready(&[x, u]) && x.dtype() == u.dtype() && gate.dtype() == DType::F32 && gate.elem_count() == b * d {
        let gate = gate.contiguous()?;
        return Ok(x.apply_op3_no_bwd(u, &gate, &GatedResidual { rows_per_group: l.max(1) })?);
    }
    let dtype = x.dtype();
    let sum = x.to_dtype(DType::F32)?.add(&u.to_dtype(DType::F32)?.broadcast_mul(gate)?)?;
    Ok(sum.to_dtype(dtype)?)
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
        #[cfg(target_arch = "x86_64")]
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        out.par_chunks_mut(4096).zip(x.par_chunks(4096)).for_each(|(o, x)| {
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: the CPU supports AVX2 and FMA (checked above).
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

/// GELU (tanh approximation), multi-threaded on the CPU.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if cpu_ready(&[x]) {
        return Ok(x.apply_op1_no_bwd(&GeluTanh)?);
    }
    Ok(x.gelu()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::to_f32;
    use candle_core::Device;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap()).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap()
    }

    #[test]
    fn cpu_kernels_match_generic_ops() {
        let dev = Device::Cpu;
        let x = (Tensor::randn(0f32, 3.0, (2, 5, 24), &dev).unwrap() + 10.0).unwrap();
        let u = Tensor::randn(0f32, 1.0, (2, 5, 24), &dev).unwrap();
        let mul = Tensor::randn(1f32, 0.5, (2, 1, 24), &dev).unwrap();
        let add = Tensor::randn(0f32, 0.5, (2, 1, 24), &dev).unwrap();
        let generic = layer_norm_f32(&x, 1e-6).unwrap().broadcast_mul(&mul).unwrap().broadcast_add(&add).unwrap();
        assert!(max_diff(&norm_affine(&x, &mul, &add, 1e-6).unwrap(), &generic) < 1e-5);
        // One shared affine row (norm2's weight and bias).
        let w = mul.narrow(0, 1, 1).unwrap();
        let bias = add.narrow(0, 1, 1).unwrap();
        let generic = layer_norm_f32(&x, 1e-6).unwrap().broadcast_mul(&w).unwrap().broadcast_add(&bias).unwrap();
        assert!(max_diff(&norm_affine(&x, &w, &bias, 1e-6).unwrap(), &generic) < 1e-5);

        let want = (&x + u.broadcast_mul(&mul).unwrap()).unwrap();
        assert!(max_diff(&gated_residual(&x, &u, &mul).unwrap(), &want) < 1e-5);
        // The residual add rounds once, as candle's (and PyTorch's) add of two bf16 tensors.
        for dtype in [DType::F32, DType::BF16] {
            let (xd, ud) = (x.to_dtype(dtype).unwrap(), u.to_dtype(dtype).unwrap());
            assert_eq!(max_diff(&residual_add(&xd, &ud).unwrap(), &(&xd + &ud).unwrap()), 0.0, "{dtype:?} residual add");
        }
        assert!(max_diff(&gelu(&u).unwrap(), &u.gelu().unwrap()) < 1e-6);

        let wide = Tensor::arange(-2000i64, 2000, &dev).unwrap().to_dtype(DType::F32).unwrap().affine(0.01, 0.0).unwrap();
        assert!(max_diff(&gelu(&wide).unwrap(), &wide.gelu().unwrap()) < 2e-6);
        for v in [-100f32, -30.0, -1e-3, 0.0, 1e-3, 30.0, 100.0] {
            let t = Tensor::new(&[v], &dev).unwrap();
            assert!(max_diff(&gelu(&t).unwrap(), &t.gelu().unwrap()) < 1e-6, "gelu({v})");
        }
        let xb = u.to_dtype(DType::BF16).unwrap();
        assert_eq!(max_diff(&to_f32(&xb).unwrap(), &xb.to_dtype(DType::F32).unwrap()), 0.0);
        // bf16 keeps 8 significant bits: beside candle's own bf16 rounding near zero (1e-2), the
        // two may differ by one unit in the last place, |y| * 2^-7, which a fixed bound misses
        // at random for |y| >= 2.
        let got = gelu(&xb).unwrap().to_dtype(DType::F32).unwrap();
        let want = xb.gelu().unwrap().to_dtype(DType::F32).unwrap();
        let excess = ((&got - &want).unwrap().abs().unwrap() - want.abs().unwrap().affine(1.0 / 128.0, 1e-2).unwrap()).unwrap();
        assert!(excess.max_all().unwrap().to_scalar::<f32>().unwrap() <= 0.0, "bf16 gelu differs by more than its rounding");
    }
}
