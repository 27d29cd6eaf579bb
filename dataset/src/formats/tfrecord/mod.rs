//! TFRecord files as TFace stores face datasets.
//!
//! * [`framing`]: the record framing (`u64` length, masked CRC-32C of the length, payload, masked
//!   CRC-32C of the payload), sequential and random-access reads with CRC checks.
//! * [`example`]: the `tf.train.Example` protobuf messages (hand-declared with `prost` derive, so
//!   no `protoc` is needed) and the face record inside them (`image` bytes, `label` int64).
//! * [`shards`]: the sharded writer (`<name>-%05d.tfrecord`, at most N records each) with its
//!   `<name>.index`, and readers for that index and TFace's converted index.

pub mod example;
pub mod framing;
pub mod shards;

pub use example::{decode_example, encode_example, FaceExample};
pub use framing::{encode_record, masked_crc32c, parse_records, read_record_at, TfRecordReader, RECORD_OVERHEAD};
pub use shards::{
    read_converted_index, read_index, shard_path, ConvertedIndexEntry, IndexEntry, TfRecordShardWriter, TfRecordSummary,
    DEFAULT_RECORDS_PER_SHARD,
};
