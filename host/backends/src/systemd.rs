//! Services through systemd's `systemctl`, for the `local` backend on Linux.
//! Command building and output parsing are pure functions, tested here.

use crate::services::{ServiceChange, ServiceManager, ServiceState, ServiceStatus, StartupType};
use crate::{BackendError, ErrorKind, OpResult};
use std::process::Command;
use std::time::{Duration, Instant};

/// systemd, driven through `systemctl`.
#[derive(Debug, Clone)]
pub struct Systemd {
    pub systemctl: String,
}

impl Default for Systemd {
    fn default() -> Self {
        Self {
            systemctl: "systemctl".into(),
        }
    }
}

/// The unit name for a service name: `nginx` -> `nginx.service`.
pub fn unit_name(name: &str) -> String {
    if name.contains('.') {
        name.to_string()
    } else {
        format!("{name}.service")
    }
}

/// Parse `systemctl show -p LoadState,ActiveState,UnitFileState,Description`.
pub fn parse_show(name: &str, output: &str) -> OpResult<ServiceStatus> {
    let field = |key: &str| {
        output
            .lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .unwrap_or("")
    };
    if field("LoadState") == "not-found" {
        return Err(BackendError::new(
            ErrorKind::NotFound,
            format!("service `{name}` does not exist"),
        ));
    }
    let state = match field("ActiveState") {
        "active" | "reloading" => ServiceState::Running,
        "activating" => ServiceState::StartPending,
        "deactivating" => ServiceState::StopPending,
        "failed" => ServiceState::Failed,
        _ => ServiceState::Stopped,
    };
    let startup = match field("UnitFileState") {
        "enabled" | "enabled-runtime" | "static" | "alias" => StartupType::Automatic,
        "masked" | "masked-runtime" => StartupType::Disabled,
        _ => StartupType::Manual,
    };
    Ok(ServiceStatus {
        name: name.to_string(),
        display_name: field("Description").to_string(),
        state,
        startup,
    })
}

impl Systemd {
    fn run(&self, args: &[&str]) -> OpResult<String> {
        let output = Command::new(&self.systemctl)
            .args(args)
            .output()
            .map_err(|e| {
                BackendError::new(
                    ErrorKind::Unsupported,
                    format!("cannot run `{}`: {e}", self.systemctl),
                )
            })?;
        if !output.status.success() {
            return Err(BackendError::new(
                ErrorKind::Failed,
                format!(
                    "`{} {}` failed: {}",
                    self.systemctl,
                    args.join(" "),
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            ));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn wait_for(
        &self,
        name: &str,
        want: ServiceState,
        timeout: Duration,
    ) -> OpResult<ServiceStatus> {
        let deadline = Instant::now()
            .checked_add(timeout)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(600));
        loop {
            let status = self.query(name)?;
            if status.state == want {
                return Ok(status);
            }
            if status.state == ServiceState::Failed && want == ServiceState::Running {
                return Err(BackendError::new(
                    ErrorKind::Failed,
                    format!("`{name}` failed to start (systemd reports the unit failed)"),
                ));
            }
            if Instant::now() >= deadline {
                return Err(BackendError::new(
                    ErrorKind::Timeout,
                    format!(
                        "`{name}` is {:?} after {timeout:?}, expected {want:?}",
                        status.state
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn control(
        &self,
        name: &str,
        verb: &str,
        want: ServiceState,
        timeout: Duration,
        apply: bool,
    ) -> OpResult<ServiceChange> {
        let before = self.query(name)?;
        if !apply {
            let after = ServiceStatus {
                state: want,
                ..before.clone()
            };
            return Ok(ServiceChange {
                before,
                after,
                applied: false,
            });
        }
        self.run(&[verb, "--no-block", &unit_name(name)])?;
        let after = self.wait_for(name, want, timeout)?;
        Ok(ServiceChange {
            before,
            after,
            applied: true,
        })
    }
}

impl ServiceManager for Systemd {
    fn query(&self, name: &str) -> OpResult<ServiceStatus> {
        let out = self.run(&[
            "show",
            "-p",
            "LoadState,ActiveState,UnitFileState,Description",
            &unit_name(name),
        ])?;
        parse_show(name, &out)
    }

    fn start(&self, name: &str, timeout: Duration, apply: bool) -> OpResult<ServiceChange> {
        self.control(name, "start", ServiceState::Running, timeout, apply)
    }

    fn stop(&self, name: &str, timeout: Duration, apply: bool) -> OpResult<ServiceChange> {
        self.control(name, "stop", ServiceState::Stopped, timeout, apply)
    }

    fn restart(&self, name: &str, timeout: Duration, apply: bool) -> OpResult<ServiceChange> {
        self.control(name, "restart", ServiceState::Running, timeout, apply)
    }

    fn set_startup(
        &self,
        name: &str,
        startup: StartupType,
        apply: bool,
    ) -> OpResult<ServiceChange> {
        if startup == StartupType::AutomaticDelayed {
            return Err(BackendError::new(
                ErrorKind::Unsupported,
                format!(
                    "systemd has no delayed automatic start: set `{name}` to automatic instead"
                ),
            ));
        }
        let before = self.query(name)?;
        let after = ServiceStatus {
            startup,
            ..before.clone()
        };
        if apply && before.startup != startup {
            let unit = unit_name(name);
            match startup {
                StartupType::Automatic => {
                    self.run(&["unmask", &unit])?;
                    self.run(&["enable", &unit])?;
                }
                StartupType::Manual => {
                    self.run(&["unmask", &unit])?;
                    self.run(&["disable", &unit])?;
                }
                StartupType::Disabled => {
                    self.run(&["mask", &unit])?;
                }
                StartupType::AutomaticDelayed => unreachable!("refused above"),
            }
            let after = self.query(name)?;
            return Ok(ServiceChange {
                before,
                after,
                applied: true,
            });
        }
        Ok(ServiceChange {
            before,
            after,
            applied: apply,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_systemctl_show() {
        let out = "LoadState=loaded\nActiveState=active\nUnitFileState=enabled\nDescription=Regular background program processing daemon\n";
        let status = parse_show("cron", out).unwrap();
        assert_eq!(status.state, ServiceState::Running);
        assert_eq!(status.startup, StartupType::Automatic);
        assert_eq!(
            status.display_name,
            "Regular background program processing daemon"
        );

        let masked = parse_show(
            "x",
            "LoadState=masked\nActiveState=inactive\nUnitFileState=masked\n",
        )
        .unwrap();
        assert_eq!(
            (masked.state, masked.startup),
            (ServiceState::Stopped, StartupType::Disabled)
        );

        let failed = parse_show(
            "x",
            "LoadState=loaded\nActiveState=failed\nUnitFileState=enabled\n",
        )
        .unwrap();
        assert_eq!(failed.state, ServiceState::Failed);

        let missing =
            parse_show("nope", "LoadState=not-found\nActiveState=inactive\n").unwrap_err();
        assert_eq!(missing.kind, ErrorKind::NotFound);
    }

    #[test]
    fn unit_names_get_a_suffix_only_when_missing() {
        assert_eq!(unit_name("BITS"), "BITS.service");
        assert_eq!(unit_name("nginx.service"), "nginx.service");
    }
}
