//! Vectors of plain element types allocated zeroed by the allocator, for buffers that are about
//! to be overwritten (a tensor read from a file, a packed weight).
//!
//! Why: `vec![x; n]` writes every element first unless the standard library knows the type's
//! zero (it does for `f32`, not for `half::bf16` or a cache-line struct); `alloc_zeroed` of a large
//! block hands out fresh pages that stay zero until first written, so nothing is filled twice.

/// A type with no padding for which every bit pattern, all zeros included, is a valid value: raw
/// bytes (from a file, from a zeroed allocation) may be read as one.
///
/// # Safety
/// Implement it only for such types.
pub unsafe trait Plain: Copy {}

// SAFETY: IEEE floats of 4 and 2 bytes: every bit pattern is a number or a NaN.
unsafe impl Plain for f32 {}
unsafe impl Plain for half::bf16 {}
unsafe impl Plain for half::f16 {}

/// `n` zeros from the allocator's zeroed memory.
pub fn zeroed_vec<T: Plain>(n: usize) -> Vec<T> {
    let layout = match std::alloc::Layout::array::<T>(n) {
        Ok(layout) if layout.size() > 0 => layout,
        _ => return Vec::new(),
    };
    // SAFETY: the layout has a non-zero size; the block is zeroed, and all-zero bytes are a valid
    // T (`Plain`); the vector takes ownership of a block allocated with T's array layout for
    // exactly n elements, as `Vec::from_raw_parts` requires.
    unsafe {
        let ptr = std::alloc::alloc_zeroed(layout).cast::<T>();
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Vec::from_raw_parts(ptr, n, n)
    }
}
