//! The durable queue: every event the dispatcher accepts is written to the
//! store, marked when its run starts, and removed in the same transaction
//! that records the run in the journal. A run starts once its start is in
//! the start log ([`super::start_log`]), before the commit lands, or, for
//! an event its source reads again and when the log cannot take it, once
//! the commit has landed. So a `kill -9` at
//! any moment loses no accepted event: at the next start the events left
//! run again, and a run that was cut off is recorded as interrupted.
//!
//! In the agent a commit runs on a blocking thread
//! ([`DurableQueue::begin_commit`], [`DurableQueue::land`]), one at a time:
//! the dispatcher goes on taking events and starting runs during its
//! fsync, and their writes make the next commit (group commit), so its
//! loop never waits for the disk.
//!
//! The writes of one turn of the dispatcher (events accepted, runs started
//! and finished, tail positions, event log bookmarks and journal cursors,
//! rate-limit counters, flap-guard records)
//! go in one transaction ([`DurableQueue::commit`]), so a tail's position
//! never runs ahead of the events it read, and the flap guard's counters
//! never disagree with its journal records. A commit that fails (a full
//! disk) keeps its writes, in order, for the next one: nothing is lost
//! while the process lives, and the agent says that it is behind.

use crate::audit::journal::{AuditRecord, Journal, NewRecord};
use crate::audit::{Store, StoreError};
use crate::dispatch::schedule::Counters;
use crate::dispatch::start_log::{Entry, Sealed, StartLog};
use crate::triggers::journal::{self, CursorKey};
use crate::triggers::tail::{self, Position, PositionKey};
use crate::triggers::windows_events::{self, BookmarkKey};
use medic_sandbox::{EventKind, EventRecord};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

const QUEUE: TableDefinition<u64, &[u8]> = TableDefinition::new("event_queue");
const COUNTERS: TableDefinition<&str, &[u8]> = TableDefinition::new("plugin_counters");
/// The last start log entry the store holds (see [`super::start_log`]).
const START_LOG: TableDefinition<&str, u64> = TableDefinition::new("start_log");
const START_LOG_COVERED: &str = "covered";
/// The status snapshot `medic status` reads (as JSON, under [`STATUS_KEY`]).
pub const STATUS_TABLE: &str = "agent_status";
pub const STATUS_KEY: &str = "agent";
const STATUS: TableDefinition<&str, &[u8]> = TableDefinition::new(STATUS_TABLE);

/// Identifies one accepted event in the durable queue.
pub type EventId = u64;

/// An accepted event, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedEvent {
    pub plugin: String,
    pub event: EventRecord,
    /// Set when its run started; a start-up that finds it set knows the
    /// run was cut off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<StartedRun>,
    /// A follow-up run's event: not run before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_ms: Option<u64>,
}

/// A run in flight, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartedRun {
    pub run_id: String,
    pub at_ms: u64,
    pub forced_dry_run: bool,
}

/// Whether events of `kind`, and the read positions saved with them, go
/// to the start log before their runs start. Not an event log channel's
/// or the systemd journal's (their bookmarks and cursors are saved only
/// in the store, so after a lost commit their entries are read again),
/// nor an inbox request's (its file stays until its event is committed):
/// those put back from the log beside the same entry read again would
/// run twice. Their runs wait for their commit.
pub fn logged_before_its_run(kind: EventKind) -> bool {
    !matches!(kind, EventKind::SystemEvent | EventKind::Manual)
}

/// One write waiting for the next commit; `true` marks a write that goes
/// to the start log.
#[derive(Debug)]
enum Write {
    Put(EventId, Vec<u8>, bool),
    Remove(EventId),
    Position(PositionKey, Position, bool),
    Bookmark(BookmarkKey, String),
    JournalCursor(CursorKey, String),
    Counters(String, Vec<u8>),
    Record(NewRecord),
}

/// Records kept whole while the store cannot be written; beyond this,
/// records keep their summary and lose their detail, so a long outage
/// cannot exhaust memory.
const MAX_DETAILED_RECORDS_WAITING: usize = 200;

/// The writes of the dispatcher, committed together.
#[derive(Debug)]
pub struct DurableQueue {
    store: Store,
    journal: Journal,
    next_id: EventId,
    writes: Vec<Write>,
    records_waiting: usize,
    /// Inbox files to remove once their events are committed.
    consumed: Vec<PathBuf>,
    /// The error of the last commit, while commits fail.
    failing: Option<String>,
    /// Commit even with no write of our own.
    flush: bool,
    /// What may run before its commit lands.
    start_log: StartLog,
    /// The writes waiting that went through [`Self::write_ahead`] (a
    /// prefix of them).
    logged: usize,
    /// Every write of that prefix that goes to the start log is there.
    prefix_in_log: bool,
    /// Every write of the commit in flight that goes to the start log is
    /// there (true when none is in flight).
    in_flight_in_log: bool,
    /// The latest status snapshot, for the next commit.
    status: Option<Vec<u8>>,
    /// The commit running on a blocking thread.
    in_flight: Option<tokio::task::JoinHandle<Landed>>,
    /// Commits handed over so far; the next is number `handed + 1`.
    handed: u64,
}

/// The writes of one commit, handed to the thread that commits them, and
/// back.
#[derive(Debug)]
pub struct Batch {
    number: u64,
    writes: Vec<Write>,
    status: Option<Vec<u8>>,
    records: usize,
    consumed: Vec<PathBuf>,
    covers: Sealed,
}

/// A commit that ran: its batch and how it went.
#[derive(Debug)]
pub struct Landed {
    batch: Batch,
    result: Result<Vec<AuditRecord>, StoreError>,
}

impl Landed {
    /// The number of the commit (counted from 1 by this queue).
    pub fn number(&self) -> u64 {
        self.batch.number
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these types cannot fail: no maps with non-string keys.
    serde_json::to_vec(value).unwrap_or_default()
}

impl DurableQueue {
    /// Open the queue and read what a previous agent left in it, oldest
    /// first. An entry that cannot be read is removed at the next commit
    /// and reported.
    pub fn open(
        store: Store,
        journal: Journal,
    ) -> Result<(Self, Vec<(EventId, QueuedEvent)>), StoreError> {
        let mut left = Vec::new();
        let mut unreadable = Vec::new();
        {
            let txn = store.database().begin_read()?;
            match txn.open_table(QUEUE) {
                Ok(table) => {
                    for entry in table.iter()? {
                        let (id, bytes) = entry?;
                        match serde_json::from_slice::<QueuedEvent>(bytes.value()) {
                            Ok(queued) => left.push((id.value(), queued)),
                            Err(e) => unreadable.push((id.value(), e.to_string())),
                        }
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // What a previous agent wrote ahead of a commit that may not have
        // landed, in the order it was written (the last of an id wins).
        let covered = {
            let txn = store.database().begin_read()?;
            match txn.open_table(START_LOG) {
                Ok(table) => table.get(START_LOG_COVERED)?.map(|v| v.value()),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(e.into()),
            }
        };
        let (start_log, logged) = StartLog::open(store.state_dir(), covered);
        let mut relogged = Vec::new();
        let mut left: std::collections::BTreeMap<EventId, QueuedEvent> = left.into_iter().collect();
        for entry in logged {
            match entry {
                Entry::Event(id, bytes) => match serde_json::from_slice::<QueuedEvent>(&bytes) {
                    Ok(queued) => {
                        left.insert(id, queued);
                        relogged.push(Write::Put(id, bytes, true));
                    }
                    Err(e) => tracing::error!(
                        event = id,
                        "an event in the start log cannot be read and is dropped: {e}"
                    ),
                },
                Entry::Position(bytes) => {
                    match serde_json::from_slice::<(PositionKey, Position)>(&bytes) {
                        Ok((key, position)) => {
                            relogged.push(Write::Position(key, position, true));
                        }
                        Err(e) => tracing::error!(
                            "a read position in the start log cannot be read and is dropped: {e}"
                        ),
                    }
                }
            }
        }
        let left: Vec<(EventId, QueuedEvent)> = left.into_iter().collect();
        let last = left
            .iter()
            .map(|(id, _)| *id)
            .chain(unreadable.iter().map(|(id, _)| *id))
            .max();
        let mut queue = Self {
            store,
            journal,
            next_id: last.map_or(1, |id| id + 1),
            writes: Vec::new(),
            records_waiting: 0,
            consumed: Vec::new(),
            failing: None,
            flush: false,
            start_log,
            logged: relogged.len(),
            prefix_in_log: true,
            in_flight_in_log: true,
            status: None,
            in_flight: None,
            handed: 0,
        };
        // Kept by the first commit; the log is emptied once it lands.
        queue.writes = relogged;
        for (id, reason) in unreadable {
            tracing::error!(
                event = id,
                "an event left in the durable queue cannot be read and is dropped: {reason}"
            );
            queue.remove(id);
        }
        Ok((queue, left))
    }

    /// A fresh id for an event about to be queued.
    pub fn next_id(&mut self) -> EventId {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Keep (or update) an event; one of a kind that goes to the start log
    /// goes there at the next [`Self::write_ahead`].
    pub fn put(&mut self, id: EventId, queued: &QueuedEvent) {
        let logged = logged_before_its_run(queued.event.kind);
        self.writes.push(Write::Put(id, encode(queued), logged));
    }

    /// Keep (or update) an event whose run waits for its commit (an inbox
    /// request, sent again until then): never in the start log.
    pub fn put_waiting(&mut self, id: EventId, queued: &QueuedEvent) {
        self.writes.push(Write::Put(id, encode(queued), false));
    }

    /// Write to the start log what goes there of the writes made since the
    /// last call. True when every such write not yet committed is in the
    /// log: the runs marked started may then start before their commit
    /// lands. `whole` says that no trigger's read is half taken (its
    /// events queued, not yet its position): the log is not written then,
    /// and false is returned.
    pub fn write_ahead(&mut self, whole: bool) -> bool {
        if !whole || !self.in_flight_in_log || !self.prefix_in_log {
            return false;
        }
        for write in &self.writes[self.logged..] {
            match write {
                Write::Put(id, bytes, true) => {
                    self.start_log.add(&Entry::Event(*id, bytes.clone()))
                }
                Write::Position(key, position, true) => {
                    self.start_log
                        .add(&Entry::Position(encode(&(key, position))));
                }
                _ => {}
            }
        }
        self.logged = self.writes.len();
        self.prefix_in_log = self.start_log.write();
        self.prefix_in_log
    }

    /// Whether the writes not yet logged hold one that goes to the log.
    fn unlogged(&self) -> bool {
        self.writes[self.logged..]
            .iter()
            .any(|write| matches!(write, Write::Put(_, _, true) | Write::Position(_, _, true)))
    }

    /// The event is done with: ran and recorded, coalesced, or dropped.
    pub fn remove(&mut self, id: EventId) {
        self.writes.push(Write::Remove(id));
    }

    /// A log read up to `position`: saved with the events queued before
    /// it, which are of `kind`.
    pub fn position(&mut self, key: PositionKey, position: Position, kind: EventKind) {
        let logged = logged_before_its_run(kind);
        self.writes.push(Write::Position(key, position, logged));
    }

    /// An event log channel read up to `bookmark`: saved with the events
    /// queued before it.
    pub fn bookmark(&mut self, key: BookmarkKey, bookmark: String) {
        self.writes.push(Write::Bookmark(key, bookmark));
    }

    /// The systemd journal read up to `cursor` for a `journal` trigger:
    /// saved with the events queued before it.
    pub fn journal_cursor(&mut self, key: CursorKey, cursor: String) {
        self.writes.push(Write::JournalCursor(key, cursor));
    }

    pub fn counters(&mut self, plugin: &str, counters: &Counters) {
        self.writes
            .push(Write::Counters(plugin.to_string(), encode(counters)));
    }

    /// Append a journal record with the other writes.
    pub fn record(&mut self, mut record: NewRecord) {
        if self.records_waiting >= MAX_DETAILED_RECORDS_WAITING {
            record.detail = serde_json::json!({
                "detail_dropped": "the store could not be written for a long time; this record keeps only its summary",
            });
        }
        self.records_waiting += 1;
        self.writes.push(Write::Record(record));
    }

    /// Remove this inbox file once what was read from it is committed.
    pub fn consumed(&mut self, file: PathBuf) {
        self.consumed.push(file);
    }

    /// Writes waiting for a commit.
    pub fn waiting(&self) -> usize {
        self.writes.len()
    }

    /// The error of the last commit, while commits fail.
    pub fn failing(&self) -> Option<&str> {
        self.failing.as_deref()
    }

    /// Commit at the next [`Self::commit`] even with no write of its own,
    /// to write the journal's waiting records.
    pub fn retry(&mut self) {
        self.flush = true;
    }

    /// The status snapshot, written with the next commit (a newer one
    /// replaces it).
    pub fn status(&mut self, json: Vec<u8>) {
        self.status = Some(json);
    }

    /// The number the next commit handed over will have.
    pub fn next_commit(&self) -> u64 {
        self.handed + 1
    }

    /// Whether a commit runs on its thread.
    pub fn committing(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The writes waiting, as one batch, or `None` when there is nothing
    /// to commit.
    fn take_batch(&mut self) -> Option<Batch> {
        if self.writes.is_empty() && self.status.is_none() && !std::mem::take(&mut self.flush) {
            self.remove_consumed();
            return None;
        }
        self.handed += 1;
        self.in_flight_in_log = self.prefix_in_log && !self.unlogged();
        self.logged = 0;
        self.prefix_in_log = true;
        Some(Batch {
            number: self.handed,
            writes: std::mem::take(&mut self.writes),
            status: self.status.take(),
            records: std::mem::take(&mut self.records_waiting),
            consumed: std::mem::take(&mut self.consumed),
            covers: self.start_log.seal(),
        })
    }

    /// Start committing every waiting write, in one transaction on a
    /// blocking thread, unless a commit is in flight (its successor then
    /// takes them) or nothing waits. Its end comes to [`Self::landing`].
    pub fn begin_commit(&mut self) {
        if self.in_flight.is_some() {
            return;
        }
        let Some(batch) = self.take_batch() else {
            return;
        };
        let (store, journal) = (self.store.clone(), self.journal.clone());
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            run_batch(&store, &journal, batch)
        }));
    }

    /// The end of the commit in flight (pending for ever when there is
    /// none): give it to [`Self::land`]. Cancel-safe.
    pub async fn landing(&mut self) -> Result<Landed, tokio::task::JoinError> {
        match self.in_flight.as_mut() {
            Some(handle) => handle.await,
            None => std::future::pending().await,
        }
    }

    /// Take in the end of the commit in flight: on success the start log
    /// files it covered are emptied and its inbox files removed; on
    /// failure its writes go back, in order, before the ones made since.
    pub fn land(
        &mut self,
        joined: Result<Landed, tokio::task::JoinError>,
    ) -> Option<Result<Vec<AuditRecord>, StoreError>> {
        self.in_flight = None;
        match joined {
            Ok(landed) => Some(self.take_in(landed)),
            Err(e) => {
                // Cannot happen: the commit's panics are contained.
                tracing::error!("a commit's thread failed: {e}; its writes are lost");
                None
            }
        }
    }

    /// Wait for the commit in flight, if any, and take it in.
    pub async fn settle(&mut self) {
        if self.in_flight.is_some() {
            let joined = self.landing().await;
            self.land(joined);
        }
    }

    /// Commit every waiting write in one transaction, here; the commit in
    /// flight, if any, must have landed. On failure every write is kept,
    /// in order, for the next commit. Returns the journal records
    /// appended.
    pub fn commit(&mut self) -> Result<Vec<AuditRecord>, StoreError> {
        debug_assert!(self.in_flight.is_none(), "a commit is in flight");
        match self.take_batch() {
            Some(batch) => self.take_in(run_batch(&self.store, &self.journal, batch)),
            None => Ok(Vec::new()),
        }
    }

    fn take_in(&mut self, landed: Landed) -> Result<Vec<AuditRecord>, StoreError> {
        let Landed { mut batch, result } = landed;
        match result {
            Ok(records) => {
                self.start_log.landed(batch.covers);
                self.in_flight_in_log = true;
                if let Some(error) = self.failing.take() {
                    tracing::warn!(
                        "the store can be written again (it failed with: {error}); every write kept meanwhile is saved"
                    );
                }
                // Only the inbox files whose events this commit holds: those
                // read since wait for the commit that holds theirs.
                remove_inbox_files(batch.consumed);
                Ok(records)
            }
            Err(e) => {
                // The batch's logged writes stay in the files it sealed.
                self.logged += batch.writes.len();
                self.prefix_in_log &= self.in_flight_in_log;
                self.in_flight_in_log = true;
                batch.writes.append(&mut self.writes);
                self.writes = batch.writes;
                self.records_waiting += batch.records;
                batch.consumed.append(&mut self.consumed);
                self.consumed = batch.consumed;
                if self.status.is_none() {
                    self.status = batch.status;
                }
                if self.failing.is_none() {
                    tracing::error!(
                        waiting = self.writes.len(),
                        "CANNOT WRITE THE STORE: {e}; events, runs and records are kept in memory and saved when it can be written again"
                    );
                }
                self.failing = Some(e.to_string());
                Err(e)
            }
        }
    }

    fn remove_consumed(&mut self) {
        remove_inbox_files(std::mem::take(&mut self.consumed));
    }
}

/// Remove inbox request files whose events are committed.
fn remove_inbox_files(files: Vec<PathBuf>) {
    for file in files {
        if let Err(e) = std::fs::remove_file(&file)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(file = %file.display(), "cannot remove a consumed inbox request: {e}");
        }
    }
}

/// Commit `batch` in one transaction.
fn run_batch(store: &Store, journal: &Journal, batch: Batch) -> Landed {
    let result = store.contain(|| {
        commit_writes(
            store,
            journal,
            &batch.writes,
            batch.status.as_deref(),
            batch.covers.upto,
        )
    });
    Landed { batch, result }
}

fn commit_writes(
    store: &Store,
    journal: &Journal,
    writes: &[Write],
    status: Option<&[u8]>,
    start_log_upto: Option<u64>,
) -> Result<Vec<AuditRecord>, StoreError> {
    // Journal records that waited in memory (appended outside the
    // dispatcher while the store failed) go first, in order.
    journal.flush_backlog()?;
    let records = store.write(|txn| {
        let mut records = Vec::new();
        let mut queue = txn.open_table(QUEUE)?;
        let mut counters = txn.open_table(COUNTERS)?;
        for write in writes {
            match write {
                Write::Put(id, bytes, _) => {
                    queue.insert(*id, bytes.as_slice())?;
                }
                Write::Remove(id) => {
                    queue.remove(*id)?;
                }
                Write::Position(key, position, _) => tail::write_position(txn, key, position)?,
                Write::Bookmark(key, bookmark) => {
                    windows_events::write_bookmark(txn, key, bookmark)?;
                }
                Write::JournalCursor(key, cursor) => {
                    journal::write_cursor(txn, key, cursor)?;
                }
                Write::Counters(plugin, bytes) => {
                    counters.insert(plugin.as_str(), bytes.as_slice())?;
                }
                Write::Record(record) => {
                    records.push(journal.append_in(txn, record.clone())?);
                }
            }
        }
        if let Some(status) = status {
            txn.open_table(STATUS)?.insert(STATUS_KEY, status)?;
        }
        if let Some(upto) = start_log_upto {
            txn.open_table(START_LOG)?.insert(START_LOG_COVERED, upto)?;
        }
        Ok(records)
    })?;
    // The chain's head, outside the store, moves on.
    journal.committed(&records);
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::journal::{RecordKind, RecordStatus};
    use medic_sandbox::EventKind;

    fn queued(plugin: &str, subject: &str) -> QueuedEvent {
        QueuedEvent {
            plugin: plugin.into(),
            event: EventRecord::new(
                EventKind::Manual,
                "test".to_string(),
                subject.to_string(),
                Default::default(),
            ),
            started: None,
            not_before_ms: None,
        }
    }

    fn open(dir: &std::path::Path) -> (DurableQueue, Vec<(EventId, QueuedEvent)>) {
        let store = Store::open(dir).unwrap();
        DurableQueue::open(store.clone(), Journal::new(store)).unwrap()
    }

    #[test]
    fn what_is_committed_is_there_after_reopening_and_what_is_not_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let (mut queue, left) = open(dir.path());
        assert!(left.is_empty());
        let (a, b, c) = (queue.next_id(), queue.next_id(), queue.next_id());
        queue.put(a, &queued("p", "a"));
        queue.put(b, &queued("p", "b"));
        let c_entry = queued("q", "c");
        queue.put(c, &c_entry);
        queue.commit().unwrap();
        let mut started = queued("p", "b");
        started.started = Some(StartedRun {
            run_id: "run-1".into(),
            at_ms: 5,
            forced_dry_run: false,
        });
        queue.put(b, &started);
        queue.remove(a);
        queue.record(NewRecord {
            kind: RecordKind::Run,
            plugin: "p".into(),
            run_id: "run-0".into(),
            status: RecordStatus::Interrupted,
            summary: "x".into(),
            detail: serde_json::Value::Null,
        });
        assert_eq!(queue.commit().unwrap().len(), 1);
        // Not committed: lost with the process, as a kill would lose it.
        queue.remove(c);
        drop(queue);

        let (mut queue, left) = open(dir.path());
        assert_eq!(left, vec![(b, started), (c, c_entry)]);
        assert!(queue.next_id() > c, "ids are never reused");
    }

    #[test]
    fn a_run_started_before_its_commit_is_found_after_a_kill() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..20 {
            let (mut queue, left) = open(dir.path());
            assert!(left.is_empty(), "round {round}: {left:?}");
            // One event accepted and committed, then started; one accepted
            // and started in the same turn.
            let (a, b) = (queue.next_id(), queue.next_id());
            queue.put(a, &queued("p", "a"));
            queue.commit().unwrap();
            let start = |subject: &str| {
                let mut started = queued("p", subject);
                started.event.kind = EventKind::FileChanged;
                started.started = Some(StartedRun {
                    run_id: format!("run-{subject}"),
                    at_ms: 5,
                    forced_dry_run: false,
                });
                started
            };
            let (started_a, started_b) = (start("a"), start("b"));
            queue.put(a, &started_a);
            queue.put(b, &started_b);
            assert!(queue.write_ahead(true));
            // Killed before the commit: the log has both runs.
            drop(queue);
            let (mut queue, left) = open(dir.path());
            assert_eq!(left, vec![(a, started_a), (b, started_b)]);
            assert!(queue.next_id() > b, "ids are never reused");
            // Their next commit empties the log; once finished and
            // removed, they are not brought back.
            queue.commit().unwrap();
            assert!(queue.start_log.is_empty());
            queue.remove(a);
            queue.remove(b);
            queue.commit().unwrap();
        }
    }

    #[test]
    fn a_log_read_goes_to_the_start_log_with_its_position_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let key = PositionKey::new("p", std::path::Path::new("/var/log/app.log"));
        let at = |offset| Position {
            inode: 7,
            offset,
            device: 1,
            before: None,
        };
        let line = |subject: &str, kind| {
            let mut event = queued("p", subject);
            event.event.kind = kind;
            event
        };
        let (mut queue, _) = open(dir.path());
        // A whole read: its event and the position after it.
        let a = queue.next_id();
        queue.put(a, &line("a", EventKind::LogLine));
        queue.position(key.clone(), at(10), EventKind::LogLine);
        assert!(queue.write_ahead(true));
        // Half a read (its position not taken yet): not logged.
        let b = queue.next_id();
        queue.put(b, &line("b", EventKind::LogLine));
        assert!(!queue.write_ahead(false));
        drop(queue);
        let (mut queue, left) = open(dir.path());
        assert_eq!(left.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [a]);
        queue.commit().unwrap();
        let store = queue.store.clone();
        assert_eq!(
            crate::triggers::tail::load_position(&store, &key),
            Some(at(10))
        );

        // An event log channel's entries wait for their commit: neither
        // they nor their position are logged, and nothing is refused.
        let c = queue.next_id();
        queue.put(c, &line("c", EventKind::SystemEvent));
        queue.position(key.clone(), at(20), EventKind::SystemEvent);
        assert!(queue.write_ahead(true));
        drop(queue);
        drop(store);
        let (_, left) = open(dir.path());
        assert_eq!(
            left.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            [a],
            "not {c}"
        );
    }

    #[test]
    fn an_inbox_file_is_removed_by_the_commit_that_holds_its_event_not_an_earlier_one() {
        let dir = tempfile::tempdir().unwrap();
        let (mut queue, _) = open(dir.path());
        let (first, second) = (
            dir.path().join("first.json"),
            dir.path().join("second.json"),
        );
        std::fs::write(&first, "{}").unwrap();
        std::fs::write(&second, "{}").unwrap();
        let a = queue.next_id();
        queue.put_waiting(a, &queued("p", "a"));
        queue.consumed(first.clone());
        let batch = queue.take_batch().unwrap();
        // Read while that commit is in flight: its event is not in it.
        let b = queue.next_id();
        queue.put_waiting(b, &queued("p", "b"));
        queue.consumed(second.clone());
        let landed = run_batch(&queue.store, &queue.journal, batch);
        queue.take_in(landed).unwrap();
        assert!(!first.exists());
        assert!(second.exists(), "its event is not committed yet");
        queue.commit().unwrap();
        assert!(!second.exists());
    }

    #[test]
    fn an_event_whose_run_waits_for_its_commit_is_never_in_the_start_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut queue, _) = open(dir.path());
        // An inbox request of a kind that would go there otherwise.
        let mut request = queued("p", "a");
        request.event.kind = EventKind::FileChanged;
        let a = queue.next_id();
        queue.put_waiting(a, &request);
        assert!(queue.write_ahead(true));
        drop(queue);
        let (_, left) = open(dir.path());
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn after_a_commit_handed_over_half_logged_nothing_runs_ahead_until_it_lands() {
        let dir = tempfile::tempdir().unwrap();
        let (mut queue, _) = open(dir.path());
        let file_event = || {
            let mut event = queued("p", "f");
            event.event.kind = EventKind::FileChanged;
            event
        };
        // A write that goes to the log but was never logged is committed.
        let a = queue.next_id();
        queue.put(a, &file_event());
        queue.store.fail_writes(true);
        assert!(queue.commit().is_err());
        // Put back unlogged: the log would miss it, so nothing runs ahead.
        let b = queue.next_id();
        queue.put(b, &file_event());
        assert!(!queue.write_ahead(true));
        queue.store.fail_writes(false);
        queue.commit().unwrap();
        let c = queue.next_id();
        queue.put(c, &file_event());
        assert!(queue.write_ahead(true), "whole again once it landed");
    }

    #[test]
    fn a_journal_cursor_is_saved_with_the_events_before_it_or_not_at_all() {
        use crate::policy::JournalMatch;
        use crate::triggers::journal::{JournalQuery, load_cursor};
        let dir = tempfile::tempdir().unwrap();
        let (mut queue, _) = open(dir.path());
        let matching = JournalMatch {
            units: vec!["nginx.service".into()],
            ..JournalMatch::default()
        };
        let key = CursorKey::new("web", &JournalQuery::new(&matching));
        let id = queue.next_id();
        queue.put(id, &queued("web", "nginx.service"));
        queue.journal_cursor(key.clone(), "s=a;i=1".into());
        queue.commit().unwrap();
        // Not committed: neither the event nor the cursor after it.
        let later = queue.next_id();
        queue.put(later, &queued("web", "nginx.service"));
        queue.journal_cursor(key.clone(), "s=a;i=2".into());
        drop(queue);

        let store = Store::open(dir.path()).unwrap();
        assert_eq!(load_cursor(&store, &key).as_deref(), Some("s=a;i=1"));
        let (_, left) = DurableQueue::open(store.clone(), Journal::new(store)).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].0, id);
    }

    #[test]
    fn an_event_log_bookmark_is_saved_with_the_events_before_it_or_not_at_all() {
        use crate::triggers::windows_events::{ChannelQuery, load_bookmark};
        let dir = tempfile::tempdir().unwrap();
        let (mut queue, _) = open(dir.path());
        let query = ChannelQuery::new("System", Some("Service Control Manager"), &[7040]).unwrap();
        let key = BookmarkKey::new("bits-restart", &query);
        let id = queue.next_id();
        queue.put(id, &queued("bits-restart", "Service Control Manager/7040"));
        queue.bookmark(key.clone(), "<BookmarkList RecordId='1'/>".into());
        queue.commit().unwrap();
        // Not committed: neither the event nor the bookmark after it.
        let later = queue.next_id();
        queue.put(
            later,
            &queued("bits-restart", "Service Control Manager/7040"),
        );
        queue.bookmark(key.clone(), "<BookmarkList RecordId='2'/>".into());
        drop(queue);

        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            load_bookmark(&store, &key).as_deref(),
            Some("<BookmarkList RecordId='1'/>")
        );
        let (_, left) = DurableQueue::open(store.clone(), Journal::new(store)).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].0, id);
    }
}
