//! The on-disk cache of compiled components, keyed by the component's
//! content hash and the engine's compatibility hash, so that a restart or a
//! reload of an unchanged plugin does not compile it again.
//!
//! Compiled code is loaded as native code with `Component::deserialize`,
//! which trusts its input. So the cache trusts nothing it did not write:
//! - the folder must belong to the agent's user and be writable by no one
//!   else (the runtime refuses to start otherwise);
//! - each entry carries an HMAC-SHA256 of its name and contents under a
//!   key that lives in the folder, readable by the agent alone; an entry
//!   whose code does not match is deleted and compiled again, never run;
//! - only components that loaded (linked and described themselves) are
//!   written: a rejected component leaves nothing behind.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of the authentication code at the start of each entry.
const MAC_LEN: usize = 32;

/// The file holding the cache's key.
const KEY_FILE: &str = "cache.key";

/// Where compiled components are kept; `None` disables caching.
#[derive(Clone)]
pub struct CompileCache {
    dir: Option<PathBuf>,
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

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// Loaded from the cache.
    Hit,
    /// Compiled, and stored in the cache.
    Compiled,
    /// Compiled; the cache is disabled or could not be written.
    Uncached,
}

/// A component compiled now, not yet written to the cache.
pub struct Compiled {
    pub component: Component,
    code: Vec<u8>,
}

impl CompileCache {
    /// A cache in `dir` (created if missing), after checking that no one
    /// else can write it; `None` disables caching.
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> Result<Self, CacheError> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = format!("{:016x}", hasher.finish());
        let key = match &dir {
            Some(dir) => {
                prepare_dir(dir)?;
                load_or_create_key(dir)?
            }
            None => [0; 32],
        };
        Ok(Self {
            dir,
            key,
            engine_key,
        })
    }

    fn entry(&self, hash: &str) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|dir| dir.join(format!("{hash}-{}.cwasm", self.engine_key)))
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    fn mac(&self, name: &Path) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        let name = name
            .file_name()
            .map(|n| n.as_encoded_bytes())
            .unwrap_or_default();
        mac.update(&(name.len() as u64).to_le_bytes());
        mac.update(name);
        mac
    }

    /// The cached component for `hash`, if the cache holds an authentic
    /// one. An entry that fails authentication is deleted.
    pub fn lookup(&self, engine: &Engine, hash: &str) -> Option<Component> {
        let entry = self.entry(hash)?;
        // Read into memory rather than map the file: a cache file truncated
        // or rewritten under a running agent must not bring it down.
        let stored = std::fs::read(&entry).ok()?;
        let authentic = stored.split_at_checked(MAC_LEN).filter(|(tag, code)| {
            let mut mac = self.mac(&entry);
            mac.update(code);
            mac.verify_slice(tag).is_ok()
        });
        let Some((_, code)) = authentic else {
            tracing::warn!(path = %entry.display(), "deleting a compiled component that fails authentication");
            let _ = std::fs::remove_file(&entry);
            return None;
        };
        // SAFETY: `code` was written by this agent (it carries a valid code
        // under the key only this user can read) with `precompile_component`
        // for an engine with the same compatibility hash (part of the name);
        // wasmtime also checks the header.
        match unsafe { Component::deserialize(engine, code) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %entry.display(), "discarding unreadable compiled component: {e}");
                None
            }
        }
    }

    /// Compile `bytes`; nothing is written until [`CompileCache::store`].
    pub fn compile(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Compiled> {
        let code = engine.precompile_component(bytes)?;
        // SAFETY: `code` was produced just now by this engine.
        let component = unsafe { Component::deserialize(engine, &code)? };
        Ok(Compiled { component, code })
    }

    /// Write a component that loaded to the cache; says how it went.
    pub fn store(&self, hash: &str, compiled: &Compiled) -> CacheUse {
        let Some(entry) = self.entry(hash) else {
            return CacheUse::Uncached;
        };
        let mut mac = self.mac(&entry);
        mac.update(&compiled.code);
        let mut stored = mac.finalize().into_bytes().to_vec();
        stored.extend_from_slice(&compiled.code);
        match write_atomically(&entry, &stored) {
            Ok(()) => CacheUse::Compiled,
            Err(e) => {
                tracing::warn!(path = %entry.display(), "cannot write compiled component to the cache: {e}");
                CacheUse::Uncached
            }
        }
    }
}

/// Create `dir` (mode 700) if needed and check that it is a real folder of
/// this user's that no one else can write.
fn prepare_dir(dir: &Path) -> Result<(), CacheError> {
    let io = |cause| CacheError::Io {
        dir: dir.to_path_buf(),
        cause,
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(io)?;
    let meta = std::fs::symlink_metadata(dir).map_err(io)?;
    let untrusted = |reason: String| CacheError::Untrusted {
        dir: dir.to_path_buf(),
        reason,
    };
    if !meta.is_dir() {
        return Err(untrusted("it is not a folder (a symbolic link?)".into()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            return Err(untrusted(format!(
                "it belongs to user {}, not to this agent's user {me}",
                meta.uid()
            )));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(untrusted(format!(
                "its mode {:o} lets others write it",
                meta.mode() & 0o7777
            )));
        }
    }
    Ok(())
}

/// The cache's key: read from the folder, or made (32 random bytes, mode
/// 600) on first use.
fn load_or_create_key(dir: &Path) -> Result<[u8; 32], CacheError> {
    let path = dir.join(KEY_FILE);
    let io = |cause| CacheError::Io {
        dir: dir.to_path_buf(),
        cause,
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            return bytes.try_into().map_err(|_| CacheError::Untrusted {
                dir: dir.to_path_buf(),
                reason: format!("its key file {KEY_FILE} is not 32 bytes"),
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| io(std::io::Error::other(e.to_string())))?;
    let tmp = dir.join(format!("{KEY_FILE}.tmp{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(io)?;
    std::io::Write::write_all(&mut file, &key).map_err(io)?;
    file.sync_all().map_err(io)?;
    // Another process may have made a key meanwhile: the first one wins.
    match std::fs::hard_link(&tmp, &path) {
        Ok(()) => {
            let _ = std::fs::remove_file(&tmp);
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let _ = std::fs::remove_file(&tmp);
            load_or_create_key(dir)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(io(e))
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
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

        // One flipped byte of code, anywhere: refused and deleted.
        let entry = cache.entry(&hash).unwrap();
        let mut stored = std::fs::read(&entry).unwrap();
        let last = stored.len() - 1;
        stored[last] ^= 1;
        std::fs::write(&entry, &stored).unwrap();
        assert!(cache.lookup(&engine, &hash).is_none());
        assert!(!entry.exists());

        // An entry copied under another component's name: refused.
        cache.store(&hash, &compiled);
        let other = cache.entry(&"0".repeat(64)).unwrap();
        std::fs::copy(&entry, &other).unwrap();
        assert!(cache.lookup(&engine, &"0".repeat(64)).is_none());

        // A cache with another key does not trust this one's entries.
        std::fs::remove_file(cache_dir.join(KEY_FILE)).unwrap();
        let rekeyed = CompileCache::new(&engine, Some(cache_dir)).unwrap();
        assert!(rekeyed.lookup(&engine, &hash).is_none());
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

    fn empty_component() -> Vec<u8> {
        EMPTY_COMPONENT.to_vec()
    }
}
