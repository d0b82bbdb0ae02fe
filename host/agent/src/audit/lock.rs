//! The agent lock: `agent.lock` in the state directory, held exclusively
//! (an advisory lock of the whole file, `std::fs::File::try_lock`) by the
//! one agent serving that directory, for as long as it runs. The system
//! releases it when the process ends, however it ends, so a live agent is
//! told from a dead one by trying the lock, not by a pid that may have
//! been reused. The file keeps the holder's pid, for messages.

use super::StoreError;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The agent lock's file in a state directory.
pub const AGENT_LOCK_FILE: &str = "agent.lock";

/// The lock of a running agent; released when dropped.
#[derive(Debug)]
pub struct AgentLock {
    _file: File,
    path: PathBuf,
}

impl AgentLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(std::io::SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// Take the agent lock of `state_dir` (creating the directory if needed).
pub(super) fn lock(state_dir: &Path) -> Result<AgentLock, StoreError> {
    std::fs::create_dir_all(state_dir).map_err(|cause| StoreError::CreateDir {
        path: state_dir.to_path_buf(),
        cause,
    })?;
    let path = state_dir.join(AGENT_LOCK_FILE);
    let failed = |cause| StoreError::Lock {
        path: path.clone(),
        cause,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(failed)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(StoreError::AgentRunning {
                state_dir: state_dir.to_path_buf(),
                pid: read_pid(&mut file),
            });
        }
        Err(TryLockError::Error(cause)) => return Err(failed(cause)),
    }
    file.set_len(0).map_err(failed)?;
    file.seek(std::io::SeekFrom::Start(0)).map_err(failed)?;
    writeln!(file, "{}", std::process::id()).map_err(failed)?;
    Ok(AgentLock { _file: file, path })
}

/// Whether an agent holds the lock of `state_dir` now. `None` when no
/// agent ever took it there (no lock file).
pub fn agent_lock_held(state_dir: &Path) -> Option<bool> {
    let file = File::open(state_dir.join(AGENT_LOCK_FILE)).ok()?;
    Some(match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(TryLockError::WouldBlock) => true,
        Err(TryLockError::Error(_)) => false,
    })
}

/// Whether an agent runs with `state_dir` now, without taking its lock.
pub fn agent_running(state_dir: &Path) -> bool {
    agent_lock_held(state_dir).unwrap_or(false)
}

/// The pid of the agent that last took the lock of `state_dir`.
pub fn agent_pid(state_dir: &Path) -> Option<u32> {
    let mut file = File::open(state_dir.join(AGENT_LOCK_FILE)).ok()?;
    read_pid(&mut file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_agent_at_a_time_and_a_dead_one_is_told_from_a_live_one() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!agent_running(dir.path()));
        assert_eq!(agent_lock_held(dir.path()), None);
        let held = lock(dir.path()).unwrap();
        assert!(agent_running(dir.path()));
        assert_eq!(agent_pid(dir.path()), Some(std::process::id()));
        let second = lock(dir.path()).unwrap_err();
        assert!(
            matches!(second, StoreError::AgentRunning { pid: Some(pid), .. } if pid == std::process::id()),
            "{second}"
        );
        assert!(second.to_string().contains("another agent"), "{second}");
        drop(held);
        assert!(!agent_running(dir.path()));
        assert_eq!(agent_lock_held(dir.path()), Some(false));
        let _again = lock(dir.path()).unwrap();
    }
}
