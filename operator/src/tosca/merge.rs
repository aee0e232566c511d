//! A main template and its children as one: each child's `topology_template.inputs`,
//! `node_templates` and `outputs` are laid over the main's in order, a key of a child
//! replacing the same key before it (as the IM Dashboard combines a template with the
//! children picked for it).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::Template;

/// The combined topology, and the template each node came from (by file name).
#[derive(Debug, Clone, Default)]
pub struct Merged {
    pub inputs: Map<String, Value>,
    pub node_templates: Map<String, Value>,
    pub outputs: Map<String, Value>,
    pub node_origin: BTreeMap<String, String>,
    /// `description` of each template, by name.
    pub descriptions: BTreeMap<String, String>,
}

const SECTIONS: [&str; 3] = ["inputs", "node_templates", "outputs"];

/// Parses and merges; every template's errors are reported together.
pub fn merge(
    templates: &[Template],
    errors: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Merged {
    let mut merged = Merged::default();
    if templates.is_empty() {
        errors.push("no TOSCA template given".into());
        return merged;
    }
    let main = &templates[0].name;
    for (i, t) in templates.iter().enumerate() {
        let doc = match super::yaml_value(&t.text) {
            Ok(Value::Object(m)) => Value::Object(m),
            Ok(_) => {
                errors.push(format!("{}: not a TOSCA template (a YAML mapping)", t.name));
                continue;
            }
            Err(e) => {
                errors.push(format!("{}: {e}", t.name));
                continue;
            }
        };
        if doc.get("tosca_definitions_version").is_none() {
            errors.push(format!(
                "{}: no tosca_definitions_version; not a TOSCA template",
                t.name
            ));
            continue;
        }
        if let Some(d) = doc["description"].as_str() {
            merged
                .descriptions
                .insert(t.name.clone(), d.trim().to_string());
        }
        if i > 0
            && let Some(parents) = doc["metadata"]["parents"].as_array()
        {
            let base = |s: &str| s.rsplit('/').next().unwrap_or(s).to_string();
            if !parents
                .iter()
                .any(|p| p.as_str().map(base) == Some(base(main)))
            {
                warnings.push(format!(
                    "{}: made for the parent templates {}, not {main}",
                    t.name,
                    parents
                        .iter()
                        .map(super::inputs::show)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        let topo = &doc["topology_template"];
        if !topo.is_object() {
            if i == 0 {
                errors.push(format!("{}: no topology_template", t.name));
            } else {
                warnings.push(format!("{}: no topology_template; nothing merged", t.name));
            }
            continue;
        }
        for section in SECTIONS {
            let part = &topo[section];
            let Some(entries) = part.as_object() else {
                if !part.is_null() {
                    errors.push(format!(
                        "{}: topology_template.{section} is not a mapping",
                        t.name
                    ));
                }
                continue;
            };
            let into = match section {
                "inputs" => &mut merged.inputs,
                "node_templates" => &mut merged.node_templates,
                _ => &mut merged.outputs,
            };
            for (k, v) in entries {
                into.insert(k.clone(), v.clone());
                if section == "node_templates" {
                    merged.node_origin.insert(k.clone(), t.name.clone());
                }
            }
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, text: &str) -> Template {
        Template {
            name: name.into(),
            text: text.into(),
        }
    }

    #[test]
    fn children_replace_keys_in_order() {
        let main = t(
            "main.yml",
            "tosca_definitions_version: tosca_simple_yaml_1_0\ntopology_template:\n  inputs: {a: {default: 1}, b: {default: 1}}\n  node_templates: {n: {type: x}}\n  outputs: {o: {value: 1}}\n",
        );
        let c1 = t(
            "c1.yml",
            "tosca_definitions_version: tosca_simple_yaml_1_0\nmetadata: {parents: [main.yml]}\ntopology_template:\n  inputs: {b: {default: 2}, c: {default: 2}}\n  node_templates: {m: {type: y}}\n",
        );
        let c2 = t(
            "c2.yml",
            "tosca_definitions_version: tosca_simple_yaml_1_0\nmetadata: {parents: [other.yml]}\ntopology_template:\n  inputs: {c: {default: 3}}\n  node_templates: {n: {type: z}}\n  outputs: {o: {value: 3}}\n",
        );
        let (mut errors, mut warnings) = (Vec::new(), Vec::new());
        let m = merge(&[main, c1, c2], &mut errors, &mut warnings);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            warnings,
            ["c2.yml: made for the parent templates other.yml, not main.yml"]
        );
        assert_eq!(m.inputs["a"]["default"], 1);
        assert_eq!(m.inputs["b"]["default"], 2);
        assert_eq!(m.inputs["c"]["default"], 3);
        assert_eq!(m.node_templates["n"]["type"], "z");
        assert_eq!(m.node_origin["n"], "c2.yml");
        assert_eq!(m.node_origin["m"], "c1.yml");
        assert_eq!(m.outputs["o"]["value"], 3);
    }

    #[test]
    fn every_bad_template_is_named() {
        let (mut errors, mut warnings) = (Vec::new(), Vec::new());
        merge(
            &[
                t("a.yml", "[1, 2]"),
                t("b.yml", "x: {"),
                t("c.yml", "foo: bar"),
            ],
            &mut errors,
            &mut warnings,
        );
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].starts_with("a.yml: not a TOSCA template"));
        assert!(errors[1].starts_with("b.yml: "));
        assert!(errors[2].starts_with("c.yml: no tosca_definitions_version"));
    }
}
