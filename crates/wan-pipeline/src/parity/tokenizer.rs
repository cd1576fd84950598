//! Fixture kind `tokenizer`: prompt cleaning plus tokenization at each max_length the fixture
//! covers (`call.max_sequence_length` and `call.also_max_length`), compared exactly.

use candle_core::{Device, Tensor};

use super::{Computation, Fixture, Outputs, RunOptions};
use crate::text_encoder::{prompt_clean, PromptTokenizer};
use crate::{Error, Result};

/// A manifest field holding a list of strings.
pub(super) fn string_list(fixture: &Fixture, key: &str) -> Result<Vec<String>> {
    let value = fixture.call_field(key)?;
    let items = value
        .as_array()
        .ok_or_else(|| Error::Fixture(format!("{}: call.{key} is not a list", fixture.name)))?;
    items
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| Error::Fixture(format!("{}: call.{key} holds a non-string", fixture.name)))
        })
        .collect()
}

/// A manifest field holding a non-negative integer.
pub(super) fn usize_field(fixture: &Fixture, key: &str) -> Result<usize> {
    fixture
        .call_field(key)?
        .as_u64()
        .map(|n| n as usize)
        .ok_or_else(|| Error::Fixture(format!("{}: call.{key} is not a non-negative integer", fixture.name)))
}

/// (rows, width) u32 values as an i64 tensor, the dtype transformers returns.
fn i64_tensor(rows: &[Vec<u32>]) -> Result<Tensor> {
    let width = rows.first().map_or(0, Vec::len);
    let flat: Vec<i64> = rows.iter().flatten().map(|&v| i64::from(v)).collect();
    Ok(Tensor::from_vec(flat, (rows.len(), width), &Device::Cpu)?)
}

pub fn prepare(fixture: &Fixture, _opts: &RunOptions) -> Result<Option<Computation>> {
    let tokenizer = PromptTokenizer::load(&fixture.model_dir.join("tokenizer"))?;
    let raw = string_list(fixture, "prompts_raw")?;
    let expected_clean = string_list(fixture, "prompts_clean")?;
    let lengths = [usize_field(fixture, "max_sequence_length")?, usize_field(fixture, "also_max_length")?];
    let name = fixture.name.clone();
    Ok(Some(Box::new(move || {
        let cleaned: Vec<String> = raw.iter().map(|p| prompt_clean(p)).collect();
        // The cleaned text is not a tensor output, but a difference here explains any id mismatch.
        for (i, (got, want)) in cleaned.iter().zip(&expected_clean).enumerate() {
            if got != want {
                return Err(Error::Fixture(format!("{name}: prompt_clean of prompt {i} gave {got:?}, expected {want:?}")));
            }
        }
        let mut out = Outputs::new();
        for max_length in lengths {
            let batch = tokenizer.tokenize(&cleaned, max_length)?;
            let seq_lens: Vec<i64> = batch.seq_lens.iter().map(|&n| n as i64).collect();
            out.insert(format!("input_ids_{max_length}"), i64_tensor(&batch.ids)?);
            out.insert(format!("attention_mask_{max_length}"), i64_tensor(&batch.attention_mask)?);
            out.insert(format!("seq_lens_{max_length}"), Tensor::new(seq_lens, &Device::Cpu)?);
        }
        Ok(out)
    })))
}
