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

/// The string at `path`.
pub(crate) fn get_str<'a>(root: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = root;
    for key in path {
        cur = cur.get(*key)?;
    }
    cur.as_str()
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
}
