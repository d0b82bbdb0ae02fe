//! The agent: read the policy, load and check every plugin it names, open
//! the store, start the triggers and the dispatcher, and serve until asked
//! to stop. [`check`] is the same validation without serving: what
//! `medic check` reports and what makes `medic run` refuse to start.

use crate::audit::journal::{Journal, NewRecord};
use crate::audit::state::StateStore;
use crate::audit::{Store, StoreError};
use crate::backends::Backends;
use crate::capabilities::grants::Grants;
use crate::config::{PluginPolicy, Policy, PolicyError, PolicyErrors};
use crate::dispatch::Dispatcher;
use crate::runtime::{LoadedPlugin, Runtime, RuntimeConfig, RuntimeError};
use crate::triggers::{self, TriggerSet};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::mpsc;

/// A plugin as the agent runs it: its policy and its loaded component.
#[derive(Debug)]
pub struct ActivePlugin {
    pub policy: PluginPolicy,
    pub loaded: LoadedPlugin,
    pub grants: Arc<Grants>,
    pub settings: Arc<BTreeMap<String, String>>,
}

/// What every run of the agent shares.
#[derive(Debug)]
pub struct AgentContext {
    pub policy: Policy,
    pub runtime: Runtime,
    pub store: Store,
    pub journal: Journal,
    pub state: StateStore,
    pub backends: Backends,
}

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
}

fn plugin_error(policy: &Policy, plugin: &PluginPolicy, message: String, fix: &str) -> PolicyError {
    PolicyError {
        file: policy.file.clone(),
        line: plugin.line,
        column: 1,
        message,
        fix: fix.to_string(),
    }
}

/// Load every plugin of `policy`: the component must load, describe itself
/// with the policy's name for it, and be granted what it asks for.
pub fn load_plugins(runtime: &Runtime, policy: &Policy) -> (Vec<ActivePlugin>, Vec<PolicyError>) {
    let mut active = Vec::new();
    let mut errors = Vec::new();
    for plugin in &policy.plugins {
        let loaded = match runtime.load_file(&plugin.component) {
            Ok(loaded) => loaded,
            Err(e) => {
                errors.push(plugin_error(
                    policy,
                    plugin,
                    format!("plugin `{}`: {e}", plugin.name),
                    "rebuild the component, or point `component` at a medic plugin",
                ));
                continue;
            }
        };
        if loaded.info.name != plugin.name {
            errors.push(plugin_error(
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
            continue;
        }
        if let Err(e) = loaded.check_grants(&plugin.grants) {
            errors.push(plugin_error(
                policy,
                plugin,
                e.to_string(),
                "add the missing capabilities to the plugin's `grants` table",
            ));
            continue;
        }
        active.push(ActivePlugin {
            grants: Arc::new(plugin.grants.clone()),
            settings: Arc::new(plugin.settings.clone()),
            policy: plugin.clone(),
            loaded,
        });
    }
    (active, errors)
}

fn runtime_for(policy: &Policy) -> Result<Runtime, RuntimeError> {
    let slots = policy.agent.max_concurrent_runs as u32 + policy.plugins.len() as u32 + 4;
    Runtime::new(&RuntimeConfig {
        cache_dir: Some(policy.agent.cache_dir.clone()),
        max_instances: slots.max(16),
    })
}

/// Validate a policy file and every plugin it names; all problems at once.
pub fn check(policy_file: &Path) -> Result<(Policy, Vec<ActivePlugin>), AgentError> {
    let policy = Policy::load(policy_file)?;
    let runtime = runtime_for(&policy)?;
    let (active, errors) = load_plugins(&runtime, &policy);
    if errors.is_empty() {
        Ok((policy, active))
    } else {
        Err(PolicyErrors(errors).into())
    }
}

/// A started agent, before it serves.
pub struct Agent {
    ctx: Arc<AgentContext>,
    plugins: Vec<Arc<ActivePlugin>>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("plugins", &self.plugins.len())
            .finish()
    }
}

impl Agent {
    /// Validate the policy and load everything; refuses a bad policy with
    /// every problem found.
    pub fn load(policy_file: &Path) -> Result<Self, AgentError> {
        let policy = Policy::load(policy_file)?;
        let runtime = runtime_for(&policy)?;
        let (active, errors) = load_plugins(&runtime, &policy);
        if !errors.is_empty() {
            return Err(PolicyErrors(errors).into());
        }
        let store = Store::open(&policy.agent.state_dir)?;
        let journal = Journal::new(store.clone());
        for plugin in &active {
            journal.append(NewRecord {
                kind: "plugin-loaded".into(),
                plugin: plugin.policy.name.clone(),
                run_id: String::new(),
                status: "loaded".into(),
                summary: format!(
                    "{} {} ({}) in {} mode",
                    plugin.loaded.info.name,
                    plugin.loaded.info.version,
                    &plugin.loaded.hash[..12],
                    plugin.policy.mode.as_str()
                ),
                detail: serde_json::json!({
                    "hash": plugin.loaded.hash,
                    "component": plugin.policy.component,
                    "grants": plugin.policy.grants.describe(),
                }),
            })?;
        }
        let ctx = AgentContext {
            backends: Backends::local(policy.backend.principals.clone()),
            state: StateStore::new(store.clone()),
            journal,
            store,
            runtime,
            policy,
        };
        Ok(Self {
            ctx: Arc::new(ctx),
            plugins: active.into_iter().map(Arc::new).collect(),
        })
    }

    pub fn context(&self) -> &Arc<AgentContext> {
        &self.ctx
    }

    /// Serve until `shutdown` completes; then stop the triggers and let the
    /// runs in flight finish.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
        let (sink, events) = mpsc::channel(self.ctx.policy.agent.queue_capacity.max(1024));
        let triggers = TriggerSet::start(&self.ctx.policy.plugins, &sink, &self.ctx.store)?;
        let inbox = triggers::inbox::spawn(&self.ctx.policy.agent.state_dir, sink.clone())
            .map_err(AgentError::Inbox)?;
        drop(sink);
        let names: Vec<&str> = self
            .plugins
            .iter()
            .map(|p| p.policy.name.as_str())
            .collect();
        tracing::info!(plugins = ?names, state_dir = %self.ctx.policy.agent.state_dir.display(), "agent ready");
        let dispatcher = Dispatcher::new(self.ctx.clone(), self.plugins.clone());
        let serving = tokio::spawn(dispatcher.serve(events));
        shutdown.await;
        tracing::info!("stopping: no new events; waiting for runs in flight");
        drop(triggers);
        inbox.abort();
        let _ = serving.await;
        Ok(())
    }
}
