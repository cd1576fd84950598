//! A linear layer's weight, laid out once at load time in the order the micro-kernels read it.

use candle_core::{CpuStorage, DType, Storage, Tensor};
use rayon::prelude::*;

use super::aligned::AlignedBuf;
use super::microkernel::{has_bf16_kernel, has_f32_kernel, NR};
use crate::{Error, Result};

/// Which kernel a packed weight is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackedFormat {
    /// f32 panels: `data[(panel * k + kk) * NR + j]` = `W[panel * NR + j][kk]`.
    F32,
    /// bf16 panels of k-pairs: `data[((panel * k_pairs + p) * NR + j) * 2 + t]` =
    /// `W[panel * NR + j][2p + t]`.
    Bf16,
}

/// The weight `W` (out_dim, in_dim) of `y = x W^T + b`, split into panels of [`NR`] output
/// features (the last zero-padded) and stored k-major within each panel; the bias, if any, in f32
/// padded to whole panels. Same size as the original weight: nothing else keeps a copy.
#[derive(Debug)]
pub struct PackedWeight {
    pub(super) format: PackedFormat,
    pub(super) out_dim: usize,
    pub(super) in_dim: usize,
    pub(super) panels: usize,
    pub(super) data: AlignedBuf,
    pub(super) bias: Option<Vec<f32>>,
}

impl PackedWeight {
    /// Packs a CPU weight of dtype f32 (or bf16) for this CPU's f32 (or bf16) kernel. `None` when
    /// there is no kernel for it here (the generic backend, another device or dtype, a CPU
    /// without AVX2 for f32 or without AVX-512 BF16 for bf16): the caller keeps candle's matmul.
    pub fn pack(weight: &Tensor, bias: Option<&Tensor>) -> Result<Option<Self>> {
        if !crate::backend::native_on(weight.device()) {
            return Ok(None);
        }
        Self::pack_for_cpu(weight, bias)
    }

    /// [`PackedWeight::pack`] without the backend check (the kernel tests use it, so that they
    /// run under `WAN_KERNELS=generic` too); still `None` off the CPU or without a kernel.
    pub fn pack_for_cpu(weight: &Tensor, bias: Option<&Tensor>) -> Result<Option<Self>> {
        let format = match weight.dtype() {
            DType::F32 if has_f32_kernel() => PackedFormat::F32,
            DType::BF16 if has_bf16_kernel() => PackedFormat::Bf16,
            _ => return Ok(None),
        };
        if !weight.device().is_cpu() {
            return Ok(None);
        }
        let (out_dim, in_dim) = weight.dims2()?;
        let weight = weight.contiguous()?;
        let panels = out_dim.div_ceil(NR);
        let (storage, layout) = weight.storage_and_layout();
        let Some((start, end)) = layout.contiguous_offsets() else {
            return Err(candle_core::Error::Msg("packed weight: layout not contiguous after contiguous()".into()).into());
        };
        let data = match (&*storage, format) {
            (Storage::Cpu(CpuStorage::F32(w)), PackedFormat::F32) => pack_f32(&w[start..end], out_dim, in_dim, panels),
            (Storage::Cpu(CpuStorage::BF16(w)), PackedFormat::Bf16) => pack_bf16(&w[start..end], out_dim, in_dim, panels),
            _ => return Ok(None),
        };
        let bias = match bias {
            Some(b) => {
                let mut v = b.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                if v.len() != out_dim {
                    return Err(Error::InvalidInput(format!("packed weight: bias has {} values for {out_dim} outputs", v.len())));
                }
                v.resize(panels * NR, 0.0);
                Some(v)
            }
            None => None,
        };
        Ok(Some(Self { format, out_dim, in_dim, panels, data, bias }))
    }

    pub fn format(&self) -> PackedFormat {
        self.format
    }

    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    /// Steps of k the kernel takes: `in_dim` for f32, pairs of k for bf16.
    pub(super) fn k_steps(&self) -> usize {
        match self.format {
            PackedFormat::F32 => self.in_dim,
            PackedFormat::Bf16 => self.in_dim.div_ceil(2),
        }
    }
}

/// Steps of k packed at once for all of a panel's rows: the block's writes (`PACK_BLOCK * NR`
/// values) stay in L1 while each row's segment is read front to back, instead of one store per
/// cache line of the panel.
const PACK_BLOCK: usize = 64;

fn pack_f32(w: &[f32], out_dim: usize, in_dim: usize, panels: usize) -> AlignedBuf {
    let panel_len = in_dim * NR;
    let mut data = AlignedBuf::zeroed(panels * panel_len * 4);
    data.as_f32_mut()[..panels * panel_len].par_chunks_mut(panel_len).enumerate().for_each(|(p, panel)| {
        let rows = NR.min(out_dim - p * NR);
        for k0 in (0..in_dim).step_by(PACK_BLOCK) {
            let k1 = (k0 + PACK_BLOCK).min(in_dim);
            for j in 0..rows {
                let row = &w[(p * NR + j) * in_dim..][k0..k1];
                for (k, &v) in (k0..k1).zip(row) {
                    panel[k * NR + j] = v;
                }
            }
        }
    });
    data
}

fn pack_bf16(w: &[half::bf16], out_dim: usize, in_dim: usize, panels: usize) -> AlignedBuf {
    let k_pairs = in_dim.div_ceil(2);
    let panel_len = k_pairs * NR;
    let mut data = AlignedBuf::zeroed(panels * panel_len * 4);
    // One u32 per (pair of k, output): k = 2p in the low half, 2p + 1 in the high half (zero past
    // an odd k's end), the layout `PackedFormat::Bf16` documents.
    data.as_u32_mut()[..panels * panel_len].par_chunks_mut(panel_len).enumerate().for_each(|(p, panel)| {
        let rows = NR.min(out_dim - p * NR);
        for q0 in (0..k_pairs).step_by(PACK_BLOCK) {
            let q1 = (q0 + PACK_BLOCK).min(k_pairs);
            for j in 0..rows {
                let row = &w[(p * NR + j) * in_dim..][..in_dim];
                for q in q0..q1 {
                    let lo = u32::from(row[2 * q].to_bits());
                    let hi = row.get(2 * q + 1).map_or(0, |v| u32::from(v.to_bits()));
                    panel[q * NR + j] = lo | hi << 16;
                }
            }
        }
    });
    data
}
