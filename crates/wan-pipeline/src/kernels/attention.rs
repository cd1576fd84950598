//! Multi-head attention `softmax(q k^T / sqrt(D) + key_bias) v` on the CPU, on the f32
//! micro-kernel of the linear layers, in f32 whatever the tensors' dtype.
//!
//! Why not candle's ops: the DiT's q, k and v come out of their projections as (B, L, H * D);
//! through candle each is copied to (B, H, L, D), widened to f32 (bf16 models), scaled, and the
//! scores are formed by its gemm at about half the FMA peak, with a single-threaded softmax
//! between the two products and another copy back to (B, L, H * D) at the end. Here each task
//! reads its head's columns in place, and the two products run on the register-blocked tile.
//!
//! The scores of a block of queries are formed transposed, one row per key and one column per
//! query (`S^T = K Q^T`: the keys are the kernel's row strips, the scaled queries its column
//! panels). In that layout the softmax over keys normalises 16 queries per vector, and the
//! probabilities are already the k-major strips the second product (`P V`, the values as column
//! panels) reads, so nothing is transposed. Memory is bounded whatever the token count: the
//! scores of one block of [`QUERY_BLOCK`] queries per thread, and the packed keys and values of
//! as many heads as fit [`KV_BUDGET_BYTES`] (at least one).

use std::cell::RefCell;
use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use half::{bf16, f16};
use rayon::prelude::*;

use super::aligned::{with_thread_buffer, AlignedBuf};
use super::microkernel::{has_f32_kernel, softmax_columns, tile_f32, TileOut, MR, NR};
use super::elem::{contiguous, Elem};

/// Queries per task: three column panels, eight row strips (the least common multiple of
/// `MR` = 12 and `NR` = 32, so that a full block wastes no row of either product).
const QUERY_BLOCK: usize = 3 * NR;

/// The most memory the packed keys and values of the heads prepared at once may take.
const KV_BUDGET_BYTES: usize = 64 << 20;

thread_local! {
    /// The packed keys and values, on the calling thread, reused from call to call.
    static PACKED_KV: RefCell<AlignedBuf> = RefCell::new(AlignedBuf::default());
    /// One task's queries, scores and output tile, on each worker, reused from task to task.
    static SCRATCH: RefCell<AlignedBuf> = RefCell::new(AlignedBuf::default());
}

/// The sizes of one attention: q (batch, q_len, heads * head_dim), k and v (batch, kv_len, ...).
#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    q_len: usize,
    kv_len: usize,
    heads: usize,
    head_dim: usize,
}

impl Dims {
    fn width(&self) -> usize {
        self.heads * self.head_dim
    }

    /// f32 of one head's packed keys: `kv_len` rounded up to whole strips of `MR`, by D.
    fn packed_k_len(&self) -> usize {
        self.kv_len.div_ceil(MR) * MR * self.head_dim
    }

    /// f32 of one head's packed values: D rounded up to whole panels of `NR`, by `kv_len`.
    fn packed_v_len(&self) -> usize {
        self.head_dim.div_ceil(NR) * NR * self.kv_len
    }
}

/// A raw output pointer handed to the tasks, each of which writes only its own rows and head.
#[derive(Clone, Copy)]
struct OutPtr<T>(*mut T);
// SAFETY: tasks write disjoint (query rows, head columns) regions of the output (see `attend`).
unsafe impl<T> Send for OutPtr<T> {}
unsafe impl<T> Sync for OutPtr<T> {}

/// Packs head `hi` of batch element `bi`: keys as strips of `MR` keys, D-major
/// (`k[(s * D + d) * MR + j]` = key `s * MR + j`, feature d), values as panels of `NR` features,
/// key-major (`v[(p * kv_len + j) * NR + c]` = key j, feature `p * NR + c`); zero-padded.
fn pack_head<T: Elem>(k: &[T], v: &[T], dims: Dims, bi: usize, hi: usize, packed_k: &mut [f32], packed_v: &mut [f32]) {
    let (d, width, lk) = (dims.head_dim, dims.width(), dims.kv_len);
    packed_k.fill(0.0);
    packed_v.fill(0.0);
    for j in 0..lk {
        let at = (bi * lk + j) * width + hi * d;
        let (s, jj) = (j / MR, j % MR);
        for (dd, x) in k[at..at + d].iter().enumerate() {
            packed_k[(s * d + dd) * MR + jj] = x.to_f32();
        }
        for (dd, x) in v[at..at + d].iter().enumerate() {
            packed_v[((dd / NR) * lk + j) * NR + dd % NR] = x.to_f32();
        }
    }
}

/// The attention of `QUERY_BLOCK` (or fewer, at the end) queries from `q0` of one head.
///
/// # Safety
/// The CPU has AVX-512F or AVX2 + FMA; `out` addresses the whole (batch, q_len, width) output, of which this
/// call writes rows `q0..q0 + rows` of batch element `bi`, columns of head `hi`, and nothing else.
#[allow(clippy::too_many_arguments)]
unsafe fn attend_block<T: Elem>(
    q: &[T],
    dims: Dims,
    bi: usize,
    hi: usize,
    q0: usize,
    packed_k: &[f32],
    packed_v: &[f32],
    key_bias: Option<&[f32]>,
    scratch: &mut AlignedBuf,
    out: OutPtr<T>,
) {
    let (d, width, lk) = (dims.head_dim, dims.width(), dims.kv_len);
    let rows = QUERY_BLOCK.min(dims.q_len - q0);
    let q_panels = rows.div_ceil(NR);
    let ld = q_panels * NR;
    let key_rows = lk.div_ceil(MR) * MR;
    // Scratch: queries (q_panels panels of D x NR) | scores (key_rows + 1 rows of ld; the spare
    // row is read, never used, by the last strip of a partial block) | 1/sum per query | a tile.
    let (q_len_f, s_len_f) = (q_panels * d * NR, (key_rows + 1) * ld);
    scratch.reserve_bytes((q_len_f + s_len_f + QUERY_BLOCK + MR * NR) * 4);
    let buf = scratch.as_f32_mut();
    let (qp, rest) = buf.split_at_mut(q_len_f);
    let (scores, rest) = rest.split_at_mut(s_len_f);
    let (inv_sum, rest) = rest.split_at_mut(QUERY_BLOCK);
    let tile = &mut rest[..MR * NR];

    // Q^T panels, scaled: qp[(p * D + d) * NR + i] = q[query p * NR + i][d] / sqrt(D).
    let scale = (1.0 / (d as f64).sqrt()) as f32;
    qp.fill(0.0);
    for i in 0..rows {
        let at = (bi * dims.q_len + q0 + i) * width + hi * d;
        let (p, ii) = (i / NR, i % NR);
        for (dd, x) in q[at..at + d].iter().enumerate() {
            qp[(p * d + dd) * NR + ii] = x.to_f32() * scale;
        }
    }
    scores[key_rows * ld..].fill(0.0);

    // SAFETY: every tile reads inside the packed buffers (strip s < key_rows / MR of D steps,
    // panel p < q_panels; value panels of lk steps) and writes inside `scores` / `tile`; the
    // probability strips read columns i0..i0 + MR of rows < lk, at most MR - 1 past column ld of
    // the last row, into the spare row. The output writes stay in this task's rows and head.
    unsafe {
        // S^T = K Q^T: (key_rows x D) x (D x ld).
        for s in 0..key_rows / MR {
            for p in 0..q_panels {
                let c = scores.as_mut_ptr().add(s * MR * ld + p * NR);
                tile_f32(d, packed_k.as_ptr().add(s * d * MR), MR, qp.as_ptr().add(p * d * NR), TileOut { c, ldc: ld, bias: std::ptr::null() });
            }
        }
        softmax_columns(scores.as_mut_ptr(), ld, lk, key_bias, inv_sum.as_mut_ptr());
        // O = P V: strips of MR queries (columns of the probabilities) by panels of NR features.
        for i0 in (0..rows).step_by(MR) {
            let strip_rows = MR.min(rows - i0);
            for p in 0..d.div_ceil(NR) {
                let cols = NR.min(d - p * NR);
                let b = packed_v.as_ptr().add(p * lk * NR);
                tile_f32(lk, scores.as_ptr().add(i0), ld, b, TileOut { c: tile.as_mut_ptr(), ldc: NR, bias: std::ptr::null() });
                for i in 0..strip_rows {
                    let row = out.0.add((bi * dims.q_len + q0 + i0 + i) * width + hi * d + p * NR);
                    let norm = inv_sum[i0 + i];
                    for (c, &t) in tile[i * NR..i * NR + cols].iter().enumerate() {
                        row.add(c).write(T::from_f32(t * norm));
                    }
                }
            }
        }
    }
}

/// The whole attention into `out` (every element written).
fn attend<T: Elem>(q: &[T], k: &[T], v: &[T], key_bias: Option<&[f32]>, dims: Dims, kv_budget: usize, out: &mut [MaybeUninit<T>]) {
    if out.is_empty() {
        // No query or no feature: nothing to compute (and no head to size a buffer by).
        return;
    }
    let out_ptr = OutPtr(out.as_mut_ptr().cast::<T>());
    if dims.kv_len == 0 {
        // No key to attend to: a zero output rather than the 0/0 of an empty softmax.
        out.iter_mut().for_each(|o| {
            o.write(T::from_f32(0.0));
        });
        return;
    }
    let (k_len, v_len) = (dims.packed_k_len(), dims.packed_v_len());
    let per_head = k_len + v_len;
    let all_heads = dims.batch * dims.heads;
    let heads_at_once = (kv_budget / (per_head * 4)).clamp(1, all_heads.max(1));
    let q_blocks = dims.q_len.div_ceil(QUERY_BLOCK);
    with_thread_buffer(&PACKED_KV, |kv| {
        kv.reserve_bytes(heads_at_once * per_head * 4);
        for first in (0..all_heads).step_by(heads_at_once) {
            let group = heads_at_once.min(all_heads - first);
            let packed = &mut kv.as_f32_mut()[..group * per_head];
            packed.par_chunks_mut(per_head).enumerate().for_each(|(g, head)| {
                let (pk, pv) = head.split_at_mut(k_len);
                let bh = first + g;
                pack_head(k, v, dims, bh / dims.heads, bh % dims.heads, pk, pv);
            });
            let packed = &*packed;
            (0..group * q_blocks).into_par_iter().for_each(|task| {
                let (g, qb) = (task / q_blocks, task % q_blocks);
                let bh = first + g;
                let (pk, pv) = packed[g * per_head..(g + 1) * per_head].split_at(k_len);
                with_thread_buffer(&SCRATCH, |scratch| {
                    // SAFETY: the attention runs only where the CPU has AVX-512F or AVX2 + FMA (see
                    // `attention`); task (bh, qb) writes only its query block of head bh.
                    unsafe { attend_block(q, dims, bh / dims.heads, bh % dims.heads, qb * QUERY_BLOCK, pk, pv, key_bias, scratch, out_ptr) }
                });
            });
        }
    });
}

/// The candle op: q, k, v as its three inputs; the heads and key bias as parameters.
struct AttentionOp {
    heads: usize,
    key_bias: Option<Vec<f32>>,
    /// [`KV_BUDGET_BYTES`], smaller in tests.
    kv_budget: usize,
}

impl AttentionOp {
    fn dims(&self, q: &Layout, k: &Layout, v: &Layout) -> candle_core::Result<Dims> {
        let (&[batch, q_len, width], &[kb, kv_len, kw]) = (q.dims(), k.dims()) else {
            candle_core::bail!("attention: q and k must be (B, L, H * D), got {:?} and {:?}", q.dims(), k.dims())
        };
        if v.dims() != k.dims() || kb != batch || kw != width || self.heads == 0 || width % self.heads != 0 {
            candle_core::bail!("attention: q {:?}, k {:?}, v {:?} do not fit {} heads", q.dims(), k.dims(), v.dims(), self.heads);
        }
        if self.key_bias.as_ref().is_some_and(|b| b.len() != kv_len) {
            candle_core::bail!("attention: the key bias must have one value per key ({kv_len})");
        }
        Ok(Dims { batch, q_len, kv_len, heads: self.heads, head_dim: width / self.heads })
    }

    fn run<T: Elem>(&self, q: &[T], k: &[T], v: &[T], dims: Dims) -> Vec<T> {
        let len = dims.batch * dims.q_len * dims.width();
        let mut out = Vec::with_capacity(len);
        attend(q, k, v, self.key_bias.as_deref(), dims, self.kv_budget, &mut out.spare_capacity_mut()[..len]);
        // SAFETY: `attend` wrote all `len` elements.
        unsafe { out.set_len(len) };
        out
    }
}

impl CustomOp3 for AttentionOp {
    fn name(&self) -> &'static str {
        "wan-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = self.dims(l1, l2, l3)?;
        let storage = match (s1, s2, s3) {
            (CpuStorage::F32(q), CpuStorage::F32(k), CpuStorage::F32(v)) => {
                CpuStorage::F32(self.run(contiguous(q, l1)?, contiguous(k, l2)?, contiguous(v, l3)?, dims))
            }
            (CpuStorage::BF16(q), CpuStorage::BF16(k), CpuStorage::BF16(v)) => {
                CpuStorage::BF16(self.run::<bf16>(contiguous(q, l1)?, contiguous(k, l2)?, contiguous(v, l3)?, dims))
            }
            (CpuStorage::F16(q), CpuStorage::F16(k), CpuStorage::F16(v)) => {
                CpuStorage::F16(self.run::<f16>(contiguous(q, l1)?, contiguous(k, l2)?, contiguous(v, l3)?, dims))
            }
            _ => candle_core::bail!("attention: q, k and v must share one float dtype"),
        };
        Ok((storage, l1.shape().clone()))
    }
}

/// `softmax(q k^T / sqrt(D) + key_bias) v` per head for q (B, Lq, H * D) and k, v (B, Lk, H * D)
/// (head h in columns `h * D .. (h + 1) * D`), returned as (B, Lq, H * D) in q's dtype, computed
/// in f32. `key_bias` (Lk,) is added to every query's score of each key.
///
/// `None` where this kernel does not run (another device, a dtype other than f32/bf16/f16, or a
/// CPU without AVX2, or the generic backend): the caller then uses candle's ops.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, key_bias: Option<&Tensor>) -> candle_core::Result<Option<Tensor>> {
    if !crate::backend::native_on(q.device()) {
        return Ok(None);
    }
    attention_with_budget(q, k, v, heads, key_bias, KV_BUDGET_BYTES)
}

/// [`attention`] with an explicit budget in bytes for the packed keys and values.
fn attention_with_budget(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    key_bias: Option<&Tensor>,
    kv_budget: usize,
) -> candle_core::Result<Option<Tensor>> {
    let on_cpu = [q, k, v].iter().all(|t| t.device().is_cpu() && t.dtype() == q.dtype());
    if !on_cpu || !q.dtype().is_float() || q.dtype() == candle_core::DType::F64 || !has_f32_kernel() {
        return Ok(None);
    }
    let key_bias = match key_bias {
        Some(b) => Some(b.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?),
        None => None,
    };
    let op = AttentionOp { heads, key_bias, kv_budget };
    Ok(Some(q.contiguous()?.apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &op)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, D};

    /// The attention through candle's ops, per head, in f32 on the same (rounded) values.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, key_bias: Option<&Tensor>) -> Tensor {
        let split = |t: &Tensor| {
            let (b, l, w) = t.dims3().unwrap();
            t.to_dtype(DType::F32).unwrap().reshape((b, l, heads, w / heads)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap()
        };
        let (q, k, v) = (split(q), split(k), split(v));
        let d = q.dim(D::Minus1).unwrap() as f64;
        let mut s = (q.matmul(&k.t().unwrap()).unwrap() / d.sqrt()).unwrap();
        if let Some(bias) = key_bias {
            s = s.broadcast_add(bias).unwrap();
        }
        let out = candle_nn::ops::softmax_last_dim(&s).unwrap().matmul(&v).unwrap();
        let (b, h, l, d) = out.dims4().unwrap();
        out.transpose(1, 2).unwrap().reshape((b, l, h * d)).unwrap()
    }

    fn max_rel_err(got: &Tensor, want: &Tensor) -> f32 {
        let got = got.to_dtype(DType::F32).unwrap();
        let scale = want.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1e-6);
        (got - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() / scale
    }

    /// (batch, q_len, kv_len, heads, head_dim): blocks and strips not filled (q 1, 13, 97, 200;
    /// keys 1, 7, 25 not multiples of 12), head dims below, at and across the 32-wide panels.
    /// The kernel without the backend check, so these tests hold under WAN_KERNELS=generic too.
    fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, key_bias: Option<&Tensor>) -> candle_core::Result<Option<Tensor>> {
        attention_with_budget(q, k, v, heads, key_bias, KV_BUDGET_BYTES)
    }

    const CASES: [(usize, usize, usize, usize, usize); 7] =
        [(1, 1, 1, 1, 8), (2, 13, 7, 3, 12), (1, 97, 25, 2, 40), (1, 200, 130, 4, 32), (2, 96, 96, 2, 128), (1, 5, 300, 1, 64), (1, 320, 320, 12, 128)];

    #[test]
    fn matches_candle_attention() {
        if !has_f32_kernel() {
            eprintln!("no AVX2 on this CPU: the attention kernel is not used here");
            return;
        }
        let dev = Device::Cpu;
        for (b, lq, lk, h, d) in CASES {
            let q = Tensor::randn(0f32, 1.0, (b, lq, h * d), &dev).unwrap();
            let k = Tensor::randn(0f32, 1.0, (b, lk, h * d), &dev).unwrap();
            let v = Tensor::randn(0f32, 1.0, (b, lk, h * d), &dev).unwrap();
            let bias = Tensor::randn(0f32, 1.0, lk, &dev).unwrap();
            for key_bias in [None, Some(&bias)] {
                let want = reference(&q, &k, &v, h, key_bias);
                let got = attention(&q, &k, &v, h, key_bias).unwrap().unwrap();
                assert_eq!(got.dims(), &[b, lq, h * d]);
                let err = max_rel_err(&got, &want);
                assert!(err < 1e-5, "f32 {:?} bias {}: relative error {err}", (b, lq, lk, h, d), key_bias.is_some());
                // bf16 in and out: f32 inside, one rounding of the output.
                let (qb, kb, vb) = (q.to_dtype(DType::BF16).unwrap(), k.to_dtype(DType::BF16).unwrap(), v.to_dtype(DType::BF16).unwrap());
                let got = attention(&qb, &kb, &vb, h, key_bias).unwrap().unwrap();
                assert_eq!(got.dtype(), DType::BF16);
                let err = max_rel_err(&got, &reference(&qb, &kb, &vb, h, key_bias));
                assert!(err < 8e-3, "bf16 {:?}: relative error {err}", (b, lq, lk, h, d));
            }
        }
    }

    #[test]
    fn heads_in_groups_under_a_small_budget_give_the_same_result() {
        if !has_f32_kernel() {
            return;
        }
        let dev = Device::Cpu;
        let (b, lq, lk, h, d) = (2, 50, 40, 3, 16);
        let q = Tensor::randn(0f32, 1.0, (b, lq, h * d), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (b, lk, h * d), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (b, lk, h * d), &dev).unwrap();
        let all = attention(&q, &k, &v, h, None).unwrap().unwrap();
        // A budget below one head's packed keys and values: one head at a time, six groups.
        let one = attention_with_budget(&q, &k, &v, h, None, 1).unwrap().unwrap();
        let diff = (all - one).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(diff, 0.0, "grouping the heads changed the result");
    }

    #[test]
    fn bad_shapes_are_errors_and_empty_inputs_are_not() {
        if !has_f32_kernel() {
            return;
        }
        let dev = Device::Cpu;
        let q = Tensor::zeros((1, 4, 12), DType::F32, &dev).unwrap();
        let k = Tensor::zeros((1, 5, 12), DType::F32, &dev).unwrap();
        assert!(attention(&q, &k, &k, 5, None).is_err(), "12 columns do not split into 5 heads");
        assert!(attention(&q, &k, &k.narrow(1, 0, 4).unwrap(), 2, None).is_err(), "v must match k");
        // Empty inputs are empty or zero outputs, not a division by zero.
        let none = Tensor::zeros((1, 0, 12), DType::F32, &dev).unwrap();
        assert_eq!(attention(&none, &k, &k, 2, None).unwrap().unwrap().dims(), &[1, 0, 12]);
        let got = attention(&q, &none, &none, 2, None).unwrap().unwrap();
        assert_eq!(got.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
        let bias = Tensor::zeros(3, DType::F32, &dev).unwrap();
        assert!(attention(&q, &k, &k, 2, Some(&bias)).is_err(), "one bias per key");
        let k16 = k.to_dtype(DType::BF16).unwrap();
        assert!(matches!(attention(&q, &k16, &k16, 2, None), Ok(None)), "mixed dtypes are left to candle");
    }
}
