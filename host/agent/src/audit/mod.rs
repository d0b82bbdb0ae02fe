//! Durable records: the embedded store (one redb file in the state
//! directory) and, on top of it, the hash-chained audit journal and the
//! plugins' key/value state.

pub mod journal;
pub mod state;

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The embedded database file inside a state directory.
pub const DATABASE_FILE: &str = "medic.redb";

/// Errors of the embedded store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create state directory {path}: {cause}")]
    CreateDir {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(
        "cannot open the store {path}: {cause} (is another medic process using this state directory?)"
    )]
    Open {
        path: PathBuf,
        cause: redb::DatabaseError,
    },
    #[error("store operation failed: {0}")]
    Database(#[from] redb::Error),
    #[error("the store holds a record it cannot read: {0}")]
    Corrupt(String),
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

/// The embedded database, shared by everything that keeps records.
#[derive(Clone)]
pub struct Store {
    db: Arc<redb::Database>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// Memory the store may use to cache pages.
const STORE_CACHE_BYTES: usize = 16 << 20;

impl Store {
    /// Open (creating if needed) the store in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(|cause| StoreError::CreateDir {
            path: state_dir.to_path_buf(),
            cause,
        })?;
        let path = state_dir.join(DATABASE_FILE);
        // Multi-writer: the running agent, `medic audit` and one-shot runs
        // may have the store open at the same time.
        let db = redb::Builder::new()
            .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
            // redb caches up to 1 GiB by default: the agent's memory would
            // grow with its journal.
            .set_cache_size(STORE_CACHE_BYTES)
            .create(&path)
            .map_err(|cause| StoreError::Open {
                path: path.clone(),
                cause,
            })?;
        Ok(Self {
            db: Arc::new(db),
            path,
        })
    }

    pub fn database(&self) -> &redb::Database {
        &self.db
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A JSON value stored under `key` in a small keyed table; `None` when
    /// the table, the key or a readable value is missing.
    pub fn get_json<T: serde::de::DeserializeOwned>(&self, table: &str, key: &str) -> Option<T> {
        use redb::ReadableDatabase;
        let definition = redb::TableDefinition::<&str, &[u8]>::new(table);
        let txn = self.db.begin_read().ok()?;
        let table = txn.open_table(definition).ok()?;
        let bytes = table.get(key).ok()??;
        serde_json::from_slice(bytes.value()).ok()
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
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(definition)?;
            table.insert(key, bytes.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }
}
