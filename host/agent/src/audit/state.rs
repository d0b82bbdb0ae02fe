//! Per-plugin key/value state in the embedded store. Keys are namespaced by
//! plugin name, so a plugin sees only its own, across restarts and new
//! versions of itself. Each plugin's usage (bytes of keys and values) is
//! kept beside its keys and checked against its quota in the same write,
//! so a plugin cannot grow the store past what its policy allows.

use super::{Store, StoreError};
use medic_sandbox::StateError;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

const STATE: TableDefinition<&str, &str> = TableDefinition::new("plugin_state");
/// Bytes of keys and values per plugin.
const USAGE: TableDefinition<&str, u64> = TableDefinition::new("plugin_state_usage");

/// Why a write was not made.
#[derive(Debug, thiserror::Error)]
pub enum StateWriteError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the plugin's state would take {needed} bytes, over its quota of {quota} bytes")]
    QuotaExceeded { needed: u64, quota: u64 },
}

/// What one key costs besides its bytes: the store keeps the plugin's
/// name with it and a page's bookkeeping, so that many empty keys are
/// not free.
const ENTRY_OVERHEAD: u64 = 64;

fn entry_size(key: &str, value: &str) -> u64 {
    (key.len() + value.len()) as u64 + ENTRY_OVERHEAD
}

/// A plugin's usage as recorded, or counted from its keys when a store
/// written before usage was kept has none.
fn usage_of(
    usage: Option<&impl ReadableTable<&'static str, u64>>,
    state: &impl ReadableTable<&'static str, &'static str>,
    plugin: &str,
) -> Result<u64, StoreError> {
    if let Some(usage) = usage
        && let Some(bytes) = usage.get(plugin)?
    {
        return Ok(bytes.value());
    }
    let start = full_key(plugin, "");
    let end = format!("{plugin}\u{1}");
    let mut total = 0;
    for entry in state.range(start.as_str()..end.as_str())? {
        let (key, value) = entry?;
        let key = key.value();
        let own = key.split_once('\u{0}').map_or(key, |(_, k)| k);
        total += entry_size(own, value.value());
    }
    Ok(total)
}

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
        self.store.read(|db| {
            let txn = db.begin_read()?;
            let table = match txn.open_table(STATE) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            Ok(table
                .get(full_key(plugin, key).as_str())?
                .map(|v| v.value().to_string()))
        })
    }

    /// Set `key` to `value`, unless the plugin's state would then take
    /// more than `quota` bytes (a write that shrinks it is always allowed).
    pub fn set(
        &self,
        plugin: &str,
        key: &str,
        value: &str,
        quota: u64,
    ) -> Result<(), StateWriteError> {
        let refused = self.store.write(|txn| {
            let mut table = txn.open_table(STATE)?;
            let mut usage = txn.open_table(USAGE)?;
            let used = usage_of(Some(&usage), &table, plugin)?;
            let full = full_key(plugin, key);
            let old = table
                .get(full.as_str())?
                .map_or(0, |v| entry_size(key, v.value()));
            let needed = used - old.min(used) + entry_size(key, value);
            if needed > quota && needed > used {
                // Nothing written: the commit is empty.
                return Ok(Some(StateWriteError::QuotaExceeded { needed, quota }));
            }
            table.insert(full.as_str(), value)?;
            usage.insert(plugin, needed)?;
            Ok(None)
        })?;
        refused.map_or(Ok(()), Err)
    }

    pub fn remove(&self, plugin: &str, key: &str) -> Result<(), StoreError> {
        self.store.write(|txn| {
            let mut table = txn.open_table(STATE)?;
            let mut usage = txn.open_table(USAGE)?;
            let used = usage_of(Some(&usage), &table, plugin)?;
            let removed = table
                .remove(full_key(plugin, key).as_str())?
                .map_or(0, |v| entry_size(key, v.value()));
            usage.insert(plugin, used - removed.min(used))?;
            Ok(())
        })
    }

    /// Bytes of keys and values `plugin` keeps.
    pub fn usage(&self, plugin: &str) -> Result<u64, StoreError> {
        self.store.read(|db| {
            let txn = db.begin_read()?;
            let table = match txn.open_table(STATE) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
                Err(e) => return Err(e.into()),
            };
            let usage = txn.open_table(USAGE).ok();
            usage_of(usage.as_ref(), &table, plugin)
        })
    }

    /// The plugin's keys, sorted.
    pub fn keys(&self, plugin: &str) -> Result<Vec<String>, StoreError> {
        self.store.read(|db| {
            let txn = db.begin_read()?;
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
        })
    }
}

impl medic_sandbox::PluginState for StateStore {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<String>, StateError> {
        StateStore::get(self, plugin, key).map_err(state_error)
    }

    fn set(&self, plugin: &str, key: &str, value: &str, quota: u64) -> Result<(), StateError> {
        StateStore::set(self, plugin, key, value, quota).map_err(|e| match e {
            StateWriteError::QuotaExceeded { needed, quota } => {
                StateError::QuotaExceeded { needed, quota }
            }
            StateWriteError::Store(e) => state_error(e),
        })
    }

    fn remove(&self, plugin: &str, key: &str) -> Result<(), StateError> {
        StateStore::remove(self, plugin, key).map_err(state_error)
    }

    fn keys(&self, plugin: &str) -> Result<Vec<String>, StateError> {
        StateStore::keys(self, plugin).map_err(state_error)
    }
}

fn state_error(error: StoreError) -> StateError {
    StateError::Store(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_private_per_plugin_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let state = StateStore::new(Store::open(dir.path()).unwrap());
            state.set("a", "count", "1", 1 << 20).unwrap();
            state.set("a", "last", "x", 1 << 20).unwrap();
            state.set("ab", "count", "9", 1 << 20).unwrap();
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

    #[test]
    fn the_quota_bounds_each_plugins_state_and_shrinking_is_always_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateStore::new(Store::open(dir.path()).unwrap());
        // Each entry costs its key, its value and the overhead: 2 + 9 + 64.
        let quota = 9 * 75 + 10;
        for i in 0..9 {
            state
                .set("p", &format!("k{i}"), "123456789", quota)
                .unwrap();
        }
        assert_eq!(state.usage("p").unwrap(), 675);
        let over = state.set("p", "k9", "123456789", quota).unwrap_err();
        assert!(
            matches!(
                over,
                StateWriteError::QuotaExceeded {
                    needed: 750,
                    quota: 685
                }
            ),
            "{over}"
        );
        // Many empty keys are not free.
        assert!(state.set("p", "k9", "", quota).is_err());
        // Rewriting a key with a value of the same size or smaller is fine.
        state.set("p", "k0", "x", quota).unwrap();
        assert_eq!(state.usage("p").unwrap(), 667);
        state.remove("p", "k1").unwrap();
        assert_eq!(state.usage("p").unwrap(), 592);
        state.set("p", "k9", "123456789", quota).unwrap();
        // Another plugin has a quota of its own.
        state.set("q", "k", &"v".repeat(600), quota).unwrap();
        // Usage survives reopening, and a lowered quota still lets it shrink.
        drop(state);
        let state = StateStore::new(Store::open(dir.path()).unwrap());
        assert_eq!(state.usage("p").unwrap(), 667);
        state.set("p", "k2", "", 10).unwrap();
        assert!(state.set("p", "new", "x", 10).is_err());
    }
}
