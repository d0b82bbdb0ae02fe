//! The downstream's content folder on disk: real files with real POSIX
//! ACLs. `ContentDir` (the folder holding `WsusContent`) gives Read to the
//! principals standing in for `NETWORK SERVICE` and `Users`; `WsusContent`
//! and everything under it gives `NETWORK SERVICE` full control, inheritably
//! (a default ACL entry on `WsusContent`). New folders and files inherit the
//! named entries of their parent, as NTFS inheritance does on a real server.

use super::{Lab, LabError, LabResult, model::UpdateMeta};

/// `NETWORK SERVICE`: the account WsusService and its downloads run as.
pub const SERVICE_ACCOUNT: &str = "NETWORK SERVICE";
/// The group that may read the content root as an alternative.
pub const USERS: &str = "Users";

/// What the content folder's permissions look like.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ContentAccess {
    /// Which of `NETWORK SERVICE` and `Users` can read `ContentDir`.
    pub root_readers: Vec<String>,
    /// Whether `NETWORK SERVICE` has full control of `WsusContent`.
    pub wsus_content_full_control: bool,
    /// Folders and files under `WsusContent` (itself included).
    pub checked: u64,
    /// Of those, the ones `NETWORK SERVICE` lacks full control of.
    pub lacking: u64,
}

#[cfg(target_os = "linux")]
mod imp {
    use super::*;
    use crate::{catalog, io_err};
    use medic_backends::Principal;
    use medic_backends::posix_acl::{self, EXECUTE, READ, WRITE};
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
    use std::path::Path;

    const FULL: u16 = READ | WRITE | EXECUTE;

    impl Lab {
        fn principal(&self, name: &str) -> LabResult<Principal> {
            self.principals()
                .resolve(name)
                .map_err(|e| LabError::Principal(e.message))
        }

        fn grant(&self, path: &Path, principal: Principal, perm: u16) -> LabResult<()> {
            let meta = std::fs::symlink_metadata(path).map_err(io_err(path))?;
            let mut acl = posix_acl::read(path, meta.mode()).map_err(io_err(path))?;
            acl.grant(principal, meta.uid(), meta.gid(), perm);
            posix_acl::write(path, &acl).map_err(io_err(path))
        }

        /// Make `principal`'s `perm` on `dir` inheritable: a named entry in
        /// its default ACL (built from its access ACL's base entries when
        /// it has none), which the kernel gives to everything created in it
        /// afterwards, as an inheritable entry does on NTFS.
        fn grant_inheritable(&self, dir: &Path, principal: Principal, perm: u16) -> LabResult<()> {
            use std::os::fd::AsFd;
            let folder = std::fs::File::open(dir).map_err(io_err(dir))?;
            let meta = folder.metadata().map_err(io_err(dir))?;
            let mut default =
                match posix_acl::read_default_fd(folder.as_fd()).map_err(io_err(dir))? {
                    Some(acl) => acl,
                    None => posix_acl::Acl::default_base(
                        &posix_acl::read_fd(folder.as_fd(), meta.mode()).map_err(io_err(dir))?,
                    ),
                };
            default.grant_named(principal, perm);
            posix_acl::write_default_fd(folder.as_fd(), &default).map_err(io_err(dir))
        }

        /// Give `child` the named entries of `parent` (without execute on
        /// files): the inheritance a real server's NTFS folders have.
        fn inherit(&self, parent: &posix_acl::Acl, child: &Path, is_dir: bool) -> LabResult<()> {
            let meta = std::fs::symlink_metadata(child).map_err(io_err(child))?;
            let mut acl = posix_acl::read(child, meta.mode()).map_err(io_err(child))?;
            for (principal, perm) in parent.named() {
                let perm = if is_dir { perm } else { perm & !EXECUTE };
                acl.grant(principal, meta.uid(), meta.gid(), perm);
            }
            posix_acl::write(child, &acl).map_err(io_err(child))
        }

        fn effective(&self, path: &Path, principal: Principal) -> LabResult<u16> {
            let meta = std::fs::symlink_metadata(path).map_err(io_err(path))?;
            let acl = posix_acl::read(path, meta.mode()).map_err(io_err(path))?;
            Ok(acl.effective(principal, meta.uid(), meta.gid()).1)
        }

        /// Set up `ContentDir` and `WsusContent` as WSUS setup (plus the
        /// documented manual step) leaves them.
        pub(crate) fn prepare_content_folders(&self) -> LabResult<()> {
            let root = self.content_dir();
            let content = self.wsus_content();
            for dir in [&root, &content] {
                std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o750))
                    .map_err(io_err(dir))?;
            }
            let service = self.principal(SERVICE_ACCOUNT)?;
            let users = self.principal(USERS)?;
            self.grant(&root, service, READ | EXECUTE)?;
            self.grant(&root, users, READ | EXECUTE)?;
            self.grant(&content, service, FULL)?;
            self.grant_inheritable(&content, service, FULL)
        }

        /// Write an update's file under `WsusContent`, creating its folder;
        /// both inherit their parent's entries. (Downloads use it; so do
        /// benchmarks that need a large content tree.)
        pub fn write_content_file(&self, id: &str, meta: &UpdateMeta) -> LabResult<()> {
            let content = self.wsus_content();
            let relative = catalog::content_path(meta);
            let file = content.join(&relative);
            let folder = file.parent().unwrap_or(&content).to_path_buf();
            if !folder.exists() {
                std::fs::DirBuilder::new()
                    .mode(0o750)
                    .create(&folder)
                    .map_err(io_err(&folder))?;
                let meta = std::fs::metadata(&content).map_err(io_err(&content))?;
                let parent = posix_acl::read(&content, meta.mode()).map_err(io_err(&content))?;
                self.inherit(&parent, &folder, true)?;
            }
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o640)
                .open(&file)
                .map_err(io_err(&file))?;
            std::io::Write::write_all(&mut out, &catalog::file_content(id, meta))
                .map_err(io_err(&file))?;
            drop(out);
            let folder_meta = std::fs::metadata(&folder).map_err(io_err(&folder))?;
            let parent = posix_acl::read(&folder, folder_meta.mode()).map_err(io_err(&folder))?;
            self.inherit(&parent, &file, false)
        }

        /// `Access is denied.` when downloads cannot land: `NETWORK
        /// SERVICE` or `Users` cannot read `ContentDir` ("must have at least
        /// Read permissions for the Users security group and the NT
        /// Authority\Network Service account", *Issues with Update
        /// Storage*: both, where an older page said either), or `NETWORK
        /// SERVICE` lacks full control of `WsusContent`.
        pub(crate) fn download_access_blocker(&self) -> LabResult<Option<&'static str>> {
            let root = self.content_dir();
            let mut readable = true;
            for name in [SERVICE_ACCOUNT, USERS] {
                readable &= self.effective(&root, self.principal(name)?)? & (READ | EXECUTE)
                    == READ | EXECUTE;
            }
            let service = self.principal(SERVICE_ACCOUNT)?;
            let writable = self.effective(&self.wsus_content(), service)? & FULL == FULL;
            Ok((!readable || !writable).then_some(super::super::logs::reasons::ACCESS_DENIED))
        }

        /// How the content folder's permissions stand now.
        pub fn content_access(&self) -> LabResult<ContentAccess> {
            let root = self.content_dir();
            let content = self.wsus_content();
            let service = self.principal(SERVICE_ACCOUNT)?;
            let mut root_readers = Vec::new();
            for name in [SERVICE_ACCOUNT, USERS] {
                let who = self.principal(name)?;
                if self.effective(&root, who)? & (READ | EXECUTE) == READ | EXECUTE {
                    root_readers.push(name.to_string());
                }
            }
            let wsus_content_full_control = self.effective(&content, service)? & FULL == FULL;
            let (mut checked, mut lacking) = (0, 0);
            let mut pending = vec![content];
            while let Some(path) = pending.pop() {
                let meta = std::fs::symlink_metadata(&path).map_err(io_err(&path))?;
                if meta.is_dir() {
                    for entry in std::fs::read_dir(&path).map_err(io_err(&path))? {
                        pending.push(entry.map_err(io_err(&path))?.path());
                    }
                }
                checked += 1;
                let needed = posix_acl::required_perm(false, meta.is_dir(), meta.mode());
                let acl = posix_acl::read(&path, meta.mode()).map_err(io_err(&path))?;
                if acl.effective(service, meta.uid(), meta.gid()).1 & needed != needed {
                    lacking += 1;
                }
            }
            Ok(ContentAccess {
                root_readers,
                wsus_content_full_control,
                checked,
                lacking,
            })
        }

        /// Take Read on `ContentDir` away from `NETWORK SERVICE` and
        /// `Users` (only from `Users` when `users_only`); returns how many
        /// entries were removed.
        pub(crate) fn revoke_root_read(&self, users_only: bool) -> LabResult<usize> {
            let root = self.content_dir();
            let meta = std::fs::symlink_metadata(&root).map_err(io_err(&root))?;
            let mut acl = posix_acl::read(&root, meta.mode()).map_err(io_err(&root))?;
            let mut removed = 0;
            let names: &[&str] = if users_only {
                &[USERS]
            } else {
                &[SERVICE_ACCOUNT, USERS]
            };
            for name in names {
                removed += usize::from(acl.revoke(self.principal(name)?));
            }
            posix_acl::write(&root, &acl).map_err(io_err(&root))?;
            Ok(removed)
        }

        /// Take `NETWORK SERVICE`'s entries away on `WsusContent` and
        /// everything under it; returns how many paths changed.
        pub(crate) fn revoke_full_control(&self) -> LabResult<usize> {
            let service = self.principal(SERVICE_ACCOUNT)?;
            let mut changed = 0;
            let mut pending = vec![self.wsus_content()];
            while let Some(path) = pending.pop() {
                let meta = std::fs::symlink_metadata(&path).map_err(io_err(&path))?;
                if meta.is_dir() {
                    for entry in std::fs::read_dir(&path).map_err(io_err(&path))? {
                        pending.push(entry.map_err(io_err(&path))?.path());
                    }
                }
                let mut acl = posix_acl::read(&path, meta.mode()).map_err(io_err(&path))?;
                if acl.revoke(service) {
                    posix_acl::write(&path, &acl).map_err(io_err(&path))?;
                    changed += 1;
                }
            }
            Ok(changed)
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::*;

    fn unsupported<T>() -> LabResult<T> {
        Err(LabError::Invalid(
            "the lab's content folder needs POSIX ACLs: run the lab on Linux".into(),
        ))
    }

    impl Lab {
        pub(crate) fn prepare_content_folders(&self) -> LabResult<()> {
            unsupported()
        }
        pub fn write_content_file(&self, _: &str, _: &UpdateMeta) -> LabResult<()> {
            unsupported()
        }
        pub fn content_access(&self) -> LabResult<ContentAccess> {
            unsupported()
        }
        pub(crate) fn download_access_blocker(&self) -> LabResult<Option<&'static str>> {
            unsupported()
        }
        pub(crate) fn revoke_root_read(&self, _: bool) -> LabResult<usize> {
            unsupported()
        }
        pub(crate) fn revoke_full_control(&self) -> LabResult<usize> {
            unsupported()
        }
    }
}

impl Lab {
    /// Write the files of every update the downstream has downloaded.
    pub(crate) fn write_ready_content(&self) -> LabResult<()> {
        let ready = self.updates(
            super::Server::Downstream,
            &super::server::UpdateQuery {
                state: Some(super::UpdateState::Ready),
                ..Default::default()
            },
        )?;
        for update in ready {
            self.write_content_file(&update.id, &update.meta)?;
        }
        Ok(())
    }
}
