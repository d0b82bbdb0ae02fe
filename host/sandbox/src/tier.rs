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
//! up together. One background compile runs at a time ([`Optimizer`]);
//! one whose plugins were dropped before its turn is not made.

use crate::cache::{CacheUse, CompileCache};
use crate::contract::Bindings;
use crate::host::RunState;
use crate::shared::SharedCode;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
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

    fn replace(&self, code: Arc<Code>) {
        *self.code.lock().unwrap_or_else(|p| p.into_inner()) = code;
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
    pub(crate) bytes: Arc<[u8]>,
    /// Its content hash, its key in the cache.
    pub(crate) hash: String,
    /// The contract version it was built for.
    pub(crate) version: String,
    /// Names it in logs.
    pub(crate) origin: String,
}

/// One background compile waiting, and every plugin copy waiting for it.
struct Job {
    pending: Pending,
    slots: Vec<Weak<CodeSlot>>,
}

/// The background compiles waiting; whether a worker takes them.
#[derive(Default)]
struct Queue {
    waiting: VecDeque<Job>,
    working: bool,
}

/// The background compiler: one worker thread while there is work, taking
/// jobs in order. A component queued twice is compiled once; a job whose
/// plugins were all dropped is left out, its bytes freed.
pub(crate) struct Optimizer {
    engine: Engine,
    linker: Arc<Linker<RunState>>,
    cache: CompileCache,
    shared: Arc<SharedCode>,
    queue: Mutex<Queue>,
    /// Held between jobs by [`Optimizer::hold`].
    held: Mutex<()>,
}

impl Optimizer {
    pub(crate) fn new(
        engine: Engine,
        linker: Arc<Linker<RunState>>,
        cache: CompileCache,
        shared: Arc<SharedCode>,
    ) -> Self {
        Self {
            engine,
            linker,
            cache,
            shared,
            queue: Mutex::default(),
            held: Mutex::default(),
        }
    }

    /// Hold back the jobs not started yet while the guard lives.
    pub(crate) fn hold(&self) -> MutexGuard<'_, ()> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue the optimizing compile of `pending` for `slot`, and start a
    /// worker if none runs.
    pub(crate) fn enqueue(self: &Arc<Self>, slot: &Arc<CodeSlot>, pending: Pending) {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        match queue
            .waiting
            .iter_mut()
            .find(|job| job.pending.hash == pending.hash)
        {
            Some(job) => job.slots.push(Arc::downgrade(slot)),
            None => queue.waiting.push_back(Job {
                pending,
                slots: vec![Arc::downgrade(slot)],
            }),
        }
        if queue.working {
            return;
        }
        let worker = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("medic-optimize".into())
            .spawn(move || worker.work());
        match spawned {
            Ok(_) => queue.working = true,
            Err(e) => tracing::warn!(
                "cannot start the optimizing compiler: {e}; plugins keep their quick code until the next load"
            ),
        }
    }

    fn work(&self) {
        loop {
            let job = {
                let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                queue
                    .waiting
                    .retain(|job| job.slots.iter().any(|slot| slot.strong_count() > 0));
                match queue.waiting.pop_front() {
                    Some(job) => job,
                    None => {
                        queue.working = false;
                        return;
                    }
                }
            };
            drop(self.hold());
            let optimized =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.optimize(&job)));
            if optimized.is_err() {
                tracing::error!(
                    origin = job.pending.origin,
                    "the optimizing compile panicked; the quick code keeps serving"
                );
            }
        }
    }

    /// Compile a job's component with Cranelift (or take an earlier
    /// compile of the same bytes), keep it in the cache, and swap it into
    /// every slot still alive.
    fn optimize(&self, job: &Job) {
        let Pending {
            bytes,
            hash,
            version,
            origin,
        } = &job.pending;
        let started = std::time::Instant::now();
        let component = match self.shared.get(hash) {
            Some(component) => component,
            None => match self.cache.lookup(&self.engine, hash) {
                Some(component) => self.shared.share(hash, component),
                None => match self.cache.compile(&self.engine, bytes) {
                    Ok(compiled) => {
                        // Once stored, served from the cache's file, mapped
                        // (pages the system may drop and read again),
                        // rather than from the compile's copy of the code
                        // in the agent's own memory.
                        let component = match self.cache.store(hash, &compiled) {
                            CacheUse::Compiled => self.cache.lookup(&self.engine, hash),
                            _ => None,
                        };
                        let component = component.unwrap_or_else(|| compiled.component.clone());
                        drop(compiled);
                        self.shared.share(hash, component)
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
        let code = Arc::new(Code::new(
            bindings,
            self.engine.clone(),
            Tier::Optimized,
            component,
        ));
        for slot in job.slots.iter().filter_map(Weak::upgrade) {
            slot.replace(Arc::clone(&code));
        }
        tracing::debug!(
            origin,
            millis = started.elapsed().as_millis() as u64,
            "optimized code serving"
        );
    }
}
