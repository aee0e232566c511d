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

/// A cloud driver and the fingerprint of what it was built from.
type Built = (String, Arc<dyn CloudDriver>);

/// The driver registry of a running operator.
pub struct Drivers {
    pub sims: Arc<SimClouds>,
    /// Calls, errors and latency per driver and verb.
    pub stats: Arc<CallStats>,
    types: Mutex<HashMap<String, (Instant, Vec<InstanceType>)>>,
    /// Cloud drivers by Cluster UID, with the fingerprint of what they were built from
    /// (spec block, Secret and price ConfigMap versions): rebuilt when that changes.
    built: Mutex<HashMap<String, Built>>,
    /// The operator's namespace (price ConfigMap).
    namespace: String,
}

/// The ConfigMap (in the operator's namespace) whose data overrides the built-in EC2
/// price table: instance type -> USD per hour.
pub const EC2_PRICES_CONFIGMAP: &str = "kelp-ec2-prices";

impl Drivers {
    pub fn new(sims: Arc<SimClouds>, namespace: String) -> Self {
        Self {
            sims,
            stats: CallStats::new(),
            types: Mutex::default(),
            built: Mutex::default(),
            namespace,
        }
    }

    /// The driver for `cluster`'s cloud, metered.
    pub async fn for_cluster(
        &self,
        client: &Client,
        cluster: &Cluster,
    ) -> Result<Arc<dyn CloudDriver>> {
        let cloud = &cluster.spec.cloud;
        if let Some(sim) = &cloud.sim {
            let uid = cluster.uid().unwrap_or_default();
            let driver = self.sims.for_cluster(&uid, sim).driver();
            return Ok(Arc::new(Metered::with_stats(driver, self.stats.clone())));
        }
        if let Some(ec2) = &cloud.ec2 {
            return self.ec2(client, cluster, ec2).await;
        }
        let kind = cloud.kind().unwrap_or("unknown");
        Err(Error::Cloud(CloudError::Invalid(format!(
            "spec.cloud.{kind}: this kelp build has no {kind} driver yet; use spec.cloud.sim or spec.cloud.ec2"
        ))))
    }

    /// The EC2 driver of a Cluster: credentials from its Secret (keys accessKeyId,
    /// secretAccessKey, optional sessionToken), else the operator's AWS_* environment.
    async fn ec2(
        &self,
        client: &Client,
        cluster: &Cluster,
        spec: &kelp_crds::Ec2Cloud,
    ) -> Result<Arc<dyn CloudDriver>> {
        use k8s_openapi::api::core::v1::{ConfigMap, Secret};
        let ns = cluster.namespace().unwrap_or_default();
        let uid = cluster.uid().unwrap_or_default();
        let mut fingerprint = serde_json::to_string(spec).unwrap_or_default();
        let credentials = match &spec.credentials_secret_ref {
            None => None,
            Some(r) => {
                let field = "spec.cloud.ec2.credentialsSecretRef";
                let secret = kube::Api::<Secret>::namespaced(client.clone(), &ns)
                    .get_opt(&r.name)
                    .await?
                    .ok_or_else(|| {
                        Error::Cloud(CloudError::Invalid(format!(
                            "{field}: Secret {ns}/{} not found",
                            r.name
                        )))
                    })?;
                fingerprint.push_str(&secret.resource_version().unwrap_or_default());
                let data = crate::targets::secret_data(&secret);
                let get = |k: &str| {
                    data.get(k).cloned().filter(|v| !v.trim().is_empty()).ok_or_else(|| {
                        Error::Cloud(CloudError::Invalid(format!(
                            "{field}: Secret {ns}/{} has no key {k:?} (keys: accessKeyId, secretAccessKey, optional sessionToken)",
                            r.name
                        )))
                    })
                };
                Some(kelp_cloud_drivers::Ec2Credentials {
                    access_key_id: get("accessKeyId")?,
                    secret_access_key: get("secretAccessKey")?,
                    session_token: data.get("sessionToken").cloned().filter(|v| !v.is_empty()),
                })
            }
        };
        let prices = kube::Api::<ConfigMap>::namespaced(client.clone(), &self.namespace)
            .get_opt(EC2_PRICES_CONFIGMAP)
            .await
            .ok()
            .flatten();
        let mut price_overrides = BTreeMap::new();
        if let Some(cm) = &prices {
            fingerprint.push_str(&cm.resource_version().unwrap_or_default());
            for (k, v) in cm.data.clone().unwrap_or_default() {
                match v.trim().parse::<f64>() {
                    Ok(p) if p >= 0.0 => {
                        price_overrides.insert(k, p);
                    }
                    _ => {
                        tracing::warn!(instance_type = %k, value = %v, "ignoring a price that is not a number")
                    }
                }
            }
        }
        if let Some((f, d)) = self.built.lock().unwrap().get(&uid)
            && *f == fingerprint
        {
            return Ok(d.clone());
        }
        let settings = kelp_cloud_drivers::Ec2Settings {
            region: spec.region.clone(),
            endpoint_url: spec.endpoint_url.clone(),
            credentials: credentials.or_else(kelp_cloud_drivers::Ec2Credentials::from_env),
            subnet_id: spec.subnet_id.clone(),
            security_group_ids: spec.security_group_ids.clone(),
            key_name: spec.key_name.clone(),
            price_overrides,
            ..kelp_cloud_drivers::Ec2Settings::new(spec.region.clone())
        };
        let driver: Arc<dyn CloudDriver> = Arc::new(Metered::with_stats(
            kelp_cloud_drivers::Ec2Driver::new(settings)?,
            self.stats.clone(),
        ));
        self.built
            .lock()
            .unwrap()
            .insert(uid.clone(), (fingerprint, driver.clone()));
        // A rebuilt driver may see another catalogue (region, prices).
        self.types.lock().unwrap().remove(&uid);
        Ok(driver)
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
        self.built.lock().unwrap().remove(uid);
    }
}
