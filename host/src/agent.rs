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
use crate::dispatch::{Control, Dispatcher};
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
    #[error("cannot watch the policy and plugin directory for changes: {0}")]
    Watch(String),
    #[error("the backend: {0}")]
    Backend(#[from] crate::lab::LabError),
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
    let (policy, _runtime, active) = load_checked(policy_file)?;
    Ok((policy, active))
}

/// The policy, the runtime it configures, and every plugin loaded and
/// checked; all problems at once.
fn load_checked(policy_file: &Path) -> Result<(Policy, Runtime, Vec<ActivePlugin>), AgentError> {
    let policy = Policy::load(policy_file)?;
    let runtime = runtime_for(&policy)?;
    let (active, errors) = load_plugins(&runtime, &policy);
    if errors.is_empty() {
        Ok((policy, runtime, active))
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
        let (policy, runtime, active) = load_checked(policy_file)?;
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
            backends: Backends::from_settings(&policy.backend)?,
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
    /// runs in flight finish. Watches the plugin directory and the policy
    /// file meanwhile and takes their changes without a restart.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
        let ctx = self.ctx.clone();
        let agent_settings = &ctx.policy.agent;
        let (sink, events) = mpsc::channel(agent_settings.queue_capacity.max(1024));
        let policies = |plugins: &[Arc<ActivePlugin>]| -> Vec<PluginPolicy> {
            plugins.iter().map(|p| p.policy.clone()).collect()
        };
        let mut triggers = TriggerSet::start(&policies(&self.plugins), &sink, &ctx.store)?;
        let inbox = triggers::inbox::spawn(&agent_settings.state_dir, sink.clone())
            .map_err(AgentError::Inbox)?;
        let (mut changes, _watcher) =
            watch_for_changes(&ctx.policy.file, &agent_settings.plugin_dir)?;
        let (control, control_rx) = mpsc::channel(4);
        let names: Vec<&str> = self
            .plugins
            .iter()
            .map(|p| p.policy.name.as_str())
            .collect();
        tracing::info!(plugins = ?names, state_dir = %agent_settings.state_dir.display(), "agent ready");
        let dispatcher = Dispatcher::new(ctx.clone(), self.plugins.clone());
        let serving = tokio::spawn(dispatcher.serve(events, control_rx));
        let mut current = self.plugins;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(change) = changes.recv() => {
                    // Let a burst of writes settle before reading anything;
                    // a file renamed into place is complete already.
                    if change == Change::Written {
                        tokio::time::sleep(RELOAD_SETTLE).await;
                    }
                    while changes.try_recv().is_ok() {}
                    let (context, previous) = (ctx.clone(), current.clone());
                    let Ok(Some(next)) = tokio::task::spawn_blocking(move || reload(&context, &previous)).await else {
                        continue;
                    };
                    if policies(&next).iter().map(|p| format!("{:?}", p.triggers)).ne(policies(&current).iter().map(|p| format!("{:?}", p.triggers)))
                        || next.len() != current.len()
                    {
                        // Start the new triggers before stopping the old ones,
                        // so nothing happens unwatched.
                        match TriggerSet::start(&policies(&next), &sink, &ctx.store) {
                            Ok(started) => triggers = started,
                            Err(e) => {
                                tracing::error!("new triggers could not start, keeping the old ones: {e}");
                                continue;
                            }
                        }
                    }
                    let _ = control.send(Control::Swap(next.clone())).await;
                    current = next;
                }
            }
        }
        tracing::info!("stopping: no new events; waiting for runs in flight");
        drop(triggers);
        drop(sink);
        inbox.abort();
        drop(control);
        let _ = serving.await;
        Ok(())
    }
}

/// How long a reload waits after the first change, so that a burst of
/// writes (a copy, an editor saving) has landed before it reads anything.
const RELOAD_SETTLE: std::time::Duration = std::time::Duration::from_millis(20);

/// A notification for every change to the policy file or to a file in the
/// plugin directory, except hidden ones (an installer's or an editor's
/// temporary files). The watcher must be kept alive.
fn watch_for_changes(
    policy_file: &Path,
    plugin_dir: &Path,
) -> Result<(mpsc::Receiver<Change>, notify::RecommendedWatcher), AgentError> {
    use notify::event::{EventKind, ModifyKind, RenameMode};
    use notify::{RecursiveMode, Watcher};
    let (tx, rx) = mpsc::channel(1);
    let policy_name = policy_file.file_name().map(|n| n.to_os_string());
    let plugin_dir_owned = plugin_dir.to_path_buf();
    let mut watcher = notify::recommended_watcher(move |result: notify::Result<notify::Event>| {
        let Ok(event) = result else { return };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        let relevant = event.paths.iter().any(|p| {
            let hidden = p
                .file_name()
                .is_some_and(|n| n.as_encoded_bytes().starts_with(b"."));
            (p.parent() == Some(plugin_dir_owned.as_path()) && !hidden)
                || p.file_name().map(|n| n.to_os_string()) == policy_name
        });
        if relevant {
            let renamed_in = matches!(
                event.kind,
                EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
            );
            let _ = tx.try_send(if renamed_in {
                Change::RenamedIn
            } else {
                Change::Written
            });
        }
    })
    .map_err(|e| AgentError::Watch(e.to_string()))?;
    let policy_dir = policy_file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    for dir in [policy_dir, plugin_dir] {
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|e| AgentError::Watch(format!("{}: {e}", dir.display())))?;
    }
    Ok((rx, watcher))
}

/// How a watched file changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// Renamed into place: complete, as an atomic install leaves it.
    RenamedIn,
    /// Written in place: possibly still being written.
    Written,
}

/// Read the policy and the plugin directory again. Returns the plugin set
/// to serve, or `None` when nothing should change (a broken policy keeps
/// the old one entirely; a broken component keeps its last good version).
/// Every rejection is logged and recorded.
fn reload(ctx: &AgentContext, current: &[Arc<ActivePlugin>]) -> Option<Vec<Arc<ActivePlugin>>> {
    let record = |kind: &str, plugin: &str, summary: String| {
        if let Err(e) = ctx.journal.append(NewRecord {
            kind: kind.into(),
            plugin: plugin.into(),
            run_id: String::new(),
            status: kind.rsplit('-').next().unwrap_or(kind).into(),
            summary,
            detail: serde_json::Value::Null,
        }) {
            tracing::error!("cannot record a reload in the audit journal: {e}");
        }
    };
    tracing::debug!("reloading the policy and the plugin folder");
    let policy = match Policy::load(&ctx.policy.file) {
        Ok(policy) => policy,
        Err(errors) => {
            tracing::error!(
                "the changed policy is rejected; the last good one keeps serving:\n{errors}"
            );
            record("policy-rejected", "", errors.to_string());
            return None;
        }
    };
    if policy.agent != ctx.policy.agent || policy.backend != ctx.policy.backend {
        tracing::warn!("[agent] and [backend] changes take effect at the next restart");
    }
    let mut next = Vec::new();
    let mut changed = false;
    for plugin in &policy.plugins {
        let old = current.iter().find(|p| p.policy.name == plugin.name);
        let bytes = std::fs::read(&plugin.component).ok();
        let same_component = match (old, &bytes) {
            (Some(old), Some(bytes)) => old.loaded.hash == crate::runtime::content_hash(bytes),
            _ => false,
        };
        let loaded = if let (true, Some(old)) = (same_component, old) {
            Ok(old.loaded.clone())
        } else {
            match &bytes {
                Some(bytes) => ctx
                    .runtime
                    .load_bytes(bytes, &plugin.component.display().to_string())
                    .map_err(|e| e.to_string()),
                None => Err(format!("cannot read {}", plugin.component.display())),
            }
            .and_then(|loaded| {
                if loaded.info.name != plugin.name {
                    Err(format!(
                        "{} describes itself as `{}`, not `{}`",
                        plugin.component.display(),
                        loaded.info.name,
                        plugin.name
                    ))
                } else {
                    Ok(loaded)
                }
            })
        };
        let checked = loaded.and_then(|loaded| {
            loaded
                .check_grants(&plugin.grants)
                .map(|()| loaded)
                .map_err(|e| e.to_string())
        });
        match checked {
            Ok(loaded) => {
                let is_new = old.is_none_or(|o| {
                    o.loaded.hash != loaded.hash
                        || format!("{:?}", o.policy) != format!("{plugin:?}")
                });
                if is_new {
                    changed = true;
                    tracing::info!(plugin = %plugin.name, version = %loaded.info.version, hash = %&loaded.hash[..12], "plugin (re)loaded");
                    record(
                        "plugin-loaded",
                        &plugin.name,
                        format!(
                            "{} {} ({}) loaded",
                            loaded.info.name,
                            loaded.info.version,
                            &loaded.hash[..12]
                        ),
                    );
                }
                next.push(Arc::new(ActivePlugin {
                    grants: Arc::new(plugin.grants.clone()),
                    settings: Arc::new(plugin.settings.clone()),
                    policy: plugin.clone(),
                    loaded,
                }));
            }
            Err(reason) => {
                tracing::error!(plugin = %plugin.name, "new version rejected; the last good one keeps serving: {reason}");
                record("plugin-rejected", &plugin.name, reason);
                if let Some(old) = old {
                    next.push(old.clone());
                }
            }
        }
    }
    let removed = current
        .iter()
        .filter(|p| !next.iter().any(|n| n.policy.name == p.policy.name));
    for plugin in removed {
        changed = true;
        record(
            "plugin-removed",
            &plugin.policy.name,
            "removed from the policy".into(),
        );
    }
    changed.then_some(next)
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
            status: record.entry.status,
        });
    }
    let decided = journal
        .list(&crate::audit::journal::Filter::default())?
        .into_iter()
        .find(|r| (r.kind == "approved" || r.kind == "rejected") && r.run_id == run_id);
    if let Some(decision) = decided {
        return Err(DecisionError::AlreadyDecided {
            run: run_id.into(),
            decision: decision.entry.kind,
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
            backends: Backends::from_settings(&policy.backend).map_err(AgentError::from)?,
            state: Some(StateStore::new(store)),
            own_effects: None,
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
        plugin: pending.entry.plugin,
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
