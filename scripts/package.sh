#!/usr/bin/env bash
# Package every library crate as it would go to crates.io, then build the examples OUTSIDE this
# workspace against those packages only: a file missing from a package, a path dependency
# without a version or a feature the examples need but a crate does not declare fails here.
set -euo pipefail
cd "$(dirname "$0")/.."
crates=(kubeedge-proto kubeedge-apiserver kubeedge-controlplane kubeedge-cloud kubeedge-edge kubeedge-device kubeedge-mesh)
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
target="${CARGO_TARGET_DIR:-$PWD/target}"
echo "== cargo package (${crates[*]})"
cargo package --offline --locked --allow-dirty --no-verify $(printf -- '-p %s ' "${crates[@]}") -q

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/crates" "$work/check"
for c in "${crates[@]}"; do
  tar -xzf "$target/package/$c-$version.crate" -C "$work/crates"
done

# The examples' own manifest, with every kubeedge crate from the packages.
{
  echo '[package]'
  echo 'name = "examples-from-packages"'
  echo 'version = "0.0.0"'
  echo 'edition = "2021"'
  echo 'publish = false'
  echo 'autoexamples = false'
  echo '[workspace]'
  echo '[dependencies]'
  # The dependencies of examples/Cargo.toml, with workspace inheritance resolved.
  cargo metadata --format-version 1 --no-deps --offline --locked |
    VERSION="$version" python3 -c '
import json, os, sys
m = json.load(sys.stdin)
pkg = next(p for p in m["packages"] if p["name"] == "kubeedge-examples")
for d in pkg["dependencies"]:
    if d["kind"] is not None:
        continue
    name = d["rename"] or d["name"]
    req = d["req"]
    if req == "*" and name.startswith("kubeedge-"):
        req = os.environ["VERSION"]
    feats = ", ".join(json.dumps(f) for f in d["features"])
    default = str(d["uses_default_features"]).lower()
    print("%s = { version = %s, default-features = %s, features = [%s] }" % (name, json.dumps(req), default, feats))
'
  echo '[patch.crates-io]'
  for c in "${crates[@]}"; do
    echo "$c = { path = \"$work/crates/$c-$version\" }"
  done
  for f in examples/*.rs; do
    n="$(basename "$f" .rs)"
    printf '[[example]]\nname = "%s"\npath = "%s"\n' "$n" "$PWD/$f"
  done
} >"$work/check/Cargo.toml"
mkdir -p "$work/check/src" && echo >"$work/check/src/lib.rs"
cp Cargo.lock "$work/check/Cargo.lock"

echo "== build the examples outside the workspace, from the packages"
CARGO_TARGET_DIR="$target" cargo build --offline --examples -q --manifest-path "$work/check/Cargo.toml"
echo "examples build from the packaged crates"
