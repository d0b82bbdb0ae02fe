//! The start log: each run the dispatcher starts is written here, with a
//! plain `write`, before it starts, and the log is emptied once the store
//! commit that marks those runs started has landed. It is two files: the
//! one a commit in flight covers is sealed, and new runs go to the other,
//! so emptying one never drops a run the commit did not hold. So a run need not wait
//! for the store's fsync (a millisecond or more on most disks): a kill at
//! any moment still finds every started run, in the store or in this log,
//! and the next agent records it as interrupted and runs its event again.
//!
//! What this does not cover: a power cut or a kernel crash between the
//! write and the commit (about one fsync) can lose the entry, as it can
//! lose the change the run made, which is not synced either. When the log
//! cannot be written (a full disk, an I/O error), has grown past
//! [`MAX_BYTES`], or both files wait for a commit (while the store fails),
//! runs wait for their commit again, as without the log.
//!
//! One entry per line: the event's id, a space, the queued event as JSON
//! (which holds no raw newline). A last line cut short by a kill is
//! ignored.

use super::queue::EventId;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The log's two file names in the state directory.
pub const FILE_NAMES: [&str; 2] = ["start-a.log", "start-b.log"];

/// The most one file holds; beyond it runs wait for their commit.
pub const MAX_BYTES: u64 = 32 << 20;

/// One of the log's files.
#[derive(Debug)]
struct Slot {
    path: PathBuf,
    /// `None` once it could not be written or emptied: it is no longer
    /// trusted to hold what it should, so nothing relies on it.
    file: Option<File>,
    len: u64,
    /// Every entry in it is in a commit handed over (or put back after
    /// that commit failed): it takes no more until that commit lands.
    sealed: bool,
}

impl Slot {
    fn usable(&self) -> bool {
        self.file.is_some() && !self.sealed
    }

    fn empty(&mut self) {
        self.sealed = false;
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
                tracing::error!(path = %self.path.display(), "cannot empty the start log: {e}; it is not used again");
                self.file = None;
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::error!(path = %self.path.display(), "cannot remove the start log either: {e}; the next start may run some finished events again");
                }
            }
        }
    }
}

/// The log, open for appending.
#[derive(Debug)]
pub struct StartLog {
    slots: [Slot; 2],
    /// The file new runs go to.
    active: Option<usize>,
    /// Entries added since the last write.
    buffer: Vec<u8>,
}

/// The files a commit covers: emptied when it lands.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sealed([bool; 2]);

/// What a previous agent left in the log: started runs whose commit may
/// not have landed, as (id, queued event JSON).
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
    for line in text.split_inclusive(|&b| b == b'\n') {
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

/// Open one file and read what it holds.
fn open_slot(path: PathBuf, left: &mut LeftEntries) -> Slot {
    let file = match open_file(&path) {
        Ok(mut file) => {
            let mut text = Vec::new();
            match file.read_to_end(&mut text) {
                Ok(_) => {
                    left.extend(parse(&text));
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
    // What it holds goes in the first commit, which empties it.
    Slot {
        path,
        file,
        len,
        sealed: len > 0,
    }
}

impl StartLog {
    /// Open the log in `state_dir` and read what a previous agent left,
    /// ordered by id. A file that cannot be opened is said, and runs then
    /// wait for their commit when the other cannot take them.
    pub fn open(state_dir: &Path) -> (Self, LeftEntries) {
        let mut left = Vec::new();
        let slots = FILE_NAMES.map(|name| open_slot(state_dir.join(name), &mut left));
        left.sort_by_key(|(id, _)| *id);
        let mut log = Self {
            slots,
            active: None,
            buffer: Vec::new(),
        };
        log.active = log.first_usable();
        (log, left)
    }

    fn first_usable(&self) -> Option<usize> {
        (0..2).find(|&i| self.slots[i].usable())
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
        let Some(slot) = self.active.map(|i| &mut self.slots[i]) else {
            return false;
        };
        let Some(file) = slot.file.as_mut() else {
            return false;
        };
        if slot.len + buffer.len() as u64 > MAX_BYTES {
            return false;
        }
        match file.write_all(&buffer) {
            Ok(()) => {
                slot.len += buffer.len() as u64;
                true
            }
            Err(e) => {
                tracing::error!(path = %slot.path.display(), "cannot write the start log: {e}; it is not used again");
                slot.file = None;
                self.active = self.first_usable();
                false
            }
        }
    }

    /// The writes of a commit are handed over: every entry written so far
    /// is in them. Seal the files that hold entries, and send new runs to
    /// a file that holds none.
    pub fn seal(&mut self) -> Sealed {
        let mut covers = [false; 2];
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot.sealed || slot.len > 0 {
                slot.sealed = true;
                covers[i] = true;
            }
        }
        self.active = self.first_usable();
        Sealed(covers)
    }

    /// The commit covering `sealed` landed: empty those files.
    pub fn landed(&mut self, sealed: Sealed) {
        for (slot, covered) in self.slots.iter_mut().zip(sealed.0) {
            if covered {
                slot.empty();
            }
        }
        if self.active.is_none() {
            self.active = self.first_usable();
        }
    }

    /// The bytes in the log now.
    pub fn len(&self) -> u64 {
        self.slots.iter().map(|s| s.len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<EventId> {
        StartLog::open(dir).1.iter().map(|(id, _)| *id).collect()
    }

    #[test]
    fn what_is_written_is_read_back_and_a_cut_line_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, left) = StartLog::open(dir.path());
        assert!(left.is_empty());
        log.add(7, br#"{"plugin":"a"}"#);
        log.add(8, br#"{"plugin":"b"}"#);
        assert!(log.write());
        let _ = log.seal();
        log.add(9, br#"{"plugin":"c"}"#);
        assert!(log.write());
        drop(log);
        // A kill in the middle of a write leaves a line cut short.
        let mut file = open_file(&dir.path().join(FILE_NAMES[1])).unwrap();
        file.write_all(br#"10 {"plug"#).unwrap();
        let (_, left) = StartLog::open(dir.path());
        let ids: Vec<EventId> = left.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [7, 8, 9]);
        assert_eq!(left[1].1, br#"{"plugin":"b"}"#);
    }

    #[test]
    fn a_landed_commit_empties_only_the_files_it_covers() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = StartLog::open(dir.path());
        for round in 0..50u64 {
            log.add(round * 2, b"{}");
            assert!(log.write());
            let sealed = log.seal();
            // Runs started while the commit is in flight.
            log.add(round * 2 + 1, b"{}");
            assert!(log.write());
            log.landed(sealed);
            assert_eq!(entries(dir.path()), [round * 2 + 1], "round {round}");
            let sealed = log.seal();
            log.landed(sealed);
            assert!(log.is_empty());
        }
    }

    #[test]
    fn after_a_failed_commit_the_next_one_covers_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = StartLog::open(dir.path());
        log.add(1, b"{}");
        assert!(log.write());
        let _failed = log.seal();
        log.add(2, b"{}");
        assert!(log.write());
        // The failed commit's writes are put back; the next covers both.
        let sealed = log.seal();
        assert_eq!(sealed, Sealed([true, true]));
        // Both files wait: a run started now waits for its commit.
        log.add(3, b"{}");
        assert!(!log.write());
        log.landed(sealed);
        assert!(log.is_empty());
        log.add(4, b"{}");
        assert!(log.write());
        assert_eq!(entries(dir.path()), [4]);
    }

    #[test]
    fn what_a_previous_agent_left_is_sealed_for_the_first_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = StartLog::open(dir.path());
        log.add(5, b"{}");
        assert!(log.write());
        drop(log);
        let (mut log, left) = StartLog::open(dir.path());
        assert_eq!(left.len(), 1);
        log.add(6, b"{}");
        assert!(log.write(), "the other file takes new runs");
        let sealed = log.seal();
        log.landed(sealed);
        assert!(log.is_empty());
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
        log.slots[0].len = MAX_BYTES - 4;
        log.add(1, b"{}");
        assert!(!log.write());
        let sealed = log.seal();
        log.add(2, b"{}");
        assert!(log.write(), "the other file takes it");
        log.landed(sealed);
    }

    #[cfg(unix)]
    #[test]
    fn the_log_is_private_and_never_followed_through_a_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = StartLog::open(dir.path());
        log.add(1, b"{}");
        assert!(log.write());
        let mode = std::fs::metadata(dir.path().join(FILE_NAMES[0]))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        #[cfg(target_os = "linux")]
        {
            let other = tempfile::tempdir().unwrap();
            for name in FILE_NAMES {
                let target = other.path().join(format!("{name}.target"));
                std::fs::write(&target, "keep").unwrap();
                std::os::unix::fs::symlink(&target, other.path().join(name)).unwrap();
            }
            let (mut log, left) = StartLog::open(other.path());
            assert!(left.is_empty());
            log.add(1, b"{}");
            assert!(!log.write(), "a symlinked log is refused");
            for name in FILE_NAMES {
                let target = other.path().join(format!("{name}.target"));
                assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
            }
        }
    }
}
