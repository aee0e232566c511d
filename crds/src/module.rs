//! Module: an AI module (a Docker image serving the DEEPaaS API, or a custom server)
//! that kelp can run. Mirrors the AI4OS module metadata (ai4-metadata v2).

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, SecretReference};

/// What to run: the image, how it serves, and the resources it needs by default.
#[derive(CustomResource, KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "kelp.imagine-ai.eu",
    version = "v1alpha1",
    kind = "Module",
    namespaced,
    status = "ModuleStatus",
    shortname = "kmod",
    category = "kelp",
    doc = "An AI module kelp can run: its image, serving contract and default resources.",
    printcolumn(name = "Image", type_ = "string", json_path = ".spec.image.repository"),
    printcolumn(name = "GPU", type_ = "integer", json_path = ".spec.resources.gpu"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ModuleSpec {
    /// Human-readable title of the module, as shown in the marketplace.
    #[schemars(length(min = 1, max = 200))]
    pub title: String,
    /// One-line summary of what the module does.
    #[schemars(length(min = 1, max = 500))]
    pub summary: String,
    /// Longer description (Markdown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The container image and its tags.
    pub image: ModuleImage,
    /// How the container serves requests.
    #[serde(default)]
    pub serving: Serving,
    /// Resources the module needs; Deployments use them unless they override them
    /// (ai4-metadata `resources.inference`).
    #[serde(default)]
    pub resources: ModuleResources,
    /// Marketplace metadata kept for dashboards (ai4-metadata fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<Catalog>,
}

/// The container image of a module.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModuleImage {
    /// Image repository without tag, e.g. `ai4oshub/ai4os-yolov8-torch`.
    #[schemars(length(min = 1, max = 255))]
    pub repository: String,
    /// Tag used when the Deployment gets no GPU (AI4OS images use `latest` or `cpu`).
    #[serde(default = "default_tag")]
    #[schemars(length(min = 1, max = 128))]
    pub tag: String,
    /// Tag used when a Deployment gets one or more GPUs (AI4OS images use `gpu`).
    /// When unset, `tag` is used for GPU Deployments too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub gpu_tag: Option<String>,
    /// Secret of type kubernetes.io/dockerconfigjson used to pull a private image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_secret_ref: Option<SecretReference>,
}

fn default_tag() -> String {
    "latest".into()
}

/// The serving protocol of a module.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ServingProtocol {
    /// The DEEPaaS API (AI4OS modules): REST on port 5000, health on `/v2/`.
    #[default]
    Deepaas,
    /// Any other HTTP server.
    Custom,
}

/// How the module's container serves requests.
#[derive(Clone, Debug, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Serving {
    /// Serving protocol: `deepaas` or `custom`.
    #[serde(default)]
    pub protocol: ServingProtocol,
    /// Container port the server listens on.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// HTTP path answering 200 when the server is healthy; used for readiness and
    /// liveness probes.
    #[serde(default = "default_health_path")]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("healthPath must start with '/'"))]
    #[schemars(length(min = 1, max = 1024))]
    pub health_path: String,
    /// Optional port of a web UI served next to the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub ui_port: Option<i32>,
    /// Command overriding the image entrypoint (AI4OS images: `deep-start`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Arguments to the command (AI4OS images: `--deepaas`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
}

impl Default for Serving {
    fn default() -> Self {
        Self {
            protocol: ServingProtocol::Deepaas,
            port: default_port(),
            health_path: default_health_path(),
            ui_port: None,
            command: None,
            args: None,
        }
    }
}

fn default_port() -> i32 {
    5000
}

fn default_health_path() -> String {
    "/v2/".into()
}

/// Resources a module needs to serve inference.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModuleResources {
    /// CPU cores.
    #[serde(default = "default_cpu")]
    #[schemars(range(min = 1))]
    pub cpu: i32,
    /// Memory in MB.
    #[serde(rename = "memoryMB", default = "default_memory_mb")]
    #[schemars(range(min = 1))]
    pub memory_mb: i64,
    /// Number of GPUs; 0 runs on CPU.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub gpu: i32,
    /// Minimum memory per GPU in MB.
    #[serde(
        rename = "gpuMemoryMB",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1))]
    pub gpu_memory_mb: Option<i64>,
    /// Minimum CUDA compute capability, e.g. "7.0".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+\.[0-9]+$"))]
    pub gpu_compute_capability: Option<String>,
}

impl Default for ModuleResources {
    fn default() -> Self {
        Self {
            cpu: default_cpu(),
            memory_mb: default_memory_mb(),
            gpu: 0,
            gpu_memory_mb: None,
            gpu_compute_capability: None,
        }
    }
}

fn default_cpu() -> i32 {
    1
}

fn default_memory_mb() -> i64 {
    2000
}

/// Marketplace metadata (ai4-metadata v2), kept for dashboards and search.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Catalog {
    /// Version of the ai4-metadata schema the module was described with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_version: Option<String>,
    /// Free-form tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Tasks the module performs, e.g. Computer Vision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<String>,
    /// Marketplace categories, e.g. AI4 inference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    /// Machine-learning libraries used, e.g. PyTorch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub libraries: Vec<String>,
    /// Kinds of data the module takes, e.g. Image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_type: Vec<String>,
    /// Links: source code, documentation, docker image, dataset, weights...
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub links: BTreeMap<String, String>,
}

/// Observed state of a Module.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModuleStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The full image references Deployments use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_image: Option<ResolvedImage>,
    /// Ready, Reconciling and Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Full image references for CPU and GPU Deployments.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
pub struct ResolvedImage {
    /// Image used on CPU-only Deployments.
    pub cpu: String,
    /// Image used when a Deployment gets GPUs.
    pub gpu: String,
}
