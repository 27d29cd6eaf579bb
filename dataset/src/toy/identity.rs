//! Identity parameters: the stable facial traits of one toy identity.
//!
//! Drawn only from `KeyedRng::new(&[world_seed, identity])`, so an identity looks the same in
//! every sample, benchmark and worker. Geometric lengths are in *face units*: the head's half
//! height is about 1, x grows to the image's right, y downwards, the head centre is the origin.
//! Every continuous field's range is listed in [`RANGES`] (and in `docs/toy-faces.md`).

use crate::rng::KeyedRng;

use super::draw::{symmetric, uniform, weighted};

/// Hair styles; the discriminant is the value exposed as a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HairStyle {
    /// Shaved head: a thin, low-opacity cap.
    Bald = 0,
    /// Short hair: a cap over the top of the head down to the hairline.
    Short = 1,
    /// Long hair: a cap plus a mass behind the head falling to the shoulders.
    Long = 2,
    /// Bob: a cap plus side parts down to the jaw.
    Bob = 3,
    /// Curly / afro: a large rounded volume with bumps around the head top.
    Curly = 4,
    /// Side part: a cap whose hairline slopes to one side.
    SidePart = 5,
}

impl HairStyle {
    /// All styles, in discriminant order.
    pub const ALL: [HairStyle; 6] =
        [HairStyle::Bald, HairStyle::Short, HairStyle::Long, HairStyle::Bob, HairStyle::Curly, HairStyle::SidePart];
}

/// A mole: position in face units and radius.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mole {
    /// Horizontal position, face units.
    pub x: f32,
    /// Vertical position, face units.
    pub y: f32,
    /// Radius, face units.
    pub radius: f32,
}

/// Maximum number of moles an identity can have.
pub const MAX_MOLES: usize = 3;

/// The stable traits of one identity. See [`RANGES`] for every field's range.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityParams {
    /// Head half-width, face units.
    pub head_width: f32,
    /// Head half-height, face units.
    pub head_height: f32,
    /// Jaw width as a fraction of the head width (small = pointed chin, large = square jaw).
    pub jaw_width: f32,
    /// Position on the continuous skin palette (0 = very light … 1 = very dark).
    pub skin_tone: f32,
    /// Skin undertone (−1 = olive/yellow … +1 = pink/red).
    pub skin_undertone: f32,
    /// Hair style.
    pub hair_style: HairStyle,
    /// Position on the continuous hair palette (0 = black … 0.5 = auburn … 1 = platinum blond).
    pub hair_color: f32,
    /// Vertical position of the hairline, face units (more negative = higher forehead).
    pub hairline: f32,
    /// How fast the hair greys with age (0 = never … 1 = fully grey at age 1).
    pub greying_rate: f32,
    /// Half the distance between the eye centres, face units.
    pub eye_spacing: f32,
    /// Vertical position of the eye centres, face units.
    pub eye_height: f32,
    /// Eye size multiplier.
    pub eye_size: f32,
    /// Position on the iris palette (0 = dark brown … 0.35 = hazel … 0.6 = green … 0.85 = blue … 1 = grey).
    pub iris_color: f32,
    /// Brow slant (−1 = outer ends down … +1 = outer ends up).
    pub brow_slant: f32,
    /// Brow arch height, face units.
    pub brow_arch: f32,
    /// Brow half-thickness, face units.
    pub brow_thickness: f32,
    /// Nose length (bridge to tip), face units.
    pub nose_length: f32,
    /// Nose half-width at the nostrils, face units.
    pub nose_width: f32,
    /// Mouth half-width, face units.
    pub mouth_width: f32,
    /// Lip thickness, face units.
    pub mouth_height: f32,
    /// Ear size multiplier.
    pub ear_size: f32,
    /// How far the ears stick out (0 = flat … 1 = protruding).
    pub ear_protrusion: f32,
    /// Number of moles in use (the first `mole_count` entries of `moles`).
    pub mole_count: u8,
    /// Mole positions and sizes (unused entries are zero).
    pub moles: [Mole; MAX_MOLES],
    /// Freckle density (0 = none … 1 = many).
    pub freckles: f32,
    /// Wears glasses in every sample.
    pub glasses: bool,
    /// Glasses frame style (0 = thin round … 1 = thick square).
    pub glasses_style: f32,
    /// Has a beard.
    pub beard: bool,
    /// Beard style (0 = goatee … 1 = full beard).
    pub beard_style: f32,
    /// Seed of the identity's freckle pattern.
    pub freckle_seed: u64,
}

/// Documented ranges `(column name, min, max)` of every numeric identity parameter, inclusive.
pub const RANGES: &[(&str, f32, f32)] = &[
    ("head_width", 0.70, 0.88),
    ("head_height", 0.92, 1.06),
    ("jaw_width", 0.55, 0.95),
    ("skin_tone", 0.0, 1.0),
    ("skin_undertone", -1.0, 1.0),
    ("hair_style", 0.0, 5.0),
    ("hair_color", 0.0, 1.0),
    ("hairline", -0.62, -0.36),
    ("greying_rate", 0.2, 1.0),
    ("eye_spacing", 0.25, 0.37),
    ("eye_height", -0.12, 0.04),
    ("eye_size", 0.8, 1.25),
    ("iris_color", 0.0, 1.0),
    ("brow_slant", -1.0, 1.0),
    ("brow_arch", 0.0, 0.06),
    ("brow_thickness", 0.018, 0.05),
    ("nose_length", 0.18, 0.34),
    ("nose_width", 0.07, 0.14),
    ("mouth_width", 0.15, 0.29),
    ("mouth_height", 0.035, 0.08),
    ("ear_size", 0.8, 1.3),
    ("ear_protrusion", 0.0, 1.0),
    ("mole_count", 0.0, 3.0),
    ("mole0_x", -0.7, 0.7),
    ("mole0_y", -0.5, 0.8),
    ("mole0_radius", 0.0, 0.035),
    ("mole1_x", -0.7, 0.7),
    ("mole1_y", -0.5, 0.8),
    ("mole1_radius", 0.0, 0.035),
    ("mole2_x", -0.7, 0.7),
    ("mole2_y", -0.5, 0.8),
    ("mole2_radius", 0.0, 0.035),
    ("freckles", 0.0, 1.0),
    ("glasses", 0.0, 1.0),
    ("glasses_style", 0.0, 1.0),
    ("beard", 0.0, 1.0),
    ("beard_style", 0.0, 1.0),
];

/// Range of a named parameter from [`RANGES`].
pub fn range_of(name: &str) -> Option<(f32, f32)> {
    RANGES.iter().find(|(n, _, _)| *n == name).map(|&(_, lo, hi)| (lo, hi))
}

fn draw_in(rng: &mut KeyedRng, name: &str) -> f32 {
    let (lo, hi) = range_of(name).unwrap_or((0.0, 1.0));
    uniform(rng, lo, hi)
}

/// Probability that an identity wears glasses.
pub const P_GLASSES: f64 = 0.08;
/// Probability that an identity has a beard.
pub const P_BEARD: f64 = 0.12;
/// Probability that an identity has freckles.
pub const P_FRECKLES: f64 = 0.2;

impl IdentityParams {
    /// The identity `identity` of the world `world_seed`.
    pub fn draw(world_seed: u64, identity: u64) -> Self {
        let mut rng = KeyedRng::new(&[world_seed, identity]);
        Self::from_rng(&mut rng)
    }

    /// Draws an identity from any stream (the key decides the identity).
    pub fn from_rng(rng: &mut KeyedRng) -> Self {
        let r = rng;
        let head_width = draw_in(r, "head_width");
        let head_height = draw_in(r, "head_height");
        let jaw_width = draw_in(r, "jaw_width");
        let skin_tone = draw_in(r, "skin_tone");
        let skin_undertone = draw_in(r, "skin_undertone");
        let hair_style = HairStyle::ALL[weighted(r, &[0.07, 0.3, 0.2, 0.15, 0.12, 0.16])];
        // Hair colour: dark hair is the most common.
        let hair_color = {
            let u = r.uniform() as f32;
            (u * u).clamp(0.0, 1.0)
        };
        let hairline = draw_in(r, "hairline");
        let greying_rate = draw_in(r, "greying_rate");
        let eye_spacing = draw_in(r, "eye_spacing");
        let eye_height = draw_in(r, "eye_height");
        let eye_size = draw_in(r, "eye_size");
        let iris_color = draw_in(r, "iris_color");
        let brow_slant = draw_in(r, "brow_slant");
        let brow_arch = draw_in(r, "brow_arch");
        let brow_thickness = draw_in(r, "brow_thickness");
        let nose_length = draw_in(r, "nose_length");
        let nose_width = draw_in(r, "nose_width");
        let mouth_width = draw_in(r, "mouth_width");
        let mouth_height = draw_in(r, "mouth_height");
        let ear_size = draw_in(r, "ear_size");
        let ear_protrusion = draw_in(r, "ear_protrusion");
        let mole_count = weighted(r, &[0.45, 0.3, 0.15, 0.1]) as u8;
        let mut moles = [Mole { x: 0.0, y: 0.0, radius: 0.0 }; MAX_MOLES];
        for m in moles.iter_mut().take(mole_count as usize) {
            // Somewhere on the face skin, away from the eyes' centre line.
            *m = Mole { x: symmetric(r, 0.6), y: uniform(r, -0.35, 0.75), radius: uniform(r, 0.018, 0.035) };
        }
        let freckles = if r.chance(P_FRECKLES) { uniform(r, 0.3, 1.0) } else { 0.0 };
        let glasses = r.chance(P_GLASSES);
        let glasses_style = draw_in(r, "glasses_style");
        let beard = r.chance(P_BEARD);
        let beard_style = draw_in(r, "beard_style");
        let freckle_seed = r.next_u64();
        Self {
            head_width,
            head_height,
            jaw_width,
            skin_tone,
            skin_undertone,
            hair_style,
            hair_color,
            hairline,
            greying_rate,
            eye_spacing,
            eye_height,
            eye_size,
            iris_color,
            brow_slant,
            brow_arch,
            brow_thickness,
            nose_length,
            nose_width,
            mouth_width,
            mouth_height,
            ear_size,
            ear_protrusion,
            mole_count,
            moles,
            freckles,
            glasses,
            glasses_style,
            beard,
            beard_style,
            freckle_seed,
        }
    }

    /// `(name, value)` pairs of every parameter, in [`RANGES`] order, for use as table columns.
    pub fn columns(&self) -> Vec<(&'static str, f32)> {
        let mut c = vec![
            ("head_width", self.head_width),
            ("head_height", self.head_height),
            ("jaw_width", self.jaw_width),
            ("skin_tone", self.skin_tone),
            ("skin_undertone", self.skin_undertone),
            ("hair_style", self.hair_style as u8 as f32),
            ("hair_color", self.hair_color),
            ("hairline", self.hairline),
            ("greying_rate", self.greying_rate),
            ("eye_spacing", self.eye_spacing),
            ("eye_height", self.eye_height),
            ("eye_size", self.eye_size),
            ("iris_color", self.iris_color),
            ("brow_slant", self.brow_slant),
            ("brow_arch", self.brow_arch),
            ("brow_thickness", self.brow_thickness),
            ("nose_length", self.nose_length),
            ("nose_width", self.nose_width),
            ("mouth_width", self.mouth_width),
            ("mouth_height", self.mouth_height),
            ("ear_size", self.ear_size),
            ("ear_protrusion", self.ear_protrusion),
            ("mole_count", self.mole_count as f32),
        ];
        const MOLE_NAMES: [[&str; 3]; MAX_MOLES] =
            [["mole0_x", "mole0_y", "mole0_radius"], ["mole1_x", "mole1_y", "mole1_radius"], ["mole2_x", "mole2_y", "mole2_radius"]];
        for (m, names) in self.moles.iter().zip(MOLE_NAMES) {
            c.push((names[0], m.x));
            c.push((names[1], m.y));
            c.push((names[2], m.radius));
        }
        c.extend([
            ("freckles", self.freckles),
            ("glasses", f32::from(u8::from(self.glasses))),
            ("glasses_style", self.glasses_style),
            ("beard", f32::from(u8::from(self.beard))),
            ("beard_style", self.beard_style),
        ]);
        c
    }

    /// A look-alike impostor: every continuous trait moved by at most `strength` × 15 % of its
    /// range (clamped to the range), moles jittered, and the discrete traits (hair style,
    /// glasses, beard, freckles on/off) kept. `strength` 0 returns a copy; 1 gives a sibling-like
    /// face that still differs in every measurement.
    pub fn lookalike(&self, rng: &mut KeyedRng, strength: f32) -> Self {
        let s = strength.clamp(0.0, 1.0) * 0.15;
        let mut o = self.clone();
        let nudge = |v: &mut f32, name: &str, rng: &mut KeyedRng| {
            if let Some((lo, hi)) = range_of(name) {
                // At least a third of the maximum step, in a random direction, so a look-alike
                // never coincides with its original.
                let mag = uniform(rng, s / 3.0, s) * (hi - lo);
                let sign = if rng.chance(0.5) { 1.0 } else { -1.0 };
                let mut nv = *v + sign * mag;
                if nv < lo || nv > hi {
                    nv = *v - sign * mag;
                }
                *v = nv.clamp(lo, hi);
            }
        };
        nudge(&mut o.head_width, "head_width", rng);
        nudge(&mut o.head_height, "head_height", rng);
        nudge(&mut o.jaw_width, "jaw_width", rng);
        nudge(&mut o.skin_tone, "skin_tone", rng);
        nudge(&mut o.skin_undertone, "skin_undertone", rng);
        nudge(&mut o.hair_color, "hair_color", rng);
        nudge(&mut o.hairline, "hairline", rng);
        nudge(&mut o.greying_rate, "greying_rate", rng);
        nudge(&mut o.eye_spacing, "eye_spacing", rng);
        nudge(&mut o.eye_height, "eye_height", rng);
        nudge(&mut o.eye_size, "eye_size", rng);
        nudge(&mut o.iris_color, "iris_color", rng);
        nudge(&mut o.brow_slant, "brow_slant", rng);
        nudge(&mut o.brow_arch, "brow_arch", rng);
        nudge(&mut o.brow_thickness, "brow_thickness", rng);
        nudge(&mut o.nose_length, "nose_length", rng);
        nudge(&mut o.nose_width, "nose_width", rng);
        nudge(&mut o.mouth_width, "mouth_width", rng);
        nudge(&mut o.mouth_height, "mouth_height", rng);
        nudge(&mut o.ear_size, "ear_size", rng);
        nudge(&mut o.ear_protrusion, "ear_protrusion", rng);
        nudge(&mut o.glasses_style, "glasses_style", rng);
        nudge(&mut o.beard_style, "beard_style", rng);
        if o.freckles > 0.0 {
            nudge(&mut o.freckles, "freckles", rng);
            o.freckles = o.freckles.max(0.3);
        }
        for m in o.moles.iter_mut().take(o.mole_count as usize) {
            m.x = (m.x + symmetric(rng, s)).clamp(-0.7, 0.7);
            m.y = (m.y + symmetric(rng, s)).clamp(-0.5, 0.8);
        }
        o.freckle_seed = rng.next_u64();
        o
    }
}
