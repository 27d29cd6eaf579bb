//! IResNet against the official ElasticFace outputs (`iresnet_tiny_*`) and TFace IR-50 shapes.

mod common;

use candle_core::{DType, Device, Module, Tensor, D};
use common::{assert_close, get, load_io, reference};
use idflow_models::io::checkpoint::{load_model, parameter_shapes, LoadOptions, StateDict};
use idflow_models::iresnet::{IResNet, IResNetConfig, IrBackbone};

fn l2_normalize(x: &Tensor) -> Tensor {
    let n = x.sqr().unwrap().sum_keepdim(D::Minus1).unwrap().sqrt().unwrap();
    x.broadcast_div(&n).unwrap()
}

#[test]
fn tiny_iresnet_matches_official_features() {
    let dict = StateDict::from_torch_file(reference("iresnet_tiny.pth")).unwrap();
    assert_eq!(dict.len(), 115);
    let cfg = idflow_models::io::presets::reference_tiny_iresnet();
    let (net, report) = load_model(&dict, &LoadOptions::default(), |vb| IResNet::new(&cfg, vb)).unwrap();
    assert_eq!(report.consumed.len(), 115, "every key (incl. num_batches_tracked) must be consumed");
    assert!(report.unexpected.is_empty() && report.missing.is_empty() && report.outside_prefix.is_empty());

    let io = load_io("iresnet_tiny_io.safetensors");
    // preprocessing ((x/255) - 0.5)/0.5 from the uint8 image
    let img = get(&io, "image_uint8").to_dtype(DType::F32).unwrap();
    let input = (((img / 255.0).unwrap() - 0.5).unwrap() / 0.5).unwrap();
    assert_close("input", &input, get(&io, "input"), 1e-6);

    let features = net.forward(get(&io, "input")).unwrap();
    assert_close("features", &features, get(&io, "features"), 1e-4);
    assert_close("embedding", &l2_normalize(&features), get(&io, "embedding"), 2e-5);

    let flipped = net.forward(&get(&io, "input").flip(&[3]).unwrap()).unwrap();
    assert_close("features_flipped_input", &flipped, get(&io, "features_flipped_input"), 1e-4);
    let tta = l2_normalize(&(features + flipped).unwrap());
    assert_close("embedding_flip_tta", &tta, get(&io, "embedding_flip_tta"), 2e-5);
}

#[test]
fn tface_ir50_builds_with_the_expected_keys_and_shapes() {
    let shapes = parameter_shapes(|vb| IrBackbone::new(50, vb)).unwrap();
    let find = |k: &str| shapes.iter().find(|(n, _)| n == k).map(|(_, s)| s.dims().to_vec());
    assert_eq!(find("input_layer.0.weight"), Some(vec![64, 3, 3, 3]));
    assert_eq!(find("body.0.res_layer.1.weight"), Some(vec![64, 64, 3, 3]));
    // first unit keeps 64 channels: MaxPool shortcut, no parameters
    assert_eq!(find("body.0.shortcut_layer.0.weight"), None);
    assert_eq!(find("body.3.shortcut_layer.0.weight"), Some(vec![128, 64, 1, 1]));
    assert_eq!(find("body.23.res_layer.5.running_var"), Some(vec![512]));
    assert!(find("body.24.res_layer.0.weight").is_none(), "IR-50 has 24 units");
    assert_eq!(find("output_layer.3.weight"), Some(vec![512, 512 * 7 * 7]));
    // affine-free final BatchNorm1d
    assert_eq!(find("output_layer.4.running_mean"), Some(vec![512]));
    assert_eq!(find("output_layer.4.weight"), None);

    // forward shape on a random model
    let dev = Device::Cpu;
    let varmap = candle_nn::VarMap::new();
    let net = IrBackbone::new(18, candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &dev)).unwrap();
    let x = Tensor::randn(0f32, 1.0, (1, 3, 112, 112), &dev).unwrap();
    assert_eq!(net.forward(&x).unwrap().dims(), &[1, 512]);
}

#[test]
fn iresnet50_has_the_standard_parameter_count() {
    // Σ over stem, 24 IBasicBlocks (4 with a 1×1 downsample), bn2, fc (25088→512) and the
    // `features` BatchNorm1d of weights + biases + PReLU slopes, counted by hand from the
    // architecture: 43,590,848 (the "43.6 M" usually quoted for IResNet-50).
    let cfg = IResNetConfig::depth(50).unwrap();
    let shapes = parameter_shapes(|vb| IResNet::new(&cfg, vb)).unwrap();
    let learnable: usize =
        shapes.iter().filter(|(n, _)| !n.ends_with("running_mean") && !n.ends_with("running_var")).map(|(_, s)| s.elem_count()).sum();
    assert_eq!(learnable, 43_590_848);
}

#[test]
fn strided_subsampling_equals_maxpool_with_kernel_1() {
    let dev = Device::Cpu;
    for (h, w) in [(8, 8), (7, 5)] {
        let x = Tensor::randn(0f32, 1.0, (2, 3, h, w), &dev).unwrap();
        let pooled = x.max_pool2d_with_stride(1, 2).unwrap();
        let sub = idflow_models::nn::layers::subsample2d(&x, 2).unwrap();
        assert_close(&format!("subsample {h}x{w}"), &sub, &pooled, 0.0);
    }
}
