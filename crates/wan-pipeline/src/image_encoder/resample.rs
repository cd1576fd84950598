//! Pillow's convolution resampler (`Image.resize` with BILINEAR / BICUBIC / LANCZOS / BOX /
//! HAMMING) on 8-bit RGB, reproduced bit for bit.
//!
//! Why not `fast_image_resize`: it follows Pillow-SIMD, which quantises the filter weights to
//! 16-bit integers with a per-image precision, while Pillow itself uses 32-bit weights with 22
//! fractional bits. The two disagree by one grey level on some pixels, and CLIP's reference
//! `pixel_values` were made by Pillow. The algorithm is small, so it is written out here:
//!
//! 1. for each output coordinate, the filter (stretched by the downscale factor: this is the
//!    antialiasing) is sampled over the input pixels it covers and normalised to sum to 1;
//! 2. the weights are rounded to fixed point (22 fractional bits, rounding away from zero);
//! 3. two 1-D passes, the first one's result rounded and clipped to `u8`: horizontal then
//!    vertical, unless the height shrinks much more than the width (Pillow 13's rule, see
//!    [`resize_rgb8`]). A pass whose size does not change is skipped, as Pillow does.

use crate::{Error, Result};

/// Fractional bits of the fixed-point filter weights: 32 bits minus 8 for the pixel value and
/// 2 for the overshoot of filters with negative lobes.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// A resampling filter as Pillow numbers them (`PIL.Image.Resampling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Lanczos,
    Bilinear,
    Bicubic,
    Box,
    Hamming,
}

impl Filter {
    /// Pillow's integer code (`resample` in `preprocessor_config.json`). NEAREST (0) is not a
    /// convolution and is not supported.
    pub fn from_pil_code(code: u32) -> Result<Self> {
        match code {
            1 => Ok(Filter::Lanczos),
            2 => Ok(Filter::Bilinear),
            3 => Ok(Filter::Bicubic),
            4 => Ok(Filter::Box),
            5 => Ok(Filter::Hamming),
            other => Err(Error::InvalidInput(format!(
                "unsupported PIL resampling filter {other} (supported: 1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming)"
            ))),
        }
    }

    /// Half-width of the filter at scale 1, in input pixels.
    fn support(self) -> f64 {
        match self {
            Filter::Box => 0.5,
            Filter::Bilinear | Filter::Hamming => 1.0,
            Filter::Bicubic => 2.0,
            Filter::Lanczos => 3.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            Filter::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let px = x * std::f64::consts::PI;
                    // Pillow writes these two constants as C floats.
                    px.sin() / px * (0.54f32 as f64 + 0.46f32 as f64 * px.cos())
                }
            }
            Filter::Bicubic => {
                // Keys' cubic convolution with a = -0.5.
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let px = x * std::f64::consts::PI;
        px.sin() / px
    }
}

/// The fixed-point weights of one output coordinate: `weights[i]` applies to input `start + i`.
struct Tap {
    start: usize,
    weights: Vec<i32>,
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for resizing `in_size` to `out_size`
/// (the whole input: box `(0, in_size)`).
fn taps(in_size: usize, out_size: usize, filter: Filter) -> Vec<Tap> {
    let scale = in_size as f64 / out_size as f64;
    // Downscaling widens the filter over more input pixels: the antialiasing.
    let filter_scale = scale.max(1.0);
    let support = filter.support() * filter_scale;
    let inv_filter_scale = 1.0 / filter_scale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) cast truncates toward zero; the clamps make the sign irrelevant.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64).max(xmin as i64) as usize;
            let raw: Vec<f64> =
                (xmin..xmax).map(|x| filter.weight((x as f64 - center + 0.5) * inv_filter_scale)).collect();
            let total: f64 = raw.iter().sum();
            let one = (1i64 << PRECISION_BITS) as f64;
            let weights = raw
                .iter()
                .map(|&w| {
                    let w = if total != 0.0 { w / total } else { w };
                    // Round half away from zero, then truncate, as Pillow's (int) cast does.
                    if w < 0.0 {
                        (-0.5 + w * one) as i32
                    } else {
                        (0.5 + w * one) as i32
                    }
                })
                .collect();
            Tap { start: xmin, weights }
        })
        .collect()
}

/// Rounds a fixed-point accumulator (which started at one half) to a clipped `u8`.
fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

const HALF: i64 = 1 << (PRECISION_BITS - 1);

/// Resizes a packed RGB8 buffer (`height * width * 3`, rows top to bottom) to
/// `out_width` x `out_height` exactly as Pillow's `Image.resize(.., resample=filter)` does.
pub fn resize_rgb8(
    pixels: &[u8],
    width: usize,
    height: usize,
    out_width: usize,
    out_height: usize,
    filter: Filter,
) -> Result<Vec<u8>> {
    if width == 0 || height == 0 || out_width == 0 || out_height == 0 {
        return Err(Error::InvalidInput(format!("cannot resize a {width}x{height} image to {out_width}x{out_height}")));
    }
    if pixels.len() != width * height * 3 {
        return Err(Error::InvalidInput(format!(
            "RGB buffer of {} bytes does not hold a {width}x{height} image",
            pixels.len()
        )));
    }
    let (need_horizontal, need_vertical) = (out_width != width, out_height != height);
    // Pillow (13) runs the vertical pass first when the height shrinks by more than twice as
    // many pixels as the width does; the order changes the intermediate rounding, so follow it.
    let (dh, dw) = (height as i64 - out_height as i64, width as i64 - out_width as i64);
    let vertical_first = dh > 0 && dh > dw * 2;
    let mut current = pixels.to_vec();
    if vertical_first {
        if need_vertical {
            current = vertical_pass(&current, width, height, out_height, filter);
        }
        if need_horizontal {
            current = horizontal_pass(&current, width, out_height, out_width, filter);
        }
    } else {
        if need_horizontal {
            current = horizontal_pass(&current, width, height, out_width, filter);
        }
        if need_vertical {
            current = vertical_pass(&current, out_width, height, out_height, filter);
        }
    }
    Ok(current)
}

fn horizontal_pass(src: &[u8], width: usize, height: usize, out_width: usize, filter: Filter) -> Vec<u8> {
    let taps = taps(width, out_width, filter);
    let mut out = vec![0u8; out_width * height * 3];
    for y in 0..height {
        let row = &src[y * width * 3..(y + 1) * width * 3];
        let out_row = &mut out[y * out_width * 3..(y + 1) * out_width * 3];
        for (xx, tap) in taps.iter().enumerate() {
            let mut acc = [HALF; 3];
            for (i, &w) in tap.weights.iter().enumerate() {
                let p = &row[(tap.start + i) * 3..(tap.start + i) * 3 + 3];
                for c in 0..3 {
                    acc[c] += p[c] as i64 * w as i64;
                }
            }
            for c in 0..3 {
                out_row[xx * 3 + c] = clip8(acc[c]);
            }
        }
    }
    out
}

fn vertical_pass(src: &[u8], width: usize, height: usize, out_height: usize, filter: Filter) -> Vec<u8> {
    let taps = taps(height, out_height, filter);
    let stride = width * 3;
    let mut out = vec![0u8; stride * out_height];
    let mut acc = vec![0i64; stride];
    for (yy, tap) in taps.iter().enumerate() {
        acc.fill(HALF);
        for (i, &w) in tap.weights.iter().enumerate() {
            let row = &src[(tap.start + i) * stride..(tap.start + i + 1) * stride];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += p as i64 * w as i64;
            }
        }
        for (o, &a) in out[yy * stride..(yy + 1) * stride].iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_of_every_output_sum_to_one_in_fixed_point() {
        for filter in [Filter::Bicubic, Filter::Bilinear, Filter::Lanczos, Filter::Box, Filter::Hamming] {
            for (inp, out) in [(64, 42), (40, 32), (32, 77), (1000, 224), (7, 3)] {
                for tap in taps(inp, out, filter) {
                    let sum: i64 = tap.weights.iter().map(|&w| w as i64).sum();
                    // Rounding each weight moves the sum by at most 1/2 per weight.
                    assert!(
                        (sum - (1i64 << PRECISION_BITS)).abs() <= tap.weights.len() as i64,
                        "{filter:?} {inp}->{out}: {sum}"
                    );
                    assert!(tap.start + tap.weights.len() <= inp);
                }
            }
        }
    }

    #[test]
    fn constant_image_stays_constant_and_same_size_is_a_copy() {
        let (w, h) = (37, 23);
        let pixels: Vec<u8> = (0..w * h).flat_map(|_| [0u8, 128, 255]).collect();
        for (ow, oh) in [(16, 10), (80, 50), (37, 11), (5, 23)] {
            let out = resize_rgb8(&pixels, w, h, ow, oh, Filter::Bicubic).unwrap();
            assert_eq!(out.len(), ow * oh * 3);
            assert!(out.chunks(3).all(|p| p == [0, 128, 255]), "{ow}x{oh}");
        }
        let varied: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 256) as u8).collect();
        assert_eq!(resize_rgb8(&varied, w, h, w, h, Filter::Bicubic).unwrap(), varied);
    }

    /// Bit-exact agreement with Pillow 13 on random RGB images, up- and downscaling, every
    /// filter. The reference file was written by this script (numpy, Pillow, safetensors):
    ///
    /// ```text
    /// rng = np.random.default_rng(0); out = {}
    /// for j, (h, w, oh, ow) in enumerate([(37, 23, 16, 10), (7, 5, 20, 13), (33, 31, 17, 29), (20, 50, 9, 70)]):
    ///     a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    ///     out[f"s{j}_in"] = a; out[f"s{j}_size"] = np.array([oh, ow], dtype=np.int64)
    ///     for code in (1, 2, 3, 4, 5):
    ///         out[f"s{j}_out_{code}"] = np.array(Image.fromarray(a).resize((ow, oh), resample=code))
    /// save_file(out, "pillow_resize.safetensors")
    /// ```
    #[test]
    fn matches_pillow_bit_for_bit() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/image_encoder/testdata/pillow_resize.safetensors");
        let t = candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap();
        let mut checked = 0;
        for j in 0.. {
            let Some(input) = t.get(&format!("s{j}_in")) else { break };
            let (h, w, _) = input.dims3().unwrap();
            let pixels: Vec<u8> = input.flatten_all().unwrap().to_vec1().unwrap();
            let size: Vec<i64> = t[&format!("s{j}_size")].to_vec1().unwrap();
            let (oh, ow) = (size[0] as usize, size[1] as usize);
            for code in 1..=5u32 {
                let want: Vec<u8> = t[&format!("s{j}_out_{code}")].flatten_all().unwrap().to_vec1().unwrap();
                let got = resize_rgb8(&pixels, w, h, ow, oh, Filter::from_pil_code(code).unwrap()).unwrap();
                let differing = got.iter().zip(&want).filter(|(a, b)| a != b).count();
                assert_eq!(differing, 0, "{w}x{h} -> {ow}x{oh}, filter {code}");
                checked += 1;
            }
        }
        assert_eq!(checked, 20);
    }

    #[test]
    fn rejects_empty_sizes_and_short_buffers() {
        assert!(resize_rgb8(&[], 0, 0, 4, 4, Filter::Bicubic).is_err());
        assert!(resize_rgb8(&[0; 12], 2, 2, 0, 4, Filter::Bicubic).is_err());
        assert!(resize_rgb8(&[0; 11], 2, 2, 4, 4, Filter::Bicubic).is_err());
        assert!(Filter::from_pil_code(0).is_err());
        assert_eq!(Filter::from_pil_code(3).unwrap(), Filter::Bicubic);
    }
}
