//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`), as kubectl and Helm send
//! them for built-in kinds, transcoded into the JSON the rest of the server works on.
//!
//! The wire format is Kubernetes' envelope: the magic `k8s\0`, then a `runtime.Unknown`
//! message whose `typeMeta` names the apiVersion and kind and whose `raw` holds the object.
//! The field table (`proto/schema.json`) is generated from the k8s-pb and k8s-openapi
//! crates by the `proto_schema` test, which also fails when it is out of date.

use std::collections::HashMap;
use std::sync::OnceLock;

use base64::Engine;
use serde_json::{Map, Value, json};

const MAGIC: &[u8] = b"k8s\0";
const META: &str = "apimachinery.pkg.apis.meta.v1";

/// Media type of Kubernetes protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

#[derive(Debug)]
enum Label {
    Optional,
    Repeated,
    Map,
    /// A Go struct embedded in its parent: a nested message on the wire, its fields
    /// inline in JSON.
    Inline,
}

#[derive(Debug)]
struct FieldDef {
    json: String,
    label: Label,
    /// A scalar name, or a message name starting with '.'.
    ty: String,
}

struct Schema {
    api_versions: HashMap<String, String>,
    messages: HashMap<String, HashMap<u32, FieldDef>>,
}

fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let raw: Value =
            serde_json::from_str(include_str!("proto/schema.json")).expect("proto/schema.json");
        let api_versions = raw["apiVersions"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        let messages = raw["messages"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(name, fields)| {
                let fields = fields
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|f| {
                        let label = match f[2].as_str() {
                            Some("r") => Label::Repeated,
                            Some("m") => Label::Map,
                            Some("i") => Label::Inline,
                            _ => Label::Optional,
                        };
                        (
                            f[0].as_u64().unwrap_or_default() as u32,
                            FieldDef {
                                json: f[1].as_str().unwrap_or_default().to_string(),
                                label,
                                ty: f[3].as_str().unwrap_or_default().to_string(),
                            },
                        )
                    })
                    .collect();
                (name.clone(), fields)
            })
            .collect();
        Schema {
            api_versions,
            messages,
        }
    })
}

/// Whether a Content-Type header names the protobuf encoding.
pub fn is_protobuf(content_type: &str) -> bool {
    content_type.split(';').next().unwrap_or_default().trim() == MEDIA_TYPE
}

/// Decodes a protobuf request body into the object's JSON form, apiVersion and kind included.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or("protobuf body does not start with the Kubernetes magic number")?;
    let envelope = fields(rest)?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (tag, value) in envelope {
        match (tag, value) {
            (1, Wire::Bytes(tm)) => {
                for (t, v) in fields(tm)? {
                    if let Wire::Bytes(s) = v {
                        let s = String::from_utf8_lossy(s).into_owned();
                        match t {
                            1 => api_version = s,
                            2 => kind = s,
                            _ => {}
                        }
                    }
                }
            }
            (2, Wire::Bytes(r)) => raw = r,
            _ => {}
        }
    }
    if kind.is_empty() {
        return Err("protobuf body has no kind in its typeMeta".into());
    }
    let s = schema();
    let module = s
        .api_versions
        .get(&api_version)
        .ok_or_else(|| format!("no protobuf schema for apiVersion {api_version:?}"))?;
    // Options and Status (DeleteOptions...) are meta/v1 kinds sent under the apiVersion
    // of the resource they go to.
    let message = [module.as_str(), META]
        .iter()
        .map(|m| format!("{m}.{kind}"))
        .find(|m| s.messages.contains_key(m))
        .ok_or_else(|| format!("no protobuf schema for kind {kind:?} in {api_version:?}"))?;
    let mut obj = message_json(&message, raw)?;
    if let Value::Object(map) = &mut obj {
        // apiVersion and kind first, as in every JSON object the server writes.
        let mut out = Map::new();
        out.insert("apiVersion".into(), json!(api_version));
        out.insert("kind".into(), json!(kind));
        out.extend(std::mem::take(map));
        obj = Value::Object(out);
    }
    Ok(obj)
}

#[derive(Debug, Clone, Copy)]
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(out);
        }
    }
    Err("varint longer than 10 bytes".into())
}

/// The (tag, value) pairs of one message, in wire order.
fn fields(buf: &[u8]) -> Result<Vec<(u32, Wire<'_>)>, String> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let tag = (key >> 3) as u32;
        let value = match key & 7 {
            0 => Wire::Varint(varint(buf, &mut pos)?),
            1 => {
                let b = buf.get(pos..pos + 8).ok_or("truncated fixed64")?;
                pos += 8;
                Wire::Fixed64(u64::from_le_bytes(b.try_into().unwrap()))
            }
            2 => {
                let len = varint(buf, &mut pos)? as usize;
                let b = buf
                    .get(pos..pos.checked_add(len).ok_or("length overflow")?)
                    .ok_or("truncated length-delimited field")?;
                pos += len;
                Wire::Bytes(b)
            }
            5 => {
                let b = buf.get(pos..pos + 4).ok_or("truncated fixed32")?;
                pos += 4;
                Wire::Fixed32(u32::from_le_bytes(b.try_into().unwrap()))
            }
            w => return Err(format!("unsupported wire type {w} for field {tag}")),
        };
        out.push((tag, value));
    }
    Ok(out)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn scalar(ty: &str, w: Wire<'_>) -> Result<Value, String> {
    Ok(match (ty, w) {
        ("string", Wire::Bytes(b)) => json!(String::from_utf8_lossy(b)),
        ("bytes", Wire::Bytes(b)) => json!(b64(b)),
        ("bool", Wire::Varint(v)) => json!(v != 0),
        ("int32", Wire::Varint(v)) => json!(v as i64 as i32),
        ("int64", Wire::Varint(v)) => json!(v as i64),
        ("double", Wire::Fixed64(v)) => json!(f64::from_bits(v)),
        ("float", Wire::Fixed32(v)) => json!(f32::from_bits(v)),
        (ty, w) => return Err(format!("a {ty} field arrived as {w:?}")),
    })
}

/// Values of a repeated scalar field, packed or not.
fn repeated_scalars(ty: &str, w: Wire<'_>) -> Result<Vec<Value>, String> {
    match (ty, w) {
        ("int32" | "int64" | "bool", Wire::Bytes(b)) => {
            let mut pos = 0;
            let mut out = Vec::new();
            while pos < b.len() {
                out.push(scalar(ty, Wire::Varint(varint(b, &mut pos)?))?);
            }
            Ok(out)
        }
        _ => Ok(vec![scalar(ty, w)?]),
    }
}

fn value_of(ty: &str, w: Wire<'_>) -> Result<Value, String> {
    match ty.strip_prefix('.') {
        Some(message) => match w {
            Wire::Bytes(b) => message_json(message, b),
            other => Err(format!("message {message} arrived as {other:?}")),
        },
        None => scalar(ty, w),
    }
}

/// RFC 3339 from seconds and nanoseconds, as Kubernetes writes Time (seconds) and
/// MicroTime (microseconds).
fn timestamp(seconds: i64, nanos: i64, micro: bool) -> Value {
    // Go's zero time.Time marshals as null.
    if seconds == 0 && nanos == 0 {
        return Value::Null;
    }
    let Some(t) = chrono::DateTime::from_timestamp(seconds, nanos.clamp(0, 999_999_999) as u32)
    else {
        return Value::Null;
    };
    let format = if micro {
        chrono::SecondsFormat::Micros
    } else {
        chrono::SecondsFormat::Secs
    };
    json!(t.to_rfc3339_opts(format, true))
}

/// Go's time.Duration text, e.g. `1h2m3s` or `1.5s`.
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    let (h, rem) = (n / 3_600_000_000_000, n % 3_600_000_000_000);
    let (m, rem) = (rem / 60_000_000_000, rem % 60_000_000_000);
    let (s, frac) = (rem / 1_000_000_000, rem % 1_000_000_000);
    let mut out = String::from(sign);
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if frac == 0 {
        out.push_str(&format!("{s}s"));
    } else {
        let f = format!("{frac:09}");
        out.push_str(&format!("{s}.{}s", f.trim_end_matches('0')));
    }
    out
}

fn raw_json(bytes: &[u8]) -> Result<Value, String> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(bytes).map_err(|e| format!("embedded JSON: {e}"))
}

/// One message as Kubernetes' JSON form: the types whose JSON is not a plain object are
/// written the way their Go types marshal.
fn message_json(message: &str, buf: &[u8]) -> Result<Value, String> {
    let name = message.rsplit('.').next().unwrap_or_default();
    let module = message.rsplit_once('.').map(|(m, _)| m).unwrap_or_default();
    let plain = plain_object(message, buf)?;
    let get = |k: &str| plain.get(k).cloned().unwrap_or(Value::Null);
    let int = |k: &str| plain.get(k).and_then(Value::as_i64).unwrap_or(0);
    Ok(match (module, name) {
        ("apimachinery.pkg.apis.meta.v1", "Time") => timestamp(int("seconds"), int("nanos"), false),
        ("apimachinery.pkg.apis.meta.v1", "MicroTime") => {
            timestamp(int("seconds"), int("nanos"), true)
        }
        ("apimachinery.pkg.apis.meta.v1", "Duration") => json!(go_duration(int("duration"))),
        ("apimachinery.pkg.api.resource", "Quantity") => get("string"),
        ("apimachinery.pkg.util.intstr", "IntOrString") => {
            if int("type") == 1 {
                get("strVal")
            } else {
                json!(int("intVal"))
            }
        }
        ("apimachinery.pkg.runtime", "RawExtension")
        | ("apimachinery.pkg.apis.meta.v1", "FieldsV1")
        | ("apiextensions_apiserver.pkg.apis.apiextensions.v1", "Json") => raw_json(
            &base64::engine::general_purpose::STANDARD
                .decode(plain.get("raw").and_then(Value::as_str).unwrap_or_default())
                .unwrap_or_default(),
        )?,
        ("apiextensions_apiserver.pkg.apis.apiextensions.v1", "JsonSchemaPropsOrArray") => {
            match plain.get("schema") {
                Some(s) => s.clone(),
                None => get("jSONSchemas"),
            }
        }
        ("apiextensions_apiserver.pkg.apis.apiextensions.v1", "JsonSchemaPropsOrBool") => {
            match plain.get("schema") {
                Some(s) => s.clone(),
                None => get("allows"),
            }
        }
        ("apiextensions_apiserver.pkg.apis.apiextensions.v1", "JsonSchemaPropsOrStringArray") => {
            match plain.get("schema") {
                Some(s) => s.clone(),
                None => get("property"),
            }
        }
        // Named string slices (e.g. `ExtraValue []string`) are a message with `items`.
        (_, "ExtraValue") => plain.get("items").cloned().unwrap_or(json!([])),
        _ => Value::Object(plain),
    })
}

/// Fields whose Go type is a pointer, so that an explicit zero (`replicas: 0`,
/// `automountServiceAccountToken: false`) means something. Go's protobuf marshaller writes
/// every non-pointer field, zero or not, and its JSON omits them (`omitempty`): other
/// zero scalars are left out, as the real server's JSON would have them.
const MEANINGFUL_ZEROS: &[&str] = &[
    "replicas",
    "automountServiceAccountToken",
    "immutable",
    "readOnlyRootFilesystem",
    "runAsNonRoot",
    "allowPrivilegeEscalation",
    "privileged",
    "runAsUser",
    "runAsGroup",
    "fsGroup",
    "terminationGracePeriodSeconds",
    "activeDeadlineSeconds",
    "backoffLimit",
    "parallelism",
    "completions",
    "suspend",
    "ttlSecondsAfterFinished",
    "expirationSeconds",
    "optional",
    "defaultMode",
    "revisionHistoryLimit",
    "progressDeadlineSeconds",
    "allowed",
    "denied",
    "authenticated",
];

fn is_unset(key: &str, v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Bool(false) => !MEANINGFUL_ZEROS.contains(&key),
        Value::Number(n) => n.as_f64() == Some(0.0) && !MEANINGFUL_ZEROS.contains(&key),
        _ => false,
    }
}

fn plain_object(message: &str, buf: &[u8]) -> Result<Map<String, Value>, String> {
    let mut out = wire_object(message, buf)?;
    out.retain(|k, v| !is_unset(k, v));
    Ok(out)
}

fn wire_object(message: &str, buf: &[u8]) -> Result<Map<String, Value>, String> {
    let defs = schema()
        .messages
        .get(message)
        .ok_or_else(|| format!("no protobuf schema for message {message}"))?;
    let mut out = Map::new();
    for (tag, w) in fields(buf)? {
        // Unknown fields are skipped, as a decoder of an older schema does.
        let Some(def) = defs.get(&tag) else { continue };
        match def.label {
            Label::Optional => {
                out.insert(def.json.clone(), value_of(&def.ty, w)?);
            }
            Label::Inline => {
                if let Value::Object(inner) = value_of(&def.ty, w)? {
                    out.extend(inner);
                }
            }
            Label::Repeated => {
                let entry = out
                    .entry(def.json.clone())
                    .or_insert_with(|| Value::Array(Vec::new()));
                let items = if def.ty.starts_with('.') {
                    vec![value_of(&def.ty, w)?]
                } else {
                    repeated_scalars(&def.ty, w)?
                };
                if let Value::Array(a) = entry {
                    a.extend(items);
                }
            }
            Label::Map => {
                let Wire::Bytes(entry_buf) = w else {
                    return Err(format!("map entry {} is not length-delimited", def.json));
                };
                let mut key = String::new();
                let mut value = match def.ty.as_str() {
                    "string" | "bytes" => json!(""),
                    _ => json!({}),
                };
                for (t, v) in fields(entry_buf)? {
                    match t {
                        1 => key = scalar("string", v)?.as_str().unwrap_or_default().into(),
                        2 => value = value_of(&def.ty, v)?,
                        _ => {}
                    }
                }
                let entry = out
                    .entry(def.json.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(m) = entry {
                    m.insert(key, value);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(3_723_000_000_000), "1h2m3s");
        assert_eq!(go_duration(60_000_000_000), "1m0s");
        assert_eq!(go_duration(-2_000_000_000), "-2s");
    }

    #[test]
    fn refuses_bodies_without_the_magic() {
        assert!(decode(b"{}").unwrap_err().contains("magic"));
        assert!(decode(b"k8s\0\x0a").unwrap_err().contains("truncated"));
    }
}
