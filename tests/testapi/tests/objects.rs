//! Identity, errors, writes, subresources and deletion, through the kube client over
//! real HTTP.

mod common;

use common::*;
use k8s_openapi::api::apps::v1::Deployment as AppsDeployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn cm(name: &str, data: serde_json::Value) -> ConfigMap {
    serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}),
    )
    .unwrap()
}

#[tokio::test]
async fn identity_is_set_by_the_server() {
    let (_s, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let a = cms
        .create(&PostParams::default(), &cm("a", json!({"k": "1"})))
        .await
        .unwrap();
    let b = cms
        .create(&PostParams::default(), &cm("b", json!({"k": "1"})))
        .await
        .unwrap();
    let rv = |o: &ConfigMap| {
        o.metadata
            .resource_version
            .clone()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert!(rv(&b) > rv(&a), "one global increasing resourceVersion");
    assert!(a.metadata.uid.is_some() && a.metadata.uid != b.metadata.uid);
    assert!(a.metadata.creation_timestamp.is_some());
    assert_eq!(a.metadata.namespace.as_deref(), Some("default"));
    let nss: Api<Namespace> = Api::all(client.clone());
    for ns in ["default", "kube-system"] {
        nss.get(ns).await.unwrap();
    }
    let elsewhere: Api<ConfigMap> = Api::namespaced(client.clone(), "nowhere");
    let err = elsewhere
        .create(&PostParams::default(), &cm("c", json!({})))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), 404);
    assert!(
        api_message(&err).contains("namespaces \"nowhere\" not found"),
        "{err}"
    );
}

#[tokio::test]
async fn errors_are_status_objects_with_code_and_reason() {
    let (_s, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let err = cms.get("missing").await.unwrap_err();
    assert_eq!(
        (api_code(&err), api_reason(&err).as_str()),
        (404, "NotFound")
    );

    cms.create(&PostParams::default(), &cm("x", json!({})))
        .await
        .unwrap();
    let err = cms
        .create(&PostParams::default(), &cm("x", json!({})))
        .await
        .unwrap_err();
    assert_eq!(
        (api_code(&err), api_reason(&err).as_str()),
        (409, "AlreadyExists")
    );

    let mut stale = cms.get("x").await.unwrap();
    let mut fresh = stale.clone();
    fresh.metadata.labels = Some([("edited".to_string(), "yes".to_string())].into());
    cms.replace("x", &PostParams::default(), &fresh)
        .await
        .unwrap();
    stale.data = Some([("k".to_string(), "v".to_string())].into());
    let err = cms
        .replace("x", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert_eq!(
        (api_code(&err), api_reason(&err).as_str()),
        (409, "Conflict")
    );

    let err = cms
        .create(&PostParams::default(), &cm("Bad_Name", json!({})))
        .await
        .unwrap_err();
    assert_eq!(
        (api_code(&err), api_reason(&err).as_str()),
        (422, "Invalid")
    );

    let err = cms
        .list(&ListParams::default().labels("a in (b"))
        .await
        .unwrap_err();
    assert_eq!(
        (api_code(&err), api_reason(&err).as_str()),
        (400, "BadRequest")
    );

    let (code, _, body) = raw(
        &client,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/x",
        &[("content-type", "text/plain")],
        "{}",
    )
    .await;
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (code, status["reason"].as_str()),
        (415, Some("UnsupportedMediaType"))
    );
    assert_eq!(status["kind"], "Status");

    let (code, _, body) = raw(
        &client,
        "POST",
        "/api/v1/namespaces/default/configmaps/x",
        &[("content-type", "application/json")],
        "{}",
    )
    .await;
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (code, status["reason"].as_str()),
        (405, Some("MethodNotAllowed"))
    );

    let (code, _, _) = raw(&client, "GET", "/apis/nothing.example/v1/things", &[], "").await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn writes_put_json_merge_and_strategic_patches() {
    let (_s, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    cms.create(
        &PostParams::default(),
        &cm("w", json!({"a": "1", "b": "2"})),
    )
    .await
    .unwrap();

    let merged = cms
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": null, "c": "3"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        merged.data.unwrap(),
        [
            ("b".to_string(), "2".to_string()),
            ("c".to_string(), "3".to_string())
        ]
        .into()
    );

    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/data/b", "value": "2"},
        {"op": "replace", "path": "/data/b", "value": "20"}
    ]))
    .unwrap();
    let patched = cms
        .patch("w", &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap()["b"], "20");
    let failing: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/data/b", "value": "2"}])).unwrap();
    let err = cms
        .patch("w", &PatchParams::default(), &Patch::<()>::Json(failing))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), 422, "a failed JSON-patch test is Invalid");

    let deploys: Api<AppsDeployment> = Api::default_namespaced(client.clone());
    let d: AppsDeployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [
                {"name": "app", "image": "nginx:1", "env": [{"name": "A", "value": "1"}]},
                {"name": "sidecar", "image": "rclone:1"}
            ]}}}
    }))
    .unwrap();
    deploys.create(&PostParams::default(), &d).await.unwrap();
    let smp = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "nginx:2", "env": [{"name": "B", "value": "2"}]}
    ]}}}});
    let out = deploys
        .patch("web", &PatchParams::default(), &Patch::Strategic(smp))
        .await
        .unwrap();
    let containers = out.spec.template.spec.unwrap().containers;
    assert_eq!(containers.len(), 2, "containers merge by name");
    assert_eq!(containers[0].image.as_deref(), Some("nginx:2"));
    let env: Vec<String> = containers[0]
        .env
        .clone()
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(env, ["A", "B"], "env merges by name");
}

#[tokio::test]
async fn generation_bumps_only_on_spec_changes() {
    let (_s, client) = server().await;
    let deploys: Api<AppsDeployment> = Api::default_namespaced(client.clone());
    let d: AppsDeployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "g"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "g"}}, "template": {"metadata": {"labels": {"app": "g"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}
    }))
    .unwrap();
    let created = deploys.create(&PostParams::default(), &d).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let labelled = deploys
        .patch(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        labelled.metadata.generation,
        Some(1),
        "metadata-only change"
    );
    let status = deploys
        .patch_status(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"readyReplicas": 1}})),
        )
        .await
        .unwrap();
    assert_eq!(status.metadata.generation, Some(1), "status-only change");
    assert_eq!(status.status.unwrap().ready_replicas, Some(1));
    let scaled = deploys
        .patch(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(scaled.metadata.generation, Some(2));
}

#[tokio::test]
async fn status_subresource_separates_spec_and_status() {
    let (_s, client) = server().await;
    let deploys: Api<AppsDeployment> = Api::default_namespaced(client.clone());
    let d: AppsDeployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "s"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "s"}}, "template": {"metadata": {"labels": {"app": "s"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}
    }))
    .unwrap();
    deploys.create(&PostParams::default(), &d).await.unwrap();
    // The main endpoint ignores status.
    let out = deploys
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"readyReplicas": 5}})),
        )
        .await
        .unwrap();
    assert!(out.status.and_then(|s| s.ready_replicas).is_none());
    // /status changes only status.
    let out = deploys
        .patch_status(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 9}, "status": {"readyReplicas": 1}})),
        )
        .await
        .unwrap();
    assert_eq!(out.spec.replicas, Some(1));
    assert_eq!(out.status.unwrap().ready_replicas, Some(1));
    // Scale subresource.
    let scale = deploys.get_scale("s").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(1));
    deploys
        .patch_scale(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    assert_eq!(deploys.get("s").await.unwrap().spec.replicas, Some(4));
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let (s, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let mut obj = cm("f", json!({}));
    obj.metadata.finalizers = Some(vec!["kelp.imagine-ai.eu/cleanup".into()]);
    cms.create(&PostParams::default(), &obj).await.unwrap();
    let mut events = s.store().subscribe_all();
    cms.delete("f", &DeleteParams::default()).await.unwrap();
    let marked = cms.get("f").await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    let ev = events.recv().await.unwrap();
    assert_eq!(ev.kind, kelp_testapi::store::EventType::Modified);
    let err = cms
        .patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"finalizers": ["kelp.imagine-ai.eu/cleanup", "other"]}}),
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), 422, "no new finalizers while deleting");
    cms.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(api_code(&cms.get("f").await.unwrap_err()), 404);
    let mut saw_deleted = false;
    while let Ok(ev) = events.try_recv() {
        saw_deleted |= ev.kind == kelp_testapi::store::EventType::Deleted;
    }
    assert!(saw_deleted);
}

#[tokio::test]
async fn deleting_a_namespace_deletes_its_objects() {
    let (_s, client) = server().await;
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "research"}})).unwrap(),
    )
    .await
    .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "research");
    cms.create(&PostParams::default(), &cm("one", json!({})))
        .await
        .unwrap();
    let mut held = cm("held", json!({}));
    held.metadata.finalizers = Some(vec!["x/y".into()]);
    cms.create(&PostParams::default(), &held).await.unwrap();
    nss.delete("research", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(api_code(&cms.get("one").await.unwrap_err()), 404);
    let ns = nss.get("research").await.unwrap();
    assert_eq!(
        ns.status.unwrap().phase.as_deref(),
        Some("Terminating"),
        "waits for the finalizer"
    );
    let err = cms
        .create(&PostParams::default(), &cm("late", json!({})))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), 403);
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(api_code(&nss.get("research").await.unwrap_err()), 404);
}

#[tokio::test]
async fn secrets_turn_string_data_into_data() {
    let (_s, client) = server().await;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let s: Secret = serde_json::from_value(
        json!({"metadata": {"name": "creds"}, "stringData": {"user": "alice"}}),
    )
    .unwrap();
    let out = secrets.create(&PostParams::default(), &s).await.unwrap();
    assert_eq!(out.data.unwrap()["user"].0, b"alice");
    assert_eq!(out.type_.as_deref(), Some("Opaque"));
    assert!(out.string_data.is_none());
}

#[tokio::test]
async fn dry_run_does_not_persist() {
    let (_s, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let out = cms
        .create(
            &PostParams {
                dry_run: true,
                field_manager: None,
            },
            &cm("dry", json!({})),
        )
        .await
        .unwrap();
    assert_eq!(out.metadata.name.as_deref(), Some("dry"));
    assert_eq!(api_code(&cms.get("dry").await.unwrap_err()), 404);
}

#[tokio::test]
async fn many_writers_see_conflicts_never_lost_updates() {
    let (_s, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    cms.create(&PostParams::default(), &cm("counter", json!({"n": "0"})))
        .await
        .unwrap();
    let writers = 8;
    let per_writer = 10;
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let cms = cms.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0;
            let mut done = 0;
            while done < per_writer {
                let mut cur = cms.get("counter").await.unwrap();
                let n: u64 = cur.data.as_ref().unwrap()["n"].parse().unwrap();
                cur.data = Some([("n".to_string(), (n + 1).to_string())].into());
                match cms.replace("counter", &PostParams::default(), &cur).await {
                    Ok(_) => done += 1,
                    Err(e) if api_code(&e) == 409 => conflicts += 1,
                    Err(e) => panic!("{e}"),
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for t in tasks {
        conflicts += t.await.unwrap();
    }
    let n: u64 = cms.get("counter").await.unwrap().data.unwrap()["n"]
        .parse()
        .unwrap();
    assert_eq!(
        n,
        (writers * per_writer) as u64,
        "every successful update counted once"
    );
    assert!(conflicts > 0, "concurrent writers must have met conflicts");
}

#[tokio::test]
async fn events_recorded_by_controllers_are_served_as_core_events_too() {
    let (_s, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let cm = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap(),
        )
        .await
        .unwrap();
    let recorder = kube::runtime::events::Recorder::new(
        client.clone(),
        kube::runtime::events::Reporter {
            controller: "kelp".into(),
            instance: None,
        },
    );
    let event = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Warning,
        reason: "Tested".into(),
        note: Some("a note".into()),
        action: "Test".into(),
        secondary: None,
    };
    let reference = kube::Resource::object_ref(&cm, &());
    recorder.publish(&event, &reference).await.unwrap();
    recorder.publish(&event, &reference).await.unwrap();
    // What `kubectl describe` asks for.
    let core: Api<k8s_openapi::api::core::v1::Event> = Api::default_namespaced(client);
    let uid = cm.metadata.uid.clone().unwrap();
    let list = core
        .list(&ListParams::default().fields(&format!(
            "involvedObject.name=x,involvedObject.namespace=default,involvedObject.kind=ConfigMap,involvedObject.uid={uid}"
        )))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1, "{list:?}");
    let e = &list.items[0];
    assert_eq!(e.reason.as_deref(), Some("Tested"));
    assert_eq!(e.message.as_deref(), Some("a note"));
    assert_eq!(e.type_.as_deref(), Some("Warning"));
    assert_eq!(e.count, Some(2), "the series count is the core count");
    assert!(e.last_timestamp.is_some());
    let none = core
        .list(&ListParams::default().fields("involvedObject.name=other"))
        .await
        .unwrap();
    assert!(none.items.is_empty());
}

/// An apply body without `metadata.name` applies to the object the URL names (as
/// kube-lease-manager sends them); a different name is refused.
#[tokio::test]
async fn apply_without_a_name_targets_the_url() {
    let (_server, client) = common::server().await;
    let lease = serde_json::json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"}, "spec": {}});
    let (code, _, body) = common::raw(
        &client,
        "POST",
        "/apis/coordination.k8s.io/v1/namespaces/default/leases",
        &[("content-type", "application/json")],
        &lease.to_string(),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let patch = serde_json::json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": {"holderIdentity": "a"}});
    let (code, _, body) = common::raw(
        &client,
        "PATCH",
        "/apis/coordination.k8s.io/v1/namespaces/default/leases/l?fieldManager=m",
        &[("content-type", "application/apply-patch+yaml")],
        &patch.to_string(),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"holderIdentity\":\"a\""), "{body}");
    let other = serde_json::json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "other"}, "spec": {}});
    let (code, _, body) = common::raw(
        &client,
        "PATCH",
        "/apis/coordination.k8s.io/v1/namespaces/default/leases/l?fieldManager=m",
        &[("content-type", "application/apply-patch+yaml")],
        &other.to_string(),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("does not match the name on the URL"),
        "{body}"
    );
}
