//! `services`: granted system services.

use super::bindings::medic::plugin::{services as wit, types::Error};
use crate::contract::convert::{Convert, convert_enum, convert_record, result};
use crate::host::RunState;
use medic_backends::services::{ServiceChange, ServiceState, ServiceStatus, StartupType};

convert_enum!(
    ServiceState,
    wit::ServiceState {
        Stopped,
        StartPending,
        StopPending,
        Running,
        Paused
    }
);
convert_enum!(
    StartupType,
    wit::StartupType {
        Automatic,
        Manual,
        Disabled
    }
);
convert_record!(
    ServiceStatus,
    wit::ServiceStatus {
        name,
        display_name,
        state,
        startup
    }
);
convert_record!(
    ServiceChange,
    wit::ServiceChange {
        before,
        after,
        applied
    }
);

impl wit::Host for RunState {
    fn query(&mut self, name: String) -> wasmtime::Result<Result<wit::ServiceStatus, Error>> {
        Ok(result(self.services_query(name)?))
    }

    fn start(
        &mut self,
        name: String,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<wit::ServiceChange, Error>> {
        Ok(result(self.services_start(name, timeout_ms)?))
    }

    fn stop(
        &mut self,
        name: String,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<wit::ServiceChange, Error>> {
        Ok(result(self.services_stop(name, timeout_ms)?))
    }

    fn restart(
        &mut self,
        name: String,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<wit::ServiceChange, Error>> {
        Ok(result(self.services_restart(name, timeout_ms)?))
    }

    fn set_startup(
        &mut self,
        name: String,
        startup: wit::StartupType,
    ) -> wasmtime::Result<Result<wit::ServiceChange, Error>> {
        Ok(result(self.services_set_startup(name, startup.convert())?))
    }
}
