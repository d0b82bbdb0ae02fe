//! The local file system. On Linux every call resolves its path beneath
//! the granted root by file descriptor ([`crate::beneath`]) and reads and
//! writes POSIX access lists through that descriptor, so a local user who
//! can write inside the root cannot redirect a call outside it by swapping
//! in a symbolic link, whatever the timing. A recursive grant also gives
//! every folder of the tree a default entry for the principal, so that
//! files and folders created there later inherit the right, and a folder
//! without one counts as needing repair. Elsewhere (until the Windows
//! backend resolves handles beneath the root) paths are checked for links
//! and used by name, and access lists are unsupported.

use crate::fs::{AccessEntry, AccessReport, AccessRight, Beneath, EntryKind, FileInfo, FileSystem};
use crate::{BackendError, ErrorKind, OpResult, PrincipalMap, io_error};
use std::path::Path;

/// Files on the machine the agent runs on.
#[derive(Debug, Clone, Default)]
pub struct LocalFileSystem {
    principals: PrincipalMap,
}

impl LocalFileSystem {
    pub fn new(principals: PrincipalMap) -> Self {
        Self { principals }
    }
}

impl FileSystem for LocalFileSystem {
    fn stat(&self, path: &Beneath) -> OpResult<FileInfo> {
        imp::stat(path)
    }

    fn list_dir(&self, path: &Beneath) -> OpResult<Vec<FileInfo>> {
        imp::list_dir(path)
    }

    fn read_file(&self, path: &Beneath, max_bytes: u32) -> OpResult<Vec<u8>> {
        imp::read_file(path, max_bytes)
    }

    fn read_access(&self, path: &Beneath) -> OpResult<Vec<AccessEntry>> {
        imp::read_access(&self.principals, path)
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
        imp::ensure_access(
            &self.principals,
            path,
            principal,
            right,
            recursive,
            apply,
            deadline,
        )
    }
}

/// The refusal of a file that has other hard links: its other names may
/// lie outside the granted root, so reading or changing it through this
/// one would reach beyond the grant.
#[cfg(target_os = "linux")]
fn hard_linked(path: &Path, links: u64) -> BackendError {
    BackendError::new(
        ErrorKind::Denied,
        format!(
            "{} has {links} hard links, so it may also live outside the granted root; medic neither reads nor changes it",
            path.display()
        ),
    )
}

/// The refusal of a symbolic link where a file or folder was expected.
fn symlink_refused(path: &Path) -> BackendError {
    BackendError::new(
        ErrorKind::Denied,
        format!(
            "{} is a symbolic link; medic does not follow links under a granted root",
            path.display()
        ),
    )
}

/// Files through descriptors opened beneath the granted root.
#[cfg(target_os = "linux")]
mod imp {
    use super::*;
    use crate::beneath;
    use crate::fs::{AccessChange, MAX_LISTED_CHANGES, SkippedPath};
    use crate::posix_acl::{self, TAG_GROUP_OBJ, TAG_MASK, TAG_OTHER, TAG_USER_OBJ};
    use crate::principals::Names;
    use crate::{BackendError, Principal};
    use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
    use rustix::fs::{FileType, Stat};
    use std::ffi::{CStr, CString};
    use std::ops::ControlFlow;
    use std::os::unix::ffi::OsStrExt;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, Condvar, Mutex};

    /// Open `path` beneath its root: the link itself when it is one.
    fn open(path: &Beneath) -> OpResult<(OwnedFd, Stat)> {
        let root = beneath::open_root(path.root()).map_err(|e| io_error(path.root(), &e))?;
        let fd = if path.relative().as_os_str().is_empty() {
            root
        } else {
            beneath::open_beneath(root.as_fd(), path.relative()).map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    symlink_refused(&path.full())
                } else {
                    io_error(&path.full(), &e)
                }
            })?
        };
        let stat = beneath::stat(fd.as_fd()).map_err(|e| io_error(&path.full(), &e))?;
        Ok((fd, stat))
    }

    // The field types of `stat` differ between architectures.
    #[allow(clippy::useless_conversion)]
    fn file_info(path: &Path, stat: &Stat, names: &Names) -> FileInfo {
        let kind = match beneath::file_type(stat) {
            FileType::Symlink => EntryKind::Symlink,
            FileType::Directory => EntryKind::Directory,
            FileType::RegularFile => EntryKind::File,
            _ => EntryKind::Other,
        };
        let modified_ms = u64::try_from(stat.st_mtime).unwrap_or(0) * 1000
            + u64::try_from(stat.st_mtime_nsec).unwrap_or(0) / 1_000_000;
        FileInfo {
            path: path.display().to_string(),
            kind,
            size: u64::try_from(stat.st_size).unwrap_or(0),
            modified_ms,
            owner: names.display(Principal::User(stat.st_uid)),
        }
    }

    fn is_dir(stat: &Stat) -> bool {
        beneath::file_type(stat) == FileType::Directory
    }

    /// The hard links that make a file suspect: a folder always has more
    /// than one name (its `.` entries); a file should have one.
    #[allow(clippy::useless_conversion)]
    fn extra_links(stat: &Stat) -> Option<u64> {
        let links = u64::from(stat.st_nlink);
        (!is_dir(stat) && links > 1).then_some(links)
    }

    fn child(path: &Path, name: &CStr) -> PathBuf {
        path.join(std::ffi::OsStr::from_bytes(name.to_bytes()))
    }

    /// Where a walk found an inode, its path spelled out only when a
    /// report or an error needs it: a path, or an entry of a folder.
    #[derive(Clone, Copy)]
    enum Spot<'a> {
        Path(&'a Path),
        Entry(&'a Path, &'a CStr),
    }

    impl<'a> Spot<'a> {
        fn path(self) -> std::borrow::Cow<'a, Path> {
            match self {
                Self::Path(path) => std::borrow::Cow::Borrowed(path),
                Self::Entry(folder, name) => std::borrow::Cow::Owned(child(folder, name)),
            }
        }
    }

    /// Refuse what `stat` describes unless it is of kind `want` (`what`
    /// names it for the message); a link is refused as a link.
    fn expect_kind(full: &Path, stat: &Stat, want: FileType, what: &str) -> OpResult<()> {
        match beneath::file_type(stat) {
            kind if kind == want => Ok(()),
            FileType::Symlink => Err(symlink_refused(full)),
            _ => Err(BackendError::new(
                ErrorKind::InvalidArgument,
                format!("{} is not {what}", full.display()),
            )),
        }
    }

    pub fn stat(path: &Beneath) -> OpResult<FileInfo> {
        let (_, stat) = open(path)?;
        Ok(file_info(&path.full(), &stat, &Names::default()))
    }

    pub fn list_dir(path: &Beneath) -> OpResult<Vec<FileInfo>> {
        let full = path.full();
        let (fd, stat) = open(path)?;
        expect_kind(&full, &stat, FileType::Directory, "a folder")?;
        let mut out = Vec::new();
        // Owners named once each for this listing.
        let names = Names::default();
        for (name, _) in beneath::entries(fd.as_fd()).map_err(|e| io_error(&full, &e))? {
            match beneath::stat_entry(fd.as_fd(), &name) {
                Ok(stat) => out.push(file_info(&child(&full, &name), &stat, &names)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(&child(&full, &name), &e)),
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    pub fn read_file(path: &Beneath, max_bytes: u32) -> OpResult<Vec<u8>> {
        use std::io::Read;
        let full = path.full();
        let (fd, stat) = open(path)?;
        expect_kind(&full, &stat, FileType::RegularFile, "a regular file")?;
        if let Some(links) = extra_links(&stat) {
            return Err(hard_linked(&full, links));
        }
        let file = beneath::open_contents(fd.as_fd()).map_err(|e| io_error(&full, &e))?;
        let mut buf = Vec::new();
        file.take(u64::from(max_bytes))
            .read_to_end(&mut buf)
            .map_err(|e| io_error(&full, &e))?;
        Ok(buf)
    }

    fn right_of(perm: u16) -> Option<AccessRight> {
        match perm & 7 {
            7 => Some(AccessRight::FullControl),
            6 => Some(AccessRight::Modify),
            p if p & posix_acl::READ != 0 => Some(AccessRight::Read),
            _ => None,
        }
    }

    /// The access list of what `fd` names; a link's is its mode's (links
    /// have no access list, and are never followed).
    fn read_acl(fd: BorrowedFd<'_>, stat: &Stat) -> std::io::Result<posix_acl::Acl> {
        if beneath::file_type(stat) == FileType::Symlink {
            Ok(posix_acl::Acl::from_mode(stat.st_mode))
        } else {
            posix_acl::read_fd(fd, stat.st_mode)
        }
    }

    pub fn read_access(names: &PrincipalMap, path: &Beneath) -> OpResult<Vec<AccessEntry>> {
        let (fd, stat) = open(path)?;
        let acl = read_acl(fd.as_fd(), &stat).map_err(|e| io_error(&path.full(), &e))?;
        let display = |p: Principal| p.display();
        Ok(acl
            .entries
            .iter()
            .map(|entry| {
                let principal = match entry.tag {
                    TAG_USER_OBJ => names.name_of(Principal::User(stat.st_uid)),
                    TAG_GROUP_OBJ => names.name_of(Principal::Group(stat.st_gid)),
                    TAG_MASK => "mask".to_string(),
                    TAG_OTHER => "other".to_string(),
                    posix_acl::TAG_USER => names.name_of(Principal::User(entry.id)),
                    _ => names.name_of(Principal::Group(entry.id)),
                };
                AccessEntry {
                    principal,
                    right: right_of(entry.perm),
                    raw: posix_acl::entry_text(entry, display),
                }
            })
            .collect())
    }

    /// What one `ensure_access` call found so far, shared by its workers.
    struct Tally {
        checked: AtomicU64,
        /// Changes given a place in the list (it may pass the limit).
        listed: AtomicUsize,
        changed: Mutex<Vec<AccessChange>>,
        unlisted: AtomicU64,
        skipped: Mutex<Vec<SkippedPath>>,
        unlisted_skips: AtomicU64,
    }

    /// Entries of one folder checked between two looks at the deadline.
    const DEADLINE_CHECK_EVERY: u32 = 64;

    /// Skipped paths a report lists; more are counted.
    const MAX_LISTED_SKIPS: usize = 1_000;

    /// The longest path a walk enters: deeper folders are skipped and
    /// reported, so that a tree built to be deep cannot make the agent
    /// hold paths of unbounded length.
    const MAX_PATH_BYTES: usize = 4096;

    /// One access repair: who needs what, and whether to apply it.
    struct Repair {
        principal: Principal,
        is_read: bool,
        /// A recursive grant: folders also get a default entry, so that
        /// what is created in them later inherits the right.
        inherit: bool,
        apply: bool,
        deadline: Option<std::time::Instant>,
        tally: Tally,
        /// Principals named once each for this walk.
        names: Names,
    }

    impl Repair {
        /// Check (and repair) the inode `fd` names, through `fd`: its
        /// access ACL, and on a folder of a recursive grant its default
        /// ACL too. One change is reported per path; a default entry
        /// added shows as `; default:user:NAME:rwx` in `after`. Whether
        /// the path needed a change.
        fn visit(
            &self,
            fd: BorrowedFd<'_>,
            stat: &Stat,
            spot: Spot<'_>,
            counts: &mut Counts<'_>,
        ) -> OpResult<bool> {
            counts.checked += 1;
            let needed = posix_acl::required_perm(self.is_read, is_dir(stat), stat.st_mode);
            let mut acl =
                posix_acl::read_fd(fd, stat.st_mode).map_err(|e| io_error(&spot.path(), &e))?;
            let (owner, group) = (stat.st_uid, stat.st_gid);
            let (before, effective) = acl.effective(self.principal, owner, group);
            let access_missing = effective & needed != needed;
            if access_missing {
                acl.grant(self.principal, owner, group, needed);
            }
            let (after, _) = acl.effective(self.principal, owner, group);
            let default = if self.inherit && is_dir(stat) {
                self.default_change(fd, &acl, needed, spot)?
            } else {
                None
            };
            if !access_missing && default.is_none() {
                return Ok(false);
            }
            if self.apply {
                if access_missing {
                    posix_acl::write_fd(fd, &acl).map_err(|e| io_error(&spot.path(), &e))?;
                }
                if let Some(default) = &default {
                    posix_acl::write_default_fd(fd, &default.acl)
                        .map_err(|e| io_error(&spot.path(), &e))?;
                }
            }
            // Past the listed ones, a change is counted, not described
            // (and the shared count of listed ones only read).
            let listed = self.tally.listed.load(Ordering::Relaxed) < MAX_LISTED_CHANGES
                && self.tally.listed.fetch_add(1, Ordering::Relaxed) < MAX_LISTED_CHANGES;
            if !listed {
                counts.unlisted += 1;
                return Ok(true);
            }
            let display = |p: Principal| self.names.display(p);
            let mut before = posix_acl::entry_text(&before, display);
            let mut after = posix_acl::entry_text(&after, display);
            if let Some(default) = &default {
                before.push_str(&format!(
                    "; default:{}",
                    posix_acl::entry_text(&default.before, display)
                ));
                after.push_str(&format!(
                    "; default:{}",
                    posix_acl::entry_text(&default.after, display)
                ));
            }
            lock(&self.tally.changed).push(AccessChange {
                path: spot.path().display().to_string(),
                before,
                after,
            });
            Ok(true)
        }

        /// The default ACL the folder `fd` names must get so that what is
        /// created in it later gives the principal `needed` (`r-x` for
        /// read, `rwx` otherwise; the creating call's mode and the mask
        /// narrow it on files); `None` when it already does. A folder
        /// without a default ACL gets the base entries `setfacl -d -m`
        /// would give it, from `access`, its access ACL as it will be.
        fn default_change(
            &self,
            fd: BorrowedFd<'_>,
            access: &posix_acl::Acl,
            needed: u16,
            spot: Spot<'_>,
        ) -> OpResult<Option<DefaultChange>> {
            let current = posix_acl::read_default_fd(fd).map_err(|e| io_error(&spot.path(), &e))?;
            let mut default = current.unwrap_or_else(|| posix_acl::Acl::default_base(access));
            let (before, effective) = default.named_entry(self.principal);
            if effective & needed == needed {
                return Ok(None);
            }
            default.grant_named(self.principal, needed);
            let (after, _) = default.named_entry(self.principal);
            Ok(Some(DefaultChange {
                acl: default,
                before,
                after,
            }))
        }

        fn skip(&self, path: &Path, reason: String) {
            let mut skipped = lock(&self.tally.skipped);
            if skipped.len() < MAX_LISTED_SKIPS {
                skipped.push(SkippedPath {
                    path: path.display().to_string(),
                    reason,
                });
            } else {
                self.tally.unlisted_skips.fetch_add(1, Ordering::Relaxed);
            }
        }

        /// Whether the run's deadline has come.
        fn out_of_time(&self) -> bool {
            self.deadline
                .is_some_and(|d| std::time::Instant::now() >= d)
        }

        /// Visit every entry of the open folder `dir` except links; returns
        /// its subfolders, to be opened and visited in turn.
        fn scan(
            &self,
            dir: &Arc<OwnedFd>,
            path: &Path,
            counts: &mut Counts<'_>,
        ) -> OpResult<Vec<Folder>> {
            let mut folders = Vec::new();
            // After an entry that needed a change, the next is opened
            // straight away: in a broken folder most do.
            let mut changing = false;
            let mut failed = None;
            let mut seen = 0u32;
            let listed = beneath::for_each_entry(dir.as_fd(), |name, listed| {
                // Entries are checked as the listing is read, so a folder
                // someone keeps adding to could keep it going: the
                // deadline is checked within a folder too.
                seen = seen.wrapping_add(1);
                if seen.is_multiple_of(DEADLINE_CHECK_EVERY) && self.out_of_time() {
                    return ControlFlow::Break(());
                }
                let entry = Entry { name, listed };
                match self.scan_entry(dir, path, entry, &mut changing, &mut folders, counts) {
                    Ok(counted) => {
                        counts.checked += u64::from(counted);
                        ControlFlow::Continue(())
                    }
                    Err(e) => {
                        failed = Some(e);
                        ControlFlow::Break(())
                    }
                }
            });
            match (failed, listed) {
                (Some(e), _) => Err(e),
                (None, Err(e)) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(io_error(path, &e))
                }
                // A folder removed meanwhile ends its listing.
                (None, _) => Ok(folders),
            }
        }

        /// Check the entry `entry` of the folder `dir` (at `path`): a
        /// folder is noted in `folders`, anything else but a link checked
        /// (and repaired). `changing` says whether the entry before needed
        /// a change, and is updated. Whether the entry was found healthy
        /// here, to be counted.
        fn scan_entry(
            &self,
            dir: &Arc<OwnedFd>,
            path: &Path,
            entry: Entry<'_>,
            changing: &mut bool,
            folders: &mut Vec<Folder>,
            counts: &mut Counts<'_>,
        ) -> OpResult<bool> {
            let Entry { name, listed } = entry;
            // What the listing says spares most entries a `stat`: links
            // are left alone, folders are checked when entered, and a
            // file whose own ACL gives the principal what it needs,
            // whoever owns it, is healthy (even with other hard links:
            // nothing is changed, so nothing outside can be).
            // Whether a file has an ACL of its own, as read by name, kept
            // for the check by mode below when it has none.
            let mut has_own_acl = None;
            match listed {
                FileType::Symlink => return Ok(false),
                FileType::Directory => {
                    self.found_folder(dir, name, path, folders);
                    return Ok(false);
                }
                FileType::RegularFile if !*changing => {
                    let own = posix_acl::entry_grants_whoever_owns(
                        dir.as_fd(),
                        name,
                        self.principal,
                        self.is_read,
                    );
                    if let Ok(Some(true)) = own {
                        return Ok(true);
                    }
                    has_own_acl = Some(own.map(|grants| grants.is_some()));
                }
                // In a folder that needs changes, opened at once (the open
                // checks what it is).
                FileType::RegularFile if *changing => {
                    *changing = self.check_entry(dir.as_fd(), path, name, counts)?;
                    return Ok(false);
                }
                _ => {}
            }
            let stat = match beneath::stat_entry(dir.as_fd(), name) {
                Ok(stat) => stat,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(io_error(&child(path, name), &e)),
            };
            match beneath::file_type(&stat) {
                FileType::Symlink => {}
                FileType::Directory => self.found_folder(dir, name, path, folders),
                _ => {
                    if !*changing && extra_links(&stat).is_none() {
                        let acl = match has_own_acl {
                            // Read a moment ago, with no ACL of its own:
                            // the mode read now decides.
                            Some(Ok(false)) => Ok(posix_acl::Acl::from_mode(stat.st_mode)),
                            _ => posix_acl::read_entry(dir.as_fd(), name, stat.st_mode),
                        };
                        if self.gives_access(acl, &stat) {
                            return Ok(true);
                        }
                    }
                    *changing = self.check_entry(dir.as_fd(), path, name, counts)?;
                }
            }
            Ok(false)
        }

        /// Note the folder `name` of `dir` (at `path`) to be entered, or
        /// skip it when its path is too long.
        fn found_folder(
            &self,
            dir: &Arc<OwnedFd>,
            name: &CStr,
            path: &Path,
            folders: &mut Vec<Folder>,
        ) {
            let child_path = child(path, name);
            if child_path.as_os_str().len() > MAX_PATH_BYTES {
                self.skip(
                    &child_path,
                    format!("a folder deeper than {MAX_PATH_BYTES} bytes of path; not entered"),
                );
            } else {
                folders.push(Folder {
                    parent: Arc::clone(dir),
                    name: name.to_owned(),
                    path: child_path,
                });
            }
        }

        /// Whether `acl`, read for a file with the status `stat`, gives the
        /// principal what it needs there (`false` if it could not be read).
        fn gives_access(&self, acl: std::io::Result<posix_acl::Acl>, stat: &Stat) -> bool {
            let needed = posix_acl::required_perm(self.is_read, false, stat.st_mode);
            acl.is_ok_and(|acl| {
                let (_, effective) = acl.effective(self.principal, stat.st_uid, stat.st_gid);
                effective & needed == needed
            })
        }

        /// Open the entry `name` of `dir` without following it (`O_PATH`:
        /// whatever it is, nothing of it is opened) and visit what is there
        /// now, which may no longer be what the listing or a `stat` by name
        /// found (a folder put there meanwhile is visited, not entered).
        /// Whether the visit found a change.
        fn check_entry(
            &self,
            dir: BorrowedFd<'_>,
            folder: &Path,
            name: &CStr,
            counts: &mut Counts<'_>,
        ) -> OpResult<bool> {
            let spot = Spot::Entry(folder, name);
            let fd = match beneath::open_entry(dir, name) {
                Ok(fd) => fd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(io_error(&spot.path(), &e)),
            };
            let stat = beneath::stat(fd.as_fd()).map_err(|e| io_error(&spot.path(), &e))?;
            match beneath::file_type(&stat) {
                FileType::Symlink => Ok(false),
                _ => self.visit_file(fd.as_fd(), &stat, spot, counts),
            }
        }

        /// Visit a file met in a walk: one with other hard links is
        /// never changed; it counts as checked when it already gives the
        /// access (as the listing's check counts it), and is skipped and
        /// reported otherwise.
        fn visit_file(
            &self,
            fd: BorrowedFd<'_>,
            stat: &Stat,
            spot: Spot<'_>,
            counts: &mut Counts<'_>,
        ) -> OpResult<bool> {
            match extra_links(stat) {
                Some(links) => {
                    if self.gives_access(posix_acl::read_fd(fd, stat.st_mode), stat) {
                        counts.checked += 1;
                    } else {
                        let path = spot.path();
                        self.skip(&path, hard_linked(&path, links).message);
                    }
                    Ok(false)
                }
                None => self.visit(fd, stat, spot, counts),
            }
        }

        /// Open a folder found by [`Repair::scan`], visit it and scan it.
        /// It is opened again by name beneath its parent's descriptor: if
        /// it was swapped meanwhile, what is there now is what is checked,
        /// and a link is still not followed.
        fn enter(&self, folder: &Folder) -> OpResult<Vec<Folder>> {
            let fd = match beneath::open_entry(folder.parent.as_fd(), &folder.name) {
                Ok(fd) => fd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(io_error(&folder.path, &e)),
            };
            let stat = beneath::stat(fd.as_fd()).map_err(|e| io_error(&folder.path, &e))?;
            match beneath::file_type(&stat) {
                FileType::Directory => {
                    let counts = &mut Counts::new(&self.tally);
                    self.visit(fd.as_fd(), &stat, Spot::Path(&folder.path), counts)?;
                    self.scan(&Arc::new(fd), &folder.path, counts)
                }
                FileType::Symlink => Ok(Vec::new()),
                _ => {
                    let counts = &mut Counts::new(&self.tally);
                    self.visit_file(fd.as_fd(), &stat, Spot::Path(&folder.path), counts)?;
                    Ok(Vec::new())
                }
            }
        }
    }

    /// A folder's default ACL as a grant leaves it, and the principal's
    /// named entry in it before and after.
    struct DefaultChange {
        acl: posix_acl::Acl,
        before: posix_acl::Entry,
        after: posix_acl::Entry,
    }

    /// An entry of a folder being scanned: its name, and the kind of file
    /// its listing says it is (a hint from a moment ago).
    #[derive(Clone, Copy)]
    struct Entry<'a> {
        name: &'a CStr,
        listed: FileType,
    }

    /// What one folder's scan (or one visit) counted, added to the tally
    /// when dropped: the walk's threads adding to shared counters for
    /// every file would pass the counters' cache line back and forth.
    struct Counts<'a> {
        tally: &'a Tally,
        checked: u64,
        unlisted: u64,
    }

    impl<'a> Counts<'a> {
        fn new(tally: &'a Tally) -> Self {
            Self {
                tally,
                checked: 0,
                unlisted: 0,
            }
        }
    }

    impl Drop for Counts<'_> {
        fn drop(&mut self) {
            self.tally
                .checked
                .fetch_add(self.checked, Ordering::Relaxed);
            self.tally
                .unlisted
                .fetch_add(self.unlisted, Ordering::Relaxed);
        }
    }

    /// A folder to open, by its name in an open parent.
    struct Folder {
        parent: Arc<OwnedFd>,
        name: CString,
        path: PathBuf,
    }

    fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        mutex.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Give `principal` at least `right` on `path` (and, with `recursive`,
    /// everything under it, every folder also passing the right on through
    /// its default ACL), changing only what lacks it, always through a
    /// descriptor opened beneath the root. Symbolic links are neither
    /// followed nor changed; files with other hard links are skipped (in a
    /// walk; one whose ACL already gives the access, whoever owns it, is
    /// counted as checked) or refused (when named). A tree is walked by a
    /// few threads.
    pub fn ensure_access(
        names: &PrincipalMap,
        path: &Beneath,
        principal: &str,
        right: AccessRight,
        recursive: bool,
        apply: bool,
        deadline: Option<std::time::Instant>,
    ) -> OpResult<AccessReport> {
        let principal = names.resolve(principal)?;
        let full = path.full();
        let repair = Repair {
            principal,
            is_read: right == AccessRight::Read,
            inherit: recursive,
            apply,
            deadline,
            tally: Tally {
                checked: AtomicU64::new(0),
                listed: AtomicUsize::new(0),
                changed: Mutex::new(Vec::new()),
                unlisted: AtomicU64::new(0),
                skipped: Mutex::new(Vec::new()),
                unlisted_skips: AtomicU64::new(0),
            },
            names: Names::default(),
        };
        let (fd, stat) = open(path)?;
        match beneath::file_type(&stat) {
            FileType::Symlink => repair.skip(
                &full,
                "a symbolic link; medic does not follow links under a granted root".into(),
            ),
            FileType::Directory => {
                let counts = &mut Counts::new(&repair.tally);
                repair.visit(fd.as_fd(), &stat, Spot::Path(&full), counts)?;
                if recursive {
                    let first = repair.scan(&Arc::new(fd), &full, counts)?;
                    walk(&repair, first)?;
                }
            }
            _ => {
                if let Some(links) = extra_links(&stat) {
                    return Err(hard_linked(&full, links));
                }
                let counts = &mut Counts::new(&repair.tally);
                repair.visit(fd.as_fd(), &stat, Spot::Path(&full), counts)?;
            }
        }
        if repair.out_of_time() && recursive {
            repair.skip(
                &full,
                "the run's deadline came before the walk ended: the rest was not checked".into(),
            );
        }
        let Tally {
            checked,
            listed: _,
            changed,
            unlisted,
            skipped,
            unlisted_skips,
        } = repair.tally;
        let mut changed = changed.into_inner().unwrap_or_else(|p| p.into_inner());
        changed.sort_by(|a, b| a.path.cmp(&b.path));
        let mut skipped = skipped.into_inner().unwrap_or_else(|p| p.into_inner());
        skipped.sort_by(|a, b| a.path.cmp(&b.path));
        let unlisted_skips = unlisted_skips.into_inner();
        if unlisted_skips > 0 {
            skipped.push(SkippedPath {
                path: full.display().to_string(),
                reason: format!("and {unlisted_skips} more paths skipped"),
            });
        }
        if !skipped.is_empty() {
            // Debug formatting: the path is the plugin's to choose.
            tracing::warn!(paths = skipped.len(), root = ?full, "access repair skipped paths");
        }
        if !changed.is_empty() && !apply {
            tracing::debug!(paths = changed.len(), "access changes planned, not applied");
        }
        Ok(AccessReport {
            checked: checked.into_inner(),
            changed,
            unlisted_changes: unlisted.into_inner(),
            skipped,
            applied: apply,
        })
    }

    /// Folders waiting to be entered, and how many workers are in one.
    struct Pending {
        folders: Vec<Folder>,
        busy: usize,
        failed: Option<BackendError>,
    }

    /// Enter every folder of `first` and everything under them, from a few
    /// threads. Paths that vanish meanwhile are skipped; the first other
    /// error stops the walk and is returned. Folders are taken last in,
    /// first out, so the descriptors kept open stay near the tree's depth.
    fn walk(repair: &Repair, first: Vec<Folder>) -> OpResult<()> {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        let pending = Mutex::new(Pending {
            folders: first,
            busy: 0,
            failed: None,
        });
        let wake = Condvar::new();
        let work = || {
            loop {
                let folder = {
                    let mut state = lock(&pending);
                    loop {
                        if state.failed.is_some() || repair.out_of_time() {
                            return;
                        }
                        if let Some(folder) = state.folders.pop() {
                            state.busy += 1;
                            break folder;
                        }
                        if state.busy == 0 {
                            return;
                        }
                        state = wake.wait(state).unwrap_or_else(|p| p.into_inner());
                    }
                };
                let result = match repair.enter(&folder) {
                    Err(e) if e.kind == ErrorKind::NotFound => Ok(Vec::new()),
                    other => other,
                };
                drop(folder);
                let mut state = lock(&pending);
                state.busy -= 1;
                match result {
                    Ok(found) => state.folders.extend(found),
                    Err(e) => {
                        state.failed.get_or_insert(e);
                    }
                }
                wake.notify_all();
            }
        };
        std::thread::scope(|scope| {
            for _ in 1..workers {
                scope.spawn(work);
            }
            work();
        });
        match pending
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .failed
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

        fn ensure_access(
            root: &Path,
            principal: Principal,
            right: AccessRight,
            recursive: bool,
            apply: bool,
        ) -> OpResult<AccessReport> {
            let names = PrincipalMap::default();
            let beneath = Beneath::new(root, "").unwrap();
            super::ensure_access(
                &names,
                &beneath,
                &principal.display(),
                right,
                recursive,
                apply,
                None,
            )
        }

        fn read_access(names: &PrincipalMap, path: &Path) -> OpResult<Vec<AccessEntry>> {
            super::read_access(names, &Beneath::new(path, "").unwrap())
        }

        #[test]
        fn ensure_access_repairs_only_what_is_missing_and_dry_run_changes_nothing() {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("share");
            std::fs::create_dir_all(root.join("sub")).unwrap();
            std::fs::write(root.join("sub/a.txt"), b"a").unwrap();
            std::fs::write(root.join("b.txt"), b"b").unwrap();
            for p in ["", "sub"] {
                std::fs::set_permissions(root.join(p), std::fs::Permissions::from_mode(0o700))
                    .unwrap();
            }
            for p in ["sub/a.txt", "b.txt"] {
                std::fs::set_permissions(root.join(p), std::fs::Permissions::from_mode(0o600))
                    .unwrap();
            }
            let names = PrincipalMap::default();
            let nobody = Principal::User(65534);

            let plan = ensure_access(&root, nobody, AccessRight::Read, true, false).unwrap();
            assert_eq!(plan.checked, 4);
            assert_eq!(plan.changed.len(), 4);
            assert!(!plan.applied);
            let mode = std::fs::metadata(root.join("b.txt"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "dry run changed nothing");

            let done = ensure_access(&root, nobody, AccessRight::Read, true, true).unwrap();
            assert_eq!(done.changed.len(), 4);
            let dir_change = done
                .changed
                .iter()
                .find(|c| c.path.ends_with("sub"))
                .unwrap();
            assert!(dir_change.before.ends_with(":---"), "{dir_change:?}");
            assert!(dir_change.after.ends_with(":r-x"), "{dir_change:?}");
            let file_change = done
                .changed
                .iter()
                .find(|c| c.path.ends_with("b.txt"))
                .unwrap();
            assert!(file_change.after.ends_with(":r--"), "{file_change:?}");

            let entries = read_access(&names, &root.join("b.txt")).unwrap();
            assert!(
                entries.iter().any(|e| e.raw.ends_with(":r--")
                    && e.raw.starts_with("user:")
                    && e.raw != "user::r--"),
                "{entries:?}"
            );

            let again = ensure_access(&root, nobody, AccessRight::Read, true, true).unwrap();
            assert_eq!(again.checked, 4);
            assert!(
                again.changed.is_empty(),
                "second pass is a no-op: {again:?}"
            );
        }

        const NOBODY: Principal = Principal::User(65534);

        /// `nobody` as an entry names it, e.g. `user:nobody:r-x`.
        fn nobody(perm: &str) -> String {
            let name = NOBODY.display();
            format!("user:{}:{perm}", name.split_once(':').unwrap().1)
        }

        fn stat_of(path: &Path) -> (OwnedFd, Stat) {
            let fd = beneath::open_root(path).unwrap();
            let stat = beneath::stat(fd.as_fd()).unwrap();
            (fd, stat)
        }

        /// `nobody`'s effective permission on `path` by its access ACL.
        fn access_of(path: &Path) -> u16 {
            let (fd, stat) = stat_of(path);
            let acl = posix_acl::read_fd(fd.as_fd(), stat.st_mode).unwrap();
            acl.effective(NOBODY, stat.st_uid, stat.st_gid).1
        }

        /// `nobody`'s permission by the default ACL of the folder `path`.
        fn default_of(path: &Path) -> Option<u16> {
            let (fd, _) = stat_of(path);
            posix_acl::read_default_fd(fd.as_fd())
                .unwrap()
                .map(|acl| acl.named_entry(NOBODY).1)
        }

        /// `share/` and `share/sub/` (750) holding `sub/a.txt` (640).
        fn tree() -> (tempfile::TempDir, PathBuf) {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("share");
            std::fs::create_dir_all(root.join("sub")).unwrap();
            std::fs::write(root.join("sub/a.txt"), b"a").unwrap();
            for (p, mode) in [("", 0o750), ("sub", 0o750), ("sub/a.txt", 0o640)] {
                std::fs::set_permissions(root.join(p), std::fs::Permissions::from_mode(mode))
                    .unwrap();
            }
            (dir, root)
        }

        const RX: u16 = posix_acl::READ | posix_acl::EXECUTE;
        const RW: u16 = posix_acl::READ | posix_acl::WRITE;
        const RWX: u16 = RX | posix_acl::WRITE;

        #[test]
        fn a_recursive_grant_gives_folders_a_default_entry_that_new_files_inherit() {
            let (_dir, root) = tree();
            let done = ensure_access(&root, NOBODY, AccessRight::Read, true, true).unwrap();
            let after = |suffix: &str| {
                done.changed
                    .iter()
                    .find(|c| c.path.ends_with(suffix))
                    .unwrap()
                    .clone()
            };
            for folder in ["share", "share/sub"] {
                let change = after(folder);
                assert_eq!(
                    change.before,
                    format!("{}; default:{}", nobody("---"), nobody("---"))
                );
                assert_eq!(
                    change.after,
                    format!("{}; default:{}", nobody("r-x"), nobody("r-x"))
                );
            }
            assert_eq!(after("a.txt").after, nobody("r--"), "files get no default");
            assert_eq!(default_of(&root.join("sub")), Some(RX));

            // The base entries are the folder's own, as setfacl -d -m makes them.
            let (fd, _) = stat_of(&root.join("sub"));
            let default = posix_acl::read_default_fd(fd.as_fd()).unwrap().unwrap();
            let perm_of = |tag: u16| default.entries.iter().find(|e| e.tag == tag).unwrap().perm;
            assert_eq!(perm_of(TAG_USER_OBJ), RWX);
            assert_eq!(perm_of(TAG_GROUP_OBJ), RX);
            assert_eq!(perm_of(TAG_OTHER), 0);
            assert_eq!(perm_of(TAG_MASK), RX);

            // Created afterwards, as any program would: they inherit.
            std::fs::write(root.join("sub/new.txt"), b"new").unwrap();
            std::fs::write(root.join("top.txt"), b"top").unwrap();
            std::fs::create_dir(root.join("sub/newdir")).unwrap();
            std::fs::write(root.join("sub/newdir/deeper.txt"), b"").unwrap();
            for file in ["sub/new.txt", "top.txt", "sub/newdir/deeper.txt"] {
                assert_eq!(access_of(&root.join(file)), posix_acl::READ, "{file}");
            }
            assert_eq!(access_of(&root.join("sub/newdir")), RX);
            assert_eq!(default_of(&root.join("sub/newdir")), Some(RX));
            let again = ensure_access(&root, NOBODY, AccessRight::Read, true, true).unwrap();
            assert!(again.changed.is_empty(), "{again:?}");
        }

        #[test]
        fn a_modify_grant_passes_on_read_and_write() {
            let (_dir, root) = tree();
            ensure_access(&root, NOBODY, AccessRight::Modify, true, true).unwrap();
            assert_eq!(default_of(&root), Some(RWX));
            std::fs::write(root.join("sub/new.txt"), b"new").unwrap();
            std::fs::create_dir(root.join("sub/newdir")).unwrap();
            // A file created with mode 666 (as std and most programs do):
            // its mask, from that mode, leaves read and write.
            assert_eq!(access_of(&root.join("sub/new.txt")), RW);
            assert_eq!(access_of(&root.join("sub/newdir")), RWX);
        }

        #[test]
        fn a_folder_without_its_default_entry_needs_repair_and_dry_run_only_plans_it() {
            let (_dir, root) = tree();
            // Fresh tree, dry run: planned, nothing written.
            let plan = ensure_access(&root, NOBODY, AccessRight::Read, true, false).unwrap();
            assert_eq!(plan.changed.len(), 3);
            assert!(
                plan.changed
                    .iter()
                    .filter(|c| c.after.contains("; default:"))
                    .count()
                    == 2,
                "{plan:?}"
            );
            for path in ["", "sub", "sub/a.txt"] {
                let path = root.join(path);
                let raw = rustix::fs::lgetxattr(&path, "system.posix_acl_access", &mut [0u8; 64]);
                assert_eq!(raw, Err(rustix::io::Errno::NODATA), "{}", path.display());
            }
            assert_eq!(default_of(&root), None);
            assert_eq!(default_of(&root.join("sub")), None);

            // A grant on the folder alone gives access but no default entry.
            let single =
                ensure_access(&root.join("sub"), NOBODY, AccessRight::Read, false, true).unwrap();
            assert_eq!(single.changed[0].after, nobody("r-x"));
            assert_eq!(default_of(&root.join("sub")), None);

            // Access right everywhere but the default entries missing: a
            // healthy tree needs both, so the folders are still repaired.
            ensure_access(
                &root.join("sub/a.txt"),
                NOBODY,
                AccessRight::Read,
                false,
                true,
            )
            .unwrap();
            ensure_access(&root, NOBODY, AccessRight::Read, false, true).unwrap();
            let plan = ensure_access(&root, NOBODY, AccessRight::Read, true, false).unwrap();
            let paths: Vec<&str> = plan.changed.iter().map(|c| c.path.as_str()).collect();
            assert_eq!(paths.len(), 2, "{paths:?}");
            for change in &plan.changed {
                assert_eq!(
                    change.before,
                    format!("{}; default:{}", nobody("r-x"), nobody("---"))
                );
                assert_eq!(
                    change.after,
                    format!("{}; default:{}", nobody("r-x"), nobody("r-x"))
                );
            }
            assert_eq!(default_of(&root.join("sub")), None, "dry run wrote nothing");

            let done = ensure_access(&root, NOBODY, AccessRight::Read, true, true).unwrap();
            assert_eq!(done.changed.len(), 2);
            assert_eq!(default_of(&root), Some(RX));
            assert_eq!(default_of(&root.join("sub")), Some(RX));
            let again = ensure_access(&root, NOBODY, AccessRight::Read, true, true).unwrap();
            assert!(again.changed.is_empty(), "a healthy tree: {again:?}");
            assert_eq!(again.checked, 3);

            // A default entry lost later is found and put back alone.
            rustix::fs::removexattr(root.join("sub"), "system.posix_acl_default").unwrap();
            let repaired = ensure_access(&root, NOBODY, AccessRight::Read, true, true).unwrap();
            assert_eq!(repaired.changed.len(), 1, "{repaired:?}");
            assert!(repaired.changed[0].path.ends_with("share/sub"));
            assert_eq!(default_of(&root.join("sub")), Some(RX));
        }

        /// What a walk says of files it never `stat`s (those whose own ACL
        /// already gives the access, whoever owns them) and of those it
        /// must: a healthy file with another hard link counts as checked;
        /// a broken one is skipped, and neither it nor its other name
        /// changes; a file owned by the principal, with no entry of its
        /// own, is healthy by its owner bits.
        #[test]
        fn files_the_listing_shows_healthy_are_counted_and_the_rest_checked_by_status() {
            let (dir, root) = tree();
            let outside = dir.path().join("outside");
            std::fs::create_dir(&outside).unwrap();
            for name in ["healthy", "broken"] {
                std::fs::write(outside.join(name), name).unwrap();
                std::fs::set_permissions(
                    outside.join(name),
                    std::fs::Permissions::from_mode(0o600),
                )
                .unwrap();
                std::fs::hard_link(outside.join(name), root.join(name)).unwrap();
            }
            let mut acl = posix_acl::Acl::from_mode(0o600);
            acl.grant(NOBODY, 0, 0, posix_acl::READ);
            posix_acl::write(&outside.join("healthy"), &acl).unwrap();
            std::fs::write(root.join("own"), b"own").unwrap();
            std::fs::set_permissions(root.join("own"), std::fs::Permissions::from_mode(0o400))
                .unwrap();
            std::os::unix::fs::lchown(root.join("own"), Some(65534), None).unwrap();
            // Repair the tree but the two linked files, then look again.
            ensure_access(&root, NOBODY, AccessRight::Read, true, true).unwrap();
            let again = ensure_access(&root, NOBODY, AccessRight::Read, true, true).unwrap();
            assert!(again.changed.is_empty(), "{:?}", again.changed);
            assert_eq!(again.checked, 5, "share, sub, sub/a.txt, healthy, own");
            let skipped: Vec<_> = again.skipped.iter().map(|s| s.path.as_str()).collect();
            assert_eq!(skipped, [root.join("broken").display().to_string()]);
            assert_eq!(access_of(&outside.join("broken")), 0);
            assert!(access_of(&root.join("own")) & posix_acl::READ != 0);
        }

        #[test]
        fn a_grant_for_the_undefined_id_changes_no_one_else_s_entry() {
            let (_dir, root) = tree();
            let file = root.join("sub/a.txt");
            ensure_access(&file, NOBODY, AccessRight::Read, false, true).unwrap();
            assert_eq!(access_of(&file), posix_acl::READ);
            // uid 4294967295 is (uid_t)-1, which names no one.
            let asked = super::ensure_access(
                &PrincipalMap::default(),
                &Beneath::new(&file, "").unwrap(),
                "uid:4294967295",
                AccessRight::Modify,
                false,
                true,
                None,
            );
            assert!(
                asked.is_err(),
                "{asked:?}; a.txt now gives nobody {:o}",
                access_of(&file)
            );
            assert_eq!(
                access_of(&file),
                posix_acl::READ,
                "nobody's entry is left alone"
            );
        }

        /// A FIFO in the tree gets its access list like any file, but is
        /// never opened for reading: a writer waiting for a reader stays
        /// waiting through every walk.
        #[test]
        fn a_fifo_in_the_tree_is_never_opened_for_reading() {
            let (_dir, root) = tree();
            let fifo = root.join("sub/pipe");
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &fifo,
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o600),
                0,
            )
            .unwrap();
            let (opened_tx, opened) = std::sync::mpsc::channel();
            let writer = {
                let fifo = fifo.clone();
                std::thread::spawn(move || {
                    // Blocks until a reader opens the FIFO.
                    let file = std::fs::OpenOptions::new().write(true).open(&fifo);
                    let _ = opened_tx.send(());
                    file
                })
            };
            for _ in 0..20 {
                let report = ensure_access(&root, NOBODY, AccessRight::Read, true, true).unwrap();
                assert_eq!(report.checked, 4, "{report:?}");
            }
            assert_ne!(
                access_of(&fifo) & posix_acl::READ,
                0,
                "the FIFO got its grant"
            );
            assert!(
                opened.try_recv().is_err(),
                "a walk opened the FIFO for reading"
            );
            // Let the writer go.
            let reader = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&fifo)
                .unwrap();
            opened.recv().unwrap();
            writer.join().unwrap().unwrap();
            drop(reader);
        }

        /// A local user exchanges a file that needs the grant with a link
        /// out of the tree and with a second name of a file outside, while
        /// the tree is repaired again and again: the walk's quick read by
        /// name sends the file to a descriptor, and what the descriptor
        /// shows decides. Nothing outside changes.
        #[test]
        fn a_file_swapped_during_a_walk_never_changes_anything_outside() {
            let (dir, root) = tree();
            let (linked, named) = (dir.path().join("linked"), dir.path().join("named"));
            for outside in [&linked, &named] {
                std::fs::write(outside, b"secret").unwrap();
                std::fs::set_permissions(outside, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
            let sub = root.join("sub");
            std::os::unix::fs::symlink(&linked, sub.join("link")).unwrap();
            std::fs::hard_link(&named, sub.join("second")).unwrap();
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let swapper = {
                let (sub, stop) = (sub.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut swaps = 0u64;
                    let names = [c"link", c"second"];
                    let folder = beneath::open_root(&sub).unwrap();
                    while !stop.load(Ordering::Relaxed) {
                        let other = names[(swaps % 2) as usize];
                        rustix::fs::renameat_with(
                            folder.as_fd(),
                            c"a.txt",
                            folder.as_fd(),
                            other,
                            rustix::fs::RenameFlags::EXCHANGE,
                        )
                        .unwrap();
                        swaps += 1;
                    }
                    swaps
                })
            };
            let mut repaired = 0;
            for _ in 0..300 {
                // Take the grant away again wherever the file is now,
                // through a descriptor (the swapper races this too).
                let folder = beneath::open_root(&sub).unwrap();
                for name in [c"a.txt", c"link", c"second"] {
                    let Ok(fd) = beneath::open_entry(folder.as_fd(), name) else {
                        continue;
                    };
                    let stat = beneath::stat(fd.as_fd()).unwrap();
                    if beneath::file_type(&stat) == FileType::RegularFile && stat.st_nlink == 1 {
                        let bare = posix_acl::Acl::from_mode(stat.st_mode);
                        posix_acl::write_fd(fd.as_fd(), &bare).unwrap();
                    }
                }
                let report = ensure_access(&root, NOBODY, AccessRight::Read, true, true).unwrap();
                repaired += report
                    .changed
                    .iter()
                    .filter(|c| c.path.contains("sub/"))
                    .count();
            }
            stop.store(true, Ordering::Relaxed);
            let swaps = swapper.join().unwrap();
            assert!(swaps > 100, "the swapper raced the walks ({swaps} swaps)");
            assert!(repaired > 0, "no walk had a file to repair");
            for outside in [&linked, &named] {
                assert_eq!(access_of(outside), 0, "{outside:?} was given access");
                let meta = std::fs::metadata(outside).unwrap();
                assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{outside:?}");
            }
        }

        #[test]
        fn a_link_in_the_tree_is_not_followed_for_default_entries() {
            let (dir, root) = tree();
            let outside = dir.path().join("outside");
            std::fs::create_dir(&outside).unwrap();
            std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o700)).unwrap();
            std::os::unix::fs::symlink(&outside, root.join("sub/link")).unwrap();
            let done = ensure_access(&root, NOBODY, AccessRight::Modify, true, true).unwrap();
            assert_eq!(done.checked, 3, "the link is not checked: {done:?}");
            assert!(done.changed.iter().all(|c| !c.path.ends_with("link")));
            assert_eq!(default_of(&outside), None);
            assert_eq!(access_of(&outside), 0);
            let raw = rustix::fs::lgetxattr(&outside, "system.posix_acl_access", &mut [0u8; 64]);
            assert_eq!(raw, Err(rustix::io::Errno::NODATA));
            assert_eq!(default_of(&root.join("sub")), Some(RWX));
        }
    }
}

/// Files by name, refusing links, for systems without the Linux backend.
#[cfg(not(target_os = "linux"))]
mod imp {
    use super::*;
    use std::io::Read;

    /// Refuse `path` if any component under the root is a link. This is
    /// checked, then used: not safe against a local user racing it.
    fn resolve(path: &Beneath) -> OpResult<std::path::PathBuf> {
        let mut current = path.root().to_path_buf();
        for component in path.relative().components() {
            current.push(component);
            let meta = std::fs::symlink_metadata(&current).map_err(|e| io_error(&current, &e))?;
            if meta.file_type().is_symlink() {
                return Err(symlink_refused(&current));
            }
        }
        Ok(current)
    }

    fn file_info(path: &Path, meta: &std::fs::Metadata) -> FileInfo {
        let kind = if meta.is_symlink() {
            EntryKind::Symlink
        } else if meta.is_dir() {
            EntryKind::Directory
        } else if meta.is_file() {
            EntryKind::File
        } else {
            EntryKind::Other
        };
        let modified_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64);
        FileInfo {
            path: path.display().to_string(),
            kind,
            size: meta.len(),
            modified_ms,
            owner: String::new(),
        }
    }

    pub fn stat(path: &Beneath) -> OpResult<FileInfo> {
        let full = path.full();
        let meta = std::fs::symlink_metadata(&full).map_err(|e| io_error(&full, &e))?;
        Ok(file_info(&full, &meta))
    }

    pub fn list_dir(path: &Beneath) -> OpResult<Vec<FileInfo>> {
        let full = resolve(path)?;
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&full).map_err(|e| io_error(&full, &e))? {
            let entry = entry.map_err(|e| io_error(&full, &e))?;
            let child = entry.path();
            match std::fs::symlink_metadata(&child) {
                Ok(meta) => out.push(file_info(&child, &meta)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(&child, &e)),
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    pub fn read_file(path: &Beneath, max_bytes: u32) -> OpResult<Vec<u8>> {
        let full = resolve(path)?;
        let file = std::fs::File::open(&full).map_err(|e| io_error(&full, &e))?;
        let mut buf = Vec::new();
        file.take(u64::from(max_bytes))
            .read_to_end(&mut buf)
            .map_err(|e| io_error(&full, &e))?;
        Ok(buf)
    }

    pub fn read_access(_names: &PrincipalMap, _path: &Beneath) -> OpResult<Vec<AccessEntry>> {
        Err(unsupported())
    }

    pub fn ensure_access(
        _names: &PrincipalMap,
        _path: &Beneath,
        _principal: &str,
        _right: AccessRight,
        _recursive: bool,
        _apply: bool,
        _deadline: Option<std::time::Instant>,
    ) -> OpResult<AccessReport> {
        Err(unsupported())
    }

    fn unsupported() -> BackendError {
        BackendError::new(
            ErrorKind::Unsupported,
            "access lists are not supported by the local backend on this system",
        )
    }
}
