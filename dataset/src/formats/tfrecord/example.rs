//! `tf.train.Example` messages (from TensorFlow's `example.proto` / `feature.proto`), declared
//! by hand with `prost` derive so no `protoc` is needed, and the face record inside them.

use std::collections::BTreeMap;
use std::path::Path;

use prost::Message;

use crate::formats::FormatError;

/// `tf.train.BytesList`.
#[derive(Clone, PartialEq, Message)]
pub struct BytesList {
    /// Values.
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub value: Vec<Vec<u8>>,
}

/// `tf.train.FloatList`.
#[derive(Clone, PartialEq, Message)]
pub struct FloatList {
    /// Values (packed).
    #[prost(float, repeated, tag = "1")]
    pub value: Vec<f32>,
}

/// `tf.train.Int64List`.
#[derive(Clone, PartialEq, Message)]
pub struct Int64List {
    /// Values (packed).
    #[prost(int64, repeated, tag = "1")]
    pub value: Vec<i64>,
}

/// `tf.train.Feature`.
#[derive(Clone, PartialEq, Message)]
pub struct Feature {
    /// Which list the feature holds.
    #[prost(oneof = "feature::Kind", tags = "1, 2, 3")]
    pub kind: Option<feature::Kind>,
}

/// The `oneof kind` of [`Feature`].
pub mod feature {
    /// One of the three list types.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        /// `bytes_list`
        #[prost(message, tag = "1")]
        BytesList(super::BytesList),
        /// `float_list`
        #[prost(message, tag = "2")]
        FloatList(super::FloatList),
        /// `int64_list`
        #[prost(message, tag = "3")]
        Int64List(super::Int64List),
    }
}

/// `tf.train.Features` (a BTreeMap so encoding is deterministic).
#[derive(Clone, PartialEq, Message)]
pub struct Features {
    /// Named features.
    #[prost(btree_map = "string, message", tag = "1")]
    pub feature: BTreeMap<String, Feature>,
}

/// `tf.train.Example`.
#[derive(Clone, PartialEq, Message)]
pub struct Example {
    /// The features.
    #[prost(message, optional, tag = "1")]
    pub features: Option<Features>,
}

/// The face record TFace stores: an encoded image and (when idflow wrote it) a label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaceExample {
    /// Encoded image bytes (JPEG/PNG), feature `image`.
    pub image: Vec<u8>,
    /// Identity label, feature `label`, if present.
    pub label: Option<i64>,
}

/// Encodes an Example with `image` (bytes) and, if given, `label` (int64).
pub fn encode_example(image: &[u8], label: Option<i64>) -> Vec<u8> {
    let mut feature = BTreeMap::new();
    feature.insert("image".to_string(), Feature { kind: Some(feature::Kind::BytesList(BytesList { value: vec![image.to_vec()] })) });
    if let Some(l) = label {
        feature.insert("label".to_string(), Feature { kind: Some(feature::Kind::Int64List(Int64List { value: vec![l] })) });
    }
    Example { features: Some(Features { feature }) }.encode_to_vec()
}

/// Decodes a record payload into the face record; `path`/`offset` name the record in errors.
pub fn decode_example(payload: &[u8], path: &Path, offset: u64) -> Result<FaceExample, FormatError> {
    let ex = Example::decode(payload).map_err(|e| FormatError::corrupt(path, offset, format!("record is not a tf.train.Example: {e}")))?;
    let features = ex.features.unwrap_or_default().feature;
    let image = match features.get("image").and_then(|f| f.kind.as_ref()) {
        Some(feature::Kind::BytesList(b)) if b.value.len() == 1 => b.value[0].clone(),
        Some(_) => return Err(FormatError::corrupt(path, offset, "feature 'image' is not a single-value bytes_list")),
        None => return Err(FormatError::corrupt(path, offset, "Example has no 'image' feature")),
    };
    let label = match features.get("label").and_then(|f| f.kind.as_ref()) {
        Some(feature::Kind::Int64List(l)) if l.value.len() == 1 => Some(l.value[0]),
        Some(_) => return Err(FormatError::corrupt(path, offset, "feature 'label' is not a single-value int64_list")),
        None => None,
    };
    Ok(FaceExample { image, label })
}
