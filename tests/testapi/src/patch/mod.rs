//! Patch semantics: RFC 6902 JSON patch, RFC 7386 merge patch, Kubernetes strategic merge
//! patch, and server-side apply with `metadata.managedFields` bookkeeping.
//!
//! Objects are plain `serde_json::Value`s. Lists merge according to a [`SchemaInfo`], which is
//! read from a CRD's openAPIV3Schema or, for built-in kinds, from a fixed table.

use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

// ---------------------------------------------------------------------------------------------
// List types and schemas
// ---------------------------------------------------------------------------------------------

/// How a list merges, from the CRD schema (`x-kubernetes-list-type`, `x-kubernetes-list-map-keys`)
/// or, for built-in kinds, from the table in `builtin_list_type`.
#[derive(Clone, Debug, PartialEq)]
pub enum ListType {
    Atomic,
    Set,
    Map(Vec<String>),
}

/// Answers how the list at a path merges. `path` is the field names from the object root,
/// list indices/keys omitted, e.g. ["spec","template","spec","containers","env"].
pub trait SchemaInfo {
    fn list_type(&self, path: &[&str]) -> ListType;
}

/// SchemaInfo read from a CRD openAPIV3Schema (walks properties / items / additionalProperties;
/// default for a list without x-kubernetes-list-type is Atomic). A wrapper object of the form
/// `{"openAPIV3Schema": {...}}` is accepted too.
pub struct CrdSchema<'a>(pub &'a Value);

impl SchemaInfo for CrdSchema<'_> {
    fn list_type(&self, path: &[&str]) -> ListType {
        // CRD schemas rarely describe metadata, but its lists (finalizers, ownerReferences)
        // merge the same way as on built-in kinds.
        if path.first() == Some(&"metadata") {
            return builtin_list_type(path);
        }
        let mut node = self.0.get("openAPIV3Schema").unwrap_or(self.0);
        for name in path {
            node = schema_items(node);
            match schema_child(node, name) {
                Some(child) => node = child,
                None => return ListType::Atomic,
            }
        }
        match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => ListType::Set,
            Some("map") => {
                let keys: Vec<String> = node
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|keys| {
                        keys.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                if keys.is_empty() {
                    // A map list without keys cannot be merged by key; treat it as a whole.
                    ListType::Atomic
                } else {
                    ListType::Map(keys)
                }
            }
            _ => ListType::Atomic,
        }
    }
}

/// Path names skip list positions, so descend through (possibly nested) array schemas.
fn schema_items(mut node: &Value) -> &Value {
    while node.get("type").and_then(Value::as_str) == Some("array") {
        match node.get("items") {
            Some(items) if items.is_object() => node = items,
            _ => break,
        }
    }
    node
}

fn schema_child<'v>(node: &'v Value, name: &str) -> Option<&'v Value> {
    if let Some(child) = node.get("properties").and_then(|p| p.get(name)) {
        return Some(child);
    }
    if let Some(extra) = node.get("additionalProperties").filter(|a| a.is_object()) {
        return Some(extra);
    }
    // Structural schemas may still spread properties over allOf/anyOf/oneOf branches.
    ["allOf", "anyOf", "oneOf"]
        .iter()
        .filter_map(|k| node.get(*k).and_then(Value::as_array))
        .flatten()
        .find_map(|branch| branch.get("properties").and_then(|p| p.get(name)))
}

/// SchemaInfo for built-in kinds (schemaless): lists keyed as Kubernetes keys them.
pub struct Builtin;

impl SchemaInfo for Builtin {
    fn list_type(&self, path: &[&str]) -> ListType {
        builtin_list_type(path)
    }
}

/// List types of the built-in kinds, by the last path element (and its parents where the same
/// name merges differently in different places).
pub fn builtin_list_type(path: &[&str]) -> ListType {
    let Some((last, parents)) = path.split_last() else {
        return ListType::Atomic;
    };
    let in_container = parents
        .iter()
        .any(|p| matches!(*p, "containers" | "initContainers" | "ephemeralContainers"));
    let keyed = |k: &str| ListType::Map(vec![k.to_string()]);
    match *last {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => keyed("name"),
        "conditions" => keyed("type"),
        "volumeMounts" => keyed("mountPath"),
        "volumeDevices" => keyed("devicePath"),
        "hostAliases" => keyed("ip"),
        "ports" if in_container => keyed("containerPort"),
        "ports" => keyed("port"),
        "finalizers" if parents.last() == Some(&"metadata") => ListType::Set,
        "ownerReferences" => keyed("uid"),
        _ => ListType::Atomic,
    }
}

fn as_strs(names: &[String]) -> Vec<&str> {
    names.iter().map(String::as_str).collect()
}

// ---------------------------------------------------------------------------------------------
// JSON patch, merge patch, strategic merge patch
// ---------------------------------------------------------------------------------------------

#[derive(Debug, PartialEq)]
pub enum PatchError {
    /// 422-ish: the patch is well-formed but cannot be applied (bad path, bad directive, ...).
    Invalid(String),
    /// A JSON-patch `test` operation failed.
    TestFailed(String),
    /// The patch body itself is malformed.
    BadRequest(String),
}

impl std::fmt::Display for PatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PatchError::Invalid(m) | PatchError::TestFailed(m) | PatchError::BadRequest(m) => {
                f.write_str(m)
            }
        }
    }
}

impl std::error::Error for PatchError {}

/// RFC 6902 JSON patch, including `test` (failure -> TestFailed with a message naming the path).
/// As with the Kubernetes API server, `test` of a missing path against `null` succeeds (the
/// finalizer helpers of Kubernetes clients send exactly that before adding the first finalizer).
/// The document is left unchanged when any operation fails.
pub fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), PatchError> {
    if !patch.is_array() {
        return Err(PatchError::BadRequest(
            "json patch must be a list of operations".to_string(),
        ));
    }
    let ops: ::json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| PatchError::BadRequest(format!("invalid json patch: {e}")))?;
    let mut work = doc.clone();
    for (index, op) in ops.0.into_iter().enumerate() {
        if let ::json_patch::PatchOperation::Test(t) = &op
            && t.value.is_null()
            && work.pointer(t.path.as_str()).is_none_or(Value::is_null)
        {
            continue;
        }
        ::json_patch::patch(&mut work, &[op]).map_err(|e| match e.kind {
            ::json_patch::PatchErrorKind::TestFailed => PatchError::TestFailed(format!(
                "test operation {index} failed: value at path '{}' did not match",
                e.path
            )),
            _ => PatchError::Invalid(format!("operation {index}: {}", e.kind)),
        })?;
    }
    *doc = work;
    Ok(())
}

/// RFC 7386 JSON merge patch (null deletes).
pub fn merge_patch(doc: &mut Value, patch: &Value) {
    ::json_patch::merge(doc, patch);
}

/// Kubernetes strategic merge patch: like merge patch, but lists of ListType::Map merge element-wise
/// by key (patch element replaces matching keys field-by-field, recursively; new keys appended),
/// Set lists union, Atomic lists replaced. Supports directives: `$patch: delete` on a list element
/// (removes the element with that key), `$patch: replace` on a map or list, `$deleteFromPrimitiveList/<field>`,
/// `$setElementOrder/<field>` (reorder to the given order, then drop the directive), `$retainKeys` (drop
/// keys not listed). Null deletes a field.
///
/// On error the document may be partly patched; callers patch a copy.
pub fn strategic_merge_patch(
    doc: &mut Value,
    patch: &Value,
    schema: &dyn SchemaInfo,
) -> Result<(), PatchError> {
    let Some(patch) = patch.as_object() else {
        return Err(PatchError::BadRequest(
            "strategic merge patch must be a JSON object".to_string(),
        ));
    };
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    if let Value::Object(map) = doc {
        smp_object(map, patch, &mut Vec::new(), schema)?;
    }
    Ok(())
}

const PATCH_DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE: &str = "$deleteFromPrimitiveList/";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";

fn is_directive(key: &str) -> bool {
    key == PATCH_DIRECTIVE
        || key == RETAIN_KEYS
        || key.starts_with(DELETE_FROM_PRIMITIVE)
        || key.starts_with(SET_ELEMENT_ORDER)
}

fn invalid_at(path: &[String], msg: &str) -> PatchError {
    PatchError::Invalid(format!("{msg} at .{}", path.join(".")))
}

/// Merges `patch` into `doc`. Returns false when the map itself is to be deleted.
fn smp_object(
    doc: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    path: &mut Vec<String>,
    schema: &dyn SchemaInfo,
) -> Result<bool, PatchError> {
    match patch.get(PATCH_DIRECTIVE) {
        None => {}
        Some(Value::String(d)) if d == "merge" => {}
        // Replace = start from nothing, then take the rest of the patch as the content.
        Some(Value::String(d)) if d == "replace" => doc.clear(),
        Some(Value::String(d)) if d == "delete" => {
            doc.clear();
            return Ok(false);
        }
        Some(other) => {
            return Err(invalid_at(
                path,
                &format!("unknown $patch directive {other}"),
            ));
        }
    }

    if let Some(retain) = patch.get(RETAIN_KEYS) {
        let Some(retain) = retain.as_array() else {
            return Err(invalid_at(path, "$retainKeys must be a list"));
        };
        let mut keep = BTreeSet::new();
        for k in retain {
            match k.as_str() {
                Some(k) => keep.insert(k),
                None => return Err(invalid_at(path, "$retainKeys must list strings")),
            };
        }
        doc.retain(|k, _| keep.contains(k.as_str()));
    }

    for (key, value) in patch {
        if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE) {
            let Some(remove) = value.as_array() else {
                return Err(invalid_at(path, &format!("{key} must be a list")));
            };
            if let Some(Value::Array(list)) = doc.get_mut(field) {
                list.retain(|e| !remove.contains(e));
            }
        }
    }

    for (key, value) in patch {
        if is_directive(key) {
            continue;
        }
        path.push(key.clone());
        let result = smp_field(doc, key, value, path, schema);
        path.pop();
        result?;
    }

    // Ordering runs last so that it also covers elements the patch just appended.
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER) {
            let Some(order) = value.as_array() else {
                return Err(invalid_at(path, &format!("{key} must be a list")));
            };
            if let Some(Value::Array(list)) = doc.get_mut(field) {
                path.push(field.to_string());
                let list_type = schema.list_type(&as_strs(path));
                path.pop();
                reorder(list, order, &list_type);
            }
        }
    }
    Ok(true)
}

fn smp_field(
    doc: &mut Map<String, Value>,
    key: &str,
    value: &Value,
    path: &mut Vec<String>,
    schema: &dyn SchemaInfo,
) -> Result<(), PatchError> {
    match value {
        Value::Null => {
            doc.remove(key);
        }
        Value::Object(patch) => {
            let slot = doc
                .entry(key.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            let keep = match slot {
                Value::Object(map) => smp_object(map, patch, path, schema)?,
                _ => true,
            };
            if !keep {
                doc.remove(key);
            }
        }
        Value::Array(patch) => {
            let list_type = schema.list_type(&as_strs(path));
            let slot = doc
                .entry(key.to_string())
                .or_insert_with(|| Value::Array(Vec::new()));
            if !slot.is_array() {
                *slot = Value::Array(Vec::new());
            }
            if let Value::Array(list) = slot {
                smp_list(list, patch, &list_type, path, schema)?;
            }
        }
        scalar => {
            doc.insert(key.to_string(), scalar.clone());
        }
    }
    Ok(())
}

/// `{"$patch": "replace"}` alone in a list means "the rest of this list replaces the old one".
fn is_replace_marker(v: &Value) -> bool {
    v.as_object().is_some_and(|m| {
        m.len() == 1 && m.get(PATCH_DIRECTIVE).and_then(Value::as_str) == Some("replace")
    })
}

fn same_key(a: &Value, b: &Value, keys: &[String]) -> bool {
    keys.iter().all(|k| a.get(k) == b.get(k))
}

fn smp_list(
    list: &mut Vec<Value>,
    patch: &[Value],
    list_type: &ListType,
    path: &mut Vec<String>,
    schema: &dyn SchemaInfo,
) -> Result<(), PatchError> {
    let replace = patch.iter().any(is_replace_marker);
    let items = patch.iter().filter(|v| !is_replace_marker(v));
    if replace {
        list.clear();
    }
    match list_type {
        ListType::Atomic => *list = items.cloned().collect(),
        ListType::Set => {
            for item in items {
                if !list.contains(item) {
                    list.push(item.clone());
                }
            }
        }
        ListType::Map(keys) => {
            for item in items {
                let Some(item_map) = item.as_object() else {
                    return Err(invalid_at(path, "list element must be an object"));
                };
                if !keys.iter().any(|k| item_map.contains_key(k)) {
                    return Err(invalid_at(
                        path,
                        &format!("list element does not contain merge key {}", keys.join(",")),
                    ));
                }
                match list.iter().position(|e| same_key(e, item, keys)) {
                    Some(pos) => {
                        if !list[pos].is_object() {
                            list[pos] = Value::Object(Map::new());
                        }
                        let keep = match &mut list[pos] {
                            Value::Object(existing) => {
                                smp_object(existing, item_map, path, schema)?
                            }
                            _ => true,
                        };
                        if !keep {
                            // The deleted element was emptied, so drop it by position first.
                            list.remove(pos);
                            list.retain(|e| !same_key(e, item, keys));
                        }
                    }
                    None => {
                        // New elements go through the same merge so directives get stripped.
                        let mut fresh = Map::new();
                        if smp_object(&mut fresh, item_map, path, schema)? {
                            list.push(Value::Object(fresh));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Puts the listed elements first, in the given order; the rest keep their relative order.
fn reorder(list: &mut Vec<Value>, order: &[Value], list_type: &ListType) {
    let matches = |element: &Value, wanted: &Value| match list_type {
        ListType::Map(keys) => wanted.is_object() && same_key(element, wanted, keys),
        _ => element == wanted,
    };
    let mut rest = std::mem::take(list);
    for wanted in order {
        if let Some(pos) = rest.iter().position(|e| matches(e, wanted)) {
            list.push(rest.remove(pos));
        }
    }
    list.append(&mut rest);
}

// ---------------------------------------------------------------------------------------------
// Field sets
// ---------------------------------------------------------------------------------------------

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    /// `f:<name>`: a field of an object.
    Field(String),
    /// `k:<json>`: a list-map element, by the compact JSON of its key fields (keys sorted).
    Key(String),
    /// `v:<json>`: a set element (or a list element without key fields), by its compact JSON.
    Value(String),
}

impl PathElement {
    fn fields_v1_key(&self) -> String {
        match self {
            PathElement::Field(n) => format!("f:{n}"),
            PathElement::Key(k) => format!("k:{k}"),
            PathElement::Value(v) => format!("v:{v}"),
        }
    }
}

/// A path from the object root to an owned field or list element.
pub type FieldPath = Vec<PathElement>;

/// A set of owned field paths, convertible to/from the FieldsV1 JSON used in metadata.managedFields,
/// e.g. {"f:metadata":{"f:labels":{"f:app":{}}},"f:spec":{"f:replicas":{},"f:pools":{"k:{\"name\":\"a\"}":{".":{},"f:name":{},"f:size":{}}}}}
/// Path elements: field `f:<name>`, list-map element `k:<compact JSON of key fields, keys sorted>`, set element `v:<compact JSON value>`,
/// "." = the element itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet {
    paths: BTreeSet<FieldPath>,
}

#[derive(Default)]
struct FieldsNode {
    member: bool,
    children: BTreeMap<String, FieldsNode>,
}

impl FieldsNode {
    fn to_value(&self) -> Value {
        let mut map = Map::new();
        // "." marks a member that also has owned children; a bare member is just `{}`.
        if self.member && !self.children.is_empty() {
            map.insert(".".to_string(), Value::Object(Map::new()));
        }
        for (k, child) in &self.children {
            map.insert(k.clone(), child.to_value());
        }
        Value::Object(map)
    }
}

impl FieldSet {
    pub fn new() -> FieldSet {
        FieldSet::default()
    }

    pub fn from_fields_v1(v: &Value) -> FieldSet {
        fn walk(node: &Value, prefix: &mut FieldPath, out: &mut FieldSet) {
            let Some(map) = node.as_object() else {
                return;
            };
            for (key, child) in map {
                if key == "." {
                    if !prefix.is_empty() {
                        out.insert(prefix.clone());
                    }
                    continue;
                }
                let element = if let Some(name) = key.strip_prefix("f:") {
                    PathElement::Field(name.to_string())
                } else if let Some(k) = key.strip_prefix("k:") {
                    PathElement::Key(recanonicalize(k))
                } else if let Some(v) = key.strip_prefix("v:") {
                    PathElement::Value(recanonicalize(v))
                } else {
                    // Other element kinds (list indices) never appear for our list types.
                    continue;
                };
                prefix.push(element);
                match child.as_object() {
                    Some(m) if !m.is_empty() => walk(child, prefix, out),
                    _ => out.insert(prefix.clone()),
                }
                prefix.pop();
            }
        }
        let mut out = FieldSet::new();
        walk(v, &mut Vec::new(), &mut out);
        out
    }

    pub fn to_fields_v1(&self) -> Value {
        let mut root = FieldsNode::default();
        for path in &self.paths {
            let mut node = &mut root;
            for element in path {
                node = node.children.entry(element.fields_v1_key()).or_default();
            }
            node.member = true;
        }
        root.to_value()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn insert(&mut self, path: FieldPath) {
        if !path.is_empty() {
            self.paths.insert(path);
        }
    }

    pub fn contains(&self, path: &[PathElement]) -> bool {
        self.paths.contains(path)
    }

    pub fn remove(&mut self, path: &[PathElement]) -> bool {
        self.paths.remove(path)
    }

    pub fn iter(&self) -> impl Iterator<Item = &FieldPath> {
        self.paths.iter()
    }

    /// True when the set holds `prefix` itself or any path below it.
    pub fn has_prefix(&self, prefix: &[PathElement]) -> bool {
        // Paths sharing a prefix sort contiguously right after the prefix itself.
        self.paths
            .range(prefix.to_vec()..)
            .next()
            .is_some_and(|p| p.starts_with(prefix))
    }

    /// Removes `prefix` itself and every path below it.
    pub fn remove_prefix(&mut self, prefix: &[PathElement]) {
        self.paths.retain(|p| !p.starts_with(prefix));
    }

    pub fn union(&self, other: &FieldSet) -> FieldSet {
        FieldSet {
            paths: self.paths.union(&other.paths).cloned().collect(),
        }
    }

    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        FieldSet {
            paths: self.paths.difference(&other.paths).cloned().collect(),
        }
    }

    /// Dotted paths, e.g. `.spec.pools[name="a"].size`.
    pub fn to_strings(&self) -> Vec<String> {
        self.paths.iter().map(|p| path_string(p)).collect()
    }
}

/// Renders a path the way apply conflicts name fields: `.spec.replicas`,
/// `.spec.containers[name="nginx"].image`, `.metadata.finalizers[="x"]`.
pub fn path_string(path: &[PathElement]) -> String {
    let mut out = String::new();
    for element in path {
        match element {
            PathElement::Field(n) => {
                out.push('.');
                out.push_str(n);
            }
            PathElement::Key(k) => {
                out.push('[');
                match serde_json::from_str::<Value>(k) {
                    Ok(Value::Object(fields)) => {
                        let mut fields: Vec<_> = fields.iter().collect();
                        fields.sort_by(|a, b| a.0.cmp(b.0));
                        let parts: Vec<String> = fields
                            .iter()
                            .map(|(f, v)| format!("{f}={}", canonical_json(v)))
                            .collect();
                        out.push_str(&parts.join(","));
                    }
                    _ => out.push_str(k),
                }
                out.push(']');
            }
            PathElement::Value(v) => {
                out.push_str("[=");
                out.push_str(v);
                out.push(']');
            }
        }
    }
    out
}

/// Compact JSON with object keys sorted, independent of serde_json's map ordering feature.
fn canonical_json(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let parts: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{}:{}", Value::String((*k).clone()), canonical_json(v)))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(canonical_json).collect();
            format!("[{}]", parts.join(","))
        }
        scalar => scalar.to_string(),
    }
}

fn recanonicalize(s: &str) -> String {
    serde_json::from_str::<Value>(s)
        .map(|v| canonical_json(&v))
        .unwrap_or_else(|_| s.to_string())
}

/// Key of a list-map element: its key fields as canonical JSON, or None when it has none.
fn element_key(element: &Value, keys: &[String]) -> Option<String> {
    let map = element.as_object()?;
    let mut key = Map::new();
    for k in keys {
        if let Some(v) = map.get(k) {
            key.insert(k.clone(), v.clone());
        }
    }
    if key.is_empty() {
        None
    } else {
        Some(canonical_json(&Value::Object(key)))
    }
}

/// Metadata that the server manages itself and nobody owns.
const SYSTEM_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "managedFields",
    "selfLink",
];

fn is_system_field(at: &[PathElement], key: &str) -> bool {
    match at {
        [] => key == "apiVersion" || key == "kind",
        [PathElement::Field(m)] if m == "metadata" => SYSTEM_METADATA.contains(&key),
        _ => false,
    }
}

/// The fields an object (or applied configuration) sets, as leaves and list elements
/// (objects are granular: each leaf field counts; Atomic lists are one leaf; Map lists give `k:` elements
/// with "." plus their fields; Set lists give `v:` elements). Skip metadata fields kubernetes owns
/// itself: metadata.{name,namespace,uid,resourceVersion,generation,creationTimestamp,deletionTimestamp,
/// managedFields,selfLink}, and top-level apiVersion/kind. metadata.labels/annotations/finalizers/ownerReferences ARE tracked.
///
/// Null values count as unset. Empty objects and empty non-atomic lists are leaves of their own.
pub fn field_set(obj: &Value, schema: &dyn SchemaInfo) -> FieldSet {
    let mut out = FieldSet::new();
    if let Some(map) = obj.as_object() {
        walk_fields(map, &mut Vec::new(), &mut Vec::new(), schema, &mut out);
    }
    out
}

fn walk_fields(
    map: &Map<String, Value>,
    names: &mut Vec<String>,
    at: &mut FieldPath,
    schema: &dyn SchemaInfo,
    out: &mut FieldSet,
) {
    for (key, value) in map {
        if is_system_field(at, key) {
            continue;
        }
        names.push(key.clone());
        at.push(PathElement::Field(key.clone()));
        walk_value(value, names, at, schema, out);
        at.pop();
        names.pop();
    }
}

fn walk_value(
    value: &Value,
    names: &mut Vec<String>,
    at: &mut FieldPath,
    schema: &dyn SchemaInfo,
    out: &mut FieldSet,
) {
    match value {
        Value::Null => {}
        Value::Object(map) if !map.is_empty() => walk_fields(map, names, at, schema, out),
        Value::Array(items) if !items.is_empty() => match schema.list_type(&as_strs(names)) {
            ListType::Atomic => out.insert(at.clone()),
            ListType::Set => {
                for item in items {
                    at.push(PathElement::Value(canonical_json(item)));
                    out.insert(at.clone());
                    at.pop();
                }
            }
            ListType::Map(keys) => {
                for item in items {
                    match (element_key(item, &keys), item.as_object()) {
                        (Some(key), Some(fields)) => {
                            at.push(PathElement::Key(key));
                            out.insert(at.clone());
                            walk_fields(fields, names, at, schema, out);
                            at.pop();
                        }
                        _ => {
                            at.push(PathElement::Value(canonical_json(item)));
                            out.insert(at.clone());
                            at.pop();
                        }
                    }
                }
            }
        },
        _ => out.insert(at.clone()),
    }
}

fn element_matches(element: &Value, step: &PathElement) -> bool {
    match step {
        PathElement::Field(_) => false,
        PathElement::Key(k) => match serde_json::from_str::<Value>(k) {
            Ok(Value::Object(fields)) => fields.iter().all(|(f, v)| element.get(f) == Some(v)),
            _ => false,
        },
        PathElement::Value(v) => {
            serde_json::from_str::<Value>(v).is_ok_and(|wanted| *element == wanted)
        }
    }
}

/// The value at `path`, treating explicit nulls as absent.
fn lookup<'v>(root: &'v Value, path: &[PathElement]) -> Option<&'v Value> {
    let mut cur = root;
    for step in path {
        cur = match step {
            PathElement::Field(n) => cur.as_object()?.get(n)?,
            _ => cur.as_array()?.iter().find(|e| element_matches(e, step))?,
        };
    }
    (!cur.is_null()).then_some(cur)
}

fn lookup_mut<'v>(root: &'v mut Value, path: &[PathElement]) -> Option<&'v mut Value> {
    let mut cur = root;
    for step in path {
        cur = match step {
            PathElement::Field(n) => cur.as_object_mut()?.get_mut(n)?,
            _ => cur
                .as_array_mut()?
                .iter_mut()
                .find(|e| element_matches(e, step))?,
        };
    }
    Some(cur)
}

fn remove_path(root: &mut Value, path: &[PathElement]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    match (lookup_mut(root, parent), last) {
        (Some(Value::Object(map)), PathElement::Field(n)) => {
            map.remove(n);
        }
        (Some(Value::Array(list)), step) => list.retain(|e| !element_matches(e, step)),
        _ => {}
    }
}

/// Whether the value at `path` differs between two objects. A list element itself only
/// "differs" when it is missing from `before`; changes inside it show up on its own fields.
fn differs_at(before: &Value, after: &Value, path: &[PathElement]) -> bool {
    match path.last() {
        Some(PathElement::Field(_)) => lookup(before, path) != lookup(after, path),
        Some(_) => lookup(before, path).is_none() != lookup(after, path).is_none(),
        None => false,
    }
}

// ---------------------------------------------------------------------------------------------
// managedFields entries
// ---------------------------------------------------------------------------------------------

struct Entry {
    /// The entry as stored, so fields we don't interpret survive a rewrite.
    raw: Map<String, Value>,
    manager: String,
    operation: String,
    subresource: Option<String>,
    set: FieldSet,
}

impl Entry {
    fn parse(v: &Value) -> Option<Entry> {
        let raw = v.as_object()?.clone();
        let text = |k: &str| raw.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let subresource = Some(text("subresource")).filter(|s| !s.is_empty());
        Some(Entry {
            manager: text("manager"),
            operation: text("operation"),
            subresource,
            set: raw
                .get("fieldsV1")
                .map(FieldSet::from_fields_v1)
                .unwrap_or_default(),
            raw,
        })
    }

    fn new(manager: &str, operation: &str, subresource: Option<&str>) -> Entry {
        let mut raw = Map::new();
        raw.insert("manager".into(), manager.into());
        raw.insert("operation".into(), operation.into());
        if let Some(sub) = subresource {
            raw.insert("subresource".into(), sub.into());
        }
        Entry {
            raw,
            manager: manager.to_string(),
            operation: operation.to_string(),
            subresource: subresource.map(str::to_string),
            set: FieldSet::new(),
        }
    }

    fn is(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }

    fn touch(&mut self, api_version: &str, now: &str) {
        self.raw.insert("apiVersion".into(), api_version.into());
        self.raw.insert("time".into(), now.into());
    }

    fn to_value(&self) -> Value {
        let mut raw = self.raw.clone();
        raw.insert("fieldsType".into(), "FieldsV1".into());
        raw.insert("fieldsV1".into(), self.set.to_fields_v1());
        Value::Object(raw)
    }
}

fn parse_entries(list: &[Value]) -> Vec<Entry> {
    list.iter().filter_map(Entry::parse).collect()
}

fn entries_of(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|list| parse_entries(list))
        .unwrap_or_default()
}

fn write_entries(obj: &mut Value, entries: Vec<Entry>) {
    let entries: Vec<Value> = entries
        .iter()
        .filter(|e| !e.set.is_empty())
        .map(Entry::to_value)
        .collect();
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let Value::Object(root) = obj else {
        return;
    };
    if entries.is_empty() {
        if let Some(Value::Object(meta)) = root.get_mut("metadata") {
            meta.remove("managedFields");
        }
        return;
    }
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    if let Value::Object(meta) = meta {
        meta.insert("managedFields".into(), Value::Array(entries));
    }
}

fn normalize_subresource(subresource: Option<&str>) -> Option<&str> {
    subresource.filter(|s| !s.is_empty())
}

/// Current time in the RFC 3339 form managedFields use (second precision, UTC).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

// ---------------------------------------------------------------------------------------------
// Server-side apply
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub manager: String,
    /// Dotted path like `.spec.replicas`.
    pub field: String,
}

/// The message Kubernetes puts in the 409 Status of a conflicting apply.
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [only] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {:?}: {}",
            only.manager, only.field
        );
    }
    let mut by_manager: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for c in conflicts {
        by_manager.entry(&c.manager).or_default().push(&c.field);
    }
    let mut lines = Vec::new();
    for (manager, fields) in by_manager {
        lines.push(format!("conflicts with {manager:?}:"));
        lines.extend(fields.iter().map(|f| format!("- {f}")));
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

pub struct ApplyRequest<'a> {
    /// Stored object (with metadata.managedFields), None = create.
    pub current: Option<&'a Value>,
    /// The applied configuration (already parsed from YAML/JSON).
    pub applied: &'a Value,
    /// fieldManager (required for apply).
    pub manager: &'a str,
    pub force: bool,
    /// Some("status") for /status applies.
    pub subresource: Option<&'a str>,
    pub api_version: &'a str,
    /// RFC3339 timestamp for managedFields[].time.
    pub now: &'a str,
    pub schema: &'a dyn SchemaInfo,
}

/// Merges an applied configuration into `target`: objects recursively, Map lists by key,
/// Set lists as a union, everything else replaced. Nulls remove fields.
fn merge_applied(
    target: &mut Value,
    applied: &Value,
    names: &mut Vec<String>,
    schema: &dyn SchemaInfo,
) {
    match applied {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let Value::Object(target) = target else {
                return;
            };
            for (key, value) in fields {
                if value.is_null() {
                    target.remove(key);
                    continue;
                }
                names.push(key.clone());
                let slot = target.entry(key.clone()).or_insert(Value::Null);
                merge_applied(slot, value, names, schema);
                names.pop();
            }
        }
        Value::Array(items) => {
            let list_type = schema.list_type(&as_strs(names));
            if list_type == ListType::Atomic || !target.is_array() {
                if list_type == ListType::Atomic {
                    *target = applied.clone();
                    return;
                }
                *target = Value::Array(Vec::new());
            }
            let Value::Array(list) = target else {
                return;
            };
            for item in items {
                match &list_type {
                    ListType::Map(keys) => {
                        match list.iter().position(|e| same_key(e, item, keys)) {
                            Some(pos) => merge_applied(&mut list[pos], item, names, schema),
                            None => {
                                let mut fresh = Value::Null;
                                merge_applied(&mut fresh, item, names, schema);
                                list.push(fresh);
                            }
                        }
                    }
                    _ => {
                        if !list.contains(item) {
                            list.push(item.clone());
                        }
                    }
                }
            }
        }
        scalar => *target = scalar.clone(),
    }
}

/// A field of a list-map element that is one of its key fields: it lives and dies with the
/// element, so it is never removed on its own.
fn is_element_key_field(path: &[PathElement]) -> bool {
    match path {
        [.., PathElement::Key(k), PathElement::Field(f)] => {
            matches!(serde_json::from_str::<Value>(k), Ok(Value::Object(m)) if m.contains_key(f))
        }
        _ => false,
    }
}

/// Returns the new object (caller then validates/stores it; caller handles resourceVersion etc.)
/// including updated metadata.managedFields, or the list of conflicts (HTTP 409) when not forced.
pub fn apply(req: ApplyRequest) -> Result<Value, Vec<Conflict>> {
    let subresource = normalize_subresource(req.subresource);

    // managedFields sent along with the configuration are not the applier's to set.
    let mut applied = req.applied.clone();
    if let Some(Value::Object(meta)) = applied.get_mut("metadata") {
        meta.remove("managedFields");
    }
    let applied_set = field_set(&applied, req.schema);

    let empty = Value::Object(Map::new());
    let current = req.current.unwrap_or(&empty);
    let mut entries = entries_of(current);
    let mine = entries
        .iter()
        .position(|e| e.is(req.manager, "Apply", subresource));
    let previous = mine.map(|i| entries[i].set.clone()).unwrap_or_default();

    let mut merged = current.clone();
    merge_applied(&mut merged, &applied, &mut Vec::new(), req.schema);

    // A field conflicts only when this apply changes its value; equal values are shared.
    let mut conflicts = Vec::new();
    let mut forced = Vec::new();
    for path in applied_set.iter() {
        if !differs_at(current, &merged, path) {
            continue;
        }
        for (i, entry) in entries.iter().enumerate() {
            if Some(i) == mine || entry.subresource.as_deref() != subresource {
                continue;
            }
            if entry.set.contains(path) {
                if req.force {
                    forced.push((i, path.clone()));
                } else {
                    conflicts.push(Conflict {
                        manager: entry.manager.clone(),
                        field: path_string(path),
                    });
                }
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }
    for (i, path) in forced {
        entries[i].set.remove(&path);
    }

    // Fields this manager applied before but no longer does go away unless someone
    // (including this apply) still owns them or something below them.
    let mut owned = applied_set.clone();
    for (i, entry) in entries.iter().enumerate() {
        if Some(i) != mine {
            owned = owned.union(&entry.set);
        }
    }
    for path in previous.difference(&applied_set).iter() {
        if owned.has_prefix(path) || is_element_key_field(path) {
            continue;
        }
        remove_path(&mut merged, path);
    }

    let index = match mine {
        Some(i) => i,
        None => {
            entries.push(Entry::new(req.manager, "Apply", subresource));
            entries.len() - 1
        }
    };
    entries[index].set = applied_set;
    entries[index].touch(req.api_version, req.now);
    write_entries(&mut merged, entries);
    Ok(merged)
}

/// For non-apply writes (create, PUT, PATCH of other types): records in metadata.managedFields of `new`
/// an entry {manager, operation:"Update", apiVersion, time, fieldsType:"FieldsV1", fieldsV1, subresource?}
/// for the fields that changed between old and new (or all fields on create), and removes those fields
/// from other managers' sets (updates take ownership without conflicts). Entries whose sets become empty are dropped.
///
/// managedFields in `new` follow the Kubernetes rules for writes: a non-empty list replaces the
/// stored one, `[{}]` strips managedFields entirely, and an absent or empty list keeps the stored one.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: Option<&str>,
    api_version: &str,
    now: &str,
    schema: &dyn SchemaInfo,
) {
    let subresource = normalize_subresource(subresource);
    let sent = new
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned();
    let mut entries = match sent {
        Some(list) if list.len() == 1 && list[0].as_object().is_some_and(Map::is_empty) => {
            write_entries(new, Vec::new());
            return;
        }
        Some(list) if !list.is_empty() => parse_entries(&list),
        _ => old.map(entries_of).unwrap_or_default(),
    };

    let new_set = field_set(new, schema);
    let (changed, removed) = match old {
        None => (new_set, FieldSet::new()),
        Some(old) => {
            let mut changed = FieldSet::new();
            for path in new_set.iter() {
                if differs_at(old, new, path) {
                    changed.insert(path.clone());
                }
            }
            let mut removed = FieldSet::new();
            for path in field_set(old, schema).iter() {
                if lookup(new, path).is_none() {
                    removed.insert(path.clone());
                }
            }
            (changed, removed)
        }
    };

    let mine = entries
        .iter()
        .position(|e| e.is(manager, "Update", subresource));
    for (i, entry) in entries.iter_mut().enumerate() {
        if Some(i) != mine {
            for path in changed.iter() {
                entry.set.remove_prefix(path);
            }
        }
        for path in removed.iter() {
            entry.set.remove_prefix(path);
        }
    }
    if !changed.is_empty() {
        let index = match mine {
            Some(i) => i,
            None => {
                entries.push(Entry::new(manager, "Update", subresource));
                entries.len() - 1
            }
        };
        let entry = &mut entries[index];
        entry.set = entry.set.union(&changed);
        entry.touch(api_version, now);
    }
    write_entries(new, entries);
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests;
