use super::*;

#[test]
fn percentages_round_like_upstream() {
    let pct = IntOrString::String("25%".into());
    assert_eq!(resolve(Some(&pct), 2, true, "0"), 1);
    assert_eq!(resolve(Some(&pct), 2, false, "0"), 0);
    assert_eq!(resolve(Some(&pct), 4, false, "0"), 1);
    assert_eq!(resolve(Some(&IntOrString::Int(3)), 10, true, "0"), 3);
    assert_eq!(resolve(None, 10, true, "25%"), 3);
}

#[test]
fn hash_uses_the_safe_alphabet_and_is_stable() {
    let a = template_hash(&json!({"spec": {"containers": [{"image": "nginx:1.25"}]}}));
    let b = template_hash(&json!({"spec": {"containers": [{"image": "nginx:1.26"}]}}));
    assert_ne!(a, b);
    assert_eq!(
        a,
        template_hash(&json!({"spec": {"containers": [{"image": "nginx:1.25"}]}}))
    );
    assert!(a
        .bytes()
        .all(|c| b"bcdfghjklmnpqrstvwxz2456789".contains(&c)));
}
