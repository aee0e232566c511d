//! Custom resources: CRD registration, schema pruning, defaults, validation (CEL
//! included), server-side apply, tables, and kube-runtime controllers on top.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kelp_crds::{Cluster, Deployment, Module};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use serde_json::json;

fn module_json(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "kelp.imagine-ai.eu/v1alpha1", "kind": "Module",
        "metadata": {"name": name},
        "spec": {"title": "YoloV8", "summary": "Object detection", "image": {"repository": "ai4oshub/ai4os-yolov8-torch"}}
    })
}

fn module(name: &str) -> Module {
    serde_json::from_value(module_json(name)).unwrap()
}

#[tokio::test]
async fn crds_are_served_as_soon_as_they_are_created() {
    let (_s, client) = server().await;
    install_kelp_crds(&client).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds.get("modules.kelp.imagine-ai.eu").await.unwrap();
    let conds = crd.status.unwrap().conditions.unwrap();
    for t in ["Established", "NamesAccepted"] {
        assert!(
            conds.iter().any(|c| c.type_ == t && c.status == "True"),
            "{t}"
        );
    }
    let (code, _, body) = raw(&client, "GET", "/apis/kelp.imagine-ai.eu/v1alpha1", &[], "").await;
    assert_eq!(code, 200);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let modules = list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "modules")
        .unwrap();
    assert_eq!(modules["shortNames"], json!(["kmod"]));
    assert_eq!(modules["categories"], json!(["kelp"]));
    assert!(
        list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "deployments/scale")
    );
    let (code, _, body) = raw(
        &client,
        "GET",
        "/openapi/v3/apis/kelp.imagine-ai.eu/v1alpha1",
        &[],
        "",
    )
    .await;
    assert_eq!(code, 200);
    assert!(body.contains("x-kubernetes-group-version-kind") && body.contains("fieldValidation"));

    let modules: Api<Module> = Api::default_namespaced(client.clone());
    let created = modules
        .create(&PostParams::default(), &module("yolo"))
        .await
        .unwrap();
    assert_eq!(created.spec.serving.port, 5000, "defaulted by the schema");
    assert_eq!(created.spec.image.tag, "latest");
}

#[tokio::test]
async fn invalid_custom_resources_are_rejected_with_the_field_named() {
    let (_s, client) = server().await;
    install_kelp_crds(&client).await;
    let post = |path: &str, body: serde_json::Value| {
        let client = client.clone();
        let path = path.to_string();
        async move {
            raw(
                &client,
                "POST",
                &path,
                &[("content-type", "application/json")],
                &body.to_string(),
            )
            .await
        }
    };
    let modules = "/apis/kelp.imagine-ai.eu/v1alpha1/namespaces/default/modules";
    let mut bad = module_json("bad-port");
    bad["spec"]["serving"] = json!({"port": 0});
    let (code, _, body) = post(modules, bad).await;
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (code, status["reason"].as_str()),
        (422, Some("Invalid")),
        "{body}"
    );
    assert_eq!(
        status["details"]["causes"][0]["field"], "spec.serving.port",
        "{body}"
    );

    let clusters = "/apis/kelp.imagine-ai.eu/v1alpha1/namespaces/default/clusters";
    let no_cloud = json!({"apiVersion": "kelp.imagine-ai.eu/v1alpha1", "kind": "Cluster", "metadata": {"name": "c"},
        "spec": {"cloud": {}, "nodePools": [{"name": "p"}]}});
    let (code, _, body) = post(clusters, no_cloud).await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains(
            "exactly one of cloud.sim, cloud.ec2, cloud.openstack, cloud.egi must be set"
        ),
        "{body}"
    );

    let dup = json!({"apiVersion": "kelp.imagine-ai.eu/v1alpha1", "kind": "Cluster", "metadata": {"name": "d"},
        "spec": {"cloud": {"sim": {}}, "nodePools": [{"name": "p"}, {"name": "p"}]}});
    let (code, _, body) = post(clusters, dup).await;
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("spec.nodePools[1]"), "{body}");

    // Unknown fields: Strict refuses, Warn warns, Ignore prunes silently.
    let mut extra = module_json("extra");
    extra["spec"]["image"]["password"] = json!("hunter2");
    let (code, _, body) = post(&format!("{modules}?fieldValidation=Strict"), extra.clone()).await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("unknown field \\\"spec.image.password\\\"")
            || body.contains("spec.image.password"),
        "{body}"
    );
    let (code, headers, _) = post(&format!("{modules}?fieldValidation=Warn"), extra.clone()).await;
    assert_eq!(code, 201);
    assert!(
        headers
            .get("warning")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("spec.image.password")
    );
    extra["metadata"]["name"] = json!("extra2");
    let (code, headers, body) = post(&format!("{modules}?fieldValidation=Ignore"), extra).await;
    assert_eq!(code, 201);
    assert!(headers.get("warning").is_none());
    assert!(!body.contains("hunter2"), "pruned");
}

#[tokio::test]
async fn server_side_apply_tracks_managers_and_conflicts() {
    let (_s, client) = server().await;
    install_kelp_crds(&client).await;
    let modules: Api<Module> = Api::default_namespaced(client.clone());
    let mut applied = module_json("ssa");
    applied["spec"]["description"] = json!("first");
    applied["metadata"]["labels"] = json!({"team": "fish"});
    let pp = PatchParams::apply("gitops");
    let out = modules
        .patch("ssa", &pp, &Patch::Apply(&applied))
        .await
        .unwrap();
    let managers: Vec<String> = out
        .metadata
        .managed_fields
        .clone()
        .unwrap()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(managers, ["gitops"]);

    // Another manager changing a field gitops owns: conflict, unless forced.
    let other = json!({"apiVersion": "kelp.imagine-ai.eu/v1alpha1", "kind": "Module", "metadata": {"name": "ssa"},
        "spec": {"title": "YoloV8", "summary": "Object detection", "image": {"repository": "ai4oshub/ai4os-yolov8-torch"}, "description": "second"}});
    let err = modules
        .patch(
            "ssa",
            &PatchParams::apply("dashboard"),
            &Patch::Apply(&other),
        )
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), 409, "{err}");
    let forced = modules
        .patch(
            "ssa",
            &PatchParams::apply("dashboard").force(),
            &Patch::Apply(&other),
        )
        .await
        .unwrap();
    assert_eq!(forced.spec.description.as_deref(), Some("second"));

    // A manager that stops applying a field it alone owns removes it.
    let mut without_label = module_json("ssa");
    without_label["spec"]["description"] = json!("first");
    let out = modules
        .patch(
            "ssa",
            &PatchParams::apply("gitops").force(),
            &Patch::Apply(&without_label),
        )
        .await
        .unwrap();
    assert!(
        !out.metadata.labels.unwrap_or_default().contains_key("team"),
        "label removed"
    );

    // Re-applying the same configuration changes nothing.
    let rv = out.metadata.resource_version.clone();
    let again = modules
        .patch(
            "ssa",
            &PatchParams::apply("gitops").force(),
            &Patch::Apply(&without_label),
        )
        .await
        .unwrap();
    assert_eq!(again.metadata.resource_version, rv);

    // Apply creates, and status is applied through /status only.
    let created = modules
        .patch(
            "fresh",
            &PatchParams::apply("kelp"),
            &Patch::Apply(module_json("fresh")),
        )
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    let status = json!({"apiVersion": "kelp.imagine-ai.eu/v1alpha1", "kind": "Module", "metadata": {"name": "fresh"},
        "status": {"resolvedImage": {"cpu": "a:latest", "gpu": "a:gpu"}}});
    let out = modules
        .patch_status(
            "fresh",
            &PatchParams::apply("kelp").force(),
            &Patch::Apply(&status),
        )
        .await
        .unwrap();
    assert_eq!(out.status.unwrap().resolved_image.unwrap().gpu, "a:gpu");
    assert_eq!(out.metadata.generation, Some(1));
}

#[tokio::test]
async fn kubectl_tables_show_the_printer_columns() {
    let (_s, client) = server().await;
    install_kelp_crds(&client).await;
    let modules: Api<Module> = Api::default_namespaced(client.clone());
    modules
        .create(&PostParams::default(), &module("yolo"))
        .await
        .unwrap();
    let (code, _, body) = raw(
        &client,
        "GET",
        "/apis/kelp.imagine-ai.eu/v1alpha1/namespaces/default/modules",
        &[(
            "accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )],
        "",
    )
    .await;
    assert_eq!(code, 200);
    let table: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(table["kind"], "Table");
    let cols: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["Name", "Image", "GPU", "Ready", "Age"]);
    assert_eq!(table["rows"][0]["cells"][0], "yolo");
    assert_eq!(table["rows"][0]["cells"][1], "ai4oshub/ai4os-yolov8-torch");
}

#[tokio::test]
async fn scale_subresource_and_crd_deletion() {
    let (_s, client) = server().await;
    install_kelp_crds(&client).await;
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "kelp.imagine-ai.eu/v1alpha1", "kind": "Deployment", "metadata": {"name": "fish"},
        "spec": {"moduleRef": {"name": "yolo"}, "clusterRef": {"name": "sim"}}
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    deployments
        .patch_scale(
            "fish",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(deployments.get("fish").await.unwrap().spec.replicas, 3);

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.delete("deployments.kelp.imagine-ai.eu", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(
        api_code(
            &crds
                .get("deployments.kelp.imagine-ai.eu")
                .await
                .unwrap_err()
        ),
        404
    );
    let (code, _, _) = raw(
        &client,
        "GET",
        "/apis/kelp.imagine-ai.eu/v1alpha1/namespaces/default/deployments",
        &[],
        "",
    )
    .await;
    assert_eq!(code, 404, "no longer served");
    install_kelp_crds_again(&client).await;
    assert!(
        deployments
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "objects went with the CRD"
    );
}

async fn install_kelp_crds_again(client: &kube::Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = kelp_crds::crds()
        .into_iter()
        .find(|c| c.spec.names.kind == "Deployment")
        .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
}

/// The test controller's context: the Cluster API and the names seen and cleaned up.
type Ctx = (Api<Cluster>, Names, Names);
type Names = Arc<std::sync::Mutex<Vec<String>>>;

#[derive(Debug, thiserror::Error)]
#[error("reconcile failed: {0}")]
struct ReconcileError(String);

#[tokio::test]
async fn a_controller_with_a_finalizer_sees_new_objects_and_cleans_up() {
    let (_s, client) = server().await;
    install_kelp_crds(&client).await;
    let clusters: Api<Cluster> = Api::default_namespaced(client.clone());
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let cleaned = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let ctx = Arc::new((clusters.clone(), seen.clone(), cleaned.clone()));
    let controller = Controller::new(clusters.clone(), watcher::Config::default())
        .run(
            |obj: Arc<Cluster>, ctx: Arc<Ctx>| async move {
                let (api, seen, cleaned) = (&ctx.0, ctx.1.clone(), ctx.2.clone());
                finalizer(api, "kelp.imagine-ai.eu/test", obj, |event| async move {
                    match event {
                        Finalizer::Apply(c) => {
                            seen.lock().unwrap().push(c.metadata.name.clone().unwrap())
                        }
                        Finalizer::Cleanup(c) => cleaned
                            .lock()
                            .unwrap()
                            .push(c.metadata.name.clone().unwrap()),
                    }
                    Ok::<_, std::convert::Infallible>(Action::await_change())
                })
                .await
                .map_err(|e| ReconcileError(e.to_string()))
            },
            |_, _, _| Action::requeue(Duration::from_millis(100)),
            ctx,
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                eprintln!("reconcile error: {e:?}");
            }
        });
    let handle = tokio::spawn(controller);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cluster: Cluster = serde_json::from_value(json!({
        "apiVersion": "kelp.imagine-ai.eu/v1alpha1", "kind": "Cluster", "metadata": {"name": "late"},
        "spec": {"cloud": {"sim": {}}, "nodePools": [{"name": "cpu"}]}
    }))
    .unwrap();
    clusters
        .create(&PostParams::default(), &cluster)
        .await
        .unwrap();
    wait_until(|| seen.lock().unwrap().contains(&"late".to_string())).await;
    let got = clusters.get("late").await.unwrap();
    assert_eq!(
        got.metadata.finalizers,
        Some(vec!["kelp.imagine-ai.eu/test".to_string()])
    );
    clusters
        .delete("late", &DeleteParams::default())
        .await
        .unwrap();
    wait_until(|| cleaned.lock().unwrap().contains(&"late".to_string())).await;
    for _ in 0..100 {
        if clusters.get_opt("late").await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        clusters.get_opt("late").await.unwrap().is_none(),
        "finalizer removed, object gone"
    );
    handle.abort();
}

async fn wait_until(cond: impl Fn() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not reached in time");
}
