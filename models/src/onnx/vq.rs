//! Emitters of the VQ-f4 first stage ([`crate::vq`]): the encoder (`image` → `latent`, including
//! `quant_conv`) and the decoder (`z` → `image`, including the nearest-codeword quantiser and
//! `post_quant_conv`).
//!
//! The quantiser is expressed with standard operators: per spatial position (channels-last
//! flatten) `d_j = ||z||² + ||e_j||² − 2 z·e_j` by `ReduceSum` + `MatMul`, `ArgMin` (first index on
//! ties, like `torch.argmin`), `Gather` from the codebook, then the straight-through
//! `z + (e − z)` as the native code evaluates it. The quantising decoder also outputs the code
//! `indices` `[batch, h, w]` (int64). Spatial sizes are symbolic (`height`, `width`), the batch
//! is `batch`.

use super::builder::{attr_int, Dim, ElemType, GraphBuilder, Value};
use super::layers::{conv2d, conv2d_same, group_norm};
use super::weights::Weights;
use super::{finish_model, CompileOptions, OnnxError};
use crate::checkpoint::StateDict;
use crate::vq::VqConfig;

const GN_EPS: f32 = 1e-6;
const GN_GROUPS: usize = 32;

fn dims4(c: usize, latent: bool) -> [Dim; 4] {
    let (h, w) = if latent { ("latent_height", "latent_width") } else { ("height", "width") };
    [Dim::Symbol("batch"), Dim::Fixed(c as i64), Dim::Symbol(h), Dim::Symbol(w)]
}

fn resnet_block(g: &mut GraphBuilder, w: &Weights<'_>, key: &str, x: &Value, c_in: usize, c_out: usize) -> Result<Value, OnnxError> {
    let h = group_norm(g, w, &format!("{key}.norm1"), x, (GN_GROUPS, c_in), GN_EPS, 4)?;
    let h = g.silu(&h);
    let h = conv2d_same(g, w, &format!("{key}.conv1"), &h, (c_in, c_out, 3), 1, 1)?;
    let h = group_norm(g, w, &format!("{key}.norm2"), &h, (GN_GROUPS, c_out), GN_EPS, 4)?;
    let h = g.silu(&h);
    let h = conv2d_same(g, w, &format!("{key}.conv2"), &h, (c_out, c_out, 3), 1, 1)?;
    let shortcut = if c_in != c_out { conv2d_same(g, w, &format!("{key}.nin_shortcut"), x, (c_in, c_out, 1), 1, 0)? } else { x.clone() };
    Ok(g.add(&shortcut, &h))
}

fn attn_block(g: &mut GraphBuilder, w: &Weights<'_>, key: &str, x: &Value, c: usize) -> Result<Value, OnnxError> {
    let hn = group_norm(g, w, &format!("{key}.norm"), x, (GN_GROUPS, c), GN_EPS, 4)?;
    let q = conv2d_same(g, w, &format!("{key}.q"), &hn, (c, c, 1), 1, 0)?;
    let k = conv2d_same(g, w, &format!("{key}.k"), &hn, (c, c, 1), 1, 0)?;
    let v = conv2d_same(g, w, &format!("{key}.v"), &hn, (c, c, 1), 1, 0)?;
    let q = g.reshape(&q, &[0, 0, -1]);
    let q = g.transpose(&q, &[0, 2, 1]); // b, hw, c
    let k = g.reshape(&k, &[0, 0, -1]); // b, c, hw
    let v = g.reshape(&v, &[0, 0, -1]);
    let weights = g.matmul(&q, &k);
    let weights = g.scale(&weights, (c as f64).powf(-0.5) as f32);
    let weights = g.softmax(&weights, -1);
    let wt = g.transpose(&weights, &[0, 2, 1]);
    let out = g.matmul(&v, &wt);
    let out = g.reshape_like(&out, x);
    let out = conv2d_same(g, w, &format!("{key}.proj_out"), &out, (c, c, 1), 1, 0)?;
    Ok(g.add(x, &out))
}

fn mid(g: &mut GraphBuilder, w: &Weights<'_>, key: &str, x: &Value, c: usize) -> Result<Value, OnnxError> {
    g.set_scope(key);
    let h = resnet_block(g, w, &format!("{key}.block_1"), x, c, c)?;
    let h = attn_block(g, w, &format!("{key}.attn_1"), &h, c)?;
    resnet_block(g, w, &format!("{key}.block_2"), &h, c, c)
}

fn check_config(cfg: &VqConfig) -> Result<(), OnnxError> {
    if cfg.ch_mult.is_empty() {
        return Err(OnnxError::Config("VQ config: ch_mult is empty".into()));
    }
    Ok(())
}

/// Compiles the encoder file (`encoder.*` + `quant_conv.*`): input `image` `[batch, 3, H, W]`,
/// output `latent` `[batch, embed_dim, H/f, W/f]` (not quantised, like `VQEncoderInterface`).
pub fn compile_vq_encoder(dict: &StateDict, cfg: &VqConfig, options: &CompileOptions) -> Result<Vec<u8>, OnnxError> {
    check_config(cfg)?;
    let w = Weights::new(dict, options.prefix.as_deref(), "encoder.conv_in.weight")?;
    let mut g = GraphBuilder::new("vq_encoder");
    let x = g.input("image", ElemType::F32, &dims4(cfg.in_channels, false))?;
    let levels = cfg.ch_mult.len();
    let mut h = conv2d_same(&mut g, &w, "encoder.conv_in", &x, (cfg.in_channels, cfg.ch, 3), 1, 1)?;
    let mut cur_res = cfg.resolution;
    let mut block_in = cfg.ch;
    for i in 0..levels {
        let key = format!("encoder.down.{i}");
        g.set_scope(&key);
        block_in = cfg.ch * if i == 0 { 1 } else { cfg.ch_mult[i - 1] };
        let block_out = cfg.ch * cfg.ch_mult[i];
        for j in 0..cfg.num_res_blocks {
            h = resnet_block(&mut g, &w, &format!("{key}.block.{j}"), &h, block_in, block_out)?;
            block_in = block_out;
            if cfg.attn_resolutions.contains(&cur_res) {
                h = attn_block(&mut g, &w, &format!("{key}.attn.{j}"), &h, block_in)?;
            }
        }
        if i != levels - 1 {
            cur_res /= 2;
            // zero pad (left 0, right 1, top 0, bottom 1), then 3×3 stride 2 without padding
            h = conv2d(&mut g, &w, &format!("{key}.downsample.conv"), &h, (block_in, block_in, 3), 2, [0, 0, 1, 1], true)?;
        }
    }
    let h = mid(&mut g, &w, "encoder.mid", &h, block_in)?;
    g.set_scope("encoder.out");
    let h = group_norm(&mut g, &w, "encoder.norm_out", &h, (GN_GROUPS, block_in), GN_EPS, 4)?;
    let h = g.silu(&h);
    let h = conv2d_same(&mut g, &w, "encoder.conv_out", &h, (block_in, cfg.z_channels, 3), 1, 1)?;
    let h = conv2d_same(&mut g, &w, "quant_conv", &h, (cfg.z_channels, cfg.embed_dim, 1), 1, 0)?;
    g.output(&h, "latent", ElemType::F32, &dims4(cfg.embed_dim, true))?;
    let config_json = serde_json::to_string(cfg).map_err(|e| OnnxError::Config(e.to_string()))?;
    finish_model(
        g,
        &w,
        options,
        "VQ-f4 encoder + quant_conv: image [B,3,H,W] in -1..1 -> latent [B,embed_dim,H/f,W/f]",
        &[("idflow.model", "vq_encoder".into()), ("idflow.config", config_json)],
    )
}

/// The nearest-codeword quantiser; returns `(z_q, indices [B, h, w])`.
fn quantize(g: &mut GraphBuilder, w: &Weights<'_>, z: &Value, n_embed: usize, dim: usize) -> Result<(Value, Value), OnnxError> {
    g.set_scope("quantize");
    let key = "quantize.embedding.weight";
    let codebook = w.values(key, &[n_embed, dim])?;
    let e = g.initializer(key, &[n_embed, dim], &codebook)?;
    let mut et = vec![0f32; n_embed * dim];
    let mut e_sq = vec![0f32; n_embed];
    for j in 0..n_embed {
        for c in 0..dim {
            let v = codebook[j * dim + c];
            et[c * n_embed + j] = v;
            e_sq[j] += v * v;
        }
    }
    let et = g.initializer("quantize.embedding.weight.T", &[dim, n_embed], &et)?;
    let e_sq = g.initializer("quantize.embedding.sq_norm", &[1, n_embed], &e_sq)?;
    let zt = g.transpose(z, &[0, 2, 3, 1]); // b, h, w, c
    let flat = g.reshape(&zt, &[-1, dim as i64]);
    let sq = g.mul(&flat, &flat);
    let axes = g.const_i64(&[1]);
    let sq = g.node("ReduceSum", &[&sq, &axes], vec![attr_int("keepdims", 1)]);
    let d = g.add(&sq, &e_sq);
    let dot = g.matmul(&flat, &et);
    let dot2 = g.scale(&dot, 2.0);
    let d = g.sub(&d, &dot2);
    let idx = g.node("ArgMin", &[&d], vec![attr_int("axis", 1), attr_int("keepdims", 0), attr_int("select_last_index", 0)]);
    let picked = g.node("Gather", &[&e, &idx], vec![attr_int("axis", 0)]);
    let picked = g.reshape_like(&picked, &zt);
    let picked = g.transpose(&picked, &[0, 3, 1, 2]);
    let diff = g.sub(&picked, z);
    let zq = g.add(z, &diff);
    let bhw = g.node("Shape", &[&zt], vec![attr_int("start", 0), attr_int("end", 3)]);
    let indices = g.node("Reshape", &[&idx, &bhw], vec![]);
    Ok((zq, indices))
}

/// Compiles the decoder file (`decoder.*` + `post_quant_conv.*` + `quantize.embedding.weight`):
/// input `z` `[batch, embed_dim, h, w]`, output `image` `[batch, out_ch, h·f, w·f]`; with
/// `quantize = true` the latent is first snapped to the codebook and the code `indices` are a
/// second output (IDiff-Face's sampler decodes that way); `false` = `force_not_quantize`.
pub fn compile_vq_decoder(dict: &StateDict, cfg: &VqConfig, quantize_latent: bool, options: &CompileOptions) -> Result<Vec<u8>, OnnxError> {
    check_config(cfg)?;
    let w = Weights::new(dict, options.prefix.as_deref(), "decoder.conv_in.weight")?;
    let codebook_key = format!("{}quantize.embedding.weight", w.prefix());
    let n_embed = dict
        .get(&codebook_key)
        .ok_or_else(|| OnnxError::Weight {
            source_name: dict.source().into(),
            key: codebook_key.clone(),
            reason: "no codebook in the decoder state dict".into(),
        })?
        .dims()
        .first()
        .copied()
        .unwrap_or(0);
    let mut g = GraphBuilder::new("vq_decoder");
    let z = g.input("z", ElemType::F32, &dims4(cfg.embed_dim, true))?;
    let (zq, indices) = if quantize_latent {
        let (zq, idx) = quantize(&mut g, &w, &z, n_embed, cfg.embed_dim)?;
        (zq, Some(idx))
    } else {
        w.touch("quantize.embedding.weight");
        (z.clone(), None)
    };
    let levels = cfg.ch_mult.len();
    let mut block_in = cfg.ch * cfg.ch_mult[levels - 1];
    let mut cur_res = cfg.resolution >> (levels - 1);
    g.set_scope("decoder.in");
    let h = conv2d_same(&mut g, &w, "post_quant_conv", &zq, (cfg.embed_dim, cfg.z_channels, 1), 1, 0)?;
    let h = conv2d_same(&mut g, &w, "decoder.conv_in", &h, (cfg.z_channels, block_in, 3), 1, 1)?;
    let mut h = mid(&mut g, &w, "decoder.mid", &h, block_in)?;
    for i in (0..levels).rev() {
        let key = format!("decoder.up.{i}");
        g.set_scope(&key);
        let block_out = cfg.ch * cfg.ch_mult[i];
        for j in 0..=cfg.num_res_blocks {
            h = resnet_block(&mut g, &w, &format!("{key}.block.{j}"), &h, block_in, block_out)?;
            block_in = block_out;
            if cfg.attn_resolutions.contains(&cur_res) {
                h = attn_block(&mut g, &w, &format!("{key}.attn.{j}"), &h, block_in)?;
            }
        }
        if i != 0 {
            cur_res *= 2;
            let up = g.resize_nearest(&h, 2.0)?;
            h = conv2d_same(&mut g, &w, &format!("{key}.upsample.conv"), &up, (block_in, block_in, 3), 1, 1)?;
        }
    }
    g.set_scope("decoder.out");
    let h = group_norm(&mut g, &w, "decoder.norm_out", &h, (GN_GROUPS, block_in), GN_EPS, 4)?;
    let h = g.silu(&h);
    let h = conv2d_same(&mut g, &w, "decoder.conv_out", &h, (block_in, cfg.out_ch, 3), 1, 1)?;
    g.output(&h, "image", ElemType::F32, &dims4(cfg.out_ch, false))?;
    if let Some(idx) = indices {
        g.output(&idx, "indices", ElemType::I64, &[Dim::Symbol("batch"), Dim::Symbol("latent_height"), Dim::Symbol("latent_width")])?;
    }
    let config_json = serde_json::to_string(cfg).map_err(|e| OnnxError::Config(e.to_string()))?;
    finish_model(
        g,
        &w,
        options,
        "VQ-f4 decoder: z [B,embed_dim,h,w] -> (quantise) -> post_quant_conv -> decoder -> image [B,3,h*f,w*f]",
        &[("idflow.model", "vq_decoder".into()), ("idflow.quantize", quantize_latent.to_string()), ("idflow.config", config_json)],
    )
}
