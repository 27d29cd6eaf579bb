//! The layering of the code: no two source files import each other in a loop (checked by
//! `tests/py/import_cycles.py` over the `idflow` and `idflow-models` crates).

use std::process::Command;

#[test]
fn no_source_files_import_each_other_in_a_loop() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("python3").arg("tests/py/import_cycles.py").current_dir(root).output().expect("python3 must run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "import cycles found:\n{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("idflow import cycles: 0") && text.contains("models import cycles: 0"), "unexpected report:\n{text}");
}
