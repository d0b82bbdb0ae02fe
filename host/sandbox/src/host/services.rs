//! `services`: status needs `services-read` (or `services-control`) for the
//! service; start, stop, restart and startup changes need
//! `services-control` for it.

use super::grants::Capability;
use super::{RunState, Summary, denied};
use medic_backends::services::{ServiceChange, ServiceStatus, StartupType};
use medic_backends::{BackendError, ErrorKind};
use serde_json::json;
use std::time::Duration;

/// Longest wait a plugin may ask for in one control call.
const MAX_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Clone, Copy)]
enum Control {
    Start,
    Stop,
    Restart,
}

impl RunState {
    fn check_service(&self, name: &str, control: bool) -> Result<(), BackendError> {
        let capability = if control {
            Capability::ServicesControl
        } else {
            Capability::ServicesRead
        };
        self.require(capability)?;
        let allowed = if control {
            self.grants.may_control_service(name)
        } else {
            self.grants.may_query_service(name)
        };
        if allowed {
            Ok(())
        } else {
            let granted = self.grants.services(control);
            Err(denied(format!(
                "service `{name}` is not granted to {} (granted: {})",
                if control {
                    "services-control"
                } else {
                    "services-read"
                },
                granted.join(", ")
            )))
        }
    }

    fn control_call(
        &mut self,
        control: Control,
        name: String,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<ServiceChange, BackendError>> {
        let function = match control {
            Control::Start => "services.start",
            Control::Stop => "services.stop",
            Control::Restart => "services.restart",
        };
        // The wait asked for, within what is left of the run.
        let timeout = Duration::from_millis(u64::from(timeout_ms))
            .min(MAX_TIMEOUT)
            .min(self.remaining());
        self.host_call_with_effects(
            function,
            json!({ "name": name, "timeout-ms": timeout_ms }),
            true,
            |run, apply| {
                run.check_service(&name, true)?;
                let services = &run.backends.services;
                match control {
                    Control::Start => services.start(&name, timeout, apply),
                    Control::Stop => services.stop(&name, timeout, apply),
                    Control::Restart => services.restart(&name, timeout, apply),
                }
            },
            change_summary,
        )
    }

    pub(crate) fn services_query(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<ServiceStatus, BackendError>> {
        self.host_call(
            "services.query",
            json!({ "name": name }),
            false,
            |run, _| {
                run.check_service(&name, false)?;
                run.backends.services.query(&name)
            },
            |s| format!("{}/{}", s.state.as_str(), s.startup.as_str()),
        )
    }

    pub(crate) fn services_start(
        &mut self,
        name: String,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<ServiceChange, BackendError>> {
        self.control_call(Control::Start, name, timeout_ms)
    }

    pub(crate) fn services_stop(
        &mut self,
        name: String,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<ServiceChange, BackendError>> {
        self.control_call(Control::Stop, name, timeout_ms)
    }

    pub(crate) fn services_restart(
        &mut self,
        name: String,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<ServiceChange, BackendError>> {
        self.control_call(Control::Restart, name, timeout_ms)
    }

    pub(crate) fn services_set_startup(
        &mut self,
        name: String,
        startup: StartupType,
    ) -> wasmtime::Result<Result<ServiceChange, BackendError>> {
        self.host_call_with_effects(
            "services.set-startup",
            json!({ "name": name, "startup": startup.as_str() }),
            true,
            |run, apply| {
                run.check_service(&name, true)?;
                refuse_read_only(startup)?;
                run.backends.services.set_startup(&name, startup, apply)
            },
            change_summary,
        )
    }
}

/// The startup types a service's definition makes of it, which no call
/// sets: refused the same way whatever the service manager.
fn refuse_read_only(startup: StartupType) -> Result<(), BackendError> {
    match startup {
        StartupType::Static | StartupType::Indirect | StartupType::Generated => {
            Err(BackendError::new(
                ErrorKind::InvalidArgument,
                format!(
                    "`{}` is what a service's definition makes of it and cannot be set: choose automatic, manual or disabled",
                    startup.as_str()
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// A control call's record: before and after, and whether the service
/// manager did anything (a start of a running service did not).
fn change_summary(change: &ServiceChange) -> Summary {
    let text = format!(
        "{}/{} -> {}/{}",
        change.before.state.as_str(),
        change.before.startup.as_str(),
        change.after.state.as_str(),
        change.after.startup.as_str()
    );
    Summary {
        text,
        effects: Vec::new(),
        changed: change.applied,
    }
}
