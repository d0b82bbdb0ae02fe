//! [`ScmApi`] on Windows: `windows-service` to open, query, start and stop,
//! and raw `windows-sys` for what that crate cannot do without rewriting
//! the whole configuration (the start type alone, the delayed-automatic
//! flag read back).

use super::{RawConfig, RawStatus, ScmApi, ScmError};
use std::ffi::OsStr;
use windows_service::service::{Service, ServiceAccess, ServiceExitCode};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use windows_sys::Win32::Foundation::ERROR_INVALID_LEVEL;
use windows_sys::Win32::System::Services::{
    ChangeServiceConfigW, QueryServiceConfig2W, SERVICE_CONFIG_DELAYED_AUTO_START_INFO,
    SERVICE_DELAYED_AUTO_START_INFO, SERVICE_NO_CHANGE,
};

/// The local Service Control Manager. A manager handle is opened per call
/// (cheap), so nothing stale is held between runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Win32Scm;

/// The Windows error code behind a `windows-service` error.
fn code_of(call: &'static str, error: &windows_service::Error) -> ScmError {
    let code = match error {
        windows_service::Error::Winapi(io) => io.raw_os_error().map_or(u32::MAX, |c| c as u32),
        _ => super::raw::ERROR_INVALID_PARAMETER,
    };
    ScmError { call, code }
}

fn last_error(call: &'static str) -> ScmError {
    let code = std::io::Error::last_os_error()
        .raw_os_error()
        .map_or(u32::MAX, |c| c as u32);
    ScmError { call, code }
}

impl Win32Scm {
    fn open(&self, name: &str, access: ServiceAccess) -> Result<Service, ScmError> {
        let manager = ServiceManager::local_computer(None::<&OsStr>, ServiceManagerAccess::CONNECT)
            .map_err(|e| code_of("OpenSCManagerW", &e))?;
        manager
            .open_service(name, access)
            .map_err(|e| code_of("OpenServiceW", &e))
    }

    /// The start type alone: `SERVICE_NO_CHANGE` and null for the rest.
    fn change_start_type(service: &Service, start_type: u32) -> Result<(), ScmError> {
        // SAFETY: the handle is open with SERVICE_CHANGE_CONFIG for the
        // life of `service`; SERVICE_NO_CHANGE and null pointers leave every
        // other setting as it is, as ChangeServiceConfigW documents.
        let ok = unsafe {
            ChangeServiceConfigW(
                service.raw_handle(),
                SERVICE_NO_CHANGE,
                start_type,
                SERVICE_NO_CHANGE,
                std::ptr::null(),
                std::ptr::null(),
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if ok == 0 {
            return Err(last_error("ChangeServiceConfigW"));
        }
        Ok(())
    }

    fn delayed_auto_start(service: &Service) -> Result<bool, ScmError> {
        let mut info = SERVICE_DELAYED_AUTO_START_INFO {
            fDelayedAutostart: 0,
        };
        let mut needed = 0u32;
        // SAFETY: the handle is open with SERVICE_QUERY_CONFIG for the
        // life of `service`; the buffer is a SERVICE_DELAYED_AUTO_START_INFO
        // of the size passed, which is what this info level writes.
        let ok = unsafe {
            QueryServiceConfig2W(
                service.raw_handle(),
                SERVICE_CONFIG_DELAYED_AUTO_START_INFO,
                (&mut info as *mut SERVICE_DELAYED_AUTO_START_INFO).cast(),
                size_of::<SERVICE_DELAYED_AUTO_START_INFO>() as u32,
                &mut needed,
            )
        };
        if ok == 0 {
            let error = last_error("QueryServiceConfig2W");
            // A service manager without the delayed-start level (Wine) has
            // no delayed start.
            if error.code == ERROR_INVALID_LEVEL {
                return Ok(false);
            }
            return Err(error);
        }
        Ok(info.fDelayedAutostart != 0)
    }
}

impl ScmApi for Win32Scm {
    fn status(&self, name: &str) -> Result<RawStatus, ScmError> {
        let service = self.open(name, ServiceAccess::QUERY_STATUS)?;
        let status = service
            .query_status()
            .map_err(|e| code_of("QueryServiceStatusEx", &e))?;
        let (win32_exit_code, service_exit_code) = match status.exit_code {
            ServiceExitCode::Win32(code) => (code, 0),
            ServiceExitCode::ServiceSpecific(code) => {
                (super::raw::ERROR_SERVICE_SPECIFIC_ERROR, code)
            }
        };
        Ok(RawStatus {
            state: status.current_state as u32,
            win32_exit_code,
            service_exit_code,
        })
    }

    fn config(&self, name: &str) -> Result<RawConfig, ScmError> {
        let service = self.open(name, ServiceAccess::QUERY_CONFIG)?;
        let config = service
            .query_config()
            .map_err(|e| code_of("QueryServiceConfigW", &e))?;
        Ok(RawConfig {
            display_name: config.display_name.to_string_lossy().into_owned(),
            start_type: config.start_type.to_raw(),
            delayed_auto_start: Self::delayed_auto_start(&service)?,
        })
    }

    fn start(&self, name: &str) -> Result<(), ScmError> {
        let service = self.open(name, ServiceAccess::START)?;
        service
            .start::<&OsStr>(&[])
            .map_err(|e| code_of("StartServiceW", &e))
    }

    fn stop(&self, name: &str) -> Result<(), ScmError> {
        let service = self.open(name, ServiceAccess::STOP)?;
        service
            .stop()
            .map(drop)
            .map_err(|e| code_of("ControlService", &e))
    }

    fn set_start_type(
        &self,
        name: &str,
        start_type: u32,
        delayed: Option<bool>,
    ) -> Result<(), ScmError> {
        let service = self.open(
            name,
            ServiceAccess::CHANGE_CONFIG | ServiceAccess::QUERY_CONFIG,
        )?;
        let previous = service
            .query_config()
            .map_err(|e| code_of("QueryServiceConfigW", &e))?
            .start_type
            .to_raw();
        Self::change_start_type(&service, start_type)?;
        if let Some(delayed) = delayed
            && let Err(e) = service.set_delayed_auto_start(delayed)
        {
            // Both or neither: put the start type back.
            let _ = Self::change_start_type(&service, previous);
            return Err(code_of("ChangeServiceConfig2W", &e));
        }
        Ok(())
    }
}
