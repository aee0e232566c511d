//! Standard conditions: the transition time changes only when the status does.

use kelp_crds::{Condition, ConditionStatus};
use serde::Deserialize;

/// A condition as a reconcile finds it, before it is written under a type: its status,
/// a CamelCase reason and a message for people.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Finding {
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Finding {
    /// A True finding.
    pub fn yes(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: true,
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// A False finding.
    pub fn no(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: false,
            ..Self::yes(reason, message)
        }
    }

    /// Writes the finding as the condition `type_` (see [`set`]).
    pub fn set(&self, conditions: &mut Vec<Condition>, type_: &str, generation: Option<i64>) {
        set(
            conditions,
            type_,
            self.status,
            &self.reason,
            self.message.clone(),
            generation,
        );
    }
}

/// Condition types with abnormal-true polarity (kstatus): present only while True.
const ABNORMAL_TRUE: [&str; 2] = ["Reconciling", "Stalled"];

/// Sets (or adds) the condition `type_`, keeping `lastTransitionTime` when the status is
/// unchanged. `Reconciling` and `Stalled` are abnormal-true, as kstatus (Flux) and Argo CD
/// read them: set False, they are removed.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) {
    if !status && ABNORMAL_TRUE.contains(&type_) {
        conditions.retain(|c| c.r#type != type_);
        return;
    }
    let status = if status {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    };
    let message = message.into();
    let now = now();
    match conditions.iter_mut().find(|c| c.r#type == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now;
            }
            c.status = status;
            c.reason = reason.to_string();
            c.message = message;
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            r#type: type_.to_string(),
            status,
            reason: reason.to_string(),
            message,
            last_transition_time: now,
            observed_generation: generation,
        }),
    }
}

/// What every status kelp writes keeps, for kstatus (Flux) and Argo CD: a `Ready`
/// condition (False until a reconcile has said otherwise), and never `Reconciling` beside
/// `Stalled` (a stalled object is not making progress; kstatus would read it as still in
/// progress).
pub fn ensure_ready(conditions: &mut Vec<Condition>, generation: Option<i64>) {
    if is_true(conditions, "Stalled") {
        conditions.retain(|c| c.r#type != "Reconciling");
    }
    if get(conditions, "Ready").is_none() {
        set(
            conditions,
            "Ready",
            false,
            "Reconciling",
            "kelp has not finished reconciling this object",
            generation,
        );
    }
}

/// Whether `type_` is present with status True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.r#type == type_ && c.status == ConditionStatus::True)
}

/// The condition `type_`, when present.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.r#type == type_)
}

/// Whether `type_` turned True between `old` and `new` (for "became Ready" Events).
pub fn became_true(old: &[Condition], new: &[Condition], type_: &str) -> bool {
    !is_true(old, type_) && is_true(new, type_)
}

/// RFC 3339 now, to the second, as Kubernetes writes times.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_changes_only_with_the_status() {
        let mut conds = Vec::new();
        set(&mut conds, "Ready", false, "Provisioning", "a", Some(1));
        conds[0].last_transition_time = "2020-01-01T00:00:00Z".into();
        set(&mut conds, "Ready", false, "Provisioning", "b", Some(2));
        assert_eq!(conds[0].last_transition_time, "2020-01-01T00:00:00Z");
        assert_eq!(conds[0].message, "b");
        assert_eq!(conds[0].observed_generation, Some(2));
        set(&mut conds, "Ready", true, "Ready", "c", Some(2));
        assert_ne!(conds[0].last_transition_time, "2020-01-01T00:00:00Z");
        assert!(is_true(&conds, "Ready"));
        assert_eq!(conds.len(), 1);
    }

    #[test]
    fn reconciling_and_stalled_are_only_there_while_true() {
        let mut conds = Vec::new();
        set(
            &mut conds,
            "Stalled",
            true,
            "InvalidSpec",
            "spec.x is wrong",
            Some(1),
        );
        set(&mut conds, "Reconciling", true, "Provisioning", "", Some(1));
        assert_eq!(conds.len(), 2);
        set(&mut conds, "Stalled", false, "Progressing", "", Some(2));
        set(&mut conds, "Reconciling", false, "Reconciled", "", Some(2));
        assert!(conds.is_empty());
        ensure_ready(&mut conds, Some(2));
        assert_eq!(conds[0].r#type, "Ready");
        assert_eq!(conds[0].status, ConditionStatus::False);
        set(&mut conds, "Reconciling", true, "Provisioning", "", Some(2));
        set(
            &mut conds,
            "Stalled",
            true,
            "NoInstanceType",
            "no type fits",
            Some(2),
        );
        ensure_ready(&mut conds, Some(2));
        assert!(
            get(&conds, "Reconciling").is_none(),
            "stalled is not reconciling"
        );
    }
}
