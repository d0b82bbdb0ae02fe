//! Durable records: the embedded store (one redb file in the state
//! directory) and, on top of it, the hash-chained audit journal and the
//! plugins' key/value state.
//!
//! The store fails safe. An open that fails says why (another process,
//! permissions, a read-only or full file system, a damaged file); a
//! damaged file never panics a medic process ([`guard`]); the agent does
//! not start on a broken journal; a failed write (a full disk, an I/O
//! error) leaves the store degraded, not dead: it reopens the database by
//! itself once the file can be used again, and journal records appended
//! meanwhile wait in memory ([`journal::Journal::flush_backlog`]).

pub mod anchor;
mod backend;
mod guard;
pub mod journal;
mod lock;
pub mod repair;
pub mod state;

pub use lock::{AGENT_LOCK_FILE, AgentLock, agent_lock_held, agent_pid, agent_running};

use backend::{IoWatch, WatchedFile};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// The embedded database file inside a state directory.
pub const DATABASE_FILE: &str = "medic.redb";

/// What to do about a damaged store, for messages.
const WAY_OUT: &str = "run `medic audit --repair` (with the same --policy or --state-dir) to keep the damaged file aside and rebuild the store from what can still be read, or move it and journal.head aside to start an empty one";

/// Errors of the embedded store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create state directory {path}: {cause}")]
    CreateDir {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("no store in {}: no agent has run with this state directory", path.parent().unwrap_or(path).display())]
    Missing { path: PathBuf },
    #[error(
        "the store {path} is missing, but {} says its journal had {seq} records: restore the file, or {WAY_OUT}",
        anchor::ANCHOR_FILE
    )]
    Lost { path: PathBuf, seq: u64 },
    #[error("the store {path} is empty (0 bytes): its records are lost; {WAY_OUT}")]
    Empty { path: PathBuf },
    #[error(
        "the store {path} is open in another process that does not share it (another version of medic, or another tool): stop it first"
    )]
    InUse { path: PathBuf },
    #[error("cannot open the store {path}: {cause}{}", io_hint(cause))]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("the store {path} is damaged ({detail}); {WAY_OUT}")]
    Damaged { path: PathBuf, detail: String },
    #[error(
        "the store {path} is in an older file format (version {version}): upgrade it with the redb release that wrote it, or {WAY_OUT}"
    )]
    UpgradeRequired { path: PathBuf, version: u8 },
    #[error(
        "the store {path} was not closed cleanly and could not be repaired on open (is the file read-only?); make it writable, or {WAY_OUT}"
    )]
    RepairAborted { path: PathBuf },
    #[error(
        "the audit journal in {path} is broken: {error}; medic does not append to a broken journal: `medic audit --verify` shows where it breaks, and {WAY_OUT}"
    )]
    BrokenChain {
        path: PathBuf,
        error: journal::ChainError,
    },
    #[error("the journal's anchor {path} cannot be read ({reason}); {WAY_OUT}")]
    Anchor { path: PathBuf, reason: String },
    #[error("another agent runs with the state directory {}{}", state_dir.display(), pid.map_or(String::new(), |p| format!(" (pid {p})")))]
    AgentRunning {
        state_dir: PathBuf,
        pid: Option<u32>,
    },
    #[error("cannot take the agent lock {path}: {cause}")]
    Lock {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(
        "the store cannot be written ({cause}); the journal record is kept in memory with {waiting} other(s) and written as soon as the store can be"
    )]
    Deferred {
        waiting: usize,
        cause: Box<StoreError>,
    },
    #[error("store operation failed: {0}")]
    Database(#[from] redb::Error),
    #[error("the store holds a record it cannot read: {0}")]
    Corrupt(String),
}

fn io_hint(cause: &std::io::Error) -> &'static str {
    use std::io::ErrorKind;
    match cause.kind() {
        ErrorKind::PermissionDenied => {
            " (run medic as the user that owns the state directory, or fix its permissions)"
        }
        ErrorKind::ReadOnlyFilesystem => " (the file system is read-only)",
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => " (the disk is full: free some space)",
        _ => "",
    }
}

impl From<redb::TransactionError> for StoreError {
    fn from(e: redb::TransactionError) -> Self {
        Self::Database(e.into())
    }
}
impl From<redb::TableError> for StoreError {
    fn from(e: redb::TableError) -> Self {
        Self::Database(e.into())
    }
}
impl From<redb::StorageError> for StoreError {
    fn from(e: redb::StorageError) -> Self {
        Self::Database(e.into())
    }
}
impl From<redb::CommitError> for StoreError {
    fn from(e: redb::CommitError) -> Self {
        Self::Database(e.into())
    }
}

impl StoreError {
    /// The store's file is damaged (as opposed to unavailable).
    pub fn is_corrupt(&self) -> bool {
        match self {
            Self::Damaged { .. }
            | Self::Empty { .. }
            | Self::Lost { .. }
            | Self::BrokenChain { .. }
            | Self::Anchor { .. } => true,
            Self::Deferred { cause, .. } => cause.is_corrupt(),
            _ => false,
        }
    }

    /// Name the file in a damaged-file error that does not yet.
    fn at(self, path: &Path) -> Self {
        match self {
            Self::Database(redb::Error::Corrupted(detail)) => Self::Damaged {
                path: path.to_path_buf(),
                detail,
            },
            Self::Database(redb::Error::Io(cause)) if is_damage(&cause) => Self::Damaged {
                path: path.to_path_buf(),
                detail: cause.to_string(),
            },
            Self::Database(redb::Error::LockPoisoned(_)) => Self::Damaged {
                path: path.to_path_buf(),
                detail: "an earlier operation on it failed half-way".into(),
            },
            other => other,
        }
    }
}

/// An I/O error that says the file's content is wrong ("not a redb
/// database", a file shorter than its own header says), not the system.
fn is_damage(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
    )
}

/// The typed error of a failed open.
fn open_error(path: &Path, error: redb::DatabaseError) -> StoreError {
    let path = path.to_path_buf();
    match error {
        redb::DatabaseError::DatabaseAlreadyOpen | redb::DatabaseError::LockProtocolMismatch => {
            StoreError::InUse { path }
        }
        redb::DatabaseError::UpgradeRequired(version) => {
            StoreError::UpgradeRequired { path, version }
        }
        redb::DatabaseError::RepairAborted => StoreError::RepairAborted { path },
        redb::DatabaseError::Storage(redb::StorageError::Io(cause)) if is_damage(&cause) => {
            StoreError::Damaged {
                path,
                detail: cause.to_string(),
            }
        }
        redb::DatabaseError::Storage(redb::StorageError::Io(cause)) => {
            StoreError::Io { path, cause }
        }
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => {
            StoreError::Damaged { path, detail }
        }
        other => StoreError::Database(other.into()).at(&path),
    }
}

/// How the store stands: degraded while writes fail, with the records
/// waiting in memory to be written. Meant for the agent's status snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreHealth {
    /// Since when (ms since the epoch) writes fail; `None` when healthy.
    pub degraded_since_ms: Option<u64>,
    /// The last failure, while degraded.
    pub last_error: Option<String>,
    /// Journal records kept in memory until the store can be written.
    pub records_waiting: usize,
    /// Journal records dropped because too many were waiting; the next
    /// record written says how many.
    pub records_lost: u64,
}

impl StoreHealth {
    pub fn is_degraded(&self) -> bool {
        self.degraded_since_ms.is_some() || self.records_waiting > 0 || self.records_lost > 0
    }
}

/// How often a failed database is reopened at most.
const REOPEN_INTERVAL: Duration = Duration::from_millis(200);

struct Shared {
    path: PathBuf,
    state_dir: PathBuf,
    db: RwLock<Arc<redb::Database>>,
    watch: Arc<IoWatch>,
    /// When the database was last reopened or tried.
    reopened: Mutex<Option<Instant>>,
    /// Since when writes fail, and the last failure.
    degraded: Mutex<Option<(u64, String)>>,
    backlog: Mutex<journal::Backlog>,
}

/// The embedded database, shared by everything that keeps records. Clones
/// share one database, and one backlog of journal records.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.shared.path)
            .finish()
    }
}

/// Memory the store may use to cache pages.
const STORE_CACHE_BYTES: usize = 16 << 20;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Open the database file at `path`, which exists and is not empty.
fn open_database(path: &Path, watch: &Arc<IoWatch>) -> Result<redb::Database, StoreError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|cause| StoreError::Io {
            path: path.to_path_buf(),
            cause,
        })?;
    let backend = WatchedFile::new(file, watch.clone()).map_err(|e| open_error(path, e))?;
    let opened = guard::contain(|| {
        redb::Builder::new()
            // Multi-writer: the running agent, `medic audit` and one-shot
            // runs may have the store open at the same time.
            .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
            // redb caches up to 1 GiB by default: the agent's memory would
            // grow with its journal.
            .set_cache_size(STORE_CACHE_BYTES)
            .create_with_backend(backend)
    });
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(open_error(path, e)),
        Err(panic) => Err(StoreError::Damaged {
            path: path.to_path_buf(),
            detail: panic,
        }),
    }
}

/// Make a new, empty store at `path` so that no other process ever sees
/// it half-made: built under another name, then linked into place unless
/// another process was quicker (then its store is used).
fn create_database(path: &Path) -> Result<(), StoreError> {
    let io = |cause| StoreError::Io {
        path: path.to_path_buf(),
        cause,
    };
    let temporary = path.with_extension(format!("redb.new-{}", std::process::id()));
    let _ = std::fs::remove_file(&temporary);
    let made = redb::Builder::new()
        .create(&temporary)
        .map_err(|e| open_error(&temporary, e));
    if let Err(e) = made {
        let _ = std::fs::remove_file(&temporary);
        return Err(e);
    }
    let linked = match std::fs::hard_link(&temporary, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        // No hard links on this file system: a rename is atomic too, but
        // replaces; a store made meanwhile by another process is kept.
        Err(_) if !path.exists() => std::fs::rename(&temporary, path),
        Err(_) => Ok(()),
    };
    let _ = std::fs::remove_file(&temporary);
    linked.map_err(io)
}

impl Store {
    /// Open the store in `state_dir`, creating the directory and an empty
    /// store if there is none yet; then verify the journal, so that
    /// nothing appends to a broken one. Refuses a store file of 0 bytes and
    /// a missing one whose journal left an anchor: records were lost.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(|cause| StoreError::CreateDir {
            path: state_dir.to_path_buf(),
            cause,
        })?;
        let path = state_dir.join(DATABASE_FILE);
        if !path.exists() {
            if let Some(anchor) = anchor::read(state_dir)? {
                return Err(StoreError::Lost {
                    path,
                    seq: anchor.seq,
                });
            }
            create_database(&path)?;
        }
        let store = Self::open_file(state_dir, path)?;
        let journal = journal::Journal::new(store.clone());
        match journal.verify()? {
            Ok(_) => Ok(store),
            Err(error) => Err(StoreError::BrokenChain {
                path: store.shared.path.clone(),
                error,
            }),
        }
    }

    /// Open the store in `state_dir` as it is, for reading it: never
    /// creates anything, and does not verify the journal (the caller may
    /// want to show where it breaks).
    pub fn open_existing(state_dir: &Path) -> Result<Self, StoreError> {
        let path = state_dir.join(DATABASE_FILE);
        if !path.exists() {
            return Err(match anchor::read(state_dir) {
                Ok(Some(anchor)) => StoreError::Lost {
                    path,
                    seq: anchor.seq,
                },
                _ => StoreError::Missing { path },
            });
        }
        Self::open_file(state_dir, path)
    }

    fn open_file(state_dir: &Path, path: PathBuf) -> Result<Self, StoreError> {
        match std::fs::metadata(&path) {
            Ok(meta) if meta.len() == 0 => return Err(StoreError::Empty { path }),
            Ok(_) => {}
            Err(cause) => return Err(StoreError::Io { path, cause }),
        }
        let watch = Arc::new(IoWatch::default());
        let db = open_database(&path, &watch)?;
        Ok(Self {
            shared: Arc::new(Shared {
                state_dir: state_dir.to_path_buf(),
                path,
                db: RwLock::new(Arc::new(db)),
                watch,
                reopened: Mutex::new(None),
                degraded: Mutex::new(None),
                backlog: Mutex::new(journal::Backlog::default()),
            }),
        })
    }

    /// Take the agent lock of `state_dir`: one agent per state directory.
    /// Hold it for as long as the agent runs; it is released when dropped
    /// or when the process ends.
    pub fn lock_agent(state_dir: &Path) -> Result<AgentLock, StoreError> {
        lock::lock(state_dir)
    }

    /// The database. After a failed operation redb refuses to use a
    /// database again; this reopens it first (at most every
    /// [`REOPEN_INTERVAL`]), so a caller holding the store keeps working
    /// once the file can be used again. Take it for one transaction at a
    /// time: a database kept aside is not reopened.
    pub fn database(&self) -> Arc<redb::Database> {
        if self.shared.watch.failed() {
            self.reopen();
        }
        self.shared
            .db
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn reopen(&self) {
        let Ok(mut last) = self.shared.reopened.try_lock() else {
            return; // another thread is at it
        };
        if last.is_some_and(|at| at.elapsed() < REOPEN_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
        self.shared.watch.set_failed(false);
        match open_database(&self.shared.path, &self.shared.watch) {
            Ok(db) => {
                *self
                    .shared
                    .db
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Arc::new(db);
                tracing::info!(store = %self.shared.path.display(), "the store was reopened");
            }
            Err(e) => {
                self.shared.watch.set_failed(true);
                self.note_failure(&e);
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    pub fn state_dir(&self) -> &Path {
        &self.shared.state_dir
    }

    /// Whether writes fail now, since when and why, and how many journal
    /// records wait in memory.
    pub fn health(&self) -> StoreHealth {
        let degraded = lock(&self.shared.degraded).clone();
        let backlog = lock(&self.shared.backlog);
        StoreHealth {
            degraded_since_ms: degraded.as_ref().map(|(since, _)| *since),
            last_error: degraded.map(|(_, error)| error),
            records_waiting: backlog.len(),
            records_lost: backlog.lost(),
        }
    }

    fn note_failure(&self, error: &StoreError) {
        let text = match (error, self.shared.watch.last_error()) {
            (StoreError::Database(_), Some(io)) => format!("{error} ({io})"),
            _ => error.to_string(),
        };
        let mut degraded = lock(&self.shared.degraded);
        match &mut *degraded {
            Some((_, last)) => *last = text,
            None => {
                tracing::error!(store = %self.shared.path.display(), "the store cannot be written: {text}");
                *degraded = Some((medic_sandbox::now_ms(), text));
            }
        }
    }

    fn note_success(&self) {
        if let Some((since, _)) = lock(&self.shared.degraded).take() {
            tracing::warn!(
                store = %self.shared.path.display(),
                "the store can be written again (it failed from {since} ms)"
            );
        }
    }

    pub(crate) fn backlog(&self) -> std::sync::MutexGuard<'_, journal::Backlog> {
        lock(&self.shared.backlog)
    }

    /// Run `f`, which works on this store, with redb's panics and damage
    /// reported as [`StoreError::Damaged`] naming the file; a failure of
    /// the file leaves the store degraded (see [`Store::health`]).
    pub fn contain<T>(&self, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        let result = match guard::contain(f) {
            Ok(result) => result.map_err(|e| e.at(&self.shared.path)),
            Err(panic) => {
                // A database that panicked is not used again.
                self.shared.watch.set_failed(true);
                Err(StoreError::Damaged {
                    path: self.shared.path.clone(),
                    detail: panic,
                })
            }
        };
        if let Err(e) = &result
            && self.shared.watch.failed()
        {
            self.note_failure(e);
        }
        result
    }

    /// Run `f` on the database, as [`Store::contain`] does.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&redb::Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let db = self.database();
        self.contain(|| f(&db))
    }

    /// Run `f` in a write transaction and commit it, as [`Store::contain`]
    /// does; a commit ends a degraded spell.
    pub fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let value = self.read(|db| {
            let txn = db.begin_write()?;
            let value = f(&txn)?;
            txn.commit()?;
            Ok(value)
        })?;
        self.note_success();
        Ok(value)
    }

    /// For a caller that commits its own transactions on
    /// [`Store::database`]: report a failed commit, so that the store
    /// shows degraded and reopens the database.
    pub fn report_failure(&self, error: &StoreError) {
        self.shared.watch.set_failed(true);
        self.note_failure(error);
    }

    /// For such a caller: report a commit that succeeded.
    pub fn report_success(&self) {
        self.note_success();
    }

    /// Make writes fail, as on a full disk, or succeed again.
    #[cfg(test)]
    pub(crate) fn fail_writes(&self, fail: bool) {
        self.shared.watch.fail_writes(fail);
    }

    /// A JSON value stored under `key` in a small keyed table; `None` when
    /// the table, the key or a readable value is missing.
    pub fn get_json<T: serde::de::DeserializeOwned>(&self, table: &str, key: &str) -> Option<T> {
        use redb::ReadableDatabase;
        let definition = redb::TableDefinition::<&str, &[u8]>::new(table);
        self.read(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(definition)?;
            Ok(table
                .get(key)?
                .and_then(|bytes| serde_json::from_slice(bytes.value()).ok()))
        })
        .ok()
        .flatten()
    }

    /// Store `value` as JSON under `key`, durably.
    pub fn put_json<T: serde::Serialize>(
        &self,
        table: &str,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let definition = redb::TableDefinition::<&str, &[u8]>::new(table);
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.write(|txn| {
            let mut table = txn.open_table(definition)?;
            table.insert(key, bytes.as_slice())?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_verbs_never_create_a_store() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("typo");
        let e = Store::open_existing(&state).unwrap_err();
        assert!(matches!(e, StoreError::Missing { .. }), "{e}");
        assert!(e.to_string().contains("no agent has run"), "{e}");
        assert!(!state.exists());
        Store::open(&state).unwrap();
        Store::open_existing(&state).unwrap();
    }

    #[test]
    fn a_store_cut_to_nothing_is_refused_not_taken_as_new() {
        let dir = tempfile::tempdir().unwrap();
        {
            let journal = journal::Journal::new(Store::open(dir.path()).unwrap());
            journal
                .append(journal::tests::run_record("a", "healthy"))
                .unwrap();
        }
        let path = dir.path().join(DATABASE_FILE);
        std::fs::File::create(&path).unwrap(); // truncate
        for e in [
            Store::open(dir.path()).unwrap_err(),
            Store::open_existing(dir.path()).unwrap_err(),
        ] {
            assert!(matches!(e, StoreError::Empty { .. }), "{e}");
            assert!(e.to_string().contains("medic audit --repair"), "{e}");
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        // Removed altogether, with the anchor left: lost, not new.
        std::fs::remove_file(&path).unwrap();
        let e = Store::open(dir.path()).unwrap_err();
        assert!(matches!(e, StoreError::Lost { seq: 1, .. }), "{e}");
        assert!(!path.exists());
    }

    #[cfg(unix)]
    #[test]
    fn open_errors_name_their_cause() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        Store::open(dir.path()).unwrap();
        let path = dir.path().join(DATABASE_FILE);
        // Garbage where the store should be.
        let good = std::fs::read(&path).unwrap();
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let e = Store::open_existing(dir.path()).unwrap_err();
        assert!(matches!(e, StoreError::Damaged { .. }), "{e}");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        std::fs::write(&path, good).unwrap();
        // Permissions (root reads everything: only checked as others).
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
        if std::fs::File::open(&path).is_err() {
            let e = Store::open_existing(dir.path()).unwrap_err();
            assert!(matches!(e, StoreError::Io { .. }), "{e}");
            assert!(e.to_string().contains("permission"), "{e}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        Store::open_existing(dir.path()).unwrap();
    }
}
