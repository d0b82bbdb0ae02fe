//! `state`: the plugin's private key/value store. Writes are recorded but
//! are not "mutating" in the dry-run sense: they are the plugin's memory.

use super::RunState;
use crate::contract::v0_1_0::medic::plugin::state::Host;
use crate::contract::{ErrorKind, PluginError};
use serde_json::json;

const MAX_KEY: usize = 256;
const MAX_VALUE: usize = 64 * 1024;

fn no_store() -> PluginError {
    PluginError::new(ErrorKind::Unsupported, "this run has no state store")
}

fn store_error(e: impl std::fmt::Display) -> PluginError {
    PluginError::new(ErrorKind::Failed, format!("state store: {e}"))
}

impl Host for RunState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        let Some(store) = &self.state else {
            return Ok(None);
        };
        store
            .get(&self.plugin, &key)
            .map_err(|e| wasmtime::format_err!("state store failed: {e}"))
    }

    fn set(&mut self, key: String, value: String) -> wasmtime::Result<Result<(), PluginError>> {
        let args = json!({ "key": key, "bytes": value.len() });
        self.host_call(
            "state.set",
            args,
            false,
            |run, _| {
                if key.is_empty() || key.len() > MAX_KEY {
                    return Err(PluginError::new(
                        ErrorKind::InvalidArgument,
                        format!("state keys are 1 to {MAX_KEY} bytes"),
                    ));
                }
                if value.len() > MAX_VALUE {
                    return Err(PluginError::new(
                        ErrorKind::InvalidArgument,
                        format!(
                            "state values are at most {MAX_VALUE} bytes, got {}",
                            value.len()
                        ),
                    ));
                }
                let store = run.state.as_ref().ok_or_else(no_store)?;
                store.set(&run.plugin, &key, &value).map_err(store_error)
            },
            |_| "stored".into(),
        )
    }

    fn remove(&mut self, key: String) -> wasmtime::Result<Result<(), PluginError>> {
        self.host_call(
            "state.remove",
            json!({ "key": key }),
            false,
            |run, _| {
                let store = run.state.as_ref().ok_or_else(no_store)?;
                store.remove(&run.plugin, &key).map_err(store_error)
            },
            |_| "removed".into(),
        )
    }

    fn keys(&mut self) -> wasmtime::Result<Vec<String>> {
        let Some(store) = &self.state else {
            return Ok(Vec::new());
        };
        store
            .keys(&self.plugin)
            .map_err(|e| wasmtime::format_err!("state store failed: {e}"))
    }
}
