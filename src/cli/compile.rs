//! `idflow compile`: a checkpoint and its architecture configuration → an ONNX file.

use super::CompileModel;
use anyhow::Context;

/// `idflow compile`: checkpoint + config → ONNX file (written atomically).
pub fn compile(
    model: CompileModel,
    checkpoint: &std::path::Path,
    config: Option<String>,
    depth: usize,
    quantize: bool,
    dropout_mask: bool,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    use idflow::operators::support::model_ref::{iresnet_config, unet_config, vq_config, ConfigRef};
    use idflow_models::onnx::{OnnxModelSpec, TimestepType, UNetExport};
    let cfg = config.map(ConfigRef::Name);
    let cfg = cfg.as_ref();
    let bad = |e: String| anyhow::anyhow!("--config: {e}");
    let spec = match model {
        CompileModel::Unet => OnnxModelSpec::Unet {
            config: unet_config(cfg).map_err(bad)?,
            export: UNetExport { timestep: TimestepType::Int64, dropout_mask },
        },
        CompileModel::VqEncoder => OnnxModelSpec::VqEncoder { config: vq_config(cfg).map_err(bad)? },
        CompileModel::VqDecoder => OnnxModelSpec::VqDecoder { config: vq_config(cfg).map_err(bad)?, quantize },
        CompileModel::Iresnet => OnnxModelSpec::IResNet { config: iresnet_config(cfg).map_err(bad)? },
        CompileModel::TfaceIr => OnnxModelSpec::TFaceIr { depth },
    };
    let dict =
        idflow_models::io::checkpoint::StateDict::from_file(checkpoint).with_context(|| format!("cannot load {}", checkpoint.display()))?;
    let bytes = spec.compile(&dict, &Default::default()).with_context(|| format!("cannot compile {}", checkpoint.display()))?;
    idflow_models::onnx::compile_to_file(&bytes, out).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}
