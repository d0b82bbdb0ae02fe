//! Compiled code shared by every plugin loaded from the same component.
//!
//! A component that is loaded already (by another policy entry, or by the
//! version a hot reload is about to replace or has just brought back) is
//! not read from the compile cache again: its compiled code is taken from
//! the plugin holding it, so the agent maps one copy however many entries
//! serve it. An entry lives as long as some [`LoadedPlugin`] holds its
//! code; the map keeps only weak references, and drops dead ones as it
//! goes.
//!
//! [`LoadedPlugin`]: crate::LoadedPlugin

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use wasmtime::component::Component;

/// Compiled components in use, by content hash.
#[derive(Default)]
pub struct SharedCode {
    live: Mutex<HashMap<String, Weak<Component>>>,
}

impl SharedCode {
    /// The compiled component for `hash`, if a loaded plugin holds it.
    pub fn get(&self, hash: &str) -> Option<Arc<Component>> {
        self.live.lock().ok()?.get(hash).and_then(Weak::upgrade)
    }

    /// Share `component`, compiled from the component whose content hash
    /// is `hash`; the returned handle keeps it shared while it lives.
    pub fn share(&self, hash: &str, component: Component) -> Arc<Component> {
        let Ok(mut live) = self.live.lock() else {
            return Arc::new(component);
        };
        if let Some(held) = live.get(hash).and_then(Weak::upgrade) {
            return held;
        }
        live.retain(|_, code| code.strong_count() > 0);
        let held = Arc::new(component);
        live.insert(hash.to_string(), Arc::downgrade(&held));
        held
    }

    /// How many compiled components are shared now.
    pub fn len(&self) -> usize {
        self.live.lock().map_or(0, |live| {
            live.values().filter(|c| c.strong_count() > 0).count()
        })
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Debug for SharedCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCode")
            .field("components", &self.len())
            .finish()
    }
}
