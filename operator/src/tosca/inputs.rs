//! `topology_template.inputs`: their types, defaults and constraints, the values a user
//! gives, and `get_input` / `concat` resolution.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use super::units;

/// A constraint on an input's value (TOSCA 1.0 §3.5.2).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Constraint {
    ValidValues(Vec<Value>),
    GreaterThan(Value),
    GreaterOrEqual(Value),
    LessThan(Value),
    LessOrEqual(Value),
    InRange(Value, Value),
    Equal(Value),
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |vs: &[Value]| vs.iter().map(show).collect::<Vec<_>>().join(", ");
        match self {
            Constraint::ValidValues(vs) => write!(f, "valid_values [{}]", list(vs)),
            Constraint::GreaterThan(v) => write!(f, "greater_than {}", show(v)),
            Constraint::GreaterOrEqual(v) => write!(f, "greater_or_equal {}", show(v)),
            Constraint::LessThan(v) => write!(f, "less_than {}", show(v)),
            Constraint::LessOrEqual(v) => write!(f, "less_or_equal {}", show(v)),
            Constraint::InRange(a, b) => write!(f, "in_range [{}, {}]", show(a), show(b)),
            Constraint::Equal(v) => write!(f, "equal {}", show(v)),
        }
    }
}

/// A value as a user would type it: strings bare, the rest as JSON.
pub fn show(v: &Value) -> String {
    match v {
        Value::String(s) if s.is_empty() => "\"\"".into(),
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

/// One input of a template, as a form shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InputInfo {
    pub name: String,
    /// The TOSCA type: `string`, `integer`, `float`, `boolean`, `scalar-unit.size`,
    /// `map`, `list`, ... (`string` when the template names none).
    #[serde(rename = "type")]
    pub type_: String,
    pub default: Option<Value>,
    pub description: Option<String>,
    pub required: bool,
    pub constraints: Vec<Constraint>,
}

/// Reads `topology_template.inputs`; errors name the input.
pub fn definitions(inputs: &Value, errors: &mut Vec<String>) -> Vec<InputInfo> {
    let Some(map) = inputs.as_object() else {
        if !inputs.is_null() {
            errors.push("topology_template.inputs is not a mapping".into());
        }
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, def) in map {
        let type_ = def["type"].as_str().unwrap_or("string").to_string();
        let mut constraints = Vec::new();
        for c in def["constraints"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            match constraint(c) {
                Ok(c) => constraints.push(c),
                Err(e) => errors.push(format!("input {name}: {e}")),
            }
        }
        let required = match &def["required"] {
            Value::Bool(b) => *b,
            Value::String(s) => matches!(s.to_ascii_lowercase().as_str(), "yes" | "true"),
            _ => true,
        };
        out.push(InputInfo {
            name: name.clone(),
            type_,
            default: def.get("default").cloned(),
            description: def["description"].as_str().map(|s| s.trim().to_string()),
            required,
            constraints,
        });
    }
    out
}

fn constraint(c: &Value) -> Result<Constraint, String> {
    let Some((op, arg)) = c
        .as_object()
        .filter(|m| m.len() == 1)
        .and_then(|m| m.iter().next())
    else {
        return Err(format!("constraint {c} is not a one-key mapping"));
    };
    let pair = |arg: &Value| match arg.as_array().map(Vec::as_slice) {
        Some([a, b]) => Ok((a.clone(), b.clone())),
        _ => Err(format!("{op} takes a list of two values, not {arg}")),
    };
    Ok(match op.as_str() {
        "valid_values" => Constraint::ValidValues(
            arg.as_array()
                .cloned()
                .ok_or_else(|| format!("valid_values takes a list, not {arg}"))?,
        ),
        "greater_than" => Constraint::GreaterThan(arg.clone()),
        "greater_or_equal" => Constraint::GreaterOrEqual(arg.clone()),
        "less_than" => Constraint::LessThan(arg.clone()),
        "less_or_equal" => Constraint::LessOrEqual(arg.clone()),
        "in_range" => {
            let (a, b) = pair(arg)?;
            Constraint::InRange(a, b)
        }
        "equal" => Constraint::Equal(arg.clone()),
        other => {
            return Err(format!(
                "constraint {other} is not one kelp checks (valid_values, greater_than, greater_or_equal, less_than, less_or_equal, in_range, equal)"
            ));
        }
    })
}

/// A value made to fit a TOSCA type: `"4"` for an integer is 4, `false` for a string
/// is `"false"`, a size must carry a unit.
pub fn typed(type_: &str, v: &Value) -> Result<Value, String> {
    let bad = |what: &str| Err(format!("{} is not {what}", show(v)));
    match type_ {
        "integer" => match v {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(v.clone()),
            Value::String(s) => s
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .or_else(|_| bad("an integer")),
            _ => bad("an integer"),
        },
        "float" => match v {
            Value::Number(_) => Ok(v.clone()),
            Value::String(s) => s
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
                .map_or_else(|| bad("a number"), Ok),
            _ => bad("a number"),
        },
        "boolean" => match v {
            Value::Bool(_) => Ok(v.clone()),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" => Ok(Value::Bool(true)),
                "false" | "no" | "off" => Ok(Value::Bool(false)),
                _ => bad("a boolean (true or false)"),
            },
            _ => bad("a boolean (true or false)"),
        },
        "scalar-unit.size" => match v {
            Value::String(s) => units::bytes(s).map(|_| Value::String(s.trim().to_string())),
            _ => bad("a size with a unit (e.g. 4 GB)"),
        },
        "string" | "version" | "timestamp" | "scalar-unit.time" | "scalar-unit.frequency" => {
            match v {
                Value::String(_) => Ok(v.clone()),
                Value::Number(_) | Value::Bool(_) => Ok(Value::String(show(v))),
                _ => bad("a string"),
            }
        }
        "map" => match v {
            Value::Object(_) => Ok(v.clone()),
            _ => bad("a map"),
        },
        "list" => match v {
            Value::Array(_) => Ok(v.clone()),
            _ => bad("a list"),
        },
        // Data types of the template (PortSpec, ...): taken as written.
        _ => Ok(v.clone()),
    }
}

/// A value given on the command line, read for its type: maps and lists as YAML (or
/// JSON), the rest as text for [`typed`].
pub fn parse_given(type_: &str, text: &str) -> Result<Value, String> {
    match type_ {
        "map" | "list" => super::yaml_value(text).map_err(|e| format!("{text:?}: {e}")),
        _ => Ok(Value::String(text.to_string())),
    }
}

/// Orders two values of a type: sizes by bytes, numbers by value, the rest as text.
fn compare(type_: &str, a: &Value, b: &Value) -> Option<Ordering> {
    if type_ == "scalar-unit.size" {
        let (a, b) = (
            units::bytes(a.as_str()?).ok()?,
            units::bytes(b.as_str()?).ok()?,
        );
        return a.partial_cmp(&b);
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn equal(type_: &str, a: &Value, b: &Value) -> bool {
    let b = typed(type_, b).unwrap_or_else(|_| b.clone());
    match compare(type_, a, &b) {
        Some(o) => o == Ordering::Equal,
        None => *a == b,
    }
}

/// Checks a typed value against one constraint; the error names the input, the value
/// and the constraint.
pub fn check(input: &InputInfo, value: &Value, c: &Constraint) -> Result<(), String> {
    let t = input.type_.as_str();
    let cmp = |bound: &Value| {
        let bound = typed(t, bound).unwrap_or_else(|_| bound.clone());
        compare(t, value, &bound)
    };
    let ok = match c {
        Constraint::ValidValues(vs) => vs.iter().any(|v| equal(t, value, v)),
        Constraint::Equal(v) => equal(t, value, v),
        Constraint::GreaterThan(b) => cmp(b) == Some(Ordering::Greater),
        Constraint::GreaterOrEqual(b) => {
            matches!(cmp(b), Some(Ordering::Greater | Ordering::Equal))
        }
        Constraint::LessThan(b) => cmp(b) == Some(Ordering::Less),
        Constraint::LessOrEqual(b) => matches!(cmp(b), Some(Ordering::Less | Ordering::Equal)),
        Constraint::InRange(lo, hi) => {
            matches!(cmp(lo), Some(Ordering::Greater | Ordering::Equal))
                && matches!(cmp(hi), Some(Ordering::Less | Ordering::Equal))
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "input {}: {} does not meet the constraint {c}",
            input.name,
            show(value)
        ))
    }
}

/// The value of every input: the given ones (typed), else the defaults, each checked
/// against its constraints. `extra` names inputs kelp itself takes (`kelp.cloud`),
/// which the template does not declare. Every error is collected; an input in error is
/// null in the result and its name is added to `failed`.
pub fn values(
    defs: &[InputInfo],
    given: &[(String, String)],
    extra: &[&str],
    errors: &mut Vec<String>,
    failed: &mut BTreeSet<String>,
) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut given_map: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, value) in given {
        if defs.iter().any(|d| &d.name == name) || extra.contains(&name.as_str()) {
            given_map.insert(name, value);
        } else {
            let mut known: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
            known.extend(extra);
            errors.push(format!(
                "--input {name}: the template has no input {name:?} (its inputs: {})",
                known.join(", ")
            ));
        }
    }
    for name in extra {
        if let Some(v) = given_map.get(name) {
            out.insert(name.to_string(), Value::String(v.to_string()));
        }
    }
    for def in defs {
        let value = match given_map.get(def.name.as_str()) {
            Some(text) => match parse_given(&def.type_, text).and_then(|v| typed(&def.type_, &v)) {
                Ok(v) => v,
                Err(e) => {
                    errors.push(format!("input {}: {e}", def.name));
                    failed.insert(def.name.clone());
                    out.insert(def.name.clone(), Value::Null);
                    continue;
                }
            },
            None => match &def.default {
                Some(Value::Null) | None => {
                    if def.required {
                        errors.push(format!(
                            "input {} is required and has no default: give --input {}=VALUE",
                            def.name, def.name
                        ));
                        failed.insert(def.name.clone());
                    }
                    out.insert(def.name.clone(), Value::Null);
                    continue;
                }
                Some(d) => match typed(&def.type_, d) {
                    Ok(v) => v,
                    Err(e) => {
                        errors.push(format!("input {}: its default {e}", def.name));
                        failed.insert(def.name.clone());
                        out.insert(def.name.clone(), Value::Null);
                        continue;
                    }
                },
            },
        };
        for c in &def.constraints {
            if let Err(e) = check(def, &value, c) {
                errors.push(e);
                failed.insert(def.name.clone());
            }
        }
        out.insert(def.name.clone(), value);
    }
    out
}

/// The input a value reads, when it is exactly `{get_input: NAME}`.
pub fn input_of(v: &Value) -> Option<&str> {
    let m = v.as_object().filter(|m| m.len() == 1)?;
    match m.get("get_input")? {
        Value::String(s) => Some(s),
        Value::Array(a) => a.first()?.as_str(),
        _ => None,
    }
}

/// Replaces every `get_input` (anywhere in maps and lists) by the input's value, and
/// every `concat` whose parts are all known by the joined text. Functions only the
/// running deployment knows (`get_attribute`) are left as they are. `at` names where
/// the value is, for errors.
pub fn resolve(
    v: &Value,
    inputs: &BTreeMap<String, Value>,
    at: &str,
    errors: &mut Vec<String>,
) -> Value {
    match v {
        Value::Object(m) if m.len() == 1 && m.contains_key("get_input") => {
            let arg = &m["get_input"];
            let (name, path) = match arg {
                Value::String(s) => (s.as_str(), &[][..]),
                Value::Array(a) if a.first().is_some_and(Value::is_string) => {
                    (a[0].as_str().unwrap_or_default(), &a[1..])
                }
                _ => {
                    errors.push(format!("{at}: get_input takes an input name, not {arg}"));
                    return Value::Null;
                }
            };
            let Some(mut value) = inputs.get(name) else {
                errors.push(format!(
                    "{at}: get_input names no input of the template: {name:?}"
                ));
                return Value::Null;
            };
            for step in path {
                value = match step {
                    Value::Number(n) => n
                        .as_u64()
                        .and_then(|i| value.get(i as usize))
                        .unwrap_or(&Value::Null),
                    Value::String(k) => value.get(k).unwrap_or(&Value::Null),
                    _ => &Value::Null,
                };
            }
            value.clone()
        }
        Value::Object(m) if m.len() == 1 && m.contains_key("concat") => {
            let parts: Vec<Value> = m["concat"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|p| resolve(p, inputs, at, errors))
                .collect();
            if parts
                .iter()
                .all(|p| matches!(p, Value::String(_) | Value::Number(_) | Value::Bool(_)))
            {
                Value::String(parts.iter().map(show).collect())
            } else {
                serde_json::json!({ "concat": parts })
            }
        }
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), resolve(v, inputs, &format!("{at}.{k}"), errors)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.iter()
                .enumerate()
                .map(|(i, v)| resolve(v, inputs, &format!("{at}[{i}]"), errors))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defs(yaml: &str) -> Vec<InputInfo> {
        let mut errors = Vec::new();
        let d = definitions(&crate::tosca::yaml_value(yaml).unwrap(), &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        d
    }

    const DEFS: &str = r#"
num_cpus: {type: integer, default: 2, constraints: [{valid_values: [2, 4, 8]}]}
mem_size: {type: scalar-unit.size, default: 4 GB, constraints: [{valid_values: [4 GB, 8 GB]}]}
privileged: {type: string, default: false, constraints: [{valid_values: [false, true]}]}
gpus: {type: integer, default: 0, constraints: [{in_range: [0, 4]}]}
replicas: {type: integer, default: 1, constraints: [{greater_than: 0}, {less_or_equal: 10}]}
disk: {type: scalar-unit.size, default: 20 GiB, constraints: [{greater_or_equal: 10 GiB}, {less_than: 1 TiB}]}
mode: {type: string, default: a, constraints: [{equal: a}]}
image: {type: string, required: yes}
token: {type: string, required: no}
"#;

    fn run(given: &[(&str, &str)]) -> (BTreeMap<String, Value>, Vec<String>) {
        let given: Vec<(String, String)> = given
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let mut errors = Vec::new();
        let v = values(
            &defs(DEFS),
            &given,
            &["kelp.cloud"],
            &mut errors,
            &mut BTreeSet::new(),
        );
        (v, errors)
    }

    #[test]
    fn defaults_typed_and_given_values_win() {
        let (v, errors) = run(&[("image", "x"), ("num_cpus", "4"), ("mem_size", "8GB")]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(v["num_cpus"], json!(4));
        assert_eq!(v["mem_size"], json!("8GB"));
        assert_eq!(v["privileged"], json!("false"));
        assert_eq!(v["token"], Value::Null);
    }

    #[test]
    fn every_constraint_kind_names_input_value_and_constraint() {
        let (_, errors) = run(&[
            ("image", "x"),
            ("num_cpus", "3"),
            ("mem_size", "4096 MB"),
            ("privileged", "maybe"),
            ("gpus", "5"),
            ("replicas", "0"),
            ("disk", "5 GiB"),
            ("mode", "b"),
        ]);
        let want = [
            "input num_cpus: 3 does not meet the constraint valid_values [2, 4, 8]",
            "input mem_size: 4096 MB does not meet the constraint valid_values [4 GB, 8 GB]",
            "input privileged: maybe does not meet the constraint valid_values [false, true]",
            "input gpus: 5 does not meet the constraint in_range [0, 4]",
            "input replicas: 0 does not meet the constraint greater_than 0",
            "input disk: 5 GiB does not meet the constraint greater_or_equal 10 GiB",
            "input mode: b does not meet the constraint equal a",
        ];
        for w in want {
            assert!(errors.iter().any(|e| e == w), "{w}: {errors:#?}");
        }
        assert_eq!(errors.len(), want.len(), "{errors:#?}");
    }

    #[test]
    fn sizes_compare_by_bytes_and_bounds_hold_at_the_edges() {
        let (_, errors) = run(&[("image", "x"), ("disk", "10240 MiB"), ("replicas", "10")]);
        assert!(errors.is_empty(), "{errors:?}");
        let (_, errors) = run(&[("image", "x"), ("disk", "1 TiB"), ("replicas", "11")]);
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn wrong_types_unknown_and_missing_inputs() {
        let (_, errors) = run(&[("num_cpus", "four"), ("nope", "1"), ("mem_size", "4")]);
        assert!(errors.contains(&"input num_cpus: four is not an integer".to_string()));
        assert!(errors.iter().any(|e| e.starts_with("--input nope: the template has no input \"nope\" (its inputs: disk, gpus, image, mem_size, mode, num_cpus, privileged, replicas, token, kelp.cloud)")), "{errors:?}");
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("input mem_size: \"4\" has no unit")),
            "{errors:?}"
        );
        assert!(errors.contains(
            &"input image is required and has no default: give --input image=VALUE".to_string()
        ));
    }

    #[test]
    fn get_input_is_resolved_in_lists_maps_and_concat() {
        let inputs: BTreeMap<String, Value> = [
            ("a".to_string(), json!("x")),
            ("n".to_string(), json!(5000)),
            ("ports".to_string(), json!({"ssh": {"source": 22}})),
        ]
        .into();
        let v = json!({
            "l": [{"get_input": "a"}, {"k": {"get_input": "n"}}],
            "c": {"concat": ["http://", {"get_input": "a"}, ":", {"get_input": "n"}]},
            "r": {"concat": ["http://", {"get_attribute": ["node", "public_address"]}]},
            "p": {"get_input": ["ports", "ssh", "source"]},
        });
        let mut errors = Vec::new();
        let r = resolve(&v, &inputs, "node", &mut errors);
        assert!(errors.is_empty());
        assert_eq!(r["l"], json!(["x", {"k": 5000}]));
        assert_eq!(r["c"], json!("http://x:5000"));
        assert_eq!(r["r"]["concat"][1]["get_attribute"][0], "node");
        assert_eq!(r["p"], json!(22));
        resolve(
            &json!({"x": {"get_input": "zz"}}),
            &inputs,
            "node n",
            &mut errors,
        );
        assert_eq!(
            errors,
            ["node n.x: get_input names no input of the template: \"zz\""]
        );
    }
}
