//! Editing the YAML of a component's default configuration.

use serde_yaml::Value;

/// Set the value at `path`, creating the mappings on the way.
pub(crate) fn set(root: &mut Value, path: &[&str], value: Value) {
    let mut cur = root;
    for (i, key) in path.iter().enumerate() {
        if !cur.is_mapping() {
            *cur = Value::Mapping(serde_yaml::Mapping::new());
        }
        let Value::Mapping(m) = cur else { return };
        let k = Value::String((*key).to_owned());
        if i + 1 == path.len() {
            m.insert(k, value);
            return;
        }
        cur = m.entry(k).or_insert(Value::Null);
    }
}

/// Apply `--set key.path=value` overrides (upstream keadm's flag): each value is read as a
/// YAML scalar, so `true`, `0` and `1883` keep their types.
pub(crate) fn apply_sets(root: &mut Value, sets: &[String]) -> anyhow::Result<()> {
    for item in sets.iter().filter(|s| !s.is_empty()) {
        let Some((key, value)) = item.split_once('=') else {
            anyhow::bail!("--set {item:?} is not key.path=value");
        };
        let path: Vec<&str> = key.split('.').collect();
        if path.iter().any(|k| k.is_empty()) {
            anyhow::bail!("--set {item:?}: empty key in {key:?}");
        }
        let value: Value = serde_yaml::from_str(value)
            .map_err(|e| anyhow::anyhow!("--set {item:?}: the value is not YAML: {e}"))?;
        set(root, &path, value);
    }
    Ok(())
}

/// The value at `path`.
pub(crate) fn get<'a>(root: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = root;
    for key in path {
        cur = cur.get(*key)?;
    }
    Some(cur)
}

/// The string at `path`.
pub(crate) fn get_str<'a>(root: &'a Value, path: &[&str]) -> Option<&'a str> {
    get(root, path)?.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_creates_nested_keys() {
        let mut v: Value = serde_yaml::from_str("a: {b: 1}").expect("yaml");
        set(&mut v, &["a", "c", "d"], Value::Bool(true));
        set(&mut v, &["a", "b"], Value::String("x".into()));
        assert_eq!(get_str(&v, &["a", "b"]), Some("x"));
        assert_eq!(v["a"]["c"]["d"], Value::Bool(true));
    }

    #[test]
    fn sets_keep_scalar_types() {
        let mut v: Value = serde_yaml::from_str("m: {p: 1}").expect("yaml");
        apply_sets(
            &mut v,
            &["m.p=10550".into(), "m.e=false".into(), "n.s=a=b".into()],
        )
        .expect("sets");
        assert_eq!(v["m"]["p"], Value::Number(10550.into()));
        assert_eq!(v["m"]["e"], Value::Bool(false));
        assert_eq!(get_str(&v, &["n", "s"]), Some("a=b"));
        assert!(apply_sets(&mut v, &["novalue".into()]).is_err());
        assert!(apply_sets(&mut v, &["a..b=1".into()]).is_err());
    }
}
