//! A unit as `systemctl show` describes it, and what its properties mean
//! in the contract's terms: state, startup type, and the problem behind a
//! failure. Pure: parsing and mapping only, tested here.

use crate::services::{ProblemKind, ServiceProblem, ServiceState, ServiceStatus, StartupType};

/// The properties [`Unit::parse`] reads, for `systemctl show -p`.
pub const PROPERTIES: &str = "Id,Description,LoadState,LoadError,ActiveState,SubState,Result,UnitFileState,FragmentPath,Type,RemainAfterExit,ExecMainCode,ExecMainStatus,RefuseManualStart,RefuseManualStop";

/// Whether systemd could load a unit's definition (`LoadState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadState {
    Loaded,
    NotFound,
    /// The unit file has a setting systemd refuses (`bad-setting`), or
    /// cannot be read or parsed (`error`).
    Broken,
    Masked,
    /// `stub`, `merged`: transient states while systemd loads.
    Other,
}

/// A unit's activation state (`ActiveState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActiveState {
    Active,
    Reloading,
    Inactive,
    Failed,
    Activating,
    Deactivating,
    /// `maintenance`, `refreshing`: not running its main process, busy.
    Other,
}

/// How a unit file is installed (`UnitFileState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitFileState {
    Enabled,
    EnabledRuntime,
    Linked,
    LinkedRuntime,
    Alias,
    Masked,
    MaskedRuntime,
    Static,
    Disabled,
    Indirect,
    Generated,
    Transient,
    /// `bad`, or a value this code does not know.
    Bad,
    /// Not reported: the unit has no file (an empty value).
    None,
}

impl UnitFileState {
    fn parse(text: &str) -> Self {
        match text {
            "enabled" => Self::Enabled,
            "enabled-runtime" => Self::EnabledRuntime,
            "linked" => Self::Linked,
            "linked-runtime" => Self::LinkedRuntime,
            "alias" => Self::Alias,
            "masked" => Self::Masked,
            "masked-runtime" => Self::MaskedRuntime,
            "static" => Self::Static,
            "disabled" => Self::Disabled,
            "indirect" => Self::Indirect,
            "generated" => Self::Generated,
            "transient" => Self::Transient,
            "" => Self::None,
            _ => Self::Bad,
        }
    }
}

/// The folder whose unit files masking would replace: a unit defined
/// here cannot be masked, since its mask is a link of the same name.
pub const ADMIN_UNIT_DIR: &str = "/etc/systemd/system/";

/// What `systemctl show` reports about a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// The unit's own name; an alias asked for by another name reports
    /// the unit it points to.
    pub id: String,
    pub description: String,
    pub load: LoadState,
    pub load_error: String,
    pub active: ActiveState,
    pub sub_state: String,
    /// systemd's `Result`: `success`, `exit-code`, `signal`, ...
    pub result: String,
    pub file_state: UnitFileState,
    pub fragment_path: String,
    /// The service type (`simple`, `oneshot`, ...); empty for other units.
    pub service_type: String,
    pub remain_after_exit: bool,
    /// How the main process ended: 1 exited, 2 killed, 3 dumped core.
    pub exec_main_code: i32,
    pub exec_main_status: i32,
    pub refuse_manual_start: bool,
    pub refuse_manual_stop: bool,
}

impl Unit {
    /// Parse `systemctl show -p PROPERTIES` output for one unit.
    pub fn parse(output: &str) -> Self {
        let field = |key: &str| {
            output
                .lines()
                .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
                .unwrap_or("")
                .trim_end()
        };
        let number = |key: &str| field(key).parse::<i32>().unwrap_or(0);
        Self {
            id: field("Id").to_string(),
            description: field("Description").to_string(),
            load: match field("LoadState") {
                "loaded" => LoadState::Loaded,
                "not-found" => LoadState::NotFound,
                "bad-setting" | "error" => LoadState::Broken,
                "masked" => LoadState::Masked,
                _ => LoadState::Other,
            },
            load_error: field("LoadError").to_string(),
            active: match field("ActiveState") {
                "active" => ActiveState::Active,
                "reloading" => ActiveState::Reloading,
                "inactive" => ActiveState::Inactive,
                "failed" => ActiveState::Failed,
                "activating" => ActiveState::Activating,
                "deactivating" => ActiveState::Deactivating,
                _ => ActiveState::Other,
            },
            sub_state: field("SubState").to_string(),
            result: field("Result").to_string(),
            file_state: UnitFileState::parse(field("UnitFileState")),
            fragment_path: field("FragmentPath").to_string(),
            service_type: field("Type").to_string(),
            remain_after_exit: field("RemainAfterExit") == "yes",
            exec_main_code: number("ExecMainCode"),
            exec_main_status: number("ExecMainStatus"),
            refuse_manual_start: field("RefuseManualStart") == "yes",
            refuse_manual_stop: field("RefuseManualStop") == "yes",
        }
    }

    /// The contract's state.
    pub fn state(&self) -> ServiceState {
        match self.active {
            ActiveState::Active | ActiveState::Reloading => ServiceState::Running,
            ActiveState::Activating => ServiceState::StartPending,
            ActiveState::Deactivating => ServiceState::StopPending,
            ActiveState::Failed => ServiceState::Failed,
            ActiveState::Inactive | ActiveState::Other if self.load == LoadState::Broken => {
                ServiceState::Broken
            }
            ActiveState::Inactive | ActiveState::Other => ServiceState::Stopped,
        }
    }

    /// The contract's startup type. A `linked` unit (its file linked into
    /// the search path, not enabled) starts when something starts it.
    pub fn startup(&self) -> StartupType {
        match self.file_state {
            UnitFileState::Enabled | UnitFileState::Alias => StartupType::Automatic,
            UnitFileState::EnabledRuntime => StartupType::AutomaticUntilReboot,
            UnitFileState::Masked => StartupType::Disabled,
            UnitFileState::MaskedRuntime => StartupType::DisabledUntilReboot,
            UnitFileState::Static => StartupType::Static,
            UnitFileState::Indirect => StartupType::Indirect,
            UnitFileState::Generated | UnitFileState::Transient => StartupType::Generated,
            UnitFileState::Disabled
            | UnitFileState::Linked
            | UnitFileState::LinkedRuntime
            | UnitFileState::Bad
            | UnitFileState::None => {
                if self.load == LoadState::Masked {
                    StartupType::Disabled
                } else {
                    StartupType::Manual
                }
            }
        }
    }

    /// Why the unit failed or cannot load, from its load error or its
    /// `Result` and main process status.
    pub fn problem(&self) -> Option<ServiceProblem> {
        if self.load == LoadState::Broken {
            let detail = if self.load_error.is_empty() {
                format!("systemd cannot load its unit file {}", self.fragment_path)
            } else {
                format!("systemd cannot load it: {}", self.load_error)
            };
            return Some(ServiceProblem {
                kind: ProblemKind::Broken,
                detail,
            });
        }
        if self.result.is_empty() || self.result == "success" {
            return None;
        }
        let kind = match self.result.as_str() {
            "exit-code" => ProblemKind::ExitCode,
            "signal" | "core-dump" => ProblemKind::Signal,
            "timeout" => ProblemKind::Timeout,
            "start-limit-hit" => ProblemKind::StartLimit,
            _ => ProblemKind::Other,
        };
        let status = match (self.exec_main_code, kind) {
            (1, ProblemKind::ExitCode) => format!(", exit status {}", self.exec_main_status),
            (2 | 3, ProblemKind::Signal) => format!(", signal {}", self.exec_main_status),
            _ => String::new(),
        };
        Some(ServiceProblem {
            kind,
            detail: format!("systemd's result: {}{status}", self.result),
        })
    }

    /// A oneshot unit without `RemainAfterExit` is done once its process
    /// exits: `inactive` with a `success` result is a successful start.
    pub fn runs_once(&self) -> bool {
        self.service_type == "oneshot" && !self.remain_after_exit
    }

    /// Whether systemd has no such unit: no file for it, and nothing of
    /// it running or failed (a unit whose file was removed while it ran
    /// is `not-found` but still there).
    pub fn gone(&self) -> bool {
        self.load == LoadState::NotFound
            && matches!(self.active, ActiveState::Inactive | ActiveState::Other)
    }

    /// Whether its unit file lives where masking cannot reach it.
    pub fn defined_by_admin(&self) -> bool {
        self.fragment_path.starts_with(ADMIN_UNIT_DIR)
    }

    /// The contract's status of the unit, under the name it was asked by.
    pub fn status(&self, name: &str) -> ServiceStatus {
        ServiceStatus {
            name: name.to_string(),
            display_name: self.description.clone(),
            state: self.state(),
            startup: self.startup(),
            problem: self.problem(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(text: &str) -> Unit {
        Unit::parse(text)
    }

    #[test]
    fn a_running_enabled_unit() {
        let u = unit(
            "Id=cron.service\nLoadState=loaded\nActiveState=active\nSubState=running\nResult=success\nUnitFileState=enabled\nDescription=Regular background program processing daemon\nType=simple\n",
        );
        let status = u.status("cron");
        assert_eq!(status.state, ServiceState::Running);
        assert_eq!(status.startup, StartupType::Automatic);
        assert_eq!(status.problem, None);
        assert_eq!(
            status.display_name,
            "Regular background program processing daemon"
        );
    }

    #[test]
    fn a_failed_unit_says_why() {
        let u = unit(
            "LoadState=loaded\nActiveState=failed\nResult=exit-code\nExecMainCode=1\nExecMainStatus=3\nUnitFileState=enabled\n",
        );
        assert_eq!(u.state(), ServiceState::Failed);
        let problem = u.problem().unwrap();
        assert_eq!(problem.kind, ProblemKind::ExitCode);
        assert!(problem.detail.contains("exit status 3"), "{problem:?}");

        let killed = unit(
            "LoadState=loaded\nActiveState=failed\nResult=signal\nExecMainCode=2\nExecMainStatus=9\n",
        );
        assert_eq!(killed.problem().unwrap().kind, ProblemKind::Signal);
        let limited = unit("LoadState=loaded\nActiveState=failed\nResult=start-limit-hit\n");
        assert_eq!(limited.problem().unwrap().kind, ProblemKind::StartLimit);
    }

    #[test]
    fn a_unit_that_cannot_load_reads_as_broken() {
        let u = unit(
            "LoadState=bad-setting\nActiveState=inactive\nResult=success\nFragmentPath=/etc/systemd/system/x.service\nLoadError=org.freedesktop.systemd1.BadSetting \"Unit x.service has a bad unit file setting.\"\n",
        );
        assert_eq!(u.state(), ServiceState::Broken);
        let problem = u.problem().unwrap();
        assert_eq!(problem.kind, ProblemKind::Broken);
        assert!(problem.detail.contains("bad unit file setting"));
        // Still running from before the file went bad: running, with the
        // problem said.
        let running = unit("LoadState=bad-setting\nActiveState=active\n");
        assert_eq!(running.state(), ServiceState::Running);
        assert!(running.problem().is_some());
    }

    #[test]
    fn startup_types_are_told_apart() {
        let cases = [
            ("enabled", StartupType::Automatic),
            ("enabled-runtime", StartupType::AutomaticUntilReboot),
            ("disabled", StartupType::Manual),
            ("linked", StartupType::Manual),
            ("masked", StartupType::Disabled),
            ("masked-runtime", StartupType::DisabledUntilReboot),
            ("static", StartupType::Static),
            ("indirect", StartupType::Indirect),
            ("generated", StartupType::Generated),
            ("transient", StartupType::Generated),
        ];
        for (text, want) in cases {
            let u = unit(&format!("LoadState=loaded\nUnitFileState={text}\n"));
            assert_eq!(u.startup(), want, "{text}");
        }
    }

    #[test]
    fn a_oneshot_runs_once_unless_it_remains() {
        assert!(unit("Type=oneshot\nRemainAfterExit=no\n").runs_once());
        assert!(!unit("Type=oneshot\nRemainAfterExit=yes\n").runs_once());
        assert!(!unit("Type=simple\n").runs_once());
    }

    #[test]
    fn a_unit_without_a_file_is_gone_only_once_it_has_stopped() {
        assert!(unit("LoadState=not-found\nActiveState=inactive\n").gone());
        // Its file removed while it ran: still running, still there.
        let running = unit("LoadState=not-found\nActiveState=active\nSubState=running\n");
        assert!(!running.gone());
        assert_eq!(running.state(), ServiceState::Running);
        assert!(!unit("LoadState=not-found\nActiveState=failed\n").gone());
        assert!(!unit("LoadState=loaded\nActiveState=inactive\n").gone());
    }

    #[test]
    fn units_in_the_admin_folder_are_told_apart() {
        assert!(unit("FragmentPath=/etc/systemd/system/x.service\n").defined_by_admin());
        assert!(!unit("FragmentPath=/usr/lib/systemd/system/x.service\n").defined_by_admin());
    }
}
