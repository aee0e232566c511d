//! What clients read before they act: version, discovery and OpenAPI v3.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use serde_json::{Value, json};

use crate::status::ApiError;
use crate::types::ResourceType;

pub fn version() -> Value {
    json!({
        "major": "1", "minor": "32", "gitVersion": "v1.32.0+kelp-testapi", "gitCommit": "kelp-testapi",
        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "n/a",
        "compiler": "rustc", "platform": "linux/amd64",
    })
}

pub fn api_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
}

/// Versions of each group, in registration order (the first is preferred).
fn groups(types: &[ResourceType]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in types.iter().filter(|t| !t.group.is_empty()) {
        let versions = out.entry(t.group.clone()).or_default();
        if !versions.contains(&t.version) {
            versions.push(t.version.clone());
        }
    }
    out
}

fn group_entry(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": vs, "preferredVersion": vs[0]})
}

pub fn api_groups(types: &[ResourceType]) -> Value {
    let groups: Vec<Value> = groups(types)
        .iter()
        .map(|(g, v)| group_entry(g, v))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn api_group(types: &[ResourceType], group: &str) -> Result<Value, ApiError> {
    let groups = groups(types);
    let versions = groups.get(group).ok_or_else(ApiError::path_not_found)?;
    let mut g = group_entry(group, versions);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Ok(g)
}

pub fn resource_list(
    types: &[ResourceType],
    group: &str,
    version: &str,
) -> Result<Value, ApiError> {
    let served: Vec<&ResourceType> = types
        .iter()
        .filter(|t| t.group == group && t.version == version)
        .collect();
    if served.is_empty() {
        return Err(ApiError::path_not_found());
    }
    let mut resources = Vec::new();
    for t in served {
        let verbs = if t.review {
            json!(["create"])
        } else {
            json!([
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch"
            ])
        };
        resources.push(json!({
            "name": t.plural, "singularName": t.singular, "namespaced": t.namespaced, "kind": t.kind,
            "verbs": verbs, "shortNames": t.short_names, "categories": t.categories,
        }));
        if t.group.is_empty() && t.plural == "pods" {
            resources.push(json!({"name": "pods/eviction", "singularName": "", "namespaced": true, "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]}));
        }
        if t.group.is_empty() && t.plural == "serviceaccounts" {
            resources.push(json!({"name": "serviceaccounts/token", "singularName": "", "namespaced": true, "group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest", "verbs": ["create"]}));
        }
        if t.status {
            resources.push(json!({"name": format!("{}/status", t.plural), "singularName": "", "namespaced": t.namespaced, "kind": t.kind, "verbs": ["get", "patch", "update"]}));
        }
        if t.scale.is_some() {
            resources.push(json!({"name": format!("{}/scale", t.plural), "singularName": "", "namespaced": t.namespaced, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Ok(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

pub fn openapi_index(types: &[ResourceType]) -> Value {
    let mut paths = serde_json::Map::new();
    let mut seen = Vec::new();
    for t in types {
        let p = gv_path(&t.group, &t.version);
        if seen.contains(&p) {
            continue;
        }
        seen.push(p.clone());
        let doc = openapi_doc(types, &p).unwrap_or_default();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        doc.to_string().hash(&mut h);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={:016X}", h.finish())}),
        );
    }
    json!({"paths": paths})
}

/// The schema component name of a kind, as Kubernetes names them
/// (`eu.imagine-ai.kelp.v1alpha1.Module`, `io.k8s.api.core.v1.Secret`).
fn component_name(t: &ResourceType) -> String {
    if t.group.is_empty() {
        return format!("io.k8s.api.core.{}.{}", t.version, t.kind);
    }
    if !t.is_custom() {
        let g = t.group.trim_end_matches(".k8s.io");
        return format!(
            "io.k8s.api.{}.{}.{}",
            g.replace('.', "_"),
            t.version,
            t.kind
        );
    }
    let reversed: Vec<&str> = t.group.split('.').rev().collect();
    format!("{}.{}.{}", reversed.join("."), t.version, t.kind)
}

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

fn object_meta_schema() -> Value {
    let s = |d: &str| json!({"type": "string", "description": d});
    json!({
        "description": "ObjectMeta is metadata that all persisted resources must have.",
        "type": "object",
        "properties": {
            "name": s("Name must be unique within a namespace."),
            "generateName": s("Prefix for a server-generated name."),
            "namespace": s("Namespace defines the space within which each name must be unique."),
            "uid": s("UID is the unique in time and space value for this object."),
            "resourceVersion": s("An opaque value that represents the internal version of this object."),
            "generation": {"type": "integer", "format": "int64", "description": "A sequence number representing a specific generation of the desired state."},
            "creationTimestamp": s("CreationTimestamp is when this object was created."),
            "deletionTimestamp": s("DeletionTimestamp is when this object will be deleted."),
            "labels": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Map of string keys and values to organize and categorize objects."},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Unstructured key value map stored with a resource."},
            "finalizers": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set", "description": "Must be empty before the object is deleted from the registry."},
            "ownerReferences": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}, "description": "List of objects depended by this object."},
            "managedFields": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}, "description": "Which fields are managed by which workflow."},
        }
    })
}

fn kind_schema(t: &ResourceType) -> Value {
    let mut schema = match &t.schema {
        Some(s) => Value::clone(s),
        None => {
            json!({"type": "object", "description": format!("{} (stored schemaless by the test API server).", t.kind), "x-kubernetes-preserve-unknown-fields": true, "properties": {}})
        }
    };
    schema["properties"]["metadata"] = json!({"description": "Standard object's metadata.", "allOf": [{"$ref": format!("#/components/schemas/{OBJECT_META}")}]});
    schema["properties"]["apiVersion"] = json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."});
    schema["properties"]["kind"] = json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."});
    schema["x-kubernetes-group-version-kind"] =
        json!([{"group": t.group, "version": t.version, "kind": t.kind}]);
    schema
}

fn param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string"}, "uniqueItems": true})
}

pub fn openapi_doc(types: &[ResourceType], gv: &str) -> Result<Value, ApiError> {
    let served: Vec<&ResourceType> = types
        .iter()
        .filter(|t| gv_path(&t.group, &t.version) == gv)
        .collect();
    if served.is_empty() {
        return Err(ApiError::path_not_found());
    }
    let mut schemas = serde_json::Map::new();
    schemas.insert(OBJECT_META.into(), object_meta_schema());
    let mut paths = serde_json::Map::new();
    let write_params = vec![
        param(
            "dryRun",
            "When present, indicates that modifications should not be persisted.",
        ),
        param(
            "fieldManager",
            "fieldManager is a name associated with the actor or entity that is making these changes.",
        ),
        param(
            "fieldValidation",
            "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields: Ignore, Warn or Strict.",
        ),
    ];
    for t in served {
        let comp = component_name(t);
        schemas.insert(comp.clone(), kind_schema(t));
        let list_comp = format!("{comp}List");
        schemas.insert(list_comp.clone(), json!({
            "type": "object",
            "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "items": {"type": "array", "items": {"$ref": format!("#/components/schemas/{comp}")}}, "metadata": {"type": "object"}},
            "required": ["items"],
            "x-kubernetes-group-version-kind": [{"group": t.group, "version": t.version, "kind": format!("{}List", t.kind)}],
        }));
        let gvk = json!({"group": t.group, "version": t.version, "kind": t.kind});
        let body_ref = json!({"$ref": format!("#/components/schemas/{comp}")});
        let ok = |r: &Value| json!({"200": {"description": "OK", "content": {"application/json": {"schema": r}}}});
        let op = |action: &str, params: &[Value], with_body: bool| -> Value {
            let mut o = json!({
                "operationId": format!("{action}{}", t.kind),
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": params,
                "responses": ok(&body_ref),
            });
            if with_body {
                o["requestBody"] =
                    json!({"content": {"*/*": {"schema": body_ref}}, "required": true});
            }
            o
        };
        let mut patch_params = write_params.clone();
        patch_params.push(param(
            "force",
            "Force is going to \"force\" Apply requests.",
        ));
        let mut patch_op = op("patch", &patch_params, false);
        let mut patch_types = vec![
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/apply-patch+yaml",
        ];
        if !t.is_custom() {
            patch_types.push("application/strategic-merge-patch+json");
        }
        let content: serde_json::Map<String, Value> = patch_types
            .iter()
            .map(|c| (c.to_string(), json!({"schema": {"type": "object"}})))
            .collect();
        patch_op["requestBody"] = json!({"content": content, "required": true});
        let prefix = format!("/{gv}");
        let (collection, item) = if t.namespaced {
            (
                format!("{prefix}/namespaces/{{namespace}}/{}", t.plural),
                format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", t.plural),
            )
        } else {
            (
                format!("{prefix}/{}", t.plural),
                format!("{prefix}/{}/{{name}}", t.plural),
            )
        };
        let list_ref = json!({"$ref": format!("#/components/schemas/{list_comp}")});
        let mut list_op = op("list", &[], false);
        list_op["responses"] = ok(&list_ref);
        paths.insert(collection.clone(), json!({"get": list_op, "post": op("post", &write_params, true), "delete": op("deletecollection", &[], false)}));
        paths.insert(item.clone(), json!({"get": op("get", &[], false), "put": op("put", &write_params, true), "patch": patch_op, "delete": op("delete", &[param("dryRun", "dry run")], false)}));
        if t.status {
            paths.insert(format!("{item}/status"), json!({"get": op("get", &[], false), "put": op("put", &write_params, true), "patch": patch_op}));
        }
        if t.namespaced {
            let mut all = op("list", &[], false);
            all["responses"] = ok(&list_ref);
            paths.insert(format!("{prefix}/{}", t.plural), json!({"get": all}));
        }
    }
    Ok(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}
