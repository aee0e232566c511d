//! kelp's recipes: YAML files with typed inputs and handlebars templates that render
//! to cloud-init user-data (node recipes) and Kubernetes manifests (workload recipes).
#![forbid(unsafe_code)]
