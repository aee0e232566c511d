//! What the API server does with a custom resource against its CRD's structural
//! `openAPIV3Schema`: pruning of unknown fields, defaulting, and validation
//! (OpenAPI value validations, list-type invariants, embedded resources and CEL
//! `x-kubernetes-validations`), reported as Kubernetes-style field errors.
//!
//! The intended order for a write is `prune`, then `apply_defaults`, then
//! `validate`, the same order the API server applies them in.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use kube_cel::{CompiledSchema, ErrorKind};
use regex::Regex;
use serde_json::{Map, Number, Value};

/// `details.causes[].reason` values, spelled as the API server spells them.
pub const REASON_REQUIRED: &str = "FieldValueRequired";
pub const REASON_INVALID: &str = "FieldValueInvalid";
pub const REASON_NOT_SUPPORTED: &str = "FieldValueNotSupported";
pub const REASON_DUPLICATE: &str = "FieldValueDuplicate";
pub const REASON_TOO_LONG: &str = "FieldValueTooLong";
pub const REASON_TOO_MANY: &str = "FieldValueTooMany";
pub const REASON_TYPE_INVALID: &str = "FieldValueTypeInvalid";
pub const REASON_FORBIDDEN: &str = "FieldValueForbidden";

/// The field of the error the API server adds when CEL rules were skipped.
pub const CEL_SKIPPED_FIELD: &str = "<nil>";
const CEL_SKIPPED_MESSAGE: &str = "Invalid value: \"null\": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation";

const PRESERVE: &str = "x-kubernetes-preserve-unknown-fields";
const INT_OR_STRING: &str = "x-kubernetes-int-or-string";
const EMBEDDED: &str = "x-kubernetes-embedded-resource";
const LIST_TYPE: &str = "x-kubernetes-list-type";
const LIST_MAP_KEYS: &str = "x-kubernetes-list-map-keys";
const RULES: &str = "x-kubernetes-validations";

/// One invalid field, as in a Kubernetes Status `details.causes[]` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    /// Dotted path with indices: `spec.nodePools[0].replicas`; map keys as `spec.labels[key]`.
    pub field: String,
    /// One of the `REASON_*` constants.
    pub reason: &'static str,
    /// The error body (`Invalid value: -1: ...`); never starts with the field path.
    pub message: String,
}

impl FieldError {
    fn new(field: &str, reason: &'static str, message: String) -> Self {
        Self {
            field: field.to_string(),
            reason,
            message,
        }
    }

    fn required(field: &str, detail: &str) -> Self {
        Self::new(
            field,
            REASON_REQUIRED,
            with_detail("Required value", detail),
        )
    }

    /// `value` is already rendered (see `render`).
    fn invalid(field: &str, value: &str, detail: &str) -> Self {
        Self::new(
            field,
            REASON_INVALID,
            with_detail(&format!("Invalid value: {value}"), detail),
        )
    }

    fn type_invalid(field: &str, data_type: &str, expected: &str) -> Self {
        let q = go_quote(data_type);
        Self::new(
            field,
            REASON_TYPE_INVALID,
            format!("Invalid value: {q}: {field} in body must be of type {expected}: {q}"),
        )
    }

    fn too_many(field: &str, actual: usize, max: i64) -> Self {
        let unit = if max == 1 { "item" } else { "items" };
        Self::new(
            field,
            REASON_TOO_MANY,
            format!("Too many: {actual}: must have at most {max} {unit}"),
        )
    }

    fn duplicate(field: &str, value: &str) -> Self {
        Self::new(field, REASON_DUPLICATE, format!("Duplicate value: {value}"))
    }

    /// "spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0".
    /// A rule on the object's root has no field path, which the server prints as `<nil>`.
    pub fn to_string_with_field(&self) -> String {
        let field = if self.field.is_empty() {
            "<nil>"
        } else {
            &self.field
        };
        format!("{field}: {}", self.message)
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string_with_field())
    }
}

impl std::error::Error for FieldError {}

fn with_detail(head: &str, detail: &str) -> String {
    if detail.is_empty() {
        head.to_string()
    } else {
        format!("{head}: {detail}")
    }
}

// ---------------------------------------------------------------------------
// Schema and path helpers
// ---------------------------------------------------------------------------

fn flag(s: &Value, key: &str) -> bool {
    s.get(key).and_then(Value::as_bool) == Some(true)
}

fn type_of(s: &Value) -> &str {
    s.get("type").and_then(Value::as_str).unwrap_or("")
}

fn nullable(s: &Value) -> bool {
    flag(s, "nullable")
}

fn properties(s: &Value) -> Option<&Map<String, Value>> {
    s.get("properties").and_then(Value::as_object)
}

/// `additionalProperties` when it is a schema (structural schemas allow no other form
/// besides `true`, which behaves like preserve-unknown-fields).
fn additional_schema(s: &Value) -> Option<&Value> {
    s.get("additionalProperties").filter(|a| a.is_object())
}

fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

fn key(path: &str, k: &str) -> String {
    format!("{path}[{k}]")
}

/// The JSON type name the way the OpenAPI validator names data.
fn data_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_whole(n: &Number) -> bool {
    n.is_i64()
        || n.is_u64()
        || n.as_f64()
            .is_some_and(|f| f.is_finite() && f.fract() == 0.0)
}

fn type_matches(ty: &str, v: &Value) -> bool {
    match (ty, v) {
        ("string", Value::String(_))
        | ("boolean", Value::Bool(_))
        | ("object", Value::Object(_))
        | ("array", Value::Array(_))
        | ("number", Value::Number(_)) => true,
        // Whole-number floats such as 3.0 are accepted as integers.
        ("integer", Value::Number(n)) => is_whole(n),
        _ => false,
    }
}

/// Quotes like Go's `%q`, which is how the API server prints string values.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{b}' => out.push_str("\\v"),
            '\u{c}' => out.push_str("\\f"),
            c if c.is_control() => {
                let n = c as u32;
                if n < 0x80 {
                    out.push_str(&format!("\\x{n:02x}"));
                } else {
                    out.push_str(&format!("\\u{n:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Formats a float like Go's `%v` (shortest digits, exponent form past 1e+06),
/// since bounds and values in the server's messages are printed that way.
fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if f == 0.0 {
        return "0".into();
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        format!("{f}")
    }
}

/// Renders a bad value as the server's field errors do: strings quoted, integers
/// plain, floats Go-style, composite values as JSON.
fn render(v: &Value) -> String {
    match v {
        Value::Null => go_quote("null"),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.to_string(),
            None => go_float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => go_quote(s),
        Value::Array(_) | Value::Object(_) => serde_json::to_string(v).unwrap_or_default(),
    }
}

/// JSON equality where 3 and 3.0 are the same number.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, p)| y.get(k).is_some_and(|q| json_eq(p, q)))
        }
        _ => a == b,
    }
}

thread_local! {
    // Patterns come from a handful of CRD schemas, so caching them all is cheap.
    static REGEXES: RefCell<HashMap<String, Result<Regex, String>>> = RefCell::new(HashMap::new());
}

fn compile_pattern(pattern: &str) -> Result<Regex, String> {
    REGEXES.with(|cache| {
        cache
            .borrow_mut()
            .entry(pattern.to_string())
            .or_insert_with(|| Regex::new(pattern).map_err(|e| e.to_string()))
            .clone()
    })
}

// ---------------------------------------------------------------------------
// Pruning
// ---------------------------------------------------------------------------

/// Drops fields the schema does not know (unless x-kubernetes-preserve-unknown-fields: true at that level,
/// or x-kubernetes-embedded-resource / int-or-string handling), returning the dotted paths of what was dropped
/// (the caller turns them into a 400 "unknown field" for fieldValidation=Strict, warnings for Warn).
/// At the root, apiVersion, kind and metadata are never pruned here (the caller handles metadata).
/// Also drops `null` values of fields that are not `nullable: true` (Kubernetes prunes them before defaulting).
pub fn prune(schema: &Value, obj: &mut Value) -> Vec<String> {
    let mut dropped = Vec::new();
    prune_node(schema, obj, "", true, &mut dropped);
    dropped
}

fn prune_node(s: &Value, v: &mut Value, path: &str, root: bool, dropped: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            // A value of the wrong type is left for validation to report, rather
            // than emptied field by field.
            let ty = type_of(s);
            if !(ty == "object" || ty.is_empty()) || flag(s, INT_OR_STRING) {
                return;
            }
            let props = properties(s);
            let additional = additional_schema(s);
            let preserve =
                flag(s, PRESERVE) || s.get("additionalProperties") == Some(&Value::Bool(true));
            let keeps_type_meta = root || flag(s, EMBEDDED);
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                if keeps_type_meta && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let sub = props.and_then(|p| p.get(&k)).or(additional);
                match sub {
                    Some(sub) => {
                        if map[&k].is_null() {
                            if !nullable(sub) {
                                map.remove(&k);
                            }
                            continue;
                        }
                        let sub_path = if props.is_some_and(|p| p.contains_key(&k)) {
                            child(path, &k)
                        } else {
                            key(path, &k)
                        };
                        if let Some(cv) = map.get_mut(&k) {
                            prune_node(sub, cv, &sub_path, false, dropped);
                        }
                    }
                    None if preserve => {}
                    None => {
                        map.remove(&k);
                        dropped.push(child(path, &k));
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(items_schema) = s.get("items").filter(|i| i.is_object()) {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_node(items_schema, item, &index(path, i), false, dropped);
                }
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// Defaulting
// ---------------------------------------------------------------------------

/// Applies `default`s from the schema (objects that are present get their missing defaulted fields, recursively,
/// including inside list items and additionalProperties values; an absent field with a default is created).
pub fn apply_defaults(schema: &Value, obj: &mut Value) {
    default_node(schema, obj);
}

fn default_node(s: &Value, v: &mut Value) {
    match v {
        Value::Object(map) => {
            let props = properties(s);
            if let Some(props) = props {
                for (k, ps) in props {
                    let Some(default) = ps.get("default") else {
                        continue;
                    };
                    let missing = match map.get(k) {
                        None => true,
                        Some(Value::Null) => !nullable(ps),
                        Some(_) => false,
                    };
                    if missing {
                        map.insert(k.clone(), default.clone());
                    }
                }
            }
            let additional = additional_schema(s);
            // Defaulted values are walked too, so a default of `{}` picks up the
            // defaults of its own fields, as on the server.
            for (k, cv) in map.iter_mut() {
                if let Some(ps) = props.and_then(|p| p.get(k)) {
                    default_node(ps, cv);
                } else if let Some(ap) = additional {
                    default_element(ap, cv);
                }
            }
        }
        Value::Array(items) => {
            if let Some(items_schema) = s.get("items").filter(|i| i.is_object()) {
                for item in items.iter_mut() {
                    default_element(items_schema, item);
                }
            }
        }
        _ => {}
    }
}

/// A list item or map value: a non-nullable null takes the default, anything
/// else is defaulted inside.
fn default_element(s: &Value, v: &mut Value) {
    if v.is_null()
        && !nullable(s)
        && let Some(default) = s.get("default")
    {
        *v = default.clone();
    } else {
        default_node(s, v);
    }
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

/// Errors in the order the server reports them: OpenAPI value validation,
/// embedded-resource checks, then list-type invariants.
#[derive(Default)]
struct Errs {
    schema: Vec<FieldError>,
    embedded: Vec<FieldError>,
    lists: Vec<FieldError>,
}

impl Errs {
    fn is_empty(&self) -> bool {
        self.schema.is_empty() && self.embedded.is_empty() && self.lists.is_empty()
    }

    fn len(&self) -> usize {
        self.schema.len() + self.embedded.len() + self.lists.len()
    }

    fn merge(&mut self, other: Errs) {
        self.schema.extend(other.schema);
        self.embedded.extend(other.embedded);
        self.lists.extend(other.lists);
    }
}

/// Validates against the structural schema: type (string/integer/number/boolean/object/array, integer accepts
/// whole-number floats like 3.0, nullable), required, enum, minimum/maximum (+exclusive), minLength/maxLength
/// (in characters), pattern (ECMA-ish; use regex crate), minItems/maxItems, minProperties/maxProperties,
/// format int32/int64 range, x-kubernetes-int-or-string, x-kubernetes-list-type map (unique keys → FieldValueDuplicate)
/// and set (unique items), then CEL x-kubernetes-validations via kube-cel with `old` for transition rules
/// (rules referencing oldSelf are only evaluated when old is Some). A CEL failure gives FieldValueInvalid with the
/// rule's message (or "failed rule: <rule>" when no message), field = the rule's location plus its fieldPath.
/// Run CEL only when the structural checks pass (like Kubernetes, to avoid type errors inside CEL).
/// Validation starts at the root: errors for the spec appear as "spec.xxx".
///
/// As on the server, only "blocking" errors (type, required, enum, too long, too
/// many) keep CEL from running; they add the server's `<nil>` error saying rules
/// were not checked. Range, pattern and duplicate errors do not block CEL.
pub fn validate(schema: &Value, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    validate_cached(schema, obj, old, &Mutex::default())
}

/// A CRD version's schema with its CEL rules compiled once, on first use, as the API
/// server compiles them when the CRD is registered (not on every write).
#[derive(Debug)]
pub struct Schema {
    root: Value,
    /// Compiled rules by the address of their node inside `root`, which never changes
    /// (the schema is immutable once built and shared behind an `Arc`).
    compiled: CelCache,
}

impl Schema {
    pub fn new(root: Value) -> Self {
        Schema {
            root,
            compiled: Mutex::default(),
        }
    }

    /// [`validate`] against this schema, with its compiled rules.
    pub fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        validate_cached(&self.root, obj, old, &self.compiled)
    }
}

impl std::ops::Deref for Schema {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.root
    }
}

/// What the CEL walk needs of each schema node, worked out once per node (by its
/// address, as [`Schema`] says): the whole schema is walked on every write, so none of
/// this is computed again per write.
#[derive(Debug)]
struct NodeRules {
    /// The node's own rules, compiled; None when it has none.
    compiled: Option<CompiledSchema>,
    /// Whether the node or a node below it has a rule at all.
    any: bool,
    /// Whether a rule of the node or below compares with `oldSelf`.
    old_self: bool,
    /// What of `self` the node's own rules read ([`fields_read`]): only that is
    /// converted to CEL. A root rule on `self.metadata.name` then converts the name, not
    /// the whole object with its status and managed fields, on every status write.
    /// None: the whole value.
    reads: Option<Reads>,
}

type CelCache = Mutex<HashMap<usize, Arc<NodeRules>>>;

fn node_rules(s: &Value, cache: &CelCache) -> Arc<NodeRules> {
    let key = s as *const Value as usize;
    if let Some(n) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return n.clone();
    }
    let rules = own_rules(s);
    let n = Arc::new(NodeRules {
        compiled: rules.map(|_| compile_node(s)),
        any: has_any_rules(s),
        old_self: mentions_old_self(s),
        reads: rules.and_then(|r| fields_read(r)),
    });
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, n.clone());
    n
}

/// What of a value a node's rules read: all of it, or some of its fields (each read
/// in part or whole).
#[derive(Debug)]
enum Reads {
    Whole,
    Fields(BTreeMap<String, Reads>),
}

impl Reads {
    /// Adds the read of `path` (`["metadata", "name"]` for `self.metadata.name`).
    fn add(&mut self, path: &[String]) {
        let Reads::Fields(fields) = self else {
            return;
        };
        match path.split_first() {
            None => *self = Reads::Whole,
            Some((first, rest)) => fields
                .entry(first.clone())
                .or_insert_with(|| Reads::Fields(BTreeMap::new()))
                .add(rest),
        }
    }

    /// The part of `v` read: objects keep only the fields read, anything else is whole.
    fn cut(&self, v: &Value) -> Value {
        match (self, v) {
            (Reads::Fields(fields), Value::Object(map)) => Value::Object(
                fields
                    .iter()
                    .filter_map(|(k, r)| map.get(k).map(|x| (k.clone(), r.cut(x))))
                    .collect(),
            ),
            _ => v.clone(),
        }
    }
}

/// What of `self` `rules` read, if every `self` in their expressions (rules and message
/// expressions) starts a chain of plain field selections, as in
/// `self.metadata.name.size()` (reads `metadata.name`; a name followed by `(` is a
/// method); None if any is used otherwise (`self` alone, an escaped name such as
/// `self.__dash__x`), or a rule is a transition rule. A chain ending in an index
/// (`self.a[0]`) reads all of `a`. Over-approximating is safe (a `self.x` inside a
/// string literal keeps `x`); missing a read is not, so anything unusual reads the
/// whole value.
fn fields_read(rules: &[Value]) -> Option<Reads> {
    let mut out = Reads::Fields(BTreeMap::new());
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    for r in rules {
        for key in ["rule", "messageExpression"] {
            let Some(expr) = r.get(key).and_then(Value::as_str) else {
                continue;
            };
            if expr.contains("oldSelf") {
                return None;
            }
            let b = expr.as_bytes();
            let mut from = 0;
            while let Some(at) = expr[from..].find("self").map(|i| i + from) {
                from = at + 4;
                if (at > 0 && ident(b[at - 1])) || b.get(from).copied().is_some_and(ident) {
                    continue;
                }
                let mut path = Vec::new();
                let mut i = from;
                while b.get(i) == Some(&b'.') {
                    let len = b[i + 1..].iter().take_while(|c| ident(**c)).count();
                    let name = &expr[i + 1..i + 1 + len];
                    if name.is_empty() || name.contains("__") {
                        return None;
                    }
                    i += 1 + len;
                    if b.get(i) == Some(&b'(') {
                        break; // a method of what the chain selected so far
                    }
                    path.push(name.to_string());
                }
                if path.is_empty() {
                    return None;
                }
                out.add(&path);
            }
        }
    }
    Some(out)
}

fn validate_cached(
    schema: &Value,
    obj: &Value,
    old: Option<&Value>,
    cache: &CelCache,
) -> Vec<FieldError> {
    let mut e = Errs::default();
    validate_node(schema, obj, "", &mut e);
    let mut errs = e.schema;
    errs.extend(e.embedded);
    errs.extend(e.lists);
    if !node_rules(schema, cache).any {
        return errs;
    }
    let blocking = errs.iter().any(|e| {
        matches!(
            e.reason,
            REASON_NOT_SUPPORTED
                | REASON_REQUIRED
                | REASON_TOO_LONG
                | REASON_TOO_MANY
                | REASON_TYPE_INVALID
        )
    });
    if blocking {
        errs.push(FieldError::new(
            CEL_SKIPPED_FIELD,
            REASON_INVALID,
            CEL_SKIPPED_MESSAGE.to_string(),
        ));
        return errs;
    }
    cel_node(schema, obj, old, "", &mut errs, cache);
    errs
}

fn validate_node(s: &Value, v: &Value, path: &str, e: &mut Errs) {
    let int_or_string = flag(s, INT_OR_STRING);
    let ty = type_of(s);
    if v.is_null() {
        if nullable(s) {
            return;
        }
        if int_or_string {
            e.schema
                .push(FieldError::type_invalid(path, "null", "integer,string"));
        } else if !ty.is_empty() {
            e.schema.push(FieldError::type_invalid(path, "null", ty));
        }
        return;
    }
    if int_or_string {
        let ok = match v {
            Value::String(_) => true,
            Value::Number(n) => is_whole(n),
            _ => false,
        };
        if !ok {
            e.schema.push(FieldError::type_invalid(
                path,
                data_type(v),
                "integer,string",
            ));
            return;
        }
    } else if !ty.is_empty() && !type_matches(ty, v) {
        e.schema
            .push(FieldError::type_invalid(path, data_type(v), ty));
        return;
    }

    validate_junctors(s, v, path, e);

    match v {
        Value::String(st) => {
            validate_string(s, st, v, path, e);
            validate_format(s, st, path, e);
        }
        Value::Number(n) => validate_number(s, n, v, path, e),
        Value::Array(items) => validate_array(s, items, path, e),
        _ => {}
    }

    if let Some(allowed) = s.get("enum").and_then(Value::as_array)
        && !allowed.iter().any(|a| json_eq(a, v))
    {
        let quoted: Vec<String> = allowed
            .iter()
            .map(|a| match a {
                Value::String(s) => go_quote(s),
                other => go_quote(&serde_json::to_string(other).unwrap_or_default()),
            })
            .collect();
        let head = format!("Unsupported value: {}", render(v));
        let detail = if quoted.is_empty() {
            String::new()
        } else {
            format!("supported values: {}", quoted.join(", "))
        };
        e.schema.push(FieldError::new(
            path,
            REASON_NOT_SUPPORTED,
            with_detail(&head, &detail),
        ));
    }

    if let Value::Object(map) = v {
        validate_object(s, map, path, e);
    }
}

/// allOf / anyOf / oneOf / not, evaluated against the same value and path.
fn validate_junctors(s: &Value, v: &Value, path: &str, e: &mut Errs) {
    let rendered = render_kind(v);
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        for branch in all {
            validate_node(branch, v, path, e);
        }
    }
    if let Some(any) = s.get("anyOf").and_then(Value::as_array)
        && !any.is_empty()
    {
        let results: Vec<Errs> = any.iter().map(|b| branch_errors(b, v, path)).collect();
        if !results.iter().any(Errs::is_empty) {
            e.schema.push(FieldError::invalid(
                path,
                &rendered,
                &format!("{path} must validate at least one schema (anyOf)"),
            ));
            if let Some(best) = results.into_iter().min_by_key(Errs::len) {
                e.merge(best);
            }
        }
    }
    if let Some(one) = s.get("oneOf").and_then(Value::as_array)
        && !one.is_empty()
    {
        let results: Vec<Errs> = one.iter().map(|b| branch_errors(b, v, path)).collect();
        let valid = results.iter().filter(|r| r.is_empty()).count();
        if valid != 1 {
            let found = if valid == 0 {
                "Found none valid".to_string()
            } else {
                format!("Found {valid} valid alternatives")
            };
            e.schema.push(FieldError::invalid(
                path,
                &rendered,
                &format!("{path} must validate one and only one schema (oneOf). {found}"),
            ));
            if valid == 0
                && let Some(best) = results.into_iter().min_by_key(Errs::len)
            {
                e.merge(best);
            }
        }
    }
    if let Some(not) = s.get("not").filter(|n| n.is_object())
        && branch_errors(not, v, path).is_empty()
    {
        e.schema.push(FieldError::invalid(
            path,
            &rendered,
            &format!("{path} must not validate the schema (not)"),
        ));
    }
}

fn branch_errors(branch: &Value, v: &Value, path: &str) -> Errs {
    let mut e = Errs::default();
    validate_node(branch, v, path, &mut e);
    e
}

/// Scalars as themselves, composite values by their type name.
fn render_kind(v: &Value) -> String {
    match v {
        Value::Array(_) | Value::Object(_) => go_quote(data_type(v)),
        other => render(other),
    }
}

fn validate_string(s: &Value, st: &str, v: &Value, path: &str, e: &mut Errs) {
    let chars = st.chars().count() as u64;
    if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
        && chars > max
    {
        let unit = if max == 1 { "byte" } else { "bytes" };
        e.schema.push(FieldError::new(
            path,
            REASON_TOO_LONG,
            format!("Too long: may not be more than {max} {unit}"),
        ));
    }
    if let Some(min) = s.get("minLength").and_then(Value::as_u64)
        && chars < min
    {
        e.schema.push(FieldError::invalid(
            path,
            &render(v),
            &format!("{path} in body should be at least {min} chars long"),
        ));
    }
    if let Some(pattern) = s.get("pattern").and_then(Value::as_str) {
        match compile_pattern(pattern) {
            Ok(re) if re.is_match(st) => {}
            Ok(_) => e.schema.push(FieldError::invalid(
                path,
                &render(v),
                &format!("{path} in body should match '{pattern}'"),
            )),
            Err(err) => e.schema.push(FieldError::invalid(
                path,
                &render(v),
                &format!("{path} in body should match '{pattern}, but pattern is invalid: {err}'"),
            )),
        }
    }
}

/// String formats the server checks; unknown formats are ignored, as there.
fn format_ok(format: &str, st: &str) -> Option<bool> {
    const DATE_TIME: &str =
        r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})?$";
    const DATE: &str = r"^\d{4}-\d{2}-\d{2}$";
    const UUID: &str =
        r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$";
    const BYTE: &str = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$";
    const MAC: &str = r"^([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}$";
    const HOSTNAME: &str = r"^[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?)*\.?$";
    const EMAIL: &str = r"^[^@\s]+@[^@\s]+$";
    let matches = |re: &str| compile_pattern(re).is_ok_and(|re| re.is_match(st));
    Some(match format {
        "date-time" | "datetime" => matches(DATE_TIME),
        "date" => matches(DATE),
        "uuid" | "uuid3" | "uuid4" | "uuid5" => matches(UUID),
        "byte" => matches(BYTE),
        "mac" => matches(MAC),
        "hostname" => st.len() <= 255 && matches(HOSTNAME),
        "email" => matches(EMAIL),
        "ipv4" => st.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => st.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => st.split_once('/').is_some_and(|(ip, bits)| {
            let bits: Option<u8> = bits.parse().ok();
            match ip.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(_)) => bits.is_some_and(|b| b <= 32),
                Ok(std::net::IpAddr::V6(_)) => bits.is_some_and(|b| b <= 128),
                Err(_) => false,
            }
        }),
        _ => return None,
    })
}

fn validate_format(s: &Value, st: &str, path: &str, e: &mut Errs) {
    let Some(format) = s.get("format").and_then(Value::as_str) else {
        return;
    };
    if format_ok(format, st) == Some(false) {
        let q = go_quote(st);
        e.schema.push(FieldError::new(
            path,
            REASON_TYPE_INVALID,
            format!("Invalid value: {q}: {path} in body must be of type {format}: {q}"),
        ));
    }
}

fn fits_integer_format(n: &Number, format: &str) -> bool {
    let (lo, hi): (f64, f64) = match format {
        "int32" => (i32::MIN as f64, i32::MAX as f64),
        "uint32" => (0.0, u32::MAX as f64),
        "uint64" => {
            return n.as_u64().is_some()
                || n.as_f64().is_some_and(|f| {
                    f.fract() == 0.0 && (0.0..1.8446744073709552e19).contains(&f)
                });
        }
        _ => {
            return n.as_i64().is_some()
                || n.as_f64().is_some_and(|f| {
                    f.fract() == 0.0 && (-9.223372036854776e18..9.223372036854776e18).contains(&f)
                });
        }
    };
    match n.as_i64() {
        Some(i) => (lo..=hi).contains(&(i as f64)),
        None => n
            .as_f64()
            .is_some_and(|f| f.fract() == 0.0 && (lo..=hi).contains(&f)),
    }
}

fn validate_number(s: &Value, n: &Number, v: &Value, path: &str, e: &mut Errs) {
    let ty = type_of(s);
    let format = s.get("format").and_then(Value::as_str).unwrap_or("");
    let bad = render(v);
    let int = n.as_i64();
    let f = n.as_f64().unwrap_or(f64::NAN);

    // The type's capacity for the declared format (int32, int64, ...).
    let out_of_range = match ty {
        "integer" => !fits_integer_format(n, format),
        "number" if matches!(format, "float" | "float32") => f.abs() > f32::MAX as f64,
        _ => false,
    };
    if out_of_range {
        let detail = if format.is_empty() {
            format!("Checked value must be of type {ty} (default format) in {path}")
        } else {
            format!("Checked value must be of type {ty} with format {format} in {path}")
        };
        e.schema.push(FieldError::invalid(path, &bad, &detail));
    }

    if let Some(factor) = s.get("multipleOf").and_then(Value::as_f64) {
        match int {
            Some(i) if factor >= 1.0 && factor.fract() == 0.0 => {
                let m = factor as i64;
                if i % m != 0 {
                    e.schema.push(FieldError::invalid(
                        path,
                        &bad,
                        &format!("{path} in body should be a multiple of {m}"),
                    ));
                }
            }
            _ if factor <= 0.0 => e.schema.push(FieldError::invalid(
                path,
                &bad,
                &format!(
                    "factor MultipleOf declared for {path} must be positive: {}",
                    go_float(factor)
                ),
            )),
            _ => {
                let mult = if factor < 1.0 {
                    1.0 / factor * f
                } else {
                    f / factor
                };
                if (mult - mult.round()).abs() > 1e-9 * mult.abs().max(1.0) {
                    e.schema.push(FieldError::invalid(
                        path,
                        &bad,
                        &format!(
                            "{path} in body should be a multiple of {}",
                            go_float(factor)
                        ),
                    ));
                }
            }
        }
    }

    // Integer data is compared with the bound truncated to an integer and the
    // bound printed as one, as the server's validator does.
    if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
        let exclusive = flag(s, "exclusiveMaximum");
        let (over, shown) = match int {
            Some(i) => {
                let m = max as i64;
                (if exclusive { i >= m } else { i > m }, m.to_string())
            }
            None => (if exclusive { f >= max } else { f > max }, go_float(max)),
        };
        if over {
            let op = if exclusive {
                "less than"
            } else {
                "less than or equal to"
            };
            e.schema.push(FieldError::invalid(
                path,
                &bad,
                &format!("{path} in body should be {op} {shown}"),
            ));
        }
    }
    if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
        let exclusive = flag(s, "exclusiveMinimum");
        let (under, shown) = match int {
            Some(i) => {
                let m = min as i64;
                (if exclusive { i <= m } else { i < m }, m.to_string())
            }
            None => (if exclusive { f <= min } else { f < min }, go_float(min)),
        };
        if under {
            let op = if exclusive {
                "greater than"
            } else {
                "greater than or equal to"
            };
            e.schema.push(FieldError::invalid(
                path,
                &bad,
                &format!("{path} in body should be {op} {shown}"),
            ));
        }
    }
}

fn validate_array(s: &Value, items: &[Value], path: &str, e: &mut Errs) {
    if let Some(items_schema) = s.get("items").filter(|i| i.is_object()) {
        for (i, item) in items.iter().enumerate() {
            validate_node(items_schema, item, &index(path, i), e);
        }
    }
    let size = items.len();
    if let Some(min) = s.get("minItems").and_then(Value::as_u64)
        && (size as u64) < min
    {
        e.schema.push(FieldError::invalid(
            path,
            &size.to_string(),
            &format!("{path} in body should have at least {min} items"),
        ));
    }
    if let Some(max) = s.get("maxItems").and_then(Value::as_i64)
        && size as i64 > max
    {
        e.schema.push(FieldError::too_many(path, size, max));
    }
    if flag(s, "uniqueItems")
        && items
            .iter()
            .enumerate()
            .any(|(i, a)| items[..i].iter().any(|b| json_eq(a, b)))
    {
        e.schema.push(FieldError::invalid(
            path,
            "\"\"",
            &format!("{path} in body shouldn't contain duplicates"),
        ));
    }
    match s.get(LIST_TYPE).and_then(Value::as_str) {
        Some("set") => {
            for (i, a) in items.iter().enumerate() {
                if items[..i].iter().any(|b| json_eq(a, b)) {
                    e.lists
                        .push(FieldError::duplicate(&index(path, i), &render(a)));
                }
            }
        }
        Some("map") => validate_list_map(s, items, path, e),
        _ => {}
    }
}

fn list_map_keys(s: &Value) -> Vec<&str> {
    s.get(LIST_MAP_KEYS)
        .and_then(Value::as_array)
        .map(|keys| keys.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The key of a list-map item: its key fields (or their defaults), `None` for absent ones.
fn list_map_key(s: &Value, keys: &[&str], item: &Value) -> Vec<Option<Value>> {
    let item_props = s.get("items").and_then(properties);
    keys.iter()
        .map(|k| {
            item.get(*k)
                .filter(|v| !v.is_null())
                .or_else(|| {
                    item_props
                        .and_then(|p| p.get(*k))
                        .and_then(|p| p.get("default"))
                })
                .cloned()
        })
        .collect()
}

fn same_key(a: &[Option<Value>], b: &[Option<Value>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match (x, y) {
            (Some(x), Some(y)) => json_eq(x, y),
            (None, None) => true,
            _ => false,
        })
}

fn validate_list_map(s: &Value, items: &[Value], path: &str, e: &mut Errs) {
    let mut not_objects = false;
    for (i, item) in items.iter().enumerate() {
        if !item.is_object() && !item.is_null() {
            not_objects = true;
            e.lists.push(FieldError::invalid(
                &index(path, i),
                &render(item),
                "must be an object for an array of list-type map",
            ));
        }
    }
    let keys = list_map_keys(s);
    if not_objects || keys.is_empty() {
        return;
    }
    let item_keys: Vec<Vec<Option<Value>>> =
        items.iter().map(|it| list_map_key(s, &keys, it)).collect();
    for (i, k) in item_keys.iter().enumerate() {
        if item_keys[..i].iter().any(|prev| same_key(prev, k)) {
            let mut shown = Map::new();
            for (name, value) in keys.iter().zip(k) {
                shown.insert(name.to_string(), value.clone().unwrap_or(Value::Null));
            }
            e.lists.push(FieldError::duplicate(
                &index(path, i),
                &render(&Value::Object(shown)),
            ));
        }
    }
}

fn validate_object(s: &Value, map: &Map<String, Value>, path: &str, e: &mut Errs) {
    let count = map.len();
    // The server's validator stops at a property-count failure.
    if let Some(min) = s.get("minProperties").and_then(Value::as_u64)
        && (count as u64) < min
    {
        e.schema.push(FieldError::invalid(
            path,
            &count.to_string(),
            &format!("{path} in body should have at least {min} properties"),
        ));
        return;
    }
    if let Some(max) = s.get("maxProperties").and_then(Value::as_i64)
        && count as i64 > max
    {
        e.schema.push(FieldError::too_many(path, count, max));
        return;
    }

    let props = properties(s);
    if let Some(ap) = additional_schema(s) {
        for (k, cv) in map {
            if props.is_some_and(|p| p.contains_key(k)) {
                continue;
            }
            validate_node(ap, cv, &key(path, k), e);
        }
    }
    if let Some(props) = props {
        for (name, ps) in props {
            if let Some(cv) = map.get(name) {
                validate_node(ps, cv, &child(path, name), e);
            }
        }
    }
    if let Some(required) = s.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(name) {
                e.schema.push(FieldError::required(&child(path, name), ""));
            }
        }
    }
    if flag(s, EMBEDDED) {
        validate_embedded(map, path, e);
    }
}

/// An embedded object must say what it is: apiVersion and kind are required strings.
fn validate_embedded(map: &Map<String, Value>, path: &str, e: &mut Errs) {
    for field in ["apiVersion", "kind"] {
        let at = child(path, field);
        match map.get(field) {
            None => e
                .embedded
                .push(FieldError::required(&at, "must not be empty")),
            Some(Value::String(s)) if s.is_empty() => {
                e.embedded
                    .push(FieldError::invalid(&at, "\"\"", "must not be empty"))
            }
            Some(Value::String(_)) => {}
            Some(other) => {
                e.embedded
                    .push(FieldError::invalid(&at, &render(other), "must be a string"))
            }
        }
    }
}

// ---------------------------------------------------------------------------
// CEL
// ---------------------------------------------------------------------------

fn own_rules(s: &Value) -> Option<&Vec<Value>> {
    s.get(RULES)
        .and_then(Value::as_array)
        .filter(|r| !r.is_empty())
}

/// Child schemas: properties, items, additionalProperties and the junctor branches.
fn child_schemas(s: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    if let Some(props) = properties(s) {
        out.extend(props.values());
    }
    if let Some(items) = s.get("items").filter(|i| i.is_object()) {
        out.push(items);
    }
    if let Some(ap) = additional_schema(s) {
        out.push(ap);
    }
    for junctor in ["allOf", "anyOf", "oneOf"] {
        if let Some(branches) = s.get(junctor).and_then(Value::as_array) {
            out.extend(branches.iter());
        }
    }
    if let Some(not) = s.get("not").filter(|n| n.is_object()) {
        out.push(not);
    }
    out
}

fn has_any_rules(s: &Value) -> bool {
    own_rules(s).is_some() || child_schemas(s).into_iter().any(has_any_rules)
}

/// Whether a rule of `s` or of a schema below it is a transition rule (uses `oldSelf`).
fn mentions_old_self(s: &Value) -> bool {
    own_rules(s).into_iter().flatten().any(|r| {
        r.get("rule")
            .and_then(Value::as_str)
            .is_some_and(|r| r.contains("oldSelf"))
    }) || child_schemas(s).into_iter().any(mentions_old_self)
}

fn strip_rules(s: &mut Value) {
    let Some(obj) = s.as_object_mut() else {
        return;
    };
    obj.remove(RULES);
    for (k, v) in obj.iter_mut() {
        match k.as_str() {
            "properties" => {
                if let Some(props) = v.as_object_mut() {
                    props.values_mut().for_each(strip_rules);
                }
            }
            "items" | "additionalProperties" | "not" => strip_rules(v),
            "allOf" | "anyOf" | "oneOf" => {
                if let Some(branches) = v.as_array_mut() {
                    branches.iter_mut().for_each(strip_rules);
                }
            }
            _ => {}
        }
    }
}

/// The node's own rules, with the type information of its subtree (needed to
/// convert `self` to CEL) but without the rules of its descendants, so that
/// each rule is evaluated exactly once, here, with this module's paths and
/// old-value correlation.
fn compile_node(s: &Value) -> CompiledSchema {
    let mut shallow = s.clone();
    if let Some(obj) = shallow.as_object_mut() {
        let rules = obj.remove(RULES);
        strip_rules(&mut shallow);
        if let (Some(obj), Some(rules)) = (shallow.as_object_mut(), rules) {
            obj.insert(RULES.to_string(), rules);
        }
    }
    kube_cel::compile_schema(&shallow)
}

fn cel_node(
    s: &Value,
    v: &Value,
    old: Option<&Value>,
    path: &str,
    out: &mut Vec<FieldError>,
    cache: &CelCache,
) {
    if v.is_null() {
        return;
    }
    // A null old value cannot be correlated, so transition rules do not run.
    let old = old.filter(|o| !o.is_null());
    // Ratcheting, as the API server does it: a value an update leaves unchanged is not
    // validated again, unless a rule in it compares with `oldSelf`.
    let node = node_rules(s, cache);
    if !node.any || (old == Some(v) && !node.old_self) {
        return;
    }
    if let Some(compiled) = &node.compiled {
        let read;
        let (v, old) = match &node.reads {
            Some(reads) => {
                read = reads.cut(v);
                // `reads` is only set without transition rules, which alone read `old`.
                (&read, None)
            }
            None => (v, old),
        };
        if let Err(errors) = kube_cel::validate_compiled(compiled, v, old) {
            out.extend(errors.into_iter().map(|err| cel_error(s, path, err)));
        }
    }
    match v {
        Value::Object(map) => {
            let props = properties(s);
            if let Some(props) = props {
                for (name, ps) in props {
                    if let Some(cv) = map.get(name) {
                        let co = old.and_then(|o| o.get(name));
                        cel_node(ps, cv, co, &child(path, name), out, cache);
                    }
                }
            }
            if let Some(ap) = additional_schema(s) {
                for (k, cv) in map {
                    if props.is_some_and(|p| p.contains_key(k)) {
                        continue;
                    }
                    let co = old.and_then(|o| o.get(k));
                    cel_node(ap, cv, co, &key(path, k), out, cache);
                }
            }
        }
        Value::Array(items) => {
            let Some(items_schema) = s.get("items").filter(|i| i.is_object()) else {
                return;
            };
            // Only list-type map items have an identity across updates (their
            // keys); items of sets and atomic lists have no old value.
            let keys = list_map_keys(s);
            let correlate =
                s.get(LIST_TYPE).and_then(Value::as_str) == Some("map") && !keys.is_empty();
            let old_items: Vec<(Vec<Option<Value>>, &Value)> = old
                .and_then(Value::as_array)
                .filter(|_| correlate)
                .map(|olds| {
                    olds.iter()
                        .map(|o| (list_map_key(s, &keys, o), o))
                        .collect()
                })
                .unwrap_or_default();
            for (i, item) in items.iter().enumerate() {
                let co = if old_items.is_empty() {
                    None
                } else {
                    let k = list_map_key(s, &keys, item);
                    old_items
                        .iter()
                        .find(|(ok, _)| same_key(ok, &k))
                        .map(|(_, o)| *o)
                };
                cel_node(items_schema, item, co, &index(path, i), out, cache);
            }
        }
        _ => {}
    }
}

/// Joins a rule's location with its `fieldPath` (`.a.b`, `.list[0]`, `.map['k']`).
fn rule_field(path: &str, field_path: &str) -> String {
    if field_path.is_empty() {
        return path.to_string();
    }
    let normalized = field_path.replace("['", "[").replace("']", "]");
    let rel = normalized.strip_prefix('.').unwrap_or(&normalized);
    if path.is_empty() {
        rel.to_string()
    } else if rel.starts_with('[') {
        format!("{path}{rel}")
    } else {
        format!("{path}.{rel}")
    }
}

fn cel_error(s: &Value, path: &str, err: kube_cel::ValidationError) -> FieldError {
    let field = rule_field(path, &err.field_path);
    // The server reports the schema type of the rule's node as the bad value.
    let value = go_quote(type_of(s));
    match err.kind {
        ErrorKind::ValidationFailure => match err.reason.as_deref() {
            Some(REASON_FORBIDDEN) => FieldError::new(
                &field,
                REASON_FORBIDDEN,
                with_detail("Forbidden", &err.message),
            ),
            Some(REASON_REQUIRED) => FieldError::required(&field, &err.message),
            Some(REASON_DUPLICATE) => FieldError::duplicate(&field, &value),
            _ => FieldError::invalid(&field, &value, &err.message),
        },
        ErrorKind::EvaluationError => {
            let cause = err
                .message
                .strip_prefix("rule evaluation error: ")
                .unwrap_or(&err.message);
            FieldError::invalid(
                &field,
                &value,
                &format!("{cause} evaluating rule: {}", err.rule.trim()),
            )
        }
        _ => FieldError::invalid(&field, &value, &err.message),
    }
}

// ---------------------------------------------------------------------------
// Structural checks on the CRD schema
// ---------------------------------------------------------------------------

/// Checks a CRD's openAPIV3Schema is structural enough to serve (every property has a type unless
/// int-or-string/preserve-unknown-fields; CEL rules compile) and returns messages for problems.
///
/// Messages are `<schema path>: <error body>` with the schema path starting at
/// `openAPIV3Schema`, e.g. `openAPIV3Schema.properties[spec].properties[x].type: Required value: ...`;
/// the caller prefixes the location of the schema in the CRD.
pub fn check_structural(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let root = "openAPIV3Schema";
    if !schema.is_object() {
        out.push(format!("{root}: Required value: must be an object schema"));
        return out;
    }
    match type_of(schema) {
        "object" => {}
        "" => out.push(format!(
            "{root}.type: Required value: must not be empty at the root"
        )),
        other => out.push(format!(
            "{root}.type: Invalid value: {}: must be object at the root",
            go_quote(other)
        )),
    }
    check_node(schema, root, "", None, &mut out);
    out
}

/// `uncorrelatable` names the nearest enclosing list whose items have no
/// identity across updates; transition rules are not allowed beneath it.
fn check_node(
    s: &Value,
    path: &str,
    context: &str,
    uncorrelatable: Option<&str>,
    out: &mut Vec<String>,
) {
    let ty = type_of(s);
    let int_or_string = flag(s, INT_OR_STRING);
    let preserve = flag(s, PRESERVE);

    if !context.is_empty() && ty.is_empty() && !int_or_string && !preserve {
        out.push(format!(
            "{path}.type: Required value: must not be empty for specified {context}"
        ));
    }
    if !ty.is_empty()
        && !matches!(
            ty,
            "array" | "boolean" | "integer" | "number" | "object" | "string"
        )
    {
        out.push(format!(
            "{path}.type: Unsupported value: {}: supported values: \"array\", \"boolean\", \"integer\", \"number\", \"object\", \"string\"",
            go_quote(ty)
        ));
    }
    if int_or_string && !ty.is_empty() {
        out.push(format!(
            "{path}.type: Invalid value: {}: must be empty if x-kubernetes-int-or-string is true",
            go_quote(ty)
        ));
    }
    if let Some(p) = s.get(PRESERVE)
        && p != &Value::Bool(true)
    {
        out.push(format!(
            "{path}.{PRESERVE}: Invalid value: {}: must be true or undefined",
            render(p)
        ));
    }
    if s.get("properties").is_some() && s.get("additionalProperties").is_some() {
        out.push(format!(
            "{path}.additionalProperties: Forbidden: additionalProperties and properties are mutual exclusive"
        ));
    }
    if s.get("additionalProperties") == Some(&Value::Bool(false)) {
        out.push(format!(
            "{path}.additionalProperties: Forbidden: must not be false"
        ));
    }
    if ty == "array" && s.get("items").is_none() {
        out.push(format!("{path}.items: Required value: must be specified"));
    }
    if let Some(pattern) = s.get("pattern").and_then(Value::as_str)
        && let Err(err) = compile_pattern(pattern)
    {
        out.push(format!(
            "{path}.pattern: Invalid value: {}: must be a valid regular expression, but isn't: {err}",
            go_quote(pattern)
        ));
    }
    check_list_type(s, path, out);
    check_default(s, path, out);
    check_rules(s, path, uncorrelatable, out);

    if let Some(props) = properties(s) {
        for (name, ps) in props {
            check_node(
                ps,
                &key(&child(path, "properties"), name),
                "object fields",
                uncorrelatable,
                out,
            );
        }
    }
    if let Some(ap) = additional_schema(s) {
        check_node(
            ap,
            &child(path, "additionalProperties"),
            "object fields",
            uncorrelatable,
            out,
        );
    }
    if let Some(items) = s.get("items").filter(|i| i.is_object()) {
        let is_map = s.get(LIST_TYPE).and_then(Value::as_str) == Some("map");
        let beneath = if is_map { uncorrelatable } else { Some(path) };
        check_node(items, &child(path, "items"), "array items", beneath, out);
    }
    for junctor in ["allOf", "anyOf", "oneOf"] {
        if let Some(branches) = s.get(junctor).and_then(Value::as_array) {
            for (i, b) in branches.iter().enumerate() {
                check_value_validation(b, &index(&child(path, junctor), i), out);
            }
        }
    }
    if let Some(not) = s.get("not").filter(|n| n.is_object()) {
        check_value_validation(not, &child(path, "not"), out);
    }
}

/// Junctor branches only constrain values: their patterns must still compile,
/// and they may not carry CEL rules.
fn check_value_validation(s: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(pattern) = s.get("pattern").and_then(Value::as_str)
        && let Err(err) = compile_pattern(pattern)
    {
        out.push(format!(
            "{path}.pattern: Invalid value: {}: must be a valid regular expression, but isn't: {err}",
            go_quote(pattern)
        ));
    }
    if s.get(RULES).is_some() {
        out.push(format!(
            "{path}.{RULES}: Forbidden: must be empty to be structural"
        ));
    }
    for sub in child_schemas(s) {
        check_value_validation(sub, path, out);
    }
}

fn check_list_type(s: &Value, path: &str, out: &mut Vec<String>) {
    let list_type = s.get(LIST_TYPE).and_then(Value::as_str);
    if let Some(lt) = list_type {
        if !matches!(lt, "atomic" | "set" | "map") {
            out.push(format!(
                "{path}.{LIST_TYPE}: Unsupported value: {}: supported values: \"atomic\", \"set\", \"map\"",
                go_quote(lt)
            ));
        }
        if type_of(s) != "array" {
            out.push(format!(
                "{path}.{LIST_TYPE}: Invalid value: {}: must only be used if type is array",
                go_quote(lt)
            ));
        }
    }
    let keys = list_map_keys(s);
    if list_type != Some("map") {
        if s.get(LIST_MAP_KEYS).is_some() {
            out.push(format!(
                "{path}.{LIST_MAP_KEYS}: Forbidden: must not be set if {LIST_TYPE} is not map"
            ));
        }
        return;
    }
    if keys.is_empty() {
        out.push(format!(
            "{path}.{LIST_MAP_KEYS}: Required value: must not be empty if {LIST_TYPE} is map"
        ));
        return;
    }
    let items = s.get("items");
    if items.map(type_of) != Some("object") {
        out.push(format!(
            "{path}.items.type: Invalid value: {}: must be object if {LIST_TYPE} is map",
            go_quote(items.map(type_of).unwrap_or(""))
        ));
        return;
    }
    let item_props = items.and_then(properties);
    let required: Vec<&str> = items
        .and_then(|i| i.get("required"))
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (i, k) in keys.iter().enumerate() {
        let at = format!("{path}.{LIST_MAP_KEYS}[{i}]");
        match item_props.and_then(|p| p.get(*k)) {
            None => out.push(format!(
                "{at}: Invalid value: {}: must be a property of items",
                go_quote(k)
            )),
            Some(ps) => {
                if !matches!(type_of(ps), "string" | "integer" | "number" | "boolean")
                    && !flag(ps, INT_OR_STRING)
                {
                    out.push(format!(
                        "{at}: Invalid value: {}: must be a scalar property of items",
                        go_quote(k)
                    ));
                }
                if !required.contains(k) && ps.get("default").is_none() {
                    out.push(format!(
                        "{path}.items.properties[{k}]: Invalid value: {}: must be required or have a default, as it is a map key",
                        go_quote(k)
                    ));
                }
            }
        }
    }
}

/// A default must survive pruning unchanged and pass the node's own validation.
fn check_default(s: &Value, path: &str, out: &mut Vec<String>) {
    let Some(default) = s.get("default") else {
        return;
    };
    // The server prunes and defaults a default before validating it.
    let mut pruned = default.clone();
    let dropped = prune_inner(s, &mut pruned);
    default_node(s, &mut pruned);
    for d in dropped {
        out.push(format!(
            "{path}.default: Invalid value: {}: unknown field {}",
            go_quote("object"),
            go_quote(&d)
        ));
    }
    let mut e = Errs::default();
    validate_node(s, &pruned, "default", &mut e);
    for err in e.schema.into_iter().chain(e.embedded).chain(e.lists) {
        out.push(format!("{path}.{}", err.to_string_with_field()));
    }
}

fn prune_inner(s: &Value, v: &mut Value) -> Vec<String> {
    let mut dropped = Vec::new();
    prune_node(s, v, "", false, &mut dropped);
    dropped
}

fn check_rules(s: &Value, path: &str, uncorrelatable: Option<&str>, out: &mut Vec<String>) {
    let Some(rules) = s.get(RULES) else {
        return;
    };
    let Some(rules) = rules.as_array() else {
        out.push(format!(
            "{path}.{RULES}: Invalid value: {}: must be a list",
            render(rules)
        ));
        return;
    };
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("{path}.{RULES}[{i}]");
        let Some(text) = rule.get("rule").and_then(Value::as_str) else {
            out.push(format!("{at}.rule: Required value"));
            continue;
        };
        if text.trim().is_empty() {
            out.push(format!("{at}.rule: Required value"));
            continue;
        }
        let one = serde_json::json!({ RULES: [rule] });
        let compiled = kube_cel::compile_schema(&one);
        for result in &compiled.validations {
            match result {
                Err(kube_cel::CompilationError::MessageExpressionParse {
                    message_expression,
                    source,
                    ..
                }) => {
                    out.push(format!(
                        "{at}.messageExpression: Invalid value: {}: messageExpression compilation failed: {source}",
                        go_quote(message_expression)
                    ));
                }
                Err(kube_cel::CompilationError::Parse { source, .. }) => out.push(format!(
                    "{at}.rule: Invalid value: {}: compilation failed: {source}",
                    go_quote(text)
                )),
                Err(err) => out.push(format!("{at}: Invalid value: {}: {err}", go_quote(text))),
                Ok(cr) => {
                    let optional =
                        rule.get("optionalOldSelf").and_then(Value::as_bool) == Some(true);
                    if cr.is_transition_rule
                        && !optional
                        && let Some(list) = uncorrelatable
                    {
                        out.push(format!(
                            "{at}.rule: Invalid value: {}: oldSelf cannot be used on the uncorrelatable portion of the schema within {list}",
                            go_quote(text)
                        ));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
