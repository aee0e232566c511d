//! The console's access model in RBAC terms, shared by `kelp dev` and checked against
//! the Helm chart's templates:
//! - the console's own ServiceAccount may only impersonate users and groups
//!   (ClusterRole `kelp-console`);
//! - a user works in their namespace through a RoleBinding to the ClusterRole
//!   `kelp-console-user`: kelp's objects, the Secrets for credentials, and Events.

use serde_json::{Value, json};

use super::NamespaceMode;
use super::auth::User;

/// The ClusterRole of the console's ServiceAccount.
pub const CONSOLE_ROLE: &str = "kelp-console";
/// The ClusterRole a user is bound to in their namespace.
pub const USER_ROLE: &str = "kelp-console-user";

/// The rules of `kelp-console`: impersonation of users and groups, nothing else.
pub fn console_rules() -> Value {
    json!([{"apiGroups": [""], "resources": ["users", "groups"], "verbs": ["impersonate"]}])
}

/// The rules of `kelp-console-user`.
pub fn user_rules() -> Value {
    json!([
        {"apiGroups": ["kelp.imagine-ai.eu"], "resources": ["modules", "clusters", "deployments"],
         "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
        {"apiGroups": [""], "resources": ["secrets"],
         "verbs": ["get", "list", "create", "update", "patch", "delete"]},
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["get", "list", "watch"]},
    ])
}

/// The two ClusterRoles.
pub fn cluster_roles() -> Vec<Value> {
    vec![
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": CONSOLE_ROLE}, "rules": console_rules()}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": USER_ROLE}, "rules": user_rules()}),
    ]
}

/// What an administrator creates for a user to work in the console: their namespace and
/// the RoleBinding to `kelp-console-user` (for the user, or in VO mode for the VO's
/// group). `kelp dev` applies these itself at login; the chart's `console.tenants` makes
/// them for a real cluster.
pub fn tenant(user: &User, mode: NamespaceMode) -> Vec<Value> {
    let ns = &user.namespace;
    let subjects = match (mode, user.vos.first()) {
        (NamespaceMode::Vo, Some(vo)) => {
            json!([{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": format!("oidc:vo:{vo}")}])
        }
        _ => json!([{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user.name}]),
    };
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns,
            "labels": {"app.kubernetes.io/managed-by": "kelp-console"}}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": USER_ROLE, "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": USER_ROLE},
            "subjects": subjects}),
    ]
}
