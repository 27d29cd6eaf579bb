//! Named model configurations: the presets a pipeline names in a model reference's `config`
//! (`config: reference-tiny`, `config: iresnet50`, …) and the small models the tests, examples
//! and reference fixtures are built from.
//!
//! The lookups ([`unet`], [`vq`], [`iresnet`]) return `None` for a name that is not a preset,
//! so the caller can treat it as a file path instead.

use crate::iresnet::IResNetConfig;
use crate::unet::UNetConfig;
use crate::vq::VqConfig;

/// The UNet of the reference fixtures (IDiff-Face's CA model shrunk: 32 channels,
/// multipliers `[1,1,2,1]`, context channels 32; 3.1 M parameters).
pub fn reference_tiny_unet() -> UNetConfig {
    UNetConfig { initial_channels: 32, channel_multipliers: vec![1, 1, 2, 1], context_channels: 32, ..UNetConfig::idiff_face_ca() }
}

/// A toy conditional UNet for training tests and benchmarks: two levels (`[1, 1]`, attention on
/// the second), one block per level, 16 context input channels.
pub fn toy_unet() -> UNetConfig {
    UNetConfig {
        channel_multipliers: vec![1, 1],
        is_attention: vec![false, true],
        n_blocks_per_resolution: 1,
        context_input_channels: 16,
        ..reference_tiny_unet()
    }
}

/// The first stage of the reference fixtures (`ch 32, ch_mult [1,2,2]`, 64 codewords).
pub fn reference_tiny_vq() -> VqConfig {
    VqConfig { ch: 32, ch_mult: vec![1, 2, 2], resolution: 32, ..VqConfig::vq_f4() }
}

/// Names of the UNet presets ([`unet`]).
pub const UNET_NAMES: &[&str] = &["idiff-face-ca", "idiff-face-uncond", "reference-tiny"];

/// Names of the VQ first-stage presets ([`vq`]).
pub const VQ_NAMES: &[&str] = &["vq-f4", "reference-tiny"];

/// Names of the IResNet presets ([`iresnet`]).
pub const IRESNET_NAMES: &[&str] = &["iresnet18", "iresnet34", "iresnet50", "iresnet100", "iresnet200"];

/// The IResNet of the reference fixtures (`[1,1,1,1]` blocks, published widths, 112 px,
/// 16 features).
pub fn reference_tiny_iresnet() -> IResNetConfig {
    IResNetConfig { layers: [1, 1, 1, 1], num_features: 16, ..IResNetConfig::default() }
}

/// The UNet preset called `name`: `idiff-face-ca` (the published model), `idiff-face-uncond`
/// (the unconditional AdaGN model of the two-stage pipeline) or `reference-tiny`.
pub fn unet(name: &str) -> Option<UNetConfig> {
    match name {
        "idiff-face-ca" => Some(UNetConfig::idiff_face_ca()),
        "idiff-face-uncond" => Some(UNetConfig::idiff_face_uncond_adagn()),
        "reference-tiny" => Some(reference_tiny_unet()),
        _ => None,
    }
}

/// The VQ first-stage preset called `name`: `vq-f4` (IDiff-Face's) or `reference-tiny`.
pub fn vq(name: &str) -> Option<VqConfig> {
    match name {
        "vq-f4" => Some(VqConfig::vq_f4()),
        "reference-tiny" => Some(reference_tiny_vq()),
        _ => None,
    }
}

/// The IResNet preset called `name`: `iresnet<depth>` (512 features). `None` when `name` does
/// not have that form; `Some(Err(..))` for a depth other than 18, 34, 50, 100 or 200.
pub fn iresnet(name: &str) -> Option<Result<IResNetConfig, String>> {
    let depth: usize = name.strip_prefix("iresnet")?.parse().ok()?;
    Some(IResNetConfig::depth(depth).ok_or_else(|| format!("unknown IResNet depth {depth}; use 18, 34, 50, 100 or 200")))
}

/// The default IResNet (`iresnet50`).
pub fn default_iresnet() -> IResNetConfig {
    IResNetConfig::depth(50).expect("50 is a standard depth")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_to_presets() {
        assert_eq!(unet("reference-tiny"), Some(reference_tiny_unet()));
        assert_eq!(unet("idiff-face-ca"), Some(UNetConfig::idiff_face_ca()));
        assert!(unet("unet.json").is_none());
        assert_eq!(vq("reference-tiny"), Some(reference_tiny_vq()));
        assert!(vq("first_stage.json").is_none());
        assert_eq!(iresnet("iresnet18").map(|r| r.map(|c| c.num_features)), Some(Ok(512)));
        assert!(iresnet("iresnet7").is_some_and(|r| r.is_err()));
        assert!(iresnet("iresnet.json").is_none());
        // the listed names are exactly the presets
        assert!(UNET_NAMES.iter().all(|n| unet(n).is_some()));
        assert!(VQ_NAMES.iter().all(|n| vq(n).is_some()));
        assert!(IRESNET_NAMES.iter().all(|n| iresnet(n).is_some_and(|r| r.is_ok())));
    }
}
