//! The start log: each run the dispatcher starts is written here, with a
//! plain `write`, before it starts, and the log is emptied once the store
//! commit that marks those runs started has landed. So a run need not wait
//! for the store's fsync (a millisecond or more on most disks): a kill at
//! any moment still finds every started run, in the store or in this log,
//! and the next agent records it as interrupted and runs its event again.
//!
//! What this does not cover: a power cut or a kernel crash between the
//! write and the commit (about one fsync) can lose the entry, as it can
//! lose the change the run made, which is not synced either. When the log
//! cannot be written (a full disk, an I/O error), or has grown past
//! [`MAX_BYTES`] while the store fails, runs wait for their commit again,
//! as without the log.
//!
//! One entry per line: the event's id, a space, the queued event as JSON
//! (which holds no raw newline). A last line cut short by a kill is
//! ignored.

use super::queue::EventId;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The log's file name in the state directory.
pub const FILE_NAME: &str = "start.log";

/// The most the log holds; beyond it runs wait for their commit.
pub const MAX_BYTES: u64 = 64 << 20;

/// The log, open for appending.
#[derive(Debug)]
pub struct StartLog {
    path: PathBuf,
    /// `None` once it could not be written or emptied: it is no longer
    /// trusted to hold what it should, so nothing relies on it.
    file: Option<File>,
    len: u64,
    /// Entries added since the last write.
    buffer: Vec<u8>,
}

/// What a previous agent left in the log: started runs whose commit may
/// not have landed, as (id, queued event JSON), oldest first.
pub type LeftEntries = Vec<(EventId, Vec<u8>)>;

fn open_file(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
        #[cfg(target_os = "linux")]
        options.custom_flags(libc::O_NOFOLLOW);
    }
    options.open(path)
}

/// The complete entries of a log's text; a line cut short or unreadable is
/// skipped (the second said).
fn parse(text: &[u8]) -> LeftEntries {
    let mut entries = Vec::new();
    let mut lines = text.split_inclusive(|&b| b == b'\n');
    for line in lines.by_ref() {
        let Some(line) = line.strip_suffix(b"\n") else {
            break; // the last line, cut short by a kill
        };
        let parsed = line.iter().position(|&b| b == b' ').and_then(|space| {
            let id = std::str::from_utf8(&line[..space]).ok()?.parse().ok()?;
            Some((id, line[space + 1..].to_vec()))
        });
        match parsed {
            Some(entry) => entries.push(entry),
            None => tracing::error!("a line of the start log cannot be read; skipped"),
        }
    }
    entries
}

impl StartLog {
    /// Open the log in `state_dir` and read what a previous agent left.
    /// A log that cannot be opened is said, and runs then wait for their
    /// commit.
    pub fn open(state_dir: &Path) -> (Self, LeftEntries) {
        let path = state_dir.join(FILE_NAME);
        let mut left = Vec::new();
        let file = match open_file(&path) {
            Ok(mut file) => {
                let mut text = Vec::new();
                match file.read_to_end(&mut text) {
                    Ok(_) => {
                        left = parse(&text);
                        Some(file)
                    }
                    Err(e) => {
                        tracing::error!(path = %path.display(), "cannot read the start log: {e}; runs wait for their commit");
                        None
                    }
                }
            }
            Err(e) => {
                tracing::error!(path = %path.display(), "cannot open the start log: {e}; runs wait for their commit");
                None
            }
        };
        let len = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        let log = Self {
            path,
            file,
            len,
            buffer: Vec::new(),
        };
        (log, left)
    }

    /// A run about to start: its event, marked started, as the queue
    /// keeps it.
    pub fn add(&mut self, id: EventId, queued_json: &[u8]) {
        self.buffer.extend_from_slice(id.to_string().as_bytes());
        self.buffer.push(b' ');
        self.buffer.extend_from_slice(queued_json);
        self.buffer.push(b'\n');
    }

    /// Write what was added. True when every run added is in the log, so
    /// the runs may start before their commit; when false, what was added
    /// is dropped from the log: those runs wait for their commit.
    pub fn write(&mut self) -> bool {
        if self.buffer.is_empty() {
            return true;
        }
        let buffer = std::mem::take(&mut self.buffer);
        let Some(file) = self.file.as_mut() else {
            return false;
        };
        if self.len + buffer.len() as u64 > MAX_BYTES {
            return false;
        }
        match file.write_all(&buffer) {
            Ok(()) => {
                self.len += buffer.len() as u64;
                true
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), "cannot write the start log: {e}; runs wait for their commit from now on");
                self.file = None;
                false
            }
        }
    }

    /// The store holds every run the log holds: empty it.
    pub fn clear(&mut self) {
        if self.len == 0 {
            return;
        }
        let Some(file) = self.file.as_mut() else {
            return;
        };
        match file.set_len(0) {
            Ok(()) => self.len = 0,
            Err(e) => {
                // Left as it is, it would bring back runs finished since.
                tracing::error!(path = %self.path.display(), "cannot empty the start log: {e}; runs wait for their commit from now on");
                self.file = None;
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::error!(path = %self.path.display(), "cannot remove the start log either: {e}; the next start may run some finished events again");
                }
            }
        }
    }

    /// The bytes in the log now.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_is_read_back_and_a_cut_line_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, left) = StartLog::open(dir.path());
        assert!(left.is_empty());
        log.add(7, br#"{"plugin":"a"}"#);
        log.add(8, br#"{"plugin":"b"}"#);
        assert!(log.write());
        log.add(9, br#"{"plugin":"c"}"#);
        assert!(log.write());
        drop(log);
        // A kill in the middle of a write leaves a line cut short.
        let mut file = open_file(&dir.path().join(FILE_NAME)).unwrap();
        file.write_all(br#"10 {"plug"#).unwrap();
        let (_, left) = StartLog::open(dir.path());
        let ids: Vec<EventId> = left.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [7, 8, 9]);
        assert_eq!(left[1].1, br#"{"plugin":"b"}"#);
    }

    #[test]
    fn cleared_it_holds_nothing_and_takes_entries_again() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = StartLog::open(dir.path());
        for round in 0..50u64 {
            log.add(round, b"{}");
            assert!(log.write());
            assert!(!log.is_empty());
            log.clear();
            assert!(log.is_empty());
        }
        log.add(99, b"{}");
        assert!(log.write());
        drop(log);
        let (_, left) = StartLog::open(dir.path());
        assert_eq!(left, vec![(99, b"{}".to_vec())]);
    }

    #[test]
    fn a_line_that_is_not_an_entry_is_skipped() {
        assert_eq!(
            parse(b"x {}\n5 {}\nnospace\n6 {\"a\":1}\n"),
            vec![(5, b"{}".to_vec()), (6, b"{\"a\":1}".to_vec())]
        );
    }

    #[test]
    fn past_its_size_runs_wait_for_their_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = StartLog::open(dir.path());
        log.len = MAX_BYTES - 4;
        log.add(1, b"{}");
        assert!(!log.write());
        log.clear();
        log.add(2, b"{}");
        assert!(log.write());
    }

    #[cfg(unix)]
    #[test]
    fn the_log_is_private_and_never_followed_through_a_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = StartLog::open(dir.path());
        log.add(1, b"{}");
        assert!(log.write());
        let mode = std::fs::metadata(dir.path().join(FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        #[cfg(target_os = "linux")]
        {
            let other = tempfile::tempdir().unwrap();
            let target = other.path().join("target");
            std::fs::write(&target, "keep").unwrap();
            std::os::unix::fs::symlink(&target, other.path().join(FILE_NAME)).unwrap();
            let (mut log, left) = StartLog::open(other.path());
            assert!(left.is_empty());
            log.add(1, b"{}");
            assert!(!log.write(), "a symlinked log is refused");
            assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        }
    }
}
