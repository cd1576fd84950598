//! The blocked product `out = x W^T (+ b)` over a [`PackedWeight`], on all rayon threads.
//!
//! Loop order, from the outside: blocks of `MC` activation rows (their packed copy is bounded,
//! whatever the token count); groups of weight panels, one group per task (a task owns its output
//! columns, so tasks never share a cache line of output and never wait on each other); the panels
//! of the group; the `MR`-row strips. Each tile runs over the whole of k with its sums in
//! registers, so a result is complete when it leaves the kernel: bias, epilogue and the rounding
//! to bf16 happen once, on a tile still in L1, and no f32 copy of a bf16 output is ever made.
//! (Blocking k at 256 steps, so that a panel's block stays in L1, measured no faster in
//! `cargo bench --bench gemm`: the panel is reused by every strip from L2 at a fraction of L2's
//! bandwidth.)

use std::cell::RefCell;
use std::mem::MaybeUninit;

use half::bf16;
use rayon::prelude::*;

use super::aligned::{with_thread_buffer, AlignedBuf};
use super::microkernel::{tile_bf16, tile_f32, TileOut, MR, NR};
use super::elem::Elem;
use super::gelu::gelu_tanh_in_place;
use super::packed_weight::{PackedFormat, PackedWeight};

/// Activation rows packed at once.
const MC: usize = 32 * MR;

/// What is applied to each output tile once its sum is complete (after the bias).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epilogue {
    None,
    /// GELU, tanh approximation (the DiT's feed-forward), on the f32 sum before any rounding.
    GeluTanh,
}

/// Where the result goes: row-major (rows, out_dim), in the caller's dtype. Uninitialised
/// memory is fine ([`matmul`] writes every element), so the caller need not zero a buffer that
/// is about to be overwritten.
pub enum Output<'a> {
    F32(&'a mut [MaybeUninit<f32>]),
    Bf16(&'a mut [MaybeUninit<bf16>]),
}

impl Output<'_> {
    fn len(&self) -> usize {
        match self {
            Output::F32(o) => o.len(),
            Output::Bf16(o) => o.len(),
        }
    }
}

/// The activations of one call, row-major (rows, in_dim).
#[derive(Clone, Copy)]
pub enum Activations<'a> {
    F32(&'a [f32]),
    Bf16(&'a [bf16]),
}

thread_local! {
    /// The packed activations, reused from call to call (the forward calls from one thread).
    pub(super) static PACKED_A: RefCell<AlignedBuf> = RefCell::new(AlignedBuf::default());
}

/// A raw output pointer handed to the tasks, each of which writes only its own columns.
#[derive(Clone, Copy)]
enum OutPtr {
    F32(*mut f32),
    Bf16(*mut bf16),
}
// SAFETY: tasks write disjoint column ranges of the output (see `matmul`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// `out[r, n] = epilogue(sum_k x[r, k] W[n, k] + b[n])` for `rows` rows, rounded once to the
/// output's dtype. `out` holds `rows * out_dim` values, all of which are written.
pub fn matmul(w: &PackedWeight, x: Activations<'_>, rows: usize, epilogue: Epilogue, mut out: Output<'_>) {
    assert_eq!(out.len(), rows * w.out_dim, "output size");
    match x {
        Activations::F32(v) => assert_eq!(v.len(), rows * w.in_dim, "input size"),
        Activations::Bf16(v) => assert_eq!(v.len(), rows * w.in_dim, "input size"),
    }
    let run = |buf: &mut AlignedBuf| {
        for m0 in (0..rows).step_by(MC) {
            let m_rows = MC.min(rows - m0);
            pack_activations(w, x, m0, m_rows, buf);
            multiply_block(w, buf, m0, m_rows, epilogue, &mut out);
        }
    };
    with_thread_buffer(&PACKED_A, run);
}

/// Packs rows `m0..m0 + m_rows` into `MR`-row strips (zero-padded) in the weight's format, one
/// strip per task. Each row is read front to back and scattered into its lane of the strip (a
/// strip, `MR * k` values, stays in L1 while it is written).
fn pack_activations(w: &PackedWeight, x: Activations<'_>, m0: usize, m_rows: usize, buf: &mut AlignedBuf) {
    let k = w.in_dim;
    let strips = m_rows.div_ceil(MR);
    let strip_len = w.k_steps() * MR;
    buf.reserve_bytes(strips * strip_len * 4);
    match w.format {
        PackedFormat::F32 => {
            buf.as_f32_mut()[..strips * strip_len].par_chunks_mut(strip_len).enumerate().for_each(|(s, strip)| {
                let rows = MR.min(m_rows - s * MR);
                let first = (m0 + s * MR) * k;
                match x {
                    Activations::F32(v) => pack_strip_f32(&v[first..first + rows * k], k, strip, |a| a),
                    Activations::Bf16(v) => pack_strip_f32(&v[first..first + rows * k], k, strip, bf16::to_f32),
                }
            });
        }
        PackedFormat::Bf16 => {
            buf.as_u32_mut()[..strips * strip_len].par_chunks_mut(strip_len).enumerate().for_each(|(s, strip)| {
                let rows = MR.min(m_rows - s * MR);
                let first = (m0 + s * MR) * k;
                match x {
                    Activations::Bf16(v) => pack_strip_pairs(&v[first..first + rows * k], k, strip, |a| u32::from(a.to_bits())),
                    Activations::F32(v) => pack_strip_pairs(&v[first..first + rows * k], k, strip, |a| u32::from(<bf16 as Elem>::from_f32(a).to_bits())),
                }
            });
        }
    }
}

/// One f32 strip: `strip[kk * MR + i]` = row i's k-th value; lanes past the rows are zero.
#[inline(always)]
fn pack_strip_f32<T: Copy>(rows: &[T], k: usize, strip: &mut [f32], value: impl Fn(T) -> f32) {
    let n = rows.len() / k.max(1);
    for i in 0..MR {
        if i < n {
            for (kk, &a) in rows[i * k..(i + 1) * k].iter().enumerate() {
                strip[kk * MR + i] = value(a);
            }
        } else {
            strip.iter_mut().skip(i).step_by(MR).for_each(|v| *v = 0.0);
        }
    }
}

/// One bf16 strip: one u32 per (row, pair of k), the row's k = 2p in the low half and 2p + 1 in
/// the high half (zero past the end of an odd k), as `vdpbf16ps` pairs them; lanes past the rows
/// are zero.
#[inline(always)]
fn pack_strip_pairs<T: Copy>(rows: &[T], k: usize, strip: &mut [u32], bits: impl Fn(T) -> u32) {
    let n = rows.len() / k.max(1);
    for i in 0..MR {
        if i < n {
            let row = &rows[i * k..(i + 1) * k];
            let pairs = row.chunks_exact(2);
            let odd = pairs.remainder().first().copied();
            let full = k / 2;
            for (p, pair) in pairs.enumerate() {
                strip[p * MR + i] = bits(pair[0]) | bits(pair[1]) << 16;
            }
            if let Some(last) = odd {
                strip[full * MR + i] = bits(last);
            }
        } else {
            strip.iter_mut().skip(i).step_by(MR).for_each(|v| *v = 0);
        }
    }
}

/// Multiplies the packed strips of rows `m0..m0 + m_rows` by every panel into `out`.
fn multiply_block(w: &PackedWeight, a: &AlignedBuf, m0: usize, m_rows: usize, epilogue: Epilogue, out: &mut Output<'_>) {
    let n = w.out_dim;
    let strips = m_rows.div_ceil(MR);
    // Two groups per thread: enough to even out a thread that falls behind, few enough that each
    // task reuses the packed activations over many panels.
    let groups = (rayon::current_num_threads() * 2).clamp(1, w.panels);
    let per_group = w.panels.div_ceil(groups);
    let out_ptr = match out {
        Output::F32(o) => OutPtr::F32(o.as_mut_ptr().cast()),
        Output::Bf16(o) => OutPtr::Bf16(o.as_mut_ptr().cast()),
    };
    (0..w.panels.div_ceil(per_group)).into_par_iter().for_each(move |group| {
        let out_ptr = out_ptr;
        let first = group * per_group;
        let mut scratch = [0f32; MR * NR];
        for p in first..(first + per_group).min(w.panels) {
            let cols = NR.min(n - p * NR);
            let bias = w.bias.as_ref().map_or(std::ptr::null(), |b| b[p * NR..].as_ptr());
            for s in 0..strips {
                let rows = MR.min(m_rows - s * MR);
                let at = (m0 + s * MR) * n + p * NR;
                // SAFETY: the packed offsets stay inside the buffers (s < strips, p < panels);
                // the tile writes rows m0 + s*MR .. + rows and columns p*NR .. + cols of `out`,
                // inside it (m0 + m_rows <= rows of out, p*NR + cols <= n), and only this task
                // writes those columns (it owns panels first..first + per_group).
                unsafe {
                    match out_ptr {
                        OutPtr::F32(o) if rows == MR && cols == NR && epilogue == Epilogue::None => {
                            run_tile(w, a, s, p, TileOut { c: o.add(at), ldc: n, bias });
                        }
                        _ => {
                            run_tile(w, a, s, p, TileOut { c: scratch.as_mut_ptr(), ldc: NR, bias });
                            if epilogue == Epilogue::GeluTanh {
                                gelu_tanh_in_place(&mut scratch);
                            }
                            for i in 0..rows {
                                let src = &scratch[i * NR..i * NR + cols];
                                match out_ptr {
                                    OutPtr::F32(o) => std::ptr::copy_nonoverlapping(src.as_ptr(), o.add(at + i * n), cols),
                                    OutPtr::Bf16(o) => {
                                        for (j, &v) in src.iter().enumerate() {
                                            o.add(at + i * n + j).write(<bf16 as Elem>::from_f32(v));
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    });
}

/// One tile: strip `s` by panel `p`, over the whole of k.
///
/// # Safety
/// As [`tile_f32`] / [`tile_bf16`]; the weight was packed only if
/// the CPU has the kernel for its format.
unsafe fn run_tile(w: &PackedWeight, a: &AlignedBuf, s: usize, p: usize, out: TileOut) {
    let ks = w.k_steps();
    unsafe {
        match w.format {
            PackedFormat::F32 => {
                let a = a.as_f32().as_ptr().add(s * ks * MR);
                let b = w.data.as_f32().as_ptr().add(p * ks * NR);
                tile_f32(ks, a, MR, b, out);
            }
            PackedFormat::Bf16 => {
                let a = a.as_u16().as_ptr().add(s * ks * MR * 2);
                let b = w.data.as_u16().as_ptr().add(p * ks * NR * 2);
                tile_bf16(ks, a, b, out);
            }
        }
    }
}
