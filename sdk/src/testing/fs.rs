//! The fake host's file system: folders, files and symbolic links, each
//! with an owner and an access list of one right per principal, answering
//! `fs` calls as the agent's backends do: a link is never followed (a
//! path through one is refused as `denied`, a link named is described,
//! not read), a missing path is `not-found`, and `ensure-access` adds or
//! raises entries only where the principal lacks the right.

use super::error;
use crate::fs::{AccessChange, AccessEntry, AccessReport, AccessRight, EntryKind, FileInfo};
use crate::{Error, ErrorKind};
use std::collections::BTreeMap;
use std::fmt;

/// Largest `read-file` the host serves.
const MAX_READ_BYTES: u32 = 16 * 1024 * 1024;

/// An absolute path, split into components: `/srv/share` or, with a drive,
/// `D:\WSUS` (`/` and `\` both separate components). Checked as the host
/// checks the paths a plugin passes: absolute, without `..` or NUL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct FakePath {
    /// `D:` for a drive; empty for `/`.
    drive: String,
    parts: Vec<String>,
}

impl FakePath {
    pub(crate) fn parse(raw: &str) -> Result<Self, Error> {
        let invalid = |why: &str| error(ErrorKind::InvalidArgument, format!("`{raw}` {why}"));
        if raw.contains('\0') {
            return Err(invalid("contains a NUL character"));
        }
        let bytes = raw.as_bytes();
        let (drive, rest) = if raw.starts_with(['/', '\\']) {
            (String::new(), raw)
        } else if bytes.len() >= 3
            && bytes[0].is_ascii_alphabetic()
            && bytes[1] == b':'
            && matches!(bytes[2], b'/' | b'\\')
        {
            (raw[..2].to_ascii_uppercase(), &raw[2..])
        } else {
            return Err(invalid("is not an absolute path"));
        };
        let mut parts = Vec::new();
        for part in rest.split(['/', '\\']) {
            match part {
                "" | "." => {}
                ".." => return Err(invalid("contains `..`")),
                part => parts.push(part.to_string()),
            }
        }
        Ok(Self { drive, parts })
    }

    /// Whether `self` is `root` or beneath it.
    pub(crate) fn starts_with(&self, root: &FakePath) -> bool {
        self.drive == root.drive && self.parts.starts_with(&root.parts)
    }

    fn parent(&self) -> Option<FakePath> {
        let (_, parts) = self.parts.split_last()?;
        Some(Self {
            drive: self.drive.clone(),
            parts: parts.to_vec(),
        })
    }

    /// This path and every folder above it, the topmost first.
    fn ancestors(&self) -> Vec<FakePath> {
        (0..=self.parts.len())
            .map(|n| Self {
                drive: self.drive.clone(),
                parts: self.parts[..n].to_vec(),
            })
            .collect()
    }
}

impl fmt::Display for FakePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.drive.is_empty() {
            write!(f, "/{}", self.parts.join("/"))
        } else {
            write!(f, "{}\\{}", self.drive, self.parts.join("\\"))
        }
    }
}

/// A path of the fake file system: a folder, a file or a symbolic link,
/// its owner and its access entries.
///
/// ```
/// use medic_sdk::AccessRight;
/// use medic_sdk::testing::{Entry, FakeHost};
///
/// let mut host = FakeHost::new();
/// host.entry(
///     "/srv/share",
///     Entry::dir().owner("root").allow("Users", AccessRight::Read),
/// )
/// .file("/srv/share/a.txt", "hello")
/// .entry("/srv/share/link", Entry::symlink());
/// ```
#[derive(Debug, Clone)]
pub struct Entry {
    kind: EntryKind,
    owner: String,
    contents: Vec<u8>,
    modified_ms: u64,
    /// One entry per principal, in the order added.
    access: Vec<(String, Option<AccessRight>)>,
}

impl Entry {
    fn new(kind: EntryKind) -> Self {
        Self {
            kind,
            owner: "root".into(),
            contents: Vec::new(),
            modified_ms: super::FakeHost::START_MS,
            access: Vec::new(),
        }
    }

    /// A folder, owned by `root`, with no access entries.
    pub fn dir() -> Self {
        Self::new(EntryKind::Directory)
    }

    /// A file with these contents, owned by `root`, with no access entries.
    pub fn file(contents: impl Into<Vec<u8>>) -> Self {
        Self {
            contents: contents.into(),
            ..Self::new(EntryKind::File)
        }
    }

    /// A symbolic link (never followed, never changed).
    pub fn symlink() -> Self {
        Self::new(EntryKind::Symlink)
    }

    /// The owning principal.
    pub fn owner(mut self, owner: &str) -> Self {
        self.owner = owner.to_string();
        self
    }

    /// An entry giving `principal` `right` (replacing its entry, if any).
    pub fn allow(self, principal: &str, right: AccessRight) -> Self {
        self.access_entry(principal, Some(right))
    }

    /// An entry for `principal` that gives no right (`other:---`).
    pub fn no_right(self, principal: &str) -> Self {
        self.access_entry(principal, None)
    }

    fn access_entry(mut self, principal: &str, right: Option<AccessRight>) -> Self {
        set_entry(&mut self.access, principal, right);
        self
    }

    /// When it was last modified, milliseconds since the Unix epoch.
    pub fn modified_ms(mut self, ms: u64) -> Self {
        self.modified_ms = ms;
        self
    }

    /// The right `principal`'s entry gives (principal names compare
    /// without regard to case, as Windows and the agent's mapping do).
    fn right_of(&self, principal: &str) -> Option<AccessRight> {
        self.access
            .iter()
            .filter(|(p, _)| p.eq_ignore_ascii_case(principal))
            .filter_map(|(_, right)| *right)
            .max()
    }
}

fn set_entry(
    access: &mut Vec<(String, Option<AccessRight>)>,
    principal: &str,
    right: Option<AccessRight>,
) {
    access.retain(|(p, _)| !p.eq_ignore_ascii_case(principal));
    access.push((principal.to_string(), right));
}

fn right_name(right: AccessRight) -> &'static str {
    match right {
        AccessRight::Read => "read",
        AccessRight::Modify => "modify",
        AccessRight::FullControl => "full-control",
    }
}

/// A principal's entry as the fake's `raw` texts show it:
/// `Users: read`, `Users: no entry`.
fn entry_text(principal: &str, right: Option<AccessRight>) -> String {
    match right {
        Some(right) => format!("{principal}: {}", right_name(right)),
        None => format!("{principal}: no entry"),
    }
}

/// Every path of the fake file system.
#[derive(Debug, Default)]
pub(crate) struct FakeFs {
    nodes: BTreeMap<FakePath, Entry>,
}

#[track_caller]
fn setup_path(raw: &str) -> FakePath {
    match FakePath::parse(raw) {
        Ok(path) => path,
        Err(e) => panic!("{}", e.message),
    }
}

impl FakeFs {
    /// Put `entry` at `path`, adding the folders above it that are missing.
    #[track_caller]
    pub(crate) fn insert(&mut self, raw: &str, entry: Entry) {
        let path = setup_path(raw);
        for above in path.ancestors().into_iter().rev().skip(1) {
            match self.nodes.get(&above) {
                Some(node) if node.kind != EntryKind::Directory => {
                    panic!("`{above}` is not a folder: `{path}` cannot be under it")
                }
                Some(_) => {}
                None => {
                    self.nodes.insert(above, Entry::dir());
                }
            }
        }
        self.nodes.insert(path, entry);
    }

    #[track_caller]
    fn node_mut(&mut self, raw: &str) -> &mut Entry {
        let path = setup_path(raw);
        match self.nodes.get_mut(&path) {
            Some(node) => node,
            None => panic!("the fake file system has no `{path}`"),
        }
    }

    #[track_caller]
    fn node(&self, raw: &str) -> &Entry {
        let path = setup_path(raw);
        match self.nodes.get(&path) {
            Some(node) => node,
            None => panic!("the fake file system has no `{path}`"),
        }
    }

    #[track_caller]
    pub(crate) fn allow(&mut self, raw: &str, principal: &str, right: AccessRight) {
        set_entry(&mut self.node_mut(raw).access, principal, Some(right));
    }

    #[track_caller]
    pub(crate) fn revoke(&mut self, raw: &str, principal: &str, recursive: bool) {
        let path = setup_path(raw);
        for (p, node) in self.nodes.iter_mut() {
            if *p == path || (recursive && p.starts_with(&path)) {
                node.access
                    .retain(|(q, _)| !q.eq_ignore_ascii_case(principal));
            }
        }
    }

    #[track_caller]
    pub(crate) fn entries_of(&self, raw: &str) -> Vec<AccessEntry> {
        access_entries(self.node(raw))
    }

    #[track_caller]
    pub(crate) fn right_of(&self, raw: &str, principal: &str) -> Option<AccessRight> {
        self.node(raw).right_of(principal)
    }

    pub(crate) fn exists(&self, raw: &str) -> bool {
        FakePath::parse(raw).is_ok_and(|path| self.nodes.contains_key(&path))
    }

    /// The node at `path`, resolved as the host resolves beneath a root:
    /// a link on the way is refused, a missing path is `not-found`.
    fn resolve(&self, path: &FakePath) -> Result<&Entry, Error> {
        for above in path.ancestors() {
            match self.nodes.get(&above) {
                None => {
                    return Err(error(
                        ErrorKind::NotFound,
                        format!("{path}: No such file or directory (os error 2)"),
                    ));
                }
                Some(node) if above != *path && node.kind != EntryKind::Directory => {
                    return Err(if node.kind == EntryKind::Symlink {
                        symlink_refused(path)
                    } else {
                        error(
                            ErrorKind::NotFound,
                            format!("{path}: Not a directory (os error 20)"),
                        )
                    });
                }
                Some(_) => {}
            }
        }
        Ok(&self.nodes[path])
    }

    fn info(path: &FakePath, node: &Entry) -> FileInfo {
        FileInfo {
            path: path.to_string(),
            kind: node.kind,
            size: match node.kind {
                EntryKind::Directory => 4096,
                _ => node.contents.len() as u64,
            },
            modified_ms: node.modified_ms,
            owner: node.owner.clone(),
        }
    }

    pub(crate) fn stat(&self, path: &FakePath) -> Result<FileInfo, Error> {
        self.resolve(path).map(|node| Self::info(path, node))
    }

    pub(crate) fn list_dir(&self, path: &FakePath) -> Result<Vec<FileInfo>, Error> {
        let node = self.resolve(path)?;
        expect_kind(path, node, EntryKind::Directory, "a folder")?;
        Ok(self
            .nodes
            .iter()
            .filter(|(p, _)| p.parent().as_ref() == Some(path))
            .map(|(p, node)| Self::info(p, node))
            .collect())
    }

    pub(crate) fn read_access(&self, path: &FakePath) -> Result<Vec<AccessEntry>, Error> {
        self.resolve(path).map(access_entries)
    }

    pub(crate) fn read_file(&self, path: &FakePath, max_bytes: u32) -> Result<Vec<u8>, Error> {
        let node = self.resolve(path)?;
        expect_kind(path, node, EntryKind::File, "a regular file")?;
        let n = node
            .contents
            .len()
            .min(max_bytes.min(MAX_READ_BYTES) as usize);
        Ok(node.contents[..n].to_vec())
    }

    /// Give `principal` at least `right` on `path` (and, with `recursive`,
    /// on everything under it but links), where it lacks it; with `apply`
    /// false, only say what would change.
    pub(crate) fn ensure_access(
        &mut self,
        path: &FakePath,
        principal: &str,
        right: AccessRight,
        recursive: bool,
        apply: bool,
    ) -> Result<AccessReport, Error> {
        if principal.trim().is_empty() {
            return Err(error(
                ErrorKind::InvalidArgument,
                "unknown principal ``: name a user or a group",
            ));
        }
        let node = self.resolve(path)?;
        let mut report = AccessReport {
            checked: 0,
            changed: Vec::new(),
            applied: apply,
        };
        // A link named is skipped, not followed.
        if node.kind == EntryKind::Symlink {
            return Ok(report);
        }
        let targets: Vec<FakePath> = if recursive && node.kind == EntryKind::Directory {
            self.nodes
                .iter()
                .filter(|(p, n)| p.starts_with(path) && n.kind != EntryKind::Symlink)
                .map(|(p, _)| p.clone())
                .collect()
        } else {
            vec![path.clone()]
        };
        for target in targets {
            report.checked += 1;
            let node = self.nodes.get_mut(&target).expect("listed above");
            let before = node.right_of(principal);
            if before.is_some_and(|had| had >= right) {
                continue;
            }
            report.changed.push(AccessChange {
                path: target.to_string(),
                before: entry_text(principal, before),
                after: entry_text(principal, Some(right)),
            });
            if apply {
                set_entry(&mut node.access, principal, Some(right));
            }
        }
        Ok(report)
    }
}

fn access_entries(node: &Entry) -> Vec<AccessEntry> {
    node.access
        .iter()
        .map(|(principal, right)| AccessEntry {
            principal: principal.clone(),
            right: *right,
            raw: match right {
                Some(right) => format!("{principal}:{}", right_name(*right)),
                None => format!("{principal}:none"),
            },
        })
        .collect()
}

fn symlink_refused(path: &FakePath) -> Error {
    error(
        ErrorKind::Denied,
        format!("{path} is a symbolic link; medic does not follow links under a granted root"),
    )
}

/// Refuse `node` unless it is of kind `want`; a link is refused as a link.
fn expect_kind(path: &FakePath, node: &Entry, want: EntryKind, what: &str) -> Result<(), Error> {
    match node.kind {
        kind if kind == want => Ok(()),
        EntryKind::Symlink => Err(symlink_refused(path)),
        _ => Err(error(
            ErrorKind::InvalidArgument,
            format!("{path} is not {what}"),
        )),
    }
}
