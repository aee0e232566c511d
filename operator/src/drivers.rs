//! Which cloud driver serves a Cluster, with instance-type catalogues shared by the
//! Clusters that read the same one, and call metering shared by every driver.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kelp_cloud_drivers::metered::{CallStats, Metered};
use kelp_cloud_drivers::sim::{SimCloud, SimConfig};
use kelp_cloud_drivers::{CATALOGUE_TTL, CloudDriver, CloudError, InstanceType, Requirements};
use kelp_crds::{Cluster, KubernetesMode};
use kube::{Client, ResourceExt};
use sha2::{Digest, Sha256};

use crate::context::{Error, Result};

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

/// A cloud driver, the fingerprint of what it was built from, and the catalogue it reads.
struct Built {
    fingerprint: String,
    driver: Arc<dyn CloudDriver>,
    catalogue: CatalogueKey,
}

/// What an instance-type catalogue is read with: Clusters with equal keys share one copy.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CatalogueKey {
    /// One Cluster's own, by UID (sim, OpenStack and EGI Clusters).
    Cluster(String),
    /// An EC2 account, region, endpoint, zone and price table.
    Ec2 {
        /// The access key ID.
        access_key_id: String,
        /// SHA-256 of the secret access key, hex: a Cluster with another secret for the
        /// same key ID reads its own copy (and gets its own answer from EC2), and the
        /// secret itself is kept nowhere but in the driver.
        secret_sha256: String,
        region: String,
        endpoint_url: Option<String>,
        availability_zone: Option<String>,
        /// Price overrides as (instance type, bits of the USD price).
        prices: Vec<(String, u64)>,
    },
}

impl CatalogueKey {
    /// The key of the EC2 driver built from `settings` (the Cluster's when it has no
    /// credentials: such a driver is never built).
    pub fn ec2(uid: &str, settings: &kelp_cloud_drivers::Ec2Settings) -> Self {
        let Some(credentials) = &settings.credentials else {
            return Self::Cluster(uid.to_string());
        };
        Self::Ec2 {
            access_key_id: credentials.access_key_id.clone(),
            secret_sha256: hex::encode(Sha256::digest(credentials.secret_access_key.as_bytes())),
            region: settings.region.clone(),
            endpoint_url: settings.endpoint_url.clone(),
            availability_zone: settings.availability_zone.clone(),
            prices: settings
                .price_overrides
                .iter()
                .map(|(k, v)| (k.clone(), v.to_bits()))
                .collect(),
        }
    }
}

/// The instance types `cluster` needs from its cloud when it needs no others: every
/// pool names its `machine.instanceType`, and so does a separate control-plane
/// machine. The types its pools run and are being created with (status) come too, so
/// a pool rolling to a new type still knows the one it rolls from. None when a pool
/// is chosen by its requirements (that takes the whole catalogue), or nothing is named.
pub fn named_types(cluster: &Cluster) -> Option<Vec<String>> {
    let named = |t: &Option<String>| {
        t.as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
    };
    let mut names = BTreeSet::new();
    for pool in &cluster.spec.node_pools {
        names.insert(named(&pool.machine.instance_type)?);
    }
    let k8s = &cluster.spec.kubernetes;
    let cp = k8s.control_plane.clone().unwrap_or_default();
    if k8s.mode == KubernetesMode::Provision && cp.pool.is_none() {
        names.insert(named(&cp.instance_type)?);
    }
    if names.is_empty() {
        return None;
    }
    if let Some(status) = &cluster.status {
        names.extend(
            status
                .node_pools
                .iter()
                .filter_map(|p| named(&p.instance_type)),
        );
        names.extend(
            status
                .pending_creates
                .iter()
                .filter_map(|p| named(&Some(p.instance_type.clone()))),
        );
    }
    Some(names.into_iter().collect())
}

/// Instance-type catalogues by [`CatalogueKey`], each kept for [`CATALOGUE_TTL`]: the
/// whole catalogue, and narrow ones by set of names. The whole one, when there, serves
/// narrow requests too. One read at a time per key, so Clusters reconciled at once
/// make one call between them.
pub struct Catalogues {
    entries: Mutex<HashMap<CatalogueKey, Arc<tokio::sync::Mutex<Catalogue>>>>,
    ttl: Duration,
}

impl Default for Catalogues {
    fn default() -> Self {
        Self::with_ttl(CATALOGUE_TTL)
    }
}

#[derive(Default)]
struct Catalogue {
    whole: Option<(Instant, Vec<InstanceType>)>,
    named: HashMap<BTreeSet<String>, (Instant, Vec<InstanceType>)>,
}

impl Catalogue {
    /// Forgets what is `ttl` old; true when nothing is left.
    fn expire(&mut self, ttl: Duration) -> bool {
        let fresh = |at: &Instant| at.elapsed() < ttl;
        if self.whole.as_ref().is_some_and(|(at, _)| !fresh(at)) {
            self.whole = None;
        }
        self.named.retain(|_, (at, _)| fresh(at));
        self.whole.is_none() && self.named.is_empty()
    }
}

/// Whether `types` has each of `names`, as a pool's explicit `instanceType` finds it.
fn offers_all(types: &[InstanceType], names: &[String]) -> bool {
    names.iter().all(|n| {
        let req = Requirements {
            instance_type: Some(n.clone()),
            ..Default::default()
        };
        kelp_cloud_drivers::candidates(types, &req).is_ok()
    })
}

impl Catalogues {
    /// Catalogues kept for `ttl` ([`CATALOGUE_TTL`] by default; shorter in tests).
    pub fn with_ttl(ttl: Duration) -> Self {
        Self {
            entries: Mutex::default(),
            ttl,
        }
    }

    /// The catalogue `key` names, read through `driver` when it is not here: only
    /// `names` when given (see [`named_types`]), else the whole one. When the cloud does
    /// not offer one of `names`, the whole catalogue, so that the pool's error lists
    /// what the cloud offers instead.
    pub async fn get(
        &self,
        key: &CatalogueKey,
        names: Option<&[String]>,
        driver: &dyn CloudDriver,
    ) -> Result<Vec<InstanceType>, CloudError> {
        let entry = self.entry(key);
        let mut catalogue = entry.lock().await;
        catalogue.expire(self.ttl);
        if let Some(names) = names {
            if let Some((_, whole)) = &catalogue.whole {
                let named: Vec<InstanceType> = whole
                    .iter()
                    .filter(|t| t.is_one_of(names))
                    .cloned()
                    .collect();
                return Ok(if offers_all(&named, names) {
                    named
                } else {
                    whole.clone()
                });
            }
            let set: BTreeSet<String> = names.iter().map(|n| n.trim().to_string()).collect();
            if let Some((_, named)) = catalogue.named.get(&set) {
                return Ok(named.clone());
            }
            let named = driver.instance_types_named(names).await?;
            if offers_all(&named, names) {
                catalogue.named.insert(set, (Instant::now(), named.clone()));
                return Ok(named);
            }
        } else if let Some((_, whole)) = &catalogue.whole {
            return Ok(whole.clone());
        }
        let whole = driver.instance_types().await?;
        catalogue.whole = Some((Instant::now(), whole.clone()));
        Ok(whole)
    }

    /// The entry of `key`, new when there is none. A new key also drops the entries no
    /// one reads and whose catalogues have all expired (an account or region no
    /// Cluster uses any more).
    fn entry(&self, key: &CatalogueKey) -> Arc<tokio::sync::Mutex<Catalogue>> {
        let mut entries = self.entries.lock().unwrap();
        if let Some(e) = entries.get(key) {
            return e.clone();
        }
        entries.retain(|_, e| {
            Arc::strong_count(e) > 1 || e.try_lock().map_or(true, |mut c| !c.expire(self.ttl))
        });
        entries.entry(key.clone()).or_default().clone()
    }

    /// Forgets the catalogue of `key`.
    pub fn forget(&self, key: &CatalogueKey) {
        self.entries.lock().unwrap().remove(key);
    }

    /// How many catalogues are kept.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The driver registry of a running operator.
pub struct Drivers {
    pub sims: Arc<SimClouds>,
    /// Calls, errors and latency per driver and verb.
    pub stats: Arc<CallStats>,
    /// Instance types, shared by the Clusters that read the same catalogue.
    pub catalogues: Catalogues,
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
    /// Resolved EC2 images, shared as the catalogue is: by [`CatalogueKey`] (the same
    /// account, region and endpoint see the same images).
    ec2_images: Mutex<HashMap<CatalogueKey, kelp_cloud_drivers::ImageCache>>,
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
            catalogues: Catalogues::default(),
            built: Mutex::default(),
            namespace,
            openstack_endpoints: BTreeMap::new(),
            egi_sites_url: None,
            egi_sites: tokio::sync::Mutex::default(),
            ec2_images: Mutex::default(),
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
            Some(b) if b.fingerprint == fingerprint => Some(b.driver.clone()),
            _ => None,
        }
    }

    /// Keeps a newly built driver (metered) for `uid`, reading `catalogue`.
    fn keep(
        &self,
        uid: &str,
        fingerprint: String,
        driver: impl CloudDriver + 'static,
        catalogue: CatalogueKey,
    ) -> Arc<dyn CloudDriver> {
        let driver: Arc<dyn CloudDriver> =
            Arc::new(Metered::with_stats(driver, self.stats.clone()));
        let built = Built {
            fingerprint,
            driver: driver.clone(),
            catalogue,
        };
        self.built.lock().unwrap().insert(uid.to_string(), built);
        // A rebuilt driver may see another catalogue (region, prices, project); a shared
        // key already says what it is read with.
        self.catalogues
            .forget(&CatalogueKey::Cluster(uid.to_string()));
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
        let catalogue = CatalogueKey::ec2(&uid, &settings);
        let images = self
            .ec2_images
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(catalogue.clone())
            .or_default()
            .clone();
        let driver = kelp_cloud_drivers::Ec2Driver::new(settings)?.with_images(images);
        Ok(self.keep(&uid, fingerprint, driver, catalogue))
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
        Ok(self.keep(
            &uid,
            fingerprint,
            driver,
            CatalogueKey::Cluster(uid.clone()),
        ))
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
        Ok(self.keep(
            &uid,
            fingerprint,
            driver,
            CatalogueKey::Cluster(uid.clone()),
        ))
    }

    /// The instance types `cluster` can use through `driver`: shared by the Clusters
    /// that read the same catalogue (one EC2 account and region), only the named types
    /// when every pool names one ([`named_types`]), kept for [`CATALOGUE_TTL`].
    pub async fn instance_types(
        &self,
        cluster: &Cluster,
        driver: &dyn CloudDriver,
    ) -> Result<Vec<InstanceType>, CloudError> {
        let uid = cluster.uid().unwrap_or_default();
        let key = self
            .built
            .lock()
            .unwrap()
            .get(&uid)
            .map(|b| b.catalogue.clone())
            .unwrap_or(CatalogueKey::Cluster(uid));
        self.catalogues
            .get(&key, named_types(cluster).as_deref(), driver)
            .await
    }

    /// Drops what is cached for a deleted Cluster (a shared catalogue stays for the
    /// others, until it expires).
    pub fn forget(&self, uid: &str) {
        self.catalogues
            .forget(&CatalogueKey::Cluster(uid.to_string()));
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use kelp_cloud_drivers::{CreateRequest, Ec2Credentials, Ec2Settings, Image, Machine};

    use super::*;

    /// A cloud of three types that counts whole and narrow catalogue reads.
    #[derive(Default)]
    struct Counting {
        whole: AtomicUsize,
        named: Mutex<Vec<Vec<String>>>,
    }

    impl Counting {
        fn types() -> Vec<InstanceType> {
            ["g4dn.xlarge", "g5.xlarge", "m5.large"]
                .into_iter()
                .map(|n| InstanceType {
                    name: n.into(),
                    vcpus: 4,
                    ..Default::default()
                })
                .collect()
        }
        fn reads(&self) -> (usize, usize) {
            (
                self.whole.load(Ordering::SeqCst),
                self.named.lock().unwrap().len(),
            )
        }
    }

    #[async_trait]
    impl CloudDriver for Counting {
        fn name(&self) -> &str {
            "counting"
        }
        async fn instance_types(&self) -> Result<Vec<InstanceType>, CloudError> {
            self.whole.fetch_add(1, Ordering::SeqCst);
            // Long enough for a second Cluster's reconcile to arrive meanwhile.
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(Self::types())
        }
        async fn instance_types_named(
            &self,
            names: &[String],
        ) -> Result<Vec<InstanceType>, CloudError> {
            self.named.lock().unwrap().push(names.to_vec());
            let mut t = Self::types();
            t.retain(|t| t.is_one_of(names));
            Ok(t)
        }
        async fn resolve_image(&self, _: Option<&str>) -> Result<Image, CloudError> {
            unimplemented!()
        }
        async fn create(&self, _: &CreateRequest) -> Result<Vec<Machine>, CloudError> {
            unimplemented!()
        }
        async fn list(&self, _: &BTreeMap<String, String>) -> Result<Vec<Machine>, CloudError> {
            unimplemented!()
        }
        async fn delete(&self, _: &[String]) -> Result<(), CloudError> {
            unimplemented!()
        }
    }

    fn settings(key_id: &str, secret: &str) -> Ec2Settings {
        Ec2Settings {
            endpoint_url: Some("http://127.0.0.1:5000".into()),
            credentials: Some(Ec2Credentials {
                access_key_id: key_id.into(),
                secret_access_key: secret.into(),
                session_token: None,
            }),
            ..Ec2Settings::new("us-east-1")
        }
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ec2_keys_name_the_account_region_endpoint_zone_and_prices_never_the_secret() {
        let key = CatalogueKey::ec2("uid-a", &settings("AKIAONE", "very-secret"));
        assert_eq!(
            key,
            CatalogueKey::ec2("uid-b", &settings("AKIAONE", "very-secret"))
        );
        assert_ne!(
            key,
            CatalogueKey::ec2("uid-a", &settings("AKIAONE", "other-secret"))
        );
        assert_ne!(
            key,
            CatalogueKey::ec2("uid-a", &settings("AKIATWO", "very-secret"))
        );
        let other = |f: &dyn Fn(&mut Ec2Settings)| {
            let mut s = settings("AKIAONE", "very-secret");
            f(&mut s);
            CatalogueKey::ec2("uid-a", &s)
        };
        assert_ne!(key, other(&|s| s.region = "eu-west-1".into()));
        assert_ne!(key, other(&|s| s.endpoint_url = None));
        assert_ne!(
            key,
            other(&|s| s.availability_zone = Some("us-east-1a".into()))
        );
        assert_ne!(
            key,
            other(&|s| {
                s.price_overrides.insert("g4dn.xlarge".into(), 0.4);
            })
        );
        let shown = format!("{key:?}");
        assert!(
            shown.contains("AKIAONE") && !shown.contains("very-secret"),
            "{shown}"
        );
        // Without credentials no driver is built; the key is the Cluster's own.
        let mut none = settings("x", "y");
        none.credentials = None;
        assert_eq!(
            CatalogueKey::ec2("uid-a", &none),
            CatalogueKey::Cluster("uid-a".into())
        );
    }

    #[tokio::test]
    async fn clusters_of_one_account_and_region_read_the_catalogue_once() {
        let catalogues = Catalogues::default();
        let cloud = Counting::default();
        let key = CatalogueKey::ec2("uid-a", &settings("AKIAONE", "s"));
        let same = CatalogueKey::ec2("uid-b", &settings("AKIAONE", "s"));
        // Two Clusters reconciled at once, then a third later.
        let (a, b) = tokio::join!(
            catalogues.get(&key, None, &cloud),
            catalogues.get(&same, None, &cloud),
        );
        assert_eq!(a.unwrap().len(), 3);
        assert_eq!(b.unwrap().len(), 3);
        catalogues.get(&key, None, &cloud).await.unwrap();
        assert_eq!(cloud.reads(), (1, 0));
        // Another account reads its own.
        let other = CatalogueKey::ec2("uid-c", &settings("AKIATWO", "s"));
        catalogues.get(&other, None, &cloud).await.unwrap();
        assert_eq!(cloud.reads(), (2, 0));
        assert_eq!(catalogues.len(), 2);
    }

    #[tokio::test]
    async fn named_types_are_read_alone_kept_per_set_and_served_by_a_whole_catalogue() {
        let catalogues = Catalogues::default();
        let cloud = Counting::default();
        let key = CatalogueKey::Cluster("uid-a".into());
        let g4 = names(&["g4dn.xlarge"]);
        let t = catalogues.get(&key, Some(&g4), &cloud).await.unwrap();
        assert_eq!(
            t.iter().map(|t| &t.name).collect::<Vec<_>>(),
            ["g4dn.xlarge"]
        );
        catalogues.get(&key, Some(&g4), &cloud).await.unwrap();
        assert_eq!(cloud.reads(), (0, 1), "kept for the same names");
        catalogues
            .get(&key, Some(&names(&["g4dn.xlarge", "g5.xlarge"])), &cloud)
            .await
            .unwrap();
        assert_eq!(cloud.reads(), (0, 2), "another set of names is read");
        assert_eq!(cloud.named.lock().unwrap()[1], ["g4dn.xlarge", "g5.xlarge"]);

        catalogues.get(&key, None, &cloud).await.unwrap();
        let t = catalogues
            .get(&key, Some(&names(&["M5.LARGE"])), &cloud)
            .await
            .unwrap();
        assert_eq!(t.iter().map(|t| &t.name).collect::<Vec<_>>(), ["m5.large"]);
        assert_eq!(
            cloud.reads(),
            (1, 2),
            "the whole catalogue serves named types"
        );
    }

    #[tokio::test]
    async fn a_name_the_cloud_does_not_offer_gets_the_whole_catalogue_for_its_error() {
        let catalogues = Catalogues::default();
        let cloud = Counting::default();
        let key = CatalogueKey::Cluster("uid-a".into());
        let typo = names(&["g4dn.xlarg"]);
        let t = catalogues.get(&key, Some(&typo), &cloud).await.unwrap();
        assert_eq!(cloud.reads(), (1, 1));
        assert_eq!(t.len(), 3);
        let req = Requirements {
            instance_type: Some("g4dn.xlarg".into()),
            ..Default::default()
        };
        let err = kelp_cloud_drivers::candidates(&t, &req).unwrap_err();
        assert_eq!(
            err.to_string(),
            "instance type \"g4dn.xlarg\" is not offered by this cloud; offered: g4dn.xlarge, g5.xlarge, m5.large"
        );
        catalogues.get(&key, Some(&typo), &cloud).await.unwrap();
        assert_eq!(cloud.reads(), (1, 1), "kept");
    }

    #[tokio::test]
    async fn catalogues_are_read_again_after_the_ttl() {
        let ttl = Duration::from_millis(300);
        let catalogues = Catalogues::with_ttl(ttl);
        let cloud = Counting::default();
        let key = CatalogueKey::Cluster("uid-a".into());
        let g4 = names(&["g4dn.xlarge"]);
        catalogues.get(&key, None, &cloud).await.unwrap();
        catalogues.forget(&key);
        catalogues.get(&key, Some(&g4), &cloud).await.unwrap();
        catalogues.get(&key, Some(&g4), &cloud).await.unwrap();
        assert_eq!(cloud.reads(), (1, 1));
        tokio::time::sleep(ttl).await;
        catalogues.get(&key, Some(&g4), &cloud).await.unwrap();
        assert_eq!(cloud.reads(), (1, 2));
        // An expired catalogue nobody reads goes when another key comes.
        tokio::time::sleep(ttl).await;
        let other = CatalogueKey::Cluster("uid-b".into());
        catalogues.get(&other, None, &cloud).await.unwrap();
        assert_eq!(catalogues.len(), 1);
        assert_eq!(Catalogues::default().ttl, CATALOGUE_TTL);
    }

    fn cluster(yaml: &str) -> Cluster {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn named_types_only_when_every_pool_names_one() {
        let named = cluster(
            r#"
apiVersion: kelp.imagine-ai.eu/v1alpha1
kind: Cluster
metadata: {name: named, uid: u1}
spec:
  cloud: {ec2: {region: us-east-1}}
  kubernetes: {mode: Provision, controlPlane: {instanceType: t3.medium}}
  nodePools:
    - {name: t4, replicas: 2, machine: {instanceType: g4dn.xlarge}}
    - {name: a10g, machine: {instanceType: " g5.xlarge ", gpu: {count: 1}}}
status:
  nodePools:
    - {name: t4, instanceType: g4dn.2xlarge, desired: 2, ready: 2}
  pendingCreates:
    - {key: k, pool: t4, count: 1, instanceType: g4dn.xlarge, requestedAt: "2026-01-01T00:00:00Z"}
"#,
        );
        assert_eq!(
            named_types(&named).unwrap(),
            ["g4dn.2xlarge", "g4dn.xlarge", "g5.xlarge", "t3.medium"],
            "the pools', the control plane's and the type the t4 pool rolls from"
        );

        let mut by_requirements = named.clone();
        by_requirements.spec.node_pools[1].machine.instance_type = None;
        assert_eq!(named_types(&by_requirements), None);

        let mut cp = named.clone();
        cp.spec.kubernetes.control_plane = None;
        assert_eq!(named_types(&cp), None, "a separate control plane by size");
        cp.spec.kubernetes.mode = KubernetesMode::Existing;
        assert!(named_types(&cp).is_some(), "no control-plane machine");

        let mut none = cp.clone();
        none.spec.node_pools.clear();
        assert_eq!(
            named_types(&none),
            None,
            "nothing named: the whole catalogue"
        );
    }
}
