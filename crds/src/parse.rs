//! Reading kelp manifests: YAML streams into typed resources, with errors that name
//! the offending field.

use serde::de::DeserializeOwned;

use crate::{Cluster, Deployment, GROUP, Module, VERSION};

/// A manifest that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The text is not YAML.
    #[error("document {index}: not valid YAML: {source}")]
    Yaml {
        index: usize,
        source: serde_yaml_ng::Error,
    },
    /// A field has the wrong type or an unknown value; `path` names it.
    #[error("{kind} {name}: {path}: {message}")]
    Field {
        kind: String,
        name: String,
        path: String,
        message: String,
    },
}

/// Splits a YAML stream into its documents, skipping empty ones.
pub fn documents(yaml: &str) -> Result<Vec<serde_json::Value>, ParseError> {
    use serde::Deserialize;
    let mut docs = Vec::new();
    for (index, doc) in serde_yaml_ng::Deserializer::from_str(yaml).enumerate() {
        let value = serde_json::Value::deserialize(doc)
            .map_err(|source| ParseError::Yaml { index, source })?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// Deserializes one object into `T`; an error names the field by its path, e.g.
/// `spec.nodePools[0].replicas`.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ParseError> {
    let kind = value["kind"].as_str().unwrap_or("object").to_string();
    let name = value["metadata"]["name"]
        .as_str()
        .unwrap_or("<unnamed>")
        .to_string();
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        ParseError::Field {
            kind,
            name,
            path,
            message: err.into_inner().to_string(),
        }
    })
}

/// Any of the three kelp kinds.
#[derive(Clone, Debug)]
pub enum KelpResource {
    Module(Box<Module>),
    Cluster(Box<Cluster>),
    Deployment(Box<Deployment>),
}

impl KelpResource {
    /// Reads a kelp object; `Ok(None)` for objects of other kinds (Secrets, ...).
    pub fn from_value(value: serde_json::Value) -> Result<Option<Self>, ParseError> {
        let api_version = value["apiVersion"].as_str().unwrap_or_default();
        if api_version != format!("{GROUP}/{VERSION}") {
            return Ok(None);
        }
        Ok(Some(match value["kind"].as_str().unwrap_or_default() {
            "Module" => Self::Module(Box::new(from_value(value)?)),
            "Cluster" => Self::Cluster(Box::new(from_value(value)?)),
            "Deployment" => Self::Deployment(Box::new(from_value(value)?)),
            other => {
                return Err(ParseError::Field {
                    kind: other.to_string(),
                    name: value["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    path: "kind".into(),
                    message: format!("{other:?} is not a kind of {GROUP}/{VERSION}"),
                });
            }
        }))
    }
}
