# Shared environment for weir's scripts. Sourced, not run.
# Tests and the demo use the dev profile (dependencies optimized, see
# Cargo.toml); benchmarks use release. Builds are cached under ~/.cache/weir so a fresh clone on the same machine
# (CI) does not rebuild wasmtime from scratch.
set -euo pipefail
WEIR_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export WEIR_ROOT
export WEIR_CACHE="${WEIR_CACHE:-$HOME/.cache/weir}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$WEIR_CACHE/target}"
export WEIR_CACHE_DIR="${WEIR_CACHE_DIR:-$WEIR_CACHE}"
# A copy per checkout: `$CARGO_TARGET_DIR/debug/weir` is shared by every
# checkout that builds into the same cache, so another checkout's build can
# replace it in the middle of this one's tests.
export WEIR_BIN="$WEIR_ROOT/target/bin/weir"
WEIR_TOOLCHAIN="1.95.0"
export RUSTUP_TOOLCHAIN="$WEIR_TOOLCHAIN"
if [ -d "$HOME/.cargo/bin" ]; then export PATH="$HOME/.cargo/bin:$PATH"; fi
# Go (for building MinIO, the S3 server of the tests) where its installer
# puts it, in case the shell that runs us did not read a profile.
if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then export PATH="/usr/local/go/bin:$PATH"; fi
step() { printf '\n== %s\n' "$*" >&2; }
