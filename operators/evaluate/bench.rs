//! Verification benchmarks: a `.bin` pair file through a face encoder and the insightface
//! 10-fold protocol, and the paper-style results table.
//!
//! Embedding follows ElasticFace's `eval/verification.test`: each image is decoded to RGB,
//! scaled `((x/255) − 0.5)/0.5` into NCHW, and passed through the backbone; with `flip` the
//! horizontally flipped image is passed too and the two feature vectors are summed; the sum is
//! L2-normalised (f64) and handed to
//! [`idflow_dataset::metrics::verification::evaluate_f64`]. `xnorm` is the mean L2 norm of
//! every raw feature vector (both views), as `test` reports it.
//!
//! Decoding (`embed`'s `FaceEmbedder::prepare`: sizes other than 112×112 are resized
//! bilinearly), model loading and the `encoder:` fields (`checkpoint`, `config`, `backend`) are
//! shared with the `embed` operator; the forward pass is run here because the protocol needs the raw features of both
//! views (for `xnorm`), which `embed` does not expose.

use crate::operators::support::benchmarks::{column_for, TABLE_COLUMNS};
use crate::operators::support::face_embedder::FaceEmbedder;
use crate::operators::support::loading;
use crate::operators::support::model_ref::{self, Backend, ConfigRef, Inference, Provider};
use idflow_dataset::formats::verification_bin::read_bin;
use idflow_dataset::metrics::verification::{evaluate_f64, VerificationReport};
use idflow_models::iresnet::IResNetConfig;
use idflow_models::traits::FaceEncoder;
use std::path::{Path, PathBuf};

/// Encoder settings (`encoder:` in the node): `checkpoint`, `config` and `backend` as in the
/// `embed` operator, plus the protocol's `flip` and `batch_size`.
#[derive(serde::Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct EncoderParams {
    /// ElasticFace / insightface IResNet checkpoint (`.pth` state dict, torch zip or safetensors).
    pub checkpoint: PathBuf,
    /// `iresnet18|34|50|100|200` (512 features; default `iresnet50`), an inline
    /// `{layers: [a, b, c, d], num_features: n}`, or a JSON file with those fields.
    #[serde(default)]
    pub config: Option<ConfigRef>,
    /// Inference backend: `onnx` (default; the checkpoint compiled once to ONNX and run on ONNX
    /// Runtime, as in `embed`) or `native` (candle).
    #[serde(default)]
    pub backend: Backend,
    /// ONNX Runtime intra-op threads (default: all cores — the benchmarks run on one worker
    /// after the input has been consumed).
    #[serde(default)]
    pub threads: Option<usize>,
    /// ONNX Runtime execution providers, in priority order (default `[cpu]`).
    #[serde(default)]
    pub providers: Vec<Provider>,
    /// Flip test-time augmentation (the protocol's default).
    #[serde(default = "default_true")]
    pub flip: bool,
    /// Images per forward pass.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
}

fn default_true() -> bool {
    true
}
fn default_batch() -> usize {
    32
}

impl EncoderParams {
    /// The network configuration, or why it cannot be resolved.
    pub fn config(&self) -> Result<IResNetConfig, String> {
        let cfg = model_ref::iresnet_config(self.config.as_ref())?;
        if cfg.num_features == 0 || self.batch_size == 0 || self.threads == Some(0) {
            return Err("`num_features`, `batch_size` and `threads` must be at least 1".into());
        }
        Ok(cfg)
    }
}

/// A loaded face encoder with the protocol's preprocessing.
pub struct Encoder {
    net: Box<dyn FaceEncoder>,
    flip: bool,
    batch_size: usize,
    name: String,
    /// Input side of the encoder (112 for the published IResNets, the config's `input_size`).
    side: usize,
}

impl Encoder {
    /// Loads the checkpoint (strict: every key must match the configuration).
    pub fn load(p: &EncoderParams) -> Result<Self, String> {
        let config = p.config()?;
        // One worker runs the benchmarks, at the end of the run: one session, all cores.
        let net = loading::load_iresnet(&Inference::new(p.backend, p.threads, &p.providers, 1), &p.checkpoint, &config)?;
        let name = p.checkpoint.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "encoder".into());
        Ok(Self { net, flip: p.flip, batch_size: p.batch_size, name, side: config.input_size })
    }

    /// Name for the table's row (the checkpoint's file stem).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Embeds encoded images: returns the protocol embeddings (flip-summed when `flip`,
    /// L2-normalised, f64, row-major) with their width, and `xnorm`.
    pub fn embed_images(&self, images: &[Vec<u8>], what: &Path) -> Result<(Vec<f64>, usize, f64), String> {
        let mut out = Vec::new();
        let mut dim = 0;
        let (mut norm_sum, mut norm_count) = (0.0f64, 0usize);
        for (chunk_no, chunk) in images.chunks(self.batch_size).enumerate() {
            let first = chunk_no * self.batch_size;
            let mut pixels = Vec::with_capacity(chunk.len() * 3 * self.side * self.side);
            for (k, bytes) in chunk.iter().enumerate() {
                decode_face(bytes, self.side, &mut pixels).map_err(|e| format!("{}: image {}: {e}", what.display(), first + k))?;
            }
            let views = if self.flip { vec![flip_width(&pixels, self.side), pixels] } else { vec![pixels] };
            let mut summed: Option<Vec<f32>> = None;
            for view in views {
                let feats = self.forward(view, chunk.len())?;
                dim = feats.len() / chunk.len();
                for row in feats.chunks_exact(dim) {
                    norm_sum += row.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
                    norm_count += 1;
                }
                summed = Some(match summed {
                    None => feats,
                    Some(s) => s.iter().zip(&feats).map(|(a, b)| a + b).collect(),
                });
            }
            for row in summed.unwrap_or_default().chunks_exact(dim.max(1)) {
                let norm = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
                let scale = if norm > 0.0 { 1.0 / norm } else { 1.0 };
                out.extend(row.iter().map(|&v| v as f64 * scale));
            }
        }
        let xnorm = if norm_count > 0 { norm_sum / norm_count as f64 } else { 0.0 };
        Ok((out, dim, xnorm))
    }

    fn forward(&self, pixels: Vec<f32>, n: usize) -> Result<Vec<f32>, String> {
        let input = candle_core::Tensor::from_vec(pixels, (n, 3, self.side, self.side), &candle_core::Device::Cpu)
            .map_err(|e| format!("encoder input: {e}"))?;
        let feats = self.net.embed(&input).map_err(|e| format!("encoder {}: {e}", self.name))?;
        feats.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(|e| format!("encoder {}: {e}", self.name))
    }
}

/// Decodes one aligned face (resized to `side`×`side` when needed, as `embed` does) and appends
/// it as CHW floats `((x/255) − 0.5)/0.5`.
fn decode_face(bytes: &[u8], side: usize, out: &mut Vec<f32>) -> Result<(), String> {
    let side = u32::try_from(side).map_err(|_| format!("encoder input side {side} is too large"))?;
    push_chw(FaceEmbedder::prepare(bytes, side)?.as_raw(), out);
    Ok(())
}

/// Appends interleaved RGB bytes (HWC) as CHW floats `((x/255) − 0.5)/0.5`.
fn push_chw(rgb: &[u8], out: &mut Vec<f32>) {
    for c in 0..3 {
        out.extend(rgb.chunks_exact(3).map(|px| ((px[c] as f32 / 255.0) - 0.5) / 0.5));
    }
}

/// Mirrors NCHW images along the width axis.
fn flip_width(pixels: &[f32], side: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(pixels.len());
    for row in pixels.chunks_exact(side) {
        out.extend(row.iter().rev());
    }
    out
}

/// The result of one benchmark.
#[derive(Debug, Clone)]
pub struct BenchmarkResult {
    /// File stem.
    pub name: String,
    /// Table column (`LFW`, `CFP-FP`, … or the stem).
    pub column: String,
    /// The `.bin` file.
    pub path: PathBuf,
    /// Mean L2 norm of the raw features.
    pub xnorm: f64,
    /// The protocol's numbers.
    pub report: VerificationReport,
}

/// Runs one `.bin` benchmark.
pub fn run_benchmark(path: &Path, encoder: &Encoder, n_folds: usize) -> Result<BenchmarkResult, String> {
    let bin = read_bin(path).map_err(|e| e.to_string())?;
    let (embeddings, dim, xnorm) = encoder.embed_images(&bin.images, path)?;
    let report = evaluate_f64(&embeddings, dim, &bin.issame, n_folds).map_err(|e| format!("{}: {e}", path.display()))?;
    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(BenchmarkResult { name, column: column_for(path), path: path.to_path_buf(), xnorm, report })
}

/// The table's columns for these results: the seed's five, then any other benchmarks in the
/// order given.
pub fn table_columns(results: &[BenchmarkResult]) -> Vec<String> {
    let mut cols: Vec<String> = TABLE_COLUMNS.iter().map(|s| s.to_string()).collect();
    for r in results {
        if !cols.contains(&r.column) {
            cols.push(r.column.clone());
        }
    }
    cols
}

/// Accuracy (in %) per column (None where absent), and the average over the present ones.
pub fn table_values(results: &[BenchmarkResult], cols: &[String]) -> (Vec<Option<f64>>, Option<f64>) {
    let values: Vec<Option<f64>> =
        cols.iter().map(|c| results.iter().find(|r| &r.column == c).map(|r| 100.0 * r.report.accuracy_mean)).collect();
    let present: Vec<f64> = values.iter().flatten().copied().collect();
    let avg = (!present.is_empty()).then(|| present.iter().sum::<f64>() / present.len() as f64);
    (values, avg)
}

/// The results table in Markdown: one row (`model`), accuracy in % with two decimals, blank
/// where a benchmark was not run; below it, a per-benchmark detail table.
pub fn markdown_table(model: &str, results: &[BenchmarkResult]) -> String {
    let cols = table_columns(results);
    let (values, avg) = table_values(results, &cols);
    let mut s = String::from("| Model |");
    for c in &cols {
        s.push_str(&format!(" {c} |"));
    }
    s.push_str(" Average |\n|---|");
    s.push_str(&"---:|".repeat(cols.len() + 1));
    s.push_str(&format!("\n| {model} |"));
    for v in values.iter().chain(std::iter::once(&avg)) {
        match v {
            Some(x) => s.push_str(&format!(" {x:.2} |")),
            None => s.push_str("  |"),
        }
    }
    s.push_str(
        "\n\n| Benchmark | Pairs | Accuracy (%) | Std (%) | Best thresholds | VAL@FAR=1e-3 (%) | FAR (%) |\n|---|---:|---:|---:|---|---:|---:|\n",
    );
    for r in results {
        let t = &r.report;
        s.push_str(&format!(
            "| {} ({}) | {} | {:.2} | {:.2} | {} | {:.2} ± {:.2} | {:.3} |\n",
            r.column,
            r.name,
            t.n_pairs,
            100.0 * t.accuracy_mean,
            100.0 * t.accuracy_std,
            thresholds_text(&t.best_threshold_per_fold),
            100.0 * t.val_mean,
            100.0 * t.val_std,
            100.0 * t.far_mean
        ));
    }
    s
}

/// The results table as CSV: header `model,<columns>,Average`, accuracy in % at full precision,
/// empty where a benchmark was not run.
pub fn csv_table(model: &str, results: &[BenchmarkResult]) -> String {
    let cols = table_columns(results);
    let (values, avg) = table_values(results, &cols);
    let mut s = String::from("model");
    for c in &cols {
        s.push(',');
        s.push_str(&csv_field(c));
    }
    s.push_str(",Average\n");
    s.push_str(&csv_field(model));
    for v in values.iter().chain(std::iter::once(&avg)) {
        s.push(',');
        if let Some(x) = v {
            s.push_str(&format!("{x}"));
        }
    }
    s.push('\n');
    s
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Distinct fold thresholds with their fold counts, most frequent first, e.g. `0.02 ×8, 0.03 ×2`.
pub fn thresholds_text(per_fold: &[f64]) -> String {
    let mut distinct: Vec<(f64, usize)> = Vec::new();
    for &t in per_fold {
        match distinct.iter_mut().find(|(v, _)| *v == t) {
            Some((_, n)) => *n += 1,
            None => distinct.push((t, 1)),
        }
    }
    distinct.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.total_cmp(&b.0)));
    distinct.iter().map(|(t, n)| format!("{t:.2} ×{n}")).collect::<Vec<_>>().join(", ")
}

/// Side of the reference fixtures' aligned faces.
#[cfg(test)]
const FACE: usize = 112;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn benchmark_files_map_to_the_seed_columns() {
        for (file, col) in [
            ("lfw.bin", "LFW"),
            ("toy_lfw.bin", "LFW"),
            ("cfp_fp.bin", "CFP-FP"),
            ("toy_cfp_fp.bin", "CFP-FP"),
            ("cplfw.bin", "CPLFW"),
            ("agedb_30.bin", "AgeDB"),
            ("toy_agedb.bin", "AgeDB"),
            ("CALFW.bin", "CALFW"),
            ("tiny_verification.bin", "tiny_verification"),
        ] {
            assert_eq!(column_for(Path::new(file)), col, "{file}");
        }
    }

    #[test]
    fn flipping_twice_is_the_identity() {
        let px: Vec<f32> = (0..2 * 3 * FACE * FACE).map(|i| i as f32).collect();
        let f = flip_width(&px, FACE);
        assert_eq!(f[0], (FACE - 1) as f32);
        assert_eq!(flip_width(&f, FACE), px);
    }

    #[test]
    fn encoder_configs_resolve_like_embed() {
        use idflow_models::onnx::ExecutionProvider;
        let parse = |yaml: serde_json::Value| serde_json::from_value::<EncoderParams>(yaml).unwrap();
        let p = parse(serde_json::json!({"checkpoint": "a.pth"}));
        assert_eq!(p.config().unwrap().layers, [3, 4, 14, 3]);
        assert!(p.flip);
        assert_eq!(p.backend, Backend::Onnx);
        let p = parse(serde_json::json!({"checkpoint": "a.pth", "config": "iresnet100", "backend": "native"}));
        assert_eq!(p.config().unwrap().layers, [3, 13, 30, 3]);
        assert_eq!(p.backend, Backend::Native);
        let p = parse(serde_json::json!({"checkpoint": "a.pth", "providers": ["cuda:1", "cpu"], "threads": 3}));
        assert_eq!(p.providers, [Provider(ExecutionProvider::Cuda { device_id: 1 }), Provider(ExecutionProvider::Cpu)]);
        assert_eq!(p.threads, Some(3));
        let bad = serde_json::from_value::<EncoderParams>(serde_json::json!({"checkpoint": "a.pth", "providers": ["rocm"]}));
        assert!(bad.unwrap_err().to_string().contains("rocm"));
        let bad = serde_json::from_value::<EncoderParams>(serde_json::json!({"checkpoint": "a.pth", "provider": ["cpu"]}));
        assert!(bad.unwrap_err().to_string().contains("unknown field `provider`"));
        let p = parse(serde_json::json!({"checkpoint": "a.pth", "threads": 0}));
        assert!(p.config().is_err());
        let p = parse(serde_json::json!({"checkpoint": "a.pth", "config": {"layers": [1, 1, 1, 1], "num_features": 16}}));
        assert_eq!(p.config().unwrap().num_features, 16);
        let p = parse(serde_json::json!({"checkpoint": "a.pth", "config": "missing.json"}));
        assert!(p.config().unwrap_err().contains("missing.json"));
        let p = parse(serde_json::json!({"checkpoint": "a.pth", "batch_size": 0}));
        assert!(p.config().is_err());
    }
}

#[cfg(test)]
mod fixture_tests {
    //! The encoder path against the reference fixtures (fixtures README, sections 5 and 7).
    use super::*;
    use idflow_testkit::reference;

    /// Raw little-endian bytes and shape of one safetensors entry.
    fn tensor(file: &str, key: &str) -> (Vec<u8>, Vec<usize>) {
        let f = std::fs::read(reference(file)).unwrap();
        let n = u64::from_le_bytes(f[..8].try_into().unwrap()) as usize;
        let h: serde_json::Value = serde_json::from_slice(&f[8..8 + n]).unwrap();
        let m = &h[key];
        let off: Vec<usize> = m["data_offsets"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        let shape = m["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        (f[8 + n + off[0]..8 + n + off[1]].to_vec(), shape)
    }

    fn f32s(bytes: &[u8]) -> Vec<f32> {
        bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    }

    /// Installs ONNX Runtime where the encoder looks for it when `ORT_DYLIB_PATH` is unset: the
    /// venv `tests/py/ort_env.sh` makes in the cargo target folder. Without it these tests
    /// depended on an integration test having made the venv first, and failed on a fresh target
    /// folder.
    fn ensure_runtime() {
        idflow_testkit::ort_dylib();
    }

    fn tiny_encoder(flip: bool) -> Encoder {
        ensure_runtime();
        let p = serde_json::from_value::<EncoderParams>(serde_json::json!({
            "checkpoint": reference("iresnet_tiny.pth"),
            "config": {"layers": [1, 1, 1, 1], "num_features": 16},
            "flip": flip,
        }))
        .unwrap();
        Encoder::load(&p).unwrap()
    }

    /// On the reference decoder's pixels, preprocessing + backbone give the official features
    /// (both views), to the fp32 tolerance of the fixtures.
    #[test]
    fn official_pixels_give_official_features() {
        let (px, shape) = tensor("tiny_verification_expected.safetensors", "decoded_first4_hwc_uint8");
        assert_eq!(shape, vec![4, FACE, FACE, 3]);
        let mut pixels = Vec::new();
        for img in px.chunks_exact(FACE * FACE * 3) {
            push_chw(img, &mut pixels);
        }
        let enc = tiny_encoder(true);
        let noflip = enc.forward(pixels.clone(), 4).unwrap();
        let flip = enc.forward(flip_width(&pixels, FACE), 4).unwrap();
        let (want_noflip, _) = tensor("tiny_verification_expected.safetensors", "features_noflip");
        let (want_flip, _) = tensor("tiny_verification_expected.safetensors", "features_flip");
        for (got, want) in [(noflip, f32s(&want_noflip)), (flip, f32s(&want_flip))] {
            let max = got.iter().zip(&want[..4 * 16]).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(max < 1e-4, "max feature difference {max}");
        }
    }

    /// `image`'s JPEG decoder is not libjpeg-turbo: a few pixels differ by at most 2 levels
    /// (which moves features by ~1e-2 but none of the protocol's numbers, see
    /// tests/eval_benchmarks.rs).
    #[test]
    fn jpeg_decoding_is_within_two_levels_of_the_reference() {
        let bin = read_bin(&reference("tiny_verification.bin")).unwrap();
        let (px, _) = tensor("tiny_verification_expected.safetensors", "decoded_first4_hwc_uint8");
        let mut max = 0;
        for (i, want) in px.chunks_exact(FACE * FACE * 3).enumerate() {
            let img = image::load_from_memory(&bin.images[i]).unwrap().to_rgb8();
            max = img.as_raw().iter().zip(want).map(|(&a, &b)| (a as i32 - b as i32).abs()).fold(max, i32::max);
        }
        assert!(max <= 2, "decoded pixels differ by up to {max}");
    }
}
