//! `log`: messages into the agent's log and the run's record. 0.1.0 has no
//! way to say "I panicked": its SDK logged the panic at error level with
//! the prefix `plugin panicked: `, which is read as the panic here, and only
//! here.

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

/// What 0.1.0's SDK put before a panic's message.
const PANIC_PREFIX: &str = "plugin panicked: ";

impl wit::Host for RunState {
    fn log(&mut self, level: wit::Level, message: String) -> wasmtime::Result<()> {
        match message.strip_prefix(PANIC_PREFIX) {
            Some(panic) if level == wit::Level::Error => self.panicked(panic.to_string()),
            _ => RunState::log(self, level.convert(), message),
        }
        Ok(())
    }
}
