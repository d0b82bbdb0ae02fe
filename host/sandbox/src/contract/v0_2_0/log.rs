//! `log`: messages into the agent's log and the run's record, and the
//! plugin's word that it panicked.

use super::bindings::medic::plugin::log as wit;
use crate::contract::convert::{Convert, convert_enum};
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
        RunState::log(self, level.convert(), message);
        Ok(())
    }

    fn panicked(&mut self, message: String) -> wasmtime::Result<()> {
        RunState::panicked(self, message);
        Ok(())
    }
}
