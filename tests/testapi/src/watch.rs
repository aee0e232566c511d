//! Watches: newline-delimited JSON events over a chunked response.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::http::{Query, labels_of};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::{Event, EventType, Store};
use crate::table;
use crate::types::ResourceType;

struct Filter {
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn selects(&self, obj: &Value) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| obj["metadata"]["namespace"].as_str() == Some(ns))
            && self.labels.matches(&labels_of(obj))
            && self.fields.matches(obj)
    }

    /// The event a selecting watch sees: objects entering the selection are ADDED,
    /// objects leaving it are DELETED.
    fn view(&self, ev: &Event) -> Option<&'static str> {
        match ev.kind {
            EventType::Added => self.selects(&ev.object).then_some("ADDED"),
            EventType::Deleted => self
                .selects(ev.old.as_ref().unwrap_or(&ev.object))
                .then_some("DELETED"),
            EventType::Modified => {
                let now = self.selects(&ev.object);
                let before = ev.old.as_ref().is_some_and(|o| self.selects(o));
                match (before, now) {
                    (true, true) => Some("MODIFIED"),
                    (false, true) => Some("ADDED"),
                    (true, false) => Some("DELETED"),
                    (false, false) => None,
                }
            }
        }
    }
}

/// Starts a watch and returns the streaming body.
pub fn serve(
    store: Arc<Store>,
    rt: ResourceType,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    query: &Query,
    wants: crate::http::As,
) -> Result<Body, ApiError> {
    let send_initial = query.get("sendInitialEvents").is_some_and(|v| v == "true");
    let rv = match query.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(_) if send_initial => None,
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        ),
    };
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let include = crate::http::include_object(query)?;
    let filter = Filter {
        namespace,
        labels,
        fields,
    };
    let (first, mut rx, start_rv) = match store.watch(&rt, rv) {
        Ok(w) => w,
        // An expired resourceVersion is reported inside the stream, as the API server does.
        Err(err) if err.code == 410 => {
            let line = json!({"type": "ERROR", "object": err.to_status()}).to_string() + "\n";
            let once = futures::stream::once(async move { Ok::<_, Infallible>(Bytes::from(line)) });
            return Ok(Body::from_stream(once));
        }
        Err(err) => return Err(err),
    };
    let interval = store.config.bookmark_interval;
    let (tx, out) = mpsc::channel::<Result<Bytes, Infallible>>(256);
    tokio::spawn(async move {
        let api_version = rt.api_version();
        let render = |kind: &str, stored: &Value| -> Bytes {
            // Shown in the version asked for; copied only when it is not the stored one.
            let copy;
            let obj = if stored["apiVersion"] == api_version.as_str()
                && stored["kind"] == rt.kind.as_str()
            {
                stored
            } else {
                let mut o = stored.clone();
                o["apiVersion"] = json!(api_version);
                o["kind"] = json!(rt.kind);
                copy = o;
                &copy
            };
            let shown = match wants {
                crate::http::As::Table => {
                    let rv = obj["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    let mut t = table::table(
                        std::slice::from_ref(obj),
                        &rt.columns,
                        include,
                        &rv,
                        chrono::Utc::now(),
                    );
                    t["metadata"]["resourceVersion"] = json!(rv);
                    t
                }
                crate::http::As::Metadata => crate::http::partial(obj),
                crate::http::As::Object => return event_line(kind, obj),
            };
            event_line(kind, &shown)
        };
        let bookmark = |rv: u64, initial_end: bool| -> Bytes {
            let mut obj = json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": {"resourceVersion": rv.to_string()}});
            if initial_end {
                obj["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            Bytes::from(json!({"type": "BOOKMARK", "object": obj}).to_string() + "\n")
        };
        let mut last_rv = start_rv;
        for ev in &first {
            if let Some(kind) = filter.view(ev)
                && tx.send(Ok(render(kind, &ev.object))).await.is_err()
            {
                return;
            }
        }
        if send_initial && tx.send(Ok(bookmark(start_rv, true))).await.is_err() {
            return;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        let key = rt.store_key();
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                _ = tick.tick(), if bookmarks => {
                    if tx.send(Ok(bookmark(last_rv, false))).await.is_err() { return; }
                }
                _ = tx.closed() => return,
                ev = rx.recv() => match ev {
                    Ok(ev) => {
                        last_rv = last_rv.max(ev.rv);
                        if ev.key != key { continue; }
                        if let Some(kind) = filter.view(&ev)
                            && tx.send(Ok(render(kind, &ev.object))).await.is_err()
                        {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let status = ApiError::gone("the watch fell too far behind; start a new one").to_status();
                        let _ = tx.send(Ok(Bytes::from(json!({"type": "ERROR", "object": status}).to_string() + "\n"))).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    });
    Ok(Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(out),
    ))
}

/// One watch event as a line of JSON, written straight from the object.
fn event_line(kind: &str, object: &Value) -> Bytes {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        object: &'a Value,
    }
    let mut line = serde_json::to_vec(&Line { kind, object }).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}
