//! The AVX2 + FMA variants of the f32 micro-kernels, for CPUs without AVX-512 (many EPYC and
//! desktop CPUs, and some of our CI machines), on the same packed layouts as `avx512.rs`.
//!
//! An `MR x NR` (12 x 32) tile needs 48 eight-lane accumulators, three times the 16 vector
//! registers AVX2 has, so the tile is computed as four 6 x 16 sub-tiles: 12 accumulators, two
//! weight vectors and one broadcast activation, 12 independent FMA chains (enough to hide the
//! FMA latency on two pipes). Each sub-tile streams its 6 activation rows and 16 weight columns
//! over all of k; the packed strip and panel stay in L1/L2 across the four passes.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(target_arch = "x86_64")]
use super::avx512::{TileOut, MR, NR};

/// Rows and columns of one sub-tile.
#[cfg(target_arch = "x86_64")]
const SUB_ROWS: usize = 6;
#[cfg(target_arch = "x86_64")]
const SUB_COLS: usize = 16;

/// f32 tile, as [`super::avx512::tile_f32`]: `out = A B (+ bias)` over `kc` steps, A as
/// `a[k * lda + i]`, B as `b[k * NR + j]`.
///
/// # Safety
/// The CPU has AVX2 and FMA; `a` addresses `(kc - 1) * lda + MR` and `b` `kc * NR` readable f32;
/// `out.c` addresses MR rows of NR writable f32 at stride `out.ldc`, `out.bias` (if not null) NR
/// readable f32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn tile_f32(kc: usize, a: *const f32, lda: usize, b: *const f32, out: TileOut) {
    // SAFETY (caller): as above.
    unsafe { tile_f32_onto::<false>(kc, a, lda, b, out) }
}

/// [`tile_f32`] added to what the tile already holds, as [`super::avx512::tile_f32_accumulate`].
///
/// # Safety
/// As [`tile_f32`], and `out.c` addresses MR rows of NR readable f32 too.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn tile_f32_accumulate(kc: usize, a: *const f32, lda: usize, b: *const f32, out: TileOut) {
    // SAFETY (caller): as above.
    unsafe { tile_f32_onto::<true>(kc, a, lda, b, out) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tile_f32_onto<const ACCUMULATE: bool>(kc: usize, a: *const f32, lda: usize, b: *const f32, out: TileOut) {
    // SAFETY (caller): every offset below stays inside the strip, panel and tile described above.
    unsafe {
        for col in (0..NR).step_by(SUB_COLS) {
            for row in (0..MR).step_by(SUB_ROWS) {
                let mut acc = [[_mm256_setzero_ps(); 2]; SUB_ROWS];
                if ACCUMULATE {
                    for (i, r) in acc.iter_mut().enumerate() {
                        let c = out.c.add((row + i) * out.ldc + col);
                        *r = [_mm256_loadu_ps(c), _mm256_loadu_ps(c.add(8))];
                    }
                }
                for k in 0..kc {
                    let bk = b.add(k * NR + col);
                    let (b0, b1) = (_mm256_loadu_ps(bk), _mm256_loadu_ps(bk.add(8)));
                    let ak = a.add(k * lda + row);
                    for (i, r) in acc.iter_mut().enumerate() {
                        let ai = _mm256_broadcast_ss(&*ak.add(i));
                        r[0] = _mm256_fmadd_ps(ai, b0, r[0]);
                        r[1] = _mm256_fmadd_ps(ai, b1, r[1]);
                    }
                }
                let (bias0, bias1) = if out.bias.is_null() {
                    (_mm256_setzero_ps(), _mm256_setzero_ps())
                } else {
                    (_mm256_loadu_ps(out.bias.add(col)), _mm256_loadu_ps(out.bias.add(col + 8)))
                };
                for (i, r) in acc.iter().enumerate() {
                    let c = out.c.add((row + i) * out.ldc + col);
                    _mm256_storeu_ps(c, _mm256_add_ps(r[0], bias0));
                    _mm256_storeu_ps(c.add(8), _mm256_add_ps(r[1], bias1));
                }
            }
        }
    }
}

/// `e^x`, 8 lanes: the range reduction and degree-7 polynomial of the AVX-512 `exp16`, with the
/// power of two built in the exponent bits (AVX2 has no `vscalefps`). Inputs are clamped to
/// [-87, 88], so `k` is in [-126, 127] and `2^k` a normal float.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp8(x: __m256) -> __m256 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.0)), _mm256_set1_ps(-87.0));
    let k = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)));
    let r = _mm256_fnmadd_ps(k, _mm256_set1_ps(LN2_HI), x);
    let r = _mm256_fnmadd_ps(k, _mm256_set1_ps(LN2_LO), r);
    let mut p = _mm256_set1_ps(1.0 / 5040.0);
    for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let pow2 = _mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)));
    _mm256_mul_ps(p, _mm256_castsi256_ps(pow2))
}

/// As [`super::softmax::softmax_columns_avx512`], 8 columns per vector.
///
/// # Safety
/// The CPU has AVX2 and FMA; `ld` is a multiple of 8; `s` addresses `keys` rows of `ld` writable
/// f32; `inv_sum` holds `ld` writable f32; `key_bias`, if given, holds `keys` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn softmax_columns(s: *mut f32, ld: usize, keys: usize, key_bias: Option<&[f32]>, inv_sum: *mut f32) {
    // SAFETY (caller): every pointer below stays inside the rows and columns described above.
    unsafe {
        for c in (0..ld).step_by(8) {
            let mut max = _mm256_set1_ps(f32::NEG_INFINITY);
            for j in 0..keys {
                let at = s.add(j * ld + c);
                let mut v = _mm256_loadu_ps(at);
                if let Some(bias) = key_bias {
                    v = _mm256_add_ps(v, _mm256_set1_ps(bias[j]));
                    _mm256_storeu_ps(at, v);
                }
                max = _mm256_max_ps(max, v);
            }
            let mut sum = _mm256_setzero_ps();
            for j in 0..keys {
                let at = s.add(j * ld + c);
                let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(at), max));
                _mm256_storeu_ps(at, e);
                sum = _mm256_add_ps(sum, e);
            }
            _mm256_storeu_ps(inv_sum.add(c), _mm256_div_ps(_mm256_set1_ps(1.0), sum));
        }
    }
}
