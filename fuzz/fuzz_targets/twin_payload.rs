#![no_main]
//! Device-twin payloads (as MQTT payloads and as string content): never panic; whatever
//! decodes re-encodes to JSON that decodes to the same value.
use kubeedge_proto::twin::{
    DeviceAttrUpdate, DeviceStateResult, DeviceStateUpdate, MembershipDetailRequest,
    MembershipGetResult, MembershipUpdate, TwinDelta, TwinDocument, TwinUpdate,
};
use kubeedge_proto::Content;
use libfuzzer_sys::fuzz_target;

fn check<T>(data: &[u8])
where
    T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    if let Ok(v) = serde_json::from_slice::<T>(data) {
        let bytes = serde_json::to_vec(&v).expect("encodes");
        let back: T = serde_json::from_slice(&bytes).expect("re-decodes");
        assert_eq!(back, v);
    }
}

fuzz_target!(|data: &[u8]| {
    check::<TwinUpdate>(data);
    check::<TwinDelta>(data);
    check::<TwinDocument>(data);
    check::<DeviceStateUpdate>(data);
    check::<DeviceStateResult>(data);
    check::<DeviceAttrUpdate>(data);
    check::<MembershipUpdate>(data);
    check::<MembershipGetResult>(data);
    check::<MembershipDetailRequest>(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = Content::string(s).decode::<TwinUpdate>();
    }
});
