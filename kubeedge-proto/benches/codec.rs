//! Decode + encode throughput of the hub frame codec on captured upstream frames.
//!
//! `cargo bench -p kubeedge-proto` prints messages/s on one core for the captured pod insert
//! (about 3 KB) and for a keepalive. Without `--bench` (as under `cargo test --all-targets`) it
//! runs a short smoke pass instead.

use std::hint::black_box;
use std::time::{Duration, Instant};

use kubeedge_proto::test_util::go_compact;
use kubeedge_proto::{FrameKind, HubCodec, ResourcePath};

fn captured_message(file: &str, index: usize) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/captures")
        .join(file);
    let text = std::fs::read_to_string(&path).expect("capture file");
    let raw: &serde_json::value::RawValue = {
        #[derive(serde::Deserialize)]
        struct Item<'a> {
            #[serde(borrow)]
            message: &'a serde_json::value::RawValue,
        }
        #[derive(serde::Deserialize)]
        struct Exchange<'a> {
            #[serde(borrow)]
            exchange: Option<Vec<Item<'a>>>,
            #[serde(borrow)]
            message: Option<&'a serde_json::value::RawValue>,
        }
        let e: Exchange<'_> = serde_json::from_str(&text).expect("capture");
        match (e.message, e.exchange) {
            (Some(m), _) => m,
            (None, Some(ex)) => ex[index].message,
            _ => panic!("no message in {file}"),
        }
    };
    format!("{}\n", go_compact(raw.get())).into_bytes()
}

fn run(name: &str, frame: &[u8], budget: Duration) {
    let codec = HubCodec::default();
    let mut out = Vec::with_capacity(frame.len() + 64);
    let round = |out: &mut Vec<u8>| {
        let msg = codec
            .decode(FrameKind::Text, black_box(frame))
            .expect("decode");
        // What a receiver does with every message: look at its resource.
        black_box(ResourcePath::parse(&msg.route.resource));
        out.clear();
        codec.encode_into(&msg, out).expect("encode");
        black_box(&out);
    };
    // Warm up.
    for _ in 0..1_000 {
        round(&mut out);
    }
    assert_eq!(out, frame, "{name}: re-encoding must be byte-exact");
    let start = Instant::now();
    let mut n: u64 = 0;
    while start.elapsed() < budget {
        for _ in 0..1_000 {
            round(&mut out);
        }
        n += 1_000;
    }
    let secs = start.elapsed().as_secs_f64();
    let rate = n as f64 / secs;
    println!(
        "{name:<28} {:>6} B  {:>10.0} msg/s  {:>8.1} MB/s  {:>6.2} us/msg (decode+encode, 1 core)",
        frame.len(),
        rate,
        rate * frame.len() as f64 / 1e6,
        1e6 / rate
    );
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let budget = if bench {
        Duration::from_secs(3)
    } else {
        Duration::from_millis(1)
    };
    let pod = captured_message("v1.22.2/08-pod-insert-downstream.json", 0);
    let keepalive = captured_message("v1.22.2/04-keepalive.json", 0);
    run("pod insert (v1.22.2)", &pod, budget);
    run("keepalive (v1.22.2)", &keepalive, budget);
}
