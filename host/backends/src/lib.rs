//! The system operations behind medic's `fs`, `services` and `wsus`
//! capabilities: the traits a capability calls, the values they exchange,
//! and the real implementations (local files with POSIX ACLs, principals,
//! systemd). The sandbox checks grants and records every call; a backend
//! only does the work, on the real system or a simulated one.
//!
//! The modules: [`error`] (what an operation returns when it fails),
//! [`fs`], [`services`] and [`wsus`] (each a trait and the values it
//! exchanges), [`local_fs`] (this machine's files, reached beneath their
//! granted root by descriptor through [`beneath`]), [`posix_acl`] (POSIX
//! access and default access lists, Linux), [`principals`] (Windows names
//! mapped to local users and groups, resolved through the system's name
//! service), [`systemd`] (services through `systemctl`, judged by what
//! `systemctl show` reports afterwards),
//! [`windows`] (the Service Control Manager, NTFS and WSUS on Windows).
//!
//! Nothing here knows a contract version: the sandbox converts between
//! these types and each version's generated ones.
//!
//! Every mutating operation takes `apply`: with `false` (dry-run and
//! approve modes) it computes and returns exactly what it would change, and
//! changes nothing.

#[cfg(target_os = "linux")]
pub mod beneath;
pub mod error;
pub mod fs;
pub mod local_fs;
#[cfg(target_os = "linux")]
pub mod posix_acl;
pub mod principals;
pub mod services;
pub mod systemd;
pub mod windows;
pub mod wsus;

use std::sync::Arc;

pub use error::{BackendError, ErrorKind, OpResult, io_error};
pub use fs::FileSystem;
pub use principals::{Principal, PrincipalMap};
pub use services::ServiceManager;
pub use wsus::WsusServer;

/// The backends a run talks to.
#[derive(Clone)]
pub struct Backends {
    pub fs: Arc<dyn FileSystem>,
    pub services: Arc<dyn ServiceManager>,
    /// The local WSUS server, where there is one.
    pub wsus: Option<Arc<dyn WsusServer>>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends")
            .field("wsus", &self.wsus.is_some())
            .finish_non_exhaustive()
    }
}

impl Backends {
    /// The real system this agent runs on: local files with the platform's
    /// access lists, the platform's service manager, and no WSUS server.
    pub fn local(principals: PrincipalMap) -> Self {
        Self {
            fs: Arc::new(local_fs::LocalFileSystem::new(principals)),
            services: Arc::new(systemd::Systemd::default()),
            wsus: None,
        }
    }
}

/// Milliseconds since the Unix epoch, the time unit of every record.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
