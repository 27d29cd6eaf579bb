//! Training-step cost of idflow's GEMM convolutions against candle's own, in the same process
//! (forward + backward of one layer, ms per iteration, median of `--iters`).
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release -p idflow-models --example bench_conv -- [--iters N]
//! ```
//!
//! The shapes are the toy encoder's (batch 64 at 32 px), the toy LDM's (batch 64 on 3×8×8
//! latents, 32–64 channels) and an IResNet-50 stage at 112 px (batch 8).

mod common;

use common::median_ms;

use candle_core::{Device, Module, Tensor, Var};
use idflow_models::kernels::conv::{Conv2d, ConvTranspose2d};

/// Fields of a `Case` in declaration order.
type CaseFields = (&'static str, usize, usize, usize, usize, usize, usize, usize, bool);

/// `Case` from its fields in declaration order.
const fn case(fields: CaseFields) -> Case {
    let (name, batch, c_in, c_out, size, kernel, stride, padding, transposed) = fields;
    Case { name, batch, c_in, c_out, size, kernel, stride, padding, transposed }
}

/// One benchmarked layer: input `[batch, c_in, size, size]`, kernel, stride, padding, transposed.
struct Case {
    name: &'static str,
    batch: usize,
    c_in: usize,
    c_out: usize,
    size: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    transposed: bool,
}

fn step(layer: &dyn Module, x: &Var, w: &Var) -> candle_core::Result<()> {
    let y = layer.forward(x.as_tensor())?;
    let grads = y.sqr()?.sum_all()?.backward()?;
    assert!(grads.get(x).is_some() && grads.get(w).is_some());
    Ok(())
}

/// candle's convolution, for comparison.
struct CandleConv<'a>(&'a Case, Tensor);

impl Module for CandleConv<'_> {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let c = self.0;
        if c.transposed {
            x.conv_transpose2d(&self.1, c.padding, 0, c.stride, 1)
        } else {
            x.conv2d(&self.1, c.padding, c.stride, 1, 1)
        }
    }
}

fn main() -> candle_core::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let iters = args.iter().position(|a| a == "--iters").and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(10);
    let cases = [
        case(("encoder stem 3→16 k3 @32", 64, 3, 16, 32, 3, 1, 1, false)),
        case(("encoder 16→16 k3 @32", 64, 16, 16, 32, 3, 1, 1, false)),
        case(("encoder 16→32 k3 s2 @32", 64, 16, 32, 32, 3, 2, 1, false)),
        case(("encoder 64→128 k3 s2 @8", 64, 64, 128, 8, 3, 2, 1, false)),
        Case { name: "ldm 32→32 k3 @8", batch: 64, c_in: 32, c_out: 32, size: 8, kernel: 3, stride: 1, padding: 1, transposed: false },
        case(("ldm up 64→64 k4 s2 @4 (transposed)", 64, 64, 64, 4, 4, 2, 1, true)),
        case(("ir50 128→128 k3 @28", 8, 128, 128, 28, 3, 1, 1, false)),
    ];
    println!("| layer (forward + backward) | candle ms | idflow ms | speed-up |");
    println!("|---|---:|---:|---:|");
    for c in &cases {
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (c.batch, c.c_in, c.size, c.size), &Device::Cpu)?)?;
        let w_shape = if c.transposed { (c.c_in, c.c_out, c.kernel, c.kernel) } else { (c.c_out, c.c_in, c.kernel, c.kernel) };
        let w = Var::from_tensor(&(Tensor::randn(0f32, 1.0, w_shape, &Device::Cpu)? * 0.1)?)?;
        let ours: Box<dyn Module> = if c.transposed {
            Box::new(ConvTranspose2d::new(w.as_tensor().clone(), None, c.stride, c.padding))
        } else {
            Box::new(Conv2d::new(w.as_tensor().clone(), None, c.stride, c.padding))
        };
        let theirs = CandleConv(c, w.as_tensor().clone());
        let (candle_ms, ()) = median_ms(iters, || step(&theirs, &x, &w))?;
        let (idflow_ms, ()) = median_ms(iters, || step(ours.as_ref(), &x, &w))?;
        println!("| {} | {candle_ms:.1} | {idflow_ms:.1} | {:.2}× |", c.name, candle_ms / idflow_ms);
    }
    Ok(())
}
