//! The softmax of attention scores held key-major (one row per key, one column per query), so
//! that 16 queries (8 with AVX2) are normalised at once in one vector. The AVX2 variant is in
//! `avx2.rs`; [`super::microkernel::softmax_columns`] picks one.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// `e^x`, 16 lanes: the same range reduction and degree-7 polynomial as the GELU's scalar exp
/// (relative error ~2e-7), with the power of two applied by `vscalefps`. Inputs are clamped to
/// [-87, 88], so the result is finite and normal.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn exp16(x: __m512) -> __m512 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.0)), _mm512_set1_ps(-87.0));
    let k = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)));
    let r = _mm512_fnmadd_ps(k, _mm512_set1_ps(LN2_HI), x);
    let r = _mm512_fnmadd_ps(k, _mm512_set1_ps(LN2_LO), r);
    let mut p = _mm512_set1_ps(1.0 / 5040.0);
    for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    _mm512_scalef_ps(p, k)
}

/// For each of the `ld` columns of `s` (row-major, `ld` per row), over its first `keys` rows: adds
/// `key_bias[j]` to row j (if given), then replaces each score by `exp(score - column max)` and
/// writes `1 / sum` of the column's exponentials to `inv_sum[col]`. The caller divides by the
/// sum after the product with the values (one multiply per output instead of one per score).
///
/// # Safety
/// The CPU has AVX-512F; `ld` is a multiple of 16; `s` addresses `keys` rows of `ld` writable
/// f32; `inv_sum` holds `ld` writable f32; `key_bias`, if given, holds `keys` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub unsafe fn softmax_columns_avx512(s: *mut f32, ld: usize, keys: usize, key_bias: Option<&[f32]>, inv_sum: *mut f32) {
    // SAFETY (caller): every pointer below stays inside the rows and columns described above.
    unsafe {
        for c in (0..ld).step_by(16) {
            let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
            for j in 0..keys {
                let at = s.add(j * ld + c);
                let mut v = _mm512_loadu_ps(at);
                if let Some(bias) = key_bias {
                    v = _mm512_add_ps(v, _mm512_set1_ps(bias[j]));
                    _mm512_storeu_ps(at, v);
                }
                max = _mm512_max_ps(max, v);
            }
            let mut sum = _mm512_setzero_ps();
            for j in 0..keys {
                let at = s.add(j * ld + c);
                let e = exp16(_mm512_sub_ps(_mm512_loadu_ps(at), max));
                _mm512_storeu_ps(at, e);
                sum = _mm512_add_ps(sum, e);
            }
            _mm512_storeu_ps(inv_sum.add(c), _mm512_div_ps(_mm512_set1_ps(1.0), sum));
        }
    }
}
