//! Server-side table rendering for `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`,
//! which is what `kubectl get` asks for. Cells mirror what the real apiserver sends so that
//! kubectl output (including `-o wide`, which shows priority > 0 columns) looks familiar.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value, json};

mod jsonpath;

pub use self::jsonpath::jsonpath;
use self::jsonpath::select;

/// A printer column, as in a CRD's additionalPrinterColumns.
///
/// `json_path` is either a JSONPath (see [`jsonpath()`]) or, for columns produced by
/// [`builtin_columns`], a pseudo path starting with `#` naming a computed cell.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub priority: i32,
    pub json_path: String,
}

const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";

const CREATION_TIMESTAMP_DESCRIPTION: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

// ---------------------------------------------------------------------------
// Cells
// ---------------------------------------------------------------------------

/// Renders one cell of `column` for `obj`.
///
/// For JSONPath columns, by column type (as the apiserver does for CRD printer columns):
/// - `string`: strings as-is, numbers/bools as text, objects/arrays as compact JSON; several
///   matches are joined with `,`;
/// - `integer` / `number` / `boolean`: the first match as a JSON number/bool (null on type mismatch);
/// - `date`: the first match, an RFC 3339 string, as a human-readable age relative to `now`
///   (see [`human_duration`]); `<invalid>` if unparsable, `<unknown>` if empty;
/// - any other type is rendered like `string`.
///
/// No match (or a JSON null) gives `Value::Null`, which kubectl prints as `<none>`.
/// Pseudo paths starting with `#` (see [`builtin_columns`]) compute the cell instead.
pub fn cell(obj: &Value, column: &Column, now: DateTime<Utc>) -> Value {
    if let Some(pseudo) = column.json_path.strip_prefix('#') {
        return computed_cell(obj, pseudo, now);
    }
    let found = select(obj, &column.json_path);
    let Some(first) = found.first().copied() else {
        return Value::Null;
    };
    if found.iter().all(|v| v.is_null()) {
        return Value::Null;
    }
    match column.type_.as_str() {
        "integer" => match first {
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().map(|f| f as i64))
                .map_or(Value::Null, Value::from),
            _ => Value::Null,
        },
        "number" => match first {
            Value::Number(_) => first.clone(),
            _ => Value::Null,
        },
        "boolean" => match first {
            Value::Bool(_) => first.clone(),
            _ => Value::Null,
        },
        "date" => match first {
            Value::String(s) if s.is_empty() => Value::from("<unknown>"),
            Value::String(s) => match parse_time(s) {
                Some(t) => Value::from(human_duration(now - t)),
                None => Value::from("<invalid>"),
            },
            _ => Value::Null,
        },
        _ => Value::from(found.iter().map(|v| text(v)).collect::<Vec<_>>().join(",")),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Age of an optional RFC 3339 timestamp, as printed for built-in kinds.
fn since(ts: &str, now: DateTime<Utc>) -> String {
    if ts.is_empty() {
        return "<unknown>".to_string();
    }
    match parse_time(ts) {
        Some(t) => human_duration(now - t),
        None => "<invalid>".to_string(),
    }
}

/// Kubernetes' HumanDuration: under 2 minutes "Ns"; under 10 minutes "MmSs" ("3m", "3m5s");
/// under 3 hours "Mm" ("179m"); under 8 hours "HhMm" ("3h", "3h5m"); under 48 hours "Hh";
/// under 8 days "DdHh" ("3d", "3d4h"); under 2 years "Dd"; under 8 years "YyDd"; else "Yy".
/// A year is 365 days. Negative durations give "0s".
pub fn human_duration(d: Duration) -> String {
    let seconds = d.num_seconds();
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 3 * 60 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{h}h")
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        let dy = days % 365;
        return if dy == 0 {
            format!("{years}y")
        } else {
            format!("{years}y{dy}d")
        };
    }
    format!("{years}y")
}

// ---------------------------------------------------------------------------
// Table
// ---------------------------------------------------------------------------

/// includeObject query parameter: what each row's `object` carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    #[default]
    Metadata,
    Object,
}

impl std::str::FromStr for IncludeObject {
    type Err = String;

    /// Parses the query parameter value; an empty value means the default (Metadata).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "None" => Ok(IncludeObject::None),
            "" | "Metadata" => Ok(IncludeObject::Metadata),
            "Object" => Ok(IncludeObject::Object),
            _ => Err(format!("unrecognized includeObject value: {s:?}")),
        }
    }
}

/// Builds a meta.k8s.io/v1 Table for `objects`:
/// `{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{"resourceVersion":rv},
///   "columnDefinitions":[Name, ...columns], "rows":[{"cells":[name, ...cells], "object":...}]}`.
///
/// The row object is a PartialObjectMetadata (Metadata), the full object (Object) or absent (None).
/// When `columns` is empty the columns are Name and Age (creationTimestamp as a date), as for a
/// CRD without printer columns. A column whose json_path is `#name` takes the place of the
/// leading Name column (Events list Name last, with priority 1). Column descriptions default to
/// the apiserver's text for CRD columns. An empty `resource_version` is omitted.
pub fn table(
    objects: &[Value],
    columns: &[Column],
    include: IncludeObject,
    resource_version: &str,
    now: DateTime<Utc>,
) -> Value {
    let default_columns;
    let columns = if columns.is_empty() {
        default_columns = vec![Column {
            name: "Age".into(),
            type_: "date".into(),
            format: None,
            description: Some(CREATION_TIMESTAMP_DESCRIPTION.into()),
            priority: 0,
            json_path: ".metadata.creationTimestamp".into(),
        }];
        &default_columns[..]
    } else {
        columns
    };
    let own_name_column = columns.iter().any(|c| c.json_path == "#name");

    let mut definitions = Vec::with_capacity(columns.len() + 1);
    if !own_name_column {
        definitions.push(json!({
            "name": "Name",
            "type": "string",
            "format": "name",
            "description": NAME_DESCRIPTION,
            "priority": 0,
        }));
    }
    for c in columns {
        let description = match c.description.as_deref() {
            Some(d) if !d.is_empty() => d.to_string(),
            _ => format!(
                "Custom resource definition column (in JSONPath format): {}",
                c.json_path
            ),
        };
        definitions.push(json!({
            "name": c.name,
            "type": c.type_,
            "format": c.format.clone().unwrap_or_default(),
            "description": description,
            "priority": c.priority,
        }));
    }

    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let mut cells = Vec::with_capacity(columns.len() + 1);
            if !own_name_column {
                cells.push(Value::from(object_name(obj)));
            }
            cells.extend(columns.iter().map(|c| cell(obj, c, now)));
            let mut row = Map::new();
            row.insert("cells".into(), Value::Array(cells));
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => {
                    row.insert(
                        "object".into(),
                        json!({
                            "kind": "PartialObjectMetadata",
                            "apiVersion": "meta.k8s.io/v1",
                            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
                        }),
                    );
                }
                IncludeObject::Object => {
                    row.insert("object".into(), obj.clone());
                }
            }
            Value::Object(row)
        })
        .collect();

    let mut metadata = Map::new();
    if !resource_version.is_empty() {
        metadata.insert("resourceVersion".into(), Value::from(resource_version));
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

fn object_name(obj: &Value) -> &str {
    str_at(obj, "/metadata/name")
}

// ---------------------------------------------------------------------------
// Built-in kinds
// ---------------------------------------------------------------------------

fn col(name: &str, path: &str, priority: i32, description: &str) -> Column {
    Column {
        name: name.into(),
        // Built-in printers declare every column as a string, even when the cell is a number.
        type_: "string".into(),
        format: None,
        description: Some(description.into()),
        priority,
        json_path: path.into(),
    }
}

fn age() -> Column {
    col("Age", "#age", 0, CREATION_TIMESTAMP_DESCRIPTION)
}

/// Default printer columns for the built-in kinds the test server stores, matching what
/// kubectl shows against a real cluster (priority 1 columns appear with `-o wide`).
/// Unknown kinds give an empty Vec, so [`table`] falls back to Name and Age.
///
/// Computed cells use pseudo json_paths understood by [`cell`]:
/// `#name`, `#age`, `#data-count`, `#deployment-ready`, `#pod-ready`, `#pod-status`,
/// `#pod-restarts`, `#pod-ip`, `#pod-readiness-gates`, `#node-status`, `#node-roles`,
/// `#node-internal-ip`, `#node-external-ip`, `#service-type`, `#service-cluster-ip`,
/// `#service-external-ip`, `#service-ports`, `#event-last-seen`, `#event-first-seen`,
/// `#event-object`, `#event-subobject`, `#event-source`, `#event-message`, `#event-count`, and the
/// parameterised `#str:<path>` (text, "" if missing), `#int:<path>` (integer, 0 if missing),
/// `#or-none:<path>` / `#or-unknown:<path>` (text, placeholder if empty), `#join:<path>` (all
/// matches joined by ","), `#labels:<path>` (a label map as `k=v,...`) and `#selector:<path>`
/// (a LabelSelector in selector syntax).
pub fn builtin_columns(kind: &str) -> Vec<Column> {
    match kind {
        "Namespace" => vec![
            col(
                "Status",
                "#str:.status.phase",
                0,
                "The status of the namespace",
            ),
            age(),
        ],
        "Secret" => vec![
            col(
                "Type",
                "#str:.type",
                0,
                "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types",
            ),
            col(
                "Data",
                "#data-count",
                0,
                "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4",
            ),
            age(),
        ],
        "ConfigMap" => vec![
            col(
                "Data",
                "#data-count",
                0,
                "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process.",
            ),
            age(),
        ],
        "Service" => vec![
            col(
                "Type",
                "#service-type",
                0,
                "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer.",
            ),
            col(
                "Cluster-IP",
                "#service-cluster-ip",
                0,
                "clusterIP is the IP address of the service and is usually assigned randomly.",
            ),
            col(
                "External-IP",
                "#service-external-ip",
                0,
                "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
            ),
            col(
                "Port(s)",
                "#service-ports",
                0,
                "The list of ports that are exposed by this service.",
            ),
            age(),
            col(
                "Selector",
                "#labels:.spec.selector",
                1,
                "Route service traffic to pods with label keys and values matching this selector.",
            ),
        ],
        "Deployment" => vec![
            col(
                "Ready",
                "#deployment-ready",
                0,
                "Number of the pod with ready state",
            ),
            col(
                "Up-to-date",
                "#int:.status.updatedReplicas",
                0,
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
            ),
            col(
                "Available",
                "#int:.status.availableReplicas",
                0,
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
            ),
            age(),
            col(
                "Containers",
                "#join:.spec.template.spec.containers[*].name",
                1,
                "Names of each container in the template.",
            ),
            col(
                "Images",
                "#join:.spec.template.spec.containers[*].image",
                1,
                "Images referenced by each container in the template.",
            ),
            col(
                "Selector",
                "#selector:.spec.selector",
                1,
                "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment. It must match the pod template's labels.",
            ),
        ],
        "Pod" => vec![
            col(
                "Ready",
                "#pod-ready",
                0,
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            col(
                "Status",
                "#pod-status",
                0,
                "The aggregate status of the containers in this pod.",
            ),
            col(
                "Restarts",
                "#pod-restarts",
                0,
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            age(),
            col(
                "IP",
                "#pod-ip",
                1,
                "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
            ),
            col(
                "Node",
                "#or-none:.spec.nodeName",
                1,
                "NodeName indicates in which node this pod is scheduled.",
            ),
            col(
                "Nominated Node",
                "#or-none:.status.nominatedNodeName",
                1,
                "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods.",
            ),
            col(
                "Readiness Gates",
                "#pod-readiness-gates",
                1,
                "If specified, all readiness gates will be evaluated for pod readiness.",
            ),
        ],
        "Node" => vec![
            col("Status", "#node-status", 0, "The status of the node"),
            col("Roles", "#node-roles", 0, "The roles of the node"),
            age(),
            col(
                "Version",
                "#str:.status.nodeInfo.kubeletVersion",
                0,
                "Kubelet Version reported by the node.",
            ),
            col(
                "Internal-IP",
                "#node-internal-ip",
                1,
                "List of addresses reachable to the node.",
            ),
            col(
                "External-IP",
                "#node-external-ip",
                1,
                "List of addresses reachable to the node.",
            ),
            col(
                "OS-Image",
                "#or-unknown:.status.nodeInfo.osImage",
                1,
                "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
            ),
            col(
                "Kernel-Version",
                "#or-unknown:.status.nodeInfo.kernelVersion",
                1,
                "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
            ),
            col(
                "Container-Runtime",
                "#or-unknown:.status.nodeInfo.containerRuntimeVersion",
                1,
                "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
            ),
        ],
        "Lease" => vec![
            col(
                "Holder",
                "#str:.spec.holderIdentity",
                0,
                "holderIdentity contains the identity of the holder of a current lease.",
            ),
            age(),
        ],
        "Event" => vec![
            col(
                "Last Seen",
                "#event-last-seen",
                0,
                "The time at which the most recent occurrence of this event was recorded.",
            ),
            col(
                "Type",
                "#str:.type",
                0,
                "Type of this event (Normal, Warning), new types could be added in the future",
            ),
            col(
                "Reason",
                "#str:.reason",
                0,
                "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
            ),
            col(
                "Object",
                "#event-object",
                0,
                "The object that this event is about.",
            ),
            col(
                "Subobject",
                "#event-subobject",
                1,
                "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2].",
            ),
            col(
                "Source",
                "#event-source",
                1,
                "The component reporting this event. Should be a short machine understandable string.",
            ),
            col(
                "Message",
                "#event-message",
                0,
                "A human-readable description of the status of this operation.",
            ),
            col(
                "First Seen",
                "#event-first-seen",
                1,
                "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
            ),
            col(
                "Count",
                "#event-count",
                1,
                "The number of times this event has occurred.",
            ),
            Column {
                format: Some("name".into()),
                ..col("Name", "#name", 1, NAME_DESCRIPTION)
            },
        ],
        _ => Vec::new(),
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn int_at(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn array_at<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn first_text(obj: &Value, path: &str) -> String {
    select(obj, path)
        .first()
        .map(|v| text(v))
        .unwrap_or_default()
}

fn or_placeholder(s: String, placeholder: &str) -> Value {
    Value::from(if s.is_empty() {
        placeholder.to_string()
    } else {
        s
    })
}

fn computed_cell(obj: &Value, pseudo: &str, now: DateTime<Utc>) -> Value {
    if let Some((kind, path)) = pseudo.split_once(':') {
        return match kind {
            "str" => Value::from(first_text(obj, path)),
            "int" => {
                let n = select(obj, path).first().and_then(|v| v.as_i64());
                Value::from(n.unwrap_or(0))
            }
            "or-none" => or_placeholder(first_text(obj, path), "<none>"),
            "or-unknown" => or_placeholder(first_text(obj, path), "<unknown>"),
            "join" => Value::from(
                select(obj, path)
                    .iter()
                    .map(|v| text(v))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            "labels" => Value::from(format_labels(select(obj, path).first().copied())),
            "selector" => Value::from(format_label_selector(select(obj, path).first().copied())),
            _ => Value::Null,
        };
    }
    match pseudo {
        "name" => Value::from(object_name(obj)),
        "age" => Value::from(since(str_at(obj, "/metadata/creationTimestamp"), now)),
        "data-count" => {
            let count = |p: &str| {
                obj.pointer(p)
                    .and_then(Value::as_object)
                    .map_or(0, Map::len)
            };
            Value::from(count("/data") + count("/binaryData"))
        }
        "deployment-ready" => {
            // Unset spec.replicas defaults to 1 in apps/v1.
            let desired = obj
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            Value::from(format!(
                "{}/{desired}",
                int_at(obj, "/status/readyReplicas")
            ))
        }
        "pod-ready" => Value::from(pod_summary(obj, now).ready),
        "pod-status" => Value::from(pod_summary(obj, now).status),
        "pod-restarts" => Value::from(pod_summary(obj, now).restarts),
        "pod-ip" => {
            let ip = array_at(obj, "/status/podIPs")
                .first()
                .map(|p| str_at(p, "/ip"))
                .filter(|ip| !ip.is_empty())
                .unwrap_or_else(|| str_at(obj, "/status/podIP"));
            or_placeholder(ip.to_string(), "<none>")
        }
        "pod-readiness-gates" => {
            let gates = array_at(obj, "/spec/readinessGates");
            if gates.is_empty() {
                return Value::from("<none>");
            }
            let conditions = array_at(obj, "/status/conditions");
            let satisfied = gates
                .iter()
                .filter(|g| {
                    let t = str_at(g, "/conditionType");
                    conditions
                        .iter()
                        .find(|c| str_at(c, "/type") == t)
                        .is_some_and(|c| str_at(c, "/status") == "True")
                })
                .count();
            Value::from(format!("{satisfied}/{}", gates.len()))
        }
        "node-status" => Value::from(node_status(obj)),
        "node-roles" => Value::from(node_roles(obj)),
        "node-internal-ip" => Value::from(node_address(obj, "InternalIP")),
        "node-external-ip" => Value::from(node_address(obj, "ExternalIP")),
        "service-type" => Value::from(service_type(obj)),
        "service-cluster-ip" => {
            let ip = array_at(obj, "/spec/clusterIPs")
                .first()
                .and_then(Value::as_str)
                .unwrap_or_else(|| str_at(obj, "/spec/clusterIP"));
            or_placeholder(ip.to_string(), "<none>")
        }
        "service-external-ip" => Value::from(service_external_ip(obj)),
        "service-ports" => {
            let ports: Vec<String> = array_at(obj, "/spec/ports")
                .iter()
                .map(|p| {
                    let protocol = match str_at(p, "/protocol") {
                        "" => "TCP",
                        other => other,
                    };
                    let port = int_at(p, "/port");
                    match int_at(p, "/nodePort") {
                        n if n > 0 => format!("{port}:{n}/{protocol}"),
                        _ => format!("{port}/{protocol}"),
                    }
                })
                .collect();
            or_placeholder(ports.join(","), "<none>")
        }
        "event-first-seen" => Value::from(event_first_seen(obj, now)),
        "event-last-seen" => Value::from(event_last_seen(obj, now)),
        "event-object" => {
            let (kind, name) = (
                event_field(obj, &["/involvedObject/kind", "/regarding/kind"]),
                event_field(obj, &["/involvedObject/name", "/regarding/name"]),
            );
            let kind = kind.to_lowercase();
            Value::from(if name.is_empty() {
                kind
            } else {
                format!("{kind}/{name}")
            })
        }
        "event-subobject" => Value::from(event_field(
            obj,
            &["/involvedObject/fieldPath", "/regarding/fieldPath"],
        )),
        "event-source" => {
            let component = event_field(
                obj,
                &[
                    "/source/component",
                    "/deprecatedSource/component",
                    "/reportingComponent",
                    "/reportingController",
                ],
            );
            let instance = event_field(
                obj,
                &[
                    "/source/host",
                    "/deprecatedSource/host",
                    "/reportingInstance",
                ],
            );
            Value::from(match (component, instance) {
                ("", _) => "<unknown>".to_string(),
                (c, "") => c.to_string(),
                (c, i) => format!("{c}, {i}"),
            })
        }
        "event-message" => Value::from(event_field(obj, &["/message", "/note"]).trim()),
        "event-count" => {
            let count = if obj.get("series").is_some_and(|s| !s.is_null()) {
                int_at(obj, "/series/count")
            } else {
                // Singleton events from the newer API carry no count.
                match int_at(obj, "/count") {
                    0 => match int_at(obj, "/deprecatedCount") {
                        0 => 1,
                        n => n,
                    },
                    n => n,
                }
            };
            Value::from(count)
        }
        _ => Value::Null,
    }
}

/// Renders a label map (`k=v,...`, sorted) or `<none>`.
fn format_labels(map: Option<&Value>) -> String {
    let Some(map) = map.and_then(Value::as_object).filter(|m| !m.is_empty()) else {
        return "<none>".to_string();
    };
    let mut pairs: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{k}={}", text(v)))
        .collect();
    pairs.sort();
    pairs.join(",")
}

/// Renders a metav1.LabelSelector in selector syntax, requirements sorted by key.
fn format_label_selector(selector: Option<&Value>) -> String {
    let Some(selector) = selector else {
        return String::new();
    };
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            reqs.push((k.clone(), format!("{k}={}", text(v))));
        }
    }
    for expr in array_at(selector, "/matchExpressions") {
        let key = str_at(expr, "/key");
        let mut values: Vec<String> = array_at(expr, "/values").iter().map(text).collect();
        values.sort();
        let rendered = match str_at(expr, "/operator") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => return "<invalid>".to_string(),
        };
        reqs.push((key.to_string(), rendered));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    reqs.into_iter()
        .map(|(_, r)| r)
        .collect::<Vec<_>>()
        .join(",")
}

struct PodSummary {
    ready: String,
    status: String,
    restarts: String,
}

fn later(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    a.max(b)
}

fn last_termination(container_status: &Value) -> Option<DateTime<Utc>> {
    parse_time(str_at(container_status, "/lastState/terminated/finishedAt"))
}

fn terminated_reason(terminated: &Value, prefix: &str) -> String {
    match str_at(terminated, "/reason") {
        "" => match int_at(terminated, "/signal") {
            0 => format!("{prefix}ExitCode:{}", int_at(terminated, "/exitCode")),
            s => format!("{prefix}Signal:{s}"),
        },
        r => format!("{prefix}{r}"),
    }
}

fn has_condition(obj: &Value, type_: &str) -> bool {
    array_at(obj, "/status/conditions")
        .iter()
        .any(|c| str_at(c, "/type") == type_ && str_at(c, "/status") == "True")
}

/// The Ready / Status / Restarts columns of `kubectl get pods`, derived from the
/// container statuses the same way the apiserver's pod printer does.
fn pod_summary(pod: &Value, now: DateTime<Utc>) -> PodSummary {
    let init_specs = array_at(pod, "/spec/initContainers");
    // Init containers with restartPolicy Always are sidecars and count as regular containers.
    let is_sidecar = |name: &str| {
        init_specs
            .iter()
            .any(|c| str_at(c, "/name") == name && str_at(c, "/restartPolicy") == "Always")
    };
    let total = array_at(pod, "/spec/containers").len()
        + init_specs
            .iter()
            .filter(|c| str_at(c, "/restartPolicy") == "Always")
            .count();
    let mut ready = 0;
    let mut restarts = 0;
    let mut sidecar_restarts = 0;
    let mut last_restart = None;
    let mut last_sidecar_restart = None;

    let phase = str_at(pod, "/status/phase");
    let mut reason = match str_at(pod, "/status/reason") {
        "" => phase.to_string(),
        r => r.to_string(),
    };
    for c in array_at(pod, "/status/conditions") {
        if str_at(c, "/type") == "PodScheduled" && str_at(c, "/reason") == "SchedulingGated" {
            reason = "SchedulingGated".to_string();
        }
    }

    let mut initializing = false;
    for (i, c) in array_at(pod, "/status/initContainerStatuses")
        .iter()
        .enumerate()
    {
        restarts += int_at(c, "/restartCount");
        last_restart = later(last_restart, last_termination(c));
        let sidecar = is_sidecar(str_at(c, "/name"));
        if sidecar {
            sidecar_restarts += int_at(c, "/restartCount");
            last_sidecar_restart = later(last_sidecar_restart, last_termination(c));
        }
        let terminated = c.pointer("/state/terminated").filter(|t| !t.is_null());
        let waiting = str_at(c, "/state/waiting/reason");
        if terminated.is_some_and(|t| int_at(t, "/exitCode") == 0) {
            continue;
        }
        if sidecar && c.get("started") == Some(&Value::Bool(true)) {
            if c.get("ready") == Some(&Value::Bool(true)) {
                ready += 1;
            }
            continue;
        }
        reason = if let Some(t) = terminated {
            terminated_reason(t, "Init:")
        } else if !waiting.is_empty() && waiting != "PodInitializing" {
            format!("Init:{waiting}")
        } else {
            format!("Init:{i}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }

    if !initializing || has_condition(pod, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for c in array_at(pod, "/status/containerStatuses").iter().rev() {
            restarts += int_at(c, "/restartCount");
            last_restart = later(last_restart, last_termination(c));
            let waiting = str_at(c, "/state/waiting/reason");
            if !waiting.is_empty() {
                reason = waiting.to_string();
            } else if let Some(t) = c.pointer("/state/terminated").filter(|t| !t.is_null()) {
                reason = terminated_reason(t, "");
            } else if c.get("ready") == Some(&Value::Bool(true))
                && c.pointer("/state/running").is_some_and(|r| !r.is_null())
            {
                has_running = true;
                ready += 1;
            }
        }
        // A pod whose last container completed is still running if another container runs.
        if reason == "Completed" && has_running {
            reason = if has_condition(pod, "Ready") {
                "Running".to_string()
            } else {
                "NotReady".to_string()
            };
        }
    }

    let deleting = pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null());
    if deleting && str_at(pod, "/status/reason") == "NodeLost" {
        reason = "Unknown".to_string();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_string();
    }

    let restarts = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", human_duration(now - t)),
        _ => restarts.to_string(),
    };
    PodSummary {
        ready: format!("{ready}/{total}"),
        status: reason,
        restarts,
    }
}

fn node_status(node: &Value) -> String {
    let mut status = Vec::new();
    // Later duplicates win, as with a map keyed by condition type.
    if let Some(c) = array_at(node, "/status/conditions")
        .iter()
        .rfind(|c| str_at(c, "/type") == "Ready")
    {
        status.push(if str_at(c, "/status") == "True" {
            "Ready"
        } else {
            "NotReady"
        });
    }
    if status.is_empty() {
        status.push("Unknown");
    }
    if node.pointer("/spec/unschedulable") == Some(&Value::Bool(true)) {
        status.push("SchedulingDisabled");
    }
    status.join(",")
}

fn node_roles(node: &Value) -> String {
    let mut roles = BTreeSet::new();
    if let Some(labels) = node.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role.to_string());
                }
            } else if k == "kubernetes.io/role" {
                let v = text(v);
                if !v.is_empty() {
                    roles.insert(v);
                }
            }
        }
    }
    if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.into_iter().collect::<Vec<_>>().join(",")
    }
}

fn node_address(node: &Value, type_: &str) -> String {
    array_at(node, "/status/addresses")
        .iter()
        .find(|a| str_at(a, "/type") == type_)
        .map_or_else(
            || "<none>".to_string(),
            |a| str_at(a, "/address").to_string(),
        )
}

fn service_type(svc: &Value) -> &str {
    // Stored objects may skip defaulting; ClusterIP is the API default.
    match str_at(svc, "/spec/type") {
        "" => "ClusterIP",
        t => t,
    }
}

fn service_external_ip(svc: &Value) -> String {
    let external: Vec<String> = array_at(svc, "/spec/externalIPs")
        .iter()
        .map(text)
        .collect();
    match service_type(svc) {
        "ClusterIP" | "NodePort" => {
            if external.is_empty() {
                "<none>".to_string()
            } else {
                external.join(",")
            }
        }
        "LoadBalancer" => {
            let ingress: BTreeSet<&str> = array_at(svc, "/status/loadBalancer/ingress")
                .iter()
                .map(|i| match str_at(i, "/ip") {
                    "" => str_at(i, "/hostname"),
                    ip => ip,
                })
                .filter(|s| !s.is_empty())
                .collect();
            let all: Vec<String> = ingress
                .into_iter()
                .map(str::to_string)
                .chain(external)
                .collect();
            if all.is_empty() {
                "<pending>".to_string()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => str_at(svc, "/spec/externalName").to_string(),
        _ => "<unknown>".to_string(),
    }
}

/// First non-empty string among core/v1 and events.k8s.io/v1 spellings of an Event field.
fn event_field<'a>(event: &'a Value, pointers: &[&str]) -> &'a str {
    pointers
        .iter()
        .map(|p| str_at(event, p))
        .find(|s| !s.is_empty())
        .unwrap_or("")
}

fn event_first_seen(event: &Value, now: DateTime<Utc>) -> String {
    match event_field(event, &["/firstTimestamp", "/deprecatedFirstTimestamp"]) {
        "" => since(str_at(event, "/eventTime"), now),
        ts => since(ts, now),
    }
}

fn event_last_seen(event: &Value, now: DateTime<Utc>) -> String {
    if event.get("series").is_some_and(|s| !s.is_null()) {
        return since(str_at(event, "/series/lastObservedTime"), now);
    }
    match event_field(event, &["/lastTimestamp", "/deprecatedLastTimestamp"]) {
        "" => event_first_seen(event, now),
        ts => since(ts, now),
    }
}

#[cfg(test)]
mod tests;
