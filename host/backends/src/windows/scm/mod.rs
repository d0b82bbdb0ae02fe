//! Services through the Windows Service Control Manager.
//!
//! [`Scm`] implements [`ServiceManager`] over [`ScmApi`], the handful of
//! SCM calls it needs (status, configuration, start, stop, start type),
//! and a [`Clock`]. Everything else is decided here, in plain Rust tested
//! on every platform with a fake SCM and a fake clock:
//!
//! - the raw `SERVICE_STATUS` and start types as the contract's states
//!   and startup types ([`service_state`], [`startup_type`]); a stopped
//!   service whose exit code reports an error reads as `failed`;
//! - the SCM's error codes as the contract's error kinds ([`error_kind`]);
//! - start, stop and restart waiting for the target state within the
//!   call's timeout, a start that ends stopped reported as failed at once,
//!   with the service's exit code;
//! - calls that would change nothing (start a running service, set the
//!   startup type it has) change nothing and say so (`applied: false`,
//!   `before == after`), and dry-run plans what enforce would do,
//!   refusals included (a disabled service cannot be started).
//!
//! The Windows implementation of [`ScmApi`] is in `sys` (Windows only).

#[cfg(windows)]
mod sys;

#[cfg(windows)]
pub use sys::Win32Scm;

use crate::services::{
    ProblemKind, ServiceChange, ServiceManager, ServiceProblem, ServiceState, ServiceStatus,
    StartupType,
};
use crate::{BackendError, ErrorKind, OpResult};
use std::time::{Duration, Instant};

/// The SCM's numbers this module reads, as `winsvc.h` and `winerror.h`
/// define them (written out so the logic compiles on every platform).
pub mod raw {
    pub const SERVICE_STOPPED: u32 = 1;
    pub const SERVICE_START_PENDING: u32 = 2;
    pub const SERVICE_STOP_PENDING: u32 = 3;
    pub const SERVICE_RUNNING: u32 = 4;
    pub const SERVICE_CONTINUE_PENDING: u32 = 5;
    pub const SERVICE_PAUSE_PENDING: u32 = 6;
    pub const SERVICE_PAUSED: u32 = 7;

    pub const SERVICE_BOOT_START: u32 = 0;
    pub const SERVICE_SYSTEM_START: u32 = 1;
    pub const SERVICE_AUTO_START: u32 = 2;
    pub const SERVICE_DEMAND_START: u32 = 3;
    pub const SERVICE_DISABLED: u32 = 4;

    pub const NO_ERROR: u32 = 0;
    pub const ERROR_FILE_NOT_FOUND: u32 = 2;
    pub const ERROR_ACCESS_DENIED: u32 = 5;
    pub const ERROR_INVALID_HANDLE: u32 = 6;
    pub const ERROR_INVALID_PARAMETER: u32 = 87;
    pub const ERROR_INVALID_NAME: u32 = 123;
    pub const ERROR_DEPENDENT_SERVICES_RUNNING: u32 = 1051;
    pub const ERROR_INVALID_SERVICE_CONTROL: u32 = 1052;
    pub const ERROR_SERVICE_REQUEST_TIMEOUT: u32 = 1053;
    pub const ERROR_SERVICE_NO_THREAD: u32 = 1054;
    pub const ERROR_SERVICE_DATABASE_LOCKED: u32 = 1055;
    pub const ERROR_SERVICE_ALREADY_RUNNING: u32 = 1056;
    pub const ERROR_SERVICE_DISABLED: u32 = 1058;
    pub const ERROR_CIRCULAR_DEPENDENCY: u32 = 1059;
    pub const ERROR_SERVICE_DOES_NOT_EXIST: u32 = 1060;
    pub const ERROR_SERVICE_CANNOT_ACCEPT_CTRL: u32 = 1061;
    pub const ERROR_SERVICE_NOT_ACTIVE: u32 = 1062;
    pub const ERROR_SERVICE_SPECIFIC_ERROR: u32 = 1066;
    pub const ERROR_SERVICE_DEPENDENCY_FAIL: u32 = 1068;
    pub const ERROR_SERVICE_LOGON_FAILED: u32 = 1069;
    pub const ERROR_SERVICE_START_HANG: u32 = 1070;
    pub const ERROR_SERVICE_MARKED_FOR_DELETE: u32 = 1072;
    pub const ERROR_SERVICE_DEPENDENCY_DELETED: u32 = 1075;
    pub const ERROR_SERVICE_NEVER_STARTED: u32 = 1077;
    pub const ERROR_SHUTDOWN_IN_PROGRESS: u32 = 1115;
}

/// A service's `SERVICE_STATUS`, the fields medic reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawStatus {
    /// `dwCurrentState`.
    pub state: u32,
    /// `dwWin32ExitCode`: the error the service reported when it last
    /// started or stopped, 0 when none.
    pub win32_exit_code: u32,
    /// `dwServiceSpecificExitCode`, meaningful when `win32_exit_code` is
    /// `ERROR_SERVICE_SPECIFIC_ERROR`.
    pub service_exit_code: u32,
}

/// A service's configuration, the fields medic reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawConfig {
    pub display_name: String,
    /// `dwStartType`.
    pub start_type: u32,
    /// `SERVICE_DELAYED_AUTO_START_INFO.fDelayedAutostart`.
    pub delayed_auto_start: bool,
}

/// An SCM call that failed, with the Windows error code it returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{call} failed with Windows error {code}")]
pub struct ScmError {
    /// The Windows function, e.g. `StartServiceW`.
    pub call: &'static str,
    pub code: u32,
}

/// The Service Control Manager calls medic makes. Each opens the service
/// with only the access that call needs.
pub trait ScmApi: Send + Sync {
    fn status(&self, name: &str) -> Result<RawStatus, ScmError>;
    fn config(&self, name: &str) -> Result<RawConfig, ScmError>;
    /// `StartServiceW`: returns once the SCM has started the service's
    /// process, usually still start-pending.
    fn start(&self, name: &str) -> Result<(), ScmError>;
    /// `ControlService(SERVICE_CONTROL_STOP)`.
    fn stop(&self, name: &str) -> Result<(), ScmError>;
    /// The start type alone (`ChangeServiceConfigW` with `SERVICE_NO_CHANGE`
    /// and null for everything else, so the binary path, account and
    /// display name stay as they are), and, when `delayed` is given, the
    /// delayed-automatic flag.
    fn set_start_type(
        &self,
        name: &str,
        start_type: u32,
        delayed: Option<bool>,
    ) -> Result<(), ScmError>;
}

/// Time, so that waits can be tested without waiting.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
    fn sleep(&self, duration: Duration);
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// How often a wait looks at the service again.
const POLL: Duration = Duration::from_millis(100);

/// The longest wait, whatever timeout a plugin asks for.
const LONGEST_WAIT: Duration = Duration::from_secs(600);

/// The contract's state of a service the SCM reports as `status`.
pub fn service_state(status: &RawStatus) -> OpResult<ServiceState> {
    Ok(match status.state {
        raw::SERVICE_STOPPED if stopped_with_error(status) => ServiceState::Failed,
        raw::SERVICE_STOPPED => ServiceState::Stopped,
        raw::SERVICE_START_PENDING | raw::SERVICE_CONTINUE_PENDING => ServiceState::StartPending,
        raw::SERVICE_STOP_PENDING => ServiceState::StopPending,
        raw::SERVICE_RUNNING => ServiceState::Running,
        raw::SERVICE_PAUSE_PENDING | raw::SERVICE_PAUSED => ServiceState::Paused,
        other => {
            return Err(BackendError::new(
                ErrorKind::Failed,
                format!("the Service Control Manager reports an unknown state {other}"),
            ));
        }
    })
}

/// A stopped service whose exit code is an error: it failed to start, or
/// stopped because of an error. `ERROR_SERVICE_NEVER_STARTED` is what a
/// service that never ran since boot reports, not a failure.
fn stopped_with_error(status: &RawStatus) -> bool {
    match status.win32_exit_code {
        raw::NO_ERROR | raw::ERROR_SERVICE_NEVER_STARTED => false,
        raw::ERROR_SERVICE_SPECIFIC_ERROR => status.service_exit_code != 0,
        _ => true,
    }
}

/// The exit code of a stopped service, for messages.
fn exit_code_text(status: &RawStatus) -> String {
    if status.win32_exit_code == raw::ERROR_SERVICE_SPECIFIC_ERROR {
        format!("service-specific exit code {}", status.service_exit_code)
    } else {
        format!("exit code {}", status.win32_exit_code)
    }
}

/// The contract's startup type of a service configured as `config`.
/// Boot and system start apply to drivers; they start before any service,
/// so they read as automatic.
pub fn startup_type(config: &RawConfig) -> OpResult<StartupType> {
    Ok(match config.start_type {
        raw::SERVICE_AUTO_START if config.delayed_auto_start => StartupType::AutomaticDelayed,
        raw::SERVICE_AUTO_START | raw::SERVICE_BOOT_START | raw::SERVICE_SYSTEM_START => {
            StartupType::Automatic
        }
        raw::SERVICE_DEMAND_START => StartupType::Manual,
        raw::SERVICE_DISABLED => StartupType::Disabled,
        other => {
            return Err(BackendError::new(
                ErrorKind::Failed,
                format!("the Service Control Manager reports an unknown start type {other}"),
            ));
        }
    })
}

/// The start type and delayed flag that give `startup`. The delayed flag
/// means something for automatic start only, so it is left alone for the
/// others.
/// The startup types that exist on systemd only are refused.
pub fn start_type_of(startup: StartupType) -> OpResult<(u32, Option<bool>)> {
    Ok(match startup {
        StartupType::Automatic => (raw::SERVICE_AUTO_START, Some(false)),
        StartupType::AutomaticDelayed => (raw::SERVICE_AUTO_START, Some(true)),
        StartupType::Manual => (raw::SERVICE_DEMAND_START, None),
        StartupType::Disabled => (raw::SERVICE_DISABLED, None),
        StartupType::AutomaticUntilReboot
        | StartupType::DisabledUntilReboot
        | StartupType::Static
        | StartupType::Indirect
        | StartupType::Generated => {
            return Err(BackendError::new(
                ErrorKind::Unsupported,
                format!(
                    "the Service Control Manager has no `{}` startup: choose automatic, automatic-delayed, manual or disabled",
                    startup.as_str()
                ),
            ));
        }
    })
}

/// Why a stopped service with an error exit code failed, for
/// [`ServiceStatus::problem`].
fn problem_of(state: ServiceState, raw: &RawStatus) -> Option<ServiceProblem> {
    (state == ServiceState::Failed).then(|| ServiceProblem {
        kind: ProblemKind::ExitCode,
        detail: exit_code_text(raw),
    })
}

/// The contract's error kind for an SCM error code.
pub fn error_kind(code: u32) -> ErrorKind {
    match code {
        raw::ERROR_ACCESS_DENIED => ErrorKind::Denied,
        raw::ERROR_SERVICE_DOES_NOT_EXIST | raw::ERROR_FILE_NOT_FOUND => ErrorKind::NotFound,
        raw::ERROR_INVALID_NAME | raw::ERROR_INVALID_PARAMETER => ErrorKind::InvalidArgument,
        raw::ERROR_SERVICE_DISABLED
        | raw::ERROR_DEPENDENT_SERVICES_RUNNING
        | raw::ERROR_SERVICE_CANNOT_ACCEPT_CTRL
        | raw::ERROR_INVALID_SERVICE_CONTROL
        | raw::ERROR_SERVICE_DATABASE_LOCKED
        | raw::ERROR_SERVICE_MARKED_FOR_DELETE
        | raw::ERROR_SHUTDOWN_IN_PROGRESS => ErrorKind::Conflict,
        raw::ERROR_SERVICE_REQUEST_TIMEOUT | raw::ERROR_SERVICE_START_HANG => ErrorKind::Timeout,
        _ => ErrorKind::Failed,
    }
}

/// What an SCM error code means, for the operator.
fn error_meaning(code: u32) -> &'static str {
    match code {
        raw::ERROR_ACCESS_DENIED => "access is denied: the agent's account lacks the right",
        raw::ERROR_SERVICE_DOES_NOT_EXIST => "no such service is installed",
        raw::ERROR_INVALID_NAME => "the service name is invalid",
        raw::ERROR_SERVICE_DISABLED => "the service is disabled: set its startup type first",
        raw::ERROR_DEPENDENT_SERVICES_RUNNING => {
            "other running services depend on it: stop them first"
        }
        raw::ERROR_SERVICE_CANNOT_ACCEPT_CTRL => {
            "the service cannot accept the control in its current state"
        }
        raw::ERROR_INVALID_SERVICE_CONTROL => "the service does not accept this control",
        raw::ERROR_SERVICE_DATABASE_LOCKED => "the service database is locked",
        raw::ERROR_SERVICE_MARKED_FOR_DELETE => "the service is marked for deletion",
        raw::ERROR_SHUTDOWN_IN_PROGRESS => "the system is shutting down",
        raw::ERROR_SERVICE_REQUEST_TIMEOUT => "the service did not respond in time",
        raw::ERROR_SERVICE_START_HANG => "the service hung while starting",
        raw::ERROR_SERVICE_NO_THREAD => "the service's thread could not be created",
        raw::ERROR_SERVICE_DEPENDENCY_FAIL => "a service it depends on failed to start",
        raw::ERROR_SERVICE_DEPENDENCY_DELETED => "a service it depends on does not exist",
        raw::ERROR_CIRCULAR_DEPENDENCY => "its dependencies form a cycle",
        raw::ERROR_SERVICE_LOGON_FAILED => "the service's account could not log on",
        raw::ERROR_INVALID_HANDLE => "the service handle is invalid",
        _ => "the Service Control Manager refused",
    }
}

fn scm_error(name: &str, error: ScmError) -> BackendError {
    BackendError::new(
        error_kind(error.code),
        format!(
            "`{name}`: {} ({} returned error {})",
            error_meaning(error.code),
            error.call,
            error.code
        ),
    )
}

/// Services through the Service Control Manager.
#[derive(Debug)]
pub struct Scm<A, C = SystemClock> {
    api: A,
    clock: C,
}

impl<A: ScmApi, C: Clock> Scm<A, C> {
    pub fn new(api: A, clock: C) -> Self {
        Self { api, clock }
    }

    fn raw_status(&self, name: &str) -> OpResult<RawStatus> {
        self.api.status(name).map_err(|e| scm_error(name, e))
    }

    fn status(&self, name: &str) -> OpResult<(ServiceStatus, RawStatus)> {
        let config = self.api.config(name).map_err(|e| scm_error(name, e))?;
        let raw = self.raw_status(name)?;
        let state = service_state(&raw)?;
        let status = ServiceStatus {
            name: name.to_string(),
            display_name: config.display_name.clone(),
            state,
            startup: startup_type(&config)?,
            problem: problem_of(state, &raw),
        };
        Ok((status, raw))
    }

    /// The moment a call that started now with `timeout` must end.
    fn deadline(&self, timeout: Duration) -> Instant {
        self.clock.now() + timeout.min(LONGEST_WAIT)
    }

    /// Wait until `name` is `want`. A start that ends stopped failed.
    fn wait_for(
        &self,
        name: &str,
        want: ServiceState,
        deadline: Instant,
        timeout: Duration,
    ) -> OpResult<RawStatus> {
        loop {
            let raw = self.raw_status(name)?;
            let state = service_state(&raw)?;
            // A service that stops with an error has stopped.
            if state == want || (want == ServiceState::Stopped && state == ServiceState::Failed) {
                return Ok(raw);
            }
            let gave_up = want == ServiceState::Running
                && matches!(state, ServiceState::Stopped | ServiceState::Failed);
            if gave_up {
                return Err(BackendError::new(
                    ErrorKind::Failed,
                    format!(
                        "`{name}` stopped while starting ({}): {}",
                        exit_code_text(&raw),
                        error_meaning(raw.win32_exit_code)
                    ),
                ));
            }
            let now = self.clock.now();
            if now >= deadline {
                return Err(BackendError::new(
                    ErrorKind::Timeout,
                    format!(
                        "`{name}` is still {} after {timeout:?}, expected {}; the Service Control Manager goes on with it",
                        state.as_str(),
                        want.as_str()
                    ),
                ));
            }
            self.clock.sleep(POLL.min(deadline - now));
        }
    }

    /// Start `name` and wait until it runs.
    fn start_and_wait(
        &self,
        name: &str,
        deadline: Instant,
        timeout: Duration,
    ) -> OpResult<RawStatus> {
        match self.api.start(name) {
            Ok(()) => {}
            Err(e) if e.code == raw::ERROR_SERVICE_ALREADY_RUNNING => {}
            Err(e) => return Err(scm_error(name, e)),
        }
        self.wait_for(name, ServiceState::Running, deadline, timeout)
    }

    /// Stop `name` and wait until it is stopped.
    fn stop_and_wait(
        &self,
        name: &str,
        deadline: Instant,
        timeout: Duration,
    ) -> OpResult<RawStatus> {
        match self.api.stop(name) {
            Ok(()) => {}
            Err(e) if e.code == raw::ERROR_SERVICE_NOT_ACTIVE => {}
            Err(e) => return Err(scm_error(name, e)),
        }
        self.wait_for(name, ServiceState::Stopped, deadline, timeout)
    }

    /// The refusal of a start of a disabled service, as the SCM would
    /// refuse it, so that dry-run plans what enforce would do.
    fn refuse_disabled(&self, before: &ServiceStatus) -> OpResult<()> {
        if before.startup != StartupType::Disabled {
            return Ok(());
        }
        Err(scm_error(
            &before.name,
            ScmError {
                call: "StartServiceW",
                code: raw::ERROR_SERVICE_DISABLED,
            },
        ))
    }

    fn unchanged(before: ServiceStatus) -> ServiceChange {
        ServiceChange {
            after: before.clone(),
            before,
            applied: false,
        }
    }

    fn planned(before: ServiceStatus, state: ServiceState) -> ServiceChange {
        let after = ServiceStatus {
            state,
            ..before.clone()
        };
        ServiceChange {
            before,
            after,
            applied: false,
        }
    }

    fn done(&self, name: &str, before: ServiceStatus) -> OpResult<ServiceChange> {
        let (after, _) = self.status(name)?;
        Ok(ServiceChange {
            before,
            after,
            applied: true,
        })
    }
}

impl<A: ScmApi, C: Clock> ServiceManager for Scm<A, C> {
    fn query(&self, name: &str) -> OpResult<ServiceStatus> {
        self.status(name).map(|(status, _)| status)
    }

    fn start(&self, name: &str, timeout: Duration, apply: bool) -> OpResult<ServiceChange> {
        let deadline = self.deadline(timeout);
        let (before, _) = self.status(name)?;
        if before.state == ServiceState::Running {
            return Ok(Self::unchanged(before));
        }
        self.refuse_disabled(&before)?;
        if before.state == ServiceState::Paused {
            return Err(BackendError::new(
                ErrorKind::Conflict,
                format!("`{name}` is paused: continue it, or restart it"),
            ));
        }
        if !apply {
            return Ok(Self::planned(before, ServiceState::Running));
        }
        match before.state {
            ServiceState::StartPending => {
                self.wait_for(name, ServiceState::Running, deadline, timeout)?;
            }
            ServiceState::StopPending => {
                self.wait_for(name, ServiceState::Stopped, deadline, timeout)?;
                self.start_and_wait(name, deadline, timeout)?;
            }
            _ => {
                self.start_and_wait(name, deadline, timeout)?;
            }
        }
        self.done(name, before)
    }

    fn stop(&self, name: &str, timeout: Duration, apply: bool) -> OpResult<ServiceChange> {
        let deadline = self.deadline(timeout);
        let (before, _) = self.status(name)?;
        if matches!(before.state, ServiceState::Stopped | ServiceState::Failed) {
            return Ok(Self::unchanged(before));
        }
        if !apply {
            return Ok(Self::planned(before, ServiceState::Stopped));
        }
        if before.state == ServiceState::StopPending {
            self.wait_for(name, ServiceState::Stopped, deadline, timeout)?;
        } else {
            self.stop_and_wait(name, deadline, timeout)?;
        }
        self.done(name, before)
    }

    fn restart(&self, name: &str, timeout: Duration, apply: bool) -> OpResult<ServiceChange> {
        let deadline = self.deadline(timeout);
        let (before, _) = self.status(name)?;
        self.refuse_disabled(&before)?;
        if !apply {
            return Ok(Self::planned(before, ServiceState::Running));
        }
        match before.state {
            ServiceState::Stopped | ServiceState::Failed | ServiceState::Broken => {}
            ServiceState::StopPending => {
                self.wait_for(name, ServiceState::Stopped, deadline, timeout)?;
            }
            ServiceState::StartPending => {
                self.wait_for(name, ServiceState::Running, deadline, timeout)?;
                self.stop_and_wait(name, deadline, timeout)?;
            }
            ServiceState::Running | ServiceState::Paused => {
                self.stop_and_wait(name, deadline, timeout)?;
            }
        }
        self.start_and_wait(name, deadline, timeout)?;
        self.done(name, before)
    }

    fn set_startup(
        &self,
        name: &str,
        startup: StartupType,
        apply: bool,
    ) -> OpResult<ServiceChange> {
        let (start_type, delayed) = start_type_of(startup)?;
        let (before, _) = self.status(name)?;
        if before.startup == startup {
            return Ok(Self::unchanged(before));
        }
        if !apply {
            let after = ServiceStatus {
                startup,
                ..before.clone()
            };
            return Ok(ServiceChange {
                before,
                after,
                applied: false,
            });
        }
        self.api
            .set_start_type(name, start_type, delayed)
            .map_err(|e| scm_error(name, e))?;
        self.done(name, before)
    }
}

#[cfg(test)]
mod tests;
