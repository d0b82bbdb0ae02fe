//! `config`: the plugin's settings, as text (lists as JSON arrays).

use super::bindings::medic::plugin::config as wit;
use crate::host::RunState;
use crate::settings::SettingValue;

impl wit::Host for RunState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.settings.get(&key).map(SettingValue::text))
    }

    fn all(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self
            .settings
            .iter()
            .map(|(k, v)| (k.clone(), v.text()))
            .collect())
    }
}
