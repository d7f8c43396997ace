//! Lays out edgecore's machine code in the order an edge node runs it.
//!
//! `text-order.txt` lists the functions that start-up and an idle, joined edgecore execute (then
//! those that pods, ConfigMaps and MetaServer reads execute), as recorded under callgrind by
//! `scripts/edge-text-order.sh`. LLD places them first and together, so the pages of the binary
//! an idle edge keeps resident are few and contiguous instead of spread over the whole `.text`.
//! Symbols the list names that a build no longer has are skipped, and functions it does not name
//! follow in the usual order: a stale list costs memory, never correctness.
//!
//! Applied to release builds for `x86_64-unknown-linux-gnu` with rustc 1.90 or later, whose
//! default linker is LLD (GNU ld has no `--symbol-ordering-file`), unless RUSTFLAGS choose a
//! linker or `EDGECORE_TEXT_ORDER=0` is set.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=text-order.txt");
    println!("cargo:rerun-if-env-changed=EDGECORE_TEXT_ORDER");
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let lld_by_default = env("TARGET") == "x86_64-unknown-linux-gnu" && rustc_minor() >= 90;
    let linker_chosen = env("CARGO_ENCODED_RUSTFLAGS").contains("linker");
    if env("PROFILE") != "release"
        || !lld_by_default
        || linker_chosen
        || env("EDGECORE_TEXT_ORDER") == "0"
    {
        return;
    }
    let list = format!("{}/text-order.txt", env("CARGO_MANIFEST_DIR"));
    println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={list}");
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
}

/// The minor version of the rustc that builds this crate (`rustc 1.95.0 (…)` gives 95), 0 when
/// it cannot be told.
fn rustc_minor() -> u32 {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let version = text.split_whitespace().nth(1)?.to_owned();
            version.split('.').nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}
