//! Authentication, impersonation and RBAC, against what a real API server answers.

mod common;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use kelp_testapi::TestApiServer;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Config};
use serde_json::{Value, json};

fn client_as(server: &TestApiServer, token: Option<&str>, impersonate: Option<&str>) -> Client {
    let mut config = Config::new(server.url().parse().unwrap());
    config.root_cert = Some(vec![server.ca_der().to_vec()]);
    config.default_namespace = "default".into();
    config.auth_info.token = token.map(|t| t.to_string().into());
    config.auth_info.impersonate = impersonate.map(String::from);
    Client::try_from(config).unwrap()
}

async fn apply(client: &Client, obj: Value) {
    let kind = obj["kind"].as_str().unwrap().to_string();
    let name = obj["metadata"]["name"].as_str().unwrap().to_string();
    let ns = obj["metadata"]["namespace"].as_str().map(String::from);
    let (group, version) = obj["apiVersion"]
        .as_str()
        .unwrap()
        .split_once('/')
        .map(|(g, v)| (g.to_string(), v.to_string()))
        .unwrap_or((
            String::new(),
            obj["apiVersion"].as_str().unwrap().to_string(),
        ));
    let gvk = kube::api::GroupVersionKind::gvk(&group, &version, &kind);
    let ar =
        kube::api::ApiResource::from_gvk_with_plural(&gvk, &format!("{}s", kind.to_lowercase()));
    let api: Api<kube::api::DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), &ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    api.patch(
        &name,
        &PatchParams::apply("test").force(),
        &Patch::Apply(&obj),
    )
    .await
    .unwrap();
}

/// A RoleBinding in `default` of the Role or ClusterRole `role` to the ServiceAccount `sa`
/// (whose namespace the subject leaves out: the binding's own).
async fn bind_service_account(admin: &Client, role_kind: &str, role: &str, sa: &str) {
    apply(
        admin,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": format!("{sa}-{role}"), "namespace": "default"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": sa}]}),
    )
    .await;
}

async fn token_for(admin: &Client, ns: &str, sa: &str) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), ns);
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": sa}})).unwrap(),
    )
    .await
    .unwrap();
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token"))
        .header("content-type", "application/json")
        .body(
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}})
                .to_string()
                .into_bytes(),
        )
        .unwrap();
    let out: Value = admin.request(req).await.unwrap();
    assert_eq!(out["kind"], "TokenRequest");
    out["status"]["token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn anonymous_and_unknown_tokens_get_what_a_real_server_gives() {
    let (server, _admin) = common::server().await;
    let anon = client_as(&server, None, None);
    let err = Api::<Namespace>::all(anon.clone())
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert_eq!(common::api_code(&err), 403);
    assert_eq!(
        common::api_message(&err),
        "namespaces is forbidden: User \"system:anonymous\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope"
    );
    // Health and version are public; discovery is for authenticated users only.
    let (code, _, _) = common::raw(&anon, "GET", "/healthz", &[], "").await;
    assert_eq!(code, 200);
    let (code, _, _) = common::raw(&anon, "GET", "/version", &[], "").await;
    assert_eq!(code, 200);
    let (code, _, body) = common::raw(&anon, "GET", "/apis", &[], "").await;
    assert_eq!(code, 403);
    assert!(body.contains("cannot get path \\\"/apis\\\""), "{body}");

    let bad = client_as(&server, Some("not-a-token"), None);
    let err = Api::<Namespace>::all(bad)
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert_eq!(common::api_code(&err), 401);
    assert_eq!(common::api_reason(&err), "Unauthorized");
}

#[tokio::test]
async fn service_account_tokens_are_bound_by_rbac() {
    let (server, admin) = common::server().await;
    let token = token_for(&admin, "default", "kelp").await;
    let sa = client_as(&server, Some(&token), None);

    let secrets: Api<Secret> = Api::namespaced(sa.clone(), "default");
    let err = secrets.list(&ListParams::default()).await.unwrap_err();
    assert_eq!(
        common::api_message(&err),
        "secrets is forbidden: User \"system:serviceaccount:default:kelp\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\""
    );

    apply(&admin, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "secrets-reader", "namespace": "default"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]},
                  {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["kelp-prices"], "verbs": ["get", "patch"]}]})).await;
    bind_service_account(&admin, "Role", "secrets-reader", "kelp").await;
    secrets.list(&ListParams::default()).await.unwrap();
    // The Role is namespaced: other namespaces and the cluster scope stay closed.
    let err = Api::<Secret>::all(sa.clone())
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert_eq!(common::api_code(&err), 403);
    let err = Api::<Secret>::namespaced(sa.clone(), "kube-system")
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert!(common::api_message(&err).contains("in the namespace \"kube-system\""));
    // Writes are not granted.
    let err = secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap(),
        )
        .await
        .unwrap_err();
    assert!(common::api_message(&err).contains("cannot create resource \"secrets\""));

    // resourceNames: only the named ConfigMap, and a create of it by apply needs `create`.
    let cms: Api<ConfigMap> = Api::namespaced(sa.clone(), "default");
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kelp-prices"}, "data": {"a": "1"}});
    let err = cms
        .patch(
            "kelp-prices",
            &PatchParams::apply("kelp"),
            &Patch::Apply(&cm),
        )
        .await
        .unwrap_err();
    assert_eq!(
        common::api_message(&err),
        "configmaps \"kelp-prices\" is forbidden: User \"system:serviceaccount:default:kelp\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"default\""
    );
    Api::<ConfigMap>::namespaced(admin.clone(), "default")
        .patch(
            "kelp-prices",
            &PatchParams::apply("admin"),
            &Patch::Apply(&cm),
        )
        .await
        .unwrap();
    cms.patch(
        "kelp-prices",
        &PatchParams::apply("kelp"),
        &Patch::Apply(&cm),
    )
    .await
    .unwrap();
    let err = cms.get("other").await.unwrap_err();
    assert_eq!(common::api_code(&err), 403);

    // A token of a ServiceAccount that is gone authenticates nobody.
    Api::<ServiceAccount>::namespaced(admin.clone(), "default")
        .delete("kelp", &Default::default())
        .await
        .unwrap();
    let err = secrets.list(&ListParams::default()).await.unwrap_err();
    assert_eq!(common::api_code(&err), 401);
}

#[tokio::test]
async fn aggregated_cluster_roles_pick_up_labelled_roles() {
    let (server, admin) = common::server().await;
    apply(&admin, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "kelp-view", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
        "rules": [{"apiGroups": ["kelp.imagine-ai.eu"], "resources": ["modules", "clusters", "deployments"], "verbs": ["get", "list", "watch"]}]})).await;
    let roles: Api<kube::api::DynamicObject> = Api::all_with(
        admin.clone(),
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", "ClusterRole"),
            "clusterroles",
        ),
    );
    let view = roles.get("view").await.unwrap();
    let rules = &view.data["rules"];
    assert!(
        rules
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["apiGroups"] == json!(["kelp.imagine-ai.eu"])),
        "view aggregates kelp-view: {rules}"
    );
    // edit and admin aggregate view's labelled roles in turn.
    for name in ["edit", "admin"] {
        let r = roles.get(name).await.unwrap();
        assert!(
            r.data["rules"].to_string().contains("kelp.imagine-ai.eu"),
            "{name}"
        );
    }

    // A namespace user bound to `view` reads kelp objects there.
    let token = token_for(&admin, "default", "viewer").await;
    bind_service_account(&admin, "ClusterRole", "view", "viewer").await;
    let viewer = client_as(&server, Some(&token), None);
    let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"namespace": "default", "verb": "list", "group": "kelp.imagine-ai.eu", "resource": "clusters"}}});
    let (code, _, body) = common::raw(
        &viewer,
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        &[("content-type", "application/json")],
        &review.to_string(),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let out: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(out["status"]["allowed"], true, "{out}");

    // Dropping the label takes the rules out again.
    apply(&admin, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "kelp-view", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "false"}},
        "rules": [{"apiGroups": ["kelp.imagine-ai.eu"], "resources": ["modules"], "verbs": ["get"]}]})).await;
    let view = roles.get("view").await.unwrap();
    assert!(
        !view.data["rules"]
            .to_string()
            .contains("kelp.imagine-ai.eu")
    );
    let (_, _, body) = common::raw(
        &viewer,
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        &[("content-type", "application/json")],
        &review.to_string(),
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["status"]["allowed"],
        false
    );
}

#[tokio::test]
async fn impersonation_needs_the_impersonate_verb() {
    let (server, admin) = common::server().await;
    server.store().auth.add_token(
        "alice-token",
        kelp_testapi::auth::UserInfo::new("alice", &["system:authenticated"]),
    );
    let whoami = |c: Client| async move {
        let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
            .to_string();
        let (code, _, out) = common::raw(
            &c,
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            &[("content-type", "application/json")],
            &body,
        )
        .await;
        (code, out)
    };
    // The admin may impersonate anyone.
    let as_bob = client_as(&server, Some(server.admin_token()), Some("bob"));
    let (code, out) = whoami(as_bob).await;
    assert_eq!(code, 201, "{out}");
    let out: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(out["status"]["userInfo"]["username"], "bob");
    assert_eq!(
        out["status"]["userInfo"]["groups"],
        json!(["system:authenticated"])
    );

    // alice may not, until a ClusterRole lets her impersonate bob.
    let alice_as_bob = client_as(&server, Some("alice-token"), Some("bob"));
    let (code, out) = whoami(alice_as_bob.clone()).await;
    assert_eq!(code, 403);
    assert!(out.contains("users \\\"bob\\\" is forbidden: User \\\"alice\\\" cannot impersonate resource \\\"users\\\" in API group \\\"\\\" at the cluster scope"), "{out}");
    apply(&admin, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "impersonate-bob"},
        "rules": [{"apiGroups": [""], "resources": ["users"], "resourceNames": ["bob"], "verbs": ["impersonate"]}]})).await;
    apply(&admin, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "alice-impersonates-bob"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "impersonate-bob"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]})).await;
    let (code, out) = whoami(alice_as_bob).await;
    assert_eq!(code, 201, "{out}");
    // bob's own rights apply, not alice's.
    let err = Api::<Secret>::namespaced(
        client_as(&server, Some("alice-token"), Some("bob")),
        "default",
    )
    .list(&ListParams::default())
    .await
    .unwrap_err();
    assert!(common::api_message(&err).contains("User \"bob\" cannot list"));

    // Groups need their own grant.
    let (code, _, out) = common::raw(
        &client_as(&server, Some("alice-token"), None),
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        &[
            ("content-type", "application/json"),
            ("impersonate-user", "bob"),
            ("impersonate-group", "vo.imagine-ai.eu"),
        ],
        &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}).to_string(),
    )
    .await;
    assert_eq!(code, 403, "{out}");
    assert!(
        out.contains("cannot impersonate resource \\\"groups\\\""),
        "{out}"
    );
}

#[tokio::test]
async fn rules_reviews_list_what_a_user_may_do() {
    let (server, admin) = common::server().await;
    let token = token_for(&admin, "default", "kelp").await;
    apply(&admin, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "lease", "namespace": "default"},
        "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["kelp-operator"], "verbs": ["get", "update"]}]})).await;
    bind_service_account(&admin, "Role", "lease", "kelp").await;
    let sa = client_as(&server, Some(&token), None);
    let body = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview", "spec": {"namespace": "default"}});
    let (code, _, out) = common::raw(
        &sa,
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
        &[("content-type", "application/json")],
        &body.to_string(),
    )
    .await;
    assert_eq!(code, 201, "{out}");
    let out: Value = serde_json::from_str(&out).unwrap();
    let rules = out["status"]["resourceRules"].as_array().unwrap();
    assert!(rules.contains(&json!({"verbs": ["get", "update"], "apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["kelp-operator"]})), "{out}");
    // From system:basic-user, which binds every authenticated user.
    assert!(
        rules
            .iter()
            .any(|r| r["resources"]
                == json!(["selfsubjectaccessreviews", "selfsubjectrulesreviews"]))
    );
    assert!(
        out["status"]["nonResourceRules"]
            .to_string()
            .contains("/apis/*")
    );
}
