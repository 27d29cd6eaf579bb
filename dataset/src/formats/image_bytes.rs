//! Encoded image bytes (JPEG, PNG) decoded only when they are complete.
//!
//! The `image` crate's JPEG decoder is lenient: a file cut in half decodes, the missing part
//! filled in. Pillow refuses the same file ("image file is truncated"), and a face dataset must
//! not train on half-grey faces, so [`decode_complete`] first checks the container structure:
//! a JPEG must reach its end-of-image marker (`FF D9`) past the last scan — bytes after it
//! (zero padding, trailing garbage) are tolerated as Pillow tolerates them — and a PNG must hold
//! every chunk it starts, up to its `IEND` chunk.

use image::{DynamicImage, ImageFormat};

/// Why encoded image bytes were refused.
#[derive(Debug, thiserror::Error)]
pub enum ImageBytesError {
    /// The file stops before its end: a JPEG without its end-of-image marker, a PNG without
    /// its `IEND` chunk or with a chunk cut short.
    #[error("image file is truncated: {0}")]
    Truncated(String),
    /// The container structure is broken before its end (e.g. no marker where one must be).
    #[error("not a decodable image: {0}")]
    Malformed(String),
    /// The bytes are not an image the decoder understands.
    #[error("not a decodable image: {0}")]
    Undecodable(#[from] image::ImageError),
}

/// Decodes `bytes` after checking that the JPEG or PNG inside is complete.
pub fn decode_complete(bytes: &[u8]) -> Result<DynamicImage, ImageBytesError> {
    check_complete(bytes)?;
    Ok(image::load_from_memory(bytes)?)
}

/// Checks that a JPEG or PNG is not truncated; other formats are left to the decoder.
pub fn check_complete(bytes: &[u8]) -> Result<(), ImageBytesError> {
    match image::guess_format(bytes) {
        Ok(ImageFormat::Jpeg) => check_jpeg(bytes),
        Ok(ImageFormat::Png) => check_png(bytes),
        _ => Ok(()),
    }
}

/// Walks a JPEG's marker segments and entropy-coded scans until the end-of-image marker.
fn check_jpeg(bytes: &[u8]) -> Result<(), ImageBytesError> {
    const EOI: u8 = 0xD9;
    const SOS: u8 = 0xDA;
    let truncated = |what: String| ImageBytesError::Truncated(format!("JPEG of {} bytes {what}", bytes.len()));
    let mut i = 2; // after SOI
    loop {
        // Fill bytes (0xFF runs) may precede a marker.
        while bytes.get(i) == Some(&0xFF) && bytes.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        let (Some(&first), Some(&marker)) = (bytes.get(i), bytes.get(i + 1)) else {
            return Err(truncated(format!("ends at byte {i} without its end-of-image marker (FF D9)")));
        };
        if first != 0xFF {
            return Err(ImageBytesError::Malformed(format!("JPEG has no marker at byte {i} (found {first:02X})")));
        }
        i += 2;
        match marker {
            EOI => return Ok(()),
            0x01 | 0xD0..=0xD7 => continue, // standalone markers without a length
            _ => {}
        }
        let len = match (bytes.get(i), bytes.get(i + 1)) {
            (Some(&hi), Some(&lo)) => u16::from_be_bytes([hi, lo]) as usize,
            _ => return Err(truncated(format!("ends inside the header of segment FF {marker:02X} at byte {}", i - 2))),
        };
        if i + len > bytes.len() {
            return Err(truncated(format!("ends inside segment FF {marker:02X} at byte {} ({len} bytes long)", i - 2)));
        }
        i += len;
        if marker == SOS {
            i = scan_end(bytes, i)
                .ok_or_else(|| truncated("ends inside its image data, without its end-of-image marker (FF D9)".into()))?;
        }
    }
}

/// The offset of the first marker after entropy-coded data starting at `start` (stuffed
/// `FF 00` bytes and restart markers belong to the data), or `None` when the data runs out.
fn scan_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    while i + 1 < bytes.len() {
        if bytes[i] == 0xFF && !matches!(bytes[i + 1], 0x00 | 0xFF | 0xD0..=0xD7) {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Walks a PNG's chunks: each must be whole, and the last must be `IEND`.
fn check_png(bytes: &[u8]) -> Result<(), ImageBytesError> {
    let truncated = |what: String| ImageBytesError::Truncated(format!("PNG of {} bytes {what}", bytes.len()));
    let mut i = 8; // after the signature
    loop {
        let Some(header) = bytes.get(i..i + 8) else {
            return Err(truncated(format!("ends at byte {i} without its IEND chunk")));
        };
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let kind = String::from_utf8_lossy(&header[4..8]).into_owned();
        let end = i.saturating_add(12).saturating_add(len);
        if end > bytes.len() {
            return Err(truncated(format!("ends inside chunk `{kind}` at byte {i} ({len} bytes of data)")));
        }
        if kind == "IEND" {
            return Ok(());
        }
        i = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(format: ImageFormat) -> Vec<u8> {
        let img = image::RgbImage::from_fn(24, 16, |x, y| image::Rgb([(x * 10) as u8, (y * 15) as u8, ((x + y) * 5) as u8]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    #[test]
    fn complete_images_decode() {
        for format in [ImageFormat::Jpeg, ImageFormat::Png] {
            let bytes = encoded(format);
            assert_eq!(decode_complete(&bytes).unwrap().width(), 24, "{format:?}");
        }
    }

    #[test]
    fn trailing_padding_after_the_end_is_tolerated() {
        for format in [ImageFormat::Jpeg, ImageFormat::Png] {
            let mut bytes = encoded(format);
            bytes.extend_from_slice(&[0, 0, 0, 0, 1, 2]);
            check_complete(&bytes).unwrap();
        }
    }

    #[test]
    fn every_truncation_is_refused() {
        for format in [ImageFormat::Jpeg, ImageFormat::Png] {
            let bytes = encoded(format);
            for cut in [bytes.len() / 2, bytes.len() - 1, 40] {
                let err = decode_complete(&bytes[..cut]).unwrap_err();
                assert!(matches!(err, ImageBytesError::Truncated(_)), "{format:?} cut at {cut}: {err}");
                assert!(err.to_string().starts_with("image file is truncated"), "{err}");
            }
        }
    }

    #[test]
    fn half_a_jpeg_is_refused_although_the_decoder_alone_accepts_it() {
        let img =
            image::RgbImage::from_fn(96, 96, |x, y| image::Rgb([((x * 7) ^ (y * 3)) as u8, (y * 5 + x) as u8, ((x * y) % 251) as u8]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Jpeg).unwrap();
        let bytes = out.into_inner();
        let half = &bytes[..bytes.len() / 2];
        // `image` 0.25 (zune-jpeg) decodes these bytes into a 96×96 image, the rest filled in.
        let err = decode_complete(half).unwrap_err();
        assert!(err.to_string().contains("ends inside its image data, without its end-of-image marker (FF D9)"), "{err}");
    }

    #[test]
    fn non_images_are_undecodable() {
        let err = decode_complete(b"hello").unwrap_err();
        assert!(err.to_string().starts_with("not a decodable image"), "{err}");
    }
}
