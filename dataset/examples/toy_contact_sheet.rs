//! Writes a contact sheet of the toy-faces world: 8 identities × 8 samples, plus one row showing
//! one identity drifting from age 0 to age 1 (same nuisances, frontal).
//!
//! `cargo run -p idflow-dataset --release --example toy_contact_sheet -- [OUT.png] [SIZE]`

use idflow_dataset::toy::{self, Difficulty, IdentityParams, NuisanceParams};
use image::RgbImage;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args.next().unwrap_or_else(|| "docs/img/toy_faces_contact_sheet.png".to_string());
    let size: u32 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(64);
    let world = 7;
    let gap = 2;
    let (cols, rows) = (8u32, 9u32);
    let mut sheet = RgbImage::from_pixel(cols * (size + gap) + gap, rows * (size + gap) + gap, image::Rgb([255, 255, 255]));
    let d = Difficulty::default();
    let put = |sheet: &mut RgbImage, img: &RgbImage, r: u32, c: u32| {
        image::imageops::replace(sheet, img, (gap + c * (size + gap)) as i64, (gap + r * (size + gap)) as i64);
    };
    for r in 0..8u32 {
        for c in 0..cols {
            let img = toy::render(world, r as u64, c as u64, 0.2, size, &d)?;
            put(&mut sheet, &img, r, c);
        }
    }
    // Age drift row: identity 0, a calm sample, ages 0 … 1.
    let id = IdentityParams::draw(world, 0);
    let calm = NuisanceParams::draw(world, 0, 0, &Difficulty::none());
    for c in 0..cols {
        let age = c as f32 / (cols - 1) as f32;
        let img = toy::render_params(&id, &calm, age, size)?;
        put(&mut sheet, &img, 8, c);
    }
    if let Some(dir) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(dir)?;
    }
    sheet.save(&out)?;
    println!("wrote {out}");
    Ok(())
}
