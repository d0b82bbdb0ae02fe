//! The audit journal: one record per run (and per agent decision such as a
//! rejected plugin or a tripped flap guard), appended in its own committed,
//! fsynced transaction so that a `kill -9` at any moment loses nothing
//! already recorded. Each record carries the SHA-256 of the previous one;
//! [`Journal::verify`] recomputes the chain so that an edited, removed or
//! reordered record shows.

use super::{Store, StoreError};
use medic_sandbox::{Status, now_ms};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_journal");

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
}

impl RecordKind {
    pub const ALL: [RecordKind; 8] = [
        Self::Run,
        Self::PluginLoaded,
        Self::PluginRejected,
        Self::PluginRemoved,
        Self::PolicyRejected,
        Self::FlapGuard,
        Self::Approved,
        Self::Rejected,
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
}

impl RecordStatus {
    const OTHERS: [RecordStatus; 6] = [
        Self::Loaded,
        Self::Rejected,
        Self::Removed,
        Self::Tripped,
        Self::Released,
        Self::Interrupted,
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
    fn within_size(mut self) -> Self {
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

    /// Append one record, durably; returns it with its sequence and hash.
    pub fn append(&self, new: NewRecord) -> Result<AuditRecord, StoreError> {
        let txn = self.store.database().begin_write()?;
        let record = self.append_in(&txn, new)?;
        txn.commit()?;
        Ok(record)
    }

    /// Append one record inside the caller's write transaction, so that it
    /// lands together with the caller's other writes (a run's record with
    /// the removal of its event from the durable queue) or not at all. The
    /// record is durable once the caller commits.
    pub fn append_in(
        &self,
        txn: &redb::WriteTransaction,
        new: NewRecord,
    ) -> Result<AuditRecord, StoreError> {
        let new = new.within_size();
        let mut table = txn.open_table(JOURNAL)?;
        let (seq, prev_hash) = match table.last()? {
            Some((seq, bytes)) => {
                let last: AuditRecord = serde_json::from_slice(bytes.value()).map_err(|e| {
                    StoreError::Corrupt(format!("journal record {}: {e}", seq.value()))
                })?;
                (seq.value() + 1, last.hash)
            }
            None => (1, GENESIS.to_string()),
        };
        let mut record = AuditRecord {
            seq,
            time_ms: now_ms(),
            entry: new,
            prev_hash,
            hash: String::new(),
        };
        record.hash = record_hash(&record);
        let bytes = serde_json::to_vec(&record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        table.insert(seq, bytes.as_slice())?;
        Ok(record)
    }

    fn read_all(&self) -> Result<Vec<StoredRecord>, StoreError> {
        let txn = self.store.database().begin_read()?;
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

    /// Recompute the chain; `Ok(n)` with the number of records when intact.
    pub fn verify(&self) -> Result<Result<u64, ChainError>, StoreError> {
        let mut prev_seq = 0;
        let mut prev_hash = GENESIS.to_string();
        for entry in self.read_all()? {
            let record = match entry {
                Ok(record) => record,
                Err((seq, reason)) => return Ok(Err(ChainError::Unreadable { seq, reason })),
            };
            if record.seq != prev_seq + 1 {
                return Ok(Err(ChainError::Sequence {
                    seq: record.seq,
                    expected_prev: prev_seq,
                }));
            }
            if record.prev_hash != prev_hash {
                return Ok(Err(ChainError::Link { seq: record.seq }));
            }
            if record_hash(&record) != record.hash {
                return Ok(Err(ChainError::Content { seq: record.seq }));
            }
            prev_seq = record.seq;
            prev_hash = record.hash;
        }
        Ok(Ok(prev_seq))
    }

    /// Overwrite a stored record's bytes: only for tests of tamper
    /// detection.
    #[doc(hidden)]
    pub fn tamper(&self, seq: u64, edit: impl FnOnce(&mut AuditRecord)) -> Result<(), StoreError> {
        let txn = self.store.database().begin_write()?;
        {
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
        }
        txn.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_record(plugin: &str, status: &str) -> NewRecord {
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
}
