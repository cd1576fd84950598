//! Fixture kind `text_encoder`: `WanPipeline.encode_prompt` with classifier-free guidance.
//!
//! `prompt_embeds` / `negative_prompt_embeds` go the whole way from the manifest's raw prompts
//! through `WanTextEncoder::encode_prompts` (cleaning, tokenizing, encoding, zeroing); the raw
//! encoder outputs and the debug intermediates come from one full-length forward of the
//! fixture's own `input_ids` / `attention_mask`. The tokenization is checked against those inputs
//! once, while preparing.

use candle_core::{DType, Tensor};
use serde_json::Value;

use super::tokenizer::{string_list, usize_field};
use super::{Computation, Fixture, Outputs, RunOptions};
use crate::text_encoder::WanTextEncoder;
use crate::{Error, Result};

/// `negative_prompt` as diffusers reads it: missing/None means "", a string is repeated per prompt.
fn negative_prompts(fixture: &Fixture, batch: usize) -> Result<Vec<String>> {
    match fixture.call.get("negative_prompt") {
        None | Some(Value::Null) => Ok(vec![String::new(); batch]),
        Some(Value::String(s)) => Ok(vec![s.clone(); batch]),
        Some(_) => string_list(fixture, "negative_prompt"),
    }
}

fn prompts(fixture: &Fixture) -> Result<Vec<String>> {
    match fixture.call_field("prompt")? {
        Value::String(s) => Ok(vec![s.clone()]),
        _ => string_list(fixture, "prompt"),
    }
}

/// Fails unless tokenizing `prompts` gives the fixture's `ids_name` / `mask_name` inputs.
fn check_tokens(fixture: &Fixture, encoder: &WanTextEncoder, prompts: &[String], max_len: usize, ids_name: &str, mask_name: &str) -> Result<()> {
    let tokens = encoder.tokenize(prompts, max_len)?;
    let want_ids: Vec<Vec<i64>> = fixture.input(ids_name)?.to_vec2()?;
    let want_mask: Vec<Vec<i64>> = fixture.input(mask_name)?.to_vec2()?;
    let widen = |rows: &[Vec<u32>]| -> Vec<Vec<i64>> { rows.iter().map(|r| r.iter().map(|&v| i64::from(v)).collect()).collect() };
    if widen(&tokens.ids) != want_ids || widen(&tokens.attention_mask) != want_mask {
        return Err(Error::Fixture(format!("{}: tokenizing the prompts does not give {ids_name}/{mask_name}", fixture.name)));
    }
    Ok(())
}

pub fn prepare(fixture: &Fixture, opts: &RunOptions) -> Result<Option<Computation>> {
    let encoder = WanTextEncoder::load(&fixture.model_dir, opts.dtype, &opts.device)?;
    let prompts = prompts(fixture)?;
    let negatives = negative_prompts(fixture, prompts.len())?;
    let max_len = usize_field(fixture, "max_sequence_length")?;
    check_tokens(fixture, &encoder, &prompts, max_len, "input_ids", "attention_mask")?;
    check_tokens(fixture, &encoder, &negatives, max_len, "negative_input_ids", "negative_attention_mask")?;
    let device = opts.device.clone();
    let to_device = |name: &str| -> Result<Tensor> { Ok(fixture.input(name)?.to_dtype(DType::U32)?.to_device(&device)?) };
    let (ids, mask) = (to_device("input_ids")?, to_device("attention_mask")?);
    let (neg_ids, neg_mask) = (to_device("negative_input_ids")?, to_device("negative_attention_mask")?);
    Ok(Some(Box::new(move || {
        let mut out = Outputs::new();
        out.insert("prompt_embeds".into(), encoder.encode_prompts(&prompts, max_len)?);
        out.insert("negative_prompt_embeds".into(), encoder.encode_prompts(&negatives, max_len)?);
        let full = encoder.encoder().forward(&ids, &mask)?;
        // num_layers x (B, L, D) -> (num_layers, B, L, D)
        out.insert("block_outputs".into(), Tensor::stack(&full.block_outputs, 0)?);
        out.insert("token_embeddings".into(), full.token_embeddings);
        out.insert("last_hidden_state".into(), full.last_hidden_state);
        let negative = encoder.encoder().forward(&neg_ids, &neg_mask)?;
        out.insert("negative_last_hidden_state".into(), negative.last_hidden_state);
        Ok(out)
    })))
}
