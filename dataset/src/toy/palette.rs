//! Continuous colour palettes (sRGB, 0…1): skin, hair and iris colours are piecewise-linear
//! interpolations between anchor colours, so nearby parameter values give nearby colours.

/// Linear interpolation between two colours.
#[inline]
pub fn mix(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t]
}

/// Colour scaled by `k` (clamped to 0…1).
#[inline]
pub fn shade(c: [f32; 3], k: f32) -> [f32; 3] {
    [(c[0] * k).clamp(0.0, 1.0), (c[1] * k).clamp(0.0, 1.0), (c[2] * k).clamp(0.0, 1.0)]
}

fn ramp(anchors: &[[f32; 3]], t: f32) -> [f32; 3] {
    let n = anchors.len() - 1;
    let x = t.clamp(0.0, 1.0) * n as f32;
    let k = (x as usize).min(n - 1);
    mix(anchors[k], anchors[k + 1], x - k as f32)
}

const SKIN: [[f32; 3]; 6] =
    [[0.98, 0.87, 0.78], [0.93, 0.76, 0.64], [0.82, 0.62, 0.48], [0.66, 0.46, 0.33], [0.50, 0.34, 0.24], [0.36, 0.24, 0.17]];

/// Skin colour at palette position `t` (0 = very light … 1 = very dark) with `undertone`
/// (−1 olive … +1 pink).
pub fn skin(t: f32, undertone: f32) -> [f32; 3] {
    let c = ramp(&SKIN, t);
    let u = undertone.clamp(-1.0, 1.0) * 0.04;
    [(c[0] + u).clamp(0.0, 1.0), (c[1] - 0.3 * u.abs()).clamp(0.0, 1.0), (c[2] - u).clamp(0.0, 1.0)]
}

const HAIR: [[f32; 3]; 6] =
    [[0.06, 0.05, 0.05], [0.20, 0.12, 0.07], [0.40, 0.24, 0.12], [0.60, 0.24, 0.10], [0.78, 0.60, 0.33], [0.95, 0.88, 0.66]];

/// Hair colour at palette position `t` (0 = black … 1 = platinum blond).
pub fn hair(t: f32) -> [f32; 3] {
    ramp(&HAIR, t)
}

/// Grey that ageing hair turns to.
pub const GREY_HAIR: [f32; 3] = [0.78, 0.78, 0.80];

const IRIS: [[f32; 3]; 5] = [[0.22, 0.12, 0.06], [0.45, 0.30, 0.12], [0.30, 0.50, 0.25], [0.25, 0.45, 0.75], [0.55, 0.60, 0.65]];

/// Iris colour at palette position `t` (0 = dark brown … 1 = grey).
pub fn iris(t: f32) -> [f32; 3] {
    ramp(&IRIS, t)
}
