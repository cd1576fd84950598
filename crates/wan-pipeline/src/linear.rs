//! The linear layer every model of the pipeline is built from (the DiT, the UMT5 text encoder
//! and the CLIP image encoder): packed for the native CPU kernels where the backend runs them
//! (decided when the layer loads), candle's elsewhere; or stored in float8 e4m3fn and widened
//! for each call ([`crate::fp8`]).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::{Device, Module, Tensor};
use candle_nn::VarBuilder;

use crate::fp8::{self, WeightStorage};
use crate::kernels::{packed_linear, widened_linear, PackedWeight};
use crate::Result;

/// A linear layer (`weight` (out, in), `bias` (out)) as `torch.nn.Linear`.
///
/// Under the native backend, on a CPU with a packed kernel of [`crate::kernels`] for its dtype
/// (f32 with AVX-512F or AVX2 + FMA, bf16 with AVX-512 BF16), the weight is packed at load time
/// and the product runs there; the original layout is not kept, so the weights are in memory
/// once. A half-precision weight without a packed kernel multiplies in f32
/// ([`crate::kernels::widened_linear`]). Otherwise this is `candle_nn::Linear`.
#[derive(Debug, Clone)]
pub enum Linear {
    Packed(Arc<PackedWeight>),
    Candle(candle_nn::Linear),
    Fp8(Arc<Fp8Linear>),
}

/// A linear layer whose weight and bias are held as e4m3fn codes and widened to the compute
/// dtype for each call (diffusers' layerwise casting): the widened copy lives only during the
/// call, so the layer costs one byte per parameter between calls.
#[derive(Debug)]
pub struct Fp8Linear {
    /// The checkpoint path of the layer (`blocks.0.attn1.to_q`), for [`with_input_tap`].
    name: String,
    /// (out, in) `U8` codes.
    weight: Tensor,
    /// (out,) `U8` codes.
    bias: Option<Tensor>,
    /// The 256 values of the codes in the compute dtype, on the layer's device.
    table: Tensor,
}

impl Fp8Linear {
    /// Reads the layer in the compute dtype (`vb`'s: a bf16 model rounds an f32 checkpoint to
    /// bf16 first, as diffusers does before casting; an e4m3fn checkpoint widens exactly) on the
    /// CPU, one tensor at a time, and keeps its codes on `vb`'s device.
    fn load(in_dim: usize, out_dim: usize, with_bias: bool, vb: VarBuilder) -> Result<Self> {
        let device = vb.device().clone();
        let on_cpu = vb.clone().set_device(Device::Cpu);
        let weight = fp8::quantize(&on_cpu.get((out_dim, in_dim), "weight")?, &device)?;
        let bias = if with_bias { Some(fp8::quantize(&on_cpu.get(out_dim, "bias")?, &device)?) } else { None };
        Ok(Self { name: vb.prefix(), weight, bias, table: fp8::code_table(vb.dtype(), &device)? })
    }

    /// The stored codes: (out, in) and (out,), `U8`.
    pub fn codes(&self) -> (&Tensor, Option<&Tensor>) {
        (&self.weight, self.bias.as_ref())
    }

    /// The weight and bias widened to the compute dtype (exact).
    pub fn widened(&self) -> Result<(Tensor, Option<Tensor>)> {
        let bias = match &self.bias {
            Some(b) => Some(fp8::dequantize(b, &self.table)?),
            None => None,
        };
        Ok((fp8::dequantize(&self.weight, &self.table)?, bias))
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        record_input(&self.name, x);
        let (weight, bias) = self.widened()?;
        Ok(match widened_linear(x, &weight, bias.as_ref())? {
            Some(y) => y,
            None => match bias {
                Some(bias) => affine_rounded_once(x, &weight, &bias)?,
                None => x.broadcast_matmul(&weight.t()?)?,
            },
        })
    }
}

/// `x W^T + b` with the bias inside the product's f32 accumulation, so that a half-precision
/// result is rounded once, as torch's fused `addmm` does: `[x, 1] [W, b]^T`. A matmul followed by
/// a bias add rounds the product first and can lose the result where the two nearly cancel
/// (the `transformer_fp8` fixtures hold each layer to one bf16 ulp). Costs a copy of `x` with one
/// more column.
fn affine_rounded_once(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let mut ones_shape = x.dims().to_vec();
    if let Some(last) = ones_shape.last_mut() {
        *last = 1;
    }
    let ones = Tensor::ones(ones_shape, x.dtype(), x.device())?;
    let x1 = Tensor::cat(&[x, &ones], candle_core::D::Minus1)?;
    let w1 = Tensor::cat(&[weight, &bias.unsqueeze(1)?], 1)?;
    Ok(x1.broadcast_matmul(&w1.t()?)?)
}

thread_local! {
    /// Armed by [`with_input_tap`]: the last input of every e4m3fn layer called on this thread.
    static INPUT_TAP: RefCell<Option<BTreeMap<String, Tensor>>> = const { RefCell::new(None) };
}

fn record_input(name: &str, x: &Tensor) {
    INPUT_TAP.with(|tap| {
        if let Some(inputs) = tap.borrow_mut().as_mut() {
            inputs.insert(name.to_string(), x.clone());
        }
    });
}

/// Runs `f` and returns, beside its result, the input each e4m3fn layer ([`Fp8Linear`]) last
/// received during it, by checkpoint path: what the `transformer_fp8` fixtures compare (the
/// inputs diffusers' layerwise-casting hooks saw). Costs nothing when not armed.
pub fn with_input_tap<R>(f: impl FnOnce() -> R) -> (R, BTreeMap<String, Tensor>) {
    INPUT_TAP.with(|tap| *tap.borrow_mut() = Some(BTreeMap::new()));
    let result = f();
    let inputs = INPUT_TAP.with(|tap| tap.borrow_mut().take()).unwrap_or_default();
    (result, inputs)
}

/// `weight` (out_dim, in_dim) and `bias` (out_dim) from `vb`.
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    Linear::new(candle_nn::linear(in_dim, out_dim, vb)?)
}

/// [`linear`], held as `storage` says.
pub fn linear_stored(in_dim: usize, out_dim: usize, storage: WeightStorage, vb: VarBuilder) -> Result<Linear> {
    match storage {
        WeightStorage::Compute => linear(in_dim, out_dim, vb),
        WeightStorage::Fp8E4m3 => Ok(Linear::Fp8(Arc::new(Fp8Linear::load(in_dim, out_dim, true, vb)?))),
    }
}

/// `weight` (out_dim, in_dim) from `vb`, no bias (T5's layers).
pub fn linear_no_bias(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    Linear::new(candle_nn::linear_no_bias(in_dim, out_dim, vb)?)
}

impl Linear {
    /// Packs the layer for the native backend's kernel where there is one; keeps candle's layer
    /// otherwise.
    fn new(inner: candle_nn::Linear) -> Result<Self> {
        Ok(match PackedWeight::pack(inner.weight(), inner.bias())? {
            Some(packed) => Linear::Packed(Arc::new(packed)),
            None => Linear::Candle(inner),
        })
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let inner = match self {
            Linear::Packed(w) => return packed_linear(x, w),
            Linear::Fp8(layer) => return layer.forward(x).map_err(candle_core::Error::wrap),
            Linear::Candle(inner) => inner,
        };
        // Wrapped, not flattened to a message: the caller can still downcast to our variant.
        match widened_linear(x, inner.weight(), inner.bias()) {
            Ok(Some(y)) => Ok(y),
            Ok(None) => inner.forward(x),
            Err(e) => Err(candle_core::Error::wrap(e)),
        }
    }
}
