//! The VAE's channel norm (`WanRMS_norm`: `x / max(||x||_2 over channels, eps) * gamma`), with the
//! SiLU that follows it in every residual block fused in, as one multi-threaded pass.
//!
//! Why: as candle ops it is eight single-threaded passes over a frame-sized tensor (square, a
//! strided sum over the channel axis, root, max, divide, multiply, then the SiLU's own), at the
//! decoder's full resolution a large share of the VAE decode next to its convolutions.

use candle_core::{CpuStorage, DType, Device, Storage, Tensor};
use rayon::prelude::*;

use super::elem::SendPtr;

use crate::Result;

/// Pixels per task: their running sums stay in registers / L1 while the channels stream past.
const CHUNK: usize = 256;

/// `x` f32 on the CPU, `(.., C, H, W)` with the channels at `channel_dim`: each pixel's channel
/// vector divided by `max(its L2 norm, eps)`, times `gamma[c]`, then SiLU if `silu`. `None`
/// unless the native backend runs on x's device and x is f32.
pub fn channel_norm(x: &Tensor, channel_dim: usize, gamma: &[f32], eps: f32, silu: bool) -> Result<Option<Tensor>> {
    if !crate::backend::native_on(x.device()) || x.dtype() != DType::F32 {
        return Ok(None);
    }
    let dims = x.dims().to_vec();
    let c = dims.get(channel_dim).copied().unwrap_or(0);
    if c != gamma.len() {
        return Err(crate::Error::InvalidInput(format!("channel norm: input {dims:?} has {c} channels, gamma {}", gamma.len())));
    }
    let n: usize = dims[..channel_dim].iter().product();
    let p: usize = dims[channel_dim + 1..].iter().product();
    let x = x.contiguous()?;
    let (storage, layout) = x.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(data)) = &*storage else {
        return Ok(None);
    };
    let data = super::elem::contiguous(data, layout)?;
    let len = n * c * p;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let chunks = p.div_ceil(CHUNK);
    let out_ptr = SendPtr(out.spare_capacity_mut().as_mut_ptr().cast::<f32>());
    (0..n * chunks).into_par_iter().for_each(|task| {
        let out_ptr = out_ptr;
        let (ni, p0) = (task / chunks, (task % chunks) * CHUNK);
        let m = CHUNK.min(p - p0);
        let mut norm = [0f32; CHUNK];
        let norm = &mut norm[..m];
        for ci in 0..c {
            let row = &data[(ni * c + ci) * p + p0..][..m];
            norm.iter_mut().zip(row).for_each(|(s, v)| *s += v * v);
        }
        norm.iter_mut().for_each(|s| *s = s.sqrt().max(eps));
        for (ci, &g) in gamma.iter().enumerate() {
            let at = (ni * c + ci) * p + p0;
            let row = &data[at..][..m];
            // SAFETY: pixels p0..p0 + m of channel ci of item ni, inside `out` (len elements), and
            // only this task writes them.
            let o = unsafe { std::slice::from_raw_parts_mut(out_ptr.0.add(at), m) };
            for ((o, &v), &s) in o.iter_mut().zip(row).zip(norm.iter()) {
                let y = v / s * g;
                *o = if silu { y / (1.0 + (-y).exp()) } else { y };
            }
        }
    });
    // SAFETY: the tasks wrote every pixel of every channel of every item.
    unsafe { out.set_len(len) };
    Ok(Some(Tensor::from_vec(out, dims, &Device::Cpu)?))
}

