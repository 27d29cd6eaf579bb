//! PNG figures of a dataset evaluation: genuine vs impostor score histograms, a DET curve, and a
//! contact sheet of sample images.
//!
//! Charts are drawn with `plotters` into an RGB buffer and encoded with `image`'s PNG encoder
//! (plotters' own encoder would pull a second `image` version). Text needs a font: plotters'
//! `ab_glyph` backend is given the bytes of the first TrueType font found in a list of standard
//! locations (or `IDFLOW_FONT`), read at run time; with no font the charts are drawn without
//! any text, so plotting never fails for lack of fonts.
//!
//! Both curves are read off score histograms (counts per bin over the observed score range),
//! built in one pass over the scores: the DET points are the FMR / FNMR at the bin edges of a
//! fine histogram, so no sorted copy or per-threshold curve of millions of scores is kept.

use plotters::coord::Shift;
use plotters::prelude::*;
use std::sync::OnceLock;

/// Chart size in pixels.
const SIZE: (u32, u32) = (800, 560);

/// Where TrueType fonts usually live (Debian/Ubuntu, Fedora, Arch, macOS, Windows).
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// Registers the first usable font once per process; returns whether text can be drawn.
fn fonts_available() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        let from_env = std::env::var_os("IDFLOW_FONT").map(std::path::PathBuf::from);
        let candidates = from_env.into_iter().chain(FONT_PATHS.iter().map(std::path::PathBuf::from));
        for path in candidates {
            let Ok(bytes) = std::fs::read(&path) else { continue };
            // The font table wants 'static bytes: one font per process, kept for its lifetime.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                tracing::debug!("plots: font {}", path.display());
                return true;
            }
        }
        tracing::warn!("plots: no TrueType font found (set IDFLOW_FONT); charts are drawn without text");
        false
    })
}

/// Counts of values per bin over `[lo, hi]` (values outside are clamped into the end bins).
#[derive(Clone, Debug)]
pub struct Histogram {
    /// Left edge of the first bin.
    pub lo: f64,
    /// Right edge of the last bin.
    pub hi: f64,
    /// Counts per bin.
    pub counts: Vec<u64>,
}

impl Histogram {
    /// Bins `values` into `bins` equal bins over `[lo, hi]`.
    pub fn new(values: &[f64], lo: f64, hi: f64, bins: usize) -> Self {
        let bins = bins.max(1);
        let mut counts = vec![0u64; bins];
        let width = (hi - lo).max(f64::MIN_POSITIVE);
        for &v in values {
            let k = (((v - lo) / width) * bins as f64).floor();
            let k = if k.is_nan() { 0 } else { (k.max(0.0) as usize).min(bins - 1) };
            counts[k] += 1;
        }
        Self { lo, hi, counts }
    }

    /// Width of one bin.
    pub fn bin_width(&self) -> f64 {
        (self.hi - self.lo) / self.counts.len() as f64
    }

    /// Total count.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// The range shared by both score sets, padded so that no score sits on an edge.
pub fn score_range(genuine: &[f64], impostor: &[f64]) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for &v in genuine.iter().chain(impostor) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() || !hi.is_finite() {
        return (-1.0, 1.0);
    }
    let pad = ((hi - lo) * 0.02).max(1e-3);
    (lo - pad, hi + pad)
}

fn encode_png(img: &image::RgbImage) -> Result<Vec<u8>, String> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).map_err(|e| format!("PNG encoding: {e}"))?;
    Ok(out.into_inner())
}

fn draw_err<E: std::fmt::Debug>(e: E) -> String {
    format!("drawing: {e:?}")
}

/// Draws into a fresh white RGB buffer and returns it as PNG bytes.
fn render(
    size: (u32, u32),
    text: bool,
    draw: impl FnOnce(&DrawingArea<BitMapBackend, Shift>, bool) -> Result<(), String>,
) -> Result<Vec<u8>, String> {
    let mut buf = vec![255u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        draw(&root, text)?;
        root.present().map_err(draw_err)?;
    }
    let img = image::RgbImage::from_raw(size.0, size.1, buf).ok_or("plot buffer has the wrong size")?;
    encode_png(&img)
}

const GENUINE: RGBColor = RGBColor(30, 130, 76);
const IMPOSTOR: RGBColor = RGBColor(200, 50, 50);

/// Genuine vs impostor score histograms (each normalised to a density) as PNG bytes.
pub fn score_histograms_png(genuine: &[f64], impostor: &[f64], bins: usize) -> Result<Vec<u8>, String> {
    score_histograms(genuine, impostor, bins, fonts_available())
}

fn score_histograms(genuine: &[f64], impostor: &[f64], bins: usize, text: bool) -> Result<Vec<u8>, String> {
    let (lo, hi) = score_range(genuine, impostor);
    let hists =
        [(Histogram::new(genuine, lo, hi, bins), GENUINE, "genuine"), (Histogram::new(impostor, lo, hi, bins), IMPOSTOR, "impostor")];
    let density = |h: &Histogram, k: usize| h.counts[k] as f64 / (h.total().max(1) as f64 * h.bin_width());
    let ymax = hists.iter().flat_map(|(h, _, _)| (0..h.counts.len()).map(|k| density(h, k))).fold(0.0f64, f64::max).max(1e-9) * 1.08;
    render(SIZE, text, |root, text| {
        let mut builder = ChartBuilder::on(root);
        builder.margin(16);
        if text {
            builder.caption("Genuine vs impostor scores", ("sans-serif", 24)).x_label_area_size(44).y_label_area_size(60);
        }
        let mut chart = builder.build_cartesian_2d(lo..hi, 0.0..ymax).map_err(draw_err)?;
        let mut mesh = chart.configure_mesh();
        mesh.disable_x_mesh();
        if text {
            mesh.x_desc("cosine similarity").y_desc("density");
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw().map_err(draw_err)?;
        for (h, color, label) in &hists {
            let w = h.bin_width();
            let bars = (0..h.counts.len()).map(|k| {
                let x0 = h.lo + k as f64 * w;
                Rectangle::new([(x0, 0.0), (x0 + w, density(h, k))], color.mix(0.45).filled())
            });
            let series = chart.draw_series(bars).map_err(draw_err)?;
            if text {
                let c = *color;
                series
                    .label(format!("{label} ({})", h.total()))
                    .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.mix(0.6).filled()));
            }
        }
        if text {
            chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).draw().map_err(draw_err)?;
        }
        Ok(())
    })
}

/// DET points `(FMR, FNMR)` at the edges of a `bins`-bin histogram of both score sets:
/// at threshold `t`, `FMR = #(impostor ≥ t) / N_i`, `FNMR = #(genuine < t) / N_g` (pyeer's
/// convention, exact at every bin edge).
pub fn det_points(genuine: &[f64], impostor: &[f64], bins: usize) -> Vec<(f64, f64)> {
    let (lo, hi) = score_range(genuine, impostor);
    let (g, i) = (Histogram::new(genuine, lo, hi, bins), Histogram::new(impostor, lo, hi, bins));
    let (ng, ni) = (g.total().max(1) as f64, i.total().max(1) as f64);
    let (mut below_g, mut below_i) = (0u64, 0u64);
    let mut points = Vec::with_capacity(bins + 1);
    for k in 0..=g.counts.len() {
        points.push(((i.total() - below_i) as f64 / ni, below_g as f64 / ng));
        if k < g.counts.len() {
            below_g += g.counts[k];
            below_i += i.counts[k];
        }
    }
    points
}

/// A DET curve (FNMR against FMR, both logarithmic) as PNG bytes; rates of 0 are drawn at
/// the axis floor, half a count below the smallest non-zero rate (at most 1e-3).
pub fn det_curve_png(genuine: &[f64], impostor: &[f64], eer: f64) -> Result<Vec<u8>, String> {
    det_curve(genuine, impostor, eer, fonts_available())
}

fn det_curve(genuine: &[f64], impostor: &[f64], eer: f64, text: bool) -> Result<Vec<u8>, String> {
    let floor = (0.5 / (genuine.len().max(impostor.len()).max(1) as f64)).min(1e-3);
    let points: Vec<(f64, f64)> = det_points(genuine, impostor, 4000).into_iter().map(|(a, b)| (a.max(floor), b.max(floor))).collect();
    render(SIZE, text, |root, text| {
        let mut builder = ChartBuilder::on(root);
        builder.margin(16);
        if text {
            builder
                .caption(format!("DET curve (EER {:.2} %)", 100.0 * eer), ("sans-serif", 24))
                .x_label_area_size(44)
                .y_label_area_size(60);
        }
        let mut chart = builder.build_cartesian_2d((floor..1.0).log_scale(), (floor..1.0).log_scale()).map_err(draw_err)?;
        let mut mesh = chart.configure_mesh();
        if text {
            mesh.x_desc("false match rate (FMR)").y_desc("false non-match rate (FNMR)");
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw().map_err(draw_err)?;
        chart.draw_series(LineSeries::new(vec![(floor, floor), (1.0, 1.0)], BLACK.mix(0.3))).map_err(draw_err)?;
        chart.draw_series(LineSeries::new(points, BLUE.stroke_width(2))).map_err(draw_err)?;
        let e = eer.max(floor);
        chart.draw_series(std::iter::once(Circle::new((e, e), 5, IMPOSTOR.filled()))).map_err(draw_err)?;
        Ok(())
    })
}

/// A grid of decoded images: one row per identity, up to `cols` samples each, every image
/// resized to `thumb`×`thumb` (undecodable images become grey tiles). PNG bytes.
pub fn contact_sheet_png(rows: &[Vec<Vec<u8>>], cols: usize, thumb: u32) -> Result<Vec<u8>, String> {
    let gap = 4u32;
    let (n_rows, n_cols) = (rows.len().max(1) as u32, cols.max(1) as u32);
    let (w, h) = (n_cols * (thumb + gap) + gap, n_rows * (thumb + gap) + gap);
    let mut sheet = image::RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255]));
    for (r, samples) in rows.iter().enumerate() {
        for (c, bytes) in samples.iter().take(cols).enumerate() {
            let tile = match image::load_from_memory(bytes) {
                Ok(img) => image::imageops::resize(&img.to_rgb8(), thumb, thumb, image::imageops::FilterType::Triangle),
                Err(_) => image::RgbImage::from_pixel(thumb, thumb, image::Rgb([128, 128, 128])),
            };
            let (x, y) = (gap + c as u32 * (thumb + gap), gap + r as u32 * (thumb + gap));
            image::imageops::replace(&mut sheet, &tile, x as i64, y as i64);
        }
    }
    encode_png(&sheet)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];

    fn scores(n: usize, mean: f64, seed: u64) -> Vec<f64> {
        let mut rng = idflow_dataset::rng::KeyedRng::new(&[seed]);
        (0..n).map(|_| mean + 0.1 * rng.normal()).collect()
    }

    #[test]
    fn histogram_counts_every_value_once() {
        let h = Histogram::new(&[0.0, 0.1, 0.5, 0.99, 1.0, -3.0, 7.0], 0.0, 1.0, 10);
        assert_eq!(h.total(), 7);
        assert_eq!(h.counts[0], 2, "0.0 and the clamped -3.0");
        assert_eq!(h.counts[1], 1, "0.1 opens bin 1");
        assert_eq!(h.counts[9], 3, "0.99, the upper edge 1.0 and the clamped 7.0");
    }

    #[test]
    fn det_points_match_direct_counts_at_bin_edges() {
        let (g, i) = (scores(500, 0.6, 1), scores(700, 0.1, 2));
        let bins = 50;
        let (lo, hi) = score_range(&g, &i);
        for (k, (fmr, fnmr)) in det_points(&g, &i, bins).into_iter().enumerate() {
            let t = lo + (hi - lo) * k as f64 / bins as f64;
            let direct_fmr = i.iter().filter(|&&s| s >= t).count() as f64 / i.len() as f64;
            let direct_fnmr = g.iter().filter(|&&s| s < t).count() as f64 / g.len() as f64;
            // Bin edges are computed, so a score within rounding of an edge may fall either way.
            assert!((fmr - direct_fmr).abs() < 2.0 / i.len() as f64, "edge {k}");
            assert!((fnmr - direct_fnmr).abs() < 2.0 / g.len() as f64, "edge {k}");
        }
    }

    #[test]
    fn charts_are_png_files_with_and_without_fonts() {
        let (g, i) = (scores(300, 0.6, 1), scores(300, 0.1, 2));
        let with_text = fonts_available();
        let pngs = [
            score_histograms(&g, &i, 60, with_text).unwrap(),
            det_curve(&g, &i, 0.01, with_text).unwrap(),
            score_histograms(&g, &i, 60, false).unwrap(),
            det_curve(&g, &i, 0.01, false).unwrap(),
        ];
        for png in pngs {
            assert_eq!(png[..8], PNG_SIGNATURE);
            assert!(png.len() > 1024);
            let img = image::load_from_memory(&png).unwrap();
            assert_eq!((img.width(), img.height()), SIZE);
        }
    }

    #[test]
    fn contact_sheet_tiles_images() {
        let face = |v: u8| {
            let img = image::RgbImage::from_pixel(20, 24, image::Rgb([v, 0, 255 - v]));
            encode_png(&img).unwrap()
        };
        let rows = vec![vec![face(0), face(50)], vec![face(100), b"not an image".to_vec()]];
        let png = contact_sheet_png(&rows, 3, 32).unwrap();
        let img = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (3 * 36 + 4, 2 * 36 + 4));
        assert_eq!(img.get_pixel(4 + 16, 4 + 16).0, [0, 0, 255]);
        assert_eq!(img.get_pixel(40 + 16, 40 + 16).0, [128, 128, 128], "undecodable image → grey tile");
        assert_eq!(img.get_pixel(76 + 16, 4 + 16).0, [255, 255, 255], "missing sample → background");
    }
}
