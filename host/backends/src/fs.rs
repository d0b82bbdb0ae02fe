//! Files, folders and their access lists: the values `fs` calls exchange
//! and the trait a file-system backend implements.

use crate::OpResult;
use std::path::{Component, Path, PathBuf};

/// A path a plugin named, split at the granted root that holds it. The
/// root is trusted (the policy's author chose it); everything under it is
/// resolved beneath the root by the backend, never by the full name, so
/// that no symbolic link or rename inside the root leads outside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beneath {
    root: PathBuf,
    relative: PathBuf,
}

impl Beneath {
    /// `relative` under `root`; `None` unless `root` is absolute and
    /// `relative` has only plain components (no `..`, no root, no prefix).
    pub fn new(root: impl Into<PathBuf>, relative: impl Into<PathBuf>) -> Option<Self> {
        let (root, relative) = (root.into(), relative.into());
        let plain = relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
        (root.is_absolute() && plain).then_some(Self { root, relative })
    }

    /// `path` under the first of `roots` that lexically holds it.
    pub fn within<'a>(path: &Path, roots: impl IntoIterator<Item = &'a PathBuf>) -> Option<Self> {
        roots.into_iter().find_map(|root| {
            path.strip_prefix(root)
                .ok()
                .and_then(|rest| Self::new(root, rest.components().collect::<PathBuf>()))
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path under the root; empty for the root itself.
    pub fn relative(&self) -> &Path {
        &self.relative
    }

    /// The whole path, for messages and records.
    pub fn full(&self) -> PathBuf {
        if self.relative.as_os_str().is_empty() {
            self.root.clone()
        } else {
            self.root.join(&self.relative)
        }
    }
}

impl std::fmt::Display for Beneath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.full().display().fmt(f)
    }
}

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

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Directory => "directory",
            Self::Symlink => "symlink",
            Self::Other => "other",
        }
    }
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

/// Changes an [`AccessReport`] lists; more are counted.
pub const MAX_LISTED_CHANGES: usize = 10_000;

/// A path `ensure_access` did not change, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedPath {
    pub path: String,
    pub reason: String,
}

/// What `ensure_access` found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessReport {
    pub checked: u64,
    /// The changes, the first [`MAX_LISTED_CHANGES`] of them.
    pub changed: Vec<AccessChange>,
    /// Changes made (or planned) beyond those listed.
    pub unlisted_changes: u64,
    /// Paths left alone, and why (a file with other hard links lives
    /// outside the root too).
    pub skipped: Vec<SkippedPath>,
    /// False in dry-run and approve modes: the changes are only planned.
    pub applied: bool,
}

/// Files, directories and their access lists, each named beneath a root
/// that no call may leave: symbolic links are never followed, and a file
/// that has other hard links is neither read nor changed.
pub trait FileSystem: Send + Sync {
    fn stat(&self, path: &Beneath) -> OpResult<FileInfo>;
    fn list_dir(&self, path: &Beneath) -> OpResult<Vec<FileInfo>>;
    fn read_access(&self, path: &Beneath) -> OpResult<Vec<AccessEntry>>;
    fn read_file(&self, path: &Beneath, max_bytes: u32) -> OpResult<Vec<u8>>;
    /// Give `principal` at least `right` on `path` (and everything under
    /// it with `recursive`, each folder then also passing the right on to
    /// what is created in it later: an inheritable entry on NTFS, a default
    /// ACL entry on POSIX). A walk still going at `deadline` stops there
    /// and says what it left unchecked.
    fn ensure_access(
        &self,
        path: &Beneath,
        principal: &str,
        right: AccessRight,
        recursive: bool,
        apply: bool,
        deadline: Option<std::time::Instant>,
    ) -> OpResult<AccessReport>;
}
