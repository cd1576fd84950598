//! The float element types the CPU kernels read and write, each computed in f32.

use candle_core::Layout;
use half::{bf16, f16};

/// A float element read as f32 and written back rounded to nearest (even).
pub trait Elem: Copy + Send + Sync + 'static {
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
}

impl Elem for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl Elem for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f32::from_bits(u32::from(self.to_bits()) << 16)
    }
    /// Round to nearest even, NaN kept quiet: the same values as `half::bf16::from_f32`, written
    /// without branches so that a loop of them vectorises.
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        let x = v.to_bits();
        let rounded = x.wrapping_add(0x7fff + ((x >> 16) & 1)) >> 16;
        let quiet_nan = (x >> 16) | 0x40;
        bf16::from_bits((if v.is_nan() { quiet_nan } else { rounded }) as u16)
    }
}

impl Elem for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
}

/// The elements a contiguous `layout` addresses in a CPU storage's `data`; an error for a strided
/// layout (the kernels' callers make their inputs contiguous first).
pub fn contiguous<'a, T>(data: &'a [T], layout: &Layout) -> candle_core::Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("CPU kernel input must be contiguous, got strides {:?}", layout.stride()),
    }
}

/// `sum f(x_i)` in f64 over 16 interleaved partial sums: a loop the compiler vectorises (one long
/// chain of dependent f64 additions would not), in a fixed order, so the result does not depend
/// on how rows are spread over threads.
#[inline(always)]
pub fn sum_f64<T: Elem>(x: &[T], f: impl Fn(f32) -> f64) -> f64 {
    const LANES: usize = 16;
    let mut acc = [0f64; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (a, v) in acc.iter_mut().zip(chunk) {
            *a += f(v.to_f32());
        }
    }
    let mut sum = 0.0;
    for a in acc {
        sum += a;
    }
    for v in tail {
        sum += f(v.to_f32());
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_equals_the_half_crate() {
        // Every exponent and sign with low mantissa patterns around the rounding point, plus
        // infinities, NaNs and the largest finite values.
        let mut checked = 0;
        for high in 0..=0xffffu32 {
            for low in [0u32, 1, 0x7fff, 0x8000, 0x8001, 0xffff, 0x4000, 0xc000] {
                let v = f32::from_bits((high << 16) | low);
                let (ours, theirs) = (<bf16 as Elem>::from_f32(v), bf16::from_f32(v));
                assert_eq!(ours.to_bits(), theirs.to_bits(), "{v:e} ({:#010x})", v.to_bits());
                assert_eq!(<bf16 as Elem>::to_f32(ours).to_bits(), ours.to_f32().to_bits());
                checked += 1;
            }
        }
        assert_eq!(checked, 65536 * 8);
    }

    #[test]
    fn sum_f64_adds_every_element() {
        let x: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5).collect();
        for n in [0, 1, 15, 16, 17, 1000] {
            let want: f64 = x[..n].iter().map(|&v| f64::from(v) * 2.0).sum();
            assert_eq!(sum_f64(&x[..n], |v| f64::from(v) * 2.0), want, "n = {n}");
        }
    }
}

/// An output pointer handed to the tasks of a parallel kernel, each of which writes only its own
/// disjoint part of the output (each kernel's SAFETY comments say which).
#[derive(Clone, Copy)]
pub(super) struct SendPtr(pub(super) *mut f32);
// SAFETY: the tasks sharing one write disjoint elements, and the buffer outlives them.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
