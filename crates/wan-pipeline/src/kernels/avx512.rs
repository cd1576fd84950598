//! The AVX-512 register-blocked micro-kernels: one `MR x NR` tile of the output from a packed strip of
//! activations (`MR` rows) and a packed panel of the weight (`NR` output features).
//!
//! 12 x 32 keeps 24 accumulators (12 rows x two 16-lane vectors) in the 32 vector registers, with
//! room for the two weight vectors and the broadcast activation: 24 independent FMA chains hide
//! the FMA latency on two FMA pipes, and each step loads 2 weight vectors and 12 broadcasts for
//! 24 FMAs.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Rows of a tile (activation rows, i.e. tokens).
pub const MR: usize = 12;
/// Columns of a tile (output features); two 16-lane vectors.
pub const NR: usize = 32;

/// Where a tile's result goes and what to add to it.
#[derive(Clone, Copy)]
pub struct TileOut {
    /// Top-left element of the tile in the row-major output.
    pub c: *mut f32,
    /// Row stride of the output in elements.
    pub ldc: usize,
    /// `NR` bias values to add, or null.
    pub bias: *const f32,
}

/// Writes the 24 accumulators to `out` (adding the bias if there is one).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store(acc: &[[__m512; 2]; MR], out: TileOut) {
    // SAFETY (caller): `out.c` addresses MR rows of NR writable f32 at stride `out.ldc`, and
    // `out.bias` (if not null) NR readable f32.
    unsafe {
        let (bias0, bias1) = if out.bias.is_null() {
            (_mm512_setzero_ps(), _mm512_setzero_ps())
        } else {
            (_mm512_loadu_ps(out.bias), _mm512_loadu_ps(out.bias.add(16)))
        };
        for (i, row) in acc.iter().enumerate() {
            let c = out.c.add(i * out.ldc);
            let (v0, v1) = (_mm512_add_ps(row[0], bias0), _mm512_add_ps(row[1], bias1));
            _mm512_storeu_ps(c, v0);
            _mm512_storeu_ps(c.add(16), v1);
        }
    }
}

/// f32 tile: `out = A B (+ bias)` over `kc` steps, A as `a[k * lda + i]` (`lda` is `MR` for a
/// packed strip; attention passes its probabilities in place, a wider row; the VAE's convolution
/// an input frame's channel planes), B as `b[k * NR + j]`.
///
/// # Safety
/// The CPU has AVX-512F; `a` addresses `(kc - 1) * lda + MR` and `b` `kc * NR` readable f32;
/// `out` as in [`TileOut`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub unsafe fn tile_f32(kc: usize, a: *const f32, lda: usize, b: *const f32, out: TileOut) {
    // SAFETY (caller): as above.
    unsafe { tile_f32_onto::<false>(kc, a, lda, b, out) }
}

/// [`tile_f32`] added to what the tile already holds: `out += A B (+ bias)`, so that a sum over
/// several products (a convolution's taps) stays in one tile without a scratch copy.
///
/// # Safety
/// As [`tile_f32`], and `out.c` addresses MR rows of NR readable f32 too.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub unsafe fn tile_f32_accumulate(kc: usize, a: *const f32, lda: usize, b: *const f32, out: TileOut) {
    // SAFETY (caller): as above.
    unsafe { tile_f32_onto::<true>(kc, a, lda, b, out) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile_f32_onto<const ACCUMULATE: bool>(kc: usize, a: *const f32, lda: usize, b: *const f32, out: TileOut) {
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        if ACCUMULATE {
            for (i, row) in acc.iter_mut().enumerate() {
                let c = out.c.add(i * out.ldc);
                *row = [_mm512_loadu_ps(c), _mm512_loadu_ps(c.add(16))];
            }
        }
        for k in 0..kc {
            let bk = b.add(k * NR);
            let (b0, b1) = (_mm512_loadu_ps(bk), _mm512_loadu_ps(bk.add(16)));
            let ak = a.add(k * lda);
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*ak.add(i));
                row[0] = _mm512_fmadd_ps(ai, b0, row[0]);
                row[1] = _mm512_fmadd_ps(ai, b1, row[1]);
            }
        }
        store(&acc, out);
    }
}

/// bf16 tile: `out = A B (+ bias)` over `kp` pairs of k, A packed as pairs `a[(p * MR + i) * 2 + {0,1}]`
/// (row i, k = 2p and 2p+1), B as `b[(p * NR + j) * 2 + {0,1}]` (column j, same k). Each
/// `vdpbf16ps` adds both products of a pair to an f32 lane.
///
/// # Safety
/// The CPU has AVX-512F and AVX-512 BF16; `a` holds `kp * MR * 2` and `b` `kp * NR * 2`
/// readable u16; `out` as in [`TileOut`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
pub unsafe fn tile_bf16(kp: usize, a: *const u16, b: *const u16, out: TileOut) {
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        let a = a.cast::<i32>();
        for p in 0..kp {
            let bp = b.add(p * NR * 2).cast::<__m512i>();
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.add(1)));
            let ap = a.add(p * MR);
            for (i, row) in acc.iter_mut().enumerate() {
                let ai: __m512bh = std::mem::transmute(_mm512_set1_epi32(*ap.add(i)));
                row[0] = _mm512_dpbf16_ps(row[0], ai, b0);
                row[1] = _mm512_dpbf16_ps(row[1], ai, b1);
            }
        }
        store(&acc, out);
    }
}
