//! A fake medic host, to test a plugin's logic natively with `cargo test`.
//!
//! Built for wasm32, a plugin's host functions ([`crate::fs`],
//! [`crate::services`], [`crate::wsus`], [`crate::state`], [`crate::log`],
//! [`crate::settings`]) are imports the agent answers. On any other target
//! they answer from the [`FakeHost`] that is running the plugin on the
//! current thread, so the same plugin code runs in a native test: set the
//! fake up with the fault the plugin exists to fix, run the plugin, and
//! look at what it changed (enforce mode) or only planned (dry-run and
//! approve modes), at the host calls it made and at what it logged.
//! Calling a host function with no fake host running panics.
//!
//! ```
//! use medic_sdk::services::{ServiceState, StartupType};
//! use medic_sdk::testing::{event, FakeHost, Mode, Service};
//! use medic_sdk::{services, Capability, Event, Outcome, Plugin, PluginInfo, Report, Status};
//!
//! /// Starts `BITS` when it is stopped.
//! struct StartBits;
//!
//! impl Plugin for StartBits {
//!     fn describe() -> PluginInfo {
//!         PluginInfo {
//!             name: "start-bits".into(),
//!             version: "0.1.0".into(),
//!             description: "Starts BITS.".into(),
//!             capabilities: vec![Capability::ServicesRead, Capability::ServicesControl],
//!             triggers: vec![],
//!         }
//!     }
//!
//!     fn handle(_event: Event) -> Result<Outcome, String> {
//!         let mut report = Report::new();
//!         let change = services::start("BITS", 30_000)?;
//!         report.record_service("start-service", &change, false);
//!         Ok(report.finish("BITS runs"))
//!     }
//! }
//!
//! let mut host = FakeHost::new();
//! host.add_service(Service::new("BITS").state(ServiceState::Stopped))
//!     .grant_service("BITS");
//!
//! // Dry run: the start is planned, BITS stays stopped.
//! host.mode(Mode::DryRun);
//! let run = host.run::<StartBits>(event::manual());
//! assert_eq!(run.status(), Status::NeedsApproval);
//! assert_eq!(run.planned().len(), 1);
//! assert_eq!(host.service("BITS").state, ServiceState::Stopped);
//!
//! // Enforce: it is started.
//! host.mode(Mode::Enforce);
//! let run = host.run::<StartBits>(event::manual());
//! assert_eq!(run.status(), Status::Remediated);
//! assert_eq!(host.service("BITS").state, ServiceState::Running);
//!
//! // Healthy: nothing to do, nothing changed.
//! let run = host.run::<StartBits>(event::manual());
//! assert_eq!(run.status(), Status::Healthy);
//! assert!(!run.changed_anything());
//! ```
//!
//! What the fake models, as the agent and its backends do:
//!
//! - **Grants.** By default the plugin is granted exactly the capabilities
//!   its `describe()` asks for, scoped to the roots ([`FakeHost::grant_root`])
//!   and service names ([`FakeHost::grant_service`]) the test gives (with
//!   none given: the whole fake file system, every service name). Explicit
//!   [`Grants`] replace that. A plugin that asks for a capability the grants
//!   lack is refused before it runs, as the agent refuses to load it
//!   ([`FakeHost::try_run`]); a call outside the grants (a capability not
//!   asked for, a path outside the roots, another service) returns the
//!   `denied` error kind with the agent's message.
//! - **Modes** ([`Mode`]). In dry-run and approve modes every mutating call
//!   returns what the real host returns for a plan (`applied: false`, the
//!   expected `after`, the updates that would change, `0` from
//!   `start-sync`, the current value from `set-config`) and changes
//!   nothing; refusals are decided as in enforce mode. State writes are
//!   kept in every mode.
//! - **Files** ([`Entry`]): folders, files and symbolic links with an owner
//!   and access entries (principal and [`AccessRight`]).
//!   `ensure-access` checks the path (and, recursively, everything under
//!   it but links), adds or raises the principal's entry where it lacks
//!   the right, and reports each path changed; links are neither followed
//!   nor changed.
//! - **Services** ([`Service`]): state, startup type and problem, under
//!   the rules of the Service Control Manager or systemd
//!   ([`ServiceManager`]): no-ops are unapplied with `before` equal to
//!   `after`, a broken or disabled service is refused with `conflict`,
//!   read-only startup types with `invalid-argument`. A service can be
//!   made to fail or time out when started.
//! - **WSUS** ([`FakeWsus`]): updates, configuration, approvals, the
//!   upstream and the proxy, and synchronizations that run on after
//!   `start-sync` and end, as a [`SyncScript`] says, at the start of a
//!   later run.
//! - **Settings, state and logs**: typed settings as the policy writes
//!   them, the plugin's state (kept across runs of one `FakeHost`), and
//!   every message logged, per run.
//!
//! Where it is simpler than the real host: paths are compared exactly
//! (case included) and `\` is a separator as well as `/`; access entries
//! are one right per principal, with no groups, deny entries, inheritance
//! or default entries (a recursive grant changes every path that lacks the
//! right, as on POSIX, where NTFS would add one inheritable entry); any
//! principal name is accepted; services start and stop at once; the state
//! store has no quota; the host's limits (time, memory, calls) are not
//! enforced; a run's [`HostCall`]s include the reads of settings and state,
//! which the agent's journal leaves out.

mod fs;
mod grants;
pub(crate) mod imports;
mod services;
#[cfg(test)]
mod tests;
mod wsus;

pub mod event;

pub use fs::Entry;
pub use grants::{Grants, LoadError};
pub use services::{Service, ServiceManager};
pub use wsus::{Downloads, FakeWsus, SyncScript, Update};

use crate::config::Value;
use crate::log::Level;
use crate::services::ServiceStatus;
use crate::wsus::UpdateSummary;
use crate::{AccessRight, Action, Error, ErrorKind, Event, Outcome, Plugin, Status};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;

/// How a run may affect the system, as the policy's `mode` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Mutating calls are executed.
    #[default]
    Enforce,
    /// Mutating calls are only planned.
    DryRun,
    /// As dry-run; the plan waits for an operator's approval.
    Approve,
}

/// A function of the contract, as the run's record names it.
macro_rules! host_functions {
    ($($variant:ident => $name:literal,)*) => {
        /// A host function of the contract (`medic:plugin` and
        /// `medic:wsus`), as a [`HostCall`] names it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum HostFn {
            $(#[doc = concat!("`", $name, "`")] $variant,)*
        }

        impl HostFn {
            /// Every host function.
            pub const ALL: &[HostFn] = &[$(HostFn::$variant,)*];

            /// `interface.function`, as in the WIT and the audit journal:
            /// `fs.ensure-access`.
            pub fn name(self) -> &'static str {
                match self {
                    $(HostFn::$variant => $name,)*
                }
            }
        }
    };
}

host_functions! {
    FsStat => "fs.stat",
    FsListDir => "fs.list-dir",
    FsReadAccess => "fs.read-access",
    FsReadFile => "fs.read-file",
    FsEnsureAccess => "fs.ensure-access",
    ServicesQuery => "services.query",
    ServicesStart => "services.start",
    ServicesStop => "services.stop",
    ServicesRestart => "services.restart",
    ServicesSetStartup => "services.set-startup",
    ConfigGet => "config.get",
    ConfigAll => "config.all",
    StateGet => "state.get",
    StateSet => "state.set",
    StateRemove => "state.remove",
    StateKeys => "state.keys",
    LogLog => "log.log",
    LogPanicked => "log.panicked",
    WsusServerInfo => "wsus.server-info",
    WsusListUpdates => "wsus.list-updates",
    WsusUpstreamHas => "wsus.upstream-has",
    WsusCancelDownloads => "wsus.cancel-downloads",
    WsusResumeDownloads => "wsus.resume-downloads",
    WsusDecline => "wsus.decline",
    WsusApprovalCounts => "wsus.approval-counts",
    WsusListInactiveApprovals => "wsus.list-inactive-approvals",
    WsusRemoveInactiveApprovals => "wsus.remove-inactive-approvals",
    WsusGetConfig => "wsus.get-config",
    WsusSetConfig => "wsus.set-config",
    WsusStartSync => "wsus.start-sync",
    WsusSyncStatus => "wsus.sync-status",
    WsusSyncHistory => "wsus.sync-history",
    WsusUpstreamInfo => "wsus.upstream-info",
    WsusProxy => "wsus.proxy",
    WsusCheckUpstream => "wsus.check-upstream",
}

impl HostFn {
    /// Whether the call changes the system: only planned in dry-run and
    /// approve modes. State writes are the plugin's memory, not a change.
    pub fn is_mutating(self) -> bool {
        matches!(
            self,
            HostFn::FsEnsureAccess
                | HostFn::ServicesStart
                | HostFn::ServicesStop
                | HostFn::ServicesRestart
                | HostFn::ServicesSetStartup
                | HostFn::WsusCancelDownloads
                | HostFn::WsusResumeDownloads
                | HostFn::WsusDecline
                | HostFn::WsusRemoveInactiveApprovals
                | HostFn::WsusSetConfig
                | HostFn::WsusStartSync
        )
    }
}

impl fmt::Display for HostFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What came of one host call.
#[derive(Debug, Clone)]
pub enum CallOutcome {
    /// A call that changes nothing in the system (a read, a setting, the
    /// plugin's state) returned its value.
    Done,
    /// A mutating call was executed (enforce mode); `changed` is false when
    /// it had nothing to do (starting a running service, a right already
    /// there).
    Applied { changed: bool },
    /// A mutating call was only planned (dry-run and approve modes).
    Planned,
    /// The call was refused: the grants do not allow it.
    Denied(Error),
    /// The call returned another error to the plugin.
    Failed(Error),
}

/// One call the plugin made to the host.
#[derive(Debug, Clone)]
pub struct HostCall {
    /// Which function.
    pub function: HostFn,
    /// Its arguments by name, as text (long lists are given whole).
    pub args: Vec<(&'static str, String)>,
    /// What came of it.
    pub outcome: CallOutcome,
}

impl HostCall {
    /// The argument `name` as text.
    pub fn arg(&self, name: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The error the call returned, if any (a refusal included).
    pub fn error(&self) -> Option<&Error> {
        match &self.outcome {
            CallOutcome::Denied(e) | CallOutcome::Failed(e) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Display for HostCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let args: Vec<String> = self
            .args
            .iter()
            .map(|(key, value)| format!("{key}={value:?}"))
            .collect();
        write!(f, "{}({})", self.function, args.join(", "))?;
        match &self.outcome {
            CallOutcome::Done => Ok(()),
            CallOutcome::Applied { changed: true } => f.write_str(": applied"),
            CallOutcome::Applied { changed: false } => f.write_str(": applied, nothing to do"),
            CallOutcome::Planned => f.write_str(": planned"),
            CallOutcome::Denied(e) | CallOutcome::Failed(e) => write!(f, ": {}", e.describe()),
        }
    }
}

/// One message the plugin logged.
#[derive(Debug, Clone)]
pub struct LogRecord {
    pub level: Level,
    pub message: String,
}

/// What one run did: the value it returned, every host call it made, in
/// order, and what it logged. For a plugin's run the value is what
/// `handle` returned.
#[derive(Debug, Clone)]
pub struct Run<T = Result<Outcome, String>> {
    /// What the run returned.
    pub outcome: T,
    /// Every host call, in order (log messages are in `logs`).
    pub calls: Vec<HostCall>,
    /// Every message logged, in order.
    pub logs: Vec<LogRecord>,
    /// The event the plugin handled; none for [`FakeHost::with`].
    pub event: Option<Event>,
}

impl<T> Run<T> {
    /// The calls to `function`.
    pub fn calls_to(&self, function: HostFn) -> Vec<&HostCall> {
        self.calls
            .iter()
            .filter(|c| c.function == function)
            .collect()
    }

    /// The mutating calls that were executed.
    pub fn applied(&self) -> Vec<&HostCall> {
        self.calls
            .iter()
            .filter(|c| matches!(c.outcome, CallOutcome::Applied { .. }))
            .collect()
    }

    /// The mutating calls that were only planned.
    pub fn planned(&self) -> Vec<&HostCall> {
        self.calls
            .iter()
            .filter(|c| matches!(c.outcome, CallOutcome::Planned))
            .collect()
    }

    /// The calls the grants refused.
    pub fn denied(&self) -> Vec<&HostCall> {
        self.calls
            .iter()
            .filter(|c| matches!(c.outcome, CallOutcome::Denied(_)))
            .collect()
    }

    /// Whether an executed call changed the system (what the agent's flap
    /// guard counts).
    pub fn changed_anything(&self) -> bool {
        self.calls
            .iter()
            .any(|c| matches!(c.outcome, CallOutcome::Applied { changed: true }))
    }

    /// Whether a logged message contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.logs.iter().any(|l| l.message.contains(text))
    }
}

impl Run {
    /// The outcome `handle` returned; panics with its error if it returned
    /// one.
    #[track_caller]
    pub fn outcome(&self) -> &Outcome {
        match &self.outcome {
            Ok(outcome) => outcome,
            Err(e) => panic!("the plugin's run failed: {e}"),
        }
    }

    /// The error `handle` returned; panics if it returned an outcome.
    #[track_caller]
    pub fn error(&self) -> &str {
        match &self.outcome {
            Ok(outcome) => panic!(
                "the plugin's run returned an outcome ({:?}: {}), not an error",
                outcome.status, outcome.summary
            ),
            Err(e) => e,
        }
    }

    /// The outcome's status.
    #[track_caller]
    pub fn status(&self) -> Status {
        self.outcome().status
    }

    /// The outcome's summary.
    #[track_caller]
    pub fn summary(&self) -> &str {
        &self.outcome().summary
    }

    /// The outcome's actions.
    #[track_caller]
    pub fn actions(&self) -> &[Action] {
        &self.outcome().actions
    }

    /// The `follow-up` event the agent would send for the run's follow-up
    /// request, due after its delay; none when the run asked for none.
    pub fn follow_up_event(&self) -> Option<Event> {
        let request = self.outcome.as_ref().ok()?.follow_up.as_ref()?;
        let previous = self.event.as_ref()?;
        let mut next = event::follow_up(previous, &request.reason);
        next.time_ms = previous.time_ms + u64::from(request.after_seconds) * 1000;
        Some(next)
    }
}

/// The plugin name denial messages use in [`FakeHost::with`].
const UNNAMED_PLUGIN: &str = "test-plugin";

/// What a host function sees: the fake system and the current run.
#[derive(Default)]
pub(crate) struct World {
    plugin: String,
    mode: Mode,
    grants: Grants,
    pub(crate) fs: fs::FakeFs,
    pub(crate) services: services::FakeServices,
    wsus: Option<FakeWsus>,
    pub(crate) settings: BTreeMap<String, Value>,
    pub(crate) state: BTreeMap<String, String>,
    /// The fake's clock, milliseconds since the Unix epoch.
    now_ms: u64,
    calls: Vec<HostCall>,
    logs: Vec<LogRecord>,
}

impl World {
    /// Perform one recorded host call: check the grants, decide whether a
    /// mutating call is applied (`op` receives `apply`), and record it.
    /// `changed` says whether an applied call's value shows a change.
    pub(crate) fn call<T>(
        &mut self,
        function: HostFn,
        args: Vec<(&'static str, String)>,
        op: impl FnOnce(&mut World, bool) -> Result<T, Error>,
        changed: impl FnOnce(&T) -> bool,
    ) -> Result<T, Error> {
        let apply = function.is_mutating() && self.mode == Mode::Enforce;
        let result = self
            .grants
            .require(function, &self.plugin)
            .and_then(|()| op(self, apply));
        let outcome = match &result {
            Err(e) if e.kind == ErrorKind::Denied => CallOutcome::Denied(e.clone()),
            Err(e) => CallOutcome::Failed(e.clone()),
            Ok(_) if !function.is_mutating() => CallOutcome::Done,
            Ok(value) if apply => CallOutcome::Applied {
                changed: changed(value),
            },
            Ok(_) => CallOutcome::Planned,
        };
        self.calls.push(HostCall {
            function,
            args,
            outcome,
        });
        result
    }

    pub(crate) fn grants(&self) -> &Grants {
        &self.grants
    }

    pub(crate) fn log(&mut self, level: Level, message: &str) {
        self.logs.push(LogRecord {
            level,
            message: message.to_string(),
        });
    }

    /// The WSUS server, or the agent's refusal when none is configured.
    pub(crate) fn wsus(&mut self) -> Result<&mut FakeWsus, Error> {
        self.wsus.as_mut().ok_or_else(|| {
            error(
                ErrorKind::Unsupported,
                "no WSUS server is configured for this agent: select the `lab` backend in the policy",
            )
        })
    }

    /// The clock, moved on by one millisecond, so that no two syncs start
    /// at the same time.
    pub(crate) fn tick(&mut self) -> u64 {
        self.now_ms += 1;
        self.now_ms
    }
}

/// An error value as the host returns it.
pub(crate) fn error(kind: ErrorKind, message: impl Into<String>) -> Error {
    Error {
        kind,
        message: message.into(),
    }
}

/// What a host function says when no fake host runs on its thread.
const NO_HOST: &str = "no medic host: run the plugin through medic_sdk::testing::FakeHost";

thread_local! {
    /// The world of the fake host running on this thread.
    static CURRENT: RefCell<Option<World>> = const { RefCell::new(None) };
}

/// Run `f` on the world of the fake host running on this thread; panics
/// when none runs.
#[track_caller]
pub(crate) fn with_world<T>(f: impl FnOnce(&mut World) -> T) -> T {
    CURRENT.with(|current| {
        let mut current = current.borrow_mut();
        let Some(world) = current.as_mut() else {
            panic!("{NO_HOST}");
        };
        f(world)
    })
}

/// The world installed for this thread while it lives; dropped (when the
/// run returns or panics) it goes back to its `FakeHost`.
struct Installed<'a> {
    home: &'a mut World,
}

impl<'a> Installed<'a> {
    fn new(home: &'a mut World) -> Self {
        CURRENT.with(|current| {
            let mut current = current.borrow_mut();
            assert!(
                current.is_none(),
                "a FakeHost is already running a plugin on this thread"
            );
            *current = Some(std::mem::take(home));
        });
        Self { home }
    }
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        if let Some(world) = CURRENT.with(|current| current.borrow_mut().take()) {
            *self.home = world;
        }
    }
}

/// A fake medic host: the system a plugin sees, the policy that grants it
/// access, and the runs. Set it up, [`run`](FakeHost::run) the plugin,
/// then look at the run and at the fake's state. The setup methods return
/// `&mut Self` to be chained; they may be called between runs to change
/// the system.
#[derive(Default)]
pub struct FakeHost {
    world: World,
    /// Grants set by the test, replacing those the plugin asks for.
    grants: Option<Grants>,
    /// The roots fs capabilities are scoped to; none: the whole file system.
    roots: Vec<String>,
    /// The services services capabilities are scoped to; none: every one.
    services: Vec<String>,
}

impl FakeHost {
    /// The time the fake's clock starts at (2024-11-25 16:00 UTC), and the
    /// time of the events [`event`] makes.
    pub const START_MS: u64 = 1_732_550_400_000;

    /// An empty system: no files, no services, no WSUS server, no settings;
    /// enforce mode.
    pub fn new() -> Self {
        let mut host = Self::default();
        host.world.now_ms = Self::START_MS;
        host
    }

    // ----- the policy -----

    /// The mode runs are in.
    pub fn mode(&mut self, mode: Mode) -> &mut Self {
        self.world.mode = mode;
        self
    }

    /// A setting, typed as the policy writes it: text, a whole number, a
    /// boolean, or a list of strings.
    pub fn setting(&mut self, key: &str, value: impl Into<Setting>) -> &mut Self {
        self.world.settings.insert(key.to_string(), value.into().0);
        self
    }

    /// Remove a setting.
    pub fn unset(&mut self, key: &str) -> &mut Self {
        self.world.settings.remove(key);
        self
    }

    /// Scope the plugin's `fs-read` and `fs-write` to `root` (and the other
    /// roots given). Without any, they cover the whole fake file system.
    #[track_caller]
    pub fn grant_root(&mut self, root: &str) -> &mut Self {
        if let Err(e) = fs::FakePath::parse(root) {
            panic!("root `{root}`: {}", e.message);
        }
        self.roots.push(root.to_string());
        self
    }

    /// Scope the plugin's `services-read` and `services-control` to `name`
    /// (and the other names given). Without any, they cover every name.
    pub fn grant_service(&mut self, name: &str) -> &mut Self {
        self.services.push(name.to_string());
        self
    }

    /// Grant exactly `grants`, whatever the plugin asks for.
    pub fn grants(&mut self, grants: Grants) -> &mut Self {
        self.grants = Some(grants);
        self
    }

    // ----- the system -----

    /// A folder (and the folders above it), with no access entries.
    #[track_caller]
    pub fn dir(&mut self, path: &str) -> &mut Self {
        self.entry(path, Entry::dir())
    }

    /// A file with these contents (and the folders above it).
    #[track_caller]
    pub fn file(&mut self, path: &str, contents: impl Into<Vec<u8>>) -> &mut Self {
        self.entry(path, Entry::file(contents))
    }

    /// A path as `entry` describes it (and the folders above it), replacing
    /// what was there.
    #[track_caller]
    pub fn entry(&mut self, path: &str, entry: Entry) -> &mut Self {
        self.world.fs.insert(path, entry);
        self
    }

    /// Add `principal`'s entry on `path`, or change its right.
    #[track_caller]
    pub fn allow(&mut self, path: &str, principal: &str, right: AccessRight) -> &mut Self {
        self.world.fs.allow(path, principal, right);
        self
    }

    /// Remove `principal`'s entries on `path` (and everything under it, with
    /// `recursive`).
    #[track_caller]
    pub fn revoke(&mut self, path: &str, principal: &str, recursive: bool) -> &mut Self {
        self.world.fs.revoke(path, principal, recursive);
        self
    }

    /// A service, replacing one of the same name.
    pub fn add_service(&mut self, service: Service) -> &mut Self {
        self.world.services.add(service);
        self
    }

    /// Whose rules services follow (Windows' by default).
    pub fn service_manager(&mut self, manager: ServiceManager) -> &mut Self {
        self.world.services.manager = manager;
        self
    }

    /// The WSUS server, to set up or look at; the first call adds one with
    /// [`FakeWsus::new`]'s defaults (without it, WSUS calls are
    /// `unsupported`, as on an agent without one).
    pub fn wsus(&mut self) -> &mut FakeWsus {
        self.world.wsus.get_or_insert_with(FakeWsus::new)
    }

    /// Store a value in the plugin's state, as an earlier run would have.
    pub fn set_state(&mut self, key: &str, value: &str) -> &mut Self {
        self.world.state.insert(key.to_string(), value.to_string());
        self
    }

    /// Move the fake's clock on.
    pub fn advance(&mut self, duration: std::time::Duration) -> &mut Self {
        self.world.now_ms += duration.as_millis() as u64;
        self
    }

    // ----- running -----

    /// Run plugin `P` on `event`, as the agent would: the grants checked
    /// against what `describe()` asks for, then `handle(event)` with every
    /// host call answered by this fake. Panics when the agent would refuse
    /// to run the plugin (see [`FakeHost::try_run`]); a panic in `handle`
    /// is the test's panic.
    #[track_caller]
    pub fn run<P: Plugin>(&mut self, event: Event) -> Run {
        match self.try_run::<P>(event) {
            Ok(run) => run,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`FakeHost::run`], or the agent's refusal when the grants lack a
    /// capability the plugin asks for.
    pub fn try_run<P: Plugin>(&mut self, event: Event) -> Result<Run, LoadError> {
        let info = P::describe();
        let grants = match &self.grants {
            Some(grants) => grants.clone(),
            None => Grants::asked_for(&info.capabilities, &self.roots, &self.services),
        };
        grants.check_load(&info)?;
        let mut run = self.session(&info.name, grants, event.time_ms, || {
            P::handle(event.clone())
        });
        run.event = Some(event);
        Ok(run)
    }

    /// Call SDK functions directly, as a plugin named `test-plugin` would:
    /// with the grants set by [`FakeHost::grants`], or all of them (scoped
    /// as the test gave them).
    pub fn with<R>(&mut self, f: impl FnOnce() -> R) -> Run<R> {
        let grants = self.grants.clone().unwrap_or_else(|| {
            Grants::asked_for(&grants::every_capability(), &self.roots, &self.services)
        });
        let now = self.world.now_ms;
        self.session(UNNAMED_PLUGIN, grants, now, f)
    }

    fn session<R>(
        &mut self,
        plugin: &str,
        grants: Grants,
        time_ms: u64,
        f: impl FnOnce() -> R,
    ) -> Run<R> {
        let world = &mut self.world;
        world.plugin = plugin.to_string();
        world.grants = grants;
        world.now_ms = world.now_ms.max(time_ms);
        world.calls.clear();
        world.logs.clear();
        let now = world.now_ms;
        if let Some(wsus) = &mut world.wsus {
            wsus.next_run(now);
        }
        let outcome = {
            let _installed = Installed::new(world);
            f()
        };
        Run {
            outcome,
            calls: std::mem::take(&mut world.calls),
            logs: std::mem::take(&mut world.logs),
            event: None,
        }
    }

    // ----- looking at the system -----

    /// A service's status now; panics if there is none of that name.
    #[track_caller]
    pub fn service(&self, name: &str) -> ServiceStatus {
        match self.world.services.status(name) {
            Ok(status) => status,
            Err(e) => panic!("{}", e.message),
        }
    }

    /// The access entries of `path` now, as `fs.read-access` returns them;
    /// panics if it does not exist.
    #[track_caller]
    pub fn access(&self, path: &str) -> Vec<crate::fs::AccessEntry> {
        self.world.fs.entries_of(path)
    }

    /// The right `principal`'s entry on `path` gives now; panics if the
    /// path does not exist.
    #[track_caller]
    pub fn right(&self, path: &str, principal: &str) -> Option<AccessRight> {
        self.world.fs.right_of(path, principal)
    }

    /// Whether `path` exists.
    pub fn exists(&self, path: &str) -> bool {
        self.world.fs.exists(path)
    }

    /// An update as `wsus.list-updates` lists it now; panics if there is
    /// no WSUS server or no such update.
    #[track_caller]
    pub fn update(&self, id: &str) -> UpdateSummary {
        let Some(wsus) = &self.world.wsus else {
            panic!("the fake host has no WSUS server: set one up with FakeHost::wsus");
        };
        match wsus.update(id) {
            Some(update) => update,
            None => panic!("the WSUS server has no update `{id}`"),
        }
    }

    /// The plugin's state under `key`.
    pub fn state(&self, key: &str) -> Option<&str> {
        self.world.state.get(key).map(String::as_str)
    }

    /// The fake's clock, milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        self.world.now_ms
    }
}

impl fmt::Debug for FakeHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeHost")
            .field("mode", &self.world.mode)
            .field("settings", &self.world.settings)
            .field("state", &self.world.state)
            .finish_non_exhaustive()
    }
}

/// A setting's value, made from what a policy can write: a string, a whole
/// number, a boolean, or a list of strings.
#[derive(Debug, Clone)]
pub struct Setting(Value);

impl From<&str> for Setting {
    fn from(text: &str) -> Self {
        Self(Value::Text(text.to_string()))
    }
}

impl From<String> for Setting {
    fn from(text: String) -> Self {
        Self(Value::Text(text))
    }
}

impl From<i64> for Setting {
    fn from(n: i64) -> Self {
        Self(Value::Integer(n))
    }
}

impl From<i32> for Setting {
    fn from(n: i32) -> Self {
        Self(Value::Integer(n.into()))
    }
}

impl From<u32> for Setting {
    fn from(n: u32) -> Self {
        Self(Value::Integer(n.into()))
    }
}

impl From<bool> for Setting {
    fn from(b: bool) -> Self {
        Self(Value::Boolean(b))
    }
}

impl From<Vec<String>> for Setting {
    fn from(items: Vec<String>) -> Self {
        Self(Value::TextList(items))
    }
}

impl From<&[&str]> for Setting {
    fn from(items: &[&str]) -> Self {
        Self(Value::TextList(
            items.iter().map(|s| s.to_string()).collect(),
        ))
    }
}

impl<const N: usize> From<[&str; N]> for Setting {
    fn from(items: [&str; N]) -> Self {
        Self::from(&items[..])
    }
}

impl From<Value> for Setting {
    fn from(value: Value) -> Self {
        Self(value)
    }
}
