#![no_main]
//! Stream-tunnel frames: never panic; decoded frames re-encode and decode to themselves.
use kubeedge_proto::{StreamConnect, TunnelFrame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = TunnelFrame::decode(data) {
        let again = TunnelFrame::decode(&frame.encode()).expect("our encoding decodes");
        assert_eq!(again, frame);
        if let Ok(c) = StreamConnect::decode(&frame.data) {
            let _ = c.url.to_url_string();
            assert_eq!(StreamConnect::decode(&c.encode()).expect("re-decodes"), c);
        }
    }
});
