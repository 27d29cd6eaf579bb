//! Verification-benchmark and dataset metrics, computed exactly as the reference tools do.
//!
//! * [`verification`]: the insightface / ElasticFace `verification.evaluate` protocol (10-fold
//!   accuracy with a threshold chosen on the training folds, VAL@FAR = 1e-3).
//! * [`scores`]: pyeer's `get_eer_stats` (EER, FMR100, FMR1000, ZeroFMR, ZeroFNMR, AUC, score
//!   moments, decidability) plus the Fisher discriminant ratio.
//! * [`identity`]: DCFace's identity metrics (class uniqueness, intra-class consistency) and the
//!   identity consistency of generated samples to their context.
//!
//! The reference tools are written in numpy; [`numeric`] reproduces the few numpy primitives whose
//! floating-point results matter for bit-level agreement (`arange`, pairwise summation, `mean`,
//! `std`).

pub mod identity;
pub mod numeric;
pub mod scores;
pub mod verification;

/// Errors raised by the metric functions when their inputs cannot be evaluated.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum MetricsError {
    /// A flat row-major buffer whose length is not a multiple of the row width.
    #[error("{what}: buffer of {len} values is not a whole number of rows of width {dim}")]
    RaggedRows {
        /// Which input is malformed.
        what: &'static str,
        /// Length of the flat buffer.
        len: usize,
        /// Row width that was asked for.
        dim: usize,
    },
    /// Two inputs whose lengths must agree do not.
    #[error("{what}: expected {expected}, got {got}")]
    LengthMismatch {
        /// What was being compared.
        what: &'static str,
        /// Length implied by the other input.
        expected: usize,
        /// Length actually supplied.
        got: usize,
    },
    /// The fold count cannot split the pairs (scikit-learn's `KFold` refuses the same inputs).
    #[error("cannot split {n_pairs} pairs into {n_folds} folds (need 2 <= folds <= pairs)")]
    BadFoldCount {
        /// Number of pairs.
        n_pairs: usize,
        /// Requested folds.
        n_folds: usize,
    },
    /// A fold lacks genuine or impostor pairs, so a rate in it would divide by zero (the
    /// reference raises `ZeroDivisionError` here).
    #[error("fold {fold}: the {part} set has no {kind} pairs")]
    EmptyClassInFold {
        /// 0-based fold index.
        fold: usize,
        /// `"train"` or `"test"`.
        part: &'static str,
        /// `"genuine"` or `"impostor"`.
        kind: &'static str,
    },
    /// An input list that must not be empty is.
    #[error("{what} is empty")]
    Empty {
        /// Which input.
        what: &'static str,
    },
    /// A NaN or infinite value where a finite number is needed.
    #[error("{what}: non-finite value at index {index}")]
    NonFinite {
        /// Which input.
        what: &'static str,
        /// Index of the first offending value.
        index: usize,
    },
    /// A parameter outside its valid range.
    #[error("{what}: {message}")]
    BadParameter {
        /// Which parameter.
        what: &'static str,
        /// Why it is rejected.
        message: String,
    },
}

/// Returns the index of the first non-finite value, if any, as a [`MetricsError::NonFinite`].
pub(crate) fn check_finite<T: Copy + Into<f64>>(what: &'static str, values: &[T]) -> Result<(), MetricsError> {
    match values.iter().position(|v| !(*v).into().is_finite()) {
        Some(index) => Err(MetricsError::NonFinite { what, index }),
        None => Ok(()),
    }
}
