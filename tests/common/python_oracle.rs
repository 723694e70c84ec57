//! Runs the Python reference scripts in `tests/oracle/` (OpenCV DNN, ONNX
//! Runtime) and exchanges tensors with them as raw little-endian f32 files.
//!
//! The interpreter is `$EDGEDET_TEST_PYTHON`, or `.venv/bin/python` in the
//! repository when that variable is unset; `tests/run.sh` creates that venv
//! and sets the variable. A missing interpreter or module fails the test, and
//! the message explains how to install it. These oracles are never skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Environment variable naming the Python interpreter with the oracle modules.
pub const PYTHON_VARIABLE: &str = "EDGEDET_TEST_PYTHON";

/// Finds the Python interpreter and checks that it can import `modules`.
///
/// # Panics
/// When the interpreter does not exist or an import fails, with the fix in the message.
pub fn python_with(modules: &[&str]) -> PathBuf {
    let python = match std::env::var_os(PYTHON_VARIABLE) {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
    };
    assert!(
        python.exists(),
        "Python interpreter {} not found: run `bash tests/run.sh`, which creates the venv with OpenCV, \
         ONNX Runtime and numpy, or set {PYTHON_VARIABLE} to a python that has them",
        python.display()
    );

    let imports = format!("import {}", modules.join(", "));
    let output = Command::new(&python)
        .args(["-c", &imports])
        .output()
        .unwrap_or_else(|error| panic!("failed to start {}: {error}", python.display()));
    assert!(
        output.status.success(),
        "{} cannot run `{imports}`: run `bash tests/run.sh` to install the test venv, \
         or set {PYTHON_VARIABLE} to a python that has these modules\n{}",
        python.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    python
}

/// Runs `tests/oracle/<script>` with `args` and parses the JSON object it prints on stdout.
///
/// # Panics
/// When the script fails or prints something other than JSON. The message includes its stderr.
pub fn run_script(python: &Path, script: &str, args: &[&std::ffi::OsStr]) -> serde_json::Value {
    let script_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle").join(script);
    let output = Command::new(python)
        .arg(&script_path)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("failed to start {} {}: {error}", python.display(), script_path.display()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{script} failed with {}:\n{stderr}", output.status);

    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "{script} printed invalid JSON ({error}):\n{}\nstderr:\n{stderr}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

pub fn write_f32_le(path: &Path, values: &[f32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|value| value.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap_or_else(|error| panic!("failed to write {}: {error}", path.display()));
}

pub fn read_f32_le(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|error| panic!("failed to read {}: {error}", path.display()));
    assert_eq!(bytes.len() % 4, 0, "{} holds {} bytes, not a whole number of f32 values", path.display(), bytes.len());
    bytes.chunks_exact(4).map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]])).collect()
}
