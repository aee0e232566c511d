//! HTTP routing: Kubernetes REST paths onto the store.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};

use crate::auth::{Attributes, UserInfo};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::{self, ApiError};
use crate::store::{FieldValidation, PatchType, Store, WriteOptions};
use crate::table::{self, IncludeObject};
use crate::types::ResourceType;
use crate::{discovery, watch};

pub type Query = HashMap<String, String>;

/// What a resource URL names.
struct Target {
    rt: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

pub async fn handle(
    store: Arc<Store>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query: Query = form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    let path = uri.path().trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    tracing::debug!(%method, %uri, "request");
    let user = match crate::auth::authenticate(&store, &headers)
        .and_then(|u| crate::auth::impersonate(&store, u, &headers))
    {
        Ok(u) => u,
        Err(err) => return err.into_response(),
    };
    let req = Request {
        method: &method,
        query: &query,
        headers: &headers,
        user: &user,
    };
    match route(&store, &req, uri.path(), &segments, body).await {
        Ok(resp) => resp,
        Err(err) => err.into_response(),
    }
}

/// What every handler needs to know about the request besides its path and body.
struct Request<'a> {
    method: &'a Method,
    query: &'a Query,
    headers: &'a HeaderMap,
    user: &'a UserInfo,
}

impl Request<'_> {
    fn allow(&self, store: &Store, attrs: Attributes) -> Result<(), ApiError> {
        if crate::auth::authorize(store, self.user, &attrs) {
            Ok(())
        } else {
            Err(attrs.forbidden(self.user))
        }
    }
}

fn json_response(code: StatusCode, value: &Value) -> Response {
    (
        code,
        [("content-type", "application/json")],
        value.to_string(),
    )
        .into_response()
}

async fn route(
    store: &Arc<Store>,
    req: &Request<'_>,
    path: &str,
    segments: &[&str],
    body: Bytes,
) -> Result<Response, ApiError> {
    let is_resource = matches!(segments, ["api", "v1", _, ..] | ["apis", _, _, _, ..]);
    if !is_resource {
        req.allow(
            store,
            Attributes::NonResource {
                verb: req.method.as_str().to_ascii_lowercase(),
                path: path.to_string(),
            },
        )?;
    }
    match segments {
        ["healthz" | "readyz" | "livez", ..] => Ok((StatusCode::OK, "ok").into_response()),
        ["version"] => Ok(json_response(StatusCode::OK, &discovery::version())),
        ["api"] => Ok(json_response(StatusCode::OK, &discovery::api_versions())),
        ["apis"] => Ok(json_response(
            StatusCode::OK,
            &discovery::api_groups(&store.types()),
        )),
        ["api", "v1"] => Ok(json_response(
            StatusCode::OK,
            &discovery::resource_list(&store.types(), "", "v1")?,
        )),
        ["apis", group] => Ok(json_response(
            StatusCode::OK,
            &discovery::api_group(&store.types(), group)?,
        )),
        ["apis", group, version] => Ok(json_response(
            StatusCode::OK,
            &discovery::resource_list(&store.types(), group, version)?,
        )),
        ["openapi", "v3"] => Ok(json_response(
            StatusCode::OK,
            &discovery::openapi_index(&store.types()),
        )),
        ["openapi", "v3", rest @ ..] => Ok(json_response(
            StatusCode::OK,
            &discovery::openapi_doc(&store.types(), &rest.join("/"))?,
        )),
        ["api", "v1", rest @ ..] => resource(store, req, "", "v1", rest, body).await,
        ["apis", group, version, rest @ ..] => {
            resource(store, req, group, version, rest, body).await
        }
        _ => Err(ApiError::path_not_found()),
    }
}

fn parse_target(
    store: &Store,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Target, ApiError> {
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if !(tail.is_empty() && (*plural == "status" || *plural == "finalize")) =>
        {
            (Some(ns.to_string()), [&[*plural][..], tail].concat())
        }
        _ => (None, rest.to_vec()),
    };
    let plural = rest.first().ok_or_else(ApiError::path_not_found)?;
    let rt = store
        .resolve(group, version, plural)
        .ok_or_else(ApiError::path_not_found)?;
    if namespace.is_some() && !rt.namespaced {
        return Err(ApiError::path_not_found());
    }
    let subresource = rest.get(2).map(|s| s.to_string());
    match subresource.as_deref() {
        None => {}
        Some("status") if rt.status => {}
        Some("scale") if rt.scale.is_some() => {}
        Some("finalize") if rt.plural == "namespaces" => {}
        Some("token") if rt.plural == "serviceaccounts" && rt.group.is_empty() => {}
        Some("eviction") if rt.plural == "pods" && rt.group.is_empty() => {}
        Some(_) => return Err(ApiError::path_not_found()),
    }
    if rest.len() > 3 {
        return Err(ApiError::path_not_found());
    }
    Ok(Target {
        rt,
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        subresource,
    })
}

fn write_options(
    query: &Query,
    headers: &HeaderMap,
    patch: Option<PatchType>,
) -> Result<WriteOptions, ApiError> {
    let field_validation = match query.get("fieldValidation").map(String::as_str) {
        None | Some("") | Some("Warn") => FieldValidation::Warn,
        Some("Strict") => FieldValidation::Strict,
        Some("Ignore") => FieldValidation::Ignore,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "fieldValidation must be one of Ignore, Warn, Strict; got {other:?}"
            )));
        }
    };
    let dry_run = match query.get("dryRun").map(String::as_str) {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "dryRun must be All; got {other:?}"
            )));
        }
    };
    let field_manager = match query.get("fieldManager") {
        Some(m) if !m.is_empty() => m.clone(),
        _ if patch == Some(PatchType::Apply) => String::new(),
        _ => headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .and_then(|ua| ua.split('/').next())
            .filter(|s| !s.is_empty())
            .unwrap_or("unknown")
            .to_string(),
    };
    let force = query.get("force").is_some_and(|f| f == "true");
    if force && patch != Some(PatchType::Apply) {
        return Err(ApiError::bad_request(
            "force is only allowed for apply patches",
        ));
    }
    Ok(WriteOptions {
        field_manager,
        field_validation,
        dry_run,
        force,
    })
}

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// A create, update or delete body: JSON, or protobuf for built-in kinds (kubectl and Helm
/// send `application/vnd.kubernetes.protobuf` for them).
fn parse_object(body: &Bytes, headers: &HeaderMap) -> Result<Value, ApiError> {
    if crate::proto::is_protobuf(content_type(headers)) {
        return crate::proto::decode(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding protobuf: {e}")));
    }
    parse_body(body, false)
}

fn parse_body(body: &Bytes, yaml: bool) -> Result<Value, ApiError> {
    // JSON is YAML too, and what clients send as YAML mostly is JSON (kube's server-side
    // applies): the JSON parser reads it several times faster.
    if yaml && let Ok(v) = serde_json::from_slice(body) {
        return Ok(v);
    }
    if yaml {
        let text = std::str::from_utf8(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
        serde_yaml_ng::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON: {e}")))
    }
}

fn selectors(query: &Query) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(
        query
            .get("labelSelector")
            .map(String::as_str)
            .unwrap_or_default(),
    )
    .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(
        query
            .get("fieldSelector")
            .map(String::as_str)
            .unwrap_or_default(),
    )
    .map_err(ApiError::bad_request)?;
    Ok((labels, fields))
}

pub fn labels_of(obj: &Value) -> serde_json::Map<String, Value> {
    obj["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default()
}

/// What the client asked to receive instead of the objects themselves (the first type
/// of its Accept header): a Table (`as=Table`, kubectl get) or metadata only
/// (`as=PartialObjectMetadata` / `PartialObjectMetadataList`, metadata informers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum As {
    Object,
    Table,
    Metadata,
}

fn wanted(headers: &HeaderMap) -> As {
    let first = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split(',').next())
        .unwrap_or_default();
    if first.contains("as=Table") {
        As::Table
    } else if first.contains("as=PartialObjectMetadata") {
        As::Metadata
    } else {
        As::Object
    }
}

/// An object as a PartialObjectMetadata: its metadata, under meta.k8s.io/v1.
pub fn partial(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj["metadata"],
    })
}

/// The `includeObject` query parameter of a Table request (Metadata when absent).
pub(crate) fn include_object(query: &Query) -> Result<IncludeObject, ApiError> {
    query
        .get("includeObject")
        .map(|v| v.parse())
        .transpose()
        .map(Option::unwrap_or_default)
        .map_err(ApiError::bad_request)
}

/// The RBAC verb of a resource request.
fn verb(method: &Method, named: bool, query: &Query) -> &'static str {
    match (method.as_str(), named) {
        ("GET" | "HEAD", true) => "get",
        ("GET" | "HEAD", false) if query.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            "watch"
        }
        ("GET" | "HEAD", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

async fn resource(
    store: &Arc<Store>,
    req: &Request<'_>,
    group: &str,
    version: &str,
    rest: &[&str],
    body: Bytes,
) -> Result<Response, ApiError> {
    let (method, query, headers) = (req.method, req.query, req.headers);
    let t = parse_target(store, group, version, rest)?;
    let ns = t.namespace.as_deref();
    let sub = t.subresource.as_deref();
    let verb = verb(method, t.name.is_some(), query);
    // A list or watch of one object by `metadata.name=` is authorized as that name, as the
    // API server's request info does (so `resourceNames` rules allow `kubectl get -w`).
    let selected = query
        .get("fieldSelector")
        .and_then(|f| f.strip_prefix("metadata.name="))
        .filter(|n| !n.contains(','));
    let authz_name = t.name.as_deref().or(selected);
    let attrs =
        |verb: &str| Attributes::resource(verb, &t.rt.group, &t.rt.plural, sub, ns, authz_name);
    req.allow(store, attrs(verb))?;
    if t.rt.review {
        if *method != Method::POST || t.name.is_some() {
            return Err(ApiError::method_not_allowed(method.as_str()));
        }
        let obj = parse_object(&body, headers)?;
        let out = crate::reviews::answer(store, req.user, &t.rt, ns, obj)?;
        return Ok(json_response(StatusCode::CREATED, &out));
    }
    if sub == Some("eviction") {
        // An Eviction (policy/v1) deletes the Pod, as the API server does when no
        // PodDisruptionBudget stands in the way (this server keeps none).
        if *method != Method::POST {
            return Err(ApiError::method_not_allowed(method.as_str()));
        }
        // The kind may be left out, as clients do (the endpoint says what it is).
        let eviction = parse_object(&body, headers)?;
        if !eviction["kind"].is_null() && eviction["kind"] != "Eviction" {
            return Err(ApiError::bad_request(format!(
                "the body of an eviction must be an Eviction (policy/v1), not {}",
                eviction["kind"]
            )));
        }
        let name = t.name.as_deref().unwrap_or_default();
        let dry_run = query.get("dryRun").is_some_and(|d| d == "All");
        store.delete(
            &t.rt,
            ns,
            name,
            &eviction["deleteOptions"]["preconditions"],
            dry_run,
        )?;
        return Ok(json_response(
            StatusCode::CREATED,
            &status::success(json!({"name": name, "kind": "pods"})),
        ));
    }
    if sub == Some("token") {
        if *method != Method::POST {
            return Err(ApiError::method_not_allowed(method.as_str()));
        }
        let obj = parse_object(&body, headers)?;
        let out = crate::reviews::token_request(
            store,
            &t.rt,
            ns.unwrap_or("default"),
            t.name.as_deref().unwrap_or_default(),
            obj,
        )?;
        return Ok(json_response(StatusCode::CREATED, &out));
    }
    let wants = wanted(headers);
    let table = wants == As::Table;
    let include = include_object(query)?;
    let respond = |code: StatusCode, obj: Value, warnings: &[String]| -> Response {
        let obj = match wants {
            As::Table if sub.is_none() => table::table(
                std::slice::from_ref(&obj),
                &t.rt.columns,
                include,
                obj["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default(),
                chrono::Utc::now(),
            ),
            As::Metadata if sub.is_none() => partial(&obj),
            _ => obj,
        };
        let mut resp = json_response(code, &obj);
        for w in warnings {
            if let Ok(v) = format!("299 - \"{}\"", w.replace('"', "'")).parse() {
                resp.headers_mut().append("warning", v);
            }
        }
        resp
    };
    match (method.clone(), t.name.as_deref()) {
        (Method::GET, None) if query.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            let (labels, fields) = selectors(query)?;
            watch::serve(
                store.clone(),
                t.rt.clone(),
                t.namespace.clone(),
                labels,
                fields,
                query,
                wants,
            )
            .map(|body: Body| {
                // hyper sends a body of unknown length chunked.
                ([("content-type", "application/json")], body).into_response()
            })
        }
        (Method::GET, None) => {
            let (labels, fields) = selectors(query)?;
            if query
                .get("resourceVersionMatch")
                .is_some_and(|m| m == "Exact")
                && let Some(rv) = query.get("resourceVersion")
                && rv.parse::<u64>().ok() != Some(store.resource_version())
            {
                return Err(ApiError::gone(format!(
                    "too old resource version: {rv} ({})",
                    store.resource_version()
                )));
            }
            // The pages of one list share its first page's resourceVersion, as the API
            // server's do: a watch from it misses nothing that changed while paging.
            let (after, first_rv) = match query.get("continue").filter(|c| !c.is_empty()) {
                Some(token) => {
                    let (key, rv) = decode_continue(token)?;
                    if store.expired(rv) {
                        return Err(ApiError::expired_continue());
                    }
                    (Some(key), Some(rv))
                }
                None => (None, None),
            };
            let limit = query
                .get("limit")
                .and_then(|l| l.parse::<usize>().ok())
                .filter(|l| *l > 0);
            let filter = |o: &Value| labels.matches(&labels_of(o)) && fields.matches(o);
            let (items, rv, next, remaining) =
                store.list(&t.rt, ns, &filter, after.as_ref(), limit);
            let rv = first_rv.unwrap_or(rv);
            if table {
                let mut tab = table::table(
                    &items,
                    &t.rt.columns,
                    include_object(query)?,
                    &rv.to_string(),
                    chrono::Utc::now(),
                );
                if let Some(next) = &next {
                    tab["metadata"]["continue"] = json!(encode_continue(next, rv));
                }
                return Ok(json_response(StatusCode::OK, &tab));
            }
            let mut list = if wants == As::Metadata {
                json!({
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": {"resourceVersion": rv.to_string()},
                    "items": items.iter().map(partial).collect::<Vec<_>>(),
                })
            } else {
                json!({
                    "kind": format!("{}List", t.rt.kind),
                    "apiVersion": t.rt.api_version(),
                    "metadata": {"resourceVersion": rv.to_string()},
                    "items": items,
                })
            };
            if let Some(next) = &next {
                list["metadata"]["continue"] = json!(encode_continue(next, rv));
                list["metadata"]["remainingItemCount"] = json!(remaining);
            }
            Ok(json_response(StatusCode::OK, &list))
        }
        (Method::GET, Some(name)) => {
            let obj = store.get(&t.rt, ns, name)?;
            if sub == Some("scale") {
                return Ok(json_response(StatusCode::OK, &to_scale(&t.rt, &obj)));
            }
            Ok(respond(StatusCode::OK, obj, &[]))
        }
        (Method::POST, None) => {
            let opts = write_options(query, headers, None)?;
            let obj = parse_object(&body, headers)?;
            let written = store.create(&t.rt, ns, obj, &opts)?;
            Ok(respond(
                StatusCode::CREATED,
                written.object,
                &written.warnings,
            ))
        }
        (Method::PUT, Some(name)) => {
            let opts = write_options(query, headers, None)?;
            let mut obj = parse_object(&body, headers)?;
            if sub == Some("scale") {
                let current = store.get(&t.rt, ns, name)?;
                obj = from_scale(&t.rt, current, &obj);
            }
            let written =
                store.update(&t.rt, ns, name, sub.filter(|s| *s == "status"), obj, &opts)?;
            let out = if sub == Some("scale") {
                to_scale(&t.rt, &written.object)
            } else {
                written.object
            };
            Ok(respond(StatusCode::OK, out, &written.warnings))
        }
        (Method::PATCH, Some(name)) => {
            let kind = match content_type(headers)
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
            {
                "application/json-patch+json" => PatchType::Json,
                "application/merge-patch+json" => PatchType::Merge,
                "application/strategic-merge-patch+json" => PatchType::Strategic,
                "application/apply-patch+yaml"
                | "application/apply-patch+json"
                | "application/apply-patch+cbor" => PatchType::Apply,
                other => return Err(ApiError::unsupported_media_type(other)),
            };
            let opts = write_options(query, headers, Some(kind))?;
            // An apply that creates the object needs `create` too, as on a real server.
            if kind == PatchType::Apply && sub.is_none() && store.get(&t.rt, ns, name).is_err() {
                req.allow(store, attrs("create"))?;
            }
            let patch_body = parse_body(&body, kind == PatchType::Apply)?;
            if sub == Some("scale") {
                let current = store.get(&t.rt, ns, name)?;
                let mut scale = to_scale(&t.rt, &current);
                match kind {
                    PatchType::Json => crate::patch::json_patch(&mut scale, &patch_body)
                        .map_err(|e| ApiError::bad_request(format!("{e:?}")))?,
                    _ => crate::patch::merge_patch(&mut scale, &patch_body),
                }
                let obj = from_scale(&t.rt, current, &scale);
                let written = store.update(&t.rt, ns, name, None, obj, &opts)?;
                return Ok(respond(
                    StatusCode::OK,
                    to_scale(&t.rt, &written.object),
                    &written.warnings,
                ));
            }
            let written = store.patch(
                &t.rt,
                ns,
                name,
                sub.filter(|s| *s == "status"),
                kind,
                &patch_body,
                &opts,
            )?;
            let code = if written.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(respond(code, written.object, &written.warnings))
        }
        (Method::DELETE, Some(name)) => {
            let options: Value = if body.is_empty() {
                json!({})
            } else {
                parse_object(&body, headers)?
            };
            let dry_run = query.get("dryRun").is_some_and(|d| d == "All")
                || options["dryRun"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(|v| v == "All"));
            let obj = store.delete(&t.rt, ns, name, &options["preconditions"], dry_run)?;
            Ok(respond(StatusCode::OK, obj, &[]))
        }
        (Method::DELETE, None) => {
            let (labels, fields) = selectors(query)?;
            let filter = |o: &Value| labels.matches(&labels_of(o)) && fields.matches(o);
            let dry_run = query.get("dryRun").is_some_and(|d| d == "All");
            let deleted = store.delete_collection(&t.rt, ns, &filter, dry_run)?;
            Ok(json_response(
                StatusCode::OK,
                &status::success(
                    json!({"kind": t.rt.plural, "group": t.rt.group, "causes": deleted.len()}),
                ),
            ))
        }
        (m, _) => Err(ApiError::method_not_allowed(m.as_str())),
    }
}

/// A continue token: the last key listed and the list's resourceVersion.
fn encode_continue(key: &(String, String), rv: u64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!([key.0, key.1, rv.to_string()]).to_string())
}

fn decode_continue(token: &str) -> Result<((String, String), u64), ApiError> {
    let bad = || ApiError::bad_request("continue key is not valid");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let (ns, name, rv): (String, String, String) =
        serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok(((ns, name), rv.parse().map_err(|_| bad())?))
}

/// Reads a dotted path like `.spec.replicas`.
fn get_path<'a>(obj: &'a Value, path: &str) -> &'a Value {
    path.trim_start_matches('.')
        .split('.')
        .fold(obj, |v, p| &v[p])
}

fn set_path(obj: &mut Value, path: &str, value: Value) {
    let parts: Vec<&str> = path.trim_start_matches('.').split('.').collect();
    let mut cur = obj;
    for p in &parts[..parts.len() - 1] {
        cur = &mut cur[*p];
    }
    cur[parts[parts.len() - 1]] = value;
}

fn to_scale(rt: &ResourceType, obj: &Value) -> Value {
    let scale = rt.scale.as_ref().expect("scale subresource");
    let m = &obj["metadata"];
    let mut out = json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"], "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
        "spec": {"replicas": get_path(obj, &scale.spec_replicas_path).as_i64().unwrap_or(0)},
        "status": {"replicas": get_path(obj, &scale.status_replicas_path).as_i64().unwrap_or(0)},
    });
    if let Some(sel) = &scale.label_selector_path
        && let Some(s) = get_path(obj, sel).as_str()
    {
        out["status"]["selector"] = json!(s);
    }
    out
}

fn from_scale(rt: &ResourceType, mut obj: Value, scale: &Value) -> Value {
    let spec = rt.scale.as_ref().expect("scale subresource");
    set_path(
        &mut obj,
        &spec.spec_replicas_path,
        scale["spec"]["replicas"].clone(),
    );
    if let Some(rv) = scale["metadata"]["resourceVersion"].as_str() {
        obj["metadata"]["resourceVersion"] = json!(rv);
    }
    obj
}
