//! Behaviour of the VAE beyond the fixtures: causality, streaming, bounded cache, input checks.
//! Uses the tiny random-weight VAE of the shared models directory.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};

use super::cache::FeatureCache;
use super::config::WanVaeConfig;
use super::decoder::Decoder;
use super::AutoencoderKLWan;

fn tiny_vae_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models/wan-tiny-t2v/vae")
}

fn tiny_vae() -> AutoencoderKLWan {
    AutoencoderKLWan::load(&tiny_vae_dir(), DType::F32, &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn streaming_decode_hands_out_one_then_four_frames_and_matches_decode() {
    let vae = tiny_vae();
    let z = Tensor::randn(0f32, 1f32, (1, 16, 3, 2, 3), &Device::Cpu).unwrap();
    let mut sizes = Vec::new();
    let mut chunks = Vec::new();
    vae.decode_streaming(&z, &mut |c| {
        sizes.push(c.dims().to_vec());
        chunks.push(c);
        Ok(())
    })
    .unwrap();
    assert_eq!(sizes, vec![vec![1, 3, 1, 16, 24], vec![1, 3, 4, 16, 24], vec![1, 3, 4, 16, 24]]);
    let streamed = Tensor::cat(&chunks, 2).unwrap();
    let whole = vae.decode(&z).unwrap();
    assert_eq!(whole.dims(), &[1, 3, 9, 16, 24]);
    assert_eq!(max_abs_diff(&streamed, &whole), 0.0);
}

#[test]
fn decode_and_encode_are_causal() {
    let vae = tiny_vae();
    let z = Tensor::randn(0f32, 1f32, (1, 16, 3, 2, 3), &Device::Cpu).unwrap();
    let full = vae.decode(&z).unwrap();
    let prefix = vae.decode(&z.narrow(2, 0, 2).unwrap()).unwrap();
    // Later latent frames must not change earlier video frames.
    assert_eq!(max_abs_diff(&full.narrow(2, 0, 5).unwrap(), &prefix), 0.0);

    let video = Tensor::rand(-1f32, 1f32, (1, 3, 9, 16, 16), &Device::Cpu).unwrap();
    let full = vae.encode(&video).unwrap();
    let prefix = vae.encode(&video.narrow(2, 0, 5).unwrap()).unwrap();
    assert_eq!(full.mean.dims(), &[1, 16, 3, 2, 2]);
    assert_eq!(max_abs_diff(&full.mean.narrow(2, 0, 2).unwrap(), &prefix.mean), 0.0);
}

#[test]
fn decoder_cache_stops_growing_after_the_third_chunk() {
    let cfg: WanVaeConfig = crate::loader::read_config(&tiny_vae_dir()).unwrap();
    let vb = crate::loader::var_builder(&tiny_vae_dir(), DType::F32, &Device::Cpu).unwrap();
    let decoder = Decoder::new(&cfg, vb.pp("decoder")).unwrap();
    let mut cache = FeatureCache::new();
    let mut bytes = Vec::new();
    for _ in 0..5 {
        let z = Tensor::randn(0f32, 1f32, (1, 1, 16, 2, 3), &Device::Cpu).unwrap();
        decoder.forward_chunk(&z, &mut cache).unwrap();
        bytes.push(cache.bytes());
    }
    // Chunk 0 fills one frame per conv; the temporal upsamplers start on chunk 1 (one frame) and
    // are full from chunk 2. From then on, every chunk replaces what it reads.
    assert!(bytes[0] > 0 && bytes[1] > bytes[0] && bytes[2] > bytes[1], "cache sizes per chunk: {bytes:?}");
    assert!(bytes[3..].iter().all(|&b| b == bytes[2]), "cache sizes per chunk: {bytes:?}");
}

#[test]
fn latent_normalisation_round_trips_and_uses_config_stats() {
    let vae = tiny_vae();
    let x = Tensor::randn(0f32, 1f32, (2, 16, 2, 3, 3), &Device::Cpu).unwrap();
    let back = vae.normalize_latents(&vae.denormalize_latents(&x).unwrap()).unwrap();
    assert!(max_abs_diff(&back, &x) < 1e-5);
    let zeros = Tensor::zeros((1, 16, 1, 1, 1), DType::F32, &Device::Cpu).unwrap();
    let means: Vec<f32> = vae.denormalize_latents(&zeros).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let expected: Vec<f32> = vae.config.latents_mean.iter().map(|&m| m as f32).collect();
    assert_eq!(means, expected);
}

#[test]
fn rejects_bad_shapes_instead_of_panicking() {
    let vae = tiny_vae();
    let four_frames = Tensor::zeros((1, 3, 4, 16, 16), DType::F32, &Device::Cpu).unwrap();
    assert!(vae.encode(&four_frames).is_err());
    let odd_size = Tensor::zeros((1, 3, 1, 12, 16), DType::F32, &Device::Cpu).unwrap();
    assert!(vae.encode(&odd_size).is_err());
    let wrong_channels = Tensor::zeros((1, 4, 2, 2, 2), DType::F32, &Device::Cpu).unwrap();
    assert!(vae.decode(&wrong_channels).is_err());
}
