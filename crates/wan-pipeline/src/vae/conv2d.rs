//! 2D convolution (`nn.Conv2d`), through [`crate::kernels::conv2d`], which also runs in bf16 on
//! the CPU (candle 0.11's CPU conv2d has no bf16 kernel).

use candle_core::Tensor;
use candle_nn::VarBuilder;

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
}

impl Conv2d {
    pub fn new(in_dim: usize, out_dim: usize, kernel: usize, padding: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim, kernel, kernel), "weight")?;
        let bias = vb.get(out_dim, "bias")?.reshape((out_dim, 1, 1))?;
        Ok(Self { weight, bias, padding, stride })
    }

    /// `(N, C, H, W)` -> `(N, O, H', W')`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(conv2d(x, &self.weight, self.padding, self.stride)?.broadcast_add(&self.bias)?)
    }
}
