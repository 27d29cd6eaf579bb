//! Error type of the model crate.

use std::path::{Path, PathBuf};

/// Everything that can go wrong while building, loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A tensor operation failed inside candle (shape mismatch at run time, unsupported dtype, …).
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// A checkpoint file could not be read or parsed.
    #[error("cannot read checkpoint {path}: {reason}")]
    Checkpoint {
        /// The file that was being read.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Strict loading found keys the model needs but the file lacks, or keys the model does not use.
    #[error(
        "state dict {source_name} does not match the model: {} missing key(s) {missing:?}, {} unexpected key(s) {unexpected:?}{}",
        missing.len(), unexpected.len(),
        if mismatched.is_empty() { String::new() } else { format!(", shape mismatches {mismatched:?}") }
    )]
    KeyMismatch {
        /// Where the state dict came from (a file path or a description).
        source_name: String,
        /// Keys the model requested that the state dict lacks.
        missing: Vec<String>,
        /// Keys of the state dict that the model never requested.
        unexpected: Vec<String>,
        /// `key: expected shape vs stored shape` for tensors present with the wrong shape.
        mismatched: Vec<String>,
    },
    /// A model configuration is inconsistent (e.g. channels not divisible by the group count).
    #[error("invalid model configuration: {0}")]
    Config(String),
    /// A forward call received an input of the wrong shape or dtype.
    #[error("invalid input `{name}`: {reason}")]
    Input {
        /// The argument name.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, ModelError>;

/// Shorthand for an [`ModelError::Input`] error.
pub(crate) fn input_error(name: &'static str, reason: impl Into<String>) -> ModelError {
    ModelError::Input { name, reason: reason.into() }
}

/// The path of a checkpoint with a human-readable reason, for [`ModelError::Checkpoint`].
pub(crate) fn checkpoint_error(path: &Path, reason: impl Into<String>) -> ModelError {
    ModelError::Checkpoint { path: PathBuf::from(path), reason: reason.into() }
}
