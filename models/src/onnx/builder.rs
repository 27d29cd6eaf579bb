//! A small ONNX graph builder: typed graph inputs/outputs, initializers, nodes with attributes,
//! and helpers for the operators the idflow models need (convolutions, GEMM/MatMul, GroupNorm as
//! Reshape + InstanceNormalization, BatchNorm, PReLU, SiLU, GELU(erf), softmax attention pieces,
//! nearest resize, transposed convolution, …).
//!
//! Values are referred to by name ([`Value`]); every node output gets a fresh unique name derived
//! from the current scope (e.g. `down.3.res/Conv_17`), so a graph is readable in Netron. The
//! builder writes opset 17 of the default domain (GroupNormalization of opset 18/21 is avoided on
//! purpose: its opset-18 definition had per-group affine parameters, and InstanceNormalization
//! over a `[B, G, -1]` view computes exactly PyTorch's GroupNorm statistics).

use std::collections::{HashMap, HashSet};

use super::proto::{
    attribute_type, data_type, AttributeProto, Dimension, DimensionValue, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, TypeProtoTensor, ValueInfoProto, IR_VERSION,
};
use super::OnnxError;

/// Operator-set version of the default domain written by [`GraphBuilder::finish`].
pub const OPSET: i64 = 17;

/// The name of a value (graph input, initializer or node output) in the graph being built.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Value(String);

impl Value {
    /// The value's name in the graph.
    pub fn name(&self) -> &str {
        &self.0
    }
}

/// One dimension of a graph input or output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dim {
    /// A size fixed at compile time.
    Fixed(i64),
    /// A symbolic size (`batch`, `height`, …), free at run time.
    Symbol(&'static str),
}

/// Element types of graph inputs and outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElemType {
    /// `float32`.
    F32,
    /// `int64`.
    I64,
    /// `uint8`.
    U8,
    /// `bool`.
    Bool,
}

impl ElemType {
    /// The `TensorProto.DataType` code.
    pub fn code(self) -> i32 {
        match self {
            Self::F32 => data_type::FLOAT,
            Self::I64 => data_type::INT64,
            Self::U8 => data_type::UINT8,
            Self::Bool => data_type::BOOL,
        }
    }
}

/// A node attribute (name + value); build with [`attr_int`], [`attr_ints`], [`attr_float`],
/// [`attr_str`].
pub type Attr = AttributeProto;

/// An integer attribute.
pub fn attr_int(name: &str, v: i64) -> Attr {
    AttributeProto { name: name.into(), r#type: attribute_type::INT, i: v, ..Default::default() }
}

/// An integer-list attribute.
pub fn attr_ints(name: &str, v: &[i64]) -> Attr {
    AttributeProto { name: name.into(), r#type: attribute_type::INTS, ints: v.to_vec(), ..Default::default() }
}

/// A float attribute.
pub fn attr_float(name: &str, v: f32) -> Attr {
    AttributeProto { name: name.into(), r#type: attribute_type::FLOAT, f: v, ..Default::default() }
}

/// A float-list attribute.
pub fn attr_floats(name: &str, v: &[f32]) -> Attr {
    AttributeProto { name: name.into(), r#type: attribute_type::FLOATS, floats: v.to_vec(), ..Default::default() }
}

/// A string attribute.
pub fn attr_str(name: &str, v: &str) -> Attr {
    AttributeProto { name: name.into(), r#type: attribute_type::STRING, s: v.as_bytes().to_vec(), ..Default::default() }
}

fn value_info(name: &str, elem: ElemType, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(v) => DimensionValue::DimValue(*v),
                Dim::Symbol(s) => DimensionValue::DimParam((*s).to_string()),
            }),
            denotation: String::new(),
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor { elem_type: elem.code(), shape: Some(TensorShapeProto { dim }) }),
            denotation: String::new(),
        }),
        doc_string: String::new(),
    }
}

fn f32_bytes(data: &[f32]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(data.len() * 4);
    for v in data {
        raw.extend_from_slice(&v.to_le_bytes());
    }
    raw
}

/// Builds one ONNX graph; see the module documentation.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    name: String,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    names: HashSet<String>,
    i64_constants: HashMap<Vec<i64>, Value>,
    f32_scalars: HashMap<u32, Value>,
    counter: usize,
    scope: String,
    initializer_bytes: usize,
}

impl GraphBuilder {
    /// An empty graph called `name`.
    pub fn new(name: &str) -> Self {
        Self { name: name.into(), ..Default::default() }
    }

    /// Sets the name prefix of subsequently created node outputs; returns the previous one.
    pub fn set_scope(&mut self, scope: &str) -> String {
        std::mem::replace(&mut self.scope, scope.to_string())
    }

    /// Bytes of initializer data added so far.
    pub fn initializer_bytes(&self) -> usize {
        self.initializer_bytes
    }

    fn claim(&mut self, name: &str) -> Result<(), OnnxError> {
        if !self.names.insert(name.to_string()) {
            return Err(OnnxError::Graph(format!("value name `{name}` defined twice")));
        }
        Ok(())
    }

    fn fresh(&mut self, op: &str) -> String {
        loop {
            self.counter += 1;
            let name =
                if self.scope.is_empty() { format!("{op}_{}", self.counter) } else { format!("{}/{op}_{}", self.scope, self.counter) };
            if self.names.insert(name.clone()) {
                return name;
            }
        }
    }

    /// Declares a graph input.
    pub fn input(&mut self, name: &str, elem: ElemType, dims: &[Dim]) -> Result<Value, OnnxError> {
        self.claim(name)?;
        self.inputs.push(value_info(name, elem, dims));
        Ok(Value(name.into()))
    }

    /// Adds a float32 initializer (a weight) under `name`; `data.len()` must equal the product of `dims`.
    pub fn initializer(&mut self, name: &str, dims: &[usize], data: &[f32]) -> Result<Value, OnnxError> {
        let n: usize = dims.iter().product();
        if n != data.len() {
            return Err(OnnxError::Graph(format!("initializer `{name}`: shape {dims:?} needs {n} values, got {}", data.len())));
        }
        self.claim(name)?;
        let raw = f32_bytes(data);
        self.initializer_bytes += raw.len();
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: data_type::FLOAT,
            name: name.into(),
            raw_data: raw,
            ..Default::default()
        });
        Ok(Value(name.into()))
    }

    /// An int64 constant (shapes, axes), shared between uses of the same values.
    pub fn const_i64(&mut self, values: &[i64]) -> Value {
        if let Some(v) = self.i64_constants.get(values) {
            return v.clone();
        }
        let name = self.fresh("const_i64");
        let mut raw = Vec::with_capacity(values.len() * 8);
        for v in values {
            raw.extend_from_slice(&v.to_le_bytes());
        }
        self.initializers.push(TensorProto {
            dims: vec![values.len() as i64],
            data_type: data_type::INT64,
            name: name.clone(),
            raw_data: raw,
            ..Default::default()
        });
        let v = Value(name);
        self.i64_constants.insert(values.to_vec(), v.clone());
        v
    }

    /// A float32 scalar constant (rank 0), shared between uses of the same value.
    pub fn const_f32(&mut self, value: f32) -> Value {
        if let Some(v) = self.f32_scalars.get(&value.to_bits()) {
            return v.clone();
        }
        let name = self.fresh("const_f32");
        self.initializers.push(TensorProto {
            dims: vec![],
            data_type: data_type::FLOAT,
            name: name.clone(),
            raw_data: value.to_le_bytes().to_vec(),
            ..Default::default()
        });
        let v = Value(name);
        self.f32_scalars.insert(value.to_bits(), v.clone());
        v
    }

    /// A float32 constant tensor with a generated name.
    pub fn const_tensor(&mut self, dims: &[usize], data: &[f32]) -> Result<Value, OnnxError> {
        let name = self.fresh("const");
        self.names.remove(&name);
        self.initializer(&name, dims, data)
    }

    /// Adds a node with one output and returns it. Empty input names (`""`) mark omitted optional inputs.
    pub fn node(&mut self, op: &str, inputs: &[&Value], attrs: Vec<Attr>) -> Value {
        self.node_n(op, inputs, attrs, 1).remove(0)
    }

    /// Adds a node with `n_outputs` outputs.
    pub fn node_n(&mut self, op: &str, inputs: &[&Value], attrs: Vec<Attr>, n_outputs: usize) -> Vec<Value> {
        let outputs: Vec<String> = (0..n_outputs).map(|_| self.fresh(op)).collect();
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|v| v.0.clone()).collect(),
            output: outputs.clone(),
            name: format!("{}#node", outputs[0]),
            op_type: op.into(),
            attribute: attrs,
            ..Default::default()
        });
        outputs.into_iter().map(Value).collect()
    }

    /// Declares `value` as the graph output `name` (through an `Identity` node).
    pub fn output(&mut self, value: &Value, name: &str, elem: ElemType, dims: &[Dim]) -> Result<(), OnnxError> {
        self.claim(name)?;
        self.nodes.push(NodeProto {
            input: vec![value.0.clone()],
            output: vec![name.into()],
            name: format!("{name}#output"),
            op_type: "Identity".into(),
            ..Default::default()
        });
        self.outputs.push(value_info(name, elem, dims));
        Ok(())
    }

    /// Finishes the model: IR version 8, opset [`OPSET`], producer `idflow`, with metadata pairs.
    pub fn finish(self, doc: &str, metadata: &[(&str, String)]) -> ModelProto {
        ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
            producer_name: "idflow".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            domain: "org.idflow".into(),
            model_version: 1,
            doc_string: doc.into(),
            graph: Some(GraphProto {
                node: self.nodes,
                name: self.name,
                initializer: self.initializers,
                doc_string: String::new(),
                input: self.inputs,
                output: self.outputs,
                value_info: vec![],
            }),
            metadata_props: metadata.iter().map(|(k, v)| StringStringEntryProto { key: (*k).into(), value: v.clone() }).collect(),
        }
    }

    // ---- element-wise ----

    /// `a + b` (broadcasting).
    pub fn add(&mut self, a: &Value, b: &Value) -> Value {
        self.node("Add", &[a, b], vec![])
    }

    /// `a − b` (broadcasting).
    pub fn sub(&mut self, a: &Value, b: &Value) -> Value {
        self.node("Sub", &[a, b], vec![])
    }

    /// `a · b` (broadcasting).
    pub fn mul(&mut self, a: &Value, b: &Value) -> Value {
        self.node("Mul", &[a, b], vec![])
    }

    /// `a · s` for a float scalar `s`.
    pub fn scale(&mut self, a: &Value, s: f32) -> Value {
        let c = self.const_f32(s);
        self.mul(a, &c)
    }

    /// `a + s` for a float scalar `s`.
    pub fn add_scalar(&mut self, a: &Value, s: f32) -> Value {
        let c = self.const_f32(s);
        self.add(a, &c)
    }

    /// SiLU / Swish: `x · sigmoid(x)`.
    pub fn silu(&mut self, x: &Value) -> Value {
        let s = self.node("Sigmoid", &[x], vec![]);
        self.mul(x, &s)
    }

    /// Exact GELU: `0.5 · x · (1 + erf(x / √2))`.
    pub fn gelu_erf(&mut self, x: &Value) -> Value {
        let inv_sqrt2 = self.const_f32(std::f32::consts::FRAC_1_SQRT_2);
        let xs = self.mul(x, &inv_sqrt2);
        let e = self.node("Erf", &[&xs], vec![]);
        let one = self.const_f32(1.0);
        let e1 = self.add(&e, &one);
        let xe = self.mul(x, &e1);
        self.scale(&xe, 0.5)
    }

    // ---- shape ----

    /// `Reshape` to a constant target shape (`0` copies the input dimension, `-1` is inferred).
    pub fn reshape(&mut self, x: &Value, shape: &[i64]) -> Value {
        let s = self.const_i64(shape);
        self.node("Reshape", &[x, &s], vec![])
    }

    /// `Reshape` to the run-time shape of another value.
    pub fn reshape_like(&mut self, x: &Value, like: &Value) -> Value {
        let s = self.node("Shape", &[like], vec![]);
        self.node("Reshape", &[x, &s], vec![])
    }

    /// `Transpose` with a permutation.
    pub fn transpose(&mut self, x: &Value, perm: &[i64]) -> Value {
        self.node("Transpose", &[x], vec![attr_ints("perm", perm)])
    }

    /// `Unsqueeze` at the given axes (opset 13+: axes as an input).
    pub fn unsqueeze(&mut self, x: &Value, axes: &[i64]) -> Value {
        let a = self.const_i64(axes);
        self.node("Unsqueeze", &[x, &a], vec![])
    }

    /// `Concat` along `axis`.
    pub fn concat(&mut self, xs: &[&Value], axis: i64) -> Value {
        self.node("Concat", xs, vec![attr_int("axis", axis)])
    }

    /// `Flatten` to 2-D at `axis`.
    pub fn flatten(&mut self, x: &Value, axis: i64) -> Value {
        self.node("Flatten", &[x], vec![attr_int("axis", axis)])
    }

    /// `Cast` to an element type.
    pub fn cast(&mut self, x: &Value, to: ElemType) -> Value {
        self.node("Cast", &[x], vec![attr_int("to", to.code() as i64)])
    }

    // ---- linear algebra ----

    /// `Conv` (2-D, no groups): `pads` = `[top, left, bottom, right]`.
    pub fn conv2d(&mut self, x: &Value, w: &Value, b: Option<&Value>, stride: i64, pads: [i64; 4]) -> Value {
        let attrs = vec![attr_ints("strides", &[stride, stride]), attr_ints("pads", &pads)];
        match b {
            Some(b) => self.node("Conv", &[x, w, b], attrs),
            None => self.node("Conv", &[x, w], attrs),
        }
    }

    /// `ConvTranspose` (2-D, weight `[C_in, C_out, k, k]`) with symmetric padding.
    pub fn conv_transpose2d(&mut self, x: &Value, w: &Value, b: Option<&Value>, stride: i64, pad: i64) -> Value {
        let attrs = vec![attr_ints("strides", &[stride, stride]), attr_ints("pads", &[pad, pad, pad, pad])];
        match b {
            Some(b) => self.node("ConvTranspose", &[x, w, b], attrs),
            None => self.node("ConvTranspose", &[x, w], attrs),
        }
    }

    /// `Gemm`: `x · wᵀ + b` for a PyTorch `Linear` weight `[out, in]`.
    pub fn linear(&mut self, x: &Value, w: &Value, b: Option<&Value>) -> Value {
        let attrs = vec![attr_int("transB", 1)];
        match b {
            Some(b) => self.node("Gemm", &[x, w, b], attrs),
            None => self.node("Gemm", &[x, w], attrs),
        }
    }

    /// `MatMul` (numpy broadcasting).
    pub fn matmul(&mut self, a: &Value, b: &Value) -> Value {
        self.node("MatMul", &[a, b], vec![])
    }

    /// `Softmax` over `axis`.
    pub fn softmax(&mut self, x: &Value, axis: i64) -> Value {
        self.node("Softmax", &[x], vec![attr_int("axis", axis)])
    }

    // ---- normalisation and activations with parameters ----

    /// PyTorch `GroupNorm(groups, C, eps)` on `[B, C, …]`: statistics by `InstanceNormalization`
    /// over a `[B, groups, −1]` view, then the per-channel affine `gamma`, `beta` (`[C]` values,
    /// passed reshaped to `[C, 1, …]` by the caller through `affine_shape`).
    pub fn group_norm(&mut self, x: &Value, groups: usize, eps: f32, gamma: &Value, beta: &Value) -> Result<Value, OnnxError> {
        let ones = self.const_tensor(&[groups], &vec![1.0; groups])?;
        let zeros = self.const_tensor(&[groups], &vec![0.0; groups])?;
        let grouped = self.reshape(x, &[0, groups as i64, -1]);
        let normed = self.node("InstanceNormalization", &[&grouped, &ones, &zeros], vec![attr_float("epsilon", eps)]);
        let back = self.reshape_like(&normed, x);
        let scaled = self.mul(&back, gamma);
        Ok(self.add(&scaled, beta))
    }

    /// Eval-mode `BatchNormalization` with running statistics.
    pub fn batch_norm(&mut self, x: &Value, scale: &Value, bias: &Value, mean: &Value, var: &Value, eps: f32) -> Value {
        self.node("BatchNormalization", &[x, scale, bias, mean, var], vec![attr_float("epsilon", eps)])
    }

    /// `PRelu` with a slope broadcastable to `x` (e.g. `[C, 1, 1]`).
    pub fn prelu(&mut self, x: &Value, slope: &Value) -> Value {
        self.node("PRelu", &[x, slope], vec![])
    }

    /// Nearest-neighbour ×`factor` upsampling of the two spatial axes (PyTorch `interpolate(mode="nearest")`).
    pub fn resize_nearest(&mut self, x: &Value, factor: f32) -> Result<Value, OnnxError> {
        let scales = self.const_tensor(&[4], &[1.0, 1.0, factor, factor])?;
        let roi = Value(String::new());
        Ok(self.node(
            "Resize",
            &[x, &roi, &scales],
            vec![attr_str("mode", "nearest"), attr_str("coordinate_transformation_mode", "asymmetric"), attr_str("nearest_mode", "floor")],
        ))
    }
}
