//! The CLIP vision transformer (transformers' `CLIPVisionModel`), loading its checkpoint keys
//! (`vision_model.embeddings...`, `vision_model.encoder.layers.{i}...`).
//!
//! Written here rather than taken from candle-transformers because Wan needs what that model
//! does not expose: the hidden state *before* the last layer (`hidden_states[-2]`), exact-erf
//! GELU as well as quick GELU, and the option of not loading the last layer at all when only the
//! penultimate state is wanted. `post_layernorm` is never used by Wan and is not loaded.

use std::ops::Range;

use candle_core::{DType, Module, Tensor};
use candle_nn::{layer_norm, linear, Conv2d, Conv2dConfig, LayerNorm, LayerNormConfig, Linear, VarBuilder};
use serde::Deserialize;

use crate::{Error, Result};

/// The MLP activation, by its transformers name (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum HiddenAct {
    /// `x * sigmoid(1.702 x)`: OpenAI CLIP's default.
    #[serde(rename = "quick_gelu")]
    QuickGelu,
    /// Exact GELU, `0.5 x (1 + erf(x / sqrt 2))`: what the Wan2.1 image encoder uses.
    #[serde(rename = "gelu")]
    Gelu,
    /// The tanh approximation of GELU.
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluTanh,
    #[serde(rename = "relu")]
    Relu,
}

impl HiddenAct {
    fn apply(self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            HiddenAct::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?,
            HiddenAct::Gelu => xs.gelu_erf(),
            HiddenAct::GeluTanh => xs.gelu(),
            HiddenAct::Relu => xs.relu(),
        }
    }
}

/// `image_encoder/config.json` (a `CLIPVisionConfig`), with transformers' defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct ClipVisionConfig {
    #[serde(default = "default_hidden_size")]
    pub hidden_size: usize,
    #[serde(default = "default_intermediate_size")]
    pub intermediate_size: usize,
    #[serde(default = "default_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "default_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    #[serde(default = "default_image_size")]
    pub image_size: usize,
    #[serde(default = "default_patch_size")]
    pub patch_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: HiddenAct,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

fn default_hidden_size() -> usize {
    768
}
fn default_intermediate_size() -> usize {
    3072
}
fn default_layers() -> usize {
    12
}
fn default_heads() -> usize {
    12
}
fn default_channels() -> usize {
    3
}
fn default_image_size() -> usize {
    224
}
fn default_patch_size() -> usize {
    32
}
fn default_act() -> HiddenAct {
    HiddenAct::QuickGelu
}
fn default_eps() -> f64 {
    1e-5
}

impl ClipVisionConfig {
    /// Parses a `CLIPVisionConfig`, or the `vision_config` of a full `CLIPConfig`.
    pub fn from_json(value: serde_json::Value) -> std::result::Result<Self, serde_json::Error> {
        match value.get("vision_config") {
            Some(vision) => serde_json::from_value(vision.clone()),
            None => serde_json::from_value(value),
        }
    }

    /// Patches along one side of the (square) input.
    pub fn patches_per_side(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Tokens per image: one class token plus one per patch.
    pub fn num_positions(&self) -> usize {
        self.patches_per_side() * self.patches_per_side() + 1
    }

    fn validate(&self) -> Result<()> {
        let ok = self.hidden_size > 0
            && self.num_attention_heads > 0
            && self.hidden_size % self.num_attention_heads == 0
            && self.patch_size > 0
            && self.image_size >= self.patch_size
            && self.num_hidden_layers > 0;
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidInput(format!("inconsistent CLIP vision config: {self:?}")))
        }
    }
}

/// Patch embedding (a stride-`patch` convolution without bias), the class token and learned
/// absolute position embeddings.
struct Embeddings {
    patch_embedding: Conv2d,
    class_embedding: Tensor,
    position_embedding: Tensor,
    num_channels: usize,
    image_size: usize,
}

impl Embeddings {
    fn new(cfg: &ClipVisionConfig, vb: VarBuilder) -> Result<Self> {
        let conv_cfg = Conv2dConfig { stride: cfg.patch_size, ..Default::default() };
        let patch_embedding =
            candle_nn::conv2d_no_bias(cfg.num_channels, cfg.hidden_size, cfg.patch_size, conv_cfg, vb.pp("patch_embedding"))?;
        let class_embedding = vb.get(cfg.hidden_size, "class_embedding")?;
        let position_embedding = vb.get((cfg.num_positions(), cfg.hidden_size), "position_embedding.weight")?;
        Ok(Self {
            patch_embedding,
            class_embedding,
            position_embedding,
            num_channels: cfg.num_channels,
            image_size: cfg.image_size,
        })
    }

    fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = pixel_values.dims4()?;
        // transformers refuses other sizes unless asked to interpolate the position embeddings,
        // which Wan never does.
        if c != self.num_channels || h != self.image_size || w != self.image_size {
            return Err(Error::InvalidInput(format!(
                "CLIP pixel_values must be (B, {}, {s}, {s}), got {:?}",
                self.num_channels,
                pixel_values.dims(),
                s = self.image_size
            )));
        }
        let patches = self.patch_embedding.forward(pixel_values)?; // (B, D, G, G)
        let patches = patches.flatten_from(2)?.transpose(1, 2)?; // (B, D, G*G) -> (B, G*G, D)
        let d = patches.dim(2)?;
        let class = self.class_embedding.reshape((1, 1, d))?.broadcast_as((b, 1, d))?; // (B, 1, D)
        let tokens = Tensor::cat(&[&class, &patches], 1)?; // (B, 1 + G*G, D)
        Ok(tokens.broadcast_add(&self.position_embedding.unsqueeze(0)?)?)
    }
}

/// Multi-head self-attention over all tokens (no mask). CLIP's sequences are short (257 tokens
/// for ViT-H/14 at 224 px), so the full score matrix is small and is not tiled.
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
    head_dim: usize,
    scale: f64,
}

impl Attention {
    fn new(cfg: &ClipVisionConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        let head_dim = d / cfg.num_attention_heads;
        Ok(Self {
            q_proj: linear(d, d, vb.pp("q_proj"))?,
            k_proj: linear(d, d, vb.pp("k_proj"))?,
            v_proj: linear(d, d, vb.pp("v_proj"))?,
            out_proj: linear(d, d, vb.pp("out_proj"))?,
            heads: cfg.num_attention_heads,
            head_dim,
            scale: (head_dim as f64).powf(-0.5),
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, l, d) = xs.dims3()?;
        // (B, L, D) -> (B, L, H, Dh) -> (B, H, L, Dh)
        let split = |t: Tensor| t.reshape((b, l, self.heads, self.head_dim))?.transpose(1, 2)?.contiguous();
        let q = split((self.q_proj.forward(xs)? * self.scale)?)?;
        let k = split(self.k_proj.forward(xs)?)?;
        let v = split(self.v_proj.forward(xs)?)?;
        let scores = q.matmul(&k.t()?)?; // (B, H, L, L)
        // As transformers does, the softmax runs in f32 whatever the model dtype.
        let probs = candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(v.dtype())?;
        let context = probs.matmul(&v)?; // (B, H, L, Dh)
        let context = context.transpose(1, 2)?.reshape((b, l, d))?; // (B, H, L, Dh) -> (B, L, D)
        Ok(self.out_proj.forward(&context)?)
    }
}

struct Mlp {
    fc1: Linear,
    fc2: Linear,
    act: HiddenAct,
}

impl Mlp {
    fn new(cfg: &ClipVisionConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            fc1: linear(cfg.hidden_size, cfg.intermediate_size, vb.pp("fc1"))?,
            fc2: linear(cfg.intermediate_size, cfg.hidden_size, vb.pp("fc2"))?,
            act: cfg.hidden_act,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let h = self.act.apply(&self.fc1.forward(xs)?)?;
        Ok(self.fc2.forward(&h)?)
    }
}

/// Pre-norm transformer block: `x + attn(ln1(x))`, then `x + mlp(ln2(x))`.
struct EncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: Attention,
    layer_norm2: LayerNorm,
    mlp: Mlp,
}

impl EncoderLayer {
    fn new(cfg: &ClipVisionConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            layer_norm1: layer_norm(cfg.hidden_size, ln_config(cfg), vb.pp("layer_norm1"))?,
            self_attn: Attention::new(cfg, vb.pp("self_attn"))?,
            layer_norm2: layer_norm(cfg.hidden_size, ln_config(cfg), vb.pp("layer_norm2"))?,
            mlp: Mlp::new(cfg, vb.pp("mlp"))?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = (xs + self.self_attn.forward(&self.layer_norm1.forward(xs)?)?)?;
        let mlp = self.mlp.forward(&self.layer_norm2.forward(&xs)?)?;
        Ok((xs + mlp)?)
    }
}

fn ln_config(cfg: &ClipVisionConfig) -> LayerNormConfig {
    LayerNormConfig { eps: cfg.layer_norm_eps, ..Default::default() }
}

/// `CLIPVisionModel` up to its encoder: embeddings, `pre_layrnorm` and the first
/// [`loaded_layers`](Self::loaded_layers) encoder layers.
///
/// transformers' `hidden_states` tuple is `[embeddings after pre_layrnorm, output of layer 1,
/// ..., output of layer N]`, so `hidden_states[-2]` is the output of layer N-1 and
/// `last_hidden_state` the output of layer N (neither goes through `post_layernorm`).
pub struct ClipVisionModel {
    embeddings: Embeddings,
    pre_layrnorm: LayerNorm,
    layers: Vec<EncoderLayer>,
    config: ClipVisionConfig,
}

impl ClipVisionModel {
    /// Loads the model from the checkpoint root, keeping only the first `num_layers` encoder
    /// layers (at most `num_hidden_layers`).
    pub fn new(cfg: &ClipVisionConfig, num_layers: usize, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        if num_layers > cfg.num_hidden_layers {
            return Err(Error::InvalidInput(format!(
                "asked for {num_layers} CLIP layers, the model has {}",
                cfg.num_hidden_layers
            )));
        }
        let vb = vb.pp("vision_model");
        let embeddings = Embeddings::new(cfg, vb.pp("embeddings"))?;
        // The checkpoint key really is spelled `pre_layrnorm`.
        let pre_layrnorm = layer_norm(cfg.hidden_size, ln_config(cfg), vb.pp("pre_layrnorm"))?;
        let layers_vb = vb.pp("encoder").pp("layers");
        let layers = (0..num_layers).map(|i| EncoderLayer::new(cfg, layers_vb.pp(i))).collect::<Result<Vec<_>>>()?;
        Ok(Self { embeddings, pre_layrnorm, layers, config: cfg.clone() })
    }

    pub fn config(&self) -> &ClipVisionConfig {
        &self.config
    }

    /// How many encoder layers were loaded (and can be run).
    pub fn loaded_layers(&self) -> usize {
        self.layers.len()
    }

    /// `hidden_states[0]`: (B, C, S, S) -> (B, tokens, hidden), in the dtype of the weights.
    pub fn embed(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let dtype = self.embeddings.class_embedding.dtype();
        let x = self.embeddings.forward(&pixel_values.to_dtype(dtype)?)?;
        Ok(self.pre_layrnorm.forward(&x)?)
    }

    /// Runs encoder layers `layers` (0-based) on a hidden state: given `hidden_states[i]` and
    /// `i..j`, returns `hidden_states[j]`.
    pub fn run_layers(&self, hidden: &Tensor, layers: Range<usize>) -> Result<Tensor> {
        let Some(selected) = self.layers.get(layers.clone()) else {
            return Err(Error::InvalidInput(format!(
                "CLIP layers {layers:?} requested, {} loaded",
                self.layers.len()
            )));
        };
        let mut h = hidden.clone();
        for layer in selected {
            h = layer.forward(&h)?;
        }
        Ok(h)
    }
}
