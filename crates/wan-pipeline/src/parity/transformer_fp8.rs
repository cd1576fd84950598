//! Fixture kind `transformer_fp8`: one DiT forward with the blocks' Linears stored in float8
//! e4m3fn and computed in bf16 (diffusers' layerwise casting), beside the same forward in bf16
//! and in f32; the stored codes of named layers, each named layer applied to the input diffusers
//! gave it, and torch's conversion of special values.

use candle_core::{DType, Device, Module, Tensor};

use super::{Computation, Fixture, Outputs, RunOptions};
use crate::fp8::{self, WeightStorage};
use crate::linear::{with_input_tap, Linear};
use crate::loader::streaming::StreamingSafetensors;
use crate::transformer::WanTransformer3DModel;
use crate::{Error, Result};

pub fn prepare(fixture: &Fixture, opts: &RunOptions) -> Result<Option<Computation>> {
    let dir = fixture.model_dir.join("transformer");
    let device = opts.device.clone();
    let fp8_model = WanTransformer3DModel::load_stored(&dir, DType::BF16, WeightStorage::Fp8E4m3, &device)?;
    let bf16_model = WanTransformer3DModel::load(&dir, DType::BF16, &device)?;
    let f32_model = WanTransformer3DModel::load(&dir, DType::F32, &device)?;
    let checkpoint = StreamingSafetensors::open(&crate::loader::safetensors_files(&dir)?)?;
    let named = super::tokenizer::string_list(fixture, "named_layers")?;
    let input = |name: &str| -> Result<Tensor> { Ok(fixture.input(name)?.to_device(&device)?) };
    let hidden = input("hidden_states")?;
    let timestep = input("timestep")?;
    let text = input("encoder_hidden_states")?;
    let probe = fixture.input("fp8_probe_f32")?.clone();
    // (layer, its input as diffusers gave it, the expected input's shape)
    let mut layer_inputs = Vec::new();
    for layer in &named {
        let given = fixture.input(&format!("layer_input.{layer}")).or_else(|_| fixture.expected(&format!("layer_input.{layer}")))?;
        layer_inputs.push((layer.clone(), given.to_device(&device)?, given.dims().to_vec()));
    }
    let fixture_name = fixture.name.clone();
    Ok(Some(Box::new(move || {
        let mut out = Outputs::new();
        let as_bf16 = |t: &Tensor| t.to_dtype(DType::BF16);
        let (fp8_output, tapped) =
            with_input_tap(|| fp8_model.forward(&as_bf16(&hidden)?, &timestep, &as_bf16(&text)?, None));
        out.insert("output".into(), fp8_output?.to_dtype(DType::F32)?);
        let bf16_output = bf16_model.forward(&as_bf16(&hidden)?, &timestep, &as_bf16(&text)?, None)?;
        out.insert("output_bf16".into(), bf16_output.to_dtype(DType::F32)?);
        out.insert("output_f32".into(), f32_model.forward(&hidden, &timestep, &text, None)?);
        for (layer, given, shape) in &layer_inputs {
            let Some(Linear::Fp8(stored)) = fp8_model.block_linear(layer) else {
                return Err(Error::Fixture(format!("{fixture_name}: {layer} is not held in fp8")));
            };
            let (codes, bias_codes) = stored.codes();
            let (weight, bias) = stored.widened()?;
            out.insert(format!("fp8_bits.{layer}.weight"), codes.clone());
            out.insert(format!("fp8.{layer}.weight"), weight.to_dtype(DType::F32)?);
            if let (Some(codes), Some(bias)) = (bias_codes, bias) {
                out.insert(format!("fp8_bits.{layer}.bias"), codes.clone());
                out.insert(format!("fp8.{layer}.bias"), bias.to_dtype(DType::F32)?);
            }
            for part in ["weight", "bias"] {
                let name = format!("{layer}.{part}");
                out.insert(format!("bf16.{name}"), checkpoint.load(&name, DType::BF16, &Device::Cpu)?.to_dtype(DType::F32)?);
            }
            let applied = Module::forward(&Linear::Fp8(stored.clone()), &given.to_dtype(DType::BF16)?)?;
            out.insert(format!("layer_output.{layer}"), applied.to_dtype(DType::F32)?);
            let seen = tapped
                .get(layer)
                .ok_or_else(|| Error::Fixture(format!("{fixture_name}: the forward never called {layer}")))?;
            out.insert(format!("layer_input.{layer}"), unfold_rows(seen, shape)?.to_dtype(DType::F32)?);
        }
        let probe_values: Vec<f32> = probe.to_vec1()?;
        let codes: Vec<u8> = probe_values.iter().map(|&v| fp8::e4m3fn_from_f32(v)).collect();
        out.insert("fp8_probe_bits".into(), Tensor::new(codes, &Device::Cpu)?);
        let finite: Vec<f32> = probe_values.into_iter().filter(|v| !v.is_nan()).collect();
        let n = finite.len();
        let via_bf16 = fp8::quantize(&Tensor::from_vec(finite, n, &Device::Cpu)?.to_dtype(DType::BF16)?, &Device::Cpu)?;
        out.insert("fp8_probe_bits_via_bf16".into(), via_bf16);
        Ok(out)
    })))
}

/// The cross-attention keys and values are computed on the text context with its trailing
/// identical padding rows folded into one (see `PreparedContext`), so the tap sees fewer rows
/// than diffusers' layer did. Repeating the last row restores what the folding removed; a wrong
/// fold would show here, as the restored rows would not match diffusers'.
fn unfold_rows(seen: &Tensor, want: &[usize]) -> Result<Tensor> {
    let (b, rows, dim) = seen.dims3()?;
    match want {
        [_, full, _] if *full > rows && rows > 0 => {
            let last = seen.narrow(1, rows - 1, 1)?.broadcast_as((b, full - rows, dim))?.contiguous()?;
            Ok(Tensor::cat(&[seen, &last], 1)?)
        }
        _ => Ok(seen.clone()),
    }
}
