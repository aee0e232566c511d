//! Kubernetes Events (events.k8s.io/v1) for kelp's objects, aggregated into series the
//! way kube-runtime's `Recorder` does, with one difference: the message is part of the
//! series key. A repeat of the same text counts up (`MachinesCreated (x2)`); a new text
//! (`created 1 machine(s)` after `created 2 machine(s)`) is an Event of its own, so a
//! series never shows words that no longer hold.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};

/// How long a series stays open after its last occurrence (as kube-runtime's Recorder).
const SERIES_TTL: SignedDuration = SignedDuration::from_mins(6);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    regarding: String,
    warning: bool,
    reason: String,
    action: String,
    note: String,
}

struct Series {
    name: String,
    namespace: String,
    count: i32,
    last: Timestamp,
}

/// Publishes Events as controller `kelp` (instance: the Pod name when known).
pub struct Events {
    client: Client,
    instance: String,
    open: Mutex<HashMap<Key, Series>>,
}

impl Events {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            instance: std::env::var("POD_NAME").unwrap_or_else(|_| "kelp".into()),
            open: Mutex::default(),
        }
    }

    /// Publishes one occurrence: a new Event, or the next count of its open series.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let key = Key {
            regarding: regarding
                .uid
                .clone()
                .unwrap_or_else(|| format!("{namespace}/{:?}", regarding.name)),
            warning,
            reason: reason.into(),
            action: action.into(),
            note: note.clone(),
        };
        let repeat = {
            let mut open = self.open.lock().unwrap();
            open.retain(|_, s| s.last + SERIES_TTL > now);
            open.get_mut(&key).map(|s| {
                s.count += 1;
                s.last = now;
                (s.name.clone(), s.namespace.clone(), s.count)
            })
        };
        if let Some((name, ns, count)) = repeat {
            let patch = serde_json::json!({"series": EventSeries {
                count,
                last_observed_time: MicroTime(now),
            }});
            Api::<Event>::namespaced(self.client.clone(), &ns)
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            return Ok(());
        }
        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or("kelp"),
            now.as_nanosecond()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            action: Some(action.into()),
            reason: Some(reason.into()),
            note: Some(note),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some("kelp".into()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(if warning { "Warning" } else { "Normal" }.into()),
            ..Default::default()
        };
        Api::<Event>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &event)
            .await?;
        self.open.lock().unwrap().insert(
            key,
            Series {
                name,
                namespace,
                count: 1,
                last: now,
            },
        );
        Ok(())
    }
}
