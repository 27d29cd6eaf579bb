//! The toy-faces world: procedural faces with identity and nuisance parameters.
//!
//! A *world* is a `u64` seed. In it, identity `i` has fixed traits ([`IdentityParams`], drawn
//! from the key `(world_seed, i)`), and each sample `s` of that identity adds nuisances
//! ([`NuisanceParams`], key `(world_seed, i, s)`) scaled by [`Difficulty`] knobs. An `age` in
//! 0…1 greys the hair, adds wrinkles and drifts the face shape. [`render`] paints the result
//! with an anti-aliased signed-distance rasteriser; the same (world, identity, sample, age,
//! size, difficulty) always gives the same bytes, on every machine: per-pixel work uses only
//! IEEE-exact operations and every transcendental function comes from `libm`.
//!
//! [`benchmarks`] builds the five verification sets shaped like LFW, CFP-FP, CPLFW, AgeDB and
//! CALFW. See `docs/toy-faces.md` for the parameter ranges and knobs.

pub mod benchmarks;
mod draw;
pub mod face;
pub mod identity;
pub mod nuisance;
pub mod palette;
pub mod post;
pub mod raster;

use image::RgbImage;

pub use identity::{HairStyle, IdentityParams, Mole};
pub use nuisance::{sample_age, Difficulty, NuisanceParams};

/// Default image side, pixels.
pub const DEFAULT_SIZE: u32 = 64;

/// Errors of the toy world.
#[derive(Debug, thiserror::Error)]
pub enum ToyError {
    /// An image side of 0 or above the supported maximum.
    #[error("image size {0} is out of range (1..=4096)")]
    BadSize(u32),
    /// PNG encoding failed.
    #[error("PNG encoding failed: {0}")]
    Png(String),
    /// Writing a benchmark file failed.
    #[error(transparent)]
    Format(#[from] crate::formats::FormatError),
    /// Creating the output directory failed.
    #[error("{path}: {source}")]
    Io {
        /// Directory that could not be created.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn check_size(size: u32) -> Result<(), ToyError> {
    if size == 0 || size > 4096 {
        return Err(ToyError::BadSize(size));
    }
    Ok(())
}

/// Renders explicit parameters (used for look-alikes and benchmark-controlled nuisances).
pub fn render_params(id: &IdentityParams, n: &NuisanceParams, age: f32, size: u32) -> Result<RgbImage, ToyError> {
    check_size(size)?;
    let mut canvas = raster::Canvas::new(size as usize, [0.0; 3]);
    post::background(&mut canvas, n);
    face::draw_face(&mut canvas, id, n, age);
    face::draw_occluder(&mut canvas, n);
    post::lighting(&mut canvas, n);
    post::blur(&mut canvas, n.blur_sigma * size as f32 / DEFAULT_SIZE as f32);
    post::noise(&mut canvas, n.noise_sigma, n.pixel_seed);
    post::jpeg_like(&mut canvas, n.jpeg_step);
    let bytes = post::to_rgb8(&canvas);
    RgbImage::from_raw(size, size, bytes).ok_or(ToyError::BadSize(size))
}

/// Renders sample `sample` of `identity` in world `world_seed` at `age` (0…1), `size`×`size`.
pub fn render(world_seed: u64, identity: u64, sample: u64, age: f32, size: u32, difficulty: &Difficulty) -> Result<RgbImage, ToyError> {
    let id = IdentityParams::draw(world_seed, identity);
    let n = NuisanceParams::draw(world_seed, identity, sample, difficulty);
    render_params(&id, &n, age, size)
}

/// Encodes an image as PNG bytes.
pub fn encode_png(image: &RgbImage) -> Result<Vec<u8>, ToyError> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(image.as_raw(), image.width(), image.height(), image::ExtendedColorType::Rgb8)
        .map_err(|e| ToyError::Png(e.to_string()))?;
    Ok(out)
}

/// [`render`] encoded as PNG bytes.
pub fn render_png(world_seed: u64, identity: u64, sample: u64, age: f32, size: u32, difficulty: &Difficulty) -> Result<Vec<u8>, ToyError> {
    encode_png(&render(world_seed, identity, sample, age, size, difficulty)?)
}

use image::ImageEncoder as _;
