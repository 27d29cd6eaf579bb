//! torch.save zip archives: the reference checkpoints, a crafted nested checkpoint, hostile ones.

mod formats_common;

use std::io::Write;
use std::path::Path;

use formats_common::{reference, safetensor};
use idflow_dataset::formats::pickle::{self, BytesStyle, CallKind, Object, Value};
use idflow_dataset::formats::torch_zip::{self, DType, NamedTensor};
use idflow_dataset::formats::FormatError;

type KeyList = Vec<(String, Vec<usize>, String)>;

/// (name, shape, dtype) sections of a `*_keys.txt` file, keyed by the checkpoint they describe.
fn parse_keys(path: &Path) -> Vec<(String, KeyList)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut sections: Vec<(String, KeyList)> = Vec::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("# ") {
            if let Some((file, _)) = h.split_once(": ") {
                if file.contains('.') {
                    sections.push((file.to_string(), Vec::new()));
                    continue;
                }
            }
            if sections.is_empty() {
                sections.push((String::new(), Vec::new()));
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        let shape: Vec<usize> = cols[1]
            .trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().parse().unwrap())
            .collect();
        let dtype = cols.get(2).copied().unwrap_or("float32").to_string();
        sections.last_mut().unwrap().1.push((cols[0].to_string(), shape, dtype));
    }
    sections
}

fn check_against_keys(ckpt: &str, expected: &[(String, Vec<usize>, String)]) -> Vec<NamedTensor> {
    let tensors = torch_zip::read_state_dict(&reference(ckpt)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(tensors.len(), expected.len(), "{ckpt}: entry count");
    for (t, (name, shape, dtype)) in tensors.iter().zip(expected) {
        assert_eq!(&t.name, name, "{ckpt}: key order");
        assert_eq!(&t.shape, shape, "{ckpt}: {name} shape");
        assert_eq!(t.dtype.torch_name(), dtype, "{ckpt}: {name} dtype");
        assert_eq!(t.data.len(), t.numel() * t.dtype.size(), "{ckpt}: {name} bytes");
    }
    tensors
}

#[test]
fn idiff_unet_checkpoint_matches_key_list_and_schedule() {
    let keys = parse_keys(&reference("idiff_unet_tiny_keys.txt"));
    let tensors = check_against_keys("idiff_unet_tiny.ckpt", &keys[0].1);
    assert_eq!(tensors.len(), 846);
    let schedule = reference("ddpm_schedule_T1000.safetensors");
    for name in [
        "betas",
        "alphas",
        "sigmas",
        "sqrt_alphas_inv",
        "alpha_bars",
        "sqrt_alpha_bars",
        "sqrt_one_minus_alpha_bars",
        "one_minus_alphas_over_sqrt_one_minus_alpha_bars",
    ] {
        let (dt, shape, bytes) = safetensor(&schedule, name);
        assert_eq!(dt, safetensors::Dtype::F32);
        let t = tensors.iter().find(|t| t.name == name).unwrap();
        assert_eq!(t.shape, shape);
        assert_eq!(t.data, bytes, "{name} differs from the safetensors fixture");
    }
    let stripped = torch_zip::strip_prefixes(tensors, &["eps_model."]);
    assert!(stripped.iter().any(|t| t.name == "image_proj.weight"));
    assert!(stripped.iter().all(|t| !t.name.starts_with("eps_model.")));
}

#[test]
fn iresnet_and_vq_checkpoints_match_key_lists() {
    let keys = parse_keys(&reference("iresnet_tiny_keys.txt"));
    let t = check_against_keys("iresnet_tiny.pth", &keys[0].1);
    let nbt = t.iter().find(|t| t.name == "bn1.num_batches_tracked").unwrap();
    assert_eq!(nbt.dtype, DType::I64);
    assert!(nbt.shape.is_empty());
    assert_eq!(nbt.data, 0i64.to_le_bytes());
    let vq = parse_keys(&reference("vq_tiny_keys.txt"));
    assert_eq!(vq.len(), 2);
    for (file, keys) in &vq {
        check_against_keys(file, keys);
    }
}

fn global(m: &str, n: &str) -> Value {
    Value::Global { module: m.into(), name: n.into() }
}

fn call(callable: Value, args: Vec<Value>) -> Value {
    Value::Object(Box::new(Object {
        kind: CallKind::Reduce,
        callable,
        args: Value::Tuple(args),
        kwargs: None,
        state: None,
        dict_items: vec![],
        list_items: vec![],
    }))
}

fn tensor_value(key: &str, storage_class: &str, offset: i64, shape: &[i64], strides: &[i64]) -> Value {
    let pid = Value::PersistentId(Box::new(Value::Tuple(vec![
        Value::Str("storage".into()),
        global("torch", storage_class),
        Value::Str(key.into()),
        Value::Str("cpu".into()),
        Value::Int(6),
    ])));
    call(
        global("torch._utils", "_rebuild_tensor_v2"),
        vec![
            pid,
            Value::Int(offset),
            Value::Tuple(shape.iter().map(|&d| Value::Int(d)).collect()),
            Value::Tuple(strides.iter().map(|&d| Value::Int(d)).collect()),
            Value::Bool(false),
            call(global("collections", "OrderedDict"), vec![]),
        ],
    )
}

fn write_zip(path: &Path, records: &[(&str, Vec<u8>)]) {
    let f = std::fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in records {
        z.start_file(*name, opts).unwrap();
        z.write_all(data).unwrap();
    }
    z.finish().unwrap();
}

#[test]
fn nested_dict_with_views_is_flattened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested.pt");
    // storage 0: 6 f32 values 0..6; "module.w" is its transpose view (3,2) with strides (1,3)
    let storage: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let longs: Vec<u8> = [7i64, 8, 9, 10, 11, 12].iter().flat_map(|v| v.to_le_bytes()).collect();
    let inner = Value::Dict(vec![
        (Value::Str("module.w".into()), tensor_value("0", "FloatStorage", 0, &[3, 2], &[1, 3])),
        (Value::Str("module.b".into()), tensor_value("1", "LongStorage", 2, &[2], &[1])),
    ]);
    let root = Value::Dict(vec![(Value::Str("state_dict".into()), inner), (Value::Str("epoch".into()), Value::Int(3))]);
    let pkl = pickle::dumps(&root, BytesStyle::CodecsEncode).unwrap();
    write_zip(
        &path,
        &[
            ("nested/data.pkl", pkl),
            ("nested/byteorder", b"little".to_vec()),
            ("nested/data/0", storage),
            ("nested/data/1", longs),
            ("nested/.data/serialization_id", b"123".to_vec()),
        ],
    );
    let t = torch_zip::read_state_dict(&path).unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(t[0].name, "state_dict.module.w");
    assert_eq!(t[0].shape, vec![3, 2]);
    assert_eq!(t[0].to_f32().unwrap(), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    assert_eq!(t[1].dtype, DType::I64);
    assert_eq!(t[1].data, [9i64, 10].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
    let s = torch_zip::strip_prefixes(t, &["state_dict.module.", "module."]);
    assert_eq!(s[0].name, "w");
    assert_eq!(s[1].name, "b");
}

#[test]
fn out_of_bounds_view_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("oob.pt");
    let root = Value::Dict(vec![(Value::Str("w".into()), tensor_value("0", "FloatStorage", 4, &[3], &[1]))]);
    let pkl = pickle::dumps(&root, BytesStyle::CodecsEncode).unwrap();
    write_zip(&path, &[("oob/data.pkl", pkl), ("oob/data/0", vec![0u8; 24])]);
    let err = torch_zip::read_state_dict(&path).unwrap_err();
    assert!(err.to_string().contains("tensor 'w'") && err.to_string().contains("oob.pt"), "{err}");
}

#[test]
fn malicious_pickle_in_zip_is_rejected_naming_os_system() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("evil.ckpt");
    write_zip(&path, &[("evil/data.pkl", b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00echo\x85R.".to_vec())]);
    let err = torch_zip::read_state_dict(&path).unwrap_err();
    match &err {
        FormatError::ForbiddenGlobal { global, offset, .. } => {
            assert_eq!(global, "os.system");
            assert_eq!(*offset, 2);
        }
        other => panic!("unexpected {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("evil.ckpt") && msg.contains("data.pkl") && msg.contains("os.system"), "{msg}");
}

#[test]
fn legacy_truncated_and_foreign_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = dir.path().join("legacy.pt");
    std::fs::write(&legacy, b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.").unwrap();
    let err = torch_zip::read_state_dict(&legacy).unwrap_err();
    assert!(matches!(err, FormatError::Unsupported { .. }) && err.to_string().contains("legacy"), "{err}");

    let full = std::fs::read(reference("iresnet_tiny.pth")).unwrap();
    let cut = dir.path().join("cut.pth");
    for len in [10usize, 1000, full.len() / 2, full.len() - 30] {
        std::fs::write(&cut, &full[..len]).unwrap();
        let err = torch_zip::read_state_dict(&cut).unwrap_err();
        assert!(err.to_string().contains("cut.pth"), "{err}");
    }
    let txt = dir.path().join("notes.pt");
    std::fs::write(&txt, b"hello").unwrap();
    assert!(matches!(torch_zip::read_state_dict(&txt), Err(FormatError::Corrupt { offset: 0, .. })));
    let nopkl = dir.path().join("nopkl.pt");
    write_zip(&nopkl, &[("a/b.txt", b"x".to_vec())]);
    assert!(torch_zip::read_state_dict(&nopkl).unwrap_err().to_string().contains("data.pkl"));
}
