//! PyTorch ImageFolder trees (`root/<identity>/<sample>.{png,jpg}`) and image-list files
//! (`path\tlabel` per line).
//!
//! Listing is deterministic: identity folders sorted by name (byte order, as torchvision's
//! `sorted(os.scandir)`), files sorted by name within each. An identity's index is its position
//! among all identity folders, as ImageFolder's `class_to_idx`.

use std::path::{Path, PathBuf};

use super::atomic::{write_file_atomic, write_file_atomic_nosync};
use super::FormatError;

/// One image found in a folder tree: (identity index, identity name, path).
pub type FolderImage = (usize, String, PathBuf);

fn sorted_entries(dir: &Path, want_dirs: bool) -> Result<Vec<(String, PathBuf)>, FormatError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| FormatError::io(dir, e))? {
        let e = e.map_err(|e| FormatError::io(dir, e))?;
        let path = e.path();
        // follow symlinks like torchvision does
        let is_dir = path.is_dir();
        if is_dir != want_dirs || (!is_dir && !path.is_file()) {
            continue;
        }
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            return Err(FormatError::invalid(&path, "file name is not valid UTF-8"));
        };
        if name.starts_with('.') {
            continue;
        }
        out.push((name, path));
    }
    out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(out)
}

/// Lists `root/<identity>/<file>` images whose extension (case-insensitive, without dot) is in
/// `extensions`, taking at most `limit_identities` identity folders and `limit_per_identity`
/// images from each.
pub fn list_image_folder(
    root: &Path,
    extensions: &[&str],
    limit_identities: Option<usize>,
    limit_per_identity: Option<usize>,
) -> Result<Vec<FolderImage>, FormatError> {
    let identities = sorted_entries(root, true)?;
    let mut out = Vec::new();
    for (index, (name, dir)) in identities.into_iter().enumerate().take(limit_identities.unwrap_or(usize::MAX)) {
        let files = sorted_entries(&dir, false)?;
        let images = files.into_iter().filter(|(f, _)| {
            Path::new(f).extension().and_then(|e| e.to_str()).is_some_and(|e| extensions.iter().any(|x| x.eq_ignore_ascii_case(e)))
        });
        for (_, path) in images.take(limit_per_identity.unwrap_or(usize::MAX)) {
            out.push((index, name.clone(), path));
        }
    }
    Ok(out)
}

fn check_component(root: &Path, what: &str, s: &str) -> Result<(), FormatError> {
    if s.is_empty() || s == "." || s == ".." || s.contains(['/', '\\', '\0', '\t', '\n']) {
        return Err(FormatError::invalid(root, format!("{what} name {s:?} is not a plain file name")));
    }
    Ok(())
}

/// Writes one image to `root/<identity>/<sample>.<ext>` atomically (without `fsync`, which
/// would dominate for hundreds of thousands of small files); returns its path.
pub fn write_image(root: &Path, identity: &str, sample: &str, ext: &str, bytes: &[u8]) -> Result<PathBuf, FormatError> {
    check_component(root, "identity", identity)?;
    check_component(root, "sample", sample)?;
    check_component(root, "extension", ext)?;
    let dir = root.join(identity);
    std::fs::create_dir_all(&dir).map_err(|e| FormatError::io(&dir, e))?;
    let path = dir.join(format!("{sample}.{ext}"));
    write_file_atomic_nosync(&path, bytes)?;
    Ok(path)
}

/// Writes an image list (`path\tlabel` lines) atomically. Paths are written as given.
pub fn write_image_list(path: &Path, entries: &[(PathBuf, usize)]) -> Result<(), FormatError> {
    let mut text = String::new();
    for (p, label) in entries {
        let s = p.to_str().ok_or_else(|| FormatError::invalid(path, format!("image path {} is not UTF-8", p.display())))?;
        if s.contains(['\t', '\n']) {
            return Err(FormatError::invalid(path, format!("image path {s:?} contains a tab or newline")));
        }
        text.push_str(&format!("{s}\t{label}\n"));
    }
    write_file_atomic(path, text.as_bytes())
}

/// Reads an image list; relative paths are resolved against the list file's folder.
pub fn read_image_list(path: &Path) -> Result<Vec<(PathBuf, usize)>, FormatError> {
    let text = std::fs::read_to_string(path).map_err(|e| FormatError::io(path, e))?;
    let base = path.parent().unwrap_or(Path::new(""));
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let (p, label) = line
            .rsplit_once('\t')
            .ok_or_else(|| FormatError::invalid(path, format!("line {}: expected 'path<TAB>label', got {line:?}", i + 1)))?;
        let label: usize =
            label.trim().parse().map_err(|_| FormatError::invalid(path, format!("line {}: label {label:?} is not a number", i + 1)))?;
        let p = Path::new(p);
        out.push((if p.is_absolute() { p.to_path_buf() } else { base.join(p) }, label));
    }
    Ok(out)
}
