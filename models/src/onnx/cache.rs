//! A compile-once cache: ONNX files keyed by the checkpoint's SHA-256 and the model
//! configuration, so an operator given a checkpoint compiles it on the first run only.
//!
//! File name: `<kind>-<first 16 hex of sha256(checkpoint)>-<first 16 hex of sha256(spec)>.onnx`,
//! where the spec fingerprint covers the model kind, its configuration (JSON), the export flags,
//! the compile options and [`EMITTER_VERSION`]. Files are written atomically (temporary file +
//! rename), and compilation holds an exclusive lock on `<file>.lock`, so concurrent workers or
//! processes asking for the same model compile it once: the others wait and then read it.
//!
//! The cache folder engine code uses is [`default_cache_dir`]: `$IDFLOW_CACHE/onnx`, else
//! `$XDG_CACHE_HOME/idflow/onnx`, else `$HOME/.cache/idflow/onnx`.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{
    compile_iresnet, compile_tface_ir, compile_to_file, compile_unet, compile_vq_decoder, compile_vq_encoder, CompileOptions, OnnxError,
    UNetExport,
};
use crate::io::checkpoint::StateDict;
use crate::iresnet::IResNetConfig;
use crate::unet::UNetConfig;
use crate::vq::VqConfig;

/// Version of the exported graphs (the trace of each model's forward); bump when a graph changes so
/// stale cache entries are not reused.
pub const EMITTER_VERSION: u32 = 2;

/// What to compile from a checkpoint.
#[derive(Clone, Debug)]
pub enum OnnxModelSpec {
    /// [`compile_unet`].
    Unet {
        /// Architecture.
        config: UNetConfig,
        /// Graph interface.
        export: UNetExport,
    },
    /// [`compile_vq_encoder`].
    VqEncoder {
        /// Architecture.
        config: VqConfig,
    },
    /// [`compile_vq_decoder`].
    VqDecoder {
        /// Architecture.
        config: VqConfig,
        /// Quantise the latent first.
        quantize: bool,
    },
    /// [`compile_iresnet`].
    IResNet {
        /// Architecture.
        config: IResNetConfig,
    },
    /// [`compile_tface_ir`].
    TFaceIr {
        /// 18, 34, 50 or 100.
        depth: usize,
    },
}

impl OnnxModelSpec {
    /// Short name of the model kind (used in file names).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unet { .. } => "unet",
            Self::VqEncoder { .. } => "vq-encoder",
            Self::VqDecoder { .. } => "vq-decoder",
            Self::IResNet { .. } => "iresnet",
            Self::TFaceIr { .. } => "tface-ir",
        }
    }

    fn fingerprint(&self, options: &CompileOptions) -> Result<String, OnnxError> {
        let body = match self {
            Self::Unet { config, export } => format!("{};t={:?};mask={}", json(config)?, export.timestep, export.dropout_mask),
            Self::VqEncoder { config } => json(config)?,
            Self::VqDecoder { config, quantize } => format!("{};quantize={quantize}", json(config)?),
            Self::IResNet { config } => json(config)?,
            Self::TFaceIr { depth } => format!("depth={depth}"),
        };
        Ok(format!(
            "idflow-onnx v{EMITTER_VERSION};{};{body};prefix={:?};unused={}",
            self.kind(),
            options.prefix,
            options.allow_unused_keys
        ))
    }

    /// Compiles the spec from a state dict.
    pub fn compile(&self, dict: &StateDict, options: &CompileOptions) -> Result<Vec<u8>, OnnxError> {
        match self {
            Self::Unet { config, export } => compile_unet(dict, config, export, options),
            Self::VqEncoder { config } => compile_vq_encoder(dict, config, options),
            Self::VqDecoder { config, quantize } => compile_vq_decoder(dict, config, *quantize, options),
            Self::IResNet { config } => compile_iresnet(dict, config, options),
            Self::TFaceIr { depth } => compile_tface_ir(dict, *depth, options),
        }
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, OnnxError> {
    serde_json::to_string(v).map_err(|e| OnnxError::Config(e.to_string()))
}

/// Hex SHA-256 of a file's contents.
pub fn file_sha256(path: &Path) -> Result<String, OnnxError> {
    let io = |source| OnnxError::Io { path: path.to_path_buf(), source };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Environment variable for the root of idflow's cache (ONNX files go to its `onnx/` folder).
pub const CACHE_ENV: &str = "IDFLOW_CACHE";

/// The ONNX cache folder: `$IDFLOW_CACHE/onnx`, else `$XDG_CACHE_HOME/idflow/onnx`, else
/// `$HOME/.cache/idflow/onnx` (empty variables count as unset). Fails when none is set.
pub fn default_cache_dir() -> Result<PathBuf, OnnxError> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(root) = var(CACHE_ENV) {
        return Ok(root.join("onnx"));
    }
    if let Some(xdg) = var("XDG_CACHE_HOME") {
        return Ok(xdg.join("idflow").join("onnx"));
    }
    if let Some(home) = var("HOME") {
        return Ok(home.join(".cache").join("idflow").join("onnx"));
    }
    Err(OnnxError::Config(format!("no cache folder for compiled ONNX models: set {CACHE_ENV} (or XDG_CACHE_HOME or HOME)")))
}

/// A cache lookup's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedModel {
    /// The ONNX file.
    pub path: PathBuf,
    /// Whether this call compiled it (`false`: it was already in the cache).
    pub compiled: bool,
}

/// The ONNX file for `checkpoint` + `spec` in `cache_dir`, compiling it when absent.
pub fn compile_cached(
    cache_dir: &Path,
    checkpoint: &Path,
    spec: &OnnxModelSpec,
    options: &CompileOptions,
) -> Result<CachedModel, OnnxError> {
    let weights = file_sha256(checkpoint)?;
    let spec_hash = hex(&Sha256::digest(spec.fingerprint(options)?.as_bytes()));
    let path = cache_dir.join(format!("{}-{}-{}.onnx", spec.kind(), &weights[..16], &spec_hash[..16]));
    if path.is_file() {
        return Ok(CachedModel { path, compiled: false });
    }
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| OnnxError::Io { path: p, source }
    };
    std::fs::create_dir_all(cache_dir).map_err(io(cache_dir))?;
    // One compiler per entry: whoever holds the lock compiles, the others find the file after it.
    let lock_path = path.with_extension("onnx.lock");
    let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(io(&lock_path))?;
    lock.lock().map_err(io(&lock_path))?;
    if path.is_file() {
        return Ok(CachedModel { path, compiled: false });
    }
    let dict = StateDict::from_file(checkpoint)?;
    let bytes = spec.compile(&dict, options)?;
    drop(dict);
    compile_to_file(&bytes, &path)?;
    Ok(CachedModel { path, compiled: true })
}
