//! The model reference of a node as written in YAML: `{checkpoint, config}` ([`ModelRef`]), the
//! `backend` / `threads` / `providers` block of every model node ([`Backend`], [`Provider`],
//! [`Inference`], checked by [`check_inference`], documented by [`INFERENCE_PARAMS`]), and the
//! plan-time resolution and checks of both: a configuration (a preset of
//! [`idflow_models::io::presets`], a JSON file, or an inline map) into the model crate's config
//! types, and a checkpoint's tensors against that configuration.
//!
//! Plan time only resolves configurations (presets and inline maps need no file; a JSON config
//! file is read because the output shapes depend on it). Checkpoints are opened in `start()`,
//! see [`super::loading`].

use crate::spec::{ConfigError, NodeSpec};
use idflow_models::io::checkpoint::{parameter_shapes, shape_mismatches, stored_shapes};
use idflow_models::io::presets;
use idflow_models::iresnet::{IResNet, IResNetConfig};
use idflow_models::onnx::{ExecutionProvider, SessionOptions};
use idflow_models::unet::UNetConfig;
use idflow_models::vq::{VqConfig, VqDecoder};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Which inference backend runs a model.
#[derive(Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The candle models of `idflow-models` (CPU).
    Native,
    /// ONNX Runtime (default): the checkpoint is compiled once into the ONNX cache
    /// ([`idflow_models::onnx::default_cache_dir`]) and run on the execution providers asked for;
    /// an `.onnx` checkpoint runs as it is. The library comes from `ORT_DYLIB_PATH` or the venv of
    /// `tests/py/ort_env.sh` ([`idflow_models::onnx::find_library`]).
    #[default]
    Onnx,
}

/// An ONNX Runtime execution provider as written in YAML: `cpu`, `cuda`, `cuda:<device>`,
/// `tensorrt`, `tensorrt:<device>`.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(try_from = "String")]
pub struct Provider(pub ExecutionProvider);

impl TryFrom<String> for Provider {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse().map(Provider).map_err(|e: idflow_models::onnx::OnnxError| e.to_string())
    }
}

/// How a node runs its model: the backend and, for `onnx`, the YAML's `threads` and `providers`
/// plus the engine's worker layout.
#[derive(Clone, Debug)]
pub struct Inference {
    /// The backend.
    pub backend: Backend,
    /// Intra-op threads per ONNX Runtime session (`None`: cores / workers, at least 1).
    pub threads: Option<usize>,
    /// Execution providers in priority order (empty: CPU).
    pub providers: Vec<ExecutionProvider>,
    /// Worker threads of this process (each gets its own session).
    pub workers: usize,
}

impl Inference {
    /// The settings of a node's `backend`, `threads` and `providers` for `workers` local workers.
    pub fn new(backend: Backend, threads: Option<usize>, providers: &[Provider], workers: usize) -> Self {
        Self { backend, threads, providers: providers.iter().map(|p| p.0).collect(), workers: workers.max(1) }
    }

    /// Session options: `threads` intra-op threads (default `cores / workers`, so the workers
    /// together do not oversubscribe the machine), one session per worker, the providers in
    /// order; an unavailable GPU provider falls back (logged) only when `cpu` is listed after it.
    pub fn session_options(&self) -> SessionOptions {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let providers = if self.providers.is_empty() { vec![ExecutionProvider::Cpu] } else { self.providers.clone() };
        let allow_fallback = providers.len() > 1 && providers.last() == Some(&ExecutionProvider::Cpu);
        SessionOptions {
            intra_threads: self.threads.unwrap_or((cores / self.workers).max(1)),
            providers,
            allow_fallback,
            replicas: self.workers,
        }
    }
}

/// Plan-time checks of `threads` (at least 1), shared by every model node's `backend` /
/// `threads` / `providers` block. `field` maps a parameter name to its YAML field.
pub fn check_inference(node: &NodeSpec, threads: Option<usize>, field: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    if threads == Some(0) {
        return Err(node.error(Some(&*field("threads")), "must be at least 1"));
    }
    Ok(())
}

/// The `ParamDoc`s of `backend`, `threads` and `providers`, shared by the model operators.
/// The documentation rows of the model inference block (`backend`, `threads`, `providers`).
pub const INFERENCE_PARAMS: &str = include_str!("../params/inference.md");

/// A model configuration as written in YAML: a preset name, a path to a JSON file, or an
/// inline map of the configuration fields.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum ConfigRef {
    /// A preset name (e.g. `idiff-face-ca`) or a JSON file path.
    Name(String),
    /// The configuration fields inline.
    Inline(serde_json::Map<String, serde_json::Value>),
}

/// A checkpoint plus its configuration.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct ModelRef {
    /// The weights file (`.ckpt`, `.pt`, `.pth` or `.safetensors`), or with `backend: onnx` a
    /// compiled `.onnx` file.
    pub checkpoint: PathBuf,
    /// Configuration; each operator documents its presets and default.
    #[serde(default)]
    pub config: Option<ConfigRef>,
}

/// Reads a configuration reference into JSON: inline maps as they are, names that are not
/// presets as JSON files; a name that is neither says which presets exist (`presets`).
fn config_json(cfg: &ConfigRef, presets: &[&str]) -> Result<serde_json::Value, String> {
    match cfg {
        ConfigRef::Inline(m) => Ok(serde_json::Value::Object(m.clone())),
        ConfigRef::Name(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| {
                if std::path::Path::new(p).extension().is_none() {
                    format!("`{p}` is not a preset (presets: {}) and cannot be read as a config file: {e}", presets.join(", "))
                } else {
                    format!("cannot read config file {p}: {e}")
                }
            })?;
            serde_json::from_str(&text).map_err(|e| format!("config file {p} is not valid JSON: {e}"))
        }
    }
}

fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value, what: &str) -> Result<T, String> {
    serde_json::from_value(v).map_err(|e| format!("{what}: {e}"))
}

/// Resolves a UNet configuration. Presets ([`presets::unet`]): `idiff-face-ca` (default, the
/// published model), `idiff-face-uncond` (the unconditional AdaGN model of the two-stage
/// pipeline), `reference-tiny`. JSON files may hold the bare config or IDiff-Face's
/// `{eps_model: …}`.
pub fn unet_config(cfg: Option<&ConfigRef>) -> Result<UNetConfig, String> {
    let json = match cfg {
        None => return Ok(UNetConfig::idiff_face_ca()),
        Some(ConfigRef::Name(n)) if presets::unet(n).is_some() => return Ok(presets::unet(n).expect("a preset")),
        Some(c) => config_json(c, presets::UNET_NAMES)?,
    };
    let json = match json.get("eps_model") {
        Some(inner) => inner.clone(),
        None => json,
    };
    from_json(json, "UNet config")
}

/// Resolves a VQ first-stage configuration. Presets ([`presets::vq`]): `vq-f4` (default,
/// IDiff-Face's), `reference-tiny`. JSON may be the bare config or an LDM `first_stage_config`
/// block.
pub fn vq_config(cfg: Option<&ConfigRef>) -> Result<VqConfig, String> {
    let json = match cfg {
        None => return Ok(VqConfig::vq_f4()),
        Some(ConfigRef::Name(n)) if presets::vq(n).is_some() => return Ok(presets::vq(n).expect("a preset")),
        Some(c) => config_json(c, presets::VQ_NAMES)?,
    };
    if let Some(params) = json.get("first_stage_config").and_then(|f| f.get("params")) {
        let mut dd = params.get("ddconfig").cloned().ok_or("first_stage_config.params has no ddconfig")?;
        let embed_dim = params.get("embed_dim").cloned().ok_or("first_stage_config.params has no embed_dim")?;
        if let Some(o) = dd.as_object_mut() {
            o.insert("embed_dim".into(), embed_dim);
        }
        return from_json(dd, "first-stage config");
    }
    from_json(json, "first-stage config")
}

/// Resolves an IResNet configuration. Presets ([`presets::iresnet`]): `iresnet18|34|50|100|200`
/// (512 features); default `iresnet50`. JSON / inline: `{layers: [..4], num_features: n}`.
pub fn iresnet_config(cfg: Option<&ConfigRef>) -> Result<IResNetConfig, String> {
    match cfg {
        None => Ok(presets::default_iresnet()),
        Some(ConfigRef::Name(n)) if presets::iresnet(n).is_some() => presets::iresnet(n).expect("a preset"),
        Some(c) => from_json(config_json(c, presets::IRESNET_NAMES)?, "IResNet config"),
    }
}
/// Checks that a configuration describes a model idflow's `diffuse` can drive.
pub fn check_unet(cfg: &UNetConfig, latent_channels: usize) -> Result<(), String> {
    if cfg.input_channels != latent_channels {
        return Err(format!("the UNet takes {} latent channels but latent_shape has {latent_channels}", cfg.input_channels));
    }
    if cfg.channel_multipliers.len() != cfg.is_attention.len() || cfg.channel_multipliers.is_empty() {
        return Err("UNet config: channel_multipliers and is_attention must be non-empty and equally long".into());
    }
    Ok(())
}

/// The network a checkpoint must hold, with its resolved configuration.
#[derive(Clone, Copy, Debug)]
pub enum Network<'a> {
    /// IDiff-Face's denoiser.
    Unet(&'a UNetConfig),
    /// The first-stage decoder (its codebook size is read from the file).
    VqDecoder(&'a VqConfig),
    /// The first-stage encoder.
    VqEncoder(&'a VqConfig),
    /// An ElasticFace / insightface face encoder.
    IResNet(&'a IResNetConfig),
}

/// Keys the first-stage codebook is stored under.
pub const CODEBOOK_KEYS: [&str; 2] = ["quantize.embedding.weight", "first_stage_model.quantize.embedding.weight"];

impl Network<'_> {
    /// Every tensor the network requests when built, with its shape (no weights allocated);
    /// `stored` gives the decoder its codebook size.
    fn requested(self, stored: &[(String, Vec<usize>)]) -> Result<Vec<(String, candle_core::Shape)>, String> {
        let shapes = match self {
            Network::Unet(cfg) => parameter_shapes(|vb| idflow_models::unet::ConditionalUNet::new(cfg, vb)),
            Network::VqEncoder(cfg) => parameter_shapes(|vb| idflow_models::vq::VqEncoder::new(cfg, vb)),
            Network::IResNet(cfg) => parameter_shapes(|vb| IResNet::new(cfg, vb)),
            Network::VqDecoder(cfg) => {
                let n_embed = stored
                    .iter()
                    .find(|(k, _)| CODEBOOK_KEYS.contains(&k.as_str()))
                    .and_then(|(_, s)| s.first().copied())
                    .ok_or("no `quantize.embedding.weight` (codebook)")?;
                parameter_shapes(|vb| VqDecoder::new(cfg, n_embed, vb))
            }
        };
        shapes.map_err(|e| format!("cannot lay out the configured model: {e}"))
    }
}

/// Plan-time check of a model checkpoint, shared by every model node (`idflow validate` runs it
/// too): the file must exist and, read from its header alone (safetensors JSON header, torch
/// pickle), hold every tensor `network` requests with the shape its configuration gives.
/// `field` is the YAML field of the `{checkpoint, config}` block (`model`, `encoder`,
/// `generate.model`, …); errors name `<field>.checkpoint`. A compiled `.onnx` file is only
/// checked to exist: its recorded configuration is compared when it is opened.
pub fn check_checkpoint(node: &NodeSpec, field: &str, checkpoint: &Path, network: Network) -> Result<(), ConfigError> {
    let field = format!("{field}.checkpoint");
    let fail = |m: String| node.error(Some(&field), m);
    if !checkpoint.is_file() {
        let what = if checkpoint.exists() { "is not a file" } else { "does not exist" };
        return Err(fail(format!("{} {what}", checkpoint.display())));
    }
    if is_onnx_file(checkpoint) {
        return Ok(());
    }
    let stored = stored_shapes(checkpoint).map_err(|e| fail(e.to_string()))?;
    let requested = network.requested(&stored).map_err(|e| fail(format!("{}: {e}", checkpoint.display())))?;
    let mismatches = shape_mismatches(&requested, &stored);
    if !mismatches.is_empty() {
        return Err(fail(format!("{}: {mismatches} (a checkpoint for another `config`?)", checkpoint.display())));
    }
    Ok(())
}

/// Whether a checkpoint path names a compiled ONNX file (extension `.onnx`).
pub fn is_onnx_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_share_the_cores_unless_threads_are_given() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let o = Inference::new(Backend::Onnx, None, &[], 1).session_options();
        assert_eq!(
            (o.intra_threads, o.replicas, o.providers.as_slice(), o.allow_fallback),
            (cores, 1, &[ExecutionProvider::Cpu][..], false)
        );
        let o = Inference::new(Backend::Onnx, None, &[], 2).session_options();
        assert_eq!((o.intra_threads, o.replicas), ((cores / 2).max(1), 2));
        assert!(o.intra_threads * 2 <= cores.max(2), "workers × threads ≤ cores");
        // more workers than cores: one thread each
        let o = Inference::new(Backend::Onnx, None, &[], cores * 3).session_options();
        assert_eq!(o.intra_threads, 1);
        // an explicit count wins
        let o = Inference::new(Backend::Onnx, Some(7), &[], 4).session_options();
        assert_eq!((o.intra_threads, o.replicas), (7, 4));
    }

    #[test]
    fn a_trailing_cpu_provider_allows_falling_back() {
        let p = |s: &str| Provider::try_from(s.to_string()).unwrap();
        let strict = Inference::new(Backend::Onnx, None, &[p("cuda")], 1).session_options();
        assert_eq!((strict.providers.as_slice(), strict.allow_fallback), (&[ExecutionProvider::Cuda { device_id: 0 }][..], false));
        let lenient = Inference::new(Backend::Onnx, None, &[p("tensorrt:1"), p("cuda:1"), p("cpu")], 1).session_options();
        assert!(lenient.allow_fallback);
        assert_eq!(lenient.providers[0], ExecutionProvider::TensorRt { device_id: 1 });
        assert!(Provider::try_from("rocm".to_string()).unwrap_err().contains("rocm"));
    }
}
