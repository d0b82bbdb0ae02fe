//! Triggers turn what happens on the system into events for plugins: file
//! changes (notify, debounced), new lines of text logs and of JSON-lines
//! event journals (tailed across rotation and truncation, resuming at the
//! remembered offset after a restart), new events of Windows event log
//! channels (resuming after the remembered bookmark), new entries of the
//! systemd journal (resuming after the remembered cursor), intervals, the
//! agent's start, and manual requests dropped into the agent's inbox by
//! `medic send`.
//!
//! Every trigger runs as a task sending [`Intake`] to the dispatcher:
//! events, and the progress that must be saved only once the events before
//! it are durably queued (a tail's read position, an event log bookmark, a
//! journal cursor, a consumed inbox file). Dropping the returned
//! [`TriggerSet`] stops them all.
//!
//! The two sources of an `event_log` trigger, a journal file and a Windows
//! channel, share its filter ([`EventFilter`]) and the making of its events
//! ([`system_event`]): a plugin gets the same event for the same facts from
//! either. The `journal` trigger's events are made the same way, named
//! after the systemd journal ([`SystemLog::Journal`]).

pub mod file;
pub mod inbox;
pub mod journal;
pub mod tail;
pub mod windows_events;

use crate::audit::Store;
use crate::policy::{EventSource, PluginPolicy, Trigger};
use medic_sandbox::{EventKind, EventRecord};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// An event on its way to one plugin.
#[derive(Debug, Clone)]
pub struct Routed {
    pub plugin: String,
    pub event: EventRecord,
    /// For a whole-tree file event, the paths it covers.
    pub changed: Option<ChangedPaths>,
    /// An inbox request: its file stays, and is read again, until its
    /// event is committed, so its run waits for that commit.
    pub from_inbox: bool,
}

impl Routed {
    pub fn new(plugin: String, event: EventRecord) -> Self {
        Self {
            plugin,
            event,
            changed: None,
            from_inbox: false,
        }
    }
}

/// The paths a whole-tree file event covers (the plugin sees them in its
/// `paths` field), so that the dispatcher can tell the echo of a plugin's
/// own changes from new ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedPaths {
    pub paths: Vec<std::path::PathBuf>,
    /// Some changed paths are not listed: too many, or the kernel lost
    /// events. Such an event is never taken for an echo.
    pub truncated: bool,
}

/// What triggers hand the dispatcher, in order.
#[derive(Debug)]
pub enum Intake {
    Event(Routed),
    /// What a trigger read in one go (a tail's lines and the position
    /// after them), taken whole by the dispatcher: a write to the start
    /// log never holds the events of a read without its position.
    Read(Vec<Intake>),
    /// A tail has read its file up to `position`: saved in the same
    /// transaction as the events (of `kind`) it sent before, so a restart
    /// neither loses nor repeats them.
    TailPosition {
        key: tail::PositionKey,
        position: tail::Position,
        kind: EventKind,
    },
    /// An event log channel has been read up to this bookmark (the XML
    /// Windows renders for it): saved in the same transaction as the
    /// events sent before it, as a tail position is.
    EventLogBookmark {
        key: windows_events::BookmarkKey,
        bookmark: String,
    },
    /// The systemd journal has been read up to this cursor for a `journal`
    /// trigger: saved in the same transaction as the events sent before
    /// it, as a tail position is.
    JournalCursor {
        key: journal::CursorKey,
        cursor: String,
    },
    /// The inbox request in this file was sent before: the file is removed
    /// once its event is durably queued.
    InboxConsumed(std::path::PathBuf),
}

impl From<Routed> for Intake {
    fn from(routed: Routed) -> Self {
        Self::Event(routed)
    }
}

/// Where triggers send what they saw.
pub type EventSink = mpsc::Sender<Intake>;

/// A new event with a fresh id and the current time.
pub fn make_event(
    kind: EventKind,
    source: String,
    subject: String,
    fields: Vec<(String, String)>,
) -> EventRecord {
    // The first value of a key wins: the trigger's own fields come first,
    // so a log line or a journal entry cannot overwrite them.
    let mut map = std::collections::BTreeMap::new();
    for (key, value) in fields {
        map.entry(key).or_insert(value);
    }
    EventRecord::new(kind, source, subject, map)
}

/// Which entries an `event_log` trigger takes, whether it reads a journal
/// file or a Windows channel; a `journal` trigger's message pattern too.
#[derive(Debug, Clone)]
pub struct EventFilter {
    /// The source (a Windows event's provider) exactly; any when `None`.
    pub source: Option<String>,
    /// One of these ids; any when empty.
    pub ids: Vec<u32>,
    /// A pattern the message must match.
    pub message: Option<regex::Regex>,
}

impl EventFilter {
    /// Whether an entry with this source, id and message is taken.
    pub fn admits(&self, source: &str, id: u32, message: &str) -> bool {
        self.source.as_deref().is_none_or(|wanted| wanted == source)
            && (self.ids.is_empty() || self.ids.contains(&id))
            && self.message.as_ref().is_none_or(|m| m.is_match(message))
    }
}

/// The log a system event was read from, which names its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemLog {
    /// An `event_log` trigger's JSON-lines journal or Windows channel:
    /// `event-log:<source>`.
    EventLog,
    /// The systemd journal (`journal` trigger): `journal:<source>`.
    Journal,
}

impl SystemLog {
    fn prefix(self) -> &'static str {
        match self {
            Self::EventLog => "event-log",
            Self::Journal => "journal",
        }
    }
}

/// The event a plugin gets for one entry of a system log, from a journal
/// file, a channel or the systemd journal alike: kind `system-event`,
/// source `<log>:<source>`, the entry's subject or else `<source>/<id>`
/// (`<source>` without an id), and the field `event-id` (when there is an
/// id) before the entry's own fields, so that an entry cannot pass for
/// another id.
pub fn system_event(
    log: SystemLog,
    source: &str,
    id: Option<u32>,
    subject: Option<String>,
    fields: Vec<(String, String)>,
) -> EventRecord {
    let subject = subject
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| match id {
            Some(id) => format!("{source}/{id}"),
            None => source.to_string(),
        });
    let mut all = Vec::with_capacity(fields.len() + 1);
    if let Some(id) = id {
        all.push(("event-id".to_string(), id.to_string()));
    }
    all.extend(fields);
    make_event(
        EventKind::SystemEvent,
        format!("{}:{source}", log.prefix()),
        subject,
        all,
    )
}

/// The running trigger tasks, per plugin; dropping it stops them.
#[derive(Debug, Default)]
pub struct TriggerSet {
    plugins: BTreeMap<String, Running>,
}

/// The triggers of one plugin and the tasks serving them.
#[derive(Debug)]
struct Running {
    triggers: Vec<Trigger>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for TriggerSet {
    fn drop(&mut self) {
        for running in self.plugins.values() {
            for task in &running.tasks {
                task.abort();
            }
        }
    }
}

/// Why a trigger could not start.
#[derive(Debug, thiserror::Error)]
#[error("plugin `{plugin}`: cannot start its {kind} trigger on {target}: {reason}")]
pub struct TriggerError {
    pub plugin: String,
    pub kind: &'static str,
    pub target: String,
    pub reason: String,
}

/// Stop tasks and wait until they have stopped, so that nothing they
/// watched is watched twice once their successors start.
async fn stop(tasks: Vec<JoinHandle<()>>) {
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }
}

impl TriggerSet {
    /// Start every trigger of `plugins`. Manual events come through the
    /// inbox, started separately by the agent.
    pub async fn start(
        plugins: &[PluginPolicy],
        sink: &EventSink,
        store: &Store,
    ) -> Result<Self, TriggerError> {
        let mut set = Self::default();
        for plugin in plugins {
            let tasks = start_plugin(plugin, sink, store).await?;
            set.plugins.insert(
                plugin.name.clone(),
                Running {
                    triggers: plugin.triggers.clone(),
                    tasks,
                },
            );
        }
        Ok(set)
    }

    /// Serve `plugins` from now on. A plugin whose triggers are unchanged
    /// keeps its tasks (its `startup` trigger does not fire again); one
    /// whose triggers changed has its old tasks stopped, and waited for,
    /// before the new ones start, so no file is ever tailed twice for it; a
    /// new plugin's triggers start; a removed one's stop. A plugin whose
    /// new triggers cannot start gets its old ones back (none, if it is
    /// new) and is returned with the error, so the caller can keep its old
    /// version.
    pub async fn update(
        &mut self,
        plugins: &[PluginPolicy],
        sink: &EventSink,
        store: &Store,
    ) -> Vec<TriggerError> {
        let removed: Vec<String> = self
            .plugins
            .keys()
            .filter(|name| !plugins.iter().any(|p| &p.name == *name))
            .cloned()
            .collect();
        for name in removed {
            if let Some(running) = self.plugins.remove(&name) {
                stop(running.tasks).await;
            }
        }
        let mut errors = Vec::new();
        for plugin in plugins {
            let previous = match self.plugins.remove(&plugin.name) {
                Some(old) if old.triggers == plugin.triggers => {
                    self.plugins.insert(plugin.name.clone(), old);
                    continue;
                }
                Some(old) => {
                    stop(old.tasks).await;
                    Some(old.triggers)
                }
                None => None,
            };
            match start_plugin(plugin, sink, store).await {
                Ok(tasks) => {
                    self.plugins.insert(
                        plugin.name.clone(),
                        Running {
                            triggers: plugin.triggers.clone(),
                            tasks,
                        },
                    );
                }
                Err(e) => {
                    errors.push(e);
                    let Some(triggers) = previous else { continue };
                    // The old triggers again, but for `startup`: the plugin
                    // did not start anew.
                    let restored = PluginPolicy {
                        triggers: triggers
                            .iter()
                            .filter(|t| !matches!(t, Trigger::Startup))
                            .cloned()
                            .collect(),
                        ..plugin.clone()
                    };
                    match start_plugin(&restored, sink, store).await {
                        Ok(tasks) => {
                            self.plugins
                                .insert(plugin.name.clone(), Running { triggers, tasks });
                        }
                        Err(e) => errors.push(e),
                    }
                }
            }
        }
        errors
    }
}

/// Start the triggers of one plugin; if one cannot start, the others
/// are stopped (and waited for) before the error is returned.
async fn start_plugin(
    plugin: &PluginPolicy,
    sink: &EventSink,
    store: &Store,
) -> Result<Vec<JoinHandle<()>>, TriggerError> {
    let mut tasks = Vec::new();
    for trigger in &plugin.triggers {
        let name = plugin.name.clone();
        let sink = sink.clone();
        let fail = |target: String, reason: String| TriggerError {
            plugin: plugin.name.clone(),
            kind: trigger.kind(),
            target,
            reason,
        };
        let started = match trigger {
            Trigger::File {
                path,
                changes,
                debounce,
                whole_tree,
            } => file::spawn(
                name,
                path.clone(),
                file::Options {
                    wanted: changes.clone(),
                    debounce: *debounce,
                    whole_tree: *whole_tree,
                },
                sink,
            )
            .map_err(|e| fail(path.display().to_string(), e)),
            Trigger::Log {
                path,
                pattern,
                max_line,
            } => tail::spawn(
                name,
                path.clone(),
                *max_line,
                tail::LineFilter::Log(pattern.regex().clone()),
                store.clone(),
                sink,
            )
            .map_err(|e| fail(path.display().to_string(), e)),
            Trigger::EventLog {
                from,
                max_line,
                source,
                ids,
                message,
            } => {
                let filter = EventFilter {
                    source: source.clone(),
                    ids: ids.clone(),
                    message: message.as_ref().map(|m| m.regex().clone()),
                };
                match from {
                    EventSource::Journal { path } => tail::spawn(
                        name,
                        path.clone(),
                        *max_line,
                        tail::LineFilter::EventLog(filter),
                        store.clone(),
                        sink,
                    )
                    .map_err(|e| fail(path.display().to_string(), e)),
                    EventSource::Channel { name: channel } => {
                        windows_events::spawn(name, channel, filter, *max_line, store.clone(), sink)
                            .map_err(|e| fail(format!("channel {channel}"), e.to_string()))
                    }
                }
            }
            Trigger::Journal {
                matching,
                message,
                max_line,
            } => journal::spawn(
                name,
                matching,
                message.as_ref().map(|m| m.regex().clone()),
                *max_line,
                store.clone(),
                sink,
            )
            .map_err(|e| fail(journal::describe(matching), e.to_string())),
            Trigger::Every { interval } => Ok(spawn_every(name, *interval, sink)),
            Trigger::Startup => Ok(tokio::spawn(async move {
                let event = make_event(
                    EventKind::Startup,
                    "agent".into(),
                    String::new(),
                    Vec::new(),
                );
                let _ = sink.send(Routed::new(name, event).into()).await;
            })),
            Trigger::Manual => continue,
        };
        match started {
            Ok(task) => tasks.push(task),
            Err(e) => {
                stop(tasks).await;
                return Err(e);
            }
        }
    }
    Ok(tasks)
}

fn spawn_every(plugin: String, interval: Duration, sink: EventSink) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        ticker.tick().await; // the first tick is immediate: wait a full interval
        loop {
            ticker.tick().await;
            let source = format!("every {}ms", interval.as_millis());
            let event = make_event(EventKind::Schedule, source, String::new(), Vec::new());
            if sink
                .send(Routed::new(plugin.clone(), event).into())
                .await
                .is_err()
            {
                break;
            }
        }
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::policy::Pattern;
    use medic_sandbox::{Grants, Limits, Mode, Settings};
    use std::path::PathBuf;

    /// A plugin's policy with `triggers` and defaults for the rest.
    pub(crate) fn plugin(name: &str, triggers: Vec<Trigger>) -> PluginPolicy {
        PluginPolicy {
            name: name.into(),
            component: PathBuf::from("/nowhere.wasm"),
            mode: Mode::Enforce,
            triggers,
            grants: Grants::none(),
            limits: Limits::default(),
            rate: None,
            flap_guard: None,
            concurrency: 1,
            settings: Settings::new(),
            trust: crate::policy::Trust::default(),
            line: 1,
        }
    }

    fn append(path: &std::path::Path, text: &str) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }

    /// The events that arrive until `count` have (however long that takes
    /// on a loaded machine), and any that follow at once: a duplicate shows
    /// as one too many.
    /// Tail positions are saved as the dispatcher saves them.
    async fn collect(
        events: &mut mpsc::Receiver<Intake>,
        store: &Store,
        count: usize,
    ) -> Vec<Routed> {
        let mut got = Vec::new();
        fn take(intake: Intake, got: &mut Vec<Routed>, store: &Store) {
            match intake {
                Intake::Event(routed) => got.push(routed),
                Intake::Read(items) => {
                    for item in items {
                        take(item, got, store);
                    }
                }
                Intake::TailPosition { key, position, .. } => {
                    let txn = store.database().begin_write().unwrap();
                    tail::write_position(&txn, &key, &position).unwrap();
                    txn.commit().unwrap();
                }
                Intake::EventLogBookmark { key, bookmark } => {
                    let txn = store.database().begin_write().unwrap();
                    windows_events::write_bookmark(&txn, &key, &bookmark).unwrap();
                    txn.commit().unwrap();
                }
                Intake::JournalCursor { key, cursor } => {
                    let txn = store.database().begin_write().unwrap();
                    journal::write_cursor(&txn, &key, &cursor).unwrap();
                    txn.commit().unwrap();
                }
                Intake::InboxConsumed(_) => {}
            }
        }
        let mut taken = 0;
        loop {
            match tokio::time::timeout(Duration::from_secs(60), events.recv()).await {
                Ok(Some(intake)) => {
                    let before = got.len();
                    take(intake, &mut got, store);
                    taken += got.len() - before;
                }
                _ => panic!("only {taken} of {count} events came"),
            }
            if taken >= count {
                break;
            }
        }
        while let Ok(Some(intake)) =
            tokio::time::timeout(Duration::from_millis(200), events.recv()).await
        {
            take(intake, &mut got, store);
        }
        got
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reload_restarts_only_the_triggers_that_changed_and_never_tails_twice() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state")).unwrap();
        let log = dir.path().join("app.log");
        std::fs::write(&log, "").unwrap();
        let tail = Trigger::Log {
            path: log.clone(),
            pattern: Pattern::new("ERROR").unwrap(),
            max_line: 1024,
        };
        let (sink, mut events) = mpsc::channel(1024);
        let first = [
            plugin("steady", vec![Trigger::Startup]),
            plugin("tailer", vec![Trigger::Startup, tail.clone()]),
        ];
        let mut set = TriggerSet::start(&first, &sink, &store).await.unwrap();
        let started = collect(&mut events, &store, 2).await;
        assert_eq!(started.len(), 2, "{started:?}");

        for round in 0..20 {
            // `tailer` changes (one more trigger, then one less), `steady`
            // does not: only `tailer` starts again.
            let every = Trigger::Every {
                interval: Duration::from_secs(3600 + round),
            };
            let next = [
                plugin("steady", vec![Trigger::Startup]),
                plugin("tailer", vec![Trigger::Startup, tail.clone(), every]),
            ];
            assert!(set.update(&next, &sink, &store).await.is_empty());
            append(&log, &format!("ERROR line {round}\n"));
            let got = collect(&mut events, &store, 2).await;
            let startups: Vec<&str> = got
                .iter()
                .filter(|r| r.event.kind == EventKind::Startup)
                .map(|r| r.plugin.as_str())
                .collect();
            assert_eq!(startups, ["tailer"], "round {round}");
            let lines: Vec<&str> = got
                .iter()
                .filter(|r| r.event.kind == EventKind::LogLine)
                .map(|r| r.event.field("line").unwrap_or_default())
                .collect();
            assert_eq!(lines, [format!("ERROR line {round}")], "round {round}");
        }

        // The trigger's max_line reaches the tail: a longer line is cut
        // there and marked.
        append(&log, &format!("ERROR {}\n", "x".repeat(5000)));
        let got = collect(&mut events, &store, 1).await;
        let long = &got[0].event;
        assert_eq!(long.field("line").map(str::len), Some(1024));
        assert_eq!(long.field("truncated"), Some("true"));
        assert_eq!(long.field("line_bytes"), Some("5006"));

        // A plugin left out stops; one whose trigger cannot start keeps
        // its old ones and is reported.
        let missing = Trigger::Log {
            path: dir.path().join("no/such/folder/x.log"),
            pattern: Pattern::new("x").unwrap(),
            max_line: tail::MAX_LINE_BYTES,
        };
        let errors = set
            .update(&[plugin("tailer", vec![missing])], &sink, &store)
            .await;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].plugin, "tailer");
        // The restored tail serves on, without a new startup event; nothing
        // of `steady`, which was left out.
        append(&log, "ERROR after\n");
        let got = collect(&mut events, &store, 1).await;
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].plugin, "tailer");
        assert_eq!(got[0].event.field("line"), Some("ERROR after"));
    }
}
