//! `kelp import tosca`: Infrastructure Manager TOSCA templates as kelp manifests (see
//! [`crate::tosca`]; the mapping is documented in `docs/cli.md`).

use std::path::PathBuf;

use super::{Failure, Outcome, read_file};
use crate::tosca::{self, Template};

/// Options of `kelp import tosca`.
#[derive(Debug, Clone, Default)]
pub struct ToscaArgs {
    /// The main template.
    pub template: PathBuf,
    /// Child templates laid over it, in order.
    pub children: Vec<PathBuf>,
    /// `NAME=VALUE` input values.
    pub inputs: Vec<String>,
    pub namespace: String,
}

/// Reads the templates, imports them and prints the manifests as YAML.
pub fn import(args: &ToscaArgs) -> Result<Outcome, Failure> {
    let mut errors = Vec::new();
    let mut templates = Vec::new();
    for path in std::iter::once(&args.template).chain(&args.children) {
        match read_file(path) {
            Ok(text) => templates.push(Template {
                name: path.file_name().map_or_else(
                    || path.display().to_string(),
                    |f| f.to_string_lossy().into(),
                ),
                text,
            }),
            Err(f) => errors.extend(f.errors),
        }
    }
    let mut inputs = Vec::new();
    for i in &args.inputs {
        match i.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                inputs.push((k.trim().to_string(), v.to_string()))
            }
            _ => errors.push(format!("--input {i}: expected NAME=VALUE")),
        }
    }
    if !errors.is_empty() {
        return Err(Failure {
            errors,
            warnings: Vec::new(),
        });
    }
    let imported = tosca::import(&templates, &inputs, &args.namespace)?;
    Ok(Outcome {
        stdout: tosca::to_yaml(&imported),
        warnings: imported.warnings,
        notes: imported.notes,
    })
}
