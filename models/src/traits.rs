//! The small interfaces the engine calls; implemented by the native models here and by ONNX
//! models elsewhere.

use candle_core::{Module, Tensor};

use crate::error::Result;

/// A noise-prediction network `eps(x_t, t, context)`.
pub trait Denoiser: Send + Sync {
    /// Predicts the noise in `x` (`[B, C, H, W]`) at timesteps `t` (`[B]`), conditioned on
    /// identity embeddings `context` (`[B, D]`) or unconditionally (`None` = empty context).
    fn eps(&self, x: &Tensor, t: &Tensor, context: Option<&Tensor>) -> Result<Tensor>;

    /// Classifier-free guidance `(1 − w)·eps(x, t, ∅) + w·eps(x, t, context)`.
    ///
    /// The default runs two passes; implementations may batch them. `w = 1` needs no
    /// unconditional pass.
    fn eps_guided(&self, x: &Tensor, t: &Tensor, context: &Tensor, w: f64) -> Result<Tensor> {
        let cond = self.eps(x, t, Some(context))?;
        if w == 1.0 {
            return Ok(cond);
        }
        let uncond = self.eps(x, t, None)?;
        Ok(((uncond * (1.0 - w))? + (cond * w)?)?)
    }
}

/// A latent autoencoder: images (`[B, 3, H, W]`, range −1..1) ↔ latents.
pub trait FirstStage: Send + Sync {
    /// Image → latent (not quantised).
    fn encode(&self, images: &Tensor) -> Result<Tensor>;
    /// Latent → image.
    fn decode(&self, latents: &Tensor) -> Result<Tensor>;
}

/// A face-recognition backbone: aligned faces → embeddings.
pub trait FaceEncoder: Send + Sync {
    /// `[B, 3, 112, 112]` normalised RGB (`((x/255) − 0.5)/0.5`) → `[B, D]` raw features.
    fn embed(&self, images_nchw: &Tensor) -> Result<Tensor>;
}

impl Denoiser for crate::unet::ConditionalUNet {
    fn eps(&self, x: &Tensor, t: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        Ok(self.forward(x, t, context, None)?)
    }

    /// One batched pass: the unconditional half uses the dropout mask, which is exactly the
    /// empty-context path.
    fn eps_guided(&self, x: &Tensor, t: &Tensor, context: &Tensor, w: f64) -> Result<Tensor> {
        if w == 1.0 {
            return self.eps(x, t, Some(context));
        }
        let b = x.dim(0)?;
        let xx = Tensor::cat(&[x, x], 0)?;
        let tt = Tensor::cat(&[t, t], 0)?;
        let cc = Tensor::cat(&[context, context], 0)?;
        let mask: Vec<u8> = (0..2 * b).map(|i| u8::from(i < b)).collect();
        let mask = Tensor::from_vec(mask, 2 * b, x.device())?;
        let eps = self.forward(&xx, &tt, Some(&cc), Some(&mask))?;
        let uncond = eps.narrow(0, 0, b)?;
        let cond = eps.narrow(0, b, b)?;
        Ok(((uncond * (1.0 - w))? + (cond * w)?)?)
    }
}

impl FaceEncoder for crate::iresnet::IResNet {
    fn embed(&self, images_nchw: &Tensor) -> Result<Tensor> {
        Ok(self.forward(images_nchw)?)
    }
}

impl FaceEncoder for crate::iresnet::IrBackbone {
    fn embed(&self, images_nchw: &Tensor) -> Result<Tensor> {
        Ok(self.forward(images_nchw)?)
    }
}
