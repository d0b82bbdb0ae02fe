//! The audit journal: one record per run (and per agent decision such as a
//! rejected plugin or a tripped flap guard), appended in its own committed,
//! fsynced transaction so that a `kill -9` at any moment loses nothing
//! already recorded. Each record carries the SHA-256 of the previous one;
//! [`Journal::verify`] recomputes the chain so that an edited, removed or
//! reordered record shows, and checks the anchor kept outside the store
//! ([`super::anchor`]) so that records cut from the end show too.
//!
//! A record that cannot be written (a full disk, an I/O error) waits in
//! memory, in order, and is written before the next one; see
//! [`Journal::append`] and [`Journal::flush_backlog`].

use super::anchor::{self, Anchor};
use super::{Store, StoreError};
use medic_sandbox::{Status, now_ms};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;

pub(crate) const JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_journal");

/// How many records wait in memory at most while the store cannot be
/// written; records beyond are counted as lost, and the next record
/// written says how many.
pub const BACKLOG_LIMIT: usize = 10_000;

/// The hash before the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One journal entry: what was recorded, where, and its place in the
/// chain. Reads of the recorded fields go through to [`NewRecord`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the journal, from 1.
    pub seq: u64,
    pub time_ms: u64,
    #[serde(flatten)]
    pub entry: NewRecord,
    pub prev_hash: String,
    pub hash: String,
}

impl std::ops::Deref for AuditRecord {
    type Target = NewRecord;

    fn deref(&self) -> &NewRecord {
        &self.entry
    }
}

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordKind {
    /// A plugin run.
    Run,
    PluginLoaded,
    /// A new version of a plugin was refused; the last good one serves.
    PluginRejected,
    PluginRemoved,
    /// A changed policy was refused; the last good one serves.
    PolicyRejected,
    /// The flap guard tripped or was released.
    FlapGuard,
    /// An operator approved a plan.
    Approved,
    /// An operator rejected a plan.
    Rejected,
    /// The store itself: rebuilt after damage, or records lost while it
    /// could not be written.
    Store,
}

impl RecordKind {
    pub const ALL: [RecordKind; 9] = [
        Self::Run,
        Self::PluginLoaded,
        Self::PluginRejected,
        Self::PluginRemoved,
        Self::PolicyRejected,
        Self::FlapGuard,
        Self::Approved,
        Self::Rejected,
        Self::Store,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Run => "run",
            Self::PluginLoaded => "plugin-loaded",
            Self::PluginRejected => "plugin-rejected",
            Self::PluginRemoved => "plugin-removed",
            Self::PolicyRejected => "policy-rejected",
            Self::FlapGuard => "flap-guard",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Store => "store",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for RecordKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// How what a record is about ended: a run's outcome, or what became of a
/// plugin, a policy or the flap guard. Stored as its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum RecordStatus {
    /// A run's (or an approval's run's) outcome.
    Run(Status),
    Loaded,
    Rejected,
    Removed,
    Tripped,
    Released,
    /// A run cut off by the agent's end (a kill, a crash, a power loss):
    /// recorded at the next start, when its event runs again.
    Interrupted,
    /// The store was rebuilt from what could be read of a damaged one.
    Repaired,
    /// Records were lost while the store could not be written.
    Lost,
}

impl RecordStatus {
    const OTHERS: [RecordStatus; 8] = [
        Self::Loaded,
        Self::Rejected,
        Self::Removed,
        Self::Tripped,
        Self::Released,
        Self::Interrupted,
        Self::Repaired,
        Self::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Run(status) => status.as_str(),
            Self::Loaded => "loaded",
            Self::Rejected => "rejected",
            Self::Removed => "removed",
            Self::Tripped => "tripped",
            Self::Released => "released",
            Self::Interrupted => "interrupted",
            Self::Repaired => "repaired",
            Self::Lost => "lost",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Status::parse(name)
            .map(Self::Run)
            .or_else(|| Self::OTHERS.into_iter().find(|s| s.as_str() == name))
    }
}

impl std::fmt::Display for RecordStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl From<RecordStatus> for String {
    fn from(status: RecordStatus) -> String {
        status.as_str().to_string()
    }
}

impl TryFrom<String> for RecordStatus {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        Self::parse(&name).ok_or_else(|| format!("unknown record status `{name}`"))
    }
}

/// What a caller appends; the journal adds sequence, time and hashes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRecord {
    pub kind: RecordKind,
    pub plugin: String,
    /// The run id for run records (and for decisions, the run decided).
    pub run_id: String,
    pub status: RecordStatus,
    /// One line for people.
    pub summary: String,
    /// The full record: the run report for runs.
    pub detail: serde_json::Value,
}

/// The largest detail a record keeps; a larger one (a run that made
/// thousands of recorded calls, an event carrying a huge field) is cut.
pub const MAX_DETAIL_BYTES: usize = 1 << 20;

/// The largest summary a record keeps.
pub const MAX_SUMMARY_BYTES: usize = 8 * 1024;

impl NewRecord {
    /// The record cut to the journal's size budget: a summary of at most
    /// [`MAX_SUMMARY_BYTES`], and a detail of at most [`MAX_DETAIL_BYTES`]
    /// once serialised. A detail over the budget keeps its shape with every
    /// string and list cut (see [`medic_sandbox::text::bound_json`]), and
    /// says how large it was (`cut_from_bytes`).
    pub(crate) fn within_size(mut self) -> Self {
        medic_sandbox::text::clean_in_place(&mut self.summary, MAX_SUMMARY_BYTES);
        let size = serde_json::to_vec(&self.detail).map_or(0, |b| b.len());
        if size > MAX_DETAIL_BYTES {
            let mut cut = medic_sandbox::text::bound_json(std::mem::take(&mut self.detail));
            if let serde_json::Value::Object(map) = &mut cut {
                map.insert("cut_from_bytes".into(), size.into());
            }
            self.detail = cut;
        }
        self
    }
}

/// A filter for [`Journal::list`].
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub plugin: Option<String>,
    pub status: Option<RecordStatus>,
    pub kind: Option<RecordKind>,
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    /// Keep only the last `limit` matches.
    pub limit: Option<usize>,
}

impl Filter {
    fn matches(&self, record: &AuditRecord) -> bool {
        self.plugin.as_ref().is_none_or(|p| &record.plugin == p)
            && self.status.is_none_or(|s| record.status == s)
            && self.kind.is_none_or(|k| record.kind == k)
            && self.since_ms.is_none_or(|t| record.time_ms >= t)
            && self.until_ms.is_none_or(|t| record.time_ms <= t)
    }
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("record {seq} is unreadable: {reason}")]
    Unreadable { seq: u64, reason: String },
    #[error(
        "record {seq} does not follow record {expected_prev}: the journal has a gap or was reordered"
    )]
    Sequence { seq: u64, expected_prev: u64 },
    #[error(
        "record {seq} does not carry the hash of the record before it: a record was changed or removed"
    )]
    Link { seq: u64 },
    #[error("record {seq} does not match its own hash: it was changed")]
    Content { seq: u64 },
    #[error(
        "the journal ends at record {last}, but its anchor says record {anchored} was written: records were removed from its end"
    )]
    Truncated { last: u64, anchored: u64 },
    #[error("record {seq} does not carry the hash its anchor recorded for it: it was replaced")]
    Anchor { seq: u64 },
    #[error("the store is damaged after record {after}: {detail}")]
    Damaged { after: u64, detail: String },
}

impl ChainError {
    /// The last record of the intact part of the chain.
    pub fn intact_until(&self) -> u64 {
        match self {
            Self::Unreadable { seq, .. }
            | Self::Link { seq }
            | Self::Content { seq }
            | Self::Anchor { seq } => seq - 1,
            Self::Sequence { expected_prev, .. } => *expected_prev,
            Self::Truncated { last, .. } => *last,
            Self::Damaged { after, .. } => *after,
        }
    }
}

/// The chain, checked one stored record at a time.
#[derive(Debug)]
pub(crate) struct ChainCheck {
    last_seq: u64,
    last_hash: String,
    anchor: Option<Anchor>,
}

impl ChainCheck {
    pub(crate) fn new(anchor: Option<Anchor>) -> Self {
        Self {
            last_seq: 0,
            last_hash: GENESIS.to_string(),
            anchor,
        }
    }

    /// Records checked so far, all intact.
    pub(crate) fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Check the next stored record; it joins the chain if intact.
    pub(crate) fn push(&mut self, seq: u64, bytes: &[u8]) -> Result<AuditRecord, ChainError> {
        let record: AuditRecord =
            serde_json::from_slice(bytes).map_err(|e| ChainError::Unreadable {
                seq,
                reason: e.to_string(),
            })?;
        if record.seq != seq || seq != self.last_seq + 1 {
            return Err(ChainError::Sequence {
                seq,
                expected_prev: self.last_seq,
            });
        }
        if record.prev_hash != self.last_hash {
            return Err(ChainError::Link { seq });
        }
        if record_hash(&record) != record.hash {
            return Err(ChainError::Content { seq });
        }
        if let Some(anchor) = &self.anchor
            && anchor.seq == seq
            && anchor.hash != record.hash
        {
            return Err(ChainError::Anchor { seq });
        }
        self.last_seq = seq;
        self.last_hash.clone_from(&record.hash);
        Ok(record)
    }

    /// The end of the journal: every anchored record must have been seen.
    pub(crate) fn finish(&self) -> Result<u64, ChainError> {
        match &self.anchor {
            Some(anchor) if anchor.seq > self.last_seq => Err(ChainError::Truncated {
                last: self.last_seq,
                anchored: anchor.seq,
            }),
            _ => Ok(self.last_seq),
        }
    }
}

/// Journal records waiting in memory for the store, oldest first, with
/// the time each was made.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    records: VecDeque<(u64, NewRecord)>,
    lost: u64,
    /// Since when records wait.
    since_ms: Option<u64>,
}

impl Backlog {
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    pub(crate) fn lost(&self) -> u64 {
        self.lost
    }

    fn is_empty(&self) -> bool {
        self.records.is_empty() && self.lost == 0
    }

    fn keep(&mut self, time_ms: u64, record: NewRecord) {
        self.since_ms.get_or_insert(time_ms);
        if self.records.len() < BACKLOG_LIMIT {
            self.records.push_back((time_ms, record));
        } else {
            self.lost += 1;
        }
    }

    fn clear(&mut self) {
        *self = Self::default();
    }

    /// Append what waits, in order, after a record saying how many were
    /// lost if any were; returns the last record appended.
    fn write_into(
        &self,
        table: &mut redb::Table<u64, &[u8]>,
    ) -> Result<Option<AuditRecord>, StoreError> {
        let mut last = None;
        if self.lost > 0 {
            let lost = NewRecord {
                kind: RecordKind::Store,
                plugin: String::new(),
                run_id: String::new(),
                status: RecordStatus::Lost,
                summary: format!(
                    "{} journal record(s) were lost: the store could not be written from {} ms, and at most {BACKLOG_LIMIT} records wait in memory",
                    self.lost,
                    self.since_ms.unwrap_or_default()
                ),
                detail: serde_json::json!({
                    "lost": self.lost,
                    "kept": self.records.len(),
                    "since_ms": self.since_ms,
                }),
            };
            last = Some(append_record(table, lost, now_ms())?);
        }
        for (time_ms, record) in &self.records {
            last = Some(append_record(table, record.clone(), *time_ms)?);
        }
        Ok(last)
    }
}

/// Append `new`, made at `time_ms`, at the end of the journal `table`.
pub(crate) fn append_record(
    table: &mut redb::Table<u64, &[u8]>,
    new: NewRecord,
    time_ms: u64,
) -> Result<AuditRecord, StoreError> {
    let (seq, prev_hash) = match table.last()? {
        Some((seq, bytes)) => {
            let last: AuditRecord = serde_json::from_slice(bytes.value())
                .map_err(|e| StoreError::Corrupt(format!("journal record {}: {e}", seq.value())))?;
            (seq.value() + 1, last.hash)
        }
        None => (1, GENESIS.to_string()),
    };
    let mut record = AuditRecord {
        seq,
        time_ms,
        entry: new,
        prev_hash,
        hash: String::new(),
    };
    record.hash = record_hash(&record);
    let bytes = serde_json::to_vec(&record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    table.insert(seq, bytes.as_slice())?;
    Ok(record)
}

/// A record as read back: parsed, or its sequence number and why not.
type StoredRecord = Result<AuditRecord, (u64, String)>;

/// The hash of a record: over every field but `hash`, in a fixed order.
fn record_hash(record: &AuditRecord) -> String {
    let mut hasher = Sha256::new();
    for part in [
        record.seq.to_string().as_str(),
        record.time_ms.to_string().as_str(),
        record.kind.as_str(),
        &record.plugin,
        &record.run_id,
        record.status.as_str(),
        &record.summary,
        &record.detail.to_string(),
        &record.prev_hash,
    ] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// The journal in the shared store.
#[derive(Debug, Clone)]
pub struct Journal {
    store: Store,
}

impl Journal {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Append one record, durably, after any records waiting in memory;
    /// returns it with its sequence and hash, and moves the anchor to it.
    ///
    /// When the store cannot be written, the record waits in memory (up to
    /// [`BACKLOG_LIMIT`] records, in order, with the time it was made) and
    /// the error is [`StoreError::Deferred`]: it is written by the next
    /// append or [`Journal::flush_backlog`] that succeeds.
    pub fn append(&self, new: NewRecord) -> Result<AuditRecord, StoreError> {
        let new = new.within_size();
        let time_ms = now_ms();
        let mut backlog = self.store.backlog();
        let written = self.store.write(|txn| {
            let mut table = txn.open_table(JOURNAL)?;
            backlog.write_into(&mut table)?;
            append_record(&mut table, new.clone(), time_ms)
        });
        match written {
            Ok(record) => {
                backlog.clear();
                drop(backlog);
                self.committed(std::slice::from_ref(&record));
                Ok(record)
            }
            Err(cause) => {
                backlog.keep(time_ms, new);
                Err(StoreError::Deferred {
                    waiting: backlog.len(),
                    cause: Box::new(cause),
                })
            }
        }
    }

    /// Write the records waiting in memory, if any; returns how many were
    /// written. The agent calls it now and then, so that they do not wait
    /// for the next append.
    pub fn flush_backlog(&self) -> Result<usize, StoreError> {
        let mut backlog = self.store.backlog();
        if backlog.is_empty() {
            return Ok(0);
        }
        let count = backlog.len();
        let last = self.store.write(|txn| {
            let mut table = txn.open_table(JOURNAL)?;
            backlog.write_into(&mut table)
        })?;
        backlog.clear();
        drop(backlog);
        if let Some(last) = last {
            self.committed(&[last]);
        }
        Ok(count)
    }

    /// Append one record inside the caller's write transaction, so that it
    /// lands together with the caller's other writes (a run's record with
    /// the removal of its event from the durable queue) or not at all. The
    /// record is durable once the caller commits; the caller then passes
    /// what it appended to [`Journal::committed`]. Records waiting in
    /// memory are not written here (they are by [`Journal::append`] and
    /// [`Journal::flush_backlog`]).
    pub fn append_in(
        &self,
        txn: &redb::WriteTransaction,
        new: NewRecord,
    ) -> Result<AuditRecord, StoreError> {
        let new = new.within_size();
        self.store.contain(|| {
            let mut table = txn.open_table(JOURNAL)?;
            append_record(&mut table, new, now_ms())
        })
    }

    /// Records appended with [`Journal::append_in`] were committed: move
    /// the anchor to the last of them. Only the anchor is written; a
    /// failure to write it is logged (the anchor is a lower bound).
    pub fn committed(&self, records: &[AuditRecord]) {
        let Some(last) = records.iter().max_by_key(|r| r.seq) else {
            return;
        };
        let head = Anchor {
            seq: last.seq,
            hash: last.hash.clone(),
        };
        if let Err(e) = anchor::write(self.store.state_dir(), &head, false) {
            tracing::warn!(
                seq = last.seq,
                "cannot write the journal's anchor {}: {e}",
                anchor::path(self.store.state_dir()).display()
            );
        }
    }

    fn read_all(&self) -> Result<Vec<StoredRecord>, StoreError> {
        self.store.read(|db| {
            let txn = db.begin_read()?;
            let table = match txn.open_table(JOURNAL) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            let mut out = Vec::new();
            for entry in table.iter()? {
                let (seq, bytes) = entry?;
                out.push(
                    serde_json::from_slice(bytes.value()).map_err(|e| (seq.value(), e.to_string())),
                );
            }
            Ok(out)
        })
    }

    /// Records matching `filter`, oldest first.
    pub fn list(&self, filter: &Filter) -> Result<Vec<AuditRecord>, StoreError> {
        let mut records: Vec<AuditRecord> = self
            .read_all()?
            .into_iter()
            .filter_map(Result::ok)
            .filter(|r| filter.matches(r))
            .collect();
        if let Some(limit) = filter.limit
            && records.len() > limit
        {
            records.drain(..records.len() - limit);
        }
        Ok(records)
    }

    /// One record by run id.
    pub fn find_run(&self, run_id: &str) -> Result<Option<AuditRecord>, StoreError> {
        Ok(self
            .read_all()?
            .into_iter()
            .filter_map(Result::ok)
            .find(|r| r.kind == RecordKind::Run && r.run_id == run_id))
    }

    /// Recompute the chain, record by record, and check the anchor; `Ok(n)`
    /// with the number of records when intact, else where it breaks. A
    /// damaged store is reported as a break after the last record read
    /// ([`ChainError::Damaged`]), never as a panic.
    pub fn verify(&self) -> Result<Result<u64, ChainError>, StoreError> {
        // The anchor first: it lags the commits, so the snapshot read next
        // holds every record it names.
        let anchor = anchor::read(self.store.state_dir())?;
        let mut chain = ChainCheck::new(anchor);
        let read = self.store.read(|db| {
            let txn = db.begin_read()?;
            let table = match txn.open_table(JOURNAL) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Ok(())),
                Err(e) => return Err(e.into()),
            };
            for entry in table.iter()? {
                let (seq, bytes) = entry?;
                if let Err(broken) = chain.push(seq.value(), bytes.value()) {
                    return Ok(Err(broken));
                }
            }
            Ok(Ok(()))
        });
        match read {
            Ok(Ok(())) => Ok(chain.finish()),
            Ok(Err(broken)) => Ok(Err(broken)),
            Err(e) if e.is_corrupt() => Ok(Err(ChainError::Damaged {
                after: chain.last_seq(),
                detail: match e {
                    StoreError::Damaged { detail, .. } => detail,
                    other => other.to_string(),
                },
            })),
            Err(e) => Err(e),
        }
    }

    /// Overwrite a stored record's bytes: only for tests of tamper
    /// detection.
    #[doc(hidden)]
    pub fn tamper(&self, seq: u64, edit: impl FnOnce(&mut AuditRecord)) -> Result<(), StoreError> {
        self.store.write(|txn| {
            let mut table = txn.open_table(JOURNAL)?;
            let bytes = table.get(seq)?.map(|b| b.value().to_vec());
            if let Some(bytes) = bytes {
                let mut record: AuditRecord = serde_json::from_slice(&bytes)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                edit(&mut record);
                let bytes =
                    serde_json::to_vec(&record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                table.insert(seq, bytes.as_slice())?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn run_record(plugin: &str, status: &str) -> NewRecord {
        NewRecord {
            kind: RecordKind::Run,
            plugin: plugin.into(),
            run_id: format!("run-{plugin}-{status}"),
            status: RecordStatus::parse(status).unwrap(),
            summary: format!("{plugin} {status}"),
            detail: serde_json::json!({ "calls": [] }),
        }
    }

    #[test]
    fn a_record_over_the_size_budget_is_cut_and_still_chains() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(Store::open(dir.path()).unwrap());
        let mut huge = run_record("a", "healthy");
        huge.summary = "s".repeat(1 << 20);
        huge.detail = serde_json::json!({
            "event": { "fields": { "line": "x".repeat(10 << 20) } },
            "calls": (0..50_000).map(|i| serde_json::json!({ "function": "fs.stat", "n": i })).collect::<Vec<_>>(),
        });
        let record = journal.append(huge).unwrap();
        let stored = serde_json::to_vec(&record).unwrap().len();
        assert!(stored < MAX_DETAIL_BYTES, "{stored} bytes stored");
        assert!(record.entry.summary.len() < MAX_SUMMARY_BYTES + 64);
        assert!(record.entry.detail["cut_from_bytes"].as_u64().unwrap() > 10 << 20);
        assert_eq!(journal.verify().unwrap(), Ok(1));
    }

    #[test]
    fn records_chain_filter_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let journal = Journal::new(Store::open(dir.path()).unwrap());
            let first = journal.append(run_record("a", "healthy")).unwrap();
            assert_eq!(first.prev_hash, GENESIS);
            let second = journal.append(run_record("b", "remediated")).unwrap();
            assert_eq!(second.prev_hash, first.hash);
            journal.append(run_record("a", "failed")).unwrap();
        }
        let journal = Journal::new(Store::open(dir.path()).unwrap());
        assert_eq!(journal.verify().unwrap(), Ok(3));
        let a = journal
            .list(&Filter {
                plugin: Some("a".into()),
                ..Filter::default()
            })
            .unwrap();
        assert_eq!(a.len(), 2);
        let failed = journal
            .list(&Filter {
                status: Some(RecordStatus::Run(Status::Failed)),
                ..Filter::default()
            })
            .unwrap();
        assert_eq!(failed[0].seq, 3);
        let last = journal
            .list(&Filter {
                limit: Some(1),
                ..Filter::default()
            })
            .unwrap();
        assert_eq!(last[0].seq, 3);
        assert!(journal.find_run("run-b-remediated").unwrap().is_some());
    }

    #[test]
    fn kinds_and_statuses_round_trip_through_their_names() {
        for kind in RecordKind::ALL {
            assert_eq!(RecordKind::parse(kind.as_str()), Some(kind));
        }
        for name in ["healthy", "needs-approval", "loaded", "tripped", "released"] {
            let status = RecordStatus::parse(name).unwrap();
            assert_eq!(
                serde_json::to_string(&status).unwrap(),
                format!("\"{name}\"")
            );
        }
        assert_eq!(RecordStatus::parse("sideways"), None);
    }

    #[test]
    fn tampering_shows() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(Store::open(dir.path()).unwrap());
        for status in ["healthy", "remediated", "failed"] {
            journal.append(run_record("a", status)).unwrap();
        }
        journal
            .tamper(2, |r| r.entry.summary = "nothing happened".into())
            .unwrap();
        assert_eq!(
            journal.verify().unwrap(),
            Err(ChainError::Content { seq: 2 })
        );

        // Re-hashing the edited record breaks the link to the next one.
        journal
            .tamper(2, |r| {
                r.hash = record_hash(r);
            })
            .unwrap();
        assert_eq!(journal.verify().unwrap(), Err(ChainError::Link { seq: 3 }));
    }

    /// Wait until `done` holds, trying `step` meanwhile; fails after a
    /// generous deadline.
    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}: timed out");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn records_appended_while_writes_fail_wait_and_land_in_order_with_no_gap() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let journal = Journal::new(store.clone());
        let state = crate::audit::state::StateStore::new(store.clone());
        let mut expected = Vec::new();
        for round in 0..20 {
            let summary = format!("before {round}");
            let mut record = run_record("a", "healthy");
            record.summary.clone_from(&summary);
            journal.append(record).unwrap();
            expected.push(summary);

            store.fail_writes(true);
            for i in 0..(round % 5 + 1) {
                let summary = format!("failing {round}.{i}");
                let mut record = run_record("a", "failed");
                record.summary.clone_from(&summary);
                let e = journal.append(record).unwrap_err();
                assert!(
                    matches!(e, StoreError::Deferred { waiting, .. } if waiting == i + 1),
                    "{e}"
                );
                expected.push(summary);
            }
            assert!(state.set("a", "k", "v", 1 << 20).is_err());
            let health = store.health();
            assert!(health.degraded_since_ms.is_some(), "{health:?}");
            assert!(health.last_error.is_some(), "{health:?}");
            assert_eq!(health.records_waiting, round % 5 + 1);
            // Still failing: nothing is written, nothing is lost.
            assert!(journal.flush_backlog().is_err());
            assert_eq!(store.health().records_waiting, round % 5 + 1);

            store.fail_writes(false);
            // The store reopens by itself; the backlog goes first.
            if round % 2 == 0 {
                wait_until("the backlog is written", || journal.flush_backlog().is_ok());
            } else {
                let summary = format!("after {round}");
                let mut record = run_record("a", "healthy");
                record.summary.clone_from(&summary);
                let mut record = Some(record);
                wait_until("an append succeeds", || {
                    match journal.append(record.take().unwrap()) {
                        Ok(_) => true,
                        Err(StoreError::Deferred { .. }) => {
                            // It waits with the others: take it back.
                            let mut backlog = store.backlog();
                            let (_, kept) = backlog.records.pop_back().unwrap();
                            record = Some(kept);
                            false
                        }
                        Err(e) => panic!("{e}"),
                    }
                });
                expected.push(summary);
            }
            assert_eq!(store.health(), crate::audit::StoreHealth::default());
            state.set("a", "k", "v", 1 << 20).unwrap();
        }
        let records = journal.list(&Filter::default()).unwrap();
        let summaries: Vec<_> = records.iter().map(|r| r.summary.clone()).collect();
        assert_eq!(summaries, expected);
        assert_eq!(journal.verify().unwrap(), Ok(records.len() as u64));
        let head = anchor::read(dir.path()).unwrap().unwrap();
        assert_eq!(head.seq, records.len() as u64);
        drop((journal, state, store));
        // As a later process sees it.
        let journal = Journal::new(Store::open(dir.path()).unwrap());
        assert_eq!(journal.verify().unwrap(), Ok(records.len() as u64));
    }

    #[test]
    fn records_beyond_the_backlog_are_counted_and_the_next_record_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let journal = Journal::new(store.clone());
        store.fail_writes(true);
        for _ in 0..BACKLOG_LIMIT + 3 {
            assert!(journal.append(run_record("a", "failed")).is_err());
        }
        let health = store.health();
        assert_eq!(health.records_waiting, BACKLOG_LIMIT);
        assert_eq!(health.records_lost, 3);
        store.fail_writes(false);
        wait_until("the backlog is written", || journal.flush_backlog().is_ok());
        let records = journal.list(&Filter::default()).unwrap();
        assert_eq!(records.len(), BACKLOG_LIMIT + 1);
        assert_eq!(records[0].kind, RecordKind::Store);
        assert_eq!(records[0].status, RecordStatus::Lost);
        assert!(
            records[0]
                .summary
                .starts_with("3 journal record(s) were lost")
        );
        assert_eq!(journal.verify().unwrap(), Ok(BACKLOG_LIMIT as u64 + 1));
    }

    #[test]
    fn records_cut_from_the_end_show_through_the_anchor() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let journal = Journal::new(store.clone());
        for _ in 0..5 {
            journal.append(run_record("a", "healthy")).unwrap();
        }
        store
            .write(|txn| {
                let mut table = txn.open_table(JOURNAL)?;
                table.remove(5)?;
                table.remove(4)?;
                Ok(())
            })
            .unwrap();
        assert_eq!(
            journal.verify().unwrap(),
            Err(ChainError::Truncated {
                last: 3,
                anchored: 5
            })
        );
        drop((journal, store));
        let e = Store::open(dir.path()).unwrap_err();
        assert!(e.to_string().contains("removed from its end"), "{e}");
    }

    #[test]
    fn records_appended_in_a_callers_transaction_move_the_anchor_once_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let journal = Journal::new(store.clone());
        journal.append(run_record("a", "healthy")).unwrap();
        let records = store
            .write(|txn| {
                Ok(vec![
                    journal.append_in(txn, run_record("b", "healthy"))?,
                    journal.append_in(txn, run_record("c", "healthy"))?,
                ])
            })
            .unwrap();
        assert_eq!(anchor::read(dir.path()).unwrap().unwrap().seq, 1);
        journal.committed(&records);
        assert_eq!(
            anchor::read(dir.path()).unwrap(),
            Some(Anchor {
                seq: 3,
                hash: records[1].hash.clone()
            })
        );
        assert_eq!(journal.verify().unwrap(), Ok(3));
    }

    /// How long verifying a large journal takes; run with `--ignored`.
    #[test]
    #[ignore]
    fn verify_speed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let journal = Journal::new(store.clone());
        let count = 100_000;
        store
            .write(|txn| {
                let mut table = txn.open_table(JOURNAL)?;
                for i in 0..count {
                    let mut record = run_record("content-acl", "remediated");
                    record.run_id = format!("run-{i:032x}");
                    record.detail = serde_json::json!({
                        "event": { "kind": "interval", "subject": "hourly" },
                        "result": { "completed": { "status": "remediated", "actions": ["fs.set-acl /srv/wsus/WsusContent"] } },
                        "calls": (0..4).map(|n| serde_json::json!({ "function": "fs.stat", "path": format!("/srv/wsus/WsusContent/{n}"), "ok": true })).collect::<Vec<_>>(),
                    });
                    append_record(&mut table, record, now_ms())?;
                }
                Ok(())
            })
            .unwrap();
        // CPU time of this thread, in ms (Linux), besides wall time: the
        // machine may be busy with other work.
        let cpu_ms = || -> u64 {
            let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
            let fields: Vec<&str> = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            let ticks = |i: usize| {
                fields
                    .get(i)
                    .and_then(|f| f.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            (ticks(11) + ticks(12)) * 10
        };
        let size = std::fs::metadata(store.path()).unwrap().len();
        let (started, cpu) = (std::time::Instant::now(), cpu_ms());
        assert_eq!(journal.verify().unwrap(), Ok(count));
        let verify = (started.elapsed(), cpu_ms() - cpu);
        drop((journal, store));
        let (started, cpu) = (std::time::Instant::now(), cpu_ms());
        Store::open(dir.path()).unwrap();
        eprintln!(
            "{count} records, {} MB: verify {:?} ({} ms of CPU), open with verify {:?} ({} ms of CPU)",
            size >> 20,
            verify.0,
            verify.1,
            started.elapsed(),
            cpu_ms() - cpu
        );
    }
}
