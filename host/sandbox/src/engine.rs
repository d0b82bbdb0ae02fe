//! The engine: one wasmtime engine (epoch interruption, fuel metering,
//! pooling allocator, copy-on-write memory images), one linker holding the
//! contract's host functions and a locked-down WASI, a compile cache on
//! disk, an `InstancePre` per loaded plugin and a fresh store per run.
//!
//! With [`RuntimeConfig::quick_tier`], a second engine compiles with Winch,
//! wasmtime's baseline compiler (one pass, several times faster than
//! Cranelift, slower code): a component the cache does not hold serves
//! from Winch's code at once, while Cranelift compiles it in the
//! background ([`crate::tier`]).

use crate::cache::CompileCache;
use crate::host::RunState;
use crate::limits;
use crate::shared::SharedCode;
use crate::tier::Optimizer;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::Linker;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// The wasmtime the engine is made with, for callers that name its types
/// (the benchmarks compare [`wasmtime_config`] with variants of it).
pub use wasmtime;

/// How often the engine's epoch advances: the granularity of timeouts.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Settings of the sandbox.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// How many plugin instances may exist at once (concurrent runs plus
    /// loads); sizes the pooling allocator.
    pub max_instances: u32,
    /// Serve a component the cache does not hold from Winch's code while
    /// Cranelift compiles it in the background (on x86-64 Linux; elsewhere,
    /// and for a component Winch cannot compile, Cranelift compiles it
    /// before it serves).
    pub quick_tier: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            max_instances: 64,
            quick_tier: false,
        }
    }
}

/// The engine could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the WebAssembly engine: {0}")]
pub struct RuntimeError(String);

/// The sandbox every plugin runs in.
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Arc<Linker<RunState>>,
    pub(crate) cache: CompileCache,
    /// Compiled code of the plugins loaded now, shared by hash.
    pub(crate) shared: Arc<SharedCode>,
    /// Winch's engine and linker, and the background compiler, with
    /// [`RuntimeConfig::quick_tier`].
    pub(crate) quick: Option<QuickTier>,
}

/// The engine of the quick tier, its linker, and the background compiler
/// that moves its plugins up.
pub(crate) struct QuickTier {
    pub(crate) engine: Engine,
    pub(crate) linker: Arc<Linker<RunState>>,
    pub(crate) optimizer: Arc<Optimizer>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    pub fn new(config: &RuntimeConfig) -> Result<Self, RuntimeError> {
        let err = |e: wasmtime::Error| RuntimeError(format!("{e:#}"));
        let engine = Engine::new(&wasmtime_config(config)).map_err(err)?;
        let mut linker = Linker::new(&engine);
        crate::contract::add_to_linker(&mut linker).map_err(err)?;
        spawn_epoch_ticker(&engine);
        let cache = CompileCache::new(&engine, config.cache_dir.clone())
            .map_err(|e| RuntimeError(e.to_string()))?;
        let linker = Arc::new(linker);
        let shared = Arc::<SharedCode>::default();
        let quick = match quick_config(config) {
            Some(quick) => {
                let quick_engine = Engine::new(&quick).map_err(err)?;
                let mut quick_linker = Linker::new(&quick_engine);
                crate::contract::add_to_linker(&mut quick_linker).map_err(err)?;
                spawn_epoch_ticker(&quick_engine);
                let optimizer = Optimizer::new(
                    engine.clone(),
                    linker.clone(),
                    cache.clone(),
                    shared.clone(),
                );
                Some(QuickTier {
                    engine: quick_engine,
                    linker: Arc::new(quick_linker),
                    optimizer: Arc::new(optimizer),
                })
            }
            None => None,
        };
        Ok(Self {
            engine,
            linker,
            cache,
            shared,
            quick,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn cache(&self) -> &CompileCache {
        &self.cache
    }

    /// The compiled code loaded plugins hold, shared by hash.
    pub fn shared_code(&self) -> &SharedCode {
        &self.shared
    }

    /// Hold back the quick tier's background compiles not started yet
    /// while the guard lives, so that plugins keep serving Winch's code
    /// (for tests and benchmarks of that code); `None` without the tier.
    pub fn hold_optimizing(&self) -> Option<std::sync::MutexGuard<'_, ()>> {
        self.quick.as_ref().map(|quick| quick.optimizer.hold())
    }
}

/// The wasmtime configuration of the engine [`Runtime::new`] makes for
/// `config` (public so that benchmarks can compare it with variants).
pub fn wasmtime_config(config: &RuntimeConfig) -> Config {
    let mut pool = PoolingAllocationConfig::default();
    let instances = config.max_instances.max(1);
    // Components from other languages hold several core instances,
    // memories and tables each; Rust plugins hold one or two.
    pool.total_component_instances(instances)
        .total_core_instances(instances * 16)
        .total_memories(instances * 4)
        .total_tables(instances * 8)
        .max_memories_per_component(8)
        .max_tables_per_component(16)
        .max_core_instances_per_component(64)
        .max_memory_size(limits::MAX_MEMORY_BYTES)
        .max_component_instance_size(1 << 20)
        // Reset what a run dirtied, up to 64 KiB, with memset, found with
        // the PAGEMAP_SCAN ioctl (Linux 6.7 and later; elsewhere the
        // lowest 64 KiB), and decommit the rest at once. Decommits are
        // not batched: a memory waiting in a batch holds its memory
        // image, which holds the whole compiled plugin, and outlives the
        // plugin's unloading: a hot-reloaded Python or JavaScript plugin
        // kept ~40 MiB per version it had served.
        .linear_memory_keep_resident(64 << 10)
        .table_keep_resident(64 << 10)
        .pagemap_scan(Enabled::Auto);
    let mut wasm = Config::new();
    wasm.wasm_component_model(true)
        .epoch_interruption(true)
        .consume_fuel(true)
        .memory_init_cow(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        // No map from native code back to wasm offsets: a trap's
        // backtrace keeps its function names, and the compiled code of a
        // Python or JavaScript plugin (and its cache entry, and the
        // agent's memory) is 7-10% smaller.
        .generate_address_map(false);
    // Nor native unwind information (`.eh_frame`), which only native
    // debuggers and profilers use: wasmtime walks wasm frames itself.
    // Windows requires it.
    #[cfg(not(windows))]
    wasm.native_unwind_info(false);
    wasm
}

/// The quick tier's configuration: the engine's, compiled by Winch, with
/// a pool of its own of the same shape, so that a plugin meets the same
/// limits on either engine (memories, tables and instances per component
/// included). `None` without [`RuntimeConfig::quick_tier`], off x86-64,
/// where Winch is not complete, and on Windows, where it is not tested
/// (Wine is the only Windows here).
fn quick_config(config: &RuntimeConfig) -> Option<Config> {
    if !config.quick_tier || !cfg!(all(target_arch = "x86_64", not(windows))) {
        return None;
    }
    let mut quick = wasmtime_config(config);
    quick.strategy(wasmtime::Strategy::Winch);
    Some(quick)
}

/// Advance the engine's epoch every tick for as long as the engine lives.
fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("medic-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .expect("spawning the epoch thread");
}
