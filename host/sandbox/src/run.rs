//! One run: a fresh store with the run's grants, mode, limits and backends;
//! instantiate from the plugin's `InstancePre`; call `handle`; turn whatever
//! happened (an outcome, an error value, a timeout, the memory cap, a trap)
//! into a report. A run never takes the agent down with it.

use crate::contract::CallError;
use crate::engine::EPOCH_TICK;
use crate::event::{EventRecord, OutcomeRecord, Status};
use crate::host::deadline::DeadlinePassed;
use crate::host::grants::Grants;
use crate::host::{HostCall, Mode, OwnEffects, PluginLog, PluginState, RunState};
use crate::limits::{Limits, MemoryLimiter, MemoryUsage, mib};
use crate::text::{MAX_MESSAGE_BYTES, clean};
use crate::{LoadedPlugin, Runtime};
use medic_backends::Backends;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::{Store, Trap, UpdateDeadline};

/// Everything a run needs besides the plugin.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub run_id: String,
    pub event: EventRecord,
    pub mode: Mode,
    pub grants: Arc<Grants>,
    pub limits: Limits,
    pub settings: Arc<crate::settings::Settings>,
    pub backends: Backends,
    pub state: Option<Arc<dyn PluginState>>,
    /// Where to register the changes the run applies, as they happen.
    pub own_effects: Option<Arc<OwnEffects>>,
}

/// Why a run ended without an outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum RunFailure {
    /// `handle` returned an error value.
    PluginError { message: String },
    /// Ended at its wall-clock timeout, in wasm or in a host call.
    Timeout { limit_ms: u64, elapsed_ms: u64 },
    /// Stopped at its memory cap.
    MemoryCap {
        limit_bytes: usize,
        asked_bytes: usize,
    },
    /// Ran out of fuel.
    FuelExhausted { fuel: u64 },
    /// Panicked, with the panic's message.
    Panic { message: String },
    /// Trapped: an invalid operation, or a host limit.
    Trap { message: String },
    /// Trapped after writing to standard error, as the runtimes of Python
    /// and JavaScript do with an uncaught exception: what it said last
    /// there (the exception; the whole traceback is in the run's log
    /// lines), and the trap.
    Uncaught { message: String, trap: String },
    /// Could not be instantiated (e.g. the instance pool is full).
    Instantiate { message: String },
}

impl std::fmt::Display for RunFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PluginError { message } => write!(f, "the plugin reported an error: {message}"),
            Self::Timeout {
                limit_ms,
                elapsed_ms,
            } => write!(
                f,
                "ended at its timeout of {limit_ms} ms, after {elapsed_ms} ms"
            ),
            Self::MemoryCap {
                limit_bytes,
                asked_bytes,
            } => write!(
                f,
                "stopped at its memory cap of {} (it asked for {})",
                mib(*limit_bytes),
                mib(*asked_bytes)
            ),
            Self::FuelExhausted { fuel } => write!(f, "ran out of fuel ({fuel} units)"),
            Self::Panic { message } => write!(f, "panicked: {message}"),
            Self::Trap { message } => write!(f, "trapped: {message}"),
            Self::Uncaught { message, trap } => {
                write!(f, "stopped by an uncaught error: {message} ({trap})")
            }
            Self::Instantiate { message } => write!(f, "could not be started: {message}"),
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunResult {
    Completed(OutcomeRecord),
    Failed(RunFailure),
}

/// The full record of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub plugin: String,
    pub version: String,
    pub hash: String,
    pub mode: Mode,
    pub event: EventRecord,
    pub result: RunResult,
    pub calls: Vec<HostCall>,
    pub logs: Vec<PluginLog>,
    /// Messages past the run's log budget: counted, not kept.
    pub dropped_logs: usize,
    /// Calls past the run's record budget: made and counted, not kept.
    pub dropped_calls: usize,
    pub duration_us: u64,
    pub fuel_used: Option<u64>,
    /// The plugin's linear memory over the run.
    pub memory: MemoryUsage,
}

impl RunReport {
    /// The outcome, when the run completed.
    pub fn outcome(&self) -> Option<&OutcomeRecord> {
        match &self.result {
            RunResult::Completed(outcome) => Some(outcome),
            RunResult::Failed(_) => None,
        }
    }

    /// How the run ended; a run that did not complete counts as failed.
    pub fn status(&self) -> Status {
        self.outcome().map_or(Status::Failed, |o| o.status)
    }
}

impl Runtime {
    pub(crate) fn new_store(
        &self,
        engine: &wasmtime::Engine,
        mut state: RunState,
        limits: &Limits,
    ) -> Store<RunState> {
        let now = Instant::now();
        // A timeout too long to add is as good as none: a year will do.
        state.deadline = now
            .checked_add(limits.timeout)
            .unwrap_or_else(|| now + Duration::from_secs(366 * 24 * 3600));
        state.state_quota = limits.state_quota_bytes;
        let mut store = Store::new(engine, state);
        store.limiter(|state| &mut state.limiter);
        // The epoch only wakes the check; the wall clock decides. Each
        // check sets the next one halfway to the deadline, so a ticker
        // that runs slow cannot stretch the run, and a run that comes
        // back from a blocking host call after its deadline stops at once.
        store.set_epoch_deadline(half_way(limits.timeout));
        store.epoch_deadline_callback(|store| {
            let remaining = store.data().remaining();
            if remaining.is_zero() {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Continue(half_way(remaining)))
            }
        });
        store
            .set_fuel(limits.fuel.unwrap_or(u64::MAX))
            .expect("fuel is enabled on the engine");
        store
    }

    /// Run `plugin` once on `request.event`.
    pub fn run(&self, plugin: &LoadedPlugin, request: RunRequest) -> RunReport {
        let started = Instant::now();
        let span = tracing::info_span!(
            "run",
            plugin = %plugin.info.name,
            run = %request.run_id,
            event = %request.event.id,
            kind = %request.event.kind,
        );
        let _entered = span.enter();
        let mut state = RunState::new(
            plugin.info.name.clone(),
            request.run_id.clone(),
            request.mode,
            request.grants,
            request.settings,
            request.backends,
            request.state,
            MemoryLimiter::new(request.limits.memory_bytes),
            request.limits.max_host_calls,
        );
        state.own_effects = request.own_effects;
        let code = plugin.code.current();
        let mut store = self.new_store(&code.engine, state, &request.limits);
        let outcome = code
            .bindings
            .handle(&mut store, &request.event)
            .map_err(|e| match e {
                CallError::Instantiate(e) => RunFailure::Instantiate {
                    message: clean(&format!("{e:#}"), MAX_MESSAGE_BYTES),
                },
                CallError::Trap(e) => classify(&e, &store, &request.limits, started),
            });
        let result = match outcome {
            Ok(Ok(outcome)) => RunResult::Completed(outcome.bounded()),
            Ok(Err(message)) => RunResult::Failed(RunFailure::PluginError {
                message: clean(&message, MAX_MESSAGE_BYTES),
            }),
            Err(failure) => RunResult::Failed(failure),
        };
        let fuel_used = request
            .limits
            .fuel
            .map(|fuel| fuel.saturating_sub(store.get_fuel().unwrap_or(0)));
        let mut state = store.into_data();
        state.log_output();
        let report = RunReport {
            run_id: request.run_id,
            plugin: plugin.info.name.clone(),
            version: plugin.info.version.clone(),
            hash: plugin.hash.clone(),
            mode: request.mode,
            event: request.event,
            result,
            calls: state.calls,
            logs: state.logs,
            dropped_logs: state.dropped_logs,
            dropped_calls: state.dropped_calls,
            duration_us: started.elapsed().as_micros() as u64,
            fuel_used,
            memory: state.limiter.usage,
        };
        if report.dropped_logs > 0 {
            tracing::warn!(
                dropped = report.dropped_logs,
                "the plugin logged past its budget; the rest of its messages were counted and dropped"
            );
        }
        match &report.result {
            RunResult::Completed(outcome) => tracing::info!(
                status = %outcome.status, actions = outcome.actions.len(),
                micros = report.duration_us, "run finished: {}", outcome.summary
            ),
            RunResult::Failed(failure) => {
                tracing::warn!(micros = report.duration_us, "run failed: {failure}")
            }
        }
        report
    }
}

/// Epoch ticks to about half of `time`, at least one.
fn half_way(time: std::time::Duration) -> u64 {
    let ticks = time.as_micros() / EPOCH_TICK.as_micros() / 2;
    u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
}

/// Turn an error from a call into wasm into the reason the run ended.
pub(crate) fn classify(
    error: &wasmtime::Error,
    store: &Store<RunState>,
    limits: &Limits,
    started: Instant,
) -> RunFailure {
    if let Some(asked) = store.data().limiter.exceeded {
        return RunFailure::MemoryCap {
            limit_bytes: limits.memory_bytes,
            asked_bytes: asked,
        };
    }
    let timeout = || RunFailure::Timeout {
        limit_ms: limits.timeout.as_millis() as u64,
        elapsed_ms: started.elapsed().as_millis() as u64,
    };
    if error.is::<DeadlinePassed>() {
        return timeout();
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => timeout(),
        Some(Trap::OutOfFuel) => RunFailure::FuelExhausted {
            fuel: limits.fuel.unwrap_or(u64::MAX),
        },
        _ => match &store.data().panic {
            Some(message) => RunFailure::Panic {
                message: message.clone(),
            },
            None => {
                let trap = clean(&format!("{error:#}"), MAX_MESSAGE_BYTES);
                let last_words = store
                    .data()
                    .output
                    .as_ref()
                    .and_then(|output| output.last_words());
                match last_words {
                    Some(words) => RunFailure::Uncaught {
                        message: clean(&words, MAX_MESSAGE_BYTES),
                        trap,
                    },
                    None => RunFailure::Trap { message: trap },
                }
            }
        },
    }
}
