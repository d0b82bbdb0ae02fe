//! `config`: the plugin's settings, typed as the policy writes them.

use super::bindings::medic::plugin::config as wit;
use crate::host::RunState;
use crate::settings::SettingValue;

fn value(setting: SettingValue) -> wit::Value {
    match setting {
        SettingValue::Text(text) => wit::Value::Text(text),
        SettingValue::Integer(n) => wit::Value::Integer(n),
        SettingValue::Boolean(b) => wit::Value::Boolean(b),
        SettingValue::TextList(items) => wit::Value::TextList(items),
    }
}

impl wit::Host for RunState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<wit::Value>> {
        Ok(self.settings.get(&key).cloned().map(value))
    }

    fn all(&mut self) -> wasmtime::Result<Vec<(String, wit::Value)>> {
        Ok(self
            .settings
            .iter()
            .map(|(k, v)| (k.clone(), value(v.clone())))
            .collect())
    }
}
