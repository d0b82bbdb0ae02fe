//! Per-plugin key/value state in the embedded store. Keys are namespaced by
//! plugin name, so a plugin sees only its own, across restarts and new
//! versions of itself.

use super::{Store, StoreError};
use medic_sandbox::StateError;
use redb::{ReadableDatabase, TableDefinition};

const STATE: TableDefinition<&str, &str> = TableDefinition::new("plugin_state");

/// Plugins' state, in the shared store.
#[derive(Debug, Clone)]
pub struct StateStore {
    store: Store,
}

fn full_key(plugin: &str, key: &str) -> String {
    format!("{plugin}\u{0}{key}")
}

impl StateStore {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    pub fn get(&self, plugin: &str, key: &str) -> Result<Option<String>, StoreError> {
        let txn = self.store.database().begin_read()?;
        let table = match txn.open_table(STATE) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(table
            .get(full_key(plugin, key).as_str())?
            .map(|v| v.value().to_string()))
    }

    pub fn set(&self, plugin: &str, key: &str, value: &str) -> Result<(), StoreError> {
        let txn = self.store.database().begin_write()?;
        {
            let mut table = txn.open_table(STATE)?;
            table.insert(full_key(plugin, key).as_str(), value)?;
        }
        txn.commit()?;
        Ok(())
    }

    pub fn remove(&self, plugin: &str, key: &str) -> Result<(), StoreError> {
        let txn = self.store.database().begin_write()?;
        {
            let mut table = txn.open_table(STATE)?;
            table.remove(full_key(plugin, key).as_str())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// The plugin's keys, sorted.
    pub fn keys(&self, plugin: &str) -> Result<Vec<String>, StoreError> {
        let txn = self.store.database().begin_read()?;
        let table = match txn.open_table(STATE) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let start = full_key(plugin, "");
        let end = format!("{plugin}\u{1}");
        let mut keys = Vec::new();
        for entry in table.range(start.as_str()..end.as_str())? {
            let (key, _) = entry?;
            if let Some((_, k)) = key.value().split_once('\u{0}') {
                keys.push(k.to_string());
            }
        }
        Ok(keys)
    }
}

impl medic_sandbox::PluginState for StateStore {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<String>, StateError> {
        StateStore::get(self, plugin, key).map_err(state_error)
    }

    fn set(&self, plugin: &str, key: &str, value: &str) -> Result<(), StateError> {
        StateStore::set(self, plugin, key, value).map_err(state_error)
    }

    fn remove(&self, plugin: &str, key: &str) -> Result<(), StateError> {
        StateStore::remove(self, plugin, key).map_err(state_error)
    }

    fn keys(&self, plugin: &str) -> Result<Vec<String>, StateError> {
        StateStore::keys(self, plugin).map_err(state_error)
    }
}

fn state_error(error: StoreError) -> StateError {
    StateError(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_private_per_plugin_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let state = StateStore::new(Store::open(dir.path()).unwrap());
            state.set("a", "count", "1").unwrap();
            state.set("a", "last", "x").unwrap();
            state.set("ab", "count", "9").unwrap();
            assert_eq!(state.keys("a").unwrap(), vec!["count", "last"]);
        }
        let state = StateStore::new(Store::open(dir.path()).unwrap());
        assert_eq!(state.get("a", "count").unwrap().as_deref(), Some("1"));
        assert_eq!(state.get("ab", "count").unwrap().as_deref(), Some("9"));
        state.remove("a", "count").unwrap();
        state.remove("a", "never-set").unwrap();
        assert_eq!(state.get("a", "count").unwrap(), None);
        assert_eq!(state.keys("a").unwrap(), vec!["last"]);
        assert_eq!(state.keys("nobody").unwrap(), Vec::<String>::new());
    }
}
