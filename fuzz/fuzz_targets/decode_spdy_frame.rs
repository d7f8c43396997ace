#![no_main]
//! SPDY/3.1 frames with their zlib header blocks: never panic, whatever the bytes.
use bytes::BytesMut;
use kubeedge_proto::spdy::SpdyCodec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut codec = SpdyCodec::new(1 << 16);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = codec.decode(&mut buf) {}
});
