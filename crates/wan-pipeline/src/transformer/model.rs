//! The whole DiT (diffusers' `WanTransformer3DModel`).

use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use super::attention::CrossKv;
use super::block::WanTransformerBlock;
use super::config::WanTransformerConfig;
use super::embeddings::{ConditionEmbedder, PatchEmbedding, PatchGrid};
use super::fused::norm_affine;
use crate::fp8::WeightStorage;
use crate::linear::{linear, Linear};
use super::rope::{RopeTables, RotaryEmbedding};
use crate::{Error, Result};

/// The debug intermediates of one forward, named as the parity fixtures name them.
#[derive(Debug, Default, Clone)]
pub struct ForwardTrace {
    /// (L, head_dim) f32 each: the rotary tables as diffusers lays them out.
    pub rope_cos: Option<Tensor>,
    pub rope_sin: Option<Tensor>,
    /// (B, L, dim): the patch embedding's output.
    pub patch_tokens: Option<Tensor>,
    /// (B, dim) and (B, 6, dim).
    pub temb: Option<Tensor>,
    pub timestep_proj: Option<Tensor>,
    /// (B, L_text, dim) and (B, T_img, dim).
    pub text_context: Option<Tensor>,
    pub image_context: Option<Tensor>,
    /// One (B, L, dim) per block.
    pub block_outputs: Vec<Tensor>,
}

/// The text (and image) context of a prompt, embedded and projected to every block's keys and
/// values. It does not depend on the latent or the timestep, so a sampler prepares it once per
/// prompt and reuses it for every step.
///
/// Prompt embeddings are zero-padded to 512 rows, and identical input rows give identical keys
/// and values; the trailing run of identical rows is therefore folded into one key whose score
/// gets `+ln(copies)` (`exp(s + ln c) = c * exp(s)`), which is the same attention computed on
/// `valid + 1` instead of 512 rows: the text embedder and the text key/value projections, ~15% of
/// a 1.3B forward at 480p-like token counts, shrink by the same factor.
#[derive(Debug, Clone)]
pub struct PreparedContext {
    batch: usize,
    /// The text length before folding.
    text_len: usize,
    /// (B, kept, dim): the embedded text rows kept after folding (the last stands for the rest).
    text_context: Tensor,
    /// (B, T_img, dim).
    image_context: Option<Tensor>,
    /// One per block.
    cross_kv: Vec<CrossKv>,
}

impl PreparedContext {
    /// The embedded text (B, L_text, dim) as diffusers' `text_embedder` returns it (folded rows
    /// expanded again).
    pub fn full_text_context(&self) -> Result<Tensor> {
        let (b, kept, dim) = self.text_context.dims3()?;
        if kept == self.text_len {
            return Ok(self.text_context.clone());
        }
        let last = self.text_context.narrow(1, kept - 1, 1)?.broadcast_as((b, self.text_len - kept, dim))?;
        Ok(Tensor::cat(&[&self.text_context, &last.contiguous()?], 1)?)
    }

    /// How many text rows the cross-attention really reads after folding the padding.
    pub fn kept_text_rows(&self) -> usize {
        self.text_context.dim(1).unwrap_or(self.text_len)
    }
}

#[derive(Debug, Clone)]
pub struct WanTransformer3DModel {
    pub config: WanTransformerConfig,
    patch_embedding: PatchEmbedding,
    rope: RotaryEmbedding,
    condition_embedder: ConditionEmbedder,
    blocks: Vec<WanTransformerBlock>,
    proj_out: Linear,
    /// (1, 2, dim) f32: shift and scale of the output head, added to `temb`.
    scale_shift_table: Tensor,
    /// The rotary tables of the last latent grid: every step of a job has the same grid, so the
    /// tables are built and uploaded to the device once per job, not once per forward.
    rope_cache: Arc<Mutex<Option<(PatchGrid, Arc<RopeTables>)>>>,
    dtype: DType,
    device: Device,
}

impl WanTransformer3DModel {
    /// Loads `transformer_dir/config.json` and its safetensors (single file or sharded), converting
    /// the weights to `dtype` one tensor at a time.
    pub fn load(transformer_dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        Self::load_stored(transformer_dir, dtype, WeightStorage::Compute, device)
    }

    /// [`Self::load`] with the blocks' Linears held as `storage` says (fp8: converted per tensor
    /// as it is read, or taken as they are from an e4m3fn checkpoint).
    pub fn load_stored(transformer_dir: &Path, dtype: DType, storage: WeightStorage, device: &Device) -> Result<Self> {
        let mut cfg: WanTransformerConfig = crate::loader::read_config(transformer_dir)?;
        cfg.weight_storage = storage;
        cfg.validate()?;
        let vb = crate::loader::var_builder(transformer_dir, dtype, device)?;
        Self::new(&cfg, vb)
    }

    pub fn new(cfg: &WanTransformerConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let dim = cfg.inner_dim();
        let [pt, ph, pw] = cfg.patch_size;
        let blocks = (0..cfg.num_layers)
            .map(|i| WanTransformerBlock::new(cfg, vb.pp("blocks").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config: cfg.clone(),
            patch_embedding: PatchEmbedding::new(cfg, vb.pp("patch_embedding"))?,
            rope: RotaryEmbedding::new(cfg.attention_head_dim, cfg.rope_max_seq_len),
            condition_embedder: ConditionEmbedder::new(cfg, vb.pp("condition_embedder"))?,
            blocks,
            proj_out: linear(dim, cfg.out_channels() * pt * ph * pw, vb.pp("proj_out"))?,
            scale_shift_table: vb.clone().set_dtype(DType::F32).get((1, 2, dim), "scale_shift_table")?,
            rope_cache: Arc::new(Mutex::new(None)),
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The Linear at a checkpoint path under the blocks (`blocks.0.attn1.to_q`), for checks that
    /// look at what a layer holds (the fp8 fixtures).
    pub fn block_linear(&self, path: &str) -> Option<&Linear> {
        let rest = path.strip_prefix("blocks.")?;
        let (index, rest) = rest.split_once('.')?;
        self.blocks.get(index.parse::<usize>().ok()?)?.linear_at(rest)
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// hidden_states (B, C_in, F, H, W); timestep (B,) any float/int dtype;
    /// encoder_hidden_states (B, L, text_dim); image embeds (B, T_img, image_dim) for i2v.
    /// Returns (B, out_channels, F, H, W) in the input's dtype.
    pub fn forward(
        &self,
        hidden_states: &Tensor,
        timestep: &Tensor,
        encoder_hidden_states: &Tensor,
        encoder_hidden_states_image: Option<&Tensor>,
    ) -> Result<Tensor> {
        let context = self.prepare_context(encoder_hidden_states, encoder_hidden_states_image)?;
        self.forward_with_context(hidden_states, timestep, &context, None)
    }

    /// [`Self::forward`] that also records the debug intermediates.
    pub fn forward_traced(
        &self,
        hidden_states: &Tensor,
        timestep: &Tensor,
        encoder_hidden_states: &Tensor,
        encoder_hidden_states_image: Option<&Tensor>,
        trace: &mut ForwardTrace,
    ) -> Result<Tensor> {
        let context = self.prepare_context(encoder_hidden_states, encoder_hidden_states_image)?;
        trace.text_context = Some(context.full_text_context()?);
        trace.image_context = context.image_context.clone();
        self.forward_with_context(hidden_states, timestep, &context, Some(trace))
    }

    /// Embeds the text (B, L, text_dim) and, for i2v, the CLIP image tokens (B, T_img, image_dim),
    /// and projects them to every block's cross-attention keys and values.
    pub fn prepare_context(&self, encoder_hidden_states: &Tensor, image: Option<&Tensor>) -> Result<PreparedContext> {
        let (batch, text_len, text_dim) = encoder_hidden_states.dims3()?;
        if text_dim != self.config.text_dim {
            return Err(Error::InvalidInput(format!(
                "encoder_hidden_states must be (B, L, {}), got {:?}",
                self.config.text_dim,
                encoder_hidden_states.dims()
            )));
        }
        let text = encoder_hidden_states.to_device(&self.device)?.to_dtype(self.dtype)?;
        let kept = rows_before_trailing_copies(&text)?;
        let key_bias = if kept < text_len {
            let copies = (text_len - kept + 1) as f32;
            let bias: Vec<f32> = (0..kept).map(|i| if i + 1 == kept { copies.ln() } else { 0.0 }).collect();
            Some(Tensor::from_vec(bias, kept, &self.device)?)
        } else {
            None
        };
        let text_context = self.condition_embedder.text_embedder.forward(&text.narrow(1, 0, kept)?)?;
        let image_context = match (&self.condition_embedder.image_embedder, image) {
            (Some(embedder), Some(img)) => {
                let (b, _, d) = img.dims3()?;
                if b != batch || Some(d) != self.config.image_dim {
                    return Err(Error::InvalidInput(format!(
                        "encoder_hidden_states_image must be ({batch}, T, {:?}), got {:?}",
                        self.config.image_dim,
                        img.dims()
                    )));
                }
                Some(embedder.forward(&img.to_device(&self.device)?, self.dtype)?)
            }
            (None, Some(_)) => {
                return Err(Error::InvalidInput("image embeddings given to a model without an image embedder".into()))
            }
            (Some(_), None) => {
                return Err(Error::InvalidInput("this i2v transformer needs encoder_hidden_states_image".into()))
            }
            (None, None) => None,
        };
        let cross_kv = self
            .blocks
            .iter()
            .map(|block| block.context_kv(&text_context, key_bias.as_ref(), image_context.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        Ok(PreparedContext { batch, text_len, text_context, image_context, cross_kv })
    }

    /// The forward pass with a context from [`Self::prepare_context`].
    pub fn forward_with_context(
        &self,
        hidden_states: &Tensor,
        timestep: &Tensor,
        context: &PreparedContext,
        mut trace: Option<&mut ForwardTrace>,
    ) -> Result<Tensor> {
        let out_dtype = hidden_states.dtype();
        let grid = self.patch_embedding.grid(hidden_states.dims())?;
        let batch = hidden_states.dim(0)?;
        if batch != context.batch {
            return Err(Error::InvalidInput(format!(
                "hidden_states batch {batch} differs from the context batch {}",
                context.batch
            )));
        }
        let timestep = broadcast_timestep(timestep, batch)?;

        let rope = self.rope_tables(grid)?;
        let x = hidden_states.to_device(&self.device)?.to_dtype(self.dtype)?;
        let mut x = self.patch_embedding.forward(&x, grid)?;
        let (temb, timestep_proj) = self.condition_embedder.time(&timestep.to_device(&self.device)?, self.dtype)?;
        if let Some(t) = trace.as_deref_mut() {
            let (cos, sin) = rope.full_tables()?;
            t.rope_cos = Some(cos);
            t.rope_sin = Some(sin);
            t.patch_tokens = Some(x.clone());
            t.temb = Some(temb.clone());
            t.timestep_proj = Some(timestep_proj.clone());
        }

        for (block, kv) in self.blocks.iter().zip(&context.cross_kv) {
            x = block.forward(&x, kv, &timestep_proj, &rope)?;
            if let Some(t) = trace.as_deref_mut() {
                t.block_outputs.push(x.clone());
            }
        }

        let x = self.output_head(&x, &temb)?;
        Ok(self.unpatchify(&x, grid)?.to_dtype(out_dtype)?)
    }

    /// The rotary tables of `grid`, from the cache when the grid is the last one asked for.
    fn rope_tables(&self, grid: PatchGrid) -> Result<Arc<RopeTables>> {
        // A poisoned lock only means another thread panicked while swapping the cache in: the
        // cached value is still whole (it is replaced in one assignment).
        let cached = self.rope_cache.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some((g, tables)) = cached {
            if g == grid {
                return Ok(tables);
            }
        }
        // Built outside the lock: two threads asking at once both build, one result is kept.
        let tables = Arc::new(self.rope.tables(grid, &self.device)?);
        *self.rope_cache.lock().unwrap_or_else(|p| p.into_inner()) = Some((grid, tables.clone()));
        Ok(tables)
    }

    /// `norm_out` modulated by `temb` (not by the 6-way projection), then `proj_out`.
    fn output_head(&self, x: &Tensor, temb: &Tensor) -> Result<Tensor> {
        // (1, 2, dim) + (B, 1, dim) -> (B, 2, dim) in f32
        let mods = self.scale_shift_table.broadcast_add(&temb.to_dtype(DType::F32)?.unsqueeze(1)?)?;
        let (shift, scale) = (mods.narrow(1, 0, 1)?, mods.narrow(1, 1, 1)?);
        let modulated = norm_affine(x, &(scale + 1.0)?, &shift.contiguous()?, self.config.eps)?;
        Ok(self.proj_out.forward(&modulated)?)
    }

    /// (B, L, p_t * p_h * p_w * C_out) -> (B, C_out, F, H, W).
    fn unpatchify(&self, x: &Tensor, grid: PatchGrid) -> Result<Tensor> {
        let [pt, ph, pw] = self.config.patch_size;
        let c = self.config.out_channels();
        let b = x.dim(0)?;
        // (B, L, pt*ph*pw*C) -> (B, F', H', W', p_t, p_h, p_w, C)
        let x = x.reshape(vec![b, grid.frames, grid.height, grid.width, pt, ph, pw, c])?;
        // -> (B, C, F', p_t, H', p_h, W', p_w) -> (B, C, F, H, W)
        let x = x.permute(vec![0, 7, 1, 4, 2, 5, 3, 6])?.contiguous()?;
        Ok(x.reshape((b, c, grid.frames * pt, grid.height * ph, grid.width * pw))?)
    }
}

/// How many leading rows of the text (B, L, D) to keep so that, in every batch element, each row
/// after them equals the last kept row (bitwise-equal values; NaN never matches).
fn rows_before_trailing_copies(text: &Tensor) -> Result<usize> {
    let (_, len, _) = text.dims3()?;
    if len < 3 {
        return Ok(len);
    }
    // (B, L - 1): max |row[i + 1] - row[i]|
    let step = (text.narrow(1, 1, len - 1)? - text.narrow(1, 0, len - 1)?)?;
    let step: Vec<Vec<f32>> = step.abs()?.max_keepdim(2)?.squeeze(2)?.to_dtype(DType::F32)?.to_vec2()?;
    let mut first_copy = 0;
    for row in step {
        let mut start = len - 1;
        while start > 0 && row[start - 1] == 0.0 {
            start -= 1;
        }
        first_copy = first_copy.max(start);
    }
    Ok(first_copy + 1)
}

/// A (B,) timestep from a (B,), (1,) or scalar tensor.
fn broadcast_timestep(timestep: &Tensor, batch: usize) -> Result<Tensor> {
    let t = timestep.flatten_all()?;
    match t.dim(0)? {
        n if n == batch => Ok(t),
        1 => Ok(t.broadcast_as(batch)?.contiguous()?),
        n => Err(Error::InvalidInput(format!("timestep has {n} values for a batch of {batch}"))),
    }
}
