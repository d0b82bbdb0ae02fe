//! Loading a plugin: read and hash the component, compile it (or take it
//! from the cache), check the contract version it was built for, link it,
//! ask it to describe itself, and check what it asks for against grants.

use crate::Runtime;
use crate::cache::{CacheUse, content_hash};
use crate::contract::{self, Bindings, ContractError, ContractUse};
use crate::host::grants::{Capability, Grants};
use crate::host::{Mode, RunState};
use crate::info::PluginInfo;
use crate::limits::{Limits, MemoryLimiter};
use medic_backends::{Backends, PrincipalMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A plugin ready to run: compiled, linked, described.
#[derive(Clone)]
pub struct LoadedPlugin {
    /// What the plugin says about itself.
    pub info: PluginInfo,
    /// The contract version and import/export names.
    pub contract: ContractUse,
    /// SHA-256 of the component file.
    pub hash: String,
    /// Where it was loaded from.
    pub origin: String,
    /// Size of the component in bytes.
    pub size: usize,
    /// Whether the compile cache served it.
    pub cache: CacheUse,
    pub(crate) bindings: Bindings,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.info.name)
            .field("version", &self.info.version)
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

/// Why a plugin was not loaded. Every message names the component and
/// says what to do.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read plugin {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(
        "{origin} is not a valid WebAssembly component: {reason}; build it with `cargo xtask plugins` (or wasm-tools component new)"
    )]
    Compile { origin: String, reason: String },
    #[error("{origin} cannot be loaded: {cause}")]
    Contract {
        origin: String,
        cause: ContractError,
    },
    #[error(
        "{origin} cannot be linked: {reason}; a plugin may import only the interfaces this agent provides: medic:plugin (versions {versions}), medic:wsus {wsus} (with medic:plugin {latest}), and WASI 0.2",
        versions = crate::contract::SUPPORTED_VERSIONS.join(", "),
        wsus = crate::contract::v0_2_0::WSUS_VERSION,
        latest = crate::contract::v0_2_0::VERSION
    )]
    Link { origin: String, reason: String },
    #[error("{origin} failed in describe(): {reason}")]
    Describe { origin: String, reason: String },
    #[error(
        "{origin} describes itself as `{name}`, which is not a valid plugin name (lowercase letters, digits and dashes)"
    )]
    BadName { origin: String, name: String },
    #[error(
        "plugin `{plugin}` ({origin}) needs {} that {} not granted: {}; grant {} in the policy (or with `--grant` on `medic trigger`)",
        if missing.len() == 1 { "a capability" } else { "capabilities" },
        if missing.len() == 1 { "is" } else { "are" },
        missing_list(missing),
        if missing.len() == 1 { "it" } else { "them" }
    )]
    MissingGrants {
        plugin: String,
        origin: String,
        missing: Vec<Capability>,
    },
}

fn missing_list(missing: &[Capability]) -> String {
    missing
        .iter()
        .map(|c| match c {
            Capability::FsRead | Capability::FsWrite => format!("{c} (with a root path)"),
            Capability::ServicesRead | Capability::ServicesControl => {
                format!("{c} (with service names)")
            }
            Capability::Operation(_) => c.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Limits for `describe()`: it should return at once.
const DESCRIBE_LIMITS: Limits = Limits {
    timeout: Duration::from_secs(5),
    memory_bytes: 64 << 20,
    fuel: None,
    max_host_calls: 100,
};

impl Runtime {
    /// Load a plugin from a component file.
    pub fn load_file(&self, path: &Path) -> Result<LoadedPlugin, LoadError> {
        let bytes = std::fs::read(path).map_err(|cause| LoadError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        self.load_bytes(&bytes, &path.display().to_string())
    }

    /// Load a plugin from component bytes; `origin` names it in messages.
    pub fn load_bytes(&self, bytes: &[u8], origin: &str) -> Result<LoadedPlugin, LoadError> {
        let origin = origin.to_string();
        let started = std::time::Instant::now();
        let hash = content_hash(bytes);
        let (component, cache) = self
            .cache
            .component(&self.engine, bytes, &hash)
            .map_err(|e| LoadError::Compile {
                origin: origin.clone(),
                reason: format!("{e:#}"),
            })?;
        let contract = contract::contract_use(&self.engine, &component).map_err(|cause| {
            LoadError::Contract {
                origin: origin.clone(),
                cause,
            }
        })?;
        let bindings = Bindings::new(&contract.version, &self.linker, &component).map_err(|e| {
            LoadError::Link {
                origin: origin.clone(),
                reason: format!("{e:#}"),
            }
        })?;
        tracing::debug!(
            origin,
            ?cache,
            micros = started.elapsed().as_micros() as u64,
            "component compiled and linked"
        );
        let info = self.describe(&bindings, &origin)?;
        if !valid_plugin_name(&info.name) {
            return Err(LoadError::BadName {
                origin,
                name: info.name,
            });
        }
        Ok(LoadedPlugin {
            info,
            contract,
            hash,
            origin,
            size: bytes.len(),
            cache,
            bindings,
        })
    }

    /// Call `describe()` in a store with no grants at all.
    fn describe(&self, bindings: &Bindings, origin: &str) -> Result<PluginInfo, LoadError> {
        let state = RunState::new(
            "(loading)".into(),
            "describe".into(),
            Mode::DryRun,
            Arc::new(Grants::none()),
            Arc::default(),
            Backends::local(PrincipalMap::default()),
            None,
            MemoryLimiter::new(DESCRIBE_LIMITS.memory_bytes),
            DESCRIBE_LIMITS.max_host_calls,
        );
        let mut store = self.new_store(state, &DESCRIBE_LIMITS);
        bindings
            .describe(&mut store)
            .map_err(|e| LoadError::Describe {
                origin: origin.to_string(),
                reason: format!("{e:#}"),
            })
    }
}

impl LoadedPlugin {
    /// Refuse a plugin that asks for capabilities the grants do not give.
    pub fn check_grants(&self, grants: &Grants) -> Result<(), LoadError> {
        let missing = grants.missing(&self.info.capabilities);
        if missing.is_empty() {
            Ok(())
        } else {
            Err(LoadError::MissingGrants {
                plugin: self.info.name.clone(),
                origin: self.origin.clone(),
                missing,
            })
        }
    }

    pub fn name(&self) -> &str {
        &self.info.name
    }
}

/// Whether a plugin name is lowercase letters, digits and dashes: the one
/// rule for names in policies and in `describe()`.
pub fn valid_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}
