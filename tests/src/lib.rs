//! The end-to-end tests live in `tests/`: `keadm init` (cloudcore with the embedded control
//! plane), `keadm join` (edgecore on the host's Docker engine), the stock `kubectl`, all as a
//! user runs them, through `kubeedge_bench::cluster`. Run them with
//! `cargo test --workspace` (which builds the binaries they start) or, once built,
//! `cargo test -p kubeedge-integration`.
