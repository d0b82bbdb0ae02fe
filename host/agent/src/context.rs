//! What the agent's parts share: the plugins it serves (policy and loaded
//! component together) and the context of every run (policy, sandbox,
//! store, journal, state, backends).

use crate::BackendCatalog;
use crate::audit::Store;
use crate::audit::journal::Journal;
use crate::audit::state::StateStore;
use crate::policy::{PluginPolicy, Policy};
use medic_backends::Backends;
use medic_sandbox::signature::Signer;
use medic_sandbox::{Grants, LoadedPlugin, Runtime, Settings};
use std::sync::Arc;

/// A plugin as the agent runs it: its policy and its loaded component.
#[derive(Debug)]
pub struct ActivePlugin {
    pub policy: PluginPolicy,
    pub loaded: LoadedPlugin,
    pub grants: Arc<Grants>,
    pub settings: Arc<Settings>,
    /// Who signed the component, when its signature was checked.
    pub signer: Option<Signer>,
}

/// What every run of the agent shares.
#[derive(Debug)]
pub struct AgentContext {
    pub policy: Policy,
    pub runtime: Runtime,
    pub store: Store,
    pub journal: Journal,
    pub state: Arc<StateStore>,
    pub backends: Backends,
    /// How `[backend]` tables are opened; reloads check them with it.
    pub catalog: Arc<dyn BackendCatalog>,
}
