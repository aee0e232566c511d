//! The operator's Prometheus metrics (OpenMetrics text at `/metrics` on the health port),
//! named as controller-runtime and Karpenter name theirs so their dashboards and alerts
//! carry over. No label holds an object's name or UID: the series stay bounded however
//! many Clusters and Deployments there are.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kelp_cloud_drivers::CloudError;
use kelp_cloud_drivers::metered::CallObserver;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    controller: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    controller: String,
    error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloudLabels {
    driver: String,
    verb: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloudVerbLabels {
    driver: String,
    verb: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MachineLabels {
    driver: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DriverLabels {
    driver: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LeaseLabels {
    lease: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

/// What one Cluster contributes to the machine and price gauges.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterFootprint {
    /// Its cloud: `sim`, `ec2`, `openstack` or `egi`.
    pub driver: String,
    /// Machines by state (`Pending`, `Running`, ...).
    pub machines: HashMap<String, i64>,
    /// The price per hour of all its machines, where known.
    pub price_per_hour: f64,
}

fn latency_histogram() -> Histogram {
    // 5 ms to about 82 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// Every metric kelp exports, and the counters tests and benchmarks read directly.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    durations: Family<ControllerLabels, Histogram, fn() -> Histogram>,
    cloud_requests: Family<CloudLabels, Counter>,
    cloud_durations: Family<CloudVerbLabels, Histogram, fn() -> Histogram>,
    machines: Family<MachineLabels, Gauge>,
    price: Family<DriverLabels, Gauge<f64, AtomicU64>>,
    orphans: Counter,
    leader: Family<LeaseLabels, Gauge>,
    footprints: Mutex<HashMap<String, ClusterFootprint>>,
    /// Reconciles of every controller (tests and benchmarks).
    pub reconcile_count: AtomicU64,
    /// Reconciles by controller, and the seconds they took together (tests and
    /// benchmarks).
    pub reconciles_by_controller: Mutex<HashMap<String, (u64, f64)>>,
    /// Failed reconciles by error label (tests and benchmarks).
    pub failures: Mutex<HashMap<&'static str, u64>>,
    /// Machines deleted because their Cluster no longer exists.
    pub orphans_deleted: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register(
            "kelp_reconcile",
            "Reconciles per controller, by result (success or error)",
            reconciles.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "kelp_reconcile_errors",
            "Failed reconciles per controller, by kelp's stable error label",
            errors.clone(),
        );
        let durations: Family<ControllerLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "kelp_reconcile_duration_seconds",
            "How long reconciles take, per controller",
            durations.clone(),
        );
        let cloud_requests = Family::<CloudLabels, Counter>::default();
        registry.register(
            "kelp_cloud_requests",
            "Calls of the cloud drivers, by driver, verb and result (success or the error label)",
            cloud_requests.clone(),
        );
        let cloud_durations: Family<CloudVerbLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "kelp_cloud_request_duration_seconds",
            "How long cloud driver calls take, by driver and verb",
            cloud_durations.clone(),
        );
        let machines = Family::<MachineLabels, Gauge>::default();
        registry.register(
            "kelp_machines",
            "Machines of all Clusters, by cloud driver and state",
            machines.clone(),
        );
        let price = Family::<DriverLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "kelp_pool_price_per_hour",
            "Estimated on-demand price per hour of all node pools, by cloud driver",
            price.clone(),
        );
        let orphans = Counter::default();
        registry.register(
            "kelp_orphans_deleted",
            "Machines deleted because the Cluster that tagged them no longer exists",
            orphans.clone(),
        );
        let leader = Family::<LeaseLabels, Gauge>::default();
        registry.register(
            "kelp_leader",
            "1 while this replica holds the leader Lease (and runs the controllers)",
            leader.clone(),
        );
        registry.register(
            "kelp_build",
            "The running kelp's version",
            Info::new(VersionLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
            }),
        );
        Self {
            registry,
            reconciles,
            errors,
            durations,
            cloud_requests,
            cloud_durations,
            machines,
            price,
            orphans,
            leader,
            footprints: Mutex::default(),
            reconcile_count: AtomicU64::new(0),
            reconciles_by_controller: Mutex::default(),
            failures: Mutex::default(),
            orphans_deleted: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// One finished reconcile of `controller`: its result and, when it failed, the
    /// error's label.
    pub fn reconciled(&self, controller: &str, took: Duration, error: Option<&'static str>) {
        self.reconcile_count.fetch_add(1, Ordering::Relaxed);
        {
            let mut by = self.reconciles_by_controller.lock().unwrap();
            let (n, secs) = by.entry(controller.to_string()).or_default();
            *n += 1;
            *secs += took.as_secs_f64();
        }
        let result = if error.is_some() { "error" } else { "success" };
        self.reconciles
            .get_or_create(&ResultLabels {
                controller: controller.into(),
                result: result.into(),
            })
            .inc();
        self.durations
            .get_or_create(&ControllerLabels {
                controller: controller.into(),
            })
            .observe(took.as_secs_f64());
        if let Some(label) = error {
            *self.failures.lock().unwrap().entry(label).or_default() += 1;
            self.errors
                .get_or_create(&ErrorLabels {
                    controller: controller.into(),
                    error: label.into(),
                })
                .inc();
        }
    }

    pub fn reconcile_count(&self) -> u64 {
        self.reconcile_count.load(Ordering::Relaxed)
    }

    pub fn orphans_deleted(&self, n: u64) {
        self.orphans_deleted.fetch_add(n, Ordering::Relaxed);
        self.orphans.inc_by(n);
    }

    /// Whether this replica leads (holds `lease`).
    pub fn set_leader(&self, lease: &str, leading: bool) {
        self.leader
            .get_or_create(&LeaseLabels {
                lease: lease.into(),
            })
            .set(i64::from(leading));
    }

    /// What the Cluster `uid` runs now (None: it is gone); the machine and price gauges
    /// are the sums over all Clusters.
    pub fn cluster_footprint(&self, uid: &str, footprint: Option<ClusterFootprint>) {
        let mut all = self.footprints.lock().unwrap();
        let changed = match footprint {
            Some(f) => all.insert(uid.to_string(), f.clone()).as_ref() != Some(&f),
            None => all.remove(uid).is_some(),
        };
        if !changed {
            return;
        }
        let mut machines: HashMap<(String, String), i64> = HashMap::new();
        let mut prices: HashMap<String, f64> = HashMap::new();
        for f in all.values() {
            for (state, n) in &f.machines {
                *machines
                    .entry((f.driver.clone(), state.clone()))
                    .or_default() += n;
            }
            *prices.entry(f.driver.clone()).or_default() += f.price_per_hour;
        }
        // Series of drivers or states no Cluster has any more go away.
        self.machines.clear();
        for ((driver, state), n) in machines {
            self.machines
                .get_or_create(&MachineLabels { driver, state })
                .set(n);
        }
        self.price.clear();
        for (driver, p) in prices {
            self.price.get_or_create(&DriverLabels { driver }).set(p);
        }
    }

    /// The exposition for a scraper that sent `accept`: OpenMetrics text when it asks for
    /// it (Prometheus does), else the classic Prometheus text format (curl, promtool).
    pub fn exposition(&self, accept: &str) -> (&'static str, String) {
        let text = self.encode();
        if accept.contains("application/openmetrics-text") {
            (
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text,
            )
        } else {
            (
                "text/plain; version=0.0.4; charset=utf-8",
                classic_text(&text),
            )
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// OpenMetrics text as the classic Prometheus text format: counter families are named
/// with their `_total` samples, info metrics are gauges named `_info`, and the `# UNIT`
/// and `# EOF` lines go.
pub fn classic_text(openmetrics: &str) -> String {
    let mut types: HashMap<&str, &str> = HashMap::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, kind)) = rest.split_once(' ')
        {
            types.insert(name, kind);
        }
    }
    let rename = |name: &str| -> String {
        match types.get(name) {
            Some(&"counter") => format!("{name}_total"),
            Some(&"info") => format!("{name}_info"),
            _ => name.to_string(),
        }
    };
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let kind = if kind == "info" { "gauge" } else { kind };
            out.push_str(&format!("# TYPE {} {kind}\n", rename(name)));
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push_str(&format!("# HELP {} {help}\n", rename(name)));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

impl CallObserver for Metrics {
    fn observe(&self, driver: &str, verb: &str, latency: Duration, error: Option<&CloudError>) {
        self.cloud_requests
            .get_or_create(&CloudLabels {
                driver: driver.into(),
                verb: verb.into(),
                result: error.map_or("success", |e| e.label()).into(),
            })
            .inc();
        self.cloud_durations
            .get_or_create(&CloudVerbLabels {
                driver: driver.into(),
                verb: verb.into(),
            })
            .observe(latency.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_the_documented_names_and_no_object_names() {
        let m = Metrics::default();
        m.reconciled("cluster", Duration::from_millis(12), None);
        m.reconciled("deployment", Duration::from_millis(3), Some("Forbidden"));
        m.observe("ec2", "create", Duration::from_millis(40), None);
        m.observe(
            "ec2",
            "list",
            Duration::from_millis(4),
            Some(&CloudError::Throttled {
                message: "slow down".into(),
                retry_after: None,
            }),
        );
        m.orphans_deleted(2);
        m.set_leader("kelp-operator", true);
        m.cluster_footprint(
            "uid-1",
            Some(ClusterFootprint {
                driver: "sim".into(),
                machines: [("Running".to_string(), 3)].into(),
                price_per_hour: 1.5,
            }),
        );
        let text = m.encode();
        for line in [
            "kelp_reconcile_total{controller=\"cluster\",result=\"success\"} 1",
            "kelp_reconcile_total{controller=\"deployment\",result=\"error\"} 1",
            "kelp_reconcile_errors_total{controller=\"deployment\",error=\"Forbidden\"} 1",
            "kelp_reconcile_duration_seconds_count{controller=\"cluster\"} 1",
            "kelp_cloud_requests_total{driver=\"ec2\",verb=\"create\",result=\"success\"} 1",
            "kelp_cloud_requests_total{driver=\"ec2\",verb=\"list\",result=\"Throttled\"} 1",
            "kelp_cloud_request_duration_seconds_count{driver=\"ec2\",verb=\"list\"} 1",
            "kelp_machines{driver=\"sim\",state=\"Running\"} 3",
            "kelp_pool_price_per_hour{driver=\"sim\"} 1.5",
            "kelp_orphans_deleted_total 2",
            "kelp_leader{lease=\"kelp-operator\"} 1",
            "kelp_build_info{version=\"",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
        let classic = classic_text(&text);
        assert!(
            classic.contains("# TYPE kelp_reconcile_total counter\n"),
            "{classic}"
        );
        assert!(
            classic.contains("# TYPE kelp_build_info gauge\n"),
            "{classic}"
        );
        assert!(!classic.contains("# EOF"));
        // The Cluster goes: its machines go from the gauges.
        m.cluster_footprint("uid-1", None);
        assert!(!m.encode().contains("state=\"Running\"} 3"));
    }
}
