//! 2D convolution (`nn.Conv2d`), through [`crate::kernels::conv2d`], which also runs in bf16 on
//! the CPU (candle 0.11's CPU conv2d has no bf16 kernel), or, under the native backend, as the
//! one-tap case of [`crate::kernels::causal_conv3d`].

use std::sync::Arc;

use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::kernels::{causal_conv3d, ConvGeometry, PackedConv3d};
use crate::Result;

/// `x` `(N, C, H, W)` conv `kernel` `(O, C, kh, kw)`, no bias.
pub fn conv2d(x: &Tensor, kernel: &Tensor, padding: usize, stride: usize) -> Result<Tensor> {
    crate::kernels::conv2d(x, kernel, padding, stride)
}

/// `nn.Conv2d` with bias, square kernel.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    /// `(O, 1, 1)`, broadcast over `(N, O, H, W)`.
    bias: Tensor,
    padding: usize,
    stride: usize,
    /// The weight as a one-frame 3D kernel, packed for the native kernel where it runs.
    packed: Option<Arc<PackedConv3d>>,
}

impl Conv2d {
    pub fn new(in_dim: usize, out_dim: usize, kernel: usize, padding: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim, kernel, kernel), "weight")?;
        let bias = vb.get(out_dim, "bias")?;
        let packed = PackedConv3d::pack(&weight.unsqueeze(2)?, &bias)?.map(Arc::new);
        let bias = bias.reshape((out_dim, 1, 1))?;
        Ok(Self { weight, bias, padding, stride, packed })
    }

    /// `(N, C, H, W)` -> `(N, O, H', W')`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(packed) = &self.packed {
            let (n, c, h, w) = x.dims4()?;
            let geometry = ConvGeometry { time_pad: 0, time_stride: 1, pad: self.padding, stride: self.stride };
            // (N, C, H, W) as one video of N frames, (1, N, C, H, W).
            if let Some(y) = causal_conv3d(&x.reshape((1, n, c, h, w))?, None, packed, geometry)? {
                let (_, _, o, h_out, w_out) = y.dims5()?;
                return Ok(y.reshape((n, o, h_out, w_out))?);
            }
        }
        Ok(conv2d(x, &self.weight, self.padding, self.stride)?.broadcast_add(&self.bias)?)
    }
}
