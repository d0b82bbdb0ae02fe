//! The `journal` trigger's reader against a real journald (the namespaced
//! systemd's, read from outside with `directory =`, as a container's
//! journal is): a failing unit's own line and systemd's failure line come
//! as system events with their unit, priority and message, taken by `unit`
//! and by `priority`; a reader stopped and started again resumes at its
//! saved cursor with nothing lost or repeated; a first start, and a start
//! at a cursor journalctl refuses, read only what comes.

use crate::namespace::{NamespacedSystemd, PATIENCE, UnitDir};
use medic_agent::audit::Store;
use medic_agent::policy::{JournalMatch, Pattern};
use medic_agent::triggers::Intake;
use medic_agent::triggers::journal::{self, CursorKey, JournalQuery, Priority};
use medic_agent::triggers::windows_events::iso_time;
use medic_sandbox::{EventKind, EventRecord};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const UNIT: &str = "medic-boom.service";
/// Started many times in a row: no start limit.
const BOOM: &str =
    "[Unit]\nStartLimitIntervalSec=0\n[Service]\nExecStart=/bin/sh -c 'echo boom >&2; exit 3'\n";
const FAILED: &str = "medic-boom.service: Failed with result 'exit-code'.";

/// One reader of the journal, as the trigger set starts it, with what it
/// handed over so far.
struct Reader {
    plugin: &'static str,
    matching: JournalMatch,
    message: Option<&'static str>,
    task: Option<JoinHandle<()>>,
    intake: mpsc::Receiver<Intake>,
    sink: mpsc::Sender<Intake>,
    events: Vec<EventRecord>,
}

impl Reader {
    fn new(
        plugin: &'static str,
        directory: &Path,
        units: &[&str],
        priority: Option<&str>,
        message: Option<&'static str>,
    ) -> Self {
        let (sink, intake) = mpsc::channel(1024);
        Self {
            plugin,
            matching: JournalMatch {
                units: units
                    .iter()
                    .map(|u| journal::unit_name(u).unwrap())
                    .collect(),
                priority: priority.map(|p| Priority::parse(p).unwrap()),
                identifiers: Vec::new(),
                directory: Some(directory.to_path_buf()),
            },
            message,
            task: None,
            intake,
            sink,
            events: Vec::new(),
        }
    }

    fn key(&self) -> CursorKey {
        CursorKey::new(self.plugin, &JournalQuery::new(&self.matching))
    }

    fn start(&mut self, store: &Store) {
        self.task = Some(
            journal::spawn(
                self.plugin.to_string(),
                &self.matching,
                self.message
                    .map(|m| Pattern::new(m).unwrap().regex().clone()),
                64 << 10,
                store.clone(),
                self.sink.clone(),
            )
            .unwrap(),
        );
    }

    /// Stop it as a reload does: its journalctl is killed.
    async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Take what came, saving cursors as the dispatcher does, until `done`
    /// holds for the events so far.
    async fn wait(&mut self, store: &Store, what: &str, done: impl Fn(&[EventRecord]) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done(&self.events) {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.intake.recv()).await {
                Ok(Some(intake)) => take(store, intake, &mut self.events),
                _ => panic!(
                    "{}: {what} not seen within {PATIENCE:?}; got {:#?}",
                    self.plugin,
                    self.messages()
                ),
            }
        }
    }

    /// Whether an event comes within `limit`.
    async fn any_within(&mut self, store: &Store, limit: Duration) -> bool {
        let before = self.events.len();
        let deadline = Instant::now() + limit;
        while self.events.len() == before {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.intake.recv()).await {
                Ok(Some(intake)) => take(store, intake, &mut self.events),
                _ => return false,
            }
        }
        true
    }

    fn messages(&self) -> Vec<&str> {
        self.events
            .iter()
            .map(|e| e.field("message").unwrap_or_default())
            .collect()
    }

    fn count(&self, message: &str) -> usize {
        self.messages().iter().filter(|m| **m == message).count()
    }
}

fn take(store: &Store, intake: Intake, events: &mut Vec<EventRecord>) {
    match intake {
        Intake::Event(routed) => events.push(routed.event),
        Intake::JournalCursor { key, cursor } => save(store, &key, &cursor),
        other => panic!("{other:?}"),
    }
}

fn save(store: &Store, key: &CursorKey, cursor: &str) {
    let txn = store.database().begin_write().unwrap();
    journal::write_cursor(&txn, key, cursor).unwrap();
    txn.commit().unwrap();
}

/// The cursor of the last entry with this identifier, once there is one.
fn last_cursor(directory: &Path, identifier: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let out = std::process::Command::new("journalctl")
            .arg(format!("--directory={}", directory.display()))
            .args(["--lines=1", "--output=json", "--no-pager"])
            .arg(format!("SYSLOG_IDENTIFIER={identifier}"))
            .output()
            .expect("journalctl runs");
        if let Ok(entry) = serde_json::from_slice::<serde_json::Value>(&out.stdout)
            && let Some(cursor) = entry["__CURSOR"].as_str()
        {
            return cursor.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no entry of {identifier} in the journal within {PATIENCE:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Start the unit and wait until it has failed again.
fn fail_once(systemd: &NamespacedSystemd) {
    let before = systemd.property(UNIT, "InvocationID");
    systemd.systemctl(&["start", UNIT]);
    systemd.wait_for("the unit to fail again", || {
        systemd.property(UNIT, "InvocationID") != before
            && systemd.property(UNIT, "ActiveState") == "failed"
    });
}

#[test]
fn a_failing_unit_s_lines_come_as_events_and_a_restarted_reader_resumes_at_its_cursor() {
    let Some(systemd) = NamespacedSystemd::boot() else {
        return;
    };
    let directory: PathBuf = systemd.root().join("run/log/journal");
    assert!(directory.is_dir(), "{}", directory.display());
    systemd.install_unit(UnitDir::Admin, UNIT, BOOM);
    // History: never read.
    fail_once(&systemd);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let state = tempfile::tempdir().unwrap();
    let store = Store::open(state.path()).unwrap();
    let mut by_unit = Reader::new("by-unit", &directory, &["medic-boom"], None, None);
    let mut by_priority = Reader::new("by-priority", &directory, &[], Some("warning"), None);
    let mut both = Reader::new(
        "both",
        &directory,
        &["medic-boom"],
        Some("warning"),
        Some("Failed with result"),
    );
    // Each resumes at an entry none of them takes (as after a reboot, or
    // once the entry is vacuumed), the unit having failed since: journalctl
    // does not print that entry, and the first one each takes after it is
    // not lost (journalctl 252's own --after-cursor loses it).
    let marker = systemd.run("systemd-cat", &["-t", "medic-marker", "echo", "marker"]);
    assert!(marker.status.success(), "{marker:?}");
    let start = last_cursor(&directory, "medic-marker");
    for reader in [&mut by_unit, &mut by_priority, &mut both] {
        save(&store, &reader.key(), &start);
    }
    fail_once(&systemd);

    runtime.block_on(async {
        for reader in [&mut by_unit, &mut by_priority, &mut both] {
            reader.start(&store);
        }

        // By unit: the service's own line and systemd's about it.
        by_unit
            .wait(&store, "boom and the failure", |events| {
                let said = |m: &str| events.iter().any(|e| e.field("message") == Some(m));
                said("boom") && said(FAILED)
            })
            .await;
        assert_eq!(by_unit.count("boom"), 1, "{:#?}", by_unit.messages());
        assert_eq!(by_unit.count(FAILED), 1, "{:#?}", by_unit.messages());
        for event in &by_unit.events {
            assert_eq!(event.kind, EventKind::SystemEvent);
            assert_eq!(event.subject, UNIT, "{event:?}");
            assert_eq!(event.field("unit"), Some(UNIT), "{event:?}");
            assert!(event.field("cursor").is_some_and(|c| c.starts_with("s=")));
        }
        let boom = by_unit
            .events
            .iter()
            .find(|e| e.field("message") == Some("boom"))
            .unwrap();
        assert_eq!(boom.source, "journal:sh");
        assert_eq!(
            (boom.field("priority"), boom.field("level")),
            (Some("6"), Some("info"))
        );
        assert_eq!(boom.field("identifier"), Some("sh"));
        assert!(
            boom.field("pid")
                .is_some_and(|p| p != "1" && p.parse::<u32>().is_ok())
        );
        let failed = by_unit
            .events
            .iter()
            .find(|e| e.field("message") == Some(FAILED))
            .unwrap();
        assert_eq!(failed.source, "journal:systemd");
        assert_eq!(
            (failed.field("priority"), failed.field("level")),
            (Some("4"), Some("warning"))
        );
        assert_eq!(failed.field("pid"), Some("1"));
        assert!(failed.field("time").is_some() && failed.field("host").is_some());

        // By priority: systemd's failure line (warning), not the output
        // (info), whatever the unit.
        by_priority
            .wait(&store, "the failure", |events| {
                events.iter().any(|e| e.field("message") == Some(FAILED))
            })
            .await;
        assert_eq!(by_priority.count(FAILED), 1);
        for event in &by_priority.events {
            let priority: u8 = event.field("priority").unwrap().parse().unwrap();
            assert!(priority <= 4, "{event:?}");
        }
        // Both, and the message.
        both.wait(&store, "the failure", |events| !events.is_empty())
            .await;
        assert_eq!(both.messages(), [FAILED]);

        // Stopped, the unit fails twice, started again: exactly those two
        // runs, from the saved cursor.
        by_unit.stop().await;
        while let Ok(intake) = by_unit.intake.try_recv() {
            take(&store, intake, &mut by_unit.events);
        }
        let seen: Vec<String> = by_unit
            .events
            .iter()
            .map(|e| e.field("cursor").unwrap().to_string())
            .collect();
        let saved = journal::load_cursor(&store, &by_unit.key()).unwrap();
        assert_eq!(Some(&saved), seen.last(), "saved after its events");
        by_unit.events.clear();
        fail_once(&systemd);
        fail_once(&systemd);
        by_unit.start(&store);
        by_unit
            .wait(&store, "two more runs", |events| {
                let count = |m: &str| {
                    events
                        .iter()
                        .filter(|e| e.field("message") == Some(m))
                        .count()
                };
                count("boom") >= 2 && count(FAILED) >= 2
            })
            .await;
        // The unit is not started again: nothing more is coming, but any
        // repeat already handed over would be here.
        while let Ok(intake) = by_unit.intake.try_recv() {
            take(&store, intake, &mut by_unit.events);
        }
        assert_eq!(by_unit.count("boom"), 2, "{:#?}", by_unit.messages());
        assert_eq!(by_unit.count(FAILED), 2, "{:#?}", by_unit.messages());
        for event in &by_unit.events {
            let cursor = event.field("cursor").unwrap();
            assert!(!seen.iter().any(|c| c == cursor), "read again: {event:?}");
        }
        for reader in [&mut by_unit, &mut by_priority, &mut both] {
            reader.stop().await;
        }

        // A first start, and a start at a cursor journalctl refuses: from
        // the end. The unit is started until each has seen it, and nothing
        // written before the start comes.
        let mut fresh = Reader::new("fresh", &directory, &["medic-boom"], None, None);
        let mut refused = Reader::new("refused", &directory, &["medic-boom"], None, None);
        save(&store, &refused.key(), "s=not-a-cursor");
        let started = iso_time(SystemTime::now());
        fresh.start(&store);
        refused.start(&store);
        let deadline = Instant::now() + PATIENCE;
        for reader in [&mut fresh, &mut refused] {
            while reader.count("boom") == 0 {
                assert!(Instant::now() < deadline, "{}: no boom", reader.plugin);
                fail_once(&systemd);
                reader.any_within(&store, Duration::from_secs(5)).await;
            }
            for event in &reader.events {
                let time = event.field("time").unwrap();
                assert!(
                    time >= started.as_str(),
                    "{}: replayed {event:?}",
                    reader.plugin
                );
            }
            reader.stop().await;
        }
        let resumed = journal::load_cursor(&store, &refused.key()).unwrap();
        assert!(resumed.starts_with("s="), "{resumed}");
    });
}
