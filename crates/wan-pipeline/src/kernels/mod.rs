//! Hand-written CPU kernels, the native backend of [`crate::backend`]: the products that
//! dominate a DiT forward (activations times a linear layer's weight, and attention) and the
//! multi-threaded row kernels around them. Every entry point returns `None` (or is not used)
//! unless [`crate::backend::native_on`] says the native backend runs on the tensor's device, so
//! the model files call them without asking about devices.
//!
//! Why not candle's matmul: on the AVX-512 CPUs this server targets, candle's CPU gemm (the `gemm`
//! crate) reaches about half of the f32 FMA peak, and it has no bf16 kernel at all (a bf16 model
//! was multiplied by widening each weight to f32 first). A weight never changes after loading, so
//! it can be laid out once, at load time, in exactly the order a register-blocked micro-kernel
//! streams it; the activations are repacked per call (a small copy next to the product). The f32
//! kernel uses AVX-512F FMAs (or AVX2 + FMA ones), the bf16 one the AVX-512 BF16 dot products
//! (`vdpbf16ps`, two products per f32 lane, accumulated in f32). Where the CPU lacks them,
//! callers keep candle's path: [`PackedWeight::pack`] returns `None`, [`attention`] returns
//! `None`.
//!
//! Beside them: the element conversions and row sums the DiT's fused row kernels share
//! ([`Elem`], [`sum_f64`]) and a multi-threaded widening to f32 for candle's fallback paths.

mod aligned;
mod attention;
mod avx2;
mod avx512;
mod channel_norm;
mod conv3d;
mod elem;
pub mod flash;
mod gelu;
mod gemm;
mod half_on_cpu;
mod isa;
mod linear_op;
mod microkernel;
mod norm_rope;
mod packed_weight;
pub mod rows;
mod softmax;
mod widen;

pub use attention::attention;
pub use channel_norm::channel_norm;
pub use conv3d::{causal_conv3d, ConvGeometry, PackedConv3d};
pub use half_on_cpu::{attention_operands, conv2d, widened_linear};
pub use isa::{instruction_sets, isa, Isa};
pub use norm_rope::{norm_rope, norm_rope_cpu};
pub use elem::{contiguous, sum_f64, Elem};
pub use gelu::{gelu_tanh, gelu_tanh_in_place};
pub use gemm::Epilogue;
pub use linear_op::{packed_linear, packed_linear_with};
pub use packed_weight::{PackedFormat, PackedWeight};
pub use widen::to_f32;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod conv3d_tests;
