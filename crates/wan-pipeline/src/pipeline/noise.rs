//! Seeded Gaussian noise: the same seed gives the same latents on the same machine.
//!
//! The noise is drawn on the CPU from a ChaCha-based generator (stable across platforms and
//! releases of `rand`), then moved to the model's device, so a GPU and a CPU run of the same seed
//! start from the same latents.

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};

use crate::Result;

/// A fresh random seed in 0..=2^32-1 (the range the API accepts), for requests with seed -1.
pub fn draw_seed() -> u64 {
    rand::rng().random_range(0..=u32::MAX as u64)
}

/// Standard normal noise of `shape` (f32), from `seed`.
pub fn gaussian_noise(seed: u64, shape: &[usize], device: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(seed);
    let mut data = Vec::with_capacity(n);
    // Box-Muller: two uniforms give two independent normals.
    while data.len() < n {
        let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u2;
        data.push((r * theta.cos()) as f32);
        if data.len() < n {
            data.push((r * theta.sin()) as f32);
        }
    }
    Ok(Tensor::from_vec(data, shape, &Device::Cpu)?.to_device(device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_noise_other_seed_other_noise() {
        let a = gaussian_noise(7, &[2, 3, 5], &Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = gaussian_noise(7, &[2, 3, 5], &Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let c = gaussian_noise(8, &[2, 3, 5], &Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn noise_is_standard_normal() {
        let v = gaussian_noise(1, &[20000], &Device::Cpu).unwrap().to_vec1::<f32>().unwrap();
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "var {var}");
    }
}
