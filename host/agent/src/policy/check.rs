//! What a policy's parse asks of the file system, behind a small trait:
//! the real one for the agent, a fake one for tests that need no files.

use std::path::{Path, PathBuf};

/// The file-system facts a policy's checks need.
pub trait Probe {
    fn is_dir(&self, path: &Path) -> bool;
    fn is_file(&self, path: &Path) -> bool;
    /// The path with symlinks resolved; an error if it does not exist.
    fn canonicalize(&self, path: &Path) -> std::io::Result<PathBuf>;
    /// A small text file's content (a key file); an error if it is not a
    /// regular file, is longer than `max_bytes`, or is not UTF-8.
    fn read_text(&self, path: &Path, max_bytes: u64) -> std::io::Result<String>;
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

    fn read_text(&self, path: &Path, max_bytes: u64) -> std::io::Result<String> {
        use std::io::{Error, ErrorKind, Read};
        // Asked before opening: opening a FIFO would wait for a writer.
        if !std::fs::metadata(path)?.is_file() {
            return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
        }
        let file = std::fs::File::open(path)?;
        let mut text = String::new();
        file.take(max_bytes + 1).read_to_string(&mut text)?;
        if text.len() as u64 > max_bytes {
            return Err(Error::new(
                ErrorKind::InvalidData,
                format!("longer than {max_bytes} bytes"),
            ));
        }
        Ok(text)
    }
}
