//! 3D rotary position embedding (diffusers' `WanRotaryPosEmbed`).
//!
//! The head dimension is split into a time part and two spatial parts (`h_dim = w_dim =
//! 2 * (head_dim / 6)`, `t_dim` the rest: 44/42/42 for 128), each with its own frequencies
//! `theta^(-2i/part)`, and each rotates interleaved pairs `(x[2i], x[2i+1])` of q and k by the
//! angle of the token's frame, row or column. The per-axis tables are computed in f64 and rounded
//! to f32 once, as diffusers does, so the angles of far positions stay exact.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::embeddings::PatchGrid;
use crate::{Error, Result};

const THETA: f64 = 10000.0;

/// cos/sin of `position * frequency` for one axis: `rows` positions x `pairs` frequencies, f32.
#[derive(Debug, Clone)]
struct AxisTable {
    pairs: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl AxisTable {
    fn new(part_dim: usize, rows: usize) -> Self {
        let pairs = part_dim / 2;
        let inv_freq: Vec<f64> = (0..pairs).map(|i| 1.0 / THETA.powf((2 * i) as f64 / part_dim as f64)).collect();
        let mut cos = Vec::with_capacity(rows * pairs);
        let mut sin = Vec::with_capacity(rows * pairs);
        for pos in 0..rows {
            for &f in &inv_freq {
                let angle = pos as f64 * f;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        Self { pairs, cos, sin }
    }

    fn row(&self, pos: usize) -> (&[f32], &[f32]) {
        let r = pos * self.pairs..(pos + 1) * self.pairs;
        (&self.cos[r.clone()], &self.sin[r])
    }
}

/// The per-axis tables of a model, from which each forward builds its token tables.
#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    axes: [AxisTable; 3],
    max_seq_len: usize,
    head_dim: usize,
}

/// The rotation of one forward: per token, the cos and sin of each interleaved pair's angle.
#[derive(Debug, Clone)]
pub struct RopeTables {
    /// (L, head_dim / 2) f32: one entry per rotated pair.
    pub cos: Tensor,
    pub sin: Tensor,
    /// The same tables in host memory, row-major, for the fused CPU kernel of `qk_norm`.
    pub(super) host: Arc<(Vec<f32>, Vec<f32>)>,
}

impl RotaryEmbedding {
    pub fn new(head_dim: usize, max_seq_len: usize) -> Self {
        let h_dim = 2 * (head_dim / 6);
        let t_dim = head_dim - 2 * h_dim;
        Self {
            axes: [AxisTable::new(t_dim, max_seq_len), AxisTable::new(h_dim, max_seq_len), AxisTable::new(h_dim, max_seq_len)],
            max_seq_len,
            head_dim,
        }
    }

    /// The (L, head_dim / 2) tables for the tokens of `grid` in (f, h, w) row-major order.
    pub fn tables(&self, grid: PatchGrid, device: &Device) -> Result<RopeTables> {
        let largest = grid.frames.max(grid.height).max(grid.width);
        if largest > self.max_seq_len {
            return Err(Error::InvalidInput(format!(
                "latent grid {grid:?} exceeds the rotary table length rope_max_seq_len={}",
                self.max_seq_len
            )));
        }
        let half = self.head_dim / 2;
        let mut cos = Vec::with_capacity(grid.tokens() * half);
        let mut sin = Vec::with_capacity(grid.tokens() * half);
        for f in 0..grid.frames {
            for h in 0..grid.height {
                for w in 0..grid.width {
                    for (axis, pos) in self.axes.iter().zip([f, h, w]) {
                        let (c, s) = axis.row(pos);
                        cos.extend_from_slice(c);
                        sin.extend_from_slice(s);
                    }
                }
            }
        }
        let shape = (grid.tokens(), half);
        Ok(RopeTables {
            cos: Tensor::from_slice(&cos, shape, device)?,
            sin: Tensor::from_slice(&sin, shape, device)?,
            host: Arc::new((cos, sin)),
        })
    }
}

impl RopeTables {
    /// Rotates q or k of shape (B, L, H * head_dim). The rotation runs in f32, as diffusers keeps
    /// the rope tables in f32 and casts the product back.
    pub fn apply(&self, x: &Tensor, heads: usize) -> Result<Tensor> {
        let (b, l, width) = x.dims3()?;
        let dtype = x.dtype();
        // (B, L, H * D) -> (B, H, L, D), the layout candle's rope reads.
        let x32 = x.to_dtype(DType::F32)?.reshape((b, l, heads, width / heads))?.transpose(1, 2)?.contiguous()?;
        let rotated = candle_nn::rotary_emb::rope_i(&x32, &self.cos, &self.sin)?;
        Ok(rotated.transpose(1, 2)?.reshape((b, l, width))?.to_dtype(dtype)?)
    }

    /// The tables as diffusers' debug view shows them: (L, head_dim), each pair's value repeated.
    pub fn full_tables(&self) -> Result<(Tensor, Tensor)> {
        let repeat = |t: &Tensor| -> Result<Tensor> {
            let (l, half) = t.dims2()?;
            // (L, D/2) -> (L, D/2, 2) -> (L, D)
            Ok(t.unsqueeze(2)?.broadcast_as((l, half, 2))?.reshape((l, half * 2))?)
        };
        Ok((repeat(&self.cos)?, repeat(&self.sin)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_head_dim_like_diffusers() {
        let rope = RotaryEmbedding::new(128, 8);
        assert_eq!([rope.axes[0].pairs, rope.axes[1].pairs, rope.axes[2].pairs], [22, 21, 21]);
        let grid = PatchGrid { frames: 2, height: 3, width: 4 };
        let t = rope.tables(grid, &Device::Cpu).unwrap();
        assert_eq!(t.cos.dims(), &[24, 64]);
        // Token (f=1, h=2, w=3) is the last one; its first t-pair angle is 1 * theta^0 = 1 rad.
        let cos: Vec<Vec<f32>> = t.cos.to_vec2().unwrap();
        assert_eq!(cos[23][0], 1f64.cos() as f32);
        // Its first h-pair angle is 2 rad, first w-pair angle 3 rad.
        assert_eq!(cos[23][22], 2f64.cos() as f32);
        assert_eq!(cos[23][43], 3f64.cos() as f32);
        assert!(rope.tables(PatchGrid { frames: 9, height: 1, width: 1 }, &Device::Cpu).is_err());
    }
}
