//! MXNet RecordIO as insightface ships face datasets (`train.rec`, `train.idx`, `property`).
//!
//! * [`framing`]: dmlc-core's record framing (magic `0xced7230a`, length word whose upper 3 bits
//!   are the continuation flag, 4-byte padding, payloads split where they contain the magic).
//! * [`header`]: the `IRHeader` (`flag u32, label f32, id u64, id2 u64`) and its extra labels.
//! * [`dataset`]: the face layout (record 0 → identity index records → image records), a
//!   random-access reader through `.idx`, and a writer whose files arcface_torch's
//!   `MXFaceDataset` trains from.

pub mod dataset;
pub mod framing;
pub mod header;

pub use dataset::{read_property, FaceRecord, RecordIoFaceWriter, RecordIoReader, RecordIoSummary};
pub use framing::{encode_record, parse_records, read_record, MAGIC};
pub use header::{pack, unpack, IrHeader, IR_HEADER_SIZE};
