//! Events and outcomes in medic's own, serializable form, whatever the
//! contract version: what triggers produce, what `medic trigger --event`
//! reads, what the audit journal keeps. Each contract version converts them
//! to and from its own types at the plugin boundary.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

pub use medic_backends::now_ms;

/// What woke a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", try_from = "String")]
pub enum EventKind {
    FileChanged,
    LogLine,
    SystemEvent,
    Schedule,
    Startup,
    Manual,
    /// A run the plugin's previous outcome asked for.
    FollowUp,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        Self::FileChanged,
        Self::LogLine,
        Self::SystemEvent,
        Self::Schedule,
        Self::Startup,
        Self::Manual,
        Self::FollowUp,
    ];

    /// The kind's name as events and policies write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FileChanged => "file-changed",
            Self::LogLine => "log-line",
            Self::SystemEvent => "system-event",
            Self::Schedule => "schedule",
            Self::Startup => "startup",
            Self::Manual => "manual",
            Self::FollowUp => "follow-up",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl TryFrom<String> for EventKind {
    type Error = EventError;

    fn try_from(name: String) -> Result<Self, EventError> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == name)
            .ok_or(EventError::Kind(name))
    }
}

/// An event: what triggers produce, what `medic trigger --event` reads,
/// what the audit journal keeps. As JSON, every field but `kind` may be
/// left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRecord {
    #[serde(default)]
    pub id: String,
    pub kind: EventKind,
    /// The trigger that produced it: the watched path, the log file, ...
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub time_ms: u64,
    /// What it is about; events for the same plugin and subject coalesce.
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

/// A new unique id: milliseconds and a process-wide counter, in hex.
pub fn new_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{:x}-{:x}-{n:x}", now_ms(), std::process::id())
}

impl EventRecord {
    /// A new event with a fresh id and the current time.
    pub fn new(
        kind: EventKind,
        source: impl Into<String>,
        subject: impl Into<String>,
        fields: BTreeMap<String, String>,
    ) -> Self {
        Self {
            id: new_id("ev"),
            kind,
            source: source.into(),
            time_ms: now_ms(),
            subject: subject.into(),
            fields,
        }
    }

    /// A manual event about `subject`.
    pub fn manual(subject: &str) -> Self {
        Self {
            id: String::new(),
            kind: EventKind::Manual,
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

    /// The event with a fresh id and the current time where they are
    /// missing.
    pub fn completed(mut self) -> Self {
        if self.id.is_empty() {
            self.id = new_id("ev");
        }
        if self.time_ms == 0 {
            self.time_ms = now_ms();
        }
        self
    }

    /// The value of one field.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
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

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Healthy,
    Remediated,
    Failed,
    NeedsApproval,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Remediated => "remediated",
            Self::Failed => "failed",
            Self::NeedsApproval => "needs-approval",
        }
    }

    /// Parse a status as the journal and the command line write it.
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::Healthy,
            Self::Remediated,
            Self::Failed,
            Self::NeedsApproval,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A later run a plugin asks for in its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowUp {
    /// Seconds to wait, within [`FollowUp::MAX_AFTER_SECONDS`].
    pub after_seconds: u32,
    /// Why, for the operator and the next run.
    pub reason: String,
}

impl FollowUp {
    /// The longest wait a plugin may ask for: a day.
    pub const MAX_AFTER_SECONDS: u32 = 86_400;
}

/// A plugin's outcome, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeRecord {
    pub status: Status,
    pub summary: String,
    pub actions: Vec<ActionRecord>,
    /// The run the plugin asked to come back for; contracts before 0.3.0
    /// cannot ask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_up: Option<FollowUp>,
}

/// Actions kept from one outcome.
pub const MAX_ACTIONS: usize = 1_000;

impl OutcomeRecord {
    /// The outcome as a plugin returned it, cleaned and cut to its budget
    /// (see [`crate::text`]): a summary of at most a few KiB, at most
    /// [`MAX_ACTIONS`] actions of bounded fields, the rest counted.
    pub fn bounded(mut self) -> Self {
        use crate::text::{MAX_FIELD_BYTES, MAX_MESSAGE_BYTES, clean_in_place};
        clean_in_place(&mut self.summary, MAX_MESSAGE_BYTES);
        if self.actions.len() > MAX_ACTIONS {
            let more = self.actions.len() - MAX_ACTIONS;
            self.actions.truncate(MAX_ACTIONS);
            self.summary
                .push_str(&format!(" ({more} more actions not recorded)"));
        }
        if let Some(follow_up) = &mut self.follow_up {
            follow_up.after_seconds = follow_up
                .after_seconds
                .clamp(1, FollowUp::MAX_AFTER_SECONDS);
            clean_in_place(&mut follow_up.reason, MAX_FIELD_BYTES);
        }
        for action in &mut self.actions {
            clean_in_place(&mut action.verb, MAX_FIELD_BYTES);
            clean_in_place(&mut action.target, MAX_FIELD_BYTES);
            clean_in_place(&mut action.detail, MAX_FIELD_BYTES);
        }
        self
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
        let event = record.completed();
        assert_eq!(event.kind, EventKind::SystemEvent);
        assert!(event.id.starts_with("ev-"));
        assert!(event.time_ms > 0);
        assert_eq!(event.field("event-id"), Some("364"));
        assert_eq!(event.subject, "BITS");
    }

    #[test]
    fn bad_events_get_clear_errors() {
        let unknown_key =
            EventRecord::from_json(r#"{"kind": "manual", "subjekt": "x"}"#).unwrap_err();
        assert!(unknown_key.to_string().contains("subjekt"), "{unknown_key}");
        let kind = EventRecord::from_json(r#"{"kind": "reboot"}"#).unwrap_err();
        assert!(kind.to_string().contains("unknown event kind `reboot`"));
        assert!(EventRecord::from_json("not json").is_err());
    }
}
