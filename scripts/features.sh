#!/usr/bin/env bash
# Build each documented feature set of the library crates (kubeedge-edge's module features,
# cloudcore without the embedded cluster), with clippy so that code behind a feature that is
# off stays warning-free too.
set -euo pipefail
cd "$(dirname "$0")/.."
for features in hub meta "hub,meta" metaserver edged eventbus stream; do
  echo "== kubeedge-edge --no-default-features --features $features"
  cargo clippy --locked -q -p kubeedge-edge --no-default-features --features "$features" -- -D warnings
done
echo "== cloudcore --no-default-features (external mode only)"
cargo clippy --locked -q -p cloudcore --no-default-features -- -D warnings
