//! The local file system: metadata and contents through `std`, access lists
//! through the platform's native mechanism (POSIX ACLs on Linux).

use super::{FileSystem, OpResult, PrincipalMap, io_error};
use crate::contract::v0_1_0::medic::plugin::fs::{
    AccessEntry, AccessReport, AccessRight, EntryKind, FileInfo,
};
#[cfg(not(target_os = "linux"))]
use crate::contract::{ErrorKind, PluginError};
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
    super::Principal::User(meta.uid()).display()
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
fn unsupported() -> PluginError {
    PluginError::new(
        ErrorKind::Unsupported,
        "access lists are not supported by the local backend on this system",
    )
}

#[cfg(target_os = "linux")]
mod acl {
    use super::*;
    use crate::backends::Principal;
    use crate::backends::posix_acl::{self, TAG_GROUP_OBJ, TAG_MASK, TAG_OTHER, TAG_USER_OBJ};
    use crate::contract::v0_1_0::medic::plugin::fs::AccessChange;
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;

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

    pub fn ensure_access(
        root: &Path,
        principal: Principal,
        right: AccessRight,
        recursive: bool,
        apply: bool,
    ) -> OpResult<AccessReport> {
        let is_read = right == AccessRight::Read;
        let mut report = AccessReport {
            checked: 0,
            changed: Vec::new(),
            applied: apply,
        };
        let mut pending: Vec<PathBuf> = vec![root.to_path_buf()];
        let display = |p: Principal| p.display();
        while let Some(path) = pending.pop() {
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && path != root => continue,
                Err(e) => return Err(io_error(&path, &e)),
            };
            if meta.is_symlink() {
                continue;
            }
            if recursive && meta.is_dir() {
                let entries = std::fs::read_dir(&path).map_err(|e| io_error(&path, &e))?;
                for entry in entries {
                    pending.push(entry.map_err(|e| io_error(&path, &e))?.path());
                }
            }
            report.checked += 1;
            let needed = posix_acl::required_perm(is_read, &meta);
            let mut acl = posix_acl::read(&path, meta.mode()).map_err(|e| io_error(&path, &e))?;
            let (before, effective) = acl.effective(principal, meta.uid(), meta.gid());
            if effective & needed == needed {
                continue;
            }
            acl.grant(principal, meta.uid(), meta.gid(), needed);
            let (after, _) = acl.effective(principal, meta.uid(), meta.gid());
            if apply {
                posix_acl::write(&path, &acl).map_err(|e| io_error(&path, &e))?;
            }
            report.changed.push(AccessChange {
                path: path.display().to_string(),
                before: posix_acl::entry_text(&before, display),
                after: posix_acl::entry_text(&after, display),
            });
        }
        report.changed.sort_by(|a, b| a.path.cmp(&b.path));
        if !report.changed.is_empty() && !apply {
            tracing::debug!(
                paths = report.changed.len(),
                "access changes planned, not applied"
            );
        }
        Ok(report)
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
