//! The DiT's linear products at the 1.3B model's sizes (and UMT5-XXL's), and its attention:
//! candle's ops against the AVX-512 or AVX2 kernels of `wan_pipeline::kernels`, in one run:
//! `cargo bench --bench gemm`.
//!
//! Prints GFLOP/s (median of `WAN_BENCH_RUNS`, default 7, after a warm-up) for each shape:
//! candle f32, packed f32, candle bf16 as the DiT ran it before the packed kernel (weight and
//! input widened to f32, product in f32, result narrowed), and packed bf16.

use std::time::Instant;

use candle_core::{DType, Device, Module, Tensor};
use wan_pipeline::kernels::{packed_linear, PackedWeight};

fn median_secs(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs = std::env::var("WAN_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(7);
    let dev = Device::Cpu;
    // (rows, out, in): the DiT's self-attention q/k/v/out, FFN up, FFN down, text embedder,
    // cross-attn k/v; then UMT5-XXL's attention projections and gated-GELU FFN on 512 tokens.
    let shapes = [
        (320, 1536, 1536),
        (320, 8960, 1536),
        (320, 1536, 8960),
        (512, 1536, 4096),
        (512, 1536, 1536),
        (512, 4096, 4096),
        (512, 10240, 4096),
        (512, 4096, 10240),
    ];
    println!("{:>18} {:>11} {:>11} {:>7} {:>11} {:>11} {:>7}", "rows x out x in", "candle f32", "packed f32", "ratio", "candle bf16", "packed bf16", "ratio");
    for (m, n, k) in shapes {
        let flops = 2.0 * (m * n * k) as f64;
        let w = Tensor::randn(0f32, 0.02, (n, k), &dev)?;
        let b = Tensor::randn(0f32, 0.02, n, &dev)?;
        let x = Tensor::randn(0f32, 1.0, (1, m, k), &dev)?;
        let candle_f32 = candle_nn::Linear::new(w.clone(), Some(b.clone()));
        let t_candle = median_secs(runs, || drop(candle_f32.forward(&x)));
        let packed = PackedWeight::pack(&w, Some(&b))?.ok_or("no packed f32 kernel on this CPU (needs AVX2 + FMA or AVX-512F)")?;
        let t_packed = median_secs(runs, || drop(packed_linear(&x, &packed)));

        let (wb, bb, xb) = (w.to_dtype(DType::BF16)?, b.to_dtype(DType::BF16)?, x.to_dtype(DType::BF16)?);
        let t_candle_bf16 = median_secs(runs, || {
            let y = xb.to_dtype(DType::F32).and_then(|x| x.broadcast_matmul(&wb.to_dtype(DType::F32)?.t()?));
            drop(y.and_then(|y| y.broadcast_add(&bb.to_dtype(DType::F32)?)?.to_dtype(DType::BF16)));
        });
        // Without AVX-512 BF16 there is no packed bf16 kernel: that column reads NaN.
        let t_packed_bf16 = match PackedWeight::pack(&wb, Some(&bb))? {
            Some(packed_bf16) => median_secs(runs, || drop(packed_linear(&xb, &packed_bf16))),
            None => f64::NAN,
        };
        let g = |t: f64| flops / t / 1e9;
        println!(
            "{:>18} {:>11.1} {:>11.1} {:>6.2}x {:>11.1} {:>11.1} {:>6.2}x",
            format!("{m}x{n}x{k}"),
            g(t_candle),
            g(t_packed),
            t_candle / t_packed,
            g(t_candle_bf16),
            g(t_packed_bf16),
            t_candle_bf16 / t_packed_bf16
        );
    }
    println!("(GFLOP/s; ratio = candle time / packed time, same run; kernels: {})", wan_pipeline::kernels::instruction_sets());
    attention(runs)?;
    Ok(())
}

/// The DiT's attention at the 1.3B model's sizes (12 heads of 128; 320 tokens; self-attention and
/// cross-attention to the 25 kept text keys; and 4096 tokens, to see how it scales): candle's ops
/// on the split heads, as the DiT ran before the kernel (widened to f32, split, chunked
/// attention, merged), against the kernel.
fn attention(runs: usize) -> Result<(), Box<dyn std::error::Error>> {
    use wan_pipeline::transformer::attention::chunked_attention;
    let dev = Device::Cpu;
    let heads = 12;
    println!("\n{:>18} {:>6} {:>11} {:>11} {:>7}", "q x k x heads*dim", "dtype", "candle ms", "kernel ms", "ratio");
    for (lq, lk) in [(320, 320), (320, 25), (4096, 4096)] {
        for dtype in [DType::F32, DType::BF16] {
            let q = Tensor::randn(0f32, 1.0, (1, lq, 1536), &dev)?.to_dtype(dtype)?;
            let k = Tensor::randn(0f32, 1.0, (1, lk, 1536), &dev)?.to_dtype(dtype)?;
            let v = Tensor::randn(0f32, 1.0, (1, lk, 1536), &dev)?.to_dtype(dtype)?;
            let split = |t: &Tensor| -> candle_core::Result<Tensor> {
                let (b, l, w) = t.dims3()?;
                t.reshape((b, l, heads, w / heads))?.transpose(1, 2)?.contiguous()
            };
            let t_candle = median_secs(runs, || {
                let out = chunked_attention(&split(&q).unwrap(), &split(&k).unwrap(), &split(&v).unwrap(), None).unwrap();
                drop(out.transpose(1, 2).and_then(|o| o.reshape((1, lq, 1536))));
            });
            let t_kernel = median_secs(runs, || drop(wan_pipeline::kernels::attention(&q, &k, &v, heads, None)));
            println!(
                "{:>18} {:>6} {:>11.3} {:>11.3} {:>6.2}x",
                format!("{lq}x{lk}x{heads}*128"),
                format!("{dtype:?}"),
                t_candle * 1e3,
                t_kernel * 1e3,
                t_candle / t_kernel
            );
        }
    }
    Ok(())
}
