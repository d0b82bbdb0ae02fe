//! The system operations behind the `fs`, `services` and `wsus`
//! capabilities. The capability layer checks grants and records every call;
//! a backend only does the work, on the real system or a simulated one.
//!
//! Every mutating operation takes `apply`: with `false` (dry-run and approve
//! modes) it computes and returns exactly what it would change, and changes
//! nothing.

pub mod lab;
pub mod local_fs;
#[cfg(target_os = "linux")]
pub mod posix_acl;
pub mod principals;
pub mod systemd;

use crate::contract::PluginError;
use crate::contract::v0_1_0::medic::plugin::{fs, services, wsus};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use principals::{Principal, PrincipalMap};

/// Result of a backend operation: errors are values the plugin sees.
pub type OpResult<T> = Result<T, PluginError>;

/// Files, directories and their access lists.
pub trait FileSystem: Send + Sync {
    fn stat(&self, path: &Path) -> OpResult<fs::FileInfo>;
    fn list_dir(&self, path: &Path) -> OpResult<Vec<fs::FileInfo>>;
    fn read_access(&self, path: &Path) -> OpResult<Vec<fs::AccessEntry>>;
    fn read_file(&self, path: &Path, max_bytes: u32) -> OpResult<Vec<u8>>;
    fn ensure_access(
        &self,
        path: &Path,
        principal: &str,
        right: fs::AccessRight,
        recursive: bool,
        apply: bool,
    ) -> OpResult<fs::AccessReport>;
}

/// A service manager (the Service Control Manager, systemd, the lab's).
pub trait ServiceManager: Send + Sync {
    fn query(&self, name: &str) -> OpResult<services::ServiceStatus>;
    fn start(
        &self,
        name: &str,
        timeout: Duration,
        apply: bool,
    ) -> OpResult<services::ServiceChange>;
    fn stop(&self, name: &str, timeout: Duration, apply: bool)
    -> OpResult<services::ServiceChange>;
    fn restart(
        &self,
        name: &str,
        timeout: Duration,
        apply: bool,
    ) -> OpResult<services::ServiceChange>;
    fn set_startup(
        &self,
        name: &str,
        startup: services::StartupType,
        apply: bool,
    ) -> OpResult<services::ServiceChange>;
}

/// A WSUS server and its upstream.
pub trait WsusServer: Send + Sync {
    fn server_info(&self) -> OpResult<wsus::ServerFacts>;
    fn list_updates(&self, filter: &wsus::UpdateFilter) -> OpResult<Vec<wsus::UpdateSummary>>;
    fn upstream_has(&self, ids: &[String]) -> OpResult<Vec<String>>;
    fn cancel_downloads(&self, ids: &[String], apply: bool) -> OpResult<wsus::BatchResult>;
    fn decline(&self, ids: &[String], apply: bool) -> OpResult<wsus::BatchResult>;
    fn approval_counts(&self) -> OpResult<wsus::ApprovalTally>;
    fn list_inactive_approvals(&self) -> OpResult<Vec<wsus::Approval>>;
    fn remove_inactive_approvals(&self, apply: bool) -> OpResult<u32>;
    fn get_config(&self, name: &str) -> OpResult<Option<String>>;
    fn set_config(&self, name: &str, value: &str, apply: bool) -> OpResult<Option<String>>;
    fn start_sync(&self, apply: bool) -> OpResult<()>;
    fn sync_status(&self) -> OpResult<wsus::SyncState>;
    fn sync_history(&self, limit: u32) -> OpResult<Vec<wsus::SyncRecord>>;
}

/// The backends a run talks to.
#[derive(Clone)]
pub struct Backends {
    pub fs: Arc<dyn FileSystem>,
    pub services: Arc<dyn ServiceManager>,
    pub wsus: Arc<dyn WsusServer>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends").finish_non_exhaustive()
    }
}

impl Backends {
    /// The lab's downstream server: its content folder on this machine's
    /// file system (with the lab's principal mapping), its services and
    /// its WSUS server.
    pub fn lab(lab: crate::lab::Lab) -> Self {
        Self {
            fs: Arc::new(local_fs::LocalFileSystem::new(lab.principals().clone())),
            services: Arc::new(lab::LabServices(lab.clone())),
            wsus: Arc::new(lab::LabWsus(lab)),
        }
    }

    /// The backends the policy's `[backend]` table selects.
    pub fn from_settings(
        settings: &crate::config::BackendSettings,
    ) -> Result<Self, crate::lab::LabError> {
        use crate::config::BackendSettings;
        match settings {
            BackendSettings::Lab { folder } => Ok(Self::lab(crate::lab::Lab::open(folder)?)),
            BackendSettings::Local { principals } => Ok(Self::local(principals.clone())),
        }
    }

    /// The real system this agent runs on: local files with the platform's
    /// access lists, the platform's service manager, and no WSUS server
    /// (until one is configured).
    pub fn local(principals: PrincipalMap) -> Self {
        Self {
            fs: Arc::new(local_fs::LocalFileSystem::new(principals)),
            services: Arc::new(systemd::Systemd::default()),
            wsus: Arc::new(NoWsus),
        }
    }
}

/// Used where no WSUS server is configured: every call says so.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoWsus;

impl NoWsus {
    fn refuse<T>(&self) -> OpResult<T> {
        Err(PluginError::new(
            crate::contract::ErrorKind::Unsupported,
            "no WSUS server is configured for this agent: select the `lab` backend (or `windows` on a WSUS server) in the policy",
        ))
    }
}

impl WsusServer for NoWsus {
    fn server_info(&self) -> OpResult<wsus::ServerFacts> {
        self.refuse()
    }
    fn list_updates(&self, _: &wsus::UpdateFilter) -> OpResult<Vec<wsus::UpdateSummary>> {
        self.refuse()
    }
    fn upstream_has(&self, _: &[String]) -> OpResult<Vec<String>> {
        self.refuse()
    }
    fn cancel_downloads(&self, _: &[String], _: bool) -> OpResult<wsus::BatchResult> {
        self.refuse()
    }
    fn decline(&self, _: &[String], _: bool) -> OpResult<wsus::BatchResult> {
        self.refuse()
    }
    fn approval_counts(&self) -> OpResult<wsus::ApprovalTally> {
        self.refuse()
    }
    fn list_inactive_approvals(&self) -> OpResult<Vec<wsus::Approval>> {
        self.refuse()
    }
    fn remove_inactive_approvals(&self, _: bool) -> OpResult<u32> {
        self.refuse()
    }
    fn get_config(&self, _: &str) -> OpResult<Option<String>> {
        self.refuse()
    }
    fn set_config(&self, _: &str, _: &str, _: bool) -> OpResult<Option<String>> {
        self.refuse()
    }
    fn start_sync(&self, _: bool) -> OpResult<()> {
        self.refuse()
    }
    fn sync_status(&self) -> OpResult<wsus::SyncState> {
        self.refuse()
    }
    fn sync_history(&self, _: u32) -> OpResult<Vec<wsus::SyncRecord>> {
        self.refuse()
    }
}

/// Map an I/O error on `path` to the error value a plugin sees.
pub fn io_error(path: &Path, error: &std::io::Error) -> PluginError {
    use crate::contract::ErrorKind;
    let kind = match error.kind() {
        std::io::ErrorKind::NotFound => ErrorKind::NotFound,
        std::io::ErrorKind::PermissionDenied => ErrorKind::Denied,
        std::io::ErrorKind::InvalidInput => ErrorKind::InvalidArgument,
        std::io::ErrorKind::Unsupported => ErrorKind::Unsupported,
        _ => ErrorKind::Failed,
    };
    PluginError::new(kind, format!("{}: {error}", path.display()))
}
