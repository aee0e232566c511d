use super::*;
use serde_json::json;

const NOW: &str = "2024-01-02T03:04:05Z";
const LATER: &str = "2024-01-02T04:00:00Z";

fn crd_schema() -> Value {
    json!({"openAPIV3Schema": {
        "type": "object",
        "properties": {
            "spec": {"type": "object", "properties": {
                "replicas": {"type": "integer"},
                "mode": {"type": "string"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "zones": {"type": "array", "x-kubernetes-list-type": "set",
                          "items": {"type": "string"}},
                "pools": {"type": "array", "x-kubernetes-list-type": "map",
                          "x-kubernetes-list-map-keys": ["name"],
                          "items": {"type": "object", "properties": {
                              "name": {"type": "string"},
                              "size": {"type": "integer"},
                              "nodes": {"type": "array", "x-kubernetes-list-type": "map",
                                        "x-kubernetes-list-map-keys": ["host", "port"],
                                        "items": {"type": "object"}}}}},
                "byZone": {"type": "object", "additionalProperties": {
                    "type": "array", "x-kubernetes-list-type": "set",
                    "items": {"type": "string"}}}
            }},
            "status": {"type": "object", "properties": {
                "phase": {"type": "string"},
                "conditions": {"type": "array", "x-kubernetes-list-type": "map",
                               "x-kubernetes-list-map-keys": ["type"],
                               "items": {"type": "object"}}
            }}
        }
    }})
}

fn req<'a>(
    current: Option<&'a Value>,
    applied: &'a Value,
    manager: &'a str,
    force: bool,
    schema: &'a dyn SchemaInfo,
) -> ApplyRequest<'a> {
    ApplyRequest {
        current,
        applied,
        manager,
        force,
        subresource: None,
        api_version: "example.com/v1",
        now: NOW,
        schema,
    }
}

fn widget(spec: Value) -> Value {
    json!({"apiVersion": "example.com/v1", "kind": "Widget",
           "metadata": {"name": "w", "namespace": "default"}, "spec": spec})
}

/// The dotted paths owned by `manager` with `operation` (and the given subresource).
fn owned(obj: &Value, manager: &str, operation: &str, sub: Option<&str>) -> Vec<String> {
    entries_of(obj)
        .iter()
        .find(|e| e.is(manager, operation, sub))
        .map(|e| e.set.to_strings())
        .unwrap_or_default()
}

fn managers(obj: &Value) -> Vec<(String, String)> {
    entries_of(obj)
        .iter()
        .map(|e| (e.manager.clone(), e.operation.clone()))
        .collect()
}

fn paths(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

// ----- list types -----

#[test]
fn builtin_table() {
    let map = |k: &str| ListType::Map(vec![k.to_string()]);
    assert_eq!(
        builtin_list_type(&["spec", "template", "spec", "containers"]),
        map("name")
    );
    assert_eq!(
        builtin_list_type(&["spec", "template", "spec", "containers", "env"]),
        map("name")
    );
    assert_eq!(
        builtin_list_type(&["spec", "containers", "ports"]),
        map("containerPort")
    );
    assert_eq!(
        builtin_list_type(&["spec", "initContainers", "ports"]),
        map("containerPort")
    );
    assert_eq!(builtin_list_type(&["spec", "ports"]), map("port"));
    assert_eq!(
        builtin_list_type(&["spec", "containers", "volumeMounts"]),
        map("mountPath")
    );
    assert_eq!(builtin_list_type(&["status", "conditions"]), map("type"));
    assert_eq!(
        builtin_list_type(&["metadata", "ownerReferences"]),
        map("uid")
    );
    assert_eq!(
        builtin_list_type(&["metadata", "finalizers"]),
        ListType::Set
    );
    assert_eq!(builtin_list_type(&["spec", "finalizers"]), ListType::Atomic);
    assert_eq!(
        builtin_list_type(&["spec", "containers", "args"]),
        ListType::Atomic
    );
    assert_eq!(
        builtin_list_type(&["spec", "tolerations"]),
        ListType::Atomic
    );
    assert_eq!(builtin_list_type(&[]), ListType::Atomic);
}

#[test]
fn crd_schema_list_types() {
    let s = crd_schema();
    let schema = CrdSchema(&s);
    assert_eq!(
        schema.list_type(&["spec", "pools"]),
        ListType::Map(vec!["name".into()])
    );
    assert_eq!(
        schema.list_type(&["spec", "pools", "nodes"]),
        ListType::Map(vec!["host".into(), "port".into()])
    );
    assert_eq!(schema.list_type(&["spec", "zones"]), ListType::Set);
    assert_eq!(schema.list_type(&["spec", "tags"]), ListType::Atomic);
    assert_eq!(schema.list_type(&["spec", "byZone", "eu"]), ListType::Set);
    assert_eq!(schema.list_type(&["spec", "unknown"]), ListType::Atomic);
    assert_eq!(schema.list_type(&["metadata", "finalizers"]), ListType::Set);
    // The bare openAPIV3Schema works as well as the wrapper.
    let bare = CrdSchema(&s["openAPIV3Schema"]);
    assert_eq!(bare.list_type(&["spec", "zones"]), ListType::Set);
}

// ----- JSON patch and merge patch -----

#[test]
fn json_patch_add_remove_replace_test() {
    let mut doc = json!({"spec": {"replicas": 1, "paused": true}});
    let patch = json!([
        {"op": "test", "path": "/spec/replicas", "value": 1},
        {"op": "replace", "path": "/spec/replicas", "value": 3},
        {"op": "add", "path": "/spec/mode", "value": "fast"},
        {"op": "remove", "path": "/spec/paused"}
    ]);
    json_patch(&mut doc, &patch).unwrap();
    assert_eq!(doc, json!({"spec": {"replicas": 3, "mode": "fast"}}));
}

#[test]
fn json_patch_test_failure_leaves_doc_unchanged() {
    let mut doc = json!({"spec": {"replicas": 1}});
    let patch = json!([
        {"op": "replace", "path": "/spec/replicas", "value": 5},
        {"op": "test", "path": "/spec/replicas", "value": 2}
    ]);
    match json_patch(&mut doc, &patch) {
        Err(PatchError::TestFailed(msg)) => assert!(msg.contains("/spec/replicas"), "{msg}"),
        other => panic!("expected TestFailed, got {other:?}"),
    }
    assert_eq!(doc, json!({"spec": {"replicas": 1}}));
}

#[test]
fn json_patch_test_null_matches_a_missing_path() {
    let mut doc = json!({"metadata": {"name": "a"}});
    let patch = json!([
        {"op": "test", "path": "/metadata/finalizers", "value": null},
        {"op": "add", "path": "/metadata/finalizers", "value": ["f"]}
    ]);
    json_patch(&mut doc, &patch).unwrap();
    assert_eq!(doc["metadata"]["finalizers"], json!(["f"]));
    let again = json_patch(&mut doc, &patch);
    assert!(matches!(again, Err(PatchError::TestFailed(_))), "{again:?}");
}

#[test]
fn json_patch_errors() {
    let mut doc = json!({"spec": {}});
    assert!(matches!(
        json_patch(
            &mut doc,
            &json!([{"op": "remove", "path": "/spec/missing"}])
        ),
        Err(PatchError::Invalid(_))
    ));
    assert!(matches!(
        json_patch(&mut doc, &json!([{"op": "frobnicate", "path": "/x"}])),
        Err(PatchError::BadRequest(_))
    ));
    assert!(matches!(
        json_patch(&mut doc, &json!({"op": "add"})),
        Err(PatchError::BadRequest(_))
    ));
}

#[test]
fn merge_patch_null_deletes() {
    let mut doc = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"x": [1, 2]}});
    merge_patch(
        &mut doc,
        &json!({"metadata": {"labels": {"a": null, "c": "3"}}, "spec": {"x": [3]}}),
    );
    assert_eq!(
        doc,
        json!({"metadata": {"labels": {"b": "2", "c": "3"}}, "spec": {"x": [3]}})
    );
}

// ----- strategic merge patch -----

fn deployment() -> Value {
    json!({"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "app:1",
         "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
         "ports": [{"containerPort": 80, "protocol": "TCP"}]},
        {"name": "sidecar", "image": "side:1"}
    ]}}}})
}

#[test]
fn smp_merges_containers_by_name() {
    let mut doc = deployment();
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "app:2"},
        {"name": "extra", "image": "extra:1"}
    ]}}}});
    strategic_merge_patch(&mut doc, &patch, &Builtin).unwrap();
    let containers = &doc["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers.as_array().unwrap().len(), 3);
    assert_eq!(containers[0]["image"], "app:2");
    // Fields not in the patch element are kept.
    assert_eq!(containers[0]["env"][1]["value"], "2");
    assert_eq!(containers[1]["image"], "side:1");
    assert_eq!(containers[2], json!({"name": "extra", "image": "extra:1"}));
}

#[test]
fn smp_merges_env_by_name() {
    let mut doc = deployment();
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "app", "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}],
         "ports": [{"containerPort": 80, "name": "http"}]}
    ]}}}});
    strategic_merge_patch(&mut doc, &patch, &Builtin).unwrap();
    let app = &doc["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        app["env"],
        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "20"},
               {"name": "C", "value": "3"}])
    );
    assert_eq!(
        app["ports"],
        json!([{"containerPort": 80, "protocol": "TCP", "name": "http"}])
    );
}

#[test]
fn smp_patch_delete_element() {
    let mut doc = deployment();
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "sidecar", "$patch": "delete"},
        {"name": "app", "env": [{"name": "A", "$patch": "delete"}]}
    ]}}}});
    strategic_merge_patch(&mut doc, &patch, &Builtin).unwrap();
    let containers = doc["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0]["name"], "app");
    assert_eq!(containers[0]["env"], json!([{"name": "B", "value": "2"}]));
}

#[test]
fn smp_set_element_order() {
    let mut doc = deployment();
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "new"}, {"name": "sidecar"}, {"name": "app"}],
        "containers": [{"name": "new", "image": "new:1"}]
    }}}});
    strategic_merge_patch(&mut doc, &patch, &Builtin).unwrap();
    let spec = &doc["spec"]["template"]["spec"];
    let names: Vec<&str> = spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["new", "sidecar", "app"]);
    assert!(spec.get("$setElementOrder/containers").is_none());
}

#[test]
fn smp_service_ports_by_port() {
    let mut svc = json!({"spec": {"ports": [
        {"port": 80, "targetPort": 8080, "name": "http"},
        {"port": 443, "targetPort": 8443, "name": "https"}
    ]}});
    let patch = json!({"spec": {"ports": [
        {"port": 443, "targetPort": 9443},
        {"port": 9000, "name": "metrics"}
    ]}});
    strategic_merge_patch(&mut svc, &patch, &Builtin).unwrap();
    assert_eq!(
        svc["spec"]["ports"],
        json!([
            {"port": 80, "targetPort": 8080, "name": "http"},
            {"port": 443, "targetPort": 9443, "name": "https"},
            {"port": 9000, "name": "metrics"}
        ])
    );
}

#[test]
fn smp_conditions_by_type() {
    let mut pod = json!({"status": {"conditions": [
        {"type": "Ready", "status": "False", "reason": "Starting"},
        {"type": "Scheduled", "status": "True"}
    ]}});
    let patch = json!({"status": {"conditions": [
        {"type": "Ready", "status": "True", "reason": null}
    ]}});
    strategic_merge_patch(&mut pod, &patch, &Builtin).unwrap();
    assert_eq!(
        pod["status"]["conditions"],
        json!([{"type": "Ready", "status": "True"}, {"type": "Scheduled", "status": "True"}])
    );
}

#[test]
fn smp_replace_retain_and_primitive_directives() {
    let mut doc = json!({
        "metadata": {"finalizers": ["a", "b"], "labels": {"x": "1", "y": "2"}},
        "spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
                 "selector": {"app": "a", "tier": "b"},
                 "args": ["--a", "--b"]}
    });
    let patch = json!({
        "metadata": {"finalizers": ["c", "a"],
                     "$deleteFromPrimitiveList/finalizers": ["b"]},
        "spec": {
            "strategy": {"$retainKeys": ["type"], "type": "Recreate"},
            "selector": {"$patch": "replace", "app": "z"},
            "args": ["--c"]
        }
    });
    strategic_merge_patch(&mut doc, &patch, &Builtin).unwrap();
    assert_eq!(doc["metadata"]["finalizers"], json!(["a", "c"]));
    assert_eq!(doc["spec"]["strategy"], json!({"type": "Recreate"}));
    assert_eq!(doc["spec"]["selector"], json!({"app": "z"}));
    assert_eq!(doc["spec"]["args"], json!(["--c"]));
    assert_eq!(doc["metadata"]["labels"], json!({"x": "1", "y": "2"}));
}

#[test]
fn smp_list_replace_marker_and_errors() {
    let mut doc = deployment();
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"$patch": "replace"}, {"name": "only", "image": "only:1"}
    ]}}}});
    strategic_merge_patch(&mut doc, &patch, &Builtin).unwrap();
    assert_eq!(
        doc["spec"]["template"]["spec"]["containers"],
        json!([{"name": "only", "image": "only:1"}])
    );

    let missing_key = json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
    assert!(matches!(
        strategic_merge_patch(&mut doc, &missing_key, &Builtin),
        Err(PatchError::Invalid(_))
    ));
    assert!(matches!(
        strategic_merge_patch(&mut doc, &json!({"spec": {"$patch": "bogus"}}), &Builtin),
        Err(PatchError::Invalid(_))
    ));
    assert!(matches!(
        strategic_merge_patch(&mut doc, &json!([1]), &Builtin),
        Err(PatchError::BadRequest(_))
    ));
}

#[test]
fn smp_uses_crd_schema() {
    let s = crd_schema();
    let mut doc = widget(json!({"pools": [{"name": "a", "size": 1}], "tags": ["x"]}));
    let patch = json!({"spec": {"pools": [{"name": "b", "size": 2}], "tags": ["y"]}});
    strategic_merge_patch(&mut doc, &patch, &CrdSchema(&s)).unwrap();
    assert_eq!(
        doc["spec"]["pools"],
        json!([{"name": "a", "size": 1}, {"name": "b", "size": 2}])
    );
    assert_eq!(doc["spec"]["tags"], json!(["y"]));
}

// ----- field sets -----

#[test]
fn field_set_matches_kubernetes_fields_v1() {
    let s = crd_schema();
    let obj = json!({
        "apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w", "namespace": "default", "uid": "u", "resourceVersion": "5",
                     "labels": {"app": "web"},
                     "managedFields": [{"manager": "x"}]},
        "spec": {"replicas": 2, "pools": [{"name": "a", "size": 3}]}
    });
    let set = field_set(&obj, &CrdSchema(&s));
    assert_eq!(
        set.to_fields_v1(),
        json!({"f:metadata": {"f:labels": {"f:app": {}}},
               "f:spec": {"f:replicas": {},
                          "f:pools": {"k:{\"name\":\"a\"}": {".": {}, "f:name": {}, "f:size": {}}}}})
    );
}

#[test]
fn field_set_round_trips_with_keys_and_values() {
    let s = crd_schema();
    let obj = json!({
        "metadata": {"finalizers": ["example.com/x"], "labels": {}},
        "spec": {"zones": ["eu", "us"], "tags": ["t"],
                 "pools": [{"size": 1, "name": "a",
                            "nodes": [{"port": 1, "host": "h", "extra": true}]}]}
    });
    let set = field_set(&obj, &CrdSchema(&s));
    let v1 = set.to_fields_v1();
    assert_eq!(
        v1,
        json!({
            "f:metadata": {"f:finalizers": {"v:\"example.com/x\"": {}}, "f:labels": {}},
            "f:spec": {
                "f:zones": {"v:\"eu\"": {}, "v:\"us\"": {}},
                "f:tags": {},
                "f:pools": {"k:{\"name\":\"a\"}": {
                    ".": {}, "f:name": {}, "f:size": {},
                    "f:nodes": {"k:{\"host\":\"h\",\"port\":1}": {
                        ".": {}, "f:host": {}, "f:port": {}, "f:extra": {}}}}}
            }
        })
    );
    let back = FieldSet::from_fields_v1(&v1);
    assert_eq!(back, set);
    assert_eq!(back.to_fields_v1(), v1);
    assert_eq!(set.len(), 12);
    assert!(set.contains(&[
        PathElement::Field("spec".into()),
        PathElement::Field("pools".into()),
        PathElement::Key("{\"name\":\"a\"}".into()),
    ]));
    assert!(
        set.to_strings()
            .contains(&".spec.pools[name=\"a\"].size".to_string())
    );
    assert!(
        set.to_strings()
            .contains(&".metadata.finalizers[=\"example.com/x\"]".to_string())
    );
    assert!(FieldSet::from_fields_v1(&json!({})).is_empty());
}

#[test]
fn from_fields_v1_canonicalizes_keys() {
    let a = FieldSet::from_fields_v1(&json!({"f:spec": {"f:ports": {
        "k:{\"protocol\":\"TCP\", \"port\":80}": {".": {}, "f:port": {}}}}}));
    let b = FieldSet::from_fields_v1(&json!({"f:spec": {"f:ports": {
        "k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:port": {}}}}}));
    assert_eq!(a, b);
    assert_eq!(
        a.to_strings(),
        paths(&[
            ".spec.ports[port=80,protocol=\"TCP\"]",
            ".spec.ports[port=80,protocol=\"TCP\"].port"
        ])
    );
}

// ----- server-side apply -----

#[test]
fn apply_create_sets_managed_fields() {
    let s = crd_schema();
    let applied = json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w", "labels": {"app": "web"},
                     "managedFields": [{"manager": "forged", "operation": "Apply",
                                        "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]},
        "spec": {"replicas": 2}});
    let out = apply(req(None, &applied, "alice", false, &CrdSchema(&s))).unwrap();
    assert_eq!(out["spec"]["replicas"], 2);
    assert_eq!(out["metadata"]["name"], "w");
    assert_eq!(
        out["metadata"]["managedFields"],
        json!([{
            "manager": "alice", "operation": "Apply", "apiVersion": "example.com/v1",
            "time": NOW, "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {"f:replicas": {}}}
        }])
    );
}

#[test]
fn two_managers_own_their_own_fields() {
    let s = crd_schema();
    let schema = CrdSchema(&s);
    let a = widget(json!({"replicas": 2}));
    let obj = apply(req(None, &a, "alice", false, &schema)).unwrap();
    let b = widget(json!({"mode": "fast"}));
    let obj = apply(req(Some(&obj), &b, "bob", false, &schema)).unwrap();
    assert_eq!(obj["spec"], json!({"replicas": 2, "mode": "fast"}));
    assert_eq!(
        managers(&obj),
        [
            ("alice".into(), "Apply".into()),
            ("bob".into(), "Apply".into())
        ]
    );
    assert_eq!(owned(&obj, "alice", "Apply", None), [".spec.replicas"]);
    assert_eq!(owned(&obj, "bob", "Apply", None), [".spec.mode"]);
}

#[test]
fn conflicting_value_is_reported() {
    let s = crd_schema();
    let schema = CrdSchema(&s);
    let obj = apply(req(
        None,
        &widget(json!({"replicas": 2})),
        "alice",
        false,
        &schema,
    ))
    .unwrap();
    let b = widget(json!({"replicas": 5, "mode": "fast"}));
    let err = apply(req(Some(&obj), &b, "bob", false, &schema)).unwrap_err();
    assert_eq!(
        err,
        [Conflict {
            manager: "alice".into(),
            field: ".spec.replicas".into()
        }]
    );
    assert_eq!(
        conflict_message(&err),
        "Apply failed with 1 conflict: conflict with \"alice\": .spec.replicas"
    );
}

#[test]
fn conflict_inside_list_map_element() {
    let s = crd_schema();
    let schema = CrdSchema(&s);
    let a = widget(json!({"pools": [{"name": "a", "size": 1}]}));
    let obj = apply(req(None, &a, "alice", false, &schema)).unwrap();
    // Same element, other field: no conflict; same field, new value: conflict.
    let b = widget(json!({"pools": [{"name": "a", "size": 2}]}));
    let err = apply(req(Some(&obj), &b, "bob", false, &schema)).unwrap_err();
    assert_eq!(
        err,
        [Conflict {
            manager: "alice".into(),
            field: ".spec.pools[name=\"a\"].size".into()
        }]
    );
}

#[test]
fn forced_apply_moves_ownership() {
    let s = crd_schema();
    let schema = CrdSchema(&s);
    let a = widget(json!({"replicas": 2, "mode": "slow"}));
    let obj = apply(req(None, &a, "alice", false, &schema)).unwrap();
    let b = widget(json!({"replicas": 5}));
    let obj = apply(req(Some(&obj), &b, "bob", true, &schema)).unwrap();
    assert_eq!(obj["spec"], json!({"replicas": 5, "mode": "slow"}));
    assert_eq!(owned(&obj, "alice", "Apply", None), [".spec.mode"]);
    assert_eq!(owned(&obj, "bob", "Apply", None), [".spec.replicas"]);

    // Once alice owns nothing, her entry disappears.
    let c = widget(json!({"mode": "fast"}));
    let obj = apply(req(Some(&obj), &c, "carol", true, &schema)).unwrap();
    assert_eq!(
        managers(&obj),
        [
            ("bob".into(), "Apply".into()),
            ("carol".into(), "Apply".into())
        ]
    );
}

#[test]
fn same_value_is_shared_without_conflict() {
    let s = crd_schema();
    let schema = CrdSchema(&s);
    let a = widget(json!({"replicas": 2}));
    let obj = apply(req(None, &a, "alice", false, &schema)).unwrap();
    let obj = apply(req(Some(&obj), &a, "bob", false, &schema)).unwrap();
    assert_eq!(owned(&obj, "alice", "Apply", None), [".spec.replicas"]);
    assert_eq!(owned(&obj, "bob", "Apply", None), [".spec.replicas"]);

    // Shared fields now conflict with both owners.
    let c = widget(json!({"replicas": 3}));
    let err = apply(req(Some(&obj), &c, "carol", false, &schema)).unwrap_err();
    assert_eq!(err.len(), 2);
    assert!(conflict_message(&err).starts_with("Apply failed with 2 conflicts: "));
}

#[test]
fn field_dropped_from_config_is_removed() {
    let s = crd_schema();
    let schema = CrdSchema(&s);
    let a = json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w", "labels": {"app": "web", "tier": "x"}},
        "spec": {"replicas": 2, "mode": "fast"}});
    let obj = apply(req(None, &a, "alice", false, &schema)).unwrap();
    let a2 = json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w", "labels": {"app": "web"}},
        "spec": {"replicas": 2}});
    let obj = apply(req(Some(&obj), &a2, "alice", false, &schema)).unwrap();
    assert_eq!(obj["spec"], json!({"replicas": 2}));
    assert_eq!(obj["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(
        sorted(owned(&obj, "alice", "Apply", None)),
        paths(&[".metadata.labels.app", ".spec.replicas"])
    );
}

#[test]
fn dropped_field_stays_when_another_manager_owns_it() {
    let s = crd_schema();
    let schema = CrdSchema(&s);
    let a = widget(json!({"replicas": 2, "mode": "fast"}));
    let obj = apply(req(None, &a, "alice", false, &schema)).unwrap();
    let b = widget(json!({"mode": "fast"}));
    let obj = apply(req(Some(&obj), &b, "bob", false, &schema)).unwrap();
    let a2 = widget(json!({"replicas": 2}));
    let obj = apply(req(Some(&obj), &a2, "alice", false, &schema)).unwrap();
    assert_eq!(obj["spec"], json!({"replicas": 2, "mode": "fast"}));
    assert_eq!(owned(&obj, "bob", "Apply", None), [".spec.mode"]);
    assert_eq!(owned(&obj, "alice", "Apply", None), [".spec.replicas"]);
}

#[test]
fn list_map_element_removed_but_others_stay() {
    let s = crd_schema();
    let schema = CrdSchema(&s);
    let a = widget(json!({"pools": [{"name": "a", "size": 1}], "zones": ["eu"]}));
    let obj = apply(req(None, &a, "alice", false, &schema)).unwrap();
    let b = widget(json!({"pools": [{"name": "b", "size": 2}], "zones": ["us"]}));
    let obj = apply(req(Some(&obj), &b, "bob", false, &schema)).unwrap();
    assert_eq!(
        obj["spec"]["pools"],
        json!([{"name": "a", "size": 1}, {"name": "b", "size": 2}])
    );
    assert_eq!(obj["spec"]["zones"], json!(["eu", "us"]));

    let a2 = widget(json!({"pools": []}));
    let obj = apply(req(Some(&obj), &a2, "alice", false, &schema)).unwrap();
    assert_eq!(obj["spec"]["pools"], json!([{"name": "b", "size": 2}]));
    assert_eq!(obj["spec"]["zones"], json!(["us"]));
    assert_eq!(owned(&obj, "alice", "Apply", None), [".spec.pools"]);
    assert_eq!(
        sorted(owned(&obj, "bob", "Apply", None)),
        paths(&[
            ".spec.pools[name=\"b\"]",
            ".spec.pools[name=\"b\"].name",
            ".spec.pools[name=\"b\"].size",
            ".spec.zones[=\"us\"]"
        ])
    );
}

#[test]
fn element_kept_while_another_manager_owns_a_field_in_it() {
    let s = crd_schema();
    let schema = CrdSchema(&s);
    let a = widget(json!({"pools": [{"name": "a", "size": 1}]}));
    let obj = apply(req(None, &a, "alice", false, &schema)).unwrap();
    // An update by another manager adds a field to alice's element.
    let mut updated = obj.clone();
    updated["spec"]["pools"][0]["nodes"] = json!([{"host": "h", "port": 1}]);
    record_update(
        Some(&obj),
        &mut updated,
        "ctl",
        None,
        "example.com/v1",
        LATER,
        &schema,
    );
    let a2 = widget(json!({"replicas": 1}));
    let obj = apply(req(Some(&updated), &a2, "alice", false, &schema)).unwrap();
    assert_eq!(
        obj["spec"]["pools"],
        json!([{"name": "a", "nodes": [{"host": "h", "port": 1}]}])
    );
}

#[test]
fn set_elements_are_shared() {
    let schema = Builtin;
    let a = json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "c", "finalizers": ["x"]}, "data": {"k": "v"}});
    let obj = apply(req(None, &a, "alice", false, &schema)).unwrap();
    let b = json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "c", "finalizers": ["x", "y"]}});
    let obj = apply(req(Some(&obj), &b, "bob", false, &schema)).unwrap();
    assert_eq!(obj["metadata"]["finalizers"], json!(["x", "y"]));
    assert_eq!(
        sorted(owned(&obj, "bob", "Apply", None)),
        paths(&[
            ".metadata.finalizers[=\"x\"]",
            ".metadata.finalizers[=\"y\"]"
        ])
    );
}

#[test]
fn record_update_takes_ownership_from_apply_manager() {
    let s = crd_schema();
    let schema = CrdSchema(&s);
    let a = widget(json!({"replicas": 2, "mode": "fast"}));
    let obj = apply(req(None, &a, "alice", false, &schema)).unwrap();

    let mut new = obj.clone();
    new["spec"]["replicas"] = json!(7);
    record_update(
        Some(&obj),
        &mut new,
        "scaler",
        None,
        "example.com/v1",
        LATER,
        &schema,
    );
    assert_eq!(owned(&new, "alice", "Apply", None), [".spec.mode"]);
    assert_eq!(owned(&new, "scaler", "Update", None), [".spec.replicas"]);
    let scaler = new["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "scaler")
        .unwrap();
    assert_eq!(scaler["operation"], "Update");
    assert_eq!(scaler["time"], LATER);
    assert_eq!(scaler["apiVersion"], "example.com/v1");
    assert_eq!(scaler["fieldsType"], "FieldsV1");

    // Alice re-applying her old value now conflicts with the updater.
    let err = apply(req(Some(&new), &a, "alice", false, &schema)).unwrap_err();
    assert_eq!(
        err,
        [Conflict {
            manager: "scaler".into(),
            field: ".spec.replicas".into()
        }]
    );
}

#[test]
fn record_update_on_create_and_removal() {
    let schema = Builtin;
    let mut created = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": "d", "labels": {"a": "1"}},
        "data": {"x": "1", "y": "2"}});
    record_update(
        None,
        &mut created,
        "kubectl-create",
        None,
        "v1",
        NOW,
        &schema,
    );
    assert_eq!(
        sorted(owned(&created, "kubectl-create", "Update", None)),
        paths(&[".data.x", ".data.y", ".metadata.labels.a"])
    );

    // Removing a field drops it from its owner; unchanged writes add no entry.
    let mut edited = created.clone();
    edited["data"].as_object_mut().unwrap().remove("y");
    record_update(
        Some(&created),
        &mut edited,
        "editor",
        None,
        "v1",
        LATER,
        &schema,
    );
    assert_eq!(
        sorted(owned(&edited, "kubectl-create", "Update", None)),
        paths(&[".data.x", ".metadata.labels.a"])
    );
    assert_eq!(
        managers(&edited),
        [("kubectl-create".into(), "Update".into())]
    );

    // `[{}]` strips managedFields entirely.
    let mut stripped = edited.clone();
    stripped["metadata"]["managedFields"] = json!([{}]);
    record_update(
        Some(&edited),
        &mut stripped,
        "x",
        None,
        "v1",
        LATER,
        &schema,
    );
    assert!(stripped["metadata"].get("managedFields").is_none());
}

#[test]
fn status_apply_ignores_main_resource_owners() {
    let s = crd_schema();
    let schema = CrdSchema(&s);
    let mut created = widget(json!({"replicas": 1}));
    created["status"] = json!({"phase": "Pending"});
    record_update(
        None,
        &mut created,
        "creator",
        None,
        "example.com/v1",
        NOW,
        &schema,
    );
    assert_eq!(
        sorted(owned(&created, "creator", "Update", None)),
        paths(&[".spec.replicas", ".status.phase"])
    );

    let status = json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w"}, "status": {"phase": "Ready"}});
    let mut r = req(Some(&created), &status, "ctrl", false, &schema);
    r.subresource = Some("status");
    let obj = apply(r).unwrap();
    assert_eq!(obj["status"]["phase"], "Ready");
    assert_eq!(
        owned(&obj, "ctrl", "Apply", Some("status")),
        [".status.phase"]
    );
}

#[test]
fn status_subresource_entries_are_separate() {
    let s = crd_schema();
    let schema = CrdSchema(&s);
    let a = widget(json!({"replicas": 2}));
    let obj = apply(req(None, &a, "ctrl", false, &schema)).unwrap();

    let status = json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w"},
        "status": {"phase": "Ready", "conditions": [{"type": "Ready", "status": "True"}]}});
    let mut r = req(Some(&obj), &status, "ctrl", false, &schema);
    r.subresource = Some("status");
    let obj = apply(r).unwrap();
    assert_eq!(obj["status"]["phase"], "Ready");
    assert_eq!(owned(&obj, "ctrl", "Apply", None), [".spec.replicas"]);
    assert_eq!(
        sorted(owned(&obj, "ctrl", "Apply", Some("status"))),
        paths(&[
            ".status.conditions[type=\"Ready\"]",
            ".status.conditions[type=\"Ready\"].status",
            ".status.conditions[type=\"Ready\"].type",
            ".status.phase"
        ])
    );
    let status_entry = obj["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e.get("subresource").is_some())
        .unwrap();
    assert_eq!(status_entry["subresource"], "status");

    // A main-resource apply by the same manager leaves the status entry alone.
    let a2 = widget(json!({"replicas": 3}));
    let obj = apply(req(Some(&obj), &a2, "ctrl", false, &schema)).unwrap();
    assert_eq!(obj["spec"]["replicas"], 3);
    assert_eq!(obj["status"]["phase"], "Ready");
    assert_eq!(owned(&obj, "ctrl", "Apply", Some("status")).len(), 4);

    // Another manager's status apply conflicts only with status owners.
    let other = json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w"}, "status": {"phase": "Failed"}});
    let mut r = req(Some(&obj), &other, "other", false, &schema);
    r.subresource = Some("status");
    assert_eq!(
        apply(r).unwrap_err(),
        [Conflict {
            manager: "ctrl".into(),
            field: ".status.phase".into()
        }]
    );
}
