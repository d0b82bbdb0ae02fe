//! Serving: open the store, start the triggers and the dispatcher, and
//! serve until asked to stop, taking changes to the policy file and the
//! plugin folder without a restart (a broken change is rejected, recorded,
//! and the last good version keeps serving, unless the keys the policy
//! trusts changed and it is signed by none of them). A plugin refused at
//! start-up is disabled, loudly (log, journal, status), and the others
//! serve; a later change that fixes it is taken like any other. A policy
//! none of whose plugins can serve is refused.

use crate::audit::journal::{Journal, NewRecord, RecordKind, RecordStatus};
use crate::audit::state::StateStore;
use crate::audit::{AgentLock, Store};
use crate::backend::BackendCatalog;
use crate::context::{ActivePlugin, AgentContext};
use crate::dispatch::{Control, DisabledPlugin, Dispatcher};
use crate::loading::{self, AgentError, Loaded, Refused, load_plugin};
use crate::policy::{
    PluginPolicy, Policy, PolicyDiff, PolicyErrors, ServingPolicy, SetAside, Trust,
};
use crate::triggers::{self, TriggerSet};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::mpsc;

/// A started agent, before it serves.
pub struct Agent {
    ctx: Arc<AgentContext>,
    plugins: Vec<Arc<ActivePlugin>>,
    disabled: Vec<DisabledPlugin>,
    /// Held while the agent lives: one agent per state directory, and
    /// `medic status` tells a live agent from a dead one by it.
    lock: AgentLock,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("plugins", &self.plugins.len())
            .finish()
    }
}

impl Agent {
    /// Validate the policy and load everything; refuses a policy that
    /// cannot be read with every problem found. A plugin whose component
    /// or checks fail is disabled, logged and recorded; the others serve.
    pub fn load(policy_file: &Path, catalog: Arc<dyn BackendCatalog>) -> Result<Self, AgentError> {
        let (
            Loaded {
                policy,
                runtime,
                backends,
                plugins: active,
            },
            refused,
        ) = loading::load_serving(policy_file, catalog.as_ref())?;
        // With nothing to serve, there is no agent to start: the policy is
        // refused as `medic check` refuses it.
        if active.is_empty() && !refused.is_empty() {
            return Err(PolicyErrors(refused.into_iter().flat_map(|r| r.errors).collect()).into());
        }
        let lock = Store::lock_agent(&policy.agent.state_dir)?;
        let store = Store::open(&policy.agent.state_dir)?;
        let journal = Journal::new(store.clone());
        let mut disabled = Vec::new();
        for refusal in refused {
            let reason = refusal.reason();
            let Refused { plugin, errors } = refusal;
            let errors = PolicyErrors(errors);
            tracing::error!(plugin = %plugin, "plugin DISABLED: {errors}");
            journal.append(NewRecord {
                kind: RecordKind::PluginRejected,
                plugin: plugin.clone(),
                run_id: String::new(),
                status: RecordStatus::Rejected,
                summary: format!("disabled at start-up: {reason}"),
                detail: serde_json::json!({ "error": errors.to_string() }),
            })?;
            disabled.push(DisabledPlugin {
                name: plugin,
                reason,
            });
        }
        for plugin in &active {
            journal.append(NewRecord {
                kind: RecordKind::PluginLoaded,
                plugin: plugin.policy.name.clone(),
                run_id: String::new(),
                status: RecordStatus::Loaded,
                summary: format!(
                    "{} {} ({}) in {} mode{}",
                    plugin.loaded.info.name,
                    plugin.loaded.info.version,
                    &plugin.loaded.hash[..12],
                    plugin.policy.mode.as_str(),
                    signed_by(plugin)
                ),
                detail: load_detail(plugin),
            })?;
        }
        let ctx = AgentContext {
            backends,
            catalog,
            state: Arc::new(StateStore::new(store.clone())),
            journal,
            store,
            runtime,
            policy,
        };
        Ok(Self {
            ctx: Arc::new(ctx),
            plugins: active.into_iter().map(Arc::new).collect(),
            disabled,
            lock,
        })
    }

    pub fn context(&self) -> &Arc<AgentContext> {
        &self.ctx
    }

    /// Serve until `shutdown` completes; then stop the triggers and let the
    /// runs in flight finish. Watches the plugin directory and the policy
    /// file meanwhile and takes their changes without a restart.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
        let _lock = self.lock;
        let ctx = self.ctx.clone();
        let agent_settings = &ctx.policy.agent;
        let (sink, events) = mpsc::channel(agent_settings.queue_capacity.max(1024));
        let policies = |plugins: &[Arc<ActivePlugin>]| -> Vec<PluginPolicy> {
            plugins.iter().map(|p| p.policy.clone()).collect()
        };
        // First, so that what the last agent left in the start log (log
        // positions among it) is committed before a tail reads its saved
        // position.
        let dispatcher = Dispatcher::new(ctx.clone(), self.plugins.clone())?;
        let mut triggers = TriggerSet::start(&policies(&self.plugins), &sink, &ctx.store).await?;
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
        if !self.disabled.is_empty() {
            let _ = control.send(Control::Disabled(self.disabled)).await;
        }
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
                    let Ok(Some((next, disabled))) = tokio::task::spawn_blocking(move || reload(&context, &previous)).await else {
                        continue;
                    };
                    if control.send(Control::Disabled(disabled)).await.is_err() {
                        break;
                    }
                    // The dispatcher serves the new set before its triggers
                    // start, so no event of theirs finds it unknown.
                    let mut next = next;
                    if !swap(&control, &next).await {
                        break;
                    }
                    let errors = triggers.update(&policies(&next), &sink, &ctx.store).await;
                    if !errors.is_empty() {
                        for error in errors {
                            // That plugin keeps its old version (and triggers),
                            // or is not added.
                            tracing::error!("new triggers could not start; the plugin keeps its last good version: {error}");
                            record(&ctx, RecordKind::PluginRejected, RecordStatus::Rejected, &error.plugin, error.to_string());
                            next.retain(|p| p.policy.name != error.plugin);
                            if let Some(old) = current.iter().find(|p| p.policy.name == error.plugin) {
                                next.push(old.clone());
                            }
                        }
                        if !swap(&control, &next).await {
                            break;
                        }
                    }
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

/// Have the dispatcher serve `plugins`, and wait until it does; false
/// when the dispatcher is gone.
async fn swap(control: &mpsc::Sender<Control>, plugins: &[Arc<ActivePlugin>]) -> bool {
    let (done, served) = tokio::sync::oneshot::channel();
    let order = Control::Swap {
        plugins: plugins.to_vec(),
        done,
    };
    control.send(order).await.is_ok() && served.await.is_ok()
}

/// `, signed by KEYID` for a plugin whose signature was checked.
fn signed_by(plugin: &ActivePlugin) -> String {
    plugin
        .signer
        .as_ref()
        .map_or_else(String::new, |s| format!(", signed by {}", s.key_id))
}

/// The detail of a plugin-loaded record: what was loaded, with what
/// grants, signed by whom.
fn load_detail(plugin: &ActivePlugin) -> serde_json::Value {
    serde_json::json!({
        "hash": plugin.loaded.hash,
        "component": plugin.policy.component,
        "grants": plugin.policy.grants.describe(),
        "signer": plugin.signer.as_ref().map(|s| serde_json::json!({
            "key_id": s.key_id,
            "trusted_comment": s.trusted_comment,
        })),
    })
}

/// Why the version of a plugin that is serving would not pass `trust`
/// (the keys trusted for it now), or `None` if it would: a plugin whose
/// key is no longer trusted does not keep serving on a rejected reload.
fn distrusted(serving: &ActivePlugin, trust: &Trust) -> Option<String> {
    match &serving.signer {
        Some(signer) if !trust.keys.is_empty() => (!trust
            .keys
            .iter()
            .any(|k| k.key_id() == signer.key_id))
        .then(|| {
            format!(
                "the version serving is signed by key {}, which the policy no longer trusts",
                signer.key_id
            )
        }),
        _ if trust.required => Some(
            "the version serving is not signed by a key the policy trusts, and a signature is now required".to_string(),
        ),
        _ => None,
    }
}

/// How long a reload waits after the first change, so that a burst of
/// writes (a copy, an editor saving) has landed before it reads anything.
const RELOAD_SETTLE: std::time::Duration = std::time::Duration::from_millis(20);

/// A notification for every change to the policy file or to a file in the
/// plugin directory, except hidden ones (an installer's or an editor's
/// temporary files). A component's signature (`<component>.minisig`) is
/// such a file: a component refused for want of its signature is taken
/// when the signature lands. The watcher must be kept alive.
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
/// to serve with the plugins the policy names that do not serve, or `None`
/// when nothing should change. A policy with a problem outside its plugin
/// tables keeps the old one entirely; a plugin whose new table or
/// component is refused keeps its last good version, unless the policy no
/// longer trusts it, and a new one is disabled. Every rejection is logged
/// and recorded.
fn reload(
    ctx: &AgentContext,
    current: &[Arc<ActivePlugin>],
) -> Option<(Vec<Arc<ActivePlugin>>, Vec<DisabledPlugin>)> {
    tracing::debug!("reloading the policy and the plugin folder");
    // The backend is checked as at start-up, though a change to it takes
    // effect only at the next start.
    let check_backend = &mut |section: &_| ctx.catalog.open(section).err().unwrap_or_default();
    let ServingPolicy { policy, set_aside } =
        match Policy::load_serving_with(&ctx.policy.file, check_backend) {
            Ok(read) => read,
            Err(errors) => {
                tracing::error!(
                    "the changed policy is rejected; the last good one keeps serving:\n{errors}"
                );
                record(
                    ctx,
                    RecordKind::PolicyRejected,
                    RecordStatus::Rejected,
                    "",
                    errors.to_string(),
                );
                return None;
            }
        };
    let started_with = PolicyDiff::between(&ctx.policy, &policy);
    tracing::debug!(
        added = ?started_with.added,
        removed = ?started_with.removed,
        changed = ?started_with.changed,
        "the policy against the one the agent started with"
    );
    if started_with.agent || started_with.backend {
        tracing::warn!("[agent] and [backend] changes take effect at the next restart");
    }
    let mut next = Reloaded::default();
    let serving = |name: &str| current.iter().find(|p| p.policy.name == name);
    for plugin in &policy.plugins {
        let old = serving(&plugin.name);
        match load_plugin(&ctx.runtime, &policy, plugin, old.map(|o| o.as_ref())) {
            Ok(active) => next.take(ctx, old, plugin, active),
            Err(e) => next.refuse(ctx, old, &plugin.name, &plugin.trust, e.message),
        }
    }
    for SetAside { plugin, errors } in set_aside {
        let reason = format!(
            "its table in the policy is refused: {}",
            PolicyErrors(errors)
        );
        // Its own keys are part of the table refused: the version serving
        // keeps serving only if the policy's keys for every plugin take it.
        next.refuse(ctx, serving(&plugin), &plugin, &policy.trust, reason);
    }
    let removed = current.iter().filter(|p| {
        !next.serve.iter().any(|n| n.policy.name == p.policy.name)
            && !next.stopped.contains(&p.policy.name)
    });
    for plugin in removed {
        next.changed = true;
        record(
            ctx,
            RecordKind::PluginRemoved,
            RecordStatus::Removed,
            &plugin.policy.name,
            "removed from the policy".into(),
        );
    }
    next.changed.then_some((next.serve, next.disabled))
}

/// What a reload makes of the plugins, one at a time.
#[derive(Default)]
struct Reloaded {
    serve: Vec<Arc<ActivePlugin>>,
    disabled: Vec<DisabledPlugin>,
    /// Plugins whose serving version the policy no longer trusts.
    stopped: Vec<String>,
    /// Anything differs from what serves now.
    changed: bool,
}

impl Reloaded {
    /// `active` loaded for `plugin`: it serves, recorded when it is new.
    fn take(
        &mut self,
        ctx: &AgentContext,
        old: Option<&Arc<ActivePlugin>>,
        plugin: &PluginPolicy,
        active: ActivePlugin,
    ) {
        let is_new = old.is_none_or(|o| {
            o.loaded.hash != active.loaded.hash || o.policy != *plugin || o.signer != active.signer
        });
        if is_new {
            self.changed = true;
            let loaded = &active.loaded;
            let signer = active.signer.as_ref().map_or("-", |s| s.key_id.as_str());
            tracing::info!(plugin = %plugin.name, version = %loaded.info.version, hash = %&loaded.hash[..12], signer, "plugin (re)loaded");
            record_with(
                ctx,
                RecordKind::PluginLoaded,
                RecordStatus::Loaded,
                &plugin.name,
                format!(
                    "{} {} ({}) loaded{}",
                    loaded.info.name,
                    loaded.info.version,
                    &loaded.hash[..12],
                    signed_by(&active)
                ),
                load_detail(&active),
            );
        }
        self.serve.push(Arc::new(active));
    }

    /// The new version of plugin `name` is refused for `reason`: the
    /// version serving (`old`) keeps serving if `trust` still takes it; a
    /// plugin with none is disabled.
    fn refuse(
        &mut self,
        ctx: &AgentContext,
        old: Option<&Arc<ActivePlugin>>,
        name: &str,
        trust: &Trust,
        reason: String,
    ) {
        let rejected = |reason: String| {
            record(
                ctx,
                RecordKind::PluginRejected,
                RecordStatus::Rejected,
                name,
                reason,
            )
        };
        let Some(old) = old else {
            tracing::error!(plugin = %name, "plugin rejected: {reason}");
            self.disabled.push(DisabledPlugin {
                name: name.to_string(),
                reason: reason.clone(),
            });
            rejected(reason);
            return;
        };
        match distrusted(old, trust) {
            None => {
                tracing::error!(plugin = %name, "new version rejected; the last good one keeps serving: {reason}");
                rejected(reason);
                self.serve.push(old.clone());
            }
            // The keys changed and the version serving would not load now
            // either: it stops.
            Some(why) => {
                tracing::error!(plugin = %name, "plugin stopped: {why}; and its new version is rejected: {reason}");
                rejected(reason);
                record(
                    ctx,
                    RecordKind::PluginRemoved,
                    RecordStatus::Removed,
                    name,
                    format!("stopped: {why}"),
                );
                self.disabled.push(DisabledPlugin {
                    name: name.to_string(),
                    reason: why,
                });
                self.stopped.push(name.to_string());
                self.changed = true;
            }
        }
    }
}

/// Append a record of what a reload did; a record that cannot be written
/// is logged.
fn record_with(
    ctx: &AgentContext,
    kind: RecordKind,
    status: RecordStatus,
    plugin: &str,
    summary: String,
    detail: serde_json::Value,
) {
    if let Err(e) = ctx.journal.append(NewRecord {
        kind,
        plugin: plugin.into(),
        run_id: String::new(),
        status,
        summary,
        detail,
    }) {
        tracing::error!("cannot record a reload in the audit journal: {e}");
    }
}

/// [`record_with`], with no detail.
fn record(
    ctx: &AgentContext,
    kind: RecordKind,
    status: RecordStatus,
    plugin: &str,
    summary: String,
) {
    record_with(ctx, kind, status, plugin, summary, serde_json::Value::Null);
}
