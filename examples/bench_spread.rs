//! Seconds of the greedy `max_similarity` spread on synthetic-uniform contexts: the screened
//! int8 walk (`auto` = AVX-512 VNNI where present, `portable`) against the previous
//! implementation (`candle`: f32 candle matrix products per block of 1,024, kept here as the
//! peer), all in the same process, with a check that the kept sets are equal. Reports wall
//! seconds and CPU seconds of the process (all threads, from `/proc/self/stat`): on a shared
//! machine the CPU time is the comparable number.
//!
//! `cargo run --release --example bench_spread -- [--n 100000] [--dim 512] [--tau 0.3] [--impls auto,portable,candle]`

use candle_core::{Device, Tensor};
use idflow::operators::contexts::{greedy_max_similarity_with, synthetic_uniform, ScreenKernel};
use std::time::Instant;

/// The previous implementation: f32 candle products, one per earlier block, max per row.
fn candle_greedy(values: &[f32], dim: usize, tau: f32) -> candle_core::Result<Vec<usize>> {
    const BLOCK: usize = 1024;
    let n = values.len() / dim;
    let dev = Device::Cpu;
    let mut kept_blocks: Vec<Tensor> = Vec::new();
    let mut kept = Vec::new();
    let mut start = 0;
    while start < n {
        let end = (start + BLOCK).min(n);
        let rows = end - start;
        let cand = Tensor::from_slice(&values[start * dim..end * dim], (rows, dim), &dev)?;
        let mut rejected = vec![false; rows];
        for kb in &kept_blocks {
            let best = cand.matmul(kb)?.max(1)?.to_vec1::<f32>()?;
            for (r, b) in rejected.iter_mut().zip(best) {
                *r |= b > tau;
            }
        }
        let gram = cand.matmul(&cand.t()?)?.to_vec2::<f32>()?;
        let mut in_block: Vec<usize> = Vec::new();
        for j in 0..rows {
            if rejected[j] || in_block.iter().any(|&k| gram[j][k] > tau) {
                continue;
            }
            in_block.push(j);
            kept.push(start + j);
        }
        if !in_block.is_empty() {
            let mut v = Vec::with_capacity(in_block.len() * dim);
            for &j in &in_block {
                v.extend_from_slice(&values[(start + j) * dim..(start + j + 1) * dim]);
            }
            kept_blocks.push(Tensor::from_vec(v, (in_block.len(), dim), &dev)?.t()?.contiguous()?);
        }
        start = end;
    }
    Ok(kept)
}

/// User + system CPU seconds of this process so far (Linux; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // fields after the parenthesised command name; utime and stime are fields 14 and 15
    let rest = stat.rsplit_once(')').map_or("", |r| r.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // USER_HZ is 100 on Linux
    (ticks(11) + ticks(12)) / 100.0
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: &str| -> String {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_string())
    };
    let n: usize = arg("--n", "100000").parse()?;
    let dim: usize = arg("--dim", "512").parse()?;
    let tau: f32 = arg("--tau", "0.3").parse()?;
    let impls = arg("--impls", "auto,portable,candle");
    let set = synthetic_uniform(1, n, dim);
    println!("{n} × {dim} synthetic-uniform candidates, tau {tau}");
    let mut results: Vec<(String, Vec<usize>, f64)> = Vec::new();
    for which in impls.split(',') {
        let (t, cpu0) = (Instant::now(), cpu_seconds());
        let kept = match which {
            "auto" => greedy_max_similarity_with(&set.values, dim, tau, None, ScreenKernel::Auto).map_err(anyhow::Error::msg)?,
            "portable" => greedy_max_similarity_with(&set.values, dim, tau, None, ScreenKernel::Portable).map_err(anyhow::Error::msg)?,
            "candle" => candle_greedy(&set.values, dim, tau)?,
            other => anyhow::bail!("unknown implementation {other} (auto, portable, candle)"),
        };
        let (wall, secs) = (t.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
        println!("{which:>9}: {} kept in {wall:.2} s wall, {secs:.2} s CPU", kept.len());
        results.push((which.to_string(), kept, secs));
    }
    if let Some((first, kept, secs)) = results.first() {
        for (name, other, s) in &results[1..] {
            println!("{name} / {first}: {:.2}× the CPU time, kept sets {}", s / secs, if other == kept { "equal" } else { "DIFFER" });
        }
    }
    Ok(())
}
