//! Restricted pickle: a reader that interprets pickles as data without executing anything, and a
//! small protocol 2 writer.
//!
//! Hand-written because the maintained Rust pickle crates either execute nothing but also cannot
//! represent torch's `REDUCE`/`BUILD`/persistent-id structure faithfully, or do not let the caller
//! restrict globals with an error that names the file, offset and global. See [`reader`] for the
//! VM and its safety limits.

pub mod allow;
pub mod opcodes;
pub mod reader;
pub mod value;
pub mod writer;

pub use allow::AllowList;
pub use reader::{load, load_file};
pub use value::{CallKind, Object, Value};
pub use writer::{dumps, BytesStyle, PickleWriteError};

/// Decodes a `_codecs.encode(text, 'latin1')` call recorded in a pickle into its bytes: what
/// Python 3 writes for `bytes` in protocol 2 and numpy for array data. Returns `None` if the
/// value is not such a call or the text has characters above U+00FF.
pub fn codecs_encode_bytes(v: &Value) -> Option<Vec<u8>> {
    let o = v.as_object()?;
    if !o.callable.is_global("_codecs", "encode") {
        return None;
    }
    let args = o.args.as_seq()?;
    let text = args.first()?.as_str()?;
    let encoding = args.get(1).and_then(|e| e.as_str()).unwrap_or("utf-8");
    match encoding.to_ascii_lowercase().replace('-', "_").as_str() {
        "latin1" | "latin_1" | "iso_8859_1" | "iso8859_1" | "l1" => text.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect(),
        "utf8" | "utf_8" => Some(text.as_bytes().to_vec()),
        _ => None,
    }
}

/// The bytes of a value that holds a byte string in any of the spellings pickles use:
/// `bytes` (protocol 3+), Python 2 `str`, `_codecs.encode(…, 'latin1')` (protocol 2 from Python 3)
/// or `bytes()`/`bytearray()` of nothing.
pub fn value_bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::Bytes(b) => Some(b.clone()),
        Value::Object(o)
            if (o.callable.is_global("__builtin__", "bytes")
                || o.callable.is_global("builtins", "bytes")
                || o.callable.is_global("builtins", "bytearray")
                || o.callable.is_global("__builtin__", "bytearray"))
                && o.args.as_seq().is_some_and(|a| a.is_empty()) =>
        {
            Some(Vec::new())
        }
        _ => codecs_encode_bytes(v),
    }
}
