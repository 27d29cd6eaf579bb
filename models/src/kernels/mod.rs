//! CPU kernels candle lacks, written as candle custom ops with their backward passes (each module
//! says why no crate fits): im2col/col2im convolutions, per-channel affine maps, fused norms and
//! PReLU. Off the CPU (or for other dtypes) the layers fall back to candle's own ops.

pub mod affine;
pub mod buffers;
pub mod conv;
pub mod fused;
