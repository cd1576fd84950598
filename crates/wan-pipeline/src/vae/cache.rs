//! The feature cache that makes chunked VAE passes causal.
//!
//! The encoder and decoder run on a few frames at a time. Every causal convolution with a temporal
//! kernel needs the frames that came before the chunk, so each one keeps the last frames of its
//! *input* from the previous chunk in a slot. The slots are visited in the same order on every
//! chunk, so a cursor that is reset at the start of a chunk hands each layer its own slot (the way
//! diffusers' `feat_cache` / `feat_idx` lists work). Only those few frames are kept: memory does
//! not grow with the length of the video.

use candle_core::Tensor;

use crate::Result;

/// How many past input frames a temporal-kernel-3 causal conv needs.
pub const CACHE_FRAMES: usize = 2;

/// The state of one layer's cache slot.
#[derive(Debug, Clone, Default)]
pub enum CacheSlot {
    /// Nothing seen yet: this is the first chunk.
    #[default]
    Empty,
    /// Seen, but nothing kept. The decoder's temporal upsamplers skip their time conv on the first
    /// chunk and then start as if from silence (diffusers' `"Rep"` marker): zero history.
    Started,
    /// The last input frames, `(B, n, C, H, W)` with `n <= CACHE_FRAMES`, copied out of the
    /// chunk so the chunk's own buffer can be freed.
    Frames(Tensor),
}

impl CacheSlot {
    /// The cached frames, if any.
    pub fn frames(&self) -> Option<&Tensor> {
        match self {
            CacheSlot::Frames(t) => Some(t),
            CacheSlot::Empty | CacheSlot::Started => None,
        }
    }

    /// The last `CACHE_FRAMES` frames of (cached frames ++ `x`) along the time axis (dim 1), as a
    /// fresh copy that does not keep `x`'s storage alive.
    pub fn tail_after(&self, x: &Tensor) -> Result<Tensor> {
        let t = x.dim(1)?;
        let tail = if t >= CACHE_FRAMES {
            x.narrow(1, t - CACHE_FRAMES, CACHE_FRAMES)?.copy()?
        } else {
            match self.frames() {
                Some(prev) => {
                    let keep = (CACHE_FRAMES - t).min(prev.dim(1)?);
                    let prev = prev.narrow(1, prev.dim(1)? - keep, keep)?;
                    Tensor::cat(&[&prev, x], 1)?
                }
                None => x.copy()?,
            }
        };
        Ok(tail)
    }
}

/// One slot per cached layer, visited in a fixed order each chunk.
#[derive(Debug, Default)]
pub struct FeatureCache {
    slots: Vec<CacheSlot>,
    cursor: usize,
}

impl FeatureCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Called before each chunk: the layers will ask for their slots from the first one again.
    pub fn begin_chunk(&mut self) {
        self.cursor = 0;
    }

    /// The next layer's slot (created empty on the first chunk).
    pub fn next_slot(&mut self) -> &mut CacheSlot {
        if self.cursor == self.slots.len() {
            self.slots.push(CacheSlot::Empty);
        }
        let i = self.cursor;
        self.cursor += 1;
        &mut self.slots[i]
    }

    /// Where the cursor is: layers that are run several times per chunk (frame by frame) come
    /// back here with [`Self::rewind_to`] before each run.
    pub fn position(&self) -> usize {
        self.cursor
    }

    pub fn rewind_to(&mut self, position: usize) {
        self.cursor = position.min(self.slots.len());
    }

    /// Bytes held by the cached frames (for diagnostics and the memory test).
    pub fn bytes(&self) -> usize {
        self.slots
            .iter()
            .filter_map(CacheSlot::frames)
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum()
    }
}
