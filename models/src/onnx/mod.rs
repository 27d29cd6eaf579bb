//! ONNX export of the native models and inference through ONNX Runtime.
//!
//! * [`proto`] — the `onnx.proto` messages idflow writes (hand-written `prost` structs).
//! * [`builder`] — a small graph builder with the operators the models need.
//! * [`trace`] — the ONNX implementation of the models' tensor-op interface
//!   ([`crate::nn::Backend`]): a model's single forward pass, run on it, emits the graph.
//! * [`export`] — the `compile_*` entry points: graph inputs, the traced forward pass, outputs
//!   and metadata, weights as initializers, a dynamic `batch` dimension.
//! * [`runtime`] — ONNX Runtime loaded at run time (`ORT_DYLIB_PATH`), session options and
//!   execution providers.
//! * [`cache`] — compile-once ONNX files keyed by the checkpoint's SHA-256 and the configuration.
//! * [`backends`] — [`crate::traits::Denoiser`], [`crate::traits::FirstStage`] and
//!   [`crate::traits::FaceEncoder`] backed by ORT sessions, interchangeable with the native models.
//!
//! Compilation needs no Python and no `protoc`: the trace reads the official state dict
//! ([`crate::io::checkpoint::StateDict`]) by key, with the native loader's prefix detection and strict
//! key accounting, and [`serialize`] encodes the `ModelProto` with `prost`.

pub mod backends;
pub mod builder;
pub mod cache;
pub mod export;
pub mod proto;
pub mod random;
pub mod runtime;
pub mod trace;
pub mod weights;

use std::path::{Path, PathBuf};

use prost::Message;

pub use backends::{OrtDenoiser, OrtFaceEncoder, OrtFirstStage};
pub use cache::{compile_cached, default_cache_dir, CachedModel, OnnxModelSpec};
pub use export::{
    compile_iresnet, compile_tface_ir, compile_unet, compile_vq_decoder, compile_vq_encoder, TimestepType, UNetExport, SCHEDULE_METADATA,
};
pub use runtime::{find_library, ExecutionProvider, OrtRuntime, OrtSession, SessionOptions, TensorInput, TensorOutput};

/// Largest serialised model protobuf permits (2 GiB − 1); bigger models need external data.
pub const MAX_PROTO_BYTES: usize = i32::MAX as usize;

/// Errors of ONNX compilation and ONNX Runtime inference.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// A weight is missing, has the wrong shape, or the file has keys the model does not use.
    #[error("state dict {source_name}: `{key}`: {reason}")]
    Weight {
        /// Where the state dict came from.
        source_name: String,
        /// The key(s) concerned (with prefix).
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The model configuration cannot be exported as given.
    #[error("invalid model configuration for ONNX export: {0}")]
    Config(String),
    /// The graph builder was used inconsistently (a bug in a model definition or the trace).
    #[error("ONNX graph construction failed: {0}")]
    Graph(String),
    /// The serialised model would exceed protobuf's 2 GiB limit.
    #[error("the ONNX model would be {bytes} bytes, over protobuf's 2 GiB limit (external data is not implemented)")]
    TooLarge {
        /// Size of the weights in bytes.
        bytes: usize,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The ONNX Runtime shared library could not be found or loaded.
    #[error("ONNX Runtime library not available: {reason}. {hint}")]
    RuntimeMissing {
        /// What was tried.
        reason: String,
        /// How to get the library.
        hint: &'static str,
    },
    /// An execution provider that was asked for is not usable.
    #[error("execution provider `{requested}` is not available: {reason} (providers in this ONNX Runtime build: {available:?})")]
    Provider {
        /// The provider asked for.
        requested: String,
        /// Why it cannot be used.
        reason: String,
        /// Providers the loaded library offers.
        available: Vec<String>,
    },
    /// ONNX Runtime reported an error (session creation or a run).
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    /// An input tensor has the wrong shape or type.
    #[error("invalid input `{name}`: {reason}")]
    Input {
        /// The input.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A native model or tensor operation failed.
    #[error(transparent)]
    Model(#[from] crate::error::ModelError),
    /// A candle tensor operation failed.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

impl From<OnnxError> for crate::error::ModelError {
    /// ONNX errors surface through the model traits as a wrapped candle error (the trait's error
    /// type has no backend variant); the original [`OnnxError`] stays reachable by downcasting.
    fn from(e: OnnxError) -> Self {
        match e {
            OnnxError::Model(m) => m,
            OnnxError::Candle(c) => crate::error::ModelError::Candle(c),
            other => crate::error::ModelError::Candle(candle_core::Error::wrap(other)),
        }
    }
}

/// Options shared by all `compile_*` functions.
#[derive(Clone, Debug, Default)]
pub struct CompileOptions {
    /// Key prefix of the model's weights; `None` detects one of the known prefixes.
    pub prefix: Option<String>,
    /// Allow keys under the prefix that the model does not use (PyTorch `strict=False`).
    pub allow_unused_keys: bool,
}

/// Encodes a model, refusing ones over protobuf's 2 GiB limit.
pub fn serialize(model: &proto::ModelProto) -> Result<Vec<u8>, OnnxError> {
    let len = model.encoded_len();
    if len > MAX_PROTO_BYTES {
        return Err(OnnxError::TooLarge { bytes: len });
    }
    Ok(model.encode_to_vec())
}

/// Writes serialised model bytes to `path` atomically (temporary file in the same folder, fsync,
/// rename), so a reader never sees a half-written model.
pub fn compile_to_file(bytes: &[u8], path: impl AsRef<Path>) -> Result<(), OnnxError> {
    let path = path.as_ref();
    let io = |source| OnnxError::Io { path: path.to_path_buf(), source };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let file_name = path.file_name().ok_or_else(|| io(std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name")))?;
    // Unique per process and call, so concurrent writers (threads or processes) never share a
    // temporary file; the last rename wins and every rename installs a complete file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{}.{}.{n}.tmp", file_name.to_string_lossy(), std::process::id()));
    idflow_dataset::formats::atomic::write_via_temp(&tmp, path, bytes).map_err(io)
}

/// Finishes a graph into serialised model bytes, after the strict key check.
pub(crate) fn finish_model(
    g: builder::GraphBuilder,
    w: &weights::Weights<'_>,
    options: &CompileOptions,
    doc: &str,
    metadata: &[(&str, String)],
) -> Result<Vec<u8>, OnnxError> {
    if !options.allow_unused_keys {
        w.check_all_used()?;
    }
    if g.initializer_bytes() > MAX_PROTO_BYTES {
        return Err(OnnxError::TooLarge { bytes: g.initializer_bytes() });
    }
    serialize(&g.finish(doc, metadata))
}
