//! Emitters of the face encoders: ElasticFace `IResNet` and TFace `IR` backbones, eval mode.
//!
//! Graph: input `image` `[batch, 3, 112, 112]` (normalised `((x/255) − 0.5)/0.5`), output
//! `features` `[batch, D]` (raw, before L2 normalisation) — the same computation as
//! [`crate::iresnet::IResNet`] / [`crate::iresnet::IrBackbone`]. BatchNorms are emitted as
//! `BatchNormalization` with the running statistics; ONNX Runtime folds the ones that follow a
//! convolution into its weights at session creation.

use super::builder::{Dim, ElemType, GraphBuilder, Value};
use super::layers::{batch_norm, conv2d, linear, prelu};
use super::weights::Weights;
use super::{finish_model, CompileOptions, OnnxError};
use crate::checkpoint::StateDict;
use crate::iresnet::{iresnet_layers, IResNetConfig};

const BN_EPS: f32 = 1e-5;
const WIDTHS: [usize; 4] = [64, 128, 256, 512];

fn image_input(g: &mut GraphBuilder, side: i64) -> Result<Value, OnnxError> {
    g.input("image", ElemType::F32, &[Dim::Symbol("batch"), Dim::Fixed(3), Dim::Fixed(side), Dim::Fixed(side)])
}

/// Compiles an ElasticFace `IResNet` state dict (e.g. `295672backbone.pth`) to ONNX bytes.
pub fn compile_iresnet(dict: &StateDict, config: &IResNetConfig, options: &CompileOptions) -> Result<Vec<u8>, OnnxError> {
    let w = Weights::new(dict, options.prefix.as_deref(), "conv1.weight")?;
    let mut g = GraphBuilder::new("iresnet");
    let x = image_input(&mut g, config.input_size as i64)?;
    let stem = config.widths[0];
    let h = conv2d(&mut g, &w, "conv1", &x, (3, stem, 3), 1, [1; 4], false)?;
    let h = batch_norm(&mut g, &w, "bn1", &h, stem, BN_EPS, true)?;
    let mut h = prelu(&mut g, &w, "prelu", &h, stem)?;
    let mut inplanes = stem;
    for (s, (&blocks, &planes)) in config.layers.iter().zip(config.widths.iter()).enumerate() {
        for b in 0..blocks {
            let key = format!("layer{}.{b}", s + 1);
            g.set_scope(&key);
            let stride = if b == 0 { 2 } else { 1 };
            let out = batch_norm(&mut g, &w, &format!("{key}.bn1"), &h, inplanes, BN_EPS, true)?;
            let out = conv2d(&mut g, &w, &format!("{key}.conv1"), &out, (inplanes, planes, 3), 1, [1; 4], false)?;
            let out = batch_norm(&mut g, &w, &format!("{key}.bn2"), &out, planes, BN_EPS, true)?;
            let out = prelu(&mut g, &w, &format!("{key}.prelu"), &out, planes)?;
            let out = conv2d(&mut g, &w, &format!("{key}.conv2"), &out, (planes, planes, 3), stride, [1; 4], false)?;
            let out = batch_norm(&mut g, &w, &format!("{key}.bn3"), &out, planes, BN_EPS, true)?;
            let identity = if stride != 1 || inplanes != planes {
                let d = conv2d(&mut g, &w, &format!("{key}.downsample.0"), &h, (inplanes, planes, 1), stride, [0; 4], false)?;
                batch_norm(&mut g, &w, &format!("{key}.downsample.1"), &d, planes, BN_EPS, true)?
            } else {
                h.clone()
            };
            h = g.add(&out, &identity);
            inplanes = planes;
        }
    }
    g.set_scope("head");
    let h = batch_norm(&mut g, &w, "bn2", &h, config.widths[3], BN_EPS, true)?;
    let h = g.flatten(&h, 1);
    let h = linear(&mut g, &w, "fc", &h, config.fc_in(), config.num_features)?;
    let h = batch_norm(&mut g, &w, "features", &h, config.num_features, BN_EPS, true)?;
    g.output(&h, "features", ElemType::F32, &[Dim::Symbol("batch"), Dim::Fixed(config.num_features as i64)])?;
    let config_json = serde_json::to_string(config).map_err(|e| OnnxError::Config(e.to_string()))?;
    finish_model(
        g,
        &w,
        options,
        "ElasticFace IResNet face encoder (eval mode): image [B,3,112,112] -> raw features",
        &[("idflow.model", "iresnet".into()), ("idflow.config", config_json)],
    )
}

/// Compiles a TFace `IR-depth` backbone (18, 34, 50 or 100) to ONNX bytes; output width 512.
pub fn compile_tface_ir(dict: &StateDict, depth: usize, options: &CompileOptions) -> Result<Vec<u8>, OnnxError> {
    let layers = iresnet_layers(depth)
        .filter(|_| depth <= 100)
        .ok_or_else(|| OnnxError::Config(format!("TFace IR backbone: unsupported depth {depth} (18, 34, 50 or 100)")))?;
    let w = Weights::new(dict, options.prefix.as_deref(), "input_layer.0.weight")?;
    let mut g = GraphBuilder::new("tface_ir");
    let x = image_input(&mut g, 112)?;
    let h = conv2d(&mut g, &w, "input_layer.0", &x, (3, 64, 3), 1, [1; 4], false)?;
    let h = batch_norm(&mut g, &w, "input_layer.1", &h, 64, BN_EPS, true)?;
    let mut h = prelu(&mut g, &w, "input_layer.2", &h, 64)?;
    let mut in_c = 64;
    let mut index = 0;
    for (&units, &depth_c) in layers.iter().zip(WIDTHS.iter()) {
        for u in 0..units {
            let key = format!("body.{index}");
            g.set_scope(&key);
            let stride = if u == 0 { 2 } else { 1 };
            let r = format!("{key}.res_layer");
            let out = batch_norm(&mut g, &w, &format!("{r}.0"), &h, in_c, BN_EPS, true)?;
            let out = conv2d(&mut g, &w, &format!("{r}.1"), &out, (in_c, depth_c, 3), 1, [1; 4], false)?;
            let out = batch_norm(&mut g, &w, &format!("{r}.2"), &out, depth_c, BN_EPS, true)?;
            let out = prelu(&mut g, &w, &format!("{r}.3"), &out, depth_c)?;
            let out = conv2d(&mut g, &w, &format!("{r}.4"), &out, (depth_c, depth_c, 3), stride, [1; 4], false)?;
            let out = batch_norm(&mut g, &w, &format!("{r}.5"), &out, depth_c, BN_EPS, true)?;
            let shortcut = if in_c != depth_c {
                let s = format!("{key}.shortcut_layer");
                let d = conv2d(&mut g, &w, &format!("{s}.0"), &h, (in_c, depth_c, 1), stride, [0; 4], false)?;
                batch_norm(&mut g, &w, &format!("{s}.1"), &d, depth_c, BN_EPS, true)?
            } else if stride > 1 {
                // MaxPool2d(kernel 1, stride s): strided subsampling
                g.node(
                    "MaxPool",
                    &[&h],
                    vec![super::builder::attr_ints("kernel_shape", &[1, 1]), super::builder::attr_ints("strides", &[stride, stride])],
                )
            } else {
                h.clone()
            };
            h = g.add(&out, &shortcut);
            in_c = depth_c;
            index += 1;
        }
    }
    g.set_scope("output_layer");
    let h = batch_norm(&mut g, &w, "output_layer.0", &h, 512, BN_EPS, true)?;
    let h = g.flatten(&h, 1);
    let h = linear(&mut g, &w, "output_layer.3", &h, 512 * 7 * 7, 512)?;
    let h = batch_norm(&mut g, &w, "output_layer.4", &h, 512, BN_EPS, false)?;
    g.output(&h, "features", ElemType::F32, &[Dim::Symbol("batch"), Dim::Fixed(512)])?;
    finish_model(
        g,
        &w,
        options,
        "TFace IR backbone (eval mode): image [B,3,112,112] -> raw features",
        &[("idflow.model", "tface_ir".into()), ("idflow.depth", depth.to_string())],
    )
}
