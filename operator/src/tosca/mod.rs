//! TOSCA templates of the Infrastructure Manager (the grycap and INDIGO/DEEP template
//! collections the IM Dashboard and the AI4OS dashboard deploy from) as kelp manifests:
//! the Cluster its Compute nodes make, the Module and Deployment its application node
//! runs, and Secret templates for the credentials. `kelp import tosca` prints them; the
//! web console uses the same functions. The mapping is documented in `docs/cli.md`.
//!
//! The steps: merge the main template with its children ([`merge`]), type and check the
//! inputs and resolve `get_input` ([`inputs`]), then map the nodes ([`map`]). Pure: no
//! network, no files.

pub mod inputs;
pub mod map;
pub mod merge;
pub mod units;

use serde_json::Value;

use crate::cli::Failure;
pub use inputs::{Constraint, InputInfo};

/// The input kelp takes besides the template's: where the machines run, as an IM image
/// URL. It fills in (or replaces) the os image of every Compute node, which templates
/// such as `simple-node-disk.yml` leave to the IM Dashboard's site choice.
pub const CLOUD_INPUT: &str = "kelp.cloud";

/// One template file: its name (for errors, and for a child's `parents`) and text.
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    pub name: String,
    pub text: String,
}

/// What an import makes: the manifests in apply order (Secrets, Module, Cluster,
/// Deployment), and what the user should know (`note:`) or check (`warning:`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Imported {
    pub manifests: Vec<Value>,
    pub notes: Vec<String>,
    pub warnings: Vec<String>,
}

/// Imports a main template (`templates[0]`) with its children (the rest, in order), with
/// input values `inputs` (NAME, VALUE as typed on a command line or in a form), for the
/// namespace `namespace`. All errors found are returned together.
pub fn import(
    templates: &[Template],
    inputs: &[(String, String)],
    namespace: &str,
) -> Result<Imported, Failure> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let merged = merge::merge(templates, &mut errors, &mut warnings);
    if !errors.is_empty() {
        return Err(Failure { errors, warnings });
    }
    let defs = inputs::definitions(&Value::Object(merged.inputs.clone()), &mut errors);
    let mut failed = std::collections::BTreeSet::new();
    let values = inputs::values(&defs, inputs, &[CLOUD_INPUT], &mut errors, &mut failed);
    let mut resolved_nodes = serde_json::Map::new();
    for (name, node) in &merged.node_templates {
        resolved_nodes.insert(
            name.clone(),
            inputs::resolve(node, &values, &format!("node {name}"), &mut errors),
        );
    }
    let mut resolved_outputs = serde_json::Map::new();
    for (name, out) in &merged.outputs {
        resolved_outputs.insert(
            name.clone(),
            inputs::resolve(out, &values, &format!("output {name}"), &mut errors),
        );
    }
    let names: Vec<&str> = templates.iter().map(|t| t.name.as_str()).collect();
    let topology = map::Topology {
        templates: &names,
        merged: &merged,
        nodes: &resolved_nodes,
        outputs: &resolved_outputs,
        values: &values,
        namespace,
    };
    // The nodes are mapped even when inputs are wrong, so that all errors are told at
    // once; what follows from an input already in error is not told again.
    match map::map(&topology) {
        Ok(mut imported) if errors.is_empty() => {
            warnings.append(&mut imported.warnings);
            imported.warnings = warnings;
            Ok(imported)
        }
        Ok(mut imported) => {
            warnings.append(&mut imported.warnings);
            Err(Failure { errors, warnings })
        }
        Err(mut f) => {
            let follows = |e: &String| {
                failed.iter().any(|i| {
                    e.contains(&format!("--input {i})")) || e.contains(&format!("--input {i}="))
                })
            };
            errors.extend(f.errors.into_iter().filter(|e| !follows(e)));
            warnings.append(&mut f.warnings);
            Err(Failure { errors, warnings })
        }
    }
}

/// The inputs of a main template with its children, for a form: the template's own
/// (after merging), then [`CLOUD_INPUT`] when a Compute node has no os image of its own
/// or the template has no Compute node.
pub fn inputs(templates: &[Template]) -> Result<Vec<InputInfo>, Failure> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let merged = merge::merge(templates, &mut errors, &mut warnings);
    let mut defs = inputs::definitions(&Value::Object(merged.inputs.clone()), &mut errors);
    if !errors.is_empty() {
        return Err(Failure { errors, warnings });
    }
    let computes: Vec<&Value> = merged
        .node_templates
        .values()
        .filter(|n| n["type"].as_str().is_some_and(map::is_compute))
        .collect();
    let needs_cloud = computes.is_empty()
        || computes
            .iter()
            .any(|n| n["capabilities"]["os"]["properties"]["image"].is_null());
    defs.push(InputInfo {
        name: CLOUD_INPUT.into(),
        type_: "string".into(),
        default: None,
        description: Some(format!(
            "Where the machines run, as an image URL: egi://SITE[/IMAGE]?VO, aws://REGION[/AMI], ost://HOST[/IMAGE_ID] or sim:// (kelp's simulated cloud).{}",
            if needs_cloud {
                " The template leaves it to the deployer."
            } else {
                " Replaces the template's os image."
            }
        )),
        required: needs_cloud,
        constraints: Vec::new(),
    });
    Ok(defs)
}

/// The manifests as one multi-document YAML stream, ready for `kubectl apply -f -`.
pub fn to_yaml(imported: &Imported) -> String {
    let mut out = String::new();
    for m in &imported.manifests {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(m).unwrap_or_default());
    }
    out
}

/// YAML text as a JSON value; mapping keys that are not strings (`5000:`) become strings.
pub fn yaml_value(text: &str) -> Result<Value, String> {
    let y: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    Ok(json_of(y))
}

fn json_of(y: serde_yaml_ng::Value) -> Value {
    use serde_yaml_ng::Value as Y;
    match y {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Value::Null, Value::Number)
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(s) => Value::Array(s.into_iter().map(json_of).collect()),
        Y::Mapping(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let k = match json_of(k) {
                        Value::String(s) => s,
                        other => inputs::show(&other),
                    };
                    (k, json_of(v))
                })
                .collect(),
        ),
        Y::Tagged(t) => json_of(t.value),
    }
}
