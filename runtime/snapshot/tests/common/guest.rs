//! Building Rust guest components for the tests.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The cargo target directory the tests run from (`<target>/debug/deps/x`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

/// Runs `cargo build --release --target wasm32-wasip2` with `args` and its
/// own target directory `<target>/<subdir>`, returning that directory.
pub fn cargo_build_wasip2(cwd: &Path, subdir: &str, args: &[&str]) -> PathBuf {
    let target = target_dir().join(subdir);
    let status = Command::new(env!("CARGO"))
        .current_dir(cwd)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .args(args)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .expect("run cargo");
    assert!(
        status.success(),
        "cargo build for wasm32-wasip2 failed in {cwd:?}"
    );
    target.join("wasm32-wasip2/release")
}

/// The test guest of `tests/guest`, built once per test binary.
pub fn test_guest() -> &'static [u8] {
    static WASM: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    WASM.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guest");
        let out = cargo_build_wasip2(&dir, "guest", &[]);
        std::fs::read(out.join("weir_snapshot_test_guest.wasm")).unwrap()
    })
}
