//! Loading a plugin: read and hash the component, compile it (or take it
//! from the cache), check the contract version it was built for, link it,
//! ask it to describe itself, and check what it asks for against grants.

use crate::Runtime;
use crate::cache::{CacheUse, HashedComponent};
use crate::contract::{self, Bindings, ContractError, ContractUse};
use crate::host::grants::{Capability, Grants};
use crate::host::{Mode, RunState};
use crate::info::PluginInfo;
use crate::limits::{Limits, MemoryLimiter};
use crate::text::{MAX_MESSAGE_BYTES, clean};
use crate::tier::{Code, CodeSlot, Pending, Tier};
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
    /// The code it runs now, shared by every copy ([`crate::tier`]).
    pub(crate) code: Arc<CodeSlot>,
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
        "cannot read plugin {path}: it is {what}, not a regular file; give the path of a `.wasm` component"
    )]
    NotAFile { path: PathBuf, what: &'static str },
    #[error(
        "plugin {path} is larger than the largest component medic reads ({} MiB): {size} bytes; give the path of a `.wasm` component",
        MAX_COMPONENT_BYTES >> 20
    )]
    TooLarge { path: PathBuf, size: u64 },
    #[error(
        "{origin} is not a valid WebAssembly component: {reason}; build its project with `medic build` (`medic new` makes one), or make a component of a core module with `wasm-tools component new`"
    )]
    Compile { origin: String, reason: String },
    #[error("{origin} cannot be loaded: {cause}")]
    Contract {
        origin: String,
        cause: ContractError,
    },
    #[error(
        "{origin} cannot be linked: {reason}; a plugin may import only the interfaces this agent provides: medic:plugin (versions {versions}), medic:wsus {wsus}, and WASI 0.2",
        versions = crate::contract::SUPPORTED_VERSIONS.join(", "),
        wsus = crate::contract::wsus_versions_text()
    )]
    Link { origin: String, reason: String },
    #[error("{origin} failed in describe(): {reason}")]
    Describe { origin: String, reason: String },
    #[error(
        "{origin} describes itself as `{name}`, which is not a valid plugin name (lowercase letters, digits and dashes)"
    )]
    BadName { origin: String, name: String },
    #[error(
        "{}; grant {} in the plugin's policy table with `{}`, or on `medic trigger` with `{}`",
        missing_grants(plugin, origin, missing),
        if missing.len() == 1 { "it" } else { "them" },
        crate::Grants::none().policy_line(missing),
        crate::host::grants::grant_flags(missing)
    )]
    MissingGrants {
        plugin: String,
        origin: String,
        missing: Vec<Capability>,
    },
}

/// What a plugin asks for that is not granted, by the capabilities'
/// names, with no word on how to grant it: "plugin `x` (x.wasm) needs
/// capabilities that are not granted: fs-write, wsus-sync".
pub fn missing_grants(plugin: &str, origin: &str, missing: &[Capability]) -> String {
    format!(
        "plugin `{plugin}` ({origin}) needs {} not granted: {}",
        if missing.len() == 1 {
            "a capability that is"
        } else {
            "capabilities that are"
        },
        missing
            .iter()
            .map(Capability::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// A compile error, with what to do about the one a plugin author meets
/// most: a component that uses the component model's async features (jco's
/// QuickJS backend makes such components), which this agent does not
/// enable.
fn with_hint(reason: String) -> String {
    if reason.contains("component model async") {
        format!(
            "{reason} (this agent runs synchronous components only: build a JavaScript plugin with componentize-js's default engine, StarlingMonkey, as `medic build` does, not jco's QuickJS backend)"
        )
    } else {
        reason
    }
}

/// The largest component file medic reads (128 MiB): a Rust plugin is tens
/// of KiB, a Python or JavaScript one with its interpreter tens of MiB.
pub const MAX_COMPONENT_BYTES: u64 = 128 << 20;

/// What a file that is not a regular file is, for messages.
fn file_kind(file_type: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "a FIFO";
        }
        if file_type.is_char_device() {
            return "a character device";
        }
        if file_type.is_block_device() {
            return "a block device";
        }
        if file_type.is_socket() {
            return "a socket";
        }
    }
    if file_type.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// Read a component file: a regular file (symlinks followed) of at most
/// [`MAX_COMPONENT_BYTES`]. A FIFO is refused without waiting for a
/// writer, a device without reading it.
pub fn read_component(path: &Path) -> Result<Vec<u8>, LoadError> {
    use std::io::Read;
    let read_error = |cause| LoadError::Read {
        path: path.to_path_buf(),
        cause,
    };
    let check = |meta: &std::fs::Metadata| {
        if !meta.is_file() {
            Err(LoadError::NotAFile {
                path: path.to_path_buf(),
                what: file_kind(meta.file_type()),
            })
        } else if meta.len() > MAX_COMPONENT_BYTES {
            Err(LoadError::TooLarge {
                path: path.to_path_buf(),
                size: meta.len(),
            })
        } else {
            Ok(meta.len())
        }
    };
    // Asked before opening (opening a FIFO waits for a writer, opening
    // some devices does something), and again of what was opened, in case
    // the path changed in between: opened without blocking, a FIFO put in
    // its place is refused all the same.
    check(&std::fs::metadata(path).map_err(read_error)?)?;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(
            (rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY).bits() as i32,
        );
    }
    let file = options.open(path).map_err(read_error)?;
    let len = check(&file.metadata().map_err(read_error)?)?;
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(MAX_COMPONENT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_COMPONENT_BYTES {
        // It grew while it was read.
        return Err(LoadError::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
        });
    }
    Ok(bytes)
}

/// How long `describe()` may take: it should return at once, and a plugin
/// that blocks in it must not hang a check, an inspection or a reload.
pub const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Limits for `describe()`: its deadline, and the memory the plugin's
/// runs may use (a plugin that needs more initial memory than a default
/// must still be able to describe itself).
fn describe_limits(memory_bytes: usize) -> Limits {
    Limits {
        timeout: DESCRIBE_TIMEOUT,
        memory_bytes,
        fuel: None,
        max_host_calls: 100,
        state_quota_bytes: 0,
    }
}

impl Runtime {
    /// Load a plugin from a component file, describing it within the
    /// default memory limit.
    pub fn load_file(&self, path: &Path) -> Result<LoadedPlugin, LoadError> {
        self.load_file_within(path, Limits::default().memory_bytes)
    }

    /// Load a plugin from a component file; `describe()` may use up to
    /// `memory_bytes`, the limit its runs will have.
    pub fn load_file_within(
        &self,
        path: &Path,
        memory_bytes: usize,
    ) -> Result<LoadedPlugin, LoadError> {
        let bytes = read_component(path)?;
        self.load_bytes_within(&bytes, &path.display().to_string(), memory_bytes)
    }

    /// Load a plugin from component bytes; `origin` names it in messages.
    pub fn load_bytes(&self, bytes: &[u8], origin: &str) -> Result<LoadedPlugin, LoadError> {
        self.load_bytes_within(bytes, origin, Limits::default().memory_bytes)
    }

    /// [`Runtime::load_bytes`], with `describe()` allowed `memory_bytes`.
    pub fn load_bytes_within(
        &self,
        bytes: &[u8],
        origin: &str,
        memory_bytes: usize,
    ) -> Result<LoadedPlugin, LoadError> {
        self.load_hashed_within(&HashedComponent::new(bytes), origin, memory_bytes)
    }

    /// [`Runtime::load_bytes_within`], for a caller that has hashed the
    /// bytes already (to compare them with the version serving).
    pub fn load_hashed_within(
        &self,
        hashed: &HashedComponent,
        origin: &str,
        memory_bytes: usize,
    ) -> Result<LoadedPlugin, LoadError> {
        let (bytes, hash) = (hashed.bytes(), hashed.hash().to_string());
        let origin = origin.to_string();
        let started = std::time::Instant::now();
        // What it imports and exports is read first: a component this
        // agent cannot link is refused before it is compiled.
        let names = contract::scan::names(bytes).map_err(|e| LoadError::Compile {
            origin: origin.clone(),
            reason: clean(&e.to_string(), MAX_MESSAGE_BYTES),
        })?;
        let contract = contract::contract_use(names).map_err(|cause| LoadError::Contract {
            origin: origin.clone(),
            cause,
        })?;
        let shared = self.shared.get(&hash);
        let cached = || self.cache.lookup(&self.engine, &hash);
        let compile_error = |e: wasmtime::Error| LoadError::Compile {
            origin: origin.clone(),
            reason: with_hint(clean(&format!("{e:#}"), MAX_MESSAGE_BYTES)),
        };
        let cranelift = || {
            self.cache
                .compile(&self.engine, bytes)
                .map_err(compile_error)
                .map(|compiled| (compiled.component.clone(), Tier::Optimized, Some(compiled)))
        };
        let (component, tier, compiled) = match shared.as_deref().cloned().or_else(cached) {
            Some(component) => (component, Tier::Optimized, None),
            None => match &self.quick {
                Some(quick) => {
                    let quick = wasmtime::component::Component::new(&quick.engine, bytes);
                    crate::cache::give_back_freed_memory();
                    match quick {
                        Ok(component) => (component, Tier::Quick, None),
                        // What Winch does not compile (tail calls,
                        // exceptions, GC), Cranelift may.
                        Err(e) => {
                            tracing::debug!(origin, "the quick tier cannot compile it: {e:#}");
                            cranelift()?
                        }
                    }
                }
                None => cranelift()?,
            },
        };
        let (engine, linker) = match (&self.quick, tier) {
            (Some(quick), Tier::Quick) => (&quick.engine, &quick.linker),
            _ => (&self.engine, &self.linker),
        };
        let bindings =
            Bindings::new(&contract.version, linker, &component).map_err(|e| LoadError::Link {
                origin: origin.clone(),
                reason: clean(&format!("{e:#}"), MAX_MESSAGE_BYTES),
            })?;
        tracing::debug!(
            origin,
            cached = compiled.is_none() && tier == Tier::Optimized,
            quick = tier == Tier::Quick,
            micros = started.elapsed().as_micros() as u64,
            "component compiled and linked"
        );
        let info = self
            .describe(&bindings, engine, &origin, &describe_limits(memory_bytes))?
            .bounded();
        if !valid_plugin_name(&info.name) {
            return Err(LoadError::BadName {
                origin,
                name: info.name,
            });
        }
        // Only a component that loaded is worth keeping compiled.
        let cache = match (&shared, &compiled, tier) {
            (Some(_), _, _) => CacheUse::Shared,
            (None, _, Tier::Quick) => CacheUse::Quick,
            (None, None, _) => CacheUse::Hit,
            (None, Some(compiled), _) => self.cache.store(&hash, compiled),
        };
        let component = match tier {
            Tier::Optimized => shared.unwrap_or_else(|| self.shared.share(&hash, component)),
            Tier::Quick => Arc::new(component),
        };
        let code = CodeSlot::new(Code::new(bindings, engine.clone(), tier, component));
        if let (Some(quick), Tier::Quick) = (&self.quick, tier) {
            let pending = Pending {
                bytes: hashed.shared_bytes(),
                hash: hash.clone(),
                version: contract.version.clone(),
                origin: origin.clone(),
            };
            quick.optimizer.enqueue(&code, pending);
        }
        Ok(LoadedPlugin {
            info,
            contract,
            hash,
            origin,
            size: bytes.len(),
            cache,
            code,
        })
    }

    /// Call `describe()` in a store with no grants at all.
    fn describe(
        &self,
        bindings: &Bindings,
        engine: &wasmtime::Engine,
        origin: &str,
        limits: &Limits,
    ) -> Result<PluginInfo, LoadError> {
        let state = RunState::new(
            "(loading)".into(),
            "describe".into(),
            Mode::DryRun,
            Arc::new(Grants::none()),
            Arc::default(),
            Backends::local(PrincipalMap::default()),
            None,
            MemoryLimiter::new(limits.memory_bytes),
            limits.max_host_calls,
        );
        let mut store = self.new_store(engine, state, limits);
        let started = std::time::Instant::now();
        bindings.describe(&mut store).map_err(|e| {
            let failure = crate::run::classify(&e, &store, limits, started);
            let reason = match failure {
                crate::RunFailure::Timeout { .. } => format!(
                    "it did not return within {} s (describe() must return at once)",
                    limits.timeout.as_secs()
                ),
                other => crate::text::clean(&other.to_string(), crate::text::MAX_MESSAGE_BYTES),
            };
            LoadError::Describe {
                origin: origin.to_string(),
                reason,
            }
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

    /// Which compiler made the code its runs use now.
    pub fn tier(&self) -> Tier {
        self.code.current().tier
    }

    /// Wait up to `limit` for its optimized code to serve (at once when it
    /// does already); whether it does.
    pub fn wait_optimized(&self, limit: Duration) -> bool {
        self.code.wait_optimized(limit)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_async_component_is_told_which_build_avoids_it() {
        let hinted = with_hint("`task.cancel` requires the component model async feature".into());
        assert!(hinted.contains("StarlingMonkey"), "{hinted}");
        assert_eq!(with_hint("bad magic".into()), "bad magic");
    }

    #[test]
    fn missing_grants_are_named_with_how_a_policy_and_trigger_grant_them() {
        let error = LoadError::MissingGrants {
            plugin: "keeper".into(),
            origin: "keeper.wasm".into(),
            missing: vec![
                Capability::FsWrite,
                Capability::parse("wsus-read").unwrap(),
                Capability::parse("wsus-sync").unwrap(),
            ],
        };
        assert_eq!(
            error.to_string(),
            "plugin `keeper` (keeper.wasm) needs capabilities that are not granted: fs-write, wsus-read, wsus-sync; \
             grant them in the plugin's policy table with \
             `grants = { fs-write = [\"<root path>\"], wsus = [\"read\", \"sync\"] }`, \
             or on `medic trigger` with `--grant fs-write=<absolute path> --grant wsus-read --grant wsus-sync`"
        );
        assert_eq!(
            missing_grants("keeper", "keeper.wasm", &[Capability::ServicesRead]),
            "plugin `keeper` (keeper.wasm) needs a capability that is not granted: services-read"
        );
    }

    /// `read_component(path)`, failing the test if it does not return
    /// within a few seconds (a FIFO must not wait for a writer).
    fn read_soon(path: &Path) -> Result<Vec<u8>, LoadError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let path = path.to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(read_component(&path));
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("read_component returned within 10 s")
    }

    #[test]
    fn a_component_is_a_regular_file_of_bounded_size() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small.wasm");
        std::fs::write(&small, b"\0asm").unwrap();
        assert_eq!(read_soon(&small).unwrap(), b"\0asm");

        // Sparse: larger than the limit without using the disk.
        let large = dir.path().join("large.wasm");
        std::fs::File::create(&large)
            .unwrap()
            .set_len(MAX_COMPONENT_BYTES + 1)
            .unwrap();
        let error = read_soon(&large).unwrap_err();
        assert!(matches!(error, LoadError::TooLarge { .. }), "{error}");
        assert!(error.to_string().contains("128 MiB"), "{error}");
        std::fs::File::create(&large)
            .unwrap()
            .set_len(MAX_COMPONENT_BYTES)
            .unwrap();
        assert_eq!(read_soon(&large).unwrap().len() as u64, MAX_COMPONENT_BYTES);

        let error = read_soon(dir.path()).unwrap_err();
        assert!(error.to_string().contains("a directory"), "{error}");
        let error = read_soon(&dir.path().join("missing.wasm")).unwrap_err();
        assert!(matches!(error, LoadError::Read { .. }), "{error}");
    }

    #[cfg(unix)]
    #[test]
    fn devices_and_fifos_are_refused_without_reading_or_waiting() {
        let error = read_soon(Path::new("/dev/zero")).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("a character device, not a regular file"),
            "{error}"
        );
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("plugin.wasm");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let error = read_soon(&fifo).unwrap_err();
        assert!(error.to_string().contains("a FIFO"), "{error}");
        // Through a symlink too.
        let link = dir.path().join("link.wasm");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let error = read_soon(&link).unwrap_err();
        assert!(matches!(error, LoadError::NotAFile { .. }), "{error}");
    }
}
