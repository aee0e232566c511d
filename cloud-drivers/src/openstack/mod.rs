//! The OpenStack driver: Nova for servers and flavors, Glance for images, Neutron for
//! networks, security groups and floating IPs, all through one Keystone session.
//!
//! - Flavors carry GPU facts only through their extra specs (`Accelerator:*`, the
//!   EGI-agreed properties, or a PCI alias): see [`flavors`].
//! - One server-create request per batch (`min_count` = `max_count`), with kelp's
//!   ownership in the server metadata and Nova tags: `kelp-uid-<cluster UID>` to list a
//!   Cluster's servers, and the batch's idempotency key, so a batch whose answer was
//!   lost (crash, timeout) is adopted instead of started twice.
//! - kelp creates one security group per Cluster (`kelp-<uid>`, tagged) and, with a
//!   `floatingIpPool`, one floating IP per k3s server machine (tagged); both go with the
//!   Cluster ([`CloudDriver::release`]). kelp creates no ports and no key pairs: Nova
//!   creates each server's port and deletes it with the server; `keyName` names a key
//!   pair the user owns.
//! - A server in ERROR is reported failed (the operator deletes and replaces it); when
//!   Nova's fault says "No valid host", the flavor is treated as out of capacity for ten
//!   minutes, so the next create falls back to the next flavor.

pub mod api;
pub mod flavors;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use osauth::services::{COMPUTE, IMAGE, NETWORK};
use osauth::{AuthType, EndpointFilters, Session};
use reqwest::{Method, RequestBuilder, Url};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use api::{Api, Call};
pub use api::{ApiCalls, NOVA_MICROVERSION};

use crate::driver::{
    Address, CloudDriver, CloudError, CreateRequest, Image, InstanceType, Machine, MachineState,
    tags,
};

/// The driver's name, the label of its metrics.
pub const DRIVER_NAME: &str = "openstack";
/// Prefix of the Nova and Neutron tag that marks what kelp made for a Cluster.
pub const UID_TAG_PREFIX: &str = "kelp-uid-";
/// How long a flavor that got "No valid host" is skipped.
const NO_CAPACITY_FOR: Duration = Duration::from_secs(600);
/// Servers per page of a server list.
const PAGE: usize = 500;
/// Default images, best first: Ubuntu 24.04, then 22.04, by Glance properties, then by
/// the names sites commonly use.
const DEFAULT_IMAGES: [&str; 4] = [
    "os_distro=ubuntu,os_version=24.04",
    "os_distro=ubuntu,os_version=22.04",
    "ubuntu-24.04",
    "ubuntu-22.04",
];

/// How the driver authenticates to Keystone.
#[derive(Clone)]
pub enum OpenStackAuth {
    /// An application credential (the preferred way: scoped to one project, revocable).
    ApplicationCredential { id: String, secret: String },
    /// A user's password, scoped to a project.
    Password {
        username: String,
        password: String,
        project_name: String,
        user_domain_name: String,
        project_domain_name: String,
    },
    /// Any other source of project-scoped tokens (the EGI driver's federated login).
    Custom(Arc<dyn AuthType>),
}

impl fmt::Debug for OpenStackAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenStackAuth::ApplicationCredential { id, .. } => {
                write!(f, "ApplicationCredential({id}, <secret>)")
            }
            OpenStackAuth::Password {
                username,
                project_name,
                ..
            } => write!(f, "Password({username}@{project_name}, <password>)"),
            OpenStackAuth::Custom(a) => write!(f, "Custom({a:?})"),
        }
    }
}

/// Everything the driver needs: where, who, and the Cluster-wide choices.
#[derive(Clone, Debug)]
pub struct OpenStackSettings {
    /// `openstack` or `egi`: the label of metrics and messages.
    pub name: String,
    /// Keystone v3 URL.
    pub auth_url: String,
    pub auth: OpenStackAuth,
    /// Region in the catalogue; any region when unset.
    pub region: Option<String>,
    /// Catalogue interface: `public` (default) or `internal`.
    pub interface: Option<String>,
    /// Network name or ID; the project's only network when unset.
    pub network: Option<String>,
    /// External network for floating IPs of the k3s server machines; none when unset.
    pub floating_ip_pool: Option<String>,
    /// Existing Nova key pair.
    pub key_name: Option<String>,
    /// Flavor name -> price per hour, when the operator knows one.
    pub price_overrides: BTreeMap<String, f64>,
    /// Service type -> URL, overriding the catalogue (tests, broken catalogues).
    pub endpoint_overrides: BTreeMap<String, String>,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl OpenStackSettings {
    pub fn new(auth_url: impl Into<String>, auth: OpenStackAuth) -> Self {
        Self {
            name: DRIVER_NAME.into(),
            auth_url: auth_url.into(),
            auth,
            region: None,
            interface: None,
            network: None,
            floating_ip_pool: None,
            key_name: None,
            price_overrides: BTreeMap::new(),
            endpoint_overrides: BTreeMap::new(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// An `Arc<dyn AuthType>` as an owned auth type, as the session wants one.
#[derive(Debug)]
struct SharedAuth(Arc<dyn AuthType>);

#[async_trait]
impl AuthType for SharedAuth {
    async fn authenticate(
        &self,
        client: &reqwest::Client,
        request: RequestBuilder,
    ) -> Result<RequestBuilder, osauth::Error> {
        self.0.authenticate(client, request).await
    }

    async fn get_endpoint(
        &self,
        client: &reqwest::Client,
        service_type: &str,
        filters: &EndpointFilters,
    ) -> Result<Url, osauth::Error> {
        self.0.get_endpoint(client, service_type, filters).await
    }

    async fn refresh(&self, client: &reqwest::Client) -> Result<(), osauth::Error> {
        self.0.refresh(client).await
    }
}

#[derive(Clone, Debug)]
struct FlavorRef {
    id: String,
    kind: InstanceType,
}

pub struct OpenStackDriver {
    settings: OpenStackSettings,
    api: OnceCell<Api>,
    calls: Arc<ApiCalls>,
    flavors: Mutex<HashMap<String, FlavorRef>>,
    network: OnceCell<String>,
    fip_network: OnceCell<String>,
    /// Security group per Cluster UID.
    groups: tokio::sync::Mutex<HashMap<String, String>>,
    /// Flavors Nova found no host for, and when.
    no_capacity: Mutex<HashMap<String, Instant>>,
}

impl fmt::Debug for OpenStackDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenStackDriver")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

// Nova's answers, as far as kelp reads them.
#[derive(Debug, Deserialize)]
struct FlavorJson {
    id: String,
    name: String,
    vcpus: u32,
    ram: u64,
    #[serde(default)]
    disk: u32,
    #[serde(default)]
    extra_specs: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
struct ServerJson {
    id: String,
    #[serde(default)]
    name: String,
    status: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    addresses: BTreeMap<String, Vec<AddressJson>>,
    #[serde(default)]
    flavor: Value,
    #[serde(default)]
    created: String,
    #[serde(default, rename = "OS-EXT-STS:task_state")]
    task_state: Option<String>,
    #[serde(default)]
    fault: Option<FaultJson>,
}

#[derive(Debug, Deserialize)]
struct AddressJson {
    addr: String,
    #[serde(default, rename = "OS-EXT-IPS:type")]
    kind: Option<String>,
}

#[derive(Debug, Deserialize)]
struct FaultJson {
    #[serde(default)]
    message: String,
}

#[derive(Debug, Deserialize)]
struct ImageJson {
    id: String,
    #[serde(default)]
    name: Option<String>,
    status: String,
    #[serde(default)]
    created_at: Option<String>,
}

#[derive(Debug, Deserialize)]
struct NetworkJson {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default, rename = "router:external")]
    external: bool,
}

#[derive(Debug, Deserialize)]
struct FloatingIpJson {
    id: String,
    floating_ip_address: String,
    #[serde(default)]
    port_id: Option<String>,
    #[serde(default)]
    fixed_ip_address: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PortJson {
    id: String,
}

/// Nova metadata keys may not contain `/`: `kelp.imagine-ai.eu/pool` is stored as
/// `kelp.imagine-ai.eu:pool`.
pub fn metadata_key(tag: &str) -> String {
    tag.replace('/', ":")
}

fn tag_of_metadata(key: &str) -> String {
    match key.split_once(':') {
        Some((domain, rest)) if domain.contains('.') => format!("{domain}/{rest}"),
        _ => key.to_string(),
    }
}

/// The Nova/Neutron tag marking a Cluster's objects.
pub fn uid_tag(uid: &str) -> String {
    format!("{UID_TAG_PREFIX}{uid}")
}

/// The name of the Cluster's security group.
pub fn group_name(uid: &str) -> String {
    format!("kelp-{uid}")
}

fn looks_like_uuid(s: &str) -> bool {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit())
}

/// Neutron without tags (`standard-attr-tag`): kelp cannot mark what it creates.
fn no_tags(e: CloudError) -> CloudError {
    match e {
        CloudError::NotFound(m) => CloudError::Invalid(format!(
            "{m} (Neutron does not support tags: kelp needs the standard-attr-tag extension)"
        )),
        other => other,
    }
}

impl OpenStackDriver {
    /// A driver; nothing is sent until the first call (Keystone is asked then).
    pub fn new(settings: OpenStackSettings) -> Result<Self, CloudError> {
        Url::parse(&settings.auth_url).map_err(|e| {
            CloudError::Invalid(format!("authUrl {:?} is not a URL: {e}", settings.auth_url))
        })?;
        for (svc, url) in &settings.endpoint_overrides {
            Url::parse(url).map_err(|e| {
                CloudError::Invalid(format!("endpoint override for {svc} {url:?}: {e}"))
            })?;
        }
        Ok(Self {
            settings,
            api: OnceCell::new(),
            calls: ApiCalls::new(),
            flavors: Mutex::default(),
            network: OnceCell::new(),
            fip_network: OnceCell::new(),
            groups: tokio::sync::Mutex::default(),
            no_capacity: Mutex::default(),
        })
    }

    /// Every API call this driver made, by service and verb.
    pub fn calls(&self) -> Arc<ApiCalls> {
        self.calls.clone()
    }

    pub fn settings(&self) -> &OpenStackSettings {
        &self.settings
    }

    async fn api(&self) -> Result<&Api, CloudError> {
        self.api.get_or_try_init(|| self.connect()).await
    }

    async fn connect(&self) -> Result<Api, CloudError> {
        let s = &self.settings;
        let what = format!("{}: authenticating", s.name);
        let keystone = match s.auth {
            OpenStackAuth::Custom(_) => None,
            _ => Some(s.auth_url.clone()),
        };
        let osauth_err = |e: osauth::Error| api::from_osauth(&e, &what, keystone.as_deref());
        let client = reqwest::Client::builder()
            .timeout(s.timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| CloudError::Invalid(format!("HTTP client: {e}")))?;
        let scope = |name: &str| osauth::common::IdOrName::from_name(name.to_string());
        let mut session = match &s.auth {
            OpenStackAuth::ApplicationCredential { id, secret } => {
                let auth = osauth::identity::ApplicationCredential::new(
                    &s.auth_url,
                    id.clone(),
                    secret.clone(),
                )
                .map_err(osauth_err)?;
                Session::new_with_client(client, auth).await
            }
            OpenStackAuth::Password {
                username,
                password,
                project_name,
                user_domain_name,
                project_domain_name,
            } => {
                let auth = osauth::identity::Password::new(
                    &s.auth_url,
                    username.clone(),
                    password.clone(),
                    user_domain_name.clone(),
                )
                .map_err(osauth_err)?
                .with_project_scope(scope(project_name), scope(project_domain_name));
                Session::new_with_client(client, auth).await
            }
            OpenStackAuth::Custom(a) => {
                Session::new_with_client(client, SharedAuth(a.clone())).await
            }
        }
        .map_err(osauth_err)?;
        if let Some(region) = &s.region {
            session.set_region(region.clone());
        }
        if let Some(i) = &s.interface {
            let interface = i.parse::<osauth::InterfaceType>().map_err(|_| {
                CloudError::Invalid(format!(
                    "interface {i:?}: expected public, internal or admin"
                ))
            })?;
            session.set_endpoint_interface(interface);
        }
        for (svc, url) in &s.endpoint_overrides {
            let url = Url::parse(url).expect("checked in new()");
            match svc.as_str() {
                "compute" => session.set_endpoint_override(COMPUTE, url),
                "image" => session.set_endpoint_override(IMAGE, url),
                "network" => session.set_endpoint_override(NETWORK, url),
                other => {
                    return Err(CloudError::Invalid(format!(
                        "endpoint override for unknown service {other:?}"
                    )));
                }
            }
        }
        Ok(Api {
            session,
            calls: self.calls.clone(),
            timeout: s.timeout,
            auth_url: keystone,
        })
    }

    async fn flavor_list(&self) -> Result<Vec<FlavorRef>, CloudError> {
        #[derive(Deserialize)]
        struct Root {
            flavors: Vec<FlavorJson>,
        }
        #[derive(Deserialize)]
        struct Specs {
            extra_specs: BTreeMap<String, String>,
        }
        let api = self.api().await?;
        let root: Root = api
            .json(
                COMPUTE,
                &Call::get(&["flavors", "detail"], "/flavors/detail").query("is_public", "None"),
            )
            .await?;
        let mut out = Vec::with_capacity(root.flavors.len());
        for f in root.flavors {
            // Clouds older than microversion 2.61 leave extra specs out of the list.
            let specs = match f.extra_specs {
                Some(s) => s,
                None => {
                    let s: Specs = api
                        .json(
                            COMPUTE,
                            &Call::get(
                                &["flavors", &f.id, "os-extra_specs"],
                                "/flavors/{id}/os-extra_specs",
                            ),
                        )
                        .await?;
                    s.extra_specs
                }
            };
            out.push(FlavorRef {
                kind: InstanceType {
                    price_per_hour: self.settings.price_overrides.get(&f.name).copied(),
                    name: f.name,
                    vcpus: f.vcpus,
                    memory_mb: f.ram,
                    disk_gb: Some(f.disk),
                    gpu: flavors::gpu_from_extra_specs(&specs),
                },
                id: f.id,
            });
        }
        Ok(out)
    }

    async fn flavor(&self, name: &str) -> Result<FlavorRef, CloudError> {
        if let Some(f) = self.flavors.lock().unwrap().get(name) {
            return Ok(f.clone());
        }
        self.instance_types().await?;
        self.flavors
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .ok_or_else(|| {
                CloudError::Invalid(format!("flavor {name:?} is not offered to this project"))
            })
    }

    async fn images(&self, filters: &[(&str, &str)]) -> Result<Vec<ImageJson>, CloudError> {
        #[derive(Deserialize)]
        struct Root {
            images: Vec<ImageJson>,
        }
        let mut call = Call::get(&["images"], "/images")
            .query("sort", "created_at:desc")
            .query("limit", "25");
        for (k, v) in filters {
            call = call.query(k, *v);
        }
        let root: Root = self.api().await?.json(IMAGE, &call).await?;
        Ok(root
            .images
            .into_iter()
            .filter(|i| i.status == "active")
            .collect())
    }

    /// The image named by `spec`: an ID, `key=value[,key=value]` Glance properties, or a
    /// name. The newest active match wins.
    async fn find_image(&self, spec: &str) -> Result<Option<Image>, CloudError> {
        let spec = spec.trim();
        let found = if looks_like_uuid(spec) {
            let call = Call::get(&["images", spec], "/images/{id}");
            match self.api().await?.json::<_, ImageJson>(IMAGE, &call).await {
                Ok(i) if i.status == "active" => vec![i],
                Ok(_) | Err(CloudError::NotFound(_)) => vec![],
                Err(e) => return Err(e),
            }
        } else if spec.contains('=') {
            let mut filters: Vec<(&str, &str)> = spec
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.trim(), v.trim()))
                .collect();
            filters.push(("status", "active"));
            self.images(&filters).await?
        } else {
            self.images(&[("name", spec), ("status", "active")]).await?
        };
        let newest = found
            .into_iter()
            .max_by(|a, b| a.created_at.cmp(&b.created_at));
        Ok(newest.map(|i| Image {
            name: i.name.unwrap_or_default(),
            id: i.id,
            created_at: i.created_at,
        }))
    }

    async fn networks(&self, filters: &[(&str, &str)]) -> Result<Vec<NetworkJson>, CloudError> {
        #[derive(Deserialize)]
        struct Root {
            networks: Vec<NetworkJson>,
        }
        let mut call = Call::get(&["networks"], "/networks");
        for (k, v) in filters {
            call = call.query(k, *v);
        }
        Ok(self
            .api()
            .await?
            .json::<_, Root>(NETWORK, &call)
            .await?
            .networks)
    }

    /// A network by name or ID.
    async fn network_named(&self, spec: &str, field: &str) -> Result<NetworkJson, CloudError> {
        let mut found = if looks_like_uuid(spec) {
            self.networks(&[("id", spec)]).await?
        } else {
            Vec::new()
        };
        if found.is_empty() {
            found = self.networks(&[("name", spec)]).await?;
        }
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(CloudError::Invalid(format!(
                "{field}: no network {spec:?} is visible to the project"
            ))),
            n => Err(CloudError::Invalid(format!(
                "{field}: {n} networks are named {spec:?}; give its ID"
            ))),
        }
    }

    /// The network machines attach to: the one named in the spec, else the project's
    /// only non-external network.
    async fn network_id(&self) -> Result<&String, CloudError> {
        self.network
            .get_or_try_init(|| async {
                if let Some(n) = &self.settings.network {
                    return Ok(self.network_named(n, "network").await?.id);
                }
                let mut nets: Vec<NetworkJson> = self
                    .networks(&[])
                    .await?
                    .into_iter()
                    .filter(|n| !n.external)
                    .collect();
                match nets.len() {
                    1 => Ok(nets.remove(0).id),
                    0 => Err(CloudError::Invalid(
                        "network: the project has no network; create one or set network".into(),
                    )),
                    _ => {
                        let names: Vec<String> = nets.iter().map(|n| n.name.clone()).collect();
                        Err(CloudError::Invalid(format!(
                            "network: the project has {} networks ({}); set network to one of them",
                            nets.len(),
                            names.join(", ")
                        )))
                    }
                }
            })
            .await
    }

    async fn fip_network_id(&self, pool: &str) -> Result<&String, CloudError> {
        self.fip_network
            .get_or_try_init(|| async {
                let net = self.network_named(pool, "floatingIpPool").await?;
                if !net.external {
                    return Err(CloudError::Invalid(format!(
                        "floatingIpPool: network {pool:?} is not external"
                    )));
                }
                Ok(net.id)
            })
            .await
    }

    /// The Cluster's security group, created (with its rules and tag) when missing.
    /// Found by name as well as by tag, so a crash between creating and tagging it
    /// leaves nothing behind.
    async fn security_group(&self, uid: &str, cluster: &str) -> Result<String, CloudError> {
        #[derive(Deserialize)]
        struct List {
            security_groups: Vec<Group>,
        }
        #[derive(Deserialize)]
        struct One {
            security_group: Group,
        }
        #[derive(Deserialize)]
        struct Group {
            id: String,
            #[serde(default)]
            tags: Vec<String>,
        }
        let mut groups = self.groups.lock().await;
        if let Some(id) = groups.get(uid) {
            return Ok(id.clone());
        }
        let api = self.api().await?;
        let name = group_name(uid);
        let tag = uid_tag(uid);
        let found: List = api
            .json(
                NETWORK,
                &Call::get(&["security-groups"], "/security-groups").query("name", &name),
            )
            .await?;
        let group = match found.security_groups.into_iter().next() {
            Some(g) => g,
            None => {
                let created: One = api
                    .json(
                        NETWORK,
                        &Call::new(Method::POST, &["security-groups"], "/security-groups").body(
                            json!({"security_group": {
                                "name": name,
                                "description": format!("kelp Cluster {cluster}: k3s between the Cluster's machines, SSH, the API and ingress from anywhere"),
                            }}),
                        ),
                    )
                    .await?;
                let id = created.security_group.id.clone();
                let rules = [
                    json!({"direction": "ingress", "ethertype": "IPv4", "remote_group_id": id}),
                    json!({"direction": "ingress", "ethertype": "IPv6", "remote_group_id": id}),
                ]
                .into_iter()
                .chain([22, 80, 443, 6443].into_iter().map(|port| {
                    json!({"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                           "port_range_min": port, "port_range_max": port,
                           "remote_ip_prefix": "0.0.0.0/0"})
                }));
                for mut rule in rules {
                    rule["security_group_id"] = json!(id);
                    api.send(
                        NETWORK,
                        &Call::new(
                            Method::POST,
                            &["security-group-rules"],
                            "/security-group-rules",
                        )
                        .body(json!({ "security_group_rule": rule })),
                    )
                    .await?;
                }
                created.security_group
            }
        };
        if !group.tags.contains(&tag) {
            api.send(
                NETWORK,
                &Call::new(
                    Method::PUT,
                    &["security-groups", &group.id, "tags", &tag],
                    "/security-groups/{id}/tags/{tag}",
                ),
            )
            .await
            .map_err(no_tags)?;
        }
        groups.insert(uid.to_string(), group.id.clone());
        Ok(group.id)
    }

    async fn servers(&self, filters: &[(&str, &str)]) -> Result<Vec<ServerJson>, CloudError> {
        #[derive(Deserialize)]
        struct Root {
            servers: Vec<ServerJson>,
        }
        let api = self.api().await?;
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut call = Call::get(&["servers", "detail"], "/servers/detail")
                .query("limit", PAGE.to_string());
            for (k, v) in filters {
                call = call.query(k, *v);
            }
            if let Some(m) = &marker {
                call = call.query("marker", m.clone());
            }
            let page: Root = api.json(COMPUTE, &call).await?;
            let n = page.servers.len();
            marker = page.servers.last().map(|s| s.id.clone());
            out.extend(page.servers);
            if n < PAGE {
                break;
            }
        }
        // Nova's lists leave out the fault of a server in ERROR; its own view has it
        // ("No valid host was found" decides whether the flavor is full).
        #[derive(Deserialize)]
        struct One {
            server: ServerJson,
        }
        for s in out
            .iter_mut()
            .filter(|s| s.status == "ERROR" && s.fault.is_none())
        {
            let call = Call::get(&["servers", &s.id], "/servers/{id}");
            match api.json::<_, One>(COMPUTE, &call).await {
                Ok(one) => s.fault = one.server.fault,
                Err(CloudError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn machine_of(&self, s: ServerJson) -> Option<Machine> {
        let state = match (s.status.as_str(), s.task_state.as_deref()) {
            ("DELETED" | "SOFT_DELETED", _) => return None,
            (_, Some("deleting")) => MachineState::Terminating,
            ("BUILD", _) => MachineState::Pending,
            (
                "ERROR" | "SHUTOFF" | "STOPPED" | "SUSPENDED" | "PAUSED" | "SHELVED"
                | "SHELVED_OFFLOADED",
                _,
            ) => MachineState::Failed,
            _ => MachineState::Running,
        };
        let flavor = s
            .flavor
            .get("original_name")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_default();
        if s.status == "ERROR" {
            let fault = s.fault.as_ref().map(|f| f.message.as_str()).unwrap_or("");
            if fault.to_ascii_lowercase().contains("no valid host") && !flavor.is_empty() {
                self.no_capacity
                    .lock()
                    .unwrap()
                    .insert(flavor.clone(), Instant::now());
            }
            tracing::warn!(server = %s.id, %fault, "OpenStack server in ERROR");
        }
        let mut addresses = Vec::new();
        for addr in s.addresses.values().flatten() {
            let kind = if addr.kind.as_deref() == Some("floating") {
                "ExternalIP"
            } else {
                "InternalIP"
            };
            addresses.push(Address {
                kind: kind.into(),
                address: addr.addr.clone(),
            });
        }
        Some(Machine {
            provider_id: format!("openstack:///{}", s.id),
            id: s.id,
            name: s.name,
            instance_type: flavor,
            state,
            addresses,
            tags: s
                .metadata
                .iter()
                .map(|(k, v)| (tag_of_metadata(k), v.clone()))
                .collect(),
            created_at: s.created,
        })
    }

    /// Floating IPs tagged for the Cluster; those whose server went are released, the
    /// rest are added to their machines' addresses, and running k3s servers without one
    /// get one.
    async fn floating_ips(&self, uid: &str, machines: &mut [Machine]) -> Result<(), CloudError> {
        let Some(pool) = self.settings.floating_ip_pool.clone() else {
            return Ok(());
        };
        #[derive(Deserialize)]
        struct List {
            floatingips: Vec<FloatingIpJson>,
        }
        #[derive(Deserialize)]
        struct One {
            floatingip: FloatingIpJson,
        }
        #[derive(Deserialize)]
        struct Ports {
            ports: Vec<PortJson>,
        }
        let api = self.api().await?;
        let tag = uid_tag(uid);
        let list: List = api
            .json(
                NETWORK,
                &Call::get(&["floatingips"], "/floatingips").query("tags", &tag),
            )
            .await?;
        let mut by_fixed: HashMap<String, String> = HashMap::new();
        for fip in list.floatingips {
            match (&fip.port_id, &fip.fixed_ip_address) {
                (Some(_), Some(fixed)) => {
                    by_fixed.insert(fixed.clone(), fip.floating_ip_address.clone());
                }
                _ => {
                    // Its server is gone: release it.
                    api.send_ignore_missing(
                        NETWORK,
                        &Call::new(
                            Method::DELETE,
                            &["floatingips", &fip.id],
                            "/floatingips/{id}",
                        ),
                    )
                    .await?;
                }
            }
        }
        for m in machines.iter_mut() {
            let ext = m
                .addresses
                .iter()
                .filter(|a| a.kind == "InternalIP")
                .find_map(|a| by_fixed.get(&a.address))
                .cloned();
            if let Some(ext) = ext {
                if !m.addresses.iter().any(|a| a.address == ext) {
                    m.addresses.push(Address {
                        kind: "ExternalIP".into(),
                        address: ext,
                    });
                }
                continue;
            }
            let wants = m.is_server();
            if !wants
                || m.state != MachineState::Running
                || m.addresses.iter().any(|a| a.kind == "ExternalIP")
            {
                continue;
            }
            let pool_id = self.fip_network_id(&pool).await?.clone();
            let ports: Ports = api
                .json(
                    NETWORK,
                    &Call::get(&["ports"], "/ports").query("device_id", &m.id),
                )
                .await?;
            let Some(port) = ports.ports.first() else {
                continue;
            };
            // A floating IP already on the port (tagging lost in a crash) is adopted.
            let existing: List = api
                .json(
                    NETWORK,
                    &Call::get(&["floatingips"], "/floatingips").query("port_id", &port.id),
                )
                .await?;
            let fip = match existing.floatingips.into_iter().next() {
                Some(f) => f,
                None => {
                    let one: One = api
                        .json(
                            NETWORK,
                            &Call::new(Method::POST, &["floatingips"], "/floatingips").body(
                                json!({"floatingip": {
                                    "floating_network_id": pool_id,
                                    "port_id": port.id,
                                    // Found by it at deletion even if tagging it failed.
                                    "description": tag,
                                }}),
                            ),
                        )
                        .await?;
                    one.floatingip
                }
            };
            api.send(
                NETWORK,
                &Call::new(
                    Method::PUT,
                    &["floatingips", &fip.id, "tags", &tag],
                    "/floatingips/{id}/tags/{tag}",
                ),
            )
            .await
            .map_err(no_tags)?;
            m.addresses.push(Address {
                kind: "ExternalIP".into(),
                address: fip.floating_ip_address,
            });
        }
        Ok(())
    }

    /// Deletes every object of a Neutron collection (`floatingips`, `security-groups`)
    /// that any of `filters` finds; already gone is fine.
    async fn delete_found(
        &self,
        collection: &str,
        filters: &[(&str, &str)],
    ) -> Result<(), CloudError> {
        #[derive(Deserialize)]
        struct Id {
            id: String,
        }
        let api = self.api().await?;
        let key = collection.replace('-', "_");
        let list_label = format!("/{collection}");
        let one_label = format!("/{collection}/{{id}}");
        let mut ids: Vec<String> = Vec::new();
        for (k, v) in filters {
            let found: HashMap<String, Vec<Id>> = api
                .json(NETWORK, &Call::get(&[collection], &list_label).query(k, *v))
                .await?;
            for o in found
                .into_iter()
                .filter(|(k, _)| *k == key)
                .flat_map(|(_, v)| v)
            {
                if !ids.contains(&o.id) {
                    ids.push(o.id);
                }
            }
        }
        for id in ids {
            api.send_ignore_missing(
                NETWORK,
                &Call::new(Method::DELETE, &[collection, &id], &one_label),
            )
            .await?;
        }
        Ok(())
    }

    fn short_of_capacity(&self, flavor: &str) -> bool {
        let mut map = self.no_capacity.lock().unwrap();
        match map.get(flavor) {
            Some(at) if at.elapsed() < NO_CAPACITY_FOR => true,
            Some(_) => {
                map.remove(flavor);
                false
            }
            None => false,
        }
    }
}

#[async_trait]
impl CloudDriver for OpenStackDriver {
    fn name(&self) -> &str {
        &self.settings.name
    }

    async fn instance_types(&self) -> Result<Vec<InstanceType>, CloudError> {
        let list = self.flavor_list().await?;
        let mut map = self.flavors.lock().unwrap();
        map.clear();
        for f in &list {
            map.insert(f.kind.name.clone(), f.clone());
        }
        Ok(list.into_iter().map(|f| f.kind).collect())
    }

    async fn resolve_image(&self, image: Option<&str>) -> Result<Image, CloudError> {
        match image.map(str::trim).filter(|s| !s.is_empty()) {
            Some(spec) => self.find_image(spec).await?.ok_or_else(|| {
                CloudError::Invalid(format!(
                    "image {spec:?}: no active image with that ID, name or properties"
                ))
            }),
            None => {
                for spec in DEFAULT_IMAGES {
                    if let Some(i) = self.find_image(spec).await? {
                        return Ok(i);
                    }
                }
                Err(CloudError::Invalid(format!(
                    "image: no default Ubuntu image found ({}); set the pool's image",
                    DEFAULT_IMAGES.join("; ")
                )))
            }
        }
    }

    async fn create(&self, req: &CreateRequest) -> Result<Vec<Machine>, CloudError> {
        if req.count == 0 {
            return Ok(Vec::new());
        }
        let uid = req.owner.cluster_uid.clone();
        if uid.is_empty() {
            return Err(CloudError::Invalid("create: no owning Cluster UID".into()));
        }
        let flavor = self.flavor(&req.instance_type).await?;
        if self.short_of_capacity(&flavor.kind.name) {
            return Err(CloudError::InsufficientCapacity {
                instance_type: flavor.kind.name.clone(),
                message: "Nova found no valid host for it in the last 10 minutes".into(),
            });
        }
        // A batch whose answer was lost (crash, timeout) is adopted, not started twice.
        let batch_tag: String = req.idempotency_key.chars().take(60).collect();
        let batch_tag = batch_tag.replace([',', '/'], "-");
        let existing = self.servers(&[("tags", &batch_tag)]).await?;
        if !existing.is_empty() {
            return Ok(existing
                .into_iter()
                .filter_map(|s| self.machine_of(s))
                .collect());
        }
        let image = self.resolve_image(req.image.as_deref()).await?;
        let network = self.network_id().await?.clone();
        let cluster = req.owner.cluster.clone().unwrap_or_default();
        let group = self.security_group(&uid, &cluster).await?;
        let metadata: BTreeMap<String, String> = req
            .owner
            .tags()
            .into_iter()
            .map(|(k, mut v)| {
                v.truncate(255);
                (metadata_key(&k), v)
            })
            .collect();
        // Nova numbers the servers of a batch (`<name>-1`, ...); a part of the batch key
        // keeps names unique across batches (and so the Cluster status's machine list).
        let short: String = req
            .idempotency_key
            .trim_start_matches("kelp-")
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(6)
            .collect();
        let mut server = json!({
            "name": format!("{}-{short}", req.name_prefix),
            "flavorRef": flavor.id,
            "imageRef": image.id,
            "networks": [{"uuid": network}],
            "security_groups": [{"name": group}],
            "min_count": req.count,
            "max_count": req.count,
            "return_reservation_id": true,
            "metadata": metadata,
            "tags": [uid_tag(&uid), batch_tag],
            "user_data": base64::engine::general_purpose::STANDARD.encode(&req.user_data),
        });
        if let Some(k) = &self.settings.key_name {
            server["key_name"] = json!(k);
        }
        #[derive(Deserialize)]
        struct Reservation {
            reservation_id: String,
        }
        let api = self.api().await?;
        let created: Reservation = match api
            .json(
                COMPUTE,
                &Call::new(Method::POST, &["servers"], "/servers")
                    .body(json!({ "server": server })),
            )
            .await
        {
            Ok(r) => r,
            Err(CloudError::InsufficientCapacity { message, .. }) => {
                return Err(CloudError::InsufficientCapacity {
                    instance_type: flavor.kind.name,
                    message,
                });
            }
            Err(e) => return Err(e),
        };
        let servers = self
            .servers(&[("reservation_id", &created.reservation_id)])
            .await?;
        Ok(servers
            .into_iter()
            .filter_map(|s| self.machine_of(s))
            .collect())
    }

    async fn list(&self, tags: &BTreeMap<String, String>) -> Result<Vec<Machine>, CloudError> {
        let uid = tags.get(tags::CLUSTER_UID);
        let filter = uid.map(|u| uid_tag(u));
        let servers = match &filter {
            Some(t) => self.servers(&[("tags", t)]).await?,
            // Without a UID: every server kelp made in the project.
            None => self
                .servers(&[])
                .await?
                .into_iter()
                .filter(|s| s.metadata.contains_key(&metadata_key(tags::MANAGED_BY)))
                .collect(),
        };
        let mut machines: Vec<Machine> = servers
            .into_iter()
            .filter_map(|s| self.machine_of(s))
            .filter(|m| tags.iter().all(|(k, v)| m.tags.get(k) == Some(v)))
            .collect();
        if let Some(uid) = uid {
            self.floating_ips(uid, &mut machines).await?;
        }
        Ok(machines)
    }

    async fn delete(&self, ids: &[String]) -> Result<(), CloudError> {
        let api = self.api().await?;
        for id in ids {
            api.send_ignore_missing(
                COMPUTE,
                &Call::new(Method::DELETE, &["servers", id], "/servers/{id}"),
            )
            .await?;
        }
        Ok(())
    }

    async fn release(&self, tags: &BTreeMap<String, String>) -> Result<(), CloudError> {
        let Some(uid) = tags.get(tags::CLUSTER_UID) else {
            return Ok(());
        };
        let tag = uid_tag(uid);
        // Found by tag, and by what kelp set at creation in case tagging never happened.
        self.delete_found("floatingips", &[("tags", &tag), ("description", &tag)])
            .await?;
        self.delete_found(
            "security-groups",
            &[("tags", &tag), ("name", &group_name(uid))],
        )
        .await?;
        self.groups.lock().await.remove(uid);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_keys_round_trip() {
        for t in [tags::CLUSTER_UID, tags::POOL, tags::MANAGED_BY, tags::ROLE] {
            let k = metadata_key(t);
            assert!(!k.contains('/'), "{k}");
            assert_eq!(tag_of_metadata(&k), t);
        }
        assert_eq!(tag_of_metadata("plain"), "plain");
    }

    #[test]
    fn uuids() {
        assert!(looks_like_uuid("11111111-2222-3333-4444-555555555555"));
        assert!(looks_like_uuid("999f045cb1ff4684a15ebb338af69460"));
        assert!(!looks_like_uuid("ubuntu-24.04"));
    }

    #[test]
    fn bad_urls_are_invalid() {
        let auth = OpenStackAuth::ApplicationCredential {
            id: "x".into(),
            secret: "y".into(),
        };
        let e = OpenStackDriver::new(OpenStackSettings::new("not a url", auth)).unwrap_err();
        assert!(e.to_string().contains("authUrl \"not a url\""), "{e}");
    }
}
