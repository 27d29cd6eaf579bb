//! Writing state dicts in the `torch.save` zip layout, so weights idflow trains load in the
//! official PyTorch code with `torch.load` (and back in idflow through [`super::torch_zip`]).
//!
//! The archive holds `<stem>/data.pkl` (pickle protocol 2: an `OrderedDict` of
//! `torch._utils._rebuild_tensor_v2(storage, 0, shape, stride, False, OrderedDict())` with each
//! storage a persistent id `('storage', torch.FloatStorage, '<n>', 'cpu', numel)`),
//! `<stem>/data/<n>` (raw little-endian float32), `<stem>/version`, `<stem>/.data/version` and
//! `<stem>/byteorder`. Only float32 tensors are written: everything idflow trains is float32.

use super::atomic::write_file_atomic;
use super::pickle::{dumps, BytesStyle, CallKind, Object, Value};
use super::FormatError;
use std::io::Write;
use std::path::Path;

/// One float32 tensor to save: name, shape, row-major values.
pub type SaveTensor = (String, Vec<usize>, Vec<f32>);

fn global(module: &str, name: &str) -> Value {
    Value::Global { module: module.into(), name: name.into() }
}

fn call(callable: Value, args: Vec<Value>, dict_items: Vec<(Value, Value)>) -> Value {
    Value::Object(Box::new(Object {
        kind: CallKind::Reduce,
        callable,
        args: Value::Tuple(args),
        kwargs: None,
        state: None,
        dict_items,
        list_items: Vec::new(),
    }))
}

fn ints(v: &[usize]) -> Value {
    Value::Tuple(v.iter().map(|&d| Value::Int(d as i64)).collect())
}

/// The `data.pkl` pickle for `tensors` (storage `n` is tensor `n`).
fn state_dict_pickle(tensors: &[SaveTensor], path: &Path) -> Result<Vec<u8>, FormatError> {
    let mut items = Vec::with_capacity(tensors.len());
    for (n, (name, shape, values)) in tensors.iter().enumerate() {
        let numel: usize = shape.iter().product();
        if numel != values.len() {
            return Err(FormatError::invalid(path, format!("tensor `{name}`: shape {shape:?} needs {numel} values, got {}", values.len())));
        }
        let mut strides = vec![1usize; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            strides[d] = strides[d + 1] * shape[d + 1];
        }
        let storage = Value::PersistentId(Box::new(Value::Tuple(vec![
            Value::Str("storage".into()),
            global("torch", "FloatStorage"),
            Value::Str(n.to_string()),
            Value::Str("cpu".into()),
            Value::Int(numel as i64),
        ])));
        let tensor = call(
            global("torch._utils", "_rebuild_tensor_v2"),
            vec![
                storage,
                Value::Int(0),
                ints(shape),
                ints(&strides),
                Value::Bool(false),
                call(global("collections", "OrderedDict"), vec![], vec![]),
            ],
            vec![],
        );
        items.push((Value::Str(name.clone()), tensor));
    }
    let dict = call(global("collections", "OrderedDict"), vec![], items);
    dumps(&dict, BytesStyle::CodecsEncode).map_err(|e| FormatError::invalid(path, format!("cannot pickle the state dict: {e}")))
}

/// The archive bytes; `stem` is the archive's top folder (torch uses the file stem).
pub fn encode_state_dict(stem: &str, tensors: &[SaveTensor], path: &Path) -> Result<Vec<u8>, FormatError> {
    let pickle = state_dict_pickle(tensors, path)?;
    let zerr = |e: zip::result::ZipError| FormatError::invalid(path, format!("cannot build the zip archive: {e}"));
    let ioerr = |e: std::io::Error| FormatError::io(path, e);
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file(format!("{stem}/data.pkl"), opts).map_err(zerr)?;
    zip.write_all(&pickle).map_err(ioerr)?;
    zip.start_file(format!("{stem}/byteorder"), opts).map_err(zerr)?;
    zip.write_all(b"little").map_err(ioerr)?;
    for (n, (_, _, values)) in tensors.iter().enumerate() {
        zip.start_file(format!("{stem}/data/{n}"), opts).map_err(zerr)?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        zip.write_all(&bytes).map_err(ioerr)?;
    }
    for record in ["version", ".data/version"] {
        zip.start_file(format!("{stem}/{record}"), opts).map_err(zerr)?;
        zip.write_all(b"3\n").map_err(ioerr)?;
    }
    Ok(zip.finish().map_err(zerr)?.into_inner())
}

/// Writes `tensors` to `path` (e.g. `ema_averaged_model.ckpt`) atomically in the `torch.save` layout.
pub fn write_state_dict(path: &Path, tensors: &[SaveTensor]) -> Result<(), FormatError> {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "archive".into());
    let bytes = encode_state_dict(&stem, tensors, path)?;
    write_file_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::torch_zip::{read_state_dict, DType};

    #[test]
    fn saved_state_dicts_read_back_through_the_restricted_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.ckpt");
        let tensors: Vec<SaveTensor> = vec![
            ("betas".into(), vec![4], vec![1.0, 2.0, 3.0, 4.5]),
            ("eps_model.conv.weight".into(), vec![2, 1, 2, 2], (0..8).map(|i| i as f32 * 0.25 - 1.0).collect()),
            ("scalar".into(), vec![], vec![7.0]),
        ];
        write_state_dict(&path, &tensors).unwrap();
        let back = read_state_dict(&path).unwrap();
        assert_eq!(back.len(), 3);
        for ((name, shape, values), t) in tensors.iter().zip(&back) {
            assert_eq!(&t.name, name);
            assert_eq!(&t.shape, shape);
            assert_eq!(t.dtype, DType::F32);
            let got: Vec<f32> = t.data.chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            assert_eq!(&got, values);
        }
    }

    #[test]
    fn a_shape_that_does_not_fit_the_values_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.pt");
        let err = write_state_dict(&path, &[("w".into(), vec![2, 2], vec![1.0])]).unwrap_err().to_string();
        assert!(err.contains("bad.pt") && err.contains("`w`"), "{err}");
        assert!(!path.exists());
    }
}
