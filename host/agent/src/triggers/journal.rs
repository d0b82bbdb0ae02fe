//! The `journal` trigger: new entries of the systemd journal, read through
//! `journalctl` (Linux). Every decision is pure and tested here; the task
//! at the end only runs journalctl and hands on what it printed.
//!
//! - The query ([`JournalQuery`]): `journalctl --follow --output=json
//!   --no-pager --all`, with `--directory=` for a journal folder,
//!   `--priority=0..N`, and the units and identifiers as journalctl
//!   matches: a unit's own entries (`_SYSTEMD_UNIT=x.service`) or, as the
//!   alternative after `+`, systemd's entries about it (`UNIT=x.service
//!   _PID=1`, as `journalctl -u` reads them: the "Failed with result" lines
//!   of a failing unit are these), each with the identifiers
//!   (`SYSLOG_IDENTIFIER=`, one of them). journalctl's `--follow` reads the
//!   current boot only.
//! - Where it starts: at the saved cursor (`--cursor=C`), the entry that
//!   is C itself, printed first when it is still there, being dropped; or,
//!   without one, at the time the trigger started (`--since=@SECONDS`), so
//!   that a first start replays no history and loses nothing written while
//!   journalctl opens the journal (it gives no sign of being ready). `--after-cursor` is not used: journalctl 252 skips the
//!   first entry after the cursor's place blindly, and so loses one when
//!   the cursor's own entry is gone (vacuumed) or not matched (another
//!   boot). A cursor journalctl refuses (it says so and exits before any
//!   entry) is dropped, with a warning, and the journal read from then on.
//! - An entry ([`JournalEntry`]): one line of journalctl's JSON. A field is
//!   a string, an array of bytes (data that is not printable UTF-8, read
//!   as UTF-8 with replacement characters), null (no value), or an array of
//!   such values when the entry has the field more than once (the first
//!   counts). The message is cut at the trigger's `max_line` and marked
//!   (`truncated`, `message_bytes`). A line longer than [`line_limit`] is
//!   skipped as it is read, never held; it and lines that are no entry are
//!   counted and reported, at the first and then at most once a minute.
//! - The filter: journalctl's matches are checked again on each entry
//!   ([`admits`]); the message pattern through the shared [`EventFilter`].
//! - The event ([`JournalEntry::record`]): made by the shared
//!   [`system_event`], source `journal:<identifier>`, subject the unit
//!   (else the identifier), fields `message`, `unit`, `priority` (0–7),
//!   `level` (its name), `identifier`, `pid`, `time`, `cursor`, `host`,
//!   `message-id`, each when the entry has it.
//! - The cursor: after each batch of entries (what journalctl had printed
//!   when the last was read, at most [`BATCH`]), the events and then
//!   [`Intake::JournalCursor`] are handed over together, and the dispatcher
//!   saves the cursor in the same transaction as the events before it,
//!   keyed by plugin and query ([`CursorKey`]) so that a changed match
//!   does not resume from an unrelated cursor.
//! - The process: killed when the trigger stops (a reload, the agent's
//!   end) and, on Linux, when the agent dies (`PR_SET_PDEATHSIG`). When it
//!   exits (rotation, vacuum, a crash), it starts again after the last
//!   entry read, after a pause that doubles from [`FIRST_RETRY`] to
//!   [`MAX_RETRY`]; the exit is logged once, with what journalctl said, and
//!   again only after it has read an entry or run a while.

use super::tail::{MalformedLog, Say};
use super::windows_events::{BoundedText, iso_time};
use super::{EventFilter, EventSink, Intake, Routed, SystemLog, system_event};
use crate::audit::{Store, StoreError};
use crate::policy::JournalMatch;
use medic_sandbox::EventRecord;
use serde::Deserialize;
use serde::de::{Deserializer, SeqAccess, Visitor};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::task::JoinHandle;

const CURSORS: &str = "journal_cursors";

/// The program that reads the journal, looked for in `PATH`.
pub const PROGRAM: &str = "journalctl";

/// The first pause before journalctl is started again.
pub const FIRST_RETRY: Duration = Duration::from_millis(100);

/// The longest pause before journalctl is started again.
pub const MAX_RETRY: Duration = Duration::from_secs(30);

/// A journalctl that ran this long before it exited was well: its exit is
/// told, and the pause starts again from [`FIRST_RETRY`].
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// The most entries read before the cursor is handed over.
pub const BATCH: usize = 64;

/// How much of journalctl's last words (stderr) is kept.
const STDERR_KEPT: usize = 4096;

/// How long journalctl's stderr is waited for once it has exited.
const STDERR_WAIT: Duration = Duration::from_secs(1);

// ---- priorities ----

/// The syslog levels, by number.
pub const LEVELS: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// A syslog priority, 0 (`emerg`, most urgent) to 7 (`debug`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Priority(u8);

impl Priority {
    pub fn new(number: u8) -> Option<Self> {
        (usize::from(number) < LEVELS.len()).then_some(Self(number))
    }

    /// A level's name (`err`) or number (`3`), as journalctl writes them.
    pub fn parse(text: &str) -> Option<Self> {
        if let Some(n) = LEVELS.iter().position(|level| *level == text) {
            return u8::try_from(n).ok().and_then(Self::new);
        }
        match text.as_bytes() {
            [digit @ b'0'..=b'7'] => Self::new(*digit - b'0'),
            _ => None,
        }
    }

    pub fn number(self) -> u8 {
        self.0
    }

    pub fn name(self) -> &'static str {
        LEVELS[usize::from(self.0)]
    }
}

// ---- the match ----

/// The unit types systemd knows: a name without one of them is a service.
pub const UNIT_TYPES: [&str; 11] = [
    "service",
    "socket",
    "target",
    "device",
    "mount",
    "automount",
    "swap",
    "timer",
    "path",
    "slice",
    "scope",
];

/// The longest unit name systemd takes.
pub const UNIT_NAME_MAX: usize = 255;

/// Why a unit or an identifier cannot be matched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatchError {
    #[error("a unit name is empty")]
    EmptyUnit,
    #[error("unit {0:?} is a pattern: the journal is matched by whole unit names")]
    UnitPattern(String),
    #[error("unit {0:?} holds {1:?}, which no unit name holds")]
    UnitCharacter(String, char),
    #[error("unit {0:?} is a template, which writes no entries: its instances do")]
    UnitTemplate(String),
    #[error("unit {0:?} is longer than the {UNIT_NAME_MAX} bytes of a unit name")]
    UnitTooLong(String),
    #[error("an identifier is empty")]
    EmptyIdentifier,
    #[error("identifier {0:?} holds a control character")]
    IdentifierControl(String),
}

/// A unit's full name: `nginx` is `nginx.service`, as systemctl reads it.
pub fn unit_name(text: &str) -> Result<String, MatchError> {
    if text.is_empty() {
        return Err(MatchError::EmptyUnit);
    }
    if text.contains(['*', '?', '[']) {
        return Err(MatchError::UnitPattern(text.to_string()));
    }
    if let Some(c) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ":-_.\\@".contains(*c)))
    {
        return Err(MatchError::UnitCharacter(text.to_string(), c));
    }
    let typed = text
        .rsplit_once('.')
        .is_some_and(|(_, suffix)| UNIT_TYPES.contains(&suffix));
    let name = if typed {
        text.to_string()
    } else {
        format!("{text}.service")
    };
    let Some((prefix, _)) = name.rsplit_once('.') else {
        return Err(MatchError::EmptyUnit);
    };
    if prefix.is_empty() {
        return Err(MatchError::EmptyUnit);
    }
    if prefix.ends_with('@') {
        return Err(MatchError::UnitTemplate(text.to_string()));
    }
    if name.len() > UNIT_NAME_MAX {
        return Err(MatchError::UnitTooLong(text.to_string()));
    }
    Ok(name)
}

/// A `SYSLOG_IDENTIFIER` to match.
pub fn identifier(text: &str) -> Result<String, MatchError> {
    if text.is_empty() {
        return Err(MatchError::EmptyIdentifier);
    }
    if text.chars().any(char::is_control) {
        return Err(MatchError::IdentifierControl(text.to_string()));
    }
    Ok(text.to_string())
}

/// Which journal a match reads, for messages.
pub fn describe(matching: &JournalMatch) -> String {
    match &matching.directory {
        Some(directory) => format!("the journal in {}", directory.display()),
        None => "the system journal".to_string(),
    }
}

/// Whether an entry is one `matching` takes: what journalctl was asked
/// for, checked again.
pub fn admits(matching: &JournalMatch, entry: &JournalEntry) -> bool {
    let from_systemd = entry.pid.as_deref() == Some("1");
    let unit = matching.units.is_empty()
        || matching.units.iter().any(|unit| {
            entry.systemd_unit.as_deref() == Some(unit)
                || (from_systemd && entry.unit.as_deref() == Some(unit))
        });
    let priority = matching
        .priority
        .is_none_or(|least| entry.priority.is_some_and(|p| p <= least));
    let identifier = matching.identifiers.is_empty()
        || entry
            .identifier
            .as_ref()
            .is_some_and(|i| matching.identifiers.contains(i));
    unit && priority && identifier
}

// ---- the query ----

/// Where journalctl starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start<'a> {
    /// With the entries written from this time on (the trigger's start):
    /// none is lost while journalctl starts, none older is replayed.
    Since(SystemTime),
    /// At this cursor's entry (printed first if it is still there), or
    /// where it was.
    Cursor(&'a str),
}

/// What journalctl is asked for a trigger's match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalQuery {
    directory: Option<PathBuf>,
    priority: Option<Priority>,
    /// The match arguments, alternatives separated by `+`.
    matches: Vec<String>,
}

impl JournalQuery {
    pub fn new(matching: &JournalMatch) -> Self {
        let identifiers = matching
            .identifiers
            .iter()
            .map(|i| format!("SYSLOG_IDENTIFIER={i}"));
        let mut matches = Vec::new();
        if matching.units.is_empty() {
            matches.extend(identifiers);
        } else {
            // Matches on one field are alternatives, on different fields
            // all hold, and `+` starts another alternative.
            matches.extend(matching.units.iter().map(|u| format!("_SYSTEMD_UNIT={u}")));
            matches.extend(identifiers.clone());
            matches.push("+".to_string());
            matches.extend(matching.units.iter().map(|u| format!("UNIT={u}")));
            matches.push("_PID=1".to_string());
            matches.extend(identifiers);
        }
        Self {
            directory: matching.directory.clone(),
            priority: matching.priority,
            matches,
        }
    }

    /// The match arguments.
    pub fn matches(&self) -> &[String] {
        &self.matches
    }

    /// journalctl's arguments, starting from `start`.
    pub fn args(&self, start: Start<'_>) -> Vec<OsString> {
        let mut args: Vec<OsString> = ["--follow", "--output=json", "--no-pager", "--all"]
            .into_iter()
            .map(OsString::from)
            .collect();
        if let Some(directory) = &self.directory {
            let mut arg = OsString::from("--directory=");
            arg.push(directory);
            args.push(arg);
        }
        if let Some(priority) = self.priority {
            args.push(format!("--priority=0..{}", priority.number()).into());
        }
        args.push(match start {
            Start::Since(time) => {
                let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
                format!("--since=@{}.{:06}", since.as_secs(), since.subsec_micros()).into()
            }
            Start::Cursor(cursor) => format!("--cursor={cursor}").into(),
        });
        args.extend(self.matches.iter().map(OsString::from));
        args
    }
}

// ---- an entry ----

/// Why a line of journalctl's output is no entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("it is no JSON object of journal fields: {0}")]
    NotJson(String),
    #[error("it has no __CURSOR")]
    NoCursor,
    #[error("it is {bytes} bytes long, more than the {limit} read of one entry")]
    TooLong { bytes: usize, limit: usize },
}

/// The longest line of journalctl's output read for a trigger cutting
/// messages at `max_line`: room for a message of that many bytes written
/// as an array of numbers, and the other fields.
pub fn line_limit(max_line: usize) -> usize {
    max_line.saturating_mul(4).saturating_add(1 << 20)
}

/// One field's value as journalctl's JSON gives it: its bytes, or none
/// (null).
#[derive(Debug, Default)]
struct FieldValue(Option<Vec<u8>>);

impl FieldValue {
    fn text(self) -> Option<String> {
        self.0.map(|bytes| match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }
}

/// One item of a JSON array: a byte of a binary value, or one of the
/// values of a field an entry has more than once.
enum Item {
    Byte(u8),
    Value(FieldValue),
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = FieldValue;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a journal field: a string, an array of bytes, null, or an array of them")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FieldValue, E> {
        Ok(FieldValue(Some(v.as_bytes().to_vec())))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<FieldValue, E> {
        Ok(FieldValue(Some(v.into_bytes())))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<FieldValue, E> {
        Ok(FieldValue(Some(v.to_string().into_bytes())))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<FieldValue, E> {
        Ok(FieldValue(Some(v.to_string().into_bytes())))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<FieldValue, E> {
        Ok(FieldValue(Some(v.to_string().into_bytes())))
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<FieldValue, E> {
        Ok(FieldValue(Some(v.to_string().into_bytes())))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<FieldValue, E> {
        Ok(FieldValue(None))
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<FieldValue, E> {
        Ok(FieldValue(None))
    }

    /// Numbers are the bytes of one value; anything else is one of the
    /// values of a repeated field, the first of which counts.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FieldValue, A::Error> {
        let mut bytes = Vec::new();
        let mut first: Option<FieldValue> = None;
        while let Some(item) = seq.next_element::<Item>()? {
            match item {
                Item::Byte(b) => bytes.push(b),
                Item::Value(value) => {
                    if first.is_none() {
                        first = Some(value);
                    }
                }
            }
        }
        Ok(first.unwrap_or(FieldValue(Some(bytes))))
    }
}

impl<'de> Deserialize<'de> for FieldValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldVisitor)
    }
}

struct ItemVisitor;

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = Item;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a byte or a journal field value")
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Item, E> {
        u8::try_from(v)
            .map(Item::Byte)
            .map_err(|_| E::custom(format!("{v} is no byte")))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Item, E> {
        u8::try_from(v)
            .map(Item::Byte)
            .map_err(|_| E::custom(format!("{v} is no byte")))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Item, E> {
        FieldVisitor.visit_str(v).map(Item::Value)
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Item, E> {
        FieldVisitor.visit_string(v).map(Item::Value)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Item, E> {
        Ok(Item::Value(FieldValue(None)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Item, A::Error> {
        FieldVisitor.visit_seq(seq).map(Item::Value)
    }
}

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ItemVisitor)
    }
}

/// The fields of an entry that are read; the others are skipped unread.
#[derive(Deserialize)]
struct RawEntry {
    #[serde(rename = "__CURSOR")]
    cursor: Option<FieldValue>,
    #[serde(rename = "__REALTIME_TIMESTAMP")]
    realtime: Option<FieldValue>,
    #[serde(rename = "MESSAGE")]
    message: Option<FieldValue>,
    #[serde(rename = "MESSAGE_ID")]
    message_id: Option<FieldValue>,
    #[serde(rename = "PRIORITY")]
    priority: Option<FieldValue>,
    #[serde(rename = "SYSLOG_IDENTIFIER")]
    identifier: Option<FieldValue>,
    #[serde(rename = "_COMM")]
    command: Option<FieldValue>,
    #[serde(rename = "_PID")]
    pid: Option<FieldValue>,
    #[serde(rename = "_SYSTEMD_UNIT")]
    systemd_unit: Option<FieldValue>,
    #[serde(rename = "UNIT")]
    unit: Option<FieldValue>,
    #[serde(rename = "_HOSTNAME")]
    host: Option<FieldValue>,
}

/// One journal entry, as much of it as a trigger uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// `__CURSOR`: where it is in the journal.
    pub cursor: String,
    /// `__REALTIME_TIMESTAMP`.
    pub time: Option<SystemTime>,
    /// `MESSAGE` (empty when there is none), cut at `max_line`.
    pub message: BoundedText,
    /// `MESSAGE_ID`: what kind of message (systemd's unit failures have
    /// one of their own).
    pub message_id: Option<String>,
    /// `PRIORITY`.
    pub priority: Option<Priority>,
    /// `SYSLOG_IDENTIFIER`.
    pub identifier: Option<String>,
    /// `_COMM`: the writer's command name.
    pub command: Option<String>,
    /// `_PID`: the writer's process, as the journal saw it.
    pub pid: Option<String>,
    /// `_SYSTEMD_UNIT`: the unit of the writer's process.
    pub systemd_unit: Option<String>,
    /// `UNIT`: the unit systemd writes about (trusted only from PID 1).
    pub unit: Option<String>,
    /// `_HOSTNAME`.
    pub host: Option<String>,
}

impl JournalEntry {
    /// Read one line of `journalctl --output=json`, its message cut at
    /// `max_line` bytes (at least 1).
    pub fn parse(line: &[u8], max_line: usize) -> Result<Self, EntryError> {
        let raw: RawEntry =
            serde_json::from_slice(line).map_err(|e| EntryError::NotJson(e.to_string()))?;
        let text = |value: Option<FieldValue>| value.and_then(FieldValue::text);
        let cursor = text(raw.cursor)
            .filter(|c| !c.is_empty())
            .ok_or(EntryError::NoCursor)?;
        Ok(Self {
            cursor,
            time: text(raw.realtime)
                .and_then(|t| t.trim().parse::<u64>().ok())
                .and_then(|micros| UNIX_EPOCH.checked_add(Duration::from_micros(micros))),
            message: BoundedText::new(&text(raw.message).unwrap_or_default(), max_line),
            message_id: text(raw.message_id),
            priority: text(raw.priority).and_then(|p| Priority::parse(p.trim())),
            identifier: text(raw.identifier),
            command: text(raw.command),
            pid: text(raw.pid),
            systemd_unit: text(raw.systemd_unit),
            unit: text(raw.unit),
            host: text(raw.host),
        })
    }

    /// The unit the entry is about: the one systemd (PID 1) names, or else
    /// the one whose process wrote it.
    pub fn about_unit(&self) -> Option<&str> {
        self.unit
            .as_deref()
            .filter(|_| self.pid.as_deref() == Some("1"))
            .or(self.systemd_unit.as_deref())
    }

    /// Who wrote it: its identifier, or else its command.
    pub fn source(&self) -> &str {
        self.identifier
            .as_deref()
            .or(self.command.as_deref())
            .unwrap_or("journal")
    }

    /// The plugin's event for it.
    pub fn record(&self) -> EventRecord {
        let mut fields: Vec<(String, String)> = Vec::new();
        let mut field = |key: &str, value: &str| fields.push((key.to_string(), value.to_string()));
        if let Some(time) = self.time {
            field("time", &iso_time(time));
        }
        if let Some(unit) = self.about_unit() {
            field("unit", unit);
        }
        if let Some(priority) = self.priority {
            field("priority", &priority.number().to_string());
            field("level", priority.name());
        }
        if let Some(identifier) = &self.identifier {
            field("identifier", identifier);
        }
        if let Some(pid) = &self.pid {
            field("pid", pid);
        }
        if let Some(host) = &self.host {
            field("host", host);
        }
        if let Some(message_id) = &self.message_id {
            field("message-id", message_id);
        }
        field("cursor", &self.cursor);
        if self.message.is_cut() {
            field("truncated", "true");
            field("message_bytes", &self.message.bytes.to_string());
        }
        field("message", &self.message.text);
        system_event(
            SystemLog::Journal,
            self.source(),
            None,
            self.about_unit().map(str::to_string),
            fields,
        )
    }
}

// ---- the cursor ----

/// Whose cursor in which journal, for which match: one per plugin and
/// query, so that a changed match starts afresh.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CursorKey(String);

impl CursorKey {
    pub fn new(plugin: &str, query: &JournalQuery) -> Self {
        let directory = query
            .directory
            .as_ref()
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_default();
        let priority = query
            .priority
            .map(|p| p.number().to_string())
            .unwrap_or_default();
        Self(format!(
            "{plugin}\u{0}{directory}\u{0}{priority}\u{0}{}",
            query.matches.join("\u{0}")
        ))
    }
}

/// The cursor saved for `key`, if any.
pub fn load_cursor(store: &Store, key: &CursorKey) -> Option<String> {
    store.get_json(CURSORS, &key.0)
}

/// Save a cursor inside the dispatcher's transaction, with the events read
/// before it.
pub fn write_cursor(
    txn: &redb::WriteTransaction,
    key: &CursorKey,
    cursor: &str,
) -> Result<(), StoreError> {
    let definition = redb::TableDefinition::<&str, &[u8]>::new(CURSORS);
    // Serialising a string cannot fail.
    let bytes = serde_json::to_vec(cursor).unwrap_or_default();
    txn.open_table(definition)?
        .insert(key.0.as_str(), bytes.as_slice())?;
    Ok(())
}

// ---- the journal followed ----

/// One line of journalctl's output, as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputLine<'a> {
    /// A whole line, without its end.
    Whole(&'a [u8]),
    /// A line longer than the limit, skipped: its length.
    TooLong(usize),
}

/// The journal followed for one trigger: what journalctl prints becomes
/// what the dispatcher takes.
#[derive(Debug)]
pub struct JournalReader {
    plugin: String,
    query: JournalQuery,
    key: CursorKey,
    matching: JournalMatch,
    /// The message pattern; its source and ids are left empty, journalctl's
    /// matches standing for them.
    filter: EventFilter,
    max_line: usize,
    /// Lines read so far: where a malformed one was.
    read: u64,
    malformed: MalformedLog,
}

impl JournalReader {
    pub fn new(
        plugin: String,
        matching: &JournalMatch,
        message: Option<regex::Regex>,
        max_line: usize,
    ) -> Self {
        let query = JournalQuery::new(matching);
        let key = CursorKey::new(&plugin, &query);
        Self {
            plugin,
            query,
            key,
            matching: matching.clone(),
            filter: EventFilter {
                source: None,
                ids: Vec::new(),
                message,
            },
            max_line,
            read: 0,
            malformed: MalformedLog::default(),
        }
    }

    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    pub fn query(&self) -> &JournalQuery {
        &self.query
    }

    pub fn key(&self) -> &CursorKey {
        &self.key
    }

    /// The longest line read.
    pub fn line_limit(&self) -> usize {
        line_limit(self.max_line)
    }

    /// Read one line; none when it is no entry (reported at the first,
    /// then at most once a minute with the count).
    pub fn parse(&mut self, line: OutputLine<'_>) -> Option<JournalEntry> {
        self.read += 1;
        let now = Instant::now();
        let parsed = match line {
            OutputLine::Whole(bytes) => JournalEntry::parse(bytes, self.max_line),
            OutputLine::TooLong(bytes) => Err(EntryError::TooLong {
                bytes,
                limit: self.line_limit(),
            }),
        };
        let say = match &parsed {
            Ok(_) => self.malformed.due(now),
            Err(_) => self.malformed.saw(self.read, now),
        };
        let plugin = &self.plugin;
        match (say, &parsed) {
            (Some(Say::First { offset }), Err(e)) => tracing::warn!(
                plugin,
                line = offset,
                "a line journalctl printed was skipped: {e}; more are counted and reported at most once a minute"
            ),
            (Some(Say::Summary { count, .. }), _) => tracing::warn!(
                plugin,
                count,
                "lines journalctl printed that are no journal entry were skipped since the last report"
            ),
            _ => {}
        }
        parsed.ok()
    }

    /// The intake for an entry; none when the trigger does not take it.
    pub fn intake(&self, entry: &JournalEntry) -> Option<Intake> {
        if !admits(&self.matching, entry)
            || !self.filter.admits(entry.source(), 0, &entry.message.text)
        {
            return None;
        }
        Some(Routed::new(self.plugin.clone(), entry.record()).into())
    }

    /// The intake that saves a cursor, sent after the events before it.
    pub fn cursor(&self, cursor: String) -> Intake {
        Intake::JournalCursor {
            key: self.key.clone(),
            cursor,
        }
    }
}

/// Why a `journal` trigger cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "journalctl is not in PATH: a `journal` trigger reads the systemd journal with it; install the package `systemd` (the systemd journal is Linux's)"
    )]
    NoJournalctl,
    #[error(
        "{} is not a folder: name the folder of a journal, such as /var/log/journal or a container's run/log/journal",
        .0.display()
    )]
    NoDirectory(PathBuf),
}

/// The executable `name` in the folders of `path` (a `PATH` value).
pub fn find_program(name: &str, path: Option<&OsStr>) -> Option<PathBuf> {
    std::env::split_paths(path?)
        .filter(|folder| !folder.as_os_str().is_empty())
        .map(|folder| folder.join(name))
        .find(|candidate| is_executable(candidate))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

/// Start following the journal for `plugin`: the new entries `matching`
/// takes whose message matches `message`, after the saved cursor (or from
/// now), each message cut at `max_line` bytes. journalctl is looked for in
/// `PATH`.
pub fn spawn(
    plugin: String,
    matching: &JournalMatch,
    message: Option<regex::Regex>,
    max_line: usize,
    store: Store,
    sink: EventSink,
) -> Result<JoinHandle<()>, StartError> {
    let program = find_program(PROGRAM, std::env::var_os("PATH").as_deref())
        .ok_or(StartError::NoJournalctl)?;
    spawn_with(&program, plugin, matching, message, max_line, store, sink)
}

/// [`spawn`], with this program standing for journalctl.
pub fn spawn_with(
    program: &Path,
    plugin: String,
    matching: &JournalMatch,
    message: Option<regex::Regex>,
    max_line: usize,
    store: Store,
    sink: EventSink,
) -> Result<JoinHandle<()>, StartError> {
    if let Some(directory) = &matching.directory
        && !directory.is_dir()
    {
        return Err(StartError::NoDirectory(directory.clone()));
    }
    let reader = JournalReader::new(plugin, matching, message, max_line);
    let cursor = load_cursor(&store, reader.key());
    let follower = Follower {
        program: program.to_path_buf(),
        journal: describe(matching),
        reader,
        cursor,
        since: SystemTime::now(),
        sink,
        failing: false,
    };
    Ok(tokio::spawn(follower.run()))
}

/// The dispatcher is gone: the task ends.
struct Closed;

/// How one journalctl ended.
#[derive(Debug)]
struct Ended {
    /// Its exit status, or why it did not run.
    how: String,
    refused_cursor: bool,
    /// New entries it printed.
    entries: u64,
    lived: Duration,
}

/// journalctl run, and run again, for one trigger.
struct Follower {
    program: PathBuf,
    journal: String,
    reader: JournalReader,
    /// The last entry handed over (or the saved one): where a new
    /// journalctl starts.
    cursor: Option<String>,
    /// Where it starts without a cursor: when the trigger started, or when
    /// a refused cursor was dropped.
    since: SystemTime,
    sink: EventSink,
    /// An exit was told, and nothing read since.
    failing: bool,
}

impl Follower {
    async fn run(mut self) {
        let mut pause = FIRST_RETRY;
        loop {
            let resumed = self.cursor.clone();
            let Ok(ended) = self.run_once().await else {
                return;
            };
            let plugin = self.reader.plugin().to_string();
            let plugin = plugin.as_str();
            if ended.entries > 0 || ended.lived >= HEALTHY_RUN {
                pause = FIRST_RETRY;
                self.failing = false;
            }
            if let Some(cursor) = resumed
                && ended.entries == 0
                && ended.refused_cursor
            {
                tracing::warn!(
                    plugin,
                    journal = self.journal,
                    cursor,
                    "journalctl cannot start at the saved cursor ({}): reading the journal from its end, so what was written since the cursor was saved is not read",
                    ended.how
                );
                self.cursor = None;
                self.since = SystemTime::now();
                continue;
            }
            // The pause comes first: a journalctl stopped with the agent (a
            // service manager signals every process of the service) is
            // not reported, its trigger being stopped meanwhile.
            tokio::time::sleep(pause).await;
            if !self.failing {
                tracing::warn!(
                    plugin,
                    journal = self.journal,
                    "journalctl {}; it is started again after the last entry read, then at most every {MAX_RETRY:?} while it fails (said again once it has read an entry)",
                    ended.how
                );
                self.failing = true;
            }
            pause = (pause * 2).min(MAX_RETRY);
        }
    }

    /// Run journalctl until it exits, handing over what it prints.
    async fn run_once(&mut self) -> Result<Ended, Closed> {
        let started = Instant::now();
        let start = self.cursor.clone();
        let args = self.reader.query().args(
            start
                .as_deref()
                .map_or(Start::Since(self.since), Start::Cursor),
        );
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        die_with_agent(&mut command);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                return Ok(Ended {
                    how: format!("cannot run as {}: {e}", self.program.display()),
                    refused_cursor: false,
                    entries: 0,
                    lived: started.elapsed(),
                });
            }
        };
        let stderr = child.stderr.take().map(|e| tokio::spawn(last_words(e)));
        let mut entries = 0;
        if let Some(stdout) = child.stdout.take() {
            entries = self
                .read(BufReader::with_capacity(64 << 10, stdout), start)
                .await?;
        }
        let status = child.wait().await;
        let said = match stderr {
            Some(task) => tokio::time::timeout(STDERR_WAIT, task)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default(),
            None => String::new(),
        };
        let mut how = match status {
            Ok(status) => format!("exited ({status})"),
            Err(e) => format!("ended, its status unknown ({e})"),
        };
        if !said.is_empty() {
            how.push_str(&format!(", saying: {said}"));
        }
        Ok(Ended {
            refused_cursor: said.contains("cursor"),
            how,
            entries,
            lived: started.elapsed(),
        })
    }

    /// Read journalctl's output to its end, a batch at a time: the entries
    /// it had printed when the last was read, up to [`BATCH`] (and what the
    /// dispatcher can take at once). Returns how many new entries were
    /// read (the start cursor's own entry is none).
    async fn read<R: AsyncRead + Unpin>(
        &mut self,
        mut output: BufReader<R>,
        start: Option<String>,
    ) -> Result<u64, Closed> {
        let limit = self.reader.line_limit();
        let most = BATCH.min(self.sink.max_capacity().saturating_sub(1)).max(1);
        let mut line = Vec::new();
        let mut entries = 0;
        // The entry the start cursor names, printed first if it is still
        // there, was handed over before.
        let mut skip = start;
        loop {
            let mut events = Vec::new();
            let mut last = None;
            let mut taken = 0;
            let ended = loop {
                let read = match read_line(&mut output, &mut line, limit).await {
                    Ok(Read::End) | Err(_) => break true,
                    Ok(Read::Line) => OutputLine::Whole(&line),
                    Ok(Read::TooLong(bytes)) => OutputLine::TooLong(bytes),
                    // Cut off by journalctl's end: no entry.
                    Ok(Read::Unfinished) => continue,
                };
                taken += 1;
                if let Some(entry) = self.reader.parse(read)
                    && skip.take().is_none_or(|cursor| cursor != entry.cursor)
                {
                    entries += 1;
                    events.extend(self.reader.intake(&entry));
                    last = Some(entry.cursor);
                }
                if taken >= most || output.buffer().is_empty() {
                    break false;
                }
            };
            if let Some(cursor) = last {
                self.hand_over(events, cursor).await?;
            }
            if ended {
                return Ok(entries);
            }
        }
    }

    /// The events of a batch and the cursor after them, handed over
    /// together: a trigger stopped meanwhile sends all or none.
    async fn hand_over(&mut self, events: Vec<Intake>, cursor: String) -> Result<(), Closed> {
        let permits = self
            .sink
            .reserve_many(events.len() + 1)
            .await
            .map_err(|_| Closed)?;
        let intakes = events
            .into_iter()
            .chain(std::iter::once(self.reader.cursor(cursor.clone())));
        for (permit, intake) in permits.zip(intakes) {
            permit.send(intake);
        }
        self.cursor = Some(cursor);
        if self.failing {
            self.failing = false;
            tracing::info!(
                plugin = self.reader.plugin(),
                journal = self.journal,
                "journalctl reads the journal again"
            );
        }
        Ok(())
    }
}

/// How a line was read.
#[derive(Debug, PartialEq, Eq)]
enum Read {
    /// A whole line, in the buffer.
    Line,
    /// A line longer than the limit, skipped: its length.
    TooLong(usize),
    /// The output ended within a line.
    Unfinished,
    /// The output ended.
    End,
}

/// Read one line into `line` (without its end), holding at most `limit`
/// bytes of it: the rest of a longer line is skipped as it is read.
async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<Read> {
    line.clear();
    let mut bytes = 0usize;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if bytes == 0 {
                Read::End
            } else {
                Read::Unfinished
            });
        }
        let (part, used, whole) = match available.iter().position(|b| *b == b'\n') {
            Some(end) => (&available[..end], end + 1, true),
            None => (available, available.len(), false),
        };
        bytes = bytes.saturating_add(part.len());
        if bytes <= limit {
            line.extend_from_slice(part);
        } else {
            line.clear();
        }
        reader.consume(used);
        if whole {
            return Ok(if bytes > limit {
                Read::TooLong(bytes)
            } else {
                Read::Line
            });
        }
    }
}

/// What a process wrote to stderr, its last [`STDERR_KEPT`] bytes.
async fn last_words(mut stderr: tokio::process::ChildStderr) -> String {
    let mut kept = Vec::new();
    let mut chunk = [0u8; 1024];
    while let Ok(n) = stderr.read(&mut chunk).await
        && n > 0
    {
        kept.extend_from_slice(&chunk[..n]);
        if kept.len() > STDERR_KEPT {
            kept.drain(..kept.len() - STDERR_KEPT);
        }
    }
    String::from_utf8_lossy(&kept)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// journalctl is killed with the agent, even by `kill -9`, rather than
/// left following the journal for no one.
#[cfg(target_os = "linux")]
fn die_with_agent(command: &mut tokio::process::Command) {
    let agent = std::process::id();
    // SAFETY: between fork and exec the closure makes only async-signal-safe
    // calls (prctl, getppid) and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The agent died before the call: nothing will send the signal.
            if u32::try_from(libc::getppid()).ok() != Some(agent) {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_agent(_command: &mut tokio::process::Command) {}

#[cfg(test)]
mod tests {
    use super::*;
    use medic_sandbox::EventKind;
    use tokio::sync::mpsc;

    const SERVICE_STDERR: &str = include_str!("fixtures/journal/service-stderr.json");
    const UNIT_FAILED: &str = include_str!("fixtures/journal/unit-failed.json");
    const MESSAGE_BYTES: &str = include_str!("fixtures/journal/message-bytes.json");
    const MESSAGE_NULL: &str = include_str!("fixtures/journal/message-null.json");
    const REPEATED_FIELD: &str = include_str!("fixtures/journal/repeated-field.json");
    const FAKE_JOURNALCTL: &str = include_str!("fixtures/journal/fake-journalctl");

    fn entry(json: &str) -> JournalEntry {
        JournalEntry::parse(json.trim_end().as_bytes(), 64 << 10).unwrap()
    }

    /// Now, as the journal stamps an entry.
    fn now_micros() -> u128 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros()
    }

    fn matching(units: &[&str], priority: Option<&str>, identifiers: &[&str]) -> JournalMatch {
        JournalMatch {
            units: units.iter().map(|u| unit_name(u).unwrap()).collect(),
            priority: priority.map(|p| Priority::parse(p).unwrap()),
            identifiers: identifiers.iter().map(|i| i.to_string()).collect(),
            directory: None,
        }
    }

    #[test]
    fn an_entry_stamped_past_the_year_9999_still_makes_an_event() {
        // Found by the journal_entry fuzz target: RFC 3339 cannot write
        // such a year, and formatting it panicked.
        let line = br#"{"__CURSOR":"s=1;i=2","__REALTIME_TIMESTAMP":"00008009811950264694668","MESSAGE":"m"}"#;
        let entry = JournalEntry::parse(line, 1024).unwrap();
        let record = entry.record();
        assert_eq!(record.fields["time"], "@8009811950264");
    }

    #[test]
    fn priorities_are_read_by_name_or_number_and_nothing_else() {
        for (n, name) in LEVELS.iter().enumerate() {
            let by_name = Priority::parse(name).unwrap();
            assert_eq!(Priority::parse(&n.to_string()), Some(by_name));
            assert_eq!(usize::from(by_name.number()), n);
            assert_eq!(by_name.name(), *name);
        }
        assert!(Priority::parse("emerg") < Priority::parse("err"));
        for bad in ["error", "warn", "ERR", "8", "-1", "03", " 3", "", "crit "] {
            assert_eq!(Priority::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Priority::new(8), None);
    }

    #[test]
    fn unit_names_are_completed_as_systemctl_does_and_checked() {
        for (given, full) in [
            ("nginx", "nginx.service"),
            ("nginx.service", "nginx.service"),
            ("var-lib.mount", "var-lib.mount"),
            ("getty@tty1.service", "getty@tty1.service"),
            ("getty@tty1", "getty@tty1.service"),
            ("my.app", "my.app.service"),
            ("logrotate.timer", "logrotate.timer"),
            ("-.slice", "-.slice"),
            (
                "systemd-fsck@dev-disk-by\\x2duuid-1.service",
                "systemd-fsck@dev-disk-by\\x2duuid-1.service",
            ),
        ] {
            assert_eq!(unit_name(given).as_deref(), Ok(full), "{given}");
        }
        for (bad, error) in [
            ("", MatchError::EmptyUnit),
            (".service", MatchError::EmptyUnit),
            ("nginx*", MatchError::UnitPattern("nginx*".into())),
            ("php?-fpm", MatchError::UnitPattern("php?-fpm".into())),
            ("my app", MatchError::UnitCharacter("my app".into(), ' ')),
            (
                "a/b.service",
                MatchError::UnitCharacter("a/b.service".into(), '/'),
            ),
            (
                "getty@.service",
                MatchError::UnitTemplate("getty@.service".into()),
            ),
            ("getty@", MatchError::UnitTemplate("getty@".into())),
        ] {
            assert_eq!(unit_name(bad), Err(error), "{bad:?}");
        }
        let long = "x".repeat(250);
        assert_eq!(unit_name(&long), Err(MatchError::UnitTooLong(long.clone())));
        assert!(unit_name(&"x".repeat(247)).is_ok(), "247 + .service = 255");
        assert_eq!(identifier("sshd").as_deref(), Ok("sshd"));
        assert_eq!(identifier(""), Err(MatchError::EmptyIdentifier));
        assert_eq!(
            identifier("a\nb"),
            Err(MatchError::IdentifierControl("a\nb".into()))
        );
    }

    fn args(query: &JournalQuery, start: Start<'_>) -> Vec<String> {
        query
            .args(start)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn the_arguments_ask_journalctl_for_the_units_priority_and_identifiers() {
        const BASE: [&str; 4] = ["--follow", "--output=json", "--no-pager", "--all"];
        let everything = JournalQuery::new(&JournalMatch::default());
        assert_eq!(
            args(
                &everything,
                Start::Since(UNIX_EPOCH + Duration::from_micros(1_500_007))
            ),
            [&BASE[..], &["--since=@1.500007"]].concat()
        );
        assert_eq!(
            args(&everything, Start::Cursor("s=1;i=2")),
            [&BASE[..], &["--cursor=s=1;i=2"]].concat()
        );

        // A unit's own entries, or systemd's about it; with the
        // identifiers in both alternatives.
        let mut m = matching(
            &["nginx", "php-fpm.service"],
            Some("err"),
            &["nginx", "php"],
        );
        m.directory = Some(PathBuf::from("/proc/42/root/run/log/journal"));
        let q = JournalQuery::new(&m);
        assert_eq!(
            args(&q, Start::Cursor("c")),
            [
                &BASE[..],
                &[
                    "--directory=/proc/42/root/run/log/journal",
                    "--priority=0..3",
                    "--cursor=c",
                    "_SYSTEMD_UNIT=nginx.service",
                    "_SYSTEMD_UNIT=php-fpm.service",
                    "SYSLOG_IDENTIFIER=nginx",
                    "SYSLOG_IDENTIFIER=php",
                    "+",
                    "UNIT=nginx.service",
                    "UNIT=php-fpm.service",
                    "_PID=1",
                    "SYSLOG_IDENTIFIER=nginx",
                    "SYSLOG_IDENTIFIER=php",
                ]
            ]
            .concat()
        );
        let q = JournalQuery::new(&matching(&["boom"], None, &[]));
        assert_eq!(
            q.matches(),
            [
                "_SYSTEMD_UNIT=boom.service",
                "+",
                "UNIT=boom.service",
                "_PID=1"
            ]
        );
        let q = JournalQuery::new(&matching(&[], Some("debug"), &["sshd"]));
        assert_eq!(
            args(&q, Start::Since(UNIX_EPOCH)),
            [
                &BASE[..],
                &[
                    "--priority=0..7",
                    "--since=@0.000000",
                    "SYSLOG_IDENTIFIER=sshd"
                ]
            ]
            .concat()
        );
    }

    #[test]
    fn a_service_s_own_line_and_systemd_s_failure_line_are_read_from_real_output() {
        let own = entry(SERVICE_STDERR);
        assert_eq!(own.message.text, "boom");
        assert_eq!(own.priority.map(Priority::name), Some("info"));
        assert_eq!(own.identifier.as_deref(), Some("sh"));
        assert_eq!(own.systemd_unit.as_deref(), Some("medic-boom.service"));
        assert_eq!(own.about_unit(), Some("medic-boom.service"));
        let record = own.record();
        assert_eq!(record.kind, EventKind::SystemEvent);
        assert_eq!(record.source, "journal:sh");
        assert_eq!(record.subject, "medic-boom.service");
        assert_eq!(record.field("unit"), Some("medic-boom.service"));
        assert_eq!(record.field("priority"), Some("6"));
        assert_eq!(record.field("level"), Some("info"));
        assert_eq!(record.field("identifier"), Some("sh"));
        assert_eq!(record.field("pid"), own.pid.as_deref());
        assert_eq!(record.field("host"), Some("vm"));
        assert_eq!(record.field("cursor"), Some(own.cursor.as_str()));
        assert!(own.cursor.starts_with("s=") && own.cursor.contains(";i="));
        assert_eq!(record.field("event-id"), None, "the journal has no ids");
        assert_eq!(record.field("truncated"), None);

        // systemd (PID 1, in init.scope) writes about the unit: UNIT names it.
        let failed = entry(UNIT_FAILED);
        assert_eq!(failed.systemd_unit.as_deref(), Some("init.scope"));
        assert_eq!(failed.about_unit(), Some("medic-boom.service"));
        let record = failed.record();
        assert_eq!(record.source, "journal:systemd");
        assert_eq!(record.subject, "medic-boom.service");
        assert_eq!(
            record.field("message"),
            Some("medic-boom.service: Failed with result 'exit-code'.")
        );
        assert_eq!(record.field("level"), Some("warning"));
        assert_eq!(record.field("pid"), Some("1"));
        assert_eq!(
            record.field("message-id"),
            Some("d9b373ed55a64feb8242e02dbe79a49c")
        );
        assert_eq!(record.field("time"), Some("2026-11-26T05:07:52.549Z"));
    }

    #[test]
    fn a_message_of_bytes_a_null_one_and_a_repeated_field_are_read() {
        // Not printable: an array of bytes, read as UTF-8 with the byte
        // that is none replaced.
        let bytes = entry(MESSAGE_BYTES);
        assert_eq!(
            bytes.message.text,
            "bin\u{1}ary \u{1b}[31mred\u{1b}[0m \u{fffd} end"
        );
        assert_eq!(bytes.identifier.as_deref(), Some("binary"));
        assert_eq!(bytes.priority.map(Priority::number), Some(3));
        // Over 4 KiB without --all: null.
        let null = entry(MESSAGE_NULL);
        assert_eq!(null.message.text, "");
        assert_eq!(null.record().field("message"), Some(""));
        // A field the entry has twice is an array of its values: the
        // first counts.
        let line = REPEATED_FIELD.replace(
            "\"SYSLOG_IDENTIFIER\":\"repeat\"",
            "\"SYSLOG_IDENTIFIER\":[\"repeat\",\"again\"]",
        );
        let repeated = entry(&line);
        assert_eq!(repeated.identifier.as_deref(), Some("repeat"));
        assert_eq!(repeated.message.text, "first value\nsecond value");
        // And of values that are bytes themselves.
        let line = REPEATED_FIELD.replace(
            "\"SYSLOG_IDENTIFIER\":\"repeat\"",
            "\"SYSLOG_IDENTIFIER\":[[104,105],\"x\",null]",
        );
        assert_eq!(entry(&line).identifier.as_deref(), Some("hi"));
        // A kernel entry has no unit and no pid: the subject is its
        // identifier.
        let kernel = r#"{"__CURSOR":"s=a;i=1","SYSLOG_IDENTIFIER":"kernel","MESSAGE":"Out of memory: Killed process 4242 (java)","PRIORITY":"3","_TRANSPORT":"kernel"}"#;
        let record = entry(kernel).record();
        assert_eq!(record.subject, "kernel");
        assert_eq!(record.field("unit"), None);
        assert_eq!(record.field("level"), Some("err"));
        // Neither identifier nor command.
        let bare = entry(r#"{"__CURSOR":"c","MESSAGE":"x"}"#).record();
        assert_eq!(
            (bare.source.as_str(), bare.subject.as_str()),
            ("journal:journal", "journal")
        );
    }

    #[test]
    fn a_long_message_is_cut_at_max_line_and_marked() {
        let long = "é".repeat(30_000); // 60 000 bytes
        let line = serde_json::json!({
            "__CURSOR": "c1",
            "MESSAGE": long,
            "SYSLOG_IDENTIFIER": "longnative",
            "PRIORITY": "3",
        })
        .to_string();
        let e = JournalEntry::parse(line.as_bytes(), 1025).unwrap();
        assert_eq!(e.message.text.len(), 1024, "cut at a whole character");
        assert_eq!(e.message.bytes, 60_000);
        let record = e.record();
        assert_eq!(record.field("truncated"), Some("true"));
        assert_eq!(record.field("message_bytes"), Some("60000"));
        assert_eq!(record.field("message").map(str::len), Some(1024));

        // The same as bytes (journalctl's form for what is not printable).
        let bytes: Vec<u8> = std::iter::repeat_n(7u8, 100_000).collect();
        let line = serde_json::json!({"__CURSOR": "c2", "MESSAGE": bytes}).to_string();
        assert!(line.len() > 200_000);
        let e = JournalEntry::parse(line.as_bytes(), 64 << 10).unwrap();
        assert_eq!((e.message.text.len(), e.message.bytes), (64 << 10, 100_000));
        assert!(line.len() <= line_limit(64 << 10));
        // Whole when short enough.
        let e = JournalEntry::parse(line.as_bytes(), 1 << 20).unwrap();
        assert!(!e.message.is_cut());
    }

    #[test]
    fn lines_that_are_no_entry_are_refused() {
        for (bad, expected) in [
            ("", "no JSON object"),
            ("not json", "no JSON object"),
            ("[1,2]", "no JSON object"),
            ("{\"MESSAGE\":\"x\"}", "no __CURSOR"),
            ("{\"__CURSOR\":\"\"}", "no __CURSOR"),
            ("{\"__CURSOR\":null}", "no __CURSOR"),
            ("{\"__CURSOR\":\"c\",\"MESSAGE\":[1,256]}", "no JSON object"),
            (
                "{\"__CURSOR\":\"c\",\"MESSAGE\":{\"a\":1}}",
                "no JSON object",
            ),
            ("{\"__CURSOR\":\"c\",\"MESSAGE\":\"x\"", "no JSON object"),
        ] {
            let e = JournalEntry::parse(bad.as_bytes(), 1024).unwrap_err();
            assert!(e.to_string().contains(expected), "{bad:?}: {e}");
        }
        // Fields not read may be anything.
        let odd = r#"{"__CURSOR":"c","X":{"a":[1,2]},"_PID":4242,"PRIORITY":" 3 "}"#;
        let e = JournalEntry::parse(odd.as_bytes(), 1024).unwrap();
        assert_eq!(e.pid.as_deref(), Some("4242"));
        assert_eq!(e.priority.map(Priority::number), Some(3));
        assert_eq!(e.time, None);

        let mut reader = JournalReader::new("p".into(), &JournalMatch::default(), None, 1024);
        assert!(reader.parse(OutputLine::Whole(b"garbage")).is_none());
        assert!(reader.parse(OutputLine::TooLong(5 << 20)).is_none());
        let e = reader.parse(OutputLine::Whole(SERVICE_STDERR.trim_end().as_bytes()));
        assert!(e.is_some(), "and the reader goes on");
    }

    #[test]
    fn the_filter_checks_units_priority_identifiers_and_the_message() {
        let own = entry(SERVICE_STDERR);
        let failed = entry(UNIT_FAILED);
        let takes = |m: &JournalMatch, pattern: Option<&str>, e: &JournalEntry| {
            let reader = JournalReader::new(
                "p".into(),
                m,
                pattern.map(|p| regex::Regex::new(p).unwrap()),
                1024,
            );
            reader.intake(e).is_some()
        };
        let by_unit = matching(&["medic-boom"], None, &[]);
        assert!(takes(&by_unit, None, &own) && takes(&by_unit, None, &failed));
        let other = matching(&["nginx"], None, &[]);
        assert!(!takes(&other, None, &own) && !takes(&other, None, &failed));
        // priority = "warning" takes systemd's line (4), not the output (6).
        let warning = matching(&[], Some("warning"), &[]);
        assert!(takes(&warning, None, &failed) && !takes(&warning, None, &own));
        assert!(takes(&matching(&[], Some("info"), &[]), None, &own));
        let no_priority = entry(r#"{"__CURSOR":"c","MESSAGE":"x"}"#);
        assert!(!takes(&warning, None, &no_priority));
        // Identifiers.
        let systemd = matching(&["medic-boom"], None, &["systemd", "other"]);
        assert!(takes(&systemd, None, &failed) && !takes(&systemd, None, &own));
        // The message pattern.
        assert!(takes(&by_unit, Some("^boom$"), &own));
        assert!(!takes(&by_unit, Some("^boom$"), &failed));
        assert!(takes(&by_unit, Some("Failed with result"), &failed));
        // A UNIT= that PID 1 did not write is not systemd's word.
        let spoofed = UNIT_FAILED
            .replace("\"_PID\":\"1\"", "\"_PID\":\"4242\"")
            .replace(
                "\"_SYSTEMD_UNIT\":\"init.scope\"",
                "\"_SYSTEMD_UNIT\":\"user-1000.slice\"",
            );
        let spoofed = entry(&spoofed);
        assert!(!takes(&by_unit, None, &spoofed));
        assert_eq!(spoofed.about_unit(), Some("user-1000.slice"));
    }

    #[test]
    fn a_cursor_is_saved_and_loaded_per_plugin_and_match() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state")).unwrap();
        let m = matching(&["nginx"], Some("err"), &[]);
        let key = CursorKey::new("web", &JournalQuery::new(&m));
        assert_eq!(load_cursor(&store, &key), None);
        for cursor in ["s=1;i=1", "s=1;i=2"] {
            let txn = store.database().begin_write().unwrap();
            write_cursor(&txn, &key, cursor).unwrap();
            txn.commit().unwrap();
        }
        drop(store);
        let store = Store::open(&dir.path().join("state")).unwrap();
        assert_eq!(load_cursor(&store, &key).as_deref(), Some("s=1;i=2"));
        let mut in_folder = m.clone();
        in_folder.directory = Some(PathBuf::from("/srv/container/run/log/journal"));
        for other in [
            CursorKey::new("db", &JournalQuery::new(&m)),
            CursorKey::new(
                "web",
                &JournalQuery::new(&matching(&["nginx"], Some("warning"), &[])),
            ),
            CursorKey::new("web", &JournalQuery::new(&matching(&["nginx"], None, &[]))),
            CursorKey::new(
                "web",
                &JournalQuery::new(&matching(&["nginx", "php"], Some("err"), &[])),
            ),
            CursorKey::new(
                "web",
                &JournalQuery::new(&matching(&["nginx"], Some("err"), &["nginx"])),
            ),
            CursorKey::new("web", &JournalQuery::new(&in_folder)),
        ] {
            assert_ne!(other, key);
            assert_eq!(load_cursor(&store, &other), None);
        }
        // The message pattern and max_line are applied here, not asked of
        // journalctl: the same cursor serves them.
        let reader = JournalReader::new(
            "web".into(),
            &m,
            Some(regex::Regex::new("x").unwrap()),
            1024,
        );
        assert_eq!(reader.key(), &key);
        let Intake::JournalCursor { key: sent, cursor } = reader.cursor("s=1;i=3".into()) else {
            panic!()
        };
        assert_eq!((sent, cursor.as_str()), (key, "s=1;i=3"));
    }

    #[tokio::test]
    async fn a_line_is_held_only_up_to_the_limit() {
        let long = "y".repeat(100);
        let text = format!("short\n{long}\nafter\nunfinished");
        let mut reader = BufReader::with_capacity(8, text.as_bytes());
        let mut line = Vec::new();
        let mut got = Vec::new();
        loop {
            let read = read_line(&mut reader, &mut line, 10).await.unwrap();
            assert!(line.len() <= 10);
            if read == Read::End {
                break;
            }
            got.push((read, String::from_utf8(line.clone()).unwrap()));
        }
        assert_eq!(
            got,
            [
                (Read::Line, "short".to_string()),
                (Read::TooLong(100), String::new()),
                (Read::Line, "after".to_string()),
                (Read::Unfinished, "unfinished".to_string()),
            ]
        );
    }

    #[test]
    fn journalctl_is_looked_for_in_path_and_its_absence_names_the_package() {
        let dir = tempfile::tempdir().unwrap();
        let path = std::env::join_paths([dir.path()]).unwrap();
        assert_eq!(find_program(PROGRAM, Some(&path)), None);
        assert_eq!(find_program(PROGRAM, None), None);
        let message = StartError::NoJournalctl.to_string();
        assert!(message.contains("package `systemd`"), "{message}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let program = dir.path().join(PROGRAM);
            std::fs::write(&program, "#!/bin/sh\n").unwrap();
            assert_eq!(find_program(PROGRAM, Some(&path)), None, "not executable");
            std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
            assert_eq!(find_program(PROGRAM, Some(&path)), Some(program));
        }
    }

    #[tokio::test]
    async fn a_trigger_on_a_folder_that_is_not_there_does_not_start() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state")).unwrap();
        let (sink, _events) = mpsc::channel(8);
        let mut m = matching(&["nginx"], None, &[]);
        m.directory = Some(dir.path().join("no/such/journal"));
        let plugin = super::super::tests::plugin(
            "web",
            vec![crate::policy::Trigger::Journal {
                matching: m,
                message: None,
                max_line: 1024,
            }],
        );
        let error = super::super::TriggerSet::start(&[plugin], &sink, &store)
            .await
            .unwrap_err();
        assert_eq!((error.plugin.as_str(), error.kind), ("web", "journal"));
        assert!(error.target.starts_with("the journal in "), "{error}");
        let said = error.to_string();
        // Where journalctl is missing, that is said first.
        assert!(
            said.contains("is not a folder") || said.contains("package `systemd`"),
            "{said}"
        );
    }

    // ---- with a fake journalctl ----

    /// A fake journalctl and its journal file.
    #[cfg(unix)]
    struct Fake {
        dir: tempfile::TempDir,
        program: PathBuf,
        journal: PathBuf,
        /// Entries written.
        written: usize,
    }

    #[cfg(unix)]
    impl Fake {
        fn new() -> Self {
            use std::os::unix::fs::PermissionsExt;
            let dir = tempfile::tempdir().unwrap();
            let program = dir.path().join("journalctl");
            std::fs::write(&program, FAKE_JOURNALCTL).unwrap();
            std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
            let journal = dir.path().join("journal.jsonl");
            std::fs::write(&journal, "").unwrap();
            Self {
                dir,
                program,
                journal,
                written: 0,
            }
        }

        fn store(&self) -> Store {
            Store::open(&self.dir.path().join("state")).unwrap()
        }

        /// Append entries: `(unit, message)`, each line's cursor its
        /// number.
        fn write(&mut self, entries: &[(&str, &str)]) {
            use std::io::Write;
            let mut text = String::new();
            for (unit, message) in entries {
                self.written += 1;
                text.push_str(
                    &serde_json::json!({
                        "__CURSOR": format!("fake-{}", self.written),
                        "__REALTIME_TIMESTAMP": now_micros().to_string(),
                        "_SYSTEMD_UNIT": format!("{unit}.service"),
                        "PRIORITY": "3",
                        "SYSLOG_IDENTIFIER": unit,
                        "_PID": "4242",
                        "MESSAGE": message,
                    })
                    .to_string(),
                );
                text.push('\n');
            }
            std::fs::OpenOptions::new()
                .append(true)
                .open(&self.journal)
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }

        fn side_file(&self, suffix: &str) -> PathBuf {
            PathBuf::from(format!("{}.{suffix}", self.journal.display()))
        }

        /// The arguments of each journalctl started so far.
        fn runs(&self) -> Vec<String> {
            std::fs::read_to_string(self.side_file("args"))
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect()
        }

        async fn wait_for_runs(&self, count: usize) -> Vec<String> {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let runs = self.runs();
                if runs.len() >= count {
                    return runs;
                }
                assert!(
                    Instant::now() < deadline,
                    "{count} runs of journalctl: {runs:?}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }

        fn spawn(
            &self,
            m: &JournalMatch,
            pattern: Option<&str>,
            store: &Store,
            sink: &EventSink,
        ) -> JoinHandle<()> {
            spawn_with(
                &self.program,
                "p".into(),
                m,
                pattern.map(|p| regex::Regex::new(p).unwrap()),
                4096,
                store.clone(),
                sink.clone(),
            )
            .unwrap()
        }
    }

    /// The events that arrive until `count` have, and any that follow at
    /// once; cursors are saved as the dispatcher saves them, and each must
    /// come after the events of its batch.
    #[cfg(unix)]
    async fn collect(
        events: &mut mpsc::Receiver<Intake>,
        store: &Store,
        count: usize,
    ) -> Vec<EventRecord> {
        let mut got: Vec<EventRecord> = Vec::new();
        let mut take = |intake| match intake {
            Intake::Event(routed) => got.push(routed.event),
            Intake::JournalCursor { key, cursor } => {
                if let Some(last) = got.last() {
                    let last: usize = last.field("cursor").unwrap()[5..].parse().unwrap();
                    let now: usize = cursor[5..].parse().unwrap();
                    assert!(
                        now >= last,
                        "the cursor {cursor} before the event fake-{last}"
                    );
                }
                let txn = store.database().begin_write().unwrap();
                write_cursor(&txn, &key, &cursor).unwrap();
                txn.commit().unwrap();
            }
            other => panic!("{other:?}"),
        };
        let mut taken = 0;
        while taken < count {
            match tokio::time::timeout(Duration::from_secs(60), events.recv()).await {
                Ok(Some(intake)) => {
                    taken += usize::from(matches!(intake, Intake::Event(_)));
                    take(intake);
                }
                _ => panic!("only {taken} of {count} events came"),
            }
        }
        while let Ok(Some(intake)) =
            tokio::time::timeout(Duration::from_millis(300), events.recv()).await
        {
            take(intake);
        }
        got
    }

    #[cfg(unix)]
    fn messages(events: &[EventRecord]) -> Vec<&str> {
        events.iter().map(|e| e.field("message").unwrap()).collect()
    }

    #[cfg(unix)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_a_fake_journalctl_entries_become_events_and_restarts_lose_and_repeat_nothing() {
        let mut fake = Fake::new();
        let store = fake.store();
        let (sink, mut events) = mpsc::channel(1024);
        let m = matching(&["web", "db"], None, &[]);

        // First start: from the end, nothing replayed.
        fake.write(&[("web", "before the start")]);
        let task = fake.spawn(&m, Some("^(?:fail|boom)"), &store, &sink);
        let runs = fake.wait_for_runs(1).await;
        assert!(runs[0].contains("--since=@"), "{runs:?}");
        assert!(runs[0].ends_with(" _SYSTEMD_UNIT=web.service _SYSTEMD_UNIT=db.service + UNIT=web.service UNIT=db.service _PID=1"), "{runs:?}");
        fake.write(&[
            ("web", "fail 1"),
            ("other", "fail: not a unit of the trigger"),
            ("db", "quiet: not the pattern"),
            ("db", "boom 2"),
        ]);
        let got = collect(&mut events, &store, 2).await;
        assert_eq!(messages(&got), ["fail 1", "boom 2"]);
        assert_eq!(got[0].subject, "web.service");
        assert_eq!(got[1].field("cursor"), Some("fake-5"));
        let key = CursorKey::new("p", &JournalQuery::new(&m));
        assert_eq!(load_cursor(&store, &key).as_deref(), Some("fake-5"));

        // Stopped (as a reload stops it): its journalctl is killed.
        let pid: i32 = std::fs::read_to_string(fake.side_file("pids"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        task.abort();
        let _ = task.await;
        wait_until_dead(pid).await;

        // Entries written while stopped are read after a restart, from the
        // saved cursor; the cursor's own entry is not read again.
        fake.write(&[("web", "fail 6"), ("db", "fail 7")]);
        let task = fake.spawn(&m, Some("^(?:fail|boom)"), &store, &sink);
        let runs = fake.wait_for_runs(2).await;
        assert!(runs[1].contains("--cursor=fake-5 "), "{runs:?}");
        fake.write(&[("web", "fail 8")]);
        let got = collect(&mut events, &store, 3).await;
        assert_eq!(messages(&got), ["fail 6", "fail 7", "fail 8"]);

        // journalctl exits: it is started again at the last entry read.
        std::fs::write(fake.side_file("die"), "").unwrap();
        let runs = fake.wait_for_runs(3).await;
        assert!(runs[2].contains("--cursor=fake-8 "), "{runs:?}");
        fake.write(&[("db", "fail 9")]);
        let got = collect(&mut events, &store, 1).await;
        assert_eq!(messages(&got), ["fail 9"]);
        task.abort();
        let _ = task.await;

        // A saved cursor journalctl refuses: read from the end, said.
        let txn = store.database().begin_write().unwrap();
        write_cursor(&txn, &key, "vacuumed long ago").unwrap();
        txn.commit().unwrap();
        fake.write(&[("web", "fail 10: written before the start")]);
        let task = fake.spawn(&m, None, &store, &sink);
        let runs = fake.wait_for_runs(5).await;
        assert!(runs[3].contains("--cursor=vacuumed long ago"), "{runs:?}");
        assert!(runs[4].contains("--since=@"), "{runs:?}");
        fake.write(&[("web", "fail 11")]);
        let got = collect(&mut events, &store, 1).await;
        assert_eq!(messages(&got), ["fail 11"]);
        assert_eq!(load_cursor(&store, &key).as_deref(), Some("fake-11"));
        task.abort();
        let _ = task.await;

        // Many batches, stopped between them at random: every entry once.
        let mut rng = 0x006a_6f75_726e_616c_u64;
        let mut random = |below: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % below
        };
        let mut expected = Vec::new();
        let mut seen = Vec::new();
        for round in 0..20 {
            let task = fake.spawn(&m, None, &store, &sink);
            for _ in 0..=random(3) {
                let batch: Vec<String> = (0..=random(150))
                    .map(|n| format!("round {round} entry {n}"))
                    .collect();
                let entries: Vec<(&str, &str)> =
                    batch.iter().map(|m| ("web", m.as_str())).collect();
                fake.write(&entries);
                expected.extend(batch);
            }
            if random(2) == 0 {
                let got = collect(&mut events, &store, expected.len() - seen.len()).await;
                seen.extend(got.iter().map(|e| e.field("message").unwrap().to_string()));
            }
            task.abort();
            let _ = task.await;
            // What was handed over is the dispatcher's: whole batches.
            while let Ok(intake) = events.try_recv() {
                match intake {
                    Intake::Event(routed) => {
                        seen.push(routed.event.field("message").unwrap().to_string());
                    }
                    Intake::JournalCursor { key, cursor } => {
                        let txn = store.database().begin_write().unwrap();
                        write_cursor(&txn, &key, &cursor).unwrap();
                        txn.commit().unwrap();
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        let task = fake.spawn(&m, None, &store, &sink);
        if seen.len() < expected.len() {
            let got = collect(&mut events, &store, expected.len() - seen.len()).await;
            seen.extend(got.iter().map(|e| e.field("message").unwrap().to_string()));
        }
        task.abort();
        assert_eq!(seen.len(), expected.len(), "none lost, none twice");
        assert_eq!(seen, expected);
    }

    /// Wait until a process is gone (or a zombie, which it is until its
    /// parent reaps it).
    #[cfg(unix)]
    async fn wait_until_dead(pid: i32) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next());
            if matches!(state, None | Some("Z") | Some("X")) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "journalctl {pid} still runs: {stat}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
