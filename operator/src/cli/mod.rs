//! The offline command-line tools of `kelp`: `kelp recipe ...` (inspect and render
//! recipes), `kelp module import` (ai4-metadata to a Module manifest) and
//! `kelp egi sites` (the EGI FedCloud site catalogue). They read files and print text;
//! none of them talks to a Kubernetes API server or a cloud. `kelp plan` (what applying
//! manifests would do, with prices) is offline too, unless given `--kubeconfig`: it then
//! reads, and never writes, that cluster and the clouds its Secrets open.
//!
//! Every command computes its whole output first: on error nothing is printed on
//! stdout, only the errors (and warnings) on stderr. `docs/cli.md` documents them.

pub mod egi;
pub mod import;
pub mod plan;
pub mod recipe;
pub mod tosca;

use std::path::Path;

use kelp_crds::KelpResource;

/// What a successful command prints: `stdout` as is, each warning on stderr as
/// `warning: <line>`, each note as `note: <line>`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    pub stdout: String,
    pub warnings: Vec<String>,
    pub notes: Vec<String>,
}

/// A failed command: each error is printed on stderr as `error: <line>` (after the
/// warnings, as `warning: <line>`) and the process exits with status 1.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Failure {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

impl Failure {
    /// A failure with one error.
    pub fn new(error: impl Into<String>) -> Failure {
        Failure {
            errors: vec![error.into()],
            warnings: Vec::new(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.errors.join("; "))
    }
}

impl From<String> for Failure {
    fn from(e: String) -> Failure {
        Failure::new(e)
    }
}

/// Reads a file, naming it in the error.
pub fn read_file(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| Failure::new(format!("{}: {e}", path.display())))
}

/// Reads the one kelp object of kind `kind` in a manifest file (other documents, such
/// as Secrets, are skipped). Errors name the file and, for a bad field, its path.
pub fn read_kelp_object(path: &Path, kind: &str) -> Result<KelpResource, Failure> {
    let text = read_file(path)?;
    let docs = kelp_crds::parse::documents(&text)
        .map_err(|e| Failure::new(format!("{}: {e}", path.display())))?;
    let mut found = Vec::new();
    for doc in docs {
        if doc["kind"].as_str() != Some(kind) {
            continue;
        }
        match KelpResource::from_value(doc) {
            Ok(Some(r)) => found.push(r),
            Ok(None) => {}
            Err(e) => return Err(Failure::new(format!("{}: {e}", path.display()))),
        }
    }
    match found.len() {
        1 => Ok(found.pop().expect("one")),
        0 => Err(Failure::new(format!(
            "{}: no {kind} of {}/{} in the file",
            path.display(),
            kelp_crds::GROUP,
            kelp_crds::VERSION
        ))),
        n => Err(Failure::new(format!(
            "{}: {n} {kind} objects in the file; give a file with exactly one",
            path.display()
        ))),
    }
}

/// `namespace/name` of an object, `default` when the manifest names no namespace.
pub(crate) fn ns_name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or("<unnamed>")
    )
}
