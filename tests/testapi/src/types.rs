//! The resource types the server serves: built-in kinds and those registered by CRDs.

use serde_json::{Value, json};

use crate::table::Column;

/// The scale subresource of a kind: where replicas live in spec and status.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaleSpec {
    pub spec_replicas_path: String,
    pub status_replicas_path: String,
    pub label_selector_path: Option<String>,
}

/// One served resource (group, version, plural) and what the server knows about it.
#[derive(Clone, Debug)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub status: bool,
    pub scale: Option<ScaleSpec>,
    /// The CRD's openAPIV3Schema; None for built-in kinds, which are stored schemaless.
    pub schema: Option<std::sync::Arc<crate::schema::Schema>>,
    /// Printer columns for `kubectl get`.
    pub columns: Vec<Column>,
    /// Name of the CRD that registered this type.
    pub crd: Option<String>,
    /// Reviews (access reviews, token reviews): answered, never stored; only `create`.
    pub review: bool,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Objects of every version of a (group, plural) share one store.
    pub fn store_key(&self) -> (String, String) {
        (self.group.clone(), self.plural.clone())
    }

    /// The "group/resource" name used in error messages, e.g. `modules.kelp.imagine-ai.eu`.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Whether writes go through the CRD schema (pruning, defaults, validation).
    pub fn is_custom(&self) -> bool {
        self.crd.is_some()
    }

    fn builtin(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        ResourceType {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            singular: kind.to_lowercase(),
            namespaced,
            short_names: vec![],
            categories: vec![],
            status: false,
            scale: None,
            schema: None,
            columns: crate::table::builtin_columns(kind),
            crd: None,
            review: false,
        }
    }

    fn review_kind(group: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        let mut t = Self::builtin(group, "v1", kind, plural, namespaced);
        t.review = true;
        t
    }

    fn short(mut self, names: &[&str]) -> Self {
        self.short_names = names.iter().map(|s| s.to_string()).collect();
        self
    }

    fn with_status(mut self) -> Self {
        self.status = true;
        self
    }

    fn all(mut self) -> Self {
        self.categories = vec!["all".into()];
        self
    }
}

/// The built-in kinds: stored schemaless, typed enough for kubectl and the operator.
pub fn builtin_types() -> Vec<ResourceType> {
    let rt = ResourceType::builtin;
    vec![
        rt("", "v1", "Namespace", "namespaces", false)
            .short(&["ns"])
            .with_status(),
        rt("", "v1", "Secret", "secrets", true),
        rt("", "v1", "ConfigMap", "configmaps", true).short(&["cm"]),
        rt("", "v1", "Event", "events", true).short(&["ev"]),
        rt("", "v1", "Service", "services", true)
            .short(&["svc"])
            .with_status()
            .all(),
        rt("", "v1", "Pod", "pods", true)
            .short(&["po"])
            .with_status()
            .all(),
        rt("", "v1", "Node", "nodes", false)
            .short(&["no"])
            .with_status(),
        rt("", "v1", "ServiceAccount", "serviceaccounts", true).short(&["sa"]),
        // Kept, not enforced: an eviction (pods/eviction) always succeeds here.
        rt(
            "policy",
            "v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            true,
        )
        .short(&["pdb"])
        .with_status(),
        {
            let mut d = rt("apps", "v1", "Deployment", "deployments", true)
                .short(&["deploy"])
                .with_status()
                .all();
            d.scale = Some(ScaleSpec {
                spec_replicas_path: ".spec.replicas".into(),
                status_replicas_path: ".status.replicas".into(),
                label_selector_path: None,
            });
            d
        },
        rt("coordination.k8s.io", "v1", "Lease", "leases", true),
        rt("rbac.authorization.k8s.io", "v1", "Role", "roles", true),
        rt(
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            true,
        ),
        rt(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            "clusterroles",
            false,
        ),
        rt(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
        ),
        rt(
            "policy",
            "v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            true,
        )
        .short(&["pdb"])
        .with_status(),
        rt(
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
            true,
        )
        .short(&["netpol"]),
        rt(
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            true,
        )
        .short(&["hpa"])
        .with_status()
        .all(),
        ResourceType::review_kind(
            "authorization.k8s.io",
            "SelfSubjectAccessReview",
            "selfsubjectaccessreviews",
            false,
        ),
        ResourceType::review_kind(
            "authorization.k8s.io",
            "SelfSubjectRulesReview",
            "selfsubjectrulesreviews",
            false,
        ),
        ResourceType::review_kind(
            "authorization.k8s.io",
            "SubjectAccessReview",
            "subjectaccessreviews",
            false,
        ),
        ResourceType::review_kind(
            "authorization.k8s.io",
            "LocalSubjectAccessReview",
            "localsubjectaccessreviews",
            true,
        ),
        ResourceType::review_kind(
            "authentication.k8s.io",
            "TokenReview",
            "tokenreviews",
            false,
        ),
        ResourceType::review_kind(
            "authentication.k8s.io",
            "SelfSubjectReview",
            "selfsubjectreviews",
            false,
        ),
        rt("events.k8s.io", "v1", "Event", "events", true).short(&["ev"]),
        rt("networking.k8s.io", "v1", "Ingress", "ingresses", true)
            .short(&["ing"])
            .with_status(),
        rt(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
        )
        .short(&["crd", "crds"])
        .with_status(),
    ]
}

/// Problems that make a CRD unservable, as (field, message).
pub fn check_crd(crd: &Value) -> Vec<(String, String)> {
    let mut errs = Vec::new();
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let plural = spec["names"]["plural"].as_str().unwrap_or_default();
    if group.is_empty() {
        errs.push(("spec.group".into(), "Required value".into()));
    }
    if plural.is_empty() {
        errs.push(("spec.names.plural".into(), "Required value".into()));
    }
    if spec["names"]["kind"]
        .as_str()
        .unwrap_or_default()
        .is_empty()
    {
        errs.push(("spec.names.kind".into(), "Required value".into()));
    }
    let expected = format!("{plural}.{group}");
    if crd["metadata"]["name"].as_str() != Some(expected.as_str()) {
        errs.push((
            "metadata.name".into(),
            format!(
                "Invalid value: {:?}: must be spec.names.plural+\".\"+spec.group",
                crd["metadata"]["name"]
            ),
        ));
    }
    match spec["scope"].as_str() {
        Some("Namespaced" | "Cluster") => {}
        other => errs.push((
            "spec.scope".into(),
            format!("Unsupported value: {other:?}: supported values: \"Cluster\", \"Namespaced\""),
        )),
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        errs.push(("spec.versions".into(), "Required value".into()));
    }
    if versions
        .iter()
        .filter(|v| v["storage"] == json!(true))
        .count()
        != 1
    {
        errs.push((
            "spec.versions".into(),
            "Invalid value: must have exactly one version marked as storage version".into(),
        ));
    }
    for (i, v) in versions.iter().enumerate() {
        let schema = &v["schema"]["openAPIV3Schema"];
        if schema.is_null() {
            errs.push((
                format!("spec.versions[{i}].schema.openAPIV3Schema"),
                "Required value: schemas are required".into(),
            ));
            continue;
        }
        for msg in crate::schema::check_structural(schema) {
            errs.push((format!("spec.versions[{i}].schema.openAPIV3Schema"), msg));
        }
    }
    errs
}

/// The resource types a (valid) CRD serves: one per served version.
pub fn crd_types(crd: &Value) -> Vec<ResourceType> {
    let spec = &crd["spec"];
    let names = &spec["names"];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let kind = names["kind"].as_str().unwrap_or_default().to_string();
    let mut out = Vec::new();
    for v in spec["versions"].as_array().into_iter().flatten() {
        if v["served"] == json!(false) {
            continue;
        }
        let sub = &v["subresources"];
        let scale = sub
            .get("scale")
            .filter(|s| s.is_object())
            .map(|s| ScaleSpec {
                spec_replicas_path: s["specReplicasPath"]
                    .as_str()
                    .unwrap_or(".spec.replicas")
                    .into(),
                status_replicas_path: s["statusReplicasPath"]
                    .as_str()
                    .unwrap_or(".status.replicas")
                    .into(),
                label_selector_path: s["labelSelectorPath"].as_str().map(String::from),
            });
        let columns = v["additionalPrinterColumns"]
            .as_array()
            .map(|cols| {
                cols.iter()
                    .filter_map(|c| serde_json::from_value(c.clone()).ok())
                    .collect()
            })
            .unwrap_or_else(|| crate::table::builtin_columns(""));
        out.push(ResourceType {
            group: spec["group"].as_str().unwrap_or_default().into(),
            version: v["name"].as_str().unwrap_or_default().into(),
            kind: kind.clone(),
            plural: names["plural"].as_str().unwrap_or_default().into(),
            singular: names["singular"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| kind.to_lowercase()),
            namespaced: spec["scope"] == "Namespaced",
            short_names: strings(&names["shortNames"]),
            categories: strings(&names["categories"]),
            status: sub.get("status").is_some_and(|s| s.is_object()),
            scale,
            schema: Some(std::sync::Arc::new(crate::schema::Schema::new(
                v["schema"]["openAPIV3Schema"].clone(),
            ))),
            columns,
            crd: crd["metadata"]["name"].as_str().map(String::from),
            review: false,
        });
    }
    out
}
