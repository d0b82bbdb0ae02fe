//! Write [medic](https://example.invalid/medic) remediation plugins in Rust.
//!
//! A plugin is a WebAssembly component that the medic agent runs in a
//! sandbox when its policy says so. It gets one event, looks at the system
//! through the host's capabilities ([`fs`], [`services`], [`wsus`]), repairs
//! what is wrong, and reports an [`Outcome`] listing every [`Action`].
//! Everything a plugin does goes through these functions: the agent checks
//! each call against the grants in its policy, records it in the audit
//! journal, and in dry-run or approve mode records mutating calls as planned
//! instead of executing them. Plugins need no code of their own for dry runs.
//!
//! Implement [`Plugin`] and register the type with [`register_plugin!`]:
//!
//! ```no_run
//! use medic_sdk::{fs, info, settings, AccessRight, Capability, Event, Plugin, PluginInfo, Report, TriggerHint};
//!
//! struct KeepReadable;
//!
//! impl Plugin for KeepReadable {
//!     fn describe() -> PluginInfo {
//!         PluginInfo {
//!             name: "keep-readable".into(),
//!             version: env!("CARGO_PKG_VERSION").into(),
//!             description: "Keeps a folder readable by a principal.".into(),
//!             capabilities: vec![Capability::FsRead, Capability::FsWrite],
//!             triggers: vec![TriggerHint::File("path".into())],
//!         }
//!     }
//!
//!     fn handle(_event: Event) -> Result<medic_sdk::Outcome, String> {
//!         let path: String = settings::required("path")?;
//!         let principal = settings::get("principal").unwrap_or_else(|| "Users".into());
//!         let mut report = Report::new();
//!         let access = fs::ensure_access(&path, &principal, AccessRight::Read, true)
//!             .map_err(|e| e.describe())?;
//!         info!("checked {} paths under {path}", access.checked);
//!         report.record_access(&principal, &access);
//!         Ok(report.finish(&format!("{principal} can read {path}")))
//!     }
//! }
//!
//! medic_sdk::register_plugin!(KeepReadable);
//! ```
//!
//! Build it as a `cdylib` for `wasm32-unknown-unknown` and turn the module
//! into a component (`cargo xtask plugins` in the medic repository does
//! both). The contract is the WIT package `medic:plugin@0.4.0` in this
//! crate's `wit/medic-plugin/0.4.0` folder, and `medic:wsus@0.3.0` in
//! `wit/medic-wsus/0.3.0` for the [`wsus`] functions (a plugin that calls
//! none of them does not import it); their doc comments are the reference
//! for every function re-exported here.
//!
//! On other targets (a native `cargo test`), the same functions answer
//! from the fake host of [`testing`], so a plugin's logic is tested with
//! no agent: set up a [`testing::FakeHost`] with the fault the plugin
//! repairs, run the plugin, and check what it changed or planned.

extern crate self as medic_sdk;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "medic:wsus/remediation",
        path: ["wit/medic-plugin/0.4.0", "wit/medic-wsus/0.3.0"],
        generate_all,
        pub_export_macro: true,
        export_macro_name: "__export_remediation",
        default_bindings_module: "medic_sdk::bindings",
        runtime_path: "medic_sdk::__private::wit_bindgen::rt",
    });
}

mod initial_heap;
mod report;
pub mod settings;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
mod verify;

/// What a plugin may use, listed in [`PluginInfo::capabilities`]: the
/// agent refuses to load a plugin that asks for one its policy does not
/// grant.
///
/// Each has one name, the one `medic plugins inspect`, the agent's
/// messages and `medic trigger --grant` use; a policy grants it in the
/// plugin's `grants` table, under that name for the scoped ones and in the
/// `wsus` list for the operations of `medic:wsus`:
///
/// | in `describe()` | name | in a policy | on `medic trigger` |
/// | --- | --- | --- | --- |
/// | `Capability::FsRead` | `fs-read` | `grants = { fs-read = ["/srv/share"] }` | `--grant fs-read=/srv/share` |
/// | `Capability::FsWrite` | `fs-write` | `grants = { fs-write = ["/srv/share"] }` | `--grant fs-write=/srv/share` |
/// | `Capability::ServicesRead` | `services-read` | `grants = { services-read = ["BITS"] }` | `--grant services-read=BITS` |
/// | `Capability::ServicesControl` | `services-control` | `grants = { services-control = ["BITS"] }` | `--grant services-control=BITS` |
/// | `wsus::Operation::Read.into()` | `wsus-read` | `grants = { wsus = ["read"] }` | `--grant wsus-read` |
/// | `wsus::Operation::Sync.into()` | `wsus-sync` | `grants = { wsus = ["sync"] }` | `--grant wsus-sync` |
///
/// and so on for every [`wsus::Operation`]; several in one table read
/// `grants = { fs-write = ["/srv/share"], wsus = ["read", "sync"] }`.
pub use bindings::medic::plugin::types::Capability;
pub use bindings::medic::plugin::types::{
    Action, Error, ErrorKind, Event, EventKind, FollowUp, Outcome, PluginInfo, Status,
    SystemEventMatch, TriggerHint,
};
pub use report::Report;

/// The `medic:plugin` version this SDK builds plugins for (checked against
/// its WIT by a test).
pub const CONTRACT_VERSION: &str = "0.4.0";

/// The `medic:wsus` version this SDK's [`wsus`] functions use.
pub const WSUS_VERSION: &str = "0.3.0";

// On wasm32 every module below re-exports the generated imports. Natively
// the functions are swapped for the fake host's (`testing::imports`): a
// named import shadows the glob's item of the same name, so the types stay
// the generated ones on both targets.

/// The file system under the roots the policy grants.
pub mod fs {
    pub use crate::bindings::medic::plugin::fs::*;
    #[cfg(not(target_arch = "wasm32"))]
    pub use crate::testing::imports::fs::{ensure_access, list_dir, read_access, read_file, stat};
}
pub use fs::AccessRight;

/// System services the policy grants.
pub mod services {
    pub use crate::bindings::medic::plugin::services::*;
    #[cfg(not(target_arch = "wasm32"))]
    pub use crate::testing::imports::services::{query, restart, set_startup, start, stop};
}

/// The local WSUS server and its upstream: the `medic:wsus` package.
pub mod wsus {
    use crate::Capability;
    pub use crate::bindings::medic::wsus::wsus::*;
    #[cfg(not(target_arch = "wasm32"))]
    pub use crate::testing::imports::wsus::{
        approval_counts, cancel_downloads, check_upstream, decline, get_config,
        list_inactive_approvals, list_updates, proxy, remove_inactive_approvals, resume_downloads,
        server_info, set_config, start_sync, sync_history, sync_status, upstream_has,
        upstream_info,
    };

    /// The operations of `medic:wsus` a plugin may ask for; list them in
    /// `describe()` as `wsus::Operation::Read.into()`. Each is a
    /// capability named `wsus-<operation>` ([`Operation::name`]), which a
    /// policy grants in the plugin's `wsus` list and `medic trigger` with
    /// `--grant`:
    ///
    /// | operation | name | in a policy | on `medic trigger` |
    /// | --- | --- | --- | --- |
    /// | `Read` | `wsus-read` | `grants = { wsus = ["read"] }` | `--grant wsus-read` |
    /// | `Updates` | `wsus-updates` | `grants = { wsus = ["updates"] }` | `--grant wsus-updates` |
    /// | `Approvals` | `wsus-approvals` | `grants = { wsus = ["approvals"] }` | `--grant wsus-approvals` |
    /// | `Configure` | `wsus-configure` | `grants = { wsus = ["configure"] }` | `--grant wsus-configure` |
    /// | `Sync` | `wsus-sync` | `grants = { wsus = ["sync"] }` | `--grant wsus-sync` |
    /// | `Probe` | `wsus-probe` | `grants = { wsus = ["probe"] }` | `--grant wsus-probe` |
    ///
    /// Several read `grants = { wsus = ["read", "updates", "sync"] }`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Operation {
        /// Every read-only function.
        Read,
        /// [`cancel_downloads`], [`resume_downloads`] and [`decline`].
        Updates,
        /// [`remove_inactive_approvals`].
        Approvals,
        /// [`set_config`].
        Configure,
        /// [`start_sync`].
        Sync,
        /// [`check_upstream`]: it connects to the configured upstream.
        Probe,
    }

    impl Operation {
        /// The capability's name, as `medic plugins inspect`, the agent's
        /// messages and `medic trigger --grant` show it (a policy lists
        /// the part after `wsus-` in its `wsus` list).
        pub fn name(self) -> &'static str {
            match self {
                Self::Read => "wsus-read",
                Self::Updates => "wsus-updates",
                Self::Approvals => "wsus-approvals",
                Self::Configure => "wsus-configure",
                Self::Sync => "wsus-sync",
                Self::Probe => "wsus-probe",
            }
        }
    }

    impl From<Operation> for Capability {
        fn from(operation: Operation) -> Self {
            Capability::Operation(operation.name().to_string())
        }
    }

    /// How a synchronization this plugin started went, as far as can be
    /// told now.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum SyncCheck {
        /// It succeeded.
        Succeeded,
        /// It failed: the `SynchronizationError` name and the server's words.
        Failed {
            error: Option<String>,
            reason: String,
        },
        /// It is still running: come back later ([`crate::Report::follow_up`]).
        Running,
        /// It was only planned (dry-run or approve mode).
        Planned,
        /// The server has no record of it (its history was cleared).
        Unknown,
    }

    /// How the synchronization that started at `started_ms` went.
    pub fn sync_check(started_ms: u64) -> Result<SyncCheck, Error> {
        if started_ms == 0 {
            return Ok(SyncCheck::Planned);
        }
        let status = sync_status()?;
        let record = std::iter::once(status.last.clone())
            .flatten()
            .chain(sync_history(20)?)
            .find(|r| r.started_ms == started_ms);
        Ok(match record {
            Some(r) if r.result_kind == SyncResult::Succeeded => SyncCheck::Succeeded,
            Some(r) => SyncCheck::Failed {
                error: r.error,
                reason: r.reason.unwrap_or_else(|| format!("{:?}", r.result_kind)),
            },
            None if status.running => SyncCheck::Running,
            None => SyncCheck::Unknown,
        })
    }

    /// Approved updates whose download Failed: they stay so until resumed.
    pub fn failed_downloads() -> Result<Vec<UpdateSummary>, Error> {
        list_updates(UpdateFilter {
            state: Some(UpdateState::Failed),
            declined: Some(false),
            approved: Some(true),
        })
    }

    /// Resume every failed download (a repair that unblocked downloads
    /// must: nothing else retries them); none when nothing Failed.
    pub fn resume_failed() -> Result<Option<BatchResult>, Error> {
        let ids: Vec<String> = failed_downloads()?.into_iter().map(|u| u.id).collect();
        if ids.is_empty() {
            return Ok(None);
        }
        resume_downloads(&ids).map(Some)
    }

    pub use crate::verify::{MAX_WAITS, resume_and_follow_up, verify};
}

/// The plugin's private key/value store, kept across runs and restarts.
pub mod state {
    pub use crate::bindings::medic::plugin::state::*;
    #[cfg(not(target_arch = "wasm32"))]
    pub use crate::testing::imports::state::{get, keys, remove, set};

    /// The value under `key` parsed as `T`; `None` when absent or unparsable.
    pub fn get_parsed<T: std::str::FromStr>(key: &str) -> Option<T> {
        get(key).and_then(|value| value.parse().ok())
    }
}

/// Logging into the agent's structured log (see also [`info!`] and friends).
pub mod log {
    pub use crate::bindings::medic::plugin::log::Level;
    #[cfg(target_arch = "wasm32")]
    pub use crate::bindings::medic::plugin::log::{log, panicked};
    #[cfg(not(target_arch = "wasm32"))]
    pub use crate::testing::imports::log::{log, panicked};
}

/// The plugin's settings as the host hands them over; [`settings`] reads
/// them.
mod config {
    pub use crate::bindings::medic::plugin::config::*;
    #[cfg(not(target_arch = "wasm32"))]
    pub use crate::testing::imports::config::{all, get};
}

/// What a plugin implements. Each run gets a fresh instance of the plugin,
/// so there is no `self`: keep what must outlive a run in [`state`].
pub trait Plugin {
    /// Name, version, the capabilities the plugin needs and the triggers it
    /// suggests. Must not call host functions.
    fn describe() -> PluginInfo;

    /// Handle one event: diagnose, repair where needed, report.
    /// Return `Err` only when the run could not complete.
    fn handle(event: Event) -> Result<Outcome, String>;
}

impl Event {
    /// The value of one of the event's fields.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EventKind::FileChanged => "file-changed",
            EventKind::LogLine => "log-line",
            EventKind::SystemEvent => "system-event",
            EventKind::Schedule => "schedule",
            EventKind::Startup => "startup",
            EventKind::Manual => "manual",
            EventKind::FollowUp => "follow-up",
        })
    }
}

impl std::fmt::Display for services::ServiceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Stopped => "stopped",
            Self::StartPending => "start-pending",
            Self::StopPending => "stop-pending",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Failed => "failed",
            Self::Broken => "broken",
        })
    }
}

impl std::fmt::Display for services::StartupType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Automatic => "automatic",
            Self::AutomaticDelayed => "automatic-delayed",
            Self::Manual => "manual",
            Self::Disabled => "disabled",
            Self::AutomaticUntilReboot => "automatic-until-reboot",
            Self::DisabledUntilReboot => "disabled-until-reboot",
            Self::Static => "static",
            Self::Indirect => "indirect",
            Self::Generated => "generated",
        })
    }
}

impl std::fmt::Display for services::ProblemKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Broken => "broken",
            Self::ExitCode => "exit-code",
            Self::Signal => "signal",
            Self::Timeout => "timeout",
            Self::StartLimit => "start-limit",
            Self::Other => "other",
        })
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorKind::Denied => "denied",
            ErrorKind::NotFound => "not-found",
            ErrorKind::InvalidArgument => "invalid-argument",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Failed => "failed",
        })
    }
}

impl Error {
    /// `kind: message`, for summaries and logs.
    pub fn describe(&self) -> String {
        format!("{}: {}", self.kind, self.message)
    }
}

impl From<Error> for String {
    fn from(error: Error) -> String {
        error.describe()
    }
}

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;

    use crate::bindings::exports::medic::plugin::plugin::Guest;
    use crate::{Event, Outcome, Plugin, PluginInfo};
    use std::marker::PhantomData;

    /// Connects a [`Plugin`] to the generated export glue.
    pub struct Adapter<P>(PhantomData<P>);

    impl<P: Plugin> Guest for Adapter<P> {
        fn describe() -> PluginInfo {
            P::describe()
        }

        fn handle(event: Event) -> Result<Outcome, String> {
            // A panic aborts the instance (wasm has no unwinding here); tell
            // the host first so the run's record says what happened.
            std::panic::set_hook(Box::new(|info| {
                crate::log::panicked(&info.to_string());
            }));
            P::handle(event)
        }
    }
}

/// Export a type implementing [`Plugin`] as the component's `plugin`
/// interface. Call it once, at the top level of the plugin crate.
///
/// On targets other than wasm32 it exports nothing (tests run the plugin
/// through [`testing::FakeHost`]); it still checks that the type is a
/// [`Plugin`].
#[macro_export]
macro_rules! register_plugin {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        type __MedicRegisteredPlugin = $crate::__private::Adapter<$plugin>;
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_remediation!(
            __MedicRegisteredPlugin with_types_in $crate::bindings
        );
        #[cfg(not(target_arch = "wasm32"))]
        const _: fn() = || {
            fn is_plugin<P: $crate::Plugin>() {}
            is_plugin::<$plugin>();
        };
    };
}

/// Log at a level with `format!` syntax.
#[macro_export]
macro_rules! log_at {
    ($level:expr, $($arg:tt)+) => {
        $crate::log::log($level, &::std::format!($($arg)+))
    };
}

/// Log at debug level with `format!` syntax.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log_at!($crate::log::Level::Debug, $($arg)+) };
}

/// Log at info level with `format!` syntax.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log_at!($crate::log::Level::Info, $($arg)+) };
}

/// Log at warn level with `format!` syntax.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log_at!($crate::log::Level::Warn, $($arg)+) };
}

/// Log at error level with `format!` syntax.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log_at!($crate::log::Level::Error, $($arg)+) };
}

#[cfg(test)]
mod tests {
    use super::{CONTRACT_VERSION, WSUS_VERSION};
    use std::path::Path;

    /// The newest version folder of a WIT package, and its `package` line.
    fn newest(package: &str) -> (String, String) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("wit")
            .join(package);
        let mut versions: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        versions.sort_by_key(|v| {
            v.split('.')
                .map(|n| n.parse::<u32>().unwrap())
                .collect::<Vec<_>>()
        });
        let newest = versions.pop().unwrap();
        let world = std::fs::read_to_string(dir.join(&newest).join("world.wit")).unwrap();
        let line = world.lines().find(|l| l.starts_with("package ")).unwrap();
        (newest, line.to_string())
    }

    #[test]
    fn the_versions_are_those_of_the_newest_wit() {
        let (core, line) = newest("medic-plugin");
        assert_eq!(core, CONTRACT_VERSION);
        assert_eq!(line, format!("package medic:plugin@{CONTRACT_VERSION};"));
        let (wsus, line) = newest("medic-wsus");
        assert_eq!(wsus, WSUS_VERSION);
        assert_eq!(line, format!("package medic:wsus@{WSUS_VERSION};"));
    }
}
