//! Renders the five toy benchmarks in memory and prints the raw-pixel verification baseline
//! (cosine of mean-subtracted pixels, 10-fold protocol) for each.
//!
//! `cargo run -p idflow-dataset --release --example toy_baseline -- [SIZE] [WORLD_SEED]`

use idflow_dataset::toy::benchmarks::{raw_pixel_report, render_benchmark, Benchmark};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let size: u32 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(64);
    let world: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(0);
    for bench in Benchmark::ALL {
        let (images, issame) = render_benchmark(bench, world, size)?;
        let r = raw_pixel_report(&images, &issame)?;
        println!("{:<12} raw-pixel accuracy {:.4} ± {:.4}  VAL@FAR=1e-3 {:.4}", bench.name(), r.accuracy_mean, r.accuracy_std, r.val_mean);
    }
    Ok(())
}
