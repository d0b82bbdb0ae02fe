//! Opening paths beneath a granted root by file descriptor, never by name:
//! the root is opened once, the rest of the path is resolved from it with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (one component at a
//! time with `O_NOFOLLOW` on kernels without `openat2`), and everything
//! afterwards (status, listing, contents, access lists) goes through the
//! descriptor. A local user who can write inside the root may swap any
//! part of the path for a symbolic link at any moment: the swap is either
//! seen (the link itself is opened, and refused or skipped by the caller)
//! or too late (the descriptor already names the original inode).
//!
//! Descriptors are opened with `O_PATH`, which neither reads nor blocks nor
//! triggers a device's open routine; contents and extended attributes are
//! reached through the descriptor's entry in `/proc/self/fd` (or the
//! calling thread's `/proc/thread-self/fd`), which names that exact inode.

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir, ResolveFlags, Stat};
use rustix::io::Errno;
use std::ffi::{CStr, CString};
use std::io;
use std::mem::MaybeUninit;
use std::ops::ControlFlow;
use std::path::{Component, Path, PathBuf};

/// Open the granted root itself (a folder, or a single granted file). The
/// root and its ancestors are the policy author's choice and are trusted;
/// nothing below them is.
pub fn open_root(root: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        root,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Open `relative` beneath the directory `dir` as an `O_PATH` descriptor,
/// following no symbolic link: when the last component is a link, the
/// descriptor names the link itself; a link anywhere before it is an
/// error (`ELOOP`). An empty `relative` names `dir`.
pub fn open_beneath(dir: BorrowedFd<'_>, relative: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    if relative.as_os_str().is_empty() {
        return Ok(rustix::fs::openat(dir, c".", flags, Mode::empty())?);
    }
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a path beneath a root has only plain components",
        ));
    }
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    for _ in 0..8 {
        match rustix::fs::openat2(dir, relative, flags, Mode::empty(), resolve) {
            // The kernel asks for a retry when a rename raced the lookup.
            Err(Errno::AGAIN) => continue,
            // No openat2 (before Linux 5.6, or filtered by a seccomp policy).
            Err(Errno::NOSYS) | Err(Errno::PERM) => break,
            other => return Ok(other?),
        }
    }
    open_by_components(dir, relative, flags)
}

/// The same walk without `openat2`: one `openat` per component, each with
/// `O_NOFOLLOW`, each checked to be a directory before the next.
fn open_by_components(dir: BorrowedFd<'_>, relative: &Path, flags: OFlags) -> io::Result<OwnedFd> {
    let mut components = relative.components().peekable();
    let mut current: Option<OwnedFd> = None;
    while let Some(Component::Normal(name)) = components.next() {
        let base = current.as_ref().map_or(dir, |fd| fd.as_fd());
        let next = rustix::fs::openat(base, name, flags, Mode::empty())?;
        if components.peek().is_some() {
            match FileType::from_raw_mode(rustix::fs::fstat(&next)?.st_mode) {
                FileType::Directory => {}
                FileType::Symlink => return Err(Errno::LOOP.into()),
                _ => return Err(Errno::NOTDIR.into()),
            }
        }
        current = Some(next);
    }
    current.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty path"))
}

/// Open the entry `name` of the directory `dir` (one component), as
/// [`open_beneath`] does.
pub fn open_entry(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Status of what `fd` names (the link itself for a link).
pub fn stat(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    Ok(rustix::fs::fstat(fd)?)
}

/// Status of the entry `name` of `dir`, not following a link.
pub fn stat_entry(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Stat> {
    Ok(rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?)
}

/// The kind of file a status describes.
pub fn file_type(stat: &Stat) -> FileType {
    FileType::from_raw_mode(stat.st_mode)
}

/// The `/proc/self/fd` entry of `fd`: a name for exactly that inode, for
/// the calls that take a name (reopening, extended attributes).
pub fn proc_path(fd: BorrowedFd<'_>) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Run `call` with `fd`'s entry in the calling thread's
/// `/proc/thread-self/fd` folder, open for the thread's life: a name for
/// exactly the inode `fd` names, one component to look up where
/// `/proc/self/fd/N` is four. A folder of the thread's own, so that the
/// walk's threads do not share its descriptor or its entries' dentries.
/// `None` without a usable folder (no `/proc`, or the thread ending).
pub fn with_proc_entry<R>(
    fd: BorrowedFd<'_>,
    call: impl FnOnce(BorrowedFd<'_>, &CStr) -> R,
) -> Option<R> {
    thread_local! {
        static OWN_FD_DIR: Option<OwnedFd> = open_thread_fd_dir().ok();
    }
    let name = FdName::new(fd)?;
    OWN_FD_DIR
        .try_with(|dir| Some(call(dir.as_ref()?.as_fd(), name.as_c_str())))
        .ok()
        .flatten()
}

/// `/proc/thread-self/fd`, checked: on the same procfs as the
/// `/proc/self/fd` that `rustix-linux-procfs` verifies (procfs, nothing
/// mounted over it), and listing this thread's own descriptors (its own
/// entry leads back to itself).
fn open_thread_fd_dir() -> io::Result<OwnedFd> {
    let verified = rustix::fs::fstat(rustix_linux_procfs::proc_self_fd()?)?;
    let dir = rustix::fs::open(
        "/proc/thread-self/fd",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let stat = rustix::fs::fstat(&dir)?;
    let own = FdName::new(dir.as_fd()).ok_or_else(|| io::Error::other("no descriptor number"))?;
    let through_own = rustix::fs::statat(&dir, own.as_c_str(), AtFlags::empty())?;
    let same = |a: &Stat, b: &Stat| a.st_dev == b.st_dev && a.st_ino == b.st_ino;
    if stat.st_dev != verified.st_dev
        || stat.st_mode != verified.st_mode
        || !same(&stat, &through_own)
    {
        return Err(io::Error::other(
            "/proc/thread-self/fd is not this thread's own",
        ));
    }
    Ok(dir)
}

/// A descriptor's number written out, NUL-terminated: the name of its
/// entry in a `/proc` `fd` folder.
struct FdName {
    bytes: [u8; 12],
    start: usize,
}

impl FdName {
    fn new(fd: BorrowedFd<'_>) -> Option<Self> {
        use std::os::fd::AsRawFd;
        let mut bytes = [0u8; 12];
        // Written from the end: the NUL, then the digits.
        let mut start = bytes.len() - 1;
        let mut rest = u32::try_from(fd.as_raw_fd()).ok()?;
        loop {
            start -= 1;
            bytes[start] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        Some(Self { bytes, start })
    }

    fn as_c_str(&self) -> &CStr {
        CStr::from_bytes_with_nul(&self.bytes[self.start..]).unwrap_or(c"")
    }
}

/// Open the directory `fd` names for reading its entries.
fn open_listing(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        fd,
        c".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// The names in the directory `fd` names, without `.` and `..`, each with
/// the kind of file the listing says it is (`Unknown` where the file
/// system does not say). That kind is a hint from a moment ago: anything
/// done to the entry checks what is there then.
pub fn entries(fd: BorrowedFd<'_>) -> io::Result<Vec<(CString, FileType)>> {
    let mut names = Vec::new();
    for_each_entry(fd, |name, kind| {
        names.push((name.to_owned(), kind));
        ControlFlow::Continue(())
    })?;
    Ok(names)
}

/// Bytes of listing read per `getdents64` call: a few hundred names.
const LISTING_BUFFER: usize = 32 * 1024;

/// Call `visit` with each name in the directory `fd` names (as
/// [`entries`] lists them, without a copy of each) until it breaks.
pub fn for_each_entry(
    fd: BorrowedFd<'_>,
    mut visit: impl FnMut(&CStr, FileType) -> ControlFlow<()>,
) -> io::Result<()> {
    let mut buf = [MaybeUninit::<u8>::uninit(); LISTING_BUFFER];
    let mut listing = RawDir::new(open_listing(fd)?, &mut buf);
    while let Some(entry) = listing.next() {
        let entry = entry?;
        let name = entry.file_name();
        if name != c"." && name != c".." && visit(name, entry.file_type()).is_break() {
            break;
        }
    }
    Ok(())
}

/// Open the regular file `fd` names for reading, without blocking.
pub fn open_contents(fd: BorrowedFd<'_>) -> io::Result<std::fs::File> {
    let file = rustix::fs::open(
        proc_path(fd),
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(std::fs::File::from(file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn root() -> (tempfile::TempDir, OwnedFd) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("d/sub")).unwrap();
        std::fs::write(dir.path().join("d/sub/f"), b"inside").unwrap();
        std::fs::write(dir.path().join("secret"), b"outside").unwrap();
        symlink(dir.path().join("secret"), dir.path().join("d/link")).unwrap();
        symlink(dir.path(), dir.path().join("d/up")).unwrap();
        let fd = open_root(&dir.path().join("d")).unwrap();
        (dir, fd)
    }

    #[test]
    fn a_link_is_opened_as_itself_or_refused_never_followed() {
        let (_dir, fd) = root();
        let link = open_beneath(fd.as_fd(), Path::new("link")).unwrap();
        assert_eq!(file_type(&stat(link.as_fd()).unwrap()), FileType::Symlink);
        let through = open_beneath(fd.as_fd(), Path::new("up/secret")).unwrap_err();
        assert_eq!(through.raw_os_error(), Some(libc::ELOOP), "{through}");
        let file = open_beneath(fd.as_fd(), Path::new("sub/f")).unwrap();
        assert_eq!(
            file_type(&stat(file.as_fd()).unwrap()),
            FileType::RegularFile
        );
        let mut text = String::new();
        std::io::Read::read_to_string(&mut open_contents(file.as_fd()).unwrap(), &mut text)
            .unwrap();
        assert_eq!(text, "inside");
    }

    #[test]
    fn the_component_walk_refuses_links_as_openat2_does() {
        let (_dir, fd) = root();
        let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let err = open_by_components(fd.as_fd(), Path::new("up/secret"), flags).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
        let link = open_by_components(fd.as_fd(), Path::new("link"), flags).unwrap();
        assert_eq!(file_type(&stat(link.as_fd()).unwrap()), FileType::Symlink);
        let file = open_by_components(fd.as_fd(), Path::new("sub/f"), flags).unwrap();
        assert_eq!(
            file_type(&stat(file.as_fd()).unwrap()),
            FileType::RegularFile
        );
    }

    #[test]
    fn parent_and_absolute_components_are_refused() {
        let (_dir, fd) = root();
        for bad in ["../secret", "/etc/passwd", "sub/../../secret"] {
            assert!(open_beneath(fd.as_fd(), Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_descriptor_s_number_is_written_out_as_its_proc_entry() {
        for (raw, name) in [
            (0, c"0"),
            (7, c"7"),
            (10, c"10"),
            (1234, c"1234"),
            (i32::MAX, c"2147483647"),
        ] {
            // SAFETY: only the number is read, never used as a descriptor.
            let fd = unsafe { BorrowedFd::borrow_raw(raw) };
            assert_eq!(FdName::new(fd).unwrap().as_c_str(), name);
        }
    }

    #[test]
    fn a_descriptor_s_proc_entry_names_its_inode_on_every_thread() {
        let (_dir, root) = root();
        let file = open_beneath(root.as_fd(), Path::new("sub/f")).unwrap();
        let want = stat(file.as_fd()).unwrap().st_ino;
        let seen = |file: BorrowedFd<'_>| {
            with_proc_entry(file, |fd_dir, name| {
                rustix::fs::statat(fd_dir, name, AtFlags::empty())
                    .unwrap()
                    .st_ino
            })
            .unwrap()
        };
        assert_eq!(seen(file.as_fd()), want);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| assert_eq!(seen(file.as_fd()), want));
            }
        });
    }

    #[test]
    fn entries_lists_names_without_dots() {
        let (_dir, fd) = root();
        let mut names: Vec<_> = entries(fd.as_fd())
            .unwrap()
            .into_iter()
            .map(|(n, _)| n.into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["link", "sub", "up"]);
    }
}
