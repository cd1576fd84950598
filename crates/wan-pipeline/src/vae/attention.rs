//! `WanAttentionBlock`: single-head self-attention over the pixels of each frame separately.
//!
//! Frames never attend to each other, so the block needs no cache. The score matrix is
//! `(H*W)^2` per frame; queries are processed in blocks so that at large resolutions only a
//! `QUERY_BLOCK x H*W` slice of it exists at a time.

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

use super::conv2d::Conv2d;

use super::norm::WanRmsNorm;
use crate::Result;

/// Query rows per score block: bounds the score matrix to `QUERY_BLOCK * H * W` elements.
const QUERY_BLOCK: usize = 2048;

#[derive(Debug, Clone)]
pub struct AttentionBlock {
    norm: WanRmsNorm,
    to_qkv: Conv2d,
    proj: Conv2d,
    dim: usize,
}

impl AttentionBlock {
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm: WanRmsNorm::image(dim, vb.pp("norm"))?,
            to_qkv: Conv2d::new(dim, dim * 3, 1, 0, 1, vb.pp("to_qkv"))?,
            proj: Conv2d::new(dim, dim, 1, 0, 1, vb.pp("proj"))?,
            dim,
        })
    }

    /// `x` `(B, T, C, H, W)` -> same shape.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, c, h, w) = x.dims5()?;
        let n = b * t;
        let hw = h * w;
        // (B, T, C, H, W) -> (B*T, C, H, W)
        let frames = x.reshape((n, c, h, w))?;
        let qkv = self.to_qkv.forward(&self.norm.forward(&frames)?)?;
        // (N, 3C, H, W) -> (N, 3C, HW) -> (N, HW, 3C)
        let qkv = qkv.reshape((n, 3 * c, hw))?.transpose(1, 2)?;
        let q = qkv.narrow(2, 0, c)?.contiguous()?;
        let k = qkv.narrow(2, c, c)?.contiguous()?;
        let v = qkv.narrow(2, 2 * c, c)?.contiguous()?;
        let out = self.attend(&q, &k, &v)?;
        // (N, HW, C) -> (N, C, HW) -> (N, C, H, W)
        let out = out.transpose(1, 2)?.reshape((n, c, h, w))?;
        let out = self.proj.forward(&out)?;
        // (B*T, C, H, W) -> (B, T, C, H, W)
        Ok((out.reshape((b, t, c, h, w))? + x)?)
    }

    /// softmax(q k^T / sqrt(C)) v over `(N, L, C)` tensors, in f32, query block by query block.
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let dtype = q.dtype();
        let scale = 1.0 / (self.dim as f64).sqrt();
        let k_t = k.to_dtype(DType::F32)?.t()?.contiguous()?; // (N, C, L)
        let v = v.to_dtype(DType::F32)?;
        let len = q.dim(1)?;
        let mut blocks = Vec::with_capacity(len.div_ceil(QUERY_BLOCK));
        let mut start = 0;
        while start < len {
            let rows = QUERY_BLOCK.min(len - start);
            let qb = q.narrow(1, start, rows)?.to_dtype(DType::F32)?;
            let scores = (qb.matmul(&k_t)? * scale)?; // (N, rows, L)
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            blocks.push(probs.matmul(&v)?.to_dtype(dtype)?);
            start += rows;
        }
        Ok(Tensor::cat(&blocks, 1)?)
    }
}
