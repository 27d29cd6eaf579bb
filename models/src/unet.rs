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

use crate::channel::GroupNorm;
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};
use idflow_dataset::rng::KeyedRng;
use serde::{Deserialize, Serialize};

use crate::layers::{conv2d, conv_transpose2d, group_norm, softmax_last, Pointwise};

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

    fn validate(&self) -> Result<()> {
        if self.channel_multipliers.is_empty() || self.channel_multipliers.len() != self.is_attention.len() {
            candle_core::bail!(
                "UNet config: channel_multipliers ({}) and is_attention ({}) must be non-empty and equally long",
                self.channel_multipliers.len(),
                self.is_attention.len()
            );
        }
        if !self.initial_channels.is_multiple_of(GN_GROUPS) {
            candle_core::bail!("UNet config: initial_channels {} is not a multiple of 32", self.initial_channels);
        }
        if self.attention_head_channels == 0 {
            candle_core::bail!("UNet config: attention_head_channels must be > 0");
        }
        Ok(())
    }

    fn use_context(&self) -> bool {
        self.is_context_conditional
    }
}

/// `SinusoidalTimeEmbedding`: `[cos, sin]` of `t · freq_k` then `lin2(SiLU(lin1(·)))`.
#[derive(Clone, Debug)]
pub struct TimeEmbedding {
    frequencies: Vec<f32>,
    lin1: Linear,
    lin2: Linear,
}

impl TimeEmbedding {
    fn new(time_channels: usize, vb: VarBuilder) -> Result<Self> {
        let input_channels = time_channels / 4;
        let half = input_channels / 2;
        // float32 like the original: exp(-ln(10000) * k / half)
        let log_max = -(10000f64.ln()) as f32;
        let frequencies = (0..half).map(|k| ((log_max * k as f32) / half as f32).exp()).collect();
        Ok(Self {
            frequencies,
            lin1: candle_nn::linear(input_channels, time_channels, vb.pp("lin1"))?,
            lin2: candle_nn::linear(time_channels, time_channels, vb.pp("lin2"))?,
        })
    }

    /// Embeds timesteps `t` (`[B]`, any numeric dtype) to `[B, 4·initial_channels]`.
    pub fn forward(&self, t: &Tensor) -> Result<Tensor> {
        let ts = t.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let half = self.frequencies.len();
        let mut emb = Vec::with_capacity(ts.len() * half * 2);
        for &tv in &ts {
            emb.extend(self.frequencies.iter().map(|f| (tv * f).cos()));
            emb.extend(self.frequencies.iter().map(|f| (tv * f).sin()));
        }
        let dtype = self.lin1.weight().dtype();
        let emb = Tensor::from_vec(emb, (ts.len(), half * 2), self.lin1.weight().device())?.to_dtype(dtype)?;
        self.lin2.forward(&self.lin1.forward(&emb)?.silu()?)
    }
}

/// How a residual block injects the embeddings.
#[derive(Clone, Debug)]
enum ResidualConditioning {
    /// `(1 + scale(e))·GN(h) + shift(e)` with `e = time_emb(t) [+ context_emb(c)]`;
    /// `DiffAE` additionally multiplies by `context_emb(c)`.
    ScaleShift { scale_emb: Linear, shift_emb: Linear, norm2: GroupNorm, context_emb: Option<Linear>, multiplicative_context: bool },
    /// `GN(h + time_emb(t) [+ context_emb(c)])`.
    Additive { norm2: GroupNorm, context_emb: Option<Linear> },
}

/// `ResidualBlock`: GN → SiLU → conv1, conditioning, SiLU → conv2, plus a (1×1) shortcut.
#[derive(Clone, Debug)]
pub struct ResidualBlock {
    norm1: GroupNorm,
    conv1: crate::conv::Conv2d,
    time_emb: Linear,
    conditioning: ResidualConditioning,
    conv2: crate::conv::Conv2d,
    shortcut: Option<crate::conv::Conv2d>,
}

impl ResidualBlock {
    fn new(cfg: &UNetConfig, in_channels: usize, out_channels: usize, vb: VarBuilder) -> Result<Self> {
        let time_channels = cfg.time_channels();
        let norm1 = group_norm(GN_GROUPS, in_channels, GN_EPS, vb.pp("norm1"))?;
        let conv1 = conv2d(in_channels, out_channels, 3, 1, 1, vb.pp("conv1"))?;
        let time_emb = candle_nn::linear(time_channels, out_channels, vb.pp("time_emb").pp("1"))?;
        let block_context = |vb: VarBuilder| candle_nn::linear(cfg.context_channels, out_channels, vb.pp("context_emb").pp("1"));
        let conditioning = match cfg.condition_type {
            ConditionType::Ca | ConditionType::AdaGn | ConditionType::DiffAe => {
                let context_emb =
                    if cfg.use_context() && cfg.condition_type != ConditionType::Ca { Some(block_context(vb.clone())?) } else { None };
                ResidualConditioning::ScaleShift {
                    scale_emb: candle_nn::linear(out_channels, out_channels, vb.pp("scale_emb"))?,
                    shift_emb: candle_nn::linear(out_channels, out_channels, vb.pp("shift_emb"))?,
                    norm2: group_norm(GN_GROUPS, out_channels, GN_EPS, vb.pp("norm2").pp("norm"))?,
                    context_emb,
                    multiplicative_context: cfg.condition_type == ConditionType::DiffAe,
                }
            }
            ConditionType::AddPlusGn => ResidualConditioning::Additive {
                norm2: group_norm(GN_GROUPS, out_channels, GN_EPS, vb.pp("norm2"))?,
                context_emb: if cfg.use_context() { Some(block_context(vb.clone())?) } else { None },
            },
        };
        let conv2 = conv2d(out_channels, out_channels, 3, 1, 1, vb.pp("conv2"))?;
        let shortcut =
            if in_channels != out_channels { Some(conv2d(in_channels, out_channels, 1, 1, 0, vb.pp("shortcut"))?) } else { None };
        Ok(Self { norm1, conv1, time_emb, conditioning, conv2, shortcut })
    }

    fn forward(&self, x: &Tensor, t_emb: &Tensor, c: Option<&Tensor>) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward(x)?.silu()?)?;
        let spatial = |v: Tensor| v.unsqueeze(2)?.unsqueeze(3);
        let context_proj = |emb: &Option<Linear>| -> Result<Option<Tensor>> {
            match (emb, c) {
                (Some(lin), Some(c)) => Ok(Some(lin.forward(&c.silu()?)?)),
                (Some(_), None) => {
                    candle_core::bail!("context-conditional residual block called without context")
                }
                (None, _) => Ok(None),
            }
        };
        let h = match &self.conditioning {
            ResidualConditioning::ScaleShift { scale_emb, shift_emb, norm2, context_emb, multiplicative_context } => {
                let mut emb = self.time_emb.forward(&t_emb.silu()?)?;
                let ctx = context_proj(context_emb)?;
                if let (Some(ctx), false) = (&ctx, *multiplicative_context) {
                    emb = (emb + ctx)?;
                }
                let scale = spatial(scale_emb.forward(&emb)?)?;
                let shift = spatial(shift_emb.forward(&emb)?)?;
                let mut h = norm2.forward(&h)?.broadcast_mul(&(scale + 1.0)?)?.broadcast_add(&shift)?;
                if let (Some(ctx), true) = (ctx, *multiplicative_context) {
                    h = h.broadcast_mul(&spatial(ctx)?)?;
                }
                h
            }
            ResidualConditioning::Additive { norm2, context_emb } => {
                let mut h = h.broadcast_add(&spatial(self.time_emb.forward(&t_emb.silu()?)?)?)?;
                if let Some(ctx) = context_proj(context_emb)? {
                    h = h.broadcast_add(&spatial(ctx)?)?;
                }
                norm2.forward(&h)?
            }
        };
        let h = self.conv2.forward(&h.silu()?)?;
        match &self.shortcut {
            Some(s) => h + s.forward(x)?,
            None => h + x,
        }
    }
}

/// `MultiHeadAttention` with 1×1 Conv1d projections on `[B, C, L]` sequences. Heads are
/// contiguous channel chunks; q and k are both scaled by `head_channels^(-1/4)`.
#[derive(Clone, Debug)]
pub struct MultiHeadAttention {
    to_q: Pointwise,
    to_k: Pointwise,
    to_v: Pointwise,
    proj_out: Pointwise,
    n_heads: usize,
    head_channels: usize,
}

impl MultiHeadAttention {
    fn new(in_channels: usize, kv_channels: usize, n_heads: usize, head_channels: usize, vb: VarBuilder) -> Result<Self> {
        let inner = n_heads * head_channels;
        Ok(Self {
            to_q: Pointwise::conv1d(in_channels, inner, vb.pp("to_q"))?,
            to_k: Pointwise::conv1d(kv_channels, inner, vb.pp("to_k"))?,
            to_v: Pointwise::conv1d(kv_channels, inner, vb.pp("to_v"))?,
            proj_out: Pointwise::conv1d(inner, in_channels, vb.pp("proj_out"))?,
            n_heads,
            head_channels,
        })
    }

    /// Attends from `x` (`[B, C, Lq]`) to `c` (`[B, C_kv, Lk]`, `x` itself for self-attention).
    pub fn forward(&self, x: &Tensor, c: Option<&Tensor>) -> Result<Tensor> {
        let c = c.unwrap_or(x);
        let (b, _, lq) = x.dims3()?;
        let lk = c.dim(2)?;
        let (h, ch) = (self.n_heads, self.head_channels);
        let scale = 1.0 / (ch as f64).sqrt().sqrt();
        let q = (self.to_q.forward(x)? * scale)?.reshape((b * h, ch, lq))?;
        let k = (self.to_k.forward(c)? * scale)?.reshape((b * h, ch, lk))?;
        let v = self.to_v.forward(c)?.reshape((b * h, ch, lk))?;
        // weight[b, t, s] = Σ_c q[b, c, t] k[b, c, s]
        let weight = q.transpose(1, 2)?.contiguous()?.matmul(&k)?;
        let weight = softmax_last(&weight)?;
        // a[b, c, t] = Σ_s weight[b, t, s] v[b, c, s]
        let a = v.matmul(&weight.transpose(1, 2)?.contiguous()?)?;
        self.proj_out.forward(&a.reshape((b, h * ch, lq))?)
    }
}

/// `SpatialEmbeddingCrossAttentionBlock`: self-attention over pixels, cross-attention to context
/// tokens, channel feed-forward, all pre-normed by one shared `x_norm`, with residual connections.
#[derive(Clone, Debug)]
pub struct CrossAttentionBlock {
    x_proj_in: crate::conv::Conv2d,
    x_proj_out: crate::conv::Conv2d,
    self_attention: MultiHeadAttention,
    c_proj_in: Linear,
    cross_attention: MultiHeadAttention,
    x_norm: GroupNorm,
    c_norm: GroupNorm,
    ff_in: Pointwise,
    ff_out: Pointwise,
    context_dim: usize,
    context_tokens: usize,
}

impl CrossAttentionBlock {
    fn new(in_channels: usize, context_dim: usize, n_heads: usize, head_channels: usize, vb: VarBuilder) -> Result<Self> {
        let inner = n_heads * head_channels;
        let d = head_channels;
        Ok(Self {
            x_proj_in: conv2d(in_channels, inner, 1, 1, 0, vb.pp("x_proj_in"))?,
            x_proj_out: conv2d(inner, in_channels, 1, 1, 0, vb.pp("x_proj_out"))?,
            self_attention: MultiHeadAttention::new(inner, inner, n_heads, head_channels, vb.pp("self_attention"))?,
            c_proj_in: candle_nn::linear(context_dim, context_dim * d, vb.pp("c_proj_in"))?,
            cross_attention: MultiHeadAttention::new(inner, context_dim, n_heads, head_channels, vb.pp("cross_attention"))?,
            x_norm: group_norm(GN_GROUPS, inner, GN_EPS, vb.pp("x_norm"))?,
            c_norm: group_norm(GN_GROUPS, context_dim, GN_EPS, vb.pp("c_norm"))?,
            ff_in: Pointwise::linear(inner, inner * 4, vb.pp("ff").pp("0"))?,
            ff_out: Pointwise::linear(inner * 4, inner, vb.pp("ff").pp("2"))?,
            context_dim,
            context_tokens: d,
        })
    }

    fn forward(&self, x: &Tensor, c: &Tensor) -> Result<Tensor> {
        let (b, _, h, w) = x.dims4()?;
        let x1 = self.x_proj_in.forward(x)?;
        let inner = x1.dim(1)?;
        let x1 = x1.reshape((b, inner, h * w))?;
        let cc = self.c_proj_in.forward(c)?.reshape((b, self.context_dim, self.context_tokens))?;
        let cc = self.c_norm.forward(&cc)?;
        let x1 = (self.self_attention.forward(&self.x_norm.forward(&x1)?, None)? + &x1)?;
        let x1 = (self.cross_attention.forward(&self.x_norm.forward(&x1)?, Some(&cc))? + &x1)?;
        let ff = self.ff_out.forward(&self.ff_in.forward(&self.x_norm.forward(&x1)?)?.gelu_erf()?)?;
        let x1 = (ff + &x1)?.reshape((b, inner, h, w))?;
        self.x_proj_out.forward(&x1)? + x
    }
}

/// `SpatialSelfAttentionBlock`: GroupNorm then multi-head self-attention over pixels, residual.
#[derive(Clone, Debug)]
pub struct SelfAttentionBlock {
    norm: GroupNorm,
    attention: MultiHeadAttention,
}

impl SelfAttentionBlock {
    fn new(in_channels: usize, n_heads: usize, head_channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm: group_norm(GN_GROUPS, in_channels, GN_EPS, vb.pp("norm"))?,
            attention: MultiHeadAttention::new(in_channels, in_channels, n_heads, head_channels, vb.pp("attention"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let y = self.norm.forward(x)?.reshape((b, c, h * w))?;
        self.attention.forward(&y, None)?.reshape((b, c, h, w))? + x
    }
}

/// The attention flavour of a block.
#[derive(Clone, Debug)]
enum Attention {
    Cross(Box<CrossAttentionBlock>),
    SelfOnly(SelfAttentionBlock),
}

impl Attention {
    fn new(cfg: &UNetConfig, channels: usize, vb: VarBuilder) -> Result<Self> {
        let n_heads = if cfg.attention_heads <= 0 { channels / cfg.attention_head_channels } else { cfg.attention_heads as usize };
        if cfg.condition_type == ConditionType::Ca && cfg.use_context() {
            Ok(Self::Cross(Box::new(CrossAttentionBlock::new(channels, cfg.context_channels, n_heads, cfg.attention_head_channels, vb)?)))
        } else {
            Ok(Self::SelfOnly(SelfAttentionBlock::new(channels, n_heads, cfg.attention_head_channels, vb)?))
        }
    }

    fn forward(&self, x: &Tensor, c: Option<&Tensor>) -> Result<Tensor> {
        match (self, c) {
            (Self::Cross(block), Some(c)) => block.forward(x, c),
            (Self::Cross(_), None) => {
                candle_core::bail!("cross-attention block called without context")
            }
            (Self::SelfOnly(block), _) => block.forward(x),
        }
    }
}

/// A down/up-path module.
#[derive(Clone, Debug)]
enum Stage {
    /// `DownBlock` / `UpBlock`: residual block, optional attention.
    Block { res: Box<ResidualBlock>, attn: Option<Attention> },
    /// `Downsample`: 3×3 conv, stride 2, padding 1.
    Down(crate::conv::Conv2d),
    /// `Upsample`: ConvTranspose2d 4×4, stride 2, padding 1.
    Up(crate::conv::ConvTranspose2d),
}

impl Stage {
    fn block(cfg: &UNetConfig, in_ch: usize, out_ch: usize, attention: bool, vb: VarBuilder) -> Result<Self> {
        let res = Box::new(ResidualBlock::new(cfg, in_ch, out_ch, vb.pp("res"))?);
        let attn = if attention { Some(Attention::new(cfg, out_ch, vb.pp("attn"))?) } else { None };
        Ok(Self::Block { res, attn })
    }

    fn forward(&self, x: &Tensor, t_emb: &Tensor, c: Option<&Tensor>) -> Result<Tensor> {
        match self {
            Self::Block { res, attn } => {
                let x = res.forward(x, t_emb, c)?;
                match attn {
                    Some(a) => a.forward(&x, c),
                    None => Ok(x),
                }
            }
            Self::Down(conv) => conv.forward(x),
            Self::Up(conv) => conv.forward(x),
        }
    }
}

/// How the context enters the network.
#[derive(Clone, Debug)]
struct ContextInput {
    context_emb: Linear,
    empty: Tensor,
    dropout_probability: f64,
}

/// IDiff-Face's denoiser `eps_model(x_t, t, context, dropout_mask)`.
#[derive(Clone, Debug)]
pub struct ConditionalUNet {
    config: UNetConfig,
    image_proj: crate::conv::Conv2d,
    time_emb: TimeEmbedding,
    context: Option<ContextInput>,
    down: Vec<Stage>,
    middle: (ResidualBlock, Attention, ResidualBlock),
    up: Vec<Stage>,
    norm: GroupNorm,
    final_conv: crate::conv::Conv2d,
}

impl ConditionalUNet {
    /// Builds the network; `vb` is rooted at the model (keys without `eps_model.`).
    pub fn new(config: &UNetConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let cfg = config;
        let image_proj = conv2d(cfg.input_channels, cfg.initial_channels, 3, 1, 1, vb.pp("image_proj"))?;
        let time_emb = TimeEmbedding::new(cfg.time_channels(), vb.pp("time_emb"))?;
        let context = if cfg.use_context() {
            let context_emb = candle_nn::linear(cfg.context_input_channels, cfg.context_channels, vb.pp("context_emb"))?;
            let empty = if cfg.learn_empty_context {
                vb.get(cfg.context_channels, "empty_context_embedding")?
            } else {
                Tensor::zeros(cfg.context_channels, vb.dtype(), vb.device())?
            };
            Some(ContextInput { context_emb, empty, dropout_probability: cfg.context_dropout_probability })
        } else {
            None
        };

        let levels = cfg.channel_multipliers.len();
        let mut down = Vec::new();
        let mut in_ch = cfg.initial_channels;
        let mut out_ch = in_ch;
        for i in 0..levels {
            out_ch = in_ch * cfg.channel_multipliers[i];
            for _ in 0..cfg.n_blocks_per_resolution {
                down.push(Stage::block(cfg, in_ch, out_ch, cfg.is_attention[i], vb.pp("down").pp(down.len()))?);
                in_ch = out_ch;
            }
            if i < levels - 1 {
                down.push(Stage::Down(conv2d(in_ch, in_ch, 3, 2, 1, vb.pp("down").pp(down.len()).pp("conv"))?));
            }
        }

        let mvb = vb.pp("middle");
        let middle = (
            ResidualBlock::new(cfg, out_ch, out_ch, mvb.pp("res1"))?,
            Attention::new(cfg, out_ch, mvb.pp("attn"))?,
            ResidualBlock::new(cfg, out_ch, out_ch, mvb.pp("res2"))?,
        );

        let mut up = Vec::new();
        let mut in_ch = out_ch;
        for i in (0..levels).rev() {
            let out_ch = in_ch;
            for _ in 0..cfg.n_blocks_per_resolution {
                up.push(Stage::block(cfg, in_ch + out_ch, out_ch, cfg.is_attention[i], vb.pp("up").pp(up.len()))?);
            }
            let out_ch = in_ch / cfg.channel_multipliers[i];
            up.push(Stage::block(cfg, in_ch + out_ch, out_ch, cfg.is_attention[i], vb.pp("up").pp(up.len()))?);
            in_ch = out_ch;
            if i > 0 {
                up.push(Stage::Up(conv_transpose2d(in_ch, in_ch, 4, 2, 1, vb.pp("up").pp(up.len()).pp("conv"))?));
            }
        }

        let norm = group_norm(GN_GROUPS, cfg.initial_channels, GN_EPS, vb.pp("norm"))?;
        let final_conv = conv2d(in_ch, cfg.input_channels, 3, 1, 1, vb.pp("final"))?;
        Ok(Self { config: config.clone(), image_proj, time_emb, context, down, middle, up, norm, final_conv })
    }

    /// The configuration the network was built with.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// The time embedding (`eps_model.time_emb(t)`), exposed for debugging and tests.
    pub fn time_embedding(&self, t: &Tensor) -> Result<Tensor> {
        self.time_emb.forward(t)
    }

    /// The projected context (`eps_model.context_emb(context)`); `None` for unconditional models.
    pub fn context_embedding(&self, context: &Tensor) -> Result<Option<Tensor>> {
        self.context.as_ref().map(|ci| ci.context_emb.forward(context)).transpose()
    }

    /// Predicts the noise in eval mode (context dropout is the identity).
    ///
    /// `x`: `[B, C, H, W]` noisy latent; `t`: `[B]` timesteps (0-based); `context`: `[B, 512]`
    /// identity embeddings or `None` for the empty context (zeros *after* the projection, the
    /// projection's bias is not added); `dropout_mask`: `[B]` u8/bool, rows with 1 use the empty
    /// context.
    pub fn forward(&self, x: &Tensor, t: &Tensor, context: Option<&Tensor>, dropout_mask: Option<&Tensor>) -> Result<Tensor> {
        self.forward_impl(x, t, context, dropout_mask, None)
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
        self.forward_impl(x, t, context, dropout_mask, Some(rng))
    }

    fn context_vectors(
        &self,
        batch: usize,
        context: Option<&Tensor>,
        dropout_mask: Option<&Tensor>,
        rng: Option<&mut KeyedRng>,
    ) -> Result<Option<Tensor>> {
        let Some(ci) = &self.context else {
            return Ok(None);
        };
        let empty = ci.empty.unsqueeze(0)?.broadcast_as((batch, ci.empty.dim(0)?))?;
        let Some(context) = context else {
            return Ok(Some(empty.contiguous()?));
        };
        let mut c = ci.context_emb.forward(context)?;
        if let Some(mask) = dropout_mask {
            let mask = mask.to_dtype(DType::U8)?.reshape((batch, 1))?.broadcast_as(c.shape())?;
            c = mask.where_cond(&empty.to_dtype(c.dtype())?, &c)?;
        }
        if let (Some(rng), p) = (rng, ci.dropout_probability) {
            if p > 0.0 {
                let n = c.elem_count();
                let keep: Vec<f32> = (0..n).map(|_| if rng.chance(p) { 0.0 } else { (1.0 / (1.0 - p)) as f32 }).collect();
                let keep = Tensor::from_vec(keep, c.shape(), c.device())?.to_dtype(c.dtype())?;
                c = (c * keep)?;
            }
        }
        Ok(Some(c))
    }

    fn forward_impl(
        &self,
        x: &Tensor,
        t: &Tensor,
        context: Option<&Tensor>,
        dropout_mask: Option<&Tensor>,
        rng: Option<&mut KeyedRng>,
    ) -> Result<Tensor> {
        let t_emb = self.time_emb.forward(t)?;
        let mut x = self.image_proj.forward(x)?;
        let c = self.context_vectors(x.dim(0)?, context, dropout_mask, rng)?;
        let c = c.as_ref();
        let mut skips = vec![x.clone()];
        for m in &self.down {
            x = m.forward(&x, &t_emb, c)?;
            skips.push(x.clone());
        }
        x = self.middle.0.forward(&x, &t_emb, c)?;
        x = self.middle.1.forward(&x, c)?;
        x = self.middle.2.forward(&x, &t_emb, c)?;
        for m in &self.up {
            x = match m {
                Stage::Up(_) => m.forward(&x, &t_emb, c)?,
                _ => {
                    let Some(s) = skips.pop() else { candle_core::bail!("UNet skip stack exhausted") };
                    m.forward(&Tensor::cat(&[&x, &s], 1)?, &t_emb, c)?
                }
            };
        }
        self.final_conv.forward(&self.norm.forward(&x)?.silu()?)
    }
}

/// Number of scalar parameters of a configuration, computed without allocating the weights.
pub fn parameter_count(config: &UNetConfig) -> crate::Result<usize> {
    let shapes = crate::checkpoint::parameter_shapes(|vb| ConditionalUNet::new(config, vb))?;
    Ok(shapes.iter().map(|(_, s)| s.elem_count()).sum())
}
