//! `config`: the plugin's own settings from the policy, read-only.

use super::RunState;
use crate::contract::v0_1_0::medic::plugin::config::Host;

impl Host for RunState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.settings.get(&key).cloned())
    }

    fn all(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self
            .settings
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}
