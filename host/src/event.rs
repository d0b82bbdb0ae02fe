//! Events and outcomes in the agent's own, serializable form: what triggers
//! produce, what `medic trigger --event` reads, what the audit journal keeps.
//! Converted to and from the contract's types at the plugin boundary.

use crate::contract::{self, Event, EventKind, Outcome};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// An event as JSON: every field but `kind` may be left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRecord {
    #[serde(default)]
    pub id: String,
    /// `file-changed`, `log-line`, `system-event`, `schedule`, `startup` or
    /// `manual`.
    pub kind: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub time_ms: u64,
    #[serde(default)]
    pub subject: String,
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

/// An event could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error(
        "event is not valid JSON: {0}; expected e.g. {{\"kind\": \"manual\", \"subject\": \"BITS\"}}"
    )]
    Json(#[from] serde_json::Error),
    #[error(
        "unknown event kind `{0}`; expected file-changed, log-line, system-event, schedule, startup or manual"
    )]
    Kind(String),
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A new unique id: milliseconds and a process-wide counter, in hex.
pub fn new_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{:x}-{:x}-{n:x}", now_ms(), std::process::id())
}

impl EventRecord {
    /// A manual event about `subject`.
    pub fn manual(subject: &str) -> Self {
        Self {
            id: String::new(),
            kind: "manual".into(),
            source: "cli".into(),
            time_ms: 0,
            subject: subject.into(),
            fields: BTreeMap::new(),
        }
    }

    /// Parse the JSON form.
    pub fn from_json(text: &str) -> Result<Self, EventError> {
        Ok(serde_json::from_str(text)?)
    }

    /// The contract's event, filling in a fresh id and the current time
    /// where they are missing.
    pub fn to_contract(&self) -> Result<Event, EventError> {
        let kind: EventKind = contract::parse_event_kind(&self.kind)
            .ok_or_else(|| EventError::Kind(self.kind.clone()))?;
        Ok(Event {
            id: if self.id.is_empty() {
                new_id("ev")
            } else {
                self.id.clone()
            },
            kind,
            source: self.source.clone(),
            time_ms: if self.time_ms == 0 {
                now_ms()
            } else {
                self.time_ms
            },
            subject: self.subject.clone(),
            fields: self
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }

    /// The record of a contract event.
    pub fn from_contract(event: &Event) -> Self {
        Self {
            id: event.id.clone(),
            kind: event.kind.to_string(),
            source: event.source.clone(),
            time_ms: event.time_ms,
            subject: event.subject.clone(),
            fields: event.fields.iter().cloned().collect(),
        }
    }
}

/// One action, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRecord {
    pub verb: String,
    pub target: String,
    pub detail: String,
    pub applied: bool,
}

/// A plugin's outcome, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeRecord {
    /// `healthy`, `remediated`, `failed` or `needs-approval`.
    pub status: String,
    pub summary: String,
    pub actions: Vec<ActionRecord>,
}

impl From<&Outcome> for OutcomeRecord {
    fn from(outcome: &Outcome) -> Self {
        Self {
            status: outcome.status.to_string(),
            summary: outcome.summary.clone(),
            actions: outcome
                .actions
                .iter()
                .map(|a| ActionRecord {
                    verb: a.verb.clone(),
                    target: a.target.clone(),
                    detail: a.detail.clone(),
                    applied: a.applied,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_events_fill_in_id_and_time() {
        let record = EventRecord::from_json(
            r#"{"kind": "system-event", "subject": "BITS", "fields": {"event-id": "364"}}"#,
        )
        .unwrap();
        let event = record.to_contract().unwrap();
        assert_eq!(event.kind, EventKind::SystemEvent);
        assert!(event.id.starts_with("ev-"));
        assert!(event.time_ms > 0);
        assert_eq!(
            event.fields,
            vec![("event-id".to_string(), "364".to_string())]
        );
        assert_eq!(EventRecord::from_contract(&event).subject, "BITS");
    }

    #[test]
    fn bad_events_get_clear_errors() {
        let unknown_key =
            EventRecord::from_json(r#"{"kind": "manual", "subjekt": "x"}"#).unwrap_err();
        assert!(unknown_key.to_string().contains("subjekt"), "{unknown_key}");
        let kind = EventRecord::from_json(r#"{"kind": "reboot"}"#)
            .unwrap()
            .to_contract()
            .unwrap_err();
        assert!(kind.to_string().contains("unknown event kind `reboot`"));
        assert!(EventRecord::from_json("not json").is_err());
    }
}
