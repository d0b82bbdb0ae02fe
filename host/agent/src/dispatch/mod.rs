//! Dispatch: which event runs when, and running it. The decisions (queues,
//! coalescing, the agent's and each plugin's concurrency, rate limits, the
//! flap guard) are a pure state machine in [`schedule`]; this module is its
//! I/O shell: it feeds it events, persists its counters, records flap-guard
//! transitions in the journal, spawns the runs it starts on blocking
//! threads (so a slow or hung plugin holds only its own slot, and is killed
//! at its timeout), records each run, and publishes the status snapshot.
//! File events caused by a plugin's own changes are not fed back to it.
//!
//! A watchdog on the dispatcher's own loop reports any run still in flight
//! well past its timeout (a host call the sandbox could not bound), in the
//! log and in the status snapshot; and the snapshot is rewritten at least
//! every second, so its age shows that the dispatcher keeps serving.

pub mod schedule;

use crate::audit::journal::{NewRecord, RecordKind, RecordStatus};
use crate::context::{ActivePlugin, AgentContext};
use crate::triggers::Routed;
use medic_sandbox::{
    EventKind, EventRecord, Mode, OwnEffects, PluginState, RunReport, RunRequest, RunResult,
    Status, new_id, now_ms,
};
use schedule::{Counters, Finished, GuardChange, Offer, Rules, RunTicket, Scheduler};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const COUNTERS: &str = "plugin_counters";
const STATUS: &str = "agent_status";

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
    /// Runs in flight well past their timeout.
    #[serde(default)]
    pub overdue: usize,
    pub flap_guard_tripped: bool,
    pub last_run: Option<String>,
    pub last_status: Option<Status>,
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

/// Orders for the dispatcher from the agent.
#[derive(Debug)]
pub enum Control {
    /// Serve this set of plugins from now on: runs in flight finish on the
    /// version they started with; queued events stay queued and run on the
    /// new version; plugins no longer in the set lose their queue.
    Swap(Vec<Arc<ActivePlugin>>),
}

/// A finished run, back from its blocking thread; no report when the
/// host itself failed during the run.
struct Done {
    key: u64,
    ticket: RunTicket,
    report: Option<RunReport>,
    mutated: bool,
}

/// How long past its timeout a run may still be in flight before the
/// watchdog reports it: the sandbox ends runs at their deadline, so only a
/// host call it cannot interrupt keeps one longer.
const OVERDUE_AFTER: Duration = Duration::from_secs(5);

/// How often the status snapshot is rewritten even when nothing changed.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// A run in flight, as the watchdog sees it.
struct InFlight {
    plugin: String,
    started: std::time::Instant,
    timeout: Duration,
    overdue: bool,
}

/// What the shell keeps of a served plugin besides its scheduling state.
struct Served {
    active: Arc<ActivePlugin>,
    /// Paths the plugin's runs changed, whose echo is expected.
    own_effects: Arc<OwnEffects>,
    own_effects_ignored: u64,
    last: Option<(String, Status, u64)>,
}

/// The dispatcher: owns the scheduler; runs on one task.
pub struct Dispatcher {
    ctx: Arc<AgentContext>,
    scheduler: Scheduler<EventRecord>,
    served: BTreeMap<String, Served>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    started_ms: u64,
    dirty: bool,
    in_flight: BTreeMap<u64, InFlight>,
    next_key: u64,
    published: std::time::Instant,
}

/// Run `active` on `event` and record the run in the journal; returns the
/// report and whether the run changed the system.
fn run_and_record(
    ctx: &AgentContext,
    active: &ActivePlugin,
    own_effects: Arc<OwnEffects>,
    event: EventRecord,
    forced_dry_run: bool,
) -> (RunReport, bool) {
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
            state: Some(ctx.state.clone() as Arc<dyn PluginState>),
            own_effects: Some(own_effects),
        },
    );
    let mutated = report.calls.iter().any(|c| c.mutating && c.applied);
    let summary = match (&report.result, forced_dry_run) {
        (RunResult::Completed(o), false) => o.summary.clone(),
        (RunResult::Completed(o), true) => format!("[flap guard: dry run] {}", o.summary),
        (RunResult::Failed(f), _) => f.to_string(),
    };
    if let Err(e) = ctx.journal.append(NewRecord {
        kind: RecordKind::Run,
        plugin: report.plugin.clone(),
        run_id: report.run_id.clone(),
        status: RecordStatus::Run(report.status()),
        summary,
        detail: serde_json::to_value(&report).unwrap_or_default(),
    }) {
        tracing::error!(plugin = %report.plugin, run = %report.run_id, "cannot record the run in the audit journal: {e}");
    }
    (report, mutated)
}

/// Whether a file event is only the echo of the plugin's own changes: its
/// path, or every path a whole-tree event covers (one that does not list
/// them all is never taken for an echo).
fn is_echo(own: &OwnEffects, routed: &Routed) -> bool {
    match &routed.changed {
        None => own.take_echo(std::path::Path::new(&routed.event.subject)),
        Some(changed) => {
            let mut all = !changed.truncated;
            for path in &changed.paths {
                // Take every echo, so none is left to swallow a later change.
                all &= own.take_echo(path);
            }
            all
        }
    }
}

fn rules(active: &ActivePlugin) -> Rules {
    Rules {
        concurrency: active.policy.concurrency,
        rate: active.policy.rate,
        flap_guard: active.policy.flap_guard,
    }
}

impl Dispatcher {
    pub fn new(ctx: Arc<AgentContext>, plugins: Vec<Arc<ActivePlugin>>) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let scheduler = Scheduler::new(
            ctx.policy.agent.max_concurrent_runs,
            ctx.policy.agent.queue_capacity,
        );
        let mut dispatcher = Self {
            ctx,
            scheduler,
            served: BTreeMap::new(),
            done_tx,
            done_rx,
            started_ms: now_ms(),
            dirty: true,
            in_flight: BTreeMap::new(),
            next_key: 0,
            published: std::time::Instant::now(),
        };
        dispatcher.swap(plugins);
        dispatcher
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
            // When a rate limit or the flap guard next lets something start.
            let wake = self
                .scheduler
                .next_wake(now_ms())
                .map(|at| Duration::from_millis(at.saturating_sub(now_ms())));
            tokio::select! {
                _ = tokio::time::sleep(wake.unwrap_or_default()), if wake.is_some() => {}
                routed = events.recv(), if open => match routed {
                    Some(routed) => self.accept(routed),
                    None => open = false,
                },
                Some(order) = control.recv() => match order {
                    Control::Swap(plugins) => self.swap(plugins),
                },
                Some(done) = self.done_rx.recv() => self.finish(done),
                _ = tick.tick() => {
                    self.watch();
                    self.publish_status();
                }
            }
            if open {
                self.pump();
            }
            if !open && self.scheduler.running() == 0 {
                self.publish_status();
                break;
            }
        }
    }

    fn swap(&mut self, plugins: Vec<Arc<ActivePlugin>>) {
        let ctx = &self.ctx;
        let removed = self.scheduler.set_plugins(plugins.iter().map(|p| {
            let name = p.policy.name.clone();
            let counters = load_counters(ctx, &name);
            (name, rules(p), counters)
        }));
        for (name, dropped) in removed {
            tracing::info!(plugin = %name, dropped, "plugin removed from the policy");
            self.served.remove(&name);
        }
        for active in plugins {
            match self.served.get_mut(&active.policy.name) {
                Some(served) => served.active = active,
                None => {
                    self.served.insert(
                        active.policy.name.clone(),
                        Served {
                            active,
                            own_effects: Arc::default(),
                            own_effects_ignored: 0,
                            last: None,
                        },
                    );
                }
            }
        }
        self.dirty = true;
    }

    fn accept(&mut self, routed: Routed) {
        let Some(served) = self.served.get_mut(&routed.plugin) else {
            tracing::warn!(plugin = %routed.plugin, "event for a plugin the policy does not have; dropped");
            return;
        };
        if routed.event.kind == EventKind::FileChanged && is_echo(&served.own_effects, &routed) {
            served.own_effects_ignored += 1;
            return;
        }
        let event = routed.event;
        let subject = event.subject.clone();
        match self.scheduler.offer(&routed.plugin, &subject, event) {
            Offer::Queued => self.dirty = true,
            Offer::Coalesced => {}
            Offer::QueueFull => {
                tracing::warn!(plugin = %routed.plugin, capacity = self.ctx.policy.agent.queue_capacity, "queue full; event dropped")
            }
            Offer::UnknownPlugin => {
                tracing::warn!(plugin = %routed.plugin, "event for a plugin the dispatcher does not serve; dropped")
            }
        }
    }

    /// Start every run that the limits allow now.
    fn pump(&mut self) {
        let decisions = self.scheduler.next_runs(now_ms());
        for (plugin, counters) in &decisions.persist {
            save_counters(&self.ctx, plugin, counters);
        }
        for change in decisions.guard_changes {
            self.record_guard_change(change);
        }
        for start in decisions.starts {
            let Some(served) = self.served.get(&start.plugin) else {
                // Cannot happen: the scheduler serves the same names.
                let _ = self.scheduler.finish(start.ticket, false, now_ms());
                continue;
            };
            let (active, own_effects) = (served.active.clone(), served.own_effects.clone());
            self.dirty = true;
            self.start_run(
                start.ticket,
                active,
                own_effects,
                start.event,
                start.forced_dry_run,
            );
        }
    }

    fn record_guard_change(&self, change: GuardChange) {
        let record = match change {
            GuardChange::Tripped {
                plugin,
                mutating_runs,
            } => {
                let within = self
                    .served
                    .get(&plugin)
                    .and_then(|s| s.active.policy.flap_guard)
                    .map_or(0, |g| g.within.as_secs());
                let summary = format!(
                    "flap guard tripped: {} runs changed the system within {within}s; runs are dry runs until the window passes",
                    mutating_runs.len(),
                );
                tracing::error!(plugin = %plugin, "{summary}");
                NewRecord {
                    kind: RecordKind::FlapGuard,
                    plugin,
                    run_id: String::new(),
                    status: RecordStatus::Tripped,
                    summary,
                    detail: serde_json::json!({ "mutating_runs": mutating_runs }),
                }
            }
            GuardChange::Released { plugin } => {
                tracing::warn!(plugin = %plugin, "flap guard released");
                NewRecord {
                    kind: RecordKind::FlapGuard,
                    plugin,
                    run_id: String::new(),
                    status: RecordStatus::Released,
                    summary: "flap guard released: the plugin acts again".into(),
                    detail: serde_json::Value::Null,
                }
            }
        };
        if let Err(e) = self.ctx.journal.append(record) {
            tracing::error!("cannot record a flap-guard change in the audit journal: {e}");
        }
    }

    /// Report runs in flight well past their timeout, once each.
    fn watch(&mut self) {
        for (key, run) in &mut self.in_flight {
            let elapsed = run.started.elapsed();
            if !run.overdue && elapsed > run.timeout + OVERDUE_AFTER {
                run.overdue = true;
                self.dirty = true;
                tracing::error!(
                    plugin = %run.plugin, run = key,
                    elapsed_ms = elapsed.as_millis() as u64,
                    timeout_ms = run.timeout.as_millis() as u64,
                    "a run is still in flight well past its timeout: a host call is not returning; its place stays taken until it does"
                );
            }
        }
    }

    fn start_run(
        &mut self,
        ticket: RunTicket,
        active: Arc<ActivePlugin>,
        own_effects: Arc<OwnEffects>,
        event: EventRecord,
        forced_dry_run: bool,
    ) {
        let key = self.next_key;
        self.next_key += 1;
        self.in_flight.insert(
            key,
            InFlight {
                plugin: ticket.plugin().to_string(),
                started: std::time::Instant::now(),
                timeout: active.policy.limits.timeout,
                overdue: false,
            },
        );
        let ctx = self.ctx.clone();
        let done = self.done_tx.clone();
        tokio::task::spawn_blocking(move || {
            let plugin = ticket.plugin().to_string();
            // A bug in a host call must not keep the run's place taken for
            // good: its ticket comes back whatever happens.
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_and_record(&ctx, &active, own_effects, event, forced_dry_run)
            }));
            let (report, mutated) = match run {
                Ok((report, mutated)) => (Some(report), mutated),
                Err(_) => {
                    tracing::error!(
                        plugin,
                        "the host failed during a run; counted as a run that changed the system"
                    );
                    (None, true)
                }
            };
            // The dispatcher outlives every run it starts: it waits for them
            // before it stops, so the channel is open.
            let _ = done.send(Done {
                key,
                ticket,
                report,
                mutated,
            });
        });
    }

    fn finish(&mut self, done: Done) {
        self.dirty = true;
        if let Some(run) = self.in_flight.remove(&done.key)
            && run.overdue
        {
            tracing::warn!(
                plugin = %run.plugin, run = done.key,
                elapsed_ms = run.started.elapsed().as_millis() as u64,
                "an overdue run came back"
            );
        }
        let plugin = done.ticket.plugin().to_string();
        let now = now_ms();
        match self.scheduler.finish(done.ticket, done.mutated, now) {
            Finished::Current { persist } => {
                if let Some(counters) = persist {
                    save_counters(&self.ctx, &plugin, &counters);
                }
                if let (Some(served), Some(report)) = (self.served.get_mut(&plugin), &done.report) {
                    served.last = Some((report.run_id.clone(), report.status(), now));
                }
            }
            Finished::Stale => {}
        }
    }

    fn publish_status(&mut self) {
        if !self.dirty && self.published.elapsed() < HEARTBEAT {
            return;
        }
        self.dirty = false;
        self.published = std::time::Instant::now();
        let plugins = self
            .scheduler
            .plugins()
            .filter_map(|view| {
                let served = self.served.get(view.name)?;
                let active = &served.active;
                Some(PluginStatus {
                    name: view.name.to_string(),
                    version: active.loaded.info.version.clone(),
                    hash: active.loaded.hash.clone(),
                    mode: active.policy.mode.as_str().into(),
                    queued: view.queued,
                    running: view.running,
                    coalesced: view.coalesced,
                    dropped: view.dropped,
                    own_effects_ignored: served.own_effects_ignored,
                    overdue: self
                        .in_flight
                        .values()
                        .filter(|r| r.overdue && r.plugin == view.name)
                        .count(),
                    flap_guard_tripped: view.guard_tripped,
                    last_run: served.last.as_ref().map(|l| l.0.clone()),
                    last_status: served.last.as_ref().map(|l| l.1),
                    last_run_ms: served.last.as_ref().map(|l| l.2),
                })
            })
            .collect();
        let status = AgentStatus {
            pid: std::process::id(),
            started_ms: self.started_ms,
            updated_ms: now_ms(),
            running: self.scheduler.running(),
            plugins,
        };
        if let Err(e) = self.ctx.store.put_json(STATUS, "agent", &status) {
            tracing::warn!("cannot write the status snapshot: {e}");
        }
    }
}
