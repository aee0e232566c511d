//! What GitOps tools read from kelp's objects, over objects the operator really wrote:
//! kstatus (Flux) by the generic rules of cli-utils `pkg/kstatus/status/generic.go`, and
//! the Argo CD health check `helm/kelp/argocd/health.lua` run by a real Lua 5.1 (the
//! dialect of Argo CD's gopher-lua).

mod common;

use std::time::Duration;

use common::*;
use kelp_crds::{Cluster, Deployment, Module};
use kube::api::DeleteParams;
use serde_json::Value;

/// kstatus: Terminating, InProgress, Failed or Current.
fn kstatus(obj: &Value) -> &'static str {
    if !obj["metadata"]["deletionTimestamp"].is_null() {
        return "Terminating";
    }
    let generation = &obj["metadata"]["generation"];
    let observed = &obj["status"]["observedGeneration"];
    if !observed.is_null() && observed != generation {
        return "InProgress";
    }
    let conditions = obj["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let cond = |t: &str| conditions.iter().find(|c| c["type"] == t);
    if cond("Reconciling").is_some_and(|c| c["status"] == "True") {
        return "InProgress";
    }
    if cond("Stalled").is_some_and(|c| c["status"] == "True") {
        return "Failed";
    }
    match cond("Ready") {
        Some(c) if c["status"] == "True" => "Current",
        Some(_) => "InProgress",
        None => "Current",
    }
}

/// The kstatus conventions kelp keeps: a Ready condition on every status it writes, and
/// Reconciling and Stalled only while True.
fn check_conventions(name: &str, obj: &Value) {
    if obj["status"].is_null() {
        return;
    }
    let conditions = obj["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        conditions.iter().any(|c| c["type"] == "Ready"),
        "{name}: no Ready condition: {:#}",
        obj["status"]
    );
    for c in &conditions {
        if c["type"] == "Reconciling" || c["type"] == "Stalled" {
            assert_eq!(
                c["status"], "True",
                "{name}: {c} is abnormal-true: only while True"
            );
        }
    }
}

/// A JSON value as a Lua table constructor.
fn lua(v: &Value) -> String {
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let mut out = String::from("\"");
            for ch in s.chars() {
                match ch {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    c if (c as u32) < 0x20 => out.push_str(&format!("\\{}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
        Value::Array(a) => format!("{{{}}}", a.iter().map(lua).collect::<Vec<_>>().join(", ")),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("[{}] = {}", lua(&Value::String(k.clone())), lua(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Lua 5.1 from Debian (`lua5.1`); None (skipped) unless `KELP_REQUIRE_LUA` is set.
fn lua_interpreter() -> Option<&'static str> {
    let ok = std::process::Command::new("lua5.1")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some("lua5.1");
    }
    assert!(
        std::env::var_os("KELP_REQUIRE_LUA").is_none(),
        "KELP_REQUIRE_LUA is set but lua5.1 does not run"
    );
    eprintln!("skipped the Lua health check: lua5.1 is not installed (.ci/run installs it)");
    None
}

/// Runs the Argo CD health check on `obj`: (status, message).
fn argocd_health(interpreter: &str, obj: &Value) -> (String, String) {
    let script = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../helm/kelp/argocd/health.lua"
    ))
    .unwrap();
    // As Argo CD runs it: `obj` is a global, the script's chunk returns `hs`.
    let program = format!(
        "obj = {}\nlocal hs = (function()\n{script}\nend)()\nio.write(hs.status, \"\\t\", hs.message or \"\")\n",
        lua(obj)
    );
    let out = std::process::Command::new(interpreter)
        .arg("-e")
        .arg(&program)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lua failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, message) = text.split_once('\t').unwrap_or((&text, ""));
    (status.to_string(), message.to_string())
}

async fn json<K>(h: &Harness, name: &str) -> Value
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    serde_json::to_value(h.api::<K>().get(name).await.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flux_and_argocd_tell_healthy_from_broken_kelp_objects() {
    let mut h = Harness::new().await;
    h.start();
    h.apply_yaml(MODULE).await;
    h.apply_yaml(SECRET).await;
    // Healthy: a Ready Cluster, Deployment and Module.
    h.apply_yaml(&cluster("ok", 0, 1)).await;
    h.apply_yaml(&deployment("first", "ok", 1)).await;
    h.deployment_ready("first").await;
    // Progressing: a second Deployment waits for a free GPU.
    h.apply_yaml(&deployment("second", "ok", 1)).await;
    h.wait::<Deployment>("second", "waiting for a GPU", |d| {
        d.and_then(|d| d.status.as_ref())
            .and_then(|s| kelp_operator::conditions::get(&s.conditions, "Ready"))
            .is_some_and(|c| c.message.contains("GPU free"))
    })
    .await;
    // Missing: a Deployment of a Module that does not exist.
    h.apply_yaml(
        &deployment("orphan", "ok", 0)
            .replace("moduleRef: {name: yolov8}", "moduleRef: {name: nowhere}"),
    )
    .await;
    h.wait::<Deployment>("orphan", "ModuleNotFound", |d| {
        d.and_then(|d| d.status.as_ref())
            .and_then(|s| kelp_operator::conditions::get(&s.conditions, "Ready"))
            .is_some_and(|c| c.reason == "ModuleNotFound")
    })
    .await;
    // Degraded: a pool no machine type fits.
    h.apply_yaml(
        "apiVersion: kelp.imagine-ai.eu/v1alpha1\nkind: Cluster\nmetadata: {name: broken}\nspec:\n  cloud: {sim: {latencyMs: 1}}\n  nodePools:\n    - {name: huge, replicas: 1, machine: {cpu: 8, gpu: {count: 64, model: H100}}}\n",
    )
    .await;
    h.wait::<Cluster>("broken", "Stalled", |c| {
        c.and_then(|c| c.status.as_ref())
            .is_some_and(|s| kelp_operator::conditions::is_true(&s.conditions, "Stalled"))
    })
    .await;
    // Suspended: a paused Cluster.
    h.apply_yaml(&cluster("resting", 1, 0).replace("spec:\n", "spec:\n  paused: true\n"))
        .await;
    h.wait::<Cluster>("resting", "paused", |c| {
        c.and_then(|c| c.status.as_ref())
            .and_then(|s| kelp_operator::conditions::get(&s.conditions, "Ready"))
            .is_some_and(|r| r.reason == "Paused")
    })
    .await;

    let mut objects: Vec<(String, Value, &str, &str)> = vec![
        (
            "Cluster ok".into(),
            json::<Cluster>(&h, "ok").await,
            "Current",
            "Healthy",
        ),
        (
            "Deployment first".into(),
            json::<Deployment>(&h, "first").await,
            "Current",
            "Healthy",
        ),
        (
            "Module yolov8".into(),
            json::<Module>(&h, "yolov8").await,
            "Current",
            "Healthy",
        ),
        (
            "Deployment second".into(),
            json::<Deployment>(&h, "second").await,
            "InProgress",
            "Progressing",
        ),
        (
            "Deployment orphan".into(),
            json::<Deployment>(&h, "orphan").await,
            "InProgress",
            "Missing",
        ),
        (
            "Cluster broken".into(),
            json::<Cluster>(&h, "broken").await,
            "Failed",
            "Degraded",
        ),
        (
            "Cluster resting".into(),
            json::<Cluster>(&h, "resting").await,
            "InProgress",
            "Suspended",
        ),
    ];

    // With the operator stopped: a spec change it has not seen, and a deletion it has not
    // finished.
    h.stop().await;
    h.patch_spec::<Cluster>("ok", serde_json::json!({"nodePools": [
        {"name": "cpu", "replicas": 1, "machine": {"cpu": 4, "memoryMB": 8000}},
        {"name": "gpu-t4", "replicas": 1, "machine": {"cpu": 8, "memoryMB": 32000, "gpu": {"count": 1, "vendor": "NVIDIA", "model": "T4"}},
         "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
    ]}))
    .await;
    objects.push((
        "Cluster ok, changed".into(),
        json::<Cluster>(&h, "ok").await,
        "InProgress",
        "Progressing",
    ));
    h.api::<Cluster>()
        .delete("broken", &DeleteParams::default())
        .await
        .unwrap();
    let deleting = json::<Cluster>(&h, "broken").await;
    assert!(
        !deleting["metadata"]["deletionTimestamp"].is_null(),
        "the finalizer keeps it"
    );
    objects.push((
        "Cluster broken, deleting".into(),
        deleting,
        "Terminating",
        "Progressing",
    ));
    // Brand new, not yet seen by any operator: no status at all, which kstatus's generic
    // rules call Current (nothing to wait for), and the health check Progressing.
    h.apply_yaml(&cluster("new", 1, 0)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    objects.push((
        "Cluster new".into(),
        json::<Cluster>(&h, "new").await,
        "Current",
        "Progressing",
    ));

    let interpreter = lua_interpreter();
    for (name, obj, want_kstatus, want_argocd) in &objects {
        check_conventions(name, obj);
        assert_eq!(
            kstatus(obj),
            *want_kstatus,
            "kstatus of {name}: {:#}",
            obj["status"]
        );
        if let Some(lua) = interpreter {
            let (status, message) = argocd_health(lua, obj);
            assert_eq!(
                status, *want_argocd,
                "Argo CD health of {name} ({message}): {:#}",
                obj["status"]
            );
            assert!(!message.is_empty(), "{name}: the health check says why");
            eprintln!("{name}: kstatus {want_kstatus}, Argo CD {status}: {message}");
        }
    }
}
