#![no_main]
//! MQTT topics: format(parse(s)) == s whenever s is a valid topic name.
use kubeedge_proto::Topic;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    if let Ok(t) = Topic::parse(s) {
        assert_eq!(t.to_string(), s);
        assert_eq!(Topic::from_bus_resource(&t.to_bus_resource()), Some(t.clone()));
        let _ = t.result_topic();
    }
    let _ = Topic::from_bus_resource(s);
});
