//! float8 e4m3fn weight storage, as diffusers' layerwise casting keeps it
//! (`enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)`):
//! a layer's weight and bias are held as one byte per value and widened to the compute dtype each
//! time the layer runs, which halves a bf16 DiT's memory.
//!
//! The bytes are kept as a `U8` tensor and widened by an `index_select` into a 256-entry table of
//! the compute dtype: every e4m3fn value is exactly a bf16 (and f32) value, so the lookup is the
//! exact upcast, and it is one of candle's ordinary ops on every device (CUDA's `is_u8_*`
//! kernels), where candle's own `F8E4M3` casts are not on every CUDA architecture we build for.
//!
//! The rounding is written here rather than taken from the `float8` crate because it must be
//! torch's bit for bit (the `transformer_fp8` fixtures pin it): saturating (finite overflow and
//! infinities become +-448; e4m3fn has no infinity), NaN to 0x7F/0xFF, round to nearest even,
//! the sign of zero kept.

use candle_core::{DType, Device, Tensor};

use crate::Result;

/// How a layer's weights are held in memory between its calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WeightStorage {
    /// In the model's compute dtype (what the checkpoint is converted to).
    #[default]
    Compute,
    /// float8 e4m3fn, widened to the compute dtype for each call.
    Fp8E4m3,
}

impl WeightStorage {
    /// `bf16`/`f32`/`compute` (the compute dtype) or `fp8` (e4m3fn), as `--weights` takes it.
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "compute" | "bf16" | "f16" | "f32" => Ok(Self::Compute),
            "fp8" | "fp8_e4m3fn" | "f8e4m3" => Ok(Self::Fp8E4m3),
            other => Err(crate::Error::InvalidInput(format!("weights must be bf16 or fp8, got {other:?}"))),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Compute => "compute",
            Self::Fp8E4m3 => "fp8",
        }
    }

    /// Bytes per stored value given the compute dtype's size.
    pub fn bytes_per_value(&self, compute: DType) -> usize {
        match self {
            Self::Compute => compute.size_in_bytes(),
            Self::Fp8E4m3 => 1,
        }
    }
}

/// The layers of a DiT checkpoint that `--weights fp8` holds in e4m3fn: each block's attention
/// projections and feed-forward Linears, weight and bias; what diffusers' layerwise casting
/// picks with its default skip patterns (norms, the embedders and the output head stay in the
/// compute dtype). The model builds exactly these through [`crate::linear::linear_stored`]; the
/// memory plan counts by this name test, and a test holds it to the fixture's list.
pub fn is_stored_fp8(tensor_name: &str) -> bool {
    const LAYERS: [&str; 10] = [
        "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
        "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0",
        "ffn.net.0.proj", "ffn.net.2",
    ];
    const IMAGE_KV: [&str; 2] = ["attn2.add_k_proj", "attn2.add_v_proj"];
    let Some(rest) = tensor_name.strip_prefix("blocks.") else { return false };
    let Some((index, rest)) = rest.split_once('.') else { return false };
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let Some(layer) = rest.strip_suffix(".weight").or_else(|| rest.strip_suffix(".bias")) else { return false };
    LAYERS.contains(&layer) || IMAGE_KV.contains(&layer)
}

/// The bits of 480.0: from here on a value does not fit e4m3fn (448 is its largest).
const FP8_OVERFLOW_BITS: u32 = 1087 << 20;
/// The bits of 2^-6, e4m3fn's smallest normal value.
const FP8_MIN_NORMAL_BITS: u32 = 121 << 23;
/// The bits of 2^14: adding it to |x| < 2^-6 rounds x to a multiple of 2^-9 (its ulp), to even.
const DENORM_MAGIC_BITS: u32 = 141 << 23;

/// `float32 -> float8_e4m3fn` as torch converts it (c10's `fp8e4m3fn_from_fp32_value`, the
/// saturating rule of torch 2.15).
pub fn e4m3fn_from_f32(x: f32) -> u8 {
    let bits = x.to_bits();
    let sign = ((bits >> 24) & 0x80) as u8;
    let abs = bits & 0x7FFF_FFFF;
    let magnitude = if abs >= FP8_OVERFLOW_BITS {
        // NaN keeps a NaN code; finite overflow and infinity saturate to 448.
        if abs > 0x7F80_0000 {
            0x7F
        } else {
            0x7E
        }
    } else if abs < FP8_MIN_NORMAL_BITS {
        let rounded = f32::from_bits(abs) + f32::from_bits(DENORM_MAGIC_BITS);
        (rounded.to_bits() - DENORM_MAGIC_BITS) as u8
    } else {
        let mantissa_odd = (abs >> 20) & 1;
        // Re-bias the exponent (127 -> 7) and round the 20 dropped mantissa bits to even.
        let rebiased = abs.wrapping_add((7u32.wrapping_sub(127) << 23).wrapping_add(0x7FFFF)).wrapping_add(mantissa_odd);
        let code = (rebiased >> 20) as u8;
        // A carry into 0x7F (values in (464, 480)) would be the NaN code: saturate.
        if code == 0x7F {
            0x7E
        } else {
            code
        }
    };
    magnitude | sign
}

/// The value of an e4m3fn code (exact in f32; 0x7F and 0xFF are NaN).
pub fn e4m3fn_to_f32(code: u8) -> f32 {
    let sign = if code & 0x80 != 0 { -1.0f32 } else { 1.0 };
    let exponent = ((code >> 3) & 0x0F) as i32;
    let mantissa = (code & 0x07) as f32;
    if exponent == 0x0F && code & 0x07 == 0x07 {
        return f32::NAN;
    }
    let magnitude = if exponent == 0 {
        mantissa * (-9f32).exp2()
    } else {
        (1.0 + mantissa / 8.0) * ((exponent - 7) as f32).exp2()
    };
    sign * magnitude
}

/// The e4m3fn codes of a float tensor (any float dtype; a bf16 tensor is widened exactly
/// first, which is the path a bf16-loaded weight takes in diffusers), as a `U8` tensor of the
/// same shape on `device`.
pub fn quantize(t: &Tensor, device: &Device) -> Result<Tensor> {
    let values: Vec<f32> = t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let codes: Vec<u8> = values.into_iter().map(e4m3fn_from_f32).collect();
    Ok(Tensor::from_vec(codes, t.shape(), device)?)
}

/// The 256 values of e4m3fn in `dtype` on `device`: what [`dequantize`] looks codes up in.
pub fn code_table(dtype: DType, device: &Device) -> Result<Tensor> {
    let values: Vec<f32> = (0..=255u8).map(e4m3fn_to_f32).collect();
    Ok(Tensor::from_vec(values, 256, device)?.to_dtype(dtype)?)
}

/// `U8` codes -> their values in the table's dtype, same shape (exact).
pub fn dequantize(codes: &Tensor, table: &Tensor) -> Result<Tensor> {
    Ok(table.index_select(&codes.flatten_all()?, 0)?.reshape(codes.shape())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_follows_torch_at_the_edges() {
        // (f32 bits, e4m3fn code): ties to even, subnormals, saturation, NaN and signed zero.
        let cases: [(u32, u8); 16] = [
            (0x0000_0000, 0x00),
            (0x8000_0000, 0x80),
            (0x3F80_0000, 0x38),
            (0x3F88_0000, 0x38), // tie 1.0 / 1.125 -> 1.0
            (0x3F98_0000, 0x3A), // tie 1.125 / 1.25 -> 1.25
            (0x3FF8_0000, 0x40), // tie 1.875 / 2.0 -> carry into the exponent
            (0x3C70_0000, 0x08), // tie largest subnormal / smallest normal
            (0x3A80_0000, 0x00), // tie 0 / 2^-9
            (0x3A80_0001, 0x01),
            (0x3B40_0000, 0x02), // subnormal tie 1.5 -> 2
            (0x43E8_0000, 0x7E), // tie 448 / 480 -> 448
            (0x43E8_0001, 0x7E), // would round to the NaN code: saturates
            (0x7F80_0000, 0x7E), // +inf -> 448
            (0xFF80_0000, 0xFE),
            (0x7FC0_0000, 0x7F),
            (0xFFC0_0000, 0xFF),
        ];
        for (bits, code) in cases {
            assert_eq!(e4m3fn_from_f32(f32::from_bits(bits)), code, "f32 bits {bits:#010x}");
        }
    }

    #[test]
    fn the_fp8_layers_are_the_blocks_linears() {
        assert!(is_stored_fp8("blocks.0.attn1.to_q.weight"));
        assert!(is_stored_fp8("blocks.39.attn2.to_out.0.bias"));
        assert!(is_stored_fp8("blocks.3.attn2.add_k_proj.weight"));
        assert!(is_stored_fp8("blocks.1.ffn.net.2.weight"));
        for name in [
            "blocks.0.attn1.norm_q.weight",
            "blocks.0.norm2.weight",
            "blocks.0.scale_shift_table",
            "blocks.x.attn1.to_q.weight",
            "proj_out.weight",
            "condition_embedder.image_embedder.ff.net.0.proj.weight",
            "blocks.0.attn2.norm_added_k.weight",
        ] {
            assert!(!is_stored_fp8(name), "{name}");
        }
    }

    #[test]
    fn every_code_round_trips_and_the_table_is_exact() {
        let table = code_table(DType::BF16, &Device::Cpu).unwrap();
        let widened: Vec<f32> = table.to_dtype(DType::F32).unwrap().to_vec1().unwrap();
        for code in 0..=255u8 {
            let value = e4m3fn_to_f32(code);
            if value.is_nan() {
                assert!(widened[code as usize].is_nan());
                continue;
            }
            assert_eq!(e4m3fn_from_f32(value), code, "code {code:#04x} = {value}");
            assert_eq!(widened[code as usize].to_bits(), value.to_bits(), "bf16 table at {code:#04x}");
        }
    }

    #[test]
    fn quantize_then_dequantize_gives_the_rounded_values() {
        let x = Tensor::new(&[[0.1f32, -0.3, 500.0], [1e-9, 3.14159, -17.3]], &Device::Cpu).unwrap();
        let codes = quantize(&x, &Device::Cpu).unwrap();
        assert_eq!(codes.dtype(), DType::U8);
        let back: Vec<Vec<f32>> = dequantize(&codes, &code_table(DType::F32, &Device::Cpu).unwrap()).unwrap().to_vec2().unwrap();
        assert_eq!(back, vec![vec![0.1015625, -0.3125, 448.0], vec![0.0, 3.25, -18.0]]);
    }
}
