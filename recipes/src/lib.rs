//! kelp's recipes: YAML files with typed inputs and handlebars templates that render
//! to cloud-init user-data (node recipes) and Kubernetes manifests (workload recipes).
//!
//! The format, helpers and merge rules are described in `docs/recipes.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cloud_config;
mod context;
mod error;
mod helpers;
mod merge;
pub mod rclone;
mod recipe;
mod workload;

use std::collections::BTreeMap;

use handlebars::Handlebars;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use cloud_config::{
    KNOWN_CLOUD_CONFIG_KEYS, UserDataError, is_known_cloud_config_key, validate_user_data,
};
pub use context::{
    ClusterInfo, EnvInfo, ExposeInfo, KeyRef, KubernetesJoin, NodeContext, NodeRole, PoolInfo,
    StorageInfo, TaintInfo, WorkloadContext,
};
pub use error::RecipeError;
pub use helpers::{json_text, shell_quote};
pub use recipe::{InputSpec, InputType, Recipe, RecipeKind, Requires, TemplateOrder, TemplateSpec};

/// The recipe files compiled into the binary.
pub const BUILTIN_RECIPES: &[(&str, &str)] = &[
    ("base", include_str!("../builtin/base.yaml")),
    ("nvidia-gpu", include_str!("../builtin/nvidia-gpu.yaml")),
    ("k3s-server", include_str!("../builtin/k3s-server.yaml")),
    ("k3s-agent", include_str!("../builtin/k3s-agent.yaml")),
    (
        "rclone-webdav",
        include_str!("../builtin/rclone-webdav.yaml"),
    ),
    (
        "deepaas-inference",
        include_str!("../builtin/deepaas-inference.yaml"),
    ),
];

/// The first line of every rendered user-data.
pub const CLOUD_CONFIG_HEADER: &str = "#cloud-config\n";

/// One use of a recipe: its name and the inputs given to it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecipeUse {
    /// Recipe name.
    pub name: String,
    /// Input values by input name.
    #[serde(default)]
    pub inputs: BTreeMap<String, Value>,
}

impl RecipeUse {
    /// A use without inputs.
    pub fn new(name: impl Into<String>) -> RecipeUse {
        RecipeUse {
            name: name.into(),
            inputs: BTreeMap::new(),
        }
    }

    /// Adds one input value.
    pub fn with_input(mut self, name: impl Into<String>, value: impl Into<Value>) -> RecipeUse {
        self.inputs.insert(name.into(), value.into());
        self
    }
}

/// The node recipes a pool gets when it names none: `base`, `nvidia-gpu` when the
/// machines have GPUs, then `k3s-agent` or `k3s-server`.
pub fn default_node_recipes(gpu_count: u32, role: NodeRole) -> Vec<RecipeUse> {
    let mut uses = vec![RecipeUse::new("base")];
    if gpu_count > 0 {
        uses.push(RecipeUse::new("nvidia-gpu"));
    }
    uses.push(RecipeUse::new(match role {
        NodeRole::Server => "k3s-server",
        NodeRole::Agent => "k3s-agent",
    }));
    uses
}

/// Recipes by name, with their compiled templates.
#[derive(Debug, Clone)]
pub struct Catalog {
    recipes: BTreeMap<String, Recipe>,
    hbs: Handlebars<'static>,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog::empty()
    }
}

fn template_key(recipe: &str, template: &str) -> String {
    format!("{recipe}/{template}")
}

impl Catalog {
    /// A catalog without recipes.
    pub fn empty() -> Catalog {
        let mut hbs = Handlebars::new();
        hbs.set_strict_mode(true);
        hbs.register_escape_fn(handlebars::no_escape);
        helpers::register(&mut hbs);
        Catalog {
            recipes: BTreeMap::new(),
            hbs,
        }
    }

    /// The built-in recipes: base, nvidia-gpu, k3s-server, k3s-agent, rclone-webdav
    /// (node) and deepaas-inference (workload).
    pub fn builtin() -> Catalog {
        let mut catalog = Catalog::empty();
        for (name, text) in BUILTIN_RECIPES {
            // Built-ins are checked by the tests; a broken one is a build defect.
            catalog
                .add_yaml(text)
                .unwrap_or_else(|e| panic!("built-in recipe {name}: {e}"));
        }
        catalog
    }

    /// Adds a recipe from its YAML text, replacing one of the same name. The recipe is
    /// validated first (parses, inputs well-typed, defaults of the declared types,
    /// templates compile); on error the catalog is unchanged.
    pub fn add_yaml(&mut self, text: &str) -> Result<(), RecipeError> {
        let recipe = Recipe::from_yaml(text)?;
        let mut compiled = Vec::with_capacity(recipe.templates.len());
        for t in &recipe.templates {
            let tpl = handlebars::Template::compile(&t.template).map_err(|e| {
                RecipeError::TemplateSyntax {
                    recipe: recipe.name.clone(),
                    template: t.name.clone(),
                    message: e.to_string(),
                }
            })?;
            compiled.push((template_key(&recipe.name, &t.name), tpl));
        }
        if let Some(old) = self.recipes.remove(&recipe.name) {
            for t in &old.templates {
                self.hbs
                    .unregister_template(&template_key(&old.name, &t.name));
            }
        }
        for (key, tpl) in compiled {
            self.hbs.register_template(&key, tpl);
        }
        self.recipes.insert(recipe.name.clone(), recipe);
        Ok(())
    }

    /// The recipe of that name.
    pub fn get(&self, name: &str) -> Option<&Recipe> {
        self.recipes.get(name)
    }

    /// All recipes, by name.
    pub fn list(&self) -> impl Iterator<Item = &Recipe> {
        self.recipes.values()
    }

    fn lookup(&self, name: &str, kind: RecipeKind) -> Result<&Recipe, RecipeError> {
        let recipe = self.get(name).ok_or_else(|| RecipeError::UnknownRecipe {
            name: name.to_string(),
            kind,
            known: self
                .list()
                .filter(|r| r.kind == kind)
                .map(|r| r.name.clone())
                .collect(),
        })?;
        if recipe.kind != kind {
            return Err(RecipeError::WrongKind {
                recipe: recipe.name.clone(),
                expected: kind,
                actual: recipe.kind,
            });
        }
        Ok(recipe)
    }

    fn root<C: Serialize>(
        recipe: &Recipe,
        ctx: &C,
        inputs: Map<String, Value>,
    ) -> Result<Value, RecipeError> {
        let mut root = serde_json::to_value(ctx).map_err(|e| RecipeError::Render {
            recipe: recipe.name.clone(),
            template: "-".into(),
            message: format!("context: {e}"),
        })?;
        if let Value::Object(map) = &mut root {
            map.insert("inputs".into(), Value::Object(inputs));
            let mut meta = Map::new();
            meta.insert("name".into(), recipe.name.clone().into());
            meta.insert("version".into(), recipe.version.clone().into());
            map.insert("recipe".into(), Value::Object(meta));
        }
        Ok(root)
    }

    fn render_one(
        &self,
        recipe: &Recipe,
        template: &TemplateSpec,
        root: &Value,
    ) -> Result<String, RecipeError> {
        self.hbs
            .render(&template_key(&recipe.name, &template.name), root)
            .map_err(|e| RecipeError::Render {
                recipe: recipe.name.clone(),
                template: template.name.clone(),
                message: render_message(&e),
            })
    }

    /// Checks a node recipe use against a node without rendering: the recipe exists,
    /// is a node recipe, its requirements hold and the inputs are valid.
    pub fn check_node(&self, recipe: &RecipeUse, ctx: &NodeContext) -> Result<(), RecipeError> {
        let r = self.lookup(&recipe.name, RecipeKind::Node)?;
        check_requires(r, ctx)?;
        r.resolve_inputs(&recipe.inputs).map(|_| ())
    }

    /// Renders node recipes into one `#cloud-config` user-data. Every use is checked
    /// (recipe, kind, requirements, inputs) before anything is rendered. Parts are
    /// merged by template `order` (first, normal, last) and, within an order, in the
    /// order of `recipes` and of the templates in each recipe. Every part must be a
    /// mapping whose top-level keys are all in [`KNOWN_CLOUD_CONFIG_KEYS`]
    /// ([`RecipeError::UnknownCloudConfigKey`] names the recipe, template and key);
    /// on any error nothing is returned, so user-data is never half-rendered.
    pub fn render_node(
        &self,
        recipes: &[RecipeUse],
        ctx: &NodeContext,
    ) -> Result<String, RecipeError> {
        let mut planned = Vec::with_capacity(recipes.len());
        for u in recipes {
            let r = self.lookup(&u.name, RecipeKind::Node)?;
            check_requires(r, ctx)?;
            let inputs = r.resolve_inputs(&u.inputs)?;
            planned.push((r, Self::root(r, ctx, inputs)?));
        }
        let mut parts = Vec::new();
        for (r, root) in &planned {
            for t in &r.templates {
                let text = self.render_one(r, t, root)?;
                let out_err = |path: &str, message: String| RecipeError::Output {
                    recipe: r.name.clone(),
                    template: t.name.clone(),
                    path: path.into(),
                    message,
                };
                let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
                    .map_err(|e| out_err(".", format!("not YAML: {e}")))?;
                match cloud_config::check_keys(&value) {
                    Ok(()) => {}
                    Err(UserDataError::UnknownKey { key, suggestion }) => {
                        return Err(RecipeError::UnknownCloudConfigKey {
                            recipe: r.name.clone(),
                            template: t.name.clone(),
                            key,
                            suggestion,
                        });
                    }
                    Err(_) => {
                        return Err(out_err(
                            ".",
                            "a node template must render a YAML mapping".into(),
                        ));
                    }
                }
                parts.push((t.order, *r, t, value));
            }
        }
        parts.sort_by_key(|p| p.0);
        let mut merged = serde_yaml_ng::Value::Mapping(Default::default());
        for (_, r, t, value) in parts {
            merge::merge(&mut merged, value, ".").map_err(|(path, message)| {
                RecipeError::Merge {
                    recipe: r.name.clone(),
                    template: t.name.clone(),
                    path,
                    message,
                }
            })?;
        }
        let body = serde_yaml_ng::to_string(&merged).map_err(|e| RecipeError::Output {
            recipe: "-".into(),
            template: "-".into(),
            path: ".".into(),
            message: e.to_string(),
        })?;
        let text = format!("{CLOUD_CONFIG_HEADER}{body}");
        // Every part passed the key check; this guards the merged document as a whole.
        validate_user_data(&text).map_err(|e| RecipeError::Output {
            recipe: "-".into(),
            template: "-".into(),
            path: ".".into(),
            message: e.to_string(),
        })?;
        Ok(text)
    }

    /// Renders a workload recipe into Kubernetes objects. Each template renders zero or
    /// more YAML documents; each must have `apiVersion`, `kind` and `metadata.name`.
    /// The renderer sets `metadata.namespace`, adds `ctx.labels` to `metadata.labels`,
    /// and checks known kinds parse as their k8s-openapi types.
    pub fn render_workload(
        &self,
        recipe: &RecipeUse,
        ctx: &WorkloadContext,
    ) -> Result<Vec<Value>, RecipeError> {
        let r = self.lookup(&recipe.name, RecipeKind::Workload)?;
        let inputs = r.resolve_inputs(&recipe.inputs)?;
        let root = Self::root(r, ctx, inputs)?;
        let mut objects = Vec::new();
        for t in &r.templates {
            let text = self.render_one(r, t, &root)?;
            let out_err = |path: String, message: String| RecipeError::Output {
                recipe: r.name.clone(),
                template: t.name.clone(),
                path,
                message,
            };
            for (i, doc) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
                let doc_path = format!("document {}", i + 1);
                let value = Value::deserialize(doc)
                    .map_err(|e| out_err(doc_path.clone(), format!("not YAML: {e}")))?;
                if value.is_null() {
                    continue;
                }
                let mut obj = match value {
                    Value::Object(map) => map,
                    _ => return Err(out_err(doc_path, "not a mapping".into())),
                };
                let field = |obj: &Map<String, Value>, name: &str| -> Result<String, RecipeError> {
                    obj.get(name)
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .ok_or_else(|| {
                            out_err(
                                format!("{doc_path}: {name}"),
                                "missing or not a string".into(),
                            )
                        })
                };
                let api_version = field(&obj, "apiVersion")?;
                let kind = field(&obj, "kind")?;
                let meta = obj
                    .entry("metadata")
                    .or_insert_with(|| Value::Object(Map::new()));
                let Value::Object(meta) = meta else {
                    return Err(out_err(
                        format!("{doc_path}: metadata"),
                        "not a mapping".into(),
                    ));
                };
                let name = field(meta, "name").map_err(|_| {
                    out_err(
                        format!("{doc_path}: metadata.name"),
                        "missing or not a string".into(),
                    )
                })?;
                meta.insert("namespace".into(), ctx.namespace.clone().into());
                let labels = meta
                    .entry("labels")
                    .or_insert_with(|| Value::Object(Map::new()));
                let Value::Object(labels) = labels else {
                    return Err(out_err(
                        format!("{kind}/{name}: metadata.labels"),
                        "not a mapping".into(),
                    ));
                };
                for (k, v) in &ctx.labels {
                    labels.insert(k.clone(), v.clone().into());
                }
                let obj = Value::Object(obj);
                workload::check_type(&api_version, &kind, &obj).map_err(|(path, message)| {
                    out_err(format!("{kind}/{name}: {path}"), message)
                })?;
                objects.push(obj);
            }
        }
        Ok(objects)
    }
}

fn check_requires(r: &Recipe, ctx: &NodeContext) -> Result<(), RecipeError> {
    let unmet = |requirement: String| RecipeError::Unmet {
        recipe: r.name.clone(),
        requirement,
    };
    if let Some(vendor) = &r.requires.gpu_vendor {
        if ctx.pool.gpu_count == 0 {
            return Err(unmet(format!(
                "needs {vendor} GPUs but pool {:?} has none",
                ctx.pool.name
            )));
        }
        if let Some(have) = &ctx.pool.gpu_vendor
            && !have.eq_ignore_ascii_case(vendor)
        {
            return Err(unmet(format!(
                "needs {vendor} GPUs but pool {:?} has {have} GPUs",
                ctx.pool.name
            )));
        }
    }
    if let Some(role) = r.requires.role
        && role != ctx.kubernetes.role
    {
        return Err(unmet(format!(
            "runs on {role:?} machines only, this one is {:?}",
            ctx.kubernetes.role
        )));
    }
    Ok(())
}

/// Handlebars errors print their template name and position; keep it, add the reason.
fn render_message(e: &handlebars::RenderError) -> String {
    let mut msg = e.reason().to_string();
    if let (Some(line), Some(col)) = (e.line_no, e.column_no) {
        msg.push_str(&format!(" (line {line}, column {col})"));
    }
    msg
}
