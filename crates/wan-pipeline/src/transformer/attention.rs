//! Self- and cross-attention of the DiT blocks (diffusers' `WanAttention` + `WanAttnProcessor`),
//! and the attention they share: the CPU kernel of [`crate::kernels::attention`] where it runs,
//! otherwise candle's ops in query chunks, so that memory never grows with the square of the
//! token count.

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Module, Tensor};
use candle_nn::VarBuilder;

use super::config::WanTransformerConfig;
use super::layers::RmsNorm;
use crate::linear::{linear_stored, Linear};
use super::qk_norm::norm_rope;
use super::rope::RopeTables;
use crate::Result;

/// The most memory one chunk of attention scores (and its softmax) may take. At 81 frames of
/// 832x480 (32,760 tokens, 12 heads) the full score matrix would be ~50 GB in f32; with this
/// budget the kernel processes ~170 queries at a time and holds ~0.5 GB of scores at most.
pub const SCORE_BUDGET_BYTES: usize = 256 << 20;

/// How many query rows fit the budget when each row costs `batch_heads * keys` scores (plus the
/// same again for the softmax output).
fn query_chunk(batch_heads: usize, keys: usize, queries: usize, budget: usize) -> usize {
    let row_bytes = 2 * batch_heads * keys.max(1) * std::mem::size_of::<f32>();
    (budget / row_bytes.max(1)).clamp(1, queries.max(1))
}

/// `softmax(q k^T / sqrt(D) + key_bias) v` for q (B, H, Lq, D), k and v (B, H, Lk, D); returns
/// (B, H, Lq, D). `key_bias` (Lk,) adds a constant to every query's score of each key (used to
/// give a deduplicated key the weight of its copies: `ln(copies)`).
///
/// Queries are processed in chunks sized by [`SCORE_BUDGET_BYTES`], so the memory never grows
/// with `Lq * Lk`. Scores are formed in the model dtype (matmul) but the softmax always runs in
/// f32, as PyTorch's attention kernels accumulate in f32.
pub fn chunked_attention(q: &Tensor, k: &Tensor, v: &Tensor, key_bias: Option<&Tensor>) -> Result<Tensor> {
    chunked_attention_with_budget(q, k, v, key_bias, SCORE_BUDGET_BYTES)
}

/// [`chunked_attention`] with an explicit score budget in bytes.
pub fn chunked_attention_with_budget(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    key_bias: Option<&Tensor>,
    budget: usize,
) -> Result<Tensor> {
    let out_dtype = q.dtype();
    // The native backend runs half-precision attention in f32 on the same (already rounded) q,
    // k, v (see `kernels::attention_operands`); elsewhere these are q, k, v themselves.
    let (q, k, v) = crate::kernels::attention_operands(q, k, v)?;
    let dtype = q.dtype();
    let (b, h, lq, d) = q.dims4()?;
    let lk = k.dim(2)?;
    let q = (q * (1.0 / (d as f64).sqrt()))?;
    // (B, H, Lk, D) -> (B, H, D, Lk): a transposed view the matmul reads directly.
    let k_t = k.t()?;
    let key_bias = match key_bias {
        Some(bias) => Some(bias.to_dtype(DType::F32)?.reshape((1, 1, 1, lk))?),
        None => None,
    };
    let chunk = query_chunk(b * h, lk, lq, budget);
    let mut outputs = Vec::with_capacity(lq.div_ceil(chunk));
    let mut start = 0;
    while start < lq {
        let len = chunk.min(lq - start);
        let q_c = if len == lq { q.clone() } else { q.narrow(2, start, len)?.contiguous()? };
        // (B, H, c, D) x (B, H, D, Lk) -> (B, H, c, Lk)
        let mut scores = q_c.matmul(&k_t)?.to_dtype(DType::F32)?;
        if let Some(bias) = &key_bias {
            scores = scores.broadcast_add(bias)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(dtype)?;
        // (B, H, c, Lk) x (B, H, Lk, D) -> (B, H, c, D)
        outputs.push(probs.matmul(&v)?);
        start += len;
    }
    let out = if outputs.len() == 1 { outputs.remove(0) } else { Tensor::cat(&outputs, 2)? };
    Ok(out.to_dtype(out_dtype)?)
}

/// (B, L, H * D) -> (B, H, L, D), contiguous.
fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, l, inner) = x.dims3()?;
    Ok(x.reshape((b, l, heads, inner / heads))?.transpose(1, 2)?.contiguous()?)
}

/// (B, H, L, D) -> (B, L, H * D).
fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, l, d) = x.dims4()?;
    Ok(x.transpose(1, 2)?.reshape((b, l, h * d))?)
}

/// Whether [`attention`] may use a fused kernel (flash attention on CUDA, the native CPU kernel)
/// where one applies. On by default; the GPU check turns it off to time the chunked path on the
/// same binary.
static FUSED_ATTENTION: AtomicBool = AtomicBool::new(true);

/// Turns the fused attention kernels on or off for the whole process (the chunked candle-ops
/// path then runs everywhere).
pub fn set_fused_attention(enabled: bool) {
    FUSED_ATTENTION.store(enabled, Ordering::Relaxed);
}

/// Attention of q (B, Lq, H * D) to k, v (B, Lk, H * D), head h in columns `h * D .. (h + 1) * D`;
/// returns (B, Lq, H * D) in q's dtype. `key_bias` as in [`chunked_attention`].
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, key_bias: Option<&Tensor>) -> Result<Tensor> {
    if FUSED_ATTENTION.load(Ordering::Relaxed) {
        // Flash attention (CUDA, `flash-attn` feature) first; it has no per-key bias.
        if key_bias.is_none() {
            let head_dim = q.dim(2)? / heads.max(1);
            let scale = 1.0 / (head_dim.max(1) as f32).sqrt();
            if let Some(out) = crate::kernels::flash::flash_attention(q, k, v, heads, scale)? {
                return Ok(out);
            }
        }
        if let Some(out) = crate::kernels::attention(q, k, v, heads, key_bias)? {
            return Ok(out);
        }
    }
    let out = chunked_attention(&split_heads(q, heads)?, &split_heads(k, heads)?, &split_heads(v, heads)?, key_bias)?;
    merge_heads(&out)
}

/// The keys and values a block's cross-attention reads: they depend only on the text (and image)
/// context, not on the latent or the timestep, so a sampler can compute them once per prompt.
#[derive(Debug, Clone)]
pub struct CrossKv {
    /// (B, Lk, H * D) text keys (after `norm_k`) and values.
    pub k: Tensor,
    pub v: Tensor,
    /// `ln(copies)` per text key when identical padding rows were folded into one key.
    pub key_bias: Option<Tensor>,
    /// (B, T_img, H * D) image keys (after `norm_added_k`) and values (i2v).
    pub image: Option<(Tensor, Tensor)>,
}

/// `add_k_proj`, `add_v_proj` and `norm_added_k` of an i2v cross-attention.
#[derive(Debug, Clone)]
struct ImageKvProjection {
    add_k_proj: Linear,
    add_v_proj: Linear,
    norm_added_k: RmsNorm,
}

/// One `attn1` (self) or `attn2` (cross) module of a block.
#[derive(Debug, Clone)]
pub struct WanAttention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    norm_q: RmsNorm,
    norm_k: RmsNorm,
    image_kv: Option<ImageKvProjection>,
    heads: usize,
}

impl WanAttention {
    /// `with_image_kv`: an i2v cross-attention with its own image key/value projections.
    pub fn new(cfg: &WanTransformerConfig, with_image_kv: bool, vb: VarBuilder) -> Result<Self> {
        let dim = cfg.inner_dim();
        let image_kv = match (with_image_kv, cfg.added_kv_proj_dim) {
            (true, Some(added)) => Some(ImageKvProjection {
                add_k_proj: linear_stored(added, dim, cfg.weight_storage, vb.pp("add_k_proj"))?,
                add_v_proj: linear_stored(added, dim, cfg.weight_storage, vb.pp("add_v_proj"))?,
                norm_added_k: RmsNorm::new(dim, cfg.eps, vb.pp("norm_added_k"))?,
            }),
            _ => None,
        };
        Ok(Self {
            to_q: linear_stored(dim, dim, cfg.weight_storage, vb.pp("to_q"))?,
            to_k: linear_stored(dim, dim, cfg.weight_storage, vb.pp("to_k"))?,
            to_v: linear_stored(dim, dim, cfg.weight_storage, vb.pp("to_v"))?,
            to_out: linear_stored(dim, dim, cfg.weight_storage, vb.pp("to_out").pp("0"))?,
            norm_q: RmsNorm::new(dim, cfg.eps, vb.pp("norm_q"))?,
            norm_k: RmsNorm::new(dim, cfg.eps, vb.pp("norm_k"))?,
            image_kv,
            heads: cfg.num_attention_heads,
        })
    }

    /// Self-attention of the tokens x (B, L, dim) with 3D RoPE on q and k; returns (B, L, dim).
    pub fn self_attention(&self, x: &Tensor, rope: &RopeTables) -> Result<Tensor> {
        let q = norm_rope(&self.to_q.forward(x)?, &self.norm_q, Some(rope), self.heads)?;
        let k = norm_rope(&self.to_k.forward(x)?, &self.norm_k, Some(rope), self.heads)?;
        let v = self.to_v.forward(x)?;
        let out = attention(&q, &k, &v, self.heads, None)?;
        Ok(self.to_out.forward(&out)?)
    }

    /// Projects the text context (B, Lt, dim) and, for i2v, the image context (B, T_img, dim)
    /// to this block's keys and values. `key_bias` is passed through to the kernel.
    pub fn context_kv(&self, text: &Tensor, key_bias: Option<&Tensor>, image: Option<&Tensor>) -> Result<CrossKv> {
        let k = norm_rope(&self.to_k.forward(text)?, &self.norm_k, None, self.heads)?;
        let v = self.to_v.forward(text)?;
        let image = match (&self.image_kv, image) {
            (Some(proj), Some(img)) => {
                let k_img = norm_rope(&proj.add_k_proj.forward(img)?, &proj.norm_added_k, None, self.heads)?;
                Some((k_img, proj.add_v_proj.forward(img)?))
            }
            _ => None,
        };
        Ok(CrossKv { k, v, key_bias: key_bias.cloned(), image })
    }

    /// Cross-attention of the tokens x (B, L, dim) to all text keys (no mask: the zero padding
    /// rows are attended to, as in diffusers) plus, for i2v, a separate attention to the image
    /// keys whose result is added before the output projection. Returns (B, L, dim).
    pub fn cross_attention(&self, x: &Tensor, kv: &CrossKv) -> Result<Tensor> {
        let q = norm_rope(&self.to_q.forward(x)?, &self.norm_q, None, self.heads)?;
        let mut out = attention(&q, &kv.k, &kv.v, self.heads, kv.key_bias.as_ref())?;
        if let Some((k_img, v_img)) = &kv.image {
            out = (out + attention(&q, k_img, v_img, self.heads, None)?)?;
        }
        Ok(self.to_out.forward(&out)?)
    }

    /// The projection named as in the checkpoint (`to_q`, `to_out.0`, `add_k_proj`).
    pub fn linear_at(&self, name: &str) -> Option<&Linear> {
        match name {
            "to_q" => Some(&self.to_q),
            "to_k" => Some(&self.to_k),
            "to_v" => Some(&self.to_v),
            "to_out.0" => Some(&self.to_out),
            "add_k_proj" => self.image_kv.as_ref().map(|kv| &kv.add_k_proj),
            "add_v_proj" => self.image_kv.as_ref().map(|kv| &kv.add_v_proj),
            _ => None,
        }
    }

    pub fn has_image_kv(&self) -> bool {
        self.image_kv.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, D};

    fn naive(q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
        let d = q.dim(D::Minus1).unwrap() as f64;
        let s = (q.matmul(&k.t().unwrap()).unwrap() / d.sqrt()).unwrap();
        candle_nn::ops::softmax_last_dim(&s).unwrap().matmul(v).unwrap()
    }

    #[test]
    fn chunked_equals_full_attention() {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (2, 3, 37, 8), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (2, 3, 29, 8), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (2, 3, 29, 8), &dev).unwrap();
        // A budget of 5 query rows forces 8 chunks, the last one partial.
        let budget = 5 * 2 * 6 * 29 * 4;
        let got = chunked_attention_with_budget(&q, &k, &v, None, budget).unwrap();
        let want = naive(&q, &k, &v);
        let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "max diff {diff}");
    }

    #[test]
    fn key_bias_counts_duplicated_keys() {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (1, 2, 5, 4), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (1, 2, 3, 4), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (1, 2, 3, 4), &dev).unwrap();
        // The last key repeated 4 times equals one copy with a bias of ln(4).
        let last = |t: &Tensor| t.narrow(2, 2, 1).unwrap().repeat((1, 1, 3, 1)).unwrap();
        let k_full = Tensor::cat(&[&k, &last(&k)], 2).unwrap();
        let v_full = Tensor::cat(&[&v, &last(&v)], 2).unwrap();
        let bias = Tensor::new(&[0f32, 0.0, 4f32.ln()], &dev).unwrap();
        let got = chunked_attention(&q, &k, &v, Some(&bias)).unwrap();
        let want = naive(&q, &k_full, &v_full);
        let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "max diff {diff}");
    }
}
