//! The store's file, as redb sees it: redb's own file backend, watched, so
//! that the store learns of every failed read, write or sync at once (and
//! reopens the database, which redb refuses to use again after one), and,
//! in tests, made to fail writes on demand as a full disk does.

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// What the store's file went through since the database was opened.
#[derive(Debug, Default)]
pub(crate) struct IoWatch {
    /// An operation on the file failed: redb will not use this database
    /// again.
    failed: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// Fail every write, resize and sync with "no space left on device".
    fail_writes: AtomicBool,
}

impl IoWatch {
    pub(crate) fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    pub(crate) fn set_failed(&self, failed: bool) {
        self.failed.store(failed, Ordering::Release);
    }

    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn note<T>(&self, result: std::io::Result<T>) -> std::io::Result<T> {
        if let Err(e) = &result {
            *self
                .last_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.to_string());
            self.set_failed(true);
        }
        result
    }

    /// Make writes fail (`true`) or succeed again; for tests of a full
    /// disk.
    #[cfg(test)]
    pub(crate) fn fail_writes(&self, fail: bool) {
        self.fail_writes.store(fail, Ordering::Release);
    }

    fn write_allowed(&self) -> std::io::Result<()> {
        if self.fail_writes.load(Ordering::Acquire) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "No space left on device (injected)",
            ));
        }
        Ok(())
    }
}

/// redb's file backend, reporting to an [`IoWatch`].
#[derive(Debug)]
pub(crate) struct WatchedFile {
    inner: FileBackend,
    watch: Arc<IoWatch>,
}

impl WatchedFile {
    pub(crate) fn new(
        file: std::fs::File,
        watch: Arc<IoWatch>,
    ) -> Result<Self, redb::DatabaseError> {
        Ok(Self {
            inner: FileBackend::new(file)?,
            watch,
        })
    }
}

impl StorageBackend for WatchedFile {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.watch.note(self.inner.len())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.watch.note(self.inner.read(offset, out))
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.watch.note(
            self.watch
                .write_allowed()
                .and_then(|()| self.inner.set_len(len)),
        )
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.watch.note(
            self.watch
                .write_allowed()
                .and_then(|()| self.inner.sync_data()),
        )
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.watch.note(
            self.watch
                .write_allowed()
                .and_then(|()| self.inner.write(offset, data)),
        )
    }

    fn close(&self) -> Result<(), std::io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

/// Whether any process (this one included) holds a lock on the file: every
/// redb handle does while it has the database open.
pub(crate) fn in_use(path: &std::path::Path) -> std::io::Result<bool> {
    let file = std::fs::File::open(path)?;
    let backend = FileBackend::new(file).map_err(std::io::Error::other)?;
    match backend.query_lock_range(Bound::Unbounded, Bound::Unbounded) {
        Ok(held) => Ok(held),
        // No byte-range locks here: nothing to tell.
        Err(BackendError::Unsupported) => Ok(false),
        Err(e) => Err(std::io::Error::other(e.to_string())),
    }
}
