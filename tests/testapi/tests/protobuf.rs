//! Protobuf request bodies, encoded by prost from k8s-pb's generated messages (the same
//! wire format kubectl and Helm send), come out as the JSON Kubernetes would store.

mod common;

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::coordination::v1 as coordination;
use k8s_pb::api::core::v1 as core;
use k8s_pb::api::rbac::v1 as rbac;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::{Value, json};

fn envelope(api_version: &str, kind: &str, msg: &impl Message) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(msg.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = b"k8s\0".to_vec();
    out.extend(unknown.encode_to_vec());
    out
}

async fn post(client: &kube::Client, path: &str, body: Vec<u8>) -> (u16, Value) {
    let req = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/vnd.kubernetes.protobuf")
        .header("accept", "application/vnd.kubernetes.protobuf, */*")
        .body(kube::client::Body::from(body))
        .unwrap();
    let resp = client.send(req).await.unwrap();
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect_bytes().await.unwrap();
    (code, serde_json::from_slice(&bytes).unwrap())
}

fn s(v: &str) -> Option<String> {
    Some(v.into())
}

fn object_meta(name: &str) -> Option<meta::ObjectMeta> {
    // What Go's marshaller writes for an object kubectl builds: every non-pointer field,
    // zero or not.
    Some(meta::ObjectMeta {
        name: s(name),
        generate_name: s(""),
        namespace: s(""),
        uid: s(""),
        resource_version: s(""),
        generation: Some(0),
        creation_timestamp: Some(meta::Time {
            seconds: Some(0),
            nanos: Some(0),
        }),
        labels: [("app".to_string(), "web".to_string())].into(),
        ..Default::default()
    })
}

#[tokio::test]
async fn secrets_and_configmaps_keep_their_data() {
    let (_server, client) = common::server().await;
    let secret = core::Secret {
        metadata: object_meta("release.v1"),
        data: [("release".to_string(), b"\x00\x01binary".to_vec())].into(),
        r#type: s("helm.sh/release.v1"),
        immutable: None,
        ..Default::default()
    };
    let (code, out) = post(
        &client,
        "/api/v1/namespaces/default/secrets",
        envelope("v1", "Secret", &secret),
    )
    .await;
    assert_eq!(code, 201, "{out}");
    assert_eq!(out["data"]["release"], "AAFiaW5hcnk=");
    assert_eq!(out["type"], "helm.sh/release.v1");
    assert_eq!(out["metadata"]["labels"]["app"], "web");
    // Zero values Go wrote for non-pointer fields are not stored as values.
    assert!(out["metadata"].get("generateName").is_none(), "{out}");
    assert!(out["metadata"]["creationTimestamp"].is_string(), "{out}");
    assert!(out.get("immutable").is_none());

    let cm = core::ConfigMap {
        metadata: object_meta("settings"),
        data: [
            ("empty".to_string(), String::new()),
            ("k".to_string(), "v".to_string()),
        ]
        .into(),
        immutable: Some(false),
        ..Default::default()
    };
    let (code, out) = post(
        &client,
        "/api/v1/namespaces/default/configmaps",
        envelope("v1", "ConfigMap", &cm),
    )
    .await;
    assert_eq!(code, 201, "{out}");
    assert_eq!(out["data"], json!({"empty": "", "k": "v"}));
    assert_eq!(
        out["immutable"],
        json!(false),
        "a pointer's explicit false stays"
    );
}

#[tokio::test]
async fn deployments_with_embedded_structs_quantities_and_int_or_string() {
    let (_server, client) = common::server().await;
    let container = core::Container {
        name: s("web"),
        image: s("nginx:1.27"),
        ports: vec![core::ContainerPort {
            container_port: Some(8080),
            protocol: s("TCP"),
            name: s("http"),
            ..Default::default()
        }],
        env: vec![core::EnvVar {
            name: s("PASSWORD"),
            value: s(""),
            value_from: Some(core::EnvVarSource {
                secret_key_ref: Some(core::SecretKeySelector {
                    local_object_reference: Some(core::LocalObjectReference { name: s("creds") }),
                    key: s("password"),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
        }],
        resources: Some(core::ResourceRequirements {
            limits: [("nvidia.com/gpu".to_string(), Quantity { string: s("1") })].into(),
            requests: [("memory".to_string(), Quantity { string: s("512Mi") })].into(),
            ..Default::default()
        }),
        readiness_probe: Some(core::Probe {
            handler: Some(core::ProbeHandler {
                http_get: Some(core::HttpGetAction {
                    path: s("/v2/"),
                    port: Some(IntOrString {
                        r#type: Some(1),
                        int_val: Some(0),
                        str_val: s("http"),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            period_seconds: Some(10),
            ..Default::default()
        }),
        ..Default::default()
    };
    let deployment = apps::Deployment {
        metadata: object_meta("web"),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(0),
            selector: Some(meta::LabelSelector {
                match_labels: [("app".to_string(), "web".to_string())].into(),
                ..Default::default()
            }),
            template: Some(core::PodTemplateSpec {
                metadata: object_meta(""),
                spec: Some(core::PodSpec {
                    containers: vec![container],
                    volumes: vec![core::Volume {
                        name: s("config"),
                        volume_source: Some(core::VolumeSource {
                            config_map: Some(core::ConfigMapVolumeSource {
                                local_object_reference: Some(core::LocalObjectReference {
                                    name: s("settings"),
                                }),
                                default_mode: Some(0o644),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                    }],
                    ..Default::default()
                }),
            }),
            strategy: Some(apps::DeploymentStrategy {
                r#type: s(""),
                rolling_update: None,
            }),
            min_ready_seconds: Some(0),
            ..Default::default()
        }),
        status: Some(apps::DeploymentStatus::default()),
    };
    let (code, out) = post(
        &client,
        "/apis/apps/v1/namespaces/default/deployments",
        envelope("apps/v1", "Deployment", &deployment),
    )
    .await;
    assert_eq!(code, 201, "{out}");
    let spec = &out["spec"];
    assert_eq!(spec["replicas"], 0, "replicas 0 is kept: {spec}");
    assert!(spec.get("minReadySeconds").is_none());
    assert_eq!(spec["strategy"], json!({}));
    let c = &spec["template"]["spec"]["containers"][0];
    assert_eq!(
        c["ports"],
        json!([{"containerPort": 8080, "protocol": "TCP", "name": "http"}])
    );
    assert_eq!(
        c["env"][0]["valueFrom"]["secretKeyRef"],
        json!({"name": "creds", "key": "password", "optional": false}),
        "the embedded LocalObjectReference is inline"
    );
    assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], "1");
    assert_eq!(c["resources"]["requests"]["memory"], "512Mi");
    assert_eq!(
        c["readinessProbe"],
        json!({"httpGet": {"path": "/v2/", "port": "http"}, "periodSeconds": 10})
    );
    assert_eq!(
        spec["template"]["spec"]["volumes"][0],
        json!({"name": "config", "configMap": {"name": "settings", "defaultMode": 420}})
    );
    assert_eq!(
        spec["template"]["metadata"],
        json!({"labels": {"app": "web"}})
    );
}

#[tokio::test]
async fn roles_leases_and_services() {
    let (_server, client) = common::server().await;
    let role = rbac::Role {
        metadata: object_meta("reader"),
        rules: vec![rbac::PolicyRule {
            verbs: vec!["get".into(), "list".into()],
            api_groups: vec!["".into()],
            resources: vec!["pods".into(), "pods/log".into()],
            resource_names: vec![],
            non_resource_ur_ls: vec![],
        }],
    };
    let (code, out) = post(
        &client,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles",
        envelope("rbac.authorization.k8s.io/v1", "Role", &role),
    )
    .await;
    assert_eq!(code, 201, "{out}");
    assert_eq!(
        out["rules"],
        json!([{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "pods/log"]}])
    );

    let lease = coordination::Lease {
        metadata: object_meta("kelp-operator"),
        spec: Some(coordination::LeaseSpec {
            holder_identity: s("kelp-0"),
            lease_duration_seconds: Some(15),
            renew_time: Some(meta::MicroTime {
                seconds: Some(1_796_000_000),
                nanos: Some(123_456_000),
            }),
            ..Default::default()
        }),
    };
    let (code, out) = post(
        &client,
        "/apis/coordination.k8s.io/v1/namespaces/default/leases",
        envelope("coordination.k8s.io/v1", "Lease", &lease),
    )
    .await;
    assert_eq!(code, 201, "{out}");
    assert_eq!(out["spec"]["renewTime"], "2026-11-30T00:53:20.123456Z");
    assert_eq!(out["spec"]["leaseDurationSeconds"], 15);

    let svc = core::Service {
        metadata: object_meta("web"),
        spec: Some(core::ServiceSpec {
            ports: vec![core::ServicePort {
                port: Some(80),
                target_port: Some(IntOrString {
                    r#type: Some(0),
                    int_val: Some(8080),
                    str_val: s(""),
                }),
                ..Default::default()
            }],
            external_ips: vec!["192.0.2.1".into()],
            ..Default::default()
        }),
        status: None,
    };
    let (code, out) = post(
        &client,
        "/api/v1/namespaces/default/services",
        envelope("v1", "Service", &svc),
    )
    .await;
    assert_eq!(code, 201, "{out}");
    assert_eq!(out["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(out["spec"]["externalIPs"], json!(["192.0.2.1"]));
}

#[tokio::test]
async fn malformed_protobuf_is_a_bad_request() {
    let (_server, client) = common::server().await;
    let (code, out) = post(
        &client,
        "/api/v1/namespaces/default/secrets",
        b"k8s\0\x0a\x05ab".to_vec(),
    )
    .await;
    assert_eq!(code, 400, "{out}");
    assert!(
        out["message"]
            .as_str()
            .unwrap()
            .starts_with("error decoding protobuf: truncated"),
        "{out}"
    );
    let (code, out) = post(
        &client,
        "/api/v1/namespaces/default/secrets",
        envelope("example.com/v1", "Widget", &core::Secret::default()),
    )
    .await;
    assert_eq!(code, 400, "{out}");
    assert!(out["message"].as_str().unwrap().contains("example.com/v1"));
}
