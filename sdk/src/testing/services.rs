//! The fake host's services, controlled as the Service Control Manager or
//! systemd control them through the agent: a call with nothing to do is
//! unapplied with `before` equal to `after`; a broken or disabled service
//! cannot be started (`conflict`); a start the service manager reports as
//! failed is `failed`, one that does not finish is a `timeout`; startup
//! types follow the service manager's rules. Every change happens at once.

use super::error;
use crate::services::{
    ProblemKind, ServiceChange, ServiceProblem, ServiceState, ServiceStatus, StartupType,
};
use crate::{Error, ErrorKind};

/// Whose rules the fake's services follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServiceManager {
    /// The Service Control Manager: names compare without regard to case;
    /// `automatic-delayed` can be set, the until-reboot types cannot.
    #[default]
    Windows,
    /// systemd: `nginx` names `nginx.service`; the until-reboot types can
    /// be set, `automatic-delayed` cannot; a static or generated unit can
    /// only be masked (`disabled`), and setting `manual` on an indirect one
    /// changes nothing.
    Systemd,
}

/// What a start of the service does.
#[derive(Debug, Clone)]
enum OnStart {
    Runs,
    /// It fails, with this problem.
    Fails(ServiceProblem),
    /// It stays start-pending past the call's timeout.
    Hangs,
}

/// A service of the fake host.
///
/// ```
/// use medic_sdk::services::{ProblemKind, ServiceState, StartupType};
/// use medic_sdk::testing::Service;
///
/// let bits = Service::new("BITS")
///     .display_name("Background Intelligent Transfer Service")
///     .state(ServiceState::Stopped)
///     .startup(StartupType::Disabled);
/// let flaky = Service::new("nginx")
///     .failed(ProblemKind::ExitCode, "exit-code: status=1")
///     .fails_to_start(ProblemKind::ExitCode, "exit-code: status=1");
/// ```
#[derive(Debug, Clone)]
pub struct Service {
    status: ServiceStatus,
    on_start: OnStart,
}

impl Service {
    /// A running service with automatic start, displayed as its name.
    pub fn new(name: &str) -> Self {
        Self {
            status: ServiceStatus {
                name: name.to_string(),
                display_name: name.to_string(),
                state: ServiceState::Running,
                startup: StartupType::Automatic,
                problem: None,
            },
            on_start: OnStart::Runs,
        }
    }

    pub fn display_name(mut self, display_name: &str) -> Self {
        self.status.display_name = display_name.to_string();
        self
    }

    pub fn state(mut self, state: ServiceState) -> Self {
        self.status.state = state;
        self
    }

    pub fn startup(mut self, startup: StartupType) -> Self {
        self.status.startup = startup;
        self
    }

    /// Failed, for this reason.
    pub fn failed(mut self, kind: ProblemKind, detail: &str) -> Self {
        self.status.state = ServiceState::Failed;
        self.status.problem = Some(ServiceProblem {
            kind,
            detail: detail.to_string(),
        });
        self
    }

    /// Broken: its definition cannot be loaded, for this reason.
    pub fn broken(mut self, detail: &str) -> Self {
        self.status.state = ServiceState::Broken;
        self.status.problem = Some(ServiceProblem {
            kind: ProblemKind::Broken,
            detail: detail.to_string(),
        });
        self
    }

    /// Every start fails, leaving it failed for this reason.
    pub fn fails_to_start(mut self, kind: ProblemKind, detail: &str) -> Self {
        self.on_start = OnStart::Fails(ServiceProblem {
            kind,
            detail: detail.to_string(),
        });
        self
    }

    /// Every start stays start-pending past the call's timeout.
    pub fn hangs_on_start(mut self) -> Self {
        self.on_start = OnStart::Hangs;
        self
    }
}

/// A control call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    Start,
    Stop,
    Restart,
}

/// The fake host's services.
#[derive(Debug, Default)]
pub(crate) struct FakeServices {
    pub(crate) manager: ServiceManager,
    services: Vec<Service>,
}

fn conflict(message: String) -> Error {
    error(ErrorKind::Conflict, message)
}

fn unchanged(status: ServiceStatus) -> ServiceChange {
    ServiceChange {
        before: status.clone(),
        after: status,
        applied: false,
    }
}

impl ServiceManager {
    /// Whether `asked` names the service called `name`.
    fn names(self, asked: &str, name: &str) -> bool {
        match self {
            Self::Windows => asked.eq_ignore_ascii_case(name),
            Self::Systemd => unit_name(asked) == unit_name(name),
        }
    }
}

impl FakeServices {
    fn same(&self, asked: &str, name: &str) -> bool {
        self.manager.names(asked, name)
    }

    pub(crate) fn add(&mut self, service: Service) {
        let manager = self.manager;
        self.services
            .retain(|s| !manager.names(&service.status.name, &s.status.name));
        self.services.push(service);
    }

    fn find(&mut self, name: &str) -> Result<&mut Service, Error> {
        let index = self
            .services
            .iter()
            .position(|s| self.same(name, &s.status.name))
            .ok_or_else(|| {
                error(
                    ErrorKind::NotFound,
                    format!("no service `{name}` on this system"),
                )
            })?;
        Ok(&mut self.services[index])
    }

    /// A service's status, named as asked.
    pub(crate) fn status(&self, name: &str) -> Result<ServiceStatus, Error> {
        self.services
            .iter()
            .find(|s| self.same(name, &s.status.name))
            .map(|s| ServiceStatus {
                name: name.to_string(),
                ..s.status.clone()
            })
            .ok_or_else(|| {
                error(
                    ErrorKind::NotFound,
                    format!("no service `{name}` on this system"),
                )
            })
    }

    /// Why `before` cannot be started, if it cannot.
    fn refuse_start(&self, before: &ServiceStatus) -> Result<(), Error> {
        let name = &before.name;
        if before.state == ServiceState::Broken {
            let why = before
                .problem
                .as_ref()
                .map(|p| p.detail.clone())
                .unwrap_or_default();
            return Err(conflict(format!(
                "`{name}` cannot start: {why}; fix its definition first"
            )));
        }
        if matches!(
            before.startup,
            StartupType::Disabled | StartupType::DisabledUntilReboot
        ) {
            return Err(conflict(format!(
                "`{name}` is disabled: set its startup to manual or automatic first"
            )));
        }
        if before.state == ServiceState::Paused && self.manager == ServiceManager::Windows {
            return Err(conflict(format!(
                "`{name}` is paused: continue it, or restart it"
            )));
        }
        Ok(())
    }

    pub(crate) fn control(
        &mut self,
        control: Control,
        name: &str,
        timeout_ms: u32,
        apply: bool,
    ) -> Result<ServiceChange, Error> {
        let before = self.status(name)?;
        let nothing_to_do = match control {
            Control::Start => before.state == ServiceState::Running,
            Control::Stop => matches!(
                before.state,
                ServiceState::Stopped | ServiceState::Failed | ServiceState::Broken
            ),
            Control::Restart => false,
        };
        if nothing_to_do {
            return Ok(unchanged(before));
        }
        if control != Control::Stop {
            self.refuse_start(&before)?;
        }
        let expected = ServiceStatus {
            state: if control == Control::Stop {
                ServiceState::Stopped
            } else {
                ServiceState::Running
            },
            problem: None,
            ..before.clone()
        };
        if !apply {
            return Ok(ServiceChange {
                before,
                after: expected,
                applied: false,
            });
        }
        let service = self.find(name)?;
        if control != Control::Stop {
            match service.on_start.clone() {
                OnStart::Runs => {}
                OnStart::Fails(problem) => {
                    service.status.state = ServiceState::Failed;
                    let why = problem.detail.clone();
                    service.status.problem = Some(problem);
                    return Err(error(
                        ErrorKind::Failed,
                        format!("`{name}` failed to start: {why}"),
                    ));
                }
                OnStart::Hangs => {
                    service.status.state = ServiceState::StartPending;
                    service.status.problem = None;
                    return Err(error(
                        ErrorKind::Timeout,
                        format!(
                            "`{name}` did not start within {timeout_ms} ms: it is start-pending"
                        ),
                    ));
                }
            }
        }
        service.status.state = expected.state;
        service.status.problem = None;
        Ok(ServiceChange {
            before,
            after: expected,
            applied: true,
        })
    }

    pub(crate) fn set_startup(
        &mut self,
        name: &str,
        startup: StartupType,
        apply: bool,
    ) -> Result<ServiceChange, Error> {
        if matches!(
            startup,
            StartupType::Static | StartupType::Indirect | StartupType::Generated
        ) {
            return Err(error(
                ErrorKind::InvalidArgument,
                format!(
                    "`{startup}` is what a service's definition makes of it and cannot be set: choose automatic, manual or disabled"
                ),
            ));
        }
        let before = self.status(name)?;
        let masking = matches!(
            startup,
            StartupType::Disabled | StartupType::DisabledUntilReboot
        );
        match self.manager {
            ServiceManager::Windows => {
                if matches!(
                    startup,
                    StartupType::AutomaticUntilReboot | StartupType::DisabledUntilReboot
                ) {
                    return Err(error(
                        ErrorKind::Unsupported,
                        format!("the Service Control Manager has no `{startup}` startup"),
                    ));
                }
            }
            ServiceManager::Systemd => {
                if startup == StartupType::AutomaticDelayed {
                    return Err(error(
                        ErrorKind::Unsupported,
                        format!(
                            "systemd has no delayed automatic start: set `{name}` to automatic instead"
                        ),
                    ));
                }
                if before.state == ServiceState::Broken {
                    return Err(conflict(format!(
                        "`{name}`: {}; fix its unit file first",
                        before
                            .problem
                            .as_ref()
                            .map(|p| p.detail.as_str())
                            .unwrap_or_default()
                    )));
                }
                if (before.startup, startup) == (StartupType::Indirect, StartupType::Manual) {
                    return Ok(unchanged(before));
                }
                match before.startup {
                    StartupType::Static if !masking => {
                        return Err(conflict(format!(
                            "`{name}` is static: its unit file has no [Install] section, so there is nothing to enable or disable. Only `disabled` (masking) applies to it"
                        )));
                    }
                    StartupType::Generated if !masking => {
                        return Err(conflict(format!(
                            "`{name}` is generated: change what generates it. Only `disabled` (masking) applies to it"
                        )));
                    }
                    _ => {}
                }
            }
        }
        if before.startup == startup {
            return Ok(unchanged(before));
        }
        let after = ServiceStatus {
            startup,
            ..before.clone()
        };
        if apply {
            self.find(name)?.status.startup = startup;
        }
        Ok(ServiceChange {
            before,
            after,
            applied: apply,
        })
    }
}

/// The systemd unit a service name stands for: `nginx` is `nginx.service`.
fn unit_name(name: &str) -> String {
    if name.contains('.') {
        name.to_string()
    } else {
        format!("{name}.service")
    }
}
