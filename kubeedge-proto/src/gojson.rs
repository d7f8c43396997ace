//! Go's JSON decoding rules (what `encoding/json` accepts and omits), as serde helpers shared
//! by the wire types.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// Go decodes JSON `null` into a field as "leave the zero value": accept it the same way.
pub(crate) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A JSON object (or `null`, read as the zero value): Go refuses arrays where a struct is
/// expected, while serde's derive would read them as tuples.
pub(crate) fn object_or_null<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    d.deserialize_any(ObjectVisitor::<T>(std::marker::PhantomData, true))
}

/// A JSON object only.
pub(crate) fn object_only<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    d.deserialize_any(ObjectVisitor::<T>(std::marker::PhantomData, false))
}

struct ObjectVisitor<T>(std::marker::PhantomData<T>, bool);

impl<'de, T: Deserialize<'de> + Default> serde::de::Visitor<'de> for ObjectVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.1 {
            "a json object or null"
        } else {
            "a json object"
        })
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<T, E> {
        if self.1 {
            Ok(T::default())
        } else {
            Err(E::invalid_type(serde::de::Unexpected::Unit, &self))
        }
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
    }
}

/// An empty string is Go's "not set" for route names: decode it as `None`.
pub(crate) fn empty_as_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: From<String>,
{
    let s: Option<String> = Option::deserialize(d)?;
    Ok(s.filter(|s| !s.is_empty()).map(T::from))
}

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}
