//! POSIX access control lists, read and written directly as the kernel's
//! `system.posix_acl_access` extended attribute (the format `getfacl` and
//! `setfacl` use), so that scanning a large tree costs one `lstat` and one
//! `lgetxattr` per path and writes happen only where something is missing.

use crate::Principal;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const ACL_XATTR: &[u8] = b"system.posix_acl_access\0";
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
        Self {
            entries: vec![
                Entry {
                    tag: TAG_USER_OBJ,
                    perm: bits(6),
                    id: UNDEFINED_ID,
                },
                Entry {
                    tag: TAG_GROUP_OBJ,
                    perm: bits(3),
                    id: UNDEFINED_ID,
                },
                Entry {
                    tag: TAG_OTHER,
                    perm: bits(0),
                    id: UNDEFINED_ID,
                },
            ],
        }
    }

    /// Decode the extended attribute's bytes.
    pub fn decode(bytes: &[u8]) -> io::Result<Self> {
        let invalid = || io::Error::new(io::ErrorKind::InvalidData, "malformed POSIX ACL");
        let (header, body) = bytes.split_at_checked(4).ok_or_else(invalid)?;
        if u32::from_le_bytes(header.try_into().map_err(|_| invalid())?) != ACL_VERSION
            || body.len() % 8 != 0
        {
            return Err(invalid());
        }
        let entries = body
            .chunks_exact(8)
            .map(|c| Entry {
                tag: u16::from_le_bytes([c[0], c[1]]),
                perm: u16::from_le_bytes([c[2], c[3]]),
                id: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        Ok(Self { entries })
    }

    /// Encode as the extended attribute's bytes, entries in kernel order.
    pub fn encode(&self) -> Vec<u8> {
        let mut entries = self.entries.clone();
        entries.sort_by_key(|e| (e.tag, e.id));
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
        self.entries
            .iter()
            .find(|e| e.tag == tag && (id == UNDEFINED_ID || e.id == id))
    }

    fn mask(&self) -> u16 {
        self.find(TAG_MASK, UNDEFINED_ID).map_or(7, |e| e.perm)
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

    /// Give `principal` at least `perm`, adding a named entry where needed
    /// and widening the mask to cover every group-class entry (as `setfacl`
    /// does).
    pub fn grant(&mut self, principal: Principal, owner: u32, group: u32, perm: u16) {
        let (decider, _) = self.effective(principal, owner, group);
        let id = match decider.tag {
            TAG_USER_OBJ | TAG_GROUP_OBJ => UNDEFINED_ID,
            _ => decider.id,
        };
        match self
            .entries
            .iter_mut()
            .find(|e| e.tag == decider.tag && e.id == id)
        {
            Some(entry) => entry.perm |= perm,
            None => self.entries.push(Entry {
                tag: decider.tag,
                perm,
                id,
            }),
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
                None => self.entries.push(Entry {
                    tag: TAG_MASK,
                    perm: union,
                    id: UNDEFINED_ID,
                }),
            }
        }
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

/// `(l)getxattr` of the ACL attribute into `buf`; an empty `buf` asks for
/// the attribute's size.
fn get_acl_xattr(path: &CString, follow: Follow, buf: &mut [u8]) -> io::Result<usize> {
    let ptr = if buf.is_empty() {
        std::ptr::null_mut()
    } else {
        buf.as_mut_ptr().cast()
    };
    let name = ACL_XATTR.as_ptr().cast();
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

fn read_at(path: &CString, follow: Follow, mode: u32) -> io::Result<Acl> {
    let mut buf = [0u8; 512];
    let result = match get_acl_xattr(path, follow, &mut buf) {
        Ok(n) => Acl::decode(&buf[..n]),
        Err(e) if e.raw_os_error() == Some(libc::ERANGE) => {
            let mut large = vec![0u8; get_acl_xattr(path, follow, &mut [])?];
            get_acl_xattr(path, follow, &mut large).and_then(|n| Acl::decode(&large[..n]))
        }
        Err(e) => Err(e),
    };
    match result {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENODATA) | Some(libc::EOPNOTSUPP)
            ) =>
        {
            Ok(Acl::from_mode(mode))
        }
        other => other,
    }
}

fn write_at(path: &CString, follow: Follow, acl: &Acl) -> io::Result<()> {
    let bytes = acl.encode();
    let name = ACL_XATTR.as_ptr().cast();
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
    read_at(&c_path(path)?, Follow::No, mode)
}

/// Write the ACL of `path` (the kernel also updates the mode bits from it).
/// For trusted paths only, as [`read`].
pub fn write(path: &Path, acl: &Acl) -> io::Result<()> {
    write_at(&c_path(path)?, Follow::No, acl)
}

/// Read the ACL of the inode an open descriptor names (an `O_PATH` one
/// will do); the minimal ACL from `mode` when it has none of its own.
pub fn read_fd(fd: std::os::fd::BorrowedFd<'_>, mode: u32) -> io::Result<Acl> {
    read_at(&c_path(&crate::beneath::proc_path(fd))?, Follow::Yes, mode)
}

/// Write the ACL of the inode an open descriptor names.
pub fn write_fd(fd: std::os::fd::BorrowedFd<'_>, acl: &Acl) -> io::Result<()> {
    write_at(&c_path(&crate::beneath::proc_path(fd))?, Follow::Yes, acl)
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
}
