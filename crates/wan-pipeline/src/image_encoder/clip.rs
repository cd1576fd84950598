//! The CLIP vision transformer (transformers' `CLIPVisionModel`), loading its checkpoint keys
//! (`vision_model.embeddings...`, `vision_model.encoder.layers.{i}...`).
//!
//! Written here rather than taken from candle-transformers because Wan needs what that model
//! does not expose: the hidden state *before* the last layer (`hidden_states[-2]`), exact-erf
//! GELU as well as quick GELU, and the option of not loading the last layer at all when only the
//! penultimate state is wanted. `post_layernorm` is never used by Wan and is not loaded.

use std::ops::Range;

use candle_core::{DType, Module, Tensor};
use candle_nn::{layer_norm, LayerNorm, LayerNormConfig, VarBuilder};
use serde::Deserialize;

use crate::linear::{linear, Linear};
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
///
/// The patch convolution has stride = kernel, so it is a matmul over flattened patches; it is
/// run that way because candle's CPU conv2d has no bf16 kernel, and the matmul needs no im2col.
struct Embeddings {
    /// The conv weight (D, C, P, P) flattened to (C*P*P, D), transposed once at load.
    patch_weight_t: Tensor,
    class_embedding: Tensor,
    position_embedding: Tensor,
    num_channels: usize,
    image_size: usize,
    patch_size: usize,
}

impl Embeddings {
    fn new(cfg: &ClipVisionConfig, vb: VarBuilder) -> Result<Self> {
        let p = cfg.patch_size;
        let weight = vb.get((cfg.hidden_size, cfg.num_channels, p, p), "patch_embedding.weight")?;
        // (D, C, P, P) -> (D, C*P*P) -> (C*P*P, D)
        let patch_weight_t = weight.flatten_from(1)?.t()?.contiguous()?;
        let class_embedding = vb.get(cfg.hidden_size, "class_embedding")?;
        let position_embedding = vb.get((cfg.num_positions(), cfg.hidden_size), "position_embedding.weight")?;
        Ok(Self {
            patch_weight_t,
            class_embedding,
            position_embedding,
            num_channels: cfg.num_channels,
            image_size: cfg.image_size,
            patch_size: p,
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
        let (p, g) = (self.patch_size, self.image_size / self.patch_size);
        // A stride-P convolution ignores the pixels past the last whole patch.
        let pixel_values =
            if g * p == h { pixel_values.clone() } else { pixel_values.narrow(2, 0, g * p)?.narrow(3, 0, g * p)? };
        // (B, C, G*P, G*P) -> (B, C, G, P, G, P) -> (B, G, G, C, P, P) -> (B*G*G, C*P*P)
        let patches = pixel_values
            .reshape(vec![b, c, g, p, g, p])?
            .permute(vec![0, 2, 4, 1, 3, 5])?
            .reshape((b * g * g, c * p * p))?;
        let patches = patches.matmul(&self.patch_weight_t)?; // (B*G*G, D)
        let d = patches.dim(1)?;
        let patches = patches.reshape((b, g * g, d))?; // (B*G*G, D) -> (B, G*G, D)
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
            return Err(Error::InvalidInput(format!("CLIP layers {layers:?} requested, {} loaded", self.layers.len())));
        };
        let mut h = hidden.clone();
        for layer in selected {
            h = layer.forward(&h)?;
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::{Device, Module};

    use super::*;

    fn config(image_size: usize, patch_size: usize) -> ClipVisionConfig {
        let json = format!(
            r#"{{"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                "image_size": {image_size}, "patch_size": {patch_size}, "hidden_act": "gelu"}}"#
        );
        serde_json::from_str(&json).unwrap()
    }

    /// The patch matmul must equal candle's own stride-P convolution, including an image size
    /// that is not a multiple of the patch size.
    #[test]
    fn patch_matmul_equals_the_strided_convolution() {
        let dev = Device::Cpu;
        for (image_size, patch) in [(12, 4), (10, 4)] {
            let cfg = config(image_size, patch);
            let weight = Tensor::randn(0f32, 1.0, (8, 3, patch, patch), &dev).unwrap();
            let mut tensors = HashMap::new();
            tensors.insert("patch_embedding.weight".to_string(), weight.clone());
            tensors.insert("class_embedding".to_string(), Tensor::zeros(8, DType::F32, &dev).unwrap());
            tensors.insert(
                "position_embedding.weight".to_string(),
                Tensor::zeros((cfg.num_positions(), 8), DType::F32, &dev).unwrap(),
            );
            let vb = VarBuilder::from_tensors(tensors, DType::F32, &dev);
            let emb = Embeddings::new(&cfg, vb).unwrap();
            let pixels = Tensor::randn(0f32, 1.0, (2, 3, image_size, image_size), &dev).unwrap();
            let got = emb.forward(&pixels).unwrap().narrow(1, 1, cfg.num_positions() - 1).unwrap();
            let conv =
                candle_nn::Conv2d::new(weight, None, candle_nn::Conv2dConfig { stride: patch, ..Default::default() });
            let want = conv.forward(&pixels).unwrap().flatten_from(2).unwrap().transpose(1, 2).unwrap();
            let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-5, "image {image_size} patch {patch}: {diff}");
        }
    }

    #[test]
    fn config_reads_activations_and_nested_vision_config() {
        let nested = serde_json::json!({"vision_config": {"hidden_act": "quick_gelu", "patch_size": 14}});
        let cfg = ClipVisionConfig::from_json(nested).unwrap();
        assert_eq!((cfg.hidden_act, cfg.patch_size, cfg.num_positions()), (HiddenAct::QuickGelu, 14, 257));
        assert_eq!(config(12, 4).hidden_act, HiddenAct::Gelu);
        assert!(serde_json::from_str::<ClipVisionConfig>(r#"{"hidden_act": "swish"}"#).is_err());
        let mut bad = config(12, 4);
        bad.num_attention_heads = 3;
        assert!(bad.validate().is_err());
    }
}
