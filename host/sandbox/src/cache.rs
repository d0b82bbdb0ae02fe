//! The on-disk cache of compiled components, keyed by the component's
//! content hash and the engine's compatibility hash, so that a restart or a
//! reload of an unchanged plugin does not compile it again.
//!
//! Compiled code is loaded as native code with `Component::deserialize`,
//! which trusts its input. So the cache trusts nothing it did not write:
//! - the folder must belong to the agent's user and be writable by no one
//!   else (the runtime refuses to start otherwise); it is opened once, not
//!   through a link, checked through that descriptor, and every entry and
//!   the key are reached beneath it, so renaming folders around it later
//!   changes nothing;
//! - each entry's code has a MAC of its name and contents beside it, in a
//!   `.mac` file (keyed BLAKE3, several times faster than HMAC-SHA256 on
//!   the 35 MiB entry of a Python or JavaScript plugin) under a key that
//!   lives in the folder, readable by the agent alone; an entry whose code
//!   does not match is deleted and compiled again, never run;
//! - only components that loaded (linked and described themselves) are
//!   written: a rejected component leaves nothing behind;
//! - opening the cache removes, of the files of its own making (their names
//!   say which), entries nothing will look for again: of this engine in an
//!   earlier format, or of another engine (another medic version) written
//!   more than a week ago; and temporary files more than an hour old, of
//!   writes that never finished.
//!
//! On Unix an entry is not read but mapped: the MAC is computed over a
//! read-only mapping of the file, and wasmtime maps the same file (reopened
//! through `/proc/self/fd`, so the same inode) instead of copying the code
//! into memory of its own. A large plugin loads from the cache in a few
//! milliseconds, and its code is page cache the kernel can share and
//! reclaim. But a plugin then runs from that file for as long as it is
//! loaded, and a private mapping still shows later writes to pages not
//! yet copied: the MAC vouches for the file as it was. So the file itself
//! must be one no one else can change: the lookup uses an entry only when
//! it belongs to the agent's user, has mode 600 (no ACL entries) and one
//! link, in a folder still private at that moment, and the agent never
//! writes an entry in place (it writes a new file and renames it over the
//! old one). What is left is that user (root) changing or truncating an
//! entry by hand while it is loaded, which can crash the agent (a
//! truncated mapping faults on the next instance).

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::Engine;
use wasmtime::component::Component;

/// Bytes of an entry's authentication code.
const MAC_LEN: usize = 32;

/// The entries' format, part of their names: entries of an earlier format
/// (authenticated with HMAC-SHA256, or with the MAC at the start of the
/// code's file) are not looked for.
const ENTRY_FORMAT: &str = "b3m";

/// The file holding the cache's key.
const KEY_FILE: &str = "cache.key";

/// Where compiled components are kept; `None` disables caching.
#[derive(Clone)]
pub struct CompileCache {
    dir: Option<PathBuf>,
    /// The folder, opened once and checked: every entry and the key are
    /// reached beneath this, so swapping the folder's name afterwards
    /// changes nothing.
    folder: Option<Arc<Folder>>,
    key: [u8; 32],
    engine_key: String,
}

impl std::fmt::Debug for CompileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompileCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// The cache folder cannot be trusted or prepared.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot prepare the compile cache {}: {cause}", dir.display())]
    Io { dir: PathBuf, cause: std::io::Error },
    #[error(
        "refusing the compile cache {}: {reason}; compiled code in it is run as native code, so it must belong to this user and be writable by no one else (fix it, e.g. `chown $(id -u) DIR && chmod 700 DIR`, or point the cache elsewhere)",
        dir.display()
    )]
    Untrusted { dir: PathBuf, reason: String },
}

/// The hex SHA-256 of a component's bytes, its identity in audit records.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A component's bytes with their [`content_hash`], computed once: the
/// hash a load keys the cache and shared code with is always the one of
/// the bytes it compiles.
#[derive(Clone)]
pub struct HashedComponent {
    bytes: Arc<[u8]>,
    hash: String,
}

impl HashedComponent {
    pub fn new(bytes: impl Into<Arc<[u8]>>) -> Self {
        let bytes = bytes.into();
        let hash = content_hash(&bytes);
        Self { bytes, hash }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The hex SHA-256 of the bytes.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The bytes, shared rather than copied (for a background compile).
    pub(crate) fn shared_bytes(&self) -> Arc<[u8]> {
        Arc::clone(&self.bytes)
    }
}

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// Taken from a plugin loaded from the same component already: the
    /// cache was not read ([`crate::shared`]).
    Shared,
    /// Loaded from the cache.
    Hit,
    /// Compiled, and stored in the cache.
    Compiled,
    /// Compiled; the cache is disabled or could not be written.
    Uncached,
    /// Compiled by the quick tier (Winch), serving while Cranelift compiles
    /// it in the background and stores it in the cache ([`crate::tier`]).
    Quick,
}

/// Return to the system what the allocator kept of freed memory; done
/// when a compile fails and when a [`Compiled`] is dropped (loaded and
/// stored, or refused).
///
/// Compiling a component of an interpreter (a Python or JavaScript plugin,
/// 12-18 MB) allocates and frees some 250 MiB; glibc keeps freed memory in
/// its arenas, and the agent stayed that much larger after every such
/// compile until it exited.
pub(crate) fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// An engine that compiles what `engine` runs: the same configuration,
/// without its pool of instances (compiling instantiates nothing).
fn compiling_engine(engine: &Engine) -> wasmtime::Result<Engine> {
    let mut config = engine.config().clone();
    config.allocation_strategy(wasmtime::InstanceAllocationStrategy::OnDemand);
    Engine::new(&config)
}

/// A component compiled now, not yet written to the cache.
pub struct Compiled {
    pub component: Component,
    code: Vec<u8>,
}

impl Drop for Compiled {
    fn drop(&mut self) {
        drop(std::mem::take(&mut self.code));
        give_back_freed_memory();
    }
}

impl CompileCache {
    /// A cache in `dir` (created if missing), after checking that no one
    /// else can write it; `None` disables caching.
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> Result<Self, CacheError> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = format!("{:016x}", hasher.finish());
        let (folder, key) = match &dir {
            Some(dir) => {
                let folder = Folder::open(dir)?;
                let key = folder.key()?;
                let swept = folder.sweep(&engine_key);
                if swept > 0 {
                    tracing::info!(
                        dir = %dir.display(),
                        files = swept,
                        "removed compiled components of another format or engine, and unfinished writes"
                    );
                }
                (Some(Arc::new(folder)), key)
            }
            None => (None, [0; 32]),
        };
        Ok(Self {
            dir,
            folder,
            key,
            engine_key,
        })
    }

    /// The file of the compiled code for the component `hash`.
    fn entry_name(&self, hash: &str) -> String {
        format!("{hash}{}", entry_ending(&self.engine_key))
    }

    /// The file of the MAC of the entry `entry`.
    fn mac_name(entry: &str) -> String {
        format!("{entry}.mac")
    }

    #[cfg(test)]
    fn entry(&self, hash: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|dir| dir.join(self.entry_name(hash)))
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    fn mac(&self, name: &str) -> blake3::Hasher {
        let mut mac = blake3::Hasher::new_keyed(&self.key);
        mac.update(&(name.len() as u64).to_le_bytes());
        mac.update(name.as_bytes());
        mac
    }

    /// The cached component for `hash`, if the cache holds an authentic
    /// one. An entry that fails authentication is deleted.
    pub fn lookup(&self, engine: &Engine, hash: &str) -> Option<Component> {
        let folder = self.folder.as_ref()?;
        let entry = self.entry_name(hash);
        let mac_file = Self::mac_name(&entry);
        let tag = folder.read(&mac_file).ok()?;
        let code = match folder.code(&entry) {
            Ok(code) => code,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(entry, "not using a compiled component: {e}");
                return None;
            }
        };
        let mut mac = self.mac(&entry);
        mac.update(code.bytes());
        // Compared in constant time.
        let authentic = <[u8; MAC_LEN]>::try_from(tag.as_slice())
            .is_ok_and(|tag| mac.finalize() == blake3::Hash::from_bytes(tag));
        if !authentic {
            tracing::warn!(
                entry,
                "deleting a compiled component that fails authentication"
            );
            // Unless another agent has replaced it meanwhile (its new code
            // read with the old MAC): then the next lookup finds the pair.
            if folder.remove_code(&entry, &code) {
                folder.remove(&mac_file);
            }
            return None;
        }
        // SAFETY: the code was written by this agent (it carries a valid
        // MAC under the key only this user can read) with
        // `precompile_component` for an engine with the same compatibility
        // hash (part of the name); wasmtime also checks the header.
        match unsafe { code.deserialize(engine) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(entry, "discarding unreadable compiled component: {e}");
                None
            }
        }
    }

    /// Compile `bytes` for `engine`; nothing is written until
    /// [`CompileCache::store`].
    ///
    /// The compile is made by an engine of its own, of `engine`'s
    /// configuration, dropped with it: an engine keeps Cranelift's working
    /// memory of every thread that ever compiled for it, each sized for
    /// the largest function it compiled (an interpreter's loop, in a
    /// Python or JavaScript plugin), for as long as it lives; the agent's
    /// engine lives as long as the agent.
    pub fn compile(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Compiled> {
        let code = compiling_engine(engine)
            .and_then(|compiler| compiler.precompile_component(bytes))
            .inspect_err(|_| give_back_freed_memory())?;
        // SAFETY: `code` was produced just now by an engine of the same
        // configuration (wasmtime checks that they agree).
        let component = unsafe { Component::deserialize(engine, &code)? };
        Ok(Compiled { component, code })
    }

    /// Write a component that loaded to the cache; says how it went.
    pub fn store(&self, hash: &str, compiled: &Compiled) -> CacheUse {
        let Some(folder) = &self.folder else {
            return CacheUse::Uncached;
        };
        let entry = self.entry_name(hash);
        let mut mac = self.mac(&entry);
        mac.update(&compiled.code);
        // The code first: a reader between the two renames finds the new
        // code with the old MAC (or none), refuses it and compiles.
        let written = folder
            .write(&entry, &compiled.code)
            .and_then(|()| folder.write(&Self::mac_name(&entry), mac.finalize().as_bytes()));
        match written {
            Ok(()) => CacheUse::Compiled,
            Err(e) => {
                tracing::warn!(entry, "cannot write compiled component to the cache: {e}");
                CacheUse::Uncached
            }
        }
    }
}

/// How the name of every entry of this format for the engine `engine_key`
/// ends.
fn entry_ending(engine_key: &str) -> String {
    format!("-{engine_key}-{ENTRY_FORMAT}.cwasm")
}

/// A temporary file older than this is what a write that never finished
/// left (a write takes well under a second).
const UNFINISHED_WRITE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Entries of another engine are kept this long after they were written,
/// in case a medic of that version still uses the folder.
const OTHER_ENGINE_KEPT: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// What a name in the cache folder is, for the sweep at start. Only names
/// of the cache's own making count: `{64 hex}-{16 hex}[-FORMAT].cwasm`,
/// that with `.mac`, and either (or the key) with a temporary ending.
#[derive(Debug, PartialEq)]
enum Found {
    /// Code or MAC of an entry this engine and format look for.
    Current,
    /// Code or MAC of an entry of this engine in an earlier format: never
    /// looked for again.
    EarlierFormat,
    /// Code or MAC of an entry of another engine (another medic version).
    OtherEngine,
    /// A file written under [`temporary_name`] (or the earlier
    /// `{64 hex}-{16 hex}.tmp{pid}`), to be renamed.
    Temporary,
    /// Anything else: left alone.
    Other,
}

impl Found {
    /// What `name` is, for the engine `engine_key`.
    fn of(name: &str, engine_key: &str) -> Self {
        if let Some((written, suffix)) = name.rsplit_once(".tmp")
            && is_temporary_suffix(suffix)
            && (written == KEY_FILE
                || entry_parts(written).is_some()
                || stem_parts(written).is_some_and(|(_, format)| format.is_none()))
        {
            return Self::Temporary;
        }
        match entry_parts(name) {
            None => Self::Other,
            Some((engine, _)) if engine != engine_key => Self::OtherEngine,
            Some((_, Some(ENTRY_FORMAT))) => Self::Current,
            Some(_) => Self::EarlierFormat,
        }
    }
}

/// The engine key and format of the entry code or MAC file `name`.
fn entry_parts(name: &str) -> Option<(&str, Option<&str>)> {
    let code = name.strip_suffix(".mac").unwrap_or(name);
    stem_parts(code.strip_suffix(".cwasm")?)
}

/// `{64 hex}-{16 hex}[-FORMAT]`: the engine key and format.
fn stem_parts(stem: &str) -> Option<(&str, Option<&str>)> {
    let hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let (hash, rest) = stem.split_at_checked(64)?;
    let rest = rest.strip_prefix('-')?;
    let (engine, format) = match rest.split_once('-') {
        Some((engine, format)) => (engine, Some(format)),
        None => (rest, None),
    };
    let format_ok = format.is_none_or(|format| {
        !format.is_empty()
            && format
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    });
    (hex(hash) && engine.len() == 16 && hex(engine) && format_ok).then_some((engine, format))
}

/// What follows `.tmp` in a temporary name: `{pid}.{n}`, or `{pid}` alone
/// as earlier versions wrote it.
fn is_temporary_suffix(suffix: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match suffix.split_once('.') {
        Some((pid, write)) => digits(pid) && digits(write),
        None => digits(suffix),
    }
}

/// A name to write `name`'s new contents under before renaming it: its
/// own to this process and write, so that two threads storing the same
/// entry never write into one file.
fn temporary_name(name: &str) -> String {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let write = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{name}.tmp{}.{write}", std::process::id())
}

/// Why others than this agent's user could change what `stat` describes:
/// it belongs to another user, or its mode has bits of `others_mask`
/// (`0o022` for a folder no one else may write, `0o077` for a file no one
/// else may touch; an ACL's named entries show in the group bits).
#[cfg(unix)]
fn others_can_write(stat: &rustix::fs::Stat, others_mask: u32) -> Option<String> {
    let me = rustix::process::geteuid().as_raw();
    if stat.st_uid != me {
        return Some(format!(
            "it belongs to user {}, not to this agent's user {me}",
            stat.st_uid
        ));
    }
    if stat.st_mode & others_mask != 0 {
        return Some(format!(
            "its mode {:o} lets others in",
            stat.st_mode & 0o7777
        ));
    }
    None
}

/// The cache folder, opened once (not through a link) and checked to be a
/// folder of this user's that no one else can write; the key and every
/// entry are reached beneath its descriptor.
struct Folder {
    dir: PathBuf,
    #[cfg(unix)]
    fd: rustix::fd::OwnedFd,
}

impl Folder {
    fn io(&self, cause: std::io::Error) -> CacheError {
        CacheError::Io {
            dir: self.dir.clone(),
            cause,
        }
    }

    fn untrusted(&self, reason: String) -> CacheError {
        CacheError::Untrusted {
            dir: self.dir.clone(),
            reason,
        }
    }

    /// Create `dir` (mode 700) if needed, open it and check it.
    fn open(dir: &Path) -> Result<Self, CacheError> {
        let io = |cause| CacheError::Io {
            dir: dir.to_path_buf(),
            cause,
        };
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(io)?;
        #[cfg(unix)]
        {
            use rustix::fs::{FileType, Mode, OFlags};
            let untrusted = |reason: String| CacheError::Untrusted {
                dir: dir.to_path_buf(),
                reason,
            };
            let fd = rustix::fs::open(
                dir,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| match e {
                rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => {
                    untrusted("it is not a folder (a symbolic link?)".into())
                }
                e => io(e.into()),
            })?;
            let stat = rustix::fs::fstat(&fd).map_err(|e| io(e.into()))?;
            if FileType::from_raw_mode(stat.st_mode) != FileType::Directory {
                return Err(untrusted("it is not a folder".into()));
            }
            if let Some(reason) = others_can_write(&stat, 0o022) {
                return Err(untrusted(reason));
            }
            Ok(Self {
                dir: dir.to_path_buf(),
                fd,
            })
        }
        #[cfg(not(unix))]
        {
            if std::fs::symlink_metadata(dir)
                .map_err(io)?
                .file_type()
                .is_symlink()
            {
                return Err(CacheError::Untrusted {
                    dir: dir.to_path_buf(),
                    reason: "it is not a folder (a symbolic link?)".into(),
                });
            }
            Ok(Self {
                dir: dir.to_path_buf(),
            })
        }
    }

    /// Remove what earlier runs left (each entry is 1-40 MiB): entries of
    /// the engine `engine_key` in an earlier format, which nothing will
    /// look for again; entries of another engine written more than
    /// [`OTHER_ENGINE_KEPT`] ago; temporary files older than
    /// [`UNFINISHED_WRITE`], of writes that never finished. How many
    /// files went.
    fn sweep(&self, engine_key: &str) -> usize {
        let mut removed = 0;
        for name in self.names() {
            let older_than = |limit| self.age(&name).is_some_and(|age| age > limit);
            let gone = match Found::of(&name, engine_key) {
                Found::EarlierFormat => true,
                Found::OtherEngine => older_than(OTHER_ENGINE_KEPT),
                Found::Temporary => older_than(UNFINISHED_WRITE),
                Found::Current | Found::Other => false,
            };
            if gone && self.remove(&name) {
                removed += 1;
            }
        }
        removed
    }

    /// The cache's key: read, or made (32 random bytes, mode 600) on first
    /// use; the first process to make one wins.
    fn key(&self) -> Result<[u8; 32], CacheError> {
        match self.read(KEY_FILE) {
            Ok(bytes) => {
                return bytes.try_into().map_err(|_| {
                    self.untrusted(format!("its key file {KEY_FILE} is not 32 bytes"))
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.io(e)),
        }
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| self.io(std::io::Error::other(e.to_string())))?;
        let tmp = format!("{KEY_FILE}.tmp{}", std::process::id());
        self.create(&tmp, &key, 0o600).map_err(|e| self.io(e))?;
        let linked = self.link(&tmp, KEY_FILE);
        self.remove(&tmp);
        match linked {
            Ok(()) => Ok(key),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => self.key(),
            Err(e) => Err(self.io(e)),
        }
    }
}

#[cfg(unix)]
impl Folder {
    /// The file `name` in the folder, opened for reading (not through a
    /// link, without blocking).
    fn open_file(&self, name: &str) -> std::io::Result<rustix::fd::OwnedFd> {
        use rustix::fs::{Mode, OFlags};
        Ok(rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )?)
    }

    /// The whole of the file `name` in the folder (not through a link).
    fn read(&self, name: &str) -> std::io::Result<Vec<u8>> {
        let fd = self.open_file(name)?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::fs::File::from(fd), &mut bytes)?;
        Ok(bytes)
    }

    /// The code in the file `name` (not through a link), mapped. A mapped
    /// file is run from for as long as its plugin is loaded, so the file
    /// must be one only this user can change (as the agent creates them:
    /// its own, mode 600, one link), in a folder still private: otherwise
    /// it is not used.
    fn code(&self, name: &str) -> std::io::Result<StoredCode> {
        use rustix::fs::FileType;
        let refused = |reason: String| std::io::Error::other(reason);
        if let Some(reason) = others_can_write(&rustix::fs::fstat(&self.fd)?, 0o022) {
            return Err(refused(format!("the cache folder: {reason}")));
        }
        let fd = self.open_file(name)?;
        let stat = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(refused("not a regular file".into()));
        }
        if let Some(reason) = others_can_write(&stat, 0o077) {
            return Err(refused(reason));
        }
        if stat.st_nlink != 1 {
            return Err(refused(format!("it has {} links", stat.st_nlink)));
        }
        StoredCode::map(std::fs::File::from(fd), &stat)
    }

    /// Remove the entry `name` if it is still the file `code` mapped (not
    /// one another agent has put there since); whether it did.
    fn remove_code(&self, name: &str, code: &StoredCode) -> bool {
        let still = rustix::fs::statat(&self.fd, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|stat| (stat.st_dev, stat.st_ino) == code.identity);
        if still {
            self.remove(name);
        }
        still
    }

    /// Create `name` (it must not exist) holding `bytes`.
    fn create(&self, name: &str, bytes: &[u8], mode: u32) -> std::io::Result<()> {
        use rustix::fs::{Mode, OFlags};
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )?;
        let mut file = std::fs::File::from(fd);
        std::io::Write::write_all(&mut file, bytes)?;
        file.sync_all()
    }

    fn link(&self, from: &str, to: &str) -> std::io::Result<()> {
        Ok(rustix::fs::linkat(
            &self.fd,
            from,
            &self.fd,
            to,
            rustix::fs::AtFlags::empty(),
        )?)
    }

    /// Remove the file `name`; whether it did.
    fn remove(&self, name: &str) -> bool {
        rustix::fs::unlinkat(&self.fd, name, rustix::fs::AtFlags::empty()).is_ok()
    }

    /// The names in the folder (those that are not UTF-8 are none of
    /// the cache's).
    fn names(&self) -> Vec<String> {
        let Ok(listing) = rustix::fs::Dir::read_from(&self.fd) else {
            return Vec::new();
        };
        listing
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().to_str().ok().map(str::to_owned))
            .collect()
    }

    /// How long ago the file `name` was last written.
    fn age(&self, name: &str) -> Option<std::time::Duration> {
        let stat =
            rustix::fs::statat(&self.fd, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).ok()?;
        let written = std::time::UNIX_EPOCH
            + std::time::Duration::new(
                u64::try_from(stat.st_mtime).ok()?,
                u32::try_from(stat.st_mtime_nsec).ok()?,
            );
        written.elapsed().ok()
    }

    /// Replace `name` with `bytes` atomically.
    fn write(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let tmp = temporary_name(name);
        self.remove(&tmp);
        let written = self
            .create(&tmp, bytes, 0o600)
            .and_then(|()| Ok(rustix::fs::renameat(&self.fd, &tmp, &self.fd, name)?));
        if written.is_err() {
            self.remove(&tmp);
        }
        written
    }
}

#[cfg(not(unix))]
impl Folder {
    fn read(&self, name: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.dir.join(name))
    }

    fn code(&self, name: &str) -> std::io::Result<StoredCode> {
        self.read(name).map(StoredCode)
    }

    fn remove_code(&self, name: &str, _code: &StoredCode) -> bool {
        self.remove(name);
        true
    }

    fn create(&self, name: &str, bytes: &[u8], _mode: u32) -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.dir.join(name))?;
        std::io::Write::write_all(&mut file, bytes)?;
        file.sync_all()
    }

    fn link(&self, from: &str, to: &str) -> std::io::Result<()> {
        std::fs::hard_link(self.dir.join(from), self.dir.join(to))
    }

    fn remove(&self, name: &str) -> bool {
        std::fs::remove_file(self.dir.join(name)).is_ok()
    }

    fn names(&self) -> Vec<String> {
        let Ok(listing) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        listing
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().into_string().ok())
            .collect()
    }

    fn age(&self, name: &str) -> Option<std::time::Duration> {
        let written = std::fs::symlink_metadata(self.dir.join(name))
            .ok()?
            .modified()
            .ok()?;
        written.elapsed().ok()
    }

    fn write(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let tmp = temporary_name(name);
        self.remove(&tmp);
        self.create(&tmp, bytes, 0o600)?;
        std::fs::rename(self.dir.join(&tmp), self.dir.join(name))
    }
}

/// An entry's code as stored: on Unix a private read-only mapping of its
/// file, which is kept open to be mapped again by wasmtime.
#[cfg(unix)]
struct StoredCode {
    file: std::fs::File,
    /// Its device and inode.
    identity: (u64, u64),
    /// The mapping's start, null for an empty file (nothing is mapped).
    at: *mut std::ffi::c_void,
    len: usize,
}

#[cfg(unix)]
impl StoredCode {
    fn map(file: std::fs::File, stat: &rustix::fs::Stat) -> std::io::Result<Self> {
        let len = usize::try_from(stat.st_size).map_err(std::io::Error::other)?;
        let identity = (stat.st_dev, stat.st_ino);
        let at = if len == 0 {
            std::ptr::null_mut()
        } else {
            // SAFETY: a new mapping at an address of the kernel's choosing,
            // read only and private: it aliases no memory of ours. It is
            // unmapped once, on drop.
            unsafe {
                rustix::mm::mmap(
                    std::ptr::null_mut(),
                    len,
                    rustix::mm::ProtFlags::READ,
                    rustix::mm::MapFlags::PRIVATE,
                    &file,
                    0,
                )?
            }
        };
        Ok(Self {
            file,
            identity,
            at,
            len,
        })
    }

    fn bytes(&self) -> &[u8] {
        if self.at.is_null() {
            return &[];
        }
        // SAFETY: `len` readable bytes are mapped at `at` while `self`
        // lives (see the module's header for a file truncated meanwhile).
        unsafe { std::slice::from_raw_parts(self.at.cast::<u8>(), self.len) }
    }

    /// The component in this code; wasmtime maps the file itself (the
    /// same inode, reopened through `/proc`), or copies the mapped bytes
    /// where that does not work (no `/proc`, no descriptor left).
    ///
    /// # Safety
    /// As [`Component::deserialize`]: the code must be wasmtime's output.
    unsafe fn deserialize(&self, engine: &Engine) -> wasmtime::Result<Component> {
        use std::os::fd::AsRawFd;
        let reopened = format!("/proc/self/fd/{}", self.file.as_raw_fd());
        // SAFETY: the caller's contract, for the same file.
        match unsafe { Component::deserialize_file(engine, &reopened) } {
            Ok(component) => Ok(component),
            // SAFETY: the caller's contract.
            Err(_) => unsafe { Component::deserialize(engine, self.bytes()) },
        }
    }
}

#[cfg(unix)]
impl Drop for StoredCode {
    fn drop(&mut self) {
        if !self.at.is_null() {
            // SAFETY: mapped in `map`, unmapped only here; no slice from
            // `bytes` outlives `self`.
            let _ = unsafe { rustix::mm::munmap(self.at, self.len) };
        }
    }
}

/// An entry's code as stored: read into memory.
#[cfg(not(unix))]
struct StoredCode(Vec<u8>);

#[cfg(not(unix))]
impl StoredCode {
    fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// # Safety
    /// As [`Component::deserialize`]: the code must be wasmtime's output.
    unsafe fn deserialize(&self, engine: &Engine) -> wasmtime::Result<Component> {
        // SAFETY: the caller's contract.
        unsafe { Component::deserialize(engine, &self.0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        Engine::default()
    }

    /// The smallest component there is: the preamble of an empty one.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    #[test]
    fn entries_are_authenticated_and_a_tampered_one_is_deleted_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("cache");
        let engine = engine();
        let cache = CompileCache::new(&engine, Some(cache_dir.clone())).unwrap();
        let bytes = empty_component();
        let hash = content_hash(&bytes);
        assert!(cache.lookup(&engine, &hash).is_none());
        let compiled = cache.compile(&engine, &bytes).unwrap();
        assert_eq!(cache.store(&hash, &compiled), CacheUse::Compiled);
        assert!(cache.lookup(&engine, &hash).is_some());

        // The same cache opened again (same key) still trusts it.
        let again = CompileCache::new(&engine, Some(cache_dir.clone())).unwrap();
        assert!(again.lookup(&engine, &hash).is_some());

        // One flipped byte of code, anywhere: refused, and the entry and
        // its MAC deleted. The file is replaced, not rewritten in place,
        // as the agent's own writes are (the module's header).
        let entry = cache.entry(&hash).unwrap();
        let mac_file = PathBuf::from(format!("{}.mac", entry.display()));
        let stored = std::fs::read(&entry).unwrap();
        for at in [0, stored.len() / 2, stored.len() - 1] {
            let mut tampered = stored.clone();
            tampered[at] ^= 1;
            // A copy keeps the entry's mode (600), so only the bytes differ.
            std::fs::copy(&entry, entry.with_extension("new")).unwrap();
            std::fs::write(entry.with_extension("new"), &tampered).unwrap();
            std::fs::rename(entry.with_extension("new"), &entry).unwrap();
            assert!(cache.lookup(&engine, &hash).is_none(), "byte {at}");
            assert!(!entry.exists() && !mac_file.exists());
            cache.store(&hash, &compiled);
        }

        // Cut short, empty, its MAC missing or cut short: not served.
        type Spoil = fn(&Path, &Path);
        let spoils: [Spoil; 4] = [
            |entry, _| std::fs::write(entry, b"\x7fELF").unwrap(),
            |entry, _| std::fs::write(entry, b"").unwrap(),
            |_, mac| std::fs::remove_file(mac).unwrap(),
            |_, mac| std::fs::write(mac, [0u8; 31]).unwrap(),
        ];
        for spoil in spoils {
            cache.store(&hash, &compiled);
            spoil(&entry, &mac_file);
            assert!(cache.lookup(&engine, &hash).is_none());
        }
        cache.store(&hash, &compiled);
        assert!(cache.lookup(&engine, &hash).is_some());

        // An entry and its MAC copied under another component's name:
        // refused.
        let other = cache.entry(&"0".repeat(64)).unwrap();
        std::fs::copy(&entry, &other).unwrap();
        std::fs::copy(&mac_file, format!("{}.mac", other.display())).unwrap();
        assert!(cache.lookup(&engine, &"0".repeat(64)).is_none());

        // A cache with another key does not trust this one's entries.
        std::fs::remove_file(cache_dir.join(KEY_FILE)).unwrap();
        let rekeyed = CompileCache::new(&engine, Some(cache_dir)).unwrap();
        assert!(rekeyed.lookup(&engine, &hash).is_none());
    }

    #[test]
    fn names_in_the_folder_are_told_apart() {
        let engine = "0123456789abcdef";
        let hash = "a".repeat(64);
        let ours = format!("{hash}{}", entry_ending(engine));
        for (name, found) in [
            (ours.clone(), Found::Current),
            (format!("{ours}.mac"), Found::Current),
            (format!("{hash}-{engine}-b3.cwasm"), Found::EarlierFormat),
            (format!("{hash}-{engine}.cwasm"), Found::EarlierFormat),
            (
                format!("{hash}-fedcba9876543210-{ENTRY_FORMAT}.cwasm"),
                Found::OtherEngine,
            ),
            (
                format!("{hash}-fedcba9876543210.cwasm.mac"),
                Found::OtherEngine,
            ),
            (format!("{ours}.tmp41.0"), Found::Temporary),
            (format!("{ours}.mac.tmp41.7"), Found::Temporary),
            (format!("{hash}-{engine}.tmp41"), Found::Temporary),
            (format!("{KEY_FILE}.tmp41.2"), Found::Temporary),
            (KEY_FILE.to_owned(), Found::Other),
            ("notes.txt.tmp1.2".to_owned(), Found::Other),
            (format!("{ours}.tmpl"), Found::Other),
            ("module.cwasm".to_owned(), Found::Other),
            (
                format!("{}-{engine}-b3m.cwasm", "A".repeat(64)),
                Found::Other,
            ),
            (format!("{hash}-{engine}-B3M.cwasm"), Found::Other),
            (format!("{hash}-{engine}-.cwasm"), Found::Other),
        ] {
            assert_eq!(Found::of(&name, engine), found, "{name}");
        }
    }

    /// At start, files of the cache's making that nothing will look for
    /// again go: entries of this engine in an earlier format, another
    /// engine's written over a week ago, temporary files over an hour old.
    /// This engine's entries, another engine's recent ones, a write in
    /// progress, and whatever is not the cache's (even named like an
    /// entry: a folder, a link to a file elsewhere) stay.
    #[cfg(unix)]
    #[test]
    fn opening_the_cache_sweeps_what_earlier_versions_left() {
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("cache");
        let engine = engine();
        let cache = CompileCache::new(&engine, Some(cache_dir.clone())).unwrap();
        let bytes = empty_component();
        let hash = content_hash(&bytes);
        cache.store(&hash, &cache.compile(&engine, &bytes).unwrap());
        let entry = cache.entry(&hash).unwrap();
        let entry_name = entry.file_name().unwrap().to_str().unwrap().to_owned();
        let key = cache.engine_key.clone();
        let other = "fedcba9876543210";
        let write = |name: &str, age: std::time::Duration| {
            let path = cache_dir.join(name);
            std::fs::write(&path, b"old").unwrap();
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(std::time::SystemTime::now() - age)
                .unwrap();
            path
        };
        let (now, hours, weeks) = (
            std::time::Duration::ZERO,
            UNFINISHED_WRITE * 2,
            OTHER_ENGINE_KEPT * 2,
        );
        let gone = [
            write(&format!("{hash}-{key}-b3.cwasm"), now),
            write(&format!("{hash}-{key}.cwasm.mac"), now),
            write(&format!("{hash}-{other}-{ENTRY_FORMAT}.cwasm"), weeks),
            write(&format!("{hash}-{other}-{ENTRY_FORMAT}.cwasm.mac"), weeks),
            write(&format!("{entry_name}.tmp1.0"), hours),
            write(&format!("{hash}-{key}.tmp7"), hours),
        ];
        let outside = dir.path().join("elsewhere.cwasm");
        std::fs::write(&outside, b"not the cache's").unwrap();
        let link = cache_dir.join(format!("{hash}-{key}-b2.cwasm"));
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        let folder = cache_dir.join(format!("{hash}-{key}-b1.cwasm"));
        std::fs::create_dir(&folder).unwrap();
        let kept = [
            write(
                &format!("{}-{other}-{ENTRY_FORMAT}.cwasm", "b".repeat(64)),
                hours,
            ),
            write(&format!("{entry_name}.mac.tmp2.0"), now),
            write("notes.cwasm", weeks),
            entry.clone(),
            cache_dir.join(KEY_FILE),
            folder,
            outside.clone(),
        ];

        let swept = Folder::open(&cache_dir).unwrap().sweep(&key);
        // The link is one of the cache's names: it goes, not its target.
        assert_eq!(swept, gone.len() + 1);
        for path in gone.iter().chain([&link]) {
            assert!(path.symlink_metadata().is_err(), "{} left", path.display());
        }
        for path in &kept {
            assert!(path.exists(), "{} removed", path.display());
        }
        let reopened = CompileCache::new(&engine, Some(cache_dir)).unwrap();
        assert!(reopened.lookup(&engine, &hash).is_some());
    }

    /// A mapped entry is run from while its plugin is loaded, so one that
    /// another user could change, or that has another name, is not used.
    #[cfg(unix)]
    #[test]
    fn an_entry_others_could_change_is_not_used() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = CompileCache::new(&engine, Some(dir.path().join("cache"))).unwrap();
        let bytes = empty_component();
        let hash = content_hash(&bytes);
        let compiled = cache.compile(&engine, &bytes).unwrap();
        let entry = cache.entry(&hash).unwrap();
        for mode in [0o640, 0o604, 0o660] {
            cache.store(&hash, &compiled);
            std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(mode)).unwrap();
            assert!(cache.lookup(&engine, &hash).is_none(), "mode {mode:o}");
        }
        cache.store(&hash, &compiled);
        let second = dir.path().join("second");
        std::fs::hard_link(&entry, &second).unwrap();
        assert!(cache.lookup(&engine, &hash).is_none(), "two links");
        std::fs::remove_file(&second).unwrap();
        assert!(cache.lookup(&engine, &hash).is_some());
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::lchown(&entry, Some(65534), None).unwrap();
            assert!(cache.lookup(&engine, &hash).is_none(), "another owner");
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_folder_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("cache");
        let engine = engine();
        CompileCache::new(&engine, Some(cache_dir.clone())).unwrap();
        let mode = std::fs::metadata(&cache_dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "created private");
        let key_mode = std::fs::metadata(cache_dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);
        for bad in [0o777, 0o720, 0o702] {
            std::fs::set_permissions(&cache_dir, std::fs::Permissions::from_mode(bad)).unwrap();
            let error = CompileCache::new(&engine, Some(cache_dir.clone())).unwrap_err();
            assert!(matches!(error, CacheError::Untrusted { .. }), "{error}");
        }
        std::fs::set_permissions(&cache_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        CompileCache::new(&engine, Some(cache_dir.clone())).unwrap();

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&cache_dir, &link).unwrap();
        let error = CompileCache::new(&engine, Some(link)).unwrap_err();
        assert!(error.to_string().contains("not a folder"), "{error}");
    }

    /// A local user who can write the folder holding the cache swaps it,
    /// as fast as they can, with a folder of their own holding an entry
    /// they authenticated with their own key: nothing of theirs is loaded.
    #[cfg(unix)]
    #[test]
    fn a_cache_folder_swapped_under_the_agent_never_serves_the_swappers_code() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root to give the swapper's folder to another user");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (ours, theirs) = (dir.path().join("cache"), dir.path().join("evil"));
        let engine = engine();
        let bytes = empty_component();
        let hash = content_hash(&bytes);
        CompileCache::new(&engine, Some(ours.clone())).unwrap();
        let evil = CompileCache::new(&engine, Some(theirs.clone())).unwrap();
        let compiled = evil.compile(&engine, &bytes).unwrap();
        assert_eq!(evil.store(&hash, &compiled), CacheUse::Compiled);
        for entry in std::fs::read_dir(&theirs).unwrap() {
            std::os::unix::fs::lchown(entry.unwrap().path(), Some(65534), Some(65534)).unwrap();
        }
        std::os::unix::fs::lchown(&theirs, Some(65534), Some(65534)).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swapper = {
            let (dir, stop) = (dir.path().to_path_buf(), stop.clone());
            std::thread::spawn(move || {
                let fd = rustix::fs::open(
                    &dir,
                    rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY,
                    rustix::fs::Mode::empty(),
                )
                .unwrap();
                let mut swaps = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let exchange = rustix::fs::RenameFlags::EXCHANGE;
                    rustix::fs::renameat_with(&fd, "cache", &fd, "evil", exchange).unwrap();
                    swaps += 1;
                }
                swaps
            })
        };
        let (mut opened, mut refused) = (0, 0);
        for _ in 0..2_000 {
            match CompileCache::new(&engine, Some(ours.clone())) {
                Ok(cache) => {
                    opened += 1;
                    assert!(
                        cache.lookup(&engine, &hash).is_none(),
                        "the swapper's code was served"
                    );
                }
                Err(CacheError::Untrusted { .. }) => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let swaps = swapper.join().unwrap();
        assert!(
            swaps > 1_000 && opened > 0 && refused > 0,
            "{swaps} swaps, {opened} opened, {refused} refused"
        );
    }

    fn empty_component() -> Vec<u8> {
        EMPTY_COMPONENT.to_vec()
    }
}
