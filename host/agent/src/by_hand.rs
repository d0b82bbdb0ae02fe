//! One plugin of a policy, made ready to run by hand (`medic trigger
//! --policy`, `medic dev`): its component loaded and checked as the agent
//! would (signature, name, grants), with its table's grants, settings,
//! limits and mode, and the policy's backend. Only that plugin is loaded:
//! the others' components are not compiled, and a problem in another
//! plugin's table does not stop it.

use crate::audit::state::StateStore;
use crate::backend::BackendCatalog;
use crate::loading::{load_plugin, runtime_for};
use crate::policy::{PluginPolicy, Policy, PolicyErrors, ServingPolicy};
use medic_backends::Backends;
use medic_sandbox::{EventRecord, LoadedPlugin, Mode, RunRequest, Runtime, RuntimeError};
use std::path::Path;
use std::sync::Arc;

/// Why a policy's plugin cannot be run by hand.
#[derive(Debug, thiserror::Error)]
pub enum ByHandError {
    #[error("{0}")]
    Policy(#[from] PolicyErrors),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("the policy {file} names no plugin `{name}`; it names {names}")]
    UnknownPlugin {
        file: std::path::PathBuf,
        name: String,
        names: String,
    },
    #[error("the policy's table for `{name}` has problems:\n{errors}")]
    SetAside { name: String, errors: PolicyErrors },
}

/// A policy's plugin, loaded and checked, with what its runs need.
#[derive(Debug)]
pub struct PolicyPlugin {
    pub policy: Policy,
    pub plugin: PluginPolicy,
    pub runtime: Runtime,
    pub loaded: LoadedPlugin,
    pub backends: Backends,
}

/// Load plugin `name` of the policy in `policy_file`, as the agent would.
pub fn prepare(
    policy_file: &Path,
    name: &str,
    catalog: &dyn BackendCatalog,
) -> Result<PolicyPlugin, ByHandError> {
    let ServingPolicy { policy, set_aside } = Policy::load_serving(policy_file)?;
    if let Some(aside) = set_aside.into_iter().find(|s| s.plugin == name) {
        return Err(ByHandError::SetAside {
            name: name.to_string(),
            errors: PolicyErrors(aside.errors),
        });
    }
    let Some(plugin) = policy.plugins.iter().find(|p| p.name == name).cloned() else {
        let names: Vec<String> = policy
            .plugins
            .iter()
            .map(|p| format!("`{}`", p.name))
            .collect();
        return Err(ByHandError::UnknownPlugin {
            file: policy.file.clone(),
            name: name.to_string(),
            names: if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            },
        });
    };
    let backends = catalog.open(&policy.backend).map_err(PolicyErrors)?;
    let runtime = runtime_for(&policy, false)?;
    let loaded = load_plugin(&runtime, &policy, &plugin, None)
        .map_err(|e| PolicyErrors(vec![e]))?
        .loaded;
    Ok(PolicyPlugin {
        policy,
        plugin,
        runtime,
        loaded,
        backends,
    })
}

impl PolicyPlugin {
    /// A run of `event` as the policy configures it, in `mode` (the
    /// table's own mode when `None`), keeping its state in `state`.
    pub fn request(
        &self,
        event: EventRecord,
        mode: Option<Mode>,
        state: Option<StateStore>,
    ) -> RunRequest {
        RunRequest {
            run_id: medic_sandbox::new_id("run"),
            event: event.completed(),
            mode: mode.unwrap_or(self.plugin.mode),
            grants: Arc::new(self.plugin.grants.clone()),
            limits: self.plugin.limits,
            settings: Arc::new(self.plugin.settings.clone()),
            backends: self.backends.clone(),
            state: state.map(|s| Arc::new(s) as Arc<dyn medic_sandbox::PluginState>),
            own_effects: None,
        }
    }
}
