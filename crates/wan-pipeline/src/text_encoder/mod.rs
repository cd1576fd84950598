//! Text encoding: prompt cleaning, the T5 tokenizer and the UMT5 encoder, combined into the prompt
//! embeddings the Wan transformer attends to (`WanPipeline._get_t5_prompt_embeds`).

mod fix_text;
mod html_unescape;
pub mod prompt;
pub mod tokenizer;
pub mod umt5;

use std::path::Path;

use candle_core::{DType, Device, Tensor};

pub use html_unescape::html_unescape;
pub use prompt::prompt_clean;
pub use tokenizer::{PromptTokenizer, TokenBatch};
pub use umt5::{EncoderOutput, Umt5Config, Umt5Encoder};

use crate::loader::{read_config, var_builder};
use crate::{Error, Result};

/// The tokenizer and UMT5 encoder of a Wan pipeline directory.
pub struct WanTextEncoder {
    tokenizer: PromptTokenizer,
    encoder: Umt5Encoder,
    dtype: DType,
    device: Device,
}

impl WanTextEncoder {
    /// model_dir = the pipeline directory (reads tokenizer/ and text_encoder/).
    pub fn load(model_dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let tokenizer = PromptTokenizer::load(&model_dir.join("tokenizer"))?;
        let cfg = Self::read_config(model_dir)?;
        let encoder = Umt5Encoder::new(&cfg, var_builder(&model_dir.join("text_encoder"), dtype, device)?)?;
        Ok(Self { tokenizer, encoder, dtype, device: device.clone() })
    }

    /// The encoder's config (`text_encoder/config.json`), checked to be one this port runs.
    pub fn read_config(model_dir: &Path) -> Result<Umt5Config> {
        let encoder_dir = model_dir.join("text_encoder");
        let cfg: Umt5Config = read_config(&encoder_dir)?;
        if cfg.feed_forward_proj != "gated-gelu" {
            return Err(Error::InvalidInput(format!(
                "{}: feed_forward_proj {:?} is not supported (UMT5 for Wan uses gated-gelu)",
                encoder_dir.display(),
                cfg.feed_forward_proj
            )));
        }
        Ok(cfg)
    }

    pub fn tokenizer(&self) -> &PromptTokenizer {
        &self.tokenizer
    }

    pub fn encoder(&self) -> &Umt5Encoder {
        &self.encoder
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Cleans (`prompt_clean`) and tokenizes prompts to `max_sequence_length` tokens each.
    pub fn tokenize(&self, prompts: &[String], max_sequence_length: usize) -> Result<TokenBatch> {
        let cleaned: Vec<String> = prompts.iter().map(|p| prompt_clean(p)).collect();
        self.tokenizer.tokenize(&cleaned, max_sequence_length)
    }

    /// (B, max_sequence_length, d_model) in the model dtype, zero rows after each real length.
    ///
    /// The encoder runs only on the longest real length of the batch: padding keys are masked
    /// and every row past a prompt's length is zeroed anyway, so the padding positions up to
    /// `max_sequence_length` would be computed only to be thrown away.
    pub fn encode_prompts(&self, prompts: &[String], max_sequence_length: usize) -> Result<Tensor> {
        if prompts.is_empty() {
            return Err(Error::InvalidInput("no prompt to encode".into()));
        }
        let tokens = self.tokenize(prompts, max_sequence_length)?;
        let batch = prompts.len();
        let kept = tokens.seq_lens.iter().copied().max().unwrap_or(0).max(1);
        // (B, max_sequence_length) -> (B, kept)
        let ids = tokens.ids_tensor(&self.device)?.narrow(1, 0, kept)?;
        let mask = tokens.mask_tensor(&self.device)?.narrow(1, 0, kept)?;
        let hidden = self.encoder.forward(&ids, &mask)?.last_hidden_state;
        let d_model = self.encoder.config().d_model;
        // Exact zeros (not x * 0, which keeps -0 and NaN) after each prompt's real length.
        let keep = mask.unsqueeze(2)?.broadcast_as((batch, kept, d_model))?;
        let zeros = Tensor::zeros((batch, kept, d_model), hidden.dtype(), &self.device)?;
        let trimmed = keep.where_cond(&hidden, &zeros)?;
        if kept == max_sequence_length {
            return Ok(trimmed);
        }
        let padding = Tensor::zeros((batch, max_sequence_length - kept, d_model), hidden.dtype(), &self.device)?;
        Ok(Tensor::cat(&[&trimmed, &padding], 1)?)
    }
}
