//! Which compiled code a plugin runs, and its move from the quick tier to
//! the optimized one.
//!
//! A component the compile cache does not hold takes Cranelift from tens
//! of milliseconds (a Rust plugin) to seconds (a Python or JavaScript one,
//! with its interpreter) to compile. With the quick tier on, it is
//! compiled by Winch instead, which takes a fraction of that, and serves
//! at once; a background thread then compiles it with Cranelift, keeps
//! that in the cache, and swaps it in: runs that start afterwards use it,
//! runs under way finish on the code they started with. Every copy of a
//! [`crate::LoadedPlugin`] shares one [`CodeSlot`], so all of them move
//! up together. One background compile runs at a time; one whose plugin
//! was dropped before its turn is not made.

use crate::cache::CompileCache;
use crate::contract::Bindings;
use crate::host::RunState;
use crate::shared::SharedCode;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

/// Which compiler made the code a plugin runs now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Cranelift, optimizing: the code every plugin ends up running.
    Optimized,
    /// Winch, in one pass: serving until Cranelift's code is ready.
    Quick,
}

/// Compiled, linked code of a plugin, on the engine that compiled it.
pub(crate) struct Code {
    pub(crate) bindings: Bindings,
    /// The engine a store for this code must be made on.
    pub(crate) engine: Engine,
    pub(crate) tier: Tier,
    /// Keeps the compiled component alive (shared by hash for optimized
    /// code, [`crate::shared`]).
    _component: Arc<Component>,
}

impl Code {
    pub(crate) fn new(
        bindings: Bindings,
        engine: Engine,
        tier: Tier,
        component: Arc<Component>,
    ) -> Self {
        Self {
            bindings,
            engine,
            tier,
            _component: component,
        }
    }
}

/// The code a plugin runs now; replaced once when it moves up a tier.
pub(crate) struct CodeSlot {
    code: Mutex<Arc<Code>>,
    moved: Condvar,
}

impl CodeSlot {
    pub(crate) fn new(code: Code) -> Arc<Self> {
        Arc::new(Self {
            code: Mutex::new(Arc::new(code)),
            moved: Condvar::new(),
        })
    }

    /// The code a run starting now uses.
    pub(crate) fn current(&self) -> Arc<Code> {
        self.code.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn replace(&self, code: Code) {
        *self.code.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(code);
        self.moved.notify_all();
    }

    /// Wait up to `limit` for optimized code; whether it serves now.
    pub(crate) fn wait_optimized(&self, limit: Duration) -> bool {
        let code = self.code.lock().unwrap_or_else(|p| p.into_inner());
        let (code, _) = self
            .moved
            .wait_timeout_while(code, limit, |code| code.tier != Tier::Optimized)
            .unwrap_or_else(|p| p.into_inner());
        code.tier == Tier::Optimized
    }
}

/// A component waiting for its optimizing compile.
pub(crate) struct Pending {
    pub(crate) bytes: Vec<u8>,
    /// Its content hash, its key in the cache.
    pub(crate) hash: String,
    /// The contract version it was built for.
    pub(crate) version: String,
    /// Names it in logs.
    pub(crate) origin: String,
}

/// What a background compile needs of the runtime.
pub(crate) struct Optimizer {
    pub(crate) engine: Engine,
    pub(crate) linker: Arc<Linker<RunState>>,
    pub(crate) cache: CompileCache,
    pub(crate) shared: Arc<SharedCode>,
    /// Held while a background compile runs: one at a time.
    pub(crate) turn: Arc<Mutex<()>>,
}

impl Optimizer {
    /// Compile `component` with Cranelift on a background thread, keep it
    /// in the cache, and swap it into `slot`.
    pub(crate) fn spawn(self, slot: &Arc<CodeSlot>, component: Pending) {
        let slot = Arc::downgrade(slot);
        let origin = component.origin.clone();
        let spawned = std::thread::Builder::new()
            .name("medic-optimize".into())
            .spawn(move || self.optimize(&slot, &component));
        if let Err(e) = spawned {
            tracing::warn!(
                origin,
                "cannot start the optimizing compile: {e}; the quick code keeps serving"
            );
        }
    }

    fn optimize(&self, slot: &Weak<CodeSlot>, pending: &Pending) {
        let _turn = self.turn.lock().unwrap_or_else(|p| p.into_inner());
        if slot.strong_count() == 0 {
            return;
        }
        let Pending {
            bytes,
            hash,
            version,
            origin,
        } = pending;
        let started = std::time::Instant::now();
        // An earlier compile of the same bytes (for another copy loaded
        // meanwhile) is taken as it is.
        let component = match self.shared.get(hash) {
            Some(component) => component,
            None => match self.cache.lookup(&self.engine, hash) {
                Some(component) => self.shared.share(hash, component),
                None => match self.cache.compile(&self.engine, bytes) {
                    Ok(compiled) => {
                        self.cache.store(hash, &compiled);
                        self.shared.share(hash, compiled.component.clone())
                    }
                    Err(e) => {
                        tracing::warn!(
                            origin,
                            "the optimizing compile failed: {e:#}; the quick code keeps serving"
                        );
                        return;
                    }
                },
            },
        };
        let bindings = match Bindings::new(version, &self.linker, &component) {
            Ok(bindings) => bindings,
            Err(e) => {
                tracing::warn!(
                    origin,
                    "the optimized code does not link: {e:#}; the quick code keeps serving"
                );
                return;
            }
        };
        if let Some(slot) = slot.upgrade() {
            slot.replace(Code::new(
                bindings,
                self.engine.clone(),
                Tier::Optimized,
                component,
            ));
            tracing::debug!(
                origin,
                millis = started.elapsed().as_millis() as u64,
                "optimized code serving"
            );
        }
    }
}
