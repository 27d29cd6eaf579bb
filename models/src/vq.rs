//! The LDM VQ-f4 first stage (CompVis `Encoder` / `Decoder` / `VectorQuantizer2`) as IDiff-Face
//! ships it: `first_stage_encoder_state_dict.pt` = `encoder.*` + `quant_conv.*`,
//! `first_stage_decoder_state_dict.pt` = `decoder.*` + `post_quant_conv.*` +
//! `quantize.embedding.weight`.
//!
//! GroupNorm(32, eps 1e-6) and Swish everywhere; the encoder's strided downsample pads
//! (left 0, right 1, top 0, bottom 1) and convolves 3×3 / stride 2 without padding; the decoder
//! upsamples nearest ×2 then convolves 3×3; the mid blocks have single-head attention over H·W.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::nn::{Backend, Candle, ConvSpec};

/// Result of the backend `B`'s operations.
type BResult<B, T> = std::result::Result<T, <B as Backend>::Error>;

const GN_EPS: f64 = 1e-6;
const GN_GROUPS: usize = 32;

/// The `ddconfig` of the first stage plus the codebook geometry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VqConfig {
    /// Base channels (`ch`).
    pub ch: usize,
    /// Per-level multipliers (`ch_mult`, not cumulative).
    pub ch_mult: Vec<usize>,
    /// Residual blocks per level (decoder: one more).
    pub num_res_blocks: usize,
    /// Image channels in (`in_channels`).
    pub in_channels: usize,
    /// Image channels out (`out_ch`).
    pub out_ch: usize,
    /// Latent channels (`z_channels`).
    pub z_channels: usize,
    /// Codebook vector width (`embed_dim`).
    pub embed_dim: usize,
    /// Input resolution (`resolution`), used to place `attn_resolutions`.
    pub resolution: usize,
    /// Resolutions with attention blocks inside the levels.
    pub attn_resolutions: Vec<usize>,
}

impl VqConfig {
    /// IDiff-Face's `first_stage_config.yaml` (VQ-f4, 8192 × 3 codebook, 128 px → 3×32×32).
    pub fn vq_f4() -> Self {
        Self {
            ch: 128,
            ch_mult: vec![1, 2, 4],
            num_res_blocks: 2,
            in_channels: 3,
            out_ch: 3,
            z_channels: 3,
            embed_dim: 3,
            resolution: 256,
            attn_resolutions: vec![],
        }
    }
}

/// CompVis `ResnetBlock` without time embedding.
#[derive(Clone, Debug)]
struct ResnetBlock<B: Backend> {
    norm1: B::GroupNorm,
    conv1: B::Conv2d,
    norm2: B::GroupNorm,
    conv2: B::Conv2d,
    nin_shortcut: Option<B::Conv2d>,
}

fn group_norm<B: Backend>(vars: &B::Vars<'_>, name: &str, channels: usize) -> BResult<B, B::GroupNorm> {
    B::load_group_norm(&B::push(vars, name), GN_GROUPS, channels, GN_EPS)
}

fn conv<B: Backend>(vars: &B::Vars<'_>, name: &str, spec: ConvSpec) -> BResult<B, B::Conv2d> {
    B::load_conv2d(&B::push(vars, name), spec)
}

impl<B: Backend> ResnetBlock<B> {
    fn new(c_in: usize, c_out: usize, vars: &B::Vars<'_>) -> BResult<B, Self> {
        Ok(Self {
            norm1: group_norm::<B>(vars, "norm1", c_in)?,
            conv1: conv::<B>(vars, "conv1", ConvSpec::new(c_in, c_out, 3).pad(1))?,
            norm2: group_norm::<B>(vars, "norm2", c_out)?,
            conv2: conv::<B>(vars, "conv2", ConvSpec::new(c_out, c_out, 3).pad(1))?,
            nin_shortcut: if c_in != c_out { Some(conv::<B>(vars, "nin_shortcut", ConvSpec::new(c_in, c_out, 1))?) } else { None },
        })
    }

    fn forward(&self, b: &B, x: &B::Tensor) -> BResult<B, B::Tensor> {
        let h = b.conv2d(&self.conv1, &b.silu(&b.group_norm(&self.norm1, x)?)?)?;
        let h = b.conv2d(&self.conv2, &b.silu(&b.group_norm(&self.norm2, &h)?)?)?;
        match &self.nin_shortcut {
            Some(s) => b.add(&b.conv2d(s, x)?, &h),
            None => b.add(x, &h),
        }
    }
}

/// CompVis `AttnBlock`: single-head self-attention over pixels, scale `C^(-1/2)`.
#[derive(Clone, Debug)]
struct AttnBlock<B: Backend> {
    norm: B::GroupNorm,
    q: B::Conv2d,
    k: B::Conv2d,
    v: B::Conv2d,
    proj_out: B::Conv2d,
    channels: usize,
}

impl<B: Backend> AttnBlock<B> {
    fn new(c: usize, vars: &B::Vars<'_>) -> BResult<B, Self> {
        let one = ConvSpec::new(c, c, 1);
        Ok(Self {
            norm: group_norm::<B>(vars, "norm", c)?,
            q: conv::<B>(vars, "q", one)?,
            k: conv::<B>(vars, "k", one)?,
            v: conv::<B>(vars, "v", one)?,
            proj_out: conv::<B>(vars, "proj_out", one)?,
            channels: c,
        })
    }

    fn forward(&self, b: &B, x: &B::Tensor) -> BResult<B, B::Tensor> {
        let hn = b.group_norm(&self.norm, x)?;
        let q = b.conv2d(&self.q, &hn)?;
        let k = b.conv2d(&self.k, &hn)?;
        let v = b.conv2d(&self.v, &hn)?;
        let q = b.transpose(&b.reshape(&q, &[0, 0, -1])?, &[0, 2, 1])?; // b, hw, c
        let k = b.reshape(&k, &[0, 0, -1])?; // b, c, hw
        let v = b.reshape(&v, &[0, 0, -1])?;
        let weights = b.mul_scalar(&b.matmul(&q, &k)?, (self.channels as f64).powf(-0.5))?; // b, hw_q, hw_k
        let weights = b.softmax_last(&weights)?;
        let out = b.matmul(&v, &b.transpose(&weights, &[0, 2, 1])?)?;
        let out = b.conv2d(&self.proj_out, &b.reshape_like(&out, x)?)?;
        b.add(x, &out)
    }
}

/// A residual block of a level with its optional attention block.
type LevelBlock<B> = (ResnetBlock<B>, Option<AttnBlock<B>>);

/// One encoder/decoder level: residual blocks with optional attention, then a resampler.
#[derive(Clone, Debug)]
struct Level<B: Backend> {
    blocks: Vec<LevelBlock<B>>,
    resample: Option<B::Conv2d>,
}

impl<B: Backend> Level<B> {
    /// Builds `n_blocks` blocks `c_in → c_out` (attention where the level's resolution is listed).
    fn blocks(
        cfg: &VqConfig,
        n_blocks: usize,
        mut c_in: usize,
        c_out: usize,
        res: usize,
        vars: &B::Vars<'_>,
    ) -> BResult<B, Vec<LevelBlock<B>>> {
        let (block_vars, attn_vars) = (B::push(vars, "block"), B::push(vars, "attn"));
        let mut blocks = Vec::with_capacity(n_blocks);
        for j in 0..n_blocks {
            let block = ResnetBlock::new(c_in, c_out, &B::push(&block_vars, &j.to_string()))?;
            c_in = c_out;
            let attn =
                if cfg.attn_resolutions.contains(&res) { Some(AttnBlock::new(c_out, &B::push(&attn_vars, &j.to_string()))?) } else { None };
            blocks.push((block, attn));
        }
        Ok(blocks)
    }

    fn run_blocks(&self, b: &B, mut h: B::Tensor) -> BResult<B, B::Tensor> {
        for (block, attn) in &self.blocks {
            h = block.forward(b, &h)?;
            if let Some(a) = attn {
                h = a.forward(b, &h)?;
            }
        }
        Ok(h)
    }
}

/// Mid block: ResnetBlock → AttnBlock → ResnetBlock.
#[derive(Clone, Debug)]
struct Mid<B: Backend> {
    block_1: ResnetBlock<B>,
    attn_1: AttnBlock<B>,
    block_2: ResnetBlock<B>,
}

impl<B: Backend> Mid<B> {
    fn new(c: usize, vars: &B::Vars<'_>) -> BResult<B, Self> {
        Ok(Self {
            block_1: ResnetBlock::new(c, c, &B::push(vars, "block_1"))?,
            attn_1: AttnBlock::new(c, &B::push(vars, "attn_1"))?,
            block_2: ResnetBlock::new(c, c, &B::push(vars, "block_2"))?,
        })
    }

    fn forward(&self, b: &B, x: &B::Tensor) -> BResult<B, B::Tensor> {
        let h = self.block_1.forward(b, x)?;
        let h = self.attn_1.forward(b, &h)?;
        self.block_2.forward(b, &h)
    }
}

fn check_config<B: Backend>(cfg: &VqConfig) -> BResult<B, ()> {
    if cfg.ch_mult.is_empty() {
        return Err(B::error("VQ config: ch_mult is empty".into()));
    }
    Ok(())
}

/// Encoder + `quant_conv`: image `[B, 3, H, W]` → latent `h` `[B, embed_dim, H/f, W/f]`.
#[derive(Clone, Debug)]
pub struct VqEncoder<B: Backend = Candle> {
    conv_in: B::Conv2d,
    down: Vec<Level<B>>,
    mid: Mid<B>,
    norm_out: B::GroupNorm,
    conv_out: B::Conv2d,
    quant_conv: B::Conv2d,
}

impl<B: Backend> VqEncoder<B> {
    /// Builds on backend `B` from a state dict rooted at the file (`encoder.*`, `quant_conv.*`).
    pub fn build(cfg: &VqConfig, vars: &B::Vars<'_>) -> BResult<B, Self> {
        check_config::<B>(cfg)?;
        let e = B::push(vars, "encoder");
        let levels = cfg.ch_mult.len();
        let mut cur_res = cfg.resolution;
        let mut down = Vec::with_capacity(levels);
        let mut block_in = cfg.ch;
        for i in 0..levels {
            let lvars = B::push(&B::push(&e, "down"), &i.to_string());
            block_in = cfg.ch * if i == 0 { 1 } else { cfg.ch_mult[i - 1] };
            let block_out = cfg.ch * cfg.ch_mult[i];
            let blocks = Level::blocks(cfg, cfg.num_res_blocks, block_in, block_out, cur_res, &lvars)?;
            block_in = block_out;
            let resample = if i != levels - 1 {
                cur_res /= 2;
                // asymmetric zero pad (bottom/right 1) then a stride-2 conv without padding
                Some(conv::<B>(&B::push(&lvars, "downsample"), "conv", ConvSpec::new(block_in, block_in, 3).stride(2).pad_bottom_right(1))?)
            } else {
                None
            };
            down.push(Level { blocks, resample });
        }
        Ok(Self {
            conv_in: conv::<B>(&e, "conv_in", ConvSpec::new(cfg.in_channels, cfg.ch, 3).pad(1))?,
            down,
            mid: Mid::new(block_in, &B::push(&e, "mid"))?,
            norm_out: group_norm::<B>(&e, "norm_out", block_in)?,
            conv_out: conv::<B>(&e, "conv_out", ConvSpec::new(block_in, cfg.z_channels, 3).pad(1))?,
            quant_conv: conv::<B>(vars, "quant_conv", ConvSpec::new(cfg.z_channels, cfg.embed_dim, 1))?,
        })
    }

    /// `quant_conv(encoder(x))` on backend `b`.
    pub fn encode_with(&self, b: &B, x: &B::Tensor) -> BResult<B, B::Tensor> {
        let mut h = b.conv2d(&self.conv_in, x)?;
        for (i, level) in self.down.iter().enumerate() {
            b.scope(&format!("encoder.down.{i}"));
            h = level.run_blocks(b, h)?;
            if let Some(conv) = &level.resample {
                h = b.conv2d(conv, &h)?;
            }
        }
        b.scope("encoder.mid");
        let h = self.mid.forward(b, &h)?;
        b.scope("encoder.out");
        let h = b.conv2d(&self.conv_out, &b.silu(&b.group_norm(&self.norm_out, &h)?)?)?;
        b.conv2d(&self.quant_conv, &h)
    }
}

impl VqEncoder<Candle> {
    /// Builds from a state dict rooted at the file (`encoder.*`, `quant_conv.*`).
    pub fn new(cfg: &VqConfig, vb: VarBuilder) -> Result<Self> {
        Self::build(cfg, &vb)
    }

    /// `quant_conv(encoder(x))` (not quantised, like `VQModelInterface.encode`).
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        self.encode_with(&Candle, x)
    }
}

/// `VectorQuantizer2` (legacy, no remap): nearest codeword per spatial position — the candle
/// implementation of [`Backend::Quantizer`].
#[derive(Clone, Debug)]
pub struct VectorQuantizer {
    embedding: Tensor,
    embedding_sq: Tensor,
}

impl VectorQuantizer {
    /// Loads `embedding.weight` `[n_embed, embed_dim]`.
    pub fn new(n_embed: usize, embed_dim: usize, vb: VarBuilder) -> Result<Self> {
        let embedding = vb.pp("embedding").get((n_embed, embed_dim), "weight")?;
        let embedding_sq = embedding.sqr()?.sum(1)?;
        Ok(Self { embedding, embedding_sq })
    }

    /// Codebook size and vector width.
    pub fn codebook_shape(&self) -> (usize, usize) {
        let d = self.embedding.dims();
        (d[0], d[1])
    }

    /// Code index per position, `[B, H, W]` (u32): `argmin_j ||z||² + ||e_j||² − 2 z·e_j`, the
    /// first index on ties.
    pub fn indices(&self, z: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = z.dims4()?;
        let flat = z.permute((0, 2, 3, 1))?.reshape((b * h * w, c))?;
        let d = flat
            .sqr()?
            .sum_keepdim(1)?
            .broadcast_add(&self.embedding_sq.unsqueeze(0)?)?
            .sub(&(flat.matmul(&self.embedding.t()?)? * 2.0)?)?;
        d.argmin(1)?.reshape((b, h, w))
    }

    /// Quantised latent `z + (e_idx − z)` (the straight-through expression, as the original
    /// evaluates it) and the indices.
    pub fn quantize(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        let idx = self.indices(z)?;
        let (b, h, w) = idx.dims3()?;
        let e = self.embedding.index_select(&idx.flatten_all()?, 0)?; // [BHW, C]
        let c = e.dim(1)?;
        let e = e.reshape((b, h, w, c))?.permute((0, 3, 1, 2))?.contiguous()?;
        let zq = (z + (e - z)?)?;
        Ok((zq, idx))
    }
}

/// `quantize` + `post_quant_conv` + decoder: latent `[B, embed_dim, h, w]` → image.
#[derive(Clone, Debug)]
pub struct VqDecoder<B: Backend = Candle> {
    quantize: B::Quantizer,
    post_quant_conv: B::Conv2d,
    conv_in: B::Conv2d,
    mid: Mid<B>,
    up: Vec<Level<B>>,
    norm_out: B::GroupNorm,
    conv_out: B::Conv2d,
}

impl<B: Backend> VqDecoder<B> {
    /// Builds on backend `B` from a state dict rooted at the file (`decoder.*`,
    /// `post_quant_conv.*`, `quantize.embedding.weight`); `n_embed` is the codebook size (8192
    /// in the official model).
    pub fn build(cfg: &VqConfig, n_embed: usize, vars: &B::Vars<'_>) -> BResult<B, Self> {
        check_config::<B>(cfg)?;
        let d = B::push(vars, "decoder");
        let levels = cfg.ch_mult.len();
        let mut block_in = cfg.ch * cfg.ch_mult[levels - 1];
        let mut cur_res = cfg.resolution >> (levels - 1);
        let conv_in = conv::<B>(&d, "conv_in", ConvSpec::new(cfg.z_channels, block_in, 3).pad(1))?;
        let mid = Mid::new(block_in, &B::push(&d, "mid"))?;
        let mut up = Vec::with_capacity(levels);
        for i in (0..levels).rev() {
            let lvars = B::push(&B::push(&d, "up"), &i.to_string());
            let block_out = cfg.ch * cfg.ch_mult[i];
            let blocks = Level::blocks(cfg, cfg.num_res_blocks + 1, block_in, block_out, cur_res, &lvars)?;
            block_in = block_out;
            let resample = if i != 0 {
                cur_res *= 2;
                Some(conv::<B>(&B::push(&lvars, "upsample"), "conv", ConvSpec::new(block_in, block_in, 3).pad(1))?)
            } else {
                None
            };
            up.push(Level { blocks, resample }); // stored in execution order (deepest first)
        }
        Ok(Self {
            quantize: B::load_quantizer(&B::push(vars, "quantize"), n_embed, cfg.embed_dim)?,
            post_quant_conv: conv::<B>(vars, "post_quant_conv", ConvSpec::new(cfg.embed_dim, cfg.z_channels, 1))?,
            conv_in,
            mid,
            up,
            norm_out: group_norm::<B>(&d, "norm_out", block_in)?,
            conv_out: conv::<B>(&d, "conv_out", ConvSpec::new(block_in, cfg.out_ch, 3).pad(1))?,
        })
    }

    /// The quantiser (codebook).
    pub fn quantizer(&self) -> &B::Quantizer {
        &self.quantize
    }

    /// `decoder(post_quant_conv(quantize(z)))` on backend `b`, with the code indices when the
    /// latent was quantised; `force_not_quantize` skips the quantiser.
    pub fn decode_with(&self, b: &B, z: &B::Tensor, force_not_quantize: bool) -> BResult<B, (B::Tensor, Option<B::Tensor>)> {
        let (z, indices) = if force_not_quantize {
            (z.clone(), None)
        } else {
            b.scope("quantize");
            let (zq, idx) = b.quantize(&self.quantize, z)?;
            (zq, Some(idx))
        };
        b.scope("decoder.in");
        let h = b.conv2d(&self.conv_in, &b.conv2d(&self.post_quant_conv, &z)?)?;
        b.scope("decoder.mid");
        let mut h = self.mid.forward(b, &h)?;
        let levels = self.up.len();
        for (n, level) in self.up.iter().enumerate() {
            b.scope(&format!("decoder.up.{}", levels - 1 - n));
            h = level.run_blocks(b, h)?;
            if let Some(conv) = &level.resample {
                h = b.conv2d(conv, &b.upsample_nearest2x(&h)?)?;
            }
        }
        b.scope("decoder.out");
        let h = b.conv2d(&self.conv_out, &b.silu(&b.group_norm(&self.norm_out, &h)?)?)?;
        Ok((h, indices))
    }
}

impl VqDecoder<Candle> {
    /// Builds from a state dict rooted at the file (`decoder.*`, `post_quant_conv.*`,
    /// `quantize.embedding.weight`); `n_embed` is the codebook size (8192 in the official model).
    pub fn new(cfg: &VqConfig, n_embed: usize, vb: VarBuilder) -> Result<Self> {
        Self::build(cfg, n_embed, &vb)
    }

    /// `decoder(post_quant_conv(quantize(z)))`; `force_not_quantize` skips the quantiser
    /// (IDiff-Face's sampler quantises, i.e. passes `false`).
    pub fn decode(&self, z: &Tensor, force_not_quantize: bool) -> Result<Tensor> {
        Ok(self.decode_with(&Candle, z, force_not_quantize)?.0)
    }
}

/// Encoder and decoder together, implementing [`crate::traits::FirstStage`].
#[derive(Clone, Debug)]
pub struct VqModel {
    /// Image → latent.
    pub encoder: VqEncoder,
    /// Latent → image.
    pub decoder: VqDecoder,
    /// Whether [`crate::traits::FirstStage::decode`] skips the quantiser (default `false`).
    pub force_not_quantize: bool,
}

impl crate::traits::FirstStage for VqModel {
    fn encode(&self, images: &Tensor) -> crate::Result<Tensor> {
        Ok(self.encoder.encode(images)?)
    }

    fn decode(&self, latents: &Tensor) -> crate::Result<Tensor> {
        Ok(self.decoder.decode(latents, self.force_not_quantize)?)
    }
}
