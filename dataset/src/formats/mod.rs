//! Readers and writers of the file formats face-recognition tools use.
//!
//! Each submodule does one job: [`pickle`] (restricted, never executes), [`torch_zip`]
//! (torch.save archives), [`verification_bin`] (insightface `.bin` pair sets), [`npy`] and
//! [`contexts`] (identity context files), [`tfrecord`] (TFace shards), [`recordio`] (MXNet
//! RecordIO as insightface ships it), [`image_folder`] (ImageFolder trees and image lists) and
//! [`image_bytes`] (encoded JPEG / PNG decoded only when complete).
//! All errors are [`FormatError`]s naming the file; all writers go through [`atomic`]
//! (temporary file + rename).

pub mod atomic;
pub mod contexts;
pub mod error;
pub mod image_bytes;
pub mod image_folder;
pub mod npy;
pub mod pickle;
pub mod recordio;
mod records;
pub mod tfrecord;
pub mod torch_save;
pub mod torch_zip;
pub mod verification_bin;

pub use error::FormatError;
