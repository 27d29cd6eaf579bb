//! Shared pieces of the generation operators (`diffuse`, `decode-latent`, `embed`, `filter`):
//! the YAML shape of "which model, which checkpoint, which configuration", resolving a
//! configuration (a named preset, a JSON file, or an inline map) into the model crate's config
//! types, loading the native models at run time, and building / reading the
//! `FixedSizeList<Float32, n>` tensor columns the operators exchange.
//!
//! Plan time only resolves configurations (presets and inline maps need no file; a JSON config
//! file is read because the output shapes depend on it). Checkpoints are opened in `start()`:
//! `backend: native` builds the candle models; `backend: onnx` (the default) compiles the
//! checkpoint once into the ONNX cache ([`idflow_models::onnx::compile_cached`], folder
//! [`idflow_models::onnx::default_cache_dir`]) — or takes an `.onnx` checkpoint as it is — and
//! runs it on ONNX Runtime with one session per worker ([`Inference::session_options`]).

use super::ParamDoc;
use crate::batch::column;
use crate::spec::{ConfigError, NodeSpec};
use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use arrow_array::{Array, FixedSizeListArray, Float32Array, RecordBatch};
use arrow_schema::{DataType, Field};
use idflow_models::checkpoint::{load_model, parameter_shapes, shape_mismatches, stored_shapes, LoadOptions, StateDict};
use idflow_models::iresnet::{IResNet, IResNetConfig};
use idflow_models::onnx::{
    compile_cached, default_cache_dir, CompileOptions, ExecutionProvider, OnnxError, OnnxModelSpec, OrtDenoiser, OrtFaceEncoder,
    OrtFirstStage, OrtRuntime, OrtSession, SessionOptions, UNetExport, SCHEDULE_METADATA,
};
use idflow_models::schedule::DdpmSchedule;
use idflow_models::traits::{Denoiser, FaceEncoder, FirstStage};
use idflow_models::unet::UNetConfig;
use idflow_models::vq::{VqConfig, VqDecoder};
use idflow_models::ModelError;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// Plan-time checks of `threads` (at least 1). `field` maps a parameter name to its YAML field.
pub fn check_inference(
    node: &crate::spec::NodeSpec,
    threads: Option<usize>,
    field: &dyn Fn(&str) -> String,
) -> Result<(), crate::spec::ConfigError> {
    if threads == Some(0) {
        return Err(node.error(Some(&*field("threads")), "must be at least 1"));
    }
    Ok(())
}

/// The `ParamDoc`s of `backend`, `threads` and `providers`, shared by the model operators.
pub const INFERENCE_PARAMS: [ParamDoc; 3] = [
    ParamDoc {
        name: "backend",
        ty: "onnx | native",
        default: "onnx",
        doc: "ONNX Runtime (checkpoint compiled once into $IDFLOW_CACHE/onnx, or an .onnx file as is) or the candle models",
    },
    ParamDoc { name: "threads", ty: "integer", default: "cores / workers", doc: "ONNX Runtime intra-op threads per worker (onnx backend)" },
    ParamDoc {
        name: "providers",
        ty: "list",
        default: "[cpu]",
        doc: "ONNX Runtime execution providers in order: cpu, cuda[:N], tensorrt[:N]; a trailing cpu allows falling back",
    },
];

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
/// presets as JSON files.
fn config_json(cfg: &ConfigRef) -> Result<serde_json::Value, String> {
    match cfg {
        ConfigRef::Inline(m) => Ok(serde_json::Value::Object(m.clone())),
        ConfigRef::Name(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("cannot read config file {p}: {e}"))?;
            serde_json::from_str(&text).map_err(|e| format!("config file {p} is not valid JSON: {e}"))
        }
    }
}

fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value, what: &str) -> Result<T, String> {
    serde_json::from_value(v).map_err(|e| format!("{what}: {e}"))
}

/// The UNet of the reference fixtures (IDiff-Face's CA model shrunk: 32 channels,
/// multipliers `[1,1,2,1]`, context channels 32; 3.1 M parameters).
pub fn reference_tiny_unet() -> UNetConfig {
    UNetConfig { initial_channels: 32, channel_multipliers: vec![1, 1, 2, 1], context_channels: 32, ..UNetConfig::idiff_face_ca() }
}

/// Resolves a UNet configuration. Presets: `idiff-face-ca` (default, the published model),
/// `idiff-face-uncond` (the unconditional AdaGN model of the two-stage pipeline),
/// `reference-tiny`. JSON files may hold the bare config or IDiff-Face's `{eps_model: …}`.
pub fn unet_config(cfg: Option<&ConfigRef>) -> Result<UNetConfig, String> {
    let json = match cfg {
        None => return Ok(UNetConfig::idiff_face_ca()),
        Some(ConfigRef::Name(n)) if n == "idiff-face-ca" => return Ok(UNetConfig::idiff_face_ca()),
        Some(ConfigRef::Name(n)) if n == "idiff-face-uncond" => return Ok(UNetConfig::idiff_face_uncond_adagn()),
        Some(ConfigRef::Name(n)) if n == "reference-tiny" => return Ok(reference_tiny_unet()),
        Some(c) => config_json(c)?,
    };
    let json = match json.get("eps_model") {
        Some(inner) => inner.clone(),
        None => json,
    };
    from_json(json, "UNet config")
}

/// The first stage of the reference fixtures (`ch 32, ch_mult [1,2,2]`, 64 codewords).
pub fn reference_tiny_vq() -> VqConfig {
    VqConfig { ch: 32, ch_mult: vec![1, 2, 2], resolution: 32, ..VqConfig::vq_f4() }
}

/// Resolves a VQ first-stage configuration. Presets: `vq-f4` (default, IDiff-Face's),
/// `reference-tiny`. JSON may be the bare config or an LDM `first_stage_config` block.
pub fn vq_config(cfg: Option<&ConfigRef>) -> Result<VqConfig, String> {
    let json = match cfg {
        None => return Ok(VqConfig::vq_f4()),
        Some(ConfigRef::Name(n)) if n == "vq-f4" => return Ok(VqConfig::vq_f4()),
        Some(ConfigRef::Name(n)) if n == "reference-tiny" => return Ok(reference_tiny_vq()),
        Some(c) => config_json(c)?,
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

/// Resolves an IResNet configuration. Presets: `iresnet18|34|50|100|200` (512 features);
/// default `iresnet50`. JSON / inline: `{layers: [..4], num_features: n}`.
pub fn iresnet_config(cfg: Option<&ConfigRef>) -> Result<IResNetConfig, String> {
    match cfg {
        None => Ok(IResNetConfig::depth(50).expect("50 is a standard depth")),
        Some(ConfigRef::Name(n)) if n.starts_with("iresnet") && n[7..].parse::<usize>().is_ok() => {
            let depth: usize = n[7..].parse().unwrap_or(0);
            IResNetConfig::depth(depth).ok_or_else(|| format!("unknown IResNet depth {depth}; use 18, 34, 50, 100 or 200"))
        }
        Some(c) => from_json(config_json(c)?, "IResNet config"),
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
const CODEBOOK_KEYS: [&str; 2] = ["quantize.embedding.weight", "first_stage_model.quantize.embedding.weight"];

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

/// Refuses an `.onnx` checkpoint for the native backend.
fn native_checkpoint(path: &Path) -> Result<(), String> {
    if is_onnx_file(path) {
        return Err(format!("{} is an ONNX file, which only `backend: onnx` can run", path.display()));
    }
    Ok(())
}

/// The ONNX Runtime library, with a hint at the native backend when it is missing.
fn ort_runtime() -> Result<OrtRuntime, String> {
    OrtRuntime::new(None).map_err(|e| match e {
        OnnxError::RuntimeMissing { .. } => format!("{e} (or set `backend: native` on this node)"),
        other => other.to_string(),
    })
}

/// Opens `checkpoint` on ONNX Runtime: an `.onnx` file as it is, anything else compiled once into
/// the cache (`spec` says what to compile). The library is located first, so a missing runtime
/// fails before any compilation.
fn open_onnx(checkpoint: &Path, spec: OnnxModelSpec, inference: &Inference) -> Result<OrtSession, String> {
    let rt = ort_runtime()?;
    let file = if is_onnx_file(checkpoint) {
        checkpoint.to_path_buf()
    } else {
        let dir = default_cache_dir().map_err(|e| e.to_string())?;
        let cached = compile_cached(&dir, checkpoint, &spec, &CompileOptions::default()).map_err(|e| e.to_string())?;
        if cached.compiled {
            tracing::info!("compiled {} to {}", checkpoint.display(), cached.path.display());
        } else {
            tracing::debug!("{}: compiled model from the cache, {}", checkpoint.display(), cached.path.display());
        }
        cached.path
    };
    let options = inference.session_options();
    let session = rt.session_from_file(&file, &options).map_err(|e| e.to_string())?;
    tracing::info!(
        "{}: ONNX Runtime {} on {} ({} intra-op threads, up to {} sessions)",
        file.display(),
        rt.dylib().display(),
        session.active_providers().join(", "),
        options.intra_threads,
        options.replicas
    );
    Ok(session)
}

/// Checks an ONNX file's recorded configuration (`idflow.config`, when present) against the
/// node's: a file compiled for another architecture is refused instead of failing mid-run.
fn check_recorded_config<T: serde::Serialize>(session: &OrtSession, cfg: &T) -> Result<(), String> {
    let Some(recorded) = session.metadata("idflow.config") else { return Ok(()) };
    let recorded: serde_json::Value = serde_json::from_str(recorded).map_err(|e| format!("its `idflow.config` metadata: {e}"))?;
    let wanted = serde_json::to_value(cfg).map_err(|e| e.to_string())?;
    if recorded != wanted {
        return Err(format!(
            "the ONNX file was compiled for configuration {recorded} but the node's configuration is {wanted}; give the matching `config`"
        ));
    }
    Ok(())
}

/// Loads the denoiser and its schedule (strictly: every key must match). `onnx` compiles the
/// same weights (with the empty-context mask input, for guidance) and takes the schedule the
/// compiled file records (`idflow.schedule`), else the linear 1000-step one, like the native
/// loader for checkpoints without schedule buffers.
pub fn load_denoiser(inference: &Inference, path: &Path, cfg: &UNetConfig) -> Result<(Box<dyn Denoiser>, DdpmSchedule), String> {
    let fail = |e: String| format!("cannot load UNet {}: {e}", path.display());
    match inference.backend {
        Backend::Native => {
            native_checkpoint(path).map_err(fail)?;
            let (unet, schedule, _) =
                idflow_models::pretrained::load_idiff_face(path, cfg, &LoadOptions::default()).map_err(|e| fail(e.to_string()))?;
            Ok((Box::new(unet) as Box<dyn Denoiser>, schedule))
        }
        Backend::Onnx => {
            let spec = OnnxModelSpec::Unet { config: cfg.clone(), export: UNetExport::default() };
            let session = open_onnx(path, spec, inference).map_err(fail)?;
            check_recorded_config(&session, cfg).map_err(fail)?;
            let schedule = match session.metadata(SCHEDULE_METADATA) {
                Some(json) => DdpmSchedule::from_json(json, &path.display().to_string()).map_err(|e| fail(e.to_string()))?,
                None => DdpmSchedule::linear(1000),
            };
            let denoiser = OrtDenoiser::new(session).map_err(|e| fail(e.to_string()))?;
            if denoiser.is_conditional() != cfg.is_context_conditional {
                return Err(fail("the ONNX graph's conditioning (`context` input) does not match the configuration".into()));
            }
            Ok((Box::new(denoiser), schedule))
        }
    }
}

/// The native first-stage decoder as a [`FirstStage`] (decode only).
struct NativeDecoder {
    decoder: VqDecoder,
    quantize: bool,
}

impl FirstStage for NativeDecoder {
    fn encode(&self, _images: &candle_core::Tensor) -> idflow_models::Result<candle_core::Tensor> {
        Err(ModelError::Config("decode-latent loads the decoder only".into()))
    }

    fn decode(&self, latents: &candle_core::Tensor) -> idflow_models::Result<candle_core::Tensor> {
        Ok(self.decoder.decode(latents, !self.quantize)?)
    }
}

/// Loads the first-stage decoder (`decoder.*`, `post_quant_conv.*`, `quantize.embedding.weight`)
/// from IDiff-Face's split decoder file; the codebook size is read from the file. `quantize`
/// snaps latents to the codebook first (for an `.onnx` file: the graph must have been compiled
/// with the same choice).
pub fn load_vq_decoder(inference: &Inference, path: &Path, cfg: &VqConfig, quantize: bool) -> Result<Box<dyn FirstStage>, String> {
    let fail = |e: String| format!("cannot load first-stage decoder {}: {e}", path.display());
    if inference.backend == Backend::Onnx {
        let spec = OnnxModelSpec::VqDecoder { config: cfg.clone(), quantize };
        let session = open_onnx(path, spec, inference).map_err(fail)?;
        check_recorded_config(&session, cfg).map_err(fail)?;
        if let Some(q) = session.metadata("idflow.quantize").filter(|q| *q != quantize.to_string()) {
            return Err(fail(format!("the ONNX file was compiled with quantize = {q} but the node has `quantize: {quantize}`")));
        }
        return Ok(Box::new(OrtFirstStage::new(None, session)));
    }
    native_checkpoint(path).map_err(fail)?;
    let dict = StateDict::from_file(path).map_err(|e| fail(e.to_string()))?;
    let codebook =
        CODEBOOK_KEYS.iter().find_map(|k| dict.get(k)).ok_or_else(|| fail("no `quantize.embedding.weight` (codebook)".into()))?;
    let n_embed = codebook.dim(0).map_err(|e| fail(e.to_string()))?;
    let decoder = load_model(&dict, &LoadOptions::default(), |vb| VqDecoder::new(cfg, n_embed, vb))
        .map(|(d, _)| d)
        .map_err(|e| fail(e.to_string()))?;
    Ok(Box::new(NativeDecoder { decoder, quantize }))
}

/// Loads an ElasticFace / insightface IResNet.
pub fn load_iresnet(inference: &Inference, path: &Path, cfg: &IResNetConfig) -> Result<Box<dyn FaceEncoder>, String> {
    let fail = |e: String| format!("cannot load face encoder {}: {e}", path.display());
    match inference.backend {
        Backend::Native => {
            native_checkpoint(path).map_err(fail)?;
            let net: IResNet =
                idflow_models::pretrained::load_iresnet(path, cfg, &LoadOptions::default()).map_err(|e| fail(e.to_string()))?;
            Ok(Box::new(net))
        }
        Backend::Onnx => {
            let session = open_onnx(path, OnnxModelSpec::IResNet { config: cfg.clone() }, inference).map_err(fail)?;
            check_recorded_config(&session, cfg).map_err(fail)?;
            Ok(Box::new(OrtFaceEncoder::new(session)))
        }
    }
}

/// A face encoder from weights held in memory (a recognizer being trained): `onnx` compiles
/// `spec` from `dict` straight into a session, without the file cache (the weights change between
/// evaluations); `native` is refused, the caller runs its own model then.
pub fn face_encoder_in_memory(inference: &Inference, dict: &StateDict, spec: &OnnxModelSpec) -> Result<Box<dyn FaceEncoder>, String> {
    if inference.backend != Backend::Onnx {
        return Err("in-memory face encoders run on `backend: onnx` only".into());
    }
    let rt = ort_runtime()?;
    let bytes = spec.compile(dict, &CompileOptions::default()).map_err(|e| format!("cannot compile the face encoder to ONNX: {e}"))?;
    let session = rt.session_from_bytes(&bytes, &inference.session_options()).map_err(|e| e.to_string())?;
    Ok(Box::new(OrtFaceEncoder::new(session)))
}

/// Locates the ONNX Runtime library for a node that will need it later (e.g. `train`'s
/// evaluations), so a missing library fails the run before hours of work, not after.
pub fn require_ort() -> Result<(), String> {
    ort_runtime().map(|_| ())
}

/// A `FixedSizeList<Float32, Π shape>` field with `shape` metadata (e.g. `[3,32,32]`).
pub fn tensor_field(name: &str, shape: &[usize]) -> Field {
    let len: usize = shape.iter().product();
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let meta = HashMap::from([("shape".to_string(), format!("[{}]", dims.join(",")))]);
    Field::new(name, DataType::FixedSizeList(item, len as i32), false).with_metadata(meta)
}

/// A tensor column of `values.len() / width` rows.
pub fn tensor_array(values: Vec<f32>, width: usize) -> Result<FixedSizeListArray, arrow_schema::ArrowError> {
    FixedSizeListArray::try_new(
        Arc::new(Field::new("item", DataType::Float32, false)),
        width as i32,
        Arc::new(Float32Array::from(values)),
        None,
    )
}

/// The values of a tensor column, row-major, and the row width. Nulls are refused.
pub fn tensor_rows<'a>(b: &'a RecordBatch, name: &str) -> Result<(&'a [f32], usize), String> {
    let list = column(b, name)?.as_fixed_size_list_opt().ok_or_else(|| format!("column `{name}` is not a FixedSizeList"))?;
    if list.null_count() > 0 {
        return Err(format!("column `{name}` has null rows"));
    }
    let width = list.value_length() as usize;
    let values = list.values().as_primitive_opt::<Float32Type>().ok_or_else(|| format!("column `{name}` is not Float32"))?;
    let start = list.offset() * width;
    let all = values.values();
    all.get(start..start + list.len() * width).map(|v| (v, width)).ok_or_else(|| format!("column `{name}` is shorter than its rows"))
}

/// The `shape` metadata of a tensor field, parsed (`[3,32,32]` → `[3, 32, 32]`).
pub fn field_shape(f: &Field) -> Option<Vec<usize>> {
    let s = f.metadata().get("shape")?;
    s.trim_matches(['[', ']']).split(',').map(|d| d.trim().parse().ok()).collect()
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

    #[test]
    fn onnx_files_are_recognised_by_extension() {
        assert!(is_onnx_file(Path::new("/m/unet.onnx")) && is_onnx_file(Path::new("UNET.ONNX")));
        assert!(!is_onnx_file(Path::new("unet.ckpt")) && !is_onnx_file(Path::new("onnx")));
        let err = native_checkpoint(Path::new("m.onnx")).unwrap_err();
        assert!(err.contains("backend: onnx"), "{err}");
    }
}
