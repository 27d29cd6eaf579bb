//! The model traits ([`Denoiser`], [`FirstStage`], [`FaceEncoder`]) backed by ONNX Runtime
//! sessions, so engine code can swap the native candle models for compiled ones.
//!
//! Tensors cross the boundary as contiguous f32 (`t` as the graph's int64/float32) host buffers;
//! results come back as candle tensors on the device of the input.

use candle_core::{DType, Device, Tensor};

use super::builder::ElemType;
use super::runtime::{OrtSession, TensorInput, TensorOutput};
use super::OnnxError;
use crate::error::Result;
use crate::traits::{Denoiser, FaceEncoder, FirstStage};

fn host_f32(t: &Tensor) -> std::result::Result<(Vec<usize>, Vec<f32>), OnnxError> {
    let shape = t.dims().to_vec();
    let data = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok((shape, data))
}

fn to_tensor(shape: Vec<usize>, data: Vec<f32>, device: &Device) -> std::result::Result<Tensor, OnnxError> {
    Ok(Tensor::from_vec(data, shape, &Device::Cpu)?.to_device(device)?)
}

fn check_rank(name: &str, t: &Tensor, rank: usize) -> std::result::Result<(), OnnxError> {
    if t.rank() != rank {
        return Err(OnnxError::Input { name: name.into(), reason: format!("expected rank {rank}, got shape {:?}", t.dims()) });
    }
    Ok(())
}

/// A compiled `ConditionalUNet` ([`super::compile_unet`]) on ONNX Runtime.
#[derive(Debug)]
pub struct OrtDenoiser {
    session: OrtSession,
    timestep: ElemType,
    context_width: Option<usize>,
    has_mask: bool,
}

impl OrtDenoiser {
    /// Wraps a session of a compiled UNet, reading its interface (`t` type, `context`,
    /// `dropout_mask`) from the graph inputs.
    pub fn new(session: OrtSession) -> std::result::Result<Self, OnnxError> {
        let timestep = session
            .input_type("t")
            .ok_or_else(|| OnnxError::Input { name: "t".into(), reason: "the model has no `t` input (not a compiled denoiser?)".into() })?;
        if !matches!(timestep, ElemType::I64 | ElemType::F32) {
            return Err(OnnxError::Input { name: "t".into(), reason: format!("unsupported element type {timestep:?}") });
        }
        if session.input_type("x").is_none() || !session.output_names().iter().any(|o| o == "eps") {
            return Err(OnnxError::Input { name: "x".into(), reason: "a denoiser graph needs input `x` and output `eps`".into() });
        }
        let context_width = match session.input_dims("context") {
            Some(d) => Some(d.get(1).copied().flatten().ok_or_else(|| OnnxError::Input {
                name: "context".into(),
                reason: "the context width must be fixed in the graph".into(),
            })?),
            None => None,
        };
        let has_mask = session.input_type("dropout_mask").is_some();
        Ok(Self { session, timestep, context_width, has_mask })
    }

    /// The underlying session.
    pub fn session(&self) -> &OrtSession {
        &self.session
    }

    /// Whether the graph consumes a context.
    pub fn is_conditional(&self) -> bool {
        self.context_width.is_some()
    }

    /// `eps` with an explicit per-row empty-context mask (1 = empty context), like the native
    /// `forward(x, t, context, dropout_mask)`.
    pub fn eps_masked(
        &self,
        x: &Tensor,
        t: &Tensor,
        context: Option<&Tensor>,
        mask: Option<&[u8]>,
    ) -> std::result::Result<Tensor, OnnxError> {
        check_rank("x", x, 4)?;
        check_rank("t", t, 1)?;
        let b = x.dim(0)?;
        if t.dim(0)? != b {
            return Err(OnnxError::Input { name: "t".into(), reason: format!("{} timesteps for a batch of {b}", t.dim(0)?) });
        }
        let (xs, xd) = host_f32(x)?;
        let t_shape = [b];
        let t_f32;
        let t_i64;
        let t_input = match self.timestep {
            ElemType::I64 => {
                t_i64 = t.to_dtype(DType::I64)?.to_vec1::<i64>()?;
                TensorInput::I64(&t_shape, &t_i64)
            }
            _ => {
                t_f32 = t.to_dtype(DType::F32)?.to_vec1::<f32>()?;
                TensorInput::F32(&t_shape, &t_f32)
            }
        };
        let mut inputs = vec![("x", TensorInput::F32(&xs, &xd)), ("t", t_input)];
        let c_data;
        let c_shape;
        let m_data: Vec<u8>;
        let m_shape = [b];
        if let Some(width) = self.context_width {
            let all_empty = context.is_none();
            (c_shape, c_data) = match context {
                Some(c) => {
                    check_rank("context", c, 2)?;
                    if c.dims() != [b, width] {
                        return Err(OnnxError::Input {
                            name: "context".into(),
                            reason: format!("expected [{b}, {width}], got {:?}", c.dims()),
                        });
                    }
                    host_f32(c)?
                }
                None => (vec![b, width], vec![0.0; b * width]),
            };
            inputs.push(("context", TensorInput::F32(&c_shape, &c_data)));
            m_data = match mask {
                Some(m) if m.len() == b => m.to_vec(),
                Some(m) => {
                    return Err(OnnxError::Input { name: "dropout_mask".into(), reason: format!("{} entries for a batch of {b}", m.len()) })
                }
                None => vec![u8::from(all_empty); b],
            };
            if self.has_mask {
                inputs.push(("dropout_mask", TensorInput::U8(&m_shape, &m_data)));
            } else if m_data.iter().any(|&m| m != 0) {
                return Err(OnnxError::Input {
                    name: "context".into(),
                    reason: "the empty context needs a graph compiled with the `dropout_mask` input".into(),
                });
            }
        }
        let (shape, data) = self.session.run_f32(&inputs, "eps")?;
        to_tensor(shape, data, x.device())
    }
}

impl Denoiser for OrtDenoiser {
    fn eps(&self, x: &Tensor, t: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        Ok(self.eps_masked(x, t, context, None)?)
    }

    /// One batched run when the graph has the `dropout_mask` input (the unconditional half uses
    /// the mask), otherwise two runs.
    fn eps_guided(&self, x: &Tensor, t: &Tensor, context: &Tensor, w: f64) -> Result<Tensor> {
        if w == 1.0 {
            return self.eps(x, t, Some(context));
        }
        if !self.has_mask || !self.is_conditional() {
            let cond = self.eps(x, t, Some(context))?;
            let uncond = self.eps(x, t, None)?;
            return Ok(((uncond * (1.0 - w))? + (cond * w)?)?);
        }
        let b = x.dim(0)?;
        let xx = Tensor::cat(&[x, x], 0)?;
        let tt = Tensor::cat(&[t, t], 0)?;
        let cc = Tensor::cat(&[context, context], 0)?;
        let mask: Vec<u8> = (0..2 * b).map(|i| u8::from(i < b)).collect();
        let eps = self.eps_masked(&xx, &tt, Some(&cc), Some(&mask))?;
        let uncond = eps.narrow(0, 0, b)?;
        let cond = eps.narrow(0, b, b)?;
        Ok(((uncond * (1.0 - w))? + (cond * w)?)?)
    }
}

/// A compiled VQ first stage ([`super::compile_vq_encoder`] / [`super::compile_vq_decoder`]).
#[derive(Debug)]
pub struct OrtFirstStage {
    encoder: Option<OrtSession>,
    decoder: OrtSession,
}

impl OrtFirstStage {
    /// Wraps a decoder session and optionally an encoder session.
    pub fn new(encoder: Option<OrtSession>, decoder: OrtSession) -> Self {
        Self { encoder, decoder }
    }

    /// Decodes and also returns the code indices `[B, h, w]` when the graph quantises.
    pub fn decode_with_indices(&self, latents: &Tensor) -> std::result::Result<(Tensor, Option<Vec<i64>>), OnnxError> {
        check_rank("z", latents, 4)?;
        let (s, d) = host_f32(latents)?;
        let outputs = self.decoder.run(&[("z", TensorInput::F32(&s, &d))])?;
        let mut image = None;
        let mut indices = None;
        for (name, out) in outputs {
            match (name.as_str(), out) {
                ("image", TensorOutput::F32(s, d)) => image = Some(to_tensor(s, d, latents.device())?),
                ("indices", TensorOutput::I64(_, d)) => indices = Some(d),
                _ => {}
            }
        }
        let image = image.ok_or_else(|| OnnxError::Runtime("the decoder graph has no float32 `image` output".into()))?;
        Ok((image, indices))
    }
}

impl FirstStage for OrtFirstStage {
    fn encode(&self, images: &Tensor) -> Result<Tensor> {
        let enc = self.encoder.as_ref().ok_or_else(|| OnnxError::Config("this first stage was loaded without an encoder graph".into()))?;
        check_rank("image", images, 4)?;
        let (s, d) = host_f32(images).map_err(crate::error::ModelError::from)?;
        let (shape, data) = enc.run_f32(&[("image", TensorInput::F32(&s, &d))], "latent")?;
        Ok(to_tensor(shape, data, images.device())?)
    }

    fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        Ok(self.decode_with_indices(latents)?.0)
    }
}

/// A compiled face encoder ([`super::compile_iresnet`] / [`super::compile_tface_ir`]).
#[derive(Debug)]
pub struct OrtFaceEncoder {
    session: OrtSession,
}

impl OrtFaceEncoder {
    /// Wraps a session whose graph maps `image` to `features`.
    pub fn new(session: OrtSession) -> Self {
        Self { session }
    }
}

impl FaceEncoder for OrtFaceEncoder {
    fn embed(&self, images_nchw: &Tensor) -> Result<Tensor> {
        check_rank("image", images_nchw, 4)?;
        let (s, d) = host_f32(images_nchw)?;
        let (shape, data) = self.session.run_f32(&[("image", TensorInput::F32(&s, &d))], "features")?;
        Ok(to_tensor(shape, data, images_nchw.device())?)
    }
}
