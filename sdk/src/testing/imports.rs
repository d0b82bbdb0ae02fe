//! The host functions on targets other than wasm32: the same names and
//! signatures as the imports `wit-bindgen` generates, answered by the
//! [`FakeHost`](super::FakeHost) running on the current thread (a panic
//! when none is). The crate's public modules re-export these in place of
//! the generated functions; their doc comments are in the WIT.

use super::{HostFn, World, error, with_world};
use crate::{Error, ErrorKind};

/// One recorded call: grants checked, mode applied, call recorded.
fn call<T>(
    function: HostFn,
    args: Vec<(&'static str, String)>,
    op: impl FnOnce(&mut World, bool) -> Result<T, Error>,
    changed: impl FnOnce(&T) -> bool,
) -> Result<T, Error> {
    with_world(|world| world.call(function, args, op, changed))
}

/// A call that never fails (settings, state reads): recorded, its value
/// returned.
fn read<T>(
    function: HostFn,
    args: Vec<(&'static str, String)>,
    op: impl FnOnce(&mut World) -> T,
) -> T {
    match call(function, args, |world, _| Ok(op(world)), |_| false) {
        Ok(value) => value,
        Err(e) => unreachable!("{function} cannot fail: {}", e.describe()),
    }
}

/// A list of update ids as a call's argument.
fn ids_arg(ids: &[String]) -> String {
    ids.join(",")
}

/// `fs`: reads need `fs-read` (or `fs-write`) on a root holding the path;
/// `ensure-access` needs `fs-write`.
pub mod fs {
    use super::*;
    use crate::fs::{AccessEntry, AccessReport, AccessRight, FileInfo};

    pub fn stat(path: &str) -> Result<FileInfo, Error> {
        call(
            HostFn::FsStat,
            vec![("path", path.into())],
            |w, _| w.fs.stat(&w.grants().read_path(path)?),
            |_| false,
        )
    }

    pub fn list_dir(path: &str) -> Result<Vec<FileInfo>, Error> {
        call(
            HostFn::FsListDir,
            vec![("path", path.into())],
            |w, _| w.fs.list_dir(&w.grants().read_path(path)?),
            |_| false,
        )
    }

    pub fn read_access(path: &str) -> Result<Vec<AccessEntry>, Error> {
        call(
            HostFn::FsReadAccess,
            vec![("path", path.into())],
            |w, _| w.fs.read_access(&w.grants().read_path(path)?),
            |_| false,
        )
    }

    pub fn read_file(path: &str, max_bytes: u32) -> Result<Vec<u8>, Error> {
        call(
            HostFn::FsReadFile,
            vec![("path", path.into()), ("max-bytes", max_bytes.to_string())],
            |w, _| w.fs.read_file(&w.grants().read_path(path)?, max_bytes),
            |_| false,
        )
    }

    pub fn ensure_access(
        path: &str,
        principal: &str,
        right: AccessRight,
        recursive: bool,
    ) -> Result<AccessReport, Error> {
        let args = vec![
            ("path", path.into()),
            ("principal", principal.into()),
            ("right", format!("{right:?}")),
            ("recursive", recursive.to_string()),
        ];
        call(
            HostFn::FsEnsureAccess,
            args,
            |w, apply| {
                let path = w.grants().write_path(path)?;
                w.fs.ensure_access(&path, principal, right, recursive, apply)
            },
            |report| !report.changed.is_empty(),
        )
    }
}

/// `services`: status needs `services-read` (or `services-control`) for
/// the service; the rest needs `services-control` for it.
pub mod services {
    use super::*;
    use crate::services::{ServiceChange, ServiceStatus, StartupType};
    use crate::testing::services::Control;

    pub fn query(name: &str) -> Result<ServiceStatus, Error> {
        call(
            HostFn::ServicesQuery,
            vec![("name", name.into())],
            |w, _| {
                w.grants().check_service(name, false)?;
                w.services.status(name)
            },
            |_| false,
        )
    }

    fn control(
        function: HostFn,
        control: Control,
        name: &str,
        timeout_ms: u32,
    ) -> Result<ServiceChange, Error> {
        call(
            function,
            vec![
                ("name", name.into()),
                ("timeout-ms", timeout_ms.to_string()),
            ],
            |w, apply| {
                w.grants().check_service(name, true)?;
                w.services.control(control, name, timeout_ms, apply)
            },
            |change| change.applied,
        )
    }

    pub fn start(name: &str, timeout_ms: u32) -> Result<ServiceChange, Error> {
        control(HostFn::ServicesStart, Control::Start, name, timeout_ms)
    }

    pub fn stop(name: &str, timeout_ms: u32) -> Result<ServiceChange, Error> {
        control(HostFn::ServicesStop, Control::Stop, name, timeout_ms)
    }

    pub fn restart(name: &str, timeout_ms: u32) -> Result<ServiceChange, Error> {
        control(HostFn::ServicesRestart, Control::Restart, name, timeout_ms)
    }

    pub fn set_startup(name: &str, startup: StartupType) -> Result<ServiceChange, Error> {
        call(
            HostFn::ServicesSetStartup,
            vec![("name", name.into()), ("startup", startup.to_string())],
            |w, apply| {
                w.grants().check_service(name, true)?;
                w.services.set_startup(name, startup, apply)
            },
            |change| change.applied,
        )
    }
}

/// `config`: the plugin's settings; always available.
pub mod config {
    use super::*;
    use crate::config::Value;

    pub fn get(key: &str) -> Option<Value> {
        read(HostFn::ConfigGet, vec![("key", key.into())], |w| {
            w.settings.get(key).cloned()
        })
    }

    pub fn all() -> Vec<(String, Value)> {
        read(HostFn::ConfigAll, Vec::new(), |w| {
            w.settings
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }
}

/// `state`: the plugin's own store, kept across runs of one `FakeHost`;
/// writes are kept in every mode.
pub mod state {
    use super::*;

    const MAX_KEY: usize = 256;
    const MAX_VALUE: usize = 64 * 1024;

    pub fn get(key: &str) -> Option<String> {
        read(HostFn::StateGet, vec![("key", key.into())], |w| {
            w.state.get(key).cloned()
        })
    }

    pub fn set(key: &str, value: &str) -> Result<(), Error> {
        call(
            HostFn::StateSet,
            vec![("key", key.into()), ("value", value.into())],
            |w, _| {
                if key.is_empty() || key.len() > MAX_KEY {
                    return Err(error(
                        ErrorKind::InvalidArgument,
                        format!("state keys are 1 to {MAX_KEY} bytes"),
                    ));
                }
                if value.len() > MAX_VALUE {
                    return Err(error(
                        ErrorKind::InvalidArgument,
                        format!(
                            "state values are at most {MAX_VALUE} bytes, got {}",
                            value.len()
                        ),
                    ));
                }
                w.state.insert(key.to_string(), value.to_string());
                Ok(())
            },
            |_| false,
        )
    }

    pub fn remove(key: &str) -> Result<(), Error> {
        call(
            HostFn::StateRemove,
            vec![("key", key.into())],
            |w, _| {
                w.state.remove(key);
                Ok(())
            },
            |_| false,
        )
    }

    pub fn keys() -> Vec<String> {
        read(HostFn::StateKeys, Vec::new(), |w| {
            w.state.keys().cloned().collect()
        })
    }
}

/// `log`: messages are kept with the run ([`Run::logs`](super::Run::logs))
/// and written to the test's output.
pub mod log {
    use super::*;
    use crate::log::Level;

    pub fn log(level: Level, message: &str) {
        with_world(|w| w.log(level, message));
        let level = match level {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        eprintln!("plugin {level}: {message}");
    }

    pub fn panicked(message: &str) {
        log(Level::Error, &format!("panic: {message}"));
    }
}

/// `wsus`: read-only calls need `wsus-read`; each mutating call its own
/// operation; `check-upstream` needs `wsus-probe`.
pub mod wsus {
    use super::*;
    use crate::wsus::{
        Approval, ApprovalTally, BatchResult, ProxySettings, ServerFacts, SyncRecord, SyncState,
        UpdateFilter, UpdateSummary, UpstreamFacts, UpstreamProbe,
    };

    pub fn server_info() -> Result<ServerFacts, Error> {
        call(
            HostFn::WsusServerInfo,
            Vec::new(),
            |w, _| Ok(w.wsus()?.server_info()),
            |_| false,
        )
    }

    pub fn list_updates(filter: UpdateFilter) -> Result<Vec<UpdateSummary>, Error> {
        call(
            HostFn::WsusListUpdates,
            vec![("filter", format!("{filter:?}"))],
            |w, _| Ok(w.wsus()?.list_updates(filter)),
            |_| false,
        )
    }

    pub fn upstream_has(ids: &[String]) -> Result<Vec<String>, Error> {
        call(
            HostFn::WsusUpstreamHas,
            vec![("ids", ids_arg(ids))],
            |w, _| w.wsus()?.upstream_has(ids),
            |_| false,
        )
    }

    pub fn cancel_downloads(ids: &[String]) -> Result<BatchResult, Error> {
        call(
            HostFn::WsusCancelDownloads,
            vec![("ids", ids_arg(ids))],
            |w, apply| Ok(w.wsus()?.cancel_downloads(ids, apply)),
            |batch| !batch.done.is_empty(),
        )
    }

    pub fn resume_downloads(ids: &[String]) -> Result<BatchResult, Error> {
        call(
            HostFn::WsusResumeDownloads,
            vec![("ids", ids_arg(ids))],
            |w, apply| Ok(w.wsus()?.resume_downloads(ids, apply)),
            |batch| !batch.done.is_empty(),
        )
    }

    pub fn decline(ids: &[String]) -> Result<BatchResult, Error> {
        call(
            HostFn::WsusDecline,
            vec![("ids", ids_arg(ids))],
            |w, apply| w.wsus()?.decline(ids, apply),
            |batch| !batch.done.is_empty(),
        )
    }

    pub fn approval_counts() -> Result<ApprovalTally, Error> {
        call(
            HostFn::WsusApprovalCounts,
            Vec::new(),
            |w, _| Ok(w.wsus()?.approval_counts()),
            |_| false,
        )
    }

    pub fn list_inactive_approvals() -> Result<Vec<Approval>, Error> {
        call(
            HostFn::WsusListInactiveApprovals,
            Vec::new(),
            |w, _| Ok(w.wsus()?.list_inactive_approvals()),
            |_| false,
        )
    }

    pub fn remove_inactive_approvals() -> Result<u32, Error> {
        call(
            HostFn::WsusRemoveInactiveApprovals,
            Vec::new(),
            |w, apply| Ok(w.wsus()?.remove_inactive_approvals(apply)),
            |removed| *removed > 0,
        )
    }

    pub fn get_config(name: &str) -> Result<Option<String>, Error> {
        call(
            HostFn::WsusGetConfig,
            vec![("name", name.into())],
            |w, _| Ok(w.wsus()?.get_config(name)),
            |_| false,
        )
    }

    pub fn set_config(name: &str, value: &str) -> Result<Option<String>, Error> {
        call(
            HostFn::WsusSetConfig,
            vec![("name", name.into()), ("value", value.into())],
            |w, apply| w.wsus()?.set_config_call(name, value, apply),
            |previous| previous.as_deref() != Some(value),
        )
    }

    pub fn start_sync() -> Result<u64, Error> {
        call(
            HostFn::WsusStartSync,
            Vec::new(),
            |w, apply| {
                let now = w.tick();
                w.wsus()?.start_sync(now, apply)
            },
            |_| true,
        )
    }

    pub fn sync_status() -> Result<SyncState, Error> {
        call(
            HostFn::WsusSyncStatus,
            Vec::new(),
            |w, _| Ok(w.wsus()?.sync_status()),
            |_| false,
        )
    }

    pub fn sync_history(limit: u32) -> Result<Vec<SyncRecord>, Error> {
        call(
            HostFn::WsusSyncHistory,
            vec![("limit", limit.to_string())],
            |w, _| Ok(w.wsus()?.sync_history(limit)),
            |_| false,
        )
    }

    pub fn upstream_info() -> Result<Option<UpstreamFacts>, Error> {
        call(
            HostFn::WsusUpstreamInfo,
            Vec::new(),
            |w, _| w.wsus()?.upstream_info(),
            |_| false,
        )
    }

    pub fn proxy() -> Result<ProxySettings, Error> {
        call(
            HostFn::WsusProxy,
            Vec::new(),
            |w, _| Ok(w.wsus()?.proxy_settings()),
            |_| false,
        )
    }

    pub fn check_upstream() -> Result<UpstreamProbe, Error> {
        call(
            HostFn::WsusCheckUpstream,
            Vec::new(),
            |w, _| w.wsus()?.check_upstream(),
            |_| false,
        )
    }
}
