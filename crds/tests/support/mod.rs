//! Checks an object the way the Kubernetes API server checks a custom resource against
//! its CRD on create with `fieldValidation=Strict`: unknown fields, defaults, the
//! structural schema (types, required, enums, bounds, patterns), list-map key
//! uniqueness and CEL `x-kubernetes-validations`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Map, Value};

pub struct SchemaChecker {
    schema: Value,
    json_schema: jsonschema::Validator,
}

/// The outcome of a check: the defaulted object and every error, each naming its field.
pub struct Checked {
    pub defaulted: Value,
    pub errors: Vec<String>,
}

impl SchemaChecker {
    pub fn for_crd(crd: &CustomResourceDefinition) -> Self {
        let version = &crd.spec.versions[0];
        let schema = serde_json::to_value(
            version
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap(),
        )
        .unwrap();
        let json_schema = jsonschema::validator_for(&openapi_to_json_schema(&schema))
            .expect("CRD schema compiles as JSON schema");
        Self {
            schema,
            json_schema,
        }
    }

    pub fn check(&self, object: &Value) -> Checked {
        let mut errors = Vec::new();
        unknown_fields(&self.schema, object, "", &mut errors);
        let defaulted = kube_cel::apply_defaults(&self.schema, object);
        for err in self.json_schema.iter_errors(&defaulted) {
            errors.push(format!(
                "{}: {}",
                dotted(&err.instance_path().to_string()),
                err
            ));
        }
        list_map_keys(&self.schema, &defaulted, "", &mut errors);
        if let Err(cel) = kube_cel::Validator::new().validate(&self.schema, &defaulted, None) {
            errors.extend(cel.into_vec().into_iter().map(|e| e.to_string()));
        }
        Checked { defaulted, errors }
    }
}

/// `/spec/nodePools/0/replicas` -> `spec.nodePools[0].replicas`.
fn dotted(pointer: &str) -> String {
    let mut out = String::new();
    for part in pointer.split('/').skip(1) {
        if part.chars().all(|c| c.is_ascii_digit()) && !part.is_empty() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// OpenAPI v3.0's `nullable: true` becomes a JSON-schema type union with null.
fn openapi_to_json_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out: Map<String, Value> = map
                .iter()
                .map(|(k, v)| (k.clone(), openapi_to_json_schema(v)))
                .collect();
            if map.get("nullable") == Some(&Value::Bool(true))
                && let Some(Value::String(t)) = map.get("type")
            {
                out.insert("type".into(), serde_json::json!([t, "null"]));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(openapi_to_json_schema).collect()),
        other => other.clone(),
    }
}

fn unknown_fields(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    match value {
        Value::Object(obj) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (key, child) in obj {
                if path.is_empty() && ["apiVersion", "kind", "metadata"].contains(&key.as_str()) {
                    continue;
                }
                let child_path = join(path, key);
                match (props.and_then(|p| p.get(key)), additional) {
                    (Some(s), _) | (None, Some(s)) => unknown_fields(s, child, &child_path, errors),
                    (None, None) => errors.push(format!("{child_path}: unknown field")),
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    unknown_fields(item_schema, item, &format!("{path}[{i}]"), errors);
                }
            }
        }
        _ => {}
    }
}

fn list_map_keys(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    match value {
        Value::Object(obj) => {
            let props = schema.get("properties").and_then(Value::as_object);
            for (key, child) in obj {
                if let Some(s) = props.and_then(|p| p.get(key)) {
                    list_map_keys(s, child, &join(path, key), errors);
                }
            }
        }
        Value::Array(items) => {
            let item_schema = schema.get("items").cloned().unwrap_or(Value::Null);
            if schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") {
                let keys: Vec<&str> = schema["x-kubernetes-list-map-keys"]
                    .as_array()
                    .map(|k| k.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let mut seen = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let key: Vec<&Value> = keys.iter().map(|k| &item[*k]).collect();
                    if seen.contains(&key) {
                        errors.push(format!("{path}[{i}]: Duplicate value: {key:?}"));
                    }
                    seen.push(key);
                }
            }
            for (i, item) in items.iter().enumerate() {
                list_map_keys(&item_schema, item, &format!("{path}[{i}]"), errors);
            }
        }
        _ => {}
    }
}
