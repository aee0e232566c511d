//! `kelp plan -f FILE_OR_DIR`: what applying kelp manifests would do, before anything is
//! created. For each Cluster pool, the instance type the driver would choose, its size,
//! the machines now and after, the price and the action; for each Deployment, the
//! Cluster and pool it would land on, or why none fits; then the total price.
//!
//! The plan is the operator's own ([`crate::cluster::plan::plan`], the pool choice of
//! [`crate::deployment::build::choose_pool`]); nothing is written anywhere. Without
//! `--kubeconfig` it works offline, for Clusters on the sim cloud; with it, the Secrets
//! the manifests name are read from that cluster to ask EC2, OpenStack or EGI for their
//! instance types and prices, and the Clusters, Modules and Deployments already there
//! count: their machines now, and the demand of pools that follow it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kelp_cloud_drivers::{InstanceType, Machine, MachineState, Owner, Role, select};
use kelp_crds::{Cluster, Deployment, KelpResource, KubernetesMode, Module};
use kube::ResourceExt;
use serde::Serialize;

use super::recipe::table;
use super::{Failure, Outcome, read_file};
use crate::cluster::plan::{self as cplan, CONTROL_PLANE_POOL};
use crate::deployment::build;

/// Hours in the 30 days the monthly price is given for.
const HOURS_30_DAYS: f64 = 720.0;

/// How `kelp plan` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

/// The manifests to plan.
#[derive(Clone, Debug, Default)]
pub struct Manifests {
    pub modules: Vec<Module>,
    pub clusters: Vec<Cluster>,
    pub deployments: Vec<Deployment>,
}

/// Reads every kelp object of `paths` (files, or directories of `.yaml`/`.yml`/`.json`
/// files, not recursively), in namespace `namespace` where a manifest names none.
pub fn read(paths: &[PathBuf], namespace: &str) -> Result<Manifests, Failure> {
    let mut files: Vec<PathBuf> = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut in_dir: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| Failure::new(format!("{}: {e}", p.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.is_file()
                        && f.extension()
                            .and_then(|x| x.to_str())
                            .is_some_and(|x| matches!(x, "yaml" | "yml" | "json"))
                })
                .collect();
            in_dir.sort();
            files.extend(in_dir);
        } else {
            files.push(p.clone());
        }
    }
    let mut m = Manifests::default();
    let mut errors = Vec::new();
    for f in &files {
        if let Err(e) = read_one(f, namespace, &mut m) {
            errors.push(e);
        }
    }
    if !errors.is_empty() {
        return Err(Failure {
            errors,
            warnings: Vec::new(),
        });
    }
    if m.clusters.is_empty() && m.deployments.is_empty() {
        return Err(Failure::new(format!(
            "no Cluster or Deployment of {}/{} in {}",
            kelp_crds::GROUP,
            kelp_crds::VERSION,
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(m)
}

fn read_one(path: &Path, namespace: &str, m: &mut Manifests) -> Result<(), String> {
    let text = read_file(path).map_err(|f| f.to_string())?;
    let docs =
        kelp_crds::parse::documents(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    for doc in docs {
        match KelpResource::from_value(doc).map_err(|e| format!("{}: {e}", path.display()))? {
            Some(KelpResource::Module(mut o)) => {
                o.metadata.namespace.get_or_insert_with(|| namespace.into());
                m.modules.push(*o);
            }
            Some(KelpResource::Cluster(mut o)) => {
                o.metadata.namespace.get_or_insert_with(|| namespace.into());
                m.clusters.push(*o);
            }
            Some(KelpResource::Deployment(mut o)) => {
                o.metadata.namespace.get_or_insert_with(|| namespace.into());
                m.deployments.push(*o);
            }
            None => {}
        }
    }
    Ok(())
}

/// What a Cluster's cloud offers, or why it is not known.
pub type Catalogue = Result<Vec<InstanceType>, String>;

/// Everything the plan is computed from: the manifests, what the cluster of
/// `--kubeconfig` already holds, and each Cluster's instance types (by `namespace/name`).
#[derive(Debug, Default)]
pub struct Inputs {
    pub manifests: Manifests,
    /// The same kinds as they are on the cluster (empty offline).
    pub existing: Manifests,
    pub types: BTreeMap<String, Catalogue>,
    /// Planned without a cluster (the built-in catalogues).
    pub offline: bool,
}

/// One row of the plan: a pool, or the separate control plane.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PoolRow {
    pub pool: String,
    pub instance_type: Option<String>,
    pub vcpus: Option<u32>,
    #[serde(rename = "memoryMB")]
    pub memory_mb: Option<u64>,
    pub gpus: Option<u32>,
    pub gpu_model: Option<String>,
    pub now: u32,
    pub after: u32,
    /// For the pool at `after` machines.
    pub price_per_hour: Option<f64>,
    pub price_per_30_days: Option<f64>,
    pub action: String,
    /// Why a pool that follows demand has its size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub demand: Option<String>,
}

/// The plan of one Cluster.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPlan {
    pub namespace: String,
    pub name: String,
    pub cloud: String,
    /// Whether the Cluster exists on the cluster of `--kubeconfig`.
    pub exists: bool,
    pub pools: Vec<PoolRow>,
    pub price_per_hour: Option<f64>,
    /// What keeps kelp from doing everything the spec asks (no type fits, the budget,
    /// an unknown catalogue).
    pub problems: Vec<String>,
    /// The pools (and control plane) no type fits, as the operator says it.
    #[serde(skip)]
    pub unfit: Vec<String>,
    /// Planned from a built-in table, without asking the cloud.
    pub offline: bool,
    /// `price_per_hour` before rounding, for the total.
    #[serde(skip)]
    pub exact_per_hour: Option<f64>,
}

/// Where one Deployment would land.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentPlan {
    pub namespace: String,
    pub name: String,
    pub cluster: String,
    pub pool: Option<String>,
    pub replicas: i32,
    /// Why it would not run, when it would not.
    pub problem: Option<String>,
}

/// The whole plan.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub clusters: Vec<ClusterPlan>,
    pub deployments: Vec<DeploymentPlan>,
    /// Every Cluster whose prices are known, after the plan.
    pub price_per_hour: f64,
    pub price_per_30_days: f64,
    /// Clusters whose price is not known, left out of the total.
    pub unpriced: Vec<String>,
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn key(ns: Option<&str>, name: &str) -> String {
    format!("{}/{name}", ns.unwrap_or_default())
}

/// Plans every Cluster and Deployment of the manifests. Pure.
pub fn plan(inputs: &Inputs, now: k8s_openapi::jiff::Timestamp) -> Plan {
    let m = &inputs.manifests;
    let ex = &inputs.existing;
    let find_module = |ns: &str, name: &str| -> Option<Arc<Module>> {
        m.modules
            .iter()
            .chain(&ex.modules)
            .find(|o| o.metadata.namespace.as_deref() == Some(ns) && o.name_any() == name)
            .map(|o| Arc::new(o.clone()))
    };
    // The Deployments: those of the manifests, and those on the cluster not replaced.
    let mut deployments: Vec<&Deployment> = m.deployments.iter().collect();
    for d in &ex.deployments {
        if !m
            .deployments
            .iter()
            .any(|n| n.metadata.namespace == d.metadata.namespace && n.name_any() == d.name_any())
        {
            deployments.push(d);
        }
    }
    let mut clusters = Vec::new();
    let (mut total, mut unpriced) = (0.0, Vec::new());
    for c in &m.clusters {
        let ns = c.metadata.namespace.clone().unwrap_or_default();
        let k = key(Some(&ns), &c.name_any());
        let existing = ex
            .clusters
            .iter()
            .find(|e| e.metadata.namespace == c.metadata.namespace && e.name_any() == c.name_any());
        // The spec of the manifest, with the status (machines now) of what is there.
        let mut c = c.clone();
        c.status = existing.and_then(|e| e.status.clone());
        c.metadata.uid = existing
            .and_then(|e| e.metadata.uid.clone())
            .or_else(|| Some("planned".into()));
        let catalogue = inputs
            .types
            .get(&k)
            .cloned()
            .unwrap_or_else(|| Err("instance types not read".into()));
        let wants = cplan::demand::wants(&c, deployments.iter().copied(), |ns, name| {
            find_module(ns, name)
        });
        let mut cp = plan_cluster(&c, existing.is_some(), &catalogue, wants.as_deref(), now);
        cp.offline = inputs.offline;
        match cp.exact_per_hour {
            Some(p) => total += p,
            None => unpriced.push(k),
        }
        clusters.push(cp);
    }
    let all_clusters: Vec<&Cluster> = m
        .clusters
        .iter()
        .chain(ex.clusters.iter().filter(|e| {
            !m.clusters.iter().any(|c| {
                c.metadata.namespace == e.metadata.namespace && c.name_any() == e.name_any()
            })
        }))
        .collect();
    // Where a Deployment would land on one Cluster: its pool, or why not.
    let land = |d: &Deployment, ns: &str, cluster_name: &str| -> Result<String, String> {
        let cluster = all_clusters
            .iter()
            .find(|c| c.metadata.namespace.as_deref() == Some(ns) && c.name_any() == cluster_name)
            .ok_or_else(|| {
                format!(
                    "Cluster {ns}/{cluster_name} is neither in the manifests nor on the cluster"
                )
            })?;
        let module = find_module(ns, &d.spec.module_ref.name).ok_or_else(|| {
            format!(
                "spec.moduleRef: Module {ns}/{} is neither in the manifests nor on the cluster",
                d.spec.module_ref.name
            )
        })?;
        let p = build::choose_pool(
            cluster,
            d.spec.node_pool.as_deref(),
            build::need(d, &module),
        )?;
        let planned = clusters
            .iter()
            .find(|c| c.namespace == ns && c.name == cluster_name);
        // A Cluster whose types could not be read: whether it can run it is not known.
        if let Some(unknown) = planned.and_then(|c| {
            c.problems
                .iter()
                .find(|m| m.starts_with("instance types unknown"))
        }) {
            return Err(unknown.clone());
        }
        let unfit = planned.and_then(|c| {
            c.unfit
                .iter()
                .find(|m| m.starts_with(&format!("pool {}:", p.name)))
        });
        match unfit {
            Some(m) => Err(m.clone()),
            None => Ok(p.name.clone()),
        }
    };
    // The price per hour of one machine of a planned pool.
    let pool_price = |ns: &str, cluster: &str, pool: &str| {
        clusters
            .iter()
            .find(|c| c.namespace == ns && c.name == cluster)
            .and_then(|c| c.pools.iter().find(|p| p.pool == pool))
            .and_then(|p| p.price_per_hour.map(|t| t / f64::from(p.after.max(1))))
    };
    let deployments = m
        .deployments
        .iter()
        .map(|d| {
            let ns = d.metadata.namespace.clone().unwrap_or_default();
            let mut out = DeploymentPlan {
                namespace: ns.clone(),
                name: d.name_any(),
                cluster: String::new(),
                pool: None,
                replicas: d.spec.replicas,
                problem: None,
            };
            // Every candidate (one with clusterRef), in the order placement tries them.
            let mut tries: Vec<(usize, String, Result<String, String>)> = d
                .spec
                .candidates()
                .iter()
                .enumerate()
                .map(|(i, c)| (i, c.to_string(), land(d, &ns, c)))
                .collect();
            let cheapest = d
                .spec
                .placement
                .as_ref()
                .is_some_and(|p| p.policy == kelp_crds::PlacementPolicy::Cheapest);
            if cheapest {
                let price = |t: &(usize, String, Result<String, String>)| {
                    t.2.as_ref()
                        .ok()
                        .and_then(|p| pool_price(&ns, &t.1, p))
                        .unwrap_or(f64::INFINITY)
                };
                tries.sort_by(|a, b| price(a).total_cmp(&price(b)).then(a.0.cmp(&b.0)));
            }
            let passed: Vec<String> = tries
                .iter()
                .filter_map(|(_, c, r)| r.as_ref().err().map(|e| format!("{c}: {e}")))
                .collect();
            match tries.iter().find(|t| t.2.is_ok()) {
                Some((_, c, Ok(p))) => {
                    out.cluster = c.clone();
                    out.pool = Some(p.clone());
                    if d.spec.placement.is_some() && !passed.is_empty() {
                        out.problem = Some(format!("passed over: {}", passed.join("; ")));
                    }
                }
                _ => {
                    out.cluster = d
                        .spec
                        .candidates()
                        .first()
                        .map(|s| s.to_string())
                        .unwrap_or_default();
                    out.problem = Some(match (&d.spec.placement, passed.as_slice()) {
                        (None, [one]) => {
                            let msg = one.split_once(": ").map_or(one.as_str(), |x| x.1);
                            if msg.starts_with("Cluster ") {
                                format!("spec.clusterRef: {msg}")
                            } else {
                                msg.to_string()
                            }
                        }
                        _ => format!(
                            "spec.placement: no candidate Cluster can run the workload ({})",
                            passed.join("; ")
                        ),
                    });
                }
            }
            out
        })
        .collect();
    Plan {
        clusters,
        deployments,
        price_per_hour: round2(total),
        price_per_30_days: round2(total * HOURS_30_DAYS),
        unpriced,
    }
}

/// The machines a pool's status records, as the plan reads them; the oldest is the
/// server of a pool that runs it.
fn recorded(c: &Cluster, pool: &kelp_crds::NodePool) -> Vec<Machine> {
    let Some(st) = c
        .status
        .as_ref()
        .and_then(|s| s.node_pools.iter().find(|p| p.name == pool.name))
    else {
        return Vec::new();
    };
    let uid = c.metadata.uid.clone().unwrap_or_default();
    let server = cplan::runs_server(c, pool);
    st.machines
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let role = if server && i == 0 {
                Role::Server
            } else {
                Role::Agent
            };
            Machine {
                id: m.name.clone(),
                provider_id: m.provider_id.clone().unwrap_or_default(),
                name: m.name.clone(),
                instance_type: st.instance_type.clone().unwrap_or_default(),
                state: match m.state.as_deref() {
                    Some("running") => MachineState::Running,
                    Some("terminating") => MachineState::Terminating,
                    Some("failed") => MachineState::Failed,
                    _ => MachineState::Pending,
                },
                addresses: Vec::new(),
                tags: Owner {
                    role,
                    ..Owner::pool(&uid, &pool.name)
                }
                .tags(),
                created_at: m.created_at.clone().unwrap_or_default(),
            }
        })
        .collect()
}

fn alive(machines: &[Machine]) -> u32 {
    machines
        .iter()
        .filter(|m| matches!(m.state, MachineState::Pending | MachineState::Running))
        .count() as u32
}

fn plan_cluster(
    c: &Cluster,
    exists: bool,
    catalogue: &Catalogue,
    wants: Option<&[Vec<cplan::demand::Want>]>,
    now: k8s_openapi::jiff::Timestamp,
) -> ClusterPlan {
    let mut out = ClusterPlan {
        namespace: c.metadata.namespace.clone().unwrap_or_default(),
        name: c.name_any(),
        cloud: c.spec.cloud.kind().unwrap_or("?").to_string(),
        exists,
        pools: Vec::new(),
        price_per_hour: None,
        problems: Vec::new(),
        unfit: Vec::new(),
        offline: false,
        exact_per_hour: None,
    };
    let types = match catalogue {
        Ok(t) => t,
        Err(e) => {
            out.problems.push(format!("instance types unknown: {e}"));
            for p in &c.spec.node_pools {
                out.pools.push(PoolRow {
                    pool: p.name.clone(),
                    instance_type: p.machine.instance_type.clone(),
                    vcpus: None,
                    memory_mb: None,
                    gpus: None,
                    gpu_model: None,
                    now: alive(&recorded(c, p)),
                    after: p.replicas.max(0) as u32,
                    price_per_hour: None,
                    price_per_30_days: None,
                    action: "unknown".into(),
                    demand: None,
                });
            }
            return out;
        }
    };
    out.unfit = cplan::unsatisfiable(c, types);
    out.problems.extend(out.unfit.clone());
    // The separate control plane: one machine.
    let k8s = &c.spec.kubernetes;
    let cp = k8s.control_plane.clone().unwrap_or_default();
    let mut cp_price = 0.0;
    let mut priced = true;
    if k8s.mode == KubernetesMode::Provision && cp.pool.is_none() {
        let now_cp = c.status.as_ref().map_or(0, |s| {
            s.control_plane_machines
                .iter()
                .filter(|m| matches!(m.state.as_deref(), Some("pending" | "running")))
                .count()
        }) as u32;
        let t = select::candidates(types, &cplan::control_plane_requirements(&cp))
            .ok()
            .and_then(|c| c.first().map(|t| (*t).clone()));
        let price = t.as_ref().and_then(|t| t.price_per_hour);
        cp_price = price.unwrap_or_default();
        priced &= price.is_some() || t.is_none();
        out.pools.push(row(
            CONTROL_PLANE_POOL,
            t.as_ref(),
            now_cp,
            1,
            if t.is_none() {
                "none: no type fits".into()
            } else if now_cp == 0 {
                "create 1".into()
            } else {
                "none".into()
            },
            None,
        ));
    }
    let listed: Vec<Vec<Machine>> = c.spec.node_pools.iter().map(|p| recorded(c, p)).collect();
    let empty = BTreeMap::new();
    let pending = c
        .status
        .as_ref()
        .map(|s| s.pending_creates.clone())
        .unwrap_or_default();
    let plan = cplan::plan(
        c,
        &cplan::Observed {
            types,
            machines: &listed,
            pending: &pending,
            can_join: true,
            now,
            grace: std::time::Duration::from_secs(120),
            wants,
            usage: &empty,
            other_price_per_hour: cp_price,
        },
    );
    let mut total = cp_price;
    for ((pool, actions), machines) in c.spec.node_pools.iter().zip(&plan.pools).zip(&listed) {
        let now_n = alive(machines);
        let created: u32 = actions.creates.iter().map(|c| c.count).sum();
        let deleted = actions.deleted().count() as u32;
        let t = actions.candidates.first();
        let mut after = (now_n + created).saturating_sub(deleted);
        let mut parts = Vec::new();
        if created > 0 {
            parts.push(format!("create {created}"));
        }
        if actions.rolling.is_some() {
            let outdated = machines
                .iter()
                .filter(|m| matches!(m.state, MachineState::Pending | MachineState::Running))
                .filter(|m| !actions.candidates.iter().any(|t| t.name == m.instance_type))
                .count();
            parts.push(format!("roll {outdated}"));
            after = actions.desired;
        }
        if deleted > 0 {
            parts.push(format!("delete {deleted}"));
        }
        if pool.autoscaling.is_some() && actions.desired < after && deleted == 0 {
            let delay = pool
                .autoscaling
                .as_ref()
                .map_or(600, |a| a.scale_down_delay().as_secs());
            parts.push(format!(
                "delete {} once idle for {delay}s",
                after - actions.desired
            ));
            after = actions.desired;
        }
        if let Some(b) = &actions.over_budget {
            out.problems.push(b.clone());
        }
        let action = if t.is_none() {
            "none: no type fits".to_string()
        } else if parts.is_empty() {
            "none".to_string()
        } else {
            parts.join(", ")
        };
        let price = t.and_then(|t| t.price_per_hour);
        if after > 0 {
            match price {
                Some(p) => total += p * f64::from(after),
                None => priced = false,
            }
        }
        out.pools.push(row(
            &pool.name,
            t,
            now_n,
            after,
            action,
            actions.demand.clone(),
        ));
    }
    out.exact_per_hour = priced.then_some(total);
    out.price_per_hour = priced.then(|| round2(total));
    out
}

fn row(
    pool: &str,
    t: Option<&InstanceType>,
    now: u32,
    after: u32,
    action: String,
    demand: Option<String>,
) -> PoolRow {
    let price = t
        .and_then(|t| t.price_per_hour)
        .map(|p| p * f64::from(after));
    PoolRow {
        pool: pool.to_string(),
        instance_type: t.map(|t| t.name.clone()),
        vcpus: t.map(|t| t.vcpus),
        memory_mb: t.map(|t| t.memory_mb),
        gpus: t.map(InstanceType::gpu_count),
        gpu_model: t.and_then(|t| t.gpu.as_ref().map(|g| g.model.clone())),
        now,
        after,
        price_per_hour: price.map(round2),
        price_per_30_days: price.map(|p| round2(p * HOURS_30_DAYS)),
        action,
        demand,
    }
}

fn money(v: Option<f64>) -> String {
    v.map_or("?".into(), |v| format!("{v:.2}"))
}

/// The plan as text or JSON.
pub fn render(plan: &Plan, format: Format) -> Outcome {
    let mut notes = Vec::new();
    let offline_ec2: Vec<String> = plan
        .clusters
        .iter()
        .filter(|c| c.cloud == "ec2" && c.offline)
        .map(|c| format!("{}/{}", c.namespace, c.name))
        .collect();
    if !offline_ec2.is_empty() {
        notes.push(format!(
            "{}: planned from kelp's built-in EC2 table (us-east-1 prices; whether the region offers each type is not checked); --kubeconfig asks EC2 itself",
            offline_ec2.join(", ")
        ));
    }
    if !plan.unpriced.is_empty() {
        notes.push(format!(
            "prices unknown for {}: not in the total",
            plan.unpriced.join(", ")
        ));
    }
    let stdout = match format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(plan).expect("the plan serializes");
            s.push('\n');
            s
        }
        Format::Table => {
            let mut out = String::new();
            let mut rows = vec![
                [
                    "CLUSTER", "POOL", "TYPE", "VCPU", "MEMORY", "GPU", "NOW", "AFTER", "$/H",
                    "$/30D", "ACTION",
                ]
                .map(String::from)
                .to_vec(),
            ];
            for c in &plan.clusters {
                for p in &c.pools {
                    rows.push(vec![
                        format!("{}/{}", c.namespace, c.name),
                        p.pool.clone(),
                        p.instance_type.clone().unwrap_or_else(|| "-".into()),
                        p.vcpus.map_or("-".into(), |v| v.to_string()),
                        p.memory_mb
                            .map_or("-".into(), |m| format!("{} GiB", m.div_ceil(1024))),
                        match (p.gpus, &p.gpu_model) {
                            (Some(n), Some(m)) if n > 0 => format!("{n}x {m}"),
                            (Some(_), _) => "-".into(),
                            (None, _) => "?".into(),
                        },
                        p.now.to_string(),
                        p.after.to_string(),
                        money(p.price_per_hour),
                        money(p.price_per_30_days),
                        p.action.clone(),
                    ]);
                }
            }
            out.push_str(&table(&rows));
            for c in &plan.clusters {
                for p in &c.pools {
                    if let Some(d) = &p.demand {
                        let _ = writeln!(out, "{}/{} pool {}: {d}", c.namespace, c.name, p.pool);
                    }
                }
                for problem in &c.problems {
                    let _ = writeln!(out, "{}/{}: {problem}", c.namespace, c.name);
                }
            }
            if !plan.deployments.is_empty() {
                out.push('\n');
                let mut rows = vec![
                    ["DEPLOYMENT", "CLUSTER", "POOL", "REPLICAS", "NOTE"]
                        .map(String::from)
                        .to_vec(),
                ];
                for d in &plan.deployments {
                    rows.push(vec![
                        format!("{}/{}", d.namespace, d.name),
                        d.cluster.clone(),
                        d.pool.clone().unwrap_or_else(|| "-".into()),
                        d.replicas.to_string(),
                        d.problem.clone().unwrap_or_default(),
                    ]);
                }
                out.push_str(&table(&rows));
            }
            let _ = writeln!(
                out,
                "\nTotal: {:.2} per hour, {:.2} per 30 days",
                plan.price_per_hour, plan.price_per_30_days
            );
            out
        }
    };
    Outcome {
        stdout,
        warnings: Vec::new(),
        notes,
    }
}

/// The instance types of a sim Cluster: the simulated cloud's catalogue.
pub fn sim_types() -> Vec<InstanceType> {
    kelp_cloud_drivers::sim::SimConfig::default().instance_types
}

/// Reads, from the cluster `client` talks to, the Modules, Clusters and Deployments of
/// the namespaces the manifests use, and each manifest Cluster's instance types through
/// the operator's own drivers (its Secrets read from that cluster). Nothing is written.
pub async fn gather(client: &kube::Client, manifests: Manifests) -> Inputs {
    use kube::api::Api;
    let mut namespaces: Vec<String> = manifests
        .clusters
        .iter()
        .map(|c| c.metadata.namespace.clone().unwrap_or_default())
        .chain(
            manifests
                .deployments
                .iter()
                .map(|d| d.metadata.namespace.clone().unwrap_or_default()),
        )
        .collect();
    namespaces.sort();
    namespaces.dedup();
    let mut existing = Manifests::default();
    for ns in &namespaces {
        if let Ok(l) = Api::<Module>::namespaced(client.clone(), ns)
            .list(&Default::default())
            .await
        {
            existing.modules.extend(l.items);
        }
        if let Ok(l) = Api::<Cluster>::namespaced(client.clone(), ns)
            .list(&Default::default())
            .await
        {
            existing.clusters.extend(l.items);
        }
        if let Ok(l) = Api::<Deployment>::namespaced(client.clone(), ns)
            .list(&Default::default())
            .await
        {
            existing.deployments.extend(l.items);
        }
    }
    let drivers = crate::drivers::Drivers::new(
        crate::drivers::SimClouds::new(kelp_cloud_drivers::sim::SimConfig::default()),
        String::new(),
    );
    let mut types = BTreeMap::new();
    for c in &manifests.clusters {
        let k = key(c.metadata.namespace.as_deref(), &c.name_any());
        let catalogue = if c.spec.cloud.sim.is_some() {
            Ok(sim_types())
        } else {
            match drivers.for_cluster(client, c).await {
                Ok(driver) => driver
                    .instance_types()
                    .await
                    .map_err(|e| format!("the cloud answered: {e}")),
                Err(e) => Err(e.to_string()),
            }
        };
        types.insert(k, catalogue);
    }
    Inputs {
        manifests,
        existing,
        types,
        offline: false,
    }
}

/// The offline inputs: sim Clusters get the simulated catalogue, EC2 Clusters kelp's
/// built-in table of EC2 types and prices; OpenStack and EGI need the credentials
/// Secret their spec names, from a cluster.
pub fn offline(manifests: Manifests) -> Inputs {
    let types = manifests
        .clusters
        .iter()
        .map(|c| {
            let k = key(c.metadata.namespace.as_deref(), &c.name_any());
            let t = if c.spec.cloud.sim.is_some() {
                Ok(sim_types())
            } else if c.spec.cloud.ec2.is_some() {
                // kelp's own table of EC2 types and prices (us-east-1).
                Ok(kelp_cloud_drivers::ec2::builtin_catalogue())
            } else {
                Err(format!(
                    "a Cluster on {} needs --kubeconfig: its cloud is asked for its instance types with the credentials Secret its spec names",
                    c.spec.cloud.kind().unwrap_or("?")
                ))
            };
            (k, t)
        })
        .collect();
    Inputs {
        manifests,
        existing: Manifests::default(),
        types,
        offline: true,
    }
}
