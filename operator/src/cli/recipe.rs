//! `kelp recipe list | show | render`: the recipe catalog from the command line.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use kelp_crds::{Cluster, Deployment, KelpResource, KubernetesMode, Module, NodePool};
use kelp_recipes::{
    Catalog, InputType, NodeContext, NodeRole, Recipe, RecipeError, RecipeKind, RecipeUse,
    WorkloadContext,
};
use serde_json::Value;

use super::{Failure, Outcome, ns_name, read_kelp_object};
use crate::cluster::plan::{self, CONTROL_PLANE_POOL, Join};
use crate::deployment::build;

/// Placeholder for the k3s server URL in renders outside a running operator.
pub const PLACEHOLDER_SERVER_URL: &str = "https://<control-plane>:6443";
/// Placeholder for the cluster join token.
pub const PLACEHOLDER_TOKEN: &str = "<join token, generated at provisioning>";
/// Placeholder for the cluster CA certificate.
pub const PLACEHOLDER_CA_CERT: &str = "-----BEGIN CERTIFICATE-----\n<cluster CA certificate, generated at provisioning>\n-----END CERTIFICATE-----\n";
/// Placeholder for the cluster CA key (servers only).
pub const PLACEHOLDER_CA_KEY: &str = "-----BEGIN PRIVATE KEY-----\n<cluster CA key, generated at provisioning>\n-----END PRIVATE KEY-----\n";
/// Placeholder for a Cluster UID (assigned by the API server).
pub const PLACEHOLDER_UID: &str = "<cluster uid, assigned by the API server>";

fn placeholder_join() -> Join {
    Join {
        server_url: PLACEHOLDER_SERVER_URL.into(),
        token: PLACEHOLDER_TOKEN.into(),
        ca_cert_pem: PLACEHOLDER_CA_CERT.into(),
        ca_key_pem: PLACEHOLDER_CA_KEY.into(),
    }
}

fn role_name(role: NodeRole) -> &'static str {
    match role {
        NodeRole::Server => "server",
        NodeRole::Agent => "agent",
    }
}

fn kind_name(kind: RecipeKind) -> &'static str {
    match kind {
        RecipeKind::Node => "node",
        RecipeKind::Workload => "workload",
    }
}

fn unknown_recipe(catalog: &Catalog, name: &str) -> Failure {
    Failure::new(format!(
        "unknown recipe {name:?}; known recipes: {}",
        catalog
            .list()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

fn get<'a>(catalog: &'a Catalog, name: &str) -> Result<&'a Recipe, Failure> {
    catalog
        .get(name)
        .ok_or_else(|| unknown_recipe(catalog, name))
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
pub(crate) fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; cols];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `kelp recipe list`: NAME, KIND, VERSION and DESCRIPTION of every recipe.
/// The built-in catalog plus the recipe files given with `--recipe-file`, each validated
/// exactly as the operator validates a recipe ConfigMap.
pub fn catalog_with_files(files: &[std::path::PathBuf]) -> Result<Catalog, Failure> {
    let mut catalog = Catalog::builtin();
    let mut errors = Vec::new();
    for f in files {
        match std::fs::read_to_string(f) {
            Ok(text) => {
                if let Err(e) = catalog.add_yaml(&text) {
                    errors.push(format!("{}: {e}", f.display()));
                }
            }
            Err(e) => errors.push(format!("{}: {e}", f.display())),
        }
    }
    if errors.is_empty() {
        Ok(catalog)
    } else {
        Err(Failure {
            errors,
            warnings: Vec::new(),
        })
    }
}

pub fn list(catalog: &Catalog) -> Outcome {
    let mut rows = vec![vec![
        "NAME".to_string(),
        "KIND".into(),
        "VERSION".into(),
        "DESCRIPTION".into(),
    ]];
    for r in catalog.list() {
        rows.push(vec![
            r.name.clone(),
            kind_name(r.kind).into(),
            r.version.clone(),
            r.description.clone(),
        ]);
    }
    Outcome {
        stdout: table(&rows),
        ..Outcome::default()
    }
}

/// The YAML source of a recipe: the built-in file, else the parsed recipe re-serialized.
fn source(recipe: &Recipe) -> String {
    kelp_recipes::BUILTIN_RECIPES
        .iter()
        .find(|(name, _)| *name == recipe.name)
        .map(|(_, text)| text.to_string())
        .unwrap_or_else(|| serde_yaml_ng::to_string(recipe).unwrap_or_default())
}

fn type_text(spec: &kelp_recipes::InputSpec) -> String {
    match spec.ty {
        InputType::String => "string".into(),
        InputType::Integer => "integer".into(),
        InputType::Boolean => "boolean".into(),
        InputType::Enum => format!("enum({})", spec.values.join("|")),
        InputType::Secret => "secret{name,key}".into(),
    }
}

/// `kelp recipe show NAME`: a summary (as `#` comment lines) followed by the YAML
/// source, so the whole output is still a valid recipe file.
pub fn show(catalog: &Catalog, name: &str) -> Result<Outcome, Failure> {
    let r = get(catalog, name)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# {} ({} recipe, version {}): {}",
        r.name,
        kind_name(r.kind),
        if r.version.is_empty() {
            "-"
        } else {
            &r.version
        },
        r.description
    );
    let mut requires = Vec::new();
    if let Some(v) = &r.requires.gpu_vendor {
        requires.push(format!("{v} GPUs in the pool"));
    }
    if let Some(role) = r.requires.role {
        requires.push(format!("the k3s {role:?} role"));
    }
    if !requires.is_empty() {
        let _ = writeln!(out, "# requires: {}", requires.join(", "));
    }
    let _ = writeln!(
        out,
        "# templates: {}",
        r.templates
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if r.inputs.is_empty() {
        out.push_str("# inputs: none\n");
    } else {
        out.push_str("# inputs:\n");
        let mut rows = vec![vec![
            "NAME".to_string(),
            "TYPE".into(),
            "DEFAULT".into(),
            "REQUIRED".into(),
            "DESCRIPTION".into(),
        ]];
        for i in &r.inputs {
            rows.push(vec![
                i.name.clone(),
                type_text(i),
                i.default
                    .as_ref()
                    .map_or_else(|| "-".to_string(), Value::to_string),
                if i.required { "yes" } else { "no" }.into(),
                i.description.clone(),
            ]);
        }
        for line in table(&rows).lines() {
            let _ = writeln!(out, "#   {line}");
        }
    }
    out.push_str("---\n");
    out.push_str(&source(r));
    Ok(Outcome {
        stdout: out,
        ..Outcome::default()
    })
}

/// Options of `kelp recipe render`.
#[derive(Debug, Clone, Default)]
pub struct RenderArgs {
    /// The recipe; optional with `--for-cluster` (then it selects the recipe the
    /// inputs apply to) and `--for-deployment` (default: the Deployment's recipe).
    pub name: Option<String>,
    /// `k=v`, the value read as YAML.
    pub inputs: Vec<String>,
    /// `k=<json>`.
    pub inputs_json: Vec<String>,
    pub for_cluster: Option<PathBuf>,
    pub pool: Option<String>,
    pub role: Option<NodeRole>,
    /// GPUs per machine of the example pool (node recipes without `--for-cluster`).
    pub gpus: Option<u32>,
    pub for_deployment: Option<PathBuf>,
    pub module: Option<PathBuf>,
    pub cluster: Option<PathBuf>,
}

/// Parses `--input k=v` (YAML value) and `--input-json k=<json>` into input values.
/// An empty YAML value is the empty string (YAML would read it as null, which a recipe
/// treats as "not given").
pub fn parse_inputs(yaml: &[String], json: &[String]) -> Result<BTreeMap<String, Value>, Failure> {
    let mut out = BTreeMap::new();
    let all = yaml
        .iter()
        .map(|s| ("--input", s))
        .chain(json.iter().map(|s| ("--input-json", s)));
    for (flag, arg) in all {
        let Some((key, text)) = arg.split_once('=') else {
            return Err(Failure::new(format!("{flag} {arg:?}: expected NAME=VALUE")));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(Failure::new(format!(
                "{flag} {arg:?}: the input name is empty"
            )));
        }
        let value: Value = if flag == "--input-json" {
            serde_json::from_str(text)
                .map_err(|e| Failure::new(format!("{flag} {key}: the value is not JSON: {e}")))?
        } else if text.trim().is_empty() {
            Value::String(String::new())
        } else {
            serde_yaml_ng::from_str(text)
                .map_err(|e| Failure::new(format!("{flag} {key}: the value is not YAML: {e}")))?
        };
        if out.insert(key.to_string(), value).is_some() {
            return Err(Failure::new(format!("input {key:?} is given twice")));
        }
    }
    Ok(out)
}

/// A recipe error, with a hint when the user's own `--input` caused it.
fn recipe_failure(
    catalog: &Catalog,
    e: RecipeError,
    given: &BTreeMap<String, Value>,
    context: &str,
) -> Failure {
    let mut msg = format!("{context}{e}");
    match &e {
        RecipeError::WrongType {
            input,
            expected: InputType::String,
            ..
        } if given.contains_key(input) => {
            let shown = given[input].to_string();
            let _ = write!(
                msg,
                " (--input values are read as YAML; quote a string: --input '{input}=\"{}\"', or use --input-json)",
                shown.trim_matches('"')
            );
        }
        RecipeError::UnknownInput { recipe, .. } | RecipeError::MissingInput { recipe, .. } => {
            if let Some(r) = catalog.get(recipe) {
                let names: Vec<&str> = r.inputs.iter().map(|i| i.name.as_str()).collect();
                let _ = write!(
                    msg,
                    " (inputs of {recipe}: {}; give them with --input NAME=VALUE)",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                );
            }
        }
        _ => {}
    }
    Failure::new(msg)
}

/// `kelp recipe render`.
pub fn render(catalog: &Catalog, args: &RenderArgs) -> Result<Outcome, Failure> {
    let inputs = parse_inputs(&args.inputs, &args.inputs_json)?;
    if args.for_cluster.is_some() && args.for_deployment.is_some() {
        return Err(Failure::new(
            "--for-cluster (node recipes) and --for-deployment (workload recipes) exclude each other",
        ));
    }
    if args.pool.is_some() && args.for_cluster.is_none() {
        return Err(Failure::new("--pool needs --for-cluster FILE"));
    }
    if (args.module.is_some() || args.cluster.is_some()) && args.for_deployment.is_none() {
        return Err(Failure::new(
            "--module and --cluster go with --for-deployment FILE",
        ));
    }
    if let Some(file) = &args.for_cluster {
        if args.gpus.is_some() {
            return Err(Failure::new(
                "--gpus applies to the example context; with --for-cluster the pool's machine.gpu.count is used",
            ));
        }
        return render_for_cluster(catalog, args, file, &inputs);
    }
    if let Some(file) = &args.for_deployment {
        return render_for_deployment(catalog, args, file, &inputs);
    }
    let Some(name) = &args.name else {
        return Err(Failure::new(
            "give a recipe NAME (see `kelp recipe list`), or --for-cluster FILE --pool POOL, or --for-deployment FILE",
        ));
    };
    let r = get(catalog, name)?;
    let use_ = RecipeUse {
        name: name.clone(),
        inputs: inputs.clone(),
    };
    match r.kind {
        RecipeKind::Node => {
            let ctx = example_node_context(r, args.role, args.gpus);
            let text = catalog
                .render_node(std::slice::from_ref(&use_), &ctx)
                .map_err(|e| recipe_failure(catalog, e, &inputs, ""))?;
            Ok(Outcome {
                stdout: text,
                notes: vec![format!(
                    "rendered {name} alone for an example k3s {} machine of pool {:?} ({} GPU(s)) of Cluster default/example; server URL, token and CA are placeholders",
                    role_name(ctx.kubernetes.role),
                    ctx.pool.name,
                    ctx.pool.gpu_count
                )],
                ..Outcome::default()
            })
        }
        RecipeKind::Workload => {
            if args.role.is_some() {
                return Err(Failure::new(format!(
                    "--role applies to node recipes; {name} is a workload recipe"
                )));
            }
            let ctx = example_workload_context(args.gpus.unwrap_or(0));
            let objects = catalog
                .render_workload(&use_, &ctx)
                .map_err(|e| recipe_failure(catalog, e, &inputs, ""))?;
            Ok(Outcome {
                stdout: yaml_stream(&objects)?,
                notes: vec![format!(
                    "rendered {name} with an example context: Deployment default/example of image {} ({} GPU(s)), one rclone mount, public exposure",
                    ctx.image, ctx.gpu
                )],
                ..Outcome::default()
            })
        }
    }
}

/// The example machine `render` uses for a node recipe on its own: Cluster
/// `default/example`; a CPU pool `cpu`, or a pool `gpu` with one GPU of the vendor
/// the recipe requires (`--gpus` overrides the count); role from `--role`, else the
/// role the recipe requires, else Agent; placeholder join values.
pub fn example_node_context(
    recipe: &Recipe,
    role: Option<NodeRole>,
    gpus: Option<u32>,
) -> NodeContext {
    let gpu_count = gpus.unwrap_or(if recipe.requires.gpu_vendor.is_some() {
        1
    } else {
        0
    });
    let role = role.or(recipe.requires.role).unwrap_or(NodeRole::Agent);
    let gpu_pool = gpu_count > 0;
    let mut labels = BTreeMap::new();
    let mut taints = Vec::new();
    if gpu_pool {
        labels.insert(
            "kelp.imagine-ai.eu/accelerator".to_string(),
            "example".to_string(),
        );
        taints.push(kelp_recipes::TaintInfo {
            key: "nvidia.com/gpu".into(),
            value: Some("present".into()),
            effect: "NoSchedule".into(),
        });
    }
    let join = placeholder_join();
    NodeContext {
        cluster: kelp_recipes::ClusterInfo {
            name: "example".into(),
            namespace: "default".into(),
            uid: PLACEHOLDER_UID.into(),
        },
        pool: kelp_recipes::PoolInfo {
            name: if gpu_pool { "gpu" } else { "cpu" }.into(),
            labels,
            taints,
            gpu_count,
            gpu_vendor: gpu_pool.then(|| {
                recipe
                    .requires
                    .gpu_vendor
                    .clone()
                    .unwrap_or_else(|| "NVIDIA".into())
            }),
        },
        ssh_authorized_keys: Vec::new(),
        kubernetes: kelp_recipes::KubernetesJoin {
            role,
            version: None,
            server_url: join.server_url,
            token: join.token,
            ca_cert_pem: join.ca_cert_pem,
            ca_key_pem: (role == NodeRole::Server).then_some(join.ca_key_pem),
        },
    }
}

/// The example workload `render` uses for a workload recipe on its own: Deployment
/// `default/example` of the AI4OS YOLOv8 image (the `gpu` tag when `gpus > 0`), 1
/// replica, 1 CPU, 2000 MB, DEEPaaS on port 5000, one rclone mount `rshare` at
/// `/storage`, exposed publicly at `/default/example/`.
pub fn example_workload_context(gpus: u32) -> WorkloadContext {
    let name = "example".to_string();
    let ns = "default".to_string();
    let mut labels = BTreeMap::new();
    labels.insert("app.kubernetes.io/name".to_string(), name.clone());
    labels.insert(
        "app.kubernetes.io/managed-by".to_string(),
        "kelp".to_string(),
    );
    labels.insert(build::DEPLOYMENT_LABEL.to_string(), name.clone());
    labels.insert(build::NAMESPACE_LABEL.to_string(), ns.clone());
    let pool = if gpus > 0 { "gpu" } else { "cpu" };
    let mut node_selector = BTreeMap::new();
    node_selector.insert(crate::simulated::NODE_POOL_LABEL.to_string(), pool.into());
    WorkloadContext {
        name: name.clone(),
        namespace: ns.clone(),
        labels,
        image: format!(
            "ai4oshub/ai4os-yolov8-torch:{}",
            if gpus > 0 { "gpu" } else { "latest" }
        ),
        image_pull_secret: None,
        command: None,
        args: None,
        protocol: "deepaas".into(),
        port: 5000,
        health_path: "/v2/".into(),
        ui_port: None,
        replicas: 1,
        cpu: 1,
        memory_mb: 2000,
        gpu: gpus,
        node_selector,
        tolerations: if gpus > 0 {
            vec![kelp_recipes::TaintInfo {
                key: "nvidia.com/gpu".into(),
                value: Some("present".into()),
                effect: "NoSchedule".into(),
            }]
        } else {
            Vec::new()
        },
        env: Vec::new(),
        storage: vec![kelp_recipes::StorageInfo {
            name: "rshare".into(),
            mount_path: "/storage".into(),
            read_only: false,
            config_secret: build::rclone_secret_name(&name, "rshare"),
        }],
        expose: Some(kelp_recipes::ExposeInfo {
            port: 5000,
            path: build::ingress_path(&ns, &name, "/"),
            public: true,
            host: None,
        }),
    }
}

/// Objects as a multi-document YAML stream (each document starts with `---`).
fn yaml_stream(objects: &[Value]) -> Result<String, Failure> {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        out.push_str(
            &serde_yaml_ng::to_string(o)
                .map_err(|e| Failure::new(format!("cannot print the objects as YAML: {e}")))?,
        );
    }
    Ok(out)
}

fn render_for_cluster(
    catalog: &Catalog,
    args: &RenderArgs,
    file: &std::path::Path,
    inputs: &BTreeMap<String, Value>,
) -> Result<Outcome, Failure> {
    let Some(pool_name) = &args.pool else {
        return Err(Failure::new(
            "--for-cluster needs --pool NAME: the pool whose machine's user-data to print",
        ));
    };
    let KelpResource::Cluster(cluster) = read_kelp_object(file, "Cluster")? else {
        unreachable!("read_kelp_object returns the asked kind");
    };
    let mut cluster: Cluster = *cluster;
    let cluster_id = ns_name(&cluster.metadata);
    if cluster.metadata.uid.is_none() {
        cluster.metadata.uid = Some(PLACEHOLDER_UID.into());
    }
    if cluster.metadata.namespace.is_none() {
        cluster.metadata.namespace = Some("default".into());
    }
    let k8s = &cluster.spec.kubernetes;
    let cp_pool = k8s.control_plane.as_ref().and_then(|c| c.pool.clone());
    let pool: Option<&NodePool> = cluster
        .spec
        .node_pools
        .iter()
        .find(|p| &p.name == pool_name);
    let separate_cp = k8s.mode == KubernetesMode::Provision && cp_pool.is_none();
    let (pool, role) = match pool {
        Some(p) => {
            let default_role = if k8s.mode == KubernetesMode::Provision
                && cp_pool.as_deref() == Some(p.name.as_str())
            {
                NodeRole::Server
            } else {
                NodeRole::Agent
            };
            let role = args.role.unwrap_or(default_role);
            if role == NodeRole::Server && default_role != NodeRole::Server {
                return Err(Failure::new(format!(
                    "pool {pool_name} of Cluster {cluster_id} has no k3s server: the server runs {}",
                    match (&k8s.mode, &cp_pool) {
                        (KubernetesMode::Existing, _) => {
                            "in the existing cluster (spec.kubernetes.mode: Existing)".to_string()
                        }
                        (_, Some(cp)) =>
                            format!("on pool {cp} (spec.kubernetes.controlPlane.pool)"),
                        (_, None) =>
                            format!("on a separate machine (use --pool {CONTROL_PLANE_POOL})"),
                    }
                )));
            }
            (Some(p), role)
        }
        None if pool_name == CONTROL_PLANE_POOL && separate_cp => {
            if args.role == Some(NodeRole::Agent) {
                return Err(Failure::new(format!(
                    "the {CONTROL_PLANE_POOL} machine of Cluster {cluster_id} is a k3s server; --role agent does not apply"
                )));
            }
            (None, NodeRole::Server)
        }
        None => {
            let mut names: Vec<&str> = cluster
                .spec
                .node_pools
                .iter()
                .map(|p| p.name.as_str())
                .collect();
            if separate_cp {
                names.push(CONTROL_PLANE_POOL);
            }
            return Err(Failure::new(format!(
                "Cluster {cluster_id} has no node pool {pool_name:?} (pools: {})",
                names.join(", ")
            )));
        }
    };
    let mut uses = plan::node_recipes(&cluster, pool, role);
    let pool_label = pool.map_or(CONTROL_PLANE_POOL, |p| p.name.as_str());
    let recipe_names = uses
        .iter()
        .map(|u| u.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    match &args.name {
        Some(name) => {
            get(catalog, name)?;
            let Some(u) = uses.iter_mut().find(|u| &u.name == name) else {
                return Err(Failure::new(format!(
                    "recipe {name} is not among the recipes of a k3s {} machine of pool {pool_label} ({recipe_names}); --for-cluster renders the pool's recipes as the Cluster lists them",
                    role_name(role)
                )));
            };
            u.inputs.extend(inputs.clone());
        }
        None if !inputs.is_empty() => {
            return Err(Failure::new(format!(
                "--input needs the recipe NAME it applies to (pool {pool_label}: {recipe_names})"
            )));
        }
        None => {}
    }
    let mut join = placeholder_join();
    if pool.is_none() {
        // The separate control-plane machine runs the server itself: no URL to join.
        join.server_url = String::new();
    }
    let ctx = plan::node_context(&cluster, pool, role, &join);
    let text = catalog.render_node(&uses, &ctx).map_err(|e| {
        recipe_failure(
            catalog,
            e,
            inputs,
            &format!("Cluster {cluster_id}, pool {pool_label}: "),
        )
    })?;
    let body = text
        .strip_prefix(kelp_recipes::CLOUD_CONFIG_HEADER)
        .unwrap_or(&text);
    let mut out = String::from(kelp_recipes::CLOUD_CONFIG_HEADER);
    let _ = writeln!(
        out,
        "# kelp recipe render --for-cluster: user-data of a k3s {} machine of pool {pool_label} of Cluster {cluster_id} (recipes: {recipe_names}).",
        role_name(role)
    );
    out.push_str(
        "# Placeholders in <angle brackets> stand for what the operator generates at provisioning: server URL, join token, cluster CA, Cluster UID.\n",
    );
    out.push_str(body);
    Ok(Outcome {
        stdout: out,
        ..Outcome::default()
    })
}

fn render_for_deployment(
    catalog: &Catalog,
    args: &RenderArgs,
    file: &std::path::Path,
    inputs: &BTreeMap<String, Value>,
) -> Result<Outcome, Failure> {
    let (Some(module_file), Some(cluster_file)) = (&args.module, &args.cluster) else {
        return Err(Failure::new(
            "--for-deployment FILE needs --module FILE and --cluster FILE (the Module and Cluster it refers to)",
        ));
    };
    if args.role.is_some() || args.gpus.is_some() {
        return Err(Failure::new(
            "--role and --gpus apply to node recipes and example contexts, not to --for-deployment",
        ));
    }
    let KelpResource::Deployment(dep) = read_kelp_object(file, "Deployment")? else {
        unreachable!("read_kelp_object returns the asked kind");
    };
    let KelpResource::Module(module) = read_kelp_object(module_file, "Module")? else {
        unreachable!("read_kelp_object returns the asked kind");
    };
    let KelpResource::Cluster(cluster) = read_kelp_object(cluster_file, "Cluster")? else {
        unreachable!("read_kelp_object returns the asked kind");
    };
    let mut dep: Deployment = *dep;
    let mut module: Module = *module;
    let cluster: Cluster = *cluster;
    if dep.metadata.namespace.is_none() {
        dep.metadata.namespace = Some("default".into());
    }
    let dep_id = ns_name(&dep.metadata);
    let module_name = module.metadata.name.clone().unwrap_or_default();
    let cluster_name = cluster.metadata.name.clone().unwrap_or_default();
    if dep.spec.module_ref.name != module_name {
        return Err(Failure::new(format!(
            "Deployment {dep_id} spec.moduleRef names Module {:?}, {} holds Module {module_name:?}",
            dep.spec.module_ref.name,
            module_file.display()
        )));
    }
    if !dep.spec.candidates().contains(&cluster_name.as_str()) {
        return Err(Failure::new(format!(
            "Deployment {dep_id} runs on {:?} (spec.clusterRef or spec.placement), {} holds Cluster {cluster_name:?}",
            dep.spec.candidates(),
            cluster_file.display()
        )));
    }
    if let Some(name) = &args.name
        && name != &dep.spec.recipe
    {
        return Err(Failure::new(format!(
            "Deployment {dep_id} uses recipe {} (spec.recipe), not {name}; leave NAME out or give {}",
            dep.spec.recipe, dep.spec.recipe
        )));
    }
    let resolved = crate::module::resolve(&module.spec)
        .map_err(|e| Failure::new(format!("Module {module_name}: {e}")))?;
    module
        .status
        .get_or_insert_with(Default::default)
        .resolved_image = Some(resolved);
    let need = build::need(&dep, &module);
    let pool = build::choose_pool(&cluster, dep.spec.node_pool.as_deref(), need)
        .map_err(|e| Failure::new(format!("Deployment {dep_id}: {e}")))?;
    let image = build::image(&dep, &module, need).expect("resolved image set above");
    let dep_name = dep.metadata.name.clone().unwrap_or_default();
    let pull = module
        .spec
        .image
        .pull_secret_ref
        .as_ref()
        .map(|_| format!("{dep_name}-pull"));
    let ctx = build::workload_context(&dep, &module, pool, need, image, pull);
    let use_ = RecipeUse {
        name: dep.spec.recipe.clone(),
        inputs: inputs.clone(),
    };
    let objects = catalog.render_workload(&use_, &ctx).map_err(|e| {
        recipe_failure(
            catalog,
            e,
            inputs,
            &format!("Deployment {dep_id} spec.recipe {}: ", dep.spec.recipe),
        )
    })?;
    Ok(Outcome {
        stdout: yaml_stream(&objects)?,
        notes: vec![format!(
            "objects of Deployment {dep_id} on pool {} of Cluster {cluster_name} (image {}); the operator also creates the Secrets they refer to (rclone config, env values, pull secret)",
            pool.name, ctx.image
        )],
        ..Outcome::default()
    })
}
