//! Image helpers shared by the operators: the YAML image size, decoding encoded image bytes to
//! the normalised CHW floats the models train on, and area resampling.

use idflow_dataset::formats::image_bytes::decode_complete;
use image::{imageops, RgbImage};
use serde::Deserialize;

/// Image size as written in YAML.
#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(untagged)]
pub enum Size {
    /// Square.
    Square(u32),
    /// `[h, w]`.
    Rect([u32; 2]),
}

impl Size {
    /// `(height, width)`.
    pub fn hw(self) -> (u32, u32) {
        match self {
            Size::Square(s) => (s, s),
            Size::Rect([h, w]) => (h, w),
        }
    }
}

/// Decodes encoded image bytes, resizes to `size`×`size` (bilinear) and normalises
/// `(x/255 − 0.5)/0.5` into CHW floats.
pub fn decode_image(bytes: &[u8], size: u32) -> Result<Vec<f32>, String> {
    let img = decode_complete(bytes).map_err(|e| e.to_string())?.to_rgb8();
    let img: RgbImage =
        if img.dimensions() == (size, size) { img } else { imageops::resize(&img, size, size, imageops::FilterType::Triangle) };
    let plane = (size * size) as usize;
    let mut out = vec![0f32; 3 * plane];
    for (x, y, px) in img.enumerate_pixels() {
        let i = (y * size + x) as usize;
        for c in 0..3 {
            out[c * plane + i] = (px.0[c] as f32 / 255.0 - 0.5) / 0.5;
        }
    }
    Ok(out)
}

/// Area (box) resampling: each output pixel is the coverage-weighted mean of the input pixels
/// under it. Exact for any scale factor; meant for downscaling.
pub fn area_resize(src: &RgbImage, out_w: u32, out_h: u32) -> RgbImage {
    let (iw, ih) = (src.width() as f64, src.height() as f64);
    let (sx, sy) = (iw / out_w as f64, ih / out_h as f64);
    let spans = |n_out: u32, scale: f64, n_in: f64| -> Vec<Vec<(u32, f64)>> {
        (0..n_out)
            .map(|o| {
                let (a, b) = (o as f64 * scale, ((o + 1) as f64 * scale).min(n_in));
                let mut v = Vec::new();
                let mut i = a.floor();
                while i < b {
                    let w = (i + 1.0).min(b) - i.max(a);
                    if w > 1e-12 {
                        v.push((i as u32, w / (b - a)));
                    }
                    i += 1.0;
                }
                v
            })
            .collect()
    };
    let xs = spans(out_w, sx, iw);
    let ys = spans(out_h, sy, ih);
    RgbImage::from_fn(out_w, out_h, |x, y| {
        let mut acc = [0.0f64; 3];
        for &(yy, wy) in &ys[y as usize] {
            for &(xx, wx) in &xs[x as usize] {
                let p = src.get_pixel(xx, yy).0;
                for c in 0..3 {
                    acc[c] += p[c] as f64 * wx * wy;
                }
            }
        }
        image::Rgb(acc.map(|v| v.round().clamp(0.0, 255.0) as u8))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn area_resize_averages_blocks() {
        let src = RgbImage::from_fn(4, 2, |x, _| image::Rgb([if x % 2 == 0 { 0 } else { 200 }, 10, 20]));
        let out = area_resize(&src, 2, 1);
        assert_eq!(out.get_pixel(0, 0).0, [100, 10, 20]);
        assert_eq!(out.get_pixel(1, 0).0, [100, 10, 20]);
    }
}
