//! The Windows side of `medic service`: installing and controlling the
//! service through the Service Control Manager, and running the agent
//! under the service dispatcher until the stop or shutdown control.

use super::{
    CONTROL_TIMEOUT, FAILURE_RESET, InstallArgs, LOG_FILES_KEPT, NameArgs, RESTART_DELAYS, RunArgs,
    ServiceCommand, ServiceSpec, eventlog, log_folder,
};
use crate::catalog::Catalog;
use anyhow::{Context, Result, bail};
use medic_agent::policy::Policy;
use medic_backends::ServiceManager as _;
use medic_backends::services::ServiceChange;
use medic_backends::windows::scm::{Scm, SystemClock, Win32Scm};
use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use windows_service::service::{
    ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
    ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
    ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use windows_service::{define_windows_service, service_dispatcher};

pub fn run(command: ServiceCommand) -> Result<ExitCode> {
    match command {
        ServiceCommand::Install(args) => install(&args),
        ServiceCommand::Uninstall(args) => uninstall(&args),
        ServiceCommand::Start(args) => start(&args),
        ServiceCommand::Stop(args) => stop(&args),
        ServiceCommand::Run(args) => dispatch(args),
    }
}

fn manager(access: ServiceManagerAccess) -> Result<ServiceManager> {
    ServiceManager::local_computer(None::<&str>, access)
        .context("cannot reach the Service Control Manager (run as an administrator)")
}

fn install(args: &InstallArgs) -> Result<ExitCode> {
    let spec = ServiceSpec::new(
        args,
        std::env::current_exe().context("cannot find medic.exe")?,
        &std::env::current_dir().context("cannot read the current folder")?,
    );
    if !spec.policy.is_file() {
        bail!("{} does not exist", spec.policy.display());
    }
    let manager = manager(ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE)?;
    let info = ServiceInfo {
        name: spec.name.clone().into(),
        display_name: spec.display_name.clone().into(),
        service_type: ServiceType::OWN_PROCESS,
        start_type: if spec.automatic {
            ServiceStartType::AutoStart
        } else {
            ServiceStartType::OnDemand
        },
        error_control: ServiceErrorControl::Normal,
        executable_path: spec.executable.clone(),
        launch_arguments: spec.launch_arguments(),
        dependencies: Vec::new(),
        // LocalSystem.
        account_name: None,
        account_password: None,
    };
    let service = manager
        .create_service(&info, ServiceAccess::CHANGE_CONFIG | ServiceAccess::START)
        .with_context(|| format!("cannot create the service `{}`", spec.name))?;
    // The service exists from here on: what follows refines it, and a
    // service manager that lacks one of these settings (Wine lacks some)
    // still has a working service, so each is a warning, not a failure.
    let refinements: [(&str, windows_service::Result<()>); 4] = [
        (
            "its description",
            service.set_description(&spec.description),
        ),
        (
            "delayed automatic start",
            if spec.automatic {
                service.set_delayed_auto_start(true)
            } else {
                Ok(())
            },
        ),
        (
            "restart on failure",
            service.update_failure_actions(ServiceFailureActions {
                reset_period: ServiceFailureResetPeriod::After(FAILURE_RESET),
                reboot_msg: None,
                command: None,
                actions: Some(
                    RESTART_DELAYS
                        .iter()
                        .map(|delay| ServiceAction {
                            action_type: ServiceActionType::Restart,
                            delay: *delay,
                        })
                        .collect(),
                ),
            }),
        ),
        (
            "restart after an error exit",
            service.set_failure_actions_on_non_crash_failures(true),
        ),
    ];
    for (what, result) in refinements {
        if let Err(e) = result {
            eprintln!("warning: the service is installed, but {what} could not be set: {e}");
        }
    }
    eventlog::register_source(&spec.name)?;
    println!(
        "installed the service `{}` ({}), running {} {}",
        spec.name,
        if spec.automatic {
            "automatic, delayed start"
        } else {
            "manual start"
        },
        spec.executable.display(),
        spec.launch_arguments()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("start it with `medic service start --name {}`", spec.name);
    Ok(ExitCode::SUCCESS)
}

fn scm() -> Scm<Win32Scm, SystemClock> {
    Scm::new(Win32Scm, SystemClock)
}

fn start(args: &NameArgs) -> Result<ExitCode> {
    said(&args.name, scm().start(&args.name, CONTROL_TIMEOUT, true)?)
}

fn stop(args: &NameArgs) -> Result<ExitCode> {
    said(&args.name, scm().stop(&args.name, CONTROL_TIMEOUT, true)?)
}

/// Print what a start or stop did: `name`: before -> after.
fn said(name: &str, change: ServiceChange) -> Result<ExitCode> {
    println!(
        "`{name}`: {} -> {}",
        change.before.state.as_str(),
        change.after.state.as_str()
    );
    Ok(ExitCode::SUCCESS)
}

fn uninstall(args: &NameArgs) -> Result<ExitCode> {
    scm().stop(&args.name, CONTROL_TIMEOUT, true)?;
    let manager = manager(ServiceManagerAccess::CONNECT)?;
    let service = manager
        .open_service(&args.name, ServiceAccess::DELETE)
        .with_context(|| format!("cannot open the service `{}`", args.name))?;
    service.delete()?;
    eventlog::unregister_source(&args.name)?;
    println!("removed the service `{}`", args.name);
    Ok(ExitCode::SUCCESS)
}

/// What `service_main` runs: set before the dispatcher starts, since the
/// dispatcher hands `service_main` the start parameters, not the command
/// line.
static RUN: OnceLock<RunArgs> = OnceLock::new();

define_windows_service!(ffi_service_main, service_main);

fn dispatch(args: RunArgs) -> Result<ExitCode> {
    let name = args.name.name.clone();
    let _ = RUN.set(args);
    service_dispatcher::start(&name, ffi_service_main).with_context(|| {
        format!("`medic service run` is what the Service Control Manager starts; to run the agent in a console use `medic run` (service `{name}`)")
    })?;
    Ok(ExitCode::SUCCESS)
}

fn service_main(_start_parameters: Vec<OsString>) {
    let Some(args) = RUN.get() else { return };
    if let Err(e) = serve(args) {
        // Logging may not be set up yet: the event log hears it either way.
        tracing::error!("the service stopped with an error: {e:#}");
        eventlog::report_error(&args.name.name, &format!("{e:#}"));
    }
}

/// How often a stopping service tells the Service Control Manager it is
/// still stopping (the runs in flight finish first, each within its
/// plugin's timeout).
const STOP_PROGRESS: Duration = Duration::from_secs(5);

fn status(state: ServiceState, exit: ServiceExitCode, wait: Duration) -> ServiceStatus {
    ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted: if state == ServiceState::Running {
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
        } else {
            ServiceControlAccept::empty()
        },
        exit_code: exit,
        checkpoint: 0,
        wait_hint: wait,
        process_id: None,
    }
}

/// Log to a daily file in the state folder and, from warnings up, to the
/// Application event log.
fn init_logging(name: &str, state_dir: &std::path::Path) -> Result<()> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let folder = log_folder(state_dir);
    std::fs::create_dir_all(&folder)
        .with_context(|| format!("cannot create {}", folder.display()))?;
    let file = tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix("medic")
        .filename_suffix("log")
        .max_log_files(LOG_FILES_KEPT)
        .build(&folder)
        .context("cannot open the service's log file")?;
    let filter = std::env::var("MEDIC_LOG").unwrap_or_else(|_| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let events = eventlog::EventLogWriter::open(name)?;
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(file)
                .with_filter(filter),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .without_time()
                .with_target(false)
                .with_writer(events)
                .with_filter(tracing_subscriber::filter::LevelFilter::WARN),
        )
        .try_init();
    Ok(())
}

fn serve(args: &RunArgs) -> Result<()> {
    let stop = Arc::new(tokio::sync::Notify::new());
    let on_stop = stop.clone();
    let handle =
        service_control_handler::register(&args.name.name, move |control| match control {
            ServiceControl::Stop | ServiceControl::Shutdown => {
                on_stop.notify_one();
                ServiceControlHandlerResult::NoError
            }
            ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
            _ => ServiceControlHandlerResult::NotImplemented,
        })?;
    handle.set_service_status(status(
        ServiceState::StartPending,
        ServiceExitCode::NO_ERROR,
        Duration::from_secs(60),
    ))?;
    let result = (|| {
        let state_dir = Policy::load_serving(&args.policy)?.policy.agent.state_dir;
        init_logging(&args.name.name, &state_dir)?;
        tracing::info!(
            "service `{}` starting with {}",
            args.name.name,
            args.policy.display()
        );
        let agent = medic_agent::Agent::load(&args.policy, Arc::new(Catalog))?;
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        handle.set_service_status(status(
            ServiceState::Running,
            ServiceExitCode::NO_ERROR,
            Duration::ZERO,
        ))?;
        let stopping = {
            let stop = stop.clone();
            let handle = handle;
            async move {
                stop.notified().await;
                tracing::info!("stop requested by the Service Control Manager");
                // While the runs in flight finish, say so again and again
                // with a growing checkpoint, or the SCM takes the service
                // for hung once the wait hint has passed.
                tokio::spawn(async move {
                    for checkpoint in 1u32.. {
                        let _ = handle.set_service_status(ServiceStatus {
                            checkpoint,
                            ..status(
                                ServiceState::StopPending,
                                ServiceExitCode::NO_ERROR,
                                STOP_PROGRESS * 3,
                            )
                        });
                        tokio::time::sleep(STOP_PROGRESS).await;
                    }
                });
            }
        };
        tokio.block_on(agent.serve(stopping))?;
        anyhow::Ok(())
    })();
    let exit = match &result {
        Ok(()) => ServiceExitCode::NO_ERROR,
        Err(_) => ServiceExitCode::ServiceSpecific(1),
    };
    handle.set_service_status(status(ServiceState::Stopped, exit, Duration::ZERO))?;
    result
}
