//! Layers and the tensor-operation interface the architectures are written against:
//!
//! * [`backend`] — [`Backend`], the small set of operations every architecture uses;
//! * [`candle`] — its candle implementation ([`Candle`]); the ONNX implementation is
//!   [`crate::onnx::trace`];
//! * [`layers`] — the candle layers behind [`Candle`] whose parameter names follow PyTorch
//!   (GroupNorm, BatchNorm with training mode, PReLU, the 1×1 channel mixer, …).

pub mod backend;
pub mod candle;
pub mod layers;

pub use backend::{Backend, ConvSpec, NormMode, PointwiseFrom};
pub use candle::Candle;
