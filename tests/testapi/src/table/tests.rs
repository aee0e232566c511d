use super::*;
use chrono::TimeZone;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
}

fn column(type_: &str, path: &str) -> Column {
    Column {
        name: "C".into(),
        type_: type_.into(),
        format: None,
        description: None,
        priority: 0,
        json_path: path.into(),
    }
}

#[test]
fn human_duration_boundaries() {
    let cases = [
        (0, "0s"),
        (5, "5s"),
        (119, "119s"),
        (120, "2m"),
        (3 * 60 + 5, "3m5s"),
        (10 * 60, "10m"),
        (2 * 3600 + 59 * 60, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 5 * 60, "3h5m"),
        (47 * 3600 + 59 * 60, "47h"),
        (48 * 3600, "2d"),
        ((3 * 24 + 4) * 3600, "3d4h"),
        (8 * 24 * 3600, "8d"),
        (30 * 24 * 3600, "30d"),
        ((2 * 365 + 3) * 24 * 3600, "2y3d"),
        (3 * 365 * 24 * 3600, "3y"),
        (9 * 365 * 24 * 3600, "9y"),
        (-30, "0s"),
    ];
    for (secs, want) in cases {
        assert_eq!(human_duration(Duration::seconds(secs)), want, "{secs}s");
    }
}

#[test]
fn typed_cells() {
    let obj = json!({
        "metadata": {"creationTimestamp": "2024-05-01T11:56:55Z"},
        "spec": {"replicas": 3, "ratio": 1.5, "paused": true, "tags": ["x", "y"], "obj": {"k": 1}},
        "status": {"bad": "yesterday", "empty": "", "nothing": null}
    });
    let c = |t: &str, p: &str| cell(&obj, &column(t, p), now());
    assert_eq!(c("date", ".metadata.creationTimestamp"), json!("3m5s"));
    assert_eq!(c("date", ".status.bad"), json!("<invalid>"));
    assert_eq!(c("date", ".status.empty"), json!("<unknown>"));
    assert_eq!(c("date", ".status.missing"), Value::Null);
    assert_eq!(c("string", ".spec.replicas"), json!("3"));
    assert_eq!(c("string", ".spec.paused"), json!("true"));
    assert_eq!(c("string", ".spec.tags[*]"), json!("x,y"));
    assert_eq!(c("string", ".spec.tags"), json!(r#"["x","y"]"#));
    assert_eq!(c("string", ".spec.obj"), json!(r#"{"k":1}"#));
    assert_eq!(c("string", ".status.nothing"), Value::Null);
    assert_eq!(c("string", ".status.missing"), Value::Null);
    assert_eq!(c("integer", ".spec.replicas"), json!(3));
    assert_eq!(c("integer", ".spec.ratio"), json!(1));
    assert_eq!(c("integer", ".spec.paused"), Value::Null);
    assert_eq!(c("number", ".spec.ratio"), json!(1.5));
    assert_eq!(c("boolean", ".spec.paused"), json!(true));
    assert_eq!(c("boolean", ".spec.replicas"), Value::Null);
}

#[test]
fn date_cell_with_offset_and_fraction() {
    let obj = json!({"t": "2024-05-01T13:00:00.5+02:00"});
    assert_eq!(cell(&obj, &column("date", ".t"), now()), json!("59m"));
}

#[test]
fn include_object_parsing() {
    assert_eq!("".parse::<IncludeObject>(), Ok(IncludeObject::Metadata));
    assert_eq!("None".parse::<IncludeObject>(), Ok(IncludeObject::None));
    assert_eq!("Object".parse::<IncludeObject>(), Ok(IncludeObject::Object));
    assert_eq!(
        "all".parse::<IncludeObject>(),
        Err("unrecognized includeObject value: \"all\"".to_string())
    );
    assert_eq!(IncludeObject::default(), IncludeObject::Metadata);
}

fn objects() -> Vec<Value> {
    vec![
        json!({"apiVersion": "example.com/v1", "kind": "Widget",
               "metadata": {"name": "w1", "namespace": "default", "creationTimestamp": "2024-05-01T11:00:00Z"},
               "spec": {"size": 3}}),
        json!({"apiVersion": "example.com/v1", "kind": "Widget",
               "metadata": {"name": "w2", "namespace": "default"}}),
    ]
}

#[test]
fn table_default_columns_and_metadata_rows() {
    let t = table(&objects(), &[], IncludeObject::Metadata, "42", now());
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(t["metadata"], json!({"resourceVersion": "42"}));
    let defs = t["columnDefinitions"].as_array().unwrap();
    assert_eq!(defs.len(), 2);
    assert_eq!(defs[0]["name"], "Name");
    assert_eq!(defs[0]["type"], "string");
    assert_eq!(defs[0]["format"], "name");
    assert_eq!(defs[0]["priority"], 0);
    assert!(
        defs[0]["description"]
            .as_str()
            .unwrap()
            .starts_with("Name must be unique")
    );
    assert_eq!(defs[1]["name"], "Age");
    assert_eq!(defs[1]["type"], "date");
    assert_eq!(defs[1]["format"], "");
    let rows = t["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["cells"], json!(["w1", "60m"]));
    assert_eq!(rows[1]["cells"], json!(["w2", null]));
    assert_eq!(
        rows[0]["object"],
        json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"name": "w1", "namespace": "default", "creationTimestamp": "2024-05-01T11:00:00Z"}
        })
    );
}

#[test]
fn table_custom_columns_with_none_and_object() {
    let cols = vec![
        Column {
            name: "Size".into(),
            type_: "integer".into(),
            format: None,
            description: None,
            priority: 1,
            json_path: ".spec.size".into(),
        },
        Column {
            description: Some("When".into()),
            format: Some("date-time".into()),
            ..column("date", ".metadata.creationTimestamp")
        },
    ];
    let t = table(&objects(), &cols, IncludeObject::None, "", now());
    assert_eq!(t["metadata"], json!({}));
    let defs = t["columnDefinitions"].as_array().unwrap();
    assert_eq!(
        defs[1],
        json!({"name": "Size", "type": "integer", "format": "",
               "description": "Custom resource definition column (in JSONPath format): .spec.size",
               "priority": 1})
    );
    assert_eq!(defs[2]["description"], "When");
    assert_eq!(defs[2]["format"], "date-time");
    let rows = t["rows"].as_array().unwrap();
    assert_eq!(rows[0], json!({"cells": ["w1", 3, "60m"]}));
    assert!(rows[1].get("object").is_none());

    let t = table(&objects(), &cols, IncludeObject::Object, "7", now());
    assert_eq!(t["rows"][0]["object"], objects()[0]);
    assert_eq!(t["rows"][1]["cells"], json!(["w2", null, null]));

    let t = table(&[], &cols, IncludeObject::Object, "7", now());
    assert_eq!(t["rows"], json!([]));
}

#[test]
fn column_serde_uses_crd_field_names() {
    let c: Column = serde_json::from_value(json!({
        "name": "Ready", "type": "string", "jsonPath": ".status.ready"
    }))
    .unwrap();
    assert_eq!(c.json_path, ".status.ready");
    assert_eq!(c.priority, 0);
    assert!(c.format.is_none());
    assert_eq!(
        serde_json::to_value(&c).unwrap()["jsonPath"],
        ".status.ready"
    );
}

fn builtin_cells(kind: &str, obj: &Value) -> Vec<Value> {
    let t = table(
        std::slice::from_ref(obj),
        &builtin_columns(kind),
        IncludeObject::None,
        "1",
        now(),
    );
    t["rows"][0]["cells"].as_array().unwrap().clone()
}

fn headers(kind: &str) -> Vec<String> {
    let t = table(&[], &builtin_columns(kind), IncludeObject::None, "1", now());
    t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["priority"] == 0)
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn builtin_secret_and_configmap_data_count() {
    assert_eq!(headers("Secret"), ["Name", "Type", "Data", "Age"]);
    let secret = json!({
        "metadata": {"name": "s", "creationTimestamp": "2024-04-28T08:00:00Z"},
        "type": "Opaque",
        "data": {"a": "eA==", "b": "eQ==", "c": ""}
    });
    assert_eq!(
        builtin_cells("Secret", &secret),
        vec![json!("s"), json!("Opaque"), json!(3), json!("3d4h")]
    );
    let empty = json!({"metadata": {"name": "e"}});
    assert_eq!(
        builtin_cells("Secret", &empty),
        vec![json!("e"), json!(""), json!(0), json!("<unknown>")]
    );
    let cm = json!({"metadata": {"name": "c"}, "data": {"a": "1"}, "binaryData": {"b": "AA=="}});
    assert_eq!(builtin_cells("ConfigMap", &cm)[1], json!(2));
}

#[test]
fn builtin_deployment_ready() {
    assert_eq!(
        headers("Deployment"),
        ["Name", "Ready", "Up-to-date", "Available", "Age"]
    );
    let d = json!({
        "metadata": {"name": "web", "creationTimestamp": "2024-05-01T11:59:00Z"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "dev"]}]},
            "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1"}, {"name": "side", "image": "busybox"}]}}
        },
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
    });
    assert_eq!(
        builtin_cells("Deployment", &d),
        vec![
            json!("web"),
            json!("2/3"),
            json!(3),
            json!(2),
            json!("60s"),
            json!("nginx,side"),
            json!("nginx:1,busybox"),
            json!("app=web,env in (dev,prod)")
        ]
    );
    let fresh = json!({"metadata": {"name": "new"}, "spec": {}});
    let cells = builtin_cells("Deployment", &fresh);
    assert_eq!(cells[1..4], [json!("0/1"), json!(0), json!(0)]);
    let scaled_down = json!({"metadata": {"name": "z"}, "spec": {"replicas": 0}});
    assert_eq!(builtin_cells("Deployment", &scaled_down)[1], json!("0/0"));
}

#[test]
fn builtin_pod_columns() {
    assert_eq!(
        headers("Pod"),
        ["Name", "Ready", "Status", "Restarts", "Age"]
    );
    let p = json!({
        "metadata": {"name": "p", "creationTimestamp": "2024-05-01T10:00:00Z"},
        "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.5",
            "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}},
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-05-01T11:55:00Z"}}},
                {"name": "b", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
            ]
        }
    });
    assert_eq!(
        builtin_cells("Pod", &p),
        vec![
            json!("p"),
            json!("1/2"),
            json!("CrashLoopBackOff"),
            json!("2 (5m ago)"),
            json!("120m"),
            json!("10.0.0.5"),
            json!("n1"),
            json!("<none>"),
            json!("<none>")
        ]
    );
    let pending = json!({
        "metadata": {"name": "q"},
        "spec": {"containers": [{"name": "a"}], "initContainers": [{"name": "init"}]},
        "status": {"phase": "Pending", "initContainerStatuses": [{"name": "init", "state": {"running": {}}}]}
    });
    assert_eq!(
        builtin_cells("Pod", &pending)[1..4],
        [json!("0/1"), json!("Init:0/1"), json!("0")]
    );
    let deleting = json!({
        "metadata": {"name": "r", "deletionTimestamp": "2024-05-01T11:00:00Z"},
        "spec": {"containers": [{"name": "a"}]},
        "status": {"phase": "Running"}
    });
    assert_eq!(builtin_cells("Pod", &deleting)[2], json!("Terminating"));
    let done = json!({
        "metadata": {"name": "s"},
        "spec": {"containers": [{"name": "a"}]},
        "status": {"phase": "Succeeded", "containerStatuses": [
            {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}
    });
    assert_eq!(
        builtin_cells("Pod", &done)[1..3],
        [json!("0/1"), json!("Completed")]
    );
}

#[test]
fn builtin_node_service_lease_namespace() {
    assert_eq!(
        headers("Node"),
        ["Name", "Status", "Roles", "Age", "Version"]
    );
    let n = json!({
        "metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "master"}},
        "spec": {"unschedulable": true},
        "status": {"conditions": [{"type": "Ready", "status": "True"}],
                   "addresses": [{"type": "InternalIP", "address": "192.168.1.2"}],
                   "nodeInfo": {"kubeletVersion": "v1.30.0"}}
    });
    let cells = builtin_cells("Node", &n);
    assert_eq!(
        cells[1..3],
        [
            json!("Ready,SchedulingDisabled"),
            json!("control-plane,master")
        ]
    );
    assert_eq!(
        cells[4..7],
        [json!("v1.30.0"), json!("192.168.1.2"), json!("<none>")]
    );
    assert_eq!(cells[7], json!("<unknown>"));
    let bare = json!({"metadata": {"name": "n2"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
    assert_eq!(
        builtin_cells("Node", &bare)[1..3],
        [json!("NotReady"), json!("<none>")]
    );
    assert_eq!(
        builtin_cells("Node", &json!({"metadata": {"name": "n3"}}))[1],
        json!("Unknown")
    );

    assert_eq!(
        headers("Service"),
        [
            "Name",
            "Type",
            "Cluster-IP",
            "External-IP",
            "Port(s)",
            "Age"
        ]
    );
    let svc = json!({
        "metadata": {"name": "web"},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}, {"port": 53, "protocol": "UDP", "nodePort": 30053}],
                 "selector": {"b": "2", "a": "1"}}
    });
    assert_eq!(
        builtin_cells("Service", &svc)[1..],
        [
            json!("ClusterIP"),
            json!("10.96.0.10"),
            json!("<none>"),
            json!("80/TCP,53:30053/UDP"),
            json!("<unknown>"),
            json!("a=1,b=2")
        ]
    );
    let lb = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "clusterIPs": ["10.0.0.1"]}});
    assert_eq!(
        builtin_cells("Service", &lb)[2..5],
        [json!("10.0.0.1"), json!("<pending>"), json!("<none>")]
    );
    let ext = json!({"metadata": {"name": "x"}, "spec": {"type": "ExternalName", "externalName": "example.com"}});
    assert_eq!(
        builtin_cells("Service", &ext)[2..4],
        [json!("<none>"), json!("example.com")]
    );

    let lease = json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "me"}});
    assert_eq!(builtin_cells("Lease", &lease)[1], json!("me"));
    let ns = json!({"metadata": {"name": "default"}, "status": {"phase": "Active"}});
    assert_eq!(
        builtin_cells("Namespace", &ns)[..2],
        [json!("default"), json!("Active")]
    );
    assert!(builtin_columns("Widget").is_empty());
}

#[test]
fn builtin_event_puts_name_last() {
    let cols = builtin_columns("Event");
    let t = table(&[], &cols, IncludeObject::None, "1", now());
    let defs = t["columnDefinitions"].as_array().unwrap();
    assert_eq!(defs.len(), cols.len());
    assert_eq!(defs[0]["name"], "Last Seen");
    assert_eq!(defs.last().unwrap()["format"], "name");
    assert_eq!(
        headers("Event"),
        ["Last Seen", "Type", "Reason", "Object", "Message"]
    );

    let core = json!({
        "metadata": {"name": "web.17c"},
        "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{a}"},
        "reason": "Started", "type": "Normal", "message": " Started container a\n",
        "source": {"component": "kubelet", "host": "n1"},
        "firstTimestamp": "2024-05-01T11:00:00Z", "lastTimestamp": "2024-05-01T11:58:00Z", "count": 4
    });
    assert_eq!(
        builtin_cells("Event", &core),
        vec![
            json!("2m"),
            json!("Normal"),
            json!("Started"),
            json!("pod/web"),
            json!("spec.containers{a}"),
            json!("kubelet, n1"),
            json!("Started container a"),
            json!("60m"),
            json!(4),
            json!("web.17c")
        ]
    );
    let new_api = json!({
        "metadata": {"name": "e2"},
        "regarding": {"kind": "Deployment", "name": "d"},
        "note": "scaled", "reason": "ScalingReplicaSet", "type": "Normal",
        "reportingController": "deployment-controller",
        "eventTime": "2024-05-01T11:59:30.000000Z"
    });
    let cells = builtin_cells("Event", &new_api);
    assert_eq!(cells[0], json!("30s"));
    assert_eq!(cells[3], json!("deployment/d"));
    assert_eq!(cells[5], json!("deployment-controller"));
    assert_eq!(cells[6], json!("scaled"));
    assert_eq!(cells[8], json!(1));
}
