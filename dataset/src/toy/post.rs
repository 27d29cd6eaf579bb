//! Whole-image passes: background texture, lighting, blur, sensor noise and JPEG-like
//! blockiness, and the final 8-bit quantisation.
//!
//! The JPEG-like pass quantises 8×8 DCT coefficients of YCbCr planes (luma finer than chroma, high
//! frequencies coarser), which produces JPEG's blocking and ringing. A real encode/decode round
//! trip through a codec library would depend on that decoder's IDCT implementation (SIMD paths
//! differ between CPUs), breaking the same-bytes-everywhere promise; this pass uses only basic
//! arithmetic and a cosine table from `libm`.

use std::sync::OnceLock;

use crate::rng::KeyedRng;

use super::nuisance::{BackgroundTexture, NuisanceParams};
use super::palette::mix;
use super::raster::Canvas;

/// Fills the canvas with the sample's background.
pub fn background(canvas: &mut Canvas, n: &NuisanceParams) {
    let size = canvas.size;
    let (a, b) = (n.background, n.background2);
    let (c, s) = (libm::cosf(n.texture_angle), libm::sinf(n.texture_angle));
    match n.texture {
        BackgroundTexture::Plain => {
            for y in 0..size {
                let py = canvas.coord(y);
                for x in 0..size {
                    let t = 0.5 + 0.3 * (c * canvas.coord(x) + s * py);
                    canvas.px[y * size + x] = mix(a, b, t);
                }
            }
        }
        BackgroundTexture::Stripes => {
            let freq = 1.5 + 2.5 * (n.texture_angle / std::f32::consts::PI);
            for y in 0..size {
                let py = canvas.coord(y);
                for x in 0..size {
                    let u = freq * (c * canvas.coord(x) + s * py) + 10.0;
                    let tri = ((u - u.floor()) - 0.5).abs() * 2.0;
                    let t = tri * tri * (3.0 - 2.0 * tri);
                    canvas.px[y * size + x] = mix(a, b, t);
                }
            }
        }
        BackgroundTexture::Blotches => {
            const G: usize = 5;
            let mut rng = KeyedRng::new(&[n.pixel_seed, 1]);
            let mut grid = [[0.0f32; G]; G];
            for row in grid.iter_mut() {
                for v in row.iter_mut() {
                    *v = rng.uniform() as f32;
                }
            }
            let scale = (G - 1) as f32 / size as f32;
            for y in 0..size {
                let gy = (y as f32 + 0.5) * scale;
                let (iy, fy) = ((gy as usize).min(G - 2), gy - (gy as usize).min(G - 2) as f32);
                for x in 0..size {
                    let gx = (x as f32 + 0.5) * scale;
                    let (ix, fx) = ((gx as usize).min(G - 2), gx - (gx as usize).min(G - 2) as f32);
                    let top = grid[iy][ix] + (grid[iy][ix + 1] - grid[iy][ix]) * fx;
                    let bot = grid[iy + 1][ix] + (grid[iy + 1][ix + 1] - grid[iy + 1][ix]) * fx;
                    canvas.px[y * size + x] = mix(a, b, top + (bot - top) * fy);
                }
            }
        }
    }
}

/// Directional light gradient, brightness and colour temperature over the whole image.
pub fn lighting(canvas: &mut Canvas, n: &NuisanceParams) {
    let size = canvas.size;
    let (lx, ly) = (libm::cosf(n.light_angle), libm::sinf(n.light_angle));
    let g = 0.45 * n.light_strength;
    let warm = 0.12 * n.color_temperature;
    let tint = [1.0 + warm, 1.0 + 0.2 * warm, 1.0 - warm];
    for y in 0..size {
        let py = canvas.coord(y);
        for x in 0..size {
            let f = n.light_intensity * (1.0 + g * (lx * canvas.coord(x) + ly * py));
            let p = &mut canvas.px[y * size + x];
            for k in 0..3 {
                p[k] *= f * tint[k];
            }
        }
    }
}

/// Separable Gaussian blur with standard deviation `sigma` pixels (edges clamped).
pub fn blur(canvas: &mut Canvas, sigma: f32) {
    if sigma < 0.15 {
        return;
    }
    let radius = (2.0 * sigma).ceil() as usize;
    let mut w: Vec<f32> = (0..=radius).map(|i| libm::expf(-((i * i) as f32) / (2.0 * sigma * sigma))).collect();
    let total = w[0] + 2.0 * w[1..].iter().sum::<f32>();
    for v in w.iter_mut() {
        *v /= total;
    }
    let size = canvas.size;
    let mut tmp = vec![[0.0f32; 3]; size * size];
    blur_pass(&canvas.px, &mut tmp, size, &w, false);
    blur_pass(&tmp, &mut canvas.px, size, &w, true);
}

/// One pass of the separable blur: each pixel of `dst` is the sum of `src` pixels along a row
/// (or a column when `vertical`) weighted by `w[|offset|]`, offsets up to `w.len() - 1`, edges
/// clamped.
fn blur_pass(src: &[[f32; 3]], dst: &mut [[f32; 3]], size: usize, w: &[f32], vertical: bool) {
    let r = (w.len() - 1) as isize;
    let last = size as isize - 1;
    for y in 0..size {
        for x in 0..size {
            let mut acc = [0.0f32; 3];
            for k in -r..=r {
                let at = if vertical {
                    (y as isize + k).clamp(0, last) as usize * size + x
                } else {
                    y * size + (x as isize + k).clamp(0, last) as usize
                };
                let wk = w[k.unsigned_abs()];
                let p = src[at];
                acc[0] += wk * p[0];
                acc[1] += wk * p[1];
                acc[2] += wk * p[2];
            }
            dst[y * size + x] = acc;
        }
    }
}

/// Adds zero-mean sensor noise of deviation `sigma` 8-bit levels (triangular distribution,
/// 16-bit uniforms packed four to a draw).
pub fn noise(canvas: &mut Canvas, sigma: f32, seed: u64) {
    if sigma <= 0.0 {
        return;
    }
    let mut rng = KeyedRng::new(&[seed, 2]);
    // (u1 + u2 − 1) has variance 1/6; scale to unit variance then to sigma levels.
    let k = sigma / 255.0 * 6f32.sqrt() / 65535.0;
    let mut bits = 0u64;
    let mut left = 0;
    let mut next16 = || {
        if left == 0 {
            bits = rng.next_u64();
            left = 4;
        }
        let v = (bits & 0xffff) as f32;
        bits >>= 16;
        left -= 1;
        v
    };
    for p in canvas.px.iter_mut() {
        for c in p.iter_mut() {
            let a = next16();
            let b = next16();
            *c += (a + b - 65535.0) * k;
        }
    }
}

fn dct_table() -> &'static [[f32; 8]; 8] {
    static TABLE: OnceLock<[[f32; 8]; 8]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [[0.0f32; 8]; 8];
        for (u, row) in t.iter_mut().enumerate() {
            let a = if u == 0 { libm::sqrt(0.125) } else { 0.5 };
            for (x, v) in row.iter_mut().enumerate() {
                *v = (a * libm::cos(((2 * x + 1) * u) as f64 * std::f64::consts::PI / 16.0)) as f32;
            }
        }
        t
    })
}

fn dct8(input: &[f32; 8], t: &[[f32; 8]; 8]) -> [f32; 8] {
    mat_vec8(input, |u, x| t[u][x])
}

fn idct8(input: &[f32; 8], t: &[[f32; 8]; 8]) -> [f32; 8] {
    mat_vec8(input, |x, u| t[u][x])
}

/// `out[i] = Σ_j m(i, j) · input[j]`, summed in order of `j` in `f32`.
fn mat_vec8(input: &[f32; 8], m: impl Fn(usize, usize) -> f32) -> [f32; 8] {
    let mut out = [0.0f32; 8];
    for (i, o) in out.iter_mut().enumerate() {
        let mut s = 0.0;
        for (j, v) in input.iter().enumerate() {
            s += m(i, j) * v;
        }
        *o = s;
    }
    out
}

/// JPEG-like degradation: 8×8 block DCT of the Y, Cb, Cr planes, coefficients quantised with
/// step `step × (1 + (u + v) / 2)` (chroma ×2), then transformed back.
#[allow(clippy::needless_range_loop)] // 8×8 matrix code reads best with indices
pub fn jpeg_like(canvas: &mut Canvas, step: f32) {
    if step <= 0.0 {
        return;
    }
    let size = canvas.size;
    let t = dct_table();
    let mut planes = vec![[0.0f32; 3]; size * size];
    for (p, c) in planes.iter_mut().zip(&canvas.px) {
        let y = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
        *p = [y, 0.564 * (c[2] - y), 0.713 * (c[0] - y)];
    }
    let blocks = size.div_ceil(8);
    for ch in 0..3 {
        let base = if ch == 0 { step } else { 2.0 * step };
        for by in 0..blocks {
            for bx in 0..blocks {
                let mut blk = [[0.0f32; 8]; 8];
                for (j, row) in blk.iter_mut().enumerate() {
                    let y = (by * 8 + j).min(size - 1);
                    for (i, v) in row.iter_mut().enumerate() {
                        let x = (bx * 8 + i).min(size - 1);
                        *v = planes[y * size + x][ch];
                    }
                }
                // Rows, then columns.
                for row in blk.iter_mut() {
                    *row = dct8(row, t);
                }
                for i in 0..8 {
                    let col: [f32; 8] = std::array::from_fn(|j| blk[j][i]);
                    let f = dct8(&col, t);
                    for j in 0..8 {
                        let q = base * (1.0 + (i + j) as f32 * 0.5);
                        blk[j][i] = (f[j] / q + 0.5).floor() * q;
                    }
                }
                for i in 0..8 {
                    let col: [f32; 8] = std::array::from_fn(|j| blk[j][i]);
                    let f = idct8(&col, t);
                    for j in 0..8 {
                        blk[j][i] = f[j];
                    }
                }
                for (j, row) in blk.iter_mut().enumerate() {
                    let r = idct8(row, t);
                    let y = by * 8 + j;
                    if y >= size {
                        continue;
                    }
                    for (i, &v) in r.iter().enumerate() {
                        let x = bx * 8 + i;
                        if x < size {
                            planes[y * size + x][ch] = v;
                        }
                    }
                }
            }
        }
    }
    for (c, p) in canvas.px.iter_mut().zip(&planes) {
        let (y, cb, cr) = (p[0], p[1], p[2]);
        *c = [y + 1.402 * cr, y - 0.344 * cb - 0.714 * cr, y + 1.772 * cb];
    }
}

/// Quantises to 8-bit RGB (round half up, clamped).
pub fn to_rgb8(canvas: &Canvas) -> Vec<u8> {
    let mut out = Vec::with_capacity(canvas.px.len() * 3);
    for p in &canvas.px {
        for &c in p {
            out.push((c * 255.0 + 0.5).clamp(0.0, 255.0) as u8);
        }
    }
    out
}
