//! A causal 3D convolution (and a 2D one, as its one-tap case) as packed products read straight
//! from the input frames, for the VAE on the CPU.
//!
//! Why: candle has no conv3d, and its CPU conv2d copies the whole im2col matrix out before one
//! gemm, per temporal tap, after which the taps' results are summed and the bias added, each a
//! full pass over a frame-sized tensor. Here the weight `(O, C, kt, kh, kw)` is packed once at load
//! time, tap-major (`(O, kt * kh * kw * C)`, channels innermost), in the panels of a linear layer
//! ([`PackedWeight`]). An output tile is [`MR`] consecutive pixels of one output row by [`NR`]
//! output channels, and each tap's contribution is one micro-kernel product over the C channels
//! whose activations are read in place: for a fixed channel, the tile's pixels are [`MR`]
//! consecutive values of one input row, and the next channel is one frame plane further on (the
//! kernel's `lda`). Only tiles that reach over the zero padding, or a stride-2 conv's pixels, are
//! gathered into a small strip first; taps that fall on a padding row or a zero frame of the causal
//! history are skipped. The taps' sums accumulate in f32 and each tile is written once, bias added,
//! into the `(O, H', W')` planes of its output frame.

use candle_core::{CpuStorage, DType, Device, Storage, Tensor};
use rayon::prelude::*;

use super::aligned::{with_thread_buffer, AlignedBuf};
use super::elem::SendPtr;
use super::microkernel::{tile_f32, tile_f32_accumulate, TileOut, MR, NR};
use super::packed_weight::{PackedFormat, PackedWeight};
use crate::{Error, Result};

thread_local! {
    /// A task's accumulated tiles and its gathered edge strip, reused from task to task.
    static TILES: std::cell::RefCell<AlignedBuf> = std::cell::RefCell::new(AlignedBuf::default());
}

/// A conv weight packed for the f32 micro-kernel, with its bias.
#[derive(Debug)]
pub struct PackedConv3d {
    weight: PackedWeight,
    in_dim: usize,
    kt: usize,
    kh: usize,
    kw: usize,
}

impl PackedConv3d {
    /// Packs an f32 `(O, C, kt, kh, kw)` weight and its `(O)` bias under the native backend on a
    /// CPU with the f32 kernel; `None` otherwise (the caller keeps candle's convolution).
    pub fn pack(weight: &Tensor, bias: &Tensor) -> Result<Option<Self>> {
        if !crate::backend::native_on(weight.device()) {
            return Ok(None);
        }
        Self::pack_for_cpu(weight, bias)
    }

    /// [`PackedConv3d::pack`] without the backend check (the kernel tests use it, so that they
    /// run under `WAN_KERNELS=generic` too).
    pub fn pack_for_cpu(weight: &Tensor, bias: &Tensor) -> Result<Option<Self>> {
        if weight.dtype() != DType::F32 {
            return Ok(None);
        }
        let (o, c, kt, kh, kw) = weight.dims5()?;
        // (O, C, kt, kh, kw) -> (O, kt, kh, kw, C) -> (O, kt * kh * kw * C): tap-major.
        let flat = weight.permute((0, 2, 3, 4, 1))?.contiguous()?.reshape((o, kt * kh * kw * c))?;
        Ok(PackedWeight::pack_for_cpu(&flat, Some(bias))?.and_then(|weight| {
            (weight.format() == PackedFormat::F32).then_some(Self { weight, in_dim: c, kt, kh, kw })
        }))
    }

    pub fn out_dim(&self) -> usize {
        self.weight.out_dim
    }
}

/// How the kernel slides over the input.
#[derive(Debug, Clone, Copy)]
pub struct ConvGeometry {
    /// Frames before the input: the history's last frames, then zeros for what it lacks.
    pub time_pad: usize,
    pub time_stride: usize,
    /// Zero padding of height and width, both sides.
    pub pad: usize,
    /// Stride of height and width.
    pub stride: usize,
}

/// The causal convolution of `x` `(B, T, C, H, W)` (f32, on the CPU), with `history`
/// `(B, n, C, H, W)` (its last `min(n, time_pad)` frames come before `x`, zeros before them):
/// `(B, T', O, H', W')`. `None` when the inputs are not f32 CPU tensors.
pub fn causal_conv3d(x: &Tensor, history: Option<&Tensor>, w: &PackedConv3d, g: ConvGeometry) -> Result<Option<Tensor>> {
    let on_cpu_f32 = |t: &Tensor| t.dtype() == DType::F32 && t.device().is_cpu();
    if !on_cpu_f32(x) || history.is_some_and(|h| !on_cpu_f32(h)) {
        return Ok(None);
    }
    let (b, t, c, h, wd) = x.dims5()?;
    if c != w.in_dim {
        return Err(Error::InvalidInput(format!("conv: input has {c} channels, the weight {}", w.in_dim)));
    }
    let t_in = t + g.time_pad;
    if t_in < w.kt || h + 2 * g.pad < w.kh || wd + 2 * g.pad < w.kw || g.stride == 0 || g.time_stride == 0 {
        return Err(Error::InvalidInput(format!(
            "conv: input (T {t} + {} padding, H {h}, W {wd}, padding {}) is smaller than the kernel ({}, {}, {})",
            g.time_pad, g.pad, w.kt, w.kh, w.kw
        )));
    }
    let t_out = (t_in - w.kt) / g.time_stride + 1;
    let h_out = (h + 2 * g.pad - w.kh) / g.stride + 1;
    let w_out = (wd + 2 * g.pad - w.kw) / g.stride + 1;

    let x = x.contiguous()?;
    let history = history.map(Tensor::contiguous).transpose()?;
    let (x_storage, x_layout) = x.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(x_data)) = &*x_storage else {
        return Ok(None);
    };
    let frame_len = c * h * wd;
    let x_data = super::elem::contiguous(x_data, x_layout)?;
    let hist_guard = history.as_ref().map(|t| t.storage_and_layout());
    let hist_frames = match (&history, &hist_guard) {
        (Some(t), Some((storage, layout))) => {
            let Storage::Cpu(CpuStorage::F32(data)) = &**storage else {
                return Ok(None);
            };
            let (hb, n, hc, hh, hw) = t.dims5()?;
            if (hb, hc, hh, hw) != (b, c, h, wd) {
                return Err(Error::InvalidInput(format!("conv: history {:?} does not match the input {:?}", t.dims(), x.dims())));
            }
            Some((super::elem::contiguous(data, layout)?, n))
        }
        _ => None,
    };
    // The padded input's frames, per batch: a slice of x or of the history, or None for zeros.
    let frames: Vec<Vec<Option<&[f32]>>> = (0..b)
        .map(|bi| {
            let have = hist_frames.map_or(0, |(_, n)| n.min(g.time_pad));
            let mut v: Vec<Option<&[f32]>> = vec![None; g.time_pad - have];
            if let Some((data, n)) = hist_frames {
                for f in n - have..n {
                    v.push(Some(&data[(bi * n + f) * frame_len..][..frame_len]));
                }
            }
            for f in 0..t {
                v.push(Some(&x_data[(bi * t + f) * frame_len..][..frame_len]));
            }
            v
        })
        .collect();

    let o = w.out_dim();
    let plane = h_out * w_out;
    let out_frame = o * plane;
    let len = b * t_out * out_frame;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let shape = Shape { c, h, w: wd, w_out, plane };
    {
        let out_slots = &mut out.spare_capacity_mut()[..len];
        // One task per output row of one output frame: each writes that row of each of the
        // frame's O planes, and nothing else.
        let out_ptr = SendPtr(out_slots.as_mut_ptr().cast::<f32>());
        (0..b * t_out * h_out).into_par_iter().for_each(|task| {
            let out_ptr = out_ptr;
            let (frame, yo) = (task / h_out, task % h_out);
            let (bi, to) = (frame / t_out, frame % t_out);
            let taps = &frames[bi][to * g.time_stride..][..w.kt];
            with_thread_buffer(&TILES, |buf| {
                // SAFETY: the call writes row yo of each plane of output frame `frame`, inside
                // `out` (frame < b * t_out, yo < h_out), and no other task writes it.
                unsafe { conv_row(w, g, shape, taps, yo, buf, out_ptr.0.add(frame * out_frame)) }
            });
        });
        // SAFETY: the tasks above wrote every pixel of every plane of every output frame.
        unsafe { out.set_len(len) };
    }
    Ok(Some(Tensor::from_vec(out, (b, t_out, o, h_out, w_out), &Device::Cpu)?))
}

#[derive(Clone, Copy)]
struct Shape {
    c: usize,
    h: usize,
    w: usize,
    w_out: usize,
    plane: usize,
}

/// One output row: for each panel of output channels and each run of [`MR`] pixels, the sum over
/// the taps of (the run's input values under the tap) x (the tap's slice of the panel), then
/// `out[o * plane + yo * w_out + x]`, bias added.
///
/// # Safety
/// `out` addresses one output frame (`O * plane` f32) of which only this call writes row `yo`;
/// the CPU has the f32 kernel (the weight was packed for it).
unsafe fn conv_row(w: &PackedConv3d, g: ConvGeometry, s: Shape, taps: &[Option<&[f32]>], yo: usize, buf: &mut AlignedBuf, out: *mut f32) {
    let (c, k) = (s.c, w.weight.in_dim);
    let panels = w.weight.panels;
    let runs = s.w_out.div_ceil(MR);
    let tile_len = MR * NR;
    // The row's tiles, run-major, then one gathered strip (C x MR).
    buf.reserve_bytes((runs * tile_len + c * MR) * 4);
    let (tiles, strip) = buf.as_f32_mut().split_at_mut(runs * tile_len);
    let strip = &mut strip[..c * MR];
    let wdata = w.weight.data.as_f32();
    let hw = s.h * s.w;
    let o_dim = w.weight.out_dim;
    let bias = w.weight.bias.as_deref();
    for p in 0..panels {
        for run in 0..runs {
            let x0 = run * MR;
            let n = MR.min(s.w_out - x0);
            let tile = &mut tiles[run * tile_len..][..tile_len];
            let mut first = true;
            for (dt, frame) in taps.iter().enumerate() {
                let Some(frame) = frame else { continue };
                for dy in 0..w.kh {
                    let y = (yo * g.stride + dy) as isize - g.pad as isize;
                    if y < 0 || y >= s.h as isize {
                        continue;
                    }
                    let row_at = y as usize * s.w;
                    for dx in 0..w.kw {
                        let tap = (dt * w.kh + dy) * w.kw + dx;
                        let b = wdata[(p * k + tap * c) * NR..].as_ptr();
                        let xs = (x0 * g.stride + dx) as isize - g.pad as isize;
                        // In place when the run is whole, unstrided and inside the row.
                        let direct = n == MR && g.stride == 1 && xs >= 0 && xs as usize + MR <= s.w;
                        let (a, lda) = if direct {
                            (frame[row_at + xs as usize..].as_ptr(), hw)
                        } else {
                            gather(frame, hw, row_at, s.w, xs, g.stride, n, strip);
                            (strip.as_ptr(), MR)
                        };
                        let out = TileOut { c: tile.as_mut_ptr(), ldc: NR, bias: std::ptr::null() };
                        // SAFETY: `a` addresses C steps of MR values at stride `lda` (a whole
                        // run of one input row in each of the C planes, or the gathered strip),
                        // `b` the tap's C steps of the panel; the tile is MR x NR at stride NR,
                        // written by the first tap before any later one reads it.
                        unsafe {
                            if first {
                                tile_f32(c, a, lda, b, out);
                            } else {
                                tile_f32_accumulate(c, a, lda, b, out);
                            }
                        }
                        first = false;
                    }
                }
            }
            if first {
                // Every tap fell on padding or zero frames.
                tile.fill(0.0);
            }
        }
        for j in 0..NR.min(o_dim - p * NR) {
            let o = p * NR + j;
            let bo = bias.map_or(0.0, |b| b[o]);
            // SAFETY: row yo of plane o of the output frame (see the contract).
            let row = unsafe { std::slice::from_raw_parts_mut(out.add(o * s.plane + yo * s.w_out), s.w_out) };
            for (x, v) in row.iter_mut().enumerate() {
                *v = tiles[(x / MR) * tile_len + (x % MR) * NR + j] + bo;
            }
        }
    }
}

/// The `n` pixels of a run under one tap, channel by channel: `strip[ci * MR + i]` = the input at
/// row offset `row_at`, column `xs + i * stride` of plane ci, zero outside the row and in the lanes
/// past `n`.
#[allow(clippy::too_many_arguments)]
fn gather(frame: &[f32], hw: usize, row_at: usize, width: usize, xs: isize, stride: usize, n: usize, strip: &mut [f32]) {
    for (ci, lanes) in strip.chunks_exact_mut(MR).enumerate() {
        let row = &frame[ci * hw + row_at..][..width];
        for (i, v) in lanes.iter_mut().enumerate() {
            let x = xs + (i * stride) as isize;
            *v = if i < n && x >= 0 && (x as usize) < width { row[x as usize] } else { 0.0 };
        }
    }
}
