//! The tensor-operation interface the architectures are written against ([`Backend`]) and its
//! candle implementation ([`Candle`]); the ONNX implementation lives in
//! [`crate::onnx::trace`].

pub mod backend;
pub mod candle;

pub use backend::{Backend, ConvSpec, NormMode, PointwiseFrom};
pub use candle::Candle;
