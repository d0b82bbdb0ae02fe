//! Dispatch: which event runs when. Per plugin a bounded queue in which an
//! event for a subject already waiting is coalesced into it; runs of
//! different plugins proceed concurrently up to the agent's limit, and of
//! one plugin up to its own; rate limits (runs per window, cooldown) delay
//! events rather than drop them; the flap guard turns a plugin that keeps
//! changing the system into a dry-run one until its window passes, records
//! why and alerts; file events caused by a plugin's own changes are not fed
//! back to it. Runs execute on blocking threads, so a slow or hung plugin
//! holds only its own slot (and is killed at its timeout).

use crate::agent::{ActivePlugin, AgentContext};
use crate::audit::journal::NewRecord;
use crate::capabilities::{Mode, OwnEffects};
use crate::contract::{Event, EventKind};
use crate::event::{new_id, now_ms};
use crate::runtime::{RunReport, RunRequest};
use crate::triggers::Routed;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const COUNTERS: &str = "plugin_counters";
const STATUS: &str = "agent_status";

/// Rate-limit and flap-guard history of one plugin, kept in the store so
/// that a restart does not reset it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Start times of recent runs, ms.
    pub runs: Vec<u64>,
    /// End times of recent runs that changed the system, ms.
    pub mutating: Vec<u64>,
    /// When the flap guard tripped, while it holds.
    pub guard_tripped_at: Option<u64>,
}

/// Read a plugin's counters.
pub fn load_counters(ctx: &AgentContext, plugin: &str) -> Counters {
    ctx.store.get_json(COUNTERS, plugin).unwrap_or_default()
}

fn save_counters(ctx: &AgentContext, plugin: &str, counters: &Counters) {
    if let Err(e) = ctx.store.put_json(COUNTERS, plugin, counters) {
        tracing::error!(plugin, "cannot persist rate-limit counters: {e}");
    }
}

/// What `medic status` shows of one plugin.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PluginStatus {
    pub name: String,
    pub version: String,
    pub hash: String,
    pub mode: String,
    pub queued: usize,
    pub running: usize,
    pub coalesced: u64,
    pub dropped: u64,
    pub own_effects_ignored: u64,
    pub flap_guard_tripped: bool,
    pub last_run: Option<String>,
    pub last_status: Option<String>,
    pub last_run_ms: Option<u64>,
}

/// The snapshot the agent keeps in the store for `medic status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentStatus {
    pub pid: u32,
    pub started_ms: u64,
    pub updated_ms: u64,
    pub running: usize,
    pub plugins: Vec<PluginStatus>,
}

/// Read the last snapshot the agent wrote.
pub fn read_status(store: &crate::audit::Store) -> Option<AgentStatus> {
    store.get_json(STATUS, "agent")
}

fn write_status(ctx: &AgentContext, status: &AgentStatus) {
    if let Err(e) = ctx.store.put_json(STATUS, "agent", status) {
        tracing::warn!("cannot write the status snapshot: {e}");
    }
}

/// Orders for the dispatcher from the agent.
#[derive(Debug)]
pub enum Control {
    /// Serve this set of plugins from now on: runs in flight finish on the
    /// version they started with; queued events stay queued and run on the
    /// new version; plugins no longer in the set lose their queue.
    Swap(Vec<Arc<ActivePlugin>>),
}

/// A finished run, back from its blocking thread.
struct Finished {
    plugin: String,
    report: RunReport,
    mutated: bool,
}

struct Slot {
    active: Arc<ActivePlugin>,
    queue: VecDeque<Event>,
    subjects: HashSet<String>,
    running: usize,
    /// Paths the plugin's runs changed, whose echo is expected.
    own_effects: Arc<OwnEffects>,
    counters: Counters,
    coalesced: u64,
    dropped: u64,
    own_effects_ignored: u64,
    last: Option<(String, String, u64)>,
}

/// The dispatcher: owns the queues; runs on one task.
pub struct Dispatcher {
    ctx: Arc<AgentContext>,
    slots: BTreeMap<String, Slot>,
    running: usize,
    max_running: usize,
    queue_capacity: usize,
    done_tx: mpsc::UnboundedSender<Finished>,
    done_rx: mpsc::UnboundedReceiver<Finished>,
    started_ms: u64,
    dirty: bool,
}

/// Whether a file event is only the echo of the plugin's own changes: its
/// path, or every path a whole-tree event lists (a truncated list is never
/// taken for an echo).
fn is_echo(own: &OwnEffects, event: &crate::contract::Event) -> bool {
    let listed = event
        .fields
        .iter()
        .find(|(k, _)| k == "paths")
        .map(|(_, v)| v.as_str());
    match listed {
        None => own.take_echo(std::path::Path::new(&event.subject)),
        Some(paths) => {
            let mut all = true;
            for path in paths.lines() {
                // Take every echo, so none is left to swallow a later change.
                all &= path != "..." && own.take_echo(std::path::Path::new(path));
            }
            all
        }
    }
}

impl Dispatcher {
    pub fn new(ctx: Arc<AgentContext>, plugins: Vec<Arc<ActivePlugin>>) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let max_running = ctx.policy.agent.max_concurrent_runs;
        let queue_capacity = ctx.policy.agent.queue_capacity;
        let mut dispatcher = Self {
            ctx,
            slots: BTreeMap::new(),
            running: 0,
            max_running,
            queue_capacity,
            done_tx,
            done_rx,
            started_ms: now_ms(),
            dirty: true,
        };
        for plugin in plugins {
            dispatcher.add(plugin);
        }
        dispatcher
    }

    fn add(&mut self, active: Arc<ActivePlugin>) {
        let counters = load_counters(&self.ctx, &active.policy.name);
        self.slots.insert(
            active.policy.name.clone(),
            Slot {
                active,
                queue: VecDeque::new(),
                subjects: HashSet::new(),
                running: 0,
                own_effects: Arc::default(),
                counters,
                coalesced: 0,
                dropped: 0,
                own_effects_ignored: 0,
                last: None,
            },
        );
    }

    /// Serve until `events` closes and every run in flight has finished.
    pub async fn serve(
        mut self,
        mut events: mpsc::Receiver<Routed>,
        mut control: mpsc::Receiver<Control>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut open = true;
        loop {
            tokio::select! {
                routed = events.recv(), if open => match routed {
                    Some(routed) => self.accept(routed),
                    None => open = false,
                },
                Some(order) = control.recv() => match order {
                    Control::Swap(plugins) => self.swap(plugins),
                },
                Some(finished) = self.done_rx.recv() => self.finish(finished),
                _ = tick.tick() => self.publish_status(),
            }
            if open {
                self.pump();
            }
            if !open && self.running == 0 {
                self.publish_status();
                break;
            }
        }
    }

    fn swap(&mut self, plugins: Vec<Arc<ActivePlugin>>) {
        let names: HashSet<String> = plugins.iter().map(|p| p.policy.name.clone()).collect();
        let removed: Vec<String> = self
            .slots
            .keys()
            .filter(|n| !names.contains(*n))
            .cloned()
            .collect();
        for name in removed {
            if let Some(slot) = self.slots.remove(&name) {
                tracing::info!(plugin = %name, dropped = slot.queue.len(), "plugin removed from the policy");
                // Runs in flight still report back; `finish` ignores them.
                self.running = self.running.saturating_sub(slot.running);
            }
        }
        for plugin in plugins {
            match self.slots.get_mut(&plugin.policy.name) {
                Some(slot) => slot.active = plugin,
                None => self.add(plugin),
            }
        }
        self.dirty = true;
    }

    fn accept(&mut self, routed: Routed) {
        let Some(slot) = self.slots.get_mut(&routed.plugin) else {
            tracing::warn!(plugin = %routed.plugin, "event for a plugin the policy does not have; dropped");
            return;
        };
        let event = routed.event;
        if event.kind == EventKind::FileChanged && is_echo(&slot.own_effects, &event) {
            slot.own_effects_ignored += 1;
            return;
        }
        if slot.subjects.contains(&event.subject) {
            slot.coalesced += 1;
            return;
        }
        if slot.queue.len() >= self.queue_capacity {
            slot.dropped += 1;
            tracing::warn!(plugin = %routed.plugin, capacity = self.queue_capacity, "queue full; event dropped");
            return;
        }
        slot.subjects.insert(event.subject.clone());
        slot.queue.push_back(event);
        self.dirty = true;
    }

    /// Start every run that the limits allow now.
    fn pump(&mut self) {
        let now = now_ms();
        let names: Vec<String> = self.slots.keys().cloned().collect();
        for name in names {
            while self.running < self.max_running {
                let Some(slot) = self.slots.get_mut(&name) else {
                    break;
                };
                if slot.queue.is_empty() || slot.running >= slot.active.policy.concurrency {
                    break;
                }
                if let Some(rate) = slot.active.policy.rate {
                    let window_start = now.saturating_sub(rate.window.as_millis() as u64);
                    slot.counters.runs.retain(|t| *t >= window_start);
                    let last = slot.counters.runs.last().copied().unwrap_or(0);
                    if slot.counters.runs.len() >= rate.max_runs as usize
                        || now < last + rate.cooldown.as_millis() as u64
                    {
                        break;
                    }
                }
                let Some(event) = slot.queue.pop_front() else {
                    break;
                };
                slot.subjects.remove(&event.subject);
                slot.counters.runs.push(now);
                let forced_dry_run = Self::flap_guard_holds(&self.ctx, &name, slot, now);
                slot.running += 1;
                let (active, own_effects) = (slot.active.clone(), slot.own_effects.clone());
                self.running += 1;
                self.dirty = true;
                self.start_run(active, own_effects, event, forced_dry_run);
            }
        }
    }

    /// Whether the flap guard holds the plugin to dry runs now; records and
    /// alerts when it trips.
    fn flap_guard_holds(ctx: &AgentContext, name: &str, slot: &mut Slot, now: u64) -> bool {
        let Some(guard) = slot.active.policy.flap_guard else {
            return false;
        };
        let window_start = now.saturating_sub(guard.within.as_millis() as u64);
        slot.counters.mutating.retain(|t| *t >= window_start);
        let holds = slot.counters.mutating.len() >= guard.max_mutating_runs as usize;
        match (holds, slot.counters.guard_tripped_at) {
            (true, None) => {
                slot.counters.guard_tripped_at = Some(now);
                let summary = format!(
                    "flap guard tripped: {} runs changed the system within {}s; runs are dry runs until the window passes",
                    slot.counters.mutating.len(),
                    guard.within.as_secs()
                );
                tracing::error!(plugin = name, "{summary}");
                let _ = ctx.journal.append(NewRecord {
                    kind: "flap-guard".into(),
                    plugin: name.to_string(),
                    run_id: String::new(),
                    status: "tripped".into(),
                    summary,
                    detail: serde_json::json!({ "mutating_runs": slot.counters.mutating }),
                });
                save_counters(ctx, name, &slot.counters);
            }
            (false, Some(_)) => {
                slot.counters.guard_tripped_at = None;
                tracing::warn!(plugin = name, "flap guard released");
                let _ = ctx.journal.append(NewRecord {
                    kind: "flap-guard".into(),
                    plugin: name.to_string(),
                    run_id: String::new(),
                    status: "released".into(),
                    summary: "flap guard released: the plugin acts again".into(),
                    detail: serde_json::Value::Null,
                });
                save_counters(ctx, name, &slot.counters);
            }
            _ => {}
        }
        holds
    }

    fn start_run(
        &self,
        active: Arc<ActivePlugin>,
        own_effects: Arc<OwnEffects>,
        event: Event,
        forced_dry_run: bool,
    ) {
        let ctx = self.ctx.clone();
        let done = self.done_tx.clone();
        tokio::task::spawn_blocking(move || {
            let policy = &active.policy;
            let mode = if forced_dry_run {
                Mode::DryRun
            } else {
                policy.mode
            };
            let report = ctx.runtime.run(
                &active.loaded,
                RunRequest {
                    run_id: new_id("run"),
                    event,
                    mode,
                    grants: active.grants.clone(),
                    limits: policy.limits,
                    settings: active.settings.clone(),
                    backends: ctx.backends.clone(),
                    state: Some(ctx.state.clone()),
                    own_effects: Some(own_effects),
                },
            );
            let mutated = report.calls.iter().any(|c| c.mutating && c.applied);
            let summary = match (report.outcome(), forced_dry_run) {
                (Some(o), false) => o.summary.clone(),
                (Some(o), true) => format!("[flap guard: dry run] {}", o.summary),
                (None, _) => match &report.result {
                    crate::runtime::RunResult::Failed(f) => f.to_string(),
                    crate::runtime::RunResult::Completed(_) => String::new(),
                },
            };
            if let Err(e) = ctx.journal.append(NewRecord {
                kind: "run".into(),
                plugin: report.plugin.clone(),
                run_id: report.run_id.clone(),
                status: report.status().to_string(),
                summary,
                detail: serde_json::to_value(&report).unwrap_or_default(),
            }) {
                tracing::error!(plugin = %report.plugin, run = %report.run_id, "cannot record the run in the audit journal: {e}");
            }
            let _ = done.send(Finished {
                plugin: report.plugin.clone(),
                report,
                mutated,
            });
        });
    }

    fn finish(&mut self, finished: Finished) {
        self.running = self.running.saturating_sub(1);
        self.dirty = true;
        let Some(slot) = self.slots.get_mut(&finished.plugin) else {
            return;
        };
        slot.running = slot.running.saturating_sub(1);
        let now = now_ms();
        if finished.mutated {
            slot.counters.mutating.push(now);
        }
        slot.last = Some((
            finished.report.run_id.clone(),
            finished.report.status().to_string(),
            now,
        ));
        save_counters(&self.ctx, &finished.plugin, &slot.counters);
    }

    fn publish_status(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        let plugins = self
            .slots
            .values()
            .map(|slot| PluginStatus {
                name: slot.active.policy.name.clone(),
                version: slot.active.loaded.info.version.clone(),
                hash: slot.active.loaded.hash.clone(),
                mode: slot.active.policy.mode.as_str().into(),
                queued: slot.queue.len(),
                running: slot.running,
                coalesced: slot.coalesced,
                dropped: slot.dropped,
                own_effects_ignored: slot.own_effects_ignored,
                flap_guard_tripped: slot.counters.guard_tripped_at.is_some(),
                last_run: slot.last.as_ref().map(|l| l.0.clone()),
                last_status: slot.last.as_ref().map(|l| l.1.clone()),
                last_run_ms: slot.last.as_ref().map(|l| l.2),
            })
            .collect();
        let status = AgentStatus {
            pid: std::process::id(),
            started_ms: self.started_ms,
            updated_ms: now_ms(),
            running: self.running,
            plugins,
        };
        write_status(&self.ctx, &status);
    }
}
