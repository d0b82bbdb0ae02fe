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
        }
    }
}

/// How a service starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupType {
    Automatic,
    /// Windows' "Automatic (Delayed Start)".
    AutomaticDelayed,
    Manual,
    Disabled,
}

impl StartupType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Automatic => "automatic",
            Self::AutomaticDelayed => "automatic-delayed",
            Self::Manual => "manual",
            Self::Disabled => "disabled",
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
