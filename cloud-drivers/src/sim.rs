//! `sim`: a simulated cloud for development and tests. It is not a real cloud and
//! starts nothing: machines are records in memory.
//!
//! It behaves like the real clouds where the operator must cope: every call takes
//! `latency`; calls fail at configurable rates (before or after their side effect,
//! as a timed-out RunInstances that did start machines); capacity per GPU model runs
//! out all-or-nothing as with EC2 `MinCount = MaxCount`; quotas; idempotency keys
//! like EC2 ClientTokens; machines are Pending for `boot_delay`, then Running, and
//! linger as Terminating for `terminate_delay` after a delete. States follow from
//! timestamps when read: there are no background tasks.
//!
//! The state lives in a [`SimCloud`] shared as `Arc`, so a test can restart the
//! operator (drop its drivers, make new ones with [`SimCloud::driver`]) and the cloud
//! keeps its machines. The cloud counts its own calls ([`SimCloud::stats`]) so tests
//! can assert that no machine was created twice and that calls stayed bounded.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::driver::{
    Address, CloudDriver, CloudError, CreateRequest, GpuInfo, Image, InstanceType, Machine,
    MachineState,
};
use crate::metered::{CallStats, verbs};
use crate::select::model_matches;

/// The driver name of the simulated cloud.
pub const DRIVER_NAME: &str = "sim";

/// The capacity key that covers every CPU-only instance type.
pub const CPU_CAPACITY_KEY: &str = "cpu";

/// How the simulated cloud behaves. Change it at run time with the [`SimCloud`]
/// setters or [`SimCloud::update_config`].
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// How long every call takes.
    pub latency: Duration,
    /// How long a new machine stays Pending before it is Running.
    pub boot_delay: Duration,
    /// How long a deleted machine is still listed as Terminating.
    pub terminate_delay: Duration,
    /// Probability in [0, 1] that a call fails before doing anything (all verbs).
    pub failure_rate: f64,
    /// Per verb (see [`verbs`]) overrides of `failure_rate`.
    pub verb_failure_rates: BTreeMap<String, f64>,
    /// Per verb probability that a call does its work and then reports
    /// `Transient` anyway (a timeout after the cloud acted).
    pub verb_failure_after_effect: BTreeMap<String, f64>,
    /// Machines alive at once, by GPU model (`T4` also covers `T4-16GB`, ignoring
    /// case), by instance type name, or `cpu` for all CPU-only types. Keys not given
    /// are unlimited.
    pub capacity: BTreeMap<String, u32>,
    /// Machines alive at once in the account.
    pub quota_machines: Option<u32>,
    /// vCPUs alive at once in the account.
    pub quota_vcpus: Option<u32>,
    /// Instance types whose creates always answer InsufficientCapacity.
    pub insufficient: BTreeSet<String>,
    /// Seed of the random numbers (failures, IDs, names): same seed, same run.
    pub seed: u64,
    /// The catalogue; [`catalogue`] by default.
    pub instance_types: Vec<InstanceType>,
    /// How long a new machine is missing from lists (EC2's eventual consistency:
    /// DescribeInstances does not show an instance for a while after RunInstances).
    pub list_lag: Duration,
    /// Creates ignore the idempotency key, as an EC2-compatible endpoint that drops
    /// `ClientToken` does, and as Nova, which has none.
    pub ignore_idempotency: bool,
}

impl Default for SimConfig {
    /// Latencies of a pleasant local environment; no faults, no limits.
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(20),
            boot_delay: Duration::from_secs(2),
            terminate_delay: Duration::from_secs(1),
            failure_rate: 0.0,
            verb_failure_rates: BTreeMap::new(),
            verb_failure_after_effect: BTreeMap::new(),
            capacity: BTreeMap::new(),
            quota_machines: None,
            quota_vcpus: None,
            insufficient: BTreeSet::new(),
            seed: 0x6b65_6c70, // "kelp"
            instance_types: catalogue(),
            list_lag: Duration::ZERO,
            ignore_idempotency: false,
        }
    }
}

impl SimConfig {
    /// Short delays for tests: 1 ms calls, 20 ms boots, 10 ms terminations.
    pub fn fast() -> Self {
        Self {
            latency: Duration::from_millis(1),
            boot_delay: Duration::from_millis(20),
            terminate_delay: Duration::from_millis(10),
            ..Self::default()
        }
    }
}

/// A config from the Cluster API fields `spec.cloud.sim {latencyMs, failureRate,
/// capacity}` (capacity: machines available per GPU model, e.g. `{T4: 8}`); the rest
/// keeps [`SimConfig::default`]. A failure rate outside [0, 1] is clamped.
pub fn sim_config_from(
    latency_ms: u64,
    failure_rate: f64,
    capacity: BTreeMap<String, u32>,
) -> SimConfig {
    SimConfig {
        latency: Duration::from_millis(latency_ms),
        failure_rate: clamp_rate(failure_rate),
        capacity,
        ..SimConfig::default()
    }
}

fn clamp_rate(rate: f64) -> f64 {
    if rate.is_nan() {
        0.0
    } else {
        rate.clamp(0.0, 1.0)
    }
}

/// The simulated catalogue, with on-demand prices close to public clouds' (USD/h).
pub fn catalogue() -> Vec<InstanceType> {
    fn cpu(name: &str, vcpus: u32, memory_gb: u64, price: f64) -> InstanceType {
        InstanceType {
            name: name.to_string(),
            vcpus,
            memory_mb: memory_gb * 1024,
            disk_gb: None,
            gpu: None,
            price_per_hour: Some(price),
        }
    }
    fn gpu(
        name: &str,
        vcpus: u32,
        memory_gb: u64,
        n: u32,
        model: &str,
        gpu_mb: u64,
        price: f64,
    ) -> InstanceType {
        InstanceType {
            gpu: Some(GpuInfo {
                count: n,
                vendor: "NVIDIA".to_string(),
                model: model.to_string(),
                memory_mb: gpu_mb,
            }),
            ..cpu(name, vcpus, memory_gb, price)
        }
    }
    vec![
        cpu("sim.cpu-2", 2, 4, 0.05),
        cpu("sim.cpu-4", 4, 8, 0.10),
        cpu("sim.cpu-8", 8, 32, 0.38),
        cpu("sim.cpu-16", 16, 64, 0.77),
        gpu("sim.t4-4", 4, 16, 1, "T4", 16384, 0.53),
        gpu("sim.t4-8", 8, 32, 1, "T4", 16384, 0.75),
        gpu("sim.t4x2-16", 16, 64, 2, "T4", 16384, 1.45),
        gpu("sim.t4x4-48", 48, 192, 4, "T4", 16384, 3.91),
        gpu("sim.l4-8", 8, 32, 1, "L4", 24576, 0.98),
        gpu("sim.v100-8", 8, 61, 1, "V100", 16384, 3.06),
        gpu("sim.v100x4-32", 32, 244, 4, "V100", 16384, 12.24),
        gpu("sim.a100-12", 12, 85, 1, "A100", 40960, 3.67),
        gpu("sim.a100x8-96", 96, 1152, 8, "A100", 40960, 32.77),
        gpu("sim.a100-80g-12", 12, 170, 1, "A100", 81920, 5.07),
        gpu("sim.h100-26", 26, 234, 1, "H100", 81920, 7.98),
        gpu("sim.h100x8-208", 208, 1872, 8, "H100", 81920, 63.84),
    ]
}

/// The images the simulated cloud knows: (id, name, created).
const IMAGES: &[(&str, &str, &str)] = &[
    (
        "sim-img-ubuntu-2204-20240710",
        "ubuntu-22.04",
        "2024-07-10T00:00:00Z",
    ),
    (
        "sim-img-ubuntu-2404-20240601",
        "ubuntu-24.04",
        "2024-06-01T00:00:00Z",
    ),
    (
        "sim-img-ubuntu-2404-20250301",
        "ubuntu-24.04",
        "2025-03-01T00:00:00Z",
    ),
    (
        "sim-img-debian-12-20250110",
        "debian-12",
        "2025-01-10T00:00:00Z",
    ),
    (
        "sim-img-rocky-9-20241120",
        "rocky-9",
        "2024-11-20T00:00:00Z",
    ),
];

/// The image `resolve_image(None)` answers (the newest of this name).
pub const DEFAULT_IMAGE_NAME: &str = "ubuntu-24.04";

fn find_image(wanted: &str) -> Option<Image> {
    let image = |&(id, name, created): &(&str, &str, &str)| Image {
        id: id.to_string(),
        name: name.to_string(),
        created_at: Some(created.to_string()),
    };
    if let Some(i) = IMAGES.iter().find(|i| i.0 == wanted) {
        return Some(image(i));
    }
    IMAGES
        .iter()
        .filter(|i| i.1.eq_ignore_ascii_case(wanted))
        .max_by_key(|i| i.2) // same format: the string order is the time order
        .map(image)
}

/// The shared state of one simulated cloud.
#[derive(Debug)]
pub struct SimCloud {
    state: Mutex<State>,
    stats: Arc<CallStats>,
}

#[derive(Debug)]
struct State {
    config: SimConfig,
    rng: fastrand::Rng,
    /// By creation order, so lists come out oldest first.
    machines: BTreeMap<u64, SimMachine>,
    by_id: HashMap<String, u64>,
    used_ids: HashSet<String>,
    used_names: HashSet<String>,
    tokens: HashMap<String, Token>,
    forced: HashMap<(String, Fault), u32>,
    next_seq: u64,
    next_ip: u32,
    created: u64,
}

#[derive(Debug)]
struct Token {
    request: CreateRequest,
    ids: Vec<String>,
}

#[derive(Debug)]
struct SimMachine {
    machine: Machine,
    vcpus: u32,
    gpu_model: Option<String>,
    born: Instant,
    terminating_since: Option<Instant>,
    failed: bool,
    /// What the machine booted with, for tests that inspect it.
    user_data: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Fault {
    Before,
    AfterEffect,
}

impl SimMachine {
    /// The state at `now`; None once a terminated machine is gone.
    fn state(&self, now: Instant, cfg: &SimConfig) -> Option<MachineState> {
        match self.terminating_since {
            Some(t) if now.duration_since(t) >= cfg.terminate_delay => None,
            Some(_) => Some(MachineState::Terminating),
            None if self.failed => Some(MachineState::Failed),
            None if now.duration_since(self.born) >= cfg.boot_delay => Some(MachineState::Running),
            None => Some(MachineState::Pending),
        }
    }

    /// Holds capacity and quota: not deleted.
    fn alive(&self) -> bool {
        self.terminating_since.is_none()
    }

    fn view(&self, now: Instant, cfg: &SimConfig) -> Option<Machine> {
        let state = self.state(now, cfg)?;
        Some(Machine {
            state,
            ..self.machine.clone()
        })
    }
}

/// Whether a capacity key covers an instance type (see [`SimConfig::capacity`]).
fn key_covers(key: &str, type_name: &str, gpu_model: Option<&str>) -> bool {
    key.eq_ignore_ascii_case(type_name)
        || match gpu_model {
            Some(model) => model_matches(model, key),
            None => key.eq_ignore_ascii_case(CPU_CAPACITY_KEY),
        }
}

impl State {
    fn new(config: SimConfig) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(config.seed),
            config,
            machines: BTreeMap::new(),
            by_id: HashMap::new(),
            used_ids: HashSet::new(),
            used_names: HashSet::new(),
            tokens: HashMap::new(),
            forced: HashMap::new(),
            next_seq: 0,
            next_ip: 0,
            created: 0,
        }
    }

    /// Forgets machines whose termination has completed.
    fn prune(&mut self, now: Instant) {
        let cfg = &self.config;
        let gone: Vec<u64> = self
            .machines
            .iter()
            .filter(|(_, m)| m.state(now, cfg).is_none())
            .map(|(seq, _)| *seq)
            .collect();
        for seq in gone {
            if let Some(m) = self.machines.remove(&seq) {
                self.by_id.remove(&m.machine.id);
            }
        }
    }

    /// Decides whether this call fails at `when`.
    fn fault(&mut self, verb: &str, when: Fault) -> Option<CloudError> {
        if let Some(n) = self.forced.get_mut(&(verb.to_string(), when))
            && *n > 0
        {
            *n -= 1;
            return Some(injected(verb, when, None));
        }
        let rate = match when {
            Fault::Before => self
                .config
                .verb_failure_rates
                .get(verb)
                .copied()
                .unwrap_or(self.config.failure_rate),
            Fault::AfterEffect => self
                .config
                .verb_failure_after_effect
                .get(verb)
                .copied()
                .unwrap_or(0.0),
        };
        if rate <= 0.0 || self.rng.f64() >= rate {
            return None;
        }
        // Clouds throttle a share of their refusals (EC2 RequestLimitExceeded).
        let throttle = (when == Fault::Before && self.rng.u8(..4) == 0)
            .then(|| self.config.latency.max(Duration::from_millis(10)) * 5);
        Some(injected(verb, when, throttle))
    }

    fn alive(&self) -> impl Iterator<Item = &SimMachine> {
        self.machines.values().filter(|m| m.alive())
    }

    fn create(&mut self, now: Instant, req: &CreateRequest) -> Result<Vec<Machine>, CloudError> {
        if !req.idempotency_key.is_empty()
            && !self.config.ignore_idempotency
            && let Some(token) = self.tokens.get(&req.idempotency_key)
        {
            if token.request != *req {
                return Err(CloudError::Invalid(format!(
                    "idempotency key {:?} was already used with different parameters",
                    req.idempotency_key
                )));
            }
            let cfg = &self.config;
            return Ok(token
                .ids
                .iter()
                .filter_map(|id| self.by_id.get(id))
                .filter_map(|seq| self.machines[seq].view(now, cfg))
                .collect());
        }
        if req.count == 0 {
            return Err(CloudError::Invalid("count must be at least 1".to_string()));
        }
        let Some(itype) = self
            .config
            .instance_types
            .iter()
            .find(|t| t.name == req.instance_type)
            .cloned()
        else {
            return Err(CloudError::Invalid(format!(
                "unknown instance type {:?}",
                req.instance_type
            )));
        };
        if let Some(image) = req.image.as_deref()
            && find_image(image).is_none()
        {
            return Err(CloudError::Invalid(format!("unknown image {image:?}")));
        }
        let gpu_model = itype
            .gpu
            .as_ref()
            .filter(|g| g.count > 0)
            .map(|g| g.model.clone());
        self.check_capacity(req, &itype, gpu_model.as_deref())?;
        self.check_quota(req, &itype)?;

        let created_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let prefix = if req.name_prefix.is_empty() {
            DRIVER_NAME
        } else {
            &req.name_prefix
        };
        let mut out = Vec::with_capacity(req.count as usize);
        for _ in 0..req.count {
            let id = self.fresh_id();
            let name = self.fresh_name(prefix);
            let ip = self.fresh_ip();
            let machine = Machine {
                provider_id: format!("sim:///{id}"),
                id: id.clone(),
                name,
                instance_type: itype.name.clone(),
                state: MachineState::Pending,
                addresses: vec![Address {
                    kind: "InternalIP".to_string(),
                    address: ip,
                }],
                tags: req.owner.tags(),
                created_at: created_at.clone(),
            };
            let seq = self.next_seq;
            self.next_seq += 1;
            self.by_id.insert(id, seq);
            let sm = SimMachine {
                machine,
                vcpus: itype.vcpus,
                gpu_model: gpu_model.clone(),
                born: now,
                terminating_since: None,
                failed: false,
                user_data: req.user_data.clone(),
            };
            out.extend(sm.view(now, &self.config));
            self.machines.insert(seq, sm);
        }
        self.created += u64::from(req.count);
        if !req.idempotency_key.is_empty() {
            self.tokens.insert(
                req.idempotency_key.clone(),
                Token {
                    request: req.clone(),
                    ids: out.iter().map(|m| m.id.clone()).collect(),
                },
            );
        }
        Ok(out)
    }

    /// All or nothing: the whole batch must fit every capacity key covering the type.
    fn check_capacity(
        &self,
        req: &CreateRequest,
        itype: &InstanceType,
        gpu_model: Option<&str>,
    ) -> Result<(), CloudError> {
        let insufficient = |message: String| CloudError::InsufficientCapacity {
            instance_type: itype.name.clone(),
            message,
        };
        if self.config.insufficient.contains(&itype.name) {
            return Err(insufficient(
                "no capacity for this type in the sim".to_string(),
            ));
        }
        for (key, &limit) in &self.config.capacity {
            if !key_covers(key, &itype.name, gpu_model) {
                continue;
            }
            let used = self
                .alive()
                .filter(|m| key_covers(key, &m.machine.instance_type, m.gpu_model.as_deref()))
                .count() as u64;
            if used + u64::from(req.count) > u64::from(limit) {
                return Err(insufficient(format!(
                    "{key}: {used} of {limit} machines in use, {} requested",
                    req.count
                )));
            }
        }
        Ok(())
    }

    fn check_quota(&self, req: &CreateRequest, itype: &InstanceType) -> Result<(), CloudError> {
        if let Some(q) = self.config.quota_machines {
            let used = self.alive().count() as u64;
            if used + u64::from(req.count) > u64::from(q) {
                return Err(CloudError::QuotaExceeded(format!(
                    "machines: {used} in use + {} requested > quota {q}",
                    req.count
                )));
            }
        }
        if let Some(q) = self.config.quota_vcpus {
            let used: u64 = self.alive().map(|m| u64::from(m.vcpus)).sum();
            let asked = u64::from(req.count) * u64::from(itype.vcpus);
            if used + asked > u64::from(q) {
                return Err(CloudError::QuotaExceeded(format!(
                    "vCPUs: {used} in use + {asked} requested > quota {q}"
                )));
            }
        }
        Ok(())
    }

    fn fresh_id(&mut self) -> String {
        loop {
            let id = format!("sim-{:08x}", self.rng.u32(..));
            if self.used_ids.insert(id.clone()) {
                return id;
            }
        }
    }

    fn fresh_name(&mut self, prefix: &str) -> String {
        const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        loop {
            let suffix: String = (0..5)
                .map(|_| char::from(ALNUM[self.rng.usize(..ALNUM.len())]))
                .collect();
            let name = format!("{prefix}-{suffix}");
            if self.used_names.insert(name.clone()) {
                return name;
            }
        }
    }

    /// 10.0.0.1, 10.0.0.2, ... skipping .0 and .255: unique for 16 million machines.
    fn fresh_ip(&mut self) -> String {
        let n = self.next_ip;
        self.next_ip += 1;
        let host = n % 254 + 1;
        let rest = n / 254;
        format!("10.{}.{}.{host}", (rest >> 8) & 0xff, rest & 0xff)
    }

    fn list(&self, now: Instant, tags: &BTreeMap<String, String>) -> Vec<Machine> {
        let lag = self.config.list_lag;
        self.machines
            .values()
            .filter(|m| now.duration_since(m.born) >= lag)
            .filter(|m| tags.iter().all(|(k, v)| m.machine.tags.get(k) == Some(v)))
            .filter_map(|m| m.view(now, &self.config))
            .collect()
    }

    fn delete(&mut self, now: Instant, ids: &[String]) {
        for id in ids {
            if let Some(seq) = self.by_id.get(id)
                && let Some(m) = self.machines.get_mut(seq)
                && m.terminating_since.is_none()
            {
                m.terminating_since = Some(now);
            }
        }
    }
}

fn injected(verb: &str, when: Fault, throttle: Option<Duration>) -> CloudError {
    match (when, throttle) {
        (Fault::AfterEffect, _) => CloudError::Transient(format!(
            "sim: {verb} timed out after the cloud acted (injected)"
        )),
        (Fault::Before, Some(retry_after)) => CloudError::Throttled {
            message: format!("sim: request limit exceeded on {verb} (injected)"),
            retry_after: Some(retry_after),
        },
        (Fault::Before, None) => CloudError::Transient(format!("sim: {verb} failed (injected)")),
    }
}

impl SimCloud {
    /// A new, empty simulated cloud.
    pub fn new(config: SimConfig) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::new(config)),
            stats: CallStats::new(),
        })
    }

    /// A driver over this cloud. Drivers are cheap; all of them share the cloud.
    pub fn driver(self: &Arc<Self>) -> SimDriver {
        SimDriver {
            cloud: Arc::clone(self),
        }
    }

    /// The calls every driver of this cloud made, counted by the cloud itself.
    pub fn stats(&self) -> Arc<CallStats> {
        Arc::clone(&self.stats)
    }

    /// The user-data machine `id` was created with (None for an unknown ID).
    pub fn user_data(&self, id: &str) -> Option<String> {
        let st = self.lock();
        let seq = st.by_id.get(id)?;
        st.machines.get(seq).map(|m| m.user_data.clone())
    }

    /// Machines holding capacity (Pending, Running or Failed: not being deleted), oldest first.
    pub fn machines(&self) -> Vec<Machine> {
        let now = Instant::now();
        let st = self.lock();
        st.machines
            .values()
            .filter(|m| m.alive())
            .filter_map(|m| m.view(now, &st.config))
            .collect()
    }

    /// Every machine the cloud still lists, Terminating ones included, oldest first.
    pub fn all_machines(&self) -> Vec<Machine> {
        let now = Instant::now();
        self.lock().list(now, &BTreeMap::new())
    }

    /// Machines ever created (idempotent replays not counted).
    pub fn all_created(&self) -> u64 {
        self.lock().created
    }

    /// The current configuration.
    pub fn config(&self) -> SimConfig {
        self.lock().config.clone()
    }

    /// Changes the configuration in place (the RNG keeps its sequence).
    pub fn update_config(&self, f: impl FnOnce(&mut SimConfig)) {
        f(&mut self.lock().config);
    }

    /// Sets the failure rate of all verbs (per-verb rates still override it).
    pub fn set_failure_rate(&self, rate: f64) {
        self.update_config(|c| c.failure_rate = clamp_rate(rate));
    }

    /// Sets (Some) or clears (None) the failure rate of one verb (see [`verbs`]).
    pub fn set_verb_failure_rate(&self, verb: &str, rate: Option<f64>) {
        self.update_config(|c| match rate {
            Some(r) => {
                c.verb_failure_rates.insert(verb.to_string(), clamp_rate(r));
            }
            None => {
                c.verb_failure_rates.remove(verb);
            }
        });
    }

    /// Sets the rate at which `verb` does its work and then reports `Transient`.
    pub fn set_failure_after_effect(&self, verb: &str, rate: f64) {
        self.update_config(|c| {
            c.verb_failure_after_effect
                .insert(verb.to_string(), clamp_rate(rate));
        });
    }

    /// Makes the next `count` calls of `verb` fail with `Transient` before acting.
    pub fn fail_next(&self, verb: &str, count: u32) {
        self.lock()
            .forced
            .insert((verb.to_string(), Fault::Before), count);
    }

    /// Makes the next `count` calls of `verb` act, then report `Transient`.
    pub fn fail_next_after_effect(&self, verb: &str, count: u32) {
        self.lock()
            .forced
            .insert((verb.to_string(), Fault::AfterEffect), count);
    }

    /// Makes creates of `instance_type` answer InsufficientCapacity (or stop doing so).
    pub fn set_insufficient(&self, instance_type: &str, insufficient: bool) {
        self.update_config(|c| {
            if insufficient {
                c.insufficient.insert(instance_type.to_string());
            } else {
                c.insufficient.remove(instance_type);
            }
        });
    }

    /// Sets (Some) or lifts (None) the capacity of a GPU model, instance type or `cpu`.
    pub fn set_capacity(&self, key: &str, machines: Option<u32>) {
        self.update_config(|c| match machines {
            Some(n) => {
                c.capacity.insert(key.to_string(), n);
            }
            None => {
                c.capacity.remove(key);
            }
        });
    }

    /// Sets how long every call takes.
    pub fn set_latency(&self, latency: Duration) {
        self.update_config(|c| c.latency = latency);
    }

    /// Marks a machine Failed (as OpenStack ERROR) until it is deleted; false if unknown.
    pub fn set_machine_failed(&self, id: &str) -> bool {
        let mut st = self.lock();
        let Some(&seq) = st.by_id.get(id) else {
            return false;
        };
        match st.machines.get_mut(&seq) {
            Some(m) if m.alive() => {
                m.failed = true;
                true
            }
            _ => false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not wedge every other test sharing the cloud.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One call: latency, a fault before acting, the action, a fault after it; counted.
    async fn call<T>(
        &self,
        verb: &str,
        act: impl FnOnce(&mut State, Instant) -> Result<T, CloudError>,
    ) -> Result<T, CloudError> {
        let start = Instant::now();
        let latency = self.lock().config.latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let result = {
            let mut st = self.lock();
            let now = Instant::now();
            st.prune(now);
            match st.fault(verb, Fault::Before) {
                Some(e) => Err(e),
                None => act(&mut st, now).and_then(|v| match st.fault(verb, Fault::AfterEffect) {
                    Some(e) => Err(e),
                    None => Ok(v),
                }),
            }
        };
        self.stats
            .record(DRIVER_NAME, verb, start.elapsed(), result.as_ref().err());
        result
    }
}

/// The [`CloudDriver`] of the simulated cloud; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct SimDriver {
    cloud: Arc<SimCloud>,
}

impl SimDriver {
    /// The cloud this driver talks to.
    pub fn cloud(&self) -> &Arc<SimCloud> {
        &self.cloud
    }
}

#[async_trait]
impl CloudDriver for SimDriver {
    fn name(&self) -> &str {
        DRIVER_NAME
    }

    async fn instance_types(&self) -> Result<Vec<InstanceType>, CloudError> {
        self.cloud
            .call(verbs::INSTANCE_TYPES, |st, _| {
                Ok(st.config.instance_types.clone())
            })
            .await
    }

    async fn resolve_image(&self, image: Option<&str>) -> Result<Image, CloudError> {
        let wanted = image.unwrap_or(DEFAULT_IMAGE_NAME);
        self.cloud
            .call(verbs::RESOLVE_IMAGE, |_, _| {
                find_image(wanted).ok_or_else(|| {
                    let mut names: Vec<&str> = IMAGES.iter().map(|i| i.1).collect();
                    names.dedup();
                    CloudError::NotFound(format!(
                        "image {wanted:?}; the sim has {}",
                        names.join(", ")
                    ))
                })
            })
            .await
    }

    async fn create(&self, req: &CreateRequest) -> Result<Vec<Machine>, CloudError> {
        self.cloud
            .call(verbs::CREATE, |st, now| st.create(now, req))
            .await
    }

    async fn list(&self, tags: &BTreeMap<String, String>) -> Result<Vec<Machine>, CloudError> {
        self.cloud
            .call(verbs::LIST, |st, now| Ok(st.list(now, tags)))
            .await
    }

    async fn delete(&self, ids: &[String]) -> Result<(), CloudError> {
        self.cloud
            .call(verbs::DELETE, |st, now| {
                st.delete(now, ids);
                Ok(())
            })
            .await
    }
}
