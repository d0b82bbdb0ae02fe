//! The `log` and `event_log` triggers: follow a text file as it grows.
//!
//! New complete lines are read from the remembered offset; a file that
//! shrank was truncated (read again from the start), a file with a new
//! inode was rotated (read the new one from the start). The offset goes to
//! the dispatcher after the events of each read, which saves it with them
//! in one transaction, so a restarted agent resumes where its queue was
//! saved; on the very first start it begins at the end of the file.
//! A watcher on the file's folder wakes the reader at once; a slow poll
//! covers file systems that do not notify.

use super::{EventSink, Intake, Routed, make_event};
use crate::audit::{Store, StoreError};
use medic_sandbox::{EventKind, EventRecord};
use notify::{RecursiveMode, Watcher};
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const OFFSETS: &str = "tail_offsets";

/// How often the file is looked at without a notification.
const POLL: Duration = Duration::from_millis(500);

/// Which lines become events.
#[derive(Debug, Clone)]
pub enum LineFilter {
    /// Text lines matching the pattern; named captures become fields.
    Log(regex::Regex),
    /// JSON-lines event journal entries with this source, one of these ids
    /// (any when empty) and a message matching the pattern.
    EventLog {
        source: Option<String>,
        ids: Vec<u32>,
        message: Option<regex::Regex>,
    },
}

/// Where a tail has read up to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub inode: u64,
    pub offset: u64,
}

/// Whose read position of which file: one per plugin and path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PositionKey(String);

impl PositionKey {
    pub fn new(plugin: &str, path: &Path) -> Self {
        Self(format!("{plugin}\u{0}{}", path.display()))
    }
}

fn load_position(store: &Store, key: &PositionKey) -> Option<Position> {
    store.get_json(OFFSETS, &key.0)
}

/// Save a read position inside the dispatcher's transaction, with the
/// events read before it.
pub fn write_position(
    txn: &redb::WriteTransaction,
    key: &PositionKey,
    position: &Position,
) -> Result<(), StoreError> {
    let definition = redb::TableDefinition::<&str, &[u8]>::new(OFFSETS);
    let bytes = serde_json::to_vec(position).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    txn.open_table(definition)?
        .insert(key.0.as_str(), bytes.as_slice())?;
    Ok(())
}

#[cfg(unix)]
fn inode(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.ino()
}

#[cfg(not(unix))]
fn inode(_meta: &std::fs::Metadata) -> u64 {
    0
}

/// Follows one file.
#[derive(Debug)]
pub struct Tail {
    pub path: PathBuf,
    pub position: Option<Position>,
}

impl Tail {
    /// New complete lines since the last call. The first call on a file
    /// never seen before starts at its end; a file that does not exist yet
    /// is read from its start once it appears (all of it is new).
    pub fn read_new(&mut self) -> std::io::Result<Vec<String>> {
        let mut file = match std::fs::File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Inode 0 matches no real file: its first sight reads it all.
                self.position.get_or_insert(Position::default());
                return Ok(Vec::new());
            }
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        let (ino, len) = (inode(&meta), meta.len());
        let start = match self.position {
            None => {
                self.position = Some(Position {
                    inode: ino,
                    offset: len,
                });
                return Ok(Vec::new());
            }
            Some(p) if p.inode != ino => 0, // rotated: a new file
            Some(p) if len < p.offset => 0, // truncated
            Some(p) => p.offset,
        };
        if len == start {
            self.position = Some(Position {
                inode: ino,
                offset: start,
            });
            return Ok(Vec::new());
        }
        file.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::with_capacity((len - start) as usize);
        file.take(len - start).read_to_end(&mut buf)?;
        let complete = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        self.position = Some(Position {
            inode: ino,
            offset: start + complete as u64,
        });
        Ok(String::from_utf8_lossy(&buf[..complete])
            .lines()
            .map(|l| l.trim_end_matches('\r').to_string())
            .filter(|l| !l.is_empty())
            .collect())
    }
}

/// The event for a line, if the filter takes it.
pub fn line_event(filter: &LineFilter, path: &Path, line: &str) -> Option<EventRecord> {
    match filter {
        LineFilter::Log(pattern) => {
            let captures = pattern.captures(line)?;
            let mut fields = vec![("line".to_string(), line.to_string())];
            for name in pattern.capture_names().flatten() {
                if let Some(m) = captures.name(name) {
                    fields.push((name.to_string(), m.as_str().to_string()));
                }
            }
            let subject = captures
                .name("subject")
                .map_or_else(|| path.display().to_string(), |m| m.as_str().to_string());
            Some(make_event(
                EventKind::LogLine,
                path.display().to_string(),
                subject,
                fields,
            ))
        }
        LineFilter::EventLog {
            source,
            ids,
            message,
        } => {
            let entry: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(line).ok()?;
            let text = |key: &str| match entry.get(key) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            let event_source = text("source");
            let id: u32 = text("id").parse().ok()?;
            let event_message = text("message");
            if source.as_ref().is_some_and(|s| s != &event_source)
                || (!ids.is_empty() && !ids.contains(&id))
                || message
                    .as_ref()
                    .is_some_and(|m| !m.is_match(&event_message))
            {
                return None;
            }
            let subject = match text("subject") {
                s if s.is_empty() => format!("{event_source}/{id}"),
                s => s,
            };
            let mut fields: Vec<(String, String)> = vec![("event-id".into(), id.to_string())];
            for (key, _) in &entry {
                if key != "id" {
                    fields.push((key.clone(), text(key)));
                }
            }
            Some(make_event(
                EventKind::SystemEvent,
                format!("event-log:{event_source}"),
                subject,
                fields,
            ))
        }
    }
}

/// Start following `path` for `plugin`.
pub fn spawn(
    plugin: String,
    path: PathBuf,
    filter: LineFilter,
    store: Store,
    sink: EventSink,
) -> Result<JoinHandle<()>, String> {
    let folder = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .ok_or("the path has no parent folder")?;
    let (wake_tx, mut wake_rx) = mpsc::channel::<()>(1);
    let file_name = path.file_name().map(|n| n.to_os_string());
    let mut watcher = notify::recommended_watcher(move |result: notify::Result<notify::Event>| {
        if let Ok(event) = result
            && event
                .paths
                .iter()
                .any(|p| p.file_name().map(|n| n.to_os_string()) == file_name)
        {
            let _ = wake_tx.try_send(());
        }
    })
    .map_err(|e| e.to_string())?;
    watcher
        .watch(&folder, RecursiveMode::NonRecursive)
        .map_err(|e| format!("cannot watch {}: {e}", folder.display()))?;
    let key = PositionKey::new(&plugin, &path);
    let mut tail = Tail {
        position: load_position(&store, &key),
        path,
    };
    Ok(tokio::spawn(async move {
        let _watcher = watcher;
        loop {
            let before = tail.position;
            match tail.read_new() {
                Ok(lines) => {
                    for line in lines {
                        if let Some(event) = line_event(&filter, &tail.path, &line)
                            && sink
                                .send(Routed::new(plugin.clone(), event).into())
                                .await
                                .is_err()
                        {
                            return;
                        }
                    }
                }
                Err(e) => tracing::warn!(plugin, path = %tail.path.display(), "cannot read: {e}"),
            }
            if tail.position != before
                && let Some(position) = tail.position
            {
                let saved = Intake::TailPosition {
                    key: key.clone(),
                    position,
                };
                if sink.send(saved).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                _ = wake_rx.recv() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(path: &Path, text: &str) {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }

    #[test]
    fn a_file_that_appears_later_is_read_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("later.log");
        let mut tail = Tail {
            path: log.clone(),
            position: None,
        };
        assert!(tail.read_new().unwrap().is_empty());
        append(&log, "first\nsecond\n");
        assert_eq!(tail.read_new().unwrap(), vec!["first", "second"]);
    }

    #[test]
    fn follows_growth_truncation_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        append(&log, "old line\n");
        let mut tail = Tail {
            path: log.clone(),
            position: None,
        };
        assert!(tail.read_new().unwrap().is_empty(), "starts at the end");
        append(&log, "one\ntwo\npart");
        assert_eq!(tail.read_new().unwrap(), vec!["one", "two"]);
        append(&log, "ial\n");
        assert_eq!(tail.read_new().unwrap(), vec!["partial"]);

        std::fs::write(&log, "after truncation\n").unwrap();
        assert_eq!(tail.read_new().unwrap(), vec!["after truncation"]);

        std::fs::rename(&log, dir.path().join("x.log.1")).unwrap();
        append(&log, "rotated\n");
        assert_eq!(tail.read_new().unwrap(), vec!["rotated"]);

        // A restart resumes at the remembered position.
        let mut resumed = Tail {
            path: log.clone(),
            position: tail.position,
        };
        append(&log, "while down\n");
        assert_eq!(resumed.read_new().unwrap(), vec!["while down"]);
    }

    #[test]
    fn event_log_lines_are_filtered_by_source_id_and_message() {
        let filter = LineFilter::EventLog {
            source: Some("Windows Server Update Services".into()),
            ids: vec![364],
            message: Some(regex::Regex::new("Access is denied").unwrap()),
        };
        let path = Path::new("/lab/events.jsonl");
        let hit = r#"{"id": 364, "source": "Windows Server Update Services", "level": "Error", "message": "Content file download failed. Reason: Access is denied.", "time": "2026-11-24T10:00:00Z"}"#;
        let event = line_event(&filter, path, hit).unwrap();
        assert_eq!(event.kind, EventKind::SystemEvent);
        assert_eq!(event.subject, "Windows Server Update Services/364");
        assert_eq!(event.field("event-id"), Some("364"));
        assert_eq!(event.field("level"), Some("Error"));
        // An entry cannot pass for another event by carrying its own id.
        let forged = r#"{"id": 364, "event-id": "7040", "source": "Windows Server Update Services", "message": "Access is denied"}"#;
        let event = line_event(&filter, path, forged).unwrap();
        assert_eq!(event.field("event-id"), Some("364"));
        for miss in [
            r#"{"id": 10021, "source": "Windows Server Update Services", "message": "Access is denied"}"#,
            r#"{"id": 364, "source": "Other", "message": "Access is denied"}"#,
            r#"{"id": 364, "source": "Windows Server Update Services", "message": "HTTP status 404"}"#,
            "not json",
        ] {
            assert!(line_event(&filter, path, miss).is_none(), "{miss}");
        }
    }

    #[test]
    fn log_lines_carry_named_captures() {
        let filter = LineFilter::Log(regex::Regex::new(r"ErrorCode = (?P<code>\w+)").unwrap());
        let line = "2026-11-24 10:00:00 Error WsusService.25 SoapUtilities.LogException USS ThrowException: ErrorCode = InternalServerError, Message = ";
        let event = line_event(&filter, Path::new("/lab/SoftwareDistribution.log"), line).unwrap();
        assert_eq!(event.kind, EventKind::LogLine);
        assert_eq!(event.field("code"), Some("InternalServerError"));
        // A capture named like the trigger's own field does not replace it.
        let filter = LineFilter::Log(regex::Regex::new(r"(?P<line>Error)").unwrap());
        let event = line_event(&filter, Path::new("/x.log"), line).unwrap();
        assert_eq!(event.field("line"), Some(line));
        assert!(line_event(&filter, Path::new("/x"), "Info all good").is_none());
    }
}
