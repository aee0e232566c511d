//! The Cluster controller: node pools of tagged machines in one cloud, and the Kubernetes
//! they join.
//!
//! dereference (driver, instance types, each pool's machines) -> validate (a type per
//! pool) -> control plane -> plan (pure: [`plan::plan`]) -> apply (delete and create
//! batches, Nodes) -> status (pure: [`status::compute`]).

pub mod demand;
pub mod plan;
pub mod status;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kelp_cloud_drivers::{
    CloudDriver, CloudError, CreateRequest, InstanceType, Machine, MachineState, Owner, Role,
    select, tags,
};
use kelp_crds::condition_types as ct;
use kelp_crds::{
    Cluster, ClusterPhase, ClusterStatus, KubernetesMode, NodePool, NodePoolStatus, PendingCreate,
    SecretReference,
};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use crate::conditions::{self, Finding};
use crate::context::{Ctx, Error, Result, reconcile_with_finalizer};
use crate::pki::{self, ClusterPki};
use crate::simulated::SimNode;
use plan::{CONTROL_PLANE_POOL, Join, PoolActions};
use status::{Outcome, Unsettled};

/// The finalizer kelp puts on Clusters: machines are deleted before the Cluster goes.
pub const FINALIZER: &str = "kelp.imagine-ai.eu/cluster";

/// Runs the Cluster controller until `shutdown` resolves.
pub async fn run(
    ctx: Ctx,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<Cluster> = Api::all(ctx.client.clone());
    let (store, clusters) = crate::context::main_watch(
        &ctx,
        "cluster",
        api,
        watcher::Config::default().any_semantic(),
    );
    let controller = Controller::for_stream(clusters, store.clone())
        .with_config(crate::context::controller_config());
    let by_demand = store.clone();
    controller
        // Credentials or kubeconfig created or rotated after the Cluster.
        .reconcile_on(ctx.secrets.subscribe().flat_map(move |(ns, name)| {
            let refs: Vec<kube::runtime::reflector::ObjectRef<Cluster>> = store
                .state()
                .into_iter()
                .filter(|c| c.namespace().as_deref() == Some(ns.as_str()) && uses_secret(c, &name))
                .map(|c| kube::runtime::reflector::ObjectRef::from_obj(c.as_ref()))
                .collect();
            futures::stream::iter(refs)
        }))
        // A Deployment on it added, changed or deleted: pools that follow demand resize
        // (Clusters without such a pool are not woken).
        .reconcile_on(ctx.demand.changes().filter_map(move |(ns, name)| {
            let r = kube::runtime::reflector::ObjectRef::<Cluster>::new(&name).within(&ns);
            let follows = by_demand
                .get(&r)
                .is_some_and(|c| c.spec.node_pools.iter().any(|p| p.autoscaling.is_some()));
            std::future::ready(follows.then_some(r))
        }))
        // A user recipe loaded, fixed or broken: everything may render differently.
        .reconcile_all_on(crate::recipes::changes(&ctx))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, crate::context::error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                crate::context::log_controller_error("cluster", &e);
            }
        })
        .await;
}

/// Whether the Cluster reads the Secret `name` (cloud credentials or kubeconfig).
fn uses_secret(c: &Cluster, name: &str) -> bool {
    let cloud = &c.spec.cloud;
    let refs = [
        cloud
            .ec2
            .as_ref()
            .and_then(|e| e.credentials_secret_ref.as_ref())
            .map(|r| r.name.as_str()),
        cloud
            .openstack
            .as_ref()
            .map(|o| o.credentials_secret_ref.name.as_str()),
        cloud
            .egi
            .as_ref()
            .map(|e| e.credentials_secret_ref.name.as_str()),
        c.spec
            .kubernetes
            .kubeconfig_secret_ref
            .as_ref()
            .map(|r| r.name.as_str()),
    ];
    refs.into_iter().flatten().any(|r| r == name)
}

#[tracing::instrument(skip_all, fields(namespace = cluster.namespace(), name = %cluster.name_any(), generation = cluster.metadata.generation))]
async fn reconcile(cluster: Arc<Cluster>, ctx: Ctx) -> Result<Action> {
    let c = ctx.clone();
    crate::context::measured(
        &c,
        "cluster",
        reconcile_with_finalizer(cluster, ctx, FINALIZER, apply, cleanup),
    )
    .await
}

/// One reconcile's working state.
struct Run<'a> {
    cluster: &'a Cluster,
    ctx: &'a Ctx,
    driver: Arc<dyn CloudDriver>,
    types: Vec<InstanceType>,
    uid: String,
    ns: String,
    name: String,
    generation: i64,
    status: ClusterStatus,
    /// What needs a user's change.
    stalled: Vec<Finding>,
    /// ControlPlaneReady as found by this reconcile.
    control_plane: Option<Finding>,
    /// Reasons to look again soon besides what the status shows.
    unsettled: Vec<Unsettled>,
    /// Machines of the separate control plane, as listed.
    cp_machines: Option<Vec<kelp_crds::MachineStatus>>,
    /// What the separate control-plane machines cost per hour, as far as known.
    cp_price: f64,
    /// What the Cluster waits for (capacity), shown in the Ready condition.
    waiting: Vec<String>,
    /// Pools rolling to a new instance type, shown in the Ready condition.
    rolling: Vec<String>,
    /// What stands in for k3s when the Cluster is on the sim cloud.
    sim: Option<Arc<dyn crate::simulated::SimKubernetes>>,
    /// Batches asked for and not yet listed (from the status and this process's memory).
    pending: Vec<PendingCreate>,
    /// Every machine listed during this reconcile.
    seen: Vec<Machine>,
    /// Whether this reconcile started machines (its orphan sweep then waits for the next
    /// one, off the path from create to running).
    created: bool,
    now: Timestamp,
    /// What the target showed of the machines of pools that follow demand.
    usage: BTreeMap<String, plan::demand::Usage>,
}

async fn apply(cluster: Arc<Cluster>, ctx: Ctx) -> Result<Action> {
    let generation = cluster.metadata.generation.unwrap_or_default();
    let mut status = cluster.status.clone().unwrap_or_default();
    status.observed_generation = Some(generation);
    status.cloud = cluster.spec.cloud.kind().map(String::from);

    if cluster.spec.paused {
        conditions::set(
            &mut status.conditions,
            ct::RECONCILING,
            false,
            "Paused",
            "spec.paused is true: kelp leaves the cloud and the machines alone",
            Some(generation),
        );
        conditions::set(
            &mut status.conditions,
            ct::READY,
            false,
            "Paused",
            "spec.paused is true: kelp leaves the cloud and the machines alone",
            Some(generation),
        );
        write_status(&ctx, &cluster, status).await?;
        return Ok(Action::await_change());
    }

    if cluster.spec.cloud.sim.is_some() && ctx.sim_kube.is_none() {
        let msg = "spec.cloud.sim: this build of kelp has no simulator (it was built without the `dev` feature); the sim cloud is for `kelp dev` and tests";
        stall(&mut status, generation, "NoSimulator", msg);
        write_status(&ctx, &cluster, status).await?;
        return Ok(Action::await_change());
    }
    let driver = match ctx.drivers.for_cluster(&ctx.client, &cluster).await {
        Ok(d) => d,
        Err(e) => {
            let reason = e.label();
            conditions::set(
                &mut status.conditions,
                ct::CLOUD_REACHABLE,
                false,
                reason,
                e.to_string(),
                Some(generation),
            );
            stall(&mut status, generation, reason, &e.to_string());
            write_status(&ctx, &cluster, status).await?;
            ctx.event(cluster.as_ref(), true, reason, "Connect", e.to_string())
                .await;
            return if e.is_transient() {
                Err(e)
            } else {
                Ok(Action::await_change())
            };
        }
    };
    let uid = cluster.uid().unwrap_or_default();
    let types = match ctx.drivers.instance_types(&cluster, driver.as_ref()).await {
        Ok(t) => t,
        Err(e) => return cloud_failed(&ctx, &cluster, status, generation, e).await,
    };
    conditions::set(
        &mut status.conditions,
        ct::CLOUD_REACHABLE,
        true,
        "Reachable",
        "the cloud API answers",
        Some(generation),
    );

    let mut run = Run {
        sim: cluster.spec.cloud.sim.as_ref().and(ctx.sim_kube.clone()),
        cluster: cluster.as_ref(),
        ctx: &ctx,
        driver,
        types,
        uid,
        ns: cluster.namespace().unwrap_or_default(),
        name: cluster.name_any(),
        generation,
        status,
        stalled: Vec::new(),
        control_plane: None,
        unsettled: Vec::new(),
        cp_machines: None,
        cp_price: 0.0,
        waiting: Vec::new(),
        rolling: Vec::new(),
        pending: ctx.pending_creates(&cluster),
        seen: Vec::new(),
        created: false,
        now: Timestamp::now(),
        usage: BTreeMap::new(),
    };
    let outcome = match run.reconcile().await {
        Ok(o) => o,
        Err(Error::Cloud(e)) => {
            let status = run.status;
            return cloud_failed(&ctx, &cluster, status, generation, e).await;
        }
        Err(e) if e.is_transient() => return Err(e),
        Err(e) => {
            let mut status = run.status;
            if let Some(cp) = &run.control_plane {
                cp.set(
                    &mut status.conditions,
                    ct::CONTROL_PLANE_READY,
                    Some(generation),
                );
            }
            write_status(&ctx, &cluster, status).await?;
            return Err(e);
        }
    };
    let status = status::compute(&cluster, run.status, &outcome);
    let requeue = status::requeue(&status, &outcome);
    if !outcome.unsettled.is_empty() {
        tracing::debug!(unsettled = ?outcome.unsettled, "looking again soon");
    }
    write_status(&ctx, &cluster, status).await?;
    Ok(ctx.requeue(&crate::context::key(cluster.as_ref()), requeue))
}

async fn cloud_failed(
    ctx: &Ctx,
    cluster: &Cluster,
    mut status: ClusterStatus,
    generation: i64,
    e: CloudError,
) -> Result<Action> {
    let reason = e.label();
    if e.is_transient() {
        // Retried with per-object backoff. The status says so once (CloudReachable
        // False with the error); writing it again each time would wake the controller
        // at once and defeat the backoff.
        let msg = e.to_string();
        let known = conditions::get(&status.conditions, ct::CLOUD_REACHABLE)
            .is_some_and(|c| c.status == kelp_crds::ConditionStatus::False && c.message == msg);
        if !known && !matches!(e, CloudError::NotFound(_)) {
            conditions::set(
                &mut status.conditions,
                ct::CLOUD_REACHABLE,
                false,
                reason,
                msg.clone(),
                Some(generation),
            );
            write_status(ctx, cluster, status).await?;
            ctx.event(cluster, true, reason, "Reconcile", msg).await;
        }
        return Err(Error::Cloud(e));
    }
    conditions::set(
        &mut status.conditions,
        ct::CLOUD_REACHABLE,
        !matches!(e, CloudError::Unauthorized(_)),
        reason,
        e.to_string(),
        Some(generation),
    );
    stall(&mut status, generation, reason, &e.to_string());
    write_status(ctx, cluster, status).await?;
    ctx.event(cluster, true, reason, "Reconcile", e.to_string())
        .await;
    // Unauthorized / quota / invalid: no retry storm; look again after a while.
    Ok(Action::requeue(ctx.config.resync))
}

fn stall(status: &mut ClusterStatus, generation: i64, reason: &str, message: &str) {
    conditions::set(
        &mut status.conditions,
        ct::STALLED,
        true,
        reason,
        message,
        Some(generation),
    );
    conditions::set(
        &mut status.conditions,
        ct::READY,
        false,
        reason,
        message,
        Some(generation),
    );
    status.phase = Some(ClusterPhase::Failed);
}

impl Run<'_> {
    /// Plans and applies each part of the Cluster (control plane, pools, Nodes, orphans);
    /// returns what it found and did, for [`status::compute`].
    async fn reconcile(&mut self) -> Result<Outcome> {
        // Nothing is created (no control plane, no Secret, no machine) while any pool,
        // or the control plane, has no instance type that fits: such a Cluster could
        // never run its workload, and its machines would cost money for nothing.
        let unfit = plan::unsatisfiable(self.cluster, &self.types);
        for msg in &unfit {
            // One Event when the Cluster becomes stuck, not one per reconcile.
            let already = self
                .cluster
                .status
                .as_ref()
                .and_then(|s| conditions::get(&s.conditions, ct::STALLED))
                .is_some_and(|c| {
                    c.status == kelp_crds::ConditionStatus::True && c.message.contains(msg)
                });
            if !already {
                self.ctx
                    .event(
                        self.cluster,
                        true,
                        "NoInstanceType",
                        "ChooseType",
                        msg.clone(),
                    )
                    .await;
            }
            self.stalled
                .push(Finding::yes("NoInstanceType", msg.clone()));
        }
        // Dereference: every pool's machines, as the cloud lists them.
        let mut listed = Vec::new();
        for pool in &self.cluster.spec.node_pools {
            listed.push(self.list(Some(&pool.name)).await?);
        }
        let join = if unfit.is_empty() {
            self.control_plane(&listed).await?
        } else {
            None
        };
        // Pools that follow demand: the Deployments they carry, and what the target
        // shows of their machines.
        let autoscaling = self
            .cluster
            .spec
            .node_pools
            .iter()
            .any(|p| p.autoscaling.is_some());
        let mut wants = if autoscaling {
            self.ctx
                .demand
                .wants(self.cluster, self.ctx.health.is_synced("deployment"))
        } else {
            None
        };
        // Pods of others that wait for room on a pool count too.
        if let Some(w) = wants.as_mut()
            && join.is_some()
            && let Ok(target) = self
                .ctx
                .targets
                .client(&self.ctx.client, &self.ctx.secrets, self.cluster)
                .await
        {
            let pending = demand::pending_pods(&target).await;
            for (pool, wants) in self.cluster.spec.node_pools.iter().zip(w.iter_mut()) {
                if pool.autoscaling.is_some() {
                    wants.extend(plan::demand::pending_wants(pool, &self.uid, &pending));
                }
            }
        }
        self.usage = if autoscaling && join.is_some() {
            self.usage(&listed).await
        } else {
            BTreeMap::new()
        };
        let plan = plan::plan(
            self.cluster,
            &plan::Observed {
                types: &self.types,
                machines: &listed,
                pending: &self.pending,
                can_join: join.is_some(),
                now: self.now,
                grace: self.ctx.config.create_grace,
                wants: wants.as_deref(),
                usage: &self.usage,
                other_price_per_hour: self.cp_price,
            },
        );
        if autoscaling && wants.is_none() {
            // Demand is not known yet: look again soon.
            self.unsettled.push(Unsettled::DemandUnknown);
        }
        let scale_down_in_s = plan
            .pools
            .iter()
            .filter_map(|p| p.scale_down_in)
            .min()
            .map(|d| d.as_secs_f64().ceil() as u64);
        let over_budget: Vec<String> = plan
            .pools
            .iter()
            .filter_map(|p| p.over_budget.clone())
            .collect();
        let mut pools = Vec::new();
        let mut all_running: Vec<(String, Machine)> = Vec::new();
        let spec = &self.cluster.spec.node_pools;
        for ((pool, actions), machines) in spec.iter().zip(plan.pools).zip(listed) {
            let (st, running) = self
                .apply_pool(pool, actions, machines, join.as_ref())
                .await?;
            pools.push(st);
            all_running.extend(running.into_iter().map(|m| (pool.name.clone(), m)));
        }
        let nodes_ready = self.nodes(&all_running, &mut pools).await?;
        // A failed sweep must not hold up the Cluster's own status; nor does a sweep hold
        // up the status of machines just started (the next reconcile sweeps).
        if !self.created
            && let Err(e) = self.sweep_orphans().await
        {
            tracing::info!(error = %e, "orphan sweep failed; retried at the next reconcile");
        }

        let pending_creates = plan::still_pending(
            &self.pending,
            &self.seen,
            self.now,
            self.ctx.config.create_grace,
        );
        self.ctx.remember_pending(&self.uid, &pending_creates);
        Ok(Outcome {
            pools,
            nodes_read: nodes_ready,
            control_plane: self.control_plane.take(),
            control_plane_machines: self.cp_machines.take(),
            stalled: std::mem::take(&mut self.stalled),
            waiting: std::mem::take(&mut self.waiting),
            rolling: std::mem::take(&mut self.rolling),
            pending_creates,
            unsettled: std::mem::take(&mut self.unsettled),
            scale_down_in_s,
            over_budget,
            control_plane_price_per_hour: self.cp_price,
        })
    }

    /// What the target shows of the machines of pools that follow demand.
    async fn usage(&self, listed: &[Vec<Machine>]) -> BTreeMap<String, plan::demand::Usage> {
        let Ok(target) = self
            .ctx
            .targets
            .client(&self.ctx.client, &self.ctx.secrets, self.cluster)
            .await
        else {
            return BTreeMap::new();
        };
        let machines: Vec<&Machine> = self
            .cluster
            .spec
            .node_pools
            .iter()
            .zip(listed)
            .filter(|(p, _)| p.autoscaling.is_some())
            .flat_map(|(_, ms)| ms.iter())
            .collect();
        demand::usage(&target, &self.uid, &machines).await
    }

    fn owner(&self) -> OwnerReference {
        self.cluster
            .controller_owner_ref(&())
            .expect("cluster has a uid")
    }

    /// The Secret `name` of this Cluster: owned by it, labelled as kelp's, with `data`.
    fn owned_secret(&self, name: &str, data: BTreeMap<String, String>) -> Secret {
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(self.ns.clone()),
                owner_references: Some(vec![self.owner()]),
                labels: Some(
                    [
                        (
                            "app.kubernetes.io/managed-by".to_string(),
                            "kelp".to_string(),
                        ),
                        (tags::CLUSTER_UID.to_string(), self.uid.clone()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            type_: Some("Opaque".to_string()),
            string_data: Some(data),
            ..Default::default()
        }
    }

    /// Creates `name` once (never overwrites: a CA must not change under running machines).
    async fn ensure_secret(&self, name: &str, data: BTreeMap<String, String>) -> Result<Secret> {
        let api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        if let Some(s) = api.get_opt(name).await? {
            return Ok(s);
        }
        let secret = self.owned_secret(name, data);
        match api.create(&PostParams::default(), &secret).await {
            Ok(s) => Ok(s),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(api.get(name).await?),
            Err(e) => Err(e.into()),
        }
    }

    /// The cluster PKI, generated once and kept in `<name>-kelp-pki`.
    async fn pki(&self) -> Result<ClusterPki> {
        let name = format!("{}-kelp-pki", self.name);
        let generated =
            ClusterPki::generate(&self.name).map_err(|e| Error::Invalid(format!("PKI: {e}")))?;
        let data: BTreeMap<String, String> = [
            ("ca.crt", &generated.ca_cert_pem),
            ("ca.key", &generated.ca_key_pem),
            ("token", &generated.token),
            ("admin.crt", &generated.admin_cert_pem),
            ("admin.key", &generated.admin_key_pem),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
        let secret = self.ensure_secret(&name, data).await?;
        let data = crate::targets::secret_data(&secret);
        let get = |k: &str| data.get(k).cloned().unwrap_or_default();
        Ok(ClusterPki {
            ca_cert_pem: get("ca.crt"),
            ca_key_pem: get("ca.key"),
            token: get("token"),
            admin_cert_pem: get("admin.crt"),
            admin_key_pem: get("admin.key"),
        })
    }

    /// Writes (or refreshes) the admin kubeconfig Secret `<name>-kubeconfig`.
    async fn write_kubeconfig(&mut self, kubeconfig: &str) -> Result<()> {
        let name = format!("{}-kubeconfig", self.name);
        let api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let current = api.get_opt(&name).await?;
        let same = current
            .as_ref()
            .and_then(|s| s.data.as_ref())
            .and_then(|d| d.get(crate::targets::KUBECONFIG_KEY))
            .is_some_and(|v| v.0 == kubeconfig.as_bytes());
        if !same {
            let secret = self.owned_secret(
                &name,
                [(
                    crate::targets::KUBECONFIG_KEY.to_string(),
                    kubeconfig.to_string(),
                )]
                .into(),
            );
            api.patch(
                &name,
                &PatchParams::apply(crate::context::MANAGER).force(),
                &Patch::Apply(&secret),
            )
            .await?;
        }
        self.status.kubeconfig_secret_ref = Some(SecretReference { name });
        Ok(())
    }

    /// Ensures the control plane; returns how agents join, or None while that is unknown.
    /// `listed` holds each pool's machines (the server of a pool that runs it among them).
    async fn control_plane(&mut self, listed: &[Vec<Machine>]) -> Result<Option<Join>> {
        let k8s = &self.cluster.spec.kubernetes;
        match k8s.mode {
            KubernetesMode::Existing => {
                // The kubeconfig is the user's; reachability is the readiness.
                let kc = crate::targets::read(&self.ctx.client, self.cluster).await;
                let reachable = match &kc {
                    Ok(kc) => match self.ctx.targets.client_for(kc).await {
                        Ok(c) => c
                            .apiserver_version()
                            .await
                            .map(|_| ())
                            .map_err(|e| Error::Target(crate::context::error_chain(&e))),
                        Err(e) => Err(e),
                    },
                    Err(Error::Target(m)) => Err(Error::Target(m.clone())),
                    Err(e) => Err(Error::Target(e.to_string())),
                };
                let (ok, reason, msg) = match &reachable {
                    Ok(()) => (
                        true,
                        "Reachable",
                        "the existing cluster's API answers".to_string(),
                    ),
                    // The user's kubeconfig Secret must change: Stalled, not retried.
                    Err(e @ Error::Kubeconfig(m)) => {
                        let m = format!("spec.kubernetes.kubeconfigSecretRef: {m}");
                        self.stalled.push(Finding::yes(e.label(), m.clone()));
                        (false, e.label(), m)
                    }
                    Err(e) => (false, "Unreachable", e.to_string()),
                };
                self.control_plane = Some(Finding {
                    status: ok,
                    ..Finding::yes(reason, msg)
                });
                let kc = kc.ok();
                let server = kc
                    .as_ref()
                    .and_then(|kc| kc.kubeconfig())
                    .and_then(|text| kube::config::Kubeconfig::from_yaml(text).ok())
                    .and_then(|k| k.clusters.into_iter().next())
                    .and_then(|c| c.cluster)
                    .and_then(|c| c.server);
                self.status.api_endpoint = server.clone();
                let token = kc
                    .and_then(|kc| kc.data.get("token").cloned())
                    .unwrap_or_default();
                Ok(server.map(|server_url| Join {
                    server_url,
                    token,
                    ca_cert_pem: String::new(),
                    ca_key_pem: String::new(),
                }))
            }
            KubernetesMode::Provision => {
                let pki = self.pki().await?;
                let cp_pool = k8s.control_plane.as_ref().and_then(|c| c.pool.clone());
                // A separate control-plane machine unless a pool hosts the server.
                let server_machine = if cp_pool.is_none() {
                    self.control_plane_machine(&pki).await?
                } else {
                    None
                };
                if let Some(sim) = self.sim.clone() {
                    let (url, kubeconfig) = sim.control_plane(&self.uid, &self.name).await?;
                    self.write_kubeconfig(&kubeconfig).await?;
                    self.status.api_endpoint = Some(url.clone());
                    let ready = cp_pool.is_some()
                        || server_machine
                            .as_ref()
                            .is_some_and(|m| m.state == MachineState::Running);
                    let msg = if ready {
                        "the simulated control plane answers"
                    } else {
                        "the control-plane machine is booting"
                    };
                    self.control_plane = Some(if ready {
                        Finding::yes("Ready", msg)
                    } else {
                        Finding::no("Provisioning", msg)
                    });
                    return Ok(Some(Join {
                        server_url: url,
                        token: pki.token,
                        ca_cert_pem: pki.ca_cert_pem,
                        ca_key_pem: pki.ca_key_pem,
                    }));
                }
                let machine = match (&cp_pool, server_machine) {
                    (None, m) => m,
                    (Some(pool), _) => self
                        .cluster
                        .spec
                        .node_pools
                        .iter()
                        .position(|p| &p.name == pool)
                        .and_then(|i| listed.get(i))
                        .and_then(|ms| ms.iter().find(|m| m.is_server()).cloned()),
                };
                let running = machine.filter(|m| m.state == MachineState::Running);
                let internal = running
                    .as_ref()
                    .and_then(|m| address(m, "InternalIP").or_else(|| address(m, "ExternalIP")));
                let external = running
                    .as_ref()
                    .and_then(|m| address(m, "ExternalIP").or_else(|| address(m, "InternalIP")));
                match (internal, external) {
                    (Some(internal), Some(external)) => {
                        let endpoint = format!("https://{external}:6443");
                        let kc = pki::kubeconfig(
                            &self.name,
                            &endpoint,
                            Some(&pki.ca_cert_pem),
                            pki::Credentials::ClientCert(&pki.admin_cert_pem, &pki.admin_key_pem),
                        );
                        self.write_kubeconfig(&kc).await?;
                        self.status.api_endpoint = Some(endpoint);
                        self.control_plane = Some(Finding::yes(
                            "Running",
                            "the control-plane machine is running",
                        ));
                        Ok(Some(Join {
                            server_url: format!("https://{internal}:6443"),
                            token: pki.token,
                            ca_cert_pem: pki.ca_cert_pem,
                            ca_key_pem: pki.ca_key_pem,
                        }))
                    }
                    _ => {
                        self.control_plane = Some(Finding::no(
                            "Provisioning",
                            "waiting for the control-plane machine and its address",
                        ));
                        Ok(None)
                    }
                }
            }
        }
    }

    /// The separate control-plane machine (pool `control-plane`), created when missing.
    async fn control_plane_machine(&mut self, pki: &ClusterPki) -> Result<Option<Machine>> {
        let cp = self
            .cluster
            .spec
            .kubernetes
            .control_plane
            .clone()
            .unwrap_or_default();
        let req = plan::control_plane_requirements(&cp);
        let machines = self.list(Some(CONTROL_PLANE_POOL)).await?;
        let plan = plan::plan_pool_with(
            1,
            &machines,
            self.in_flight(CONTROL_PLANE_POOL, &machines),
            self.settled(CONTROL_PLANE_POOL),
        );
        if plan.held > 0 {
            self.unsettled.push(Unsettled::HeldExtras {
                pool: CONTROL_PLANE_POOL.to_string(),
            });
        }
        self.delete_machines(
            CONTROL_PLANE_POOL,
            &plan.failed,
            "MachineFailed",
            "replacing failed control-plane machine",
        )
        .await?;
        self.delete_machines(
            CONTROL_PLANE_POOL,
            &plan.scale_down,
            "MachinesDeleted",
            "removing an extra control-plane machine",
        )
        .await?;
        let mut alive: Vec<Machine> = machines
            .into_iter()
            .filter(|m| {
                matches!(m.state, MachineState::Pending | MachineState::Running)
                    && !plan.scale_down.contains(&m.id)
            })
            .collect();
        if plan.create > 0 {
            // `plan::unsatisfiable` checked that some type fits.
            let candidates: Vec<InstanceType> = select::candidates(&self.types, &req)
                .map(|c| c.into_iter().cloned().collect())
                .unwrap_or_default();
            let Some(user_data) = self.node_user_data(
                None,
                kelp_recipes::NodeRole::Server,
                &Join {
                    server_url: String::new(),
                    token: pki.token.clone(),
                    ca_cert_pem: pki.ca_cert_pem.clone(),
                    ca_key_pem: pki.ca_key_pem.clone(),
                },
            )?
            else {
                return Ok(None);
            };
            let owner = Owner {
                role: Role::Server,
                ..plan::owner(&self.uid, Some(CONTROL_PLANE_POOL))
            };
            if let Some(created) = self
                .create_batch(
                    CONTROL_PLANE_POOL,
                    &candidates,
                    1,
                    0,
                    user_data,
                    owner,
                    None,
                    None,
                )
                .await?
            {
                alive.extend(created.1);
            }
        }
        self.cp_machines = Some(alive.iter().map(status::machine).collect());
        self.cp_price = alive
            .iter()
            .filter_map(|m| plan::price_of(&self.types, &m.instance_type))
            .sum();
        Ok(alive
            .into_iter()
            .max_by_key(|m| (m.state == MachineState::Running) as u8))
    }

    async fn list(&mut self, pool: Option<&str>) -> Result<Vec<Machine>> {
        let owner = plan::owner(&self.uid, pool);
        let machines = self.driver.list(&owner.tags()).await?;
        self.seen.extend(machines.iter().cloned());
        Ok(machines)
    }

    /// Looks at the machines just created once more (by ID, [`CloudDriver::list_ids`]),
    /// so that machines a cloud starts at once show as running in this reconcile's
    /// status instead of a poll later. Machines the cloud does not list yet keep the
    /// state their create returned.
    /// A failed list changes nothing: the next reconcile lists anyway.
    async fn relist(&mut self, pool: &str, machines: &mut [Machine]) {
        let owner = plan::owner(&self.uid, Some(pool));
        let ids: Vec<String> = machines.iter().map(|m| m.id.clone()).collect();
        let listed = match self.driver.list_ids(&owner.tags(), &ids).await {
            Ok(l) => l,
            Err(e) => {
                tracing::info!(error = %e, pool, "looking again at the machines just created failed; the next reconcile lists the pool");
                return;
            }
        };
        // What this reconcile has seen, each machine once (a batch's visible count must
        // not count a machine of both lists twice).
        for l in &listed {
            match self.seen.iter_mut().find(|s| s.id == l.id) {
                Some(s) => *s = l.clone(),
                None => self.seen.push(l.clone()),
            }
        }
        for m in machines.iter_mut() {
            if let Some(l) = listed.iter().find(|l| l.id == m.id) {
                *m = l.clone();
            }
        }
    }

    /// Machines of this pool's batches that the cloud does not list yet.
    fn in_flight(&self, pool: &str, listed: &[Machine]) -> u32 {
        plan::in_flight(
            &self.pending,
            pool,
            listed,
            self.now,
            self.ctx.config.create_grace,
        )
    }

    /// [`plan::settled`] for this reconcile's pending batches.
    fn settled(&self, pool: &str) -> impl Fn(&Machine) -> bool + use<> {
        plan::settled(&self.pending, pool, self.now, self.ctx.config.create_grace)
    }

    /// Records a batch in the status before the cloud is asked for it: a follow-up
    /// reconcile, or a restarted operator, then waits for it instead of asking again.
    async fn record_pending(&mut self, p: PendingCreate) -> Result<()> {
        self.pending.retain(|x| x.key != p.key);
        self.pending.push(p);
        self.ctx.remember_pending(&self.uid, &self.pending);
        // The status as it was, plus the batch: nothing of this reconcile's other
        // findings (its observedGeneration and conditions) is claimed before its end.
        let mut status = self.cluster.status.clone().unwrap_or_default();
        status.pending_creates = self.pending.clone();
        crate::context::apply_status(self.ctx, self.cluster, &status).await
    }

    /// Forgets a batch the cloud refused outright (nothing was created).
    fn forget_pending(&mut self, key: &str) {
        self.pending.retain(|x| x.key != key);
        self.ctx.remember_pending(&self.uid, &self.pending);
    }

    async fn delete_machines(
        &self,
        pool: &str,
        ids: &[String],
        reason: &str,
        why: &str,
    ) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.driver.delete(ids).await?;
        self.ctx
            .event(
                self.cluster,
                reason == "MachineFailed",
                reason,
                // Events aggregate by reason and action: one series per pool.
                &format!("DeleteMachines/{pool}"),
                format!("pool {pool}: {why}: {}", ids.join(", ")),
            )
            .await;
        Ok(())
    }

    /// The pool's node recipes rendered and merged into one user-data. A recipe error
    /// (or a broken user recipe) is recorded as Stalled, naming the pool, instead of
    /// failing the reconcile: None means "do not create machines".
    fn node_user_data(
        &mut self,
        pool: Option<&NodePool>,
        role: kelp_recipes::NodeRole,
        join: &Join,
    ) -> Result<Option<String>> {
        let uses = plan::node_recipes(self.cluster, pool, role);
        let rendered = self
            .ctx
            .recipes
            .check(uses.iter().map(|u| u.name.as_str()))
            .and_then(|()| {
                let ctx = plan::node_context(self.cluster, pool, role, join);
                self.ctx.recipes.catalog().render_node(&uses, &ctx)
            });
        match rendered {
            Ok(ud) => Ok(Some(ud)),
            Err(e) => {
                let name = pool.map_or(CONTROL_PLANE_POOL, |p| p.name.as_str());
                self.stalled
                    .push(Finding::yes("RecipeError", format!("pool {name}: {e}")));
                Ok(None)
            }
        }
    }

    /// Creates `count` machines in one call, trying the candidates in order on
    /// InsufficientCapacity. Returns the type used and the machines, or None when no
    /// candidate had capacity (recorded as waiting, with an Event).
    #[allow(clippy::too_many_arguments)]
    async fn create_batch(
        &mut self,
        pool: &str,
        candidates: &[InstanceType],
        count: u32,
        alive: u32,
        user_data: String,
        owner: Owner,
        image: Option<String>,
        disk_gb: Option<u32>,
    ) -> Result<Option<(String, Vec<Machine>)>> {
        // Which Cluster a machine is for, readable in the cloud console (kelp itself finds
        // its machines by UID, so a renamed or restored Cluster is never confused).
        let owner = Owner {
            cluster: Some(format!("{}/{}", self.ns, self.name)),
            ..owner
        };
        for (i, t) in candidates.iter().enumerate() {
            let key =
                plan::idempotency_key(&self.uid, pool, self.generation, alive, &t.name, self.now);
            let owner = Owner {
                batch: Some(key.clone()),
                ..owner.clone()
            };
            self.record_pending(PendingCreate {
                key: key.clone(),
                pool: pool.to_string(),
                count: count as i32,
                instance_type: t.name.clone(),
                requested_at: self.now.to_string(),
            })
            .await?;
            let req = CreateRequest {
                count,
                instance_type: t.name.clone(),
                image: image.clone(),
                user_data: user_data.clone(),
                owner,
                name_prefix: plan::name_prefix(&self.name, pool),
                idempotency_key: key.clone(),
                disk_gb,
            };
            match self.driver.create(&req).await {
                Ok(machines) => {
                    self.ctx
                        .event(
                            self.cluster,
                            false,
                            "MachinesCreated",
                            &format!("CreateMachines/{pool}"),
                            format!("pool {pool}: created {count} {} machine(s)", t.name),
                        )
                        .await;
                    return Ok(Some((t.name.clone(), machines)));
                }
                Err(CloudError::InsufficientCapacity { message, .. }) => {
                    self.forget_pending(&key);
                    let next = candidates
                        .get(i + 1)
                        .map(|n| format!("; trying {}", n.name))
                        .unwrap_or_default();
                    self.ctx
                        .event(
                            self.cluster,
                            true,
                            "InsufficientCapacity",
                            &format!("CreateMachines/{pool}"),
                            format!("pool {pool}: {} has no capacity ({message}){next}", t.name),
                        )
                        .await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let tried: Vec<&str> = candidates.iter().map(|t| t.name.as_str()).collect();
        self.waiting.push(format!(
            "pool {pool}: no capacity for any matching type ({}); retrying",
            tried.join(", ")
        ));
        Ok(None)
    }

    /// Runs one pool's plan on the machines listed for it; returns the pool's status and
    /// its running machines.
    async fn apply_pool(
        &mut self,
        pool: &NodePool,
        actions: PoolActions,
        mut machines: Vec<Machine>,
        join: Option<&Join>,
    ) -> Result<(NodePoolStatus, Vec<Machine>)> {
        let mut kept: Vec<String> = Vec::new();
        for d in &actions.deletes {
            let (reason, why) = (d.reason.event_reason(), d.reason.why());
            let mut ids = d.ids.clone();
            if matches!(d.reason, plan::DeleteReason::Idle { .. }) {
                // Cordoned and drained first; a machine whose drain is not done yet
                // stays until the next reconcile.
                ids = self.drained(&ids).await;
                kept.extend(d.ids.iter().filter(|id| !ids.contains(id)).cloned());
            }
            if !ids.is_empty() {
                self.delete_machines(&pool.name, &ids, reason, &why).await?;
            }
        }
        if !kept.is_empty() {
            self.unsettled.push(Unsettled::Draining {
                pool: pool.name.clone(),
            });
        }
        let gone: std::collections::HashSet<&String> =
            actions.deleted().filter(|id| !kept.contains(id)).collect();
        // A scale-down that will not happen (demand came back, or a crash or restart
        // came in between): kelp takes its cordon back.
        if pool.autoscaling.is_some() {
            let leaving: Vec<&String> = actions.deleted().collect();
            let stay: Vec<String> = machines
                .iter()
                .filter(|m| !leaving.contains(&&m.id))
                .filter_map(|m| {
                    let u = self.usage.get(&m.id)?;
                    u.cordoned.then(|| u.node.clone()).flatten()
                })
                .collect();
            if !stay.is_empty()
                && let Ok(target) = self
                    .ctx
                    .targets
                    .client(&self.ctx.client, &self.ctx.secrets, self.cluster)
                    .await
            {
                for node in stay {
                    if let Err(e) = demand::cordon(&target, &node, false).await {
                        tracing::info!(node = %node, error = %e, "uncordoning; retried at the next reconcile");
                    }
                }
            }
        }
        machines.retain(|m| !gone.contains(&m.id));
        for p in &actions.held {
            // Extra machines younger than the grace period: the cloud may still be
            // catching up; they go (newest first) once it has passed.
            self.unsettled
                .push(Unsettled::HeldExtras { pool: p.clone() });
        }
        self.rolling.extend(actions.rolling.clone());
        let mut started = false;
        if let Some(join) = join {
            for c in &actions.creates {
                let role = match c.role {
                    Role::Server => kelp_recipes::NodeRole::Server,
                    Role::Agent => kelp_recipes::NodeRole::Agent,
                };
                let Some(ud) = self.node_user_data(Some(pool), role, join)? else {
                    continue;
                };
                let owner = Owner {
                    role: c.role,
                    ..plan::owner(&self.uid, Some(&pool.name))
                };
                if let Some((_, created)) = self
                    .create_batch(
                        &c.batch_pool,
                        &actions.candidates,
                        c.count,
                        c.alive,
                        ud,
                        owner,
                        pool.image.clone(),
                        plan::requirements(pool).disk_gb,
                    )
                    .await?
                {
                    machines.extend(created);
                    started = true;
                }
            }
        }
        if started {
            self.created = true;
            self.relist(&pool.name, &mut machines).await;
        }
        let st = status::pool(pool, &actions, &machines, &self.types);
        if machines.iter().any(|m| m.state != MachineState::Running) {
            self.unsettled.push(Unsettled::NotRunning {
                pool: pool.name.clone(),
            });
        }
        let running = machines
            .into_iter()
            .filter(|m| m.state == MachineState::Running)
            .collect();
        Ok((st, running))
    }

    /// The machines of `ids` whose Nodes are cordoned and drained (or that never joined):
    /// those may go now.
    async fn drained(&self, ids: &[String]) -> Vec<String> {
        let target = self
            .ctx
            .targets
            .client(&self.ctx.client, &self.ctx.secrets, self.cluster)
            .await;
        let mut out = Vec::new();
        for id in ids {
            let node = self.usage.get(id).and_then(|u| u.node.clone());
            let done = match (&node, &target) {
                (None, _) => true,
                (Some(n), Ok(t)) => match demand::drain(t, n).await {
                    Ok(demand::Drain::Done) => true,
                    Ok(demand::Drain::Evicting) => false,
                    Ok(demand::Drain::Busy) => {
                        tracing::info!(node = %n, "a kelp workload Pod landed on the Node before the cordon; the machine stays");
                        false
                    }
                    Err(e) => {
                        tracing::info!(node = %n, error = %e, "draining; retried at the next reconcile");
                        false
                    }
                },
                (Some(_), Err(_)) => false,
            };
            if done {
                out.push(id.clone());
            }
        }
        out
    }

    /// Deletes machines in this Cluster's cloud account that kelp tagged for a Cluster that
    /// no longer exists, once they have been orphans for `orphan_grace`. At most once per
    /// `orphan_sweep_interval` per Cluster.
    async fn sweep_orphans(&mut self) -> Result<()> {
        let cfg = &self.ctx.config;
        {
            let mut o = self.ctx.orphans.lock().unwrap();
            let now = std::time::Instant::now();
            if o.last_sweep
                .get(&self.uid)
                .is_some_and(|t| now.duration_since(*t) < cfg.orphan_sweep_interval)
            {
                if o.waiting.contains(&self.uid) {
                    self.unsettled.push(Unsettled::OrphansWaiting);
                }
                return Ok(());
            }
            o.last_sweep.insert(self.uid.clone(), now);
        }
        let machines = self
            .driver
            .list(&kelp_cloud_drivers::kelp_selector())
            .await?;
        // Each with the UID of the Cluster it was made for.
        let foreign: Vec<(String, Machine)> = machines
            .into_iter()
            .filter_map(|m| Some((m.owner()?.cluster_uid, m)))
            .filter(|(uid, _)| *uid != self.uid)
            .collect();
        if foreign.is_empty() {
            self.ctx.orphans.lock().unwrap().waiting.remove(&self.uid);
            return Ok(());
        }
        let clusters: Api<Cluster> = Api::all(self.ctx.client.clone());
        let live: std::collections::HashSet<String> = clusters
            .list(&Default::default())
            .await?
            .items
            .iter()
            .filter_map(|c| c.uid())
            .collect();
        let now = std::time::Instant::now();
        let mut due = Vec::new();
        let mut orphans = 0;
        {
            let mut o = self.ctx.orphans.lock().unwrap();
            for (owner, m) in &foreign {
                if live.contains(owner) {
                    o.first_seen.remove(&m.id);
                    continue;
                }
                orphans += 1;
                let seen = *o.first_seen.entry(m.id.clone()).or_insert(now);
                if now.duration_since(seen) >= cfg.orphan_grace {
                    due.push((owner.clone(), m.clone()));
                }
            }
        }
        let waiting = due.len() < orphans;
        {
            let mut o = self.ctx.orphans.lock().unwrap();
            if waiting {
                o.waiting.insert(self.uid.clone());
            } else {
                o.waiting.remove(&self.uid);
            }
        }
        if waiting {
            // Look again until the last orphan's grace ends.
            self.unsettled.push(Unsettled::OrphansWaiting);
        }
        if due.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = due.iter().map(|(_, m)| m.id.clone()).collect();
        self.driver.delete(&ids).await?;
        self.ctx.metrics.orphans_deleted(ids.len() as u64);
        let owners: std::collections::BTreeSet<&str> =
            due.iter().map(|(uid, _)| uid.as_str()).collect();
        self.ctx
            .event(
                self.cluster,
                true,
                "OrphansDeleted",
                "SweepOrphans",
                format!(
                    "deleted {} machine(s) tagged for Cluster UID(s) {} that no longer exist: {}",
                    ids.len(),
                    owners.into_iter().collect::<Vec<_>>().join(", "),
                    ids.join(", ")
                ),
            )
            .await;
        let mut o = self.ctx.orphans.lock().unwrap();
        for id in &ids {
            o.first_seen.remove(id);
        }
        Ok(())
    }

    /// Readiness from the cluster's Nodes; the sim registers them first, as k3s agents would.
    async fn nodes(
        &mut self,
        running: &[(String, Machine)],
        pools: &mut [NodePoolStatus],
    ) -> Result<bool> {
        let target = match self
            .ctx
            .targets
            .client(&self.ctx.client, &self.ctx.secrets, self.cluster)
            .await
        {
            Ok(c) => c,
            Err(_) => return Ok(false),
        };
        if let Some(sim) = self.sim.clone() {
            let nodes: Vec<SimNode> = running
                .iter()
                .map(|(pool_name, m)| {
                    let pool = self
                        .cluster
                        .spec
                        .node_pools
                        .iter()
                        .find(|p| &p.name == pool_name);
                    let t = self.types.iter().find(|t| t.name == m.instance_type);
                    SimNode {
                        name: m.name.clone(),
                        provider_id: m.provider_id.clone(),
                        pool: pool_name.clone(),
                        labels: pool.map(|p| p.labels.clone()).unwrap_or_default(),
                        taints: pool
                            .map(|p| {
                                p.taints
                                    .iter()
                                    .map(|t| {
                                        (t.key.clone(), t.value.clone(), format!("{:?}", t.effect))
                                    })
                                    .collect()
                            })
                            .unwrap_or_default(),
                        cpu: t.map_or(1, |t| t.vcpus),
                        memory_mb: t.map_or(1024, |t| t.memory_mb),
                        gpu: t.map_or(0, |t| t.gpu_count()),
                        internal_ip: address(m, "InternalIP"),
                    }
                })
                .collect();
            sim.sync_nodes(&target, &self.uid, &nodes).await?;
        }
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(target);
        // Only this Cluster's Nodes: an existing cluster may have many others.
        let selector = format!("{}={}", crate::simulated::NODE_CLUSTER_LABEL, self.uid);
        let list = match nodes
            .list(&kube::api::ListParams::default().labels(&selector))
            .await
        {
            Ok(l) => l.items,
            Err(e) => {
                tracing::debug!(error = %e, "listing nodes");
                return Ok(false);
            }
        };
        let ready: Vec<&k8s_openapi::api::core::v1::Node> =
            list.iter().filter(|n| node_ready(n)).collect();
        let ready_ids: std::collections::HashSet<String> = ready
            .iter()
            .filter_map(|n| n.spec.as_ref().and_then(|s| s.provider_id.clone()))
            .collect();
        // k3s without a cloud provider names its Nodes `k3s://<hostname>`: those are
        // matched to machines by their internal address instead.
        let ready_ips: std::collections::HashSet<String> = ready
            .iter()
            .filter_map(|n| n.status.as_ref().and_then(|s| s.addresses.as_ref()))
            .flatten()
            .filter(|a| a.type_ == "InternalIP")
            .map(|a| a.address.clone())
            .collect();
        let is_ready = |m: &Machine| {
            ready_ids.contains(&m.provider_id)
                || m.addresses
                    .iter()
                    .any(|a| a.kind == "InternalIP" && ready_ips.contains(&a.address))
        };
        for p in pools.iter_mut() {
            p.ready = running
                .iter()
                .filter(|(pool, m)| pool == &p.name && is_ready(m))
                .count() as i32;
        }
        Ok(true)
    }
}

/// Whether a Node's Ready condition is True.
pub fn node_ready(n: &k8s_openapi::api::core::v1::Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn address(m: &Machine, kind: &str) -> Option<String> {
    m.addresses
        .iter()
        .find(|a| a.kind == kind)
        .map(|a| a.address.clone())
}

/// What the Cluster runs, for the machine and price gauges.
fn footprint(status: &ClusterStatus) -> crate::metrics::ClusterFootprint {
    let mut f = crate::metrics::ClusterFootprint {
        driver: status.cloud.clone().unwrap_or_default(),
        ..Default::default()
    };
    for pool in &status.node_pools {
        for m in &pool.machines {
            let state = m.state.clone().unwrap_or_else(|| "Unknown".into());
            *f.machines.entry(state).or_default() += 1;
        }
        f.price_per_hour += pool.price_per_hour.unwrap_or_default() * pool.machines.len() as f64;
    }
    f
}

async fn write_status(ctx: &Ctx, cluster: &Cluster, mut status: ClusterStatus) -> Result<()> {
    conditions::ensure_ready(&mut status.conditions, status.observed_generation);
    ctx.metrics
        .cluster_footprint(&cluster.uid().unwrap_or_default(), Some(footprint(&status)));
    if cluster.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let old = cluster
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let became_ready = conditions::became_true(&old, &status.conditions, ct::READY);
    let note = format!(
        "all {} machines are ready",
        status.ready.as_deref().unwrap_or_default()
    );
    let degraded = status.phase == Some(ClusterPhase::Degraded)
        && cluster.status.as_ref().and_then(|s| s.phase) != Some(ClusterPhase::Degraded);
    crate::context::apply_status(ctx, cluster, &status).await?;
    if became_ready {
        ctx.event(cluster, false, "Ready", "Reconcile", note).await;
    }
    if degraded {
        let why = conditions::get(&status.conditions, ct::READY)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        ctx.event(
            cluster,
            true,
            "Degraded",
            "Reconcile",
            format!("no longer ready: {why}"),
        )
        .await;
    }
    Ok(())
}

/// Deletes every machine tagged for the Cluster; the finalizer goes only when the cloud
/// lists none. `deletionPolicy: Retain` leaves them, with an Event.
async fn cleanup(cluster: Arc<Cluster>, ctx: Ctx) -> Result<Action> {
    let uid = cluster.uid().unwrap_or_default();
    let tags = plan::owner(&uid, None).tags();
    if cluster.spec.deletion_policy == kelp_crds::DeletionPolicy::Retain {
        let count = match ctx.drivers.for_cluster(&ctx.client, &cluster).await {
            Ok(d) => d.list(&tags).await.map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        };
        ctx.event(cluster.as_ref(), false, "Retained", "Delete", format!("deletionPolicy is Retain: {count} machine(s) left running in the cloud, tagged {}={uid}", tags::CLUSTER_UID)).await;
    } else {
        let listed = match ctx.drivers.for_cluster(&ctx.client, &cluster).await {
            Ok(driver) => driver
                .list(&tags)
                .await
                .map(|m| (driver, m))
                .map_err(Error::Cloud),
            Err(e) => Err(e),
        };
        let (driver, machines) = match listed {
            Ok(x) => x,
            // A Cluster whose status never recorded a machine, a pending create or an
            // API endpoint made nothing in the cloud (every create is recorded before
            // it is sent). When its cloud cannot be used (credentials refused or missing,
            // no such region or site), or has never answered, it may go without asking.
            Err(e)
                if never_created(&cluster) && (!e.is_transient() || !cloud_answered(&cluster)) =>
            {
                ctx.event(cluster.as_ref(), true, "DeletedWithoutCloud", "Delete", format!("the cloud cannot be used ({e}); this Cluster never created a machine, so it is deleted without asking the cloud")).await;
                return finish_cleanup(&cluster, &ctx).await;
            }
            Err(e) => return Err(e),
        };
        if !machines.is_empty() {
            let ids: Vec<String> = machines
                .iter()
                .filter(|m| m.state != MachineState::Terminating)
                .map(|m| m.id.clone())
                .collect();
            if !ids.is_empty() {
                driver.delete(&ids).await?;
                ctx.event(
                    cluster.as_ref(),
                    false,
                    "MachinesDeleted",
                    "Delete",
                    format!("deleting {} machine(s) with the Cluster", ids.len()),
                )
                .await;
            }
            let mut status = cluster.status.clone().unwrap_or_default();
            status.phase = Some(ClusterPhase::Deleting);
            let _ = write_status(&ctx, &cluster, status).await;
            return Err(Error::Waiting(format!(
                "{} machine(s) still terminating",
                machines.len()
            )));
        }
        // Security groups, floating IPs: what the driver made besides machines.
        driver.release(&tags).await?;
    }
    finish_cleanup(&cluster, &ctx).await
}

/// Whether the Cluster's status records no machine in its pools, no pending create and
/// no API endpoint (a control-plane machine shows as the Cluster's `apiEndpoint`).
fn never_created(cluster: &Cluster) -> bool {
    cluster.status.as_ref().is_none_or(|s| {
        s.node_pools.iter().all(|p| p.machines.is_empty())
            && s.control_plane_machines.is_empty()
            && s.pending_creates.is_empty()
            && s.api_endpoint.is_none()
    })
}

/// Whether the cloud answered the last time kelp asked (CloudReachable is True).
fn cloud_answered(cluster: &Cluster) -> bool {
    cluster
        .status
        .as_ref()
        .is_some_and(|s| conditions::is_true(&s.conditions, ct::CLOUD_REACHABLE))
}

/// What goes with a Cluster once its machines are gone: its Secrets, its simulated
/// control plane, the cached driver.
async fn finish_cleanup(cluster: &Cluster, ctx: &Ctx) -> Result<Action> {
    let uid = cluster.uid().unwrap_or_default();
    let ns = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    // Owned Secrets: no garbage collector is assumed.
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    for s in [format!("{name}-kubeconfig"), format!("{name}-kelp-pki")] {
        match secrets.delete(&s, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(sim) = &ctx.sim_kube {
        sim.stop_control_plane(&uid).await;
    }
    ctx.drivers.forget(&uid);
    ctx.remember_pending(&uid, &[]);
    ctx.metrics.cluster_footprint(&uid, None);
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_status(status: &str) -> Cluster {
        let mut c: Cluster = serde_yaml_ng::from_str(
            "apiVersion: kelp.imagine-ai.eu/v1alpha1\nkind: Cluster\nmetadata: {name: c, namespace: ns, uid: u}\nspec: {cloud: {sim: {}}, nodePools: []}",
        )
        .unwrap();
        c.status = serde_yaml_ng::from_str(status).unwrap();
        c
    }

    #[test]
    fn a_cluster_with_any_machine_on_record_is_not_deleted_without_the_cloud() {
        assert!(never_created(&with_status("null")));
        assert!(never_created(&with_status("{nodePools: [{name: gpu}]}")));
        for made in [
            "{nodePools: [{name: gpu, machines: [{name: a}]}]}",
            "{controlPlaneMachines: [{name: cp, state: pending}]}",
            "{pendingCreates: [{key: k, pool: gpu, count: 1, instanceType: t, requestedAt: x}]}",
            "{apiEndpoint: 'https://192.0.2.1:6443'}",
        ] {
            assert!(!never_created(&with_status(made)), "{made}");
        }
    }
}
