//! `--weights fp8`: which layers are stored in e4m3fn, and loading a checkpoint that is already
//! stored in e4m3fn (as ComfyUI users have them).

use std::collections::BTreeSet;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use wan_pipeline::fp8::{self, WeightStorage};
use wan_pipeline::linear::Linear;
use wan_pipeline::loader::streaming::StreamingSafetensors;
use wan_pipeline::memory::WeightBytes;
use wan_pipeline::pipeline::{ModelDtypes, ModelKind};
use wan_pipeline::transformer::WanTransformer3DModel;

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

fn fixtures() -> PathBuf {
    std::env::var_os("WAN_FIXTURES").map(PathBuf::from).unwrap_or_else(|| shared().join("fixtures"))
}

fn tiny_transformer() -> PathBuf {
    shared().join("models/wan-tiny-t2v/transformer")
}

fn checkpoint_names(dir: &std::path::Path) -> Vec<String> {
    let files = wan_pipeline::loader::safetensors_files(dir).unwrap();
    let mut names = Vec::new();
    for file in files {
        let data = std::fs::read(&file).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&data).unwrap();
        names.extend(meta.tensors().keys().cloned());
    }
    names
}

#[test]
fn the_fp8_layers_are_those_diffusers_casts() {
    let manifest_path = fixtures().join("transformer_t2v_fp8/manifest.json");
    let Ok(text) = std::fs::read_to_string(&manifest_path) else {
        println!("skipped: no {}", manifest_path.display());
        return;
    };
    let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    let want: BTreeSet<String> = manifest["layerwise_casting"]["parameters_by_dtype_after_enable"]["float8_e4m3fn"]
        .as_array()
        .expect("the manifest lists the fp8 parameters")
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(want.len(), 40);
    let got: BTreeSet<String> = checkpoint_names(&tiny_transformer()).into_iter().filter(|n| fp8::is_stored_fp8(n)).collect();
    assert_eq!(got, want);
}

#[test]
fn fp8_halves_the_counted_block_weights() {
    let model = shared().join("models/wan-tiny-t2v");
    let bf16 = WeightBytes::of_dir_with(&model, ModelKind::T2v, ModelDtypes::uniform(DType::BF16)).unwrap();
    let fp8 = WeightBytes::of_dir_with(
        &model,
        ModelKind::T2v,
        ModelDtypes { transformer_weights: WeightStorage::Fp8E4m3, ..ModelDtypes::uniform(DType::BF16) },
    )
    .unwrap();
    let files = wan_pipeline::loader::safetensors_files(&tiny_transformer()).unwrap();
    let stored = StreamingSafetensors::open(&files).unwrap().element_count_where(fp8::is_stored_fp8);
    assert!(stored > 0);
    assert_eq!(bf16.transformer - fp8.transformer, stored, "one byte saved per fp8 value");
    assert_eq!(bf16.text_encoder, fp8.text_encoder);
}

/// The codes of every fp8 layer of `model`, by name.
fn codes_of(model: &WanTransformer3DModel, names: &[String]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for name in names {
        let layer = name.trim_end_matches(".weight");
        let Some(Linear::Fp8(stored)) = model.block_linear(layer) else { panic!("{layer} is not fp8") };
        let (w, b) = stored.codes();
        let mut bytes: Vec<u8> = w.flatten_all().unwrap().to_vec1().unwrap();
        bytes.extend(b.unwrap().to_vec1::<u8>().unwrap());
        out.push((layer.to_string(), bytes));
    }
    out
}

#[test]
fn an_e4m3fn_checkpoint_loads_to_the_same_codes() {
    let src = tiny_transformer();
    let from_bf16 = WanTransformer3DModel::load_stored(&src, DType::BF16, WeightStorage::Fp8E4m3, &Device::Cpu).unwrap();

    // The same checkpoint with the fp8 layers stored as F8_E4M3 (their codes, exactly).
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let files = wan_pipeline::loader::safetensors_files(&src).unwrap();
    let reader = StreamingSafetensors::open(&files).unwrap();
    let names = checkpoint_names(&src);
    let table = fp8::code_table(DType::F32, &Device::Cpu).unwrap();
    let mut tensors = std::collections::HashMap::new();
    for name in &names {
        let t = reader.load(name, DType::F32, &Device::Cpu).unwrap();
        let t = if fp8::is_stored_fp8(name) {
            let codes = fp8::quantize(&t.to_dtype(DType::BF16).unwrap(), &Device::Cpu).unwrap();
            fp8::dequantize(&codes, &table).unwrap().to_dtype(DType::F8E4M3).unwrap()
        } else {
            t
        };
        tensors.insert(name.clone(), t);
    }
    candle_core::safetensors::save(&tensors, dir.path().join("diffusion_pytorch_model.safetensors")).unwrap();
    let stored_as_fp8 = StreamingSafetensors::open(&[dir.path().join("diffusion_pytorch_model.safetensors")]).unwrap();
    assert!(stored_as_fp8.element_count() > 0);

    let from_fp8 = WanTransformer3DModel::load_stored(dir.path(), DType::BF16, WeightStorage::Fp8E4m3, &Device::Cpu).unwrap();
    let weights: Vec<String> = names.iter().filter(|n| fp8::is_stored_fp8(n) && n.ends_with(".weight")).cloned().collect();
    assert_eq!(codes_of(&from_fp8, &weights), codes_of(&from_bf16, &weights));

    // And it runs, in bf16 (widened exactly), with or without fp8 storage, to the same output.
    let x = Tensor::randn(0f32, 1.0, (1, 16, 2, 4, 4), &Device::Cpu).unwrap().to_dtype(DType::BF16).unwrap();
    let t = Tensor::new(&[500i64], &Device::Cpu).unwrap();
    let text_dim = from_fp8.config.text_dim;
    let ctx = Tensor::randn(0f32, 1.0, (1, 8, text_dim), &Device::Cpu).unwrap().to_dtype(DType::BF16).unwrap();
    let widened = WanTransformer3DModel::load(dir.path(), DType::BF16, &Device::Cpu).unwrap();
    let a: Vec<f32> = from_fp8.forward(&x, &t, &ctx, None).unwrap().to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = widened.forward(&x, &t, &ctx, None).unwrap().to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let worst = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
    // Same numbers; only the kernels differ (per-call widened f32 product vs packed bf16 kernel).
    assert!(worst < 0.05, "fp8-stored vs widened checkpoint: max |diff| {worst}");
}
