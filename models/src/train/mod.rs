//! Training loops for the `train` operator: the model-side half of face-recognition training
//! (TFace recipe: margin head, SGD with momentum, no weight decay on BatchNorm) and of
//! IDiff-Face denoiser training (eps-MSE, CPD, Adam, EMA), with checkpointable state. The
//! networks are the architectures' single definitions ([`crate::iresnet`], [`crate::unet`],
//! [`crate::vq`]) on the candle backend, built over a `VarMap` of trainable variables.
//!
//! * [`loss`] — the trainable subset of a `VarMap` and IDiff-Face's DDPM training loss;
//! * [`optim`] — SGD (momentum, BN-free weight decay), Adam, gradient clipping;
//! * [`schedule`] — learning-rate schedules and the EMA warm-up;
//! * [`replicas`] — data-parallel replicas of one step (threads over parts of the batch);
//! * [`state`] — keyed initialisation, EMA, loading state back, safetensors in memory;
//! * [`face`], [`diffusion`], [`autoencoder`] — one optimiser step of each task plus its
//!   checkpoint tensors.

pub mod autoencoder;
pub mod diffusion;
pub mod face;
pub mod loss;
pub mod optim;
pub mod replicas;
pub mod schedule;
pub mod state;

#[cfg(test)]
mod tests;
