#![no_main]
//! Resource strings: format(parse(s)) == s for every string, and the views never panic.
use kubeedge_proto::ResourcePath;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    let p = ResourcePath::parse(s);
    assert_eq!(p.to_string(), s);
    assert_eq!(ResourcePath::parse(&p.to_string()), p);
    let _ = p.target_node();
    let edge = p.to_edge_view();
    if let Ok(cloud) = edge.to_cloud_view("n") {
        assert_eq!(cloud.node(), Some("n"));
    }
});
