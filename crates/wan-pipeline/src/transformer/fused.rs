//! The elementwise steps of a DiT block, each as one function: the native CPU row kernel of
//! [`crate::kernels::rows`] where the backend runs it, else the same step in candle ops (what a
//! GPU runs). The two agree up to float rounding (checked by the tests below and by the parity
//! fixtures on both kernel paths).

use candle_core::{DType, Tensor};

use super::layers::layer_norm_f32;
use crate::kernels::rows;
use crate::Result;

/// Layer norm of x (B, L, D) over D, then `* mul + add` with mul/add (B, 1, D) or (1, 1, D) f32,
/// computed in f32 and returned in x's dtype. Used for the modulated norms (`mul = 1 + scale`,
/// `add = shift`) and the affine `norm2` (`mul = weight`, `add = bias`).
pub fn norm_affine(x: &Tensor, mul: &Tensor, add: &Tensor, eps: f64) -> Result<Tensor> {
    if let Some(out) = rows::norm_affine(x, mul, add, eps)? {
        return Ok(out);
    }
    let normed = layer_norm_f32(x, eps)?;
    Ok(normed.broadcast_mul(mul)?.broadcast_add(add)?.to_dtype(x.dtype())?)
}

/// `x + u` for x, u (B, L, D) of one dtype: the sum in f32 rounded once, as PyTorch adds two
/// half-precision tensors.
pub fn residual_add(x: &Tensor, u: &Tensor) -> Result<Tensor> {
    if let Some(out) = rows::residual_add(x, u)? {
        return Ok(out);
    }
    Ok((x + u)?)
}

/// `(x.float() + u.float() * gate).type_as(x)` for x, u (B, L, D) and gate (B, 1, D) f32.
pub fn gated_residual(x: &Tensor, u: &Tensor, gate: &Tensor) -> Result<Tensor> {
    if let Some(out) = rows::gated_residual(x, u, gate)? {
        return Ok(out);
    }
    let dtype = x.dtype();
    let sum = x.to_dtype(DType::F32)?.add(&u.to_dtype(DType::F32)?.broadcast_mul(gate)?)?;
    Ok(sum.to_dtype(dtype)?)
}

/// GELU (tanh approximation).
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if let Some(out) = rows::gelu(x)? {
        return Ok(out);
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
        // The kernels are called directly, without the backend check, so the test holds under
        // WAN_KERNELS=generic too; the steps themselves are checked by the parity fixtures.
        let dev = Device::Cpu;
        let x = (Tensor::randn(0f32, 3.0, (2, 5, 24), &dev).unwrap() + 10.0).unwrap();
        let u = Tensor::randn(0f32, 1.0, (2, 5, 24), &dev).unwrap();
        let mul = Tensor::randn(1f32, 0.5, (2, 1, 24), &dev).unwrap();
        let add = Tensor::randn(0f32, 0.5, (2, 1, 24), &dev).unwrap();
        let generic = layer_norm_f32(&x, 1e-6).unwrap().broadcast_mul(&mul).unwrap().broadcast_add(&add).unwrap();
        assert!(max_diff(&rows::norm_affine_cpu(&x, &mul, &add, 1e-6).unwrap().unwrap(), &generic) < 1e-5);
        // One shared affine row (norm2's weight and bias).
        let w = mul.narrow(0, 1, 1).unwrap();
        let bias = add.narrow(0, 1, 1).unwrap();
        let generic = layer_norm_f32(&x, 1e-6).unwrap().broadcast_mul(&w).unwrap().broadcast_add(&bias).unwrap();
        assert!(max_diff(&rows::norm_affine_cpu(&x, &w, &bias, 1e-6).unwrap().unwrap(), &generic) < 1e-5);

        let want = (&x + u.broadcast_mul(&mul).unwrap()).unwrap();
        assert!(max_diff(&rows::gated_residual_cpu(&x, &u, &mul).unwrap().unwrap(), &want) < 1e-5);
        // The residual add rounds once, as candle's (and PyTorch's) add of two bf16 tensors.
        for dtype in [DType::F32, DType::BF16] {
            let (xd, ud) = (x.to_dtype(dtype).unwrap(), u.to_dtype(dtype).unwrap());
            assert_eq!(max_diff(&rows::residual_add_cpu(&xd, &ud).unwrap().unwrap(), &(&xd + &ud).unwrap()), 0.0, "{dtype:?} residual add");
        }
        assert!(max_diff(&rows::gelu_cpu(&u).unwrap().unwrap(), &u.gelu().unwrap()) < 1e-6);

        let wide = Tensor::arange(-2000i64, 2000, &dev).unwrap().to_dtype(DType::F32).unwrap().affine(0.01, 0.0).unwrap();
        assert!(max_diff(&rows::gelu_cpu(&wide).unwrap().unwrap(), &wide.gelu().unwrap()) < 2e-6);
        for v in [-100f32, -30.0, -1e-3, 0.0, 1e-3, 30.0, 100.0] {
            let t = Tensor::new(&[v], &dev).unwrap();
            assert!(max_diff(&rows::gelu_cpu(&t).unwrap().unwrap(), &t.gelu().unwrap()) < 1e-6, "gelu({v})");
        }
        let xb = u.to_dtype(DType::BF16).unwrap();
        assert_eq!(max_diff(&to_f32(&xb).unwrap(), &xb.to_dtype(DType::F32).unwrap()), 0.0);
        // bf16 keeps 8 significant bits: beside candle's own bf16 rounding near zero (1e-2), the
        // two may differ by one unit in the last place, |y| * 2^-7, which a fixed bound misses
        // at random for |y| >= 2.
        let got = rows::gelu_cpu(&xb).unwrap().unwrap().to_dtype(DType::F32).unwrap();
        let want = xb.gelu().unwrap().to_dtype(DType::F32).unwrap();
        let excess = ((&got - &want).unwrap().abs().unwrap() - want.abs().unwrap().affine(1.0 / 128.0, 1e-2).unwrap()).unwrap();
        assert!(excess.max_all().unwrap().to_scalar::<f32>().unwrap() <= 0.0, "bf16 gelu differs by more than its rounding");
    }
}
