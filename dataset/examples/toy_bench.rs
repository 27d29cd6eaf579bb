//! Measures toy-faces rendering speed on one core (render only, and render + PNG encode).
//!
//! `cargo run -p idflow-dataset --release --example toy_bench -- [COUNT] [SIZE]`

use std::time::Instant;

use idflow_dataset::toy::{self, Difficulty};

/// CPU seconds used by this process so far (Linux `/proc/self/stat`; `None` elsewhere). On a
/// shared machine CPU time is a fairer per-core figure than wall time.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0) // USER_HZ is 100 on Linux
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let count: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(20_000);
    let size: u32 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(64);
    let d = Difficulty::default();
    let mut checksum = 0u64;
    // Warm-up (page faults, lazily built tables).
    for k in 0..200 {
        checksum += toy::render(1, k, 0, 0.3, size, &d)?.as_raw()[0] as u64;
    }
    let t = Instant::now();
    let cpu0 = cpu_seconds();
    for k in 0..count {
        let img = toy::render(1, k / 8, k % 8, 0.3, size, &d)?;
        checksum = checksum.wrapping_add(img.as_raw()[(k as usize * 7) % img.as_raw().len()] as u64);
    }
    let secs = t.elapsed().as_secs_f64();
    println!("render {size}x{size}: {count} images in {secs:.2} s wall = {:.0} images/s", count as f64 / secs);
    if let (Some(a), Some(b)) = (cpu0, cpu_seconds()) {
        println!("render {size}x{size}: {:.2} s CPU = {:.0} images/s per core", b - a, count as f64 / (b - a));
    }
    let n_png = count / 4;
    let t = Instant::now();
    let mut bytes = 0usize;
    for k in 0..n_png {
        bytes += toy::render_png(1, k / 8, k % 8, 0.3, size, &d)?.len();
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "render+PNG {size}x{size}: {n_png} images in {secs:.2} s = {:.0} images/s, {:.0} bytes/image (checksum {checksum})",
        n_png as f64 / secs,
        bytes as f64 / n_png as f64
    );
    Ok(())
}
