//! `state`: the plugin's private key/value store. Writes are recorded but
//! are not "mutating" in the dry-run sense: they are the plugin's memory.
//! The store itself belongs to whoever runs the plugin ([`PluginState`]).

use super::RunState;
use medic_backends::{BackendError, ErrorKind};
use serde_json::json;

const MAX_KEY: usize = 256;
const MAX_VALUE: usize = 64 * 1024;

/// The store behind the `state` interface could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{0}")]
    Store(String),
    #[error(
        "the plugin's state would take {needed} bytes, over its quota of {quota} bytes; remove keys it no longer needs, or raise `limits.state_quota` in the policy"
    )]
    QuotaExceeded { needed: u64, quota: u64 },
}

/// Where plugins' state lives, keyed by plugin name.
pub trait PluginState: Send + Sync + std::fmt::Debug {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<String>, StateError>;
    /// Set `key`, unless the plugin's keys and values would then take more
    /// than `quota` bytes in all.
    fn set(&self, plugin: &str, key: &str, value: &str, quota: u64) -> Result<(), StateError>;
    fn remove(&self, plugin: &str, key: &str) -> Result<(), StateError>;
    fn keys(&self, plugin: &str) -> Result<Vec<String>, StateError>;
}

fn no_store() -> BackendError {
    BackendError::new(ErrorKind::Unsupported, "this run has no state store")
}

fn store_error(e: StateError) -> BackendError {
    match e {
        StateError::QuotaExceeded { .. } => BackendError::new(ErrorKind::Conflict, e.to_string()),
        StateError::Store(_) => BackendError::new(ErrorKind::Failed, format!("state store: {e}")),
    }
}

impl RunState {
    pub(crate) fn state_get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        let Some(store) = &self.state else {
            return Ok(None);
        };
        store
            .get(&self.plugin, &key)
            .map_err(|e| wasmtime::format_err!("state store failed: {e}"))
    }

    pub(crate) fn state_set(
        &mut self,
        key: String,
        value: String,
    ) -> wasmtime::Result<Result<(), BackendError>> {
        let args = json!({ "key": key, "bytes": value.len() });
        self.host_call(
            "state.set",
            args,
            false,
            |run, _| {
                if key.is_empty() || key.len() > MAX_KEY {
                    return Err(BackendError::new(
                        ErrorKind::InvalidArgument,
                        format!("state keys are 1 to {MAX_KEY} bytes"),
                    ));
                }
                if value.len() > MAX_VALUE {
                    return Err(BackendError::new(
                        ErrorKind::InvalidArgument,
                        format!(
                            "state values are at most {MAX_VALUE} bytes, got {}",
                            value.len()
                        ),
                    ));
                }
                let store = run.state.as_ref().ok_or_else(no_store)?;
                store
                    .set(&run.plugin, &key, &value, run.state_quota)
                    .map_err(store_error)
            },
            |_| "stored".into(),
        )
    }

    pub(crate) fn state_remove(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<(), BackendError>> {
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

    pub(crate) fn state_keys(&mut self) -> wasmtime::Result<Vec<String>> {
        let Some(store) = &self.state else {
            return Ok(Vec::new());
        };
        store
            .keys(&self.plugin)
            .map_err(|e| wasmtime::format_err!("state store failed: {e}"))
    }
}
