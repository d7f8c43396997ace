#![no_main]
//! The embedded MQTT broker's packet decoding and session handling: up to four clients (the
//! input split at each `0xF0 0xF0`) send arbitrary bytes to one broker at once over in-memory
//! streams; no session panics or hangs, and a well-formed client afterwards still connects,
//! subscribes and gets its own publish.
use kubeedge_edge::fuzzing::{broker_sessions, split_clients};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = broker_sessions(&split_clients(data)) {
        panic!("the broker stopped serving: {e}");
    }
});
