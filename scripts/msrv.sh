#!/usr/bin/env bash
# Check the workspace's libraries and binaries on the minimum supported Rust version declared
# in Cargo.toml (`rust-version`), installing that toolchain when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
msrv="$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
rustup toolchain list | grep -q "^$msrv" || rustup toolchain install "$msrv" --profile minimal
echo "== cargo +$msrv check (MSRV)"
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/msrv" cargo "+$msrv" check --workspace --locked --lib --bins -q
