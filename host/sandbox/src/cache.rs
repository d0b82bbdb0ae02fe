//! The on-disk cache of compiled components, keyed by the component's
//! content hash and the engine's compatibility hash, so that a restart or a
//! reload of an unchanged plugin does not compile it again.
//!
//! The cache directory belongs to the agent: compiled code in it is loaded
//! as trusted native code, so it must not be writable by anyone else.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where compiled components are kept; `None` disables caching.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: Option<PathBuf>,
    engine_key: String,
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

impl CompileCache {
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = format!("{:016x}", hasher.finish());
        Self { dir, engine_key }
    }

    fn entry(&self, hash: &str) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|dir| dir.join(format!("{hash}-{}.cwasm", self.engine_key)))
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The compiled component for `bytes`, from the cache when it holds one.
    pub fn component(
        &self,
        engine: &Engine,
        bytes: &[u8],
        hash: &str,
    ) -> wasmtime::Result<(Component, CacheUse)> {
        let entry = self.entry(hash);
        // Read into memory rather than map the file: a cache file truncated
        // or rewritten under a running agent must not bring it down.
        if let Some(entry) = &entry
            && let Ok(compiled) = std::fs::read(entry)
        {
            // SAFETY: the cache directory holds only artifacts this agent
            // wrote with `precompile_component` for an engine with the same
            // compatibility hash (part of the file name); wasmtime checks the
            // header and rejects anything else.
            match unsafe { Component::deserialize(engine, &compiled) } {
                Ok(component) => return Ok((component, CacheUse::Hit)),
                Err(e) => {
                    tracing::warn!(path = %entry.display(), "discarding unreadable compiled component: {e}")
                }
            }
        }
        let compiled = engine.precompile_component(bytes)?;
        // SAFETY: `compiled` was produced just now by this engine.
        let component = unsafe { Component::deserialize(engine, &compiled)? };
        let stored = entry.is_some_and(|entry| match write_atomically(&entry, &compiled) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(path = %entry.display(), "cannot write compiled component to the cache: {e}");
                false
            }
        });
        Ok((
            component,
            if stored {
                CacheUse::Compiled
            } else {
                CacheUse::Uncached
            },
        ))
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
