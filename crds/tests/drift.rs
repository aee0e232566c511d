//! The CRD YAML committed under `crds/` must equal what the Rust types generate.
//! Refresh it with `cargo run -p kelp-operator -- crds > crds/kelp-crds.yaml`, or
//! run this test with `KELP_UPDATE_CRDS=1`.

#[test]
fn committed_crds_match_the_types() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/kelp-crds.yaml");
    let generated = kelp_crds::crds_yaml();
    if std::env::var_os("KELP_UPDATE_CRDS").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "crds/kelp-crds.yaml is out of date with the Rust types in crds/src.\n\
         Regenerate it: cargo run -p kelp-operator -- crds > crds/kelp-crds.yaml"
    );
}

/// The chart's CRD template is generated from the same types.
#[test]
fn committed_helm_crds_match_the_types() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../helm/kelp/templates/crds.yaml"
    );
    let generated = kelp_crds::helm_template();
    if std::env::var_os("KELP_UPDATE_CRDS").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "helm/kelp/templates/crds.yaml is out of date with the Rust types in crds/src.\n\
         Regenerate it: cargo run -p kelp-operator -- crds --helm > helm/kelp/templates/crds.yaml"
    );
}

#[test]
fn crds_carry_names_columns_and_subresources() {
    for crd in kelp_crds::crds() {
        let names = &crd.spec.names;
        assert_eq!(crd.spec.group, "kelp.imagine-ai.eu");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(names.categories.as_deref(), Some(&["kelp".to_string()][..]));
        let short = names.short_names.clone().unwrap_or_default();
        let expected = match names.kind.as_str() {
            "Module" => "kmod",
            "Cluster" => "kcl",
            "Deployment" => "kdep",
            other => panic!("unexpected kind {other}"),
        };
        assert_eq!(short, vec![expected.to_string()]);
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.served && version.storage);
        assert!(version.subresources.as_ref().unwrap().status.is_some());
        let columns: Vec<String> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.clone())
            .collect();
        assert!(columns.contains(&"Age".to_string()), "{columns:?}");
        assert!(columns.len() >= 3, "{columns:?}");
    }
}

/// `kubectl explain` reads descriptions: every property of every schema has one.
#[test]
fn every_field_has_a_description() {
    fn walk(schema: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
            for (key, child) in props {
                let child_path = format!("{path}.{key}");
                let top_level =
                    path.is_empty() && ["apiVersion", "kind", "metadata"].contains(&key.as_str());
                if !top_level && child.get("description").is_none() {
                    missing.push(child_path.clone());
                }
                walk(child, &child_path, missing);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(items, &format!("{path}[]"), missing);
        }
        if let Some(extra) = schema.get("additionalProperties").filter(|a| a.is_object()) {
            walk(extra, &format!("{path}{{}}"), missing);
        }
    }
    let mut missing = Vec::new();
    for crd in kelp_crds::crds() {
        let schema = serde_json::to_value(
            crd.spec.versions[0]
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap(),
        )
        .unwrap();
        walk(&schema, &crd.spec.names.kind, &mut missing);
    }
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:#?}"
    );
}

/// docs/api-reference.md is generated from the same schemas.
#[test]
fn committed_reference_matches_the_types() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api-reference.md");
    let generated = kelp_crds::reference_markdown();
    if std::env::var_os("KELP_UPDATE_CRDS").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/api-reference.md is out of date with the Rust types in crds/src.\n\
         Regenerate it: cargo run -p kelp-operator -- crds --reference > docs/api-reference.md"
    );
}
