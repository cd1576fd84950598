//! A zero-initialised buffer aligned to a cache line, so that each 64-byte vector load of a packed
//! panel touches exactly one line.

use crate::plain::{zeroed_vec, Plain};

/// One cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

// SAFETY: 64 plain bytes, no padding (the alignment equals the size).
unsafe impl Plain for Line {}

/// A growable byte buffer whose start is 64-byte aligned, viewed as `f32` or `u16`.
#[derive(Default)]
pub struct AlignedBuf {
    lines: Vec<Line>,
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.lines.len() * 64)
    }
}

impl AlignedBuf {
    /// A buffer of at least `bytes` bytes, all zero.
    pub fn zeroed(bytes: usize) -> Self {
        Self { lines: zeroed_vec(bytes.div_ceil(64)) }
    }

    /// Makes room for at least `bytes` bytes (contents unspecified afterwards). Growth only, so a
    /// buffer reused across calls stops allocating (and page-faulting) after the largest call.
    pub fn reserve_bytes(&mut self, bytes: usize) {
        let lines = bytes.div_ceil(64);
        if self.lines.len() < lines {
            self.lines = zeroed_vec(lines);
        }
    }

    pub fn len_bytes(&self) -> usize {
        self.lines.len() * 64
    }

    pub fn as_f32(&self) -> &[f32] {
        // SAFETY: the lines are plain bytes, 64-byte aligned (so 4-aligned), and any bit pattern
        // is a valid f32.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast(), self.len_bytes() / 4) }
    }

    pub fn as_f32_mut(&mut self) -> &mut [f32] {
        // SAFETY: as in `as_f32`, with unique access through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast(), self.len_bytes() / 4) }
    }

    pub fn as_u32_mut(&mut self) -> &mut [u32] {
        // SAFETY: as in `as_f32_mut`; u32 needs 4-byte alignment.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast(), self.len_bytes() / 4) }
    }

    pub fn as_u16(&self) -> &[u16] {
        // SAFETY: as in `as_f32`; u16 needs 2-byte alignment.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast(), self.len_bytes() / 2) }
    }
}

/// Runs `f` on this thread's buffer in `cell` (reused from call to call, so a buffer stops
/// allocating and page-faulting after the largest call), or on a fresh one if that is in use: a
/// rayon worker that waits inside one call on the same thread may steal a task that makes
/// another.
pub fn with_thread_buffer<R>(cell: &'static std::thread::LocalKey<std::cell::RefCell<AlignedBuf>>, f: impl FnOnce(&mut AlignedBuf) -> R) -> R {
    cell.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => f(&mut buf),
        Err(_) => f(&mut AlignedBuf::default()),
    })
}
