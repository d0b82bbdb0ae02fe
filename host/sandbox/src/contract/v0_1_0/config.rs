//! `config`: the plugin's settings, as text.

use super::bindings::medic::plugin::config as wit;
use crate::host::RunState;

impl wit::Host for RunState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.config_get(&key))
    }

    fn all(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.config_all())
    }
}
