//! Events as the agent's triggers make them, for [`FakeHost::run`]: each
//! has a fresh id, the time [`FakeHost::START_MS`], and the source,
//! subject and fields its trigger gives. Change them with [`Event`]'s
//! plain fields or the `with_*` methods:
//!
//! ```
//! use medic_sdk::testing::{event, FakeHost};
//!
//! let late = event::schedule(900).at(FakeHost::START_MS + 3_600_000);
//! let bits = event::system_event("Windows Server Update Services", 364, "BITS ...")
//!     .about("BITS")
//!     .with_field("level", "error");
//! ```
//!
//! [`FakeHost::run`]: super::FakeHost::run
//! [`FakeHost::START_MS`]: super::FakeHost::START_MS

use super::FakeHost;
use crate::{Event, EventKind};
use std::sync::atomic::{AtomicU64, Ordering};

/// Event ids handed out so far, in every test.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn make(kind: EventKind, source: &str, subject: &str, fields: &[(&str, &str)]) -> Event {
    Event {
        id: format!("ev-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed)),
        kind,
        source: source.to_string(),
        time_ms: FakeHost::START_MS,
        subject: subject.to_string(),
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// An operator's `medic trigger`.
pub fn manual() -> Event {
    make(EventKind::Manual, "manual", "", &[])
}

/// The agent started.
pub fn startup() -> Event {
    make(EventKind::Startup, "startup", "", &[])
}

/// An `every` trigger of `seconds` fired.
pub fn schedule(seconds: u32) -> Event {
    make(EventKind::Schedule, &format!("every:{seconds}s"), "", &[])
}

/// `path` changed (`change`: `created`, `modified`, `attributes`,
/// `removed`), under the watched `path`.
pub fn file_changed(path: &str, change: &str) -> Event {
    make(
        EventKind::FileChanged,
        path,
        path,
        &[("change", change), ("path", path)],
    )
}

/// `line` was appended to the watched log `file`.
pub fn log_line(file: &str, line: &str) -> Event {
    make(EventKind::LogLine, file, file, &[("line", line)])
}

/// Entry `id` of `source` in the system's event log, with its message;
/// about `<source>/<id>` until [`Event::about`] names its subject.
pub fn system_event(source: &str, id: u32, message: &str) -> Event {
    make(
        EventKind::SystemEvent,
        &format!("event-log:{source}"),
        &format!("{source}/{id}"),
        &[("event-id", &id.to_string()), ("message", message)],
    )
}

/// An entry of the systemd journal about `unit`, written by `identifier`
/// (`systemd` for systemd's own lines about the unit).
pub fn journal(unit: &str, identifier: &str, message: &str) -> Event {
    make(
        EventKind::SystemEvent,
        &format!("journal:{unit}"),
        unit,
        &[
            ("unit", unit),
            ("identifier", identifier),
            ("message", message),
        ],
    )
}

/// The follow-up of the run that handled `previous`, as the agent makes
/// it: the same subject, `follows` and `reason` set. [`Run::follow_up_event`]
/// makes it from a run's request, due after its delay.
///
/// [`Run::follow_up_event`]: super::Run::follow_up_event
pub fn follow_up(previous: &Event, reason: &str) -> Event {
    make(
        EventKind::FollowUp,
        "follow-up",
        &previous.subject,
        &[("follows", &previous.id), ("reason", reason)],
    )
}

/// Natively, for tests: changing an event made here.
impl Event {
    /// The same event at `time_ms` (milliseconds since the Unix epoch).
    pub fn at(mut self, time_ms: u64) -> Self {
        self.time_ms = time_ms;
        self
    }

    /// The same event about `subject`.
    pub fn about(mut self, subject: &str) -> Self {
        self.subject = subject.to_string();
        self
    }

    /// The same event with the field `key` set to `value`.
    pub fn with_field(mut self, key: &str, value: &str) -> Self {
        self.fields.retain(|(k, _)| k != key);
        self.fields.push((key.to_string(), value.to_string()));
        self
    }
}
