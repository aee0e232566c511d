//! The EC2 driver: Amazon EC2 or any EC2-compatible API behind `endpoint_url`.
//!
//! One RunInstances per batch (MinCount = MaxCount = count, so a batch starts whole
//! or not at all) with the batch's idempotency key as ClientToken; ownership tags on
//! the instances and their volumes in the same call; tag filters on DescribeInstances;
//! TerminateInstances where an ID EC2 no longer knows is success.
//!
//! The SDK's own retries are off: kelp's controller backs off per object and counts
//! every cloud call, so a second retry layer underneath would multiply calls during
//! an outage and hide throttling from the metrics.

mod errors;
mod prices;
mod specs;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::config::timeout::TimeoutConfig;
use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::operation::describe_instances::builders::DescribeInstancesFluentBuilder;
use aws_sdk_ec2::primitives::DateTimeFormat;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, InstanceStateName, LocationType, Placement,
    ResourceType, Tag, TagSpecification, VolumeType,
};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use base64::Engine as _;
use tokio::sync::Mutex;
use tokio::time::Instant;

pub use errors::classify;
pub use prices::builtin_price;

/// The instance types kelp knows without asking EC2: the types of its price table with
/// their vCPUs, memory and GPUs, priced from the table (us-east-1 estimates). Which of
/// them a region offers is not known without asking EC2.
pub fn builtin_catalogue() -> Vec<crate::InstanceType> {
    specs::SPECS
        .iter()
        .map(|(name, vcpus, memory_mb, gpu)| crate::InstanceType {
            name: name.to_string(),
            vcpus: *vcpus,
            memory_mb: *memory_mb,
            disk_gb: None,
            gpu: gpu.map(|(count, vendor, model, memory_mb)| crate::GpuInfo {
                count,
                vendor: vendor.to_string(),
                model: model.to_string(),
                memory_mb,
            }),
            price_per_hour: builtin_price(name),
        })
        .collect()
}

use crate::driver::{
    Address, CATALOGUE_TTL, CloudDriver, CloudError, CreateRequest, GpuInfo, Image, InstanceType,
    Machine, MachineState,
};

/// The driver's name, the label of its metrics.
pub const DRIVER_NAME: &str = "ec2";
/// Canonical's AWS account, the owner of the official Ubuntu images.
pub const CANONICAL_OWNER: &str = "099720109477";
/// Name patterns of the default image, best first: Ubuntu 24.04, then 22.04 (amd64
/// server; `hvm-ssd` and `hvm-ssd-gp3` builds).
pub const DEFAULT_IMAGE_PATTERNS: [&str; 2] = [
    "ubuntu/images/hvm-ssd*/ubuntu-noble-24.04-amd64-server-*",
    "ubuntu/images/hvm-ssd*/ubuntu-jammy-22.04-amd64-server-*",
];
/// Names per DescribeInstanceTypes (EC2 takes at most 100) and per `instance-type`
/// filter of DescribeInstanceTypeOfferings, when only named types are read.
const NAMES_PER_CALL: usize = 100;
/// TerminateInstances takes at most this many IDs.
const TERMINATE_BATCH: usize = 1000;
/// DescribeInstances returns at most this many per page.
const DESCRIBE_PAGE: i32 = 1000;
/// Values of one `instance-id` filter (EC2 accepts up to 200 values per filter).
const ID_FILTER_CHUNK: usize = 200;
/// EC2 refuses user data over 16 KiB (before base64).
const MAX_USER_DATA: usize = 16 * 1024;
/// EC2 ClientTokens are at most 64 ASCII characters.
const MAX_CLIENT_TOKEN: usize = 64;
/// Every state but `terminated`.
const LIVE_STATES: [&str; 5] = ["pending", "running", "stopping", "stopped", "shutting-down"];
/// First parts of AWS region names (`us-east-1`, `us-gov-west-1`, `cn-north-1`).
const REGION_AREAS: [&str; 10] = ["af", "ap", "ca", "cn", "eu", "il", "me", "mx", "sa", "us"];
/// AWS's regions. A name of AWS's shape must be one of them, with or without an
/// endpoint override: `eu-central-9` is a typo, not a region, and the API behind it
/// (AWS's, or moto) answers with an unhelpful connection or server error.
pub const AWS_REGIONS: &[&str] = &[
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "cn-north-1",
    "cn-northwest-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-gov-east-1",
    "us-gov-west-1",
    "us-west-1",
    "us-west-2",
];

/// Static AWS credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Ec2Credentials {
    /// `AKIA...` or `ASIA...`.
    pub access_key_id: String,
    /// The secret key.
    pub secret_access_key: String,
    /// For temporary (STS) credentials.
    pub session_token: Option<String>,
}

impl fmt::Debug for Ec2Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ec2Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Ec2Credentials {
    /// From `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and (optionally)
    /// `AWS_SESSION_TOKEN`; None when either key is unset or empty.
    pub fn from_env() -> Option<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Some(Self {
            access_key_id: var("AWS_ACCESS_KEY_ID")?,
            secret_access_key: var("AWS_SECRET_ACCESS_KEY")?,
            session_token: var("AWS_SESSION_TOKEN"),
        })
    }
}

/// One EC2 account and region (the Cluster's `cloud.ec2` block, plus the Secret).
#[derive(Clone, Debug, PartialEq)]
pub struct Ec2Settings {
    /// e.g. `us-east-1`.
    pub region: String,
    /// An EC2-compatible endpoint (or moto) instead of the region's.
    pub endpoint_url: Option<String>,
    /// None: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` from
    /// the environment (no other provider chain: no profiles, no instance metadata).
    pub credentials: Option<Ec2Credentials>,
    /// Subnet for the machines; the default VPC's otherwise.
    pub subnet_id: Option<String>,
    /// Security groups for every machine; the VPC's default group otherwise.
    pub security_group_ids: Vec<String>,
    /// An existing key pair for SSH.
    pub key_name: Option<String>,
    /// Start machines in this zone and offer only the types it has. Ignored for
    /// placement when `subnet_id` is set (the subnet fixes the zone).
    pub availability_zone: Option<String>,
    /// USD per hour by instance type, over the built-in table ([`builtin_price`]).
    pub price_overrides: BTreeMap<String, f64>,
    /// How long the instance type catalogue is cached ([`CATALOGUE_TTL`], an hour).
    pub types_ttl: Duration,
    /// Accounts whose images an image *name* may resolve to (`self`, `amazon`, an
    /// account ID). Names are not unique across accounts: without an owner filter,
    /// anyone could publish a newer image of the same name.
    pub image_owners: Vec<String>,
    /// Whole-call timeout of every EC2 request.
    pub operation_timeout: Duration,
    /// Size of the root volume (gp3) in GiB; None keeps the image's (8 GiB for
    /// Ubuntu, too small for GPU drivers and model images).
    pub root_volume_gb: Option<u32>,
}

impl Default for Ec2Settings {
    fn default() -> Self {
        Self {
            region: String::new(),
            endpoint_url: None,
            credentials: None,
            subnet_id: None,
            security_group_ids: Vec::new(),
            key_name: None,
            availability_zone: None,
            price_overrides: BTreeMap::new(),
            types_ttl: CATALOGUE_TTL,
            image_owners: vec![
                "self".to_string(),
                CANONICAL_OWNER.to_string(),
                "amazon".to_string(),
            ],
            operation_timeout: Duration::from_secs(30),
            root_volume_gb: None,
        }
    }
}

impl Ec2Settings {
    /// Defaults for `region`.
    pub fn new(region: impl Into<String>) -> Self {
        Self {
            region: region.into(),
            ..Self::default()
        }
    }
}

/// The image cache's key: what the spec names, trimmed; None for the default image.
fn image_key(image: Option<&str>) -> Option<String> {
    image
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// An image and its root device (where the root volume size goes).
#[derive(Clone)]
struct Resolved {
    image: Image,
    root_device: Option<String>,
}

impl Resolved {
    fn of(i: &aws_sdk_ec2::types::Image) -> Option<Self> {
        Some(Self {
            image: Image {
                id: i.image_id()?.to_string(),
                name: i.name().unwrap_or_default().to_string(),
                created_at: i.creation_date().map(str::to_string),
            },
            root_device: i.root_device_name().map(str::to_string),
        })
    }
}

/// Images resolved by what a spec names (None: the default Ubuntu), each kept as long
/// as the catalogue ([`Ec2Settings::types_ttl`]): every create of the same image asks
/// EC2 once. Cheap to clone; clones share the entries, so the drivers of one account
/// and region (which see the same images) can share one cache
/// ([`Ec2Driver::with_images`]).
#[derive(Clone, Default)]
pub struct ImageCache(Arc<std::sync::Mutex<ImageEntries>>);

/// Resolved images by [`image_key`], with when each was resolved.
type ImageEntries = std::collections::HashMap<Option<String>, (Instant, Resolved)>;

impl ImageCache {
    fn get(&self, key: &Option<String>, ttl: Duration) -> Option<Resolved> {
        let entries = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (at, r) = entries.get(key)?;
        (at.elapsed() < ttl).then(|| r.clone())
    }

    fn put(&self, key: Option<String>, r: Resolved) {
        let mut entries = self.0.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(key, (Instant::now(), r));
    }

    fn forget(&self, key: &Option<String>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    /// Images held (fresh or not).
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The EC2 driver. Cheap to share behind an `Arc`; the catalogue cache is shared.
pub struct Ec2Driver {
    client: aws_sdk_ec2::Client,
    settings: Ec2Settings,
    types: Mutex<Option<(Instant, Vec<InstanceType>)>>,
    /// Images resolved so far: the driver's own unless [`Ec2Driver::with_images`] gave
    /// a shared one.
    images: ImageCache,
}

impl fmt::Debug for Ec2Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ec2Driver")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Ec2Driver {
    /// A driver for `settings`. Fails with Invalid for a malformed region or endpoint
    /// and with Unauthorized when there are no credentials at all. Makes no call.
    pub fn new(settings: Ec2Settings) -> Result<Self, CloudError> {
        let has_endpoint = settings.endpoint_url.is_some();
        if !valid_region(&settings.region, has_endpoint) {
            return Err(CloudError::Invalid(format!(
                "spec.cloud.ec2.region: {:?} is not a region name (e.g. us-east-1)",
                settings.region
            )));
        }
        if aws_shaped(&settings.region) && !AWS_REGIONS.contains(&settings.region.as_str()) {
            return Err(CloudError::Invalid(format!(
                "spec.cloud.ec2.region: {:?} is not an AWS region (known: {})",
                settings.region,
                AWS_REGIONS.join(", ")
            )));
        }
        if let Some(url) = &settings.endpoint_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(CloudError::Invalid(format!(
                "EC2 endpoint {url:?} is not an http(s) URL"
            )));
        }
        let creds = settings
            .credentials
            .clone()
            .or_else(Ec2Credentials::from_env)
            .ok_or_else(|| {
                CloudError::Unauthorized(
                    "no EC2 credentials: set the credentials Secret or AWS_ACCESS_KEY_ID and \
                     AWS_SECRET_ACCESS_KEY"
                        .to_string(),
                )
            })?;

        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut config = aws_sdk_ec2::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .credentials_provider(Credentials::new(
                creds.access_key_id,
                creds.secret_access_key,
                creds.session_token,
                None,
                "kelp",
            ))
            .http_client(http)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10).min(settings.operation_timeout))
                    .operation_timeout(settings.operation_timeout)
                    .build(),
            )
            // One attempt per call: the operator's per-object backoff is the only
            // retry layer, and its call counters see every request EC2 sees.
            .retry_config(RetryConfig::standard().with_max_attempts(1));
        if let Some(url) = &settings.endpoint_url {
            config = config.endpoint_url(url.trim_end_matches('/'));
        }
        Ok(Self {
            client: aws_sdk_ec2::Client::from_conf(config.build()),
            settings,
            types: Mutex::new(None),
            images: ImageCache::default(),
        })
    }

    /// The driver resolving images through `images`, shared with the drivers of the
    /// same account, region and endpoint (the caller's to key).
    pub fn with_images(mut self, images: ImageCache) -> Self {
        self.images = images;
        self
    }

    /// The SDK client, for tests and tools that check what the driver did.
    pub fn client(&self) -> &aws_sdk_ec2::Client {
        &self.client
    }

    /// The settings the driver was built with.
    pub fn settings(&self) -> &Ec2Settings {
        &self.settings
    }

    fn price(&self, name: &str) -> Option<f64> {
        self.settings
            .price_overrides
            .get(name)
            .copied()
            .or_else(|| builtin_price(name))
    }

    /// Instance types offered in the region (or the configured zone); with `names`,
    /// only those of them (an `instance-type` filter).
    async fn offered_types(
        &self,
        names: Option<&[String]>,
    ) -> Result<BTreeSet<String>, CloudError> {
        let mut req = self.client.describe_instance_type_offerings();
        req = match &self.settings.availability_zone {
            Some(az) => req
                .location_type(LocationType::AvailabilityZone)
                .filters(Filter::builder().name("location").values(az).build()),
            None => req.location_type(LocationType::Region),
        };
        if let Some(names) = names {
            req = req.filters(
                Filter::builder()
                    .name("instance-type")
                    .set_values(Some(names.to_vec()))
                    .build(),
            );
        }
        let mut pages = req.into_paginator().send();
        let mut offered = BTreeSet::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| errors::from_sdk(e, ""))?;
            offered.extend(
                page.instance_type_offerings()
                    .iter()
                    .filter_map(|o| o.instance_type().map(|t| t.as_str().to_string())),
            );
        }
        Ok(offered)
    }

    /// The whole catalogue: every type DescribeInstanceTypes knows that is offered.
    async fn fetch_types(&self) -> Result<Vec<InstanceType>, CloudError> {
        let offered = self.offered_types(None).await?;
        let mut pages = self
            .client
            .describe_instance_types()
            .max_results(100)
            .into_paginator()
            .send();
        let mut types = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| errors::from_sdk(e, ""))?;
            types.extend(
                page.instance_types()
                    .iter()
                    .filter_map(|i| self.type_of(i))
                    .filter(|t| offered.contains(&t.name)),
            );
        }
        types.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(types)
    }

    /// The offered types among `names` only: DescribeInstanceTypeOfferings filtered by
    /// `instance-type`, then DescribeInstanceTypes of those (never of a name EC2 does
    /// not offer, which it would refuse with InvalidInstanceType).
    async fn fetch_named(&self, names: &[String]) -> Result<Vec<InstanceType>, CloudError> {
        // EC2's names are lower case; anything but letters, digits, dots and dashes
        // (a wildcard) names no type.
        let wanted: BTreeSet<String> = names
            .iter()
            .map(|n| n.trim().to_ascii_lowercase())
            .filter(|n| {
                !n.is_empty()
                    && n.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
            })
            .collect();
        let wanted: Vec<String> = wanted.into_iter().collect();
        let mut offered = BTreeSet::new();
        for chunk in wanted.chunks(NAMES_PER_CALL) {
            offered.extend(self.offered_types(Some(chunk)).await?);
        }
        let offered: Vec<String> = offered.into_iter().collect();
        let mut types = Vec::new();
        for chunk in offered.chunks(NAMES_PER_CALL) {
            let mut pages = self
                .client
                .describe_instance_types()
                .set_instance_types(Some(
                    chunk
                        .iter()
                        .map(|n| aws_sdk_ec2::types::InstanceType::from(n.as_str()))
                        .collect(),
                ))
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| errors::from_sdk(e, ""))?;
                types.extend(
                    page.instance_types()
                        .iter()
                        .filter_map(|i| self.type_of(i))
                        .filter(|t| chunk.contains(&t.name)),
                );
            }
        }
        types.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(types)
    }

    /// One type of a DescribeInstanceTypes page, priced; None without a name.
    fn type_of(&self, info: &aws_sdk_ec2::types::InstanceTypeInfo) -> Option<InstanceType> {
        let name = info.instance_type()?.as_str();
        Some(InstanceType {
            name: name.to_string(),
            vcpus: info
                .v_cpu_info()
                .and_then(|v| v.default_v_cpus())
                .map_or(0, non_negative_u32),
            memory_mb: info
                .memory_info()
                .and_then(|m| m.size_in_mib())
                .map_or(0, |m| u64::try_from(m).unwrap_or(0)),
            disk_gb: None,
            gpu: info.gpu_info().and_then(gpu_of),
            price_per_hour: self.price(name),
        })
    }

    /// The newest available image whose name matches `pattern` (EC2 wildcards),
    /// owned by one of `owners`.
    async fn newest_image(
        &self,
        pattern: &str,
        owners: &[String],
        amd64_only: bool,
    ) -> Result<Option<Resolved>, CloudError> {
        let mut req = self
            .client
            .describe_images()
            .set_owners((!owners.is_empty()).then(|| owners.to_vec()))
            .filters(Filter::builder().name("name").values(pattern).build())
            .filters(Filter::builder().name("state").values("available").build());
        if amd64_only {
            req = req.filters(
                Filter::builder()
                    .name("architecture")
                    .values("x86_64")
                    .build(),
            );
        }
        let out = req.send().await.map_err(|e| errors::from_sdk(e, ""))?;
        // Newest creation date wins; the name breaks ties (build dates end the names).
        Ok(out.images().iter().filter_map(Resolved::of).max_by(|a, b| {
            (&a.image.created_at, &a.image.name).cmp(&(&b.image.created_at, &b.image.name))
        }))
    }

    async fn image_by_id(&self, id: &str) -> Result<Resolved, CloudError> {
        let missing = || {
            CloudError::Invalid(format!(
                "image {id} does not exist in {}",
                self.settings.region
            ))
        };
        let out = match self.client.describe_images().image_ids(id).send().await {
            Ok(out) => out,
            Err(e) if e.code().is_some_and(|c| c.starts_with("InvalidAMIID.")) => {
                return Err(missing());
            }
            Err(e) => return Err(errors::from_sdk(e, "")),
        };
        out.images()
            .iter()
            .find(|i| i.image_id() == Some(id))
            .and_then(Resolved::of)
            .ok_or_else(missing)
    }

    /// See [`CloudDriver::resolve_image`]; from the cache while it is fresh.
    async fn resolve(&self, image: Option<&str>) -> Result<Resolved, CloudError> {
        let key = image_key(image);
        if let Some(r) = self.images.get(&key, self.settings.types_ttl) {
            return Ok(r);
        }
        let r = self.resolve_uncached(key.as_deref()).await?;
        self.images.put(key, r.clone());
        Ok(r)
    }

    async fn resolve_uncached(&self, image: Option<&str>) -> Result<Resolved, CloudError> {
        let region = &self.settings.region;
        match image.map(str::trim).filter(|s| !s.is_empty()) {
            None => {
                let owners = [CANONICAL_OWNER.to_string()];
                for pattern in DEFAULT_IMAGE_PATTERNS {
                    if let Some(img) = self.newest_image(pattern, &owners, true).await? {
                        return Ok(img);
                    }
                }
                Err(CloudError::Invalid(format!(
                    "no Ubuntu 24.04 or 22.04 amd64 image from Canonical ({CANONICAL_OWNER}) \
                     in {region}; set the machine image"
                )))
            }
            Some(id) if is_ami_id(id) => self.image_by_id(id).await,
            Some(name) => self
                .newest_image(name, &self.settings.image_owners, false)
                .await?
                .ok_or_else(|| {
                    CloudError::Invalid(format!(
                        "no image named {name:?} owned by {} in {region}",
                        self.settings.image_owners.join(", ")
                    ))
                }),
        }
    }

    /// A DescribeInstances of every state but terminated, 1000 per page.
    fn describe_live(&self) -> DescribeInstancesFluentBuilder {
        self.client
            .describe_instances()
            .max_results(DESCRIBE_PAGE)
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .set_values(Some(LIVE_STATES.iter().map(|s| s.to_string()).collect()))
                    .build(),
            )
    }

    /// TerminateInstances for at most [`TERMINATE_BATCH`] IDs. IDs EC2 does not know
    /// are dropped from the batch and the rest tried again, so one stale ID never
    /// keeps the others alive.
    async fn terminate_batch(&self, batch: &[String]) -> Result<(), CloudError> {
        let mut ids: Vec<String> = batch.to_vec();
        // Each round removes at least one ID, or ends.
        while !ids.is_empty() {
            let err = match self
                .client
                .terminate_instances()
                .set_instance_ids(Some(ids.clone()))
                .send()
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            if !matches!(
                err.code(),
                Some(errors::INSTANCE_NOT_FOUND | errors::INSTANCE_MALFORMED)
            ) {
                return Err(errors::from_sdk(err, ""));
            }
            let gone = ids_named_in(err.message().unwrap_or(""), &ids);
            if gone.is_empty() {
                if ids.len() == 1 {
                    return Ok(());
                }
                // EC2 did not say which: one at a time.
                for id in &ids {
                    self.terminate_one(id).await?;
                }
                return Ok(());
            }
            ids.retain(|id| !gone.contains(id));
        }
        Ok(())
    }

    async fn terminate_one(&self, id: &str) -> Result<(), CloudError> {
        match self
            .client
            .terminate_instances()
            .instance_ids(id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.code(),
                    Some(errors::INSTANCE_NOT_FOUND | errors::INSTANCE_MALFORMED)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(errors::from_sdk(e, "")),
        }
    }
}

#[async_trait]
impl CloudDriver for Ec2Driver {
    fn name(&self) -> &str {
        DRIVER_NAME
    }

    /// DescribeInstanceTypes filtered by DescribeInstanceTypeOfferings, cached for
    /// `types_ttl`. Concurrent callers share one refresh.
    async fn instance_types(&self) -> Result<Vec<InstanceType>, CloudError> {
        let mut cache = self.types.lock().await;
        if let Some((at, types)) = cache.as_ref()
            && at.elapsed() < self.settings.types_ttl
        {
            return Ok(types.clone());
        }
        let types = self.fetch_types().await?;
        *cache = Some((Instant::now(), types.clone()));
        Ok(types)
    }

    /// From the cached catalogue when it is fresh; otherwise DescribeInstanceTypeOfferings
    /// filtered by `instance-type` and DescribeInstanceTypes of the offered ones alone
    /// (not cached here: the operator caches them per set of names).
    async fn instance_types_named(
        &self,
        names: &[String],
    ) -> Result<Vec<InstanceType>, CloudError> {
        if let Some((at, types)) = self.types.lock().await.as_ref()
            && at.elapsed() < self.settings.types_ttl
        {
            return Ok(types
                .iter()
                .filter(|t| t.is_one_of(names))
                .cloned()
                .collect());
        }
        self.fetch_named(names).await
    }

    /// None: the newest Canonical Ubuntu 24.04 (else 22.04) amd64 server image.
    /// `ami-...`: that image. Anything else: the newest image of that name (EC2
    /// wildcards `*` and `?` allowed) owned by one of `image_owners`.
    async fn resolve_image(&self, image: Option<&str>) -> Result<Image, CloudError> {
        self.resolve(image).await.map(|r| r.image)
    }

    async fn create(&self, req: &CreateRequest) -> Result<Vec<Machine>, CloudError> {
        validate_request(req)?;
        let count = i32::try_from(req.count)
            .map_err(|_| CloudError::Invalid(format!("cannot start {} machines", req.count)))?;
        let Resolved { image, root_device } = self.resolve(req.image.as_deref()).await?;

        let mut tags = req.owner.tags();
        tags.entry("Name".to_string()).or_insert_with(|| {
            if req.name_prefix.is_empty() {
                "kelp".to_string()
            } else {
                req.name_prefix.clone()
            }
        });
        let ec2_tags: Vec<Tag> = tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        let spec = |rt: ResourceType| {
            TagSpecification::builder()
                .resource_type(rt)
                .set_tags(Some(ec2_tags.clone()))
                .build()
        };

        let mut run = self
            .client
            .run_instances()
            .min_count(count)
            .max_count(count)
            .instance_type(aws_sdk_ec2::types::InstanceType::from(
                req.instance_type.as_str(),
            ))
            .image_id(&image.id)
            .tag_specifications(spec(ResourceType::Instance))
            .tag_specifications(spec(ResourceType::Volume))
            .set_subnet_id(self.settings.subnet_id.clone())
            .set_key_name(self.settings.key_name.clone());
        if !req.user_data.is_empty() {
            run = run.user_data(base64::engine::general_purpose::STANDARD.encode(&req.user_data));
        }
        if !req.idempotency_key.is_empty() {
            run = run.client_token(client_token(&req.idempotency_key));
        }
        if !self.settings.security_group_ids.is_empty() {
            run = run.set_security_group_ids(Some(self.settings.security_group_ids.clone()));
        }
        if let (Some(gb), Some(device)) =
            (req.disk_gb.or(self.settings.root_volume_gb), root_device)
        {
            let size = i32::try_from(gb)
                .map_err(|_| CloudError::Invalid(format!("root volume of {gb} GiB")))?;
            run = run.block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name(device)
                    .ebs(
                        EbsBlockDevice::builder()
                            .volume_size(size)
                            .volume_type(VolumeType::Gp3)
                            .delete_on_termination(true)
                            .build(),
                    )
                    .build(),
            );
        }
        if let (None, Some(az)) = (&self.settings.subnet_id, &self.settings.availability_zone) {
            run = run.placement(Placement::builder().availability_zone(az).build());
        }
        let out = match run.send().await {
            Ok(out) => out,
            Err(e) => {
                // An image deregistered since it was resolved: resolve it again next time.
                if e.code().is_some_and(|c| c.starts_with("InvalidAMIID.")) {
                    self.images.forget(&image_key(req.image.as_deref()));
                }
                return Err(errors::from_sdk(e, &req.instance_type));
            }
        };
        tracing::info!(
            driver = DRIVER_NAME,
            count = req.count,
            instance_type = %req.instance_type,
            image = %image.id,
            reservation = out.reservation_id().unwrap_or_default(),
            "started instances"
        );
        Ok(out
            .instances()
            .iter()
            .filter_map(|i| machine_of(i, &tags))
            .collect())
    }

    /// DescribeInstances with a `tag:<key>` filter per tag and every state but
    /// terminated; 1000 per page.
    async fn list(&self, tags: &BTreeMap<String, String>) -> Result<Vec<Machine>, CloudError> {
        let mut req = self.describe_live();
        for (k, v) in tags {
            req = req.filters(Filter::builder().name(format!("tag:{k}")).values(v).build());
        }
        described(req).await
    }

    /// DescribeInstances with an `instance-id` filter (values in chunks of
    /// [`ID_FILTER_CHUNK`]) and the live states, keeping the instances that carry every
    /// tag of `tags`. A filter, not `InstanceIds`: an instance EC2 does not show yet
    /// (eventual consistency right after RunInstances) is left out instead of failing
    /// the call with InvalidInstanceID.NotFound.
    async fn list_ids(
        &self,
        tags: &BTreeMap<String, String>,
        ids: &[String],
    ) -> Result<Vec<Machine>, CloudError> {
        let mut machines = Vec::new();
        for chunk in ids.chunks(ID_FILTER_CHUNK) {
            let req = self.describe_live().filters(
                Filter::builder()
                    .name("instance-id")
                    .set_values(Some(chunk.to_vec()))
                    .build(),
            );
            machines.extend(
                described(req)
                    .await?
                    .into_iter()
                    .filter(|m| tags.iter().all(|(k, v)| m.tags.get(k) == Some(v))),
            );
        }
        Ok(machines)
    }

    /// TerminateInstances in batches of 1000; unknown and malformed IDs are success.
    async fn delete(&self, ids: &[String]) -> Result<(), CloudError> {
        let mut unique: Vec<String> = Vec::with_capacity(ids.len());
        let mut seen = BTreeSet::new();
        for id in ids.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            if seen.insert(id) {
                unique.push(id.to_string());
            }
        }
        for batch in unique.chunks(TERMINATE_BATCH) {
            self.terminate_batch(batch).await?;
        }
        Ok(())
    }
}

/// Every page of a DescribeInstances, as machines.
async fn described(req: DescribeInstancesFluentBuilder) -> Result<Vec<Machine>, CloudError> {
    let mut pages = req.into_paginator().send();
    let mut machines = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| errors::from_sdk(e, ""))?;
        for r in page.reservations() {
            machines.extend(
                r.instances()
                    .iter()
                    .filter_map(|i| machine_of(i, &BTreeMap::new())),
            );
        }
    }
    Ok(machines)
}

/// A region name: AWS's shape (`us-east-1`, `us-gov-west-1`) for AWS; any short
/// `[A-Za-z0-9_-]` name for an EC2-compatible endpoint (`RegionOne`).
pub fn valid_region(region: &str, custom_endpoint: bool) -> bool {
    if region.is_empty() || region.len() > 64 {
        return false;
    }
    if custom_endpoint {
        return region
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    }
    aws_shaped(region)
}

/// Whether a name has the shape of AWS's region names.
fn aws_shaped(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && REGION_AREAS.contains(&parts[0])
        && parts[parts.len() - 1].chars().all(|c| c.is_ascii_digit())
        && parts[1..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
}

/// `ami-` followed by hex digits.
fn is_ami_id(s: &str) -> bool {
    s.strip_prefix("ami-")
        .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The ClientToken for an idempotency key: the key itself when EC2 accepts it (at
/// most 64 printable ASCII characters), else a stable shortened form that keeps
/// distinct keys distinct.
pub fn client_token(key: &str) -> String {
    let printable = key.chars().all(|c| c.is_ascii_graphic());
    if printable && key.len() <= MAX_CLIENT_TOKEN {
        return key.to_string();
    }
    let hash = fnv1a(key.as_bytes());
    let keep: String = key
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(MAX_CLIENT_TOKEN - 17)
        .collect();
    format!("{keep}-{hash:016x}")
}

/// FNV-1a 64: stable across builds and platforms (unlike `DefaultHasher`).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn validate_request(req: &CreateRequest) -> Result<(), CloudError> {
    if req.count == 0 {
        return Err(CloudError::Invalid(
            "a batch needs at least one machine".into(),
        ));
    }
    if req.instance_type.trim().is_empty() {
        return Err(CloudError::Invalid("no instance type given".into()));
    }
    if req.user_data.len() > MAX_USER_DATA {
        return Err(CloudError::Invalid(format!(
            "user data is {} bytes; EC2 takes at most {MAX_USER_DATA}",
            req.user_data.len()
        )));
    }
    Ok(())
}

fn non_negative_u32(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

/// The GPUs of a type: the first device's model, vendor and memory, the count summed
/// over all devices. None when it has none.
fn gpu_of(info: &aws_sdk_ec2::types::GpuInfo) -> Option<GpuInfo> {
    let gpus = info.gpus();
    let first = gpus.first()?;
    let count: u32 = gpus
        .iter()
        .map(|g| g.count().map_or(0, non_negative_u32))
        .sum();
    (count > 0).then(|| GpuInfo {
        count,
        vendor: first.manufacturer().unwrap_or_default().to_string(),
        model: first.name().unwrap_or_default().to_string(),
        memory_mb: first
            .memory_info()
            .and_then(|m| m.size_in_mib())
            .map_or(0, |m| u64::from(non_negative_u32(m))),
    })
}

/// Our lifecycle for an EC2 state; None for terminated (never reported).
///
/// kelp never stops machines: a stopping or stopped one was stopped by someone else
/// (or by EC2 for a retired host) and will not serve the pool, so it is Failed and
/// gets replaced.
pub fn state_of(name: &InstanceStateName) -> Option<MachineState> {
    match name {
        InstanceStateName::Pending => Some(MachineState::Pending),
        InstanceStateName::Running => Some(MachineState::Running),
        InstanceStateName::ShuttingDown => Some(MachineState::Terminating),
        InstanceStateName::Stopping | InstanceStateName::Stopped => Some(MachineState::Failed),
        InstanceStateName::Terminated => None,
        _ => Some(MachineState::Pending),
    }
}

/// A machine from an EC2 instance; `requested` tags fill in for a response that
/// does not echo them (RunInstances may not).
fn machine_of(
    i: &aws_sdk_ec2::types::Instance,
    requested: &BTreeMap<String, String>,
) -> Option<Machine> {
    let id = i.instance_id()?.to_string();
    let state = match i.state().and_then(|s| s.name()) {
        Some(name) => state_of(name)?,
        None => MachineState::Pending,
    };
    let mut tags = requested.clone();
    tags.extend(i.tags().iter().filter_map(|t| {
        Some((
            t.key()?.to_string(),
            t.value().unwrap_or_default().to_string(),
        ))
    }));
    let az = i
        .placement()
        .and_then(|p| p.availability_zone())
        .unwrap_or_default();
    let mut addresses = Vec::new();
    if let Some(ip) = i.private_ip_address().filter(|s| !s.is_empty()) {
        addresses.push(Address {
            kind: "InternalIP".to_string(),
            address: ip.to_string(),
        });
    }
    if let Some(ip) = i.public_ip_address().filter(|s| !s.is_empty()) {
        addresses.push(Address {
            kind: "ExternalIP".to_string(),
            address: ip.to_string(),
        });
    }
    Some(Machine {
        provider_id: format!("aws:///{az}/{id}"),
        // One RunInstances cannot name its machines one by one (they share the
        // batch's Name tag), so the instance ID is the unique name.
        name: id.clone(),
        id,
        instance_type: i
            .instance_type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        state,
        addresses,
        tags,
        created_at: i
            .launch_time()
            .and_then(|t| t.fmt(DateTimeFormat::DateTime).ok())
            .unwrap_or_default(),
    })
}

/// The IDs of `ids` that `message` names (EC2: "The instance IDs 'i-1, i-2' do not
/// exist", "Invalid id: \"x\"").
fn ids_named_in(message: &str, ids: &[String]) -> BTreeSet<String> {
    let words: BTreeSet<&str> = message
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
        .map(|w| w.trim_end_matches('.'))
        .filter(|w| !w.is_empty())
        .collect();
    ids.iter()
        .filter(|id| words.contains(id.as_str()))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions() {
        for ok in [
            "us-east-1",
            "eu-central-2",
            "ap-southeast-4",
            "us-gov-west-1",
            "cn-north-1",
        ] {
            assert!(valid_region(ok, false), "{ok}");
        }
        for bad in [
            "",
            "us-east",
            "useast1",
            "US-EAST-1",
            "mars-north-1",
            "us_east_1",
            "us-east-1a",
            "us--1",
        ] {
            assert!(!valid_region(bad, false), "{bad}");
        }
        assert!(valid_region("RegionOne", true));
        for region in ["eu-central-9", "us-east-7"] {
            let err = Ec2Driver::new(Ec2Settings::new(region)).unwrap_err();
            assert!(
                err.to_string().contains("spec.cloud.ec2.region")
                    && err.to_string().contains("not an AWS region"),
                "{err}"
            );
        }
        assert!(!valid_region("Region One", true));
        assert!(!valid_region("", true));
    }

    #[test]
    fn client_tokens() {
        let k = "kelp-0123456789abcdef0123456789abcdef";
        assert_eq!(client_token(k), k);
        let long = "x".repeat(100);
        let t = client_token(&long);
        assert_eq!(t.len(), MAX_CLIENT_TOKEN);
        assert_eq!(t, client_token(&long), "stable");
        assert_ne!(t, client_token(&"x".repeat(101)), "distinct");
        let spaced = client_token("a b");
        assert!(spaced.chars().all(|c| c.is_ascii_graphic()), "{spaced}");
        assert_ne!(spaced, client_token("a  b"));
    }

    #[test]
    fn ami_ids() {
        assert!(is_ami_id("ami-0abc123"));
        assert!(!is_ami_id("ami-"));
        assert!(!is_ami_id("ami-xyz"));
        assert!(!is_ami_id("ubuntu/images/ami-1"));
    }

    #[test]
    fn ids_in_messages() {
        let ids: Vec<String> = ["i-1", "i-2", "i-3", "junk"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let got = ids_named_in("The instance IDs 'i-1, i-3' do not exist", &ids);
        assert_eq!(got, BTreeSet::from(["i-1".to_string(), "i-3".to_string()]));
        let got = ids_named_in("The instance ID 'i-2' does not exist.", &ids);
        assert_eq!(got, BTreeSet::from(["i-2".to_string()]));
        let got = ids_named_in("Invalid id: \"junk\" (expecting \"i-...\")", &ids);
        assert_eq!(got, BTreeSet::from(["junk".to_string()]));
        assert!(ids_named_in("something else", &ids).is_empty());
    }

    #[test]
    fn states() {
        assert_eq!(
            state_of(&InstanceStateName::Pending),
            Some(MachineState::Pending)
        );
        assert_eq!(
            state_of(&InstanceStateName::Running),
            Some(MachineState::Running)
        );
        assert_eq!(
            state_of(&InstanceStateName::ShuttingDown),
            Some(MachineState::Terminating)
        );
        assert_eq!(
            state_of(&InstanceStateName::Stopped),
            Some(MachineState::Failed)
        );
        assert_eq!(state_of(&InstanceStateName::Terminated), None);
    }

    #[test]
    fn request_validation() {
        let ok = CreateRequest {
            count: 1,
            instance_type: "t3.micro".into(),
            ..Default::default()
        };
        assert!(validate_request(&ok).is_ok());
        let zero = CreateRequest {
            count: 0,
            ..ok.clone()
        };
        assert_eq!(validate_request(&zero).unwrap_err().label(), "Invalid");
        let big = CreateRequest {
            user_data: "x".repeat(MAX_USER_DATA + 1),
            ..ok.clone()
        };
        assert!(
            validate_request(&big)
                .unwrap_err()
                .to_string()
                .contains("user data")
        );
    }

    #[test]
    fn settings_debug_hides_secrets() {
        let s = Ec2Settings {
            credentials: Some(Ec2Credentials {
                access_key_id: "AKIATEST".into(),
                secret_access_key: "very-secret".into(),
                session_token: Some("token-secret".into()),
            }),
            ..Ec2Settings::new("us-east-1")
        };
        let d = format!("{s:?}");
        assert!(d.contains("AKIATEST"));
        assert!(
            !d.contains("very-secret") && !d.contains("token-secret"),
            "{d}"
        );
    }

    #[test]
    fn construction_errors() {
        let creds = Some(Ec2Credentials {
            access_key_id: "testing".into(),
            secret_access_key: "testing".into(),
            session_token: None,
        });
        let err = Ec2Driver::new(Ec2Settings {
            credentials: creds.clone(),
            ..Ec2Settings::new("moon-base-1")
        })
        .unwrap_err();
        assert_eq!(err.label(), "Invalid");
        assert!(err.to_string().contains("\"moon-base-1\""), "{err}");
        let err = Ec2Driver::new(Ec2Settings {
            credentials: creds.clone(),
            endpoint_url: Some("127.0.0.1:5000".into()),
            ..Ec2Settings::new("us-east-1")
        })
        .unwrap_err();
        assert_eq!(err.label(), "Invalid");
        let d = Ec2Driver::new(Ec2Settings {
            credentials: creds,
            ..Ec2Settings::new("us-east-1")
        })
        .unwrap();
        assert_eq!(d.name(), "ec2");
    }
}
