//! Loading the models a node references, at run time (`start()`): `backend: native` builds the
//! candle models; `backend: onnx` (the default) compiles the checkpoint once into the ONNX cache
//! ([`idflow_models::onnx::compile_cached`], folder [`idflow_models::onnx::default_cache_dir`]) —
//! or takes an `.onnx` checkpoint as it is — and runs it on ONNX Runtime with one session per
//! worker ([`Inference::session_options`]).

use super::model_ref::{is_onnx_file, Backend, Inference, CODEBOOK_KEYS};
use idflow_models::io::checkpoint::{load_model, LoadOptions, StateDict};
use idflow_models::iresnet::{IResNet, IResNetConfig};
use idflow_models::onnx::{
    compile_cached, default_cache_dir, CompileOptions, OnnxError, OnnxModelSpec, OrtDenoiser, OrtFaceEncoder, OrtFirstStage, OrtRuntime,
    OrtSession, UNetExport, SCHEDULE_METADATA,
};
use idflow_models::schedule::DdpmSchedule;
use idflow_models::traits::{Denoiser, FaceEncoder, FirstStage};
use idflow_models::unet::UNetConfig;
use idflow_models::vq::{VqConfig, VqDecoder};
use idflow_models::ModelError;
use std::path::Path;

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
                idflow_models::io::pretrained::load_idiff_face(path, cfg, &LoadOptions::default()).map_err(|e| fail(e.to_string()))?;
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
                idflow_models::io::pretrained::load_iresnet(path, cfg, &LoadOptions::default()).map_err(|e| fail(e.to_string()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn onnx_files_are_recognised_by_extension() {
        assert!(is_onnx_file(Path::new("/m/unet.onnx")) && is_onnx_file(Path::new("UNET.ONNX")));
        assert!(!is_onnx_file(Path::new("unet.ckpt")) && !is_onnx_file(Path::new("onnx")));
        let err = native_checkpoint(Path::new("m.onnx")).unwrap_err();
        assert!(err.contains("backend: onnx"), "{err}");
    }
}
