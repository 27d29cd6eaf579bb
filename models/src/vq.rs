//! The LDM VQ-f4 first stage (CompVis `Encoder` / `Decoder` / `VectorQuantizer2`) as IDiff-Face
//! ships it: `first_stage_encoder_state_dict.pt` = `encoder.*` + `quant_conv.*`,
//! `first_stage_decoder_state_dict.pt` = `decoder.*` + `post_quant_conv.*` +
//! `quantize.embedding.weight`.
//!
//! GroupNorm(32, eps 1e-6) and Swish everywhere; the encoder's strided downsample pads
//! (left 0, right 1, top 0, bottom 1) and convolves 3×3 / stride 2 without padding; the decoder
//! upsamples nearest ×2 then convolves 3×3; the mid blocks have single-head attention over H·W.

use crate::channel::GroupNorm;
use crate::conv::Conv2d;
use candle_core::{Module, Result, Tensor, D};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::layers::{conv2d, group_norm};

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
struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    conv2: Conv2d,
    nin_shortcut: Option<Conv2d>,
}

impl ResnetBlock {
    fn new(c_in: usize, c_out: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm1: group_norm(GN_GROUPS, c_in, GN_EPS, vb.pp("norm1"))?,
            conv1: conv2d(c_in, c_out, 3, 1, 1, vb.pp("conv1"))?,
            norm2: group_norm(GN_GROUPS, c_out, GN_EPS, vb.pp("norm2"))?,
            conv2: conv2d(c_out, c_out, 3, 1, 1, vb.pp("conv2"))?,
            nin_shortcut: if c_in != c_out { Some(conv2d(c_in, c_out, 1, 1, 0, vb.pp("nin_shortcut"))?) } else { None },
        })
    }
}

impl Module for ResnetBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward(x)?.silu()?)?;
        let h = self.conv2.forward(&self.norm2.forward(&h)?.silu()?)?;
        match &self.nin_shortcut {
            Some(s) => s.forward(x)? + h,
            None => x + h,
        }
    }
}

/// CompVis `AttnBlock`: single-head self-attention over pixels, scale `C^(-1/2)`.
#[derive(Clone, Debug)]
struct AttnBlock {
    norm: GroupNorm,
    q: Conv2d,
    k: Conv2d,
    v: Conv2d,
    proj_out: Conv2d,
}

impl AttnBlock {
    fn new(c: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm: group_norm(GN_GROUPS, c, GN_EPS, vb.pp("norm"))?,
            q: conv2d(c, c, 1, 1, 0, vb.pp("q"))?,
            k: conv2d(c, c, 1, 1, 0, vb.pp("k"))?,
            v: conv2d(c, c, 1, 1, 0, vb.pp("v"))?,
            proj_out: conv2d(c, c, 1, 1, 0, vb.pp("proj_out"))?,
        })
    }
}

impl Module for AttnBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let hn = self.norm.forward(x)?;
        let q = self.q.forward(&hn)?.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous()?; // b, hw, c
        let k = self.k.forward(&hn)?.reshape((b, c, h * w))?; // b, c, hw
        let v = self.v.forward(&hn)?.reshape((b, c, h * w))?;
        let weights = (q.matmul(&k)? * (c as f64).powf(-0.5))?; // b, hw_q, hw_k
        let weights = candle_nn::ops::softmax(&weights, D::Minus1)?;
        let out = v.matmul(&weights.transpose(1, 2)?.contiguous()?)?.reshape((b, c, h, w))?;
        x + self.proj_out.forward(&out)?
    }
}

/// One encoder/decoder level: residual blocks with optional attention, then a resampler.
#[derive(Clone, Debug)]
struct Level {
    blocks: Vec<(ResnetBlock, Option<AttnBlock>)>,
    resample: Option<Conv2d>,
}

impl Level {
    fn run_blocks(&self, mut h: Tensor) -> Result<Tensor> {
        for (block, attn) in &self.blocks {
            h = block.forward(&h)?;
            if let Some(a) = attn {
                h = a.forward(&h)?;
            }
        }
        Ok(h)
    }
}

/// Mid block: ResnetBlock → AttnBlock → ResnetBlock.
#[derive(Clone, Debug)]
struct Mid {
    block_1: ResnetBlock,
    attn_1: AttnBlock,
    block_2: ResnetBlock,
}

impl Mid {
    fn new(c: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            block_1: ResnetBlock::new(c, c, vb.pp("block_1"))?,
            attn_1: AttnBlock::new(c, vb.pp("attn_1"))?,
            block_2: ResnetBlock::new(c, c, vb.pp("block_2"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.block_2.forward(&self.attn_1.forward(&self.block_1.forward(x)?)?)
    }
}

/// Encoder + `quant_conv`: image `[B, 3, H, W]` → latent `h` `[B, embed_dim, H/f, W/f]`.
#[derive(Clone, Debug)]
pub struct VqEncoder {
    conv_in: Conv2d,
    down: Vec<Level>,
    mid: Mid,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    quant_conv: Conv2d,
}

impl VqEncoder {
    /// Builds from a state dict rooted at the file (`encoder.*`, `quant_conv.*`).
    pub fn new(cfg: &VqConfig, vb: VarBuilder) -> Result<Self> {
        let e = vb.pp("encoder");
        let levels = cfg.ch_mult.len();
        let mut cur_res = cfg.resolution;
        let mut down = Vec::with_capacity(levels);
        let mut block_in = cfg.ch;
        for i in 0..levels {
            let lvb = e.pp("down").pp(i);
            block_in = cfg.ch * if i == 0 { 1 } else { cfg.ch_mult[i - 1] };
            let block_out = cfg.ch * cfg.ch_mult[i];
            let mut blocks = Vec::new();
            for j in 0..cfg.num_res_blocks {
                let block = ResnetBlock::new(block_in, block_out, lvb.pp("block").pp(j))?;
                block_in = block_out;
                let attn =
                    if cfg.attn_resolutions.contains(&cur_res) { Some(AttnBlock::new(block_in, lvb.pp("attn").pp(j))?) } else { None };
                blocks.push((block, attn));
            }
            let resample = if i != levels - 1 {
                cur_res /= 2;
                Some(conv2d(block_in, block_in, 3, 2, 0, lvb.pp("downsample").pp("conv"))?)
            } else {
                None
            };
            down.push(Level { blocks, resample });
        }
        Ok(Self {
            conv_in: conv2d(cfg.in_channels, cfg.ch, 3, 1, 1, e.pp("conv_in"))?,
            down,
            mid: Mid::new(block_in, e.pp("mid"))?,
            norm_out: group_norm(GN_GROUPS, block_in, GN_EPS, e.pp("norm_out"))?,
            conv_out: conv2d(block_in, cfg.z_channels, 3, 1, 1, e.pp("conv_out"))?,
            quant_conv: conv2d(cfg.z_channels, cfg.embed_dim, 1, 1, 0, vb.pp("quant_conv"))?,
        })
    }

    /// `quant_conv(encoder(x))` (not quantised, like `VQModelInterface.encode`).
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(x)?;
        for level in &self.down {
            h = level.run_blocks(h)?;
            if let Some(conv) = &level.resample {
                // asymmetric zero pad (0, 1, 0, 1) then a stride-2 conv without padding
                h = conv.forward(&h.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?)?;
            }
        }
        let h = self.mid.forward(&h)?;
        let h = self.conv_out.forward(&self.norm_out.forward(&h)?.silu()?)?;
        self.quant_conv.forward(&h)
    }
}

/// `VectorQuantizer2` (legacy, no remap): nearest codeword per spatial position.
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
pub struct VqDecoder {
    quantize: VectorQuantizer,
    post_quant_conv: Conv2d,
    conv_in: Conv2d,
    mid: Mid,
    up: Vec<Level>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl VqDecoder {
    /// Builds from a state dict rooted at the file (`decoder.*`, `post_quant_conv.*`,
    /// `quantize.embedding.weight`); `n_embed` is the codebook size (8192 in the official model).
    pub fn new(cfg: &VqConfig, n_embed: usize, vb: VarBuilder) -> Result<Self> {
        let d = vb.pp("decoder");
        let levels = cfg.ch_mult.len();
        let mut block_in = cfg.ch * cfg.ch_mult[levels - 1];
        let mut cur_res = cfg.resolution >> (levels - 1);
        let conv_in = conv2d(cfg.z_channels, block_in, 3, 1, 1, d.pp("conv_in"))?;
        let mid = Mid::new(block_in, d.pp("mid"))?;
        let mut up: Vec<Level> = Vec::with_capacity(levels);
        for i in (0..levels).rev() {
            let lvb = d.pp("up").pp(i);
            let block_out = cfg.ch * cfg.ch_mult[i];
            let mut blocks = Vec::new();
            for j in 0..=cfg.num_res_blocks {
                let block = ResnetBlock::new(block_in, block_out, lvb.pp("block").pp(j))?;
                block_in = block_out;
                let attn =
                    if cfg.attn_resolutions.contains(&cur_res) { Some(AttnBlock::new(block_in, lvb.pp("attn").pp(j))?) } else { None };
                blocks.push((block, attn));
            }
            let resample = if i != 0 {
                cur_res *= 2;
                Some(conv2d(block_in, block_in, 3, 1, 1, lvb.pp("upsample").pp("conv"))?)
            } else {
                None
            };
            up.push(Level { blocks, resample }); // stored in execution order (deepest first)
        }
        Ok(Self {
            quantize: VectorQuantizer::new(n_embed, cfg.embed_dim, vb.pp("quantize"))?,
            post_quant_conv: conv2d(cfg.embed_dim, cfg.z_channels, 1, 1, 0, vb.pp("post_quant_conv"))?,
            conv_in,
            mid,
            up,
            norm_out: group_norm(GN_GROUPS, block_in, GN_EPS, d.pp("norm_out"))?,
            conv_out: conv2d(block_in, cfg.out_ch, 3, 1, 1, d.pp("conv_out"))?,
        })
    }

    /// The quantiser (codebook).
    pub fn quantizer(&self) -> &VectorQuantizer {
        &self.quantize
    }

    /// `decoder(post_quant_conv(quantize(z)))`; `force_not_quantize` skips the quantiser
    /// (IDiff-Face's sampler quantises, i.e. passes `false`).
    pub fn decode(&self, z: &Tensor, force_not_quantize: bool) -> Result<Tensor> {
        let z = if force_not_quantize { z.clone() } else { self.quantize.quantize(z)?.0 };
        let mut h = self.conv_in.forward(&self.post_quant_conv.forward(&z)?)?;
        h = self.mid.forward(&h)?;
        for level in &self.up {
            h = level.run_blocks(h)?;
            if let Some(conv) = &level.resample {
                let (_, _, hh, ww) = h.dims4()?;
                h = conv.forward(&h.upsample_nearest2d(hh * 2, ww * 2)?)?;
            }
        }
        self.conv_out.forward(&self.norm_out.forward(&h)?.silu()?)
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
