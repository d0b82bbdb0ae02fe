//! POSIX access control lists, read and written directly as the kernel's
//! `system.posix_acl_access` extended attribute (the format `getfacl` and
//! `setfacl` use), so that scanning a large tree costs one `getxattrat` per
//! healthy file with an ACL of its own (and an `fstatat` more for one
//! without) and writes happen only where something is missing.
//!
//! A directory also has a default ACL (`system.posix_acl_default`, what
//! `setfacl -d` sets): the kernel gives it to every file and directory
//! created in the directory afterwards, which is how a grant on a folder
//! reaches what is put there later, as an inheritable entry does on NTFS.

use crate::Principal;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

const ACL_XATTR: &[u8] = b"system.posix_acl_access\0";
const DEFAULT_ACL_XATTR: &[u8] = b"system.posix_acl_default\0";
const ACL_VERSION: u32 = 2;
const UNDEFINED_ID: u32 = u32::MAX;

pub const TAG_USER_OBJ: u16 = 0x01;
pub const TAG_USER: u16 = 0x02;
pub const TAG_GROUP_OBJ: u16 = 0x04;
pub const TAG_GROUP: u16 = 0x08;
pub const TAG_MASK: u16 = 0x10;
pub const TAG_OTHER: u16 = 0x20;

pub const READ: u16 = 4;
pub const WRITE: u16 = 2;
pub const EXECUTE: u16 = 1;

/// One ACL entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Entry {
    pub tag: u16,
    pub perm: u16,
    pub id: u32,
}

/// An access list: the kernel's, or the minimal one derived from the mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    pub entries: Vec<Entry>,
}

impl Acl {
    /// The three-entry ACL that the permission bits of `mode` stand for.
    pub fn from_mode(mode: u32) -> Self {
        let bits = |shift: u32| ((mode >> shift) & 7) as u16;
        let base = |tag, shift| Entry {
            tag,
            perm: bits(shift),
            id: UNDEFINED_ID,
        };
        // Room for the named entry and the mask a grant may add.
        let mut entries = Vec::with_capacity(3 + 2);
        entries.extend([
            base(TAG_USER_OBJ, 6),
            base(TAG_GROUP_OBJ, 3),
            base(TAG_OTHER, 0),
        ]);
        Self { entries }
    }

    /// Decode the extended attribute's bytes.
    pub fn decode(bytes: &[u8]) -> io::Result<Self> {
        let parsed = parse(bytes)?;
        // Room for the named entry and the mask a grant may add.
        let mut entries = Vec::with_capacity(parsed.len() + 2);
        entries.extend(parsed);
        Ok(Self { entries })
    }

    /// Encode as the extended attribute's bytes, entries in kernel order.
    pub fn encode(&self) -> Vec<u8> {
        let order = |e: &Entry| (e.tag, e.id);
        let sorted;
        let entries = if self.entries.is_sorted_by_key(order) {
            &self.entries
        } else {
            sorted = {
                let mut entries = self.entries.clone();
                entries.sort_by_key(order);
                entries
            };
            &sorted
        };
        let mut out = Vec::with_capacity(4 + 8 * entries.len());
        out.extend_from_slice(&ACL_VERSION.to_le_bytes());
        for e in entries {
            out.extend_from_slice(&e.tag.to_le_bytes());
            out.extend_from_slice(&e.perm.to_le_bytes());
            out.extend_from_slice(&e.id.to_le_bytes());
        }
        out
    }

    fn find(&self, tag: u16, id: u32) -> Option<&Entry> {
        find(&self.entries, tag, id)
    }

    fn mask(&self) -> u16 {
        mask(&self.entries)
    }

    /// The entry that decides `principal`'s access, its tag and id, and the
    /// effective permission it gives (after the mask).
    pub fn effective(&self, principal: Principal, owner: u32, group: u32) -> (Entry, u16) {
        let (obj_tag, named_tag, id, is_obj) = match principal {
            Principal::User(uid) => (TAG_USER_OBJ, TAG_USER, uid, uid == owner),
            Principal::Group(gid) => (TAG_GROUP_OBJ, TAG_GROUP, gid, gid == group),
        };
        let masked = |e: &Entry| {
            if e.tag == TAG_USER_OBJ {
                e.perm
            } else {
                e.perm & self.mask()
            }
        };
        if is_obj && let Some(e) = self.find(obj_tag, UNDEFINED_ID) {
            return (*e, masked(e));
        }
        if let Some(e) = self.find(named_tag, id) {
            return (*e, masked(e));
        }
        (
            Entry {
                tag: named_tag,
                perm: 0,
                id,
            },
            0,
        )
    }

    /// Whether this access ACL of a regular file gives `principal` what
    /// `right_is_read` asks ([`required_perm`]) whoever owns the file, so
    /// that it can be known without the file's status: the principal's
    /// named entry (after the mask) and the owner's entry (the owning
    /// group's, for a group) both give it, so it holds whether or not the
    /// principal is the file's owner (or owning group). The mode's owner
    /// bits are the owner's entry. `false` says nothing: the caller reads
    /// the status and asks [`Acl::effective`].
    pub fn grants_whoever_owns(&self, principal: Principal, right_is_read: bool) -> bool {
        grants_whoever_owns(&self.entries, principal, right_is_read)
    }

    /// Give `principal` at least `perm`, adding a named entry where needed
    /// and widening the mask to cover every group-class entry (as `setfacl`
    /// does).
    pub fn grant(&mut self, principal: Principal, owner: u32, group: u32, perm: u16) {
        let (decider, _) = self.effective(principal, owner, group);
        let id = match decider.tag {
            TAG_USER_OBJ | TAG_GROUP_OBJ => UNDEFINED_ID,
            _ => decider.id,
        };
        self.widen(decider.tag, id, perm);
    }

    /// Add `perm` to the entry `tag`/`id` (creating it), and widen the
    /// mask to cover every group-class entry. New entries go where the
    /// kernel's order puts them, so that a list read from the kernel
    /// stays in order and encodes without a sort.
    fn widen(&mut self, tag: u16, id: u32, perm: u16) {
        match self.entries.iter_mut().find(|e| e.tag == tag && e.id == id) {
            Some(entry) => entry.perm |= perm,
            None => self.insert(Entry { tag, perm, id }),
        }
        let has_named = self
            .entries
            .iter()
            .any(|e| e.tag == TAG_USER || e.tag == TAG_GROUP);
        if has_named {
            let union = self
                .entries
                .iter()
                .filter(|e| matches!(e.tag, TAG_USER | TAG_GROUP_OBJ | TAG_GROUP))
                .fold(0, |acc, e| acc | e.perm);
            match self.entries.iter_mut().find(|e| e.tag == TAG_MASK) {
                Some(mask) => mask.perm |= union,
                None => self.insert(Entry {
                    tag: TAG_MASK,
                    perm: union,
                    id: UNDEFINED_ID,
                }),
            }
        }
    }

    /// Add `entry` before the first entry that sorts after it.
    fn insert(&mut self, entry: Entry) {
        let at = self
            .entries
            .iter()
            .position(|e| (e.tag, e.id) > (entry.tag, entry.id))
            .unwrap_or(self.entries.len());
        self.entries.insert(at, entry);
    }
}

/// Default ACLs: what a directory passes on to what is created in it.
impl Acl {
    /// The default ACL `setfacl -d -m` starts from on a directory that has
    /// none: the owner, owning group and other entries of the directory's
    /// access ACL (`access`), nothing else.
    pub fn default_base(access: &Acl) -> Self {
        Self {
            entries: access
                .entries
                .iter()
                .filter(|e| matches!(e.tag, TAG_USER_OBJ | TAG_GROUP_OBJ | TAG_OTHER))
                .copied()
                .collect(),
        }
    }

    /// The named entry of `principal` (one with no permission when there
    /// is none) and the permission it gives after the mask. In a default
    /// ACL only a named entry counts: what is created later belongs to
    /// whoever creates it, not necessarily to the directory's owner.
    pub fn named_entry(&self, principal: Principal) -> (Entry, u16) {
        let (tag, id) = match principal {
            Principal::User(uid) => (TAG_USER, uid),
            Principal::Group(gid) => (TAG_GROUP, gid),
        };
        match self.entries.iter().find(|e| e.tag == tag && e.id == id) {
            Some(e) => (*e, e.perm & self.mask()),
            None => (Entry { tag, perm: 0, id }, 0),
        }
    }

    /// Give `principal` a named entry with at least `perm`, widening the
    /// mask to cover it (as `setfacl -d -m` does on a default ACL).
    pub fn grant_named(&mut self, principal: Principal, perm: u16) {
        let (entry, _) = self.named_entry(principal);
        self.widen(entry.tag, entry.id, perm);
    }
}

impl Acl {
    /// Remove every named entry of `principal` (as `setfacl -x` does) and
    /// recompute the mask; returns whether anything was removed.
    pub fn revoke(&mut self, principal: Principal) -> bool {
        let (tag, id) = match principal {
            Principal::User(uid) => (TAG_USER, uid),
            Principal::Group(gid) => (TAG_GROUP, gid),
        };
        let before = self.entries.len();
        self.entries.retain(|e| !(e.tag == tag && e.id == id));
        if self.entries.len() == before {
            return false;
        }
        let union = self
            .entries
            .iter()
            .filter(|e| matches!(e.tag, TAG_USER | TAG_GROUP_OBJ | TAG_GROUP))
            .fold(0, |acc, e| acc | e.perm);
        let has_named = self
            .entries
            .iter()
            .any(|e| e.tag == TAG_USER || e.tag == TAG_GROUP);
        if has_named {
            if let Some(mask) = self.entries.iter_mut().find(|e| e.tag == TAG_MASK) {
                mask.perm = union;
            }
        } else {
            self.entries.retain(|e| e.tag != TAG_MASK);
        }
        true
    }

    /// The named user and group entries: who they are and what they give.
    pub fn named(&self) -> impl Iterator<Item = (Principal, u16)> + '_ {
        self.entries.iter().filter_map(|e| match e.tag {
            TAG_USER => Some((Principal::User(e.id), e.perm)),
            TAG_GROUP => Some((Principal::Group(e.id), e.perm)),
            _ => None,
        })
    }
}

/// The entries of the extended attribute's bytes, checked.
fn parse(bytes: &[u8]) -> io::Result<impl ExactSizeIterator<Item = Entry> + '_> {
    let invalid = || io::Error::new(io::ErrorKind::InvalidData, "malformed POSIX ACL");
    let (header, body) = bytes.split_at_checked(4).ok_or_else(invalid)?;
    if u32::from_le_bytes(header.try_into().map_err(|_| invalid())?) != ACL_VERSION
        || body.len() % 8 != 0
    {
        return Err(invalid());
    }
    Ok(body.chunks_exact(8).map(|c| Entry {
        tag: u16::from_le_bytes([c[0], c[1]]),
        perm: u16::from_le_bytes([c[2], c[3]]),
        id: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
    }))
}

/// The entry of `tag`, and for a named one (`TAG_USER`, `TAG_GROUP`) of
/// exactly `id`: the undefined id is no wildcard.
fn find(entries: &[Entry], tag: u16, id: u32) -> Option<&Entry> {
    let named = matches!(tag, TAG_USER | TAG_GROUP);
    entries
        .iter()
        .find(|e| e.tag == tag && (!named || e.id == id))
}

fn mask(entries: &[Entry]) -> u16 {
    find(entries, TAG_MASK, UNDEFINED_ID).map_or(7, |e| e.perm)
}

/// [`Acl::grants_whoever_owns`], on entries however held.
fn grants_whoever_owns(entries: &[Entry], principal: Principal, right_is_read: bool) -> bool {
    let Some(owner) = find(entries, TAG_USER_OBJ, UNDEFINED_ID) else {
        return false;
    };
    let owner_mode = if owner.perm & EXECUTE != 0 { 0o100 } else { 0 };
    let needed = required_perm(right_is_read, false, owner_mode);
    let gives = |perm: u16| perm & needed == needed;
    let (object, named) = match principal {
        Principal::User(uid) => (Some(owner.perm), find(entries, TAG_USER, uid)),
        Principal::Group(gid) => (
            find(entries, TAG_GROUP_OBJ, UNDEFINED_ID).map(|e| e.perm & mask(entries)),
            find(entries, TAG_GROUP, gid),
        ),
    };
    object.is_some_and(gives) && named.is_some_and(|e| gives(e.perm & mask(entries)))
}

/// `rwx`-style text of permission bits.
pub fn perm_text(perm: u16) -> String {
    let bit = |b: u16, c: char| if perm & b != 0 { c } else { '-' };
    [bit(READ, 'r'), bit(WRITE, 'w'), bit(EXECUTE, 'x')]
        .iter()
        .collect()
}

/// An entry as `getfacl` prints it, e.g. `user:www-data:r-x`, `group::r--`.
pub fn entry_text(entry: &Entry, name: impl Fn(Principal) -> String) -> String {
    let qualifier = |p: Principal| {
        let name = name(p);
        match name.split_once(':') {
            Some((_, n)) => n.to_string(),
            None => name,
        }
    };
    let perm = perm_text(entry.perm);
    match entry.tag {
        TAG_USER_OBJ => format!("user::{perm}"),
        TAG_USER => format!("user:{}:{perm}", qualifier(Principal::User(entry.id))),
        TAG_GROUP_OBJ => format!("group::{perm}"),
        TAG_GROUP => format!("group:{}:{perm}", qualifier(Principal::Group(entry.id))),
        TAG_MASK => format!("mask::{perm}"),
        TAG_OTHER => format!("other::{perm}"),
        _ => format!("unknown-{:#x}:{}:{perm}", entry.tag, entry.id),
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Whether a call names the path itself or what it leads to: the path of a
/// file is never followed (a link has no access list of its own); a
/// descriptor's `/proc/self/fd` entry is, to reach the inode it names.
#[derive(Clone, Copy)]
enum Follow {
    No,
    Yes,
}

/// Which of its access lists a call reads or writes: the access ACL of
/// any path, or the default ACL of a directory.
#[derive(Clone, Copy)]
enum Kind {
    Access,
    Default,
}

impl Kind {
    /// The extended attribute, NUL-terminated.
    fn xattr(self) -> *const libc::c_char {
        match self {
            Self::Access => ACL_XATTR.as_ptr().cast(),
            Self::Default => DEFAULT_ACL_XATTR.as_ptr().cast(),
        }
    }
}

/// Where an ACL is read or written: a path, the inode an open descriptor
/// names (an `O_PATH` one will do), or an entry of an open directory.
#[derive(Clone, Copy)]
enum Target<'a> {
    /// A path, followed or not.
    Path(&'a CStr, Follow),
    /// The inode an open descriptor names, reached through the
    /// descriptor's entry in the thread's `/proc/thread-self/fd` (by path,
    /// `/proc/self/fd/N`, without the `*xattrat` calls), followed: the
    /// attribute calls refuse an `O_PATH` descriptor itself (`EBADF`, even
    /// as `*xattrat` with an empty name), and a walk's descriptors are all
    /// `O_PATH` ones, so that no FIFO or device is ever opened.
    Fd(BorrowedFd<'a>),
    /// The entry `name` of the directory `dir`, not followed.
    Entry(BorrowedFd<'a>, &'a CStr),
}

/// `getxattrat` and `setxattrat` (Linux 6.13): an extended attribute of a
/// name beneath an open directory (an `O_PATH` one will do). A
/// descriptor's own attributes go through its entry in the calling
/// thread's `/proc/thread-self/fd` folder: one name to look up, where its
/// path would be four. Kernels without the calls (or a seccomp filter that
/// refuses them) send the calls by path instead.
mod at {
    use std::ffi::CStr;
    use std::io;
    use std::os::fd::{AsRawFd, BorrowedFd};
    use std::sync::atomic::{AtomicU8, Ordering};

    /// Whether the calls have the generic syscall table's numbers here,
    /// which every architecture named shares for calls added since 5.1
    /// (MIPS and Alpha offset theirs: there the calls go by path).
    const NUMBERED: bool = cfg!(any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "aarch64",
        target_arch = "arm",
        target_arch = "riscv64",
        target_arch = "powerpc64",
        target_arch = "s390x",
        target_arch = "loongarch64"
    ));

    const UNKNOWN: u8 = 0;
    const PRESENT: u8 = 1;
    const MISSING: u8 = 2;

    /// One of the calls, and what is known of it: unknown until it first
    /// fails as a missing call would, then probed once.
    struct Call {
        number: libc::c_long,
        state: AtomicU8,
    }

    static SET: Call = Call {
        number: 463,
        state: AtomicU8::new(UNKNOWN),
    };
    static GET: Call = Call {
        number: 464,
        state: AtomicU8::new(UNKNOWN),
    };

    /// `struct xattr_args`.
    #[repr(C)]
    struct XattrArgs {
        value: u64,
        size: u32,
        flags: u32,
    }

    /// Where a call goes: a directory, a name in it and the `AT_*` flags.
    #[derive(Clone, Copy)]
    pub(super) struct Place<'a> {
        pub dir: BorrowedFd<'a>,
        pub name: &'a CStr,
        pub flags: libc::c_int,
    }

    /// `call` at `place` with `args`; `None` when the kernel lacks it.
    fn invoke(
        call: &Call,
        place: Place<'_>,
        xattr: *const libc::c_char,
        args: &XattrArgs,
    ) -> Option<io::Result<usize>> {
        if !NUMBERED || call.state.load(Ordering::Relaxed) == MISSING {
            return None;
        }
        let number = call.number;
        // SAFETY: `place.name` and `xattr` are NUL-terminated; the callers
        // make `args.value` NULL with size 0 or valid for `args.size`
        // bytes (for writes with `getxattrat`).
        let n = unsafe {
            libc::syscall(
                number,
                place.dir.as_raw_fd(),
                place.name.as_ptr(),
                place.flags as libc::c_uint,
                xattr,
                args as *const XattrArgs,
                std::mem::size_of::<XattrArgs>(),
            )
        };
        let Err(_) = usize::try_from(n) else {
            return Some(Ok(n as usize));
        };
        let error = io::Error::last_os_error();
        // `ENOSYS` and `EPERM` are also what a missing or filtered call
        // says; a file system may say `EPERM` too.
        if !matches!(error.raw_os_error(), Some(libc::ENOSYS | libc::EPERM))
            || call.state.load(Ordering::Relaxed) == PRESENT
        {
            return Some(Err(error));
        }
        if present(number) {
            call.state.store(PRESENT, Ordering::Relaxed);
            Some(Err(error))
        } else {
            call.state.store(MISSING, Ordering::Relaxed);
            None
        }
    }

    /// Whether the kernel has the call `number` and lets it through:
    /// asked with no room for its arguments, it says `EINVAL` before it
    /// looks at anything else, and does nothing.
    pub(super) fn present(number: libc::c_long) -> bool {
        // SAFETY: the call reads none of its pointers when the size of its
        // arguments is 0.
        let n = unsafe {
            libc::syscall(
                number,
                -1,
                c"".as_ptr(),
                0,
                c"".as_ptr(),
                std::ptr::null::<XattrArgs>(),
                0usize,
            )
        };
        n == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL)
    }

    /// Whether both calls are there (for the tests).
    #[cfg(test)]
    pub(super) fn both_present() -> bool {
        NUMBERED && present(SET.number) && present(GET.number)
    }

    /// `getxattrat` into `buf` (an empty one asks for the size).
    pub(super) fn get(
        place: Place<'_>,
        xattr: *const libc::c_char,
        buf: &mut [u8],
    ) -> Option<io::Result<usize>> {
        let args = XattrArgs {
            value: if buf.is_empty() {
                0
            } else {
                buf.as_mut_ptr() as u64
            },
            size: u32::try_from(buf.len()).unwrap_or(u32::MAX),
            flags: 0,
        };
        invoke(&GET, place, xattr, &args)
    }

    /// `setxattrat` of `value`.
    pub(super) fn set(
        place: Place<'_>,
        xattr: *const libc::c_char,
        value: &[u8],
    ) -> Option<io::Result<()>> {
        let args = XattrArgs {
            value: value.as_ptr() as u64,
            size: u32::try_from(value.len()).ok()?,
            flags: 0,
        };
        invoke(&SET, place, xattr, &args).map(|result| result.map(drop))
    }
}

/// Run `call` with the `*xattrat` form of `target`, when it has one: an
/// entry not followed, or a descriptor's entry in the thread's
/// `/proc/thread-self/fd` followed. `None` when there is none (a path, or no `/proc`).
fn with_place<R>(target: Target<'_>, call: impl FnOnce(at::Place<'_>) -> Option<R>) -> Option<R> {
    match target {
        Target::Path(..) => None,
        Target::Entry(dir, name) => call(at::Place {
            dir,
            name,
            flags: libc::AT_SYMLINK_NOFOLLOW,
        }),
        Target::Fd(fd) => crate::beneath::with_proc_entry(fd, |dir, name| {
            call(at::Place {
                dir,
                name,
                flags: 0,
            })
        })
        .flatten(),
    }
}

/// The path form of `target`, for kernels without the `*xattrat` calls:
/// an entry through its directory's `/proc/self/fd` name, not followed; a
/// descriptor's own `/proc/self/fd` name, followed.
fn path_form(target: Target<'_>) -> io::Result<(CString, Follow)> {
    match target {
        Target::Path(path, follow) => Ok((path.to_owned(), follow)),
        Target::Fd(fd) => Ok((fd_path(fd)?, Follow::Yes)),
        Target::Entry(dir, name) => {
            let mut path = crate::beneath::proc_path(dir).into_os_string().into_vec();
            path.push(b'/');
            path.extend_from_slice(name.to_bytes());
            Ok((
                c_path(Path::new(std::ffi::OsStr::from_bytes(&path)))?,
                Follow::No,
            ))
        }
    }
}

/// `getxattr` of an ACL attribute of `target` into `buf`; an empty `buf`
/// asks for the attribute's size.
fn get_acl_xattr(target: Target<'_>, kind: Kind, buf: &mut [u8]) -> io::Result<usize> {
    match with_place(target, |place| at::get(place, kind.xattr(), buf)) {
        Some(result) => result,
        None => get_acl_xattr_by_path(target, kind, buf),
    }
}

/// [`get_acl_xattr`] through [`path_form`].
fn get_acl_xattr_by_path(target: Target<'_>, kind: Kind, buf: &mut [u8]) -> io::Result<usize> {
    let name = kind.xattr();
    let ptr = if buf.is_empty() {
        std::ptr::null_mut()
    } else {
        buf.as_mut_ptr().cast()
    };
    let (path, follow) = path_form(target)?;
    // SAFETY: both strings are NUL-terminated; `ptr` is NULL with size 0 or
    // valid for writes of `buf.len()` bytes.
    let n = unsafe {
        match follow {
            Follow::No => libc::lgetxattr(path.as_ptr(), name, ptr, buf.len()),
            Follow::Yes => libc::getxattr(path.as_ptr(), name, ptr, buf.len()),
        }
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// The ACL of `kind`; `None` when the path has none of its own (or its
/// file system keeps none).
fn read_at(target: Target<'_>, kind: Kind) -> io::Result<Option<Acl>> {
    let mut buf = [0u8; READ_BUFFER];
    let result = match get_acl_xattr(target, kind, &mut buf) {
        Ok(n) => Acl::decode(&buf[..n]),
        Err(e) if e.raw_os_error() == Some(libc::ERANGE) => {
            let mut large = vec![0u8; get_acl_xattr(target, kind, &mut [])?];
            get_acl_xattr(target, kind, &mut large).and_then(|n| Acl::decode(&large[..n]))
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(acl) => Ok(Some(acl)),
        Err(e) if no_acl(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Bytes read at first for an ACL: 63 entries, more than most have.
const READ_BUFFER: usize = 512;

/// Whether an error reading an ACL says the path has none of its own (or
/// its file system keeps none).
fn no_acl(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENODATA) | Some(libc::EOPNOTSUPP)
    )
}

fn write_at(target: Target<'_>, kind: Kind, acl: &Acl) -> io::Result<()> {
    let bytes = acl.encode();
    match with_place(target, |place| at::set(place, kind.xattr(), &bytes)) {
        Some(result) => result,
        None => set_acl_xattr_by_path(target, kind, &bytes),
    }
}

/// `setxattr` of an ACL attribute of `target` through [`path_form`].
fn set_acl_xattr_by_path(target: Target<'_>, kind: Kind, bytes: &[u8]) -> io::Result<()> {
    let name = kind.xattr();
    let (path, follow) = path_form(target)?;
    // SAFETY: both strings are NUL-terminated; `bytes` is valid for reads.
    let rc = unsafe {
        match follow {
            Follow::No => {
                libc::lsetxattr(path.as_ptr(), name, bytes.as_ptr().cast(), bytes.len(), 0)
            }
            Follow::Yes => {
                libc::setxattr(path.as_ptr(), name, bytes.as_ptr().cast(), bytes.len(), 0)
            }
        }
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Read the ACL of `path` (not following symlinks); the minimal ACL from
/// `mode` when the path has none of its own. For trusted paths only (the
/// lab's own files): a plugin's paths go through [`read_fd`].
pub fn read(path: &Path, mode: u32) -> io::Result<Acl> {
    let acl = read_at(Target::Path(&c_path(path)?, Follow::No), Kind::Access)?;
    Ok(acl.unwrap_or_else(|| Acl::from_mode(mode)))
}

/// Write the ACL of `path` (the kernel also updates the mode bits from it).
/// For trusted paths only, as [`read`].
pub fn write(path: &Path, acl: &Acl) -> io::Result<()> {
    write_at(Target::Path(&c_path(path)?, Follow::No), Kind::Access, acl)
}

/// Read the ACL of the inode an open descriptor names (an `O_PATH` one
/// will do); the minimal ACL from `mode` when it has none of its own.
pub fn read_fd(fd: BorrowedFd<'_>, mode: u32) -> io::Result<Acl> {
    let acl = read_at(Target::Fd(fd), Kind::Access)?;
    Ok(acl.unwrap_or_else(|| Acl::from_mode(mode)))
}

/// Read the ACL of the entry `name` of the open directory `dir`, not
/// following a link; the minimal ACL from `mode` when it has none. What
/// is read may be another inode than a `stat` of the same name saw a
/// moment before: a walk reads this way only to find what needs a change,
/// and makes the change through a descriptor ([`read_fd`], [`write_fd`]).
pub fn read_entry(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<Acl> {
    let acl = read_at(Target::Entry(dir, name), Kind::Access)?;
    Ok(acl.unwrap_or_else(|| Acl::from_mode(mode)))
}

/// Whether the entry's own ACL, read as [`read_entry`] reads it,
/// gives `principal` what `right_is_read` asks whoever owns it
/// ([`Acl::grants_whoever_owns`]); `None` when it has no ACL of its own.
/// Decoded on the stack: a walk asks this of every file.
pub fn entry_grants_whoever_owns(
    dir: BorrowedFd<'_>,
    name: &CStr,
    principal: Principal,
    right_is_read: bool,
) -> io::Result<Option<bool>> {
    let mut buf = [0u8; READ_BUFFER];
    let target = Target::Entry(dir, name);
    match get_acl_xattr(target, Kind::Access, &mut buf) {
        Ok(n) => {
            let mut entries = [Entry::default(); (READ_BUFFER - 4) / 8];
            let mut count = 0;
            for (slot, entry) in entries.iter_mut().zip(parse(&buf[..n])?) {
                *slot = entry;
                count += 1;
            }
            Ok(Some(grants_whoever_owns(
                &entries[..count],
                principal,
                right_is_read,
            )))
        }
        // Too large for the buffer: read as any other.
        Err(e) if e.raw_os_error() == Some(libc::ERANGE) => Ok(read_at(target, Kind::Access)?
            .map(|acl| acl.grants_whoever_owns(principal, right_is_read))),
        Err(e) if no_acl(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Write the ACL of the inode an open descriptor names.
pub fn write_fd(fd: BorrowedFd<'_>, acl: &Acl) -> io::Result<()> {
    write_at(Target::Fd(fd), Kind::Access, acl)
}

/// Read the default ACL of the directory an open descriptor names (an
/// `O_PATH` one will do); `None` when it has none.
pub fn read_default_fd(fd: BorrowedFd<'_>) -> io::Result<Option<Acl>> {
    read_at(Target::Fd(fd), Kind::Default)
}

/// Write the default ACL of the directory an open descriptor names (the
/// kernel refuses one on anything but a directory).
pub fn write_default_fd(fd: BorrowedFd<'_>, acl: &Acl) -> io::Result<()> {
    write_at(Target::Fd(fd), Kind::Default, acl)
}

/// The name that reaches the inode `fd` names: its `/proc/self/fd` entry,
/// followed (extended attributes cannot be read or set through an
/// `O_PATH` descriptor itself, by any call).
fn fd_path(fd: BorrowedFd<'_>) -> io::Result<CString> {
    c_path(&crate::beneath::proc_path(fd))
}

/// The permission bits that `right` needs on a path with this metadata:
/// `read` is r (plus x on directories), `modify` and `full-control` are rw
/// (plus x on directories, and on files the owner may execute).
pub fn required_perm(right_is_read: bool, is_dir: bool, mode: u32) -> u16 {
    let exec = if is_dir || (!right_is_read && mode & 0o100 != 0) {
        EXECUTE
    } else {
        0
    };
    if right_is_read {
        READ | if is_dir { EXECUTE } else { 0 }
    } else {
        READ | WRITE | exec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip_in_kernel_order() {
        let acl = Acl {
            entries: vec![
                Entry {
                    tag: TAG_OTHER,
                    perm: 0,
                    id: UNDEFINED_ID,
                },
                Entry {
                    tag: TAG_USER,
                    perm: 5,
                    id: 33,
                },
                Entry {
                    tag: TAG_USER_OBJ,
                    perm: 7,
                    id: UNDEFINED_ID,
                },
                Entry {
                    tag: TAG_GROUP_OBJ,
                    perm: 5,
                    id: UNDEFINED_ID,
                },
                Entry {
                    tag: TAG_MASK,
                    perm: 5,
                    id: UNDEFINED_ID,
                },
            ],
        };
        let decoded = Acl::decode(&acl.encode()).unwrap();
        let tags: Vec<u16> = decoded.entries.iter().map(|e| e.tag).collect();
        assert_eq!(
            tags,
            vec![TAG_USER_OBJ, TAG_USER, TAG_GROUP_OBJ, TAG_MASK, TAG_OTHER]
        );
        assert!(Acl::decode(&[1, 0, 0, 0]).is_err());
        assert!(Acl::decode(&[2, 0, 0, 0, 1]).is_err());
    }

    #[test]
    fn effective_access_respects_owner_named_entries_and_mask() {
        let mut acl = Acl::from_mode(0o750);
        assert_eq!(acl.effective(Principal::User(0), 0, 0).1, 7);
        assert_eq!(acl.effective(Principal::Group(0), 0, 0).1, 5);
        assert_eq!(acl.effective(Principal::User(33), 0, 0).1, 0);

        acl.grant(Principal::User(33), 0, 0, READ | EXECUTE);
        assert_eq!(acl.effective(Principal::User(33), 0, 0).1, 5);
        let mask = acl.entries.iter().find(|e| e.tag == TAG_MASK).unwrap();
        assert_eq!(mask.perm, 5, "mask covers the group class");

        // A narrow mask limits a named entry until the grant widens it.
        acl.entries
            .iter_mut()
            .find(|e| e.tag == TAG_MASK)
            .unwrap()
            .perm = READ;
        assert_eq!(acl.effective(Principal::User(33), 0, 0).1, READ);
        acl.grant(Principal::User(33), 0, 0, READ | EXECUTE);
        assert_eq!(acl.effective(Principal::User(33), 0, 0).1, READ | EXECUTE);
    }

    /// Whatever the file's owner and owning group turn out to be, an ACL
    /// that `grants_whoever_owns` gives the principal what it needs; and
    /// for a principal with a named entry that is no owner, it agrees with
    /// `effective` when the owner's and owning group's entries give it
    /// too. Over random ACLs.
    #[test]
    fn granting_whoever_owns_agrees_with_the_status_for_every_owner() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n) as u16
        };
        let (mut fast, mut slow) = (0, 0);
        for _ in 0..20_000 {
            let mut entries = vec![
                entry(TAG_USER_OBJ, next(8), UNDEFINED_ID),
                entry(TAG_GROUP_OBJ, next(8), UNDEFINED_ID),
                entry(TAG_OTHER, next(8), UNDEFINED_ID),
            ];
            for _ in 0..next(3) {
                entries.push(entry(TAG_USER, next(8), u32::from(next(3))));
            }
            for _ in 0..next(3) {
                entries.push(entry(TAG_GROUP, next(8), u32::from(next(3))));
            }
            if next(4) != 0 {
                entries.push(entry(TAG_MASK, next(8), UNDEFINED_ID));
            }
            let acl = Acl { entries };
            let principal = if next(2) == 0 {
                Principal::User(u32::from(next(3)))
            } else {
                Principal::Group(u32::from(next(3)))
            };
            let is_read = next(2) == 0;
            let owner_bits = u32::from(acl.find(TAG_USER_OBJ, UNDEFINED_ID).unwrap().perm);
            let needed = required_perm(is_read, false, owner_bits << 6);
            if acl.grants_whoever_owns(principal, is_read) {
                fast += 1;
                for owner in 0..3 {
                    for group in 0..3 {
                        let (_, effective) = acl.effective(principal, owner, group);
                        assert_eq!(
                            effective & needed,
                            needed,
                            "{acl:?} {principal:?} owner {owner} group {group}"
                        );
                    }
                }
            } else {
                slow += 1;
            }
        }
        assert!(fast > 200 && slow > 1_000, "{fast} fast, {slow} slow");
    }

    #[test]
    fn the_undefined_id_is_no_wildcard_for_named_entries() {
        // uid 4294967295 is (uid_t)-1, the id the base entries carry: it
        // must not stand for whichever named entry comes first.
        let mut acl = Acl::from_mode(0o750);
        acl.grant(Principal::User(33), 0, 0, READ);
        let before = acl.clone();
        let nobody_at_all = Principal::User(UNDEFINED_ID);
        assert_eq!(acl.effective(nobody_at_all, 0, 0).1, 0);
        acl.grant(nobody_at_all, 0, 0, READ | WRITE);
        assert_eq!(
            acl.effective(Principal::User(33), 0, 0).1,
            READ,
            "user 33's entry is left alone: {acl:?}"
        );
        assert_ne!(acl, before);
        let group = Principal::Group(UNDEFINED_ID);
        let mut acl = Acl::from_mode(0o750);
        acl.grant(Principal::Group(100), 0, 0, READ);
        assert_eq!(acl.effective(group, 0, 0).1, 0);
    }

    #[test]
    fn large_acls_round_trip_through_the_file_system() {
        use std::os::unix::fs::MetadataExt;
        let file = tempfile::NamedTempFile::new().unwrap();
        let meta = file.as_file().metadata().unwrap();
        let mut acl = read(file.path(), meta.mode()).unwrap();
        for uid in 10_000..10_080 {
            acl.grant(Principal::User(uid), meta.uid(), meta.gid(), READ);
        }
        assert!(
            acl.encode().len() > 512,
            "larger than the first read buffer"
        );
        write(file.path(), &acl).unwrap();
        let back = read(file.path(), meta.mode()).unwrap();
        assert_eq!(
            Acl::decode(&back.encode()).unwrap(),
            Acl::decode(&acl.encode()).unwrap()
        );
        assert_eq!(
            back.effective(Principal::User(10_079), meta.uid(), meta.gid())
                .1,
            READ
        );
    }

    /// The check made on the stack for every file of a walk says what the
    /// decoded ACL says: no ACL, small ones giving and not giving the
    /// access, and one too large for the first read.
    #[test]
    fn the_check_on_the_stack_agrees_with_the_decoded_acl() {
        use std::os::fd::AsFd;
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let folder = crate::beneath::open_root(dir.path()).unwrap();
        let name = c"f";
        let path = dir.path().join("f");
        std::fs::write(&path, b"").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let (principal, other) = (Principal::User(10_001), Principal::Group(10_002));
        let check =
            |principal| entry_grants_whoever_owns(folder.as_fd(), name, principal, false).unwrap();
        assert_eq!(check(principal), None, "no ACL of its own");
        let mut base = read(&path, meta.mode()).unwrap();
        base.grant(principal, meta.uid(), meta.gid(), READ | WRITE);
        let mut sizes = Vec::new();
        // 5 entries; 63 and 64 (the most the first read holds, and one
        // more); 85.
        for extra in [0, 58, 59, 80] {
            let mut acl = base.clone();
            for uid in 20_000..20_000 + extra {
                acl.grant(Principal::User(uid), meta.uid(), meta.gid(), READ);
            }
            write(&path, &acl).unwrap();
            let decoded = read_entry(folder.as_fd(), name, meta.mode()).unwrap();
            for who in [principal, other] {
                assert_eq!(
                    check(who),
                    Some(decoded.grants_whoever_owns(who, false)),
                    "{who:?}, {extra} more entries"
                );
            }
            assert_eq!(check(principal), Some(true));
            assert_eq!(check(other), Some(false));
            sizes.push(acl.encode().len());
        }
        assert_eq!(sizes[1], READ_BUFFER - 4, "63 entries: {sizes:?}");
        assert!(sizes[2] > READ_BUFFER, "64 entries: {sizes:?}");
    }

    #[test]
    fn entries_print_like_getfacl() {
        let name = |p: Principal| match p {
            Principal::User(_) => "user:www-data".to_string(),
            Principal::Group(_) => "group:users".to_string(),
        };
        assert_eq!(
            entry_text(
                &Entry {
                    tag: TAG_USER,
                    perm: 5,
                    id: 33
                },
                name
            ),
            "user:www-data:r-x"
        );
        assert_eq!(
            entry_text(
                &Entry {
                    tag: TAG_GROUP_OBJ,
                    perm: 4,
                    id: UNDEFINED_ID
                },
                name
            ),
            "group::r--"
        );
    }

    fn entry(tag: u16, perm: u16, id: u32) -> Entry {
        Entry { tag, perm, id }
    }

    #[test]
    fn a_default_acl_starts_from_the_base_entries_as_setfacl_d_m_does() {
        // A folder whose access ACL names a group and narrows group::, as
        // `setfacl -m g:65534:rwx,g::r--` leaves it.
        let access = Acl {
            entries: vec![
                entry(TAG_USER_OBJ, 7, UNDEFINED_ID),
                entry(TAG_GROUP_OBJ, READ, UNDEFINED_ID),
                entry(TAG_GROUP, 7, 65534),
                entry(TAG_MASK, READ | EXECUTE, UNDEFINED_ID),
                entry(TAG_OTHER, 0, UNDEFINED_ID),
            ],
        };
        let mut default = Acl::default_base(&access);
        assert_eq!(default.named_entry(Principal::User(65534)).1, 0);
        default.grant_named(Principal::User(65534), READ | EXECUTE);
        // What `setfacl -d -m u:65534:rx` then shows with `getfacl -n`:
        // default:user::rwx, default:user:65534:r-x, default:group::r--,
        // default:mask::r-x, default:other::---.
        let setfacl = Acl {
            entries: vec![
                entry(TAG_USER_OBJ, 7, UNDEFINED_ID),
                entry(TAG_USER, READ | EXECUTE, 65534),
                entry(TAG_GROUP_OBJ, READ, UNDEFINED_ID),
                entry(TAG_MASK, READ | EXECUTE, UNDEFINED_ID),
                entry(TAG_OTHER, 0, UNDEFINED_ID),
            ],
        };
        assert_eq!(default.encode(), setfacl.encode());
        assert_eq!(
            default.named_entry(Principal::User(65534)).1,
            READ | EXECUTE
        );
        // Only named entries count in a default ACL, the owner's too.
        assert_eq!(
            Acl::default_base(&access).named_entry(Principal::User(0)).1,
            0
        );
        // Revoking the principal takes its default entry away again.
        assert!(default.revoke(Principal::User(65534)));
        assert_eq!(default.named_entry(Principal::User(65534)).1, 0);
        assert_eq!(default.encode(), Acl::default_base(&access).encode());
    }

    #[test]
    fn default_acls_round_trip_through_a_descriptor_on_folders_only() {
        use std::os::fd::AsFd;
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let fd = crate::beneath::open_root(dir.path()).unwrap();
        assert_eq!(read_default_fd(fd.as_fd()).unwrap(), None);
        let mode = std::fs::metadata(dir.path()).unwrap().mode();
        let mut default = Acl::default_base(&read_fd(fd.as_fd(), mode).unwrap());
        default.grant_named(Principal::Group(65534), READ | WRITE | EXECUTE);
        write_default_fd(fd.as_fd(), &default).unwrap();
        let back = read_default_fd(fd.as_fd()).unwrap().unwrap();
        assert_eq!(back.encode(), default.encode());
        assert_eq!(
            read_fd(fd.as_fd(), mode).unwrap(),
            Acl::from_mode(mode),
            "the access ACL is left alone"
        );

        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        let file_fd = crate::beneath::open_root(&file).unwrap();
        assert_eq!(read_default_fd(file_fd.as_fd()).unwrap(), None);
        assert!(write_default_fd(file_fd.as_fd(), &default).is_err());
    }

    /// One ACL, read every way a walk reads it: by name beneath an open
    /// folder, through an `O_PATH` descriptor and through one opened for
    /// reading, each by `*xattrat` and by path as kernels without those
    /// calls go; written through either descriptor, both ways.
    /// The probe that tells a missing call from a failing one says what
    /// the calls themselves do.
    #[test]
    fn the_xattrat_probe_agrees_with_the_calls() {
        use std::os::fd::AsFd;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"").unwrap();
        let folder = crate::beneath::open_root(dir.path()).unwrap();
        let place = at::Place {
            dir: folder.as_fd(),
            name: c"f",
            flags: libc::AT_SYMLINK_NOFOLLOW,
        };
        let answered = at::get(place, Kind::Access.xattr(), &mut [0u8; 512]).is_some();
        assert_eq!(at::both_present(), answered);
    }

    #[test]
    fn an_acl_reads_the_same_by_name_and_by_either_descriptor() {
        use std::os::fd::AsFd;
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        let mode = std::fs::metadata(&file).unwrap().mode();
        let folder = crate::beneath::open_root(dir.path()).unwrap();
        let by_path = crate::beneath::open_entry(folder.as_fd(), c"f").unwrap();
        let opened = std::fs::File::open(&file).unwrap();
        let by_path_form = |target: Target<'_>| {
            let mut buf = [0u8; 512];
            match get_acl_xattr_by_path(target, Kind::Access, &mut buf) {
                Ok(n) => Acl::decode(&buf[..n]).unwrap(),
                Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Acl::from_mode(mode),
                Err(e) => panic!("{e}"),
            }
        };
        let read_all = || {
            [
                read_entry(folder.as_fd(), c"f", mode).unwrap(),
                read_fd(by_path.as_fd(), mode).unwrap(),
                read_fd(opened.as_fd(), mode).unwrap(),
                read(&file, mode).unwrap(),
                by_path_form(Target::Entry(folder.as_fd(), c"f")),
                by_path_form(Target::Fd(by_path.as_fd())),
                by_path_form(Target::Fd(opened.as_fd())),
            ]
        };
        assert!(read_all().iter().all(|acl| *acl == Acl::from_mode(mode)));
        let mut granted = Acl::from_mode(mode);
        granted.grant(Principal::User(65534), 0, 0, READ);
        write_fd(opened.as_fd(), &granted).unwrap();
        for acl in read_all() {
            assert_eq!(acl.encode(), granted.encode());
        }
        let mut both = granted.clone();
        both.grant(Principal::Group(65534), 0, 0, READ | WRITE);
        write_fd(by_path.as_fd(), &both).unwrap();
        for acl in read_all() {
            assert_eq!(acl.encode(), both.encode());
        }
        let mut by_path_written = both.clone();
        by_path_written.grant(Principal::User(65533), 0, 0, WRITE);
        set_acl_xattr_by_path(
            Target::Fd(by_path.as_fd()),
            Kind::Access,
            &by_path_written.encode(),
        )
        .unwrap();
        for acl in read_all() {
            assert_eq!(acl.encode(), by_path_written.encode());
        }
        // By name, a link is not followed: it has no ACL of its own.
        std::os::unix::fs::symlink(&file, dir.path().join("link")).unwrap();
        let link = read_entry(folder.as_fd(), c"link", 0o777).unwrap();
        assert_eq!(link, Acl::from_mode(0o777));
        assert!(read_entry(folder.as_fd(), c"missing", 0).is_err());
    }
}
