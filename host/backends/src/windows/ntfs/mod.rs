//! Files and NTFS access lists for the `windows` backend: a
//! [`FileSystem`] whose principals are SIDs ([`sid`]) and whose access
//! lists are modelled ([`acl`]) and changed the NTFS way (`ensure`):
//! one inheritable entry on the folder asked about, which Windows itself
//! passes down to what the folder holds, instead of a rewrite of every
//! file, and an entry of their own only for what blocks inheritance.
//!
//! Every system call goes through the small [`AclApi`] trait; all the
//! decisions are above it, plain Rust compiled and unit-tested on every
//! platform against an in-memory fake. The Windows implementation is
//! `sys::Win32Acl` (compiled only on Windows, made by `local`): security
//! descriptors through `GetNamedSecurityInfoW`/`SetNamedSecurityInfoW`,
//! effective rights through Authz, account names through
//! `LookupAccountSidW`.
//!
//! Paths are used by name. Every component under the granted root is
//! checked not to be a reparse point (a symbolic link, junction or mount
//! point) before use, and a walk never enters one; the root itself is the
//! policy author's choice and is trusted. Unlike the Linux backend, which
//! resolves everything beneath the root through descriptors, nothing here
//! opens handles relative to the root yet. An access list is read and
//! written through one handle opened without following a reparse point at
//! the last component, and refused if it is one, so a swapped-in link
//! there is never written through; but a folder above it swapped for a
//! junction between the check and the use is still followed (a race
//! window remains for a local user who can write under the root). A file
//! with other hard links is
//! neither read nor changed, since its access list is shared with names
//! that may lie outside the root (Windows' own propagation of an inherited
//! entry still reaches such files, as it does any file below the folder).
//!
//! Rights: read is `FILE_GENERIC_READ | FILE_GENERIC_EXECUTE`
//! (`0x001200A9`, icacls `RX`), modify is read, write and `DELETE`
//! (`0x001301BF`, `M`), full control `FILE_ALL_ACCESS` (`0x001F01FF`, `F`).
//! A NULL DACL (no list) gives everyone full control.

pub mod acl;
mod ensure;
// The fake tree is written with Unix-style absolute paths (`/srv/wsus`),
// which are not absolute on Windows; the decisions it tests are the same
// on every platform, and Windows' own paths are covered by the system
// tests (tests/windows).
#[cfg(all(test, unix))]
mod fake;
pub mod sid;
#[cfg(windows)]
pub mod sys;

pub use acl::{Ace, AceFlags, AceKind, Dacl};
pub use sid::{Sid, SidMap};

use crate::fs::{AccessEntry, AccessReport, AccessRight, Beneath, EntryKind, FileInfo, FileSystem};
use crate::{BackendError, ErrorKind, OpResult};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// What a path is, as seen without following a reparse point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeInfo {
    pub is_dir: bool,
    /// `FILE_ATTRIBUTE_REPARSE_POINT`: a symbolic link, junction, mount
    /// point or another kind of reparse point.
    pub reparse_point: bool,
    pub size: u64,
    /// Last modification, milliseconds since the Unix epoch.
    pub modified_ms: u64,
}

/// One entry of a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: OsString,
    pub info: NodeInfo,
}

/// The parts of a file's security descriptor medic reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityDescriptor {
    pub owner: Option<Sid>,
    /// `None` is a NULL DACL: everyone has full control.
    pub dacl: Option<Dacl>,
}

/// The system calls behind [`NtfsFileSystem`]. Paths are full paths; none
/// of these follows a reparse point except where said.
pub trait AclApi: Send + Sync {
    /// What `path` is.
    fn metadata(&self, path: &Path) -> OpResult<NodeInfo>;
    /// The entries of the folder `path`, without `.` and `..`.
    fn list(&self, path: &Path) -> OpResult<Vec<DirEntry>>;
    /// How many names the file `path` has.
    fn hard_links(&self, path: &Path) -> OpResult<u32>;
    /// Up to `max_bytes` of the file `path`.
    fn read_contents(&self, path: &Path, max_bytes: u32) -> OpResult<Vec<u8>>;
    /// The owner and DACL of `path`.
    fn read_security(&self, path: &Path) -> OpResult<SecurityDescriptor>;
    /// Set the DACL of `path` (its entries in order, and whether it is
    /// protected); Windows recomputes its inherited entries and passes its
    /// inheritable ones down to what it holds.
    fn write_dacl(&self, path: &Path, dacl: &Dacl) -> OpResult<()>;
    /// The rights `sid` has on `path` (maximum allowed), as the system
    /// decides with the principal's groups.
    fn effective_rights(&self, path: &Path, sid: &Sid) -> OpResult<u32>;
    /// The system's (possibly localized) name of `sid`, `DOMAIN\name`.
    fn account_name(&self, sid: &Sid) -> Option<String>;
}

/// NTFS files and access lists through an [`AclApi`], naming principals
/// through a [`SidMap`].
#[derive(Debug)]
pub struct NtfsFileSystem<A> {
    api: A,
    principals: SidMap,
}

/// The real thing: this machine's NTFS volumes.
#[cfg(windows)]
pub fn local(principals: SidMap) -> NtfsFileSystem<sys::Win32Acl> {
    NtfsFileSystem::new(sys::Win32Acl::new(), principals)
}

impl<A: AclApi> NtfsFileSystem<A> {
    pub fn new(api: A, principals: SidMap) -> Self {
        Self { api, principals }
    }

    pub fn api(&self) -> &A {
        &self.api
    }

    pub fn principals(&self) -> &SidMap {
        &self.principals
    }

    /// How the system names `sid`: its account name, else the English name
    /// of a well-known principal, else the SID itself (as icacls does).
    fn system_name(&self, sid: &Sid) -> String {
        self.api
            .account_name(sid)
            .or_else(|| sid::well_known_by_sid(sid).map(|p| p.qualified_name()))
            .unwrap_or_else(|| sid.to_string())
    }

    /// The name a plugin knows `sid` by: the policy's, else the well-known
    /// English one (`NETWORK SERVICE`, whatever the system's language),
    /// else the system's account name, else `sid:S-…`. All but the account
    /// name resolve back to the same SID.
    fn principal_name(&self, sid: &Sid) -> String {
        if let Some(name) = self.principals.name_of(sid) {
            return name.to_string();
        }
        if let Some(known) = sid::well_known_by_sid(sid) {
            return known.name.to_string();
        }
        self.api
            .account_name(sid)
            .unwrap_or_else(|| format!("sid:{sid}"))
    }

    /// The full name of `path` and what it is, refusing a reparse point
    /// anywhere under the root but at the end (the caller decides about
    /// the end). The root is trusted and followed.
    fn resolve(&self, path: &Beneath) -> OpResult<(PathBuf, NodeInfo)> {
        let mut current = path.root().to_path_buf();
        let mut info = NodeInfo {
            reparse_point: false,
            ..self.api.metadata(&current)?
        };
        for component in path.relative().components() {
            if info.reparse_point {
                return Err(reparse_refused(&current));
            }
            if !info.is_dir {
                return Err(BackendError::new(
                    ErrorKind::NotFound,
                    format!("{} is not a folder", current.display()),
                ));
            }
            current.push(component);
            info = self.api.metadata(&current)?;
        }
        Ok((current, info))
    }

    /// [`Self::resolve`], refusing a reparse point at the end too.
    fn resolve_no_reparse(&self, path: &Beneath) -> OpResult<(PathBuf, NodeInfo)> {
        let (full, info) = self.resolve(path)?;
        if info.reparse_point {
            return Err(reparse_refused(&full));
        }
        Ok((full, info))
    }

    fn file_info(&self, path: &Path, info: &NodeInfo) -> FileInfo {
        let kind = if info.reparse_point {
            EntryKind::Symlink
        } else if info.is_dir {
            EntryKind::Directory
        } else {
            EntryKind::File
        };
        // A reparse point's security would be read through it.
        let owner = if info.reparse_point {
            None
        } else {
            self.api.read_security(path).ok().and_then(|sd| sd.owner)
        };
        FileInfo {
            path: path.display().to_string(),
            kind,
            size: info.size,
            modified_ms: info.modified_ms,
            owner: owner.map(|sid| self.system_name(&sid)).unwrap_or_default(),
        }
    }

    /// The entries of a list as [`AccessEntry`] values.
    fn access_entries(&self, dacl: Option<&Dacl>) -> Vec<AccessEntry> {
        let Some(dacl) = dacl else {
            return vec![AccessEntry {
                principal: self.principal_name(&Sid::everyone()),
                right: Some(AccessRight::FullControl),
                raw: "(no access list: a NULL DACL gives everyone full control)".to_string(),
            }];
        };
        let modelled = dacl.aces.iter().map(|ace| AccessEntry {
            principal: self.principal_name(&ace.sid),
            right: (ace.kind == AceKind::Allow && ace.applies_here())
                .then(|| acl::strongest_right(ace.mask))
                .flatten(),
            raw: acl::render_ace(ace, &self.system_name(&ace.sid)),
        });
        let unmodelled = dacl.unmodeled_types.iter().map(|ace_type| AccessEntry {
            principal: String::new(),
            right: None,
            raw: format!("(an entry of type {ace_type}, which medic does not model)"),
        });
        modelled.chain(unmodelled).collect()
    }
}

/// The refusal of a reparse point where a file or folder was expected.
fn reparse_refused(path: &Path) -> BackendError {
    BackendError::new(
        ErrorKind::Denied,
        format!(
            "{} is a reparse point (a symbolic link, junction or mount point); medic does not follow them under a granted root",
            path.display()
        ),
    )
}

/// Why a file with other hard links is left alone.
fn hard_links_reason(links: u32) -> String {
    format!(
        "it has {links} hard links, so it may also live outside the granted root, and its access list is shared with them; medic neither reads nor changes it"
    )
}

fn hard_linked(path: &Path, links: u32) -> BackendError {
    BackendError::new(
        ErrorKind::Denied,
        format!("{}: {}", path.display(), hard_links_reason(links)),
    )
}

impl<A: AclApi> FileSystem for NtfsFileSystem<A> {
    fn stat(&self, path: &Beneath) -> OpResult<FileInfo> {
        let (full, info) = self.resolve(path)?;
        Ok(self.file_info(&full, &info))
    }

    fn list_dir(&self, path: &Beneath) -> OpResult<Vec<FileInfo>> {
        let (full, info) = self.resolve_no_reparse(path)?;
        if !info.is_dir {
            return Err(BackendError::new(
                ErrorKind::InvalidArgument,
                format!("{} is not a folder", full.display()),
            ));
        }
        let mut out: Vec<FileInfo> = self
            .api
            .list(&full)?
            .iter()
            .map(|entry| self.file_info(&full.join(&entry.name), &entry.info))
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn read_access(&self, path: &Beneath) -> OpResult<Vec<AccessEntry>> {
        let (full, _) = self.resolve_no_reparse(path)?;
        let sd = self.api.read_security(&full)?;
        Ok(self.access_entries(sd.dacl.as_ref()))
    }

    fn read_file(&self, path: &Beneath, max_bytes: u32) -> OpResult<Vec<u8>> {
        let (full, info) = self.resolve_no_reparse(path)?;
        if info.is_dir {
            return Err(BackendError::new(
                ErrorKind::InvalidArgument,
                format!("{} is not a regular file", full.display()),
            ));
        }
        match self.api.hard_links(&full)? {
            links if links > 1 => Err(hard_linked(&full, links)),
            _ => self.api.read_contents(&full, max_bytes),
        }
    }

    fn ensure_access(
        &self,
        path: &Beneath,
        principal: &str,
        right: AccessRight,
        recursive: bool,
        apply: bool,
        deadline: Option<std::time::Instant>,
    ) -> OpResult<AccessReport> {
        self.ensure(path, principal, right, recursive, apply, deadline)
    }
}

// The fake tree is written with Unix-style absolute paths (`/srv/wsus`),
// which are not absolute on Windows; the decisions it tests are the same
// on every platform, and Windows' own paths are covered by the system
// tests (tests/windows).
#[cfg(all(test, unix))]
mod tests {
    use super::acl::mask::*;
    use super::fake::FakeAcl;
    use super::*;

    const TREE: AceFlags = AceFlags::TREE;

    fn ns() -> Sid {
        Sid::known("S-1-5-20")
    }

    fn beneath(relative: &str) -> Beneath {
        Beneath::new("/srv/wsus", relative).unwrap()
    }

    fn fake() -> FakeAcl {
        let fake = FakeAcl::default();
        let admins = Sid::known("S-1-5-32-544");
        let wsus_admins = Sid::parse("S-1-5-21-1-2-3-1104").unwrap();
        fake.dir(
            "/srv/wsus",
            Dacl::new(
                false,
                vec![
                    Ace::allow(admins.clone(), FULL_CONTROL, TREE),
                    Ace::allow(wsus_admins, MODIFY, TREE),
                    Ace::allow(ns(), READ, AceFlags::NONE),
                    Ace::deny(Sid::known("S-1-5-19"), WRITE_ONLY, TREE),
                ],
            ),
        );
        fake.file_with("/srv/wsus/a.txt", b"hello".to_vec(), 1);
        fake.file_with("/srv/wsus/linked.txt", b"x".to_vec(), 2);
        fake.dir("/srv/wsus/sub", Dacl::default());
        fake.file("/srv/wsus/sub/b.txt", Dacl::default());
        fake.reparse("/srv/wsus/junction", true);
        fake.file("/srv/wsus/junction/c.txt", Dacl::default());
        fake.set_owner("/srv/wsus/a.txt", admins);
        fake.name_account("S-1-5-21-1-2-3-1104", "CONTOSO\\WSUS Admins");
        fake
    }

    fn ntfs(fake: FakeAcl) -> NtfsFileSystem<FakeAcl> {
        let mut map = SidMap::default();
        map.insert("WSUS Admins", "sid:S-1-5-21-1-2-3-1104")
            .unwrap();
        NtfsFileSystem::new(fake, map)
    }

    #[test]
    fn read_access_names_entries_by_policy_well_known_and_system_names() {
        let fs = ntfs(fake());
        let entries = fs.read_access(&beneath("")).unwrap();
        let shown: Vec<(&str, Option<AccessRight>, &str)> = entries
            .iter()
            .map(|e| (e.principal.as_str(), e.right, e.raw.as_str()))
            .collect();
        assert_eq!(
            shown,
            [
                (
                    "Administrators",
                    Some(AccessRight::FullControl),
                    "BUILTIN\\Administrators:(OI)(CI)(F)"
                ),
                (
                    "WSUS Admins",
                    Some(AccessRight::Modify),
                    "CONTOSO\\WSUS Admins:(OI)(CI)(M)"
                ),
                (
                    "NETWORK SERVICE",
                    Some(AccessRight::Read),
                    "NT AUTHORITY\\NETWORK SERVICE:(RX)"
                ),
                (
                    "LOCAL SERVICE",
                    None,
                    "NT AUTHORITY\\LOCAL SERVICE:(OI)(CI)(DENY)(W)"
                ),
            ]
        );
        // Inherited entries show (I); an unnamed SID shows as itself.
        let file = fs.read_access(&beneath("sub/b.txt")).unwrap();
        assert!(
            file[0].raw.starts_with("BUILTIN\\Administrators:(I)(F)"),
            "{file:?}"
        );
        let fake = fake();
        fake.dir(
            "/srv/wsus/other",
            Dacl::new(
                true,
                vec![Ace::allow(
                    Sid::parse("S-1-5-21-7-7-7-1000").unwrap(),
                    READ,
                    TREE,
                )],
            ),
        );
        let fs = ntfs(fake);
        let other = fs.read_access(&beneath("other")).unwrap();
        assert_eq!(other[0].principal, "sid:S-1-5-21-7-7-7-1000");
        assert_eq!(other[0].raw, "S-1-5-21-7-7-7-1000:(OI)(CI)(RX)");
    }

    #[test]
    fn a_null_dacl_and_unmodelled_entries_are_shown_for_what_they_are() {
        let fake = fake();
        fake.set_dacl("/srv/wsus/a.txt", None);
        let mut odd = Dacl::new(true, vec![Ace::allow(ns(), READ, AceFlags::NONE)]);
        odd.unmodeled_types.push(5);
        fake.set_dacl("/srv/wsus/sub", Some(odd));
        let fs = ntfs(fake);
        let null = fs.read_access(&beneath("a.txt")).unwrap();
        assert_eq!(null.len(), 1);
        assert_eq!(null[0].principal, "Everyone");
        assert_eq!(null[0].right, Some(AccessRight::FullControl));
        assert!(null[0].raw.contains("NULL DACL"));
        let odd = fs.read_access(&beneath("sub")).unwrap();
        assert_eq!(odd.len(), 2);
        assert!(odd[1].raw.contains("type 5"), "{odd:?}");
    }

    #[test]
    fn stat_list_and_read_refuse_reparse_points_under_the_root() {
        let fs = ntfs(fake());
        let info = fs.stat(&beneath("a.txt")).unwrap();
        assert_eq!(info.kind, EntryKind::File);
        assert_eq!(info.size, 5);
        assert_eq!(info.owner, "BUILTIN\\Administrators");
        assert_eq!(
            fs.stat(&beneath("junction")).unwrap().kind,
            EntryKind::Symlink
        );
        assert_eq!(fs.stat(&beneath("")).unwrap().kind, EntryKind::Directory);

        let listed = fs.list_dir(&beneath("")).unwrap();
        let names: Vec<(&str, EntryKind)> =
            listed.iter().map(|i| (i.path.as_str(), i.kind)).collect();
        assert_eq!(
            names,
            [
                ("/srv/wsus/a.txt", EntryKind::File),
                ("/srv/wsus/junction", EntryKind::Symlink),
                ("/srv/wsus/linked.txt", EntryKind::File),
                ("/srv/wsus/sub", EntryKind::Directory),
            ]
        );
        assert_eq!(
            listed[1].owner, "",
            "a reparse point's owner is not read through it"
        );

        assert_eq!(fs.read_file(&beneath("a.txt"), 3).unwrap(), b"hel");
        for refused in [
            fs.read_file(&beneath("junction/c.txt"), 10).unwrap_err(),
            fs.stat(&beneath("junction/c.txt")).unwrap_err(),
            fs.list_dir(&beneath("junction")).unwrap_err(),
            fs.read_access(&beneath("junction")).unwrap_err(),
        ] {
            assert_eq!(refused.kind, ErrorKind::Denied);
            assert!(refused.message.contains("reparse point"), "{refused}");
        }
        let linked = fs.read_file(&beneath("linked.txt"), 10).unwrap_err();
        assert_eq!(linked.kind, ErrorKind::Denied);
        assert!(linked.message.contains("2 hard links"), "{linked}");
        assert_eq!(
            fs.read_file(&beneath("sub"), 10).unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            fs.list_dir(&beneath("a.txt")).unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            fs.stat(&beneath("missing")).unwrap_err().kind,
            ErrorKind::NotFound
        );
        assert_eq!(
            fs.stat(&beneath("a.txt/below")).unwrap_err().kind,
            ErrorKind::NotFound
        );
    }

    #[test]
    fn a_junction_as_the_granted_root_is_followed() {
        let fake = fake();
        fake.reparse("/srv/wsus", true);
        let fs = ntfs(fake);
        assert_eq!(fs.list_dir(&beneath("")).unwrap().len(), 4);
    }
}
