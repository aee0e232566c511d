//! The nodes of a resolved topology as kelp manifests. Every node type is either mapped
//! or refused by name; the structural ones (block storage, networks) are each decided
//! explicitly below.

use std::collections::BTreeMap;

use kelp_cloud_drivers::egi::sites::SiteCatalog;
use serde_json::{Map, Value, json};

use super::inputs::{input_of, show};
use super::merge::Merged;
use super::{CLOUD_INPUT, Imported, units};
use crate::cli::Failure;

const API_VERSION: &str = "kelp.imagine-ai.eu/v1alpha1";
/// Annotation naming the templates a manifest was imported from.
pub const SOURCE_ANNOTATION: &str = "kelp.imagine-ai.eu/tosca-templates";
/// The image prefix the AI4OS playbook (`artifacts/ai4eosc.yml`) puts before an image
/// name without a `/`.
pub const AI4OS_PREFIX: &str = "ai4oshub/";
/// The port DEEPaaS serves on, and the AI4OS Traefik forwards to.
const DEEPAAS_PORT: i64 = 5000;

/// A resolved topology and where it came from.
pub struct Topology<'a> {
    pub templates: &'a [&'a str],
    pub merged: &'a Merged,
    /// `node_templates` with every input resolved.
    pub nodes: &'a Map<String, Value>,
    pub outputs: &'a Map<String, Value>,
    pub values: &'a BTreeMap<String, Value>,
    pub namespace: &'a str,
}

/// A virtual machine node: `tosca.nodes.indigo.Compute` or the normative Compute.
pub fn is_compute(type_: &str) -> bool {
    matches!(type_, "tosca.nodes.indigo.Compute" | "tosca.nodes.Compute")
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Compute,
    BlockStorage,
    Network,
    DockerRuntime,
    Marathon,
    Deepaas,
    Ai4eosc,
}

impl Kind {
    fn is_app(self) -> bool {
        matches!(self, Kind::Marathon | Kind::Deepaas | Kind::Ai4eosc)
    }
}

fn classify(name: &str, node: &Value) -> Result<Kind, String> {
    let Some(t) = node["type"].as_str() else {
        return Err(format!("node {name}: no type"));
    };
    Ok(match t {
        _ if is_compute(t) => Kind::Compute,
        "tosca.nodes.BlockStorage" | "tosca.nodes.indigo.BlockStorage" => Kind::BlockStorage,
        _ if t.starts_with("tosca.nodes.network.") => Kind::Network,
        "tosca.nodes.indigo.Container.Runtime.Docker" => Kind::DockerRuntime,
        "tosca.nodes.indigo.Container.Application.Docker.Marathon" => Kind::Marathon,
        "tosca.nodes.indigo.DEEPaaScont" => Kind::Deepaas,
        "tosca.nodes.ec3.Application" => {
            let playbook = node["interfaces"]["Standard"]["configure"]["implementation"]
                .as_str()
                .unwrap_or_default();
            if playbook.rsplit('/').next() == Some("ai4eosc.yml") {
                Kind::Ai4eosc
            } else {
                return Err(format!(
                    "node {name}: type {t} runs the playbook {}, which kelp cannot map (kelp maps the AI4OS application, artifacts/ai4eosc.yml)",
                    if playbook.is_empty() {
                        "<none>"
                    } else {
                        playbook
                    }
                ));
            }
        }
        _ => {
            return Err(format!(
                "node {name}: type {t} has no kelp equivalent (kelp maps Compute, BlockStorage of size 0, network nodes, the AI4OS application, DEEPaaScont and Docker/Marathon containers)"
            ));
        }
    })
}

/// Where machines run, from an IM image URL.
#[derive(Clone, Debug, PartialEq)]
pub enum Cloud {
    Egi {
        site: String,
        vo: String,
        image: Option<String>,
    },
    Ec2 {
        region: String,
        ami: Option<String>,
    },
    OpenStack {
        host: String,
        image: Option<String>,
    },
    Sim,
}

const CLOUD_FORMS: &str = "egi://SITE/IMAGE?VO (or appdb://SITE/IMAGE?VO), aws://REGION/AMI, ost://HOST/IMAGE_ID or sim://";

/// Reads an IM image URL: `egi://SITE/IMAGE?VO` and `appdb://SITE/IMAGE?VO` (EGI
/// FedCloud), `aws://REGION/AMI` (EC2), `ost://HOST/IMAGE_ID` (OpenStack); and kelp's
/// `sim://`. The image part may be left out.
pub fn parse_cloud(url: &str) -> Result<Cloud, String> {
    let url = url.trim();
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("{url:?} is not an image URL ({CLOUD_FORMS})"));
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let (host, image) = match path.split_once('/') {
        Some((h, i)) => (h, Some(i).filter(|i| !i.is_empty()).map(String::from)),
        None => (path, None),
    };
    let need_host = |what: &str| {
        if host.is_empty() {
            Err(format!("{url:?} names no {what} ({CLOUD_FORMS})"))
        } else {
            Ok(host.to_string())
        }
    };
    match scheme {
        "egi" | "appdb" => {
            let site = need_host("site")?;
            let vo = query.filter(|q| !q.is_empty()).ok_or_else(|| {
                format!("{url:?} names no VO: {scheme}://SITE/IMAGE?VO, e.g. {scheme}://IFCA-LCG2/ubuntu-22.04?vo.imagine-ai.eu")
            })?;
            Ok(Cloud::Egi {
                site,
                vo: vo.to_string(),
                image,
            })
        }
        "aws" => Ok(Cloud::Ec2 {
            region: need_host("region")?,
            ami: image,
        }),
        "ost" => Ok(Cloud::OpenStack {
            host: need_host("host")?,
            image,
        }),
        "sim" => Ok(Cloud::Sim),
        other => Err(format!(
            "{url:?}: {other}:// is not a cloud kelp drives ({CLOUD_FORMS})"
        )),
    }
}

/// A port a node opens.
#[derive(Clone, Debug, PartialEq)]
struct Port {
    port: i64,
    node: String,
}

fn ports_of(name: &str, node: &Value, warnings: &mut Vec<String>) -> Vec<Port> {
    let mut specs: Vec<&Value> = Vec::new();
    let endpoint = &node["capabilities"]["endpoint"]["properties"];
    match &endpoint["ports"] {
        Value::Object(m) => specs.extend(m.values()),
        Value::Array(a) => specs.extend(a),
        _ => {}
    }
    if let Some(a) = node["capabilities"]["host"]["properties"]["publish_ports"].as_array() {
        specs.extend(a);
    }
    let mut out = Vec::new();
    if let Some(p) = endpoint["port"].as_i64() {
        out.push(Port {
            port: p,
            node: name.into(),
        });
    }
    for s in specs {
        let source = match &s["source"] {
            Value::Number(n) => n.as_i64(),
            Value::String(t) => t.trim().parse().ok(),
            _ => None,
        };
        match source {
            Some(p) => out.push(Port {
                port: p,
                node: name.into(),
            }),
            None => warnings.push(format!(
                "node {name}: the port {} is not opened: kelp reads single ports (source: N)",
                show(s)
            )),
        }
    }
    out
}

/// A node pool made from a Compute node (or a Docker runtime's container host).
#[derive(Debug)]
struct Pool {
    node: String,
    name: String,
    replicas: i64,
    cpu: Option<i64>,
    memory_mb: Option<i64>,
    disk_gb: Option<i64>,
    gpus: i64,
    gpu_vendor: Option<String>,
    gpu_model: Option<String>,
    instance_type: Option<String>,
    image: Option<String>,
}

/// The WebDAV share of a DEEP container (its rclone settings).
#[derive(Debug)]
struct Webdav {
    url: String,
    vendor: String,
    user: String,
    password: String,
}

#[derive(Debug)]
struct App {
    node: String,
    kind: Kind,
    image: String,
    host: Option<String>,
    gpu_support: Option<bool>,
    command: Option<String>,
    env: Vec<(String, Value)>,
    webdav: Option<Webdav>,
}

/// A DNS label from any text: lowercase, `-` for the rest, at most `max` long.
pub fn dns_label(text: &str, max: usize) -> String {
    let mut s = String::new();
    for c in text.to_ascii_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c);
        } else if !s.ends_with('-') {
            s.push('-');
        }
    }
    let s: String = s.trim_matches('-').chars().take(max).collect();
    let s = s.trim_end_matches('-').to_string();
    if s.is_empty() { "tosca".into() } else { s }
}

/// `repository` and `tag` of an image reference.
fn split_image(image: &str) -> (String, Option<String>) {
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) if !tag.is_empty() => (
            image[..image.len() - tag.len() - 1].to_string(),
            Some(tag.to_string()),
        ),
        _ => (image.to_string(), None),
    }
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) if s.trim().is_empty() => None,
        other => Some(show(other).trim().to_string()),
    }
}

fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Whether an environment variable carries a credential (and so goes to a Secret).
fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    ["PASS", "TOKEN", "SECRET", "KEY"]
        .iter()
        .any(|w| n.contains(w))
}

struct Mapper<'a> {
    t: &'a Topology<'a>,
    errors: Vec<String>,
    warnings: Vec<String>,
    notes: Vec<String>,
}

impl Mapper<'_> {
    /// `, given by --input NAME` when the raw property at `path` of `node` is a get_input.
    fn hint(&self, node: &str, path: &[&str]) -> String {
        let mut v = &self.t.merged.node_templates[node];
        for p in path {
            v = &v[*p];
        }
        match input_of(v) {
            Some(i) => format!(" (from --input {i})"),
            None => String::new(),
        }
    }

    fn size(
        &mut self,
        node: &str,
        props: &Value,
        key: &str,
        path: &[&str],
        gib: bool,
    ) -> Option<i64> {
        let v = &props[key];
        let text = match v {
            Value::Null => return None,
            Value::String(s) if s.trim().is_empty() => return None,
            Value::String(s) => s.clone(),
            Value::Number(n) => format!("{n} MB"),
            other => show(other),
        };
        let r = if gib {
            units::gib(&text)
        } else {
            units::mib(&text)
        };
        match r {
            Ok(n) => Some(n),
            Err(e) => {
                let hint = self.hint(node, path);
                self.errors
                    .push(format!("node {node}: {}: {e}{hint}", path.join(".")));
                None
            }
        }
    }

    fn count(&mut self, node: &str, props: &Value, key: &str, path: &[&str]) -> Option<i64> {
        let v = &props[key];
        if v.is_null() || v.as_str().is_some_and(|s| s.trim().is_empty()) {
            return None;
        }
        match int_of(v).filter(|n| *n >= 0) {
            Some(n) => Some(n),
            None => {
                let hint = self.hint(node, path);
                self.errors.push(format!(
                    "node {node}: {}: {} is not a whole number{hint}",
                    path.join("."),
                    show(v)
                ));
                None
            }
        }
    }

    fn pool(&mut self, name: &str, node: &Value) -> Pool {
        let host = &node["capabilities"]["host"]["properties"];
        let hp = |k: &'static str| ["capabilities", "host", "properties", k];
        let cpu = self.count(name, host, "num_cpus", &hp("num_cpus"));
        let memory_mb = self.size(name, host, "mem_size", &hp("mem_size"), false);
        let disk_gb = self.size(name, host, "disk_size", &hp("disk_size"), true);
        let gpus = self
            .count(name, host, "num_gpus", &hp("num_gpus"))
            .unwrap_or(0);
        let scalable = &node["capabilities"]["scalable"]["properties"];
        let sp = |k: &'static str| ["capabilities", "scalable", "properties", k];
        let replicas = self
            .count(name, scalable, "count", &sp("count"))
            .or_else(|| {
                self.count(
                    name,
                    scalable,
                    "default_instances",
                    &sp("default_instances"),
                )
            })
            .or_else(|| {
                self.count(
                    name,
                    &node["properties"],
                    "num_instances",
                    &["properties", "num_instances"],
                )
            })
            .unwrap_or(1);
        if cpu == Some(0) {
            let hint = self.hint(name, &hp("num_cpus"));
            self.errors.push(format!(
                "node {name}: capabilities.host.properties.num_cpus: 0 CPUs{hint}; a machine needs at least 1"
            ));
        }
        Pool {
            node: name.into(),
            name: dns_label(name, 40),
            replicas,
            cpu: cpu.filter(|c| *c > 0),
            memory_mb: memory_mb.filter(|m| *m > 0),
            // 0 means "do not resize the root disk".
            disk_gb: disk_gb.filter(|d| *d > 0),
            gpus,
            gpu_vendor: text_of(&host["gpu_vendor"]),
            gpu_model: text_of(&host["gpu_model"]),
            instance_type: text_of(&host["instance_type"]),
            image: None,
        }
    }

    /// The cloud of a Compute node: `kelp.cloud` if given, else its os image.
    fn cloud_of(&mut self, name: &str, node: &Value) -> Option<Cloud> {
        if let Some(url) = self.t.values.get(CLOUD_INPUT).and_then(Value::as_str) {
            return match parse_cloud(url) {
                Ok(c) => Some(c),
                Err(e) => {
                    self.errors.push(format!("--input {CLOUD_INPUT}: {e}"));
                    None
                }
            };
        }
        let path = ["capabilities", "os", "properties", "image"];
        let image = &node["capabilities"]["os"]["properties"]["image"];
        let raw_input = input_of(
            &self.t.merged.node_templates[name]["capabilities"]["os"]["properties"]["image"],
        )
        .map(String::from);
        match text_of(image) {
            None => {
                let give = match &raw_input {
                    Some(i) => format!("give --input {i}=URL or --input {CLOUD_INPUT}=URL"),
                    None => format!(
                        "the template leaves the site to the deployer: give --input {CLOUD_INPUT}=URL"
                    ),
                };
                self.errors.push(format!(
                    "node {name}: {} is not set, so kelp cannot tell which cloud to use; {give} (URL: {CLOUD_FORMS})",
                    path.join(".")
                ));
                None
            }
            Some(url) => match parse_cloud(&url) {
                Ok(c) => Some(c),
                Err(e) => {
                    let hint = self.hint(name, &path);
                    self.errors
                        .push(format!("node {name}: {}: {e}{hint}", path.join(".")));
                    None
                }
            },
        }
    }

    fn app(&mut self, name: &str, kind: Kind, node: &Value) -> App {
        let host = node["requirements"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|r| match &r["host"] {
                Value::String(s) => Some(s.clone()),
                Value::Object(m) => m.get("node").and_then(Value::as_str).map(String::from),
                _ => None,
            });
        let props = &node["properties"];
        let mut app = App {
            node: name.into(),
            kind,
            image: String::new(),
            host,
            gpu_support: None,
            command: None,
            env: Vec::new(),
            webdav: None,
        };
        let image_at: &[&str];
        match kind {
            Kind::Ai4eosc => {
                let inputs = &node["interfaces"]["Standard"]["configure"]["inputs"];
                image_at = &[
                    "interfaces",
                    "Standard",
                    "configure",
                    "inputs",
                    "ai4eosc_model_image",
                ];
                // The playbook's default, and its prefix rule.
                let image = text_of(&inputs["ai4eosc_model_image"])
                    .unwrap_or_else(|| "plants-classification".into());
                app.image = if image.contains('/') {
                    image
                } else {
                    format!("{AI4OS_PREFIX}{image}")
                };
                app.gpu_support = Some(match &inputs["docker_nvidia_support"] {
                    Value::Bool(b) => *b,
                    v => text_of(v).is_some_and(|s| s == "true"),
                });
            }
            Kind::Deepaas => {
                image_at = &["properties", "dockerhub_img"];
                app.image = text_of(&props["dockerhub_img"]).unwrap_or_default();
                if let Some(url) = text_of(&props["rclone_url"]) {
                    app.webdav = Some(Webdav {
                        url,
                        vendor: text_of(&props["rclone_vendor"])
                            .unwrap_or_else(|| "nextcloud".into()),
                        user: text_of(&props["rclone_user"]).unwrap_or_default(),
                        password: text_of(&props["rclone_password"]).unwrap_or_default(),
                    });
                }
            }
            _ => {
                image_at = &["artifacts", "image", "file"];
                app.image = text_of(&node["artifacts"]["image"]["file"]).unwrap_or_default();
                app.command = text_of(&props["command"]);
                if props["privileged"] == json!(true) || props["privileged"] == json!("true") {
                    self.warnings.push(format!(
                        "node {name}: privileged is true; kelp runs containers unprivileged"
                    ));
                }
                let env = props["environment_variables"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                let get = |k: &str| env.get(k).and_then(text_of);
                if let Some(url) = get("RCLONE_CONFIG_RSHARE_URL") {
                    app.webdav = Some(Webdav {
                        url,
                        vendor: get("RCLONE_CONFIG_RSHARE_VENDOR")
                            .unwrap_or_else(|| "nextcloud".into()),
                        user: get("RCLONE_CONFIG_RSHARE_USER").unwrap_or_default(),
                        password: get("RCLONE_CONFIG_RSHARE_PASS").unwrap_or_default(),
                    });
                }
                let mut dropped = Vec::new();
                for (k, v) in env {
                    if k == "RCLONE_CONFIG" || k.starts_with("RCLONE_CONFIG_RSHARE_") {
                        dropped.push(k);
                    } else {
                        app.env.push((k, v));
                    }
                }
                if !dropped.is_empty() {
                    self.notes.push(format!(
                        "node {name}: {} are the rclone settings of the share; kelp configures rclone from the Deployment's storage",
                        dropped.join(", ")
                    ));
                }
            }
        }
        if app.image.is_empty() {
            let hint = self.hint(name, image_at);
            self.errors.push(format!(
                "node {name}: {} names no image{hint}",
                image_at.join(".")
            ));
        }
        app
    }
}

fn meta(name: &str, ns: &str, sources: &str) -> Value {
    json!({"name": name, "namespace": ns, "annotations": {SOURCE_ANNOTATION: sources}})
}

fn secret(name: &str, ns: &str, sources: &str, data: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta(name, ns, sources),
        "type": "Opaque",
        "stringData": data,
    })
}

/// Maps a resolved topology; all errors are collected.
pub fn map(t: &Topology<'_>) -> Result<Imported, Failure> {
    let mut m = Mapper {
        t,
        errors: Vec::new(),
        warnings: Vec::new(),
        notes: Vec::new(),
    };
    let ns = t.namespace;
    let sources = t.templates.join(", ");
    let mut kinds = BTreeMap::new();
    for (name, node) in t.nodes {
        match classify(name, node) {
            Ok(k) => {
                kinds.insert(name.clone(), k);
            }
            Err(e) => m.errors.push(e),
        }
    }
    // Structural nodes.
    for (name, kind) in &kinds {
        let node = &t.nodes[name];
        match kind {
            Kind::BlockStorage => {
                let size = m.size(name, &node["properties"], "size", &["properties", "size"], true);
                match size {
                    None | Some(0) => m.notes.push(format!(
                        "node {name} ({}): size 0, no extra disk; nothing to make",
                        node["type"].as_str().unwrap_or_default()
                    )),
                    Some(gb) => {
                        let hint = m.hint(name, &["properties", "size"]);
                        m.errors.push(format!(
                            "node {name} ({}): a {gb} GiB extra disk{hint}; kelp machines have no extra volumes (set the size to 0, or grow the root disk with disk_size)",
                            node["type"].as_str().unwrap_or_default()
                        ));
                    }
                }
            }
            Kind::Network => m.notes.push(format!(
                "node {name} ({}): ignored; kelp machines attach to the cloud's network (spec.cloud.*.network)",
                node["type"].as_str().unwrap_or_default()
            )),
            _ => {}
        }
    }
    // Machines.
    let mut pools = Vec::new();
    let mut cloud: Option<(Cloud, String)> = None;
    let mut ports = Vec::new();
    for (name, kind) in &kinds {
        let node = &t.nodes[name];
        if *kind != Kind::Compute {
            continue;
        }
        let mut pool = m.pool(name, node);
        let mut node_warnings = Vec::new();
        ports.extend(ports_of(name, node, &mut node_warnings));
        m.warnings.append(&mut node_warnings);
        if let Some(c) = m.cloud_of(name, node) {
            pool.image = match &c {
                Cloud::Ec2 { ami, .. } => ami.clone(),
                Cloud::OpenStack { image, .. } => image.clone(),
                _ => None,
            };
            match &cloud {
                Some((first, at)) if *first != c => m.errors.push(format!(
                    "nodes {at} and {name} are on different clouds; kelp makes one Cluster per import"
                )),
                Some(_) => {}
                None => cloud = Some((c, name.clone())),
            }
        }
        pools.push(pool);
    }
    // Container hosts of the Marathon templates: one pool each, sized for the container.
    let mut containers: BTreeMap<String, (Option<i64>, Option<i64>, i64, i64)> = BTreeMap::new();
    for (name, kind) in &kinds {
        if *kind != Kind::DockerRuntime {
            continue;
        }
        let node = &t.nodes[name];
        let p = m.pool(name, node);
        let mut node_warnings = Vec::new();
        ports.extend(ports_of(name, node, &mut node_warnings));
        m.warnings.append(&mut node_warnings);
        containers.insert(name.clone(), (p.cpu, p.memory_mb, p.gpus, p.replicas));
        let headroom = headroom(p.memory_mb.unwrap_or(0));
        pools.push(Pool {
            cpu: Some(p.cpu.unwrap_or(1) + 1),
            memory_mb: p.memory_mb.map(|mb| mb + headroom),
            replicas: p.replicas,
            ..p
        });
        m.notes.push(format!(
            "node {name}: the container's machines have 1 CPU and {headroom} MiB more than the container asks for, for k3s and rclone"
        ));
    }
    if pools.is_empty() && m.errors.is_empty() {
        m.errors.push(
            "the template has no Compute or container node: nothing kelp can make machines for"
                .into(),
        );
    }
    if cloud.is_none() && !pools.is_empty() && !kinds.values().any(|k| *k == Kind::Compute) {
        // Container templates ran on an existing Mesos cluster: kelp needs a cloud.
        match t.values.get(CLOUD_INPUT).and_then(Value::as_str) {
            Some(url) => match parse_cloud(url) {
                Ok(c) => cloud = Some((c, CLOUD_INPUT.into())),
                Err(e) => m.errors.push(format!("--input {CLOUD_INPUT}: {e}")),
            },
            None => m.errors.push(format!(
                "the template runs containers on an existing Marathon cluster and names no cloud: give --input {CLOUD_INPUT}=URL ({CLOUD_FORMS})"
            )),
        }
    }
    // The application.
    let apps: Vec<(&String, Kind)> = kinds
        .iter()
        .filter(|(_, k)| k.is_app())
        .map(|(n, k)| (n, *k))
        .collect();
    if apps.len() > 1 {
        m.errors.push(format!(
            "nodes {} are applications; kelp imports one application per template",
            apps.iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let app = apps
        .first()
        .map(|(n, k)| m.app(n, *k, &t.nodes[n.as_str()]));
    if let Some(a) = &app {
        let mut node_warnings = Vec::new();
        ports.extend(ports_of(&a.node, &t.nodes[&a.node], &mut node_warnings));
        m.warnings.append(&mut node_warnings);
        match &a.host {
            Some(h) if pools.iter().any(|p| &p.node == h) => {}
            Some(h) => m.errors.push(format!(
                "node {}: its host {h} is not a Compute or container node of the template",
                a.node
            )),
            None => m
                .errors
                .push(format!("node {}: no host requirement", a.node)),
        }
    }
    if !m.errors.is_empty() {
        return Err(Failure {
            errors: m.errors,
            warnings: m.warnings,
        });
    }
    let (cloud, _) = cloud.expect("a cloud when there are pools and no errors");
    let base = match &app {
        Some(a) => dns_label(
            split_image(&a.image).0.rsplit('/').next().unwrap_or("app"),
            40,
        ),
        None => dns_label(
            t.templates[0]
                .rsplit('/')
                .next()
                .and_then(|f| f.split('.').next())
                .unwrap_or("tosca"),
            40,
        ),
    };
    let mut manifests = Vec::new();
    // The cloud and its credentials.
    let (cloud_spec, creds) = match &cloud {
        Cloud::Egi { site, vo, image } => {
            let catalog = SiteCatalog::builtin();
            match catalog.site(site) {
                None => m.warnings.push(format!(
                    "EGI site {site} is not in kelp's site catalogue (kelp egi sites --vo {vo}); the Cluster needs spec.cloud.egi.authUrl"
                )),
                Some(s) if s.vo(vo).is_none() => m.warnings.push(format!(
                    "EGI site {site} does not list the VO {vo} in kelp's site catalogue (kelp egi sites --vo {vo})"
                )),
                Some(_) => {}
            }
            if let Some(i) = image {
                m.notes.push(format!(
                    "image {i}: the machines start from kelp's default image for the site; set nodePools[].image to choose one"
                ));
            }
            let secret = format!("{base}-egi");
            (
                json!({"egi": {"site": site, "vo": vo, "credentialsSecretRef": {"name": secret}}}),
                Some((
                    secret,
                    json!({"refreshToken": "<your EGI Check-in refresh token>", "clientId": "<the EGI Check-in client ID of the token>"}),
                    "an EGI Check-in refresh token and its client ID",
                )),
            )
        }
        Cloud::Ec2 { region, .. } => {
            let secret = format!("{base}-aws");
            (
                json!({"ec2": {"region": region, "credentialsSecretRef": {"name": secret}}}),
                Some((
                    secret,
                    json!({"accessKeyId": "<AWS access key ID>", "secretAccessKey": "<AWS secret access key>"}),
                    "an AWS access key",
                )),
            )
        }
        Cloud::OpenStack { host, .. } => {
            let secret = format!("{base}-openstack");
            let auth_url = format!(
                "https://{}/v3",
                if host.contains(':') {
                    host.clone()
                } else {
                    format!("{host}:5000")
                }
            );
            m.warnings.push(format!(
                "spec.cloud.openstack.authUrl {auth_url} is a guess from the image URL's host {host}: check it against the cloud's Keystone URL"
            ));
            (
                json!({"openstack": {"authUrl": auth_url, "credentialsSecretRef": {"name": secret}}}),
                Some((
                    secret,
                    json!({"applicationCredentialId": "<application credential ID>", "applicationCredentialSecret": "<application credential secret>"}),
                    "an OpenStack application credential",
                )),
            )
        }
        Cloud::Sim => (json!({"sim": {}}), None),
    };
    if let Some((name, data, what)) = creds {
        m.notes.push(format!(
            "Secret {name} holds placeholders: put {what} in it before applying"
        ));
        manifests.push(secret(&name, ns, &sources, data));
    }
    // The pools.
    let mut node_pools = Vec::new();
    for p in &pools {
        let mut machine = Map::new();
        if let Some(it) = &p.instance_type {
            machine.insert("instanceType".into(), json!(it));
        }
        if let Some(c) = p.cpu {
            machine.insert("cpu".into(), json!(c));
        }
        if let Some(mb) = p.memory_mb {
            machine.insert("memoryMB".into(), json!(mb));
        }
        if let Some(gb) = p.disk_gb {
            machine.insert("diskGB".into(), json!(gb));
        }
        if p.gpus > 0 || p.gpu_vendor.is_some() || p.gpu_model.is_some() {
            let mut gpu = Map::new();
            gpu.insert("count".into(), json!(p.gpus));
            if let Some(v) = &p.gpu_vendor {
                gpu.insert("vendor".into(), json!(v));
            }
            if let Some(v) = &p.gpu_model {
                gpu.insert("model".into(), json!(v));
            }
            machine.insert("gpu".into(), Value::Object(gpu));
        }
        let mut pool = json!({"name": p.name, "replicas": p.replicas, "machine": machine});
        if let Some(i) = &p.image {
            pool["image"] = json!(i);
        }
        node_pools.push(pool);
    }
    // The single-VM case IM serves: the k3s server runs on the application's host (or the
    // first pool), so no extra machine is started.
    let cp_pool = app
        .as_ref()
        .and_then(|a| pools.iter().find(|p| Some(&p.node) == a.host.as_ref()))
        .unwrap_or(&pools[0]);
    if cp_pool.replicas == 0 {
        m.warnings.push(format!(
            "pool {} has 0 machines but runs the Kubernetes control plane: the Cluster will not come up until it has one",
            cp_pool.name
        ));
    }
    let cluster = json!({
        "apiVersion": API_VERSION,
        "kind": "Cluster",
        "metadata": meta(&base, ns, &sources),
        "spec": {
            "cloud": cloud_spec,
            "kubernetes": {"mode": "Provision", "controlPlane": {"pool": cp_pool.name}},
            "nodePools": node_pools,
        },
    });
    let mut ssh_noted = false;
    for p in &ports {
        if p.port == 22 && !ssh_noted {
            ssh_noted = true;
            m.notes.push(format!(
                "port 22 (node {}): kelp machines take SSH keys from the Cluster's spec.sshAuthorizedKeys",
                p.node
            ));
        }
    }
    let Some(app) = app else {
        for p in ports.iter().filter(|p| p.port != 22) {
            m.warnings.push(format!(
                "port {} (node {}) is not opened: kelp opens what its Deployments expose",
                p.port, p.node
            ));
        }
        m.notes
            .push("the template has no application node: only the Cluster is made".into());
        manifests.push(cluster);
        output_notes(&mut m, &base, None);
        return Ok(Imported {
            manifests,
            notes: m.notes,
            warnings: m.warnings,
        });
    };
    // The Module.
    let (repository, tag) = split_image(&app.image);
    let host = pools
        .iter()
        .find(|p| Some(&p.node) == app.host.as_ref())
        .expect("checked above");
    let deepaas = match app.kind {
        Kind::Ai4eosc | Kind::Deepaas => true,
        _ => {
            ports.iter().any(|p| p.port == DEEPAAS_PORT)
                || app
                    .command
                    .as_deref()
                    .is_some_and(|c| c.contains("deepaas") || c.contains("deep-start"))
        }
    };
    let app_ports: Vec<&Port> = ports.iter().filter(|p| p.port != 22).collect();
    let expose_port = if deepaas {
        DEEPAAS_PORT
    } else {
        app_ports.first().map_or(DEEPAAS_PORT, |p| p.port)
    };
    for p in &app_ports {
        if p.port == expose_port {
            continue;
        }
        if app.kind == Kind::Ai4eosc && (p.port == 443 || p.port == 80) {
            m.notes.push(format!(
                "port {} (node {}): kelp's ingress serves HTTPS in front of port {expose_port}, as the template's Traefik did",
                p.port, p.node
            ));
        } else {
            m.warnings.push(format!(
                "port {} (node {}) is not exposed: a kelp Deployment exposes one port, {expose_port}",
                p.port, p.node
            ));
        }
    }
    // Resources: the container's own (Marathon), else the host's less what k3s needs.
    let (cpu, memory_mb, gpu, replicas) = match containers.get(&host.node) {
        Some((cpu, mem, gpu, replicas)) => (cpu.unwrap_or(1), *mem, *gpu, *replicas),
        None => {
            let gpu = match app.gpu_support {
                Some(false) => {
                    if host.gpus > 0 {
                        m.warnings.push(format!(
                            "node {}: ai4eosc_gpu_support is false, so the Deployment uses none of the {} GPU(s) of pool {}",
                            app.node, host.gpus, host.name
                        ));
                    }
                    0
                }
                Some(true) if host.gpus == 0 => {
                    m.warnings.push(format!(
                        "node {}: ai4eosc_gpu_support is true but node {} asks for no GPU (num_gpus 0): the Deployment gets none",
                        app.node, host.node
                    ));
                    0
                }
                _ => host.gpus,
            };
            let cpu = host.cpu.map_or(1, |c| (c - 1).max(1));
            let mem = host.memory_mb.map(|mb| (mb - headroom(mb)).max(512));
            if host.cpu.is_some() || host.memory_mb.is_some() {
                m.notes.push(format!(
                    "the Deployment asks for {cpu} CPU(s){}: the rest of each {} machine is left for k3s and rclone",
                    mem.map(|mb| format!(" and {mb} MiB")).unwrap_or_default(),
                    host.name
                ));
            }
            (cpu, mem, gpu, host.replicas)
        }
    };
    let mut resources = json!({"cpu": cpu, "gpu": gpu});
    if let Some(mb) = memory_mb {
        resources["memoryMB"] = json!(mb);
    }
    let origin = t
        .merged
        .node_origin
        .get(&app.node)
        .cloned()
        .unwrap_or_default();
    let mut serving =
        json!({"protocol": if deepaas { "deepaas" } else { "custom" }, "port": expose_port});
    if !deepaas {
        serving["healthPath"] = json!("/");
    }
    if let Some(c) = &app.command {
        serving["command"] = if c.contains(|ch: char| ";|&$<>'\"`*".contains(ch)) {
            json!(["/bin/sh", "-c", c])
        } else {
            json!(c.split_whitespace().collect::<Vec<_>>())
        };
    }
    let mut module_spec = json!({
        "title": repository.rsplit('/').next().unwrap_or(&repository),
        "summary": format!("{repository}, imported from the TOSCA template {origin}"),
        "image": {"repository": repository, "tag": tag.clone().unwrap_or_else(|| "latest".into())},
        "serving": serving,
        "resources": resources,
    });
    if let Some(d) = t.merged.descriptions.get(&origin) {
        module_spec["description"] = json!(d);
    }
    manifests.push(json!({
        "apiVersion": API_VERSION,
        "kind": "Module",
        "metadata": meta(&base, ns, &sources),
        "spec": module_spec,
    }));
    manifests.push(cluster);
    // The Deployment, its storage and env.
    let mut storage = Vec::new();
    if let Some(w) = &app.webdav {
        let secret_name = format!("{base}-rshare");
        let vendor = match w.vendor.to_ascii_lowercase().as_str() {
            v @ ("nextcloud" | "owncloud") => v.to_string(),
            other => {
                m.notes.push(format!(
                    "rclone vendor {other}: the share's vendor is other"
                ));
                "other".into()
            }
        };
        let user = if w.user.is_empty() {
            "<WebDAV user name>".to_string()
        } else {
            w.user.clone()
        };
        let password = if w.password.is_empty() {
            m.notes.push(format!(
                "Secret {secret_name} holds a placeholder password: put the WebDAV (app) password for {} in it before applying",
                w.url
            ));
            "<WebDAV password (a Nextcloud app password)>".to_string()
        } else {
            m.notes.push(format!(
                "Secret {secret_name} contains a credential (the WebDAV password given): keep the output private"
            ));
            w.password.clone()
        };
        manifests.push(secret(
            &secret_name,
            ns,
            &sources,
            json!({"user": user, "password": password}),
        ));
        storage.push(json!({
            "name": "rshare",
            "webdav": {"url": w.url, "vendor": vendor, "credentialsSecretRef": {"name": secret_name}},
            "mountPath": "/storage",
        }));
        m.notes.push(format!(
            "the WebDAV share {} is mounted at /storage (the AI4OS rshare convention)",
            w.url
        ));
    }
    let mut env = Vec::new();
    let mut env_secret = Map::new();
    let env_secret_name = format!("{base}-env");
    for (k, v) in &app.env {
        let Some(value) = text_of(v) else {
            m.notes
                .push(format!("environment variable {k} is empty: not set"));
            continue;
        };
        if is_secret_name(k) {
            env_secret.insert(k.clone(), json!(value));
            env.push(json!({"name": k, "valueFrom": {"secretKeyRef": {"name": env_secret_name, "key": k}}}));
        } else {
            env.push(json!({"name": k, "value": value}));
        }
    }
    if !env_secret.is_empty() {
        m.notes.push(format!(
            "Secret {env_secret_name} contains credentials ({}): keep the output private",
            env_secret.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
        manifests.push(secret(
            &env_secret_name,
            ns,
            &sources,
            Value::Object(env_secret),
        ));
    }
    let mut spec = json!({
        "moduleRef": {"name": base},
        "clusterRef": {"name": base},
        "nodePool": host.name,
        "replicas": replicas,
        "resources": resources,
        "expose": {"port": expose_port, "path": "/", "public": true},
    });
    if !env.is_empty() {
        spec["env"] = Value::Array(env);
    }
    if !storage.is_empty() {
        spec["storage"] = Value::Array(storage);
    }
    manifests.push(json!({
        "apiVersion": API_VERSION,
        "kind": "Deployment",
        "metadata": meta(&base, ns, &sources),
        "spec": spec,
    }));
    output_notes(&mut m, &base, Some(expose_port));
    Ok(Imported {
        manifests,
        notes: m.notes,
        warnings: m.warnings,
    })
}

/// Memory kept back on a machine for k3s and rclone: a quarter, at least 1 GiB.
fn headroom(mb: i64) -> i64 {
    (mb / 4).max(1024)
}

/// What each template output becomes.
fn output_notes(m: &mut Mapper<'_>, base: &str, exposed: Option<i64>) {
    let ns = m.t.namespace;
    for (name, v) in m.t.outputs {
        let value = &v["value"];
        let text = value.to_string();
        let runtime = text.contains("get_attribute");
        let port = published_port(m.t.nodes, value);
        let note = if !runtime {
            format!("output {name}: {}", show(value))
        } else if text.contains("credential") {
            format!(
                "output {name}: kelp generates no SSH credentials; the machines take the keys of the Cluster's spec.sshAuthorizedKeys"
            )
        } else if let (Some(p), Some(e)) = (port, exposed)
            && p != e
        {
            format!("output {name}: port {p} is not exposed; the Deployment exposes port {e}")
        } else if exposed.is_some() && value.get("get_attribute").is_none() {
            format!(
                "output {name}: the endpoint appears in the Deployment's status.endpoint: kubectl get kdep {base} -n {ns}"
            )
        } else {
            format!(
                "output {name}: the machines' addresses appear in the Cluster's status.nodePools[].machines[].addresses: kubectl get kcl {base} -n {ns} -o yaml"
            )
        };
        m.notes.push(note);
    }
}

/// The port an output names through `get_attribute: [NODE, host, publish_ports, I, ...]`.
fn published_port(nodes: &Map<String, Value>, v: &Value) -> Option<i64> {
    match v {
        Value::Object(o) => {
            if let Some(Value::Array(a)) = o.get("get_attribute")
                && a.get(1).and_then(Value::as_str) == Some("host")
                && a.get(2).and_then(Value::as_str) == Some("publish_ports")
            {
                let node = a.first()?.as_str()?;
                let i = a.get(3)?.as_u64()? as usize;
                return int_of(
                    &nodes.get(node)?["capabilities"]["host"]["properties"]["publish_ports"][i]["source"],
                );
            }
            o.values().find_map(|x| published_port(nodes, x))
        }
        Value::Array(a) => a.iter().find_map(|x| published_port(nodes, x)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_urls_pick_the_cloud() {
        assert_eq!(
            parse_cloud("egi://IFCA-LCG2/ubuntu-22.04?vo.imagine-ai.eu").unwrap(),
            Cloud::Egi {
                site: "IFCA-LCG2".into(),
                vo: "vo.imagine-ai.eu".into(),
                image: Some("ubuntu-22.04".into())
            }
        );
        assert_eq!(
            parse_cloud("appdb://CESGA/egi.ubuntu.22.04?vo.ai4eosc.eu").unwrap(),
            Cloud::Egi {
                site: "CESGA".into(),
                vo: "vo.ai4eosc.eu".into(),
                image: Some("egi.ubuntu.22.04".into())
            }
        );
        assert_eq!(
            parse_cloud("aws://eu-west-1/ami-0773391ae604c49a4").unwrap(),
            Cloud::Ec2 {
                region: "eu-west-1".into(),
                ami: Some("ami-0773391ae604c49a4".into())
            }
        );
        assert_eq!(
            parse_cloud("ost://cloud.recas.ba.infn.it/1113d7e8").unwrap(),
            Cloud::OpenStack {
                host: "cloud.recas.ba.infn.it".into(),
                image: Some("1113d7e8".into())
            }
        );
        assert_eq!(parse_cloud("sim://").unwrap(), Cloud::Sim);
        assert!(
            parse_cloud("egi://IFCA-LCG2/img")
                .unwrap_err()
                .contains("names no VO")
        );
        assert!(
            parse_cloud("one://host/1")
                .unwrap_err()
                .contains("one:// is not a cloud kelp drives")
        );
        assert!(
            parse_cloud("ubuntu")
                .unwrap_err()
                .contains("not an image URL")
        );
        assert!(
            parse_cloud("aws:///ami-1")
                .unwrap_err()
                .contains("names no region")
        );
    }

    #[test]
    fn names_and_images() {
        assert_eq!(dns_label("simple_node", 40), "simple-node");
        assert_eq!(dns_label("__X__", 40), "x");
        assert_eq!(dns_label("", 40), "tosca");
        assert_eq!(
            split_image("ai4oshub/ai4os-yolov8-torch"),
            ("ai4oshub/ai4os-yolov8-torch".into(), None)
        );
        assert_eq!(
            split_image("deephdc/deep-oc-mods:gpu"),
            ("deephdc/deep-oc-mods".into(), Some("gpu".into()))
        );
        assert_eq!(split_image("reg:5000/a/b"), ("reg:5000/a/b".into(), None));
        assert!(is_secret_name("jupyterPASSWORD"));
        assert!(is_secret_name("ONECLIENT_ACCESS_TOKEN"));
        assert!(!is_secret_name("ONEDATA_MOUNT_POINT"));
    }
}
