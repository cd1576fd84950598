//! The packed kernels against candle's matmul on shapes that exercise every edge: rows not a
//! multiple of the strip height, outputs not a multiple of the panel width, odd k (bf16 pairs),
//! long k (each tile sums all of it in registers), several row blocks.

use candle_core::{DType, Device, Tensor};

use super::{packed_linear, PackedFormat, PackedWeight};

/// Largest |a - b| relative to the largest |b|.
fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// Reference `x W^T + b` in f32 through candle, on the same (already rounded) values.
fn reference(x: &Tensor, w: &Tensor, b: &Tensor) -> Tensor {
    let (x, w, b) = (x.to_dtype(DType::F32).unwrap(), w.to_dtype(DType::F32).unwrap(), b.to_dtype(DType::F32).unwrap());
    let k = *x.dims().last().unwrap();
    let lead: Vec<usize> = x.dims()[..x.rank() - 1].to_vec();
    let y = x.reshape(((), k)).unwrap().matmul(&w.t().unwrap()).unwrap().broadcast_add(&b).unwrap();
    let mut dims = lead;
    dims.push(w.dim(0).unwrap());
    y.reshape(dims).unwrap()
}

const SHAPES: [(usize, usize, usize); 9] = [
    (1, 1, 1),
    (5, 31, 3),
    (12, 32, 7),
    (13, 33, 64),
    (25, 70, 300),
    (7, 96, 513),
    (400, 40, 20),
    (2, 64, 1536),
    (37, 200, 257),
];

#[test]
fn f32_kernel_matches_candle_matmul() {
    let dev = Device::Cpu;
    for (m, n, k) in SHAPES {
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, n, &dev).unwrap();
        let Some(packed) = PackedWeight::pack_for_cpu(&w, Some(&b)).unwrap() else {
            eprintln!("no AVX2 or AVX-512 on this CPU: the packed f32 kernel is not used here");
            return;
        };
        assert_eq!(packed.format(), PackedFormat::F32);
        let x = Tensor::randn(0f32, 1.0, (1, m, k), &dev).unwrap();
        let err = rel_err(&packed_linear(&x, &packed).unwrap(), &reference(&x, &w, &b));
        assert!(err < 1e-5, "f32 m={m} n={n} k={k}: relative error {err}");
    }
}

#[test]
fn bf16_kernel_matches_f32_product_of_the_same_values() {
    let dev = Device::Cpu;
    for (m, n, k) in SHAPES {
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap().to_dtype(DType::BF16).unwrap();
        let b = Tensor::randn(0f32, 1.0, n, &dev).unwrap().to_dtype(DType::BF16).unwrap();
        let Some(packed) = PackedWeight::pack_for_cpu(&w, Some(&b)).unwrap() else {
            eprintln!("no AVX-512 BF16 on this CPU: the packed bf16 kernel is not used here");
            return;
        };
        assert_eq!(packed.format(), PackedFormat::Bf16);
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap().to_dtype(DType::BF16).unwrap();
        let y = packed_linear(&x, &packed).unwrap();
        assert_eq!(y.dtype(), DType::BF16);
        // Products of bf16 values are exact in f32; the sum differs only in order, and the
        // result is rounded to bf16 (relative 2^-8).
        let err = rel_err(&y, &reference(&x, &w, &b));
        assert!(err < 8e-3, "bf16 m={m} n={n} k={k}: relative error {err}");
    }
}

#[test]
fn f32_input_to_a_bf16_weight_is_rounded_then_multiplied() {
    let dev = Device::Cpu;
    let w = Tensor::randn(0f32, 1.0, (40, 33), &dev).unwrap().to_dtype(DType::BF16).unwrap();
    let b = Tensor::zeros(40, DType::BF16, &dev).unwrap();
    let Some(packed) = PackedWeight::pack_for_cpu(&w, Some(&b)).unwrap() else {
        return;
    };
    let x = Tensor::randn(0f32, 1.0, (9, 33), &dev).unwrap();
    let y = packed_linear(&x, &packed).unwrap();
    assert_eq!(y.dtype(), DType::F32);
    let want = reference(&x.to_dtype(DType::BF16).unwrap(), &w, &b);
    assert!(rel_err(&y, &want) < 1e-5);
}

#[test]
fn other_dtypes_and_devices_are_left_to_candle() {
    let w = Tensor::zeros((4, 4), DType::F16, &Device::Cpu).unwrap();
    assert!(PackedWeight::pack_for_cpu(&w, None).unwrap().is_none());
    let w = Tensor::zeros((4, 4), DType::F64, &Device::Cpu).unwrap();
    assert!(PackedWeight::pack_for_cpu(&w, None).unwrap().is_none());
}

#[test]
fn a_wrong_input_width_is_an_error_not_a_panic() {
    let w = Tensor::zeros((4, 8), DType::F32, &Device::Cpu).unwrap();
    let Some(packed) = PackedWeight::pack_for_cpu(&w, None).unwrap() else {
        return;
    };
    let x = Tensor::zeros((2, 7), DType::F32, &Device::Cpu).unwrap();
    assert!(packed_linear(&x, &packed).is_err());
}

#[test]
fn gelu_epilogue_equals_gelu_after_the_product() {
    use super::{gelu_tanh, packed_linear_with, Epilogue};
    let dev = Device::Cpu;
    // 25 rows and 70 outputs: full tiles and edge tiles, each over k = 300.
    let w = Tensor::randn(0f32, 0.1, (70, 300), &dev).unwrap();
    let b = Tensor::randn(0f32, 0.5, 70, &dev).unwrap();
    let Some(packed) = PackedWeight::pack_for_cpu(&w, Some(&b)).unwrap() else {
        return;
    };
    let x = Tensor::randn(0f32, 1.0, (25, 300), &dev).unwrap();
    let fused = packed_linear_with(&x, &packed, Epilogue::GeluTanh).unwrap();
    let plain: Vec<f32> = packed_linear(&x, &packed).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let want = Tensor::from_vec(plain.iter().map(|&v| gelu_tanh(v)).collect::<Vec<f32>>(), (25, 70), &dev).unwrap();
    assert_eq!(rel_err(&fused, &want), 0.0, "the epilogue sees exactly the plain product");
}

#[test]
fn concurrent_calls_from_rayon_tasks_agree_with_candle() {
    use rayon::prelude::*;
    let dev = Device::Cpu;
    // 800 rows: three row blocks, so each call packs and multiplies several times.
    let w = Tensor::randn(0f32, 1.0, (300, 130), &dev).unwrap();
    let b = Tensor::randn(0f32, 1.0, 300, &dev).unwrap();
    let Some(packed) = PackedWeight::pack_for_cpu(&w, Some(&b)).unwrap() else {
        return;
    };
    let x = Tensor::randn(0f32, 1.0, (800, 130), &dev).unwrap();
    let want = reference(&x, &w, &b);
    // Many calls at once from rayon tasks, sharing the pool with their own inner tasks.
    let errors: Vec<f32> = (0..32).into_par_iter().map(|_| rel_err(&packed_linear(&x, &packed).unwrap(), &want)).collect();
    assert!(errors.iter().all(|&e| e < 1e-5), "{errors:?}");
}

#[test]
fn a_call_while_this_threads_buffer_is_in_use_packs_into_its_own() {
    // What a rayon worker meets when, waiting inside one call, it steals another: the thread's
    // packing buffer is already borrowed.
    let dev = Device::Cpu;
    let w = Tensor::randn(0f32, 1.0, (40, 50), &dev).unwrap();
    let b = Tensor::randn(0f32, 1.0, 40, &dev).unwrap();
    let Some(packed) = PackedWeight::pack_for_cpu(&w, Some(&b)).unwrap() else {
        return;
    };
    let x = Tensor::randn(0f32, 1.0, (13, 50), &dev).unwrap();
    let y = super::gemm::PACKED_A.with(|cell| {
        let _held = cell.borrow_mut();
        packed_linear(&x, &packed).unwrap()
    });
    assert!(rel_err(&y, &reference(&x, &w, &b)) < 1e-5);
}
