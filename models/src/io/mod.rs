//! Getting weights and shapes in and out: official checkpoints and safetensors state dicts with
//! strict loading ([`checkpoint`]), `torch.save` files written for PyTorch users
//! ([`torch_file`]), loaders of the published face encoders ([`pretrained`]), and the named model
//! configurations idflow knows ([`presets`]).

pub mod checkpoint;
pub mod presets;
pub mod pretrained;
pub mod torch_file;
