//! Shared pieces of the generation operators (`diffuse`, `decode-latent`, `embed`, `filter`):
//! the YAML shape of "which model, which checkpoint, which configuration", resolving a
//! configuration (a named preset, a JSON file, or an inline map) into the model crate's config
//! types, loading the native models at run time, and building / reading the
//! `FixedSizeList<Float32, n>` tensor columns the operators exchange.
//!
//! Plan time only resolves configurations (presets and inline maps need no file; a JSON config
//! file is read because the output shapes depend on it). Checkpoints are opened in `start()`:
//! `backend: native` builds the candle models, `backend: onnx` compiles the same checkpoint to
//! an ONNX graph in memory and runs it on ONNX Runtime (library from `ORT_DYLIB_PATH`).

use crate::batch::column;
use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use arrow_array::{Array, FixedSizeListArray, Float32Array, RecordBatch};
use arrow_schema::{DataType, Field};
use idflow_models::checkpoint::{load_model, LoadOptions, StateDict};
use idflow_models::iresnet::{IResNet, IResNetConfig};
use idflow_models::onnx::{
    compile_iresnet, compile_unet, compile_vq_decoder, CompileOptions, OrtDenoiser, OrtFaceEncoder, OrtFirstStage, OrtRuntime, OrtSession,
    SessionOptions, UNetExport,
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
    #[default]
    Native,
    /// ONNX Runtime: the checkpoint is compiled to an ONNX graph when the run starts
    /// (`idflow_models::onnx`) and run on the CPU provider; the library comes from
    /// `ORT_DYLIB_PATH`.
    Onnx,
}

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
    /// The weights file (`.ckpt`, `.pt`, `.pth` or `.safetensors`).
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

/// Opens compiled model bytes on ONNX Runtime (CPU provider).
fn ort_session(bytes: &[u8]) -> Result<OrtSession, String> {
    let rt = OrtRuntime::new(None).map_err(|e| e.to_string())?;
    rt.session_from_bytes(bytes, &SessionOptions::default()).map_err(|e| e.to_string())
}

/// Loads the denoiser and its schedule (strictly: every key must match). `onnx` compiles the
/// same weights to an ONNX graph (with the empty-context mask input, for guidance).
pub fn load_denoiser(backend: Backend, path: &Path, cfg: &UNetConfig) -> Result<(Box<dyn Denoiser>, DdpmSchedule), String> {
    let fail = |e: String| format!("cannot load UNet {}: {e}", path.display());
    match backend {
        Backend::Native => {
            let (unet, schedule, _) =
                idflow_models::pretrained::load_idiff_face(path, cfg, &LoadOptions::default()).map_err(|e| fail(e.to_string()))?;
            Ok((Box::new(unet) as Box<dyn Denoiser>, schedule))
        }
        Backend::Onnx => {
            let dict = StateDict::from_file(path).map_err(|e| fail(e.to_string()))?;
            let schedule = DdpmSchedule::from_state_dict_or_linear(&dict, 1000).map_err(|e| fail(e.to_string()))?;
            let bytes = compile_unet(&dict, cfg, &UNetExport::default(), &CompileOptions::default()).map_err(|e| fail(e.to_string()))?;
            let denoiser = OrtDenoiser::new(ort_session(&bytes).map_err(fail)?).map_err(|e| fail(e.to_string()))?;
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
/// snaps latents to the codebook first.
pub fn load_vq_decoder(backend: Backend, path: &Path, cfg: &VqConfig, quantize: bool) -> Result<Box<dyn FirstStage>, String> {
    let fail = |e: String| format!("cannot load first-stage decoder {}: {e}", path.display());
    let dict = StateDict::from_file(path).map_err(|e| fail(e.to_string()))?;
    if backend == Backend::Onnx {
        let bytes = compile_vq_decoder(&dict, cfg, quantize, &CompileOptions::default()).map_err(|e| fail(e.to_string()))?;
        return Ok(Box::new(OrtFirstStage::new(None, ort_session(&bytes).map_err(fail)?)));
    }
    let codebook = ["quantize.embedding.weight", "first_stage_model.quantize.embedding.weight"]
        .iter()
        .find_map(|k| dict.get(k))
        .ok_or_else(|| fail("no `quantize.embedding.weight` (codebook)".into()))?;
    let n_embed = codebook.dim(0).map_err(|e| fail(e.to_string()))?;
    let decoder = load_model(&dict, &LoadOptions::default(), |vb| VqDecoder::new(cfg, n_embed, vb))
        .map(|(d, _)| d)
        .map_err(|e| fail(e.to_string()))?;
    Ok(Box::new(NativeDecoder { decoder, quantize }))
}

/// Loads an ElasticFace / insightface IResNet.
pub fn load_iresnet(backend: Backend, path: &Path, cfg: &IResNetConfig) -> Result<Box<dyn FaceEncoder>, String> {
    let fail = |e: String| format!("cannot load face encoder {}: {e}", path.display());
    match backend {
        Backend::Native => {
            let net: IResNet =
                idflow_models::pretrained::load_iresnet(path, cfg, &LoadOptions::default()).map_err(|e| fail(e.to_string()))?;
            Ok(Box::new(net))
        }
        Backend::Onnx => {
            let dict = StateDict::from_file(path).map_err(|e| fail(e.to_string()))?;
            let bytes = compile_iresnet(&dict, cfg, &CompileOptions::default()).map_err(|e| fail(e.to_string()))?;
            Ok(Box::new(OrtFaceEncoder::new(ort_session(&bytes).map_err(fail)?)))
        }
    }
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
