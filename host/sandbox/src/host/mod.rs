//! What a plugin's host calls do, whatever contract version it was built
//! for: one file per capability, each checking the run's grants on every
//! call, honouring its mode (mutating calls are only planned in dry-run and
//! approve modes), and recording the call in the run's record. The
//! functions here take and return the backends' types; each contract
//! version's module in [`crate::contract`] converts its own types to them.

pub mod deadline;
pub mod fs;
pub mod grants;
pub mod log;
pub mod output;
pub mod services;
pub mod state;
pub mod wsus;

use crate::limits::MemoryLimiter;
use crate::text::{MAX_ARGUMENT_BYTES, MAX_FIELD_BYTES, clean};
use grants::{Capability, Grants};
use medic_backends::{BackendError, Backends, ErrorKind};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub use grants::GrantError;
pub use state::{PluginState, StateError};

/// How a run may affect the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Mutating calls are executed.
    #[default]
    Enforce,
    /// Mutating calls are recorded as planned and not executed.
    DryRun,
    /// As dry-run; the plan waits for an operator's approval.
    Approve,
}

impl Mode {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "enforce" => Some(Self::Enforce),
            "dry-run" => Some(Self::DryRun),
            "approve" => Some(Self::Approve),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::DryRun => "dry-run",
            Self::Approve => "approve",
        }
    }
}

/// What a host call's record says of its value: a short text, the paths it
/// changed where the host knows them exactly, and whether it changed
/// anything at all.
pub(crate) struct Summary {
    pub text: String,
    pub effects: Vec<String>,
    pub changed: bool,
}

/// One call a plugin made to the host, as recorded in the run's journal.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HostCall {
    /// `interface.function`, e.g. `fs.ensure-access`.
    pub function: String,
    /// The arguments (long lists are summarised).
    pub args: serde_json::Value,
    /// Whether the call changes the system.
    pub mutating: bool,
    /// Whether a mutating call was executed (false: only planned).
    pub applied: bool,
    /// Whether an executed call changed anything: false for one that had
    /// nothing to do (starting a running service, a grant already there).
    /// A run counts as changing the system (for the flap guard) only with
    /// such a call.
    pub changed: bool,
    /// A short summary of what came back.
    pub result: String,
    /// Set when the call returned an error to the plugin.
    pub error: Option<String>,
    /// Set when the call was refused because of the grants.
    pub denied: bool,
    /// What an applied call changed, where the host knows it exactly
    /// (the paths `fs.ensure-access` changed): the dispatcher uses it to
    /// tell the plugin's own effects from new events.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub effects: Vec<String>,
    pub micros: u64,
}

/// The paths a plugin's runs changed recently, registered at the moment of
/// the change, so that the file events they cause (their echo) can be told
/// from new ones however the two race. Each entry answers for one echo.
#[derive(Debug, Default)]
pub struct OwnEffects {
    paths: std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, u64>>,
}

impl OwnEffects {
    /// How long after a change its echo is expected.
    pub const WINDOW_MS: u64 = 2_000;

    pub fn record(&self, paths: &[String]) {
        let until = medic_backends::now_ms() + Self::WINDOW_MS;
        let mut map = self.paths.lock().unwrap_or_else(|p| p.into_inner());
        for path in paths {
            map.insert(std::path::PathBuf::from(path), until);
        }
    }

    /// Whether an event on `path` is the echo of a recorded change; if so
    /// the change is forgotten, so the next event on it counts again.
    pub fn take_echo(&self, path: &std::path::Path) -> bool {
        let now = medic_backends::now_ms();
        let mut map = self.paths.lock().unwrap_or_else(|p| p.into_inner());
        if map.is_empty() {
            return false;
        }
        map.retain(|_, until| *until > now);
        map.remove(path).is_some()
    }
}

/// One log record a plugin wrote.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PluginLog {
    pub level: String,
    pub message: String,
}

/// Changed paths kept in a host call's record.
const MAX_RECORDED_EFFECTS: usize = 100;

/// Refused calls logged per run; the record keeps them all (within its
/// budget).
const MAX_LOGGED_REFUSALS: usize = 10;

/// Records kept per run of calls that change nothing; more are counted.
const MAX_RECORDED_READS: usize = 1_000;

/// Records kept per run of calls that change (or would change) something;
/// more are counted. A journal record holds far fewer in any case.
const MAX_RECORDED_CHANGES: usize = 2_000;

/// Everything a run's host calls can see: the store data of one run.
pub struct RunState {
    pub plugin: String,
    pub run_id: String,
    pub mode: Mode,
    pub grants: Arc<Grants>,
    pub settings: Arc<crate::settings::Settings>,
    pub backends: Backends,
    pub state: Option<Arc<dyn PluginState>>,
    pub calls: Vec<HostCall>,
    pub logs: Vec<PluginLog>,
    pub dropped_logs: usize,
    /// Bytes of the messages in `logs`.
    log_bytes: usize,
    /// Calls made and counted, but not recorded (past the budget).
    pub dropped_calls: usize,
    /// Calls made, recorded or not: what the call quota counts.
    made_calls: usize,
    /// Recorded calls that change nothing.
    recorded_reads: usize,
    /// Recorded calls that change something.
    recorded_changes: usize,
    /// Refused calls so far (only the first few are logged).
    refused_calls: usize,
    pub max_calls: usize,
    pub limiter: MemoryLimiter,
    /// Where applied changes are registered as they happen, if anyone
    /// listens for their echo.
    pub own_effects: Option<Arc<OwnEffects>>,
    /// Set when the plugin said it panicked, with its message.
    pub panic: Option<String>,
    /// When the run must end, host calls included: set with the store.
    pub(crate) deadline: Instant,
    /// Bytes the plugin's state may take: set with the store.
    pub(crate) state_quota: u64,
    /// Built on first use: Rust plugins import no WASI, so most runs never
    /// pay for it.
    wasi: Option<WasiCtx>,
    /// What the plugin writes to standard output and error, with WASI.
    pub(crate) output: Option<output::Output>,
    table: ResourceTable,
}

impl RunState {
    /// State for one run. WASI is linked for components written in other
    /// languages, locked down: no files, no network, no environment, no
    /// arguments, no standard input; standard output and error are kept,
    /// within a budget, as the run's log lines.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        plugin: String,
        run_id: String,
        mode: Mode,
        grants: Arc<Grants>,
        settings: Arc<crate::settings::Settings>,
        backends: Backends,
        state: Option<Arc<dyn PluginState>>,
        limiter: MemoryLimiter,
        max_calls: usize,
    ) -> Self {
        Self {
            plugin,
            run_id,
            mode,
            grants,
            settings,
            backends,
            state,
            calls: Vec::new(),
            logs: Vec::new(),
            dropped_logs: 0,
            log_bytes: 0,
            dropped_calls: 0,
            made_calls: 0,
            recorded_reads: 0,
            recorded_changes: 0,
            refused_calls: 0,
            max_calls,
            limiter,
            own_effects: None,
            panic: None,
            deadline: Instant::now(),
            state_quota: 0,
            wasi: None,
            output: None,
            table: ResourceTable::new(),
        }
    }

    /// Perform one host call: enforce the per-run call quota (a trap when
    /// exceeded), decide whether a mutating call is applied, time it, and
    /// record it. `op` receives `apply`.
    pub(crate) fn host_call<T>(
        &mut self,
        function: &'static str,
        args: serde_json::Value,
        mutating: bool,
        op: impl FnOnce(&mut Self, bool) -> Result<T, BackendError>,
        summary: impl FnOnce(&T) -> String,
    ) -> wasmtime::Result<Result<T, BackendError>> {
        self.host_call_with_effects(function, args, mutating, op, |value| Summary {
            text: summary(value),
            effects: Vec::new(),
            changed: true,
        })
    }

    /// [`RunState::host_call`] for calls that report what they changed.
    pub(crate) fn host_call_with_effects<T>(
        &mut self,
        function: &'static str,
        args: serde_json::Value,
        mutating: bool,
        op: impl FnOnce(&mut Self, bool) -> Result<T, BackendError>,
        summary: impl FnOnce(&T) -> Summary,
    ) -> wasmtime::Result<Result<T, BackendError>> {
        self.check_deadline()?;
        if self.made_calls >= self.max_calls {
            return Err(wasmtime::format_err!(
                "plugin made more than {} host calls in one run",
                self.max_calls
            ));
        }
        self.made_calls += 1;
        let args = crate::text::bound_json(args);
        let apply = mutating && self.mode == Mode::Enforce;
        let started = Instant::now();
        let result = op(self, apply);
        let micros = started.elapsed().as_micros() as u64;
        let (text, effects, changed, error, denied) = match &result {
            Ok(value) => {
                let Summary {
                    text,
                    effects,
                    changed,
                } = summary(value);
                let text = clean(&text, MAX_FIELD_BYTES);
                let mut effects = if apply { effects } else { Vec::new() };
                if let Some(registry) = &self.own_effects {
                    registry.record(&effects);
                }
                // The registry knows every path; the record keeps the first
                // ones, so that a repair of a large tree stays a small record.
                if effects.len() > MAX_RECORDED_EFFECTS {
                    let more = effects.len() - MAX_RECORDED_EFFECTS;
                    effects.truncate(MAX_RECORDED_EFFECTS);
                    effects.push(format!("... and {more} more"));
                }
                for effect in &mut effects {
                    crate::text::clean_in_place(effect, MAX_ARGUMENT_BYTES);
                }
                (text, effects, changed, None, false)
            }
            Err(e) => (
                String::new(),
                Vec::new(),
                // A call that failed may have changed part of what it was
                // asked (a walk cut short): it counts as a change.
                true,
                Some(clean(
                    &format!("{}: {}", e.kind, e.message),
                    MAX_FIELD_BYTES,
                )),
                e.kind == ErrorKind::Denied,
            ),
        };
        if denied {
            self.refused_calls += 1;
        }
        if denied && self.refused_calls <= MAX_LOGGED_REFUSALS {
            tracing::warn!(
                plugin = %self.plugin, run = %self.run_id, function,
                "call outside the plugin's grants refused: {}", error.as_deref().unwrap_or("")
            );
        } else {
            tracing::debug!(plugin = %self.plugin, run = %self.run_id, function, micros, "host call");
        }
        let (recorded, budget) = if mutating {
            (&mut self.recorded_changes, MAX_RECORDED_CHANGES)
        } else {
            (&mut self.recorded_reads, MAX_RECORDED_READS)
        };
        if *recorded >= budget {
            self.dropped_calls += 1;
            self.check_deadline()?;
            return Ok(result);
        }
        *recorded += 1;
        self.calls.push(HostCall {
            function: function.to_string(),
            args,
            mutating,
            applied: apply && result.is_ok(),
            changed: apply && changed,
            result: text,
            error,
            denied,
            effects,
            micros,
        });
        // A call that ran past the deadline ends the run as it returns.
        self.check_deadline()?;
        Ok(result)
    }

    /// What is left of the run's time.
    pub(crate) fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// End the run (a trap) once its deadline has passed.
    pub(crate) fn check_deadline(&self) -> wasmtime::Result<()> {
        if Instant::now() >= self.deadline {
            Err(wasmtime::Error::new(deadline::DeadlinePassed))
        } else {
            Ok(())
        }
    }

    /// Refuse a call whose capability is not granted at all.
    pub(crate) fn require(&self, capability: Capability) -> Result<(), BackendError> {
        if self.grants.has(capability) {
            Ok(())
        } else {
            Err(denied(format!(
                "capability `{capability}` is not granted to plugin `{}`",
                self.plugin
            )))
        }
    }
}

/// An error value for a refused call.
pub(crate) fn denied(message: impl Into<String>) -> BackendError {
    BackendError::new(ErrorKind::Denied, message)
}

impl WasiView for RunState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let output = &mut self.output;
        let ctx = self.wasi.get_or_insert_with(|| {
            let captured = output.get_or_insert_with(output::Output::default);
            wasmtime_wasi::WasiCtxBuilder::new()
                .stdout(captured.stdout.clone())
                .stderr(captured.stderr.clone())
                .allow_tcp(false)
                .allow_udp(false)
                .allow_ip_name_lookup(false)
                .build()
        });
        WasiCtxView {
            ctx,
            table: &mut self.table,
        }
    }
}
