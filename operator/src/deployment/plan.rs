//! The pure middle of the Deployment reconcile: from what [`Observed`] holds (the
//! Module, the Cluster, the Secrets and ConfigMaps the spec names, and what kelp left on
//! the target), decide the pool, the image and the objects to apply, or why it cannot
//! go on ([`Blocked`]). No I/O: the fixture tests below reach every outcome.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment as AppsDeployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kelp_crds::condition_types as ct;
use kelp_crds::{Cluster, Deployment, Module};
use kube::ResourceExt;
use serde_json::{Value, json};

use super::build::{self, DEPLOYMENT_LABEL, NAMESPACE_LABEL};
use super::status::Rollout;
use crate::conditions;

/// What kind of wait a [`Blocked`] Deployment is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
pub enum Kind {
    /// Waiting for another object (a Module resolving, a Cluster booting): normal.
    Waiting,
    /// Needs a change from the user (Stalled).
    Stalled,
    /// The workload no longer runs anywhere (its Cluster is gone or going).
    Gone,
}

/// A reason the Deployment cannot go on yet, shown in its conditions.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct Blocked {
    pub reason: String,
    pub message: String,
    pub kind: Kind,
}

fn blocked(reason: &str, message: impl Into<String>, kind: Kind) -> Blocked {
    Blocked {
        reason: reason.to_string(),
        message: message.into(),
        kind,
    }
}

fn waiting(reason: &str, message: impl Into<String>) -> Blocked {
    blocked(reason, message, Kind::Waiting)
}

fn stalled(reason: &str, message: impl Into<String>) -> Blocked {
    blocked(reason, message, Kind::Stalled)
}

/// The Deployment's Cluster is gone or being deleted, and the workload with it.
fn cluster_gone(reason: &str, message: String) -> Blocked {
    blocked(reason, message, Kind::Gone)
}

/// Everything one reconcile reads before it decides anything.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// `spec.moduleRef`, None when there is no such Module.
    pub module: Option<Module>,
    /// `spec.clusterRef` (or the Cluster placement chose), None when there is no such
    /// Cluster.
    pub cluster: Option<Cluster>,
    /// With `spec.placement`: where it goes and what kelp made of each candidate.
    pub placement: Option<super::placement::Decision>,
    /// The Deployment's namespace's Secrets that the spec (and the Module's pull secret)
    /// names, by name; None when one does not exist.
    pub secrets: BTreeMap<String, Option<Secret>>,
    /// The ConfigMaps the spec's env names, by name; None when one does not exist.
    pub config_maps: BTreeMap<String, Option<ConfigMap>>,
    /// What is on the target cluster, read once its control plane is ready.
    pub target: Option<TargetState>,
}

/// What kelp finds on the target cluster before it applies.
#[derive(Clone, Debug, Default)]
pub struct TargetState {
    /// The obscured rclone password of each storage Secret kelp wrote there, by Secret
    /// name: kept while it still reveals to the password (rclone obscures with a random
    /// IV, so a new one every time would rewrite the Secret on every reconcile).
    pub rclone_pass: BTreeMap<String, String>,
}

/// What the pure step decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The node pool chosen, once one fits.
    pub pool: Option<String>,
    /// The image to run, once the Module resolved it.
    pub image: Option<String>,
    /// The objects to apply, or why not.
    pub step: Result<Work, Blocked>,
}

/// The objects to apply to the target cluster, in order (Secrets first), each
/// namespaced and labelled as this Deployment's.
#[derive(Clone, Debug, PartialEq)]
pub struct Work {
    pub objects: Vec<Value>,
    /// Where the module answers once it runs.
    pub endpoint: Option<String>,
}

impl Plan {
    fn blocked(pool: Option<String>, image: Option<String>, b: Blocked) -> Self {
        Plan {
            pool,
            image,
            step: Err(b),
        }
    }
}

/// The names of the Secrets and ConfigMaps `dep` and `module` read, for the
/// dereference step.
pub fn sources(dep: &Deployment, module: Option<&Module>) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut secrets = BTreeSet::new();
    let mut config_maps = BTreeSet::new();
    for s in &dep.spec.storage {
        if let Some(w) = &s.webdav {
            secrets.insert(w.credentials_secret_ref.name.clone());
        }
    }
    for e in &dep.spec.env {
        let Some(from) = &e.value_from else { continue };
        if let Some(r) = &from.secret_key_ref {
            secrets.insert(r.name.clone());
        } else if let Some(r) = &from.config_map_key_ref {
            config_maps.insert(r.name.clone());
        }
    }
    if let Some(r) = module.and_then(|m| m.spec.image.pull_secret_ref.as_ref()) {
        secrets.insert(r.name.clone());
    }
    (secrets, config_maps)
}

/// Whether the Cluster's control plane is ready: only then are the workload's objects
/// built and applied.
pub fn control_plane_ready(cluster: &Cluster) -> bool {
    cluster
        .status
        .as_ref()
        .is_some_and(|s| conditions::is_true(&s.conditions, ct::CONTROL_PLANE_READY))
}

/// Decides what to apply for `dep` from `obs`, with the loaded `recipes`.
pub fn plan(dep: &Deployment, obs: &Observed, recipes: &crate::recipes::Recipes) -> Plan {
    let ns = dep.namespace().unwrap_or_default();
    let Some(module) = &obs.module else {
        return Plan::blocked(
            None,
            None,
            waiting(
                "ModuleNotFound",
                format!(
                    "spec.moduleRef: Module {ns}/{} not found",
                    dep.spec.module_ref.name
                ),
            ),
        );
    };
    let Some(cluster) = &obs.cluster else {
        if let Some(d) = &obs.placement {
            // No candidate can run it now: waiting, the Clusters may change.
            return Plan::blocked(
                None,
                None,
                waiting("NoClusterFits", super::placement::nowhere(&d.entries)),
            );
        }
        return Plan::blocked(
            None,
            None,
            cluster_gone(
                "ClusterNotFound",
                format!(
                    "spec.clusterRef: Cluster {ns}/{} not found; the workload runs nowhere",
                    dep.target_cluster().unwrap_or_default()
                ),
            ),
        );
    };
    if cluster.metadata.deletion_timestamp.is_some() {
        return Plan::blocked(
            None,
            None,
            cluster_gone(
                "ClusterDeleting",
                format!(
                    "Cluster {} is being deleted, and the workload with it",
                    cluster.name_any()
                ),
            ),
        );
    }
    let need = build::need(dep, module);
    let pool = match build::choose_pool(cluster, dep.spec.node_pool.as_deref(), need) {
        Ok(p) => p,
        Err(m) => {
            let kind = if dep.spec.node_pool.is_some() {
                Kind::Stalled
            } else {
                Kind::Waiting
            };
            return Plan::blocked(None, None, blocked("NoPoolFits", m, kind));
        }
    };
    let chosen = Some(pool.name.clone());
    let Some(image) = build::image(dep, module, need) else {
        let why = module
            .status
            .as_ref()
            .and_then(|s| conditions::get(&s.conditions, ct::READY))
            .map(|c| c.message.clone())
            .unwrap_or_else(|| "not resolved yet".into());
        return Plan::blocked(
            chosen,
            None,
            waiting(
                "ModuleNotReady",
                format!("Module {}: {why}", module.name_any()),
            ),
        );
    };
    let cp_ready = control_plane_ready(cluster);
    if !cp_ready {
        return Plan::blocked(
            chosen,
            Some(image),
            waiting(
                "ClusterNotReady",
                format!(
                    "Cluster {}: waiting for its control plane",
                    cluster.name_any()
                ),
            ),
        );
    }
    let step = objects(dep, obs, module, cluster, pool, need, &image, recipes);
    Plan {
        pool: chosen,
        image: Some(image),
        step,
    }
}

/// The Secrets the workload reads, then the recipe's objects, labelled as `dep`'s.
#[allow(clippy::too_many_arguments)]
fn objects(
    dep: &Deployment,
    obs: &Observed,
    module: &Module,
    cluster: &Cluster,
    pool: &kelp_crds::NodePool,
    need: build::Need,
    image: &str,
    recipes: &crate::recipes::Recipes,
) -> Result<Work, Blocked> {
    let ns = dep.namespace().unwrap_or_default();
    let name = dep.name_any();
    let secret_data = |field: &str, secret: &str| {
        obs.secrets
            .get(secret)
            .and_then(|s| s.as_ref())
            .map(crate::targets::secret_data)
            .ok_or_else(|| {
                stalled(
                    "SecretNotFound",
                    format!("{field}: Secret {ns}/{secret} not found"),
                )
            })
    };
    let mut secrets: Vec<Value> = Vec::new();
    for s in dep.spec.storage.iter() {
        let Some(webdav) = &s.webdav else { continue };
        let field = format!("spec.storage[{}].webdav.credentialsSecretRef", s.name);
        let creds = secret_data(&field, &webdav.credentials_secret_ref.name)?;
        let get = |k: &str| {
            creds.get(k).cloned().ok_or_else(|| {
                stalled(
                    "SecretKeyMissing",
                    format!(
                        "{field}: Secret {} has no key {k:?}",
                        webdav.credentials_secret_ref.name
                    ),
                )
            })
        };
        let (user, password) = (get("user")?, get("password")?);
        let secret_name = build::rclone_secret_name(&name, &s.name);
        let prefix = rclone_prefix(&s.name);
        let obscured = obs
            .target
            .as_ref()
            .and_then(|t| t.rclone_pass.get(&secret_name))
            .filter(|old| {
                kelp_recipes::rclone::reveal(old).ok().as_deref() == Some(password.as_str())
            })
            .cloned()
            .unwrap_or_else(|| kelp_recipes::rclone::obscure(&password));
        let vendor = match webdav.vendor {
            kelp_crds::WebdavVendor::Nextcloud => "nextcloud",
            kelp_crds::WebdavVendor::Owncloud => "owncloud",
            kelp_crds::WebdavVendor::Other => "other",
        };
        secrets.push(secret(
            &secret_name,
            "Opaque",
            Some(
                [
                    (format!("{prefix}TYPE"), "webdav".to_string()),
                    (format!("{prefix}URL"), webdav.url.clone()),
                    (format!("{prefix}VENDOR"), vendor.to_string()),
                    (format!("{prefix}USER"), user),
                    (rclone_pass_key(&s.name), obscured),
                ]
                .into(),
            ),
            None,
        ));
    }
    let mut env_values = BTreeMap::new();
    for (i, e) in dep.spec.env.iter().enumerate() {
        let Some(from) = &e.value_from else { continue };
        if let Some(r) = &from.secret_key_ref {
            let field = format!("spec.env[{i}].valueFrom.secretKeyRef");
            let data = secret_data(&field, &r.name)?;
            let v = data.get(&r.key).cloned().ok_or_else(|| {
                stalled(
                    "SecretKeyMissing",
                    format!("{field}: Secret {} has no key {:?}", r.name, r.key),
                )
            })?;
            env_values.insert(build::env_key(&r.name, &r.key), v);
        } else if let Some(r) = &from.config_map_key_ref {
            let field = format!("spec.env[{i}].valueFrom.configMapKeyRef");
            let cm = obs
                .config_maps
                .get(&r.name)
                .and_then(|c| c.as_ref())
                .ok_or_else(|| {
                    stalled(
                        "ConfigMapNotFound",
                        format!("{field}: ConfigMap {} not found", r.name),
                    )
                })?;
            let v = cm
                .data
                .as_ref()
                .and_then(|d| d.get(&r.key))
                .cloned()
                .ok_or_else(|| {
                    stalled(
                        "ConfigMapKeyMissing",
                        format!("{field}: ConfigMap {} has no key {:?}", r.name, r.key),
                    )
                })?;
            env_values.insert(build::env_key(&r.name, &r.key), v);
        }
    }
    if !env_values.is_empty() {
        secrets.push(secret(
            &build::env_secret_name(&name),
            "Opaque",
            Some(env_values),
            None,
        ));
    }
    let mut pull = None;
    if let Some(r) = &module.spec.image.pull_secret_ref {
        let src = obs
            .secrets
            .get(&r.name)
            .and_then(|s| s.as_ref())
            .ok_or_else(|| {
                stalled(
                    "SecretNotFound",
                    format!(
                        "Module {} spec.image.pullSecretRef: Secret {} not found",
                        module.name_any(),
                        r.name
                    ),
                )
            })?;
        let pull_name = format!("{name}-pull");
        secrets.push(secret(
            &pull_name,
            src.type_.as_deref().unwrap_or("Opaque"),
            None,
            src.data.clone(),
        ));
        pull = Some(pull_name);
    }

    let mut wctx = build::workload_context(dep, module, pool, need, image.to_string(), pull);
    // Pool names repeat across Clusters that share one Kubernetes: pin this Cluster's Nodes.
    wctx.node_selector.insert(
        crate::simulated::NODE_CLUSTER_LABEL.to_string(),
        cluster.uid().unwrap_or_default(),
    );
    let recipe = kelp_recipes::RecipeUse {
        name: dep.spec.recipe.clone(),
        inputs: BTreeMap::new(),
    };
    let rendered = recipes
        .check([recipe.name.as_str()])
        .and_then(|()| recipes.catalog().render_workload(&recipe, &wctx))
        .map_err(|e| {
            stalled(
                "RecipeError",
                format!("spec.recipe {}: {e}", dep.spec.recipe),
            )
        })?;
    let objects = secrets
        .into_iter()
        .chain(rendered)
        .map(|mut obj| {
            obj["metadata"]["namespace"] = json!(ns);
            let mut labels = obj["metadata"]["labels"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            labels.insert(DEPLOYMENT_LABEL.into(), json!(name));
            labels.insert(NAMESPACE_LABEL.into(), json!(ns));
            labels.insert("app.kubernetes.io/managed-by".into(), json!("kelp"));
            obj["metadata"]["labels"] = Value::Object(labels);
            obj
        })
        .collect();
    Ok(Work {
        objects,
        endpoint: build::endpoint(cluster, &wctx),
    })
}

/// The prefix of the rclone settings of storage `storage`: rclone reads the remote
/// `STORAGE` from `RCLONE_CONFIG_STORAGE_*`.
fn rclone_prefix(storage: &str) -> String {
    let remote = storage.to_uppercase().replace(['-', '.'], "_");
    format!("RCLONE_CONFIG_{remote}_")
}

/// The key of the obscured password in the rclone Secret of storage `storage`.
pub fn rclone_pass_key(storage: &str) -> String {
    format!("{}PASS", rclone_prefix(storage))
}

/// A Secret kelp copies to the target cluster, as the JSON the recipes' objects are.
fn secret(
    name: &str,
    type_: &str,
    string_data: Option<BTreeMap<String, String>>,
    data: Option<BTreeMap<String, k8s_openapi::ByteString>>,
) -> Value {
    let s = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        type_: Some(type_.to_string()),
        string_data,
        data,
        ..Default::default()
    };
    serde_json::to_value(s).expect("a Secret serializes")
}

/// The workload's rollout as the target reports it (`workload`: its readiness as the
/// apply returned it or the target's watch delivered it): its ready replicas for `dep`,
/// whether every one is ready for its current generation, and whether the pool
/// (`plan.pool` of `cluster`) has no Ready machine.
pub fn rollout(
    dep: &Deployment,
    cluster: Option<&Cluster>,
    pool: Option<&str>,
    workload: Option<&Readiness>,
) -> (i32, Rollout) {
    let now = workload.cloned().unwrap_or_default();
    let observed = now.ready_replicas.is_some();
    let ready_replicas = now.ready_replicas.unwrap_or(0);
    let unavailable = now.unavailable;
    let ready = observed && ready_replicas >= dep.spec.replicas.max(0);
    let pool_status = cluster
        .and_then(|c| c.status.as_ref())
        .and_then(|s| s.node_pools.iter().find(|p| Some(p.name.as_str()) == pool));
    let pool_ready = pool_status.map_or(0, |p| p.ready);
    // A pool that follows demand and is still growing: say what the workload waits for.
    let follows_demand = cluster
        .and_then(|c| {
            c.spec
                .node_pools
                .iter()
                .find(|p| Some(p.name.as_str()) == pool)
        })
        .is_some_and(|p| p.autoscaling.is_some());
    let growing = pool_status
        .filter(|p| follows_demand && p.ready < p.desired)
        .map(|p| format!("waiting for pool {} to grow to {}", p.name, p.desired));
    (
        ready_replicas,
        Rollout {
            ready,
            why_not: if ready { None } else { growing.or(unavailable) },
            pool_empty: !ready && pool_ready == 0,
        },
    )
}

/// What of a workload's status the Deployment's readiness is computed from
/// ([`rollout`]): the ready replicas once the status is of the current
/// generation, and the Available=False message.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Readiness {
    pub ready_replicas: Option<i32>,
    pub unavailable: Option<String>,
}

impl Readiness {
    pub fn of(w: &AppsDeployment) -> Self {
        let st = w.status.as_ref();
        let observed = st.and_then(|s| s.observed_generation) >= w.metadata.generation;
        Readiness {
            ready_replicas: observed.then(|| st.and_then(|s| s.ready_replicas).unwrap_or(0)),
            unavailable: st
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| {
                    c.iter().find(|c| {
                        c.type_.as_deref() == Some("Available")
                            && c.status.as_deref() == Some("False")
                    })
                })
                .and_then(|c| c.message.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODULE: &str = r#"
apiVersion: kelp.imagine-ai.eu/v1alpha1
kind: Module
metadata: {name: fish, namespace: ns}
spec:
  title: t
  summary: s
  image: {repository: ai4oshub/fish, tag: "1.0"}
  resources: {cpu: 1, memoryMB: 1000, gpu: 1}
status:
  resolvedImage: {cpu: "ai4oshub/fish:1.0-cpu", gpu: "ai4oshub/fish:1.0"}
  conditions: [{type: Ready, status: "True", reason: Resolved, message: ok, lastTransitionTime: "2026-01-01T00:00:00Z"}]
"#;

    const CLUSTER: &str = r#"
apiVersion: kelp.imagine-ai.eu/v1alpha1
kind: Cluster
metadata: {name: c, namespace: ns, uid: cluster-uid}
spec:
  cloud: {sim: {}}
  nodePools: [{name: gpu, replicas: 1, machine: {cpu: 8, memoryMB: 32000, gpu: {count: 1, model: T4}}}]
status:
  conditions: [{type: ControlPlaneReady, status: "True", reason: Ready, message: up, lastTransitionTime: "2026-01-01T00:00:00Z"}]
"#;

    fn dep(extra: &str) -> Deployment {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: kelp.imagine-ai.eu/v1alpha1\nkind: Deployment\nmetadata: {{name: d, namespace: ns, generation: 1}}\nspec:\n  moduleRef: {{name: fish}}\n  clusterRef: {{name: c}}\n{extra}"
        ))
        .unwrap()
    }

    fn observed(module: &str, cluster: &str) -> Observed {
        Observed {
            module: (!module.is_empty()).then(|| serde_yaml_ng::from_str(module).unwrap()),
            cluster: (!cluster.is_empty()).then(|| serde_yaml_ng::from_str(cluster).unwrap()),
            target: Some(TargetState::default()),
            ..Default::default()
        }
    }

    fn secret_of(name: &str, data: &[(&str, &str)]) -> Option<Secret> {
        Some(Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            string_data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        })
    }

    fn recipes() -> crate::recipes::Recipes {
        crate::recipes::Recipes::default()
    }

    fn reason(p: &Plan) -> (&str, Kind) {
        let b = p.step.as_ref().unwrap_err();
        (b.reason.as_str(), b.kind)
    }

    #[test]
    fn what_is_missing_decides_the_wait_in_order() {
        let r = recipes();
        let d = dep("");
        assert_eq!(
            reason(&plan(&d, &observed("", CLUSTER), &r)),
            ("ModuleNotFound", Kind::Waiting)
        );
        assert_eq!(
            reason(&plan(&d, &observed(MODULE, ""), &r)),
            ("ClusterNotFound", Kind::Gone)
        );
        let deleting = CLUSTER.replace(
            "uid: cluster-uid}",
            "uid: cluster-uid, deletionTimestamp: \"2026-01-01T00:00:00Z\"}",
        );
        assert_eq!(
            reason(&plan(&d, &observed(MODULE, &deleting), &r)),
            ("ClusterDeleting", Kind::Gone)
        );
        let booting = CLUSTER.replace(
            "status: \"True\", reason: Ready",
            "status: \"False\", reason: Booting",
        );
        let p = plan(&d, &observed(MODULE, &booting), &r);
        assert_eq!(reason(&p), ("ClusterNotReady", Kind::Waiting));
        // The pool and the image are decided before the wait, and shown.
        assert_eq!(p.pool.as_deref(), Some("gpu"));
        assert_eq!(p.image.as_deref(), Some("ai4oshub/fish:1.0"));
        let unresolved = MODULE.split("status:").next().unwrap().to_string();
        let p = plan(&d, &observed(&unresolved, CLUSTER), &r);
        assert_eq!(reason(&p), ("ModuleNotReady", Kind::Waiting));
        assert_eq!((p.pool.as_deref(), p.image.as_deref()), (Some("gpu"), None));
    }

    #[test]
    fn a_pool_that_does_not_fit_waits_unless_the_user_named_it() {
        let r = recipes();
        let big = MODULE.replace("gpu: 1}", "gpu: 4}");
        let p = plan(&dep(""), &observed(&big, CLUSTER), &r);
        assert_eq!(reason(&p), ("NoPoolFits", Kind::Waiting));
        let p = plan(&dep("  nodePool: cpu\n"), &observed(MODULE, CLUSTER), &r);
        assert_eq!(reason(&p), ("NoPoolFits", Kind::Stalled));
        assert!(p.step.unwrap_err().message.contains("spec.nodePool"));
    }

    #[test]
    fn a_missing_secret_or_key_stalls_naming_the_field() {
        let r = recipes();
        let d =
            dep("  env:\n  - {name: TOKEN, valueFrom: {secretKeyRef: {name: tok, key: value}}}\n");
        let mut obs = observed(MODULE, CLUSTER);
        assert_eq!(
            sources(&d, obs.module.as_ref()).0,
            BTreeSet::from(["tok".to_string()])
        );
        obs.secrets.insert("tok".into(), None);
        let b = plan(&d, &obs, &r).step.unwrap_err();
        assert_eq!(
            (b.reason.as_str(), b.kind),
            ("SecretNotFound", Kind::Stalled)
        );
        assert_eq!(
            b.message,
            "spec.env[0].valueFrom.secretKeyRef: Secret ns/tok not found"
        );
        obs.secrets
            .insert("tok".into(), secret_of("tok", &[("other", "x")]));
        let b = plan(&d, &obs, &r).step.unwrap_err();
        assert_eq!(b.reason, "SecretKeyMissing");
        assert!(b.message.contains("has no key \"value\""), "{}", b.message);
    }

    #[test]
    fn the_objects_are_labelled_pinned_to_the_cluster_and_secrets_come_first() {
        let r = recipes();
        let d = dep(
            "  storage:\n  - name: data\n    webdav: {url: \"https://cloud.example.org/remote.php/dav\", credentialsSecretRef: {name: nc}}\n",
        );
        let mut obs = observed(MODULE, CLUSTER);
        obs.secrets.insert(
            "nc".into(),
            secret_of("nc", &[("user", "u"), ("password", "pw")]),
        );
        let work = plan(&d, &obs, &r).step.unwrap();
        assert_eq!(work.objects[0]["kind"], "Secret");
        for o in &work.objects {
            assert_eq!(o["metadata"]["namespace"], "ns");
            assert_eq!(o["metadata"]["labels"][DEPLOYMENT_LABEL], "d");
            assert_eq!(o["metadata"]["labels"][NAMESPACE_LABEL], "ns");
        }
        let workload = work
            .objects
            .iter()
            .find(|o| o["kind"] == "Deployment")
            .unwrap();
        assert_eq!(
            workload["spec"]["template"]["spec"]["nodeSelector"]
                [crate::simulated::NODE_CLUSTER_LABEL],
            "cluster-uid"
        );
        // A password obscured earlier is kept while it reveals to the same password.
        let key = rclone_pass_key("data");
        let first = work.objects[0]["stringData"][&key]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(kelp_recipes::rclone::reveal(&first).unwrap(), "pw");
        obs.target
            .as_mut()
            .unwrap()
            .rclone_pass
            .insert(build::rclone_secret_name("d", "data"), first.clone());
        let again = plan(&d, &obs, &r).step.unwrap();
        assert_eq!(again.objects[0]["stringData"][&key], first.as_str());
    }

    #[test]
    fn an_unknown_recipe_stalls() {
        let r = recipes();
        let b = plan(&dep("  recipe: nope\n"), &observed(MODULE, CLUSTER), &r)
            .step
            .unwrap_err();
        assert_eq!((b.reason.as_str(), b.kind), ("RecipeError", Kind::Stalled));
        assert!(b.message.starts_with("spec.recipe nope:"), "{}", b.message);
    }

    #[test]
    fn the_rollout_counts_ready_replicas_of_the_current_generation_only() {
        let d = dep("  replicas: 2\n");
        let w = |generation: i64, observed: i64, ready: i32| -> AppsDeployment {
            serde_yaml_ng::from_str(&format!(
                "metadata: {{name: d, generation: {generation}}}\nstatus: {{observedGeneration: {observed}, readyReplicas: {ready}, conditions: [{{type: Available, status: \"False\", message: no room}}]}}"
            ))
            .unwrap()
        };
        let c: Cluster = serde_yaml_ng::from_str(&CLUSTER.replace(
            "status:\n",
            "status:\n  nodePools: [{name: gpu, desired: 1, ready: 1}]\n",
        ))
        .unwrap();
        let on = |w: Option<&AppsDeployment>| {
            rollout(&d, Some(&c), Some("gpu"), w.map(Readiness::of).as_ref())
        };
        assert_eq!(on(None).0, 0);
        let (n, r) = on(Some(&w(2, 1, 2)));
        assert_eq!((n, r.ready, r.pool_empty), (0, false, false));
        let (n, r) = on(Some(&w(2, 2, 1)));
        assert_eq!(
            (n, r.ready, r.why_not.as_deref()),
            (1, false, Some("no room"))
        );
        // A pool with no Ready machine yet: waiting on the Cluster, not polling.
        let booting: Cluster = serde_yaml_ng::from_str(CLUSTER).unwrap();
        let (_, r) = rollout(
            &d,
            Some(&booting),
            Some("gpu"),
            Some(&Readiness::of(&w(2, 2, 0))),
        );
        assert!(r.pool_empty && !r.ready);
        let (n, r) = on(Some(&w(2, 2, 2)));
        assert_eq!((n, r.ready, r.why_not), (2, true, None));
    }

    #[test]
    fn a_deployment_on_a_growing_pool_says_what_it_waits_for() {
        let d = dep("  replicas: 3\n");
        let w: AppsDeployment = serde_yaml_ng::from_str(
            "metadata: {name: d, generation: 1}\nstatus: {observedGeneration: 1, readyReplicas: 1, conditions: [{type: Available, status: \"False\", message: no room}]}",
        )
        .unwrap();
        let growing = |autoscaling: &str| -> Cluster {
            serde_yaml_ng::from_str(
                &CLUSTER
                    .replace("replicas: 1,", &format!("replicas: 1,{autoscaling}"))
                    .replace(
                        "status:\n",
                        "status:\n  nodePools: [{name: gpu, desired: 3, ready: 1}]\n",
                    ),
            )
            .unwrap()
        };
        let c = growing(" autoscaling: {minReplicas: 0, maxReplicas: 4},");
        let (_, r) = rollout(&d, Some(&c), Some("gpu"), Some(&Readiness::of(&w)));
        assert_eq!(
            r.why_not.as_deref(),
            Some("waiting for pool gpu to grow to 3")
        );
        // A pool of fixed size says what the workload itself says.
        let c = growing("");
        let (_, r) = rollout(&d, Some(&c), Some("gpu"), Some(&Readiness::of(&w)));
        assert_eq!(r.why_not.as_deref(), Some("no room"));
    }
}
