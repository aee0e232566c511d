//! Builds the protobuf schema table the test server decodes request bodies with
//! (`src/proto/schema.json`) from two crates' sources: the field numbers and wire types
//! from k8s-pb's prost messages, the exact JSON field names from k8s-openapi's serde code.
//! Both crates are the registry's; `cargo metadata` says where their sources are.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use syn::{Fields, Item, Type};

/// The API versions whose kinds kubectl and Helm send as protobuf to this server.
pub const API_VERSIONS: &[&str] = &[
    "v1",
    "apps/v1",
    "batch/v1",
    "policy/v1",
    "autoscaling/v1",
    "autoscaling/v2",
    "networking.k8s.io/v1",
    "rbac.authorization.k8s.io/v1",
    "authentication.k8s.io/v1",
    "authorization.k8s.io/v1",
    "coordination.k8s.io/v1",
    "events.k8s.io/v1",
    "apiextensions.k8s.io/v1",
    "scheduling.k8s.io/v1",
    "storage.k8s.io/v1",
    "discovery.k8s.io/v1",
];

/// Messages every request may carry besides the kinds: options and the metadata types.
const META: &str = "apimachinery.pkg.apis.meta.v1";
const APIEXTENSIONS: &str = "apiextensions_apiserver.pkg.apis.apiextensions.v1";

pub fn source_dir(package: &str) -> PathBuf {
    // The host platform only: other platforms' crates are never downloaded.
    let rustc = std::process::Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc -vV");
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(String::from))
        .expect("rustc -vV names the host");
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--filter-platform",
            &host,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata");
    assert!(out.status.success(), "cargo metadata failed");
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pkg = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == package)
        .unwrap_or_else(|| panic!("{package} is not in cargo metadata"));
    Path::new(pkg["manifest_path"].as_str().unwrap())
        .parent()
        .unwrap()
        .to_path_buf()
}

#[derive(Debug)]
struct Field {
    tag: u32,
    rust_name: String,
    label: &'static str,
    ty: String,
}

/// module path ("api.core.v1") -> message name -> fields
type Messages = BTreeMap<String, BTreeMap<String, Vec<Field>>>;

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// "src/api/core/v1/mod.rs" -> "api.core.v1"
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    if last != "mod.rs" && last != "lib.rs" {
        parts.push(last.trim_end_matches(".rs").to_string());
    }
    parts.join(".")
}

/// The message a field's Rust type names, as a module-qualified name.
fn resolve(module: &str, path: &syn::Path) -> String {
    let mut segs: Vec<String> = module.split('.').map(String::from).collect();
    let idents: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
    let mut rest = idents.as_slice();
    if rest.first().map(String::as_str) == Some("crate") {
        segs.clear();
        rest = &rest[1..];
    }
    while rest.first().map(String::as_str) == Some("super") {
        segs.pop();
        rest = &rest[1..];
    }
    segs.extend(rest.iter().cloned());
    segs.join(".")
}

/// The innermost named type of `Option<Box<X>>`, `Vec<X>`, `BTreeMap<String, X>`...
fn inner_path(ty: &Type) -> Option<&syn::Path> {
    let Type::Path(tp) = ty else { return None };
    let last = tp.path.segments.last()?;
    match last.ident.to_string().as_str() {
        "Option" | "Vec" | "Box" | "BTreeMap" | "HashMap" => {
            let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
                return None;
            };
            let ty = args
                .args
                .iter()
                .filter_map(|a| match a {
                    syn::GenericArgument::Type(t) => Some(t),
                    _ => None,
                })
                .last()?;
            inner_path(ty)
        }
        _ => Some(&tp.path),
    }
}

fn parse_pb(src: &Path) -> Messages {
    let mut files = Vec::new();
    rs_files(src, &mut files);
    files.sort();
    let mut out = Messages::new();
    for file in files {
        let module = module_of(src, &file);
        let ast = syn::parse_file(&std::fs::read_to_string(&file).unwrap()).unwrap();
        for item in ast.items {
            let Item::Struct(s) = item else { continue };
            let Fields::Named(named) = &s.fields else {
                continue;
            };
            let mut fields = Vec::new();
            for f in &named.named {
                let Some(attr) = f.attrs.iter().find(|a| a.path().is_ident("prost")) else {
                    continue;
                };
                let text = attr.meta.to_token_stream_string();
                let tag: u32 = text
                    .split("tag = \"")
                    .nth(1)
                    .and_then(|t| t.split('"').next())
                    .and_then(|t| t.parse().ok())
                    .unwrap_or_else(|| panic!("no tag in {text}"));
                let head = text
                    .trim_start_matches("prost")
                    .trim_start_matches([' ', '('])
                    .to_string();
                let scalar = head.split([',', ' ', '=']).next().unwrap().to_string();
                let (label, ty) = if head.starts_with("btree_map") || head.starts_with("map") {
                    let value = head
                        .split('"')
                        .nth(1)
                        .and_then(|kv| kv.split(',').nth(1))
                        .unwrap()
                        .trim()
                        .to_string();
                    let ty = if value == "message" {
                        format!(".{}", resolve(&module, inner_path(&f.ty).unwrap()))
                    } else {
                        value
                    };
                    ("m", ty)
                } else {
                    let label = if text.contains("repeated") { "r" } else { "o" };
                    let ty = if scalar == "message" {
                        format!(".{}", resolve(&module, inner_path(&f.ty).unwrap()))
                    } else {
                        scalar
                    };
                    (label, ty)
                };
                fields.push(Field {
                    tag,
                    rust_name: f.ident.as_ref().unwrap().to_string(),
                    label,
                    ty,
                });
            }
            out.entry(module.clone())
                .or_default()
                .insert(s.ident.to_string(), fields);
        }
    }
    out
}

trait TokenText {
    fn to_token_stream_string(&self) -> String;
}

impl TokenText for syn::Meta {
    fn to_token_stream_string(&self) -> String {
        quote::ToTokens::to_token_stream(self).to_string()
    }
}

/// apiVersion -> module, from k8s-pb's `impl Resource` blocks.
fn api_versions(src: &Path) -> BTreeMap<String, String> {
    let mut files = Vec::new();
    rs_files(src, &mut files);
    let mut out = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for chunk in text.split("impl crate::Resource for ").skip(1) {
            if let Some(av) = chunk
                .split("const API_VERSION: &'static str = \"")
                .nth(1)
                .and_then(|t| t.split('"').next())
            {
                out.insert(av.to_string(), module_of(src, &file));
            }
        }
    }
    out
}

fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// (module, normalized struct name) -> normalized field name -> JSON name, from
/// k8s-openapi's deserializers (`JSONSchemaProps` there is `JsonSchemaProps` in k8s-pb).
fn json_names(openapi_src: &Path) -> BTreeMap<(String, String), BTreeMap<String, String>> {
    let version_dir = std::fs::read_dir(openapi_src)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && p.file_name().unwrap().to_string_lossy().starts_with("v1_"))
        .max()
        .expect("k8s-openapi version folders");
    let mut files = Vec::new();
    rs_files(&version_dir, &mut files);
    let mut out: BTreeMap<(String, String), BTreeMap<String, String>> = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let Some(name) = text
            .split("pub struct ")
            .nth(1)
            .and_then(|t| t.split(|c: char| !c.is_alphanumeric()).next())
        else {
            continue;
        };
        let module = {
            let rel = file.strip_prefix(&version_dir).unwrap();
            let parts: Vec<String> = rel
                .parent()
                .unwrap()
                .iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect();
            parts.join(".")
        };
        let names = out.entry((module, normalize(name))).or_default();
        for line in text.lines() {
            let line = line.trim();
            if let Some((json, rest)) = line
                .strip_prefix('"')
                .and_then(|l| l.split_once("\" => Field::Key_"))
            {
                let key = rest.trim_end_matches(',');
                names.insert(normalize(key), json.to_string());
            }
        }
    }
    out
}

fn lower_camel(snake: &str) -> String {
    let mut out = String::new();
    for (i, part) in snake.trim_start_matches("r#").split('_').enumerate() {
        if i == 0 {
            out.push_str(part);
        } else {
            let mut c = part.chars();
            if let Some(f) = c.next() {
                out.extend(f.to_uppercase());
                out.push_str(c.as_str());
            }
        }
    }
    out
}

/// The whole table, as the JSON the server embeds.
pub fn generate() -> Value {
    let pb_src = source_dir("k8s-pb").join("src");
    let openapi_src = source_dir("k8s-openapi").join("src");
    let messages = parse_pb(&pb_src);
    let versions = api_versions(&pb_src);
    let names = json_names(&openapi_src);

    // Roots: every message of the chosen API versions' modules, and meta/v1.
    let mut roots: Vec<String> = Vec::new();
    let mut version_map = BTreeMap::new();
    for av in API_VERSIONS {
        let module = versions
            .get(*av)
            .unwrap_or_else(|| panic!("k8s-pb has no module for {av}"));
        version_map.insert(av.to_string(), module.clone());
        for name in messages[module].keys() {
            roots.push(format!("{module}.{name}"));
        }
    }
    for name in messages[META].keys() {
        roots.push(format!("{META}.{name}"));
    }
    let mut seen = BTreeSet::new();
    let mut todo = roots;
    while let Some(full) = todo.pop() {
        if !seen.insert(full.clone()) {
            continue;
        }
        let (module, name) = full.rsplit_once('.').unwrap();
        let Some(fields) = messages.get(module).and_then(|m| m.get(name)) else {
            panic!("message {full} is referenced but not defined");
        };
        for f in fields {
            if let Some(t) = f.ty.strip_prefix('.') {
                todo.push(t.to_string());
            }
        }
    }

    let mut table = serde_json::Map::new();
    for full in &seen {
        let (module, name) = full.rsplit_once('.').unwrap();
        let own = names.get(&(module.to_string(), normalize(name)));
        let fields: Vec<Value> = messages[module][name]
            .iter()
            .map(|f| {
                let rust_name = f.rust_name.trim_start_matches("r#");
                if let Some(n) = own.and_then(|n| n.get(&normalize(rust_name))) {
                    return json!([f.tag, n, f.label, f.ty]);
                }
                if (module, name, rust_name) == (APIEXTENSIONS, "JsonSchemaProps", "ref") {
                    return json!([f.tag, "$ref", f.label, f.ty]);
                }
                // A Go struct embedded in its parent is a nested message on the wire and
                // inline in JSON: the parent's JSON has all of the embedded type's fields.
                if let (Some(own), Some(inner)) = (own, f.ty.strip_prefix('.')) {
                    let (m, n) = inner.rsplit_once('.').unwrap();
                    let inner_fields = &messages[m][n];
                    let flattened = !inner_fields.is_empty()
                        && inner_fields.iter().all(|i| {
                            own.contains_key(&normalize(i.rust_name.trim_start_matches("r#")))
                        });
                    if flattened {
                        return json!([f.tag, "", "i", f.ty]);
                    }
                }
                json!([f.tag, lower_camel(rust_name), f.label, f.ty])
            })
            .collect();
        table.insert(full.clone(), Value::Array(fields));
    }
    json!({
        "source": "generated from the k8s-pb and k8s-openapi crates by tests/protogen; do not edit",
        "apiVersions": version_map,
        "messages": table,
    })
}

/// The committed file's text for a table: one message per line, so diffs stay readable.
pub fn render(table: &Value) -> String {
    let mut out = String::from("{\n");
    out.push_str(&format!("\"source\": {},\n", table["source"]));
    out.push_str(&format!("\"apiVersions\": {},\n", table["apiVersions"]));
    out.push_str("\"messages\": {\n");
    let messages = table["messages"].as_object().unwrap();
    let n = messages.len();
    for (i, (k, v)) in messages.iter().enumerate() {
        let comma = if i + 1 < n { "," } else { "" };
        out.push_str(&format!("{}: {}{comma}\n", json!(k), v));
    }
    out.push_str("}\n}\n");
    out
}
