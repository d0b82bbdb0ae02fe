//! The Windows channel source of the `event_log` trigger
//! (`channel = "Application"`): every decision, pure and tested on every
//! platform, and in `sys` (Windows only) the thin layer of system calls
//! that feeds it.
//!
//! - The query ([`ChannelQuery`]): the trigger's `source` and `ids` as the
//!   XPath EvtSubscribe filters with, such as
//!   `*[System[Provider[@Name='Windows Server Update Services'] and (EventID=364 or EventID=10012)]]`.
//!   Ids are sorted, each once, and a run of three or more consecutive ids
//!   is one range. EvtSubscribe documents at most [`MAX_EXPRESSIONS`]
//!   expressions in an XPath: a longer filter becomes a structured query
//!   (`<QueryList>`) whose `Select` elements share the ids, none holding
//!   more than that.
//! - An event ([`WindowsEvent`]): the XML `EvtRender(EvtRenderEventXml)`
//!   gives, with the `RenderingInfo` that `EvtFormatMessageXml` adds when
//!   it is there, or the message `EvtFormatMessageEvent` gives: provider,
//!   id (the `EventID` element, whatever its `Qualifiers`), level, time,
//!   record id, channel, computer, the insertion strings (`EventData/Data`,
//!   named or not, and the leaves of `UserData`) and the message. The
//!   message and each insertion string are cut at the trigger's `max_line`
//!   and marked, as a journal's lines are.
//! - The plugin's event ([`WindowsEvent::record`]): the one a journal entry
//!   with the same facts gives ([`super::system_event`], through the same
//!   [`EventFilter`]). Fields `time`, `log` (the channel), `level`,
//!   `source`, `computer`, `message`, and beside them `record-id`,
//!   `qualifiers` and `data.<name>` (`data.<n>`, from 1, for an unnamed
//!   insertion string). Without a message (no publisher metadata on this
//!   machine), the insertion strings joined by spaces stand for it, and the
//!   `message` pattern applies to them.
//! - The bookmark: the XML `EvtRender(EvtRenderBookmark)` gives, sent after
//!   the events before it as [`Intake::EventLogBookmark`] and saved by the
//!   dispatcher in the same transaction as them, keyed by plugin, channel
//!   and query ([`BookmarkKey`]) so that a changed query does not resume
//!   from an unrelated bookmark. A subscription starts after it, or with
//!   the events to come when there is none.

use super::tail::{MalformedLog, Say, char_boundary};
use super::{EventFilter, EventSink, Intake, Routed, SystemLog, system_event};
use crate::audit::{Store, StoreError};
use medic_sandbox::EventRecord;
use std::time::{Instant, SystemTime};
use tokio::task::JoinHandle;

#[cfg(windows)]
mod sys;

/// The namespace of event XML.
pub const EVENT_NAMESPACE: &str = "http://schemas.microsoft.com/win/2004/08/events/event";

/// The most expressions EvtSubscribe documents for one XPath query.
pub const MAX_EXPRESSIONS: usize = 20;

/// The largest rendered event read: Windows keeps an event under 64 KiB;
/// anything near this is no event.
pub const MAX_EVENT_XML_BYTES: usize = 1 << 20;

/// The most insertion strings kept of one event; more are dropped, and the
/// event marked as cut.
pub const MAX_INSERTION_STRINGS: usize = 64;

const BOOKMARKS: &str = "event_log_bookmarks";

// ---- the query ----

/// Why a channel cannot be queried with a trigger's filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("the channel name is empty")]
    EmptyChannel,
    #[error("the source name {0:?} holds both ' and \", which an event log query cannot quote")]
    UnquotableSource(String),
    #[error("event id {0} is above 65535: no Windows event has it")]
    IdTooLarge(u32),
}

/// Every problem of a channel and a filter, in the order of the keys.
pub fn filter_problems(channel: &str, source: Option<&str>, ids: &[u32]) -> Vec<QueryError> {
    let mut problems = Vec::new();
    if channel.trim().is_empty() {
        problems.push(QueryError::EmptyChannel);
    }
    if let Some(source) = source
        && xpath_literal(source).is_none()
    {
        problems.push(QueryError::UnquotableSource(source.to_string()));
    }
    problems.extend(
        ids.iter()
            .filter(|id| **id > u32::from(u16::MAX))
            .map(|id| QueryError::IdTooLarge(*id)),
    );
    problems
}

/// `text` as an XPath string: `'text'`, or `"text"` when it holds a `'`;
/// none when it holds both (XPath 1.0 has no escape).
fn xpath_literal(text: &str) -> Option<String> {
    if !text.contains('\'') {
        Some(format!("'{text}'"))
    } else if !text.contains('"') {
        Some(format!("\"{text}\""))
    } else {
        None
    }
}

/// One comparison of event ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdTerm {
    One(u32),
    Range(u32, u32),
}

impl IdTerm {
    /// How many expressions it counts for.
    fn expressions(self) -> usize {
        match self {
            Self::One(_) => 1,
            Self::Range(..) => 2,
        }
    }

    fn xpath(self) -> String {
        match self {
            Self::One(id) => format!("EventID={id}"),
            Self::Range(first, last) => format!("(EventID>={first} and EventID<={last})"),
        }
    }
}

/// The ids sorted, each once, a run of three or more as a range.
fn id_terms(ids: &[u32]) -> Vec<IdTerm> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut terms = Vec::new();
    let mut start = 0;
    while start < sorted.len() {
        let mut end = start;
        while end + 1 < sorted.len() && sorted[end].checked_add(1) == Some(sorted[end + 1]) {
            end += 1;
        }
        if end - start >= 2 {
            terms.push(IdTerm::Range(sorted[start], sorted[end]));
        } else {
            terms.extend(sorted[start..=end].iter().map(|id| IdTerm::One(*id)));
        }
        start = end + 1;
    }
    terms
}

/// The XPath of the events of a provider (its name already a literal) with
/// one of these ids; any provider, any id, when not given.
fn xpath(provider: Option<&str>, terms: &[IdTerm]) -> String {
    let provider = provider.map(|literal| format!("Provider[@Name={literal}]"));
    let ids = (!terms.is_empty()).then(|| {
        let alternatives: Vec<String> = terms.iter().map(|t| t.xpath()).collect();
        format!("({})", alternatives.join(" or "))
    });
    match (provider, ids) {
        (None, None) => "*".to_string(),
        (Some(provider), None) => format!("*[System[{provider}]]"),
        (None, Some(ids)) => format!("*[System[{ids}]]"),
        (Some(provider), Some(ids)) => format!("*[System[{provider} and {ids}]]"),
    }
}

/// `text` with `&`, `<`, `>` and `"` escaped, for XML text and attributes.
fn xml_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// A channel and the query EvtSubscribe is given for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelQuery {
    channel: String,
    text: String,
    structured: bool,
}

impl ChannelQuery {
    /// The query for the events of `channel` with this source (provider)
    /// and one of these ids (any when empty).
    pub fn new(channel: &str, source: Option<&str>, ids: &[u32]) -> Result<Self, QueryError> {
        if let Some(problem) = filter_problems(channel, source, ids).into_iter().next() {
            return Err(problem);
        }
        let provider = source.and_then(xpath_literal);
        let terms = id_terms(ids);
        let budget = MAX_EXPRESSIONS - usize::from(provider.is_some());
        let needed: usize = terms.iter().map(|t| t.expressions()).sum();
        if needed <= budget {
            return Ok(Self {
                channel: channel.to_string(),
                text: xpath(provider.as_deref(), &terms),
                structured: false,
            });
        }
        let mut selects = Vec::new();
        let mut chunk: Vec<IdTerm> = Vec::new();
        let mut used = 0;
        for term in terms {
            if used + term.expressions() > budget {
                selects.push(xpath(provider.as_deref(), &chunk));
                chunk.clear();
                used = 0;
            }
            used += term.expressions();
            chunk.push(term);
        }
        selects.push(xpath(provider.as_deref(), &chunk));
        let path = xml_escape(channel);
        let mut text = format!("<QueryList><Query Id=\"0\" Path=\"{path}\">");
        for select in selects {
            text.push_str(&format!(
                "<Select Path=\"{path}\">{}</Select>",
                xml_escape(&select)
            ));
        }
        text.push_str("</Query></QueryList>");
        Ok(Self {
            channel: channel.to_string(),
            text,
            structured: true,
        })
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The XPath, or the structured query's XML.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// A structured query names its channel itself: EvtSubscribe is given
    /// no channel path with it.
    pub fn is_structured(&self) -> bool {
        self.structured
    }
}

// ---- an event ----

/// Why a rendered event cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum EventXmlError {
    #[error("the event's XML is {0} bytes, more than the {MAX_EVENT_XML_BYTES} read")]
    TooLarge(usize),
    #[error("the event's XML cannot be parsed: {0}")]
    Xml(#[from] roxmltree::Error),
    #[error("the XML is no event: its root element is <{0}>")]
    NotAnEvent(String),
    #[error("the event has no {0}")]
    Missing(&'static str),
    #[error("the event's {what} is not a number: {text:?}")]
    NotANumber { what: &'static str, text: String },
}

/// Text cut, if it is longer than a limit, at a character boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundedText {
    /// The text, or its beginning.
    pub text: String,
    /// The whole text's length in bytes.
    pub bytes: usize,
}

impl BoundedText {
    /// `text`, cut at `max` bytes (at least 1).
    pub fn new(text: &str, max: usize) -> Self {
        let max = max.max(1);
        let kept = if text.len() <= max {
            text
        } else {
            &text[..char_boundary(&text.as_bytes()[..max])]
        };
        Self {
            text: kept.to_string(),
            bytes: text.len(),
        }
    }

    pub fn is_cut(&self) -> bool {
        self.text.len() < self.bytes
    }
}

/// One insertion string of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsertionString {
    /// `Name` of an `EventData/Data`, or the element of a `UserData` leaf.
    pub name: Option<String>,
    pub value: BoundedText,
}

/// A Windows event, as its rendered XML says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowsEvent {
    /// `System/Provider/@Name`.
    pub provider: String,
    /// `System/EventID`: the id Event Viewer shows and XPath compares,
    /// without the qualifiers of a classic event.
    pub event_id: u16,
    /// `System/EventID/@Qualifiers`, of classic (pre-Vista style) events.
    pub qualifiers: Option<u16>,
    /// `System/Level`: 1 critical, 2 error, 3 warning, 4 (or 0)
    /// information, 5 verbose.
    pub level: u8,
    /// `RenderingInfo/Level`: the level's name, localized.
    pub level_text: Option<String>,
    /// `RenderingInfo/Provider`: the provider's display name.
    pub provider_text: Option<String>,
    /// `System/TimeCreated/@SystemTime`.
    pub time_created: Option<SystemTime>,
    /// `System/EventRecordID`.
    pub record_id: Option<u64>,
    /// `System/Channel`.
    pub channel: String,
    /// `System/Computer`.
    pub computer: String,
    pub insertion_strings: Vec<InsertionString>,
    /// Insertion strings beyond [`MAX_INSERTION_STRINGS`], dropped.
    pub insertion_strings_dropped: usize,
    /// `RenderingInfo/Message`, or the message formatted for the event;
    /// none when the publisher's metadata is missing.
    pub message: Option<BoundedText>,
}

/// The child element of `node` with this local name.
fn child<'a, 'input>(
    node: roxmltree::Node<'a, 'input>,
    name: &str,
) -> Option<roxmltree::Node<'a, 'input>> {
    node.children()
        .find(|n| n.is_element() && n.tag_name().name() == name)
}

/// All the text inside an element.
fn inner_text(node: roxmltree::Node<'_, '_>) -> String {
    node.descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect()
}

fn number<T: std::str::FromStr>(text: &str, what: &'static str) -> Result<T, EventXmlError> {
    text.trim().parse().map_err(|_| EventXmlError::NotANumber {
        what,
        text: text.to_string(),
    })
}

/// A message as it is kept: without the line end Windows ends it with,
/// cut at `max_line`.
fn bounded_message(text: &str, max_line: usize) -> Option<BoundedText> {
    let text = text.trim_end();
    (!text.is_empty()).then(|| BoundedText::new(text, max_line))
}

impl WindowsEvent {
    /// Read a rendered event, its message and each insertion string cut at
    /// `max_line` bytes.
    pub fn from_xml(xml: &str, max_line: usize) -> Result<Self, EventXmlError> {
        if xml.len() > MAX_EVENT_XML_BYTES {
            return Err(EventXmlError::TooLarge(xml.len()));
        }
        let document = roxmltree::Document::parse(xml)?;
        let event = document.root_element();
        if event.tag_name().name() != "Event" {
            return Err(EventXmlError::NotAnEvent(event.tag_name().name().into()));
        }
        let system = child(event, "System").ok_or(EventXmlError::Missing("System"))?;
        let provider = child(system, "Provider")
            .and_then(|p| p.attribute("Name"))
            .ok_or(EventXmlError::Missing("provider name"))?;
        let id = child(system, "EventID").ok_or(EventXmlError::Missing("EventID"))?;
        let system_text = |name: &str| child(system, name).map(inner_text);
        let rendering = child(event, "RenderingInfo");
        let rendered = |name: &str| rendering.and_then(|r| child(r, name)).map(inner_text);

        let mut insertion_strings = Vec::new();
        let mut insert = |name: Option<&str>, value: String| {
            insertion_strings.push(InsertionString {
                name: name.map(str::to_string),
                value: BoundedText::new(&value, max_line),
            });
        };
        if let Some(data) = child(event, "EventData") {
            for item in data
                .children()
                .filter(|n| n.is_element() && n.tag_name().name() == "Data")
            {
                insert(item.attribute("Name"), inner_text(item));
            }
        }
        if let Some(user_data) = child(event, "UserData") {
            for leaf in user_data.descendants().filter(|n| {
                n.is_element() && *n != user_data && !n.children().any(|c| c.is_element())
            }) {
                insert(Some(leaf.tag_name().name()), inner_text(leaf));
            }
        }
        let insertion_strings_dropped = insertion_strings
            .len()
            .saturating_sub(MAX_INSERTION_STRINGS);
        insertion_strings.truncate(MAX_INSERTION_STRINGS);

        Ok(Self {
            provider: provider.to_string(),
            event_id: number(&inner_text(id), "EventID")?,
            qualifiers: id
                .attribute("Qualifiers")
                .map(|q| number(q, "Qualifiers"))
                .transpose()?,
            level: system_text("Level")
                .map(|l| number(&l, "Level"))
                .transpose()?
                .unwrap_or(0),
            level_text: rendered("Level").filter(|l| !l.trim().is_empty()),
            provider_text: rendered("Provider").filter(|p| !p.trim().is_empty()),
            time_created: child(system, "TimeCreated")
                .and_then(|t| t.attribute("SystemTime"))
                .and_then(parse_system_time),
            record_id: system_text("EventRecordID")
                .map(|r| number(&r, "EventRecordID"))
                .transpose()?,
            channel: system_text("Channel").unwrap_or_default(),
            computer: system_text("Computer").unwrap_or_default(),
            insertion_strings,
            insertion_strings_dropped,
            message: rendered("Message").and_then(|m| bounded_message(&m, max_line)),
        })
    }

    /// The message formatted for the event (`EvtFormatMessageEvent`), cut
    /// at `max_line`, replaces the one the XML had, if any.
    pub fn with_message(mut self, message: Option<&str>, max_line: usize) -> Self {
        if let Some(message) = message.and_then(|m| bounded_message(m, max_line)) {
            self.message = Some(message);
        }
        self
    }

    /// The level's name as the journal writes it (`Information`,
    /// `Warning`, `Error`, and `Critical`, `Verbose`), whatever the
    /// system's language; an unknown level by its rendered name, or its
    /// number.
    pub fn level_name(&self) -> String {
        let name = match self.level {
            0 | 4 => "Information",
            1 => "Critical",
            2 => "Error",
            3 => "Warning",
            5 => "Verbose",
            other => {
                return self.level_text.clone().unwrap_or_else(|| other.to_string());
            }
        };
        name.to_string()
    }

    /// The message, or without one the insertion strings joined by spaces,
    /// cut at `max_line` (its whole length counts them uncut).
    pub fn message_or_insertion_strings(&self, max_line: usize) -> BoundedText {
        if let Some(message) = &self.message {
            return message.clone();
        }
        let kept: Vec<&str> = self
            .insertion_strings
            .iter()
            .map(|s| s.value.text.as_str())
            .collect();
        let mut joined = BoundedText::new(&kept.join(" "), max_line);
        // The whole length is that of the strings before they were cut.
        joined.bytes = self
            .insertion_strings
            .iter()
            .map(|s| s.value.bytes + 1)
            .sum::<usize>()
            .saturating_sub(1);
        joined
    }

    /// The plugin's event, if `filter` takes this one: the event a journal
    /// entry with the same facts gives, and the facts a journal has not.
    pub fn record(&self, filter: &EventFilter, max_line: usize) -> Option<EventRecord> {
        let id = u32::from(self.event_id);
        let message = self.message_or_insertion_strings(max_line);
        if !filter.admits(&self.provider, id, &message.text) {
            return None;
        }
        let mut fields: Vec<(String, String)> = Vec::new();
        let mut field = |key: &str, value: String| fields.push((key.to_string(), value));
        if let Some(time) = self.time_created {
            field("time", iso_time(time));
        }
        field("log", self.channel.clone());
        field("level", self.level_name());
        field("source", self.provider.clone());
        field("computer", self.computer.clone());
        let cut = message.is_cut()
            || self.insertion_strings_dropped > 0
            || self.insertion_strings.iter().any(|s| s.value.is_cut());
        if cut {
            field("truncated", "true".to_string());
        }
        if message.is_cut() {
            field("message_bytes", message.bytes.to_string());
        }
        field("message", message.text);
        if let Some(record_id) = self.record_id {
            field("record-id", record_id.to_string());
        }
        if let Some(qualifiers) = self.qualifiers {
            field("qualifiers", qualifiers.to_string());
        }
        for (n, insertion) in self.insertion_strings.iter().enumerate() {
            let key = match &insertion.name {
                Some(name) => format!("data.{name}"),
                None => format!("data.{}", n + 1),
            };
            field(&key, insertion.value.text.clone());
        }
        Some(system_event(
            SystemLog::EventLog,
            &self.provider,
            Some(id),
            None,
            fields,
        ))
    }
}

// ---- time ----

/// `2026-11-24T10:15:02.4843750Z` (up to nine fractional digits, or
/// none), as event XML writes `SystemTime`; none for anything else or a
/// time before 1970.
pub fn parse_system_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(text).ok()
}

/// `2026-11-24T10:15:02.484Z`: the form of the journal's `time`.
pub fn iso_time(time: SystemTime) -> String {
    use std::fmt::Write;
    let mut text = String::new();
    match write!(text, "{}", humantime::format_rfc3339_millis(time)) {
        Ok(()) => text,
        // RFC 3339 has four-digit years: a time past 9999 (a wrong clock, a
        // forged entry) is shown as seconds since the epoch instead.
        Err(_) => format!(
            "@{}",
            time.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        ),
    }
}

// ---- the bookmark ----

/// Whose bookmark in which channel, for which query: one per plugin,
/// channel and query, so that a changed filter starts afresh.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BookmarkKey(String);

impl BookmarkKey {
    pub fn new(plugin: &str, query: &ChannelQuery) -> Self {
        Self(format!("{plugin}\u{0}{}\u{0}{}", query.channel, query.text))
    }
}

/// The bookmark saved for `key`, if any.
pub fn load_bookmark(store: &Store, key: &BookmarkKey) -> Option<String> {
    store.get_json(BOOKMARKS, &key.0)
}

/// Save a bookmark inside the dispatcher's transaction, with the events
/// read before it.
pub fn write_bookmark(
    txn: &redb::WriteTransaction,
    key: &BookmarkKey,
    bookmark: &str,
) -> Result<(), StoreError> {
    let definition = redb::TableDefinition::<&str, &[u8]>::new(BOOKMARKS);
    // Serialising a string cannot fail.
    let bytes = serde_json::to_vec(bookmark).unwrap_or_default();
    txn.open_table(definition)?
        .insert(key.0.as_str(), bytes.as_slice())?;
    Ok(())
}

// ---- a channel followed ----

/// One channel followed for one plugin: what the system calls read
/// (rendered events, bookmarks) becomes what the dispatcher takes.
#[derive(Debug)]
pub struct ChannelReader {
    plugin: String,
    query: ChannelQuery,
    key: BookmarkKey,
    filter: EventFilter,
    max_line: usize,
    /// Events read so far: where a malformed one was.
    read: u64,
    malformed: MalformedLog,
}

impl ChannelReader {
    pub fn new(plugin: String, query: ChannelQuery, filter: EventFilter, max_line: usize) -> Self {
        let key = BookmarkKey::new(&plugin, &query);
        Self {
            plugin,
            query,
            key,
            filter,
            max_line,
            read: 0,
            malformed: MalformedLog::default(),
        }
    }

    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    pub fn query(&self) -> &ChannelQuery {
        &self.query
    }

    pub fn key(&self) -> &BookmarkKey {
        &self.key
    }

    /// Read one rendered event; none when it cannot be read (reported at
    /// the first, then at most once a minute with the count).
    pub fn parse(&mut self, xml: &str) -> Option<WindowsEvent> {
        self.read += 1;
        let now = Instant::now();
        let parsed = WindowsEvent::from_xml(xml, self.max_line);
        let say = match &parsed {
            Ok(_) => self.malformed.due(now),
            Err(_) => self.malformed.saw(self.read, now),
        };
        let (plugin, channel) = (&self.plugin, &self.query.channel);
        match (say, &parsed) {
            (Some(Say::First { offset }), Err(e)) => tracing::warn!(
                plugin,
                channel,
                event = offset,
                "an event that cannot be read was skipped ({e}); more are counted and reported at most once a minute"
            ),
            (Some(Say::Summary { count, .. }), _) => tracing::warn!(
                plugin,
                channel,
                count,
                "events that cannot be read were skipped since the last report"
            ),
            _ => {}
        }
        parsed.ok()
    }

    /// The intake for an event, with the message formatted for it if there
    /// is one; none when the trigger's filter does not take it.
    pub fn intake(&self, event: WindowsEvent, message: Option<&str>) -> Option<Intake> {
        let event = event.with_message(message, self.max_line);
        let record = event.record(&self.filter, self.max_line)?;
        Some(Routed::new(self.plugin.clone(), record).into())
    }

    /// The intake that saves a bookmark, sent after the events before it.
    pub fn bookmark(&self, bookmark: String) -> Intake {
        Intake::EventLogBookmark {
            key: self.key.clone(),
            bookmark,
        }
    }
}

/// Why a channel cannot be followed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(
        "Windows event log channels can be read only on Windows; on this system an `event_log` trigger follows a JSON-lines journal (path = \"...\")"
    )]
    NotWindows,
    /// A system call failed, as the system says.
    #[error("{0}")]
    System(String),
}

/// Start following `channel` for `plugin`: its new events the filter
/// takes, after the saved bookmark (or from now), each message cut at
/// `max_line` bytes. Only on Windows.
pub fn spawn(
    plugin: String,
    channel: &str,
    filter: EventFilter,
    max_line: usize,
    store: Store,
    sink: EventSink,
) -> Result<JoinHandle<()>, StartError> {
    let query = ChannelQuery::new(channel, filter.source.as_deref(), &filter.ids)?;
    let reader = ChannelReader::new(plugin, query, filter, max_line);
    let bookmark = load_bookmark(&store, reader.key());
    follow(reader, bookmark, sink)
}

#[cfg(windows)]
fn follow(
    reader: ChannelReader,
    bookmark: Option<String>,
    sink: EventSink,
) -> Result<JoinHandle<()>, StartError> {
    sys::follow(reader, bookmark, sink)
}

#[cfg(not(windows))]
fn follow(
    _reader: ChannelReader,
    _bookmark: Option<String>,
    _sink: EventSink,
) -> Result<JoinHandle<()>, StartError> {
    Err(StartError::NotWindows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use medic_sandbox::EventKind;
    use std::time::{Duration, UNIX_EPOCH};

    const WSUS: &str = "Windows Server Update Services";
    const WSUS_364: &str = include_str!("fixtures/windows-events/wsus-364.xml");
    const WSUS_10012: &str = include_str!("fixtures/windows-events/wsus-10012.xml");
    const WSUS_10021: &str = include_str!("fixtures/windows-events/wsus-10021.xml");
    const SCM_7036: &str = include_str!("fixtures/windows-events/scm-7036.xml");
    const SCM_7040: &str = include_str!("fixtures/windows-events/scm-7040.xml");
    const ARTICLE_364: &str = "Content file download failed. Reason: The server does not support the necessary HTTP protocol. Background Intelligent Transfer Service (BITS) requires that the server support the Range protocol header.Source File: /msdownload/update/v3-19990518/cabpool/windows2000-kb873339-x86-enu_500e4656b4f0ca3431565631989090bbeeb74bcc.exe Destination File: %drive%\\wsus\\WsusContent\\WsusContent\\CC\\500E4656B4F0CA3431565631989090BBEEB74BCC.EXE.";

    fn query(source: Option<&str>, ids: &[u32]) -> ChannelQuery {
        ChannelQuery::new("Application", source, ids).unwrap()
    }

    fn filter(source: Option<&str>, ids: &[u32], message: Option<&str>) -> EventFilter {
        EventFilter {
            source: source.map(str::to_string),
            ids: ids.to_vec(),
            message: message.map(|m| regex::Regex::new(m).unwrap()),
        }
    }

    fn event(xml: &str) -> WindowsEvent {
        WindowsEvent::from_xml(xml, super::super::tail::MAX_LINE_BYTES).unwrap()
    }

    #[test]
    fn the_xpath_names_the_provider_and_the_ids() {
        let q = query(Some(WSUS), &[10012, 364]);
        assert!(!q.is_structured());
        assert_eq!(
            q.text(),
            "*[System[Provider[@Name='Windows Server Update Services'] and (EventID=364 or EventID=10012)]]"
        );
        assert_eq!(q.channel(), "Application");
        assert_eq!(
            query(None, &[7036, 7040]).text(),
            "*[System[(EventID=7036 or EventID=7040)]]"
        );
        assert_eq!(
            query(Some("Service Control Manager"), &[]).text(),
            "*[System[Provider[@Name='Service Control Manager']]]"
        );
        assert_eq!(query(None, &[]).text(), "*");
        // Ids once each; three or more in a row are a range.
        assert_eq!(
            query(None, &[5, 3, 4, 3, 9, 10]).text(),
            "*[System[((EventID>=3 and EventID<=5) or EventID=9 or EventID=10)]]"
        );
    }

    #[test]
    fn a_source_with_a_quote_is_quoted_with_the_other_and_one_with_both_is_refused() {
        assert_eq!(
            query(Some("O'Brien Tools"), &[1]).text(),
            "*[System[Provider[@Name=\"O'Brien Tools\"] and (EventID=1)]]"
        );
        assert_eq!(
            ChannelQuery::new("Application", Some("a'b\"c"), &[]),
            Err(QueryError::UnquotableSource("a'b\"c".into()))
        );
        assert_eq!(
            filter_problems(" ", Some("a'b\"c"), &[1, 70000]),
            [
                QueryError::EmptyChannel,
                QueryError::UnquotableSource("a'b\"c".into()),
                QueryError::IdTooLarge(70000)
            ]
        );
        assert!(filter_problems("System", Some("Service Control Manager"), &[65535]).is_empty());
    }

    /// The `Select` expressions of a structured query, parsed back.
    fn selects(q: &ChannelQuery) -> Vec<String> {
        let document = roxmltree::Document::parse(q.text()).unwrap();
        let query = document.root_element().first_element_child().unwrap();
        assert_eq!(query.tag_name().name(), "Query");
        assert_eq!(query.attribute("Path"), Some(q.channel()));
        query
            .children()
            .filter(|n| n.is_element())
            .map(|select| {
                assert_eq!(select.tag_name().name(), "Select");
                assert_eq!(select.attribute("Path"), Some(q.channel()));
                select.text().unwrap().to_string()
            })
            .collect()
    }

    fn expressions(xpath: &str) -> usize {
        xpath.matches("EventID").count() + xpath.matches("Provider[").count()
    }

    #[test]
    fn more_than_twenty_expressions_make_a_structured_query_of_several_selects() {
        // Twenty ids fit with no provider; nineteen with one.
        let twenty: Vec<u32> = (0..20).map(|n| 100 + 2 * n).collect();
        assert!(!query(None, &twenty).is_structured());
        assert!(query(Some(WSUS), &twenty).is_structured());
        assert!(!query(Some(WSUS), &twenty[..19]).is_structured());
        // Fifty consecutive ids are one range.
        let run: Vec<u32> = (1000..1050).collect();
        assert_eq!(
            query(Some(WSUS), &run).text(),
            "*[System[Provider[@Name='Windows Server Update Services'] and ((EventID>=1000 and EventID<=1049))]]"
        );

        let scattered: Vec<u32> = (0..45).map(|n| 3 * n).collect();
        let mut ids = scattered.clone();
        ids.extend(500..510);
        let q = query(Some("A & <B>"), &ids);
        assert!(q.is_structured());
        assert!(q.text().starts_with(
            "<QueryList><Query Id=\"0\" Path=\"Application\"><Select Path=\"Application\">*[System[Provider[@Name='A &amp; &lt;B&gt;'] and (EventID=0 or "
        ));
        assert!(q.text().contains("(EventID&gt;=500 and EventID&lt;=509)"));
        let selects = selects(&q);
        assert_eq!(selects.len(), 3, "{selects:#?}");
        let mut seen = Vec::new();
        for select in &selects {
            assert!(expressions(select) <= MAX_EXPRESSIONS, "{select}");
            assert!(select.starts_with("*[System[Provider[@Name='A & <B>'] and ("));
            for id in &scattered {
                if select.contains(&format!("EventID={id})"))
                    || select.contains(&format!("EventID={id} "))
                {
                    seen.push(*id);
                }
            }
        }
        assert_eq!(seen, scattered, "every id in one select, in order");
        assert!(selects[2].contains("(EventID>=500 and EventID<=509)"));
    }

    #[test]
    fn a_wsus_364_is_read_with_its_rendering_info() {
        let e = event(WSUS_364);
        assert_eq!(e.provider, WSUS);
        assert_eq!(e.event_id, 364);
        assert_eq!(e.qualifiers, Some(49152));
        assert_eq!(e.level, 2);
        assert_eq!(e.level_name(), "Error");
        assert_eq!(e.level_text.as_deref(), Some("Error"));
        assert_eq!(e.provider_text.as_deref(), Some(WSUS));
        assert_eq!(e.record_id, Some(48211));
        assert_eq!(e.channel, "Application");
        assert_eq!(e.computer, "WSUS-DOWN.contoso.local");
        assert_eq!(
            e.time_created,
            Some(UNIX_EPOCH + Duration::new(1_795_515_302, 484_375_000))
        );
        assert_eq!(e.insertion_strings.len(), 1);
        assert_eq!(e.insertion_strings[0].name, None);
        assert_eq!(e.insertion_strings[0].value.text, ARTICLE_364);
        assert_eq!(e.message.as_ref().unwrap().text, ARTICLE_364);
    }

    #[test]
    fn the_other_fixtures_are_read() {
        let e = event(WSUS_10012);
        assert_eq!((e.event_id, e.level_name().as_str()), (10012, "Error"));
        assert_eq!(e.insertion_strings.len(), 2);
        assert_eq!(e.message, None);
        assert!(
            e.message_or_insertion_strings(1 << 16)
                .text
                .ends_with("Full Control for NETWORK SERVICE. Access is denied.")
        );

        let e = event(WSUS_10021);
        assert_eq!((e.event_id, e.level_name().as_str()), (10021, "Warning"));
        assert_eq!(e.qualifiers, Some(32768));
        assert_eq!(
            e.time_created,
            parse_system_time("2026-11-24T11:00:00.000Z")
        );

        let e = event(SCM_7036);
        assert_eq!(e.provider, "Service Control Manager");
        assert_eq!((e.event_id, e.level_name().as_str()), (7036, "Information"));
        assert_eq!(e.channel, "System");
        let named: Vec<(Option<&str>, &str)> = e
            .insertion_strings
            .iter()
            .map(|s| (s.name.as_deref(), s.value.text.as_str()))
            .collect();
        assert_eq!(
            named,
            [
                (Some("param1"), "Background Intelligent Transfer Service"),
                (Some("param2"), "stopped")
            ],
            "Binary is no insertion string"
        );

        let e = event(SCM_7040);
        assert_eq!(e.event_id, 7040);
        assert_eq!(e.insertion_strings[3].value.text, "BITS");
    }

    #[test]
    fn user_data_is_flattened_and_bad_xml_refused() {
        let xml = format!(
            "<Event xmlns='{EVENT_NAMESPACE}'><System><Provider Name='Microsoft-Windows-Eventlog'/><EventID>104</EventID><Level>4</Level><Channel>System</Channel></System><UserData><LogFileCleared xmlns='http://manifests.microsoft.com/win/2004/08/windows/eventlog'><SubjectUserName>admin</SubjectUserName><Channel>Application</Channel><Nested><Deep>x &amp; y</Deep></Nested></LogFileCleared></UserData></Event>"
        );
        let e = event(&xml);
        let flat: Vec<(Option<&str>, &str)> = e
            .insertion_strings
            .iter()
            .map(|s| (s.name.as_deref(), s.value.text.as_str()))
            .collect();
        assert_eq!(
            flat,
            [
                (Some("SubjectUserName"), "admin"),
                (Some("Channel"), "Application"),
                (Some("Deep"), "x & y")
            ]
        );
        assert_eq!(
            (e.record_id, e.time_created, e.qualifiers),
            (None, None, None)
        );

        for (bad, expected) in [
            ("not xml", "cannot be parsed"),
            ("<Bookmark/>", "root element is <Bookmark>"),
            (
                "<Event><System><EventID>1</EventID></System></Event>",
                "no provider name",
            ),
            (
                "<Event><System><Provider Name='p'/></System></Event>",
                "no EventID",
            ),
            (
                "<Event><System><Provider Name='p'/><EventID>70000</EventID></System></Event>",
                "EventID is not a number",
            ),
            (
                "<!DOCTYPE Event [<!ENTITY a 'aaaa'>]><Event/>",
                "cannot be parsed",
            ),
        ] {
            let e = WindowsEvent::from_xml(bad, 1024).unwrap_err();
            assert!(e.to_string().contains(expected), "{bad}: {e}");
        }
        let huge = format!("<Event>{}</Event>", " ".repeat(MAX_EVENT_XML_BYTES));
        assert!(matches!(
            WindowsEvent::from_xml(&huge, 1024),
            Err(EventXmlError::TooLarge(_))
        ));
    }

    #[test]
    fn a_channel_event_and_a_journal_entry_with_the_same_facts_give_the_same_event() {
        use super::super::tail::{LineFilter, line_event};
        let f = filter(Some(WSUS), &[364], Some("Range protocol"));
        let from_channel = event(WSUS_364).record(&f, 1 << 16).unwrap();
        let journal_line = serde_json::json!({
            "time": "2026-11-24T10:15:02.484Z",
            "log": "Application",
            "id": 364,
            "level": "Error",
            "source": WSUS,
            "computer": "WSUS-DOWN.contoso.local",
            "message": ARTICLE_364,
        })
        .to_string();
        let from_journal = line_event(
            &LineFilter::EventLog(f.clone()),
            std::path::Path::new("/lab/Application.jsonl"),
            &journal_line,
        )
        .unwrap();
        assert_eq!(from_channel.kind, EventKind::SystemEvent);
        assert_eq!(
            (
                &from_channel.kind,
                &from_channel.source,
                &from_channel.subject
            ),
            (
                &from_journal.kind,
                &from_journal.source,
                &from_journal.subject
            )
        );
        assert_eq!(from_channel.subject, "Windows Server Update Services/364");
        assert_eq!(
            from_channel.source,
            "event-log:Windows Server Update Services"
        );
        // Every field of the journal's event, the same; and the facts only
        // a channel has beside them.
        for (key, value) in &from_journal.fields {
            assert_eq!(from_channel.field(key), Some(value.as_str()), "{key}");
        }
        let extra: Vec<&str> = from_channel
            .fields
            .keys()
            .filter(|k| !from_journal.fields.contains_key(*k))
            .map(String::as_str)
            .collect();
        assert_eq!(extra, ["data.1", "qualifiers", "record-id"]);

        // The filter: the same for both.
        for miss in [
            filter(Some(WSUS), &[364], Some("Access is denied")),
            filter(Some("Other"), &[], None),
            filter(None, &[10012], None),
        ] {
            assert!(event(WSUS_364).record(&miss, 1 << 16).is_none());
            assert!(
                line_event(
                    &LineFilter::EventLog(miss),
                    std::path::Path::new("/x"),
                    &journal_line
                )
                .is_none()
            );
        }
    }

    #[test]
    fn without_a_message_the_insertion_strings_stand_for_it() {
        let scm = filter(Some("Service Control Manager"), &[7036], Some("stopped"));
        let record = event(SCM_7036).record(&scm, 1 << 16).unwrap();
        assert_eq!(
            record.field("message"),
            Some("Background Intelligent Transfer Service stopped")
        );
        assert_eq!(
            record.field("data.param1"),
            Some("Background Intelligent Transfer Service")
        );
        assert_eq!(record.field("data.param2"), Some("stopped"));
        assert_eq!(record.field("level"), Some("Information"));
        assert_eq!(record.field("log"), Some("System"));
        assert_eq!(record.field("time"), Some("2026-11-24T10:20:41.123Z"));
        assert_eq!(record.field("qualifiers"), Some("16384"));
        assert_eq!(record.field("truncated"), None);

        // A formatted message replaces the fallback, and the pattern
        // applies to it.
        let formatted =
            "The Background Intelligent Transfer Service service entered the stopped state.\r\n";
        let with = event(SCM_7036).with_message(Some(formatted), 1 << 16);
        let record = with.record(&scm, 1 << 16).unwrap();
        assert_eq!(record.field("message"), Some(formatted.trim_end()));
        let entered = filter(None, &[], Some("^The .* entered the stopped state"));
        assert!(with.record(&entered, 1 << 16).is_some());
        assert!(event(SCM_7036).record(&entered, 1 << 16).is_none());
        // An empty formatted message keeps what there was.
        assert_eq!(
            event(WSUS_364).with_message(Some("\r\n"), 1 << 16).message,
            event(WSUS_364).message
        );

        // Unnamed insertion strings by position.
        let record = event(WSUS_10012)
            .record(&filter(None, &[], None), 1 << 16)
            .unwrap();
        assert_eq!(record.field("data.2"), Some("Access is denied."));
    }

    #[test]
    fn a_long_message_is_cut_at_max_line_and_marked_as_a_long_line_is() {
        let long = "€".repeat(2000); // 6000 bytes
        let xml = WSUS_10021.replace(
            "Catalog synchronization failed.",
            &format!("Catalog synchronization failed. {long}"),
        );
        let e = WindowsEvent::from_xml(&xml, 1024).unwrap();
        let record = e.record(&filter(None, &[], None), 1024).unwrap();
        let message = record.field("message").unwrap();
        assert!(
            message.len() <= 1024 && message.len() > 1020,
            "{}",
            message.len()
        );
        assert!(message.starts_with("Catalog synchronization failed. €"));
        assert_eq!(record.field("truncated"), Some("true"));
        let whole = format!(
            "Catalog synchronization failed. {long} Reason: WebException: The remote name could not be resolved: 'upstream.contoso.local'"
        );
        assert_eq!(
            record.field("message_bytes"),
            Some(whole.len().to_string().as_str())
        );
        assert!(record.field("data.1").unwrap().len() <= 1024);

        // A formatted message the same way.
        let e = event(SCM_7040).with_message(Some(&long), 1024);
        let record = e.record(&filter(None, &[], None), 1024).unwrap();
        assert_eq!(record.field("message").map(str::len), Some(1023));
        assert_eq!(record.field("message_bytes"), Some("6000"));

        // Too many insertion strings: the rest dropped, the event marked.
        let many: String = (0..100).map(|n| format!("<Data>{n}</Data>")).collect();
        let xml = WSUS_10021.replace("<Data>Catalog", &format!("{many}<Data>Catalog"));
        let e = event(&xml);
        assert_eq!(e.insertion_strings.len(), MAX_INSERTION_STRINGS);
        assert_eq!(e.insertion_strings_dropped, 37);
        let record = e.record(&filter(None, &[], None), 1 << 16).unwrap();
        assert_eq!(record.field("truncated"), Some("true"));
        assert_eq!(record.field("message_bytes"), None);
    }

    #[test]
    fn times_are_read_and_written_as_the_journal_writes_them() {
        for (text, expected) in [
            ("2026-11-24T10:15:02.4843750Z", "2026-11-24T10:15:02.484Z"),
            ("2026-11-24T10:15:02Z", "2026-11-24T10:15:02.000Z"),
            ("2000-02-29T23:59:59.999999999Z", "2000-02-29T23:59:59.999Z"),
            ("1970-01-01T00:00:00.1Z", "1970-01-01T00:00:00.100Z"),
            ("2100-03-01T00:00:00Z", "2100-03-01T00:00:00.000Z"),
        ] {
            let time = parse_system_time(text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(iso_time(time), expected);
        }
        for bad in [
            "2026-11-24 10:15:02Z",
            "2026-11-24T10:15:02",
            "2026-13-24T10:15:02Z",
            "2026-11-24T24:00:00Z",
            "2026-11-24T10:15:02.5x3Z",
            "1969-12-31T23:59:59Z",
            "",
        ] {
            assert_eq!(parse_system_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_malformed_event_is_skipped_and_the_reader_goes_on() {
        let q = query(Some(WSUS), &[364]);
        let mut reader = ChannelReader::new(
            "p".into(),
            q.clone(),
            filter(Some(WSUS), &[364], None),
            4096,
        );
        assert!(reader.parse("<broken").is_none());
        let parsed = reader.parse(WSUS_364).unwrap();
        let Some(Intake::Event(routed)) = reader.intake(parsed, None) else {
            panic!("no event")
        };
        assert_eq!(routed.plugin, "p");
        assert_eq!(routed.event.field("event-id"), Some("364"));
        assert!(
            reader.intake(event(WSUS_10012), None).is_none(),
            "not its id"
        );
        let Intake::EventLogBookmark { key, bookmark } = reader.bookmark("<BookmarkList/>".into())
        else {
            panic!()
        };
        assert_eq!(key, BookmarkKey::new("p", &q));
        assert_eq!(bookmark, "<BookmarkList/>");
    }

    #[test]
    fn a_bookmark_is_saved_and_loaded_per_plugin_channel_and_query() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state")).unwrap();
        let wsus = query(Some(WSUS), &[364, 10012]);
        let key = BookmarkKey::new("content-acl", &wsus);
        assert_eq!(load_bookmark(&store, &key), None);
        let bookmark = "<BookmarkList>\r\n  <Bookmark Channel='Application' RecordId='48212' IsCurrent='true'/>\r\n</BookmarkList>";
        let txn = store.database().begin_write().unwrap();
        write_bookmark(&txn, &key, bookmark).unwrap();
        txn.commit().unwrap();
        assert_eq!(load_bookmark(&store, &key).as_deref(), Some(bookmark));
        // Written again: the newer one.
        let newer = bookmark.replace("48212", "48213");
        let txn = store.database().begin_write().unwrap();
        write_bookmark(&txn, &key, &newer).unwrap();
        txn.commit().unwrap();
        drop(store);
        let store = Store::open(&dir.path().join("state")).unwrap();
        assert_eq!(load_bookmark(&store, &key), Some(newer));
        // Another plugin, channel or query: its own.
        for other in [
            BookmarkKey::new("bits-restart", &wsus),
            BookmarkKey::new("content-acl", &query(Some(WSUS), &[364])),
            BookmarkKey::new(
                "content-acl",
                &ChannelQuery::new("System", Some(WSUS), &[364, 10012]).unwrap(),
            ),
        ] {
            assert_ne!(other, key);
            assert_eq!(load_bookmark(&store, &other), None);
        }
    }

    #[cfg(not(windows))]
    #[tokio::test]
    async fn a_channel_trigger_cannot_start_here_and_says_so() {
        use crate::policy::{EventSource, Trigger};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state")).unwrap();
        let (sink, _events) = tokio::sync::mpsc::channel(8);
        let plugin = super::super::tests::plugin(
            "bits-restart",
            vec![Trigger::EventLog {
                from: EventSource::Channel {
                    name: "System".into(),
                },
                max_line: 4096,
                source: Some("Service Control Manager".into()),
                ids: vec![7040],
                message: None,
            }],
        );
        let error = super::super::TriggerSet::start(&[plugin], &sink, &store)
            .await
            .unwrap_err();
        assert_eq!(
            (error.plugin.as_str(), error.kind),
            ("bits-restart", "event_log")
        );
        assert_eq!(error.target, "channel System");
        assert!(
            error.to_string().contains("can be read only on Windows"),
            "{error}"
        );
    }
}
