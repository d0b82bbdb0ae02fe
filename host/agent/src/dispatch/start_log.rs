//! The start log: before the runs the dispatcher starts may start, the
//! events it queued since the last write (marked started or not), and the
//! log triggers' read positions saved with them, are written here with a
//! plain `write`; the log is emptied once the store commit that holds
//! them has landed. It is two files: the
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
//! One entry per line: its sequence number, then `e`, the event's id and
//! the queued event as JSON, or `p` and a read position as JSON (JSON
//! holds no raw newline), separated by spaces. Each write ends with a line
//! `w`: entries after the last one (a write cut short by a kill) are
//! ignored, so a read's events never come back without its position.
//!
//! Each commit also saves, in the store, the sequence number of the last
//! entry it covers ([`Sealed::upto`]): at open, entries up to it are
//! skipped. So a kill between a commit landing and its file being emptied,
//! or a file that could not be emptied, never brings back what the store
//! already holds (nor events finished since).

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
    /// The next entry's sequence number: orders entries across the files.
    next_seq: u64,
}

/// What a commit covers: the files emptied when it lands, and the last
/// entry's sequence number, saved with it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sealed {
    files: [bool; 2],
    pub upto: Option<u64>,
}

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// An event as the queue keeps it (its JSON).
    Event(EventId, Vec<u8>),
    /// A log trigger's read position, saved with the events read before
    /// it (its JSON).
    Position(Vec<u8>),
}

/// What a previous agent left in the log, oldest first: entries whose
/// commit may not have landed.
pub type LeftEntries = Vec<Entry>;

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

/// The first word of `line` and the rest after its space.
fn word(line: &[u8]) -> Option<(&str, &[u8])> {
    let space = line.iter().position(|&b| b == b' ')?;
    Some((
        std::str::from_utf8(&line[..space]).ok()?,
        &line[space + 1..],
    ))
}

fn parse_line(line: &[u8]) -> Option<(u64, Entry)> {
    let (seq, rest) = word(line)?;
    let seq = seq.parse().ok()?;
    let (kind, rest) = word(rest)?;
    match kind {
        "e" => {
            let (id, json) = word(rest)?;
            Some((seq, Entry::Event(id.parse().ok()?, json.to_vec())))
        }
        "p" => Some((seq, Entry::Position(rest.to_vec()))),
        _ => None,
    }
}

/// The entries of a log's complete writes, with their sequence numbers;
/// those of a write cut short are dropped, a line unreadable is skipped
/// (and said).
fn parse(text: &[u8]) -> Vec<(u64, Entry)> {
    let mut entries = Vec::new();
    let mut write = Vec::new();
    for line in text.split_inclusive(|&b| b == b'\n') {
        let Some(line) = line.strip_suffix(b"\n") else {
            break; // the last line, cut short by a kill
        };
        if line == b"w" {
            entries.append(&mut write);
            continue;
        }
        match parse_line(line) {
            Some(entry) => write.push(entry),
            None => tracing::error!("a line of the start log cannot be read; skipped"),
        }
    }
    entries
}

/// Open one file and read what it holds.
fn open_slot(path: PathBuf, left: &mut Vec<(u64, Entry)>) -> Slot {
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
    /// Open the log in `state_dir` and read what a previous agent left
    /// past `covered` (the last entry the store holds), in the order it
    /// was written. A file that cannot be opened is said, and runs then
    /// wait for their commit when the other cannot take them.
    pub fn open(state_dir: &Path, covered: Option<u64>) -> (Self, LeftEntries) {
        let mut left = Vec::new();
        let slots = FILE_NAMES.map(|name| open_slot(state_dir.join(name), &mut left));
        left.sort_by_key(|(seq, _)| *seq);
        let next_seq = left
            .last()
            .map(|(seq, _)| seq + 1)
            .into_iter()
            .chain(covered.map(|c| c + 1))
            .max()
            .unwrap_or(0);
        left.retain(|(seq, _)| covered.is_none_or(|c| *seq > c));
        let mut log = Self {
            slots,
            active: None,
            buffer: Vec::new(),
            next_seq,
        };
        log.active = log.first_usable();
        (log, left.into_iter().map(|(_, entry)| entry).collect())
    }

    fn first_usable(&self) -> Option<usize> {
        (0..2).find(|&i| self.slots[i].usable())
    }

    /// Add an entry, for the next [`Self::write`].
    pub fn add(&mut self, entry: &Entry) {
        let (head, json) = match entry {
            Entry::Event(id, json) => (format!("{} e {id} ", self.next_seq), json),
            Entry::Position(json) => (format!("{} p ", self.next_seq), json),
        };
        self.next_seq += 1;
        self.buffer.extend_from_slice(head.as_bytes());
        self.buffer.extend_from_slice(json);
        self.buffer.push(b'\n');
    }

    /// Write what was added. True when every run added is in the log, so
    /// the runs may start before their commit; when false, what was added
    /// is dropped from the log: those runs wait for their commit.
    pub fn write(&mut self) -> bool {
        if self.buffer.is_empty() {
            return true;
        }
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.extend_from_slice(b"w\n");
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
        Sealed {
            files: covers,
            upto: self.next_seq.checked_sub(1),
        }
    }

    /// The commit covering `sealed` landed: empty those files.
    pub fn landed(&mut self, sealed: Sealed) {
        for (slot, covered) in self.slots.iter_mut().zip(sealed.files) {
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
        StartLog::open(dir, None)
            .1
            .iter()
            .filter_map(|entry| match entry {
                Entry::Event(id, _) => Some(*id),
                Entry::Position(_) => None,
            })
            .collect()
    }

    #[test]
    fn what_is_written_is_read_back_and_a_cut_line_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, left) = StartLog::open(dir.path(), None);
        assert!(left.is_empty());
        log.add(&Entry::Event(7, br#"{"plugin":"a"}"#.to_vec()));
        log.add(&Entry::Event(8, br#"{"plugin":"b"}"#.to_vec()));
        assert!(log.write());
        let _ = log.seal();
        log.add(&Entry::Event(9, br#"{"plugin":"c"}"#.to_vec()));
        assert!(log.write());
        log.add(&Entry::Position(br#"{"at":1}"#.to_vec()));
        assert!(log.write());
        drop(log);
        // A kill in the middle of a write leaves a line cut short.
        let mut file = open_file(&dir.path().join(FILE_NAMES[1])).unwrap();
        file.write_all(br#"4 e 10 {"plug"#).unwrap();
        let (_, left) = StartLog::open(dir.path(), None);
        assert_eq!(
            left,
            [
                Entry::Event(7, br#"{"plugin":"a"}"#.to_vec()),
                Entry::Event(8, br#"{"plugin":"b"}"#.to_vec()),
                Entry::Event(9, br#"{"plugin":"c"}"#.to_vec()),
                Entry::Position(br#"{"at":1}"#.to_vec()),
            ]
        );
    }

    #[test]
    fn a_landed_commit_empties_only_the_files_it_covers() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = StartLog::open(dir.path(), None);
        for round in 0..50u64 {
            log.add(&Entry::Event(round * 2, b"{}".to_vec()));
            assert!(log.write());
            let sealed = log.seal();
            // Runs started while the commit is in flight.
            log.add(&Entry::Event(round * 2 + 1, b"{}".to_vec()));
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
        let (mut log, _) = StartLog::open(dir.path(), None);
        log.add(&Entry::Event(1, b"{}".to_vec()));
        assert!(log.write());
        let _failed = log.seal();
        log.add(&Entry::Event(2, b"{}".to_vec()));
        assert!(log.write());
        // The failed commit's writes are put back; the next covers both.
        let sealed = log.seal();
        assert_eq!(sealed.files, [true, true]);
        // Both files wait: a run started now waits for its commit.
        log.add(&Entry::Event(3, b"{}".to_vec()));
        assert!(!log.write());
        log.landed(sealed);
        assert!(log.is_empty());
        log.add(&Entry::Event(4, b"{}".to_vec()));
        assert!(log.write());
        assert_eq!(entries(dir.path()), [4]);
    }

    #[test]
    fn what_a_previous_agent_left_is_sealed_for_the_first_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = StartLog::open(dir.path(), None);
        log.add(&Entry::Event(5, b"{}".to_vec()));
        assert!(log.write());
        drop(log);
        let (mut log, left) = StartLog::open(dir.path(), None);
        assert_eq!(left.len(), 1);
        log.add(&Entry::Event(6, b"{}".to_vec()));
        assert!(log.write(), "the other file takes new runs");
        let sealed = log.seal();
        log.landed(sealed);
        assert!(log.is_empty());
    }

    #[test]
    fn a_line_that_is_not_an_entry_is_skipped() {
        assert_eq!(
            parse(b"x e 1 {}\n0 e 5 {}\nnospace\n1 q {}\n2 e x {}\n3 p {\"a\":1}\nw\n4 e 6 {}\n"),
            vec![
                (0, Entry::Event(5, b"{}".to_vec())),
                (3, Entry::Position(b"{\"a\":1}".to_vec()))
            ]
        );
    }

    #[test]
    fn what_the_store_holds_already_is_skipped_and_numbering_goes_past_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = StartLog::open(dir.path(), None);
        log.add(&Entry::Event(1, b"{}".to_vec()));
        log.add(&Entry::Event(2, b"{}".to_vec()));
        assert!(log.write());
        let sealed = log.seal();
        assert_eq!(sealed.upto, Some(1));
        log.add(&Entry::Event(3, b"{}".to_vec()));
        assert!(log.write());
        // Killed after the commit covering 1 and 2 landed, before their
        // file was emptied: only 3 comes back.
        drop(log);
        let (mut log, left) = StartLog::open(dir.path(), sealed.upto);
        assert_eq!(left, [Entry::Event(3, b"{}".to_vec())]);
        // A log emptied (or lost) still numbers past what the store saved.
        let sealed = log.seal();
        log.landed(sealed);
        drop(log);
        let (mut log, left) = StartLog::open(dir.path(), Some(40));
        assert!(left.is_empty());
        log.add(&Entry::Event(4, b"{}".to_vec()));
        assert!(log.write());
        drop(log);
        let (_, left) = StartLog::open(dir.path(), Some(40));
        assert_eq!(left, [Entry::Event(4, b"{}".to_vec())]);
    }

    #[test]
    fn entries_come_back_in_the_order_written_across_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = StartLog::open(dir.path(), None);
        // The second file first: a commit covering the first failed.
        log.add(&Entry::Event(1, b"{}".to_vec()));
        assert!(log.write());
        let sealed = log.seal();
        log.add(&Entry::Event(2, b"{}".to_vec()));
        assert!(log.write());
        log.landed(sealed);
        log.add(&Entry::Event(3, b"{}".to_vec()));
        assert!(log.write(), "the emptied first file takes it");
        drop(log);
        assert_eq!(entries(dir.path()), [2, 3]);
        // Numbering goes on after a restart.
        let (mut log, _) = StartLog::open(dir.path(), None);
        let sealed = log.seal();
        log.landed(sealed);
        log.add(&Entry::Event(4, b"{}".to_vec()));
        assert!(log.write());
        drop(log);
        assert_eq!(entries(dir.path()), [4]);
    }

    #[test]
    fn past_its_size_runs_wait_for_their_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = StartLog::open(dir.path(), None);
        log.slots[0].len = MAX_BYTES - 4;
        log.add(&Entry::Event(1, b"{}".to_vec()));
        assert!(!log.write());
        let sealed = log.seal();
        log.add(&Entry::Event(2, b"{}".to_vec()));
        assert!(log.write(), "the other file takes it");
        log.landed(sealed);
    }

    #[cfg(unix)]
    #[test]
    fn the_log_is_private_and_never_followed_through_a_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = StartLog::open(dir.path(), None);
        log.add(&Entry::Event(1, b"{}".to_vec()));
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
            let (mut log, left) = StartLog::open(other.path(), None);
            assert!(left.is_empty());
            log.add(&Entry::Event(1, b"{}".to_vec()));
            assert!(!log.write(), "a symlinked log is refused");
            for name in FILE_NAMES {
                let target = other.path().join(format!("{name}.target"));
                assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
            }
        }
    }
}
