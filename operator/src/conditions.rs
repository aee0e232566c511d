//! Standard conditions: the transition time changes only when the status does.

use kelp_crds::{Condition, ConditionStatus};

/// Sets (or adds) the condition `type_`, keeping `lastTransitionTime` when the status is unchanged.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) {
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
}
