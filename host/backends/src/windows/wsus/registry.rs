//! Where WSUS is installed, read from its Setup registry key
//! (`HKLM\SOFTWARE\Microsoft\Update Services\Server\Setup`): `ContentDir`
//! and `TargetDir`, as *Verifying WSUS Server Settings* documents them.

use super::SetupPaths;
use crate::{BackendError, ErrorKind, OpResult};
use std::path::PathBuf;
use windows_sys::Win32::Foundation::{ERROR_FILE_NOT_FOUND, ERROR_SUCCESS};
use windows_sys::Win32::System::Registry::{HKEY_LOCAL_MACHINE, RRF_RT_REG_SZ, RegGetValueW};

const SETUP_KEY: &str = r"SOFTWARE\Microsoft\Update Services\Server\Setup";

fn wide(text: &str) -> Vec<u16> {
    text.encode_utf16().chain(std::iter::once(0)).collect()
}

/// A string value under the Setup key.
fn setup_value(name: &str) -> OpResult<String> {
    let (key, value) = (wide(SETUP_KEY), wide(name));
    let mut buffer = vec![0u16; 1024];
    let mut bytes = (buffer.len() * 2) as u32;
    // SAFETY: both names are NUL-terminated UTF-16; the buffer is
    // writable for `bytes` bytes, and RegGetValueW writes at most that
    // many and stores the length it wrote in `bytes`.
    let status = unsafe {
        RegGetValueW(
            HKEY_LOCAL_MACHINE,
            key.as_ptr(),
            value.as_ptr(),
            RRF_RT_REG_SZ,
            std::ptr::null_mut(),
            buffer.as_mut_ptr().cast(),
            &mut bytes,
        )
    };
    match status {
        ERROR_SUCCESS => {
            let chars = (bytes as usize / 2).min(buffer.len());
            let text = String::from_utf16_lossy(&buffer[..chars]);
            Ok(text.trim_end_matches('\0').to_string())
        }
        ERROR_FILE_NOT_FOUND => Err(BackendError::new(
            ErrorKind::Unsupported,
            format!(
                "HKLM\\{SETUP_KEY}\\{name} does not exist: the WSUS role is not installed on this machine"
            ),
        )),
        code => Err(BackendError::new(
            ErrorKind::Failed,
            format!("cannot read HKLM\\{SETUP_KEY}\\{name}: Windows error {code}"),
        )),
    }
}

/// `ContentDir` and `TargetDir`.
pub fn setup_paths() -> OpResult<SetupPaths> {
    Ok(SetupPaths {
        content_dir: PathBuf::from(setup_value("ContentDir")?),
        target_dir: PathBuf::from(setup_value("TargetDir")?),
    })
}
