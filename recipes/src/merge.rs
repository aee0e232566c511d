//! Deep merge of cloud-config parts: mappings merged key by key, lists concatenated,
//! scalars replaced by the later part, `null` ignored. Two parts that disagree on the
//! shape of a key (a list and a mapping, a list and a scalar) are an error rather than
//! a silent loss of one of them.

use serde_yaml_ng::Value;

/// Merges `part` into `into`. On conflict, returns the key path and a message.
pub(crate) fn merge(into: &mut Value, part: Value, path: &str) -> Result<(), (String, String)> {
    match (into, part) {
        (_, Value::Null) => Ok(()),
        (Value::Mapping(a), Value::Mapping(b)) => {
            for (k, v) in b {
                let key_text = match &k {
                    Value::String(s) => s.clone(),
                    other => serde_yaml_ng::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                };
                let sub = if path == "." {
                    key_text
                } else {
                    format!("{path}.{key_text}")
                };
                match a.get_mut(&k) {
                    Some(existing) => merge(existing, v, &sub)?,
                    None => {
                        if !v.is_null() {
                            a.insert(k, v);
                        }
                    }
                }
            }
            Ok(())
        }
        (Value::Sequence(a), Value::Sequence(b)) => {
            a.extend(b);
            Ok(())
        }
        (slot @ Value::Null, v) => {
            *slot = v;
            Ok(())
        }
        (slot, v) if !is_collection(slot) && !is_collection(&v) => {
            *slot = v;
            Ok(())
        }
        (slot, v) => Err((
            path.to_string(),
            format!(
                "an earlier part has a {} here, this one a {}",
                shape(slot),
                shape(&v)
            ),
        )),
    }
}

fn is_collection(v: &Value) -> bool {
    matches!(v, Value::Mapping(_) | Value::Sequence(_))
}

fn shape(v: &Value) -> &'static str {
    match v {
        Value::Mapping(_) => "mapping",
        Value::Sequence(_) => "list",
        _ => "scalar",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn y(s: &str) -> Value {
        serde_yaml_ng::from_str(s).unwrap()
    }

    #[test]
    fn lists_concatenate_mappings_merge_scalars_replace() {
        let mut a = y("packages: [a]\napt: {x: 1, y: {z: 1}}\ntimezone: UTC");
        merge(
            &mut a,
            y("packages: [b]\napt: {y: {w: 2}}\ntimezone: Europe/Madrid\nruncmd: [c]"),
            ".",
        )
        .unwrap();
        assert_eq!(
            a,
            y(
                "packages: [a, b]\napt: {x: 1, y: {z: 1, w: 2}}\ntimezone: Europe/Madrid\nruncmd: [c]"
            )
        );
    }

    #[test]
    fn shape_conflicts_name_the_path() {
        let mut a = y("apt: {sources: [a]}");
        let err = merge(&mut a, y("apt: {sources: {b: 1}}"), ".").unwrap_err();
        assert_eq!(err.0, "apt.sources");
    }
}
