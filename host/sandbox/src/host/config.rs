//! `config`: the plugin's own settings from the policy, read-only.

use super::RunState;

impl RunState {
    pub(crate) fn config_get(&self, key: &str) -> Option<String> {
        self.settings.get(key).cloned()
    }

    pub(crate) fn config_all(&self) -> Vec<(String, String)> {
        self.settings
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
