//! `log`: messages into the agent's log and the run's record.

use super::bindings::medic::plugin::log as wit;
use crate::contract::convert::convert_enum;
use crate::host::RunState;
use crate::host::log::Level;

convert_enum!(
    Level,
    wit::Level {
        Trace,
        Debug,
        Info,
        Warn,
        Error
    }
);

impl wit::Host for RunState {
    fn log(&mut self, level: wit::Level, message: String) -> wasmtime::Result<()> {
        RunState::log(
            self,
            crate::contract::convert::Convert::convert(level),
            message,
        );
        Ok(())
    }
}
