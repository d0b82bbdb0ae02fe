//! [`AclApi`] on Windows. Files and folders through `std` (which reads
//! attributes without following reparse points); security descriptors
//! through a handle opened without following a reparse point at the last
//! component (`GetSecurityInfo`, `SetSecurityInfo`), so that what was
//! checked is what is changed; SIDs
//! through `ConvertStringSidToSidW`/`ConvertSidToStringSidW`; effective
//! rights through Authz (`AuthzAccessCheck` with `MAXIMUM_ALLOWED` against
//! the file's own descriptor, not `GetEffectiveRightsFromAclW`, which
//! ignores group memberships and fails on inherited deny entries);
//! account names through `LookupAccountSidW`.
//!
//! It only translates: every decision is in the modules above. Every
//! allocation the system makes is freed by a guard (`LocalMemory`,
//! `AuthzState`).

use super::acl::{Ace, AceFlags, AceKind, Dacl};
use super::{AclApi, DirEntry, NodeInfo, SecurityDescriptor, Sid};
use crate::{BackendError, ErrorKind, OpResult, io_error};
use std::collections::HashMap;
use std::ffi::c_void;
use std::os::windows::fs::{MetadataExt, OpenOptionsExt};
use std::os::windows::io::AsRawHandle;
use std::path::Path;
use std::ptr::{null, null_mut};
use std::sync::{Mutex, MutexGuard};
use windows_sys::Win32::Foundation::{
    ERROR_INSUFFICIENT_BUFFER, ERROR_SUCCESS, GetLastError, LUID, LocalFree, WIN32_ERROR,
};
use windows_sys::Win32::Security::Authorization::{
    AUTHZ_ACCESS_REPLY, AUTHZ_ACCESS_REQUEST, AUTHZ_CLIENT_CONTEXT_HANDLE,
    AUTHZ_RESOURCE_MANAGER_HANDLE, AUTHZ_RM_FLAG_NO_AUDIT, AUTHZ_SKIP_TOKEN_GROUPS,
    AuthzAccessCheck, AuthzAddSidsToContext, AuthzFreeContext, AuthzFreeResourceManager,
    AuthzInitializeContextFromSid, AuthzInitializeResourceManager, ConvertSidToStringSidW,
    ConvertStringSidToSidW, GetSecurityInfo, SE_FILE_OBJECT, SetSecurityInfo,
};
use windows_sys::Win32::Security::{
    ACCESS_ALLOWED_ACE, ACE_HEADER, ACL, ACL_REVISION, ACL_SIZE_INFORMATION, AclSizeInformation,
    AddAccessAllowedAceEx, AddAccessDeniedAceEx, DACL_SECURITY_INFORMATION,
    GROUP_SECURITY_INFORMATION, GetAce, GetAclInformation, GetLengthSid,
    GetSecurityDescriptorControl, InitializeAcl, LookupAccountSidW, OBJECT_SECURITY_INFORMATION,
    OWNER_SECURITY_INFORMATION, PROTECTED_DACL_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, PSID,
    SE_DACL_PROTECTED, SID_AND_ATTRIBUTES, SID_NAME_USE, SidTypeUser,
    UNPROTECTED_DACL_SECURITY_INFORMATION,
};
use windows_sys::Win32::Storage::FileSystem::{
    BY_HANDLE_FILE_INFORMATION, FILE_ATTRIBUTE_DIRECTORY, FILE_ATTRIBUTE_REPARSE_POINT,
    FILE_FLAG_BACKUP_SEMANTICS, FILE_FLAG_OPEN_REPARSE_POINT, FILE_READ_ATTRIBUTES,
    GetFileInformationByHandle,
};

/// `ACCESS_ALLOWED_ACE_TYPE` and `ACCESS_DENIED_ACE_TYPE` (`winnt.h`).
const ACCESS_ALLOWED_ACE_TYPE: u8 = 0;
const ACCESS_DENIED_ACE_TYPE: u8 = 1;
/// `MAXIMUM_ALLOWED` (`winnt.h`).
const MAXIMUM_ALLOWED: u32 = 0x0200_0000;
/// The largest ACL the 16-bit `AclSize` can describe.
const MAX_ACL_BYTES: usize = 0xFFFC;
/// `READ_CONTROL` and `WRITE_DAC` (`winnt.h`): what reading and writing a
/// DACL through a handle need.
const READ_CONTROL: u32 = 0x0002_0000;
const WRITE_DAC: u32 = 0x0004_0000;
/// `FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE`.
const SHARE_ALL: u32 = 0x7;
/// `SE_GROUP_ENABLED` (`winnt.h`).
const SE_GROUP_ENABLED: u32 = 0x4;
/// Everyone, Authenticated Users and Users: groups in every service
/// account's token (Authenticated Users is a member of Users).
const SERVICE_ACCOUNT_GROUPS: [&str; 3] = ["S-1-1-0", "S-1-5-11", "S-1-5-32-545"];
/// LocalSystem, LocalService, NetworkService.
const SERVICE_ACCOUNTS: [&str; 3] = ["S-1-5-18", "S-1-5-19", "S-1-5-20"];

/// `path` opened for its security descriptor without following a reparse
/// point at its last component, and refused if it is one: the handle names
/// what was checked, whatever is renamed or swapped in meanwhile.
fn open_for_security(path: &Path, write: bool) -> OpResult<std::fs::File> {
    let access = if write {
        READ_CONTROL | WRITE_DAC
    } else {
        READ_CONTROL
    };
    let file = std::fs::OpenOptions::new()
        .access_mode(access)
        .share_mode(SHARE_ALL)
        .custom_flags(FILE_FLAG_OPEN_REPARSE_POINT | FILE_FLAG_BACKUP_SEMANTICS)
        .open(path)
        .map_err(|e| io_error(path, &e))?;
    let attributes = file
        .metadata()
        .map_err(|e| io_error(path, &e))?
        .file_attributes();
    if attributes & FILE_ATTRIBUTE_REPARSE_POINT != 0 {
        return Err(BackendError::new(
            ErrorKind::Denied,
            format!(
                "{} is a reparse point (a link or junction); medic does not follow it",
                path.display()
            ),
        ));
    }
    Ok(file)
}

/// The system's NTFS security, for [`super::NtfsFileSystem`].
#[derive(Default)]
pub struct Win32Acl {
    /// Created on first use, kept for the agent's life.
    authz: Mutex<Option<AuthzState>>,
    /// Account names by SID (`None`: the system has none), since a walk
    /// names the same few SIDs over and over.
    names: Mutex<HashMap<Sid, Option<String>>>,
}

impl std::fmt::Debug for Win32Acl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Win32Acl").finish_non_exhaustive()
    }
}

impl Win32Acl {
    pub fn new() -> Self {
        Self::default()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// A system error code on `path` as the error a plugin sees.
fn win32_error(path: &Path, doing: &str, code: WIN32_ERROR) -> BackendError {
    let error = std::io::Error::from_raw_os_error(code as i32);
    let mut err = io_error(path, &error);
    err.message = format!("{}: {doing}: {error}", path.display());
    err
}

/// The thread's last error, on `path`.
fn last_error(path: &Path, doing: &str) -> BackendError {
    // SAFETY: GetLastError only reads the calling thread's error value.
    win32_error(path, doing, unsafe { GetLastError() })
}

/// A nul-terminated UTF-16 string.
fn wide(text: &str) -> Vec<u16> {
    text.encode_utf16().chain(Some(0)).collect()
}

/// Memory the system allocated with `LocalAlloc`, freed on drop.
struct LocalMemory(*mut c_void);

impl Drop for LocalMemory {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from a system call that allocates
            // with LocalAlloc and hands ownership to the caller; this guard
            // is its only owner and frees it once.
            unsafe { LocalFree(self.0) };
        }
    }
}

/// A SID in binary form.
struct BinarySid(LocalMemory);

impl BinarySid {
    fn new(sid: &Sid) -> OpResult<Self> {
        let text = wide(sid.as_str());
        let mut binary: PSID = null_mut();
        // SAFETY: `text` is nul-terminated and outlives the call; `binary`
        // receives a LocalAlloc'd SID, owned by the guard from here on.
        let ok = unsafe { ConvertStringSidToSidW(text.as_ptr(), &mut binary) };
        if ok == 0 {
            return Err(last_error(Path::new(sid.as_str()), "converting the SID"));
        }
        Ok(Self(LocalMemory(binary)))
    }

    fn as_psid(&self) -> PSID {
        self.0.0
    }
}

/// The text of a nul-terminated UTF-16 string.
///
/// # Safety
/// `text` must point to a nul-terminated UTF-16 string.
unsafe fn from_wide(text: *const u16) -> String {
    let mut len = 0;
    // SAFETY: the caller guarantees a terminating nul, so every unit up to
    // and including it is readable.
    while unsafe { *text.add(len) } != 0 {
        len += 1;
    }
    // SAFETY: the `len` units before the nul were just read.
    String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(text, len) })
}

/// The string form of a binary SID.
///
/// # Safety
/// `sid` must point to a valid SID.
unsafe fn sid_text(sid: PSID) -> Option<Sid> {
    let mut text = null_mut();
    // SAFETY: the caller guarantees `sid`; `text` receives a LocalAlloc'd
    // string, owned by the guard below.
    if unsafe { ConvertSidToStringSidW(sid, &mut text) } == 0 {
        return None;
    }
    let _text_memory = LocalMemory(text.cast());
    // SAFETY: the system just wrote a nul-terminated string there.
    Sid::parse(&unsafe { from_wide(text) }).ok()
}

/// A file's security descriptor as the system returned it; `owner` and
/// `dacl` point into it and live as long as it does.
struct Descriptor {
    memory: LocalMemory,
    owner: PSID,
    dacl: *mut ACL,
}

impl Descriptor {
    fn read(
        path: &Path,
        file: &std::fs::File,
        parts: OBJECT_SECURITY_INFORMATION,
    ) -> OpResult<Self> {
        let (mut owner, mut group, mut dacl, mut descriptor) =
            (null_mut(), null_mut(), null_mut(), null_mut());
        // SAFETY: the handle is open with READ_CONTROL for the call; the
        // out pointers are valid locals; `descriptor` receives a
        // LocalAlloc'd block (owner, group and DACL point into it), owned by
        // the guard.
        let status = unsafe {
            GetSecurityInfo(
                file.as_raw_handle(),
                SE_FILE_OBJECT,
                parts,
                &mut owner,
                &mut group,
                &mut dacl,
                null_mut(),
                &mut descriptor,
            )
        };
        if status != ERROR_SUCCESS {
            return Err(win32_error(path, "reading its security", status));
        }
        Ok(Self {
            memory: LocalMemory(descriptor),
            owner,
            dacl,
        })
    }

    fn as_ptr(&self) -> PSECURITY_DESCRIPTOR {
        self.memory.0
    }

    /// The DACL as the model holds it; `None` for a NULL DACL.
    fn dacl(&self, path: &Path) -> OpResult<Option<Dacl>> {
        if self.dacl.is_null() {
            return Ok(None);
        }
        let (mut control, mut revision) = (0u16, 0u32);
        // SAFETY: the descriptor is valid while `self` lives; the out
        // pointers are valid locals.
        if unsafe { GetSecurityDescriptorControl(self.as_ptr(), &mut control, &mut revision) } == 0
        {
            return Err(last_error(path, "reading its security descriptor"));
        }
        let mut size = ACL_SIZE_INFORMATION::default();
        // SAFETY: `self.dacl` is a valid ACL inside the descriptor; `size`
        // is a writable ACL_SIZE_INFORMATION of the length passed.
        let ok = unsafe {
            GetAclInformation(
                self.dacl,
                (&raw mut size).cast(),
                size_of::<ACL_SIZE_INFORMATION>() as u32,
                AclSizeInformation,
            )
        };
        if ok == 0 {
            return Err(last_error(path, "reading its access list"));
        }
        let mut dacl = Dacl::new(control & SE_DACL_PROTECTED != 0, Vec::new());
        for index in 0..size.AceCount {
            let mut entry: *mut c_void = null_mut();
            // SAFETY: `index` is below the ACL's entry count; `entry`
            // receives a pointer into the ACL.
            if unsafe { GetAce(self.dacl, index, &mut entry) } == 0 {
                return Err(last_error(path, "reading an access list entry"));
            }
            // SAFETY: every entry starts with an ACE_HEADER.
            let header = unsafe { entry.cast::<ACE_HEADER>().read_unaligned() };
            let kind = match header.AceType {
                ACCESS_ALLOWED_ACE_TYPE => AceKind::Allow,
                ACCESS_DENIED_ACE_TYPE => AceKind::Deny,
                other => {
                    dacl.unmodeled_types.push(other);
                    continue;
                }
            };
            let body = entry.cast::<ACCESS_ALLOWED_ACE>();
            // SAFETY: allowed and denied entries share the layout of
            // ACCESS_ALLOWED_ACE: the header, the mask, then the SID,
            // which starts at `SidStart` and lies within the entry.
            let (mask, sid) = unsafe {
                (
                    (&raw const (*body).Mask).read_unaligned(),
                    sid_text((&raw const (*body).SidStart).cast_mut().cast()),
                )
            };
            let sid = sid.ok_or_else(|| {
                BackendError::new(
                    ErrorKind::Failed,
                    format!(
                        "{}: an access list entry has an unreadable SID",
                        path.display()
                    ),
                )
            })?;
            dacl.aces.push(Ace {
                kind,
                sid,
                mask,
                flags: AceFlags::from_bits(header.AceFlags),
            });
        }
        Ok(Some(dacl))
    }
}

/// An Authz resource manager and a client context per SID, freed on drop.
struct AuthzState {
    manager: AUTHZ_RESOURCE_MANAGER_HANDLE,
    contexts: HashMap<Sid, AUTHZ_CLIENT_CONTEXT_HANDLE>,
}

// SAFETY: the handles name Authz objects that are not tied to the thread
// that made them; they are only used while the `Win32Acl` mutex is held.
unsafe impl Send for AuthzState {}

impl AuthzState {
    fn new(path: &Path) -> OpResult<Self> {
        let mut manager = null_mut();
        // SAFETY: no callbacks and no name are passed; `manager` receives
        // the handle, freed in Drop.
        let ok = unsafe {
            AuthzInitializeResourceManager(
                AUTHZ_RM_FLAG_NO_AUDIT,
                None,
                None,
                None,
                null(),
                &mut manager,
            )
        };
        if ok == 0 {
            return Err(last_error(path, "starting an Authz resource manager"));
        }
        Ok(Self {
            manager,
            contexts: HashMap::new(),
        })
    }

    /// The client context of `sid`, made once. For a user, Authz gathers
    /// its groups. Authz builds contexts from user SIDs only: for a group
    /// (Users), an alias or a service account (NETWORK SERVICE) its own
    /// token groups are skipped and the groups every such token holds are
    /// added (Everyone; for the service accounts also Authenticated Users
    /// and Users), so that an entry for one of them counts.
    fn context(&mut self, path: &Path, sid: &Sid) -> OpResult<AUTHZ_CLIENT_CONTEXT_HANDLE> {
        if let Some(&context) = self.contexts.get(sid) {
            return Ok(context);
        }
        let binary = BinarySid::new(sid)?;
        let is_user = lookup_account(sid).is_some_and(|(_, kind)| kind == SidTypeUser);
        let flags = if is_user { 0 } else { AUTHZ_SKIP_TOKEN_GROUPS };
        let mut context = null_mut();
        // SAFETY: the SID is valid while `binary` lives (Authz copies what
        // it needs); the manager is valid; `context` receives the handle,
        // freed in Drop.
        let ok = unsafe {
            AuthzInitializeContextFromSid(
                flags,
                binary.as_psid(),
                self.manager,
                null(),
                LUID {
                    LowPart: 0,
                    HighPart: 0,
                },
                null(),
                &mut context,
            )
        };
        if ok == 0 {
            return Err(last_error(
                path,
                &format!("gathering the groups of {sid} for an access check"),
            ));
        }
        if !is_user {
            let implied: &[&str] = if SERVICE_ACCOUNTS.contains(&sid.as_str()) {
                &SERVICE_ACCOUNT_GROUPS
            } else {
                &SERVICE_ACCOUNT_GROUPS[..1]
            };
            context = with_groups(path, context, implied)?;
        }
        self.contexts.insert(sid.clone(), context);
        Ok(context)
    }
}

/// `context` with `groups` added (a new context; the old one is freed).
fn with_groups(
    path: &Path,
    context: AUTHZ_CLIENT_CONTEXT_HANDLE,
    groups: &[&str],
) -> OpResult<AUTHZ_CLIENT_CONTEXT_HANDLE> {
    let sids = groups
        .iter()
        .map(|sid| Sid::parse(sid).map_err(|e| BackendError::new(ErrorKind::Failed, e)))
        .map(|sid| sid.and_then(|sid| BinarySid::new(&sid)))
        .collect::<OpResult<Vec<_>>>()?;
    let attributes: Vec<SID_AND_ATTRIBUTES> = sids
        .iter()
        .map(|sid| SID_AND_ATTRIBUTES {
            Sid: sid.as_psid(),
            Attributes: SE_GROUP_ENABLED,
        })
        .collect();
    let mut widened = null_mut();
    // SAFETY: `context` is a valid context; the SIDs live in `sids` for the
    // call (Authz copies them); no restricted SIDs; `widened` receives a
    // new context.
    let ok = unsafe {
        AuthzAddSidsToContext(
            context,
            attributes.as_ptr(),
            attributes.len() as u32,
            null(),
            0,
            &mut widened,
        )
    };
    // SAFETY: the original context is no longer needed either way, and is
    // freed once, here.
    unsafe { AuthzFreeContext(context) };
    if ok == 0 {
        return Err(last_error(path, "adding groups to an access check"));
    }
    Ok(widened)
}

impl Drop for AuthzState {
    fn drop(&mut self) {
        for &context in self.contexts.values() {
            // SAFETY: each context was made by AuthzInitializeContextFromSid
            // and is freed once, here.
            unsafe { AuthzFreeContext(context) };
        }
        // SAFETY: the manager was made by AuthzInitializeResourceManager
        // and is freed once, after its contexts.
        unsafe { AuthzFreeResourceManager(self.manager) };
    }
}

/// Milliseconds since the Unix epoch of a modification time.
fn millis(time: std::io::Result<std::time::SystemTime>) -> u64 {
    time.ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

fn node_info(meta: &std::fs::Metadata) -> NodeInfo {
    let attributes = meta.file_attributes();
    NodeInfo {
        is_dir: attributes & FILE_ATTRIBUTE_DIRECTORY != 0,
        reparse_point: attributes & FILE_ATTRIBUTE_REPARSE_POINT != 0,
        size: meta.len(),
        modified_ms: millis(meta.modified()),
    }
}

impl AclApi for Win32Acl {
    fn metadata(&self, path: &Path) -> OpResult<NodeInfo> {
        let meta = std::fs::symlink_metadata(path).map_err(|e| io_error(path, &e))?;
        Ok(node_info(&meta))
    }

    fn list(&self, path: &Path) -> OpResult<Vec<DirEntry>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(path).map_err(|e| io_error(path, &e))? {
            let entry = entry.map_err(|e| io_error(path, &e))?;
            // On Windows this comes from the directory listing itself and
            // does not follow a reparse point.
            let meta = entry.metadata().map_err(|e| io_error(&entry.path(), &e))?;
            out.push(DirEntry {
                name: entry.file_name(),
                info: node_info(&meta),
            });
        }
        Ok(out)
    }

    fn hard_links(&self, path: &Path) -> OpResult<u32> {
        let file = std::fs::OpenOptions::new()
            .access_mode(FILE_READ_ATTRIBUTES)
            .custom_flags(FILE_FLAG_OPEN_REPARSE_POINT | FILE_FLAG_BACKUP_SEMANTICS)
            .open(path)
            .map_err(|e| io_error(path, &e))?;
        let mut info = BY_HANDLE_FILE_INFORMATION::default();
        // SAFETY: the handle is open while `file` lives; `info` is a
        // writable BY_HANDLE_FILE_INFORMATION.
        if unsafe { GetFileInformationByHandle(file.as_raw_handle(), &mut info) } == 0 {
            return Err(last_error(path, "counting its names"));
        }
        Ok(info.nNumberOfLinks)
    }

    fn read_contents(&self, path: &Path, max_bytes: u32) -> OpResult<Vec<u8>> {
        use std::io::Read;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(FILE_FLAG_OPEN_REPARSE_POINT)
            .open(path)
            .map_err(|e| io_error(path, &e))?;
        // What was opened, not what the name pointed to a moment ago.
        let info = node_info(&file.metadata().map_err(|e| io_error(path, &e))?);
        if info.reparse_point || info.is_dir {
            return Err(BackendError::new(
                ErrorKind::Denied,
                format!("{} is no longer a regular file", path.display()),
            ));
        }
        let mut buf = Vec::new();
        file.take(u64::from(max_bytes))
            .read_to_end(&mut buf)
            .map_err(|e| io_error(path, &e))?;
        Ok(buf)
    }

    fn read_security(&self, path: &Path) -> OpResult<SecurityDescriptor> {
        let file = open_for_security(path, false)?;
        let descriptor = Descriptor::read(
            path,
            &file,
            OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION,
        )?;
        let owner = if descriptor.owner.is_null() {
            None
        } else {
            // SAFETY: a non-null owner points to a SID inside the
            // descriptor, which lives until the end of this function.
            unsafe { sid_text(descriptor.owner) }
        };
        Ok(SecurityDescriptor {
            owner,
            dacl: descriptor.dacl(path)?,
        })
    }

    fn write_dacl(&self, path: &Path, dacl: &Dacl) -> OpResult<()> {
        if !dacl.unmodeled_types.is_empty() {
            return Err(BackendError::new(
                ErrorKind::Unsupported,
                format!(
                    "{}: its access list holds entries medic does not model; it is not rewritten",
                    path.display()
                ),
            ));
        }
        let sids = dacl
            .aces
            .iter()
            .map(|ace| BinarySid::new(&ace.sid))
            .collect::<OpResult<Vec<_>>>()?;
        // The ACL header, then per entry the fixed part of an
        // ACCESS_ALLOWED_ACE (without its SidStart placeholder) and the SID.
        let entry_size = size_of::<ACCESS_ALLOWED_ACE>() - size_of::<u32>();
        let size = sids.iter().fold(size_of::<ACL>(), |total, sid| {
            // SAFETY: the SID is valid while `sid` lives.
            total + entry_size + unsafe { GetLengthSid(sid.as_psid()) } as usize
        });
        if size > MAX_ACL_BYTES {
            return Err(BackendError::new(
                ErrorKind::Unsupported,
                format!("{}: the access list would exceed 64 KiB", path.display()),
            ));
        }
        // u32 units: an ACL must be 4-byte aligned.
        let mut buffer = vec![0u32; size.div_ceil(4)];
        let acl = buffer.as_mut_ptr().cast::<ACL>();
        // SAFETY: `buffer` is writable, aligned and at least `size` bytes.
        if unsafe { InitializeAcl(acl, size as u32, ACL_REVISION) } == 0 {
            return Err(last_error(path, "building its access list"));
        }
        for (ace, sid) in dacl.aces.iter().zip(&sids) {
            let flags = u32::from(ace.flags.bits());
            // SAFETY: `acl` was initialized with room for every entry; the
            // SID is valid while `sid` lives.
            let ok = unsafe {
                match ace.kind {
                    AceKind::Allow => {
                        AddAccessAllowedAceEx(acl, ACL_REVISION, flags, ace.mask, sid.as_psid())
                    }
                    AceKind::Deny => {
                        AddAccessDeniedAceEx(acl, ACL_REVISION, flags, ace.mask, sid.as_psid())
                    }
                }
            };
            if ok == 0 {
                return Err(last_error(path, "building its access list"));
            }
        }
        let protection = if dacl.protected {
            PROTECTED_DACL_SECURITY_INFORMATION
        } else {
            UNPROTECTED_DACL_SECURITY_INFORMATION
        };
        let file = open_for_security(path, true)?;
        // SAFETY: the handle is open with WRITE_DAC and `acl` is a valid
        // ACL, both alive for the call; no owner, group or SACL is passed.
        // The call recomputes the inherited entries and propagates
        // inheritable ones to what the folder holds before it returns.
        let status = unsafe {
            SetSecurityInfo(
                file.as_raw_handle(),
                SE_FILE_OBJECT,
                DACL_SECURITY_INFORMATION | protection,
                null_mut(),
                null_mut(),
                acl,
                null(),
            )
        };
        if status != ERROR_SUCCESS {
            return Err(win32_error(path, "writing its access list", status));
        }
        Ok(())
    }

    fn effective_rights(&self, path: &Path, sid: &Sid) -> OpResult<u32> {
        // Authz wants the owner and group as well as the DACL.
        let file = open_for_security(path, false)?;
        let descriptor = Descriptor::read(
            path,
            &file,
            OWNER_SECURITY_INFORMATION | GROUP_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION,
        )?;
        let mut authz = lock(&self.authz);
        let state = match &mut *authz {
            Some(state) => state,
            none => none.insert(AuthzState::new(path)?),
        };
        let context = state.context(path, sid)?;
        let request = AUTHZ_ACCESS_REQUEST {
            DesiredAccess: MAXIMUM_ALLOWED,
            PrincipalSelfSid: null_mut(),
            ObjectTypeList: null_mut(),
            ObjectTypeListLength: 0,
            OptionalArguments: null_mut(),
        };
        let (mut granted, mut error) = (0u32, 0u32);
        let mut reply = AUTHZ_ACCESS_REPLY {
            ResultListLength: 1,
            GrantedAccessMask: &mut granted,
            SaclEvaluationResults: null_mut(),
            Error: &mut error,
        };
        // SAFETY: the context is valid while the Authz lock is held; the
        // request, the reply and the one-element result arrays it points
        // to are valid locals; the descriptor lives until the end of this
        // function; no audit event, extra descriptors or result handle.
        let ok = unsafe {
            AuthzAccessCheck(
                0,
                context,
                &request,
                null_mut(),
                descriptor.as_ptr(),
                null(),
                0,
                &mut reply,
                null_mut(),
            )
        };
        if ok == 0 {
            return Err(last_error(path, "checking access"));
        }
        // With MAXIMUM_ALLOWED, `error` is ERROR_ACCESS_DENIED when nothing
        // is granted, and `granted` is then 0.
        Ok(granted)
    }

    fn account_name(&self, sid: &Sid) -> Option<String> {
        if let Some(name) = lock(&self.names).get(sid) {
            return name.clone();
        }
        let name = lookup_account(sid).map(|(name, _)| name);
        lock(&self.names).insert(sid.clone(), name.clone());
        name
    }
}

/// `DOMAIN\name` of `sid` on this machine and what kind of account it is,
/// or `None` when it has none.
fn lookup_account(sid: &Sid) -> Option<(String, SID_NAME_USE)> {
    let binary = BinarySid::new(sid).ok()?;
    let (mut name_len, mut domain_len) = (64u32, 64u32);
    for _ in 0..2 {
        let mut name = vec![0u16; name_len as usize];
        let mut domain = vec![0u16; domain_len as usize];
        let mut kind: SID_NAME_USE = 0;
        // SAFETY: the SID is valid while `binary` lives; the buffers hold
        // the lengths passed, which the call updates.
        let ok = unsafe {
            LookupAccountSidW(
                null(),
                binary.as_psid(),
                name.as_mut_ptr(),
                &mut name_len,
                domain.as_mut_ptr(),
                &mut domain_len,
                &mut kind,
            )
        };
        if ok != 0 {
            let name = String::from_utf16_lossy(&name[..name_len as usize]);
            let domain = String::from_utf16_lossy(&domain[..domain_len as usize]);
            let name = if domain.is_empty() {
                name
            } else {
                format!("{domain}\\{name}")
            };
            return Some((name, kind));
        }
        // SAFETY: GetLastError only reads the calling thread's error value.
        if unsafe { GetLastError() } != ERROR_INSUFFICIENT_BUFFER {
            return None;
        }
    }
    None
}
