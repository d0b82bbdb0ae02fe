//! The engine: one wasmtime engine (epoch interruption, fuel metering,
//! pooling allocator, copy-on-write memory images), one linker holding the
//! contract's host functions and a locked-down WASI, a compile cache on
//! disk, an `InstancePre` per loaded plugin and a fresh store per run.

use crate::cache::CompileCache;
use crate::host::RunState;
use crate::limits;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

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
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            max_instances: 64,
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
            // Reset small regions with memset and batch the rest of the
            // decommits, instead of a system call per memory per run.
            .linear_memory_keep_resident(64 << 10)
            .table_keep_resident(64 << 10)
            .decommit_batch_size(16);
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(true)
            .memory_init_cow(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm).map_err(err)?;
        let mut linker = Linker::new(&engine);
        crate::contract::add_to_linker(&mut linker).map_err(err)?;
        spawn_epoch_ticker(&engine);
        let cache = CompileCache::new(&engine, config.cache_dir.clone())
            .map_err(|e| RuntimeError(e.to_string()))?;
        Ok(Self {
            engine,
            linker: Arc::new(linker),
            cache,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn cache(&self) -> &CompileCache {
        &self.cache
    }
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
