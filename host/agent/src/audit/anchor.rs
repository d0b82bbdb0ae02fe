//! The journal's anchor: the sequence number and hash of a committed
//! record, kept outside the store in `journal.head` in the state directory.
//!
//! The hash chain shows a record changed, removed or reordered in the
//! middle of the journal, but not records cut from its end: what remains
//! is a valid chain. The anchor does. It is written after each commit
//! that appends records (to a temporary file, synced, then renamed over
//! the old one, so it is always whole), and is a lower bound: several
//! processes append to one journal, and one may write its anchor after
//! another wrote a later one, so the anchor may lag the journal, never
//! lead it. [`super::journal::Journal::verify`] checks that the record it
//! names is there with that hash.

use super::StoreError;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The anchor's file in a state directory.
pub const ANCHOR_FILE: &str = "journal.head";

/// A committed record, named by its place in the chain and its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    pub seq: u64,
    pub hash: String,
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(ANCHOR_FILE)
}

/// The anchor of the journal in `state_dir`; `None` when none was written
/// (a journal from before anchors, or an empty one).
pub fn read(state_dir: &Path) -> Result<Option<Anchor>, StoreError> {
    let path = path(state_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Anchor {
                path,
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::Anchor {
            path,
            reason: e.to_string(),
        }),
    }
}

/// Record `anchor`; unless `replace`, only when it is past the anchor
/// already written (two processes racing may still leave the lower one:
/// a lower bound either way).
pub fn write(state_dir: &Path, anchor: &Anchor, replace: bool) -> std::io::Result<()> {
    if !replace
        && let Ok(Some(current)) = read(state_dir)
        && current.seq >= anchor.seq
    {
        return Ok(());
    }
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let temporary = state_dir.join(format!(
        "{ANCHOR_FILE}.tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&serde_json::to_vec(anchor).map_err(std::io::Error::other)?)?;
        file.sync_data()?;
        drop(file);
        std::fs::rename(&temporary, path(state_dir))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_anchor_only_moves_forward_unless_replaced() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let at = |seq: u64| Anchor {
            seq,
            hash: format!("h{seq}"),
        };
        write(dir.path(), &at(5), false).unwrap();
        write(dir.path(), &at(3), false).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(at(5)));
        write(dir.path(), &at(3), true).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(at(3)));
        std::fs::write(path(dir.path()), b"{").unwrap();
        assert!(matches!(read(dir.path()), Err(StoreError::Anchor { .. })));
        // Nothing is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(ANCHOR_FILE)]);
    }
}
