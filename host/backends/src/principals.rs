//! Principals: who an access right is for. Plugins speak Windows names
//! (`NETWORK SERVICE`, `Users`); the policy maps them to local users and
//! groups (`user:www-data`, `group:users`, `uid:33`, `gid:100`).
//!
//! Names and ids are resolved through the system's name service switch
//! (`getpwnam_r`, `getgrnam_r`, `getpwuid_r`, `getgrgid_r`), so users and
//! groups from LDAP, SSSD or systemd count as well as those of
//! `/etc/passwd`. Nothing is kept between calls: on a long-running agent a
//! user may be renamed or created at any time, and the name service keeps
//! its own caches. One operation that names the owners of many paths asks
//! once per id through [`Names`], which lives only as long as it does.
//! Systems without a name service (Windows) know no names here: only
//! `uid:`/`gid:` parse, and ids are shown as numbers.

use crate::{BackendError, ErrorKind};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// `(uid_t)-1`: the id that stands for "none" (in `chown`, and in the
/// base entries of an access list), never a user's or a group's.
const NO_ID: u32 = u32::MAX;

/// A local user or group by numeric id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Principal {
    User(u32),
    Group(u32),
}

impl Principal {
    /// Parse `user:NAME`, `group:NAME`, `uid:N` or `gid:N`. The id
    /// 4294967295 (`(uid_t)-1`) is the kernel's "no id" and names no one.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let principal = Self::parse_any(spec)?;
        match principal {
            Self::User(NO_ID) => Err(format!("`{spec}`: uid {NO_ID} names no user")),
            Self::Group(NO_ID) => Err(format!("`{spec}`: gid {NO_ID} names no group")),
            _ => Ok(principal),
        }
    }

    fn parse_any(spec: &str) -> Result<Self, String> {
        let (kind, name) = spec
            .split_once(':')
            .ok_or_else(|| format!("`{spec}`: expected user:NAME, group:NAME, uid:N or gid:N"))?;
        let number = |n: &str| {
            n.parse::<u32>()
                .map_err(|_| format!("`{spec}`: `{n}` is not a numeric id"))
        };
        match kind {
            "uid" => Ok(Self::User(number(name)?)),
            "gid" => Ok(Self::Group(number(name)?)),
            "user" => match nss::user_id(name) {
                Ok(Some(uid)) => Ok(Self::User(uid)),
                Ok(None) => Err(format!("`{spec}`: no such user on this system")),
                Err(e) => Err(format!("`{spec}`: {e}")),
            },
            "group" => match nss::group_id(name) {
                Ok(Some(gid)) => Ok(Self::Group(gid)),
                Ok(None) => Err(format!("`{spec}`: no such group on this system")),
                Err(e) => Err(format!("`{spec}`: {e}")),
            },
            _ => Err(format!(
                "`{spec}`: expected user:NAME, group:NAME, uid:N or gid:N"
            )),
        }
    }

    /// `user:www-data`, or `uid:1234` when the id has no name (or the
    /// name service cannot be asked, or the name is not UTF-8).
    pub fn display(&self) -> String {
        match *self {
            Self::User(uid) => match nss::user_name(uid) {
                Ok(Some(name)) => format!("user:{name}"),
                Ok(None) => format!("uid:{uid}"),
                Err(e) => {
                    tracing::debug!(error = %e, "shown by number");
                    format!("uid:{uid}")
                }
            },
            Self::Group(gid) => match nss::group_name(gid) {
                Ok(Some(name)) => format!("group:{name}"),
                Ok(None) => format!("gid:{gid}"),
                Err(e) => {
                    tracing::debug!(error = %e, "shown by number");
                    format!("gid:{gid}")
                }
            },
        }
    }
}

/// System names of principals, each asked of the name service once for as
/// long as this value lives: made for one operation that names many paths
/// (a listing, a walk) and dropped with it, so that the next operation sees
/// a renamed or new user.
#[derive(Debug, Default)]
pub struct Names {
    known: Mutex<HashMap<Principal, String>>,
}

impl Names {
    /// [`Principal::display`], asked once per principal.
    pub fn display(&self, principal: Principal) -> String {
        if let Some(name) = lock(&self.known).get(&principal) {
            return name.clone();
        }
        // Asked without the lock held: a slow name service (LDAP) does not
        // hold up the other threads of a walk.
        let name = principal.display();
        lock(&self.known).insert(principal, name.clone());
        name
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Why the name service gave no answer (as opposed to "no such name").
#[derive(Debug, thiserror::Error)]
pub enum NssError {
    #[error("the system's name service could not be asked about {what}: {source}")]
    Failed {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the system's name service answers about {what} with an entry larger than {max_bytes} bytes"
    )]
    TooLarge { what: String, max_bytes: usize },
}

/// The reentrant lookups of the C library, which ask every source that
/// `/etc/nsswitch.conf` lists.
#[cfg(unix)]
mod nss {
    use super::NssError;
    use libc::{c_char, c_int};
    use std::ffi::{CStr, CString};
    use std::mem::MaybeUninit;

    /// The first buffer for an entry's strings: enough for nearly every
    /// user, and for groups of a few dozen members.
    const FIRST_BUFFER: usize = 1024;
    /// The largest buffer tried: a group of some hundred thousand members.
    const MAX_BUFFER: usize = 16 << 20;

    /// Call a `get*_r` lookup with a buffer, doubling it while the call
    /// answers `ERANGE`. `call` makes the call and, when it found an
    /// entry, reads what is wanted from it before the buffer is reused.
    fn with_buffer<T>(
        what: impl Fn() -> String,
        mut call: impl FnMut(&mut [c_char]) -> (c_int, Option<T>),
    ) -> Result<Option<T>, NssError> {
        let mut buf = vec![0 as c_char; FIRST_BUFFER];
        loop {
            let (rc, found) = call(&mut buf);
            match rc {
                0 => return Ok(found),
                libc::ERANGE if buf.len() < MAX_BUFFER => buf.resize(buf.len() * 2, 0),
                libc::ERANGE => {
                    return Err(NssError::TooLarge {
                        what: what(),
                        max_bytes: MAX_BUFFER,
                    });
                }
                libc::EINTR => {}
                // What some sources answer for "not found" (getpwnam_r(3)).
                libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => return Ok(None),
                errno => {
                    return Err(NssError::Failed {
                        what: what(),
                        source: std::io::Error::from_raw_os_error(errno),
                    });
                }
            }
        }
    }

    /// The error number a `get*_r` call answered: its return value, or
    /// `errno` when it returned -1 (as some sources do, nss_wrapper among
    /// them, instead of returning the number).
    fn errno_of(rc: c_int) -> c_int {
        if rc < 0 {
            std::io::Error::last_os_error()
                .raw_os_error()
                .filter(|&errno| errno > 0)
                .unwrap_or(libc::EIO)
        } else {
            rc
        }
    }

    /// A name the C library returned, if it is UTF-8.
    ///
    /// # Safety
    /// `name` is NULL or points to a NUL-terminated string.
    unsafe fn name_of(name: *const c_char) -> Option<String> {
        if name.is_null() {
            return None;
        }
        // SAFETY: not NULL, and NUL-terminated by the caller's contract.
        let name = unsafe { CStr::from_ptr(name) };
        name.to_str().ok().map(str::to_owned)
    }

    /// Look up an entry (`libc::passwd` or `libc::group`) by `lookup`, one
    /// of the reentrant `get*_r` calls, and read it with `read`.
    fn entry<E, T>(
        what: impl Fn() -> String,
        lookup: impl Fn(*mut E, *mut c_char, usize, *mut *mut E) -> c_int,
        read: impl Fn(&E) -> Option<T>,
    ) -> Result<Option<T>, NssError> {
        with_buffer(what, |buf| {
            let mut entry = MaybeUninit::<E>::zeroed();
            let mut result = std::ptr::null_mut();
            let rc = errno_of(lookup(
                entry.as_mut_ptr(),
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            ));
            // SAFETY: on success `result` is NULL or points to `entry`,
            // filled in, its strings in `buf`, both alive here.
            let found = (rc == 0 && !result.is_null())
                .then(|| read(unsafe { &*result }))
                .flatten();
            (rc, found)
        })
    }

    /// The uid of the user `name`; `None` when there is no such user.
    pub fn user_id(name: &str) -> Result<Option<u32>, NssError> {
        let Ok(c_name) = CString::new(name) else {
            return Ok(None);
        };
        entry(
            || format!("user `{name}`"),
            // SAFETY: every pointer is valid for the call, `len` is the
            // buffer's length.
            |pwd, buf, len, result| unsafe {
                libc::getpwnam_r(c_name.as_ptr(), pwd, buf, len, result)
            },
            |pwd| Some(pwd.pw_uid),
        )
    }

    /// The gid of the group `name`; `None` when there is no such group.
    pub fn group_id(name: &str) -> Result<Option<u32>, NssError> {
        let Ok(c_name) = CString::new(name) else {
            return Ok(None);
        };
        entry(
            || format!("group `{name}`"),
            // SAFETY: as in `user_id`.
            |grp, buf, len, result| unsafe {
                libc::getgrnam_r(c_name.as_ptr(), grp, buf, len, result)
            },
            |grp| Some(grp.gr_gid),
        )
    }

    /// The name of the user `uid`; `None` when it has none (or one that
    /// is not UTF-8).
    pub fn user_name(uid: u32) -> Result<Option<String>, NssError> {
        entry(
            || format!("uid {uid}"),
            // SAFETY: as in `user_id`.
            |pwd, buf, len, result| unsafe { libc::getpwuid_r(uid, pwd, buf, len, result) },
            // SAFETY: the entry's name is NULL or a string in the buffer.
            |pwd| unsafe { name_of(pwd.pw_name) },
        )
    }

    /// The name of the group `gid`; `None` as for [`user_name`].
    pub fn group_name(gid: u32) -> Result<Option<String>, NssError> {
        entry(
            || format!("gid {gid}"),
            // SAFETY: as in `user_id`.
            |grp, buf, len, result| unsafe { libc::getgrgid_r(gid, grp, buf, len, result) },
            // SAFETY: as in `user_name`.
            |grp| unsafe { name_of(grp.gr_name) },
        )
    }
}

/// No name service: no names.
#[cfg(not(unix))]
mod nss {
    use super::NssError;

    pub fn user_id(_name: &str) -> Result<Option<u32>, NssError> {
        Ok(None)
    }

    pub fn group_id(_name: &str) -> Result<Option<u32>, NssError> {
        Ok(None)
    }

    pub fn user_name(_uid: u32) -> Result<Option<String>, NssError> {
        Ok(None)
    }

    pub fn group_name(_gid: u32) -> Result<Option<String>, NssError> {
        Ok(None)
    }
}
/// Policy names of principals mapped to local ones. Lookups ignore case,
/// as Windows does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrincipalMap {
    by_name: BTreeMap<String, (String, Principal)>,
}

impl PrincipalMap {
    /// Map `name` (e.g. `NETWORK SERVICE`) to a local principal spec.
    pub fn insert(&mut self, name: &str, spec: &str) -> Result<(), String> {
        let principal = Principal::parse(spec)?;
        self.by_name
            .insert(name.to_lowercase(), (name.to_string(), principal));
        Ok(())
    }

    /// Parse `NAME=SPEC`, the form of `medic trigger --principal`.
    pub fn insert_spec(&mut self, mapping: &str) -> Result<(), String> {
        let (name, spec) = mapping.split_once('=').ok_or_else(|| {
            format!("`{mapping}`: expected NAME=user:NAME (or group:, uid:, gid:)")
        })?;
        self.insert(name.trim(), spec.trim())
    }

    /// Resolve a principal a plugin named.
    pub fn resolve(&self, name: &str) -> Result<Principal, BackendError> {
        if let Some((_, principal)) = self.by_name.get(&name.to_lowercase()) {
            return Ok(*principal);
        }
        Principal::parse(name).map_err(|_| {
            BackendError::new(
                ErrorKind::InvalidArgument,
                format!(
                    "unknown principal `{name}`: map it to a local user or group in the policy (e.g. `\"{name}\" = \"group:users\"`) or name one as user:NAME or group:NAME"
                ),
            )
        })
    }

    /// The policy name of a local principal, if it is mapped; otherwise its
    /// system name.
    pub fn name_of(&self, principal: Principal) -> String {
        self.by_name
            .values()
            .find(|(_, p)| *p == principal)
            .map(|(name, _)| name.clone())
            .unwrap_or_else(|| principal.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ids_and_names() {
        assert_eq!(Principal::parse("uid:33"), Ok(Principal::User(33)));
        assert_eq!(Principal::parse("gid:100"), Ok(Principal::Group(100)));
        #[cfg(unix)]
        assert_eq!(Principal::parse("user:root"), Ok(Principal::User(0)));
        assert!(Principal::parse("NETWORK SERVICE").is_err());
        assert!(Principal::parse("uid:x").is_err());
        // (uid_t)-1 and (gid_t)-1 name no one: the kernel's "no id".
        let none = Principal::parse("uid:4294967295").unwrap_err();
        assert!(none.contains("no user"), "{none}");
        assert!(Principal::parse("gid:4294967295").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn root_resolves_both_ways() {
        assert_eq!(Principal::parse("user:root"), Ok(Principal::User(0)));
        assert_eq!(Principal::parse("group:root"), Ok(Principal::Group(0)));
        assert_eq!(Principal::User(0).display(), "user:root");
        assert_eq!(Principal::Group(0).display(), "group:root");
        let names = Names::default();
        assert_eq!(names.display(Principal::User(0)), "user:root");
        assert_eq!(names.display(Principal::User(0)), "user:root");
    }

    #[test]
    fn unknown_names_are_errors_and_unknown_ids_show_as_numbers() {
        let user = Principal::parse("user:no-such-user-here").unwrap_err();
        assert!(user.contains("no such user"), "{user}");
        let group = Principal::parse("group:no-such-group-here").unwrap_err();
        assert!(group.contains("no such group"), "{group}");
        assert!(Principal::parse("user:nul\0byte").is_err());
        assert_eq!(Principal::User(4_000_000_123).display(), "uid:4000000123");
        assert_eq!(Principal::Group(4_000_000_123).display(), "gid:4000000123");
    }

    #[test]
    fn map_resolves_windows_names_ignoring_case() {
        let mut map = PrincipalMap::default();
        map.insert_spec("NETWORK SERVICE=uid:33").unwrap();
        assert_eq!(map.resolve("network service").unwrap(), Principal::User(33));
        assert_eq!(map.resolve("gid:5").unwrap(), Principal::Group(5));
        assert_eq!(map.name_of(Principal::User(33)), "NETWORK SERVICE");
        let err = map.resolve("Users").unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
        assert!(err.message.contains("map it"), "{}", err.message);
        assert!(map.insert_spec("no-equals-sign").is_err());
    }

    /// Set in the re-executed test binary that runs [`nss_only_lookups`].
    #[cfg(target_os = "linux")]
    const NSS_CHILD: &str = "MEDIC_TEST_NSS_WRAPPER_CHILD";

    /// A user and a group that only the name service knows (nss_wrapper's
    /// files, not /etc/passwd or /etc/group), with more members than the
    /// first lookup buffer holds.
    #[cfg(target_os = "linux")]
    const NSS_USER: (&str, u32) = ("medic-nss-only-user", 4_242_001);
    #[cfg(target_os = "linux")]
    const NSS_GROUP: (&str, u32) = ("medic-nss-only-group", 4_242_002);

    /// Where Debian and others put `libnss_wrapper.so`, this machine's
    /// architecture first (a multiarch system may also have another's).
    #[cfg(target_os = "linux")]
    fn nss_wrapper_library() -> Option<std::path::PathBuf> {
        let multiarch = format!("{}-linux-gnu", std::env::consts::ARCH);
        [
            format!("/usr/lib/{multiarch}"),
            format!("/lib/{multiarch}"),
            "/usr/lib64".into(),
            "/usr/lib".into(),
            "/usr/local/lib".into(),
        ]
        .into_iter()
        .map(|dir| std::path::Path::new(&dir).join("libnss_wrapper.so"))
        .find(|lib| lib.is_file())
    }

    /// Users and groups from the name service (as LDAP or SSSD would give
    /// them), not only from /etc/passwd and /etc/group: this test binary
    /// runs again under nss_wrapper, whose files hold a user and a group
    /// that the system files lack, and does the lookups there.
    #[cfg(target_os = "linux")]
    #[test]
    fn users_and_groups_known_only_to_the_name_service_resolve_both_ways() {
        let library = nss_wrapper_library().unwrap_or_else(|| {
            panic!(
                "libnss_wrapper.so not found: this test needs nss_wrapper \
                 (Debian package libnss-wrapper: apt-get install -y libnss-wrapper)"
            )
        });
        for (file, name) in [("/etc/passwd", NSS_USER.0), ("/etc/group", NSS_GROUP.0)] {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            assert!(
                !text.lines().any(|l| l.split(':').next() == Some(name)),
                "{name} is in {file}: the test needs a name only nss_wrapper knows"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let (passwd, group) = (dir.path().join("passwd"), dir.path().join("group"));
        std::fs::write(
            &passwd,
            format!(
                "root:x:0:0:root:/root:/bin/sh\n{}:x:{}:{}:medic test:/nonexistent:/bin/false\n",
                NSS_USER.0, NSS_USER.1, NSS_GROUP.1
            ),
        )
        .unwrap();
        let members: Vec<String> = (0..500).map(|i| format!("member-{i:04}")).collect();
        std::fs::write(
            &group,
            format!(
                "root:x:0:\n{}:x:{}:{},{}\n",
                NSS_GROUP.0,
                NSS_GROUP.1,
                NSS_USER.0,
                members.join(",")
            ),
        )
        .unwrap();
        let name = "principals::tests::nss_only_lookups";
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env("LD_PRELOAD", &library)
            .env("NSS_WRAPPER_PASSWD", &passwd)
            .env("NSS_WRAPPER_GROUP", &group)
            .env(NSS_CHILD, "1")
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
        assert!(
            !stderr.contains("cannot be preloaded"),
            "{} could not be preloaded; install this architecture's nss_wrapper \
             (Debian package libnss-wrapper):\n{stderr}",
            library.display()
        );
        assert!(
            output.status.success(),
            "the lookups under nss_wrapper failed:\n{stdout}\n{stderr}"
        );
        assert!(
            stdout.contains("name-service-only principals resolved"),
            "the helper test did not run:\n{stdout}\n{stderr}"
        );
    }

    /// The lookups, run only inside the re-executed binary (elsewhere it
    /// passes at once).
    #[cfg(target_os = "linux")]
    #[test]
    fn nss_only_lookups() {
        if std::env::var_os(NSS_CHILD).is_none() {
            return;
        }
        let (user, uid) = NSS_USER;
        let (group, gid) = NSS_GROUP;
        assert_eq!(
            Principal::parse(&format!("user:{user}")),
            Ok(Principal::User(uid))
        );
        assert_eq!(
            Principal::parse(&format!("group:{group}")),
            Ok(Principal::Group(gid))
        );
        assert_eq!(Principal::User(uid).display(), format!("user:{user}"));
        assert_eq!(Principal::Group(gid).display(), format!("group:{group}"));
        let names = Names::default();
        assert_eq!(
            names.display(Principal::Group(gid)),
            format!("group:{group}")
        );
        let mut map = PrincipalMap::default();
        map.insert("NETWORK SERVICE", &format!("user:{user}"))
            .unwrap();
        assert_eq!(
            map.resolve("network service").unwrap(),
            Principal::User(uid)
        );
        assert_eq!(
            map.resolve(&format!("group:{group}")).unwrap(),
            Principal::Group(gid)
        );
        assert!(Principal::parse("user:no-such-user-here").is_err());
        println!("name-service-only principals resolved");
    }
}
