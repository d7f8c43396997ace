#!/usr/bin/env bash
# Run the whole test suite. On a fresh Debian machine it first installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_build_deps
ensure_rust
ensure_docker
ensure_containerd
ensure_device_test_deps
ensure_stream_test_deps
ensure_etcd
ensure_mesh_test_deps
cargo test --workspace --all-targets --locked
cargo test --workspace --doc --locked
# The tunnel over QUIC (kubeedge-mesh's `quic` feature, off in the workspace: it brings a second
# rustls provider).
cargo test -p kubeedge-mesh --features quic --test tunnel --locked
# The API server's whole suite again, on etcd (a cluster of its own per test).
KUBEEDGE_TEST_STORE=etcd cargo test -p kubeedge-apiserver --features etcd --tests --locked
