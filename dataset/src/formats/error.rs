//! The one error type shared by every format reader and writer.
//!
//! Every variant names the file it is about; variants for byte-level damage also carry the byte
//! offset (or record number) where the damage was found, so a user can locate it with `xxd`.

use std::path::{Path, PathBuf};

/// What went wrong while reading or writing a face-data file.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The operating system refused a read, write, rename or directory listing.
    #[error("{}: {source}", .path.display())]
    Io {
        /// File or directory the operation was about.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes at `offset` do not follow the format (bad magic, truncated record, bad length…).
    #[error("{}: at byte {offset}: {message}", .path.display())]
    Corrupt {
        /// File being read.
        path: PathBuf,
        /// Byte offset of the damaged structure.
        offset: u64,
        /// What was expected and what was found.
        message: String,
    },
    /// A stored checksum does not match the bytes it protects.
    #[error(
        "{}: at byte {offset}: CRC-32C mismatch in the {what} (stored {stored:#010x}, computed {computed:#010x})",
        .path.display()
    )]
    Checksum {
        /// File being read.
        path: PathBuf,
        /// Offset of the record whose checksum failed.
        offset: u64,
        /// Which part of the record the checksum covers ("length" or "payload").
        what: &'static str,
        /// Masked CRC stored in the file.
        stored: u32,
        /// Masked CRC computed from the bytes read.
        computed: u32,
    },
    /// A pickle refers to a global (class or function) outside the caller's allow-list.
    #[error(
        "{}: pickle opcode {opcode} at byte {offset} references global '{global}', which is not allowed (allowed: {allowed}); refusing to load",
        .path.display()
    )]
    ForbiddenGlobal {
        /// File (or archive member) holding the pickle.
        path: PathBuf,
        /// Offset of the GLOBAL / STACK_GLOBAL / INST opcode.
        offset: u64,
        /// Name of the opcode.
        opcode: &'static str,
        /// `module.name` of the rejected global.
        global: String,
        /// The allow-list in force, for the message.
        allowed: String,
    },
    /// A pickle contains an opcode this reader does not know or deliberately does not run.
    #[error("{}: unsupported pickle opcode {opcode:#04x} ({name}) at byte {offset}", .path.display())]
    PickleOpcode {
        /// File (or archive member) holding the pickle.
        path: PathBuf,
        /// Offset of the opcode.
        offset: u64,
        /// The opcode byte.
        opcode: u8,
        /// Its name, or "unknown".
        name: &'static str,
    },
    /// The file is well formed but its content is not what this reader expects
    /// (wrong pickle structure, missing archive member, unsupported dtype…).
    #[error("{}: {message}", .path.display())]
    Invalid {
        /// File being read or written.
        path: PathBuf,
        /// Explanation naming the field or record involved.
        message: String,
    },
    /// A valid file in a variant this crate does not handle (e.g. the legacy torch format).
    #[error("{}: not supported: {message}", .path.display())]
    Unsupported {
        /// File being read.
        path: PathBuf,
        /// What is not supported and what to do instead.
        message: String,
    },
}

impl FormatError {
    /// Wraps an I/O error with the file it happened on.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        FormatError::Io { path: path.to_path_buf(), source }
    }

    /// A [`FormatError::Corrupt`] at `offset` of `path`.
    pub fn corrupt(path: &Path, offset: u64, message: impl Into<String>) -> Self {
        FormatError::Corrupt { path: path.to_path_buf(), offset, message: message.into() }
    }

    /// A [`FormatError::Invalid`] for `path`.
    pub fn invalid(path: &Path, message: impl Into<String>) -> Self {
        FormatError::Invalid { path: path.to_path_buf(), message: message.into() }
    }

    /// A [`FormatError::Unsupported`] for `path`.
    pub fn unsupported(path: &Path, message: impl Into<String>) -> Self {
        FormatError::Unsupported { path: path.to_path_buf(), message: message.into() }
    }

    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            FormatError::Io { path, .. }
            | FormatError::Corrupt { path, .. }
            | FormatError::Checksum { path, .. }
            | FormatError::ForbiddenGlobal { path, .. }
            | FormatError::PickleOpcode { path, .. }
            | FormatError::Invalid { path, .. }
            | FormatError::Unsupported { path, .. } => path,
        }
    }
}
