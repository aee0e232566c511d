//! `kelp module import`: an AI4OS module metadata file (ai4-metadata v2
//! `ai4-metadata.yml`/`.json`, or the older v1 `metadata.json`) as a kelp Module
//! manifest. The mapping is documented in `docs/cli.md`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kelp_crds::{Catalog, Module, ModuleImage, ModuleResources, ModuleSpec, Serving};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{Failure, Outcome, read_file};

/// Options of `kelp module import`.
#[derive(Debug, Clone, Default)]
pub struct ImportArgs {
    pub file: PathBuf,
    /// metadata.name; default: derived from the image name, else the title.
    pub name: Option<String>,
    /// metadata.namespace; default: none (kubectl's current namespace).
    pub namespace: Option<String>,
    /// Image `REPOSITORY[:TAG]` overriding the file's.
    pub image: Option<String>,
    /// spec.image.gpuTag overriding the rule (`gpu` when the module uses GPUs).
    pub gpu_tag: Option<String>,
}

/// The ai4-metadata generation a file follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetadataVersion {
    /// `metadata.json` of the DEEP-Hybrid-DataCloud era: `sources`, `keywords`, ...
    V1,
    /// `ai4-metadata.yml` (`metadata_version: 2.x.y`): `links`, `tags`, `resources`, ...
    V2,
}

const V1_FIELDS: &[&str] = &[
    "metadata_version",
    "title",
    "summary",
    "description",
    "keywords",
    "license",
    "date_creation",
    "sources",
    "continuous_integration",
    "tosca",
    "doi",
    "dataset_url",
    "training_files_url",
    "cite_url",
];
const V1_SOURCES: &[&str] = &[
    "dockerfile_repo",
    "docker_registry_repo",
    "code",
    "zenodo_doi",
    "pre_trained_weights",
    "ai4_template",
];
const V2_FIELDS: &[&str] = &[
    "metadata_version",
    "title",
    "summary",
    "description",
    "doi",
    "dates",
    "links",
    "tags",
    "tasks",
    "categories",
    "libraries",
    "data-type",
    "resources",
];
const V2_RESOURCES: &[&str] = &["inference", "training"];
const V2_INFERENCE: &[&str] = &[
    "cpu",
    "gpu",
    "memory_MB",
    "gpu_memory_MB",
    "gpu_compute_capability",
    "storage_MB",
];

/// Collects errors and warnings while reading the file, each naming a field path.
#[derive(Default)]
struct Reader {
    errors: Vec<String>,
    warnings: Vec<String>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A value for a message: its JSON text, shortened.
fn shown(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 60 {
        format!("{}...", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

impl Reader {
    fn error(&mut self, path: &str, message: impl std::fmt::Display) {
        self.errors.push(format!("{path}: {message}"));
    }

    fn warn(&mut self, path: &str, message: impl std::fmt::Display) {
        self.warnings.push(format!("{path}: {message}"));
    }

    fn unknown(&mut self, obj: &Map<String, Value>, known: &[&str], path: &str) {
        for k in obj.keys() {
            if !known.contains(&k.as_str()) {
                self.warn(&join(path, k), "unknown field, ignored");
            }
        }
    }

    fn string(&mut self, obj: &Map<String, Value>, key: &str, path: &str) -> Option<String> {
        match obj.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => {
                self.error(
                    &join(path, key),
                    format!("expected a string, got {}", shown(v)),
                );
                None
            }
        }
    }

    /// A string, or a list of strings joined with newlines (v1 descriptions).
    fn text(&mut self, obj: &Map<String, Value>, key: &str, path: &str) -> Option<String> {
        match obj.get(key) {
            Some(Value::Array(_)) => {
                let lines = self.strings(obj, key, path);
                Some(lines.join("\n"))
            }
            _ => self.string(obj, key, path),
        }
    }

    fn strings(&mut self, obj: &Map<String, Value>, key: &str, path: &str) -> Vec<String> {
        let path = join(path, key);
        match obj.get(key) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => {
                let mut out: Vec<String> = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => {
                            if !out.contains(s) {
                                out.push(s.clone());
                            }
                        }
                        v => self.error(
                            &format!("{path}[{i}]"),
                            format!("expected a string, got {}", shown(v)),
                        ),
                    }
                }
                out
            }
            Some(v) => {
                self.error(
                    &path,
                    format!("expected a list of strings, got {}", shown(v)),
                );
                Vec::new()
            }
        }
    }

    /// A non-negative integer (`8000.0` counts, as in JSON Schema).
    fn count(&mut self, obj: &Map<String, Value>, key: &str, path: &str) -> Option<i64> {
        let v = obj.get(key)?;
        if v.is_null() {
            return None;
        }
        let n = v.as_i64().or_else(|| {
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                .map(|f| f as i64)
        });
        match n {
            Some(n) if n >= 0 => Some(n),
            Some(_) => {
                self.error(
                    &join(path, key),
                    format!("expected an integer >= 0, got {}", shown(v)),
                );
                None
            }
            None => {
                self.error(
                    &join(path, key),
                    format!("expected an integer, got {}", shown(v)),
                );
                None
            }
        }
    }

    fn object<'a>(
        &mut self,
        obj: &'a Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<&'a Map<String, Value>> {
        match obj.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(v) => {
                self.error(
                    &join(path, key),
                    format!("expected a mapping, got {}", shown(v)),
                );
                None
            }
        }
    }
}

/// `source_code` -> `sourceCode` (catalog link keys are camelCase).
fn camel(key: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in key.chars() {
        if c == '_' || c == '-' {
            upper = !out.is_empty();
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// An image reference as AI4OS metadata writes it (`org/name`, `org/name:tag`,
/// `https://hub.docker.com/r/org/name`, `registry.example.org/org/name:tag`) as a
/// repository and an optional tag.
pub fn split_image(reference: &str) -> Result<(String, Option<String>), String> {
    let mut s = reference.trim().trim_end_matches('/').to_string();
    if s.is_empty() {
        return Err("empty image reference".into());
    }
    if let Some((_, rest)) = s.split_once("://") {
        s = rest.to_string();
    }
    for hub in ["hub.docker.com/r/", "hub.docker.com/repository/docker/"] {
        if let Some(rest) = s.strip_prefix(hub) {
            s = rest.to_string();
        }
    }
    if let Some(rest) = s.strip_prefix("hub.docker.com/_/") {
        s = rest.to_string();
    }
    if s.contains('@') {
        return Err(format!(
            "{reference:?}: image digests are not supported; give a tag (--image REPOSITORY:TAG)"
        ));
    }
    let (repo_path, last) = match s.rsplit_once('/') {
        Some((head, last)) => (Some(head.to_string()), last.to_string()),
        None => (None, s.clone()),
    };
    let (last, tag) = match last.split_once(':') {
        Some((name, tag)) => (name.to_string(), Some(tag.to_string())),
        None => (last, None),
    };
    let repo = match repo_path {
        Some(head) => format!("{head}/{last}"),
        None => last,
    };
    Ok((repo, tag))
}

/// A DNS-1123 label from free text: lowercase, `[a-z0-9-]`, at most 63 characters,
/// starting and ending with a letter or digit. Empty when nothing is left.
pub fn dns_label(text: &str) -> String {
    let mut out = String::new();
    for c in text.to_lowercase().chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let mut out: String = out.trim_matches('-').chars().take(63).collect();
    while out.ends_with('-') {
        out.pop();
    }
    out
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn is_dns_label(s: &str) -> bool {
    is_dns_subdomain(s) && s.len() <= 63 && !s.contains('.')
}

/// Reads a metadata file's text: JSON when it starts with `{`, else YAML.
fn parse(text: &str) -> Result<Value, String> {
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"));
    }
    serde_yaml_ng::from_str::<Value>(text).map_err(|e| format!("not valid YAML: {e}"))
}

/// Which ai4-metadata generation the file follows: `metadata_version` decides; without
/// it a file with `links` is v2, else v1 (v1 files usually carry no version).
fn detect(r: &mut Reader, obj: &Map<String, Value>) -> Option<(MetadataVersion, Option<String>)> {
    let version = match obj.get("metadata_version") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.trim().to_string()),
        // YAML reads `metadata_version: 2.0` as a number.
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(v) => {
            r.error(
                "metadata_version",
                format!(
                    "expected a version string such as \"2.0.0\", got {}",
                    shown(v)
                ),
            );
            return None;
        }
    };
    match version.as_deref().and_then(|v| v.split('.').next()) {
        Some("1") => Some((MetadataVersion::V1, version)),
        Some("2") => Some((MetadataVersion::V2, version)),
        Some(_) => {
            r.error(
                "metadata_version",
                format!(
                    "unsupported version {:?}: kelp reads ai4-metadata 1.x (metadata.json) and 2.x (ai4-metadata.yml)",
                    version.unwrap_or_default()
                ),
            );
            None
        }
        None if obj.contains_key("links") => {
            r.warn(
                "metadata_version",
                "missing; the file has `links`, so it is read as ai4-metadata v2",
            );
            Some((MetadataVersion::V2, None))
        }
        None => Some((MetadataVersion::V1, None)),
    }
}

/// Resources from `resources.inference` (v2; v1 files have none).
fn resources(r: &mut Reader, obj: &Map<String, Value>) -> ModuleResources {
    let mut res = ModuleResources::default();
    let Some(resources) = r.object(obj, "resources", "") else {
        return res;
    };
    r.unknown(resources, V2_RESOURCES, "resources");
    let Some(inf) = r.object(resources, "inference", "resources") else {
        return res;
    };
    let path = "resources.inference";
    r.unknown(inf, V2_INFERENCE, path);
    match r.count(inf, "cpu", path) {
        Some(0) => r.warn(
            "resources.inference.cpu",
            format!(
                "0 sets no minimum; the Module asks for {} (kelp's minimum)",
                res.cpu
            ),
        ),
        Some(n) => match i32::try_from(n) {
            Ok(n) => res.cpu = n,
            Err(_) => r.error("resources.inference.cpu", format!("{n} is too large")),
        },
        None => {}
    }
    match r.count(inf, "memory_MB", path) {
        Some(0) => r.warn(
            "resources.inference.memory_MB",
            format!(
                "0 sets no minimum; the Module asks for {} MB (kelp's default)",
                res.memory_mb
            ),
        ),
        Some(n) => res.memory_mb = n,
        None => {}
    }
    if let Some(n) = r.count(inf, "gpu", path) {
        match i32::try_from(n) {
            Ok(n) => res.gpu = n,
            Err(_) => r.error("resources.inference.gpu", format!("{n} is too large")),
        }
    }
    if let Some(n) = r.count(inf, "gpu_memory_MB", path) {
        res.gpu_memory_mb = (n > 0).then_some(n);
    }
    match inf.get("gpu_compute_capability") {
        None | Some(Value::Null) => {}
        Some(v) => {
            let text = match v {
                Value::Number(n) => {
                    let t = n.to_string();
                    if t.contains('.') { t } else { format!("{t}.0") }
                }
                Value::String(s) => s.trim().to_string(),
                _ => String::new(),
            };
            let ok = text.split_once('.').is_some_and(|(a, b)| {
                !a.is_empty()
                    && !b.is_empty()
                    && a.chars().all(|c| c.is_ascii_digit())
                    && b.chars().all(|c| c.is_ascii_digit())
            });
            if ok {
                res.gpu_compute_capability = Some(text);
            } else {
                r.error(
                    "resources.inference.gpu_compute_capability",
                    format!(
                        "expected a compute capability such as 7.5, got {}",
                        shown(v)
                    ),
                );
            }
        }
    }
    if r.count(inf, "storage_MB", path).is_some() {
        r.warn(
            "resources.inference.storage_MB",
            "kelp Modules have no storage request (mount storage in the Deployment); ignored",
        );
    }
    res
}

/// What the file says, before it becomes a Module.
struct Read {
    version: MetadataVersion,
    metadata_version: Option<String>,
    title: Option<String>,
    summary: Option<String>,
    description: Option<String>,
    /// The image reference and the field it came from.
    image: Option<(String, String)>,
    resources: ModuleResources,
    catalog: Catalog,
}

fn read_v2(r: &mut Reader, obj: &Map<String, Value>, metadata_version: Option<String>) -> Read {
    r.unknown(obj, V2_FIELDS, "");
    let mut catalog = Catalog {
        metadata_version: metadata_version.clone(),
        tags: r.strings(obj, "tags", ""),
        tasks: r.strings(obj, "tasks", ""),
        categories: r.strings(obj, "categories", ""),
        libraries: r.strings(obj, "libraries", ""),
        data_type: r.strings(obj, "data-type", ""),
        links: BTreeMap::new(),
    };
    let _ = r.object(obj, "dates", "");
    let mut image = None;
    if let Some(links) = r.object(obj, "links", "") {
        for key in links.keys() {
            if let Some(v) = r.string(links, key, "links")
                && !v.trim().is_empty()
            {
                if key == "docker_image" {
                    image = Some((v.clone(), "links.docker_image".to_string()));
                }
                catalog.links.insert(camel(key), v);
            }
        }
    }
    if let Some(doi) = r.string(obj, "doi", "")
        && !doi.trim().is_empty()
    {
        catalog.links.insert("doi".into(), doi);
    }
    Read {
        version: MetadataVersion::V2,
        metadata_version,
        title: r.string(obj, "title", ""),
        summary: r.string(obj, "summary", ""),
        description: r.text(obj, "description", ""),
        image,
        resources: resources(r, obj),
        catalog,
    }
}

fn read_v1(r: &mut Reader, obj: &Map<String, Value>, metadata_version: Option<String>) -> Read {
    r.unknown(obj, V1_FIELDS, "");
    let keywords = r.strings(obj, "keywords", "");
    let mut catalog = Catalog {
        metadata_version: metadata_version.clone(),
        ..Catalog::default()
    };
    // Libraries and categories inferred from keywords, as `ai4-metadata migrate` does.
    let has = |k: &str| keywords.iter().any(|w| w.eq_ignore_ascii_case(k));
    for (kw, lib) in [
        ("tensorflow", "TensorFlow"),
        ("pytorch", "PyTorch"),
        ("keras", "Keras"),
        ("scikit-learn", "Scikit-learn"),
    ] {
        if has(kw) {
            catalog.libraries.push(lib.into());
        }
    }
    if has("trainable") {
        catalog.categories.push("AI4 trainable".into());
    }
    if has("inference") {
        catalog.categories.push("AI4 inference".into());
        catalog.categories.push("AI4 pre trained".into());
    }
    catalog.tags = keywords;
    let _ = r.string(obj, "license", "");
    let _ = r.string(obj, "date_creation", "");
    let mut image = None;
    let mut link = |r: &mut Reader, obj: &Map<String, Value>, key: &str, path: &str, to: &str| {
        if let Some(v) = r.string(obj, key, path)
            && !v.trim().is_empty()
        {
            catalog.links.insert(to.to_string(), v);
        }
    };
    if let Some(sources) = r.object(obj, "sources", "") {
        r.unknown(sources, V1_SOURCES, "sources");
        link(r, sources, "code", "sources", "sourceCode");
        link(r, sources, "dockerfile_repo", "sources", "dockerfileRepo");
        link(r, sources, "docker_registry_repo", "sources", "dockerImage");
        link(r, sources, "zenodo_doi", "sources", "zenodoDoi");
        link(r, sources, "pre_trained_weights", "sources", "weights");
        link(r, sources, "ai4_template", "sources", "ai4Template");
    }
    link(r, obj, "doi", "", "doi");
    link(r, obj, "dataset_url", "", "dataset");
    link(r, obj, "training_files_url", "", "trainingData");
    link(r, obj, "cite_url", "", "citation");
    if let Some(v) = catalog.links.get("dockerImage") {
        image = Some((v.clone(), "sources.docker_registry_repo".to_string()));
    }
    if obj.contains_key("resources") {
        r.warn(
            "resources",
            "not a v1 field; read as ai4-metadata v2 resources",
        );
    }
    Read {
        version: MetadataVersion::V1,
        metadata_version,
        title: r.string(obj, "title", ""),
        summary: r.string(obj, "summary", ""),
        description: r.text(obj, "description", ""),
        image,
        resources: resources(r, obj),
        catalog,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest<'a> {
    api_version: String,
    kind: &'static str,
    metadata: Meta,
    spec: &'a ModuleSpec,
}

#[derive(Serialize)]
struct Meta {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
}

/// Converts the text of a metadata file into a Module manifest (YAML). `label` names
/// the file in the header comment.
pub fn convert(text: &str, label: &str, args: &ImportArgs) -> Result<Outcome, Failure> {
    let mut r = Reader::default();
    let doc = parse(text).map_err(|e| Failure::new(format!("{label}: {e}")))?;
    let Value::Object(obj) = doc else {
        return Err(Failure::new(format!(
            "{label}: expected a mapping of ai4-metadata fields, got {}",
            shown(&doc)
        )));
    };
    let fail = |r: Reader| Failure {
        errors: r.errors.iter().map(|e| format!("{label}: {e}")).collect(),
        warnings: r.warnings,
    };
    let Some((version, metadata_version)) = detect(&mut r, &obj) else {
        return Err(fail(r));
    };
    let read = match version {
        MetadataVersion::V1 => read_v1(&mut r, &obj, metadata_version),
        MetadataVersion::V2 => read_v2(&mut r, &obj, metadata_version),
    };

    let title = read.title.clone().map(|t| t.trim().to_string());
    let title = match title {
        Some(t) if t.is_empty() => {
            r.error("title", "must not be empty");
            String::new()
        }
        Some(t) if t.chars().count() > 200 => {
            r.error("title", "longer than 200 characters (the Module's limit)");
            t
        }
        Some(t) => t,
        None => {
            r.error("title", "missing (required)");
            String::new()
        }
    };
    let summary = match read.summary.clone().map(|s| s.trim().to_string()) {
        Some(s) if s.chars().count() > 500 => {
            r.error("summary", "longer than 500 characters (the Module's limit)");
            s
        }
        Some(s) if !s.is_empty() => s,
        _ => {
            if !title.is_empty() {
                r.warn("summary", "missing or empty; the Module uses the title");
            }
            title.clone()
        }
    };
    let description = read
        .description
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_string);

    let (image_ref, image_path) = match (&args.image, &read.image) {
        (Some(i), _) => (Some(i.clone()), "--image".to_string()),
        (None, Some((i, path))) => (Some(i.clone()), path.clone()),
        (None, None) => (
            None,
            match read.version {
                MetadataVersion::V1 => "sources.docker_registry_repo",
                MetadataVersion::V2 => "links.docker_image",
            }
            .to_string(),
        ),
    };
    let (repository, tag) = match image_ref.as_deref().map(split_image) {
        Some(Ok(pair)) => pair,
        Some(Err(e)) => {
            r.error(&image_path, e);
            (String::new(), None)
        }
        None => {
            r.error(
                &image_path,
                "missing: kelp needs the module's Docker image; give it with --image REPOSITORY[:TAG]",
            );
            (String::new(), None)
        }
    };
    let uses_gpu = read.resources.gpu > 0
        || read
            .catalog
            .tags
            .iter()
            .any(|t| t.trim().eq_ignore_ascii_case("gpu"));
    let gpu_tag = args
        .gpu_tag
        .clone()
        .or_else(|| uses_gpu.then(|| "gpu".to_string()));

    let name = match &args.name {
        Some(n) => {
            if !is_dns_subdomain(n) {
                r.error(
                    "--name",
                    format!("{n:?} is not a valid resource name (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253)"),
                );
            }
            n.clone()
        }
        None => {
            let from_image = repository
                .rsplit('/')
                .next()
                .map(dns_label)
                .unwrap_or_default();
            let n = if from_image.is_empty() {
                dns_label(&title)
            } else {
                from_image
            };
            if n.is_empty() && r.errors.is_empty() {
                r.error(
                    "--name",
                    "cannot derive a Module name from the image or the title; give --name",
                );
            }
            n
        }
    };
    if let Some(ns) = &args.namespace
        && !is_dns_label(ns)
    {
        r.error(
            "--namespace",
            format!("{ns:?} is not a valid namespace (a DNS-1123 label)"),
        );
    }

    let catalog = read.catalog;
    let empty_catalog = catalog == Catalog::default();
    let spec = ModuleSpec {
        title,
        summary,
        description,
        image: ModuleImage {
            repository,
            tag: tag.unwrap_or_else(|| "latest".into()),
            gpu_tag,
            pull_secret_ref: None,
        },
        serving: Serving::default(),
        resources: read.resources,
        catalog: (!empty_catalog).then_some(catalog),
    };
    if r.errors.is_empty()
        && let Err(e) = crate::module::resolve(&spec)
    {
        // The Module controller's own check of the image reference and serving.
        r.error(&image_path, e);
    }
    if !r.errors.is_empty() {
        return Err(fail(r));
    }

    let manifest = Manifest {
        api_version: format!("{}/{}", kelp_crds::GROUP, kelp_crds::VERSION),
        kind: "Module",
        metadata: Meta {
            name,
            namespace: args.namespace.clone(),
        },
        spec: &spec,
    };
    // The output must read back as the same Module, as `kubectl apply` would send it.
    let value = serde_json::to_value(&manifest)
        .map_err(|e| Failure::new(format!("cannot serialize the Module: {e}")))?;
    let back: Module = kelp_crds::parse::from_value(value)
        .map_err(|e| Failure::new(format!("the generated Module does not parse: {e}")))?;
    if back.spec != spec {
        return Err(Failure::new(
            "the generated Module does not read back the same (a kelp bug)",
        ));
    }
    let yaml = serde_yaml_ng::to_string(&manifest)
        .map_err(|e| Failure::new(format!("cannot print the Module: {e}")))?;
    let header = format!(
        "# Module generated by `kelp module import` from {label} (ai4-metadata {}).\n",
        match (&read.metadata_version, read.version) {
            (Some(v), _) => v.clone(),
            (None, MetadataVersion::V1) => "v1".into(),
            (None, MetadataVersion::V2) => "v2".into(),
        }
    );
    Ok(Outcome {
        stdout: format!("{header}{yaml}"),
        warnings: r.warnings,
        notes: Vec::new(),
    })
}

/// `kelp module import FILE`.
pub fn import(args: &ImportArgs) -> Result<Outcome, Failure> {
    let text = read_file(&args.file)?;
    convert(&text, &args.file.display().to_string(), args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references() {
        let s = |r: &str| split_image(r).unwrap();
        assert_eq!(
            s("ai4oshub/ai4os-yolov8-torch"),
            ("ai4oshub/ai4os-yolov8-torch".into(), None)
        );
        assert_eq!(
            s("ai4oshub/x:gpu"),
            ("ai4oshub/x".into(), Some("gpu".into()))
        );
        assert_eq!(
            s("https://hub.docker.com/r/deephdc/deep-oc-mods/"),
            ("deephdc/deep-oc-mods".into(), None)
        );
        assert_eq!(
            s("registry.example.org:5000/ai4/x:1.2"),
            ("registry.example.org:5000/ai4/x".into(), Some("1.2".into()))
        );
        assert!(split_image("a/b@sha256:abc").is_err());
    }

    #[test]
    fn names_are_dns_labels() {
        assert_eq!(dns_label("YoloV8 model!"), "yolov8-model");
        assert_eq!(dns_label("--a__b--"), "a-b");
        assert_eq!(dns_label(&"x".repeat(80)).len(), 63);
        assert!(is_dns_subdomain("a.b-c"));
        assert!(!is_dns_subdomain("A"));
        assert_eq!(camel("source_code"), "sourceCode");
        assert_eq!(camel("data-type"), "dataType");
    }
}
