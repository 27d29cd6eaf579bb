//! Raw-buffer helpers of the CPU kernels: contiguous f32 views of candle's CPU storage and a
//! row-parallel loop on rayon's pool.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Result};
use rayon::prelude::*;

/// Runs `f(row, values)` over `data` cut into rows of `row_len`: on rayon's pool when it has more
/// than one thread, else on the calling thread (with one pool thread, callers on other threads,
/// such as data-parallel training replicas, would queue behind each other on it).
pub fn for_each_row(data: &mut [f32], row_len: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if rayon::current_num_threads() > 1 {
        data.par_chunks_mut(row_len).enumerate().for_each(|(row, values)| f(row, values));
    } else {
        data.chunks_mut(row_len).enumerate().for_each(|(row, values)| f(row, values));
    }
}

/// Reads a contiguous f32 CPU tensor's values.
pub fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout, op: &'static str) -> Result<&'a [f32]> {
    let data = match storage {
        CpuStorage::F32(data) => data.as_slice(),
        other => candle_core::bail!("{op}: only f32 tensors are supported, got {:?}", other.dtype()),
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: the input must be contiguous"),
    }
}
