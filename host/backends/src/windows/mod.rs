//! The `windows` backend: a real Windows Server, reached through the
//! Service Control Manager ([`scm`]), NTFS access lists ([`ntfs`]) and the
//! WSUS administration API ([`wsus`]).
//!
//! Each part is split the same way: the system calls sit behind a small
//! trait with one implementation compiled only on Windows, and every
//! decision above them (state and error tables, waits, what an access list
//! lacks, the helper's protocol) is plain Rust compiled and unit-tested on
//! every platform against fakes of that trait.

pub mod ntfs;
pub mod scm;
pub mod wsus;

#[cfg(windows)]
use crate::{Backends, OpResult};

/// What a policy's `kind = "windows"` backend asks for.
#[derive(Debug, Clone)]
pub struct WindowsConfig {
    /// Policy names of principals mapped to SIDs, besides the well-known
    /// ones.
    pub principals: ntfs::SidMap,
    /// Whether this machine is a WSUS server whose `wsus` calls go to its
    /// administration API.
    pub wsus: bool,
}

/// This Windows machine: NTFS, the Service Control Manager, and its WSUS
/// server when `config.wsus` (refused where the WSUS role is missing).
#[cfg(windows)]
pub fn backends(config: WindowsConfig) -> OpResult<Backends> {
    use std::sync::Arc;
    let wsus = if config.wsus {
        Some(Arc::new(wsus::WsusAdmin::local()?) as Arc<dyn crate::WsusServer>)
    } else {
        None
    };
    Ok(Backends {
        fs: Arc::new(ntfs::local(config.principals)),
        services: Arc::new(scm::Scm::new(scm::Win32Scm, scm::SystemClock)),
        wsus,
    })
}
