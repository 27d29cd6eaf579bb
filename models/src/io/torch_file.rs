//! Reading PyTorch zip checkpoints (`.ckpt`, `.pt`, `.pth`) into candle tensors.
//!
//! Parsing is done by `idflow_dataset::formats::torch_zip`, whose pickle VM never executes
//! anything and admits only the globals state dicts use (`collections.OrderedDict`,
//! `torch._utils._rebuild_tensor_v2`, `torch.*Storage`, …): a crafted pickle calling, say,
//! `os.system` is refused with an error naming the global. This module only converts the
//! resulting little-endian buffers into candle tensors.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use idflow_dataset::formats::torch_zip::{self, DType as TorchDType, NamedTensor};

use crate::error::checkpoint_error;
use crate::error::Result;

/// Converts one stored tensor; integer types candle lacks are widened to i64, bool becomes u8.
fn to_candle(path: &Path, t: &NamedTensor) -> Result<Tensor> {
    let dev = Device::Cpu;
    let shape = t.shape.as_slice();
    let direct = |dtype: DType| Tensor::from_raw_buffer(&t.data, dtype, shape, &dev);
    let tensor = match t.dtype {
        TorchDType::F32 => direct(DType::F32)?,
        TorchDType::F64 => direct(DType::F64)?,
        TorchDType::F16 => direct(DType::F16)?,
        TorchDType::BF16 => direct(DType::BF16)?,
        TorchDType::I64 => direct(DType::I64)?,
        TorchDType::I32 => direct(DType::I32)?,
        TorchDType::I16 => direct(DType::I16)?,
        TorchDType::U8 | TorchDType::Bool => direct(DType::U8)?,
        TorchDType::I8 => {
            let v: Vec<i64> = t.data.iter().map(|&b| b as i8 as i64).collect();
            Tensor::from_vec(v, shape, &dev)?
        }
    };
    if tensor.elem_count() != t.numel() {
        return Err(checkpoint_error(path, format!("tensor `{}` has a wrong byte length", t.name)));
    }
    Ok(tensor)
}

/// Reads the state dict of a torch zip checkpoint as `(key, tensor)` pairs in file order
/// (nested dicts flattened with `.`; non-tensor entries skipped).
pub fn read_torch_state_dict(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let tensors = torch_zip::read_state_dict(path).map_err(|e| checkpoint_error(path, e.to_string()))?;
    tensors.iter().map(|t| Ok((t.name.clone(), to_candle(path, t)?))).collect()
}
