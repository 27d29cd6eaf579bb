//! IDiff-Face's `ConditionalUNet` (labml-style DDPM UNet with identity-context conditioning).
//!
//! Parameter paths equal the official state-dict keys (`image_proj`, `time_emb.lin1`,
//! `down.{i}.res.norm1`, `down.{i}.attn.c_proj_in`, `middle.res1`, `up.{i}.conv`, `norm`,
//! `final`, …), so an `eps_model.*` state dict loads by lookup. The forward pass follows the
//! official `models/diffusion/unet.py` + `nn.py` step by step; see each block's doc.
//!
//! Context conditioning ([`ConditionType`]):
//! * `Ca` — residual blocks use time scale/shift (AdaGN on time only) and every attention level
//!   uses [`CrossAttentionBlock`] (self-attention, cross-attention to 32 tokens projected from the
//!   context, feed-forward). This is the published IDiff-Face model.
//! * `AdaGn` — the context embedding is added to the time embedding before the scale/shift
//!   projections (`context_emb = Sequential(SiLU, Linear)` per residual block); attention levels
//!   use plain [`SelfAttentionBlock`]s.
//! * `DiffAe` — AdaGN on time, then the normalised features are multiplied by a per-block
//!   projection of the context.
//! * `AddPlusGn` — Ho et al.: time (and context) projections are added before a plain GroupNorm.
//!
//! With `is_context_conditional = false` the context is ignored entirely (unconditional model).

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use idflow_dataset::rng::KeyedRng;
use serde::{Deserialize, Serialize};

use crate::nn::{Backend, Candle, ConvSpec, PointwiseFrom};

/// GroupNorm epsilon used throughout the UNet (PyTorch's default).
const GN_EPS: f64 = 1e-5;
/// Group count of every UNet GroupNorm.
const GN_GROUPS: usize = 32;

/// How the residual blocks and attention blocks consume the identity context.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConditionType {
    /// Cross-attention to context tokens (`"CA"`, the IDiff-Face model).
    #[serde(rename = "CA", alias = "ca")]
    Ca,
    /// Adaptive GroupNorm with time + context (`"AdaGN"`).
    #[serde(rename = "AdaGN", alias = "adagn")]
    AdaGn,
    /// AdaGN on time, multiplicative context (`"DiffAE"`).
    #[serde(rename = "DiffAE", alias = "diffae")]
    DiffAe,
    /// Additive time/context before GroupNorm (`"AddPlusGN"`).
    #[serde(rename = "AddPlusGN", alias = "addplusgn")]
    AddPlusGn,
}

/// Hyper-parameters of a [`ConditionalUNet`], named as in the official YAML configs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UNetConfig {
    /// Image/latent channels (3 for the VQ-f4 latent).
    pub input_channels: usize,
    /// Channels after `image_proj`; the time embedding has 4× as many.
    pub initial_channels: usize,
    /// Per-level multipliers, **cumulative**: level i has `initial · Π_{j≤i} m_j` channels.
    pub channel_multipliers: Vec<usize>,
    /// Whether each level has attention blocks.
    pub is_attention: Vec<bool>,
    /// Heads per attention block; `≤ 0` means `channels / attention_head_channels`.
    pub attention_heads: i64,
    /// Channels per attention head.
    pub attention_head_channels: usize,
    /// Residual blocks per level in the down path (the up path has one more).
    pub n_blocks_per_resolution: usize,
    /// How the context conditions the network.
    pub condition_type: ConditionType,
    /// Width of the identity embedding given as context (512 for ArcFace/ElasticFace features).
    pub context_input_channels: usize,
    /// Width of the projected context shared by all blocks.
    pub context_channels: usize,
    /// Whether the model consumes a context at all.
    pub is_context_conditional: bool,
    /// A learned `empty_context_embedding` parameter (otherwise zeros) for dropped contexts.
    pub learn_empty_context: bool,
    /// Element-wise dropout probability on the projected context (training only).
    pub context_dropout_probability: f64,
}

impl UNetConfig {
    /// The published IDiff-Face model (`unet_cond_ca_cpd25.yaml`): 216,341,187 parameters.
    pub fn idiff_face_ca() -> Self {
        Self {
            input_channels: 3,
            initial_channels: 96,
            channel_multipliers: vec![1, 2, 2, 2],
            is_attention: vec![false, true, true, true],
            attention_heads: -1,
            attention_head_channels: 32,
            n_blocks_per_resolution: 2,
            condition_type: ConditionType::Ca,
            context_input_channels: 512,
            context_channels: 256,
            is_context_conditional: true,
            learn_empty_context: false,
            context_dropout_probability: 0.25,
        }
    }

    /// The unconditional AdaGN model of the same size (`unet_uncond_adagn.yaml`).
    pub fn idiff_face_uncond_adagn() -> Self {
        Self {
            condition_type: ConditionType::AdaGn,
            is_context_conditional: false,
            context_dropout_probability: 0.0,
            ..Self::idiff_face_ca()
        }
    }

    /// Reads an official `eps_model` config object (IDiff-Face's hydra YAML as JSON, e.g. the
    /// `eps_model` entry of a run's config). `_target_` is ignored; `n_context_classes > 0`
    /// (class-label contexts through `nn.Embedding`) is refused because it is not implemented.
    pub fn from_official(value: &serde_json::Value) -> crate::Result<Self> {
        let Some(object) = value.as_object() else {
            return Err(crate::ModelError::Config("UNet config must be an object".into()));
        };
        let mut object = object.clone();
        object.remove("_target_");
        match object.remove("n_context_classes") {
            None => {}
            Some(v) if v.as_u64() == Some(0) => {}
            Some(v) => {
                return Err(crate::ModelError::Config(format!(
                    "n_context_classes = {v}: class-label contexts are not supported (use 0 for embedding contexts)"
                )))
            }
        }
        serde_json::from_value(serde_json::Value::Object(object)).map_err(|e| crate::ModelError::Config(format!("UNet config: {e}")))
    }

    /// Width of the time embedding (`4 · initial_channels`).
    pub fn time_channels(&self) -> usize {
        self.initial_channels * 4
    }

    /// Channels of each resolution level (cumulative product of the multipliers).
    pub fn channels_per_level(&self) -> Vec<usize> {
        let mut c = self.initial_channels;
        self.channel_multipliers
            .iter()
            .map(|m| {
                c *= m;
                c
            })
            .collect()
    }

    fn validate<B: Backend>(&self) -> std::result::Result<(), B::Error> {
        if self.channel_multipliers.is_empty() || self.channel_multipliers.len() != self.is_attention.len() {
            return Err(B::error(format!(
                "UNet config: channel_multipliers ({}) and is_attention ({}) must be non-empty and equally long",
                self.channel_multipliers.len(),
                self.is_attention.len()
            )));
        }
        if !self.initial_channels.is_multiple_of(GN_GROUPS) {
            return Err(B::error(format!("UNet config: initial_channels {} is not a multiple of 32", self.initial_channels)));
        }
        if self.attention_head_channels == 0 {
            return Err(B::error("UNet config: attention_head_channels must be > 0".into()));
        }
        Ok(())
    }

    /// Attention heads of a level with `channels` channels.
    fn heads(&self, channels: usize) -> usize {
        if self.attention_heads <= 0 {
            channels / self.attention_head_channels
        } else {
            self.attention_heads as usize
        }
    }

    fn use_context(&self) -> bool {
        self.is_context_conditional
    }
}

/// Result of the backend `B`'s operations.
type BResult<B, T> = std::result::Result<T, <B as Backend>::Error>;

/// `SinusoidalTimeEmbedding`: `[cos, sin]` of `t · freq_k` then `lin2(SiLU(lin1(·)))`.
#[derive(Clone, Debug)]
pub struct TimeEmbedding<B: Backend = Candle> {
    frequencies: B::Param,
    lin1: B::Linear,
    lin2: B::Linear,
}

impl<B: Backend> TimeEmbedding<B> {
    fn new(time_channels: usize, vars: &B::Vars<'_>) -> BResult<B, Self> {
        let input_channels = time_channels / 4;
        let half = input_channels / 2;
        // float32 like the original: exp(-ln(10000) * k / half)
        let log_max = -(10000f64.ln()) as f32;
        let frequencies = (0..half).map(|k| ((log_max * k as f32) / half as f32).exp()).collect();
        Ok(Self {
            frequencies: B::constant(vars, "frequencies", &[1, half], frequencies)?,
            lin1: B::load_linear(&B::push(vars, "lin1"), half * 2, time_channels)?,
            lin2: B::load_linear(&B::push(vars, "lin2"), time_channels, time_channels)?,
        })
    }

    /// Embeds timesteps `t` (`[B]`, any numeric type) to `[B, 4·initial_channels]`.
    pub fn forward(&self, b: &B, t: &B::Tensor) -> BResult<B, B::Tensor> {
        let emb = b.sinusoid(t, &self.frequencies)?;
        let h = b.silu(&b.linear(&self.lin1, &emb)?)?;
        b.linear(&self.lin2, &h)
    }
}

/// The embeddings every residual block reads, computed once per forward pass.
struct Embeddings<T> {
    /// `SiLU(time_emb(t))`, `[B, time_channels]`.
    t_silu: T,
    /// The projected context `[B, context_channels]` (after dropout / the empty-context mask).
    c: Option<T>,
    /// `SiLU(c)`.
    c_silu: Option<T>,
}

/// How a residual block injects the embeddings.
#[derive(Clone, Debug)]
enum ResidualConditioning<B: Backend> {
    /// `(1 + scale(e))·GN(h) + shift(e)` with `e = time_emb(t) [+ context_emb(c)]`;
    /// `DiffAE` additionally multiplies by `context_emb(c)`.
    ScaleShift {
        scale_emb: B::Linear,
        shift_emb: B::Linear,
        norm2: B::GroupNorm,
        context_emb: Option<B::Linear>,
        multiplicative_context: bool,
    },
    /// `GN(h + time_emb(t) [+ context_emb(c)])`.
    Additive { norm2: B::GroupNorm, context_emb: Option<B::Linear> },
}

/// `ResidualBlock`: GN → SiLU → conv1, conditioning, SiLU → conv2, plus a (1×1) shortcut.
#[derive(Clone, Debug)]
pub struct ResidualBlock<B: Backend = Candle> {
    norm1: B::GroupNorm,
    conv1: B::Conv2d,
    time_emb: B::Linear,
    conditioning: ResidualConditioning<B>,
    conv2: B::Conv2d,
    shortcut: Option<B::Conv2d>,
}

impl<B: Backend> ResidualBlock<B> {
    fn new(cfg: &UNetConfig, in_channels: usize, out_channels: usize, vars: &B::Vars<'_>) -> BResult<B, Self> {
        let pp = |name: &str| B::push(vars, name);
        let gn = |vars: &B::Vars<'_>, c: usize| B::load_group_norm(vars, GN_GROUPS, c, GN_EPS);
        let block_context = || B::load_linear(&B::push(&pp("context_emb"), "1"), cfg.context_channels, out_channels);
        let conditioning = match cfg.condition_type {
            ConditionType::Ca | ConditionType::AdaGn | ConditionType::DiffAe => {
                let context_emb = if cfg.use_context() && cfg.condition_type != ConditionType::Ca { Some(block_context()?) } else { None };
                ResidualConditioning::ScaleShift {
                    scale_emb: B::load_linear(&pp("scale_emb"), out_channels, out_channels)?,
                    shift_emb: B::load_linear(&pp("shift_emb"), out_channels, out_channels)?,
                    norm2: gn(&B::push(&pp("norm2"), "norm"), out_channels)?,
                    context_emb,
                    multiplicative_context: cfg.condition_type == ConditionType::DiffAe,
                }
            }
            ConditionType::AddPlusGn => ResidualConditioning::Additive {
                norm2: gn(&pp("norm2"), out_channels)?,
                context_emb: if cfg.use_context() { Some(block_context()?) } else { None },
            },
        };
        Ok(Self {
            norm1: gn(&pp("norm1"), in_channels)?,
            conv1: B::load_conv2d(&pp("conv1"), ConvSpec::new(in_channels, out_channels, 3).pad(1))?,
            time_emb: B::load_linear(&B::push(&pp("time_emb"), "1"), cfg.time_channels(), out_channels)?,
            conditioning,
            conv2: B::load_conv2d(&pp("conv2"), ConvSpec::new(out_channels, out_channels, 3).pad(1))?,
            shortcut: if in_channels != out_channels {
                Some(B::load_conv2d(&pp("shortcut"), ConvSpec::new(in_channels, out_channels, 1))?)
            } else {
                None
            },
        })
    }

    fn forward(&self, b: &B, x: &B::Tensor, e: &Embeddings<B::Tensor>) -> BResult<B, B::Tensor> {
        let h = b.conv2d(&self.conv1, &b.silu(&b.group_norm(&self.norm1, x)?)?)?;
        let t_proj = b.linear(&self.time_emb, &e.t_silu)?;
        let context_proj = |emb: &Option<B::Linear>| -> BResult<B, Option<B::Tensor>> {
            match (emb, &e.c_silu) {
                (Some(lin), Some(c)) => Ok(Some(b.linear(lin, c)?)),
                (Some(_), None) => Err(B::error("context-conditional residual block called without context".into())),
                (None, _) => Ok(None),
            }
        };
        let spatial = |v: &B::Tensor| b.unsqueeze(v, &[2, 3]);
        let h = match &self.conditioning {
            ResidualConditioning::ScaleShift { scale_emb, shift_emb, norm2, context_emb, multiplicative_context } => {
                let ctx = context_proj(context_emb)?;
                let emb = match (&ctx, multiplicative_context) {
                    (Some(ctx), false) => b.add(&t_proj, ctx)?,
                    _ => t_proj,
                };
                let scale = b.linear(scale_emb, &emb)?;
                let shift = b.linear(shift_emb, &emb)?;
                let hn = b.group_norm(norm2, &h)?;
                let scale1 = spatial(&b.add_scalar(&scale, 1.0)?)?;
                let shift = spatial(&shift)?;
                let mut h = b.add(&b.mul(&hn, &scale1)?, &shift)?;
                if let (Some(ctx), true) = (ctx, multiplicative_context) {
                    h = b.mul(&h, &spatial(&ctx)?)?;
                }
                h
            }
            ResidualConditioning::Additive { norm2, context_emb } => {
                let mut h = b.add(&h, &spatial(&t_proj)?)?;
                if let Some(ctx) = context_proj(context_emb)? {
                    h = b.add(&h, &spatial(&ctx)?)?;
                }
                b.group_norm(norm2, &h)?
            }
        };
        let h = b.conv2d(&self.conv2, &b.silu(&h)?)?;
        match &self.shortcut {
            Some(s) => b.add(&h, &b.conv2d(s, x)?),
            None => b.add(&h, x),
        }
    }
}

/// `MultiHeadAttention` with 1×1 Conv1d projections on `[B, C, L]` sequences. Heads are
/// contiguous channel chunks; q and k are both scaled by `head_channels^(-1/4)`.
#[derive(Clone, Debug)]
pub struct MultiHeadAttention<B: Backend = Candle> {
    to_q: B::Pointwise,
    to_k: B::Pointwise,
    to_v: B::Pointwise,
    proj_out: B::Pointwise,
    inner: usize,
    head_channels: usize,
}

impl<B: Backend> MultiHeadAttention<B> {
    fn new(in_channels: usize, kv_channels: usize, n_heads: usize, head_channels: usize, vars: &B::Vars<'_>) -> BResult<B, Self> {
        let inner = n_heads * head_channels;
        let conv1d = |name: &str, c_in: usize, c_out: usize| B::load_pointwise(&B::push(vars, name), c_in, c_out, PointwiseFrom::Conv1d);
        Ok(Self {
            to_q: conv1d("to_q", in_channels, inner)?,
            to_k: conv1d("to_k", kv_channels, inner)?,
            to_v: conv1d("to_v", kv_channels, inner)?,
            proj_out: conv1d("proj_out", inner, in_channels)?,
            inner,
            head_channels,
        })
    }

    /// Attends from `x` (`[B, C, Lq]`) to `c` (`[B, C_kv, Lk]`, `x` itself for self-attention).
    pub fn forward(&self, b: &B, x: &B::Tensor, c: Option<&B::Tensor>) -> BResult<B, B::Tensor> {
        let c = c.unwrap_or(x);
        let ch = self.head_channels as i64;
        let scale = 1.0 / (self.head_channels as f64).sqrt().sqrt();
        // [B, heads·ch, L] → [B·heads, ch, L]
        let q = b.reshape(&b.mul_scalar(&b.pointwise(&self.to_q, x)?, scale)?, &[-1, ch, 0])?;
        let k = b.reshape(&b.mul_scalar(&b.pointwise(&self.to_k, c)?, scale)?, &[-1, ch, 0])?;
        let v = b.reshape(&b.pointwise(&self.to_v, c)?, &[-1, ch, 0])?;
        // weight[b, t, s] = Σ_c q[b, c, t] k[b, c, s]
        let weight = b.softmax_last(&b.matmul(&b.transpose(&q, &[0, 2, 1])?, &k)?)?;
        // a[b, c, t] = Σ_s weight[b, t, s] v[b, c, s]
        let a = b.matmul(&v, &b.transpose(&weight, &[0, 2, 1])?)?;
        b.pointwise(&self.proj_out, &b.reshape(&a, &[-1, self.inner as i64, 0])?)
    }
}

/// `SpatialEmbeddingCrossAttentionBlock`: self-attention over pixels, cross-attention to context
/// tokens, channel feed-forward, all pre-normed by one shared `x_norm`, with residual connections.
#[derive(Clone, Debug)]
pub struct CrossAttentionBlock<B: Backend = Candle> {
    x_proj_in: B::Conv2d,
    x_proj_out: B::Conv2d,
    self_attention: MultiHeadAttention<B>,
    c_proj_in: B::Linear,
    cross_attention: MultiHeadAttention<B>,
    x_norm: B::GroupNorm,
    c_norm: B::GroupNorm,
    ff_in: B::Pointwise,
    ff_out: B::Pointwise,
    context_dim: usize,
    context_tokens: usize,
}

impl<B: Backend> CrossAttentionBlock<B> {
    fn new(in_channels: usize, context_dim: usize, n_heads: usize, head_channels: usize, vars: &B::Vars<'_>) -> BResult<B, Self> {
        let pp = |name: &str| B::push(vars, name);
        let inner = n_heads * head_channels;
        let d = head_channels;
        let ff = pp("ff");
        Ok(Self {
            x_proj_in: B::load_conv2d(&pp("x_proj_in"), ConvSpec::new(in_channels, inner, 1))?,
            x_proj_out: B::load_conv2d(&pp("x_proj_out"), ConvSpec::new(inner, in_channels, 1))?,
            self_attention: MultiHeadAttention::new(inner, inner, n_heads, head_channels, &pp("self_attention"))?,
            c_proj_in: B::load_linear(&pp("c_proj_in"), context_dim, context_dim * d)?,
            cross_attention: MultiHeadAttention::new(inner, context_dim, n_heads, head_channels, &pp("cross_attention"))?,
            x_norm: B::load_group_norm(&pp("x_norm"), GN_GROUPS, inner, GN_EPS)?,
            c_norm: B::load_group_norm(&pp("c_norm"), GN_GROUPS, context_dim, GN_EPS)?,
            ff_in: B::load_pointwise(&B::push(&ff, "0"), inner, inner * 4, PointwiseFrom::Linear)?,
            ff_out: B::load_pointwise(&B::push(&ff, "2"), inner * 4, inner, PointwiseFrom::Linear)?,
            context_dim,
            context_tokens: d,
        })
    }

    fn forward(&self, b: &B, x: &B::Tensor, c: &B::Tensor) -> BResult<B, B::Tensor> {
        let x1_4d = b.conv2d(&self.x_proj_in, x)?;
        let x1 = b.reshape(&x1_4d, &[0, 0, -1])?;
        let cc = b.reshape(&b.linear(&self.c_proj_in, c)?, &[0, self.context_dim as i64, self.context_tokens as i64])?;
        let cc = b.group_norm(&self.c_norm, &cc)?;
        let sa = self.self_attention.forward(b, &b.group_norm(&self.x_norm, &x1)?, None)?;
        let x1 = b.add(&sa, &x1)?;
        let ca = self.cross_attention.forward(b, &b.group_norm(&self.x_norm, &x1)?, Some(&cc))?;
        let x1 = b.add(&ca, &x1)?;
        let ff = b.pointwise(&self.ff_in, &b.group_norm(&self.x_norm, &x1)?)?;
        let ff = b.pointwise(&self.ff_out, &b.gelu_erf(&ff)?)?;
        let x1 = b.reshape_like(&b.add(&ff, &x1)?, &x1_4d)?;
        b.add(&b.conv2d(&self.x_proj_out, &x1)?, x)
    }
}

/// `SpatialSelfAttentionBlock`: GroupNorm then multi-head self-attention over pixels, residual.
#[derive(Clone, Debug)]
pub struct SelfAttentionBlock<B: Backend = Candle> {
    norm: B::GroupNorm,
    attention: MultiHeadAttention<B>,
}

impl<B: Backend> SelfAttentionBlock<B> {
    fn new(in_channels: usize, n_heads: usize, head_channels: usize, vars: &B::Vars<'_>) -> BResult<B, Self> {
        Ok(Self {
            norm: B::load_group_norm(&B::push(vars, "norm"), GN_GROUPS, in_channels, GN_EPS)?,
            attention: MultiHeadAttention::new(in_channels, in_channels, n_heads, head_channels, &B::push(vars, "attention"))?,
        })
    }

    fn forward(&self, b: &B, x: &B::Tensor) -> BResult<B, B::Tensor> {
        let y = b.reshape(&b.group_norm(&self.norm, x)?, &[0, 0, -1])?;
        let a = b.reshape_like(&self.attention.forward(b, &y, None)?, x)?;
        b.add(&a, x)
    }
}

/// The attention flavour of a block.
#[derive(Clone, Debug)]
enum Attention<B: Backend> {
    Cross(Box<CrossAttentionBlock<B>>),
    SelfOnly(SelfAttentionBlock<B>),
}

impl<B: Backend> Attention<B> {
    fn new(cfg: &UNetConfig, channels: usize, vars: &B::Vars<'_>) -> BResult<B, Self> {
        let n_heads = cfg.heads(channels);
        if cfg.condition_type == ConditionType::Ca && cfg.use_context() {
            Ok(Self::Cross(Box::new(CrossAttentionBlock::new(channels, cfg.context_channels, n_heads, cfg.attention_head_channels, vars)?)))
        } else {
            Ok(Self::SelfOnly(SelfAttentionBlock::new(channels, n_heads, cfg.attention_head_channels, vars)?))
        }
    }

    fn forward(&self, b: &B, x: &B::Tensor, c: Option<&B::Tensor>) -> BResult<B, B::Tensor> {
        match (self, c) {
            (Self::Cross(block), Some(c)) => block.forward(b, x, c),
            (Self::Cross(_), None) => Err(B::error("cross-attention block called without context".into())),
            (Self::SelfOnly(block), _) => block.forward(b, x),
        }
    }
}

/// A down/up-path module.
#[derive(Clone, Debug)]
enum Stage<B: Backend> {
    /// `DownBlock` / `UpBlock`: residual block, optional attention.
    Block { res: Box<ResidualBlock<B>>, attn: Option<Attention<B>> },
    /// `Downsample`: 3×3 conv, stride 2, padding 1.
    Down(B::Conv2d),
    /// `Upsample`: ConvTranspose2d 4×4, stride 2, padding 1.
    Up(B::ConvTranspose2d),
}

impl<B: Backend> Stage<B> {
    fn block(cfg: &UNetConfig, in_ch: usize, out_ch: usize, attention: bool, vars: &B::Vars<'_>) -> BResult<B, Self> {
        let res = Box::new(ResidualBlock::new(cfg, in_ch, out_ch, &B::push(vars, "res"))?);
        let attn = if attention { Some(Attention::new(cfg, out_ch, &B::push(vars, "attn"))?) } else { None };
        Ok(Self::Block { res, attn })
    }

    fn forward(&self, b: &B, x: &B::Tensor, e: &Embeddings<B::Tensor>) -> BResult<B, B::Tensor> {
        match self {
            Self::Block { res, attn } => {
                let x = res.forward(b, x, e)?;
                match attn {
                    Some(a) => a.forward(b, &x, e.c.as_ref()),
                    None => Ok(x),
                }
            }
            Self::Down(conv) => b.conv2d(conv, x),
            Self::Up(conv) => b.conv_transpose2d(conv, x),
        }
    }
}

/// How the context enters the network.
#[derive(Clone, Debug)]
struct ContextInput<B: Backend> {
    context_emb: B::Linear,
    empty: B::Param,
    dropout_probability: f64,
}

/// IDiff-Face's denoiser `eps_model(x_t, t, context, dropout_mask)`, generic over the
/// [`Backend`] (candle by default).
#[derive(Clone, Debug)]
pub struct ConditionalUNet<B: Backend = Candle> {
    config: UNetConfig,
    image_proj: B::Conv2d,
    time_emb: TimeEmbedding<B>,
    context: Option<ContextInput<B>>,
    down: Vec<Stage<B>>,
    middle: (ResidualBlock<B>, Attention<B>, ResidualBlock<B>),
    up: Vec<Stage<B>>,
    norm: B::GroupNorm,
    final_conv: B::Conv2d,
}

impl<B: Backend> ConditionalUNet<B> {
    /// Builds the network on backend `B`; `vars` is rooted at the model (keys without
    /// `eps_model.`).
    pub fn build(config: &UNetConfig, vars: &B::Vars<'_>) -> BResult<B, Self> {
        config.validate::<B>()?;
        let cfg = config;
        let pp = |name: &str| B::push(vars, name);
        let conv3 = |vars: &B::Vars<'_>, c_in: usize, c_out: usize| B::load_conv2d(vars, ConvSpec::new(c_in, c_out, 3).pad(1));
        let image_proj = conv3(&pp("image_proj"), cfg.input_channels, cfg.initial_channels)?;
        let time_emb = TimeEmbedding::new(cfg.time_channels(), &pp("time_emb"))?;
        let context = if cfg.use_context() {
            let context_emb = B::load_linear(&pp("context_emb"), cfg.context_input_channels, cfg.context_channels)?;
            let empty = if cfg.learn_empty_context {
                B::load_param(vars, "empty_context_embedding", &[cfg.context_channels])?
            } else {
                B::zeros(vars, &[cfg.context_channels])?
            };
            Some(ContextInput { context_emb, empty, dropout_probability: cfg.context_dropout_probability })
        } else {
            None
        };

        let levels = cfg.channel_multipliers.len();
        let (down_vars, up_vars) = (pp("down"), pp("up"));
        let mut down = Vec::new();
        let mut in_ch = cfg.initial_channels;
        let mut out_ch = in_ch;
        for i in 0..levels {
            out_ch = in_ch * cfg.channel_multipliers[i];
            for _ in 0..cfg.n_blocks_per_resolution {
                down.push(Stage::block(cfg, in_ch, out_ch, cfg.is_attention[i], &B::push(&down_vars, &down.len().to_string()))?);
                in_ch = out_ch;
            }
            if i < levels - 1 {
                let vars = B::push(&B::push(&down_vars, &down.len().to_string()), "conv");
                down.push(Stage::Down(B::load_conv2d(&vars, ConvSpec::new(in_ch, in_ch, 3).stride(2).pad(1))?));
            }
        }

        let mvars = pp("middle");
        let middle = (
            ResidualBlock::new(cfg, out_ch, out_ch, &B::push(&mvars, "res1"))?,
            Attention::new(cfg, out_ch, &B::push(&mvars, "attn"))?,
            ResidualBlock::new(cfg, out_ch, out_ch, &B::push(&mvars, "res2"))?,
        );

        let mut up = Vec::new();
        let mut in_ch = out_ch;
        for i in (0..levels).rev() {
            let out_ch = in_ch;
            for _ in 0..cfg.n_blocks_per_resolution {
                up.push(Stage::block(cfg, in_ch + out_ch, out_ch, cfg.is_attention[i], &B::push(&up_vars, &up.len().to_string()))?);
            }
            let out_ch = in_ch / cfg.channel_multipliers[i];
            up.push(Stage::block(cfg, in_ch + out_ch, out_ch, cfg.is_attention[i], &B::push(&up_vars, &up.len().to_string()))?);
            in_ch = out_ch;
            if i > 0 {
                let vars = B::push(&B::push(&up_vars, &up.len().to_string()), "conv");
                up.push(Stage::Up(B::load_conv_transpose2d(&vars, ConvSpec::new(in_ch, in_ch, 4).stride(2).pad(1))?));
            }
        }

        let norm = B::load_group_norm(&pp("norm"), GN_GROUPS, cfg.initial_channels, GN_EPS)?;
        let final_conv = conv3(&pp("final"), in_ch, cfg.input_channels)?;
        Ok(Self { config: config.clone(), image_proj, time_emb, context, down, middle, up, norm, final_conv })
    }

    /// The configuration the network was built with.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// The projected context: `context_emb(context)`, rows of `dropout_mask` replaced by the
    /// empty context, element-wise dropout when `rng` is given; with no context, the empty
    /// context for every row of `x`.
    fn context_vectors(
        &self,
        b: &B,
        x: &B::Tensor,
        context: Option<&B::Tensor>,
        dropout_mask: Option<&B::Tensor>,
        rng: Option<&mut KeyedRng>,
    ) -> BResult<B, Option<B::Tensor>> {
        let Some(ci) = &self.context else {
            return Ok(None);
        };
        let Some(context) = context else {
            return Ok(Some(b.repeat_rows(&ci.empty, x)?));
        };
        b.scope("context_emb");
        let mut c = b.linear(&ci.context_emb, context)?;
        if let Some(mask) = dropout_mask {
            c = b.replace_rows(mask, &ci.empty, &c)?;
        }
        if let Some(rng) = rng {
            c = b.dropout(&c, ci.dropout_probability, rng)?;
        }
        Ok(Some(c))
    }

    /// Predicts the noise in `x` at timesteps `t` on backend `b`; see
    /// [`ConditionalUNet::forward`] for the arguments. `rng` turns on training-mode context
    /// dropout.
    pub fn forward_with(
        &self,
        b: &B,
        x: &B::Tensor,
        t: &B::Tensor,
        context: Option<&B::Tensor>,
        dropout_mask: Option<&B::Tensor>,
        rng: Option<&mut KeyedRng>,
    ) -> BResult<B, B::Tensor> {
        b.scope("time_emb");
        let t_silu = b.silu(&self.time_emb.forward(b, t)?)?;
        let c = self.context_vectors(b, x, context, dropout_mask, rng)?;
        let c_silu = c.as_ref().map(|c| b.silu(c)).transpose()?;
        let e = Embeddings { t_silu, c, c_silu };

        b.scope("image_proj");
        let mut x = b.conv2d(&self.image_proj, x)?;
        let mut skips = vec![x.clone()];
        for (index, m) in self.down.iter().enumerate() {
            b.scope(&match m {
                Stage::Down(_) => format!("down.{index}.conv"),
                _ => format!("down.{index}"),
            });
            x = m.forward(b, &x, &e)?;
            skips.push(x.clone());
        }
        b.scope("middle");
        x = self.middle.0.forward(b, &x, &e)?;
        x = self.middle.1.forward(b, &x, e.c.as_ref())?;
        x = self.middle.2.forward(b, &x, &e)?;
        for (index, m) in self.up.iter().enumerate() {
            x = match m {
                Stage::Up(_) => {
                    b.scope(&format!("up.{index}.conv"));
                    m.forward(b, &x, &e)?
                }
                _ => {
                    let Some(s) = skips.pop() else { return Err(B::error("UNet skip stack exhausted".into())) };
                    let cat = b.concat(&[&x, &s], 1)?;
                    b.scope(&format!("up.{index}"));
                    m.forward(b, &cat, &e)?
                }
            };
        }
        b.scope("final");
        let h = b.silu(&b.group_norm(&self.norm, &x)?)?;
        b.conv2d(&self.final_conv, &h)
    }
}

impl ConditionalUNet<Candle> {
    /// Builds the network; `vb` is rooted at the model (keys without `eps_model.`).
    pub fn new(config: &UNetConfig, vb: VarBuilder) -> Result<Self> {
        Self::build(config, &vb)
    }

    /// The time embedding (`eps_model.time_emb(t)`), exposed for debugging and tests.
    pub fn time_embedding(&self, t: &Tensor) -> Result<Tensor> {
        self.time_emb.forward(&Candle, t)
    }

    /// The projected context (`eps_model.context_emb(context)`); `None` for unconditional models.
    pub fn context_embedding(&self, context: &Tensor) -> Result<Option<Tensor>> {
        self.context.as_ref().map(|ci| Candle.linear(&ci.context_emb, context)).transpose()
    }

    /// Predicts the noise in eval mode (context dropout is the identity).
    ///
    /// `x`: `[B, C, H, W]` noisy latent; `t`: `[B]` timesteps (0-based); `context`: `[B, 512]`
    /// identity embeddings or `None` for the empty context (zeros *after* the projection, the
    /// projection's bias is not added); `dropout_mask`: `[B]` u8/bool, rows with 1 use the empty
    /// context.
    pub fn forward(&self, x: &Tensor, t: &Tensor, context: Option<&Tensor>, dropout_mask: Option<&Tensor>) -> Result<Tensor> {
        self.forward_with(&Candle, x, t, context, dropout_mask, None)
    }

    /// Training-mode forward: element-wise context dropout (p = `context_dropout_probability`,
    /// survivors scaled by `1/(1 − p)` like `torch.nn.Dropout`) with draws from `rng`.
    pub fn forward_train(
        &self,
        x: &Tensor,
        t: &Tensor,
        context: Option<&Tensor>,
        dropout_mask: Option<&Tensor>,
        rng: &mut KeyedRng,
    ) -> Result<Tensor> {
        self.forward_with(&Candle, x, t, context, dropout_mask, Some(rng))
    }
}

/// Number of scalar parameters of a configuration, computed without allocating the weights.
pub fn parameter_count(config: &UNetConfig) -> crate::Result<usize> {
    let shapes = crate::io::checkpoint::parameter_shapes(|vb| ConditionalUNet::new(config, vb))?;
    Ok(shapes.iter().map(|(_, s)| s.elem_count()).sum())
}
