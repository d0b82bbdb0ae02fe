//! `state`: the plugin's private key/value store.

use super::bindings::medic::plugin::{state as wit, types::Error};
use crate::contract::convert::result;
use crate::host::RunState;

impl wit::Host for RunState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        self.state_get(key)
    }

    fn set(&mut self, key: String, value: String) -> wasmtime::Result<Result<(), Error>> {
        Ok(result(self.state_set(key, value)?))
    }

    fn remove(&mut self, key: String) -> wasmtime::Result<Result<(), Error>> {
        Ok(result(self.state_remove(key)?))
    }

    fn keys(&mut self) -> wasmtime::Result<Vec<String>> {
        self.state_keys()
    }
}
