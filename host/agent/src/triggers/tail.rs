//! The `log` trigger and the journal source of the `event_log` trigger
//! (`path = ...`): follow a text file as it grows, losing no complete line
//! and holding a bounded part of it in memory.
//!
//! Reading. New complete lines are read from the remembered [`Position`],
//! one chunk at a time ([`CHUNK`]); the task sends the events of a chunk,
//! then the position after them, which the dispatcher saves with those
//! events in one transaction, so a restarted agent resumes where its queue
//! was saved. On the very first start a file is read from the end of its
//! last complete line; a file that does not exist yet is read from its
//! start once it appears. A line is a line once its newline is written: a
//! partial last line waits for the rest. A line longer than the limit
//! (the trigger's `max_line`, [`MAX_LINE_BYTES`] unless the policy says
//! otherwise) is cut at a character boundary and marked
//! (`truncated = "true"`, `line_bytes` = its whole length); the rest of it
//! is skipped as it is read, never held, however long it is.
//!
//! Identity. A position names its file by device and inode and carries a
//! fingerprint: a hash of the (up to [`WINDOW`]) bytes just before the
//! offset. On Unix the file is kept open while it is read, so a rename
//! leaves it readable.
//!
//! - Truncation: a file shorter than the offset, or whose bytes before the
//!   offset are no longer those read, was truncated (and perhaps written
//!   past the old offset again): it is read again from its start. First,
//!   a copy of it is looked for beside it (`copytruncate`: a sibling whose
//!   name starts like the file's and whose bytes before the offset are the
//!   ones read); its unread lines are read first.
//! - Rotation by rename: at the end of the open file, when the path names
//!   another file, the old one is read to its end once more (through the
//!   descriptor kept open: what the writer added between the read that
//!   found its end and the rename), then the new one from its start.
//! - After a restart: when the path no longer names the saved file, the
//!   folder is searched (a bounded scan, [`MAX_SIBLINGS`] entries) for a
//!   file with the saved device and inode, read from the saved offset to
//!   its end, and then the file at the path from its start.
//!
//! Not covered, and said in the log where it happens: a rotated file that
//! was compressed, removed or moved to another folder before its unread
//! lines were read (they are lost); a second rotation before the first
//! rotated file was read to its end (the middle file is skipped); lines a
//! writer adds to a renamed file after the tail moved on to the new one;
//! with `copytruncate`, lines written between the copy and the truncation
//! (lost for every reader), and a line the writer had half written when
//! the file was copied (its end comes as a line of its own), and a copy
//! made before any line of the file was read (nothing tells it is one);
//! a file truncated and written again with the very bytes it had before
//! the offset (indistinguishable from one that only grew); a file
//! truncated, then renamed, while the agent is down (the renamed file's
//! bytes are not those read: it is not taken for the file read, whose
//! inode may have been given to another). On systems other
//! than Unix the file is opened again for each read and its creation time
//! stands for the inode.
//!
//! Malformed `event_log` lines (not a JSON object with a numeric `id`, or
//! too long to parse) are counted ([`TailStats`]) and reported: once at
//! the first, then at most once per [`MALFORMED_SUMMARY`] with the count.
//!
//! A watcher on the file's folder wakes the reader at once; a slow poll
//! covers file systems that do not notify.

use super::{EventFilter, EventSink, Intake, Routed, SystemLog, make_event, system_event};
use crate::audit::{Store, StoreError};
use medic_sandbox::{EventKind, EventRecord};
use notify::{RecursiveMode, Watcher};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fs::{File, Metadata};
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const OFFSETS: &str = "tail_offsets";

/// How often the file is looked at without a notification.
const POLL: Duration = Duration::from_millis(500);

/// The longest line kept whole, in bytes, unless a trigger's `max_line`
/// says otherwise; longer ones are cut. It bounds what one event carries
/// into the journal and what a tail holds in memory, and no log of the
/// pack comes near it.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// How much is read at a time; the position is sent after each chunk
/// that gave events.
pub const CHUNK: usize = 64 * 1024;

/// How many bytes before the offset the fingerprint covers.
pub const WINDOW: u64 = 4096;

/// Without events, the position is still sent after this much progress,
/// so that a long read of lines that match nothing is not read again
/// after a restart.
const SAVE_EVERY: u64 = 1 << 20;

/// How many entries of the folder are looked at for a rotated file.
pub const MAX_SIBLINGS: usize = 4096;

/// At most one summary of malformed lines per this interval.
pub const MALFORMED_SUMMARY: Duration = Duration::from_secs(60);

/// Which lines become events.
#[derive(Debug, Clone)]
pub enum LineFilter {
    /// Text lines matching the pattern; named captures become fields.
    Log(regex::Regex),
    /// JSON-lines event journal entries the filter admits.
    EventLog(EventFilter),
}

/// Where a tail has read up to. Inode 0 names no file: the first file to
/// appear at the path is read from its start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub inode: u64,
    /// Always the end of a complete line (or 0).
    pub offset: u64,
    /// 0 when not known (a position saved before devices were): any.
    #[serde(default)]
    pub device: u64,
    /// The fingerprint of the bytes before `offset` (see [`WINDOW`]);
    /// none when not known, and then only the size tells truncation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
}

impl Position {
    fn start(id: FileId) -> Self {
        Self {
            inode: id.inode,
            offset: 0,
            device: id.device,
            before: Some(fingerprint(&[])),
        }
    }

    fn names(&self, id: FileId) -> bool {
        self.inode != 0 && self.inode == id.inode && (self.device == 0 || self.device == id.device)
    }
}

/// Whose read position of which file: one per plugin and path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PositionKey(String);

impl PositionKey {
    pub fn new(plugin: &str, path: &Path) -> Self {
        Self(format!("{plugin}\u{0}{}", path.display()))
    }
}

pub(crate) fn load_position(store: &Store, key: &PositionKey) -> Option<Position> {
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
    // Serialising a position cannot fail: numbers only.
    let bytes = serde_json::to_vec(position).unwrap_or_default();
    txn.open_table(definition)?
        .insert(key.0.as_str(), bytes.as_slice())?;
    Ok(())
}

/// Why a file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{} is not a regular file: it is not read", .0.display())]
    NotRegular(PathBuf),
}

/// Which file: device and inode (on other systems, the creation time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    device: u64,
    inode: u64,
}

#[cfg(unix)]
fn file_id(meta: &Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    FileId {
        device: meta.dev(),
        inode: meta.ino(),
    }
}

#[cfg(not(unix))]
fn file_id(meta: &Metadata) -> FileId {
    let created = meta
        .created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(1, |d| d.as_nanos() as u64);
    FileId {
        device: 0,
        inode: created.max(1),
    }
}

/// On Unix a file is kept open while it is read: a rename leaves it
/// readable. Elsewhere the identity is weaker, and the file is opened
/// again for each read.
const KEEP_OPEN: bool = cfg!(unix);

/// FNV-1a: stable across builds, which a saved fingerprint needs.
fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The fingerprint of the bytes before `offset`, if the file has them.
fn fingerprint_at(file: &mut File, offset: u64) -> std::io::Result<Option<u64>> {
    let from = offset.saturating_sub(WINDOW);
    let mut window = [0u8; WINDOW as usize];
    let window = &mut window[..(offset - from) as usize];
    file.seek(SeekFrom::Start(from))?;
    match file.read_exact(window) {
        Ok(()) => Ok(Some(fingerprint(window))),
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// `O_NONBLOCK`, so that a FIFO put at the path between the check of its
/// type and the open cannot hang the open. This crate does not link
/// `libc`: the flag's value is the kernel's on these architectures;
/// elsewhere only the check before the open guards.
#[cfg(all(
    target_os = "linux",
    any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "aarch64",
        target_arch = "arm",
        target_arch = "riscv64"
    )
))]
fn without_blocking(options: &mut std::fs::OpenOptions) {
    use std::os::unix::fs::OpenOptionsExt;
    options.custom_flags(0o4000);
}

#[cfg(not(all(
    target_os = "linux",
    any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "aarch64",
        target_arch = "arm",
        target_arch = "riscv64"
    )
)))]
fn without_blocking(_options: &mut std::fs::OpenOptions) {}

/// Open `path` for reading if it is a regular file; anything else (a
/// FIFO, a device, a folder) is refused without blocking.
fn open_regular(path: &Path) -> Result<(File, Metadata), TailError> {
    if !std::fs::metadata(path)?.is_file() {
        return Err(TailError::NotRegular(path.to_path_buf()));
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    without_blocking(&mut options);
    let file = options.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(TailError::NotRegular(path.to_path_buf()));
    }
    Ok((file, meta))
}

/// Where a byte slice cut at its end stops being a whole character: a
/// trailing, incomplete UTF-8 sequence is left out.
pub(super) fn char_boundary(bytes: &[u8]) -> usize {
    let len = bytes.len();
    for back in 1..=len.min(4) {
        let b = bytes[len - back];
        if b & 0xC0 != 0x80 {
            let needs = match b {
                0xF0.. => 4,
                0xE0.. => 3,
                0xC0.. => 2,
                _ => 1,
            };
            return if needs > back { len - back } else { len };
        }
    }
    len
}

/// One line read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line<'a> {
    /// The line without its end (`\n` or `\r\n`), cut if it was too long.
    pub text: Cow<'a, str>,
    /// Where it starts in its file.
    pub offset: u64,
    /// Its whole length in bytes, without the newline.
    pub bytes: u64,
    /// Longer than the limit: `text` is its beginning.
    pub truncated: bool,
}

/// How a read ended.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// At the end of the file.
    End,
    /// More can be read at once.
    More,
    /// The file is not the one the position describes any more.
    Truncated,
}

/// An over-long line being skipped.
#[derive(Debug)]
struct LongLine {
    start: u64,
    head: Vec<u8>,
    scanned_to: u64,
    /// The bytes just before `scanned_to` (up to [`WINDOW`]).
    last: Vec<u8>,
    /// Whether it is a line of its own (or the end of one begun before
    /// the tail first started, which is not).
    emit: bool,
}

/// Follows one file.
#[derive(Debug)]
pub struct Tail {
    path: PathBuf,
    position: Option<Position>,
    max_line: usize,
    /// The file `position` names, kept open.
    file: Option<File>,
    /// That file is not the one at the path: a rotated file or a copy,
    /// read to its end before the one at the path.
    beside: bool,
    long: Option<LongLine>,
    /// What one read holds: a chunk and a line at most.
    chunk: Vec<u8>,
}

impl Tail {
    /// Follow `path` from `position` (`None`: never seen, start at its end).
    pub fn new(path: PathBuf, position: Option<Position>) -> Self {
        Self {
            path,
            position,
            max_line: MAX_LINE_BYTES,
            file: None,
            beside: false,
            long: None,
            chunk: Vec::new(),
        }
    }

    /// Cut lines longer than `bytes` (at least 1).
    pub fn with_max_line(mut self, bytes: usize) -> Self {
        self.max_line = bytes.max(1);
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the lines delivered so far end.
    pub fn position(&self) -> Option<Position> {
        self.position
    }

    /// The most a tail holds for reading, whatever the file: two chunks,
    /// two lines and a fingerprint's window.
    pub fn max_held_bytes(&self) -> usize {
        2 * CHUNK + 2 * self.max_line + WINDOW as usize
    }

    /// The bytes the tail holds for reading now.
    pub fn held_bytes(&self) -> usize {
        self.chunk.capacity()
            + self
                .long
                .as_ref()
                .map_or(0, |l| l.head.capacity() + l.last.capacity())
    }

    /// Deliver the next complete lines, about one chunk of them, to
    /// `on_line`; the position then is after them. True when more can be
    /// read at once; false at the end of the file (or with no file).
    pub fn read(&mut self, on_line: &mut dyn FnMut(Line<'_>)) -> Result<bool, TailError> {
        if !KEEP_OPEN {
            self.file = None;
        }
        if self.file.is_none() && !self.open()? {
            return Ok(false);
        }
        match self.read_lines(on_line)? {
            Step::More => Ok(true),
            Step::Truncated => {
                self.truncated()?;
                Ok(true)
            }
            Step::End => self.follow_rotation(),
        }
    }

    /// Open the file the position names (or the one at the path); false
    /// when there is none.
    fn open(&mut self) -> Result<bool, TailError> {
        let (mut file, meta) = match open_regular(&self.path) {
            Ok(opened) => opened,
            Err(TailError::Io(e)) if e.kind() == ErrorKind::NotFound => {
                match self.position {
                    None => self.position = Some(Position::default()),
                    // Rotated while the agent was down, the new one not
                    // created yet: the old one may be beside it.
                    Some(p) if p.inode != 0 => {
                        if let Some(old) = self.find_by_id(&p) {
                            self.file = Some(old);
                            self.beside = true;
                            return Ok(true);
                        }
                    }
                    Some(_) => {}
                }
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let id = file_id(&meta);
        match self.position {
            None => {
                self.long = None;
                let offset = self.last_line_end(&mut file, meta.len())?;
                self.position = Some(Position {
                    inode: id.inode,
                    offset,
                    device: id.device,
                    before: fingerprint_at(&mut file, offset)?,
                });
            }
            Some(p) if p.inode == 0 => {
                self.long = None;
                self.position = Some(Position::start(id));
            }
            Some(p) if p.names(id) => {}
            Some(p) => {
                if let Some(old) = self.find_by_id(&p) {
                    self.file = Some(old);
                    self.beside = true;
                    return Ok(true);
                }
                tracing::warn!(
                    path = %self.path.display(),
                    offset = p.offset,
                    "the file read up to this offset was rotated away and is not in its folder any more (compressed, moved or removed): its unread lines are lost; reading the new one from its start"
                );
                self.long = None;
                self.position = Some(Position::start(id));
            }
        }
        self.file = Some(file);
        self.beside = false;
        Ok(true)
    }

    /// The first start: after the last complete line. A last line begun
    /// but not ended is read once ended; if it is already longer than the
    /// limit, the rest of it is skipped.
    fn last_line_end(&mut self, file: &mut File, len: u64) -> std::io::Result<u64> {
        let from = len.saturating_sub(self.max_line as u64 + 1);
        let mut tail = Vec::with_capacity((len - from) as usize);
        file.seek(SeekFrom::Start(from))?;
        file.by_ref().take(len - from).read_to_end(&mut tail)?;
        Ok(match tail.iter().rposition(|b| *b == b'\n') {
            Some(i) => from + i as u64 + 1,
            None if from == 0 => 0,
            None => {
                self.long = Some(LongLine {
                    start: len,
                    head: Vec::new(),
                    scanned_to: len,
                    last: tail.split_off(tail.len().saturating_sub(WINDOW as usize)),
                    emit: false,
                });
                len
            }
        })
    }

    /// Files in the path's folder, up to [`MAX_SIBLINGS`], that are not
    /// the path itself.
    fn siblings(&self) -> Vec<(PathBuf, Metadata)> {
        let Some(folder) = self.path.parent() else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(folder) else {
            return Vec::new();
        };
        entries
            .take(MAX_SIBLINGS)
            .filter_map(Result::ok)
            .filter(|entry| entry.path() != self.path)
            .filter_map(|entry| {
                // Not following links: a rotated file is a file.
                let meta = entry.metadata().ok()?;
                meta.is_file().then(|| (entry.path(), meta))
            })
            .collect()
    }

    /// The file the position names, found beside the path after a rename.
    fn find_by_id(&self, p: &Position) -> Option<File> {
        let found = self.siblings().into_iter().find_map(|(path, meta)| {
            if !p.names(file_id(&meta)) {
                return None;
            }
            let (file, meta) = open_regular(&path).ok()?;
            p.names(file_id(&meta)).then_some((path, file))
        })?;
        tracing::info!(
            path = %self.path.display(),
            rotated = %found.0.display(),
            offset = p.offset,
            "reading the rest of the rotated file first"
        );
        Some(found.1)
    }

    /// A copy of what the file held up to the position (`copytruncate`):
    /// a sibling named like it with the same bytes before the offset.
    fn find_copy(&self, p: &Position) -> Option<(File, FileId)> {
        let before = p.before?;
        if p.offset == 0 {
            return None;
        }
        let name = self.path.file_name()?.to_string_lossy();
        let stem = name.split('.').next().unwrap_or(&name).to_string();
        self.siblings().into_iter().find_map(|(path, meta)| {
            let named_like = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&stem));
            if !named_like || meta.len() < p.offset {
                return None;
            }
            let (mut file, meta) = open_regular(&path).ok()?;
            if fingerprint_at(&mut file, p.offset).ok()?? != before {
                return None;
            }
            tracing::info!(
                path = %self.path.display(),
                copy = %path.display(),
                offset = p.offset,
                "the file was truncated after a copy: reading the rest of the copy first"
            );
            Some((file, file_id(&meta)))
        })
    }

    /// The file was truncated: the unread lines of its copy first, if
    /// there is a copy, then the file from its start.
    fn truncated(&mut self) -> Result<(), TailError> {
        let (Some(p), Some(file)) = (self.position, self.file.as_ref()) else {
            return Ok(());
        };
        let meta = file.metadata()?;
        self.long = None;
        if let Some((copy, copy_id)) = self.find_copy(&p) {
            self.file = Some(copy);
            self.beside = true;
            self.position = Some(Position {
                inode: copy_id.inode,
                device: copy_id.device,
                ..p
            });
            return Ok(());
        }
        if self.beside {
            // A file beside with the saved inode but other bytes: the inode
            // was used again, for another file.
            tracing::warn!(
                path = %self.path.display(),
                offset = p.offset,
                "the rotated file read up to this offset is gone: its unread lines are lost; reading the file at the path from its start"
            );
            self.file = None;
            self.beside = false;
            self.position = Some(Position::default());
            return Ok(());
        }
        tracing::warn!(
            path = %self.path.display(),
            offset = p.offset,
            size = meta.len(),
            "the file was truncated: reading it again from its start"
        );
        self.position = Some(Position::start(file_id(&meta)));
        Ok(())
    }

    /// Read complete lines from the position, about one chunk of them.
    ///
    /// The bytes are read first, then the bytes before the position are
    /// checked against its fingerprint, and only then are lines delivered:
    /// a file truncated at any moment before the check is never taken for
    /// one that grew. The new fingerprint is computed from the bytes read,
    /// not read again.
    fn read_lines(&mut self, on_line: &mut dyn FnMut(Line<'_>)) -> Result<Step, TailError> {
        let max_line = self.max_line;
        let Self {
            position,
            file,
            long,
            chunk: buf,
            ..
        } = self;
        let (Some(p), Some(file)) = (position.as_mut(), file.as_mut()) else {
            return Ok(Step::End);
        };
        let cursor = long.as_ref().map_or(p.offset, |l| l.scanned_to);

        // 1. Up to a chunk and a line, ending in a newline if there is one.
        buf.clear();
        file.seek(SeekFrom::Start(cursor))?;
        let mut end = false;
        let mut newline = false;
        loop {
            let from = buf.len();
            buf.reserve_exact(CHUNK);
            buf.resize(from + CHUNK, 0);
            let n = loop {
                match file.read(&mut buf[from..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            };
            buf.truncate(from + n);
            newline |= buf[from..].contains(&b'\n');
            if n == 0 {
                end = true;
                break;
            }
            if buf.len() >= CHUNK && (newline || long.is_some()) || buf.len() >= CHUNK + max_line {
                break;
            }
        }

        // 2. Still the file the position describes?
        let from = p.offset.saturating_sub(WINDOW);
        let mut window = [0u8; WINDOW as usize];
        let window = &mut window[..(p.offset - from) as usize];
        file.seek(SeekFrom::Start(from))?;
        match file.read_exact(window) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(Step::Truncated),
            Err(e) => return Err(e.into()),
        }
        if p.before.is_some_and(|before| before != fingerprint(window)) {
            return Ok(Step::Truncated);
        }
        // The bytes just before `cursor`, for the next fingerprint.
        let pre = match long {
            Some(skipped) => skipped.last.clone(),
            None => window.to_vec(),
        };

        // 3. The lines.
        let mut line_start = long.as_ref().map_or(p.offset, |l| l.start);
        let mut at = 0;
        let mut ended = false;
        if let Some(skipped) = long.as_mut() {
            match buf.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    if skipped.emit {
                        let head = &skipped.head[..char_boundary(&skipped.head)];
                        on_line(Line {
                            text: String::from_utf8_lossy(head),
                            offset: skipped.start,
                            bytes: cursor + i as u64 - skipped.start,
                            truncated: true,
                        });
                    }
                    at = i + 1;
                    line_start = cursor + at as u64;
                    ended = true;
                }
                None => at = buf.len(),
            }
        }
        if ended {
            *long = None;
        }
        while long.is_none() && at < buf.len() {
            let rest = &buf[at..];
            let Some(i) = rest.iter().position(|b| *b == b'\n') else {
                if rest.len() > max_line {
                    *long = Some(LongLine {
                        start: line_start,
                        head: rest[..max_line].to_vec(),
                        scanned_to: cursor + buf.len() as u64,
                        last: Vec::new(),
                        emit: true,
                    });
                }
                break;
            };
            let line = &rest[..i];
            if line.len() > max_line {
                let head = &line[..max_line];
                on_line(Line {
                    text: String::from_utf8_lossy(&head[..char_boundary(head)]),
                    offset: line_start,
                    bytes: i as u64,
                    truncated: true,
                });
            } else {
                let text = line.strip_suffix(b"\r").unwrap_or(line);
                if !text.is_empty() {
                    on_line(Line {
                        text: String::from_utf8_lossy(text),
                        offset: line_start,
                        bytes: i as u64,
                        truncated: false,
                    });
                }
            }
            at += i + 1;
            line_start = cursor + at as u64;
        }

        // 4. The new position and fingerprint, from the bytes read.
        let last_bytes = |upto: usize| {
            let mut known = Vec::with_capacity(pre.len() + upto);
            known.extend_from_slice(&pre);
            known.extend_from_slice(&buf[..upto]);
            known.split_off(known.len().saturating_sub(WINDOW as usize))
        };
        if line_start != p.offset {
            let upto = (line_start - cursor) as usize;
            p.offset = line_start;
            p.before = Some(fingerprint(&last_bytes(upto)));
        }
        if let Some(skipped) = long.as_mut() {
            skipped.last = last_bytes(buf.len());
            skipped.scanned_to = cursor + buf.len() as u64;
        }
        Ok(if end { Step::End } else { Step::More })
    }

    /// At the end of the open file: if the path names another file now,
    /// go on with that one from its start. True when there is more to
    /// read.
    fn follow_rotation(&mut self) -> Result<bool, TailError> {
        let Some(file) = self.file.as_ref() else {
            return Ok(false);
        };
        let meta = file.metadata()?;
        match std::fs::metadata(&self.path) {
            Ok(now) if !self.beside && file_id(&now) == file_id(&meta) => Ok(false),
            // Renamed away since the read that found its end: the writer
            // may have added lines in between. Read to its end once more,
            // as a file beside the path; the path comes next.
            Ok(_) if !self.beside => {
                self.beside = true;
                Ok(true)
            }
            Ok(_) => {
                let (file, meta) = open_regular(&self.path)?;
                self.file = Some(file);
                self.beside = false;
                self.position = Some(Position::start(file_id(&meta)));
                self.long = None;
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                if removed(&meta) {
                    // Removed, not renamed: nothing more comes from it, and
                    // the next file at the path is new.
                    self.file = None;
                    self.beside = false;
                    self.long = None;
                    self.position = Some(Position::default());
                }
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// All the new complete lines, however many (tests only).
    #[cfg(test)]
    fn read_all(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while self
            .read(&mut |line| lines.push(line.text.into_owned()))
            .unwrap()
        {}
        lines
    }
}

#[cfg(unix)]
fn removed(meta: &Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    meta.nlink() == 0
}

#[cfg(not(unix))]
fn removed(_meta: &Metadata) -> bool {
    false
}

/// What a line is to a filter.
#[derive(Debug)]
enum Verdict {
    Event(Box<EventRecord>),
    Ignored,
    /// An event-journal line that is no entry.
    Malformed,
}

/// The event for a line, if the filter takes it.
pub fn line_event(filter: &LineFilter, path: &Path, line: &str) -> Option<EventRecord> {
    let line = Line {
        text: Cow::Borrowed(line),
        offset: 0,
        bytes: line.len() as u64,
        truncated: false,
    };
    match judge(filter, path, &line) {
        Verdict::Event(event) => Some(*event),
        Verdict::Ignored | Verdict::Malformed => None,
    }
}

fn judge(filter: &LineFilter, path: &Path, line: &Line<'_>) -> Verdict {
    match filter {
        LineFilter::Log(pattern) => {
            let text: &str = &line.text;
            let Some(captures) = pattern.captures(text) else {
                return Verdict::Ignored;
            };
            let mut fields = vec![("line".to_string(), text.to_string())];
            if line.truncated {
                fields.push(("truncated".into(), "true".into()));
                fields.push(("line_bytes".into(), line.bytes.to_string()));
            }
            for name in pattern.capture_names().flatten() {
                if let Some(m) = captures.name(name) {
                    fields.push((name.to_string(), m.as_str().to_string()));
                }
            }
            let subject = captures
                .name("subject")
                .map_or_else(|| path.display().to_string(), |m| m.as_str().to_string());
            Verdict::Event(Box::new(make_event(
                EventKind::LogLine,
                path.display().to_string(),
                subject,
                fields,
            )))
        }
        LineFilter::EventLog(filter) => {
            if line.truncated {
                return Verdict::Malformed;
            }
            let Ok(entry) =
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&line.text)
            else {
                return Verdict::Malformed;
            };
            let text = |key: &str| match entry.get(key) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            let event_source = text("source");
            let Ok(id) = text("id").parse::<u32>() else {
                return Verdict::Malformed;
            };
            if !filter.admits(&event_source, id, &text("message")) {
                return Verdict::Ignored;
            }
            let fields = entry
                .keys()
                .filter(|key| *key != "id")
                .map(|key| (key.clone(), text(key)))
                .collect();
            Verdict::Event(Box::new(system_event(
                SystemLog::EventLog,
                &event_source,
                Some(id),
                Some(text("subject")),
                fields,
            )))
        }
    }
}

/// What a tail has read, since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TailStats {
    pub lines: u64,
    pub events: u64,
    /// Lines longer than the limit, cut.
    pub cut: u64,
    /// Event-journal lines that are no entry (over-long ones included).
    pub malformed: u64,
}

/// When to say that malformed entries were skipped: at the first, then at
/// most once per [`MALFORMED_SUMMARY`]. An entry's place is an offset in a
/// journal, a count of events read from a channel.
#[derive(Debug, Default)]
pub(super) struct MalformedLog {
    said: Option<Instant>,
    since: u64,
    first_offset: Option<u64>,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Say {
    First { offset: u64 },
    Summary { count: u64, first_offset: u64 },
}

impl MalformedLog {
    pub(super) fn saw(&mut self, offset: u64, now: Instant) -> Option<Say> {
        if self.said.is_none() {
            self.said = Some(now);
            return Some(Say::First { offset });
        }
        self.since += 1;
        self.first_offset.get_or_insert(offset);
        self.due(now)
    }

    pub(super) fn due(&mut self, now: Instant) -> Option<Say> {
        let said = self.said?;
        if self.since == 0 || now.duration_since(said) < MALFORMED_SUMMARY {
            return None;
        }
        self.said = Some(now);
        let say = Say::Summary {
            count: std::mem::take(&mut self.since),
            first_offset: self.first_offset.take().unwrap_or_default(),
        };
        Some(say)
    }
}

/// A tail and its filter: lines in, events out, counted.
#[derive(Debug)]
pub struct Follower {
    plugin: String,
    tail: Tail,
    filter: LineFilter,
    stats: TailStats,
    malformed: MalformedLog,
}

impl Follower {
    pub fn new(plugin: String, tail: Tail, filter: LineFilter) -> Self {
        Self {
            plugin,
            tail,
            filter,
            stats: TailStats::default(),
            malformed: MalformedLog::default(),
        }
    }

    pub fn tail(&self) -> &Tail {
        &self.tail
    }

    pub fn stats(&self) -> TailStats {
        self.stats
    }

    /// The events of the next chunk of lines, and whether more can be
    /// read at once.
    pub fn poll(&mut self) -> Result<(Vec<EventRecord>, bool), TailError> {
        let mut events = Vec::new();
        let mut said = Vec::new();
        let now = Instant::now();
        let Self {
            tail,
            filter,
            stats,
            malformed,
            ..
        } = self;
        let path = tail.path.clone();
        let more = tail.read(&mut |line| {
            stats.lines += 1;
            stats.cut += u64::from(line.truncated);
            match judge(filter, &path, &line) {
                Verdict::Event(event) => {
                    stats.events += 1;
                    events.push(*event);
                }
                Verdict::Ignored => {}
                Verdict::Malformed => {
                    stats.malformed += 1;
                    said.extend(malformed.saw(line.offset, now));
                }
            }
        })?;
        said.extend(self.malformed.due(now));
        for say in said {
            let (plugin, path) = (&self.plugin, self.tail.path.display());
            match say {
                Say::First { offset } => tracing::warn!(
                    plugin,
                    path = %path,
                    offset,
                    "a line that is no event-journal entry (not a JSON object with a numeric `id`, or too long) was skipped; more are counted and reported at most once a minute"
                ),
                Say::Summary {
                    count,
                    first_offset,
                } => tracing::warn!(
                    plugin,
                    path = %path,
                    count,
                    first_offset,
                    total = self.stats.malformed,
                    "lines that are no event-journal entry were skipped since the last report"
                ),
            }
        }
        Ok((events, more))
    }
}

/// Start following `path` for `plugin`, cutting lines longer than
/// `max_line` bytes.
pub fn spawn(
    plugin: String,
    path: PathBuf,
    max_line: usize,
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
    // The tail's own opening and reading of the file are access events:
    // only changes wake it, or it would wake itself for ever.
    let mut watcher = notify::recommended_watcher(move |result: notify::Result<notify::Event>| {
        if let Ok(event) = result
            && !matches!(event.kind, notify::EventKind::Access(_))
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
    let tail = Tail::new(path, load_position(&store, &key)).with_max_line(max_line);
    let kind = match &filter {
        LineFilter::Log(_) => EventKind::LogLine,
        LineFilter::EventLog(_) => EventKind::SystemEvent,
    };
    let mut follower = Follower::new(plugin.clone(), tail, filter);
    Ok(tokio::spawn(async move {
        let _watcher = watcher;
        let mut saved = follower.tail().position();
        let mut failing: Option<String> = None;
        loop {
            let more = match follower.poll() {
                Ok((events, more)) => {
                    if failing.take().is_some() {
                        tracing::info!(plugin, path = %follower.tail().path().display(), "readable again");
                    }
                    let sent = !events.is_empty();
                    // The events and the position after them go as one.
                    let mut read: Vec<Intake> = events
                        .into_iter()
                        .map(|event| Routed::new(plugin.clone(), event).into())
                        .collect();
                    let position = follower.tail().position();
                    let far = match (position, saved) {
                        (Some(now), Some(then)) => {
                            now.inode != then.inode
                                || now.offset.abs_diff(then.offset) >= SAVE_EVERY
                        }
                        _ => true,
                    };
                    if position != saved
                        && (sent || !more || far)
                        && let Some(position) = position
                    {
                        read.push(Intake::TailPosition {
                            key: key.clone(),
                            position,
                            kind,
                        });
                        saved = Some(position);
                    }
                    if !read.is_empty() && sink.send(Intake::Read(read)).await.is_err() {
                        return;
                    }
                    more
                }
                Err(e) => {
                    let said = e.to_string();
                    if failing.as_ref() != Some(&said) {
                        tracing::warn!(plugin, path = %follower.tail().path().display(), "cannot read: {said}");
                        failing = Some(said);
                    }
                    false
                }
            };
            if more {
                // A long backlog: let the other tasks in between chunks.
                tokio::task::yield_now().await;
                continue;
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

    fn tail(path: &Path, position: Option<Position>) -> Tail {
        Tail::new(path.to_path_buf(), position)
    }

    #[test]
    fn a_file_that_appears_later_is_read_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("later.log");
        let mut tail = tail(&log, None);
        assert!(tail.read_all().is_empty());
        append(&log, "first\nsecond\n");
        assert_eq!(tail.read_all(), vec!["first", "second"]);
    }

    #[test]
    fn the_first_start_begins_after_the_last_complete_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        append(&log, "old\nolder\nbeing writ");
        let mut tail = tail(&log, None);
        assert!(tail.read_all().is_empty(), "starts at the end");
        append(&log, "ten\nnew\n");
        assert_eq!(tail.read_all(), vec!["being written", "new"]);

        // A last line already too long to keep is skipped to its end.
        let long = dir.path().join("long.log");
        append(&long, &format!("old\n{}", "y".repeat(300)));
        let mut tail = Tail::new(long.clone(), None).with_max_line(100);
        assert!(tail.read_all().is_empty());
        append(&long, "yyy\nnext\n");
        assert_eq!(tail.read_all(), vec!["next"]);
    }

    /// The writer adds lines after the read that found the end of the
    /// file, then renames it: those lines are read before the new file.
    #[test]
    fn lines_written_between_the_end_of_a_read_and_the_rename_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        std::fs::write(&log, "").unwrap();
        let mut tail = tail(&log, None);
        assert!(tail.read_all().is_empty());
        append(&log, "a\n");
        let mut got = Vec::new();
        let step = tail
            .read_lines(&mut |line| got.push(line.text.into_owned()))
            .unwrap();
        assert!(matches!(step, Step::End));
        // Between that read and the look at the path.
        append(&log, "b\n");
        std::fs::rename(&log, dir.path().join("x.log.1")).unwrap();
        append(&log, "c\n");
        assert!(tail.follow_rotation().unwrap());
        got.extend(tail.read_all());
        assert_eq!(got, ["a", "b", "c"]);
    }

    #[test]
    fn follows_growth_truncation_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        append(&log, "old line\n");
        let mut tail = tail(&log, None);
        assert!(tail.read_all().is_empty(), "starts at the end");
        append(&log, "one\ntwo\npart");
        assert_eq!(tail.read_all(), vec!["one", "two"]);
        append(&log, "ial\r\n\n");
        assert_eq!(tail.read_all(), vec!["partial"]);

        std::fs::write(&log, "after truncation\n").unwrap();
        assert_eq!(tail.read_all(), vec!["after truncation"]);

        std::fs::rename(&log, dir.path().join("x.log.1")).unwrap();
        append(&log, "rotated\n");
        assert_eq!(tail.read_all(), vec!["rotated"]);

        // A restart resumes at the remembered position.
        let mut resumed = Tail::new(log.clone(), tail.position());
        append(&log, "while down\n");
        assert_eq!(resumed.read_all(), vec!["while down"]);
    }

    #[test]
    fn a_file_truncated_and_written_past_the_offset_is_read_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        std::fs::write(&log, "").unwrap();
        let mut tail = tail(&log, None);
        assert!(tail.read_all().is_empty());
        append(&log, "a1\na2\na3\na4\n");
        assert_eq!(tail.read_all(), ["a1", "a2", "a3", "a4"]);
        // Truncated, then longer than before, before the next read.
        std::fs::write(&log, "b-one\nb-two\nb-three\nb-four\n").unwrap();
        assert_eq!(tail.read_all(), ["b-one", "b-two", "b-three", "b-four"]);
        // The same after a restart.
        let mut tail = Tail::new(log.clone(), tail.position());
        std::fs::write(&log, "c-first line\nc-second line\nc-third line\nc-4\n").unwrap();
        assert_eq!(
            tail.read_all(),
            ["c-first line", "c-second line", "c-third line", "c-4"]
        );
    }

    #[test]
    fn the_unread_lines_of_a_renamed_file_are_read_first() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        std::fs::write(&log, "").unwrap();
        let mut tail = tail(&log, None);
        assert!(tail.read_all().is_empty());
        append(&log, "o1\no2\no3\no4\no5\n");
        std::fs::rename(&log, dir.path().join("x.log.1")).unwrap();
        append(&log, "n1\n");
        assert_eq!(tail.read_all(), ["o1", "o2", "o3", "o4", "o5", "n1"]);

        // Rotated while the agent was down: the old file is found beside.
        let saved = tail.position();
        append(&log, "d1\nd2\n");
        std::fs::rename(&log, dir.path().join("x.log-20261124")).unwrap();
        append(&log, "n2\n");
        let mut tail = Tail::new(log.clone(), saved);
        assert_eq!(tail.read_all(), ["d1", "d2", "n2"]);

        // Gone (compressed): the new file from its start.
        let saved = tail.position();
        append(&log, "lost\n");
        std::fs::rename(&log, dir.path().join("elsewhere")).unwrap();
        std::fs::remove_file(dir.path().join("elsewhere")).unwrap();
        append(&log, "n3\n");
        let mut tail = Tail::new(log.clone(), saved);
        assert_eq!(tail.read_all(), ["n3"]);
    }

    #[test]
    fn a_file_beside_with_the_saved_inode_but_other_bytes_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        let other = dir.path().join("x.log.1");
        append(&other, "someone else's line\n");
        append(&log, "new file\n");
        // As if the saved file's inode had been given to `other`.
        let id = file_id(&std::fs::metadata(&other).unwrap());
        let saved = Position {
            inode: id.inode,
            device: id.device,
            offset: 5,
            before: Some(fingerprint(b"other")),
        };
        let mut tail = Tail::new(log.clone(), Some(saved));
        assert_eq!(tail.read_all(), ["new file"]);
    }

    #[test]
    fn copytruncate_reads_the_rest_of_the_copy_first() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        std::fs::write(&log, "").unwrap();
        let mut tail = tail(&log, None);
        assert!(tail.read_all().is_empty());
        append(&log, "r1\n");
        assert_eq!(tail.read_all(), ["r1"]);
        append(&log, "u1\nu2\n");
        std::fs::copy(&log, dir.path().join("x.log.1")).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&log, "after the copy, longer than before\n");
        assert_eq!(
            tail.read_all(),
            ["u1", "u2", "after the copy, longer than before"]
        );
    }

    #[test]
    fn a_removed_file_is_let_go_and_its_successor_read_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        std::fs::write(&log, "").unwrap();
        let mut tail = tail(&log, None);
        assert!(tail.read_all().is_empty());
        append(&log, "a\n");
        assert_eq!(tail.read_all(), ["a"]);
        std::fs::remove_file(&log).unwrap();
        assert!(tail.read_all().is_empty());
        assert!(tail.file.is_none(), "the removed file is closed");
        append(&log, "b\n");
        assert_eq!(tail.read_all(), ["b"]);
    }

    /// A writer and a reader of a log, moved at random; every complete
    /// line written must be read once, in order, whole.
    struct Sim {
        dir: tempfile::TempDir,
        log: PathBuf,
        rng: u64,
        n: u64,
        written: Vec<String>,
        got: Vec<String>,
        /// The line half written, and its rest.
        partial: Option<String>,
        /// Renamed or copied since the last read (at most once: a second
        /// rotation before a read loses the middle file, as documented).
        rotated: bool,
        /// Whether a line of the current file was read (a copy made before
        /// any was is not looked for, as documented).
        read_current: bool,
        rotations: u32,
        tail: Tail,
        /// What was done, for the message of a failure.
        trace: Vec<String>,
        /// How many of each: reads, renames, copies, truncations, restarts.
        done: [u32; 5],
    }

    const SIM_MAX_LINE: usize = 512;

    impl Sim {
        fn new(seed: u64) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let log = dir.path().join("app.log");
            std::fs::write(&log, "before the start\n").unwrap();
            let mut tail = Tail::new(log.clone(), None).with_max_line(SIM_MAX_LINE);
            assert!(tail.read_all().is_empty());
            Self {
                dir,
                log,
                rng: seed,
                n: 0,
                written: Vec::new(),
                got: Vec::new(),
                partial: None,
                rotated: false,
                read_current: false,
                rotations: 0,
                tail,
                trace: Vec::new(),
                done: [0; 5],
            }
        }

        fn random(&mut self, below: u64) -> u64 {
            // splitmix64
            self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) % below
        }

        fn new_line(&mut self) -> String {
            self.n += 1;
            let pad = match self.random(20) {
                0 => 600 + self.random(900), // longer than the limit
                _ => self.random(60),
            };
            format!("line {} {}", self.n, "x".repeat(pad as usize))
        }

        fn expect(&mut self, line: String) {
            let kept = &line[..line.len().min(SIM_MAX_LINE)];
            self.written.push(kept.to_string());
        }

        fn finish_partial(&mut self) {
            if let Some(line) = self.partial.take() {
                let half = line.len() / 2;
                append(&self.log, &format!("{}\n", &line[half..]));
                self.expect(line);
            }
        }

        fn append_lines(&mut self) {
            self.finish_partial();
            let mut text = String::new();
            for _ in 0..self.random(6) {
                let line = self.new_line();
                text.push_str(&line);
                text.push(if self.random(8) == 0 { '\r' } else { '\n' });
                if text.ends_with('\r') {
                    text.push('\n');
                }
                self.expect(line);
            }
            if self.random(3) == 0 {
                let line = self.new_line();
                text.push_str(&line[..line.len() / 2]);
                self.partial = Some(line);
            }
            append(&self.log, &text);
        }

        fn read(&mut self, round: u32) {
            self.done[0] += 1;
            let lines = self.tail.read_all();
            self.got.extend(lines);
            let position = self.tail.position().unwrap_or_default();
            self.read_current = position.offset > 0
                && std::fs::metadata(&self.log).is_ok_and(|m| position.names(file_id(&m)));
            // Until a file is at the path, the tail is still on the old one.
            self.rotated = !self.log.exists();
            self.trace
                .push(format!("read, now {} lines", self.got.len()));
            let recent = &self.trace[self.trace.len().saturating_sub(12)..];
            for (i, (got, want)) in self.got.iter().zip(&self.written).enumerate() {
                assert_eq!(got, want, "round {round}, line {i}; {recent:#?}");
            }
            assert_eq!(
                self.got.len(),
                self.written.len(),
                "round {round}: read {} lines of {}; {recent:#?}",
                self.got.len(),
                self.written.len()
            );
            assert!(self.tail.held_bytes() <= self.tail.max_held_bytes());
        }

        fn rotated_name(&mut self) -> PathBuf {
            self.rotations += 1;
            self.dir.path().join(format!("app.log.{}", self.rotations))
        }

        fn rename(&mut self) {
            self.finish_partial();
            self.done[1] += 1;
            let to = self.rotated_name();
            std::fs::rename(&self.log, &to).unwrap();
            if self.random(2) == 0 {
                std::fs::write(&self.log, "").unwrap();
            }
            self.rotated = true;
            self.read_current = false;
        }

        fn copytruncate(&mut self) {
            self.finish_partial();
            self.done[2] += 1;
            let to = self.rotated_name();
            std::fs::copy(&self.log, &to).unwrap();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&self.log)
                .unwrap()
                .set_len(0)
                .unwrap();
            self.rotated = true;
            self.read_current = false;
        }

        /// Truncated (no copy) and written again, maybe past the offset.
        fn truncate_and_regrow(&mut self, round: u32) {
            self.finish_partial();
            self.read(round);
            self.done[3] += 1;
            let before = std::fs::metadata(&self.log).map_or(0, |m| m.len());
            std::fs::write(&self.log, "").unwrap();
            let goal = before * self.random(3) / 2;
            while std::fs::metadata(&self.log).unwrap().len() <= goal {
                let line = self.new_line();
                append(&self.log, &format!("{line}\n"));
                self.expect(line);
            }
            self.read_current = false;
            // Truncated and then renamed before a read: if the agent
            // restarts meanwhile, the renamed file's bytes are not those
            // it read, and it is not taken for the same file.
            self.rotated = true;
        }

        fn restart(&mut self) {
            self.done[4] += 1;
            let saved = self.tail.position();
            self.tail = Tail::new(self.log.clone(), saved).with_max_line(SIM_MAX_LINE);
        }

        fn round(&mut self, round: u32, restarts: bool) {
            let before = (self.written.len(), self.partial.is_some());
            let op = self.random(100);
            match op {
                0..40 => self.append_lines(),
                40..65 => self.read(round),
                65..73 if !self.rotated && self.log.exists() => self.rename(),
                73..81 if !self.rotated && self.read_current && self.log.exists() => {
                    self.copytruncate()
                }
                81..86 if self.log.exists() => self.truncate_and_regrow(round),
                86..100 if restarts => self.restart(),
                _ => self.append_lines(),
            }
            let size = std::fs::metadata(&self.log).map_or(-1, |m| m.len() as i64);
            self.trace.push(format!(
                "round {round}: op {op}, lines {before:?} -> {:?}, file {size}, position {:?}",
                (self.written.len(), self.partial.is_some()),
                self.tail.position()
            ));
        }
    }

    fn simulate(seed: u64, rounds: u32, restarts_too: bool) {
        let mut sim = Sim::new(seed);
        for round in 0..rounds {
            sim.round(round, restarts_too);
        }
        sim.finish_partial();
        if !sim.log.exists() {
            std::fs::write(&sim.log, "").unwrap();
        }
        sim.read(rounds);
        assert!(sim.written.len() > 100, "seed {seed}: too few lines");
        // Every kind of change was made (restarts when asked for).
        let [reads, renames, copies, truncations, restarts] = sim.done;
        assert!(
            reads > 20 && renames >= 3 && copies >= 3 && truncations >= 3,
            "seed {seed}: {:?}",
            sim.done
        );
        assert_eq!(restarts > 3, restarts_too, "seed {seed}: {:?}", sim.done);
    }

    #[test]
    fn random_appends_partial_lines_rotations_and_truncations_lose_and_repeat_nothing() {
        for seed in 1..=12 {
            simulate(seed, 200, false);
        }
    }

    #[test]
    fn the_same_with_restarts_from_the_saved_position() {
        for seed in 100..=112 {
            simulate(seed, 200, true);
        }
    }

    #[test]
    fn a_long_line_is_cut_at_a_character_and_marked_and_the_rest_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        std::fs::write(&log, "").unwrap();
        let mut tail = Tail::new(log.clone(), None).with_max_line(1000);
        assert!(tail.read_all().is_empty());
        // 10 MB of three-byte characters: the limit falls inside one.
        let long = "€".repeat((10 << 20) / 3);
        append(&log, &format!("before\n{long}\nafter\n"));
        let mut lines = Vec::new();
        while tail
            .read(&mut |line| {
                lines.push((line.text.into_owned(), line.bytes, line.truncated));
            })
            .unwrap()
        {
            assert!(
                tail.held_bytes() <= tail.max_held_bytes(),
                "{}",
                tail.held_bytes()
            );
        }
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], ("before".to_string(), 6, false));
        assert_eq!(lines[1].0, "€".repeat(333), "999 bytes: whole characters");
        assert_eq!(lines[1].1, long.len() as u64);
        assert!(lines[1].2);
        assert_eq!(lines[2], ("after".to_string(), 5, false));

        let event = judge(
            &LineFilter::Log(regex::Regex::new("€").unwrap()),
            &log,
            &Line {
                text: lines[1].0.clone().into(),
                offset: 7,
                bytes: lines[1].1,
                truncated: true,
            },
        );
        let Verdict::Event(event) = event else {
            panic!("{event:?}")
        };
        assert_eq!(event.field("truncated"), Some("true"));
        assert_eq!(
            event.field("line_bytes"),
            Some(long.len().to_string().as_str())
        );
    }

    #[test]
    fn a_line_without_end_is_never_held_whole() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        std::fs::write(&log, "").unwrap();
        let mut tail = Tail::new(log.clone(), None);
        assert!(tail.read_all().is_empty());
        let block = "z".repeat(1 << 20);
        for _ in 0..20 {
            append(&log, &block);
            assert!(tail.read_all().is_empty());
            assert!(
                tail.held_bytes() <= 2 * CHUNK + 2 * MAX_LINE_BYTES + 4096,
                "{}",
                tail.held_bytes()
            );
        }
        let long = tail.long.as_ref().expect("inside a long line");
        assert_eq!(long.scanned_to, 20 << 20, "scanned once, not again");
        append(&log, "\nnext\n");
        let mut lines = Vec::new();
        while tail
            .read(&mut |line| lines.push((line.text.len(), line.bytes, line.truncated)))
            .unwrap()
        {}
        assert_eq!(lines, [(MAX_LINE_BYTES, 20 << 20, true), (4, 4, false)]);
    }

    #[test]
    fn a_backlog_is_read_a_chunk_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        std::fs::write(&log, "").unwrap();
        let mut tail = Tail::new(log.clone(), None);
        assert!(tail.read_all().is_empty());
        let saved = tail.position();
        // 50 MB written while the agent was down.
        {
            let mut file = std::io::BufWriter::new(
                std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
            );
            let mut n = 0u64;
            while n < 50 << 20 {
                let line = format!("2026-11-24 10:00:00 info request {n} served in 3 ms\n");
                n += line.len() as u64;
                file.write_all(line.as_bytes()).unwrap();
            }
        }
        let mut tail = Tail::new(log.clone(), saved);
        let (mut reads, mut lines, mut last) = (0, 0u64, 0);
        loop {
            let mut these = 0;
            let more = tail.read(&mut |_| these += 1).unwrap();
            reads += 1;
            lines += these;
            assert!(tail.held_bytes() <= 2 * CHUNK + 2 * MAX_LINE_BYTES + 4096);
            let offset = tail.position().unwrap().offset;
            assert!(offset - last <= (CHUNK + MAX_LINE_BYTES) as u64);
            last = offset;
            if !more {
                break;
            }
        }
        assert!(reads > (50 << 20) / CHUNK, "{reads} reads");
        assert_eq!(last, std::fs::metadata(&log).unwrap().len());
        assert!(lines > 900_000, "{lines}");
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_at_the_path_does_not_block_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.log");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let mut tail = tail(&fifo, Some(Position::default()));
        assert!(matches!(
            tail.read(&mut |_| {}),
            Err(TailError::NotRegular(_))
        ));
        // Replaced by a file: read from its start.
        std::fs::remove_file(&fifo).unwrap();
        append(&fifo, "now a file\n");
        assert_eq!(tail.read_all(), ["now a file"]);
    }

    #[test]
    fn positions_saved_before_devices_and_fingerprints_still_load() {
        let old: Position = serde_json::from_str(r#"{"inode": 7, "offset": 42}"#).unwrap();
        assert_eq!(
            old,
            Position {
                inode: 7,
                offset: 42,
                device: 0,
                before: None
            }
        );
        assert!(old.names(FileId {
            device: 99,
            inode: 7
        }));
        // And such a position is resumed: by size only.
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        append(&log, "0123456789\n");
        let mut tail = Tail::new(log.clone(), None);
        tail.read_all();
        let p = tail.position().unwrap();
        let mut resumed = tail_from_old(&log, p.inode, p.offset);
        append(&log, "new\n");
        assert_eq!(resumed.read_all(), ["new"]);
    }

    fn tail_from_old(log: &Path, inode: u64, offset: u64) -> Tail {
        let json = format!(r#"{{"inode": {inode}, "offset": {offset}}}"#);
        Tail::new(
            log.to_path_buf(),
            Some(serde_json::from_str(&json).unwrap()),
        )
    }

    #[test]
    fn malformed_journal_lines_are_counted_and_reported_once_then_summed_up() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("events.jsonl");
        std::fs::write(&log, "").unwrap();
        let filter = LineFilter::EventLog(EventFilter {
            source: None,
            ids: vec![364],
            message: None,
        });
        let tail = Tail::new(log.clone(), None).with_max_line(200);
        let mut follower = Follower::new("p".into(), tail, filter);
        assert!(follower.poll().unwrap().0.is_empty());
        let good = r#"{"id": 364, "source": "S", "message": "m"}"#;
        let long = format!(r#"{{"id": 364, "message": "{}"}}"#, "m".repeat(300));
        append(
            &log,
            &format!("{good}\nnot json\n{{\"id\": \"x\"}}\n[1]\n{long}\n{good}\n{{\"id\": 10}}\n"),
        );
        let (events, more) = follower.poll().unwrap();
        assert!(!more);
        assert_eq!(events.len(), 2);
        assert_eq!(
            follower.stats(),
            TailStats {
                lines: 7,
                events: 2,
                cut: 1,
                malformed: 4
            }
        );

        let mut said = MalformedLog::default();
        let t0 = Instant::now();
        assert_eq!(said.saw(10, t0), Some(Say::First { offset: 10 }));
        assert_eq!(said.saw(20, t0 + Duration::from_secs(1)), None);
        assert_eq!(said.saw(30, t0 + Duration::from_secs(2)), None);
        assert_eq!(said.due(t0 + Duration::from_secs(30)), None);
        assert_eq!(
            said.due(t0 + MALFORMED_SUMMARY),
            Some(Say::Summary {
                count: 2,
                first_offset: 20
            })
        );
        assert_eq!(said.due(t0 + 3 * MALFORMED_SUMMARY), None, "nothing new");
        assert_eq!(
            said.saw(40, t0 + 3 * MALFORMED_SUMMARY),
            Some(Say::Summary {
                count: 1,
                first_offset: 40
            })
        );
    }

    #[test]
    fn event_log_lines_are_filtered_by_source_id_and_message() {
        let filter = LineFilter::EventLog(EventFilter {
            source: Some("Windows Server Update Services".into()),
            ids: vec![364],
            message: Some(regex::Regex::new("Access is denied").unwrap()),
        });
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
        assert_eq!(event.field("truncated"), None);
        // A capture named like the trigger's own field does not replace it.
        let filter = LineFilter::Log(regex::Regex::new(r"(?P<line>Error)").unwrap());
        let event = line_event(&filter, Path::new("/x.log"), line).unwrap();
        assert_eq!(event.field("line"), Some(line));
        assert!(line_event(&filter, Path::new("/x"), "Info all good").is_none());
    }

    #[test]
    fn a_cut_keeps_whole_characters() {
        assert_eq!(char_boundary(b"abc"), 3);
        assert_eq!(char_boundary("a€".as_bytes()), 4);
        assert_eq!(char_boundary(&"a€".as_bytes()[..3]), 1);
        assert_eq!(char_boundary(&"a€".as_bytes()[..2]), 1);
        assert_eq!(char_boundary(&"😀".as_bytes()[..3]), 0);
        assert_eq!(char_boundary(b""), 0);
    }
}
