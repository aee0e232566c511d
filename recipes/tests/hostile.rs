//! Hostile values: every string input and every context string replaced by text full
//! of YAML, JSON, shell and handlebars syntax must render as data. The check: render
//! once with hostile strings and once with plain tokens in the same places; after
//! mapping each hostile string back to its token (and parsing nested YAML/JSON file
//! contents), both outputs must be identical. So the structure is the same and every
//! value came through unchanged. The hostile strings hold quotes, `: `, newlines, `{{`,
//! `}}`, `#`, `---`, YAML anchors (`&anchor`), aliases (`*alias`), merge keys
//! (`<<: *x`), tags (`!!python/object`), line-break characters, shell syntax, and
//! some are longer than 100 KB.

use kelp_recipes::{
    Catalog, NodeContext, RecipeError, RecipeUse, WorkloadContext, default_node_recipes,
};
use serde_json::{Map, Value};

fn fixture_value(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// YAML anchors, aliases, merge keys and tags, handlebars delimiters in both
/// directions, and (for every 40th value) a 100 KB tail.
fn hostile(i: usize, one_line: bool) -> String {
    let pad = if i % 40 == 3 {
        "0123456789abcdef".repeat(100 * 1024 / 16)
    } else {
        String::new()
    };
    if one_line {
        format!(
            "<{i}>\"q' : x - y: {{{{inputs}}}} }}}} }}}}}}}} #c \\ ]{{{{json name}}}} $(reboot) `id`; &anchor *alias <<: *x !!python/object/apply:os.system ['id'] {pad}</{i}>"
        )
    } else {
        format!(
            "<{i}>\"q' : x\n- y: {{{{inputs}}}} }}}} #c \\ {{{{json name}}}}\r\n  ---\n{{a: b}} \u{2028}\u{85}\u{7f}\u{feff}\t$(reboot)\nk: &anchor v\nl: *alias\n<<: *x\n!!python/object:os.system ['id']\n}}}}{pad}</{i}>"
        )
    }
}

fn safe(i: usize) -> String {
    format!("SAFE{i}X")
}

/// Replaces every string (and the keys of label-like maps) by `make(i)`.
struct Replacer<'a> {
    next: usize,
    make: &'a dyn Fn(usize) -> String,
}

impl Replacer<'_> {
    fn fresh(&mut self) -> String {
        self.next += 1;
        (self.make)(self.next)
    }

    fn walk(&mut self, v: &mut Value, key: &str) {
        const KEEP: [&str; 3] = ["role", "gpuVendor", "effect"];
        match v {
            Value::String(s) if !KEEP.contains(&key) => *s = self.fresh(),
            Value::Array(items) => items.iter_mut().for_each(|x| self.walk(x, key)),
            Value::Object(map) => {
                let rename = matches!(key, "labels" | "nodeSelector");
                let old = std::mem::take(map);
                for (k, mut x) in old {
                    self.walk(&mut x, &k);
                    let k = if rename { self.fresh() } else { k };
                    map.insert(k, x);
                }
            }
            _ => {}
        }
    }
}

fn with_strings(v: &Value, make: &dyn Fn(usize) -> String, start: usize) -> (Value, usize) {
    let mut v = v.clone();
    let mut r = Replacer { next: start, make };
    r.walk(&mut v, "");
    (v, r.next)
}

fn normalize(v: Value, pairs: &[(String, String)]) -> Value {
    let replace = |s: &str| {
        pairs
            .iter()
            .fold(s.to_string(), |acc, (h, t)| acc.replace(h.as_str(), t))
    };
    match v {
        Value::String(s) => {
            let s = replace(&s);
            match serde_yaml_ng::from_str::<Value>(&s) {
                Ok(nested @ (Value::Object(_) | Value::Array(_))) => normalize(nested, pairs),
                _ => Value::String(s),
            }
        }
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|x| normalize(x, pairs)).collect())
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, x)| (replace(&k), normalize(x, pairs)))
                .collect::<Map<_, _>>(),
        ),
        other => other,
    }
}

/// String inputs of a recipe, filled by `make`.
fn string_inputs(
    catalog: &Catalog,
    name: &str,
    make: &dyn Fn(usize) -> String,
    start: usize,
) -> RecipeUse {
    let mut u = RecipeUse::new(name);
    for (i, input) in catalog.get(name).unwrap().inputs.iter().enumerate() {
        if input.ty == kelp_recipes::InputType::String {
            u.inputs.insert(input.name.clone(), make(start + i).into());
        }
    }
    u
}

struct Case {
    pairs: Vec<(String, String)>,
}

impl Case {
    fn new(n: usize, one_line: bool) -> Case {
        Case {
            pairs: (1..=n).map(|i| (hostile(i, one_line), safe(i))).collect(),
        }
    }

    fn assert_same(&self, hostile_out: Value, safe_out: Value, what: &str) {
        assert!(
            hostile_out.to_string().len() > 100 * 1024,
            "{what}: no 100 KB value reached the output"
        );
        let h = normalize(hostile_out, &self.pairs);
        let s = normalize(safe_out, &self.pairs);
        assert_eq!(
            h, s,
            "{what}: hostile values changed the structure or a value"
        );
        let text = s.to_string();
        assert!(
            text.contains("SAFE"),
            "{what}: no context or input value reached the output"
        );
    }
}

fn render_node(
    catalog: &Catalog,
    fixture: &str,
    make: &dyn Fn(usize) -> String,
    rclone: bool,
) -> Result<Value, RecipeError> {
    let (ctx, next) = with_strings(&fixture_value(fixture), make, 0);
    let ctx: NodeContext = serde_json::from_value(ctx).unwrap();
    let mut uses: Vec<RecipeUse> = default_node_recipes(ctx.pool.gpu_count, ctx.kubernetes.role)
        .into_iter()
        .enumerate()
        .map(|(i, u)| string_inputs(catalog, &u.name, make, next + 10 * i + 1))
        .collect();
    if rclone {
        uses.push(string_inputs(catalog, "rclone-webdav", make, next + 100));
    }
    let text = catalog.render_node(&uses, &ctx)?;
    assert!(text.starts_with("#cloud-config\n"));
    Ok(serde_yaml_ng::from_str(&text).unwrap())
}

#[test]
fn hostile_values_render_as_data_in_node_recipes() {
    let catalog = Catalog::builtin();
    let case = Case::new(200, false);
    for fixture in [
        "node-gpu-agent.yaml",
        "node-gpu-server.yaml",
        "node-cpu-server.yaml",
    ] {
        let h = render_node(&catalog, fixture, &|i| hostile(i, false), false).unwrap();
        let s = render_node(&catalog, fixture, &safe, false).unwrap();
        case.assert_same(h, s, fixture);
    }
}

#[test]
fn hostile_values_in_rclone_webdav() {
    let catalog = Catalog::builtin();
    // The rclone config is INI, which has no way to write a line break: refused cleanly.
    let err = render_node(
        &catalog,
        "node-gpu-agent.yaml",
        &|i| hostile(i, false),
        true,
    )
    .unwrap_err();
    assert_eq!(err.label(), "RenderFailed", "{err}");
    assert_eq!(err.recipe(), Some("rclone-webdav"));
    // Everything else is data.
    let case = Case::new(200, true);
    let h = render_node(&catalog, "node-gpu-agent.yaml", &|i| hostile(i, true), true).unwrap();
    let s = render_node(&catalog, "node-gpu-agent.yaml", &safe, true).unwrap();
    case.assert_same(h, s, "rclone-webdav");
}

#[test]
fn hostile_values_render_as_data_in_workloads() {
    let catalog = Catalog::builtin();
    let case = Case::new(200, false);
    for fixture in ["workload-gpu.yaml", "workload-cpu.yaml"] {
        let render = |make: &dyn Fn(usize) -> String| {
            let (ctx, next) = with_strings(&fixture_value(fixture), make, 0);
            let ctx: WorkloadContext = serde_json::from_value(ctx).unwrap();
            let u = string_inputs(&catalog, "deepaas-inference", make, next + 1);
            Value::Array(catalog.render_workload(&u, &ctx).unwrap())
        };
        case.assert_same(render(&|i| hostile(i, false)), render(&safe), fixture);
    }
}
