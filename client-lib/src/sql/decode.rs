//! Rows of a `sql_scan` reply (JSON objects keyed by field name) straight into SQL
//! values, without an intermediate JSON tree: byte strings (arrays of small numbers)
//! are collected as bytes as they are read.

use super::Value;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// Decode one row into `columns.len()` values in column order (missing fields are
/// NULL, unknown fields are ignored).
pub fn decode_row(bytes: &[u8], columns: &[&str]) -> Result<Vec<Value>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let values = RowSeed { columns }.deserialize(&mut de)?;
    de.end()?;
    Ok(values)
}

struct RowSeed<'c> {
    columns: &'c [&'c str],
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = Vec<Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Value>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = Vec<Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a row object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<Value>, A::Error> {
        let mut values = vec![Value::Null; self.columns.len()];
        while let Some(column) = map.next_key_seed(KeySeed {
            columns: self.columns,
        })? {
            match column {
                Some(i) => values[i] = map.next_value::<SqlValue>()?.0,
                None => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(values)
    }
}

/// A field name, as its column index (`None`: not a column), without allocating.
struct KeySeed<'c> {
    columns: &'c [&'c str],
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.columns.iter().position(|c| *c == key))
    }
}

/// One field as SQL: like `tables::json_to_sql`, read directly.
struct SqlValue(Value);

impl<'de> de::Deserialize<'de> for SqlValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SqlValue, D::Error> {
        d.deserialize_any(SqlValueVisitor)
    }
}

struct SqlValueVisitor;

impl<'de> Visitor<'de> for SqlValueVisitor {
    type Value = SqlValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<SqlValue, E> {
        Ok(SqlValue(Value::Null))
    }

    fn visit_none<E>(self) -> Result<SqlValue, E> {
        Ok(SqlValue(Value::Null))
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<SqlValue, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_bool<E>(self, v: bool) -> Result<SqlValue, E> {
        Ok(SqlValue(Value::Integer(i64::from(v))))
    }

    fn visit_i64<E>(self, v: i64) -> Result<SqlValue, E> {
        Ok(SqlValue(Value::Integer(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<SqlValue, E> {
        // u64 above i64::MAX keeps its bits (see the README): exact in joins.
        Ok(SqlValue(Value::Integer(v as i64)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<SqlValue, E> {
        Ok(SqlValue(Value::Real(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<SqlValue, E> {
        Ok(SqlValue(Value::Text(v.to_string())))
    }

    fn visit_string<E>(self, v: String) -> Result<SqlValue, E> {
        Ok(SqlValue(Value::Text(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SqlValue, A::Error> {
        // Bytes while every element is a number 0..=255; past the first that is not,
        // the rest is kept as JSON and the whole array becomes its JSON text.
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(elem) = seq.next_element::<Elem>()? {
            match elem {
                Elem::Byte(b) => bytes.push(b),
                Elem::Other(first) => {
                    let mut items: Vec<serde_json::Value> =
                        bytes.iter().map(|b| serde_json::Value::from(*b)).collect();
                    items.push(first);
                    while let Some(v) = seq.next_element::<serde_json::Value>()? {
                        items.push(v);
                    }
                    return Ok(SqlValue(Value::Text(
                        serde_json::Value::Array(items).to_string(),
                    )));
                }
            }
        }
        Ok(SqlValue(match String::from_utf8(bytes) {
            Ok(s) => Value::Text(s),
            Err(e) => Value::Blob(e.into_bytes()),
        }))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SqlValue, A::Error> {
        let v: serde_json::Value =
            de::Deserialize::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(SqlValue(Value::Text(v.to_string())))
    }
}

/// An array element: a byte, or anything else as JSON.
enum Elem {
    Byte(u8),
    Other(serde_json::Value),
}

impl<'de> de::Deserialize<'de> for Elem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Elem, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Ok(match v.as_u64().and_then(|n| u8::try_from(n).ok()) {
            Some(b) => Elem::Byte(b),
            None => Elem::Other(v),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_decode_in_column_order_with_bytes_as_text_or_blob() {
        let cols = ["key", "n", "missing", "kind", "opt", "nested"];
        let row = br#"{"n":18446744073709551615,"key":[104,105],"kind":"Dir","opt":null,"nested":[1,300,{"a":1}],"extra":5}"#;
        let got = decode_row(row, &cols).unwrap();
        assert_eq!(
            got,
            vec![
                Value::Text("hi".into()),
                Value::Integer(-1),
                Value::Null,
                Value::Text("Dir".into()),
                Value::Null,
                Value::Text(r#"[1,300,{"a":1}]"#.into()),
            ]
        );
        let blob = decode_row(br#"{"key":[255,0]}"#, &["key"]).unwrap();
        assert_eq!(blob, [Value::Blob(vec![255, 0])]);
        assert!(decode_row(b"[1,2]", &["key"]).is_err());
        assert!(decode_row(br#"{"key":1} x"#, &["key"]).is_err());
    }
}
