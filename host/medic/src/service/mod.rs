//! medic as a Windows service: `medic service install | uninstall | start
//! | stop`, and `medic service run`, which the Service Control Manager
//! starts and which runs the agent under the service dispatcher until the
//! stop control.
//!
//! What the service is (its name, command line, start type, recovery and
//! where it logs) is decided here, in plain Rust tested everywhere; the
//! calls to the Service Control Manager, the dispatcher and the Event Log
//! are in `windows` (Windows only). Elsewhere the verbs say to run `medic
//! run` under the system's own service manager.
//!
//! The service runs as LocalSystem, which the WSUS administration API and
//! the content folder's access lists need, starts automatically (delayed,
//! so that WSUS's own services are up first), and is restarted by the
//! Service Control Manager if it dies. It logs to a daily file in the
//! agent's state folder and, from warnings up, to the Application event
//! log under its own source, where an administrator looks first.

#[cfg(windows)]
mod eventlog;
#[cfg(windows)]
mod windows;

use anyhow::Result;
use clap::{Args, Subcommand};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// The service's name unless `--name` says otherwise.
pub const DEFAULT_NAME: &str = "medic";

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Install the agent as a Windows service running `medic service run
    /// --policy FILE` as LocalSystem, started automatically (delayed) and
    /// restarted if it dies; register its Application event log source.
    Install(InstallArgs),
    /// Stop and remove the service and its event log source.
    Uninstall(NameArgs),
    /// Start the service and wait until it runs.
    Start(NameArgs),
    /// Stop the service and wait until it has stopped.
    Stop(NameArgs),
    /// Run under the Service Control Manager (what the installed service
    /// runs; not for a console).
    #[command(hide = true)]
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct NameArgs {
    /// The service's name.
    #[arg(long, default_value = DEFAULT_NAME)]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    #[command(flatten)]
    pub name: NameArgs,
    /// The policy the service runs (made absolute).
    #[arg(long, short)]
    pub policy: PathBuf,
    /// Start only when asked (`medic service start`), not at boot.
    #[arg(long)]
    pub manual: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub name: NameArgs,
    #[arg(long, short)]
    pub policy: PathBuf,
}

/// Everything the Service Control Manager is told about the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: String,
    pub display_name: String,
    pub description: String,
    pub executable: PathBuf,
    pub policy: PathBuf,
    /// At boot (delayed), or only when started.
    pub automatic: bool,
}

/// How long the service waits to be restarted after each of its first
/// failures; after the last, the Service Control Manager leaves it.
pub const RESTART_DELAYS: [Duration; 3] = [
    Duration::from_secs(10),
    Duration::from_secs(60),
    Duration::from_secs(300),
];

/// After a day without failures the count starts again.
pub const FAILURE_RESET: Duration = Duration::from_secs(24 * 60 * 60);

/// How long `start`, `stop` and `uninstall` wait for the service.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(120);

/// The log files the service keeps (one a day).
pub const LOG_FILES_KEPT: usize = 14;

impl ServiceSpec {
    /// The service `args` describe, run by `executable`, with the policy
    /// path made absolute against `cwd` (the service starts in
    /// `System32`).
    pub fn new(args: &InstallArgs, executable: PathBuf, cwd: &Path) -> Self {
        let policy = if args.policy.is_absolute() {
            args.policy.clone()
        } else {
            cwd.join(&args.policy)
        };
        Self {
            display_name: format!("medic remediation agent ({})", args.name.name),
            description: format!(
                "Watches this server and repairs what its policy names with sandboxed plugins. Policy: {}",
                policy.display()
            ),
            name: args.name.name.clone(),
            executable,
            policy,
            automatic: !args.manual,
        }
    }

    /// The arguments after the executable on the service's command line.
    pub fn launch_arguments(&self) -> Vec<OsString> {
        vec![
            "service".into(),
            "run".into(),
            "--name".into(),
            self.name.clone().into(),
            "--policy".into(),
            self.policy.clone().into_os_string(),
        ]
    }
}

/// Where the service writes its log: the agent's state folder.
pub fn log_folder(state_dir: &Path) -> PathBuf {
    state_dir.join("logs")
}

/// Run a `medic service` verb.
pub fn run(command: ServiceCommand) -> Result<ExitCode> {
    #[cfg(windows)]
    {
        windows::run(command)
    }
    #[cfg(not(windows))]
    {
        let _ = command;
        anyhow::bail!(
            "`medic service` installs and runs medic as a Windows service; on this system run `medic run --policy FILE` under its service manager (e.g. a systemd unit)"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install(policy: &str, manual: bool) -> InstallArgs {
        InstallArgs {
            name: NameArgs {
                name: "medic-wsus".into(),
            },
            policy: policy.into(),
            manual,
        }
    }

    #[test]
    fn the_service_runs_its_policy_by_absolute_path() {
        let spec = ServiceSpec::new(
            &install("policies/wsus.toml", false),
            PathBuf::from("/opt/medic/medic.exe"),
            Path::new("/etc/medic"),
        );
        assert!(spec.automatic);
        assert_eq!(spec.policy, Path::new("/etc/medic/policies/wsus.toml"));
        assert_eq!(
            spec.launch_arguments(),
            [
                "service",
                "run",
                "--name",
                "medic-wsus",
                "--policy",
                "/etc/medic/policies/wsus.toml"
            ]
            .map(OsString::from)
        );
        assert!(spec.description.contains("/etc/medic/policies/wsus.toml"));
        let manual = ServiceSpec::new(
            &install("/srv/p.toml", true),
            PathBuf::from("medic.exe"),
            Path::new("/ignored"),
        );
        assert!(!manual.automatic);
        assert_eq!(manual.policy, Path::new("/srv/p.toml"));
    }

    #[test]
    fn the_log_lives_with_the_agents_state() {
        assert_eq!(
            log_folder(Path::new("/var/lib/medic")),
            Path::new("/var/lib/medic/logs")
        );
    }

    #[cfg(not(windows))]
    #[test]
    fn elsewhere_the_verbs_point_to_medic_run() {
        let err = run(ServiceCommand::Start(NameArgs {
            name: DEFAULT_NAME.into(),
        }))
        .unwrap_err();
        assert!(err.to_string().contains("medic run"), "{err}");
    }
}
