//! Files, folders and their access lists: the values `fs` calls exchange
//! and the trait a file-system backend implements.

use crate::OpResult;
use std::path::Path;

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Directory,
    /// A symbolic link (never followed).
    Symlink,
    /// A device, socket or pipe.
    Other,
}

/// What `stat` knows about a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub path: String,
    pub kind: EntryKind,
    pub size: u64,
    /// Last modification, milliseconds since the Unix epoch.
    pub modified_ms: u64,
    /// The owning principal, as the system names it.
    pub owner: String,
}

/// Access rights, in the vocabulary of Windows ACLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AccessRight {
    Read,
    Modify,
    FullControl,
}

impl AccessRight {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Modify => "modify",
            Self::FullControl => "full-control",
        }
    }
}

/// One entry of a path's access list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessEntry {
    /// The policy's name for the principal where it maps, else the system's.
    pub principal: String,
    /// The strongest right this entry gives, if any.
    pub right: Option<AccessRight>,
    /// The entry as the system shows it, e.g. `user:www-data:r-x`.
    pub raw: String,
}

/// One path whose access was (or would be) changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessChange {
    pub path: String,
    pub before: String,
    pub after: String,
}

/// What `ensure_access` found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessReport {
    pub checked: u64,
    pub changed: Vec<AccessChange>,
    /// False in dry-run and approve modes: the changes are only planned.
    pub applied: bool,
}

/// Files, directories and their access lists.
pub trait FileSystem: Send + Sync {
    fn stat(&self, path: &Path) -> OpResult<FileInfo>;
    fn list_dir(&self, path: &Path) -> OpResult<Vec<FileInfo>>;
    fn read_access(&self, path: &Path) -> OpResult<Vec<AccessEntry>>;
    fn read_file(&self, path: &Path, max_bytes: u32) -> OpResult<Vec<u8>>;
    fn ensure_access(
        &self,
        path: &Path,
        principal: &str,
        right: AccessRight,
        recursive: bool,
        apply: bool,
    ) -> OpResult<AccessReport>;
}
