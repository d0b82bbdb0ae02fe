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

/// Why an approval or rejection could not be done.
#[derive(Debug, thiserror::Error)]
pub enum DecisionError {
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "no run `{0}` in the audit journal; `medic audit --status needs-approval` lists the runs waiting"
    )]
    UnknownRun(String),
    #[error("run `{run}` is {status}, not waiting for approval")]
    NotPending { run: String, status: String },
    #[error("run `{run}` was already {decision}")]
    AlreadyDecided { run: String, decision: String },
    #[error("run `{run}` belongs to plugin `{plugin}`, which the policy no longer has")]
    PluginGone { run: String, plugin: String },
    #[error("run `{0}` has no event to replay")]
    NoEvent(String),
}

/// A pending run, checked to be waiting for a decision.
fn pending_run(
    journal: &Journal,
    run_id: &str,
) -> Result<crate::audit::journal::AuditRecord, DecisionError> {
    let record = journal
        .find_run(run_id)?
        .ok_or_else(|| DecisionError::UnknownRun(run_id.to_string()))?;
    if record.status != "needs-approval" {
        return Err(DecisionError::NotPending {
            run: run_id.into(),
            status: record.status,
        });
    }
    let decided = journal
        .list(&crate::audit::journal::Filter::default())?
        .into_iter()
        .find(|r| (r.kind == "approved" || r.kind == "rejected") && r.run_id == run_id);
    if let Some(decision) = decided {
        return Err(DecisionError::AlreadyDecided {
            run: run_id.into(),
            decision: decision.kind,
        });
    }
    Ok(record)
}

/// Apply a pending plan: run the plugin again in enforce mode on the same
/// event, record that run and the approval, and return the new run.
pub fn approve(
    policy_file: &Path,
    run_id: &str,
) -> Result<crate::runtime::RunReport, DecisionError> {
    let policy = Policy::load(policy_file).map_err(AgentError::from)?;
    let store = Store::open(&policy.agent.state_dir)?;
    let journal = Journal::new(store.clone());
    let pending = pending_run(&journal, run_id)?;
    let plugin = policy
        .plugins
        .iter()
        .find(|p| p.name == pending.plugin)
        .ok_or_else(|| DecisionError::PluginGone {
            run: run_id.into(),
            plugin: pending.plugin.clone(),
        })?;
    let event: crate::event::EventRecord = serde_json::from_value(pending.detail["event"].clone())
        .map_err(|_| DecisionError::NoEvent(run_id.into()))?;
    let event = event
        .to_contract()
        .map_err(|_| DecisionError::NoEvent(run_id.into()))?;
    let runtime = runtime_for(&policy).map_err(AgentError::from)?;
    let loaded = runtime.load_file(&plugin.component).map_err(|e| {
        AgentError::Policy(PolicyErrors(vec![plugin_error(
            &policy,
            plugin,
            e.to_string(),
            "rebuild the component",
        )]))
    })?;
    loaded.check_grants(&plugin.grants).map_err(|e| {
        AgentError::Policy(PolicyErrors(vec![plugin_error(
            &policy,
            plugin,
            e.to_string(),
            "grant what it asks for",
        )]))
    })?;
    let planned_with = pending.detail["hash"].as_str().unwrap_or_default();
    if planned_with != loaded.hash {
        tracing::warn!(
            run = run_id,
            "the plan was made by another version of `{}`; applying with the current one",
            plugin.name
        );
    }
    let report = runtime.run(
        &loaded,
        crate::runtime::RunRequest {
            run_id: crate::event::new_id("run"),
            event,
            mode: crate::capabilities::Mode::Enforce,
            grants: Arc::new(plugin.grants.clone()),
            limits: plugin.limits,
            settings: Arc::new(plugin.settings.clone()),
            backends: Backends::local(policy.backend.principals.clone()),
            state: Some(StateStore::new(store)),
        },
    );
    let summary = report
        .outcome()
        .map_or_else(|| "failed".to_string(), |o| o.summary.clone());
    journal.append(NewRecord {
        kind: "run".into(),
        plugin: report.plugin.clone(),
        run_id: report.run_id.clone(),
        status: report.status().into(),
        summary: format!("[approved {run_id}] {summary}"),
        detail: serde_json::to_value(&report).unwrap_or_default(),
    })?;
    journal.append(NewRecord {
        kind: "approved".into(),
        plugin: report.plugin.clone(),
        run_id: run_id.into(),
        status: report.status().into(),
        summary: format!("approved; applied by run {}", report.run_id),
        detail: serde_json::json!({ "applied_by": report.run_id }),
    })?;
    Ok(report)
}

/// Drop a pending plan, recording the decision.
pub fn reject(policy_file: &Path, run_id: &str, reason: &str) -> Result<(), DecisionError> {
    let policy = Policy::load(policy_file).map_err(AgentError::from)?;
    let journal = Journal::new(Store::open(&policy.agent.state_dir)?);
    let pending = pending_run(&journal, run_id)?;
    journal.append(NewRecord {
        kind: "rejected".into(),
        plugin: pending.plugin,
        run_id: run_id.into(),
        status: "rejected".into(),
        summary: if reason.is_empty() {
            "rejected by an operator".into()
        } else {
            format!("rejected: {reason}")
        },
        detail: serde_json::Value::Null,
    })?;
    Ok(())
}
