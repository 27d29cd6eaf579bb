//! A tiny anti-aliased rasteriser: signed-distance shapes painted back to front.
//!
//! Each shape lives in its own local frame, mapped to normalised image coordinates (−1…1 across
//! the image) by an affine [`Frame`]. For every pixel in the shape's bounding box the signed
//! distance to the outline is evaluated in local units, converted to pixels, and turned into a
//! coverage `clamp(0.5 − d / softness, 0, 1)`: one sample per pixel gives smooth, alias-free
//! edges (softness 1 px) or deliberately soft ones (shadows). Only `+ − × ÷ sqrt` are used per
//! pixel, which IEEE 754 rounds identically on every platform, so output is bit-stable. An image
//! crate could draw polygons, but none offers SDF shapes with analytic coverage, and this stays
//! under a hundred lines.

/// An affine map from a shape's local coordinates to normalised image coordinates:
/// `p = m · l + t`, `m` row-major 2×2.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Frame {
    /// Linear part, row-major `[m00, m01, m10, m11]`.
    pub m: [f32; 4],
    /// Translation.
    pub t: [f32; 2],
}

impl Frame {
    /// Maps a local point to normalised image coordinates.
    #[inline]
    pub fn apply(&self, x: f32, y: f32) -> [f32; 2] {
        [self.m[0] * x + self.m[1] * y + self.t[0], self.m[2] * x + self.m[3] * y + self.t[1]]
    }

    /// The same frame moved by a local offset and rotated by a local angle (`cos`, `sin`).
    pub fn local(&self, dx: f32, dy: f32, cos: f32, sin: f32) -> Frame {
        let m = self.m;
        Frame {
            m: [m[0] * cos + m[1] * sin, -m[0] * sin + m[1] * cos, m[2] * cos + m[3] * sin, -m[2] * sin + m[3] * cos],
            t: self.apply(dx, dy),
        }
    }
}

/// Shapes, in local units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shape {
    /// Axis-aligned ellipse centred at the origin.
    Ellipse {
        /// Half-width.
        rx: f32,
        /// Half-height.
        ry: f32,
    },
    /// Segment `a`–`b` with round caps of radius `r`.
    Capsule {
        /// First end.
        a: [f32; 2],
        /// Second end.
        b: [f32; 2],
        /// Radius.
        r: f32,
    },
    /// Rounded box centred at the origin.
    RoundBox {
        /// Half-width.
        hx: f32,
        /// Half-height.
        hy: f32,
        /// Corner radius.
        r: f32,
    },
    /// Outline of a rounded box, `half` thick on each side of the outline.
    BoxRing {
        /// Half-width.
        hx: f32,
        /// Half-height.
        hy: f32,
        /// Corner radius.
        r: f32,
        /// Half line thickness.
        half: f32,
    },
}

/// An optional second shape intersected with the first (in the same local frame).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Clip {
    /// No clipping.
    None,
    /// Keep the side where `nx·x + ny·y ≤ c`.
    HalfPlane {
        /// Normal x.
        nx: f32,
        /// Normal y.
        ny: f32,
        /// Offset.
        c: f32,
    },
    /// Keep the inside of an ellipse centred at `(cx, cy)`.
    Ellipse {
        /// Centre x.
        cx: f32,
        /// Centre y.
        cy: f32,
        /// Half-width.
        rx: f32,
        /// Half-height.
        ry: f32,
    },
}

#[inline]
fn sd_ellipse(x: f32, y: f32, rx: f32, ry: f32) -> f32 {
    let (ax, ay) = (x / rx, y / ry);
    let k1 = (ax * ax + ay * ay).sqrt();
    let (bx, by) = (ax / rx, ay / ry);
    let k2 = (bx * bx + by * by).sqrt();
    if k2 < 1e-6 {
        -rx.min(ry)
    } else {
        k1 * (k1 - 1.0) / k2
    }
}

#[inline]
fn sd_round_box(x: f32, y: f32, hx: f32, hy: f32, r: f32) -> f32 {
    let qx = x.abs() - (hx - r);
    let qy = y.abs() - (hy - r);
    let (ox, oy) = (qx.max(0.0), qy.max(0.0));
    (ox * ox + oy * oy).sqrt() + qx.max(qy).min(0.0) - r
}

impl Shape {
    /// Signed distance (negative inside), local units.
    #[inline]
    pub fn distance(&self, x: f32, y: f32) -> f32 {
        match *self {
            Shape::Ellipse { rx, ry } => sd_ellipse(x, y, rx, ry),
            Shape::Capsule { a, b, r } => {
                let (pax, pay) = (x - a[0], y - a[1]);
                let (bax, bay) = (b[0] - a[0], b[1] - a[1]);
                let bb = bax * bax + bay * bay;
                let h = if bb > 0.0 { ((pax * bax + pay * bay) / bb).clamp(0.0, 1.0) } else { 0.0 };
                let (dx, dy) = (pax - bax * h, pay - bay * h);
                (dx * dx + dy * dy).sqrt() - r
            }
            Shape::RoundBox { hx, hy, r } => sd_round_box(x, y, hx, hy, r),
            Shape::BoxRing { hx, hy, r, half } => sd_round_box(x, y, hx, hy, r).abs() - half,
        }
    }

    /// Half-extent of a local bounding box.
    fn extent(&self) -> (f32, f32, f32, f32) {
        match *self {
            Shape::Ellipse { rx, ry } => (-rx, -ry, rx, ry),
            Shape::Capsule { a, b, r } => (a[0].min(b[0]) - r, a[1].min(b[1]) - r, a[0].max(b[0]) + r, a[1].max(b[1]) + r),
            Shape::RoundBox { hx, hy, .. } => (-hx, -hy, hx, hy),
            Shape::BoxRing { hx, hy, half, .. } => (-hx - half, -hy - half, hx + half, hy + half),
        }
    }
}

impl Clip {
    #[inline]
    fn distance(&self, x: f32, y: f32) -> f32 {
        match *self {
            Clip::None => f32::NEG_INFINITY,
            Clip::HalfPlane { nx, ny, c } => nx * x + ny * y - c,
            Clip::Ellipse { cx, cy, rx, ry } => sd_ellipse(x - cx, y - cy, rx, ry),
        }
    }
}

/// A linear-RGB-free, plain sRGB float canvas (values 0…1), row-major.
#[derive(Debug, Clone)]
pub struct Canvas {
    /// Width and height in pixels.
    pub size: usize,
    /// `size × size` RGB pixels.
    pub px: Vec<[f32; 3]>,
}

impl Canvas {
    /// A canvas filled with `color`.
    pub fn new(size: usize, color: [f32; 3]) -> Self {
        Self { size, px: vec![color; size * size] }
    }

    /// Normalised image coordinate of pixel centre `i`.
    #[inline]
    pub fn coord(&self, i: usize) -> f32 {
        (i as f32 + 0.5) * 2.0 / self.size as f32 - 1.0
    }

    /// Paints `shape ∩ clip` in `frame` with `color` at `opacity`; `softness` is the edge ramp
    /// width in pixels (1 = crisp anti-aliased edge).
    pub fn fill(&mut self, frame: &Frame, shape: Shape, clip: Clip, color: [f32; 3], opacity: f32, softness: f32) {
        let m = frame.m;
        let det = m[0] * m[3] - m[1] * m[2];
        if det.abs() < 1e-12 || opacity <= 0.0 {
            return;
        }
        let inv = [m[3] / det, -m[1] / det, -m[2] / det, m[0] / det];
        let half = self.size as f32 * 0.5;
        // Pixels per local unit (geometric mean of the two axes).
        let px_per_unit = det.abs().sqrt() * half;
        let soft = softness.max(0.5);
        let k = px_per_unit / soft;

        // Bounding box in pixels.
        let (x0, y0, x1, y1) = shape.extent();
        let mut lo = [f32::INFINITY; 2];
        let mut hi = [f32::NEG_INFINITY; 2];
        for (cx, cy) in [(x0, y0), (x1, y0), (x0, y1), (x1, y1)] {
            let p = frame.apply(cx, cy);
            for a in 0..2 {
                let v = (p[a] + 1.0) * half - 0.5;
                lo[a] = lo[a].min(v);
                hi[a] = hi[a].max(v);
            }
        }
        let pad = soft + 1.0;
        let n = self.size as f32;
        let clamp_px = |v: f32| v.clamp(0.0, n - 1.0) as usize;
        if hi[0] + pad < 0.0 || hi[1] + pad < 0.0 || lo[0] - pad > n - 1.0 || lo[1] - pad > n - 1.0 {
            return;
        }
        let (xa, xb) = (clamp_px((lo[0] - pad).floor()), clamp_px((hi[0] + pad).ceil()));
        let (ya, yb) = (clamp_px((lo[1] - pad).floor()), clamp_px((hi[1] + pad).ceil()));
        let area = Area { xa, xb, ya, yb, inv, t: frame.t, k, opacity, color };
        // Dispatch once per shape so the per-pixel loop is monomorphic.
        match (shape, clip) {
            (Shape::Ellipse { rx, ry }, Clip::None) => self.paint(&area, |x, y| sd_ellipse(x, y, rx, ry)),
            (_, Clip::None) => self.paint(&area, |x, y| shape.distance(x, y)),
            (Shape::Ellipse { rx, ry }, Clip::HalfPlane { nx, ny, c }) => {
                self.paint(&area, |x, y| sd_ellipse(x, y, rx, ry).max(nx * x + ny * y - c))
            }
            (Shape::Ellipse { rx, ry }, Clip::Ellipse { cx, cy, rx: qx, ry: qy }) => {
                self.paint(&area, |x, y| sd_ellipse(x, y, rx, ry).max(sd_ellipse(x - cx, y - cy, qx, qy)))
            }
            _ => self.paint(&area, |x, y| shape.distance(x, y).max(clip.distance(x, y))),
        }
    }

    #[inline(always)]
    fn paint<F: Fn(f32, f32) -> f32>(&mut self, a: &Area, sdf: F) {
        let step = 2.0 / self.size as f32;
        for y in a.ya..=a.yb {
            let py = self.coord(y) - a.t[1];
            let row = y * self.size;
            let mut px = self.coord(a.xa) - a.t[0];
            for x in a.xa..=a.xb {
                let lx = a.inv[0] * px + a.inv[1] * py;
                let ly = a.inv[2] * px + a.inv[3] * py;
                px += step;
                let cov = (0.5 - sdf(lx, ly) * a.k).clamp(0.0, 1.0) * a.opacity;
                if cov > 0.0 {
                    let c = &mut self.px[row + x];
                    c[0] += (a.color[0] - c[0]) * cov;
                    c[1] += (a.color[1] - c[1]) * cov;
                    c[2] += (a.color[2] - c[2]) * cov;
                }
            }
        }
    }
}

/// The pixel rectangle and per-shape constants of one fill.
struct Area {
    xa: usize,
    xb: usize,
    ya: usize,
    yb: usize,
    inv: [f32; 4],
    t: [f32; 2],
    k: f32,
    opacity: f32,
    color: [f32; 3],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ellipse_distance_signs() {
        let e = Shape::Ellipse { rx: 2.0, ry: 1.0 };
        assert!(e.distance(0.0, 0.0) < 0.0);
        assert!(e.distance(3.0, 0.0) > 0.9 && e.distance(3.0, 0.0) < 1.1);
        assert!(e.distance(0.0, 1.0).abs() < 1e-6);
    }

    #[test]
    fn filled_disc_has_antialiased_edge_and_full_centre() {
        let mut c = Canvas::new(32, [0.0; 3]);
        let f = Frame { m: [1.0, 0.0, 0.0, 1.0], t: [0.0, 0.0] };
        c.fill(&f, Shape::Ellipse { rx: 0.5, ry: 0.5 }, Clip::None, [1.0; 3], 1.0, 1.0);
        assert_eq!(c.px[16 * 32 + 16], [1.0; 3]);
        assert_eq!(c.px[0], [0.0; 3]);
        let partial = c.px.iter().filter(|p| p[0] > 0.05 && p[0] < 0.95).count();
        assert!(partial > 10, "edge pixels with partial coverage: {partial}");
    }
}
