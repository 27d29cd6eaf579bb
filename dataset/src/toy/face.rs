//! Turns identity parameters, nuisances and an age into painted shapes.
//!
//! Face units: the head centre is the origin, its half-height about 1, y points down. The head
//! is treated as a vertical cylinder for the yaw-like turn: a feature at horizontal position `u`
//! on a cylinder of radius `ρ` (larger for the nose tip, which protrudes) sits at angle
//! `φ = asin(u/ρ)`; turning the head by `yaw` moves it to `ρ·sin(φ + yaw)` and squeezes it
//! horizontally by `cos(φ + yaw) / cos φ`. Features turned too far away are hidden. Pitch
//! compresses the face vertically and shifts protruding features. Only `+ − × ÷ sqrt` are used
//! here (sines come from trigonometric identities), so geometry is bit-stable.

use crate::rng::KeyedRng;

use super::draw::uniform;
use super::identity::{HairStyle, IdentityParams};
use super::nuisance::NuisanceParams;
use super::palette::{self, mix, shade};
use super::raster::{Canvas, Clip, Frame, Shape};

/// Image-normalised units per face unit at scale 1.
const FACE_SCALE: f32 = 0.64;

/// Maps face units to the image for one sample.
struct Pose {
    centre: [f32; 2],
    s: f32,
    cos_t: f32,
    sin_t: f32,
    cos_y: f32,
    sin_y: f32,
    pitch: f32,
    py: f32,
    head_w: f32,
}

impl Pose {
    fn new(n: &NuisanceParams, head_w: f32) -> Self {
        Self {
            centre: [n.translate[0], n.translate[1] + 0.02],
            s: FACE_SCALE * n.scale,
            cos_t: libm::cosf(n.rotation),
            sin_t: libm::sinf(n.rotation),
            cos_y: libm::cosf(n.yaw),
            sin_y: libm::sinf(n.yaw),
            pitch: n.pitch,
            py: 1.0 - 0.25 * n.pitch.abs(),
            head_w,
        }
    }

    /// Frame whose local origin is the face point `(u2, v2)` (already turned), with horizontal
    /// squeeze `cx`, rotated by the local angle `(cos, sin)`.
    fn frame_at(&self, u2: f32, v2: f32, cx: f32, cos: f32, sin: f32) -> Frame {
        let s = self.s;
        let m = [s * self.cos_t * cx, -s * self.sin_t * self.py, s * self.sin_t * cx, s * self.cos_t * self.py];
        let t = [
            self.centre[0] + s * (self.cos_t * u2 - self.sin_t * v2 * self.py),
            self.centre[1] + s * (self.sin_t * u2 + self.cos_t * v2 * self.py),
        ];
        Frame { m, t }.local(0.0, 0.0, cos, sin)
    }

    /// Frame of a surface feature at `(u, v)` on a cylinder of radius `rho`; `None` when the
    /// turn hides it.
    fn feature(&self, u: f32, v: f32, rho: f32) -> Option<Frame> {
        let sphi = (u / rho).clamp(-0.97, 0.97);
        let cphi = (1.0 - sphi * sphi).sqrt();
        let s2 = sphi * self.cos_y + cphi * self.sin_y;
        let c2 = cphi * self.cos_y - sphi * self.sin_y;
        if c2 < 0.12 {
            return None;
        }
        let depth = rho * c2 - self.head_w * 0.8;
        let v2 = v + self.pitch * 0.35 * depth / self.py;
        Some(self.frame_at(rho * s2, v2, c2 / cphi.max(0.25), 1.0, 0.0))
    }

    /// Frame of the head outline (it barely changes width when the head turns).
    fn head(&self) -> Frame {
        self.frame_at(self.sin_y * self.head_w * 0.06, 0.0, 1.0 - 0.06 * self.sin_y.abs(), 1.0, 0.0)
    }
}

/// The identity's traits after `age` has acted on them.
struct Aged {
    head_w: f32,
    head_h: f32,
    jaw: f32,
    skin: [f32; 3],
    hair: [f32; 3],
    hairline: f32,
    eye_size: f32,
    nose_length: f32,
    mouth_height: f32,
    wrinkles: f32,
}

fn age_traits(id: &IdentityParams, age: f32) -> Aged {
    let a = age.clamp(0.0, 1.0);
    let grey = (a * id.greying_rate * 1.4 - 0.15).clamp(0.0, 0.95);
    let recede = if id.greying_rate > 0.6 { 0.12 * a * (id.greying_rate - 0.5) } else { 0.0 };
    let skin = palette::skin(id.skin_tone, id.skin_undertone);
    Aged {
        head_w: id.head_width + 0.02 * a,
        head_h: id.head_height,
        jaw: id.jaw_width + 0.08 * a,
        skin: mix(skin, shade(skin, 0.9), a),
        hair: mix(palette::hair(id.hair_color), palette::GREY_HAIR, grey),
        hairline: id.hairline - recede,
        eye_size: id.eye_size * (1.0 - 0.08 * a),
        nose_length: id.nose_length + 0.03 * a,
        mouth_height: id.mouth_height * (1.0 - 0.35 * a),
        wrinkles: ((a - 0.25) * 1.3).clamp(0.0, 0.85),
    }
}

/// Paints the face of `id` under nuisances `n` at `age` onto `canvas` (background already there).
pub fn draw_face(canvas: &mut Canvas, id: &IdentityParams, n: &NuisanceParams, age: f32) {
    let t = age_traits(id, age);
    let pose = Pose::new(n, t.head_w);
    let head = pose.head();
    let (hw, hh) = (t.head_w, t.head_h);
    // Anti-aliasing softness in pixels, and "soft" edges (shadows) in pixels per face unit.
    let aa = 1.0;
    let px_per_unit = pose.s * canvas.size as f32 * 0.5;
    let hair = t.hair;
    let skin = t.skin;

    // Light direction in face coordinates (for the shading and the nose shadow).
    let (lxi, lyi) = (libm::cosf(n.light_angle), libm::sinf(n.light_angle));
    let lx = pose.cos_t * lxi + pose.sin_t * lyi;
    let ly = -pose.sin_t * lxi + pose.cos_t * lyi;

    // 1. Hair behind the head.
    let hs = n.hair_shift;
    match id.hair_style {
        HairStyle::Long => {
            canvas.fill(
                &head,
                Shape::Ellipse { rx: hw * 1.28, ry: hh * 1.3 },
                Clip::HalfPlane { nx: 0.0, ny: 1.0, c: 1.45 },
                shade(hair, 0.85),
                1.0,
                aa,
            );
        }
        HairStyle::Bob => {
            let f = head.local(hs, 0.05, 1.0, 0.0);
            canvas.fill(
                &f,
                Shape::Ellipse { rx: hw * 1.22, ry: hh * 1.02 },
                Clip::HalfPlane { nx: 0.0, ny: 1.0, c: 0.62 },
                shade(hair, 0.9),
                1.0,
                aa,
            );
        }
        _ => {}
    }

    // 2. Neck and ears.
    canvas.fill(
        &head.local(0.0, hh + 0.2, 1.0, 0.0),
        Shape::RoundBox { hx: hw * 0.42, hy: 0.45, r: 0.1 },
        Clip::None,
        shade(skin, 0.8),
        1.0,
        aa,
    );
    // Shoulders in the sample's clothing colour.
    canvas.fill(
        &head.local(0.0, hh + 0.78, 1.0, 0.0),
        Shape::RoundBox { hx: hw * 1.9, hy: 0.45, r: 0.35 },
        Clip::None,
        n.clothing,
        1.0,
        aa,
    );
    canvas.fill(&head.local(0.0, hh + 0.36, 1.0, 0.0), Shape::Ellipse { rx: hw * 0.42, ry: 0.1 }, Clip::None, shade(skin, 0.8), 1.0, aa);
    let ear_y = id.eye_height + 0.1;
    for side in [-1.0f32, 1.0] {
        if let Some(f) = pose.feature(side * hw * 0.99, ear_y, hw) {
            let rx = 0.1 * id.ear_size * (0.7 + 0.6 * id.ear_protrusion);
            let ry = 0.2 * id.ear_size;
            let f = f.local(side * rx * 0.45, 0.0, 1.0, 0.0);
            canvas.fill(&f, Shape::Ellipse { rx, ry }, Clip::None, shade(skin, 0.95), 1.0, aa);
            canvas.fill(&f, Shape::Ellipse { rx: rx * 0.45, ry: ry * 0.55 }, Clip::None, shade(skin, 0.75), 0.8, aa);
        }
    }

    // 3. Head: cranium plus jaw.
    let cranium = Shape::Ellipse { rx: hw, ry: hh * 0.95 };
    let cranium_frame = head.local(0.0, -0.05, 1.0, 0.0);
    canvas.fill(&cranium_frame, cranium, Clip::None, skin, 1.0, aa);
    let jaw_ry = hh - 0.25;
    canvas.fill(&head.local(0.0, 0.25, 1.0, 0.0), Shape::Ellipse { rx: hw * t.jaw, ry: jaw_ry }, Clip::None, skin, 1.0, aa);

    // 4. Shading: the side away from the light is darker.
    if n.light_strength > 0.0 {
        let soft = 0.45 * px_per_unit;
        canvas.fill(
            &cranium_frame,
            Shape::Ellipse { rx: hw * 0.97, ry: hh * 0.93 },
            Clip::HalfPlane { nx: lx, ny: ly, c: -0.15 },
            [0.0; 3],
            n.light_strength * 0.5,
            soft,
        );
    }

    // 5. Freckles, moles and wrinkles.
    if id.freckles > 0.0 {
        let mut r = KeyedRng::from_seed(id.freckle_seed);
        let count = 6 + (18.0 * id.freckles) as usize;
        for _ in 0..count {
            let x = uniform(&mut r, -0.55, 0.55);
            let y = id.eye_height + uniform(&mut r, 0.12, 0.38);
            let rad = uniform(&mut r, 0.014, 0.024);
            if let Some(f) = pose.feature(x, y, hw) {
                canvas.fill(&f, Shape::Ellipse { rx: rad, ry: rad }, Clip::None, shade(skin, 0.72), 0.75, aa);
            }
        }
    }
    for m in id.moles.iter().take(id.mole_count as usize) {
        if let Some(f) = pose.feature(m.x * hw, m.y, hw) {
            canvas.fill(&f, Shape::Ellipse { rx: m.radius, ry: m.radius }, Clip::None, [0.22, 0.13, 0.09], 0.95, aa);
        }
    }
    let ey = id.eye_height;
    let es = id.eye_spacing;
    let ew = 0.15 * t.eye_size;
    let tip_y = ey + t.nose_length;
    let my = (tip_y + 0.2).min(hh * 0.72);
    if t.wrinkles > 0.0 {
        let line = shade(skin, 0.68);
        let fy = (t.hairline + ey - 0.2) * 0.5;
        for k in 0..2 {
            if let Some(f) = pose.feature(0.0, fy + 0.07 * k as f32, hw) {
                let s = Shape::Capsule { a: [-0.32, 0.02], b: [0.32, 0.02], r: 0.011 };
                canvas.fill(&f, s, Clip::None, line, t.wrinkles, aa);
            }
        }
        for side in [-1.0f32, 1.0] {
            if let Some(f) = pose.feature(side * (es + ew + 0.05), ey, hw) {
                for dy in [-0.04f32, 0.0, 0.04] {
                    let s = Shape::Capsule { a: [0.0, dy * 0.5], b: [side * 0.07, dy * 1.5], r: 0.009 };
                    canvas.fill(&f, s, Clip::None, line, t.wrinkles * 0.8, aa);
                }
            }
            if let Some(f) = pose.feature(side * (id.nose_width + 0.06), tip_y, hw) {
                let s = Shape::Capsule { a: [0.0, 0.0], b: [side * (id.mouth_width - id.nose_width - 0.02), my - tip_y + 0.03], r: 0.012 };
                canvas.fill(&f, s, Clip::None, line, t.wrinkles * 0.9, aa);
            }
        }
    }

    // 6. Beard.
    if id.beard {
        let beard = shade(hair, 0.85);
        if id.beard_style >= 0.4 {
            canvas.fill(
                &head.local(0.0, 0.25, 1.0, 0.0),
                Shape::Ellipse { rx: hw * t.jaw * 1.05, ry: jaw_ry * 1.04 },
                Clip::HalfPlane { nx: 0.0, ny: -1.0, c: -(my - 0.12) },
                beard,
                0.93,
                1.5,
            );
        } else if let Some(f) = pose.feature(0.0, my + 0.2, hw) {
            canvas.fill(&f, Shape::Ellipse { rx: 0.15, ry: 0.16 }, Clip::None, beard, 0.93, 1.5);
        }
        if let Some(f) = pose.feature(0.0, my - 0.07, hw * 1.05) {
            let s = Shape::Capsule { a: [-id.mouth_width * 0.9, 0.02], b: [id.mouth_width * 0.9, 0.02], r: 0.035 };
            canvas.fill(&f, s, Clip::None, beard, 0.93, aa);
        }
    }

    // 7. Hair on top of the head.
    let hair_clip = |tilt: f32| {
        let (s, c) = (tilt, (1.0 - tilt * tilt).sqrt());
        Clip::HalfPlane { nx: s, ny: c, c: t.hairline }
    };
    match id.hair_style {
        HairStyle::Bald => {
            canvas.fill(&cranium_frame, cranium, hair_clip(0.0), hair, 0.22, aa);
        }
        HairStyle::Curly => {
            let f = head.local(hs, -0.12, 1.0, 0.0);
            canvas.fill(&f, Shape::Ellipse { rx: hw * 1.2, ry: hh * 1.02 }, hair_clip(0.0), hair, 1.0, aa);
            for k in 0..7 {
                let a = -0.95 + 0.317 * k as f32; // from left to right over the top
                let (sa, ca) = (a, (1.0 - a * a).max(0.0).sqrt());
                let bump = head.local(hs + sa * hw * 1.18, -0.12 - ca * hh * 0.98, 1.0, 0.0);
                canvas.fill(&bump, Shape::Ellipse { rx: 0.2, ry: 0.2 }, Clip::None, shade(hair, 0.95), 1.0, aa);
            }
        }
        style => {
            let tilt = if style == HairStyle::SidePart { 0.3 * (id.hair_color - 0.5).signum() } else { 0.0 };
            let volume = if style == HairStyle::Short { 1.05 } else { 1.08 };
            let f = head.local(hs, -0.08, 1.0, 0.0);
            canvas.fill(&f, Shape::Ellipse { rx: hw * volume, ry: hh * 0.99 }, hair_clip(tilt), hair, 1.0, aa);
            if style == HairStyle::Bob || style == HairStyle::Long {
                // Side locks framing the face.
                for side in [-1.0f32, 1.0] {
                    let lock = head.local(side * hw * 0.95, 0.05, 1.0, 0.0);
                    canvas.fill(&lock, Shape::Ellipse { rx: 0.16, ry: 0.55 }, Clip::None, hair, 1.0, aa);
                }
            }
        }
    }

    // 8. Eyes and brows.
    let lid = shade(skin, 0.35);
    let iris_c = palette::iris(id.iris_color);
    let ehalf = 0.075 * t.eye_size * n.eye_open.max(0.05);
    for side in [-1.0f32, 1.0] {
        if let Some(f) = pose.feature(side * es, ey, hw) {
            if n.eye_open < 0.3 {
                let s = Shape::Capsule { a: [-ew, 0.0], b: [ew, 0.0], r: 0.018 };
                canvas.fill(&f, s, Clip::None, lid, 1.0, aa);
            } else {
                canvas.fill(&f, Shape::Ellipse { rx: ew * 1.12, ry: ehalf * 1.15 + 0.015 }, Clip::None, lid, 1.0, aa);
                let white = Shape::Ellipse { rx: ew, ry: ehalf };
                canvas.fill(&f, white, Clip::None, [0.94, 0.93, 0.9], 1.0, aa);
                let clip = Clip::Ellipse { cx: 0.0, cy: 0.0, rx: ew, ry: ehalf };
                let (gx, gy) = (n.gaze[0] * ew, n.gaze[1] * ehalf);
                let iris = f.local(gx, gy, 1.0, 0.0);
                let clip_iris = match clip {
                    Clip::Ellipse { rx, ry, .. } => Clip::Ellipse { cx: -gx, cy: -gy, rx, ry },
                    c => c,
                };
                canvas.fill(&iris, Shape::Ellipse { rx: ew * 0.5, ry: ew * 0.5 }, clip_iris, iris_c, 1.0, aa);
                canvas.fill(&iris, Shape::Ellipse { rx: ew * 0.22, ry: ew * 0.22 }, clip_iris, [0.03, 0.03, 0.03], 1.0, aa);
            }
        }
        // Brow: two segments, inner → peak → outer.
        let by = ey - 0.17 - n.brow_raise;
        if let Some(f) = pose.feature(side * es, by, hw * 1.02) {
            let inner = [-side * 0.13, 0.02];
            let peak = [side * 0.01, -id.brow_arch];
            let outer = [side * 0.17, -id.brow_slant * 0.06];
            let brow = shade(hair, 0.8);
            let r = id.brow_thickness;
            canvas.fill(&f, Shape::Capsule { a: inner, b: peak, r }, Clip::None, brow, 0.95, aa);
            canvas.fill(&f, Shape::Capsule { a: peak, b: outer, r: r * 0.8 }, Clip::None, brow, 0.95, aa);
        }
    }

    // 9. Nose: a shadowed side, the tip and the nostrils.
    // Without directional light the shadow falls on a fixed side.
    let shadow_side = if n.light_strength > 0.0 && lx > 0.0 { -1.0 } else { 1.0 };
    if let Some(f) = pose.feature(0.0, (ey + tip_y) * 0.5, hw * 1.12) {
        let half = (tip_y - ey) * 0.5;
        let s = Shape::Capsule { a: [shadow_side * 0.045, -half + 0.05], b: [shadow_side * id.nose_width * 0.75, half - 0.02], r: 0.03 };
        canvas.fill(&f, s, Clip::None, shade(skin, 0.72), 0.6, 1.5);
    }
    if let Some(f) = pose.feature(0.0, tip_y, hw * 1.25) {
        canvas.fill(&f, Shape::Ellipse { rx: id.nose_width * 0.8, ry: id.nose_width * 0.5 }, Clip::None, shade(skin, 0.9), 0.9, 1.2);
        for side in [-1.0f32, 1.0] {
            let nf = f.local(side * id.nose_width * 0.5, 0.035, 1.0, 0.0);
            canvas.fill(&nf, Shape::Ellipse { rx: 0.035, ry: 0.022 }, Clip::None, shade(skin, 0.4), 0.9, aa);
        }
    }

    // 10. Mouth: lips along a curve bent by the smile, with the opening in the middle.
    if let Some(f) = pose.feature(0.0, my, hw * 1.05) {
        let mw = id.mouth_width;
        let curve = |x: f32| -n.smile * 0.07 * (x / mw) * (x / mw) + n.smile * 0.02;
        let xs = [-mw, -0.5 * mw, 0.0, 0.5 * mw, mw];
        let lip = mix(skin, [0.62, 0.2, 0.22], 0.6);
        let open = n.mouth_open;
        for w in xs.windows(2) {
            let (a, b) = ([w[0], curve(w[0])], [w[1], curve(w[1])]);
            let r = t.mouth_height * 0.5 * if w[0] == -mw || w[1] == mw { 0.75 } else { 1.0 } + open * 0.03;
            canvas.fill(&f, Shape::Capsule { a, b, r }, Clip::None, lip, 1.0, aa);
        }
        for w in xs.windows(2) {
            let (a, b) = ([w[0] * 0.92, curve(w[0])], [w[1] * 0.92, curve(w[1])]);
            let r = 0.008 + open * 0.035;
            canvas.fill(&f, Shape::Capsule { a, b, r }, Clip::None, [0.25, 0.07, 0.08], 0.9, aa);
        }
    }

    // 11. Glasses.
    if id.glasses {
        let frame_c = mix([0.06, 0.05, 0.05], [0.45, 0.25, 0.1], id.glasses_style * 0.6);
        let rr = ew * 1.45;
        let half = 0.012 + 0.016 * id.glasses_style;
        let (hy, corner) = if id.glasses_style < 0.5 { (rr, rr * 0.95) } else { (rr * 0.78, rr * 0.3) };
        for side in [-1.0f32, 1.0] {
            if let Some(f) = pose.feature(side * es, ey, hw * 1.08) {
                canvas.fill(&f, Shape::BoxRing { hx: rr, hy, r: corner, half }, Clip::None, frame_c, 1.0, aa);
                canvas.fill(&f, Shape::RoundBox { hx: rr, hy, r: corner }, Clip::None, [0.8, 0.9, 1.0], 0.08, aa);
            }
        }
        if let Some(f) = pose.feature(0.0, ey - 0.02, hw * 1.1) {
            let gap = (es - rr).max(0.02);
            canvas.fill(&f, Shape::Capsule { a: [-gap, 0.0], b: [gap, 0.0], r: half }, Clip::None, frame_c, 1.0, aa);
        }
    }
}

/// Paints the occluder (if any) in normalised image coordinates.
pub fn draw_occluder(canvas: &mut Canvas, n: &NuisanceParams) {
    let Some(o) = n.occluder else { return };
    let (c, s) = (libm::cosf(o.angle), libm::sinf(o.angle));
    let frame = Frame { m: [c, -s, s, c], t: [o.x, o.y] };
    match o.kind {
        super::nuisance::OccluderKind::Band => {
            canvas.fill(&frame, Shape::RoundBox { hx: 2.0, hy: o.size * 0.6, r: 0.02 }, Clip::None, o.color, 1.0, 1.0);
        }
        super::nuisance::OccluderKind::Hand => {
            canvas.fill(&frame, Shape::Ellipse { rx: o.size, ry: o.size * 1.15 }, Clip::None, o.color, 1.0, 1.0);
            let inward = if o.x > 0.0 { -1.0 } else { 1.0 };
            for k in 0..4 {
                let y = (k as f32 - 1.5) * o.size * 0.45;
                let a = [inward * o.size * 0.6, y];
                let b = [inward * o.size * 1.7, y * 1.2];
                canvas.fill(&frame, Shape::Capsule { a, b, r: o.size * 0.2 }, Clip::None, shade(o.color, 0.97), 1.0, 1.0);
            }
        }
    }
}
