//! What a policy's parse asks of the file system, behind a small trait:
//! the real one for the agent, a fake one for tests that need no files.

use std::path::{Path, PathBuf};

/// The file-system facts a policy's checks need.
pub trait Probe {
    fn is_dir(&self, path: &Path) -> bool;
    fn is_file(&self, path: &Path) -> bool;
    /// The path with symlinks resolved; an error if it does not exist.
    fn canonicalize(&self, path: &Path) -> std::io::Result<PathBuf>;
}

/// This machine's file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemProbe;

impl Probe for SystemProbe {
    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }

    fn is_file(&self, path: &Path) -> bool {
        path.is_file()
    }

    fn canonicalize(&self, path: &Path) -> std::io::Result<PathBuf> {
        std::fs::canonicalize(path)
    }
}
