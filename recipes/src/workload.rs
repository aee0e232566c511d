//! Checks that rendered workload objects are the Kubernetes objects they claim to be.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Deserializes `obj` as the k8s-openapi type its apiVersion/kind names (other kinds
/// pass). Also refuses fields the type does not know, which k8s-openapi itself
/// ignores: a misspelt field would otherwise vanish silently on the way to the
/// cluster. Returns (path, message) on failure.
pub(crate) fn check_type(
    api_version: &str,
    kind: &str,
    obj: &Value,
) -> Result<(), (String, String)> {
    match (api_version, kind) {
        ("apps/v1", "Deployment") => check::<Deployment>(obj),
        ("v1", "Service") => check::<Service>(obj),
        ("networking.k8s.io/v1", "Ingress") => check::<Ingress>(obj),
        ("v1", "Secret") => check::<Secret>(obj),
        ("v1", "ConfigMap") => check::<ConfigMap>(obj),
        ("v1", "PersistentVolumeClaim") => check::<PersistentVolumeClaim>(obj),
        _ => Ok(()),
    }
}

fn check<T: DeserializeOwned + Serialize>(obj: &Value) -> Result<(), (String, String)> {
    let typed: T = serde_path_to_error::deserialize(obj.clone())
        .map_err(|e| (e.path().to_string(), e.inner().to_string()))?;
    let back = serde_json::to_value(&typed).map_err(|e| (".".to_string(), e.to_string()))?;
    match unknown_field(obj, &back, "") {
        Some(path) => Err((path, "unknown field".to_string())),
        None => Ok(()),
    }
}

/// The first non-null field of `orig` that did not survive the round trip.
fn unknown_field(orig: &Value, back: &Value, path: &str) -> Option<String> {
    match (orig, back) {
        (Value::Object(a), Value::Object(b)) => a.iter().find_map(|(k, v)| {
            let sub = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            match b.get(k) {
                _ if v.is_null() => None,
                None => Some(sub),
                Some(bv) => unknown_field(v, bv, &sub),
            }
        }),
        (Value::Array(a), Value::Array(b)) => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| unknown_field(x, y, &format!("{path}[{i}]"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wrong_types_and_unknown_fields_are_named() {
        let bad = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
            "spec": {"ports": [{"port": "http"}]}});
        let (path, _) = check_type("v1", "Service", &bad).unwrap_err();
        assert_eq!(path, "spec.ports[0].port");
        let typo = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
            "spec": {"ports": [{"port": 80, "targetPrt": 80}]}});
        let (path, msg) = check_type("v1", "Service", &typo).unwrap_err();
        assert_eq!(
            (path.as_str(), msg.as_str()),
            ("spec.ports[0].targetPrt", "unknown field")
        );
        let other = json!({"apiVersion": "example.com/v1", "kind": "Thing", "whatever": 1});
        assert!(check_type("example.com/v1", "Thing", &other).is_ok());
    }
}
