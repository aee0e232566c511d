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
    /// OpenStack endpoints replacing the catalogue's (service type -> URL).
    openstack_endpoints: BTreeMap<String, String>,
    /// Published EGI site data, and the last copy read from it (kept when a read fails).
    egi_sites_url: Option<String>,
    egi_sites: tokio::sync::Mutex<Option<(Instant, kelp_cloud_drivers::egi::SiteCatalog)>>,
}

/// How long site data read from `KELP_EGI_SITES_URL` is used before it is read again.
const EGI_SITES_TTL: Duration = Duration::from_secs(3600);

/// The ConfigMap (in the operator's namespace) whose data overrides the built-in EC2
/// price table: instance type -> USD per hour.
pub const EC2_PRICES_CONFIGMAP: &str = "kelp-ec2-prices";
/// The same for OpenStack flavors (OpenStack and EGI Clusters): flavor name -> price.
pub const OPENSTACK_PRICES_CONFIGMAP: &str = "kelp-openstack-prices";
/// Extra EGI site data (site files, as in the shipped catalogue), one or more per key;
/// an entry replaces the shipped entry of the same site.
pub const EGI_SITES_CONFIGMAP: &str = "kelp-egi-sites";

impl Drivers {
    pub fn new(sims: Arc<SimClouds>, namespace: String) -> Self {
        Self {
            sims,
            stats: CallStats::new(),
            types: Mutex::default(),
            built: Mutex::default(),
            namespace,
            openstack_endpoints: BTreeMap::new(),
            egi_sites_url: None,
            egi_sites: tokio::sync::Mutex::default(),
        }
    }

    /// Where fresh EGI site data is published.
    pub fn with_egi_sites_url(mut self, url: Option<String>) -> Self {
        self.egi_sites_url = url;
        self
    }

    /// The EGI site catalogue: shipped data, then the published data (hourly), then the
    /// `kelp-egi-sites` ConfigMap, later entries replacing earlier ones of the same site.
    async fn egi_catalog(&self, client: &Client) -> kelp_cloud_drivers::egi::SiteCatalog {
        use kelp_cloud_drivers::egi;
        let mut catalog = egi::SiteCatalog::builtin().clone();
        if let Some(url) = &self.egi_sites_url {
            let mut cached = self.egi_sites.lock().await;
            let fresh = cached
                .as_ref()
                .is_some_and(|(at, _)| at.elapsed() < EGI_SITES_TTL);
            if !fresh {
                match egi::fetch_sites(url).await {
                    Ok(c) => *cached = Some((Instant::now(), c)),
                    Err(e) => {
                        tracing::warn!(error = %e, "EGI site data not refreshed; using the last copy");
                        if let Some((at, _)) = cached.as_mut() {
                            // Try again in a while, not at every reconcile.
                            *at = Instant::now();
                        }
                    }
                }
            }
            if let Some((_, c)) = cached.as_ref() {
                catalog.merge(c.clone());
            }
        }
        if let Some((data, _)) = self.own_config_map(client, EGI_SITES_CONFIGMAP).await {
            for (key, text) in data {
                match egi::SiteCatalog::from_yaml(&text) {
                    Ok(extra) => catalog.merge(extra),
                    Err(e) => {
                        tracing::warn!(configmap = EGI_SITES_CONFIGMAP, %key, error = %e, "ignoring site data that does not parse")
                    }
                }
            }
        }
        catalog
    }

    /// OpenStack endpoints that replace the service catalogue's for every OpenStack and
    /// EGI Cluster.
    pub fn with_openstack_endpoints(mut self, endpoints: BTreeMap<String, String>) -> Self {
        self.openstack_endpoints = endpoints;
        self
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
        if let Some(os) = &cloud.openstack {
            return self.openstack(client, cluster, os).await;
        }
        if let Some(egi) = &cloud.egi {
            return self.egi(client, cluster, egi).await;
        }
        Err(Error::Cloud(CloudError::Invalid(
            "spec.cloud: exactly one of sim, ec2, openstack, egi must be set".into(),
        )))
    }

    /// A Secret the Cluster's cloud block names, as text, with its resourceVersion.
    async fn secret(
        client: &Client,
        ns: &str,
        name: &str,
        field: &str,
    ) -> Result<(BTreeMap<String, String>, String)> {
        use k8s_openapi::api::core::v1::Secret;
        let secret = kube::Api::<Secret>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await?
            .ok_or_else(|| {
                Error::Cloud(CloudError::Invalid(format!(
                    "{field}: Secret {ns}/{name} not found"
                )))
            })?;
        Ok((
            crate::targets::secret_data(&secret),
            secret.resource_version().unwrap_or_default(),
        ))
    }

    /// A ConfigMap of the operator's namespace (prices, sites), with its resourceVersion.
    async fn own_config_map(
        &self,
        client: &Client,
        name: &str,
    ) -> Option<(BTreeMap<String, String>, String)> {
        use k8s_openapi::api::core::v1::ConfigMap;
        let cm = kube::Api::<ConfigMap>::namespaced(client.clone(), &self.namespace)
            .get_opt(name)
            .await
            .ok()
            .flatten()?;
        Some((
            cm.data.clone().unwrap_or_default(),
            cm.resource_version().unwrap_or_default(),
        ))
    }

    /// Prices per instance type from a ConfigMap of the operator's namespace (type ->
    /// price per hour); what is not a number is skipped with a warning.
    async fn prices(
        &self,
        client: &Client,
        name: &str,
        fingerprint: &mut String,
    ) -> BTreeMap<String, f64> {
        let mut prices = BTreeMap::new();
        if let Some((data, rv)) = self.own_config_map(client, name).await {
            fingerprint.push_str(&rv);
            for (k, v) in data {
                match v.trim().parse::<f64>() {
                    Ok(p) if p >= 0.0 => {
                        prices.insert(k, p);
                    }
                    _ => {
                        tracing::warn!(configmap = name, instance_type = %k, value = %v, "ignoring a price that is not a number")
                    }
                }
            }
        }
        prices
    }

    /// The driver built for `uid` from `fingerprint`, when there is one.
    fn cached(&self, uid: &str, fingerprint: &str) -> Option<Arc<dyn CloudDriver>> {
        match self.built.lock().unwrap().get(uid) {
            Some((f, d)) if f == fingerprint => Some(d.clone()),
            _ => None,
        }
    }

    /// Keeps a newly built driver (metered) for `uid`.
    fn keep(
        &self,
        uid: &str,
        fingerprint: String,
        driver: impl CloudDriver + 'static,
    ) -> Arc<dyn CloudDriver> {
        let driver: Arc<dyn CloudDriver> =
            Arc::new(Metered::with_stats(driver, self.stats.clone()));
        self.built
            .lock()
            .unwrap()
            .insert(uid.to_string(), (fingerprint, driver.clone()));
        // A rebuilt driver may see another catalogue (region, prices, project).
        self.types.lock().unwrap().remove(uid);
        driver
    }

    /// The EC2 driver of a Cluster: credentials from its Secret (keys accessKeyId,
    /// secretAccessKey, optional sessionToken), else the operator's AWS_* environment.
    async fn ec2(
        &self,
        client: &Client,
        cluster: &Cluster,
        spec: &kelp_crds::Ec2Cloud,
    ) -> Result<Arc<dyn CloudDriver>> {
        let ns = cluster.namespace().unwrap_or_default();
        let uid = cluster.uid().unwrap_or_default();
        let mut fingerprint = serde_json::to_string(spec).unwrap_or_default();
        let credentials = match &spec.credentials_secret_ref {
            None => None,
            Some(r) => {
                let field = "spec.cloud.ec2.credentialsSecretRef";
                let (data, rv) = Self::secret(client, &ns, &r.name, field).await?;
                fingerprint.push_str(&rv);
                let get = |k: &str| {
                    required(
                        &data,
                        k,
                        field,
                        &ns,
                        &r.name,
                        "accessKeyId, secretAccessKey, optional sessionToken",
                    )
                };
                Some(kelp_cloud_drivers::Ec2Credentials {
                    access_key_id: get("accessKeyId")?,
                    secret_access_key: get("secretAccessKey")?,
                    session_token: optional(&data, "sessionToken"),
                })
            }
        };
        let price_overrides = self
            .prices(client, EC2_PRICES_CONFIGMAP, &mut fingerprint)
            .await;
        if let Some(d) = self.cached(&uid, &fingerprint) {
            return Ok(d);
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
        let driver = kelp_cloud_drivers::Ec2Driver::new(settings)?;
        Ok(self.keep(&uid, fingerprint, driver))
    }

    /// The OpenStack driver of a Cluster: an application credential (keys
    /// applicationCredentialId, applicationCredentialSecret) or a password (username,
    /// password, projectName, userDomainName, projectDomainName) from its Secret.
    async fn openstack(
        &self,
        client: &Client,
        cluster: &Cluster,
        spec: &kelp_crds::OpenStackCloud,
    ) -> Result<Arc<dyn CloudDriver>> {
        use kelp_cloud_drivers::openstack::{OpenStackAuth, OpenStackDriver, OpenStackSettings};
        let ns = cluster.namespace().unwrap_or_default();
        let uid = cluster.uid().unwrap_or_default();
        let mut fingerprint = serde_json::to_string(spec).unwrap_or_default();
        let field = "spec.cloud.openstack.credentialsSecretRef";
        let name = &spec.credentials_secret_ref.name;
        let (data, rv) = Self::secret(client, &ns, name, field).await?;
        fingerprint.push_str(&rv);
        const KEYS: &str = "applicationCredentialId + applicationCredentialSecret, or username, password, projectName, userDomainName, projectDomainName";
        let get = |k: &str| required(&data, k, field, &ns, name, KEYS);
        let auth = if let Some(id) = optional(&data, "applicationCredentialId") {
            OpenStackAuth::ApplicationCredential {
                id,
                secret: get("applicationCredentialSecret")?,
            }
        } else if data.contains_key("username") || data.contains_key("password") {
            OpenStackAuth::Password {
                username: get("username")?,
                password: get("password")?,
                project_name: get("projectName")?,
                user_domain_name: optional(&data, "userDomainName")
                    .unwrap_or_else(|| "Default".into()),
                project_domain_name: optional(&data, "projectDomainName")
                    .unwrap_or_else(|| "Default".into()),
            }
        } else {
            return Err(Error::Cloud(CloudError::Invalid(format!(
                "{field}: Secret {ns}/{name} has neither applicationCredentialId nor username (keys: {KEYS})"
            ))));
        };
        let price_overrides = self
            .prices(client, OPENSTACK_PRICES_CONFIGMAP, &mut fingerprint)
            .await;
        if let Some(d) = self.cached(&uid, &fingerprint) {
            return Ok(d);
        }
        let settings = OpenStackSettings {
            region: spec.region.clone(),
            network: spec.network.clone(),
            floating_ip_pool: spec.floating_ip_pool.clone(),
            key_name: spec.key_name.clone(),
            price_overrides,
            endpoint_overrides: self.openstack_endpoints.clone(),
            ..OpenStackSettings::new(spec.auth_url.clone(), auth)
        };
        let driver =
            OpenStackDriver::new(settings).map_err(|e| prefix(e, "spec.cloud.openstack"))?;
        Ok(self.keep(&uid, fingerprint, driver))
    }

    /// The EGI driver of a Cluster: the Check-in account from its Secret (keys
    /// refreshToken, clientId, optional clientSecret and tokenEndpoint), the site's
    /// Keystone and the VO's project from the site catalogue (shipped, plus the
    /// ConfigMap `kelp-egi-sites` of the operator's namespace).
    async fn egi(
        &self,
        client: &Client,
        cluster: &Cluster,
        spec: &kelp_crds::EgiCloud,
    ) -> Result<Arc<dyn CloudDriver>> {
        use kelp_cloud_drivers::egi;
        let ns = cluster.namespace().unwrap_or_default();
        let uid = cluster.uid().unwrap_or_default();
        let mut fingerprint = serde_json::to_string(spec).unwrap_or_default();
        let field = "spec.cloud.egi.credentialsSecretRef";
        let name = &spec.credentials_secret_ref.name;
        let (data, rv) = Self::secret(client, &ns, name, field).await?;
        fingerprint.push_str(&rv);
        const KEYS: &str = "refreshToken, clientId, optional clientSecret and tokenEndpoint";
        let get = |k: &str| required(&data, k, field, &ns, name, KEYS);
        let checkin = egi::CheckinCredentials {
            refresh_token: get("refreshToken")?,
            client_id: get("clientId")?,
            client_secret: optional(&data, "clientSecret"),
            token_url: optional(&data, "tokenEndpoint")
                .unwrap_or_else(|| egi::CHECKIN_TOKEN_URL.into()),
        };
        let catalog = self.egi_catalog(client).await;
        // The site's entry is part of what the driver is built from.
        fingerprint.push_str(&format!("{:?}", catalog.site(&spec.site)));
        let price_overrides = self
            .prices(client, OPENSTACK_PRICES_CONFIGMAP, &mut fingerprint)
            .await;
        if let Some(d) = self.cached(&uid, &fingerprint) {
            return Ok(d);
        }
        let settings = egi::EgiSettings {
            site: spec.site.clone(),
            vo: spec.vo.clone(),
            checkin,
            auth_url: spec.auth_url.clone(),
            identity_provider: spec.identity_provider.clone(),
            protocol: spec.protocol.clone(),
            network: spec.network.clone(),
            floating_ip_pool: spec.floating_ip_pool.clone(),
            key_name: spec.key_name.clone(),
            price_overrides,
            endpoint_overrides: self.openstack_endpoints.clone(),
        };
        let (driver, _) =
            egi::driver(&settings, &catalog).map_err(|e| prefix(e, "spec.cloud.egi"))?;
        Ok(self.keep(&uid, fingerprint, driver))
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

/// A required, non-blank Secret key, or an Invalid error naming the field and the keys.
fn required(
    data: &BTreeMap<String, String>,
    key: &str,
    field: &str,
    ns: &str,
    name: &str,
    keys: &str,
) -> Result<String> {
    optional(data, key).ok_or_else(|| {
        Error::Cloud(CloudError::Invalid(format!(
            "{field}: Secret {ns}/{name} has no key {key:?} (keys: {keys})"
        )))
    })
}

/// An optional Secret key; blank counts as missing.
fn optional(data: &BTreeMap<String, String>, key: &str) -> Option<String> {
    data.get(key)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// An Invalid error's message prefixed with the spec path it is about.
fn prefix(e: CloudError, path: &str) -> Error {
    match e {
        CloudError::Invalid(m) => Error::Cloud(CloudError::Invalid(format!("{path}.{m}"))),
        other => Error::Cloud(other),
    }
}
