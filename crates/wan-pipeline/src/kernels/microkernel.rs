//! The micro-kernels the gemm and the attention kernel call, each picking this CPU's variant
//! (AVX-512 in `avx512.rs` / `softmax.rs`, AVX2 + FMA in `avx2.rs`) from [`isa`], detected once.

pub use super::avx512::{TileOut, MR, NR};
use super::isa::{has_avx512_bf16, isa, Isa};

/// Whether this CPU runs [`tile_f32`] and [`softmax_columns`] (AVX-512F, or AVX2 + FMA).
pub fn has_f32_kernel() -> bool {
    cfg!(target_arch = "x86_64") && isa() != Isa::Baseline
}

/// Whether this CPU runs [`tile_bf16`] (AVX-512F with AVX-512 BF16).
pub fn has_bf16_kernel() -> bool {
    has_avx512_bf16()
}

/// f32 tile `out = A B (+ bias)` over `kc` steps; see [`super::avx512::tile_f32`].
///
/// # Safety
/// [`has_f32_kernel`] is true, and the pointers are as the variants require.
#[inline]
pub unsafe fn tile_f32(kc: usize, a: *const f32, lda: usize, b: *const f32, out: TileOut) {
    // SAFETY (caller): as the variant's contract; the variant matches the detected CPU.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        match isa() {
            Isa::Avx512 => return super::avx512::tile_f32(kc, a, lda, b, out),
            Isa::Avx2Fma => return super::avx2::tile_f32(kc, a, lda, b, out),
            Isa::Baseline => {}
        }
    }
    let _ = (kc, a, lda, b, out);
    unreachable!("tile_f32 called on a CPU without AVX2 (has_f32_kernel is false)")
}

/// `out += A B (+ bias)`, as [`tile_f32`] onto the tile's current values; see
/// [`super::avx512::tile_f32_accumulate`].
///
/// # Safety
/// As [`tile_f32`], and the tile is readable.
#[inline]
pub unsafe fn tile_f32_accumulate(kc: usize, a: *const f32, lda: usize, b: *const f32, out: TileOut) {
    // SAFETY (caller): as the variant's contract; the variant matches the detected CPU.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        match isa() {
            Isa::Avx512 => return super::avx512::tile_f32_accumulate(kc, a, lda, b, out),
            Isa::Avx2Fma => return super::avx2::tile_f32_accumulate(kc, a, lda, b, out),
            Isa::Baseline => {}
        }
    }
    let _ = (kc, a, lda, b, out);
    unreachable!("tile_f32_accumulate called on a CPU without AVX2 (has_f32_kernel is false)")
}

/// bf16 tile; see [`super::avx512::tile_bf16`].
///
/// # Safety
/// [`has_bf16_kernel`] is true, and the pointers are as [`super::avx512::tile_bf16`] requires.
#[inline]
pub unsafe fn tile_bf16(kp: usize, a: *const u16, b: *const u16, out: TileOut) {
    // SAFETY (caller): as above; a weight is packed bf16 only when the CPU has the kernel.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        return super::avx512::tile_bf16(kp, a, b, out);
    }
    #[allow(unreachable_code)]
    {
        let _ = (kp, a, b, out);
        unreachable!("tile_bf16 called off x86-64 (has_bf16_kernel is false)")
    }
}

/// The column softmax of the attention kernel; see [`super::softmax::softmax_columns_avx512`].
///
/// # Safety
/// [`has_f32_kernel`] is true; `ld` is a multiple of 16; the pointers as the variants require.
#[inline]
pub unsafe fn softmax_columns(s: *mut f32, ld: usize, keys: usize, key_bias: Option<&[f32]>, inv_sum: *mut f32) {
    // SAFETY (caller): as the variant's contract; the variant matches the detected CPU.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        match isa() {
            Isa::Avx512 => return super::softmax::softmax_columns_avx512(s, ld, keys, key_bias, inv_sum),
            Isa::Avx2Fma => return super::avx2::softmax_columns(s, ld, keys, key_bias, inv_sum),
            Isa::Baseline => {}
        }
    }
    let _ = (s, ld, keys, key_bias, inv_sum);
    unreachable!("softmax_columns called on a CPU without AVX2 (has_f32_kernel is false)")
}
