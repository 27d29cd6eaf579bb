//! The ONNX implementation of [`Backend`]: running a model's forward pass on [`OnnxTrace`]
//! appends the corresponding nodes to an ONNX graph, so `idflow compile` exports the very code
//! the native models run.
//!
//! Tensors are symbolic values with a known rank ([`Sym`]); sizes stay symbolic (reshapes use
//! ONNX's `0` / `-1` targets). Parameters are read from the state dict ([`Weights`], with its
//! prefix detection and strict key accounting) and added as initializers named after their
//! official key at their first use, so a parameter used several times (the UNet's shared
//! `x_norm`) is one initializer. Only eval-mode operations exist in a graph: batch-statistics
//! BatchNorm and dropout are refused.

use std::cell::RefCell;
use std::collections::HashMap;

use idflow_dataset::rng::KeyedRng;

use super::builder::{attr_int, attr_ints, ElemType, GraphBuilder, Value};
use super::weights::Weights;
use super::OnnxError;
use crate::nn::{Backend, ConvSpec, NormMode, PointwiseFrom};

/// A symbolic tensor: a graph value and its rank.
#[derive(Clone, Debug)]
pub struct Sym {
    value: Value,
    rank: usize,
}

impl Sym {
    /// A graph value of rank `rank` (a graph input).
    pub fn new(value: Value, rank: usize) -> Self {
        Self { value, rank }
    }

    /// The graph value.
    pub fn value(&self) -> &Value {
        &self.value
    }
}

/// A parameter source for the trace: the key path below the state dict's prefix.
#[derive(Clone, Debug, Default)]
pub struct KeyPath(String);

impl KeyPath {
    /// The root of the model (keys as in the official state dict, without prefix).
    pub fn root() -> Self {
        Self(String::new())
    }

    /// The full key of `name` below this path.
    pub fn key(&self, name: &str) -> String {
        if self.0.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.0)
        }
    }
}

/// A layer recorded at construction: its key path and geometry.
#[derive(Clone, Debug)]
pub struct Layer<S> {
    path: KeyPath,
    spec: S,
}

/// A parameter or constant, added to the graph at its first use.
#[derive(Clone, Debug)]
pub enum Param {
    /// A state-dict tensor `key` of stored shape `shape`.
    Weight {
        /// Full key (without prefix).
        key: String,
        /// Shape in the state dict.
        shape: Vec<usize>,
    },
    /// A constant float tensor.
    Constant {
        /// Initializer name.
        name: String,
        /// Shape.
        shape: Vec<usize>,
        /// Values.
        data: Vec<f32>,
    },
    /// Zeros of a shape.
    Zeros {
        /// Shape.
        shape: Vec<usize>,
    },
}

/// The ONNX graph under construction, with the state dict its parameters come from.
pub struct OnnxTrace<'w, 'a> {
    graph: RefCell<GraphBuilder>,
    weights: &'w Weights<'a>,
    emitted: RefCell<HashMap<String, Value>>,
}

impl<'w, 'a> OnnxTrace<'w, 'a> {
    /// An empty graph `name` reading parameters from `weights`.
    pub fn new(name: &str, weights: &'w Weights<'a>) -> Self {
        Self { graph: RefCell::new(GraphBuilder::new(name)), weights, emitted: RefCell::new(HashMap::new()) }
    }

    /// Direct access to the graph (inputs, outputs, extra nodes).
    pub fn graph(&self) -> std::cell::RefMut<'_, GraphBuilder> {
        self.graph.borrow_mut()
    }

    /// The finished graph builder.
    pub fn into_graph(self) -> GraphBuilder {
        self.graph.into_inner()
    }

    /// The state dict seen through its prefix.
    pub fn weights(&self) -> &Weights<'a> {
        self.weights
    }

    fn node(&self, value: Value, rank: usize) -> Sym {
        Sym { value, rank }
    }

    /// The initializer of state-dict tensor `key` (stored as `shape`) laid out as `dims`, added
    /// on first use.
    fn weight(&self, key: &str, shape: &[usize], dims: &[usize]) -> Result<Value, OnnxError> {
        if let Some(v) = self.emitted.borrow().get(key) {
            return Ok(v.clone());
        }
        let v = self.weights.param_as(&mut self.graph.borrow_mut(), key, shape, dims)?;
        self.emitted.borrow_mut().insert(key.to_string(), v.clone());
        Ok(v)
    }

    /// A parameter laid out as `dims` (same element count as its shape).
    fn param_value(&self, p: &Param, dims: &[usize]) -> Result<Value, OnnxError> {
        match p {
            Param::Weight { key, shape } => self.weight(key, shape, dims),
            Param::Constant { name, data, .. } => {
                if let Some(v) = self.emitted.borrow().get(name) {
                    return Ok(v.clone());
                }
                let v = self.graph.borrow_mut().initializer(name, dims, data)?;
                self.emitted.borrow_mut().insert(name.clone(), v.clone());
                Ok(v)
            }
            Param::Zeros { .. } => {
                let n = dims.iter().product();
                self.graph.borrow_mut().const_tensor(dims, &vec![0.0; n])
            }
        }
    }

    fn param_len(p: &Param) -> usize {
        match p {
            Param::Weight { shape, .. } | Param::Constant { shape, .. } | Param::Zeros { shape } => shape.iter().product(),
        }
    }

    /// `[C]` parameter dims broadcasting over a rank-`rank` tensor with channels on axis 1.
    fn channel_dims(channels: usize, rank: usize) -> Vec<usize> {
        let mut dims = vec![channels];
        dims.resize(rank.max(2) - 1, 1);
        dims
    }

    fn unsupported(what: &str) -> OnnxError {
        OnnxError::Graph(format!("{what} has no ONNX export (graphs are eval mode)"))
    }
}

/// Geometry of a channel mixer.
#[derive(Clone, Copy, Debug)]
pub struct PointwiseSpec {
    c_in: usize,
    c_out: usize,
    from: PointwiseFrom,
}

/// Geometry of a norm layer: `(groups, channels, eps)` (groups 0 for BatchNorm) and affinity.
#[derive(Clone, Copy, Debug)]
pub struct NormSpec {
    groups: usize,
    channels: usize,
    eps: f32,
    affine: bool,
}

impl<'w, 'a> Backend for OnnxTrace<'w, 'a> {
    type Tensor = Sym;
    type Vars<'v> = KeyPath;
    type Error = OnnxError;
    type Conv2d = Layer<ConvSpec>;
    type ConvTranspose2d = Layer<ConvSpec>;
    type Linear = Layer<(usize, usize)>;
    type Pointwise = Layer<PointwiseSpec>;
    type GroupNorm = Layer<NormSpec>;
    type BatchNorm = Layer<NormSpec>;
    type PRelu = Layer<usize>;
    type Quantizer = Layer<(usize, usize)>;
    type Param = Param;

    fn error(message: String) -> OnnxError {
        OnnxError::Config(message)
    }

    fn push<'v>(vars: &Self::Vars<'v>, name: &str) -> Self::Vars<'v> {
        KeyPath(vars.key(name))
    }

    fn load_conv2d(vars: &KeyPath, spec: ConvSpec) -> Result<Self::Conv2d, OnnxError> {
        Ok(Layer { path: vars.clone(), spec })
    }

    fn load_conv_transpose2d(vars: &KeyPath, spec: ConvSpec) -> Result<Self::ConvTranspose2d, OnnxError> {
        if spec.symmetric_padding().is_none() {
            return Err(OnnxError::Config(format!("{}: asymmetric transposed-convolution padding", vars.0)));
        }
        Ok(Layer { path: vars.clone(), spec })
    }

    fn load_linear(vars: &KeyPath, c_in: usize, c_out: usize) -> Result<Self::Linear, OnnxError> {
        Ok(Layer { path: vars.clone(), spec: (c_in, c_out) })
    }

    fn load_pointwise(vars: &KeyPath, c_in: usize, c_out: usize, from: PointwiseFrom) -> Result<Self::Pointwise, OnnxError> {
        Ok(Layer { path: vars.clone(), spec: PointwiseSpec { c_in, c_out, from } })
    }

    fn load_group_norm(vars: &KeyPath, groups: usize, channels: usize, eps: f64) -> Result<Self::GroupNorm, OnnxError> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(OnnxError::Config(format!("{}: {channels} channels are not divisible into {groups} groups", vars.0)));
        }
        Ok(Layer { path: vars.clone(), spec: NormSpec { groups, channels, eps: eps as f32, affine: true } })
    }

    fn load_batch_norm(vars: &KeyPath, channels: usize, eps: f64, affine: bool) -> Result<Self::BatchNorm, OnnxError> {
        Ok(Layer { path: vars.clone(), spec: NormSpec { groups: 0, channels, eps: eps as f32, affine } })
    }

    fn load_prelu(vars: &KeyPath, channels: usize) -> Result<Self::PRelu, OnnxError> {
        Ok(Layer { path: vars.clone(), spec: channels })
    }

    fn load_quantizer(vars: &KeyPath, n_embed: usize, dim: usize) -> Result<Self::Quantizer, OnnxError> {
        Ok(Layer { path: vars.clone(), spec: (n_embed, dim) })
    }

    fn load_param(vars: &KeyPath, name: &str, shape: &[usize]) -> Result<Param, OnnxError> {
        Ok(Param::Weight { key: vars.key(name), shape: shape.to_vec() })
    }

    fn zeros(_vars: &KeyPath, shape: &[usize]) -> Result<Param, OnnxError> {
        Ok(Param::Zeros { shape: shape.to_vec() })
    }

    fn constant(vars: &KeyPath, name: &str, shape: &[usize], data: Vec<f32>) -> Result<Param, OnnxError> {
        Ok(Param::Constant { name: vars.key(name), shape: shape.to_vec(), data })
    }

    fn scope(&self, name: &str) {
        self.graph.borrow_mut().set_scope(name);
    }

    fn conv2d(&self, layer: &Self::Conv2d, x: &Sym) -> Result<Sym, OnnxError> {
        let ConvSpec { in_channels, out_channels, kernel, stride, padding, bias } = layer.spec;
        let weight = self.weight(
            &layer.path.key("weight"),
            &[out_channels, in_channels, kernel, kernel],
            &[out_channels, in_channels, kernel, kernel],
        )?;
        let b = if bias { Some(self.weight(&layer.path.key("bias"), &[out_channels], &[out_channels])?) } else { None };
        let pads = padding.map(|p| p as i64);
        let v = self.graph.borrow_mut().conv2d(&x.value, &weight, b.as_ref(), stride as i64, pads);
        Ok(self.node(v, 4))
    }

    fn conv_transpose2d(&self, layer: &Self::ConvTranspose2d, x: &Sym) -> Result<Sym, OnnxError> {
        let ConvSpec { in_channels, out_channels, kernel, stride, padding, .. } = layer.spec;
        let weight = self.weight(
            &layer.path.key("weight"),
            &[in_channels, out_channels, kernel, kernel],
            &[in_channels, out_channels, kernel, kernel],
        )?;
        let bias = self.weight(&layer.path.key("bias"), &[out_channels], &[out_channels])?;
        let v = self.graph.borrow_mut().conv_transpose2d(&x.value, &weight, Some(&bias), stride as i64, padding[0] as i64);
        Ok(self.node(v, 4))
    }

    fn linear(&self, layer: &Self::Linear, x: &Sym) -> Result<Sym, OnnxError> {
        let (c_in, c_out) = layer.spec;
        let weight = self.weight(&layer.path.key("weight"), &[c_out, c_in], &[c_out, c_in])?;
        let bias = self.weight(&layer.path.key("bias"), &[c_out], &[c_out])?;
        let v = self.graph.borrow_mut().linear(&x.value, &weight, Some(&bias));
        Ok(self.node(v, 2))
    }

    fn pointwise(&self, layer: &Self::Pointwise, x: &Sym) -> Result<Sym, OnnxError> {
        let PointwiseSpec { c_in, c_out, from } = layer.spec;
        let key = layer.path.key("weight");
        let weight = match from {
            PointwiseFrom::Conv1d => self.weight(&key, &[c_out, c_in, 1], &[c_out, c_in])?,
            PointwiseFrom::Linear => self.weight(&key, &[c_out, c_in], &[c_out, c_in])?,
        };
        let bias = self.weight(&layer.path.key("bias"), &[c_out], &[c_out, 1])?;
        let mut g = self.graph.borrow_mut();
        let y = g.matmul(&weight, &x.value);
        Ok(self.node(g.add(&y, &bias), x.rank))
    }

    fn group_norm(&self, layer: &Self::GroupNorm, x: &Sym) -> Result<Sym, OnnxError> {
        let NormSpec { groups, channels, eps, .. } = layer.spec;
        let dims = Self::channel_dims(channels, x.rank);
        let gamma = self.weight(&layer.path.key("weight"), &[channels], &dims)?;
        let beta = self.weight(&layer.path.key("bias"), &[channels], &dims)?;
        let v = self.graph.borrow_mut().group_norm(&x.value, groups, eps, &gamma, &beta)?;
        Ok(self.node(v, x.rank))
    }

    fn batch_norm(&self, layer: &Self::BatchNorm, x: &Sym, mode: NormMode) -> Result<Sym, OnnxError> {
        if mode != NormMode::Running {
            return Err(Self::unsupported("batch-statistics BatchNorm"));
        }
        let NormSpec { channels, eps, affine, .. } = layer.spec;
        let c = [channels];
        let (scale, bias) = if affine {
            (self.weight(&layer.path.key("weight"), &c, &c)?, self.weight(&layer.path.key("bias"), &c, &c)?)
        } else {
            let mut g = self.graph.borrow_mut();
            (g.const_tensor(&c, &vec![1.0; channels])?, g.const_tensor(&c, &vec![0.0; channels])?)
        };
        let mean = self.weight(&layer.path.key("running_mean"), &c, &c)?;
        let var = self.weight(&layer.path.key("running_var"), &c, &c)?;
        self.weights.touch(&layer.path.key("num_batches_tracked"));
        let v = self.graph.borrow_mut().batch_norm(&x.value, &scale, &bias, &mean, &var, eps);
        Ok(self.node(v, x.rank))
    }

    fn prelu(&self, layer: &Self::PRelu, x: &Sym) -> Result<Sym, OnnxError> {
        let channels = layer.spec;
        let slope = self.weight(&layer.path.key("weight"), &[channels], &[channels, 1, 1])?;
        let v = self.graph.borrow_mut().prelu(&x.value, &slope);
        Ok(self.node(v, x.rank))
    }

    /// Per spatial position (channels-last flatten) `d_j = ||z||² + ||e_j||² − 2 z·e_j` by
    /// `ReduceSum` + `MatMul`, `ArgMin` (first index on ties, like `torch.argmin`), `Gather` from
    /// the codebook, then the straight-through `z + (e − z)`; indices `[B, h, w]` int64.
    fn quantize(&self, layer: &Self::Quantizer, z: &Sym) -> Result<(Sym, Sym), OnnxError> {
        let (n_embed, dim) = layer.spec;
        let key = layer.path.key("embedding.weight");
        let codebook = self.weights.values(&key, &[n_embed, dim])?;
        let mut g = self.graph.borrow_mut();
        let e = g.initializer(&key, &[n_embed, dim], &codebook)?;
        let mut et = vec![0f32; n_embed * dim];
        let mut e_sq = vec![0f32; n_embed];
        for j in 0..n_embed {
            for c in 0..dim {
                let v = codebook[j * dim + c];
                et[c * n_embed + j] = v;
                e_sq[j] += v * v;
            }
        }
        let et = g.initializer(&format!("{key}.T"), &[dim, n_embed], &et)?;
        let e_sq = g.initializer(&layer.path.key("embedding.sq_norm"), &[1, n_embed], &e_sq)?;
        let z = &z.value;
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
        Ok((Sym::new(zq, 4), Sym::new(indices, 3)))
    }

    fn add(&self, a: &Sym, b: &Sym) -> Result<Sym, OnnxError> {
        let v = self.graph.borrow_mut().add(&a.value, &b.value);
        Ok(self.node(v, a.rank.max(b.rank)))
    }

    fn mul(&self, a: &Sym, b: &Sym) -> Result<Sym, OnnxError> {
        let v = self.graph.borrow_mut().mul(&a.value, &b.value);
        Ok(self.node(v, a.rank.max(b.rank)))
    }

    fn add_scalar(&self, x: &Sym, s: f64) -> Result<Sym, OnnxError> {
        let v = self.graph.borrow_mut().add_scalar(&x.value, s as f32);
        Ok(self.node(v, x.rank))
    }

    fn mul_scalar(&self, x: &Sym, s: f64) -> Result<Sym, OnnxError> {
        let v = self.graph.borrow_mut().scale(&x.value, s as f32);
        Ok(self.node(v, x.rank))
    }

    fn silu(&self, x: &Sym) -> Result<Sym, OnnxError> {
        let v = self.graph.borrow_mut().silu(&x.value);
        Ok(self.node(v, x.rank))
    }

    fn gelu_erf(&self, x: &Sym) -> Result<Sym, OnnxError> {
        let v = self.graph.borrow_mut().gelu_erf(&x.value);
        Ok(self.node(v, x.rank))
    }

    fn softmax_last(&self, x: &Sym) -> Result<Sym, OnnxError> {
        let v = self.graph.borrow_mut().softmax(&x.value, -1);
        Ok(self.node(v, x.rank))
    }

    fn matmul(&self, a: &Sym, b: &Sym) -> Result<Sym, OnnxError> {
        let v = self.graph.borrow_mut().matmul(&a.value, &b.value);
        Ok(self.node(v, a.rank.max(b.rank)))
    }

    fn reshape(&self, x: &Sym, shape: &[i64]) -> Result<Sym, OnnxError> {
        let v = self.graph.borrow_mut().reshape(&x.value, shape);
        Ok(self.node(v, shape.len()))
    }

    fn reshape_like(&self, x: &Sym, like: &Sym) -> Result<Sym, OnnxError> {
        let v = self.graph.borrow_mut().reshape_like(&x.value, &like.value);
        Ok(self.node(v, like.rank))
    }

    fn transpose(&self, x: &Sym, perm: &[usize]) -> Result<Sym, OnnxError> {
        let perm: Vec<i64> = perm.iter().map(|&p| p as i64).collect();
        let v = self.graph.borrow_mut().transpose(&x.value, &perm);
        Ok(self.node(v, x.rank))
    }

    fn unsqueeze(&self, x: &Sym, axes: &[usize]) -> Result<Sym, OnnxError> {
        let a: Vec<i64> = axes.iter().map(|&p| p as i64).collect();
        let v = self.graph.borrow_mut().unsqueeze(&x.value, &a);
        Ok(self.node(v, x.rank + axes.len()))
    }

    fn concat(&self, xs: &[&Sym], axis: usize) -> Result<Sym, OnnxError> {
        let values: Vec<&Value> = xs.iter().map(|x| &x.value).collect();
        let rank = xs.first().map_or(0, |x| x.rank);
        let v = self.graph.borrow_mut().concat(&values, axis as i64);
        Ok(self.node(v, rank))
    }

    fn flatten_from(&self, x: &Sym, axis: usize) -> Result<Sym, OnnxError> {
        if axis != 1 {
            return Err(OnnxError::Graph(format!("flatten from axis {axis}: only axis 1 maps onto ONNX Flatten")));
        }
        let v = self.graph.borrow_mut().flatten(&x.value, 1);
        Ok(self.node(v, 2))
    }

    fn upsample_nearest2x(&self, x: &Sym) -> Result<Sym, OnnxError> {
        let v = self.graph.borrow_mut().resize_nearest(&x.value, 2.0)?;
        Ok(self.node(v, x.rank))
    }

    fn subsample2d(&self, x: &Sym, stride: usize) -> Result<Sym, OnnxError> {
        let s = stride as i64;
        let v =
            self.graph.borrow_mut().node("MaxPool", &[&x.value], vec![attr_ints("kernel_shape", &[1, 1]), attr_ints("strides", &[s, s])]);
        Ok(self.node(v, x.rank))
    }

    fn dropout(&self, x: &Sym, p: f64, _rng: &mut KeyedRng) -> Result<Sym, OnnxError> {
        if p <= 0.0 {
            return Ok(x.clone());
        }
        Err(Self::unsupported("training-mode dropout"))
    }

    fn sinusoid(&self, t: &Sym, frequencies: &Param) -> Result<Sym, OnnxError> {
        let n = Self::param_len(frequencies);
        let freqs = self.param_value(frequencies, &[1, n])?;
        let mut g = self.graph.borrow_mut();
        let tf = g.cast(&t.value, ElemType::F32);
        let tf = g.unsqueeze(&tf, &[1]);
        let args = g.mul(&tf, &freqs);
        let cos = g.node("Cos", &[&args], vec![]);
        let sin = g.node("Sin", &[&args], vec![]);
        Ok(self.node(g.concat(&[&cos, &sin], 1), 2))
    }

    fn repeat_rows(&self, _row: &Param, _like: &Sym) -> Result<Sym, OnnxError> {
        Err(OnnxError::Graph("a context-conditional graph takes its context as an input (empty rows through `dropout_mask`)".into()))
    }

    fn replace_rows(&self, mask: &Sym, row: &Param, x: &Sym) -> Result<Sym, OnnxError> {
        let n = Self::param_len(row);
        let row = self.param_value(row, &[1, n])?;
        let mut g = self.graph.borrow_mut();
        let m = g.cast(&mask.value, ElemType::Bool);
        let m = g.unsqueeze(&m, &[1]);
        Ok(self.node(g.node("Where", &[&m, &row, &x.value], vec![]), x.rank))
    }
}
