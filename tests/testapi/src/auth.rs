//! Authentication, impersonation and RBAC authorization, as a real API server does them.
//!
//! - Bearer tokens: the server's admin token (user `kelp-admin` in `system:masters`, which
//!   bypasses RBAC), ServiceAccount tokens from TokenRequest (JWTs of the shape a Pod gets
//!   mounted, signed with the server's own key), and static tokens tests register. No
//!   token is `system:anonymous` in `system:unauthenticated`; a token nobody issued is 401.
//! - Impersonation: `Impersonate-User`, `Impersonate-Group`, `Impersonate-Uid` and
//!   `Impersonate-Extra-*`, each allowed only by the `impersonate` verb.
//! - RBAC: Roles, ClusterRoles (aggregated ones included), RoleBindings and
//!   ClusterRoleBindings with the API server's matching rules, and its bootstrap roles.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use axum::http::HeaderMap;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::status::ApiError;
use crate::store::Store;

/// Who a request comes from, after authentication and impersonation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    pub fn new(name: &str, groups: &[&str]) -> Self {
        Self {
            name: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            extra: BTreeMap::new(),
        }
    }

    pub fn anonymous() -> Self {
        Self::new("system:anonymous", &["system:unauthenticated"])
    }

    /// The user a ServiceAccount's token authenticates as.
    pub fn service_account(namespace: &str, name: &str, uid: &str) -> Self {
        Self {
            uid: uid.into(),
            ..Self::new(
                &format!("system:serviceaccount:{namespace}:{name}"),
                &[
                    "system:serviceaccounts",
                    &format!("system:serviceaccounts:{namespace}"),
                    "system:authenticated",
                ],
            )
        }
    }

    /// `userInfo` as TokenReview and SelfSubjectReview write it.
    pub fn to_json(&self) -> Value {
        let mut v = json!({"username": self.name, "groups": self.groups});
        if !self.uid.is_empty() {
            v["uid"] = json!(self.uid);
        }
        if !self.extra.is_empty() {
            v["extra"] = json!(self.extra);
        }
        v
    }
}

/// What a request asks to do, in RBAC's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attributes {
    Resource {
        verb: String,
        group: String,
        resource: String,
        subresource: Option<String>,
        namespace: Option<String>,
        name: Option<String>,
    },
    NonResource {
        verb: String,
        path: String,
    },
}

impl Attributes {
    pub fn resource(
        verb: &str,
        group: &str,
        resource: &str,
        subresource: Option<&str>,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Self {
        Attributes::Resource {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: subresource.filter(|s| !s.is_empty()).map(String::from),
            namespace: namespace.filter(|s| !s.is_empty()).map(String::from),
            name: name.filter(|s| !s.is_empty()).map(String::from),
        }
    }

    /// The 403 a real API server answers when this is not allowed.
    pub fn forbidden(&self, user: &UserInfo) -> ApiError {
        match self {
            Attributes::Resource {
                verb,
                group,
                resource,
                subresource,
                namespace,
                name,
            } => {
                let qualified = if group.is_empty() {
                    resource.clone()
                } else {
                    format!("{resource}.{group}")
                };
                let subject = match name {
                    Some(n) => format!("{qualified} \"{n}\""),
                    None => qualified,
                };
                let full = match subresource {
                    Some(s) => format!("{resource}/{s}"),
                    None => resource.clone(),
                };
                let scope = match namespace {
                    Some(ns) => format!("in the namespace \"{ns}\""),
                    None => "at the cluster scope".into(),
                };
                let mut err = ApiError::new(
                    403,
                    "Forbidden",
                    format!(
                        "{subject} is forbidden: User \"{}\" cannot {verb} resource \"{full}\" in API group \"{group}\" {scope}",
                        user.name
                    ),
                );
                let mut details = json!({"group": group, "kind": resource});
                if let Some(n) = name {
                    details["name"] = json!(n);
                }
                err.details = Some(details);
                err
            }
            Attributes::NonResource { verb, path } => ApiError::new(
                403,
                "Forbidden",
                format!(
                    "forbidden: User \"{}\" cannot {verb} path \"{path}\"",
                    user.name
                ),
            ),
        }
    }
}

/// The server's credentials: its admin token, the key ServiceAccount tokens are signed
/// with, and the static tokens tests register.
pub struct Auth {
    admin_token: String,
    key: [u8; 32],
    tokens: Mutex<HashMap<String, UserInfo>>,
}

/// The admin kubeconfig's user: in `system:masters`, which RBAC never restricts.
pub const ADMIN_USER: &str = "kelp-admin";
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Default for Auth {
    fn default() -> Self {
        let mut key = [0u8; 32];
        key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        Self {
            admin_token: format!("kelp-admin.{}", uuid::Uuid::new_v4().simple()),
            key,
            tokens: Mutex::new(HashMap::new()),
        }
    }
}

impl Auth {
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// Registers a static bearer token for `user` (tests use it for plain users).
    pub fn add_token(&self, token: &str, user: UserInfo) {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.into(), user);
    }

    fn sign(&self, data: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(data.as_bytes());
        b64url(&mac.finalize().into_bytes())
    }

    /// A ServiceAccount token with the claims of a projected (Pod-mounted) one.
    pub fn issue(
        &self,
        namespace: &str,
        sa_name: &str,
        sa_uid: &str,
        audiences: &[String],
        expiration_seconds: i64,
    ) -> (String, chrono::DateTime<chrono::Utc>) {
        let now = chrono::Utc::now();
        let exp = now + chrono::Duration::seconds(expiration_seconds);
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": "kelp-testapi"});
        let audiences = if audiences.is_empty() {
            vec![ISSUER.to_string()]
        } else {
            audiences.to_vec()
        };
        let claims = json!({
            "aud": audiences,
            "exp": exp.timestamp(),
            "iat": now.timestamp(),
            "nbf": now.timestamp(),
            "iss": ISSUER,
            "jti": uuid::Uuid::new_v4().to_string(),
            "sub": format!("system:serviceaccount:{namespace}:{sa_name}"),
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": {"name": sa_name, "uid": sa_uid},
            },
        });
        let data = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let sig = self.sign(&data);
        (format!("{data}.{sig}"), exp)
    }

    /// The user a bearer token stands for; None when the server never issued it (or the
    /// ServiceAccount it names is gone or was recreated, or it expired).
    pub fn token_user(&self, store: &Store, token: &str) -> Option<UserInfo> {
        if token == self.admin_token {
            return Some(UserInfo::new(
                ADMIN_USER,
                &["system:masters", "system:authenticated"],
            ));
        }
        if let Some(u) = self
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
        {
            return Some(u.clone());
        }
        let (data, sig) = token.rsplit_once('.')?;
        if self.sign(data) != sig {
            return None;
        }
        let claims = data.split('.').nth(1)?;
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(claims)
                .ok()?,
        )
        .ok()?;
        if claims["exp"].as_i64()? < chrono::Utc::now().timestamp() {
            return None;
        }
        let k = &claims["kubernetes.io"];
        let ns = k["namespace"].as_str()?;
        let name = k["serviceaccount"]["name"].as_str()?;
        let uid = k["serviceaccount"]["uid"].as_str()?;
        let sa_type = store.resolve("", "v1", "serviceaccounts")?;
        let sa = store.get(&sa_type, Some(ns), name).ok()?;
        if sa["metadata"]["uid"].as_str() != Some(uid) {
            return None;
        }
        Some(UserInfo::service_account(ns, name, uid))
    }
}

fn header_values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

/// Who sent the request: its bearer token, or anonymous. 401 for a token nobody issued.
pub fn authenticate(store: &Store, headers: &HeaderMap) -> Result<UserInfo, ApiError> {
    let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return Ok(UserInfo::anonymous());
    };
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .ok_or_else(unauthorized)?;
    store.auth.token_user(store, token).ok_or_else(unauthorized)
}

fn unauthorized() -> ApiError {
    ApiError::new(401, "Unauthorized", "Unauthorized")
}

/// Applies the `Impersonate-*` headers: each requires the `impersonate` verb on what it names.
pub fn impersonate(
    store: &Store,
    user: UserInfo,
    headers: &HeaderMap,
) -> Result<UserInfo, ApiError> {
    let target = header_values(headers, "impersonate-user");
    let groups = header_values(headers, "impersonate-group");
    let uid = header_values(headers, "impersonate-uid");
    let extras: Vec<(String, &str)> = headers
        .iter()
        .filter_map(|(k, v)| {
            let key = k.as_str().strip_prefix("impersonate-extra-")?;
            Some((percent_decode(key), v.to_str().ok()?))
        })
        .collect();
    if target.is_empty() {
        if !groups.is_empty() || !uid.is_empty() || !extras.is_empty() {
            return Err(ApiError::new(
                500,
                "InternalError",
                "Internal error occurred: requested impersonation of groups, uid or extra without impersonating a user",
            ));
        }
        return Ok(user);
    }
    let name = target[0];
    let check = |attrs: Attributes| -> Result<(), ApiError> {
        if authorize(store, &user, &attrs) {
            Ok(())
        } else {
            Err(attrs.forbidden(&user))
        }
    };
    let sa = name
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'));
    match sa {
        Some((ns, sa_name)) => check(Attributes::resource(
            "impersonate",
            "",
            "serviceaccounts",
            None,
            Some(ns),
            Some(sa_name),
        ))?,
        None => check(Attributes::resource(
            "impersonate",
            "",
            "users",
            None,
            None,
            Some(name),
        ))?,
    }
    for g in &groups {
        check(Attributes::resource(
            "impersonate",
            "",
            "groups",
            None,
            None,
            Some(g),
        ))?;
    }
    for u in &uid {
        check(Attributes::resource(
            "impersonate",
            "authentication.k8s.io",
            "uids",
            None,
            None,
            Some(u),
        ))?;
    }
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, value) in &extras {
        check(Attributes::resource(
            "impersonate",
            "authentication.k8s.io",
            "userextras",
            Some(key),
            None,
            Some(value),
        ))?;
        extra
            .entry(key.clone())
            .or_default()
            .push(value.to_string());
    }
    let mut out = match sa {
        Some((ns, sa_name)) if groups.is_empty() => UserInfo::service_account(ns, sa_name, ""),
        _ => UserInfo::new(name, &groups),
    };
    if name != "system:anonymous" && !out.groups.iter().any(|g| g == "system:authenticated") {
        out.groups.push("system:authenticated".into());
    }
    out.uid = uid.first().map(|u| u.to_string()).unwrap_or_default();
    out.extra = extra;
    Ok(out)
}

fn percent_decode(s: &str) -> String {
    form_urlencoded::parse(format!("k={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

/// The strings of a JSON array (others and non-arrays: none).
pub(crate) fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn subject_matches(subject: &Value, user: &UserInfo, binding_ns: Option<&str>) -> bool {
    let name = subject["name"].as_str().unwrap_or_default();
    match subject["kind"].as_str().unwrap_or_default() {
        "User" => user.name == name,
        "Group" => user.groups.iter().any(|g| g == name),
        "ServiceAccount" => {
            let ns = subject["namespace"]
                .as_str()
                .filter(|s| !s.is_empty())
                .or(binding_ns)
                .unwrap_or_default();
            user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

/// Whether one PolicyRule allows the request (the API server's `RuleAllows`).
pub fn rule_allows(rule: &Value, attrs: &Attributes) -> bool {
    let verbs = strings(&rule["verbs"]);
    let verb_ok = |verb: &str| verbs.iter().any(|v| *v == "*" || *v == verb);
    match attrs {
        Attributes::Resource {
            verb,
            group,
            resource,
            subresource,
            name,
            ..
        } => {
            if !verb_ok(verb) {
                return false;
            }
            let groups = strings(&rule["apiGroups"]);
            if !groups.iter().any(|g| *g == "*" || g == group) {
                return false;
            }
            let combined = match subresource {
                Some(s) => format!("{resource}/{s}"),
                None => resource.clone(),
            };
            let resources = strings(&rule["resources"]);
            let resource_ok = resources.iter().any(|r| {
                *r == "*"
                    || *r == combined
                    || subresource.as_ref().is_some_and(|s| *r == format!("*/{s}"))
            });
            if !resource_ok {
                return false;
            }
            let names = strings(&rule["resourceNames"]);
            names.is_empty() || name.as_ref().is_some_and(|n| names.contains(&n.as_str()))
        }
        Attributes::NonResource { verb, path } => {
            if !verb_ok(verb) {
                return false;
            }
            strings(&rule["nonResourceURLs"]).iter().any(|u| {
                *u == "*"
                    || u == path
                    || u.strip_suffix('*')
                        .is_some_and(|prefix| path.starts_with(prefix))
            })
        }
    }
}

fn rbac_objects(store: &Store, plural: &str, ns: Option<&str>) -> Vec<Value> {
    match store.resolve("rbac.authorization.k8s.io", "v1", plural) {
        Some(rt) => store.list(&rt, ns, &|_| true, None, None).0,
        None => vec![],
    }
}

/// The rules that apply to `user` in `namespace` (cluster-wide ones included), from every
/// binding that names them.
pub fn rules_for(store: &Store, user: &UserInfo, namespace: Option<&str>) -> Vec<Value> {
    let cluster_roles: HashMap<String, Value> = rbac_objects(store, "clusterroles", None)
        .into_iter()
        .map(|r| {
            (
                r["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                r,
            )
        })
        .collect();
    let mut rules = Vec::new();
    let mut push_role = |role_ref: &Value, roles: &HashMap<String, Value>| {
        let name = role_ref["name"].as_str().unwrap_or_default();
        if let Some(role) = roles.get(name) {
            rules.extend(role["rules"].as_array().cloned().unwrap_or_default());
        }
    };
    for b in rbac_objects(store, "clusterrolebindings", None) {
        let subjects = b["subjects"].as_array().cloned().unwrap_or_default();
        if subjects.iter().any(|s| subject_matches(s, user, None)) {
            push_role(&b["roleRef"], &cluster_roles);
        }
    }
    if let Some(ns) = namespace {
        let roles: HashMap<String, Value> = rbac_objects(store, "roles", Some(ns))
            .into_iter()
            .map(|r| {
                (
                    r["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    r,
                )
            })
            .collect();
        for b in rbac_objects(store, "rolebindings", Some(ns)) {
            let subjects = b["subjects"].as_array().cloned().unwrap_or_default();
            if !subjects.iter().any(|s| subject_matches(s, user, Some(ns))) {
                continue;
            }
            match b["roleRef"]["kind"].as_str() {
                Some("ClusterRole") => push_role(&b["roleRef"], &cluster_roles),
                _ => push_role(&b["roleRef"], &roles),
            }
        }
    }
    rules
}

/// RBAC's decision. `system:masters` is never restricted, as on a real API server.
pub fn authorize(store: &Store, user: &UserInfo, attrs: &Attributes) -> bool {
    if user.groups.iter().any(|g| g == "system:masters") {
        return true;
    }
    let namespace = match attrs {
        Attributes::Resource { namespace, .. } => namespace.as_deref(),
        Attributes::NonResource { .. } => None,
    };
    rules_for(store, user, namespace)
        .iter()
        .any(|r| rule_allows(r, attrs))
}

/// Label selectors of an aggregationRule as (matchLabels, matchExpressions) checks.
fn selector_matches(selector: &Value, labels: &serde_json::Map<String, Value>) -> bool {
    let ok_labels = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let ok_exprs = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let key = e["key"].as_str().unwrap_or_default();
            let values = strings(&e["values"]);
            let have = labels.get(key).and_then(Value::as_str);
            match e["operator"].as_str().unwrap_or_default() {
                "In" => have.is_some_and(|h| values.contains(&h)),
                "NotIn" => !have.is_some_and(|h| values.contains(&h)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            }
        });
    ok_labels && ok_exprs
}

/// The rules every aggregated ClusterRole should carry now: the union of the rules of the
/// ClusterRoles its `aggregationRule` selects, in name order, without repeats. What the
/// clusterrole-aggregation controller writes; returns (name, rules) for roles that differ.
pub fn aggregate(cluster_roles: &[Value]) -> Vec<(String, Vec<Value>)> {
    let mut current: BTreeMap<String, Value> = cluster_roles
        .iter()
        .map(|r| {
            (
                r["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                r.clone(),
            )
        })
        .collect();
    let mut changed = BTreeSet::new();
    // Aggregators may select each other (admin selects edit): iterate to a fixpoint.
    for _ in 0..8 {
        let mut any = false;
        let snapshot = current.clone();
        for (name, role) in current.iter_mut() {
            let selectors = role["aggregationRule"]["clusterRoleSelectors"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if selectors.is_empty() {
                continue;
            }
            let mut rules: Vec<Value> = Vec::new();
            for (other_name, other) in &snapshot {
                if other_name == name {
                    continue;
                }
                let labels = other["metadata"]["labels"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                if selectors.iter().any(|s| selector_matches(s, &labels)) {
                    for r in other["rules"].as_array().into_iter().flatten() {
                        if !rules.contains(r) {
                            rules.push(r.clone());
                        }
                    }
                }
            }
            let new = Value::Array(rules);
            if role["rules"] != new && !(role["rules"].is_null() && new == json!([])) {
                role["rules"] = new;
                changed.insert(name.clone());
                any = true;
            }
        }
        if !any {
            break;
        }
    }
    changed
        .into_iter()
        .map(|n| {
            let rules = current[&n]["rules"].as_array().cloned().unwrap_or_default();
            (n, rules)
        })
        .collect()
}

/// The bootstrap RBAC objects of a new API server (a subset of Kubernetes' own policy:
/// the roles users and charts bind to, and the discovery and self-review grants).
pub fn bootstrap_objects() -> Vec<Value> {
    let role = |name: &str, labels: Value, rules: Value| {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": name, "labels": merge(json!({"kubernetes.io/bootstrapping": "rbac-defaults"}), labels),
                         "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
            "rules": rules,
        })
    };
    let aggregated = |name: &str, labels: Value, selector: &str| {
        let mut r = role(name, labels, json!([]));
        r["aggregationRule"] =
            json!({"clusterRoleSelectors": [{"matchLabels": {selector: "true"}}]});
        r
    };
    let binding = |name: &str, role: &str, groups: &[&str]| {
        let subjects: Vec<Value> = groups
            .iter()
            .map(|g| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g}))
            .collect();
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
                         "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": subjects,
        })
    };
    let read = json!(["get", "list", "watch"]);
    let write = json!(["create", "delete", "deletecollection", "patch", "update"]);
    vec![
        role(
            "cluster-admin",
            json!({}),
            json!([
                {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                {"nonResourceURLs": ["*"], "verbs": ["*"]},
            ]),
        ),
        aggregated(
            "admin",
            json!({}),
            "rbac.authorization.k8s.io/aggregate-to-admin",
        ),
        aggregated(
            "edit",
            json!({"rbac.authorization.k8s.io/aggregate-to-admin": "true"}),
            "rbac.authorization.k8s.io/aggregate-to-edit",
        ),
        aggregated(
            "view",
            json!({"rbac.authorization.k8s.io/aggregate-to-edit": "true"}),
            "rbac.authorization.k8s.io/aggregate-to-view",
        ),
        role(
            "system:aggregate-to-admin",
            json!({"rbac.authorization.k8s.io/aggregate-to-admin": "true"}),
            json!([
                {"apiGroups": ["authorization.k8s.io"], "resources": ["localsubjectaccessreviews"], "verbs": ["create"]},
                {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings", "roles"], "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]},
            ]),
        ),
        role(
            "system:aggregate-to-edit",
            json!({"rbac.authorization.k8s.io/aggregate-to-edit": "true"}),
            json!([
                {"apiGroups": [""], "resources": ["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"], "verbs": ["create", "delete", "deletecollection", "patch", "update"]},
                {"apiGroups": [""], "resources": ["configmaps", "events", "persistentvolumeclaims", "replicationcontrollers", "replicationcontrollers/scale", "secrets", "serviceaccounts", "services", "services/proxy"], "verbs": write},
                {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]},
                {"apiGroups": ["apps"], "resources": ["daemonsets", "deployments", "deployments/rollback", "deployments/scale", "replicasets", "replicasets/scale", "statefulsets", "statefulsets/scale"], "verbs": write},
                {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": write},
                {"apiGroups": ["batch"], "resources": ["cronjobs", "jobs"], "verbs": write},
                {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "networkpolicies"], "verbs": write},
                {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": write},
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": write},
            ]),
        ),
        role(
            "system:aggregate-to-view",
            json!({"rbac.authorization.k8s.io/aggregate-to-view": "true"}),
            json!([
                {"apiGroups": [""], "resources": ["configmaps", "endpoints", "persistentvolumeclaims", "persistentvolumeclaims/status", "pods", "pods/log", "pods/status", "replicationcontrollers", "replicationcontrollers/scale", "replicationcontrollers/status", "serviceaccounts", "services", "services/status"], "verbs": read},
                {"apiGroups": [""], "resources": ["bindings", "events", "limitranges", "namespaces/status", "pods/log", "pods/status", "replicationcontrollers/status", "resourcequotas", "resourcequotas/status"], "verbs": read},
                {"apiGroups": [""], "resources": ["namespaces"], "verbs": read},
                {"apiGroups": ["apps"], "resources": ["controllerrevisions", "daemonsets", "daemonsets/status", "deployments", "deployments/scale", "deployments/status", "replicasets", "replicasets/scale", "replicasets/status", "statefulsets", "statefulsets/scale", "statefulsets/status"], "verbs": read},
                {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers", "horizontalpodautoscalers/status"], "verbs": read},
                {"apiGroups": ["batch"], "resources": ["cronjobs", "cronjobs/status", "jobs", "jobs/status"], "verbs": read},
                {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "ingresses/status", "networkpolicies"], "verbs": read},
                {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets", "poddisruptionbudgets/status"], "verbs": read},
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": read},
            ]),
        ),
        role(
            "system:discovery",
            json!({}),
            json!([{"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz", "/version", "/version/"], "verbs": ["get"]}]),
        ),
        role(
            "system:basic-user",
            json!({}),
            json!([
                {"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]},
                {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]},
            ]),
        ),
        role(
            "system:public-info-viewer",
            json!({}),
            json!([{"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]}]),
        ),
        binding("cluster-admin", "cluster-admin", &["system:masters"]),
        binding(
            "system:discovery",
            "system:discovery",
            &["system:authenticated"],
        ),
        binding(
            "system:basic-user",
            "system:basic-user",
            &["system:authenticated"],
        ),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &["system:authenticated", "system:unauthenticated"],
        ),
    ]
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(am), Value::Object(bm)) = (a.as_object_mut(), b) {
        am.extend(bm);
    }
    a
}

/// `status` of a SelfSubjectRulesReview: the rules that apply in `namespace`, split into
/// resource and non-resource rules as the API server does.
pub fn rules_review(store: &Store, user: &UserInfo, namespace: &str) -> Value {
    if user.groups.iter().any(|g| g == "system:masters") {
        return json!({
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": false,
        });
    }
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for r in rules_for(store, user, Some(namespace).filter(|n| !n.is_empty())) {
        if r["nonResourceURLs"].is_array() {
            non_resource_rules
                .push(json!({"verbs": r["verbs"], "nonResourceURLs": r["nonResourceURLs"]}));
        } else {
            let mut out = json!({"verbs": r["verbs"], "apiGroups": r["apiGroups"], "resources": r["resources"]});
            if r["resourceNames"].is_array() {
                out["resourceNames"] = r["resourceNames"].clone();
            }
            resource_rules.push(out);
        }
    }
    json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": false})
}

/// The attributes a SubjectAccessReview-like spec asks about.
pub fn review_attributes(spec: &Value) -> Result<Attributes, String> {
    if let Some(r) = spec.get("resourceAttributes").filter(|r| r.is_object()) {
        let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
        return Ok(Attributes::resource(
            &s("verb"),
            &s("group"),
            &s("resource"),
            Some(s("subresource").as_str()),
            Some(s("namespace").as_str()),
            Some(s("name").as_str()),
        ));
    }
    if let Some(n) = spec.get("nonResourceAttributes").filter(|r| r.is_object()) {
        return Ok(Attributes::NonResource {
            verb: n["verb"].as_str().unwrap_or_default().into(),
            path: n["path"].as_str().unwrap_or_default().into(),
        });
    }
    Err("exactly one of nonResourceAttributes or resourceAttributes must be specified".into())
}

/// A review's `status`: allowed or not, with the reason a real server gives.
pub fn review_status(store: &Store, user: &UserInfo, attrs: &Attributes) -> Value {
    if authorize(store, user, attrs) {
        let reason = if user.groups.iter().any(|g| g == "system:masters") {
            "system:masters".to_string()
        } else {
            "RBAC: allowed by a binding".to_string()
        };
        json!({"allowed": true, "reason": reason})
    } else {
        json!({"allowed": false})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(
        verb: &str,
        group: &str,
        resource: &str,
        sub: Option<&str>,
        name: Option<&str>,
    ) -> Attributes {
        Attributes::resource(verb, group, resource, sub, Some("ns"), name)
    }

    #[test]
    fn rules_match_verbs_groups_resources_and_names() {
        let rule = json!({"apiGroups": ["apps"], "resources": ["deployments", "deployments/scale"], "verbs": ["get", "patch"]});
        assert!(rule_allows(
            &rule,
            &attrs("get", "apps", "deployments", None, None)
        ));
        assert!(rule_allows(
            &rule,
            &attrs("patch", "apps", "deployments", Some("scale"), None)
        ));
        assert!(!rule_allows(
            &rule,
            &attrs("patch", "apps", "deployments", Some("status"), None)
        ));
        assert!(!rule_allows(
            &rule,
            &attrs("delete", "apps", "deployments", None, None)
        ));
        assert!(!rule_allows(
            &rule,
            &attrs("get", "", "deployments", None, None)
        ));
        let star = json!({"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["*"]});
        assert!(rule_allows(
            &star,
            &attrs("update", "x.io", "things", Some("status"), None)
        ));
        assert!(!rule_allows(
            &star,
            &attrs("update", "x.io", "things", None, None)
        ));
        let named = json!({"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["kelp-operator"], "verbs": ["get", "update"]});
        assert!(rule_allows(
            &named,
            &attrs(
                "get",
                "coordination.k8s.io",
                "leases",
                None,
                Some("kelp-operator")
            )
        ));
        assert!(!rule_allows(
            &named,
            &attrs("get", "coordination.k8s.io", "leases", None, Some("other"))
        ));
        // A list has no name: resourceNames never allow it.
        assert!(!rule_allows(
            &named,
            &attrs("get", "coordination.k8s.io", "leases", None, None)
        ));
        let urls = json!({"nonResourceURLs": ["/apis/*", "/version"], "verbs": ["get"]});
        let nr = |p: &str| Attributes::NonResource {
            verb: "get".into(),
            path: p.into(),
        };
        assert!(rule_allows(&urls, &nr("/apis/apps/v1")));
        assert!(rule_allows(&urls, &nr("/version")));
        assert!(!rule_allows(&urls, &nr("/api")));
    }

    #[test]
    fn forbidden_messages_read_like_the_api_server() {
        let user = UserInfo::service_account("kelp-system", "kelp", "u");
        let a = Attributes::resource("list", "", "secrets", None, None, None);
        assert_eq!(
            a.forbidden(&user).message,
            "secrets is forbidden: User \"system:serviceaccount:kelp-system:kelp\" cannot list resource \"secrets\" in API group \"\" at the cluster scope"
        );
        let a = Attributes::resource(
            "patch",
            "kelp.imagine-ai.eu",
            "clusters",
            Some("status"),
            Some("team-a"),
            Some("gpu"),
        );
        assert_eq!(
            a.forbidden(&user).message,
            "clusters.kelp.imagine-ai.eu \"gpu\" is forbidden: User \"system:serviceaccount:kelp-system:kelp\" cannot patch resource \"clusters/status\" in API group \"kelp.imagine-ai.eu\" in the namespace \"team-a\""
        );
    }

    #[test]
    fn aggregation_follows_labels_through_aggregators() {
        let objs = bootstrap_objects();
        let mut roles: Vec<Value> = objs
            .into_iter()
            .filter(|o| o["kind"] == "ClusterRole")
            .collect();
        roles.push(json!({"metadata": {"name": "kelp-view", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
                          "rules": [{"apiGroups": ["kelp.imagine-ai.eu"], "resources": ["modules"], "verbs": ["get"]}]}));
        let changed: BTreeMap<String, Vec<Value>> = aggregate(&roles).into_iter().collect();
        let kelp_rule = json!({"apiGroups": ["kelp.imagine-ai.eu"], "resources": ["modules"], "verbs": ["get"]});
        for name in ["view", "edit", "admin"] {
            assert!(
                changed[name].contains(&kelp_rule),
                "{name} lacks the kelp-view rule"
            );
        }
        assert!(!changed.contains_key("kelp-view"));
    }
}
