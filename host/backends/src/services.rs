//! System services: the values `services` calls exchange and the trait a
//! service manager (the Service Control Manager, systemd, the lab's)
//! implements.

use crate::OpResult;
use std::time::Duration;

/// Where a service is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceState {
    Stopped,
    StartPending,
    StopPending,
    Running,
    Paused,
    /// Not running because its last start failed or it exited with an
    /// error.
    Failed,
    /// Not running, and it cannot start: the service manager cannot load
    /// its definition (systemd's `bad-setting` and `error` load states).
    Broken,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stopped => "stopped",
            Self::StartPending => "start-pending",
            Self::StopPending => "stop-pending",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Failed => "failed",
            Self::Broken => "broken",
        }
    }
}

/// How a service starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupType {
    /// At boot.
    Automatic,
    /// At boot, until the next boot only (systemd's `enabled-runtime`).
    AutomaticUntilReboot,
    /// Windows' "Automatic (Delayed Start)".
    AutomaticDelayed,
    /// When something starts it.
    Manual,
    /// Never; it cannot be started until re-enabled.
    Disabled,
    /// Never, until the next boot only (systemd's `masked-runtime`).
    DisabledUntilReboot,
    /// When another unit, a socket, a timer or a path needs it: it has
    /// nothing to enable (systemd's `static`).
    Static,
    /// Not enabled itself, but enabling it enables the units it names
    /// (systemd's `indirect`: `Also=`, another instance of a template).
    Indirect,
    /// Made at boot by a generator or at run time (systemd's `generated`
    /// and `transient`): enabling does not apply to it.
    Generated,
}

impl StartupType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Automatic => "automatic",
            Self::AutomaticUntilReboot => "automatic-until-reboot",
            Self::AutomaticDelayed => "automatic-delayed",
            Self::Manual => "manual",
            Self::Disabled => "disabled",
            Self::DisabledUntilReboot => "disabled-until-reboot",
            Self::Static => "static",
            Self::Indirect => "indirect",
            Self::Generated => "generated",
        }
    }
}

/// What `query` reports about a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceStatus {
    pub name: String,
    pub display_name: String,
    pub state: ServiceState,
    pub startup: StartupType,
    /// Why it is failed or broken, in its service manager's terms; `None`
    /// while it is healthy.
    pub problem: Option<ServiceProblem>,
}

/// Why a service failed or cannot start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceProblem {
    pub kind: ProblemKind,
    /// The service manager's own words: systemd's result and exit status,
    /// or a load error; a Windows exit code.
    pub detail: String,
}

/// The kinds of [`ServiceProblem`] a plugin may act on differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// Its definition cannot be loaded (a unit file with a bad setting).
    Broken,
    /// Its process exited with a non-zero status.
    ExitCode,
    /// Its process was killed by a signal or dumped core.
    Signal,
    /// It did not start or stop within the time its manager allows.
    Timeout,
    /// It was started too often too quickly, and its manager stopped
    /// trying (systemd's `start-limit-hit`).
    StartLimit,
    /// Anything else its manager reports (resources, watchdog, out of
    /// memory).
    Other,
}

impl ProblemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Broken => "broken",
            Self::ExitCode => "exit-code",
            Self::Signal => "signal",
            Self::Timeout => "timeout",
            Self::StartLimit => "start-limit",
            Self::Other => "other",
        }
    }
}

/// What a control call did (or would do when not applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceChange {
    pub before: ServiceStatus,
    /// The expected status when not applied.
    pub after: ServiceStatus,
    pub applied: bool,
}

/// A service manager.
pub trait ServiceManager: Send + Sync {
    fn query(&self, name: &str) -> OpResult<ServiceStatus>;
    fn start(&self, name: &str, timeout: Duration, apply: bool) -> OpResult<ServiceChange>;
    fn stop(&self, name: &str, timeout: Duration, apply: bool) -> OpResult<ServiceChange>;
    fn restart(&self, name: &str, timeout: Duration, apply: bool) -> OpResult<ServiceChange>;
    fn set_startup(&self, name: &str, startup: StartupType, apply: bool)
    -> OpResult<ServiceChange>;
}
