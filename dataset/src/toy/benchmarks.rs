//! The five toy verification benchmarks, shaped like LFW, CFP-FP, CPLFW, AgeDB-30 and CALFW.
//!
//! Every benchmark has 10 folds × (300 genuine + 300 impostor) pairs = 6,000 pairs, stored fold
//! by fold (the 300 genuine pairs of a fold, then its 300 impostors), so the standard protocol's
//! 10 contiguous folds are exactly these folds.
//!
//! **Identities.** Benchmark `k` (in [`Benchmark::ALL`] order) uses identity numbers from
//! `1,000,000 + k · 100,000`; fold `f` uses the window `[base + f · 1,000, base + f · 1,000 + 900)`:
//! genuine pair `j` shows identity `base + f·1000 + j`, impostor pair `j` identities
//! `base + f·1000 + 300 + 2j` and `+ 1`. Folds therefore never share an identity (as in LFW),
//! benchmarks never share one, and any training range below 1,000,000 is disjoint from all of
//! them. For the look-alike benchmarks the second impostor identity is not drawn independently but
//! derived from the first with [`IdentityParams::lookalike`] (strength [`LOOKALIKE_STRENGTH`]),
//! keyed by its own identity number.
//!
//! **Variations.** `toy_lfw`: default nuisances, ages 0–0.5. `toy_cfp_fp`: one near-frontal
//! image (|yaw| < 0.08) and one strongly turned (|yaw| 0.55–0.8) per pair. `toy_cplfw`: both
//! images turned (|yaw| 0.25–0.75, random sides) and look-alike impostors. `toy_agedb`: one image
//! at age 0–0.3, the other at 0.7–1.0. `toy_calfw`: the same age gap and look-alike impostors.
//!
//! Images are stored as PNG (lossless and deterministic) inside the usual `.bin` pickle; decoders
//! that read `.bin` files sniff the image format.

use std::path::{Path, PathBuf};

use image::RgbImage;

use crate::formats::verification_bin::write_bin;
use crate::metrics::verification::{evaluate, l2_normalize_rows, VerificationReport};
use crate::metrics::MetricsError;
use crate::rng::KeyedRng;

use super::draw::{symmetric, uniform};
use super::{encode_png, render_params, Difficulty, IdentityParams, NuisanceParams, ToyError};

/// First identity number used by the benchmarks.
pub const IDENTITY_BASE: u64 = 1_000_000;
/// Identity numbers reserved per benchmark.
pub const IDENTITY_STRIDE: u64 = 100_000;
/// Identity numbers reserved per fold.
pub const FOLD_STRIDE: u64 = 1_000;
/// Folds per benchmark.
pub const FOLDS: usize = 10;
/// Genuine pairs per fold.
pub const GENUINE_PER_FOLD: usize = 300;
/// Impostor pairs per fold.
pub const IMPOSTOR_PER_FOLD: usize = 300;
/// Strength passed to [`IdentityParams::lookalike`] for look-alike impostors.
pub const LOOKALIKE_STRENGTH: f32 = 0.6;

/// Key part separating the benchmark's own draws (ages, poses) from other streams.
const BENCH_STREAM: u64 = 0x6265_6e63;
/// Key part of the look-alike perturbation stream.
const LOOKALIKE_STREAM: u64 = 0x6c6f_6f6b;

/// The five toy benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Benchmark {
    /// Mixed nuisances (LFW-like).
    Lfw,
    /// Near-frontal vs strongly turned (CFP-FP-like).
    CfpFp,
    /// Pose plus look-alike impostors (CPLFW-like).
    Cplfw,
    /// Large age gap (AgeDB-30-like).
    AgeDb,
    /// Age gap plus look-alike impostors (CALFW-like).
    Calfw,
}

impl Benchmark {
    /// All benchmarks, in the order of their identity ranges.
    pub const ALL: [Benchmark; 5] = [Benchmark::Lfw, Benchmark::CfpFp, Benchmark::Cplfw, Benchmark::AgeDb, Benchmark::Calfw];

    /// File stem, e.g. `toy_lfw`.
    pub fn name(self) -> &'static str {
        match self {
            Benchmark::Lfw => "toy_lfw",
            Benchmark::CfpFp => "toy_cfp_fp",
            Benchmark::Cplfw => "toy_cplfw",
            Benchmark::AgeDb => "toy_agedb",
            Benchmark::Calfw => "toy_calfw",
        }
    }

    /// First identity number of this benchmark.
    pub fn identity_offset(self) -> u64 {
        let k = Benchmark::ALL.iter().position(|&b| b == self).unwrap_or(0) as u64;
        IDENTITY_BASE + k * IDENTITY_STRIDE
    }

    fn lookalikes(self) -> bool {
        matches!(self, Benchmark::Cplfw | Benchmark::Calfw)
    }
}

/// One image of a pair.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSpec {
    /// Identity number (keys the nuisances, and the traits unless `lookalike_of` is set).
    pub identity: u64,
    /// When set, the traits are a look-alike of this identity's.
    pub lookalike_of: Option<u64>,
    /// Sample number (keys the nuisances).
    pub sample: u64,
    /// Age, 0…1.
    pub age: f32,
    /// Yaw forced by the benchmark, if any.
    pub yaw: Option<f32>,
}

/// One verification pair.
#[derive(Debug, Clone, PartialEq)]
pub struct PairSpec {
    /// Fold, 0-based.
    pub fold: usize,
    /// Same identity?
    pub issame: bool,
    /// First image.
    pub a: ImageSpec,
    /// Second image.
    pub b: ImageSpec,
}

fn signed(rng: &mut KeyedRng, lo: f32, hi: f32) -> f32 {
    let m = uniform(rng, lo, hi);
    if rng.chance(0.5) {
        m
    } else {
        -m
    }
}

/// Ages and yaws of the two images of a pair, drawn from the pair's first identity.
fn conditions(bench: Benchmark, world_seed: u64, key: u64) -> [(f32, Option<f32>); 2] {
    let mut r = KeyedRng::new(&[world_seed, key, BENCH_STREAM]);
    let base_age = uniform(&mut r, 0.0, 0.5);
    let jitter = [symmetric(&mut r, 0.06), symmetric(&mut r, 0.06)];
    let lfw_age = |k: usize| (base_age + jitter[k]).clamp(0.0, 1.0);
    match bench {
        Benchmark::Lfw => [(lfw_age(0), None), (lfw_age(1), None)],
        Benchmark::CfpFp => {
            let frontal = (lfw_age(0), Some(symmetric(&mut r, 0.08)));
            let profile = (lfw_age(1), Some(signed(&mut r, 0.55, 0.8)));
            [frontal, profile]
        }
        Benchmark::Cplfw => [(lfw_age(0), Some(signed(&mut r, 0.25, 0.75))), (lfw_age(1), Some(signed(&mut r, 0.25, 0.75)))],
        Benchmark::AgeDb | Benchmark::Calfw => {
            let young = uniform(&mut r, 0.0, 0.3);
            let old = uniform(&mut r, 0.7, 1.0);
            if r.chance(0.5) {
                [(young, None), (old, None)]
            } else {
                [(old, None), (young, None)]
            }
        }
    }
}

/// The pair list of `bench` in world `world_seed` (cheap: nothing is rendered).
pub fn pairs(bench: Benchmark, world_seed: u64) -> Vec<PairSpec> {
    let mut out = Vec::with_capacity(FOLDS * (GENUINE_PER_FOLD + IMPOSTOR_PER_FOLD));
    for fold in 0..FOLDS {
        let base = bench.identity_offset() + fold as u64 * FOLD_STRIDE;
        for j in 0..GENUINE_PER_FOLD as u64 {
            let id = base + j;
            let [(age_a, yaw_a), (age_b, yaw_b)] = conditions(bench, world_seed, id);
            out.push(PairSpec {
                fold,
                issame: true,
                a: ImageSpec { identity: id, lookalike_of: None, sample: 0, age: age_a, yaw: yaw_a },
                b: ImageSpec { identity: id, lookalike_of: None, sample: 1, age: age_b, yaw: yaw_b },
            });
        }
        for j in 0..IMPOSTOR_PER_FOLD as u64 {
            let (ia, ib) = (base + GENUINE_PER_FOLD as u64 + 2 * j, base + GENUINE_PER_FOLD as u64 + 2 * j + 1);
            let [(age_a, yaw_a), (age_b, yaw_b)] = conditions(bench, world_seed, ia);
            out.push(PairSpec {
                fold,
                issame: false,
                a: ImageSpec { identity: ia, lookalike_of: None, sample: 0, age: age_a, yaw: yaw_a },
                b: ImageSpec { identity: ib, lookalike_of: bench.lookalikes().then_some(ia), sample: 1, age: age_b, yaw: yaw_b },
            });
        }
    }
    out
}

/// The identity traits an image shows.
pub fn identity_of(spec: &ImageSpec, world_seed: u64) -> IdentityParams {
    match spec.lookalike_of {
        Some(src) => {
            let mut r = KeyedRng::new(&[world_seed, spec.identity, LOOKALIKE_STREAM]);
            IdentityParams::draw(world_seed, src).lookalike(&mut r, LOOKALIKE_STRENGTH)
        }
        None => IdentityParams::draw(world_seed, spec.identity),
    }
}

/// Renders one benchmark image.
pub fn render_image(spec: &ImageSpec, world_seed: u64, size: u32, difficulty: &Difficulty) -> Result<RgbImage, ToyError> {
    let id = identity_of(spec, world_seed);
    let mut n = NuisanceParams::draw(world_seed, spec.identity, spec.sample, difficulty);
    if let Some(yaw) = spec.yaw {
        n.yaw = yaw;
    }
    render_params(&id, &n, spec.age, size)
}

/// Runs `f` over `0..n` on all cores, keeping the output order.
fn parallel_map<T: Send>(n: usize, f: impl Fn(usize) -> Result<T, ToyError> + Sync) -> Result<Vec<T>, ToyError> {
    let workers = std::thread::available_parallelism().map_or(1, |p| p.get()).min(n.max(1));
    let chunk = n.div_ceil(workers.max(1)).max(1);
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|start| s.spawn(move || (start..(start + chunk).min(n)).map(f).collect::<Result<Vec<T>, ToyError>>()))
            .collect();
        let mut out = Vec::with_capacity(n);
        for h in handles {
            match h.join() {
                Ok(part) => out.extend(part?),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(out)
    })
}

/// Renders every image of `bench` (pair order, two images per pair) with the default
/// difficulty, and returns them with the `issame` labels.
pub fn render_benchmark(bench: Benchmark, world_seed: u64, size: u32) -> Result<(Vec<RgbImage>, Vec<bool>), ToyError> {
    let specs = pairs(bench, world_seed);
    let d = Difficulty::default();
    let images = parallel_map(specs.len() * 2, |k| {
        let p = &specs[k / 2];
        render_image(if k % 2 == 0 { &p.a } else { &p.b }, world_seed, size, &d)
    })?;
    Ok((images, specs.iter().map(|p| p.issame).collect()))
}

/// Writes the five benchmarks as `<dir>/<name>.bin` (PNG images) and returns their paths.
pub fn write_benchmarks(dir: &Path, size: u32, world_seed: u64) -> Result<Vec<PathBuf>, ToyError> {
    std::fs::create_dir_all(dir).map_err(|source| ToyError::Io { path: dir.to_path_buf(), source })?;
    let mut written = Vec::with_capacity(Benchmark::ALL.len());
    for bench in Benchmark::ALL {
        let (images, issame) = render_benchmark(bench, world_seed, size)?;
        let pngs = parallel_map(images.len(), |k| encode_png(&images[k]))?;
        let path = dir.join(format!("{}.bin", bench.name()));
        write_bin(&path, &pngs, &issame)?;
        written.push(path);
    }
    Ok(written)
}

/// The raw-pixel baseline: each image flattened to RGB floats, the benchmark's mean image
/// subtracted, L2-normalised (so the squared distance is `2 − 2·cosine`), then the standard
/// 10-fold protocol.
pub fn raw_pixel_report(images: &[RgbImage], issame: &[bool]) -> Result<VerificationReport, MetricsError> {
    let Some(first) = images.first() else {
        return Err(MetricsError::Empty { what: "images" });
    };
    let dim = first.as_raw().len();
    let mut mean = vec![0.0f64; dim];
    for img in images {
        if img.as_raw().len() != dim {
            return Err(MetricsError::LengthMismatch { what: "image sizes", expected: dim, got: img.as_raw().len() });
        }
        for (m, &v) in mean.iter_mut().zip(img.as_raw()) {
            *m += v as f64;
        }
    }
    for m in mean.iter_mut() {
        *m /= images.len() as f64;
    }
    let mut rows = Vec::with_capacity(images.len() * dim);
    for img in images {
        rows.extend(img.as_raw().iter().zip(&mean).map(|(&v, &m)| (v as f64 - m) as f32));
    }
    l2_normalize_rows(&mut rows, dim)?;
    evaluate(&rows, dim, issame, FOLDS)
}
