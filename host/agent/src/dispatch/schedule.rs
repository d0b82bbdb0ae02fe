//! The dispatcher's decisions as a pure state machine: which queued event
//! runs when. No I/O, no clock (every call takes `now_ms`), no async; the
//! shell spawns the runs, writes the journal and persists the counters.
//!
//! Invariants:
//! - Runs started and not finished never exceed `max_running`, across
//!   reloads: every [`RunTicket`] counts until it is given back to
//!   [`Scheduler::finish`], whether or not its plugin is still served.
//!   Tickets cannot be cloned, so no run is finished twice.
//! - A plugin *instance* lives from the [`Scheduler::set_plugins`] that adds
//!   its name to the one that leaves it out. Reloading with the name still
//!   listed keeps the instance (queue, counters, statistics, runs in flight)
//!   and swaps its rules; removing and re-adding makes a new instance, and
//!   runs of the old one, when they finish, change nothing of it.
//! - A run starts only while its instance has fewer than `concurrency` runs
//!   in flight (lowering it on reload lets the runs in flight finish).
//! - Limits delay events, never drop them: only a full queue (counted in
//!   `dropped`) or the plugin's removal (reported by `set_plugins`) does. An
//!   event whose subject is already waiting is coalesced into the waiting
//!   one (counted); once dequeued for a run the subject may queue again.
//! - Rate limit: a run may start when fewer than `max_runs` runs started
//!   within the last `window` and `cooldown` has passed since the last start.
//!   Starts are recorded when the run starts.
//! - Flap guard: mutating runs are recorded when they finish; the guard holds
//!   while at least `max_mutating_runs` of them ended within `within`. Runs
//!   still start then, as forced dry runs. Every `next_runs` checks every
//!   plugin's guard, queued or not; each trip and each release is reported
//!   exactly once ([`GuardChange`]) and kept in [`Counters::guard_tripped_at`].
//! - History is kept only for the limits a plugin has, pruned to their
//!   windows, so the persisted counters stay small.
//! - Fairness: runs are handed out round-robin over plugins, continuing
//!   after the plugin served last; and the last free place (when there are
//!   two or more) goes only to a plugin with no run in flight, so no one
//!   plugin can take every place, however slow its runs.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::time::Duration;

pub use crate::policy::{FlapGuard, RateLimit};

/// What the scheduler needs to know of one plugin's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Runs of this plugin in flight at once.
    pub concurrency: usize,
    pub rate: Option<RateLimit>,
    pub flap_guard: Option<FlapGuard>,
}

/// Rate-limit and flap-guard history of one plugin, persisted by the shell
/// so that a restart does not reset it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Start times of recent runs, ms.
    pub runs: Vec<u64>,
    /// End times of recent runs that changed the system, ms.
    pub mutating: Vec<u64>,
    /// When the flap guard tripped, while it holds.
    pub guard_tripped_at: Option<u64>,
}

/// What became of an offered event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// An event for the same subject is already waiting; this one is dropped.
    Coalesced,
    /// The plugin's queue is full; the event is dropped (and counted).
    QueueFull,
    UnknownPlugin,
}

/// A run in flight; give it back to [`Scheduler::finish`] exactly once.
/// Identifies the plugin instance, not only its name. Dropping it instead
/// keeps its place in `max_running` taken for good.
#[must_use = "give the ticket back to Scheduler::finish"]
#[derive(Debug, PartialEq, Eq)]
pub struct RunTicket {
    plugin: String,
    instance: u64,
}

impl RunTicket {
    /// The plugin the run belongs to.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }
}

/// A run to spawn now.
#[derive(Debug)]
pub struct Start<E> {
    pub ticket: RunTicket,
    pub plugin: String,
    pub event: E,
    /// The flap guard holds: run in dry-run mode whatever the policy says.
    pub forced_dry_run: bool,
}

/// A flap guard transition, to record in the journal and alert on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardChange {
    Tripped {
        plugin: String,
        /// End times of the mutating runs within the guard's window.
        mutating_runs: Vec<u64>,
    },
    Released {
        plugin: String,
    },
}

/// What [`Scheduler::next_runs`] decided.
#[must_use]
#[derive(Debug)]
pub struct Decisions<E> {
    pub starts: Vec<Start<E>>,
    pub guard_changes: Vec<GuardChange>,
    /// Plugins whose counters changed, with the counters to persist.
    pub persist: Vec<(String, Counters)>,
}

/// What [`Scheduler::finish`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    /// The run's plugin instance is still served; persist the counters if
    /// they changed.
    Current { persist: Option<Counters> },
    /// The plugin was removed (and maybe re-added) since the run started;
    /// only the global count changed.
    Stale,
}

/// Read-only view of one plugin, for status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginView<'a> {
    pub name: &'a str,
    pub rules: &'a Rules,
    pub queued: usize,
    pub running: usize,
    pub coalesced: u64,
    pub dropped: u64,
    pub guard_tripped: bool,
    pub counters: &'a Counters,
}

#[derive(Debug)]
struct Slot<E> {
    instance: u64,
    rules: Rules,
    queue: VecDeque<(String, E)>,
    waiting: HashSet<String>,
    running: usize,
    counters: Counters,
    coalesced: u64,
    dropped: u64,
}

/// The scheduling state of every served plugin and of the runs in flight.
#[derive(Debug)]
pub struct Scheduler<E> {
    slots: BTreeMap<String, Slot<E>>,
    running: usize,
    max_running: usize,
    queue_capacity: usize,
    last_instance: u64,
    /// The plugin served last, where the round-robin goes on from.
    cursor: Option<String>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The times at or after `now - span`, sorted.
fn recent(times: &[u64], now: u64, span: Duration) -> Vec<u64> {
    let from = now.saturating_sub(ms(span));
    let mut recent: Vec<u64> = times.iter().copied().filter(|t| *t >= from).collect();
    recent.sort_unstable();
    recent
}

/// Drops the times before `now - span`; whether any was dropped.
fn prune(times: &mut Vec<u64>, now: u64, span: Duration) -> bool {
    let (from, before) = (now.saturating_sub(ms(span)), times.len());
    times.retain(|t| *t >= from);
    times.len() != before
}

/// The earliest time at which fewer than `max` of `times` lie within
/// `span` (0 if already so), or None if never.
fn frees_at(times: &[u64], now: u64, max: u32, span: Duration) -> Option<u64> {
    let (recent, max) = (recent(times, now, span), max as usize);
    if recent.len() < max {
        return Some(0);
    }
    let expires = recent.get(recent.len() - max)?;
    Some(expires.saturating_add(ms(span)).saturating_add(1))
}

impl RateLimit {
    /// The earliest time a run may start after `runs`, None if never.
    fn allows_at(&self, runs: &[u64], now: u64) -> Option<u64> {
        let cooldown_end = runs
            .iter()
            .max()
            .map_or(0, |t| t.saturating_add(ms(self.cooldown)));
        let window = frees_at(runs, now, self.max_runs, self.window)?;
        Some(cooldown_end.max(window))
    }
}

impl<E> Slot<E> {
    /// When this plugin may start its next queued event, leaving the global
    /// limit aside; None if it has none or its concurrency is taken.
    fn ready_at(&self, now: u64) -> Option<u64> {
        if self.queue.is_empty() || self.running >= self.rules.concurrency {
            return None;
        }
        match self.rules.rate {
            None => Some(0),
            Some(rate) => rate.allows_at(&self.counters.runs, now),
        }
    }

    /// Prunes the history and updates the flap guard; whether the counters
    /// changed, and the guard's transition.
    fn refresh(&mut self, name: &str, now: u64) -> (bool, Option<GuardChange>) {
        let c = &mut self.counters;
        let mut changed = match self.rules.rate {
            Some(r) => prune(&mut c.runs, now, r.window.max(r.cooldown)),
            None => !std::mem::take(&mut c.runs).is_empty(),
        };
        changed |= match self.rules.flap_guard {
            Some(g) => prune(&mut c.mutating, now, g.within),
            None => !std::mem::take(&mut c.mutating).is_empty(),
        };
        let holds = self.rules.flap_guard.is_some_and(|g| {
            recent(&c.mutating, now, g.within).len() >= g.max_mutating_runs as usize
        });
        let plugin = name.to_string();
        let change = match (holds, c.guard_tripped_at) {
            (true, None) => {
                c.guard_tripped_at = Some(now);
                let mutating_runs = c.mutating.clone();
                Some(GuardChange::Tripped {
                    plugin,
                    mutating_runs,
                })
            }
            (false, Some(_)) => {
                c.guard_tripped_at = None;
                Some(GuardChange::Released { plugin })
            }
            _ => None,
        };
        (changed || change.is_some(), change)
    }

    fn view<'a>(&'a self, name: &'a str) -> PluginView<'a> {
        PluginView {
            name,
            rules: &self.rules,
            queued: self.queue.len(),
            running: self.running,
            coalesced: self.coalesced,
            dropped: self.dropped,
            guard_tripped: self.counters.guard_tripped_at.is_some(),
            counters: &self.counters,
        }
    }
}

impl<E> Scheduler<E> {
    /// No plugins yet; at most `max_running` runs at once overall, at most
    /// `queue_capacity` events waiting per plugin.
    pub fn new(max_running: usize, queue_capacity: usize) -> Self {
        Self {
            slots: BTreeMap::new(),
            running: 0,
            max_running,
            queue_capacity,
            last_instance: 0,
            cursor: None,
        }
    }

    /// Serve exactly these plugins from now on (start-up and every reload).
    /// One already served keeps its queue, counters and statistics and takes
    /// the new rules (its given counters are ignored); a new one starts with
    /// the given counters; one no longer listed loses its queue. Returns every
    /// removed plugin with the events dropped from its queue. If a name is
    /// listed twice, the last entry wins.
    pub fn set_plugins(
        &mut self,
        plugins: impl IntoIterator<Item = (String, Rules, Counters)>,
    ) -> Vec<(String, Vec<E>)> {
        let listed: BTreeMap<String, (Rules, Counters)> =
            plugins.into_iter().map(|(n, r, c)| (n, (r, c))).collect();
        let gone: Vec<String> = self
            .slots
            .keys()
            .filter(|n| !listed.contains_key(*n))
            .cloned()
            .collect();
        let mut removed = Vec::with_capacity(gone.len());
        for name in gone {
            if let Some(slot) = self.slots.remove(&name) {
                removed.push((name, slot.queue.into_iter().map(|(_, e)| e).collect()));
            }
        }
        for (name, (rules, counters)) in listed {
            match self.slots.get_mut(&name) {
                Some(slot) => slot.rules = rules,
                None => {
                    self.last_instance += 1;
                    let slot = Slot {
                        instance: self.last_instance,
                        rules,
                        queue: VecDeque::new(),
                        waiting: HashSet::new(),
                        running: 0,
                        counters,
                        coalesced: 0,
                        dropped: 0,
                    };
                    self.slots.insert(name, slot);
                }
            }
        }
        removed
    }

    /// Offer an event about `subject` to `plugin`'s queue.
    pub fn offer(&mut self, plugin: &str, subject: &str, event: E) -> Offer {
        self.offer_within(plugin, subject, event, self.queue_capacity)
    }

    /// Offer again an event accepted before (by an agent that ended with
    /// it queued): it was within the capacity then, and is not dropped now,
    /// though runs cut off come back on top of a full queue.
    pub fn requeue(&mut self, plugin: &str, subject: &str, event: E) -> Offer {
        self.offer_within(plugin, subject, event, usize::MAX)
    }

    fn offer_within(&mut self, plugin: &str, subject: &str, event: E, capacity: usize) -> Offer {
        let Some(slot) = self.slots.get_mut(plugin) else {
            return Offer::UnknownPlugin;
        };
        if slot.waiting.contains(subject) {
            slot.coalesced += 1;
            return Offer::Coalesced;
        }
        if slot.queue.len() >= capacity {
            slot.dropped += 1;
            return Offer::QueueFull;
        }
        slot.waiting.insert(subject.to_string());
        slot.queue.push_back((subject.to_string(), event));
        Offer::Queued
    }

    /// Every run the limits allow at `now_ms`, handed out round-robin over
    /// plugins; also the flap guard transitions and the counters to persist.
    pub fn next_runs(&mut self, now_ms: u64) -> Decisions<E> {
        let mut changed = BTreeSet::new();
        let mut guard_changes = Vec::new();
        for (name, slot) in &mut self.slots {
            let (counters_changed, change) = slot.refresh(name, now_ms);
            if counters_changed {
                changed.insert(name.clone());
            }
            guard_changes.extend(change);
        }
        let names: Vec<String> = self.slots.keys().cloned().collect();
        let first = self
            .cursor
            .as_ref()
            .map_or(0, |c| names.partition_point(|n| n <= c));
        let mut starts = Vec::new();
        let mut progressed = true;
        while progressed && self.running < self.max_running {
            progressed = false;
            for i in 0..names.len() {
                let name = &names[(first + i) % names.len()];
                let Some(slot) = self.slots.get_mut(name) else {
                    continue;
                };
                if self.running >= self.max_running
                    || slot.ready_at(now_ms).is_none_or(|t| t > now_ms)
                {
                    continue;
                }
                let last_place = self.max_running - self.running == 1;
                if last_place && self.max_running > 1 && slot.running > 0 {
                    continue;
                }
                let Some((subject, event)) = slot.queue.pop_front() else {
                    continue;
                };
                slot.waiting.remove(&subject);
                if slot.rules.rate.is_some() {
                    slot.counters.runs.push(now_ms);
                    changed.insert(name.clone());
                }
                slot.running += 1;
                self.running += 1;
                self.cursor = Some(name.clone());
                progressed = true;
                let ticket = RunTicket {
                    plugin: name.clone(),
                    instance: slot.instance,
                };
                let forced_dry_run = slot.counters.guard_tripped_at.is_some();
                starts.push(Start {
                    ticket,
                    plugin: name.clone(),
                    event,
                    forced_dry_run,
                });
            }
        }
        let persist = changed
            .into_iter()
            .filter_map(|n| {
                self.slots
                    .get(&n)
                    .map(|s| s.counters.clone())
                    .map(|c| (n, c))
            })
            .collect();
        Decisions {
            starts,
            guard_changes,
            persist,
        }
    }

    /// A run ended at `now_ms`; `mutated` = it applied at least one change.
    pub fn finish(&mut self, ticket: RunTicket, mutated: bool, now_ms: u64) -> Finished {
        self.running = self.running.saturating_sub(1);
        let current = self
            .slots
            .get_mut(&ticket.plugin)
            .filter(|s| s.instance == ticket.instance);
        let Some(slot) = current else {
            return Finished::Stale;
        };
        slot.running = slot.running.saturating_sub(1);
        if !(mutated && slot.rules.flap_guard.is_some()) {
            return Finished::Current { persist: None };
        }
        slot.counters.mutating.push(now_ms);
        Finished::Current {
            persist: Some(slot.counters.clone()),
        }
    }

    /// The earliest time after `now_ms` at which [`Self::next_runs`] will
    /// decide something new with no other input (a rate-limited queue may
    /// start, a tripped guard releases), assuming it was just called at
    /// `now_ms`; None if only an event, a finished run or a reload can.
    pub fn next_wake(&self, now_ms: u64) -> Option<u64> {
        let wakes = self.slots.values().flat_map(|s| {
            let release = match (s.rules.flap_guard, s.counters.guard_tripped_at) {
                (Some(g), Some(_)) => {
                    frees_at(&s.counters.mutating, now_ms, g.max_mutating_runs, g.within)
                }
                _ => None,
            };
            s.ready_at(now_ms).into_iter().chain(release)
        });
        wakes.filter(|t| *t > now_ms).min()
    }

    /// Runs started and not finished, of any plugin instance, past or present.
    pub fn running(&self) -> usize {
        self.running
    }

    pub fn plugin(&self, name: &str) -> Option<PluginView<'_>> {
        self.slots.get_key_value(name).map(|(n, s)| s.view(n))
    }

    /// Every served plugin, in name order.
    pub fn plugins(&self) -> impl Iterator<Item = PluginView<'_>> {
        self.slots.iter().map(|(n, s)| s.view(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rules with an optional rate (max runs, window, cooldown in ms) and
    /// flap guard (max mutating runs, within in ms).
    fn rules(
        concurrency: usize,
        rate: Option<(u32, u64, u64)>,
        guard: Option<(u32, u64)>,
    ) -> Rules {
        let ms = Duration::from_millis;
        let rate = rate.map(|(max_runs, w, c)| RateLimit {
            max_runs,
            window: ms(w),
            cooldown: ms(c),
        });
        let flap_guard = guard.map(|(max_mutating_runs, w)| FlapGuard {
            max_mutating_runs,
            within: ms(w),
        });
        Rules {
            concurrency,
            rate,
            flap_guard,
        }
    }

    /// Serve `plugins`; the removed ones with how many events they lost.
    fn serve(s: &mut Scheduler<u32>, plugins: &[(&str, Rules)]) -> Vec<(String, usize)> {
        s.set_plugins(
            plugins
                .iter()
                .map(|(n, r)| (n.to_string(), r.clone(), Counters::default())),
        )
        .into_iter()
        .map(|(name, dropped)| (name, dropped.len()))
        .collect()
    }

    fn scheduler(max_running: usize, capacity: usize, plugins: &[(&str, Rules)]) -> Scheduler<u32> {
        let mut s = Scheduler::new(max_running, capacity);
        serve(&mut s, plugins);
        s
    }

    /// Offers one event per character of `subjects`, numbered from `first`.
    fn offer(s: &mut Scheduler<u32>, plugin: &str, subjects: &str, first: u32) -> Vec<Offer> {
        let events = subjects.chars().zip(first..);
        events
            .map(|(c, i)| s.offer(plugin, &c.to_string(), i))
            .collect()
    }

    fn starts(s: &mut Scheduler<u32>, now: u64) -> Vec<Start<u32>> {
        s.next_runs(now).starts
    }

    #[test]
    fn full_queues_drop_and_waiting_subjects_coalesce() {
        let mut s = scheduler(4, 2, &[("a", rules(1, None, None))]);
        use Offer::*;
        assert_eq!(
            offer(&mut s, "a", "xxyzx", 0),
            [Queued, Coalesced, Queued, QueueFull, Coalesced]
        );
        assert_eq!(s.offer("b", "x", 5), UnknownPlugin);
        let a = s.plugin("a").unwrap();
        assert_eq!((a.queued, a.dropped, a.coalesced), (2, 1, 2));
        let mut run = starts(&mut s, 0);
        assert_eq!(run[0].event, 0, "the waiting event is kept");
        assert_eq!(
            offer(&mut s, "a", "xx", 6),
            [Queued, Coalesced],
            "running is not waiting"
        );
        assert!(starts(&mut s, 1).is_empty(), "concurrency 1");
        let done = s.finish(run.remove(0).ticket, false, 2);
        assert_eq!(done, Finished::Current { persist: None });
        let run: Vec<u32> = starts(&mut s, 3).iter().map(|r| r.event).collect();
        assert_eq!(run, [2], "y, then x");
    }

    #[test]
    fn concurrency_limits_and_round_robin() {
        let (one, five) = (rules(1, None, None), rules(5, None, None));
        let mut s = scheduler(3, 8, &[("a", one), ("b", five.clone())]);
        offer(&mut s, "a", "vwxyz", 0);
        offer(&mut s, "b", "vwxyz", 0);
        let names: Vec<String> = starts(&mut s, 0).into_iter().map(|r| r.plugin).collect();
        assert_eq!(
            names,
            ["a", "b"],
            "the last place is kept for an idle plugin"
        );
        assert_eq!((s.running(), s.plugin("a").unwrap().running), (2, 1));

        let mut s = scheduler(
            1,
            8,
            &[("a", five.clone()), ("b", five.clone()), ("c", five)],
        );
        for p in ["a", "b", "c"] {
            offer(&mut s, p, "xyz", 0);
        }
        let mut order = String::new();
        for t in 0..9 {
            let [start] = <[_; 1]>::try_from(starts(&mut s, t)).unwrap();
            order += &start.plugin;
            s.finish(start.ticket, false, t);
        }
        assert_eq!(order, "abcabcabc");
    }

    #[test]
    fn no_plugin_takes_every_place_however_slow_its_runs() {
        let many = rules(8, None, None);
        let mut s = scheduler(4, 16, &[("hog", many.clone()), ("quiet", many)]);
        offer(&mut s, "hog", "abcdefgh", 0);
        let hog = starts(&mut s, 0);
        assert_eq!(hog.len(), 3, "one place of four is held back");
        assert!(
            starts(&mut s, 1).is_empty(),
            "the hog waits for it like anyone"
        );
        offer(&mut s, "quiet", "x", 100);
        let quiet = starts(&mut s, 2);
        assert_eq!(quiet.len(), 1);
        assert_eq!(quiet[0].plugin, "quiet");
        // With one place in all, it is everyone's in turn.
        let mut s = scheduler(1, 16, &[("hog", rules(8, None, None))]);
        offer(&mut s, "hog", "ab", 0);
        assert_eq!(starts(&mut s, 0).len(), 1);
    }

    #[test]
    fn rate_limit_and_cooldown_delay_and_wake() {
        let mut s = scheduler(4, 8, &[("a", rules(3, Some((2, 1000, 0)), None))]);
        offer(&mut s, "a", "xyz", 0);
        let d = s.next_runs(0);
        assert_eq!(d.starts.len(), 2);
        let counters = Counters {
            runs: vec![0, 0],
            ..Counters::default()
        };
        assert_eq!(d.persist, [("a".to_string(), counters)]);
        assert_eq!(s.next_wake(0), Some(1001));
        assert!(starts(&mut s, 1000).is_empty());
        assert_eq!(s.plugin("a").unwrap().queued, 1, "delayed, not dropped");
        assert_eq!(starts(&mut s, 1001).len(), 1);
        assert_eq!(s.plugin("a").unwrap().counters.runs, [1001]);
        assert_eq!(s.next_wake(1001), None, "nothing queued");

        // Cooldown longer than the window still holds.
        let mut s = scheduler(4, 8, &[("a", rules(1, Some((10, 100, 500)), None))]);
        offer(&mut s, "a", "xy", 0);
        let mut run = starts(&mut s, 0);
        assert_eq!(run.len(), 1, "no history: the first run needs no cooldown");
        assert_eq!(s.next_wake(0), None, "concurrency taken: the finish wakes");
        s.finish(run.remove(0).ticket, false, 10);
        assert!(starts(&mut s, 200).is_empty());
        assert_eq!(s.next_wake(200), Some(500));
        assert!(starts(&mut s, 499).is_empty());
        assert_eq!(starts(&mut s, 500).len(), 1);
    }

    #[test]
    fn flap_guard_trips_and_releases_once() {
        let mut s = scheduler(4, 8, &[("a", rules(1, None, Some((2, 1000))))]);
        let (mut changes, mut dry) = (Vec::new(), Vec::new());
        for (i, t) in [0u64, 20, 40, 60].into_iter().enumerate() {
            offer(&mut s, "a", "x", i as u32);
            let mut d = s.next_runs(t);
            changes.append(&mut d.guard_changes);
            let start = d.starts.remove(0);
            let mutated = !start.forced_dry_run;
            dry.push(start.forced_dry_run);
            let done = s.finish(start.ticket, mutated, t + 10);
            assert_eq!(
                matches!(done, Finished::Current { persist: Some(_) }),
                mutated
            );
        }
        assert_eq!(dry, [false, false, true, true]);
        let tripped = GuardChange::Tripped {
            plugin: "a".into(),
            mutating_runs: vec![10, 30],
        };
        assert_eq!(changes, [tripped]);
        assert!(s.plugin("a").unwrap().guard_tripped);
        assert_eq!(s.next_wake(70), Some(1011));
        assert!(s.next_runs(1010).guard_changes.is_empty());
        let d = s.next_runs(1011);
        assert_eq!(
            d.guard_changes,
            [GuardChange::Released { plugin: "a".into() }]
        );
        let counters = Counters {
            mutating: vec![30],
            ..Counters::default()
        };
        assert_eq!(d.persist, [("a".to_string(), counters)]);
        assert!(s.next_runs(1012).guard_changes.is_empty());
        offer(&mut s, "a", "x", 9);
        assert!(!starts(&mut s, 1013)[0].forced_dry_run);
    }

    #[test]
    fn removal_drops_the_queue_and_readding_makes_a_new_instance() {
        let (one, two) = (rules(1, None, None), rules(2, None, None));
        let mut s = scheduler(3, 8, &[("a", two), ("b", one.clone())]);
        offer(&mut s, "a", "xyz", 0);
        let mut old = starts(&mut s, 0);
        assert_eq!(old.len(), 2, "the third place is held for an idle plugin");
        offer(&mut s, "b", "q", 10);
        let b = starts(&mut s, 0).remove(0);
        assert_eq!(b.plugin, "b");
        // Replacing the rules keeps the instance, its queue and its runs.
        serve(&mut s, &[("a", one.clone()), ("b", one.clone())]);
        let a = s.plugin("a").unwrap();
        assert_eq!((a.queued, a.running, a.rules.concurrency), (1, 2, 1));
        assert_eq!(serve(&mut s, &[("b", one.clone())]), [("a".to_string(), 1)]);
        assert_eq!(s.running(), 3, "runs of a removed plugin still count");
        serve(&mut s, &[("a", one.clone()), ("b", one)]);
        offer(&mut s, "a", "w", 3);
        assert!(starts(&mut s, 1).is_empty(), "global limit still taken");
        assert_eq!(s.finish(old.remove(0).ticket, true, 2), Finished::Stale);
        assert_eq!((s.running(), s.plugin("a").unwrap().running), (2, 0));
        let mut new = starts(&mut s, 3);
        assert_ne!(new[0].ticket, old[0].ticket, "same name, new instance");
        assert_eq!(s.finish(old.remove(0).ticket, true, 4), Finished::Stale);
        assert_eq!((s.running(), s.plugin("a").unwrap().running), (2, 1));
        let done = s.finish(new.remove(0).ticket, false, 5);
        assert_eq!(
            (done, s.running()),
            (Finished::Current { persist: None }, 1)
        );
        let done = s.finish(b.ticket, false, 6);
        assert_eq!(
            (done, s.running()),
            (Finished::Current { persist: None }, 0)
        );
    }

    /// Reloads under load: a pseudo-random mix of offers, starts, reloads
    /// (removing, re-adding, replacing) and finishes in any order.
    #[test]
    fn reload_under_load_keeps_the_counts() {
        const NAMES: [&str; 4] = ["a", "b", "c", "d"];
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut s: Scheduler<u32> = Scheduler::new(2, 3);
        // Per name: served, instance generation, concurrency now, highest
        // concurrency the instance ever had.
        let mut model: BTreeMap<&str, (bool, u32, usize, usize)> =
            NAMES.iter().map(|n| (*n, (false, 0, 1, 1))).collect();
        let mut flying: Vec<(RunTicket, &str, u32)> = Vec::new();
        let (mut now, mut stale, mut started) = (0u64, 0, 0);
        for step in 0..2000u32 {
            now += rand(20);
            match rand(10) {
                0..=3 => {
                    let name = NAMES[rand(4) as usize];
                    let offer = s.offer(name, &rand(4).to_string(), step);
                    assert_eq!(offer == Offer::UnknownPlugin, !model[name].0);
                }
                4..=5 => {
                    for start in s.next_runs(now).starts {
                        let name = NAMES.into_iter().find(|n| *n == start.plugin).unwrap();
                        let (_, generation, concurrency, _) = model[name];
                        flying.push((start.ticket, name, generation));
                        let mine = flying.iter().filter(|f| (f.1, f.2) == (name, generation));
                        assert!(mine.count() <= concurrency, "step {step}: {name} over");
                        started += 1;
                    }
                }
                6 => {
                    let mut list = Vec::new();
                    for name in NAMES {
                        let m = model.get_mut(name).unwrap();
                        if if m.0 { rand(3) == 0 } else { rand(2) == 0 } {
                            m.0 = false;
                            continue;
                        }
                        let concurrency = 1 + rand(2) as usize;
                        if !m.0 {
                            *m = (true, m.1 + 1, concurrency, concurrency);
                        }
                        (m.2, m.3) = (concurrency, m.3.max(concurrency));
                        let rate = (name == "c").then_some((3, 100, 5));
                        let guard = (name == "d").then_some((2, 200));
                        let rules = rules(concurrency, rate, guard);
                        list.push((name.to_string(), rules, Counters::default()));
                    }
                    for (name, dropped) in s.set_plugins(list) {
                        assert!(!model[name.as_str()].0 && dropped.len() <= 3);
                    }
                }
                _ if flying.is_empty() => {}
                _ => {
                    let (ticket, name, generation) =
                        flying.remove(rand(flying.len() as u64) as usize);
                    let (served, current, ..) = model[name];
                    let before = s.plugin(name).map(|v| format!("{v:?}"));
                    let done = s.finish(ticket, rand(2) == 0, now);
                    if served && current == generation {
                        assert!(matches!(done, Finished::Current { .. }));
                    } else {
                        assert_eq!(done, Finished::Stale);
                        let after = s.plugin(name).map(|v| format!("{v:?}"));
                        assert_eq!(before, after, "step {step}: an old run touched {name}");
                        stale += 1;
                    }
                }
            }
            assert_eq!(s.running(), flying.len());
            assert!(s.running() <= 2, "step {step}: {} running", s.running());
            for view in s.plugins() {
                let (_, generation, _, highest) = model[view.name];
                let mine = flying
                    .iter()
                    .filter(|f| (f.1, f.2) == (view.name, generation));
                assert_eq!(view.running, mine.count(), "step {step}: {}", view.name);
                assert!(view.running <= highest);
            }
        }
        assert!(
            stale > 10 && started > 250,
            "{stale} stale, {started} started"
        );
        for (ticket, ..) in flying.drain(..) {
            s.finish(ticket, false, now);
        }
        assert_eq!(s.running(), 0);
        for _ in 0..100 {
            now += 1000;
            for start in s.next_runs(now).starts {
                s.finish(start.ticket, false, now);
            }
        }
        assert!(s.plugins().all(|v| v.queued == 0), "all queued events ran");
    }
}
