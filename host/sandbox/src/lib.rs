//! medic's sandbox: where plugins run. One wasmtime engine with a compile
//! cache on disk; loading a component (its contract version detected, its
//! bindings chosen, `describe()` called, its grants checked); running it
//! with limits on a fresh store; and the host side of every supported
//! contract version.
//!
//! The modules: [`engine`] (the engine, its pooling allocator and epoch
//! ticker), [`cache`] (compiled components on disk), [`load`] (loading and
//! checking a plugin), [`run`] (one run and how it ended), [`limits`]
//! (timeout, memory, fuel, host calls), [`host`] (what host calls do, on
//! medic's own types: grants, modes, recording), [`contract`] (one module
//! per contract version converting to [`host`]), [`event`] and [`info`]
//! (events, outcomes and plugin descriptions as medic's own values),
//! [`settings`] (a plugin's settings, typed), [`signature`] (who signed a
//! component: detached minisign signatures checked against trusted keys), [`text`] (everything a
//! plugin says, cleaned of terminal controls and cut to a budget).
//!
//! It knows nothing of policies, triggers, stores or the lab: the caller
//! hands it backends, grants, settings and a state store per run.

pub mod cache;
pub mod contract;
pub mod engine;
pub mod event;
pub mod host;
pub mod info;
pub mod limits;
pub mod load;
pub mod run;
pub mod settings;
pub mod shared;
pub mod signature;
pub mod text;
pub mod tier;

pub use cache::{CacheUse, CompileCache, HashedComponent, content_hash};
pub use engine::{EPOCH_TICK, Runtime, RuntimeConfig, RuntimeError};
pub use event::{ActionRecord, EventKind, EventRecord, OutcomeRecord, Status, new_id, now_ms};
pub use host::grants::{Capability, GrantError, Grants, Operation};
pub use host::{HostCall, Mode, OwnEffects, PluginLog, PluginState, StateError};
pub use info::{PluginInfo, TriggerHint};
pub use limits::{Limits, MemoryUsage};
pub use load::{
    LoadError, LoadedPlugin, MAX_COMPONENT_BYTES, missing_grants, read_component, valid_plugin_name,
};
pub use run::{RunFailure, RunReport, RunRequest, RunResult};
pub use settings::{SettingValue, Settings};
pub use tier::Tier;
