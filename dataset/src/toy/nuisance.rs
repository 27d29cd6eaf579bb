//! Nuisance parameters (everything that changes between two photos of the same identity) and
//! the [`Difficulty`] knobs that scale them.
//!
//! Drawn only from `KeyedRng::new(&[world_seed, identity, sample, NUISANCE_STREAM])`. Each draw
//! happens whatever the knobs say, and the knobs only scale the drawn values (or the probability
//! thresholds), so changing one knob never reshuffles the other nuisances of a sample.

use crate::rng::KeyedRng;

use super::draw::{clamped_normal, symmetric, uniform, weighted};

/// Extra key part that separates nuisance streams from identity streams.
pub const NUISANCE_STREAM: u64 = 0x6e75_6973;

/// Extra key part of the per-sample age draw, apart from [`NUISANCE_STREAM`] so that drawing ages
/// leaves a sample's other nuisances unchanged.
pub const AGE_STREAM: u64 = 0x6167_6573;

/// The age of sample `sample` of `identity` in world `world_seed` when ages range over
/// `[lo, hi]`: a uniform draw keyed by `(world_seed, identity, sample, AGE_STREAM)`, or `lo` when
/// the range is empty (`hi <= lo`).
pub fn sample_age(world_seed: u64, identity: u64, sample: u64, lo: f32, hi: f32) -> f32 {
    if hi <= lo {
        return lo;
    }
    KeyedRng::new(&[world_seed, identity, sample, AGE_STREAM]).range(lo as f64, hi as f64) as f32
}

/// Scales of the nuisance groups. `1.0` everywhere is the default world; `0.0` switches a group
/// off (a frontal, evenly lit, clean face on a plain background).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Difficulty {
    /// In-plane rotation (default ±12° at 1).
    pub rotation: f32,
    /// Yaw-like turn of the head (default up to ±0.55 rad at 1).
    pub yaw: f32,
    /// Pitch-like vertical foreshortening (default up to ±0.25 at 1).
    pub pitch: f32,
    /// Translation of the face centre (default ±10 % of the image at 1).
    pub translation: f32,
    /// Scale variation (default 0.85–1.12 at 1).
    pub scale: f32,
    /// Expression strength: smile, eye openness, brow raise.
    pub expression: f32,
    /// Lighting: direction strength, intensity spread, colour temperature.
    pub lighting: f32,
    /// Background colour spread and texture contrast.
    pub background: f32,
    /// Blur radius (default Gaussian σ up to 1.1 px at 64 px, proportional to image size).
    pub blur: f32,
    /// Sensor noise (default σ up to 9/255).
    pub noise: f32,
    /// Probability multiplier of an occluder (default 15 %).
    pub occlusion: f32,
    /// Probability multiplier of JPEG-like degradation (default 30 %) and its strength.
    pub jpeg: f32,
}

impl Default for Difficulty {
    fn default() -> Self {
        Self {
            rotation: 1.0,
            yaw: 1.0,
            pitch: 1.0,
            translation: 1.0,
            scale: 1.0,
            expression: 1.0,
            lighting: 1.0,
            background: 1.0,
            blur: 1.0,
            noise: 1.0,
            occlusion: 1.0,
            jpeg: 1.0,
        }
    }
}

impl Difficulty {
    /// No nuisances at all: the identity's canonical portrait.
    pub fn none() -> Self {
        Self {
            rotation: 0.0,
            yaw: 0.0,
            pitch: 0.0,
            translation: 0.0,
            scale: 0.0,
            expression: 0.0,
            lighting: 0.0,
            background: 0.0,
            blur: 0.0,
            noise: 0.0,
            occlusion: 0.0,
            jpeg: 0.0,
        }
    }

    /// Every knob multiplied by `k` (a single global difficulty dial).
    pub fn scaled(&self, k: f32) -> Self {
        Self {
            rotation: self.rotation * k,
            yaw: self.yaw * k,
            pitch: self.pitch * k,
            translation: self.translation * k,
            scale: self.scale * k,
            expression: self.expression * k,
            lighting: self.lighting * k,
            background: self.background * k,
            blur: self.blur * k,
            noise: self.noise * k,
            occlusion: self.occlusion * k,
            jpeg: self.jpeg * k,
        }
    }
}

/// Kinds of background texture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackgroundTexture {
    /// Flat colour with a gentle gradient.
    Plain,
    /// Soft blotches (bilinear value noise).
    Blotches,
    /// Stripes along a random direction.
    Stripes,
}

/// Kinds of occluder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OccluderKind {
    /// A hand-like blob with fingers, in a skin tone.
    Hand,
    /// A band (scarf, cap brim, sticker) crossing the image.
    Band,
}

/// An occluder in front of the face, in normalised image coordinates (−1…1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Occluder {
    /// What it looks like.
    pub kind: OccluderKind,
    /// Centre x.
    pub x: f32,
    /// Centre y.
    pub y: f32,
    /// Orientation, radians.
    pub angle: f32,
    /// Size (half-length of a band's short side / hand radius).
    pub size: f32,
    /// Colour (sRGB, 0…1).
    pub color: [f32; 3],
}

/// Everything that varies between samples of one identity.
#[derive(Debug, Clone, PartialEq)]
pub struct NuisanceParams {
    /// In-plane rotation, radians.
    pub rotation: f32,
    /// Head turn, radians (positive = face turns to the image's right).
    pub yaw: f32,
    /// Vertical foreshortening, −0.25…0.25 (positive = looking down).
    pub pitch: f32,
    /// Face centre offset, normalised image units.
    pub translate: [f32; 2],
    /// Face scale multiplier.
    pub scale: f32,
    /// Smile (−0.4 = frown … 1 = broad smile).
    pub smile: f32,
    /// Mouth opening (0 = closed … 1 = open).
    pub mouth_open: f32,
    /// Eye openness (0.1 = nearly shut … 1.15 = wide open).
    pub eye_open: f32,
    /// Brow raise, face units.
    pub brow_raise: f32,
    /// Gaze offset of the irises, fraction of the eye width.
    pub gaze: [f32; 2],
    /// Light direction angle in the image plane, radians.
    pub light_angle: f32,
    /// Strength of directional shading, 0…0.6.
    pub light_strength: f32,
    /// Overall brightness multiplier.
    pub light_intensity: f32,
    /// Colour temperature (−1 = cool/blue … +1 = warm/orange).
    pub color_temperature: f32,
    /// Background base colour (sRGB 0…1).
    pub background: [f32; 3],
    /// Second background colour (texture / gradient).
    pub background2: [f32; 3],
    /// Background texture.
    pub texture: BackgroundTexture,
    /// Texture frequency / direction parameter.
    pub texture_angle: f32,
    /// Seed of the background texture and sensor noise.
    pub pixel_seed: u64,
    /// Gaussian blur σ in pixels at 64 px (scaled with the image size).
    pub blur_sigma: f32,
    /// Sensor-noise σ in 8-bit levels.
    pub noise_sigma: f32,
    /// Optional occluder.
    pub occluder: Option<Occluder>,
    /// JPEG-like degradation: quantiser step of the 8×8 DCT (0 = none).
    pub jpeg_step: f32,
    /// Hair tousle: small random shift of the hair mass, face units.
    pub hair_shift: f32,
    /// Clothing colour on the shoulders (sRGB 0…1).
    pub clothing: [f32; 3],
}

/// Random colour with moderate saturation; `spread` 0 gives mid-grey.
fn random_color(rng: &mut KeyedRng, spread: f32) -> [f32; 3] {
    let base = uniform(rng, 0.15, 0.9);
    let mut c = [0.0; 3];
    for v in c.iter_mut() {
        *v = (0.55 + (base - 0.55 + symmetric(rng, 0.3)) * spread).clamp(0.02, 0.98);
    }
    c
}

impl NuisanceParams {
    /// The nuisances of sample `sample` of `identity` in world `world_seed`.
    pub fn draw(world_seed: u64, identity: u64, sample: u64, d: &Difficulty) -> Self {
        let mut rng = KeyedRng::new(&[world_seed, identity, sample, NUISANCE_STREAM]);
        Self::from_rng(&mut rng, d)
    }

    /// Draws nuisances from any stream, scaled by the knobs.
    pub fn from_rng(r: &mut KeyedRng, d: &Difficulty) -> Self {
        let rotation = clamped_normal(r, 0.1) * d.rotation;
        let yaw = symmetric(r, 0.55) * d.yaw;
        let pitch = symmetric(r, 0.25) * d.pitch;
        let translate = [symmetric(r, 0.1) * d.translation, symmetric(r, 0.1) * d.translation];
        let scale = 1.0 + uniform(r, -0.15, 0.12) * d.scale;
        let smile = uniform(r, -0.4, 1.0) * d.expression;
        let mouth_open = {
            let u = uniform(r, 0.0, 1.0);
            (u * u * u * d.expression).clamp(0.0, 1.0)
        };
        let blink = r.chance(0.07);
        let eye_open_raw = if blink { uniform(r, 0.1, 0.35) } else { uniform(r, 0.65, 1.15) };
        let eye_open = 1.0 + (eye_open_raw - 1.0) * d.expression.min(1.0);
        let brow_raise = uniform(r, -0.03, 0.07) * d.expression;
        let gaze = [symmetric(r, 0.25) * d.expression, symmetric(r, 0.15) * d.expression];
        let light_angle = uniform(r, 0.0, std::f32::consts::TAU);
        let light_strength = uniform(r, 0.0, 0.6) * d.lighting;
        let light_intensity = 1.0 + uniform(r, -0.3, 0.25) * d.lighting;
        let color_temperature = symmetric(r, 1.0) * d.lighting;
        let bg_spread = d.background.min(1.5);
        let background = random_color(r, bg_spread);
        let background2 = random_color(r, bg_spread);
        let texture = [BackgroundTexture::Plain, BackgroundTexture::Blotches, BackgroundTexture::Stripes][weighted(r, &[0.3, 0.45, 0.25])];
        let texture_angle = uniform(r, 0.0, std::f32::consts::PI);
        let pixel_seed = r.next_u64();
        let blur_sigma = if r.chance(0.55) { uniform(r, 0.2, 1.1) * d.blur } else { 0.0 };
        let noise_sigma = uniform(r, 0.0, 9.0) * d.noise;
        let has_occ = r.chance((0.15 * d.occlusion).clamp(0.0, 1.0) as f64);
        let occ_kind = if r.chance(0.5) { OccluderKind::Hand } else { OccluderKind::Band };
        let occ_side = if r.chance(0.5) { 1.0 } else { -1.0 };
        let occluder = Occluder {
            kind: occ_kind,
            x: occ_side * uniform(r, 0.35, 0.75),
            y: uniform(r, -0.2, 0.7),
            angle: symmetric(r, 1.2),
            size: uniform(r, 0.18, 0.3),
            color: match occ_kind {
                OccluderKind::Hand => {
                    let t = uniform(r, 0.0, 1.0);
                    super::palette::skin(t, 0.0)
                }
                OccluderKind::Band => random_color(r, 1.0),
            },
        };
        let has_jpeg = r.chance((0.3 * d.jpeg).clamp(0.0, 1.0) as f64);
        let jpeg_step = uniform(r, 0.03, 0.1) * d.jpeg.min(2.0);
        let hair_shift = symmetric(r, 0.04) * d.expression;
        let clothing = random_color(r, d.background.min(1.5));
        Self {
            rotation,
            yaw,
            pitch,
            translate,
            scale,
            smile,
            mouth_open,
            eye_open,
            brow_raise,
            gaze,
            light_angle,
            light_strength,
            light_intensity,
            color_temperature,
            background,
            background2,
            texture,
            texture_angle,
            pixel_seed,
            blur_sigma,
            noise_sigma,
            occluder: has_occ.then_some(occluder),
            jpeg_step: if has_jpeg { jpeg_step } else { 0.0 },
            hair_shift,
            clothing,
        }
    }
}
