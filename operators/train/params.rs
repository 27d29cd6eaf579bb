//! The parameters of a `train` node: the fields every task has ([`CommonParams`]) and one
//! struct per task (the task's [`TrainTask::Params`]), chosen by `task:`.
//!
//! The node's mapping is split before it is deserialised: the common fields go to
//! [`CommonParams`], the rest to the task's own struct, both with `deny_unknown_fields` (serde
//! cannot deny unknown fields through `#[serde(flatten)]`, and a flattened struct loses the
//! field name of a wrong-typed value). A field of another task is refused before that, naming
//! the field and the task it belongs to; a field of no task is an unknown field.

use super::autoencoder::AutoencoderTask;
use super::diffusion::DiffusionTask;
use super::driver::TrainTask;
use super::face::FaceTask;
use crate::spec::{ConfigError, NodeSpec};
use idflow_models::train::schedule::LrSchedule;
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::Deserialize;
use std::path::PathBuf;

/// What to train (`task:`).
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TaskKind {
    /// A face recognizer.
    FaceRecognition,
    /// An identity-conditioned denoiser.
    Diffusion,
    /// A VQ first stage (toy world).
    Autoencoder,
}

impl TaskKind {
    /// Every task.
    pub const ALL: [TaskKind; 3] = [TaskKind::FaceRecognition, TaskKind::Diffusion, TaskKind::Autoencoder];

    /// The name as written after `task:`.
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::FaceRecognition => FaceTask::NAME,
            TaskKind::Diffusion => DiffusionTask::NAME,
            TaskKind::Autoencoder => AutoencoderTask::NAME,
        }
    }

    /// The fields of the task's own parameter struct.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            TaskKind::FaceRecognition => field_names::<<FaceTask as TrainTask>::Params>(),
            TaskKind::Diffusion => field_names::<<DiffusionTask as TrainTask>::Params>(),
            TaskKind::Autoencoder => field_names::<<AutoencoderTask as TrainTask>::Params>(),
        }
    }
}

/// The parameters every task has.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct CommonParams {
    /// Task.
    pub task: TaskKind,
    /// Output directory.
    pub output: PathBuf,
    /// Epochs.
    pub epochs: u64,
    /// Rows per step.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Learning-rate schedule (default: the task's).
    #[serde(default)]
    pub lr: Option<LrSchedule>,
    /// Resume from the checkpoint.
    #[serde(default)]
    pub resume: bool,
    /// Stop after this many epochs.
    #[serde(default)]
    pub stop_after_epochs: Option<u64>,
    /// Keyed horizontal flips.
    #[serde(default = "yes")]
    pub flip: bool,
    /// Gradient clipping.
    #[serde(default)]
    pub clip_grad_norm: Option<f64>,
    /// Input column (default: `image`, `latent` for diffusion).
    #[serde(default)]
    pub column: Option<String>,
    /// The worker that trains (modulo the worker count); give independent `train` nodes of one
    /// pipeline different workers to train them side by side.
    #[serde(default)]
    pub worker: usize,
}

fn default_batch() -> usize {
    32
}
fn yes() -> bool {
    true
}

impl CommonParams {
    /// Checks the common fields; errors name the field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.epochs == 0 {
            return Err(("epochs", "must be at least 1".into()));
        }
        if self.batch_size < 2 {
            return Err(("batch_size", "must be at least 2 (BatchNorm needs batch statistics)".into()));
        }
        if let Some(lr) = &self.lr {
            lr.validate().map_err(|e| ("lr", e))?;
        }
        if self.clip_grad_norm.is_some_and(|c| c <= 0.0) {
            return Err(("clip_grad_norm", "must be positive".into()));
        }
        Ok(())
    }

    /// The last epoch this run trains (`stop_after_epochs` within `epochs`).
    pub fn last_epoch(&self) -> u64 {
        self.stop_after_epochs.map_or(self.epochs, |s| s.min(self.epochs))
    }
}

/// Splits a node's parameters into the common ones and the task's own: [`CommonParams`] and
/// the node reduced to the task's fields (for [`NodeSpec::parse_params`], which keeps the
/// field locations). A field of another task, or of none, is an error naming it.
pub fn split(node: &NodeSpec) -> Result<(CommonParams, NodeSpec), ConfigError> {
    let common_fields = field_names::<CommonParams>();
    let (mut common, mut own) = (node.clone(), node.clone());
    common.params.retain(|k, _| common_fields.contains(&k.as_str()));
    own.params.retain(|k, _| !common_fields.contains(&k.as_str()));
    let c: CommonParams = common.parse_params()?;
    let fields = c.task.fields();
    if let Some(key) = own.params.keys().find(|k| !fields.contains(&k.as_str())) {
        let owners: Vec<&str> = TaskKind::ALL.iter().filter(|t| t.fields().contains(&key.as_str())).map(|t| t.name()).collect();
        let message = if !owners.is_empty() {
            format!("belongs to task: {}, not to task: {}", owners.join(" | "), c.task.name())
        } else {
            {
                let expected: Vec<String> = common_fields.iter().chain(fields).map(|f| format!("`{f}`")).collect();
                format!("unknown field `{key}`, expected one of {}", expected.join(", "))
            }
        };
        return Err(node.error(Some(key), message));
    }
    Ok((c, own))
}

/// The field names of a struct deserialised with `#[derive(Deserialize)]` (as renamed).
pub fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldNames(&mut fields));
    fields
}

/// A deserializer that only records the field list a struct asks for.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("field names recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_lists_are_disjoint_and_named_as_in_yaml() {
        let common = field_names::<CommonParams>();
        assert!(common.contains(&"task") && common.contains(&"batch_size") && common.contains(&"worker"));
        assert!(TaskKind::FaceRecognition.fields().contains(&"eval_every"));
        assert!(TaskKind::Diffusion.fields().contains(&"cpd"));
        assert!(TaskKind::Autoencoder.fields().contains(&"n_embed"));
        for t in TaskKind::ALL {
            assert!(t.fields().iter().all(|f| !common.contains(f)), "{t:?} repeats a common field");
        }
    }
}
