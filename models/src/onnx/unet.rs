//! Emitter of IDiff-Face's `ConditionalUNet` ([`crate::unet`]) in all its conditioning forms
//! (CA, AdaGN, DiffAE, AddPlusGN; context-conditional or unconditional).
//!
//! Graph inputs: `x` `[batch, C, height, width]`, `t` `[batch]` (int64 or float32, see
//! [`TimestepType`]), for conditional models `context` `[batch, context_input_channels]` and —
//! unless disabled — `dropout_mask` `[batch]` uint8 (rows with 1 use the empty context, exactly the
//! native `dropout_mask` / `context = None` path: zeros, or the learned empty embedding, *after*
//! `context_emb`). Output: `eps`, shaped like `x`.
//!
//! Notes on the mapping: the sinusoid frequencies are computed here in float32 exactly as the
//! native code does and stored as an initializer; multi-head attention keeps the native
//! `[B·heads, ch, L]` layout with `Reshape` targets that copy (`0`) or infer (`−1`) the dynamic
//! sizes, so batch and spatial size stay free; the CA block's shared `x_norm` is one set of
//! initializers used three times.
//!
//! Metadata: `idflow.model`, `idflow.config` (the UNet configuration as JSON),
//! `idflow.dropout_mask_input`, and — when the checkpoint carries its diffusion schedule —
//! [`SCHEDULE_METADATA`] ([`DdpmSchedule::to_json`]).

use super::builder::{Dim, ElemType, GraphBuilder, Value};
use super::layers::{conv2d_same, group_norm, group_norm_params, linear, pointwise};
use super::weights::Weights;
use super::{finish_model, CompileOptions, OnnxError};
use crate::checkpoint::StateDict;
use crate::schedule::DdpmSchedule;
use crate::unet::{ConditionType, UNetConfig};

/// Metadata key of the diffusion schedule a compiled denoiser carries.
pub const SCHEDULE_METADATA: &str = "idflow.schedule";

const GN_EPS: f32 = 1e-5;
const GN_GROUPS: usize = 32;

/// Element type of the `t` input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimestepType {
    /// int64 timesteps (0-based), as the official sampler passes them.
    #[default]
    Int64,
    /// float32 timesteps (e.g. fractional DDIM schedules).
    Float32,
}

/// UNet-specific export settings.
#[derive(Clone, Debug)]
pub struct UNetExport {
    /// Type of the `t` input.
    pub timestep: TimestepType,
    /// Add the `dropout_mask` input (needed for the empty-context pass of classifier-free
    /// guidance); ignored for unconditional models.
    pub dropout_mask: bool,
}

impl Default for UNetExport {
    fn default() -> Self {
        Self { timestep: TimestepType::Int64, dropout_mask: true }
    }
}

/// Per-graph values every block uses.
struct Shared {
    /// `SiLU(time_emb(t))`, `[B, time_channels]`.
    t_silu: Value,
    /// Projected context `[B, context_channels]` (after the dropout mask), if conditional.
    c: Option<Value>,
    /// `SiLU(c)`, if conditional.
    c_silu: Option<Value>,
}

struct Emitter<'w, 'a> {
    g: GraphBuilder,
    w: &'w Weights<'a>,
    cfg: &'w UNetConfig,
}

impl Emitter<'_, '_> {
    fn use_context(&self) -> bool {
        self.cfg.is_context_conditional
    }

    fn time_embedding(&mut self, t: &Value) -> Result<Value, OnnxError> {
        self.g.set_scope("time_emb");
        let time_channels = self.cfg.initial_channels * 4;
        let input_channels = time_channels / 4;
        let half = input_channels / 2;
        // float32 like the original (and the native code): exp(-ln(10000) * k / half)
        let log_max = -(10000f64.ln()) as f32;
        let freqs: Vec<f32> = (0..half).map(|k| ((log_max * k as f32) / half as f32).exp()).collect();
        let freqs = self.g.initializer("time_emb.frequencies", &[1, half], &freqs)?;
        let tf = self.g.cast(t, ElemType::F32);
        let tf = self.g.unsqueeze(&tf, &[1]);
        let args = self.g.mul(&tf, &freqs);
        let cos = self.g.node("Cos", &[&args], vec![]);
        let sin = self.g.node("Sin", &[&args], vec![]);
        let emb = self.g.concat(&[&cos, &sin], 1);
        let h = linear(&mut self.g, self.w, "time_emb.lin1", &emb, half * 2, time_channels)?;
        let h = self.g.silu(&h);
        linear(&mut self.g, self.w, "time_emb.lin2", &h, time_channels, time_channels)
    }

    fn context(&mut self, context: &Value, mask: Option<&Value>) -> Result<Value, OnnxError> {
        self.g.set_scope("context_emb");
        let cc = self.cfg.context_channels;
        let c = linear(&mut self.g, self.w, "context_emb", context, self.cfg.context_input_channels, cc)?;
        let Some(mask) = mask else { return Ok(c) };
        let empty = if self.cfg.learn_empty_context {
            self.w.param_as(&mut self.g, "empty_context_embedding", &[cc], &[1, cc])?
        } else {
            self.g.const_tensor(&[1, cc], &vec![0.0; cc])?
        };
        let m = self.g.cast(mask, ElemType::Bool);
        let m = self.g.unsqueeze(&m, &[1]);
        Ok(self.g.node("Where", &[&m, &empty, &c], vec![]))
    }

    fn spatial(&mut self, v: &Value) -> Value {
        self.g.unsqueeze(v, &[2, 3])
    }

    fn residual(&mut self, key: &str, x: &Value, c_in: usize, c_out: usize, s: &Shared) -> Result<Value, OnnxError> {
        let (w, cfg) = (self.w, self.cfg);
        let g = &mut self.g;
        let h = group_norm(g, w, &format!("{key}.norm1"), x, (GN_GROUPS, c_in), GN_EPS, 4)?;
        let h = g.silu(&h);
        let h = conv2d_same(g, w, &format!("{key}.conv1"), &h, (c_in, c_out, 3), 1, 1)?;
        let time_channels = cfg.initial_channels * 4;
        let t_proj = linear(g, w, &format!("{key}.time_emb.1"), &s.t_silu, time_channels, c_out)?;
        let block_context = |g: &mut GraphBuilder| -> Result<Value, OnnxError> {
            let c_silu = s.c_silu.as_ref().ok_or_else(|| OnnxError::Graph("context-conditional block without context".into()))?;
            linear(g, w, &format!("{key}.context_emb.1"), c_silu, cfg.context_channels, c_out)
        };
        let h = match cfg.condition_type {
            ConditionType::Ca | ConditionType::AdaGn | ConditionType::DiffAe => {
                let ctx =
                    if self.use_context() && cfg.condition_type != ConditionType::Ca { Some(block_context(&mut self.g)?) } else { None };
                let g = &mut self.g;
                let multiplicative = cfg.condition_type == ConditionType::DiffAe;
                let emb = match (&ctx, multiplicative) {
                    (Some(ctx), false) => g.add(&t_proj, ctx),
                    _ => t_proj,
                };
                let scale = linear(g, w, &format!("{key}.scale_emb"), &emb, c_out, c_out)?;
                let shift = linear(g, w, &format!("{key}.shift_emb"), &emb, c_out, c_out)?;
                let hn = group_norm(g, w, &format!("{key}.norm2.norm"), &h, (GN_GROUPS, c_out), GN_EPS, 4)?;
                let scale1 = g.add_scalar(&scale, 1.0);
                let scale1 = self.spatial(&scale1);
                let shift = self.spatial(&shift);
                let g = &mut self.g;
                let hs = g.mul(&hn, &scale1);
                let mut h = g.add(&hs, &shift);
                if let (Some(ctx), true) = (ctx, multiplicative) {
                    let ctx = self.spatial(&ctx);
                    h = self.g.mul(&h, &ctx);
                }
                h
            }
            ConditionType::AddPlusGn => {
                let tp = self.spatial(&t_proj);
                let mut h = self.g.add(&h, &tp);
                if self.use_context() {
                    let ctx = block_context(&mut self.g)?;
                    let ctx = self.spatial(&ctx);
                    h = self.g.add(&h, &ctx);
                }
                group_norm(&mut self.g, w, &format!("{key}.norm2"), &h, (GN_GROUPS, c_out), GN_EPS, 4)?
            }
        };
        let g = &mut self.g;
        let h = g.silu(&h);
        let h = conv2d_same(g, w, &format!("{key}.conv2"), &h, (c_out, c_out, 3), 1, 1)?;
        let shortcut = if c_in != c_out { conv2d_same(g, w, &format!("{key}.shortcut"), x, (c_in, c_out, 1), 1, 0)? } else { x.clone() };
        Ok(g.add(&h, &shortcut))
    }

    /// `MultiHeadAttention` from `x` `[B, in, Lq]` to `c` `[B, kv, Lk]` (`None` = self-attention).
    #[allow(clippy::too_many_arguments)]
    fn mha(
        &mut self,
        key: &str,
        x: &Value,
        c: Option<&Value>,
        in_c: usize,
        kv_c: usize,
        heads: usize,
        ch: usize,
    ) -> Result<Value, OnnxError> {
        let (w, g) = (self.w, &mut self.g);
        let inner = heads * ch;
        let c = c.unwrap_or(x);
        let scale = (1.0 / (ch as f64).sqrt().sqrt()) as f32;
        let q = pointwise(g, w, &format!("{key}.to_q"), x, (in_c, inner), true)?;
        let q = g.scale(&q, scale);
        let q = g.reshape(&q, &[-1, ch as i64, 0]);
        let k = pointwise(g, w, &format!("{key}.to_k"), c, (kv_c, inner), true)?;
        let k = g.scale(&k, scale);
        let k = g.reshape(&k, &[-1, ch as i64, 0]);
        let v = pointwise(g, w, &format!("{key}.to_v"), c, (kv_c, inner), true)?;
        let v = g.reshape(&v, &[-1, ch as i64, 0]);
        let qt = g.transpose(&q, &[0, 2, 1]);
        let weight = g.matmul(&qt, &k);
        let weight = g.softmax(&weight, -1);
        let wt = g.transpose(&weight, &[0, 2, 1]);
        let a = g.matmul(&v, &wt);
        let a = g.reshape(&a, &[-1, inner as i64, 0]);
        pointwise(g, w, &format!("{key}.proj_out"), &a, (inner, in_c), true)
    }

    fn heads(&self, channels: usize) -> usize {
        if self.cfg.attention_heads <= 0 {
            channels / self.cfg.attention_head_channels
        } else {
            self.cfg.attention_heads as usize
        }
    }

    fn attention(&mut self, key: &str, x: &Value, channels: usize, s: &Shared) -> Result<Value, OnnxError> {
        let heads = self.heads(channels);
        let ch = self.cfg.attention_head_channels;
        if self.cfg.condition_type == ConditionType::Ca && self.use_context() {
            let c = s.c.clone().ok_or_else(|| OnnxError::Graph("cross-attention without context".into()))?;
            self.cross_attention(key, x, &c, channels, heads, ch)
        } else {
            let w = self.w;
            let y = group_norm(&mut self.g, w, &format!("{key}.norm"), x, (GN_GROUPS, channels), GN_EPS, 4)?;
            let y = self.g.reshape(&y, &[0, 0, -1]);
            let a = self.mha(&format!("{key}.attention"), &y, None, channels, channels, heads, ch)?;
            let a = self.g.reshape_like(&a, x);
            Ok(self.g.add(&a, x))
        }
    }

    fn cross_attention(&mut self, key: &str, x: &Value, c: &Value, channels: usize, heads: usize, d: usize) -> Result<Value, OnnxError> {
        let w = self.w;
        let inner = heads * d;
        let cd = self.cfg.context_channels;
        let x1_4d = conv2d_same(&mut self.g, w, &format!("{key}.x_proj_in"), x, (channels, inner, 1), 1, 0)?;
        let x1 = self.g.reshape(&x1_4d, &[0, 0, -1]);
        let cc = linear(&mut self.g, w, &format!("{key}.c_proj_in"), c, cd, cd * d)?;
        let cc = self.g.reshape(&cc, &[0, cd as i64, d as i64]);
        let cc = group_norm(&mut self.g, w, &format!("{key}.c_norm"), &cc, (GN_GROUPS, cd), GN_EPS, 3)?;
        let (gamma, beta) = group_norm_params(&mut self.g, w, &format!("{key}.x_norm"), inner, 3)?;
        let n = self.g.group_norm(&x1, GN_GROUPS, GN_EPS, &gamma, &beta)?;
        let sa = self.mha(&format!("{key}.self_attention"), &n, None, inner, inner, heads, d)?;
        let x1 = self.g.add(&sa, &x1);
        let n = self.g.group_norm(&x1, GN_GROUPS, GN_EPS, &gamma, &beta)?;
        let ca = self.mha(&format!("{key}.cross_attention"), &n, Some(&cc), inner, cd, heads, d)?;
        let x1 = self.g.add(&ca, &x1);
        let n = self.g.group_norm(&x1, GN_GROUPS, GN_EPS, &gamma, &beta)?;
        let ff = pointwise(&mut self.g, w, &format!("{key}.ff.0"), &n, (inner, inner * 4), false)?;
        let ff = self.g.gelu_erf(&ff);
        let ff = pointwise(&mut self.g, w, &format!("{key}.ff.2"), &ff, (inner * 4, inner), false)?;
        let x1 = self.g.add(&ff, &x1);
        let x1 = self.g.reshape_like(&x1, &x1_4d);
        let out = conv2d_same(&mut self.g, w, &format!("{key}.x_proj_out"), &x1, (inner, channels, 1), 1, 0)?;
        Ok(self.g.add(&out, x))
    }

    fn block(&mut self, key: &str, x: &Value, c_in: usize, c_out: usize, attention: bool, s: &Shared) -> Result<Value, OnnxError> {
        self.g.set_scope(key);
        let h = self.residual(&format!("{key}.res"), x, c_in, c_out, s)?;
        if attention {
            self.attention(&format!("{key}.attn"), &h, c_out, s)
        } else {
            Ok(h)
        }
    }
}

fn check_config(cfg: &UNetConfig) -> Result<(), OnnxError> {
    if cfg.channel_multipliers.is_empty() || cfg.channel_multipliers.len() != cfg.is_attention.len() {
        return Err(OnnxError::Config(format!(
            "UNet config: channel_multipliers ({}) and is_attention ({}) must be non-empty and equally long",
            cfg.channel_multipliers.len(),
            cfg.is_attention.len()
        )));
    }
    if !cfg.initial_channels.is_multiple_of(GN_GROUPS) || cfg.attention_head_channels == 0 {
        return Err(OnnxError::Config(format!(
            "UNet config: initial_channels {} must be a multiple of 32 and attention_head_channels > 0",
            cfg.initial_channels
        )));
    }
    Ok(())
}

/// Compiles a `ConditionalUNet` state dict (`eps_model.*` inside IDiff-Face's wrapper checkpoint,
/// or bare keys) into ONNX bytes; see the module documentation for the graph's interface.
pub fn compile_unet(dict: &StateDict, cfg: &UNetConfig, export: &UNetExport, options: &CompileOptions) -> Result<Vec<u8>, OnnxError> {
    check_config(cfg)?;
    let w = Weights::new(dict, options.prefix.as_deref(), "image_proj.weight")?;
    let mut e = Emitter { g: GraphBuilder::new("conditional_unet"), w: &w, cfg };
    let batch = Dim::Symbol("batch");
    let xdims = [batch.clone(), Dim::Fixed(cfg.input_channels as i64), Dim::Symbol("height"), Dim::Symbol("width")];
    let x = e.g.input("x", ElemType::F32, &xdims)?;
    let t_type = match export.timestep {
        TimestepType::Int64 => ElemType::I64,
        TimestepType::Float32 => ElemType::F32,
    };
    let t = e.g.input("t", t_type, std::slice::from_ref(&batch))?;
    let (context, mask) = if cfg.is_context_conditional {
        let c = e.g.input("context", ElemType::F32, &[batch.clone(), Dim::Fixed(cfg.context_input_channels as i64)])?;
        let m = if export.dropout_mask { Some(e.g.input("dropout_mask", ElemType::U8, std::slice::from_ref(&batch))?) } else { None };
        (Some(c), m)
    } else {
        (None, None)
    };

    let t_emb = e.time_embedding(&t)?;
    let t_silu = e.g.silu(&t_emb);
    let c = match &context {
        Some(ctx) => Some(e.context(ctx, mask.as_ref())?),
        None => None,
    };
    let c_silu = c.as_ref().map(|c| e.g.silu(c));
    let shared = Shared { t_silu, c, c_silu };

    e.g.set_scope("image_proj");
    let mut h = conv2d_same(&mut e.g, &w, "image_proj", &x, (cfg.input_channels, cfg.initial_channels, 3), 1, 1)?;
    let mut skips = vec![h.clone()];
    let levels = cfg.channel_multipliers.len();
    let mut index = 0;
    let mut in_ch = cfg.initial_channels;
    let mut out_ch = in_ch;
    for i in 0..levels {
        out_ch = in_ch * cfg.channel_multipliers[i];
        for _ in 0..cfg.n_blocks_per_resolution {
            h = e.block(&format!("down.{index}"), &h, in_ch, out_ch, cfg.is_attention[i], &shared)?;
            skips.push(h.clone());
            in_ch = out_ch;
            index += 1;
        }
        if i < levels - 1 {
            let key = format!("down.{index}.conv");
            e.g.set_scope(&key);
            h = conv2d_same(&mut e.g, &w, &key, &h, (in_ch, in_ch, 3), 2, 1)?;
            skips.push(h.clone());
            index += 1;
        }
    }

    e.g.set_scope("middle");
    h = e.residual("middle.res1", &h, out_ch, out_ch, &shared)?;
    h = e.attention("middle.attn", &h, out_ch, &shared)?;
    h = e.residual("middle.res2", &h, out_ch, out_ch, &shared)?;

    let mut index = 0;
    let mut in_ch = out_ch;
    let pop = |skips: &mut Vec<Value>| skips.pop().ok_or_else(|| OnnxError::Graph("UNet skip stack exhausted".into()));
    for i in (0..levels).rev() {
        let out_ch = in_ch;
        for _ in 0..cfg.n_blocks_per_resolution {
            let s = pop(&mut skips)?;
            let cat = e.g.concat(&[&h, &s], 1);
            h = e.block(&format!("up.{index}"), &cat, in_ch + out_ch, out_ch, cfg.is_attention[i], &shared)?;
            index += 1;
        }
        let out_ch = in_ch / cfg.channel_multipliers[i];
        let s = pop(&mut skips)?;
        let cat = e.g.concat(&[&h, &s], 1);
        h = e.block(&format!("up.{index}"), &cat, in_ch + out_ch, out_ch, cfg.is_attention[i], &shared)?;
        index += 1;
        in_ch = out_ch;
        if i > 0 {
            let key = format!("up.{index}.conv");
            e.g.set_scope(&key);
            let weight = w.param(&mut e.g, &format!("{key}.weight"), &[in_ch, in_ch, 4, 4])?;
            let bias = w.param(&mut e.g, &format!("{key}.bias"), &[in_ch])?;
            h = e.g.conv_transpose2d(&h, &weight, Some(&bias), 2, 1);
            index += 1;
        }
    }

    e.g.set_scope("final");
    let h = group_norm(&mut e.g, &w, "norm", &h, (GN_GROUPS, cfg.initial_channels), GN_EPS, 4)?;
    let h = e.g.silu(&h);
    let h = conv2d_same(&mut e.g, &w, "final", &h, (in_ch, cfg.input_channels, 3), 1, 1)?;
    e.g.output(&h, "eps", ElemType::F32, &xdims)?;
    let config_json = serde_json::to_string(cfg).map_err(|e| OnnxError::Config(e.to_string()))?;
    let g = e.g;
    let mut metadata = vec![
        ("idflow.model", "conditional_unet".to_string()),
        ("idflow.config", config_json),
        ("idflow.dropout_mask_input", mask.is_some().to_string()),
    ];
    // The checkpoint's diffusion schedule, so a compiled file samples like its checkpoint.
    if let Some(schedule) = DdpmSchedule::from_state_dict(dict)? {
        metadata.push((SCHEDULE_METADATA, schedule.to_json()));
    }
    finish_model(g, &w, options, "IDiff-Face ConditionalUNet denoiser (eval mode): eps(x, t, context)", &metadata)
}
