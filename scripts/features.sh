#!/usr/bin/env bash
# Build each documented feature set of the library crates (kubeedge-edge's module features,
# kubeedge-cloud with and without profiling, cloudcore without the embedded cluster or without etcd, the API server with and without etcd), with clippy so that code behind a feature that is
# off stays warning-free too; kubeedge-mesh with each catalog feed and the tunnel.
set -euo pipefail
cd "$(dirname "$0")/.."
for features in hub meta "hub,meta" metaserver edged eventbus stream; do
  echo "== kubeedge-edge --no-default-features --features $features"
  cargo clippy --locked -q -p kubeedge-edge --no-default-features --features "$features" -- -D warnings
done
echo "== kubeedge-cloud without and with profiling"
cargo clippy --locked -q -p kubeedge-cloud -- -D warnings
cargo clippy --locked -q -p kubeedge-cloud --features profiling -- -D warnings
echo "== cloudcore --no-default-features (external mode only)"
cargo clippy --locked -q -p cloudcore --no-default-features -- -D warnings
echo "== cloudcore --no-default-features --features embedded (SQLite only, no etcd client)"
cargo clippy --locked -q -p cloudcore --no-default-features --features embedded -- -D warnings
echo "== kubeedge-apiserver (SQLite only) and --features etcd"
cargo clippy --locked -q -p kubeedge-apiserver -- -D warnings
cargo clippy --locked -q -p kubeedge-apiserver --features etcd -- -D warnings
echo "== kubeedge-mesh: kube watchers and the tunnel (default), the in-process store feed, none (edgecore builds store + tunnel; test.sh builds quic)"
cargo clippy --locked -q -p kubeedge-mesh -- -D warnings
cargo clippy --locked -q -p kubeedge-mesh --no-default-features --features store -- -D warnings
cargo clippy --locked -q -p kubeedge-mesh --no-default-features -- -D warnings
