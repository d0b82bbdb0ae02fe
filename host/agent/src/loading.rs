//! The one loading path, for start-up, reload, `medic check` and
//! `medic approve`: read the policy, open its backends, load every plugin it
//! names and check that each describes itself with the policy's name for it
//! and is granted what it asks for. Every problem is reported at once.

use crate::audit::StoreError;
use crate::backend::BackendCatalog;
use crate::context::ActivePlugin;
use crate::policy::{PluginPolicy, Policy, PolicyError, PolicyErrors};
use crate::triggers;
use medic_backends::Backends;
use medic_sandbox::{LoadedPlugin, Runtime, RuntimeConfig, RuntimeError, content_hash};
use std::path::Path;
use std::sync::Arc;

/// Why the agent did not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Policy(#[from] PolicyErrors),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Trigger(#[from] triggers::TriggerError),
    #[error("cannot watch the inbox for manual events: {0}")]
    Inbox(String),
    #[error("cannot watch the policy and plugin directory for changes: {0}")]
    Watch(String),
}

/// A problem with one plugin's table, located at the table.
pub(crate) fn plugin_error(
    policy: &Policy,
    plugin: &PluginPolicy,
    message: String,
    fix: &str,
) -> PolicyError {
    PolicyError {
        file: policy.file.clone(),
        line: plugin.line,
        column: 1,
        message,
        fix: fix.to_string(),
    }
}

/// Load the plugin `plugin` names and check it against its table. When
/// `previous` was loaded from the same bytes, its compiled component is
/// reused rather than loaded again.
pub fn load_plugin(
    runtime: &Runtime,
    policy: &Policy,
    plugin: &PluginPolicy,
    previous: Option<&ActivePlugin>,
) -> Result<ActivePlugin, PolicyError> {
    let unreadable = |e: std::io::Error| {
        plugin_error(
            policy,
            plugin,
            format!(
                "plugin `{}`: cannot read {}: {e}",
                plugin.name,
                plugin.component.display()
            ),
            "rebuild the component, or point `component` at a medic plugin",
        )
    };
    let bytes = std::fs::read(&plugin.component).map_err(unreadable)?;
    let loaded: LoadedPlugin = match previous {
        Some(old) if old.loaded.hash == content_hash(&bytes) => old.loaded.clone(),
        _ => runtime
            .load_bytes_within(
                &bytes,
                &plugin.component.display().to_string(),
                plugin.limits.memory_bytes,
            )
            .map_err(|e| {
                plugin_error(
                    policy,
                    plugin,
                    format!("plugin `{}`: {e}", plugin.name),
                    "rebuild the component, or point `component` at a medic plugin",
                )
            })?,
    };
    if loaded.info.name != plugin.name {
        return Err(plugin_error(
            policy,
            plugin,
            format!(
                "[plugins.{}] names a component that describes itself as `{}`",
                plugin.name, loaded.info.name
            ),
            &format!(
                "rename the table to [plugins.{}] or point `component` at the right file",
                loaded.info.name
            ),
        ));
    }
    loaded.check_grants(&plugin.grants).map_err(|e| {
        plugin_error(
            policy,
            plugin,
            e.to_string(),
            "add the missing capabilities to the plugin's `grants` table",
        )
    })?;
    Ok(ActivePlugin {
        grants: Arc::new(plugin.grants.clone()),
        settings: Arc::new(plugin.settings.clone()),
        policy: plugin.clone(),
        loaded,
    })
}

/// The sandbox a policy configures.
pub(crate) fn runtime_for(policy: &Policy) -> Result<Runtime, RuntimeError> {
    let slots = policy.agent.max_concurrent_runs as u32 + policy.plugins.len() as u32 + 4;
    Runtime::new(&RuntimeConfig {
        cache_dir: Some(policy.agent.cache_dir.clone()),
        max_instances: slots.max(16),
    })
}

/// Everything a policy file configures, loaded and checked.
#[derive(Debug)]
pub struct Loaded {
    pub policy: Policy,
    pub runtime: Runtime,
    pub backends: Backends,
    pub plugins: Vec<ActivePlugin>,
}

/// Read `policy_file`, open its backends through `catalog`, load and check
/// every plugin; all problems at once.
pub fn load(policy_file: &Path, catalog: &dyn BackendCatalog) -> Result<Loaded, AgentError> {
    let mut backends = None;
    let policy = Policy::load_with(policy_file, &mut |section| match catalog.open(section) {
        Ok(opened) => {
            backends = Some(opened);
            Vec::new()
        }
        Err(errors) => errors,
    })?;
    let mut errors = Vec::new();
    let runtime = runtime_for(&policy)?;
    let mut plugins = Vec::new();
    for plugin in &policy.plugins {
        match load_plugin(&runtime, &policy, plugin, None) {
            Ok(active) => plugins.push(active),
            Err(e) => errors.push(e),
        }
    }
    match backends {
        Some(backends) if errors.is_empty() => Ok(Loaded {
            policy,
            runtime,
            backends,
            plugins,
        }),
        _ => Err(PolicyErrors(errors).into()),
    }
}
