//! The recipe file format and input validation.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::context::NodeRole;
use crate::error::RecipeError;

/// One recipe, as read from its YAML file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Recipe {
    /// Unique name in the catalog (`nvidia-gpu`).
    pub name: String,
    /// One line saying what it does.
    #[serde(default)]
    pub description: String,
    /// The recipe's own version, for humans.
    #[serde(default)]
    pub version: String,
    /// Node (cloud-config) or workload (Kubernetes objects).
    pub kind: RecipeKind,
    /// What the node pool must offer (node recipes only).
    #[serde(default)]
    pub requires: Requires,
    /// Declared inputs.
    #[serde(default)]
    pub inputs: Vec<InputSpec>,
    /// Handlebars templates, rendered in order.
    pub templates: Vec<TemplateSpec>,
}

/// What a recipe renders to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipeKind {
    /// Cloud-init `#cloud-config` parts merged into one user-data.
    Node,
    /// Kubernetes objects.
    Workload,
}

impl fmt::Display for RecipeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecipeKind::Node => "node",
            RecipeKind::Workload => "workload",
        })
    }
}

/// Requirements a node pool must meet for a node recipe to apply.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Requires {
    /// The pool must have GPUs (count > 0) of this vendor (case-insensitive; a pool
    /// with GPUs but no declared vendor matches).
    #[serde(default)]
    pub gpu_vendor: Option<String>,
    /// The machine must have this Kubernetes role.
    #[serde(default)]
    pub role: Option<NodeRole>,
}

/// The declaration of one input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InputSpec {
    /// Name, as used in `inputs.<name>` in templates.
    pub name: String,
    /// Value type.
    #[serde(rename = "type")]
    pub ty: InputType,
    /// Value used when none is given; must have the declared type.
    #[serde(default)]
    pub default: Option<Value>,
    /// Whether a value must be given (a required input has no default).
    #[serde(default)]
    pub required: bool,
    /// Help text.
    #[serde(default)]
    pub description: String,
    /// Allowed values of an `enum` input.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// The type of an input value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    /// A JSON string.
    String,
    /// A JSON integer (a number without fraction; numeric strings are refused).
    Integer,
    /// `true` or `false`.
    Boolean,
    /// A string from the input's `values`.
    Enum,
    /// A reference to a Secret key: `{name, key}`.
    Secret,
}

impl fmt::Display for InputType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InputType::String => "a string",
            InputType::Integer => "an integer",
            InputType::Boolean => "a boolean",
            InputType::Enum => "an enum string",
            InputType::Secret => "a secret reference {name, key}",
        })
    }
}

/// One handlebars template of a recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemplateSpec {
    /// Name, unique in the recipe (used in error messages).
    pub name: String,
    /// Where this part goes when node parts are merged (ignored for workloads).
    #[serde(default)]
    pub order: TemplateOrder,
    /// The handlebars source.
    pub template: String,
}

/// Merge position of a node template part. All `first` parts (in recipe order) are
/// merged before all `normal` parts, which come before all `last` parts. `base` uses
/// `last` for its completion marker so it runs after every other recipe's `runcmd`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TemplateOrder {
    /// Before every `normal` part.
    First,
    /// In recipe order.
    #[default]
    Normal,
    /// After every `normal` part.
    Last,
}

impl Recipe {
    /// Parses a recipe file and checks what can be checked without the template
    /// engine: names, input definitions and defaults.
    pub fn from_yaml(text: &str) -> Result<Recipe, RecipeError> {
        let recipe: Recipe = serde_yaml_ng::from_str(text).map_err(|e| RecipeError::Parse {
            recipe: guess_name(text),
            message: e.to_string(),
        })?;
        recipe.check()?;
        Ok(recipe)
    }

    /// Finds an input declaration.
    pub fn input(&self, name: &str) -> Option<&InputSpec> {
        self.inputs.iter().find(|i| i.name == name)
    }

    fn invalid(&self, message: String) -> RecipeError {
        RecipeError::Invalid {
            recipe: self.name.clone(),
            message,
        }
    }

    fn check(&self) -> Result<(), RecipeError> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(self.invalid(format!(
                "name {:?} must be non-empty letters, digits, '-', '_' or '.'",
                self.name
            )));
        }
        if self.templates.is_empty() {
            return Err(self.invalid("has no templates".into()));
        }
        let mut seen = BTreeMap::new();
        for t in &self.templates {
            if seen.insert(t.name.as_str(), ()).is_some() {
                return Err(self.invalid(format!("template {:?} is defined twice", t.name)));
            }
        }
        if self.kind == RecipeKind::Workload
            && (self.requires.gpu_vendor.is_some() || self.requires.role.is_some())
        {
            return Err(self.invalid("`requires` applies to node recipes only".into()));
        }
        let mut seen = BTreeMap::new();
        for input in &self.inputs {
            if seen.insert(input.name.as_str(), ()).is_some() {
                return Err(self.invalid(format!("input {:?} is defined twice", input.name)));
            }
            if input.name.is_empty()
                || !input
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
                || input.name.starts_with(|c: char| c.is_ascii_digit())
            {
                return Err(self.invalid(format!(
                    "input name {:?} must be an identifier (letters, digits, '_')",
                    input.name
                )));
            }
            match (input.ty, input.values.is_empty()) {
                (InputType::Enum, true) => {
                    return Err(self.invalid(format!(
                        "enum input {:?} needs a non-empty `values` list",
                        input.name
                    )));
                }
                (InputType::Enum, false) | (_, true) => {}
                (_, false) => {
                    return Err(self.invalid(format!(
                        "input {:?}: `values` is only for enum inputs",
                        input.name
                    )));
                }
            }
            if input.required && input.default.is_some() {
                return Err(self.invalid(format!(
                    "input {:?} is required and has a default; choose one",
                    input.name
                )));
            }
            if let Some(default) = &input.default {
                self.check_value(input, default).map_err(|e| {
                    self.invalid(format!("default of input {:?} is wrong: {e}", input.name))
                })?;
            }
        }
        Ok(())
    }

    fn check_value(&self, spec: &InputSpec, value: &Value) -> Result<(), RecipeError> {
        let wrong = || RecipeError::WrongType {
            recipe: self.name.clone(),
            input: spec.name.clone(),
            expected: spec.ty,
            found: describe(value),
        };
        match spec.ty {
            InputType::String => value.is_string().then_some(()).ok_or_else(wrong),
            InputType::Integer => (value.is_i64() || value.is_u64())
                .then_some(())
                .ok_or_else(wrong),
            InputType::Boolean => value.is_boolean().then_some(()).ok_or_else(wrong),
            InputType::Enum => {
                let s = value.as_str().ok_or_else(wrong)?;
                if spec.values.iter().any(|v| v == s) {
                    Ok(())
                } else {
                    Err(RecipeError::NotInEnum {
                        recipe: self.name.clone(),
                        input: spec.name.clone(),
                        value: s.to_string(),
                        allowed: spec.values.clone(),
                    })
                }
            }
            InputType::Secret => {
                let ok = value.as_object().is_some_and(|o| {
                    o.len() == 2
                        && o.get("name").is_some_and(Value::is_string)
                        && o.get("key").is_some_and(Value::is_string)
                });
                ok.then_some(()).ok_or_else(wrong)
            }
        }
    }

    /// Checks the given inputs against the declarations and returns the complete input
    /// object templates see as `inputs`: every declared input, defaults applied, `null`
    /// for optional inputs without value. A `null` given value counts as not given.
    pub fn resolve_inputs(
        &self,
        given: &BTreeMap<String, Value>,
    ) -> Result<Map<String, Value>, RecipeError> {
        if let Some(unknown) = given.keys().find(|k| self.input(k).is_none()) {
            return Err(RecipeError::UnknownInput {
                recipe: self.name.clone(),
                input: unknown.clone(),
            });
        }
        let mut out = Map::new();
        for spec in &self.inputs {
            let value = match given.get(&spec.name).filter(|v| !v.is_null()) {
                Some(v) => {
                    self.check_value(spec, v)?;
                    v.clone()
                }
                None if spec.required => {
                    return Err(RecipeError::MissingInput {
                        recipe: self.name.clone(),
                        input: spec.name.clone(),
                    });
                }
                None => spec.default.clone().unwrap_or(Value::Null),
            };
            out.insert(spec.name.clone(), value);
        }
        Ok(out)
    }
}

fn describe(v: &Value) -> String {
    let text = v.to_string();
    let short: String = text.chars().take(40).collect();
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "non-integer number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    };
    if short.len() < text.len() {
        format!("{kind} {short}...")
    } else {
        format!("{kind} {short}")
    }
}

/// Best effort name for messages about a file that does not parse.
fn guess_name(text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("name:"))
        .map(|n| n.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "<unnamed>".to_string())
}
