//! Which cloud driver serves a Cluster, with a per-Cluster instance-type cache and call
//! metering shared by every driver.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kelp_cloud_drivers::metered::{CallStats, Metered};
use kelp_cloud_drivers::sim::{SimCloud, SimConfig};
use kelp_cloud_drivers::{CloudDriver, CloudError, InstanceType};
use kelp_crds::Cluster;
use kube::{Client, ResourceExt};

use crate::context::{Error, Result};

/// How long a cloud's instance-type list is reused.
const TYPES_TTL: Duration = Duration::from_secs(600);

/// The simulated clouds, one per sim Cluster (by UID). Shared across operator restarts in
/// tests, so a new operator finds the machines the old one created.
pub struct SimClouds {
    base: SimConfig,
    clouds: Mutex<HashMap<String, Arc<SimCloud>>>,
}

impl SimClouds {
    /// `base` sets what the Cluster spec does not: boot and termination delays, quotas.
    pub fn new(base: SimConfig) -> Arc<Self> {
        Arc::new(Self {
            base,
            clouds: Mutex::default(),
        })
    }

    /// The sim cloud of Cluster `uid`, created on first use; latency, failure rate and
    /// capacity follow the Cluster's `spec.cloud.sim`.
    pub fn for_cluster(&self, uid: &str, spec: &kelp_crds::SimCloud) -> Arc<SimCloud> {
        let capacity: BTreeMap<String, u32> = spec
            .capacity
            .iter()
            .map(|(k, v)| (k.clone(), (*v).clamp(0, u32::MAX as i64) as u32))
            .collect();
        let latency = Duration::from_millis(spec.latency_ms.max(0) as u64);
        let mut clouds = self.clouds.lock().unwrap();
        let cloud = clouds
            .entry(uid.to_string())
            .or_insert_with(|| SimCloud::new(self.base.clone()))
            .clone();
        drop(clouds);
        cloud.update_config(|c| {
            c.latency = latency;
            c.failure_rate = spec.failure_rate.clamp(0.0, 1.0);
            c.capacity = capacity;
        });
        cloud
    }

    /// The sim cloud of Cluster `uid`, when it has one.
    pub fn get(&self, uid: &str) -> Option<Arc<SimCloud>> {
        self.clouds.lock().unwrap().get(uid).cloned()
    }

    /// Every sim cloud, by Cluster UID.
    pub fn all(&self) -> Vec<(String, Arc<SimCloud>)> {
        self.clouds
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// The driver registry of a running operator.
pub struct Drivers {
    pub sims: Arc<SimClouds>,
    /// Calls, errors and latency per driver and verb.
    pub stats: Arc<CallStats>,
    types: Mutex<HashMap<String, (Instant, Vec<InstanceType>)>>,
}

impl Drivers {
    pub fn new(sims: Arc<SimClouds>) -> Self {
        Self {
            sims,
            stats: CallStats::new(),
            types: Mutex::default(),
        }
    }

    /// The driver for `cluster`'s cloud, metered.
    pub async fn for_cluster(
        &self,
        _client: &Client,
        cluster: &Cluster,
    ) -> Result<Arc<dyn CloudDriver>> {
        let cloud = &cluster.spec.cloud;
        if let Some(sim) = &cloud.sim {
            let uid = cluster.uid().unwrap_or_default();
            let driver = self.sims.for_cluster(&uid, sim).driver();
            return Ok(Arc::new(Metered::with_stats(driver, self.stats.clone())));
        }
        let kind = cloud.kind().unwrap_or("unknown");
        Err(Error::Cloud(CloudError::Invalid(format!(
            "spec.cloud.{kind}: this kelp build has no {kind} driver yet; use spec.cloud.sim"
        ))))
    }

    /// The instance types of `driver`, cached per Cluster for ten minutes.
    pub async fn instance_types(
        &self,
        uid: &str,
        driver: &dyn CloudDriver,
    ) -> Result<Vec<InstanceType>, CloudError> {
        if let Some((at, types)) = self.types.lock().unwrap().get(uid)
            && at.elapsed() < TYPES_TTL
        {
            return Ok(types.clone());
        }
        let types = driver.instance_types().await?;
        self.types
            .lock()
            .unwrap()
            .insert(uid.to_string(), (Instant::now(), types.clone()));
        Ok(types)
    }

    /// Drops what is cached for a deleted Cluster.
    pub fn forget(&self, uid: &str) {
        self.types.lock().unwrap().remove(uid);
    }
}
