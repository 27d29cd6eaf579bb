//! The reference fixtures: golden files of the official implementations, kept in the repository
//! at `tests/fixtures/reference` (provenance in its `README.md`).

use std::path::{Path, PathBuf};

/// The fixture folder, relative to the workspace root.
pub const REFERENCE: &str = "tests/fixtures/reference";

/// The workspace root: the folder above this crate's manifest.
///
/// `cargo test` also sets `CARGO_MANIFEST_DIR` at run time, to the package under test (a member
/// of this workspace). When that folder is not inside the compile-time root, the test binary was
/// built from a checkout at another path and reused through a shared target folder; the root is
/// then the nearest folder above the running package that holds this crate (`testkit/`), so the
/// tests read their own checkout's files.
pub fn workspace_root() -> PathBuf {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the testkit crate lives in a folder of the workspace").to_path_buf();
    match std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from) {
        Some(running) if !running.starts_with(&built) => {
            running.ancestors().find(|dir| dir.join("testkit/Cargo.toml").is_file()).map(Path::to_path_buf).unwrap_or(built)
        }
        _ => built,
    }
}

/// The reference fixture folder, `<workspace root>/tests/fixtures/reference`.
///
/// # Panics
///
/// When the folder (or its `README.md`) is missing: the fixture tests fail, they never skip.
pub fn reference_dir() -> PathBuf {
    let dir = workspace_root().join(REFERENCE);
    assert!(
        dir.join("README.md").is_file(),
        "the reference fixtures are missing: {} has no README.md (they are part of the repository at {REFERENCE}; \
         restore them with `git checkout -- {REFERENCE}`)",
        dir.display()
    );
    dir
}

/// Path of one reference fixture file.
///
/// # Panics
///
/// When the folder or the file is missing.
pub fn reference(name: &str) -> PathBuf {
    let path = reference_dir().join(name);
    assert!(path.is_file(), "reference fixture {} is missing (the fixtures live in the repository at {REFERENCE})", path.display());
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixtures_are_found_in_this_checkout() {
        // run by cargo, CARGO_MANIFEST_DIR is this crate's folder in the checkout under test
        let here = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"));
        assert_eq!(reference_dir(), here.parent().unwrap().join(REFERENCE));
        assert!(reference("README.md").is_file());
    }

    #[test]
    #[should_panic(expected = "is missing")]
    fn a_missing_fixture_is_an_error() {
        reference("no-such-fixture.bin");
    }
}
