//! The local file system: metadata and contents through `std`, access lists
//! through the platform's native mechanism (POSIX ACLs on Linux).

use crate::fs::{AccessEntry, AccessReport, AccessRight, EntryKind, FileInfo, FileSystem};
#[cfg(not(target_os = "linux"))]
use crate::{BackendError, ErrorKind};
use crate::{OpResult, PrincipalMap, io_error};
use std::io::Read;
use std::path::Path;
use std::time::UNIX_EPOCH;

/// Files on the machine the agent runs on.
#[derive(Debug, Clone, Default)]
pub struct LocalFileSystem {
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    principals: PrincipalMap,
}

impl LocalFileSystem {
    pub fn new(principals: PrincipalMap) -> Self {
        Self { principals }
    }
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
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64);
    FileInfo {
        path: path.display().to_string(),
        kind,
        size: meta.len(),
        modified_ms,
        owner: owner_name(meta),
    }
}

#[cfg(unix)]
fn owner_name(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    crate::Principal::User(meta.uid()).display()
}

#[cfg(not(unix))]
fn owner_name(_meta: &std::fs::Metadata) -> String {
    String::new()
}

impl FileSystem for LocalFileSystem {
    fn stat(&self, path: &Path) -> OpResult<FileInfo> {
        let meta = std::fs::symlink_metadata(path).map_err(|e| io_error(path, &e))?;
        Ok(file_info(path, &meta))
    }

    fn list_dir(&self, path: &Path) -> OpResult<Vec<FileInfo>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(path).map_err(|e| io_error(path, &e))? {
            let entry = entry.map_err(|e| io_error(path, &e))?;
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

    fn read_file(&self, path: &Path, max_bytes: u32) -> OpResult<Vec<u8>> {
        let file = std::fs::File::open(path).map_err(|e| io_error(path, &e))?;
        let mut buf = Vec::new();
        file.take(u64::from(max_bytes))
            .read_to_end(&mut buf)
            .map_err(|e| io_error(path, &e))?;
        Ok(buf)
    }

    #[cfg(target_os = "linux")]
    fn read_access(&self, path: &Path) -> OpResult<Vec<AccessEntry>> {
        acl::read_access(&self.principals, path)
    }

    #[cfg(target_os = "linux")]
    fn ensure_access(
        &self,
        path: &Path,
        principal: &str,
        right: AccessRight,
        recursive: bool,
        apply: bool,
    ) -> OpResult<AccessReport> {
        let principal = self.principals.resolve(principal)?;
        acl::ensure_access(path, principal, right, recursive, apply)
    }

    #[cfg(not(target_os = "linux"))]
    fn read_access(&self, _path: &Path) -> OpResult<Vec<AccessEntry>> {
        Err(unsupported())
    }

    #[cfg(not(target_os = "linux"))]
    fn ensure_access(
        &self,
        _path: &Path,
        _principal: &str,
        _right: AccessRight,
        _recursive: bool,
        _apply: bool,
    ) -> OpResult<AccessReport> {
        Err(unsupported())
    }
}

#[cfg(not(target_os = "linux"))]
fn unsupported() -> BackendError {
    BackendError::new(
        ErrorKind::Unsupported,
        "access lists are not supported by the local backend on this system",
    )
}

#[cfg(target_os = "linux")]
mod acl {
    use super::*;
    use crate::fs::AccessChange;
    use crate::posix_acl::{self, TAG_GROUP_OBJ, TAG_MASK, TAG_OTHER, TAG_USER_OBJ};
    use crate::{BackendError, Principal};
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Condvar, Mutex};

    fn right_of(perm: u16) -> Option<AccessRight> {
        match perm & 7 {
            7 => Some(AccessRight::FullControl),
            6 => Some(AccessRight::Modify),
            p if p & posix_acl::READ != 0 => Some(AccessRight::Read),
            _ => None,
        }
    }

    pub fn read_access(names: &PrincipalMap, path: &Path) -> OpResult<Vec<AccessEntry>> {
        let meta = std::fs::symlink_metadata(path).map_err(|e| io_error(path, &e))?;
        let acl = posix_acl::read(path, meta.mode()).map_err(|e| io_error(path, &e))?;
        let display = |p: Principal| p.display();
        Ok(acl
            .entries
            .iter()
            .map(|entry| {
                let principal = match entry.tag {
                    TAG_USER_OBJ => names.name_of(Principal::User(meta.uid())),
                    TAG_GROUP_OBJ => names.name_of(Principal::Group(meta.gid())),
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

    /// Give `principal` at least `right` on `root` (and, with `recursive`,
    /// everything under it), changing only the paths that lack it.
    /// Symbolic links are neither followed nor changed. A tree is walked by
    /// a few threads at once: each path costs one `fstatat` and one
    /// `lgetxattr` (plus an `lsetxattr` where something is missing), and
    /// those scale with cores.
    pub fn ensure_access(
        root: &Path,
        principal: Principal,
        right: AccessRight,
        recursive: bool,
        apply: bool,
    ) -> OpResult<AccessReport> {
        let is_read = right == AccessRight::Read;
        let checked = AtomicU64::new(0);
        let changed = Mutex::new(Vec::new());
        let visit = |path: &Path, meta: &std::fs::Metadata| -> OpResult<()> {
            checked.fetch_add(1, Ordering::Relaxed);
            let needed = posix_acl::required_perm(is_read, meta);
            let mut acl = posix_acl::read(path, meta.mode()).map_err(|e| io_error(path, &e))?;
            let (before, effective) = acl.effective(principal, meta.uid(), meta.gid());
            if effective & needed == needed {
                return Ok(());
            }
            acl.grant(principal, meta.uid(), meta.gid(), needed);
            let (after, _) = acl.effective(principal, meta.uid(), meta.gid());
            if apply {
                posix_acl::write(path, &acl).map_err(|e| io_error(path, &e))?;
            }
            let display = |p: Principal| p.display();
            let change = AccessChange {
                path: path.display().to_string(),
                before: posix_acl::entry_text(&before, display),
                after: posix_acl::entry_text(&after, display),
            };
            changed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(change);
            Ok(())
        };
        let meta = std::fs::symlink_metadata(root).map_err(|e| io_error(root, &e))?;
        if !meta.is_symlink() {
            visit(root, &meta)?;
            if recursive && meta.is_dir() {
                walk(root, &visit)?;
            }
        }
        let mut changed = changed.into_inner().unwrap_or_else(|p| p.into_inner());
        changed.sort_by(|a, b| a.path.cmp(&b.path));
        if !changed.is_empty() && !apply {
            tracing::debug!(paths = changed.len(), "access changes planned, not applied");
        }
        Ok(AccessReport {
            checked: checked.into_inner(),
            changed,
            applied: apply,
        })
    }

    /// Folders waiting to be read, and how many workers are reading one.
    struct Pending {
        folders: Vec<PathBuf>,
        busy: usize,
        failed: Option<BackendError>,
    }

    /// Call `visit` on everything under `root` (not `root` itself), except
    /// symbolic links, from a few threads. Paths that vanish meanwhile are
    /// skipped; the first other error stops the walk and is returned.
    fn walk(
        root: &Path,
        visit: &(dyn Fn(&Path, &std::fs::Metadata) -> OpResult<()> + Sync),
    ) -> OpResult<()> {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        let pending = Mutex::new(Pending {
            folders: vec![root.to_path_buf()],
            busy: 0,
            failed: None,
        });
        let wake = Condvar::new();
        let lock = || pending.lock().unwrap_or_else(|p| p.into_inner());
        let work = || {
            loop {
                let folder = {
                    let mut state = lock();
                    loop {
                        if state.failed.is_some() {
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
                let result = read_folder(&folder, visit);
                let mut state = lock();
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

    /// Visit the entries of one folder; returns its subfolders.
    fn read_folder(
        folder: &Path,
        visit: &(dyn Fn(&Path, &std::fs::Metadata) -> OpResult<()> + Sync),
    ) -> OpResult<Vec<PathBuf>> {
        let entries = match std::fs::read_dir(folder) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(folder, &e)),
        };
        let mut subfolders = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error(folder, &e))?;
            // `DirEntry::metadata` is an `fstatat` on the open folder: no
            // walk of the whole path.
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(&entry.path(), &e)),
            };
            if meta.is_symlink() {
                continue;
            }
            let path = entry.path();
            match visit(&path, &meta) {
                Err(e) if e.kind == crate::ErrorKind::NotFound => continue,
                other => other?,
            }
            if meta.is_dir() {
                subfolders.push(path);
            }
        }
        Ok(subfolders)
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::os::unix::fs::PermissionsExt;

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
    }
}
