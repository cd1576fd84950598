//! The T5 tokenizer as `_get_t5_prompt_embeds` calls it: `tokenizer(prompts,
//! padding="max_length", max_length=N, truncation=True, add_special_tokens=True)`.
//!
//! The model's `tokenizer.json` carries the normalizer, pre-tokenizer, Unigram model and the
//! post-processor that appends `</s>`; truncation keeps `max_length - 1` tokens so that `</s>`
//! still fits (the `tokenizers` truncation accounts for the special tokens the post-processor
//! adds), and padding fills with the pad token up to `max_length`.

use std::path::Path;

use candle_core::{Device, Tensor};
use tokenizers::{PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::loader::read_json;
use crate::{Error, Result};

/// The pad token transformers' T5Tokenizer uses unless `tokenizer_config.json` names another.
const DEFAULT_PAD_TOKEN: &str = "<pad>";

#[derive(serde::Deserialize, Default)]
struct TokenizerConfig {
    pad_token: Option<String>,
}

/// Token ids of a batch of prompts, padded to one length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    /// One row per prompt, each `max_length` long.
    pub ids: Vec<Vec<u32>>,
    /// 1 for real tokens (including `</s>`), 0 for padding; same shape as `ids`.
    pub attention_mask: Vec<Vec<u32>>,
    /// Number of real tokens of each prompt (`attention_mask.sum(1)`).
    pub seq_lens: Vec<usize>,
}

impl TokenBatch {
    /// Padded length of every row.
    pub fn max_length(&self) -> usize {
        self.ids.first().map_or(0, Vec::len)
    }

    fn to_tensor(rows: &[Vec<u32>], device: &Device) -> Result<Tensor> {
        let width = rows.first().map_or(0, Vec::len);
        let flat: Vec<u32> = rows.iter().flatten().copied().collect();
        Ok(Tensor::from_vec(flat, (rows.len(), width), device)?)
    }

    /// `(B, max_length)` u32 token ids.
    pub fn ids_tensor(&self, device: &Device) -> Result<Tensor> {
        Self::to_tensor(&self.ids, device)
    }

    /// `(B, max_length)` u32 attention mask.
    pub fn mask_tensor(&self, device: &Device) -> Result<Tensor> {
        Self::to_tensor(&self.attention_mask, device)
    }
}

/// The prompt tokenizer of a Wan pipeline directory.
pub struct PromptTokenizer {
    tokenizer: Tokenizer,
    pad_id: u32,
    pad_token: String,
}

impl PromptTokenizer {
    /// Reads `tokenizer_dir/tokenizer.json` (and the pad token from `tokenizer_config.json` if
    /// there is one).
    pub fn load(tokenizer_dir: &Path) -> Result<Self> {
        let json = tokenizer_dir.join("tokenizer.json");
        if !json.is_file() {
            return Err(Error::MissingModelFile { path: tokenizer_dir.to_path_buf(), what: "tokenizer.json".into() });
        }
        let tokenizer = Tokenizer::from_file(&json).map_err(|e| Error::Tokenizer(format!("{}: {e}", json.display())))?;
        let config_path = tokenizer_dir.join("tokenizer_config.json");
        let config: TokenizerConfig = if config_path.is_file() { read_json(&config_path)? } else { TokenizerConfig::default() };
        let pad_token = config.pad_token.unwrap_or_else(|| DEFAULT_PAD_TOKEN.to_string());
        let pad_id = tokenizer
            .token_to_id(&pad_token)
            .ok_or_else(|| Error::Tokenizer(format!("pad token {pad_token:?} is not in the vocabulary")))?;
        Ok(Self { tokenizer, pad_id, pad_token })
    }

    /// Tokenizes already-cleaned prompts: `</s>` appended, truncated to `max_length` tokens in
    /// all, padded to `max_length`.
    pub fn tokenize(&self, prompts: &[String], max_length: usize) -> Result<TokenBatch> {
        if max_length == 0 {
            return Err(Error::InvalidInput("max_sequence_length must be at least 1".into()));
        }
        let mut tokenizer = self.tokenizer.clone();
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(max_length),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id: self.pad_id,
            pad_type_id: 0,
            pad_token: self.pad_token.clone(),
        }));
        let inputs: Vec<&str> = prompts.iter().map(String::as_str).collect();
        let encodings = tokenizer.encode_batch(inputs, true).map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut batch = TokenBatch { ids: Vec::new(), attention_mask: Vec::new(), seq_lens: Vec::new() };
        for encoding in encodings {
            let mask = encoding.get_attention_mask().to_vec();
            if mask.len() != max_length {
                return Err(Error::Tokenizer(format!("encoding has {} tokens, expected {max_length}", mask.len())));
            }
            batch.seq_lens.push(mask.iter().filter(|&&m| m > 0).count());
            batch.ids.push(encoding.get_ids().to_vec());
            batch.attention_mask.push(mask);
        }
        Ok(batch)
    }
}
