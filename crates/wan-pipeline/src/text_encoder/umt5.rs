//! The UMT5 encoder (transformers' `UMT5EncoderModel`), the text encoder of every Wan2.1 pipeline.
//!
//! UMT5 is T5 v1.1 with one difference that matters here: EVERY self-attention layer owns its
//! relative-position bias table (T5 shares layer 0's). Otherwise it is T5: RMS layer norm without
//! mean or bias, computed in f32; attention scores with no 1/sqrt(d) scaling; a gated-GELU
//! (tanh form) feed-forward; pre-norm residual blocks and a final layer norm.

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Embedding, VarBuilder};

use crate::linear::{linear_no_bias, Linear};
use crate::Result;

fn default_relative_attention_num_buckets() -> usize {
    32
}
fn default_relative_attention_max_distance() -> usize {
    128
}
fn default_layer_norm_epsilon() -> f64 {
    1e-6
}
fn default_feed_forward_proj() -> String {
    "gated-gelu".to_string()
}

/// `text_encoder/config.json` (the fields the encoder uses; defaults as transformers' UMT5Config).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Umt5Config {
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    #[serde(default = "default_relative_attention_num_buckets")]
    pub relative_attention_num_buckets: usize,
    #[serde(default = "default_relative_attention_max_distance")]
    pub relative_attention_max_distance: usize,
    #[serde(default = "default_layer_norm_epsilon")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_feed_forward_proj")]
    pub feed_forward_proj: String,
}

/// T5's layer norm: `w * x / sqrt(mean(x^2) + eps)`, the statistics in f32 and the normalised
/// value cast back to the model dtype before the weight multiplies it (as transformers does).
#[derive(Debug, Clone)]
struct T5LayerNorm {
    weight: Tensor,
    eps: f64,
}

impl T5LayerNorm {
    fn new(cfg: &Umt5Config, vb: VarBuilder) -> Result<Self> {
        Ok(Self { weight: vb.get(cfg.d_model, "weight")?, eps: cfg.layer_norm_epsilon })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let dtype = xs.dtype();
        let xs = xs.to_dtype(DType::F32)?;
        let variance = xs.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = xs.broadcast_div(&(variance + self.eps)?.sqrt()?)?;
        Ok(normed.to_dtype(dtype)?.broadcast_mul(&self.weight)?)
    }
}

/// Self-attention with this layer's own relative-position bias.
#[derive(Debug, Clone)]
struct Umt5Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    relative_attention_bias: Embedding,
    num_heads: usize,
    d_kv: usize,
}

impl Umt5Attention {
    fn new(cfg: &Umt5Config, vb: VarBuilder) -> Result<Self> {
        let inner = cfg.num_heads * cfg.d_kv;
        Ok(Self {
            q: linear_no_bias(cfg.d_model, inner, vb.pp("q"))?,
            k: linear_no_bias(cfg.d_model, inner, vb.pp("k"))?,
            v: linear_no_bias(cfg.d_model, inner, vb.pp("v"))?,
            o: linear_no_bias(inner, cfg.d_model, vb.pp("o"))?,
            relative_attention_bias: candle_nn::embedding(
                cfg.relative_attention_num_buckets,
                cfg.num_heads,
                vb.pp("relative_attention_bias"),
            )?,
            num_heads: cfg.num_heads,
            d_kv: cfg.d_kv,
        })
    }

    /// `buckets`: (L, L) u32 bucket of each (query, key) pair; `key_mask`: (B, 1, 1, L) f32,
    /// 0 for real keys and a large negative number for padding.
    fn forward(&self, xs: &Tensor, buckets: &Tensor, key_mask: &Tensor) -> Result<Tensor> {
        let (b, l, _) = xs.dims3()?;
        // (B, L, H*Dk) -> (B, L, H, Dk) -> (B, H, L, Dk)
        let heads = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((b, l, self.num_heads, self.d_kv))?.transpose(1, 2)?.contiguous()?)
        };
        let q = heads(self.q.forward(xs)?)?;
        let k = heads(self.k.forward(xs)?)?;
        let v = heads(self.v.forward(xs)?)?;
        // No 1/sqrt(d) scaling in T5: it is folded into the initialisation of q.
        let scores = q.matmul(&k.t()?)?.to_dtype(DType::F32)?; // (B, H, L, L)
        // (L, L) -> (L, L, H) -> (H, L, L) -> (1, H, L, L)
        let bias = self
            .relative_attention_bias
            .forward(buckets)?
            .to_dtype(DType::F32)?
            .permute((2, 0, 1))?
            .unsqueeze(0)?;
        let scores = scores.broadcast_add(&bias)?.broadcast_add(key_mask)?;
        let weights = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(v.dtype())?;
        // (B, H, L, Dk) -> (B, L, H, Dk) -> (B, L, H*Dk)
        let out = weights.matmul(&v)?.transpose(1, 2)?.reshape((b, l, self.num_heads * self.d_kv))?;
        Ok(self.o.forward(&out)?)
    }
}

/// `wo(gelu_tanh(wi_0 x) * wi_1 x)`.
#[derive(Debug, Clone)]
struct GatedGeluDense {
    wi_0: Linear,
    wi_1: Linear,
    wo: Linear,
}

impl GatedGeluDense {
    fn new(cfg: &Umt5Config, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            wi_0: linear_no_bias(cfg.d_model, cfg.d_ff, vb.pp("wi_0"))?,
            wi_1: linear_no_bias(cfg.d_model, cfg.d_ff, vb.pp("wi_1"))?,
            wo: linear_no_bias(cfg.d_ff, cfg.d_model, vb.pp("wo"))?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // candle's `gelu` is the tanh approximation, i.e. transformers' `gelu_new`.
        let gate = self.wi_0.forward(xs)?.gelu()?;
        let hidden = (gate * self.wi_1.forward(xs)?)?;
        Ok(self.wo.forward(&hidden)?)
    }
}

/// fp16 activations of T5 can overflow; like transformers, once any value is infinite the block
/// output is clamped to 1000 inside the finite range (otherwise clamping at the maximum is a no-op).
fn clamp_if_f16(xs: Tensor) -> Result<Tensor> {
    if xs.dtype() != DType::F16 {
        return Ok(xs);
    }
    let largest = xs.abs()?.max_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()?;
    if largest.is_finite() {
        return Ok(xs);
    }
    let limit = f64::from(half::f16::MAX) - 1000.0;
    Ok(xs.clamp(-limit, limit)?)
}

/// One encoder block: `block.{i}.layer.0` (attention) and `block.{i}.layer.1` (feed-forward).
#[derive(Debug, Clone)]
struct Umt5Block {
    attention_norm: T5LayerNorm,
    attention: Umt5Attention,
    ff_norm: T5LayerNorm,
    ff: GatedGeluDense,
}

impl Umt5Block {
    fn new(cfg: &Umt5Config, vb: VarBuilder) -> Result<Self> {
        let attn = vb.pp("layer").pp("0");
        let ff = vb.pp("layer").pp("1");
        Ok(Self {
            attention_norm: T5LayerNorm::new(cfg, attn.pp("layer_norm"))?,
            attention: Umt5Attention::new(cfg, attn.pp("SelfAttention"))?,
            ff_norm: T5LayerNorm::new(cfg, ff.pp("layer_norm"))?,
            ff: GatedGeluDense::new(cfg, ff.pp("DenseReluDense"))?,
        })
    }

    fn forward(&self, xs: &Tensor, buckets: &Tensor, key_mask: &Tensor) -> Result<Tensor> {
        let attended = self.attention.forward(&self.attention_norm.forward(xs)?, buckets, key_mask)?;
        let xs = clamp_if_f16((xs + attended)?)?;
        let fed = self.ff.forward(&self.ff_norm.forward(&xs)?)?;
        clamp_if_f16((xs + fed)?)
    }
}

/// T5's bidirectional relative-position bucket of `key - query`: half the buckets per direction,
/// exact below `num_buckets / 4`, logarithmic up to `max_distance`. The logarithm is taken in f32
/// as transformers does, so the bucket boundaries fall exactly where they fall there.
pub fn relative_position_bucket(relative_position: i64, num_buckets: usize, max_distance: usize) -> u32 {
    let half = (num_buckets / 2) as i64;
    let mut bucket = if relative_position > 0 { half } else { 0 };
    let distance = relative_position.abs();
    let max_exact = half / 2;
    if distance < max_exact {
        bucket += distance;
    } else {
        let scale = ((max_distance as f64 / max_exact as f64).ln()) as f32;
        let log_ratio = (distance as f32 / max_exact as f32).ln() / scale * (half - max_exact) as f32;
        bucket += (max_exact + log_ratio as i64).min(half - 1);
    }
    bucket as u32
}

/// What the encoder computes, with the intermediates the parity fixtures check.
pub struct EncoderOutput {
    /// `embed_tokens(input_ids)`: (B, L, d_model).
    pub token_embeddings: Tensor,
    /// The output of every block before the final norm, one (B, L, d_model) tensor per layer.
    pub block_outputs: Vec<Tensor>,
    /// `final_layer_norm(block_outputs.last())`: (B, L, d_model).
    pub last_hidden_state: Tensor,
}

/// `UMT5EncoderModel`: token embedding (`shared`), blocks, final layer norm.
#[derive(Debug, Clone)]
pub struct Umt5Encoder {
    embed_tokens: Embedding,
    blocks: Vec<Umt5Block>,
    final_layer_norm: T5LayerNorm,
    cfg: Umt5Config,
}

impl Umt5Encoder {
    /// `vb` is the root of the text_encoder checkpoint (keys `shared.weight`, `encoder.block.*`).
    pub fn new(cfg: &Umt5Config, vb: VarBuilder) -> Result<Self> {
        // The embedding is tied: checkpoints store it as `shared` and/or `encoder.embed_tokens`.
        let embed_vb = if vb.contains_tensor("shared.weight") { vb.pp("shared") } else { vb.pp("encoder").pp("embed_tokens") };
        let embed_tokens = candle_nn::embedding(cfg.vocab_size, cfg.d_model, embed_vb)?;
        let encoder = vb.pp("encoder");
        let blocks = (0..cfg.num_layers)
            .map(|i| Umt5Block::new(cfg, encoder.pp("block").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let final_layer_norm = T5LayerNorm::new(cfg, encoder.pp("final_layer_norm"))?;
        Ok(Self { embed_tokens, blocks, final_layer_norm, cfg: cfg.clone() })
    }

    pub fn config(&self) -> &Umt5Config {
        &self.cfg
    }

    /// (L, L) u32 relative-position buckets, shared by every layer (each has its own table).
    fn buckets(&self, len: usize, device: &Device) -> Result<Tensor> {
        let (n, max) = (self.cfg.relative_attention_num_buckets, self.cfg.relative_attention_max_distance);
        let mut table = Vec::with_capacity(len * len);
        for query in 0..len as i64 {
            for key in 0..len as i64 {
                table.push(relative_position_bucket(key - query, n, max));
            }
        }
        Ok(Tensor::from_vec(table, (len, len), device)?)
    }

    /// Runs the encoder on `input_ids` (B, L) u32 with `attention_mask` (B, L) (any dtype, 1 for
    /// real tokens); padding keys get no attention, padding queries are computed all the same.
    pub fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<EncoderOutput> {
        let (b, l) = input_ids.dims2()?;
        let device = input_ids.device();
        let token_embeddings = self.embed_tokens.forward(input_ids)?;
        let buckets = self.buckets(l, device)?;
        // (B, L) -> (B, 1, 1, L): 0 where the key is real, f32::MIN where it is padding.
        let key_mask = attention_mask
            .to_dtype(DType::F32)?
            .affine(-f64::from(f32::MIN), f64::from(f32::MIN))?
            .reshape((b, 1, 1, l))?;
        let mut xs = token_embeddings.clone();
        let mut block_outputs = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            xs = block.forward(&xs, &buckets, &key_mask)?;
            block_outputs.push(xs.clone());
        }
        let last_hidden_state = self.final_layer_norm.forward(&xs)?;
        Ok(EncoderOutput { token_embeddings, block_outputs, last_hidden_state })
    }
}
