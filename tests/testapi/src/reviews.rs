//! The kinds that are answered rather than stored: access reviews, token reviews,
//! SelfSubjectReview (`kubectl auth whoami`) and TokenRequest (`kubectl create token`).

use serde_json::{Value, json};

use crate::auth::{self, UserInfo};
use crate::status::ApiError;
use crate::store::Store;
use crate::types::ResourceType;

fn invalid(rt: &ResourceType, field: &str, message: String) -> ApiError {
    ApiError::invalid_field(rt, "", field, message)
}

/// The object a review POST returns: what was sent, with `status` filled in.
pub fn answer(
    store: &Store,
    user: &UserInfo,
    rt: &ResourceType,
    namespace: Option<&str>,
    mut obj: Value,
) -> Result<Value, ApiError> {
    let spec = obj["spec"].clone();
    let status = match rt.plural.as_str() {
        "selfsubjectaccessreviews" => {
            let attrs = auth::review_attributes(&spec).map_err(|m| invalid(rt, "spec", m))?;
            auth::review_status(store, user, &attrs)
        }
        "selfsubjectrulesreviews" => {
            let ns = spec["namespace"].as_str().unwrap_or_default();
            auth::rules_review(store, user, ns)
        }
        "subjectaccessreviews" | "localsubjectaccessreviews" => {
            let attrs = auth::review_attributes(&spec).map_err(|m| invalid(rt, "spec", m))?;
            if let (Some(ns), auth::Attributes::Resource { namespace, .. }) = (namespace, &attrs)
                && namespace.as_deref() != Some(ns)
            {
                return Err(invalid(
                    rt,
                    "spec.resourceAttributes.namespace",
                    format!("Invalid value: {namespace:?}: must match metadata.namespace {ns:?}"),
                ));
            }
            let strings = |v: &Value| -> Vec<String> {
                v.as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let subject = UserInfo {
                name: spec["user"].as_str().unwrap_or_default().into(),
                uid: spec["uid"].as_str().unwrap_or_default().into(),
                groups: strings(&spec["groups"]),
                extra: Default::default(),
            };
            if subject.name.is_empty() && subject.groups.is_empty() {
                return Err(invalid(
                    rt,
                    "spec.user",
                    "Invalid value: \"\": at least one of user or group must be specified".into(),
                ));
            }
            auth::review_status(store, &subject, &attrs)
        }
        "tokenreviews" => {
            let token = spec["token"].as_str().unwrap_or_default();
            match store.auth.token_user(store, token) {
                Some(u) => {
                    json!({"authenticated": true, "user": u.to_json(), "audiences": spec["audiences"]})
                }
                None => json!({"authenticated": false, "error": "invalid bearer token"}),
            }
        }
        "selfsubjectreviews" => json!({"userInfo": user.to_json()}),
        other => return Err(ApiError::bad_request(format!("{other} cannot be answered"))),
    };
    obj["apiVersion"] = json!(rt.api_version());
    obj["kind"] = json!(rt.kind);
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"]["creationTimestamp"] = json!(crate::store::now());
    obj["status"] = status;
    Ok(obj)
}

/// `POST serviceaccounts/NAME/token`: a token for an existing ServiceAccount.
pub fn token_request(
    store: &Store,
    sa_type: &ResourceType,
    namespace: &str,
    name: &str,
    mut obj: Value,
) -> Result<Value, ApiError> {
    let sa = store.get(sa_type, Some(namespace), name)?;
    let uid = sa["metadata"]["uid"].as_str().unwrap_or_default();
    let expiration = obj["spec"]["expirationSeconds"].as_i64().unwrap_or(3600);
    let review = ResourceType {
        kind: "TokenRequest".into(),
        group: "authentication.k8s.io".into(),
        plural: "tokenrequests".into(),
        ..sa_type.clone()
    };
    if expiration < 600 {
        return Err(ApiError::invalid_field(
            &review,
            name,
            "spec.expirationSeconds",
            format!("Invalid value: {expiration}: may not specify a duration less than 10 minutes"),
        ));
    }
    let audiences: Vec<String> = obj["spec"]["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let (token, exp) = store
        .auth
        .issue(namespace, name, uid, &audiences, expiration);
    obj["apiVersion"] = json!("authentication.k8s.io/v1");
    obj["kind"] = json!("TokenRequest");
    obj["metadata"] =
        json!({"name": name, "namespace": namespace, "creationTimestamp": crate::store::now()});
    obj["spec"]["expirationSeconds"] = json!(expiration);
    if audiences.is_empty() {
        obj["spec"]["audiences"] = json!(["https://kubernetes.default.svc.cluster.local"]);
    }
    obj["status"] = json!({
        "token": token,
        "expirationTimestamp": exp.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    Ok(obj)
}
