//! kelp's operator: the controllers for Module, Cluster and Deployment, and what wires
//! them to a Kubernetes API server and the clouds.
#![forbid(unsafe_code)]

pub mod cli;
pub mod cluster;
pub mod conditions;
pub mod console;
pub mod context;
pub mod deployment;
pub mod dev;
pub mod drivers;
pub mod events;
pub mod health;
pub mod leader;
pub mod metrics;
pub mod module;
pub mod pki;
pub mod recipes;
pub mod secrets;
#[cfg(feature = "dev")]
pub mod sim_kube;
pub mod simulated;
pub mod targets;
pub mod tosca;

use std::sync::Arc;

use context::{Config, Context};
use drivers::{Drivers, SimClouds};
use kube::Client;

/// What an operator run needs besides a client: the simulated clouds and control planes
/// (shared with tests so a restarted operator sees the same sim cloud).
#[derive(Clone)]
pub struct Environment {
    pub sims: Arc<SimClouds>,
    /// The Kubernetes side of the sim cloud: none in a build without the `dev` feature.
    pub sim_kube: Option<Arc<dyn simulated::SimKubernetes>>,
    pub config: Config,
    /// What the probes report; `kelp run` serves it on `--health-address`.
    pub health: Arc<health::Health>,
    /// The metrics, served with the probes at `/metrics`.
    pub metrics: Arc<metrics::Metrics>,
}

impl Default for Environment {
    fn default() -> Self {
        Self {
            sims: SimClouds::new(kelp_cloud_drivers::sim::SimConfig::default()),
            sim_kube: simulated::builtin(),
            config: Config::default(),
            health: Arc::default(),
            metrics: Arc::default(),
        }
    }
}

/// How long a shutdown waits for the reconciles in flight.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs the three controllers against `client` until `shutdown` resolves, then returns
/// after in-flight reconciles finish. Returns the Context (its metrics) for callers.
pub async fn run(
    client: Client,
    env: Environment,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Arc<Context> {
    let namespace = env.config.namespace.clone();
    let endpoints = env.config.openstack_endpoints.clone();
    let sites_url = env.config.egi_sites_url.clone();
    let mut ctx = Context::new(
        client,
        env.config,
        Drivers::new(env.sims, namespace)
            .with_openstack_endpoints(endpoints)
            .with_egi_sites_url(sites_url),
        env.sim_kube,
    );
    ctx.health = env.health;
    ctx.drivers.stats.set_observer(env.metrics.clone());
    ctx.metrics = env.metrics;
    let ctx = Arc::new(ctx);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let signal = move || {
        let mut rx = rx.clone();
        async move {
            let _ = rx.wait_for(|v| *v).await;
        }
    };
    let recipe_watch = tokio::spawn(recipes::watch_configmaps(
        ctx.clone(),
        ctx.client.clone(),
        ctx.config.namespace.clone(),
    ));
    let secret_watch = tokio::spawn(secrets::watch(ctx.clone()));
    let controllers = futures::future::join3(
        module::run(ctx.clone(), signal()),
        cluster::run(ctx.clone(), signal()),
        deployment::run(ctx.clone(), signal()),
    );
    tokio::pin!(controllers);
    tokio::select! {
        _ = &mut controllers => {
            ctx.health.fail("the controllers stopped without being asked to");
        }
        _ = shutdown => {
            let _ = tx.send(true);
            // Before its cache is in, a controller has run no reconcile, and kube-runtime's
            // graceful shutdown would wait for a list it no longer reads: stop at once.
            // Otherwise let the reconciles in flight finish, for a while; past that, stop
            // them as a crash would (every reconcile is crash-safe).
            if !ctx.health.waiting().is_empty() {
                tracing::info!("stopping before the first full list; no reconcile ran");
            } else if tokio::time::timeout(SHUTDOWN_GRACE, &mut controllers).await.is_err() {
                tracing::warn!(
                    seconds = SHUTDOWN_GRACE.as_secs(),
                    "reconciles still running at shutdown; stopped"
                );
            }
        }
    }
    recipe_watch.abort();
    secret_watch.abort();
    ctx
}
