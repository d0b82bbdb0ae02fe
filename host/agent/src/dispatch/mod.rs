//! Dispatch: which event runs when, and running it. The decisions (queues,
//! coalescing, the agent's and each plugin's concurrency, rate limits, the
//! flap guard) are a pure state machine in [`schedule`]; this module is its
//! I/O shell: it feeds it events, keeps every accepted event in the
//! durable queue ([`queue`]) with its counters and flap-guard records,
//! writes the runs it starts to the start log ([`start_log`]) so they need
//! not wait for the store's fsync, spawns them on blocking threads (so a
//! slow or hung plugin holds only its own slot, and is killed at its
//! timeout), records each run in the same transaction that takes its
//! event off the queue, and publishes the status snapshot. File events
//! caused by a plugin's own changes are not fed back to it. At start it takes up what a previous
//! agent left in the queue: cut-off runs are recorded as interrupted, and
//! every event left runs (again).
//!
//! A watchdog on the dispatcher's own loop reports any run still in flight
//! well past its timeout (a host call the sandbox could not bound), in the
//! log and in the status snapshot; and the snapshot is rewritten at least
//! every second, so its age shows that the dispatcher keeps serving.

pub mod follow_up;
pub mod queue;
pub mod schedule;
pub mod start_log;

use crate::audit::journal::{NewRecord, RecordKind, RecordStatus};
use crate::audit::{StoreError, StoreHealth};
use crate::context::{ActivePlugin, AgentContext};
use crate::triggers::{Intake, Routed};
use follow_up::FollowUps;
use medic_sandbox::event::FollowUp;
use medic_sandbox::{
    EventKind, EventRecord, Mode, OwnEffects, PluginState, RunReport, RunRequest, RunResult,
    Status, new_id, now_ms,
};
use queue::{DurableQueue, EventId, QueuedEvent, StartedRun};
use schedule::{Counters, Finished, GuardChange, Offer, Rules, RunTicket, Scheduler, Start};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const COUNTERS: &str = "plugin_counters";

/// Read a plugin's counters.
pub fn load_counters(ctx: &AgentContext, plugin: &str) -> Counters {
    ctx.store.get_json(COUNTERS, plugin).unwrap_or_default()
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
    /// Follow-up runs it asked for, not due yet.
    #[serde(default)]
    pub follow_ups: usize,
    pub flap_guard_tripped: bool,
    pub last_run: Option<String>,
    pub last_status: Option<Status>,
    pub last_run_ms: Option<u64>,
}

/// A plugin the policy names that does not serve: its component or its
/// table was refused at start-up or on a reload.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DisabledPlugin {
    pub name: String,
    pub reason: String,
}

/// The snapshot the agent keeps in the store for `medic status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentStatus {
    pub pid: u32,
    pub started_ms: u64,
    pub updated_ms: u64,
    pub running: usize,
    pub plugins: Vec<PluginStatus>,
    /// Plugins the policy names that are not served, and why.
    #[serde(default)]
    pub disabled: Vec<DisabledPlugin>,
    /// Why the store cannot be written, while it cannot: events, runs and
    /// records wait in memory meanwhile.
    #[serde(default)]
    pub store_failing: Option<String>,
    /// The dispatcher's writes waiting for the store.
    #[serde(default)]
    pub writes_waiting: usize,
    /// The store's own account of its health: since when it fails, and
    /// the journal records waiting or lost.
    #[serde(default)]
    pub store: StoreHealth,
}

/// Read the last snapshot the agent wrote.
pub fn read_status(store: &crate::audit::Store) -> Option<AgentStatus> {
    store.get_json(queue::STATUS_TABLE, queue::STATUS_KEY)
}

/// Orders for the dispatcher from the agent.
#[derive(Debug)]
pub enum Control {
    /// Serve this set of plugins from now on: runs in flight finish on the
    /// version they started with; queued events stay queued and run on the
    /// new version; plugins no longer in the set lose their queue. `done`
    /// is told once the set serves: a trigger started after that finds its
    /// plugin known, however busy the dispatcher is.
    Swap {
        plugins: Vec<Arc<ActivePlugin>>,
        done: tokio::sync::oneshot::Sender<()>,
    },
    /// These plugins the policy names are not served, and why.
    Disabled(Vec<DisabledPlugin>),
}

/// An event in the scheduler's queues: its place in the durable queue and
/// the event itself.
#[derive(Debug)]
pub struct Queued {
    pub id: EventId,
    pub event: EventRecord,
    /// Its run may start before its commit lands (from the start log).
    pub runs_ahead: bool,
}

/// A finished run, back from its blocking thread, with its journal record.
struct Done {
    key: u64,
    ticket: RunTicket,
    id: EventId,
    record: NewRecord,
    /// The run's id and outcome; none when the host itself failed.
    outcome: Option<(String, Status)>,
    /// The event that woke the run and the follow-up run its outcome
    /// asked for.
    follow_up: Option<(EventRecord, FollowUp)>,
    mutated: bool,
}

/// How long past its timeout a run may still be in flight before the
/// watchdog reports it: the sandbox ends runs at their deadline, so only a
/// host call it cannot interrupt keeps one longer.
const OVERDUE_AFTER: Duration = Duration::from_secs(5);

/// How often the status snapshot is rewritten even when nothing changed.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// How often dropped events are reported, with their count.
const DROP_REPORT_EVERY: Duration = Duration::from_secs(10);

/// How often a failing store is tried again when nothing else happens.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// The most events taken from the triggers before their writes are
/// committed: one commit covers a burst.
const INTAKE_BATCH: usize = 4096;

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
    /// Events dropped (queue full) since they were last reported.
    dropped_unreported: u64,
}

/// The dispatcher: owns the scheduler and the durable queue; runs on one
/// task.
pub struct Dispatcher {
    ctx: Arc<AgentContext>,
    scheduler: Scheduler<Queued>,
    queue: DurableQueue,
    served: BTreeMap<String, Served>,
    disabled: Vec<DisabledPlugin>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    /// Runs decided and written to the queue, to spawn once they are in
    /// the start log or committed.
    to_start: Vec<(Start<Queued>, String)>,
    /// Runs that wait for their commit (their event is read again by its
    /// source, or the start log could not take them): each spawns once the
    /// commit of that number, which marks it started, has landed.
    after_commit: Vec<(u64, Start<Queued>, String)>,
    /// A line read by a tail that found its plugin's queue full, and what
    /// came after it in order (the rest of that read, its position):
    /// taking more from the triggers waits until it fits, so a tail's
    /// backlog slows down instead of being dropped (and its position is
    /// not saved before it).
    held: std::collections::VecDeque<Intake>,
    started_ms: u64,
    dirty: bool,
    in_flight: BTreeMap<u64, InFlight>,
    next_key: u64,
    published: std::time::Instant,
    drops_reported: std::time::Instant,
    store_tried: std::time::Instant,
    /// Follow-up runs plugins asked for, not due yet.
    follow_ups: FollowUps,
}

/// Run `active` on `event`; returns the report and whether the run changed
/// the system.
fn run_plugin(
    ctx: &AgentContext,
    active: &ActivePlugin,
    own_effects: Arc<OwnEffects>,
    run_id: String,
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
            run_id,
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
    let mutated = report.calls.iter().any(|c| c.mutating && c.changed);
    (report, mutated)
}

/// The journal record of a run.
fn run_record(report: &RunReport, forced_dry_run: bool) -> NewRecord {
    let summary = match (&report.result, forced_dry_run) {
        (RunResult::Completed(o), false) => o.summary.clone(),
        (RunResult::Completed(o), true) => format!("[flap guard: dry run] {}", o.summary),
        (RunResult::Failed(f), _) => f.to_string(),
    };
    NewRecord {
        kind: RecordKind::Run,
        plugin: report.plugin.clone(),
        run_id: report.run_id.clone(),
        status: RecordStatus::Run(report.status()),
        summary,
        detail: serde_json::to_value(report).unwrap_or_default(),
    }
}

/// The record of a run cut off by the end of the agent that started it.
fn interrupted_record(queued: &QueuedEvent, started: &StartedRun) -> NewRecord {
    NewRecord {
        kind: RecordKind::Run,
        plugin: queued.plugin.clone(),
        run_id: started.run_id.clone(),
        status: RecordStatus::Interrupted,
        summary: format!(
            "cut off: the agent ended during this run (started at {} ms){}; what it changed was not recorded; its event runs again",
            started.at_ms,
            if started.forced_dry_run {
                ", a dry run under the flap guard"
            } else {
                ""
            }
        ),
        detail: serde_json::json!({
            "event": queued.event,
            "started_ms": started.at_ms,
            "forced_dry_run": started.forced_dry_run,
        }),
    }
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
    /// A dispatcher serving `plugins`, with what a previous agent left in
    /// the durable queue taken up: runs it cut off are recorded as
    /// interrupted, and their events, with every other event left, queued
    /// again (those of plugins no longer served are dropped, and said so).
    pub fn new(
        ctx: Arc<AgentContext>,
        plugins: Vec<Arc<ActivePlugin>>,
    ) -> Result<Self, StoreError> {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let scheduler = Scheduler::new(
            ctx.policy.agent.max_concurrent_runs,
            ctx.policy.agent.queue_capacity,
        );
        let (queue, left) = DurableQueue::open(ctx.store.clone(), ctx.journal.clone())?;
        let now = std::time::Instant::now();
        let mut dispatcher = Self {
            ctx,
            scheduler,
            queue,
            served: BTreeMap::new(),
            disabled: Vec::new(),
            done_tx,
            done_rx,
            to_start: Vec::new(),
            after_commit: Vec::new(),
            held: std::collections::VecDeque::new(),
            started_ms: now_ms(),
            dirty: true,
            in_flight: BTreeMap::new(),
            next_key: 0,
            published: now,
            drops_reported: now,
            store_tried: now,
            follow_ups: FollowUps::default(),
        };
        dispatcher.swap(plugins);
        dispatcher.take_up(left);
        // A failure is kept and said loudly; the agent serves meanwhile.
        let _ = dispatcher.queue.commit();
        Ok(dispatcher)
    }

    /// Queue again what a previous agent left.
    fn take_up(&mut self, left: Vec<(EventId, QueuedEvent)>) {
        let (mut again, mut interrupted, mut gone) = (0, 0, 0);
        for (id, mut queued) in left {
            if let Some(started) = queued.started.take() {
                interrupted += 1;
                tracing::warn!(plugin = %queued.plugin, run = %started.run_id, "a run was cut off by the end of the last agent; its event runs again");
                self.queue.record(interrupted_record(&queued, &started));
                self.queue.put(id, &queued);
            }
            if let Some(due_ms) = queued.not_before_ms
                && due_ms > now_ms()
            {
                // A follow-up not due yet: held until its time.
                again += 1;
                self.follow_ups.hold(follow_up::Pending {
                    id,
                    plugin: queued.plugin,
                    event: queued.event,
                    due_ms,
                });
                continue;
            }
            let subject = queued.event.subject.clone();
            let offer = self.scheduler.requeue(
                &queued.plugin,
                &subject,
                Queued {
                    id,
                    runs_ahead: queue::logged_before_its_run(queued.event.kind),
                    event: queued.event,
                },
            );
            match offer {
                Offer::Queued => again += 1,
                Offer::Coalesced => self.queue.remove(id),
                Offer::QueueFull => {
                    self.note_drop(&queued.plugin);
                    self.queue.remove(id);
                }
                Offer::UnknownPlugin => {
                    gone += 1;
                    tracing::warn!(plugin = %queued.plugin, "an event left in the queue is for a plugin no longer served; dropped");
                    self.queue.remove(id);
                }
            }
        }
        if again + gone > 0 {
            tracing::info!(
                queued_again = again,
                interrupted,
                dropped = gone,
                "took up the events the last agent left in its queue"
            );
        }
    }

    /// Serve until `events` closes and every run in flight has finished
    /// and is recorded (or kept, while the store cannot be written).
    pub async fn serve(
        mut self,
        mut events: mpsc::Receiver<Intake>,
        mut control: mpsc::Receiver<Control>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut open = true;
        loop {
            // When a rate limit or the flap guard next lets something start.
            let wake = [
                self.scheduler.next_wake(now_ms()),
                self.follow_ups.next_due(),
            ]
            .into_iter()
            .flatten()
            .min()
            .map(|at| Duration::from_millis(at.saturating_sub(now_ms())));
            tokio::select! {
                _ = tokio::time::sleep(wake.unwrap_or_default()), if wake.is_some() => {}
                intake = events.recv(), if open && self.held.is_empty() => match intake {
                    Some(intake) => {
                        self.intake(intake);
                        // A burst is taken whole, and committed once.
                        for _ in 1..INTAKE_BATCH {
                            if !self.held.is_empty() {
                                break;
                            }
                            match events.try_recv() {
                                Ok(intake) => self.intake(intake),
                                Err(_) => break,
                            }
                        }
                    }
                    None => open = false,
                },
                Some(order) = control.recv() => match order {
                    Control::Swap { plugins, done } => {
                        self.swap(plugins);
                        let _ = done.send(());
                    }
                    Control::Disabled(disabled) => {
                        self.disabled = disabled;
                        self.dirty = true;
                    }
                },
                Some(done) = self.done_rx.recv() => {
                    self.finish(done);
                    while let Ok(done) = self.done_rx.try_recv() {
                        self.finish(done);
                    }
                }
                joined = self.queue.landing(), if self.queue.committing() => {
                    self.land(joined);
                }
                _ = tick.tick() => {
                    self.watch();
                    self.report_drops(false);
                    let health = self.ctx.store.health();
                    if (self.queue.failing().is_some()
                        || health.degraded_since_ms.is_some()
                        || health.records_waiting > 0)
                        && self.store_tried.elapsed() >= STORE_RETRY
                    {
                        // Also writes the journal records other parts of
                        // the agent could not.
                        self.queue.retry();
                        self.begin_commit();
                    }
                    self.publish_status();
                }
            }
            if open {
                self.release_follow_ups();
                self.pump();
                for intake in std::mem::take(&mut self.held) {
                    self.intake(intake);
                }
            }
            // Runs whose start is in the start log need not wait for the
            // commit's fsync; the others start once it has landed. A read
            // half taken (held) is not logged: its events without their
            // position would run twice after a kill.
            let starting = !self.to_start.is_empty() || !self.after_commit.is_empty();
            if self.queue.write_ahead(self.held.is_empty()) {
                self.spawn_started();
            } else {
                let number = self.queue.next_commit();
                self.after_commit.extend(
                    self.to_start
                        .drain(..)
                        .map(|(start, run_id)| (number, start, run_id)),
                );
            }
            if self.queue.failing().is_none() || starting {
                self.begin_commit();
            }
            if !open && self.scheduler.running() == 0 && self.after_commit.is_empty() {
                self.queue.settle().await;
                self.report_drops(true);
                // Give a failing store a last few tries before the end.
                for _ in 0..3 {
                    if self.queue.waiting() == 0 || self.commit_ok() {
                        break;
                    }
                    tokio::time::sleep(STORE_RETRY).await;
                }
                if self.queue.waiting() > 0 {
                    tracing::error!(
                        waiting = self.queue.waiting(),
                        "the agent ends with writes the store did not take: their events run again at the next start, and runs since are not recorded"
                    );
                }
                self.publish_status();
                self.queue.settle().await;
                break;
            }
        }
    }

    /// Start a commit of the writes waiting, unless one is in flight.
    fn begin_commit(&mut self) {
        if !self.queue.committing() {
            self.store_tried = std::time::Instant::now();
        }
        self.queue.begin_commit();
    }

    /// Take in a commit that landed, and start the runs that waited for it.
    fn land(&mut self, joined: Result<queue::Landed, tokio::task::JoinError>) {
        let was_failing = self.queue.failing().is_some();
        let number = joined.as_ref().map_or(u64::MAX, |landed| landed.number());
        // A failure is kept, and said once by the queue; the runs start
        // even so, as the start log could not take them either.
        let _ = self.queue.land(joined);
        if was_failing != self.queue.failing().is_some() {
            self.dirty = true;
        }
        let (ready, waiting) = std::mem::take(&mut self.after_commit)
            .into_iter()
            .partition(|(after, _, _)| *after <= number);
        self.after_commit = waiting;
        self.to_start
            .extend(ready.into_iter().map(|(_, start, run_id)| (start, run_id)));
        self.spawn_started();
    }

    /// Commit what waits, here (at the end, with nothing in flight).
    fn commit_ok(&mut self) -> bool {
        self.store_tried = std::time::Instant::now();
        let _ = self.queue.commit();
        self.queue.failing().is_none()
    }

    fn swap(&mut self, plugins: Vec<Arc<ActivePlugin>>) {
        let ctx = &self.ctx;
        let removed = self.scheduler.set_plugins(plugins.iter().map(|p| {
            let name = p.policy.name.clone();
            let counters = load_counters(ctx, &name);
            (name, rules(p), counters)
        }));
        for (name, dropped) in removed {
            tracing::info!(plugin = %name, dropped = dropped.len(), "plugin removed from the policy");
            for queued in dropped {
                self.queue.remove(queued.id);
            }
            self.served.remove(&name);
        }
        for active in plugins {
            self.disabled.retain(|d| d.name != active.policy.name);
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
                            dropped_unreported: 0,
                        },
                    );
                }
            }
        }
        self.dirty = true;
    }

    fn intake(&mut self, intake: Intake) {
        if !self.held.is_empty() {
            // Behind a held line, in order.
            self.held.push_back(intake);
            return;
        }
        match intake {
            Intake::Event(routed) => self.accept(routed),
            Intake::Read(items) => {
                for item in items {
                    self.intake(item);
                }
            }
            Intake::TailPosition {
                key,
                position,
                kind,
            } => self.queue.position(key, position, kind),
            Intake::EventLogBookmark { key, bookmark } => self.queue.bookmark(key, bookmark),
            Intake::JournalCursor { key, cursor } => self.queue.journal_cursor(key, cursor),
            Intake::InboxConsumed(file) => self.queue.consumed(file),
        }
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
        // A follow-up not yet due (one `medic approve` handed over) waits
        // for its time, kept in the durable queue.
        if event.kind == EventKind::FollowUp && event.time_ms > now_ms() {
            self.hold_follow_up(&routed.plugin, event);
            return;
        }
        let subject = event.subject.clone();
        let id = self.queue.next_id();
        let queued = QueuedEvent {
            plugin: routed.plugin.clone(),
            event: event.clone(),
            started: None,
            not_before_ms: None,
        };
        let runs_ahead = !routed.from_inbox && queue::logged_before_its_run(event.kind);
        let offered = Queued {
            id,
            event,
            runs_ahead,
        };
        match self.scheduler.offer(&routed.plugin, &subject, offered) {
            Offer::Queued => {
                if runs_ahead {
                    self.queue.put(id, &queued);
                } else {
                    self.queue.put_waiting(id, &queued);
                }
                self.dirty = true;
            }
            Offer::Coalesced => {}
            Offer::QueueFull
                if matches!(
                    queued.event.kind,
                    EventKind::LogLine | EventKind::SystemEvent
                ) =>
            {
                // Read again from the log rather than dropped: held until
                // it fits, and the triggers wait meanwhile.
                self.held.push_back(
                    Routed {
                        from_inbox: routed.from_inbox,
                        ..Routed::new(queued.plugin, queued.event)
                    }
                    .into(),
                );
            }
            Offer::QueueFull => self.note_drop(&routed.plugin),
            Offer::UnknownPlugin => {
                tracing::warn!(plugin = %routed.plugin, "event for a plugin the dispatcher does not serve; dropped")
            }
        }
    }

    fn note_drop(&mut self, plugin: &str) {
        if let Some(served) = self.served.get_mut(plugin) {
            served.dropped_unreported += 1;
        }
    }

    /// One line per plugin that dropped events since the last report,
    /// with the count, at most every [`DROP_REPORT_EVERY`].
    fn report_drops(&mut self, now: bool) {
        if !now && self.drops_reported.elapsed() < DROP_REPORT_EVERY {
            return;
        }
        self.drops_reported = std::time::Instant::now();
        let capacity = self.ctx.policy.agent.queue_capacity;
        for (name, served) in &mut self.served {
            let dropped = std::mem::take(&mut served.dropped_unreported);
            if dropped > 0 {
                let total = self.scheduler.plugin(name).map_or(0, |p| p.dropped);
                tracing::warn!(plugin = %name, dropped, total, capacity, "queue full: events dropped since the last report");
            }
        }
    }

    /// Decide every run that the limits allow now; they are marked as
    /// started in the durable queue and spawned once that is in the start
    /// log, or committed.
    fn pump(&mut self) {
        let decisions = self.scheduler.next_runs(now_ms());
        for (plugin, counters) in &decisions.persist {
            self.queue.counters(plugin, counters);
        }
        for change in decisions.guard_changes {
            self.record_guard_change(change);
        }
        for start in decisions.starts {
            let run_id = new_id("run");
            let queued = QueuedEvent {
                plugin: start.plugin.clone(),
                event: start.event.event.clone(),
                started: Some(StartedRun {
                    run_id: run_id.clone(),
                    at_ms: now_ms(),
                    forced_dry_run: start.forced_dry_run,
                }),
                not_before_ms: None,
            };
            if start.event.runs_ahead {
                self.queue.put(start.event.id, &queued);
                self.to_start.push((start, run_id));
            } else {
                self.queue.put_waiting(start.event.id, &queued);
                let number = self.queue.next_commit();
                self.after_commit.push((number, start, run_id));
            }
        }
    }

    fn spawn_started(&mut self) {
        for (start, run_id) in std::mem::take(&mut self.to_start) {
            let Some(served) = self.served.get(&start.plugin) else {
                // The plugin left the policy while its run waited for its
                // commit: its event goes, as the rest of its queue did.
                tracing::info!(plugin = %start.plugin, run = %run_id, "a run waiting for its commit is dropped: its plugin is no longer served");
                self.queue.remove(start.event.id);
                let _ = self.scheduler.finish(start.ticket, false, now_ms());
                continue;
            };
            let (active, own_effects) = (served.active.clone(), served.own_effects.clone());
            self.dirty = true;
            self.start_run(start, run_id, active, own_effects);
        }
    }

    fn record_guard_change(&mut self, change: GuardChange) {
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
        // With the counters that say so, in one transaction.
        self.queue.record(record);
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
        start: Start<Queued>,
        run_id: String,
        active: Arc<ActivePlugin>,
        own_effects: Arc<OwnEffects>,
    ) {
        let key = self.next_key;
        self.next_key += 1;
        let Start {
            ticket,
            plugin,
            event: Queued { id, event, .. },
            forced_dry_run,
        } = start;
        self.in_flight.insert(
            key,
            InFlight {
                plugin: plugin.clone(),
                started: std::time::Instant::now(),
                timeout: active.policy.limits.timeout,
                overdue: false,
            },
        );
        let ctx = self.ctx.clone();
        let done = self.done_tx.clone();
        tokio::task::spawn_blocking(move || {
            // A bug in a host call must not keep the run's place taken for
            // good: its ticket comes back whatever happens.
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_plugin(
                    &ctx,
                    &active,
                    own_effects,
                    run_id.clone(),
                    event.clone(),
                    forced_dry_run,
                )
            }));
            let (record, outcome, follow_up, mutated) = match run {
                Ok((report, mutated)) => (
                    run_record(&report, forced_dry_run),
                    Some((report.run_id.clone(), report.status())),
                    report
                        .outcome()
                        .and_then(|o| o.follow_up.clone())
                        .map(|request| (event.clone(), request)),
                    mutated,
                ),
                Err(_) => {
                    tracing::error!(
                        plugin,
                        run = %run_id,
                        "the host failed during a run; counted as a run that changed the system"
                    );
                    let record = NewRecord {
                        kind: RecordKind::Run,
                        plugin,
                        run_id,
                        status: RecordStatus::Run(Status::Failed),
                        summary:
                            "the host failed during this run; what it changed was not recorded"
                                .into(),
                        detail: serde_json::json!({ "event": event }),
                    };
                    (record, None, None, true)
                }
            };
            // The dispatcher outlives every run it starts: it waits for them
            // before it stops, so the channel is open.
            let _ = done.send(Done {
                key,
                ticket,
                id,
                record,
                outcome,
                follow_up,
                mutated,
            });
        });
    }

    /// Hold the follow-up run a plugin asked for, written to the durable
    /// queue with the run's record.
    fn schedule_follow_up(&mut self, plugin: &str, asking: &EventRecord, request: &FollowUp) {
        let due_ms = now_ms() + u64::from(request.after_seconds) * 1_000;
        tracing::info!(plugin, subject = %asking.subject, after_seconds = request.after_seconds, reason = %request.reason, "follow-up run scheduled");
        self.hold_follow_up(plugin, follow_up::event(asking, request, due_ms));
    }

    /// Keep the follow-up `event` (due at its time) in the durable queue
    /// and hold it until then.
    fn hold_follow_up(&mut self, plugin: &str, event: EventRecord) {
        let due_ms = event.time_ms;
        let id = self.queue.next_id();
        self.queue.put(
            id,
            &QueuedEvent {
                plugin: plugin.to_string(),
                event: event.clone(),
                started: None,
                not_before_ms: Some(due_ms),
            },
        );
        for replaced in self.follow_ups.hold(follow_up::Pending {
            id,
            plugin: plugin.to_string(),
            event,
            due_ms,
        }) {
            self.queue.remove(replaced);
        }
    }

    /// Queue the follow-ups that are due like any event.
    fn release_follow_ups(&mut self) {
        for pending in self.follow_ups.take_due(now_ms()) {
            let offer = self.scheduler.offer(
                &pending.plugin,
                &pending.event.subject.clone(),
                Queued {
                    id: pending.id,
                    event: pending.event.clone(),
                    // Committed when it was asked for.
                    runs_ahead: true,
                },
            );
            match offer {
                Offer::Queued => self.dirty = true,
                // A run for that subject is waiting: it checks as well.
                Offer::Coalesced => self.queue.remove(pending.id),
                // Kept, and offered again a moment later.
                Offer::QueueFull => {
                    let due_ms = now_ms() + 1_000;
                    for replaced in self
                        .follow_ups
                        .hold(follow_up::Pending { due_ms, ..pending })
                    {
                        self.queue.remove(replaced);
                    }
                }
                Offer::UnknownPlugin => {
                    tracing::warn!(plugin = %pending.plugin, "a follow-up run is for a plugin no longer served; dropped");
                    self.queue.remove(pending.id);
                }
            }
        }
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
        // The run's record, its event's removal and the follow-up it asked
        // for land together.
        self.queue.record(done.record);
        self.queue.remove(done.id);
        let plugin = done.ticket.plugin().to_string();
        let now = now_ms();
        match self.scheduler.finish(done.ticket, done.mutated, now) {
            Finished::Current { persist } => {
                if let Some(counters) = persist {
                    self.queue.counters(&plugin, &counters);
                }
                if let Some((asking, request)) = &done.follow_up {
                    self.schedule_follow_up(&plugin, asking, request);
                }
                if let (Some(served), Some((run_id, status))) =
                    (self.served.get_mut(&plugin), done.outcome)
                {
                    served.last = Some((run_id, status, now));
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
                    follow_ups: self.follow_ups.waiting(view.name),
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
            disabled: self.disabled.clone(),
            store_failing: self.queue.failing().map(str::to_string),
            writes_waiting: self.queue.waiting(),
            store: self.ctx.store.health(),
        };
        if self.queue.failing().is_some() {
            // Written apart, so that `medic status` shows why the queue's
            // commits fail when only they do (a broken journal); when the
            // whole store fails this fails too, and the queue says so.
            let _ = self
                .ctx
                .store
                .put_json(queue::STATUS_TABLE, queue::STATUS_KEY, &status);
        } else if let Ok(json) = serde_json::to_vec(&status) {
            self.queue.status(json);
            self.begin_commit();
        }
    }
}
