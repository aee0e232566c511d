//! The examples a user applies, and the rules the API server enforces on them.

mod support;

use std::path::{Path, PathBuf};

use kelp_crds::{Cluster, Deployment, KelpResource, Module, parse};
use serde_json::{Value, json};
use support::SchemaChecker;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
}

fn example_objects() -> Vec<(PathBuf, Value)> {
    let mut files = Vec::new();
    yaml_files(&examples_dir(), &mut files);
    files.sort();
    assert!(
        files.len() >= 7,
        "expected the example manifests, found {files:?}"
    );
    let mut objects = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in parse::documents(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display())) {
            objects.push((file.clone(), doc));
        }
    }
    objects
}

fn checker(kind: &str) -> SchemaChecker {
    let crd = kelp_crds::crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap();
    SchemaChecker::for_crd(&crd)
}

/// Schema defaults and Rust defaults must agree, so the controller sees what GitOps
/// tools see.
fn assert_defaults_agree<T>(raw: &Value, defaulted: &Value)
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let from_raw = serde_json::to_value(parse::from_value::<T>(raw.clone()).unwrap()).unwrap();
    let from_defaulted =
        serde_json::to_value(parse::from_value::<T>(defaulted.clone()).unwrap()).unwrap();
    assert_eq!(from_raw, from_defaulted, "schema and Rust defaults differ");
}

#[test]
fn every_example_deserializes_and_passes_the_schema() {
    let mut kinds = std::collections::BTreeSet::new();
    for (file, object) in example_objects() {
        let resource = KelpResource::from_value(object.clone())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let Some(resource) = resource else {
            assert_eq!(
                object["kind"],
                "Secret",
                "{}: unexpected object",
                file.display()
            );
            continue;
        };
        let kind = object["kind"].as_str().unwrap().to_string();
        let checked = checker(&kind).check(&object);
        assert!(
            checked.errors.is_empty(),
            "{}: {:#?}",
            file.display(),
            checked.errors
        );
        match resource {
            KelpResource::Module(_) => assert_defaults_agree::<Module>(&object, &checked.defaulted),
            KelpResource::Cluster(c) => {
                assert_defaults_agree::<Cluster>(&object, &checked.defaulted);
                kinds.insert(c.spec.cloud.kind().unwrap());
            }
            KelpResource::Deployment(_) => {
                assert_defaults_agree::<Deployment>(&object, &checked.defaulted)
            }
        }
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["ec2", "egi", "openstack", "sim"]
    );
}

#[test]
fn schema_defaults_fill_in_the_documented_values() {
    let minimal = json!({
        "apiVersion": "kelp.imagine-ai.eu/v1alpha1", "kind": "Module",
        "metadata": {"name": "m"},
        "spec": {"title": "t", "summary": "s", "image": {"repository": "ai4oshub/x"}}
    });
    let d = checker("Module").check(&minimal);
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    assert_eq!(d.defaulted["spec"]["image"]["tag"], "latest");
    assert_eq!(d.defaulted["spec"]["serving"]["port"], 5000);
    assert_eq!(d.defaulted["spec"]["serving"]["healthPath"], "/v2/");
    assert_eq!(d.defaulted["spec"]["serving"]["protocol"], "deepaas");

    let cluster = json!({
        "apiVersion": "kelp.imagine-ai.eu/v1alpha1", "kind": "Cluster",
        "metadata": {"name": "c"},
        "spec": {"cloud": {"sim": {}}, "nodePools": [{"name": "p"}]}
    });
    let d = checker("Cluster").check(&cluster);
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    // Inside list items the schema sets no default (kubectl's merge patch replaces
    // whole lists); kelp's types apply it.
    assert_eq!(d.defaulted["spec"]["nodePools"][0].get("replicas"), None);
    let typed: Cluster = parse::from_value(d.defaulted.clone()).unwrap();
    assert_eq!(typed.spec.node_pools[0].replicas, 1);
    assert_eq!(d.defaulted["spec"]["deletionPolicy"], "Delete");
    assert_eq!(d.defaulted["spec"]["kubernetes"]["mode"], "Provision");
    assert_eq!(d.defaulted["spec"]["paused"], false);

    let deployment = json!({
        "apiVersion": "kelp.imagine-ai.eu/v1alpha1", "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {"moduleRef": {"name": "m"}, "clusterRef": {"name": "c"},
                 "storage": [{"name": "rshare", "webdav": {"url": "https://x/dav",
                              "credentialsSecretRef": {"name": "s"}}}]}
    });
    let d = checker("Deployment").check(&deployment);
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    assert_eq!(d.defaulted["spec"]["replicas"], 1);
    assert_eq!(d.defaulted["spec"]["recipe"], "deepaas-inference");
    let storage = &d.defaulted["spec"]["storage"][0];
    assert_eq!(storage.get("mountPath"), None);
    assert_eq!(storage.get("readOnly"), None);
    assert_eq!(storage["webdav"].get("vendor"), None);
    let typed: Deployment = parse::from_value(d.defaulted.clone()).unwrap();
    assert_eq!(typed.spec.storage[0].mount_path, "/storage");
    assert!(!typed.spec.storage[0].read_only);
    assert_eq!(
        typed.spec.storage[0].webdav.as_ref().unwrap().vendor,
        kelp_crds::WebdavVendor::Nextcloud
    );
}

/// No schema default anywhere inside a list item of a spec: a server-filled default there
/// makes every client-side `kubectl apply` of an unchanged manifest report `configured`.
#[test]
fn no_list_item_carries_a_schema_default() {
    fn walk(schema: &Value, path: &str, in_list: bool, found: &mut Vec<String>) {
        if in_list && schema.get("default").is_some() {
            found.push(path.to_string());
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                walk(v, &format!("{path}.{k}"), in_list, found);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(items, &format!("{path}[]"), true, found);
        }
        if let Some(a) = schema.get("additionalProperties").filter(|a| a.is_object()) {
            walk(a, &format!("{path}{{}}"), in_list, found);
        }
    }
    let mut found = Vec::new();
    for crd in kelp_crds::crds() {
        let schema = serde_json::to_value(&crd).unwrap();
        let spec =
            &schema["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        walk(spec, crd.spec.names.kind.as_str(), false, &mut found);
    }
    assert!(found.is_empty(), "defaults inside list items: {found:?}");
    // The defaults are still told, in the descriptions `kubectl explain` shows.
    let yaml = kelp_crds::crds_yaml();
    assert!(
        yaml.contains("Defaults to \"/storage\" when omitted."),
        "mountPath"
    );
    assert!(yaml.contains("Defaults to 1 when omitted."), "replicas");
}

fn example(kind: &str) -> Value {
    example_objects()
        .into_iter()
        .map(|(_, o)| o)
        // The sim Cluster, and the Deployment on it (not the placement example).
        .find(|o| {
            o["kind"] == kind
                && (kind != "Cluster" || o["spec"]["cloud"]["sim"].is_object())
                && (kind != "Deployment" || o["spec"]["clusterRef"].is_object())
        })
        .unwrap()
}

/// Sets `value` at a dotted path like `spec.nodePools.0.replicas` (creating objects),
/// or removes the field when `value` is null.
fn set(object: &mut Value, path: &str, value: Value) {
    let parts: Vec<&str> = path.split('.').collect();
    let mut cur = object;
    for part in &parts[..parts.len() - 1] {
        cur = match part.parse::<usize>() {
            Ok(i) => &mut cur[i],
            Err(_) => &mut cur[*part],
        };
    }
    let last = parts[parts.len() - 1];
    if value.is_null() {
        cur.as_object_mut().unwrap().remove(last);
    } else {
        match last.parse::<usize>() {
            Ok(i) if cur.as_array().is_some_and(|a| a.len() == i) => {
                cur.as_array_mut().unwrap().push(value)
            }
            Ok(i) => cur[i] = value,
            Err(_) => cur[last] = value,
        }
    }
}

/// (kind, edits, fragment the error must contain)
type Case = (&'static str, Vec<(&'static str, Value)>, &'static str);

fn assert_rejected(cases: Vec<Case>) {
    for (kind, edits, expected) in cases {
        let mut object = example(kind);
        for (path, value) in &edits {
            set(&mut object, path, value.clone());
        }
        let errors = checker(kind).check(&object).errors;
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{kind} with {edits:?}: expected an error containing {expected:?}, got {errors:#?}"
        );
    }
}

#[test]
fn the_schema_rejects_bad_fields_and_names_them() {
    assert_rejected(vec![
        (
            "Module",
            vec![("spec.title", Value::Null)],
            "\"title\" is a required property",
        ),
        (
            "Module",
            vec![("spec.serving.port", json!(0))],
            "spec.serving.port",
        ),
        (
            "Module",
            vec![("spec.serving.port", json!(70000))],
            "spec.serving.port",
        ),
        (
            "Module",
            vec![("spec.serving.protocol", json!("grpc"))],
            "spec.serving.protocol",
        ),
        (
            "Module",
            vec![("spec.resources.cpu", json!(0))],
            "spec.resources.cpu",
        ),
        (
            "Module",
            vec![("spec.resources.gpu", json!(-1))],
            "spec.resources.gpu",
        ),
        (
            "Module",
            vec![("spec.image.password", json!("hunter2"))],
            "spec.image.password: unknown field",
        ),
        (
            "Cluster",
            vec![("spec.nodePools.0.replicas", json!(-1))],
            "spec.nodePools[0].replicas",
        ),
        (
            "Cluster",
            vec![("spec.nodePools.0.replicas", json!("two"))],
            "spec.nodePools[0].replicas",
        ),
        (
            "Cluster",
            vec![("spec.nodePools.1.machine.gpu.count", json!(-1))],
            "spec.nodePools[1].machine.gpu.count",
        ),
        (
            "Cluster",
            vec![("spec.nodePools.0.name", json!("GPU_pool"))],
            "spec.nodePools[0].name",
        ),
        (
            "Cluster",
            vec![("spec.nodePools.1.name", json!("cpu"))],
            "spec.nodePools[1]: Duplicate value",
        ),
        (
            "Cluster",
            vec![("spec.nodePools", json!([]))],
            "spec.nodePools",
        ),
        (
            "Cluster",
            vec![("spec.deletionPolicy", json!("Keep"))],
            "spec.deletionPolicy",
        ),
        (
            "Cluster",
            vec![("spec.kubernetes.mode", json!("Import"))],
            "spec.kubernetes.mode",
        ),
        (
            "Cluster",
            vec![("spec.nodePools.1.taints.0.effect", json!("Never"))],
            "spec.nodePools[1].taints[0].effect",
        ),
        (
            "Cluster",
            vec![("spec.cloud.sim.failureRate", json!(1.5))],
            "spec.cloud.sim.failureRate",
        ),
        (
            "Cluster",
            vec![
                (
                    "spec.cloud.ec2",
                    json!({"region": "eu-west-1", "secretAccessKey": "x"}),
                ),
                ("spec.cloud.sim", Value::Null),
            ],
            "spec.cloud.ec2.secretAccessKey: unknown field",
        ),
        (
            "Cluster",
            vec![
                ("spec.cloud.openstack", json!({"authUrl": "https://k/v3"})),
                ("spec.cloud.sim", Value::Null),
            ],
            "\"credentialsSecretRef\" is a required property",
        ),
        (
            "Deployment",
            vec![("spec.replicas", json!(-1))],
            "spec.replicas",
        ),
        (
            "Deployment",
            vec![("spec.moduleRef", Value::Null)],
            "\"moduleRef\" is a required property",
        ),
        (
            "Deployment",
            vec![("spec.storage.0.webdav.vendor", json!("dropbox"))],
            "spec.storage[0].webdav.vendor",
        ),
        (
            "Deployment",
            vec![("spec.storage.0.webdav.password", json!("x"))],
            "spec.storage[0].webdav.password: unknown field",
        ),
        (
            "Deployment",
            vec![(
                "spec.storage.1",
                json!({"name": "rshare", "webdav": {"url": "https://x", "credentialsSecretRef": {"name": "s"}}}),
            )],
            "spec.storage[1]: Duplicate value",
        ),
        (
            "Deployment",
            vec![("spec.expose.port", json!(0))],
            "spec.expose.port",
        ),
    ]);
}

/// One bad object per CEL rule; the last test checks that every rule in the CRDs is
/// covered here.
fn cel_cases() -> Vec<Case> {
    vec![
        (
            "Deployment",
            vec![("spec.clusterRef", Value::Null)],
            "exactly one of spec.clusterRef (one Cluster) or spec.placement (an ordered list of Clusters) must be set",
        ),
        (
            "Deployment",
            vec![(
                "spec.placement",
                json!({"clusters": [{"name": "a"}, {"name": "b"}]}),
            )],
            "exactly one of spec.clusterRef (one Cluster) or spec.placement (an ordered list of Clusters) must be set",
        ),
        (
            "Cluster",
            vec![("spec.cloud.sim", Value::Null)],
            "exactly one of cloud.sim, cloud.ec2, cloud.openstack, cloud.egi must be set",
        ),
        (
            "Cluster",
            vec![("spec.cloud.ec2", json!({"region": "eu-west-1"}))],
            "exactly one of cloud.sim, cloud.ec2, cloud.openstack, cloud.egi must be set",
        ),
        (
            "Cluster",
            vec![("spec.kubernetes", json!({"mode": "Existing"}))],
            "kubernetes.kubeconfigSecretRef is required when kubernetes.mode is Existing",
        ),
        (
            "Cluster",
            vec![(
                "spec.kubernetes.controlPlane",
                json!({"pool": "cpu", "instanceType": "m5.large"}),
            )],
            "controlPlane.pool cannot be combined with instanceType, cpu or memoryMB",
        ),
        (
            "Cluster",
            vec![("spec.kubernetes.controlPlane", json!({"pool": "missing"}))],
            "kubernetes.controlPlane.pool must name one of the nodePools",
        ),
        (
            "Cluster",
            vec![
                (
                    "spec.nodePools.1.autoscaling",
                    json!({"minReplicas": 3, "maxReplicas": 2}),
                ),
                ("spec.nodePools.1.replicas", json!(2)),
            ],
            "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
        ),
        (
            "Cluster",
            vec![("spec.nodePools.1.replicas", json!(5))],
            "replicas must lie within autoscaling.minReplicas and autoscaling.maxReplicas",
        ),
        (
            "Module",
            vec![("spec.serving.healthPath", json!("v2/"))],
            "healthPath must start with '/'",
        ),
        (
            "Deployment",
            vec![(
                "spec.env.0.valueFrom",
                json!({"secretKeyRef": {"name": "s", "key": "k"}}),
            )],
            "an env entry sets value or valueFrom, not both",
        ),
        (
            "Deployment",
            vec![
                ("spec.env.0.value", Value::Null),
                ("spec.env.0.valueFrom", json!({})),
            ],
            "valueFrom sets exactly one of secretKeyRef, configMapKeyRef",
        ),
        (
            "Deployment",
            vec![("spec.storage.0.webdav", Value::Null)],
            "a storage entry needs a backend: webdav",
        ),
        (
            "Deployment",
            vec![("spec.storage.0.mountPath", json!("storage"))],
            "mountPath must be an absolute path",
        ),
        (
            "Deployment",
            vec![("spec.storage.0.webdav.url", json!("ftp://x"))],
            "webdav.url must be an http(s) URL",
        ),
        (
            "Deployment",
            vec![("spec.expose.path", json!("api"))],
            "expose.path must start with '/'",
        ),
        (
            "Deployment",
            vec![("metadata.name", json!("d".repeat(64)))],
            "metadata.name: a Deployment name must be no more than 63 characters (it names the workload's Service and labels in the target cluster)",
        ),
        (
            "Deployment",
            vec![("metadata.name", json!("1st.detector"))],
            "metadata.name: a Deployment name must be a DNS label starting with a letter: lower-case letters, digits and '-', no '.' (it names the workload's Service)",
        ),
        (
            "Cluster",
            vec![("metadata.name", json!("c".repeat(70)))],
            "metadata.name: a Cluster name must be no more than 63 characters (it names machines, Secrets and cloud tags)",
        ),
        (
            "Cluster",
            vec![("metadata.name", json!("sim.gpu"))],
            "metadata.name: a Cluster name must be a DNS label: lower-case letters, digits and '-', starting and ending with a letter or digit, no '.'",
        ),
    ]
}

#[test]
fn cel_rules_reject_what_they_are_meant_to() {
    assert_rejected(cel_cases());
}

#[test]
fn every_cel_rule_has_a_case() {
    fn messages(schema: &Value, out: &mut Vec<String>) {
        match schema {
            Value::Object(map) => {
                if let Some(Value::Array(rules)) = map.get("x-kubernetes-validations") {
                    out.extend(
                        rules
                            .iter()
                            .map(|r| r["message"].as_str().unwrap().to_string()),
                    );
                }
                map.values().for_each(|v| messages(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| messages(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    for crd in kelp_crds::crds() {
        messages(&serde_json::to_value(&crd).unwrap(), &mut all);
    }
    let covered: Vec<&str> = cel_cases().iter().map(|c| c.2).collect();
    let uncovered: Vec<&String> = all
        .iter()
        .filter(|m| !covered.contains(&m.as_str()))
        .collect();
    assert!(
        uncovered.is_empty(),
        "CEL rules without a test case: {uncovered:#?}"
    );
    assert!(all.len() >= 12, "{all:?}");
}

#[test]
fn typed_parsing_names_the_bad_field() {
    let cases = [
        (
            "Cluster",
            "spec.nodePools.0.replicas",
            json!("two"),
            "spec.nodePools[0].replicas",
        ),
        ("Module", "spec.title", Value::Null, "missing field `title`"),
        (
            "Deployment",
            "spec.storage.0.webdav.vendor",
            json!("dropbox"),
            "spec.storage[0].webdav.vendor",
        ),
        (
            "Cluster",
            "spec.deletionPolicy",
            json!("Keep"),
            "spec.deletionPolicy",
        ),
    ];
    for (kind, path, value, expected) in cases {
        let mut object = example(kind);
        set(&mut object, path, value);
        let err = KelpResource::from_value(object).unwrap_err().to_string();
        assert!(err.contains(expected), "{kind}: {err}");
    }
    let err = KelpResource::from_value(json!({
        "apiVersion": "kelp.imagine-ai.eu/v1alpha1", "kind": "Widget", "metadata": {"name": "w"}
    }))
    .unwrap_err()
    .to_string();
    assert!(err.contains("Widget"), "{err}");
    let err = parse::documents("kind: [unclosed").unwrap_err().to_string();
    assert!(err.contains("not valid YAML"), "{err}");
}
