//! Property tests and fuzzing of your own code with kubeedge-proto's strategies. Here "your
//! code" is a small router that files each message a cloud could send by its group, and must
//! never panic, whatever arrives. `kubeedge_proto::test_util` (feature `test-util`) gives the
//! proptest strategies kubeedge-rs tests itself with; for cargo-fuzz, feed the raw bytes to
//! the same decoder the hub uses, as `fuzz_one` does (in `fuzz/fuzz_targets/my_router.rs`:
//! `fuzz_target!(|data: &[u8]| my_crate::fuzz_one(data));`).
//!
//! ```text
//! cargo run -p kubeedge-examples --example proto-fuzz -- 2000
//! ```

use std::collections::BTreeMap;

use kubeedge_proto::{test_util, Message};
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// The code under test: how many messages each group got.
#[derive(Default)]
struct Router {
    by_group: BTreeMap<String, usize>,
}

impl Router {
    fn route(&mut self, msg: &Message) {
        *self
            .by_group
            .entry(msg.route.group_str().to_owned())
            .or_default() += 1;
    }
}

/// One fuzz input: bytes off the wire, decoded as the hub decodes a frame, then routed.
fn fuzz_one(router: &mut Router, data: &[u8]) {
    if let Ok(msg) = Message::from_json(data) {
        router.route(&msg);
    }
}

fn main() -> anyhow::Result<()> {
    let cases: u32 = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(1000);
    let router = std::cell::RefCell::new(Router::default());
    let mut runner = TestRunner::new(Config {
        cases,
        ..Config::default()
    });

    // Every message the strategies make survives a JSON round trip and is routed once.
    runner
        .run(&test_util::message(), |msg| {
            let back = Message::from_json(&msg.to_json())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            proptest::prop_assert_eq!(&back.route, &msg.route);
            router.borrow_mut().route(&back);
            Ok(())
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    // Arbitrary bytes never panic the decoder or the router.
    runner
        .run(
            &proptest::collection::vec(proptest::num::u8::ANY, 0..512),
            |bytes| {
                fuzz_one(&mut Router::default(), &bytes);
                Ok(())
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    println!(
        "{cases} cases passed; messages by group: {:?}",
        router.borrow().by_group
    );
    Ok(())
}
