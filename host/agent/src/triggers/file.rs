//! The `file` trigger: notify watches a path (recursively for a folder);
//! changes are debounced per path and filtered by kind. The first change
//! to a path is sent at once; the changes after it, until the path has
//! been quiet for the debounce time, are folded into one more event sent
//! then. With `whole_tree`, every change under the watched path feeds one
//! event for the tree, whose `paths` field lists the changed paths.
//!
//! Windows close in time order from a heap, so a storm over many paths
//! costs O(log n) per change, not a scan of every path waiting.
//!
//! A change made while no trigger watched (the agent was down, or the
//! trigger is new) is not missed: when the trigger starts, and whenever
//! the kernel reports lost events, the plugin gets one event for the
//! watched root with `rescan = "true"`, so it looks at everything again.

use super::{ChangedPaths, EventSink, Routed, make_event};
use crate::policy::FileChange;
use medic_sandbox::EventKind;
use notify::event::{EventKind as NotifyKind, ModifyKind};
use notify::{RecursiveMode, Watcher};
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Raw notifications buffered between the watcher thread and the task;
/// when full, the watcher thread waits (the kernel queues meanwhile).
const RAW_CAPACITY: usize = 65_536;

/// The change kinds of a notification, if it is one we report.
fn classify(kind: &NotifyKind) -> Option<FileChange> {
    match kind {
        NotifyKind::Create(_) => Some(FileChange::Create),
        NotifyKind::Modify(ModifyKind::Metadata(_)) => Some(FileChange::Attribute),
        NotifyKind::Modify(_) | NotifyKind::Any | NotifyKind::Other => Some(FileChange::Modify),
        NotifyKind::Remove(_) => Some(FileChange::Remove),
        NotifyKind::Access(_) => None,
    }
}

/// Changed paths listed in a whole-tree event's `paths` field; beyond this
/// the field ends with `...` (and the event is never taken for an echo).
pub const MAX_LISTED_PATHS: usize = 4096;

/// What a file trigger reports.
#[derive(Debug, Clone)]
pub struct Options {
    pub wanted: Vec<FileChange>,
    pub debounce: Duration,
    pub whole_tree: bool,
}

/// The changes one event reports.
#[derive(Debug, Default, PartialEq)]
struct Changes {
    kinds: BTreeSet<FileChange>,
    /// The changed paths (whole-tree events only).
    paths: Vec<PathBuf>,
    truncated: bool,
    /// Asks the plugin to look at everything under the root.
    rescan: bool,
}

impl Changes {
    fn add(&mut self, changed: PathBuf, change: FileChange, whole_tree: bool) {
        self.kinds.insert(change);
        if whole_tree {
            if self.paths.len() < MAX_LISTED_PATHS {
                self.paths.push(changed);
            } else {
                self.truncated = true;
            }
        }
    }
}

/// One subject's debounce window: open from its first change until it
/// has been quiet for the debounce time.
struct Window {
    quiet_at: Instant,
    /// The changes since the first, sent when the window closes.
    trailing: Option<Changes>,
}

/// Debouncing per subject, with the first change of a window sent at once.
struct Debouncer {
    debounce: Duration,
    whole_tree: bool,
    root: PathBuf,
    windows: HashMap<PathBuf, Window>,
    /// When each window may close, earliest first; a window extended since
    /// is queued again when its old time comes.
    closing: BinaryHeap<Reverse<(Instant, PathBuf)>>,
}

impl Debouncer {
    fn new(debounce: Duration, whole_tree: bool, root: PathBuf) -> Self {
        Self {
            debounce,
            whole_tree,
            root,
            windows: HashMap::new(),
            closing: BinaryHeap::new(),
        }
    }

    fn quiet_at(&self, now: Instant) -> Instant {
        now.checked_add(self.debounce).unwrap_or(now)
    }

    /// A change at `now`: the event to send at once, when it opens a window.
    fn note(
        &mut self,
        now: Instant,
        changed: PathBuf,
        change: FileChange,
    ) -> Option<(PathBuf, Changes)> {
        let key = if self.whole_tree {
            self.root.clone()
        } else {
            changed.clone()
        };
        let whole_tree = self.whole_tree;
        let quiet_at = self.quiet_at(now);
        if let Some(window) = self.windows.get_mut(&key) {
            window.quiet_at = quiet_at;
            window
                .trailing
                .get_or_insert_with(Changes::default)
                .add(changed, change, whole_tree);
            return None;
        }
        let mut first = Changes::default();
        first.add(changed, change, whole_tree);
        self.open(now, key.clone());
        Some((key, first))
    }

    /// Ask for a look at everything under the root: sent at once, or with
    /// the root's window when one is open.
    fn rescan(&mut self, now: Instant) -> Option<(PathBuf, Changes)> {
        let root = self.root.clone();
        let mut sent = self.note(now, root.clone(), FileChange::Modify);
        let changes = match &mut sent {
            Some((_, changes)) => Some(changes),
            None => self
                .windows
                .get_mut(&root)
                .and_then(|w| w.trailing.as_mut()),
        };
        if let Some(changes) = changes {
            changes.truncated = true;
            changes.rescan = true;
        }
        sent
    }

    fn open(&mut self, now: Instant, key: PathBuf) {
        if self.debounce.is_zero() {
            return;
        }
        let quiet_at = self.quiet_at(now);
        self.windows.insert(
            key.clone(),
            Window {
                quiet_at,
                trailing: None,
            },
        );
        self.closing.push(Reverse((quiet_at, key)));
    }

    /// When the next window may close.
    fn next_close(&self) -> Option<Instant> {
        self.closing.peek().map(|Reverse((at, _))| *at)
    }

    /// Close the windows quiet by `now`: the events of their changes after
    /// the first. A window that sends one stays open for another debounce
    /// time, so a path that keeps changing is sent at most once per
    /// debounce time.
    fn close_quiet(&mut self, now: Instant) -> Vec<(PathBuf, Changes)> {
        let mut ready = Vec::new();
        let reopened_until = self.quiet_at(now);
        while let Some(Reverse((at, _))) = self.closing.peek()
            && *at <= now
        {
            let Some(Reverse((_, key))) = self.closing.pop() else {
                break;
            };
            let Some(window) = self.windows.get_mut(&key) else {
                continue;
            };
            if window.quiet_at > now {
                let again = window.quiet_at;
                self.closing.push(Reverse((again, key)));
                continue;
            }
            match window.trailing.take() {
                Some(trailing) => {
                    window.quiet_at = reopened_until;
                    self.closing.push(Reverse((reopened_until, key.clone())));
                    ready.push((key, trailing));
                }
                None => {
                    self.windows.remove(&key);
                }
            }
        }
        ready
    }
}

/// The event for `subject` reporting `changes`.
fn event_of(
    plugin: &str,
    source: &str,
    whole_tree: bool,
    key: PathBuf,
    changes: Changes,
) -> Routed {
    let change_list = changes
        .kinds
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let subject = key.display().to_string();
    let mut fields = vec![
        ("change".into(), change_list),
        ("path".into(), subject.clone()),
    ];
    if changes.rescan {
        fields.push(("rescan".into(), "true".into()));
    }
    let changed = whole_tree.then(|| {
        let mut paths = changes.paths;
        paths.sort();
        paths.dedup();
        let mut listed: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        if changes.truncated {
            listed.push("...".into());
        }
        fields.push(("paths".into(), listed.join("\n")));
        ChangedPaths {
            paths,
            truncated: changes.truncated,
        }
    });
    let event = make_event(EventKind::FileChanged, source.to_string(), subject, fields);
    Routed {
        plugin: plugin.to_string(),
        event,
        changed,
        from_inbox: false,
    }
}

/// Start watching `path` for `plugin`.
pub fn spawn(
    plugin: String,
    path: PathBuf,
    options: Options,
    sink: EventSink,
) -> Result<JoinHandle<()>, String> {
    let Options {
        wanted,
        debounce,
        whole_tree,
    } = options;
    let (raw_tx, mut raw_rx) = mpsc::channel::<notify::Event>(RAW_CAPACITY);
    let mut watcher =
        notify::recommended_watcher(move |result: notify::Result<notify::Event>| match result {
            Ok(event) => {
                let _ = raw_tx.blocking_send(event);
            }
            Err(e) => tracing::warn!("file watcher error: {e}"),
        })
        .map_err(|e| e.to_string())?;
    watcher
        .watch(&path, RecursiveMode::Recursive)
        .map_err(|e| e.to_string())?;
    let source = path.display().to_string();
    Ok(tokio::spawn(async move {
        let _watcher = watcher; // lives as long as the task
        let mut debouncer = Debouncer::new(debounce, whole_tree, path);
        let send = |(key, changes)| {
            let routed = event_of(&plugin, &source, whole_tree, key, changes);
            sink.send(routed.into())
        };
        // What changed while nothing watched is looked at once.
        if let Some(ready) = debouncer.rescan(Instant::now())
            && send(ready).await.is_err()
        {
            return;
        }
        loop {
            let next_close = debouncer.next_close();
            let ready = tokio::select! {
                raw = raw_rx.recv() => {
                    let Some(raw) = raw else { break };
                    let now = Instant::now();
                    if raw.need_rescan() {
                        // The kernel dropped events (queue overflow): report
                        // the watched root itself, so the plugin looks again.
                        tracing::warn!(plugin, path = %source, "file events were lost; asking for a rescan of the root");
                        debouncer.rescan(now).into_iter().collect()
                    } else {
                        match classify(&raw.kind) {
                            Some(change) if wanted.contains(&change) => raw
                                .paths
                                .into_iter()
                                .filter_map(|changed| debouncer.note(now, changed, change))
                                .collect(),
                            _ => Vec::new(),
                        }
                    }
                }
                _ = async { tokio::time::sleep_until(next_close.unwrap_or_else(Instant::now).into()).await }, if next_close.is_some() => {
                    debouncer.close_quiet(Instant::now())
                }
            };
            for event in ready {
                if send(event).await.is_err() {
                    return;
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBOUNCE: Duration = Duration::from_millis(50);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn kinds(changes: &Changes) -> Vec<FileChange> {
        changes.kinds.iter().copied().collect()
    }

    #[test]
    fn the_first_change_is_sent_at_once_and_the_rest_once_quiet() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(DEBOUNCE, false, "/share".into());
        let (key, first) = d
            .note(t0, "/share/a".into(), FileChange::Attribute)
            .unwrap();
        assert_eq!(key, PathBuf::from("/share/a"));
        assert_eq!(kinds(&first), [FileChange::Attribute]);
        // Changes within the window wait, and each moves its end.
        assert!(
            d.note(t0 + ms(10), "/share/a".into(), FileChange::Modify)
                .is_none()
        );
        assert!(
            d.note(t0 + ms(40), "/share/a".into(), FileChange::Attribute)
                .is_none()
        );
        assert!(
            d.close_quiet(t0 + ms(60)).is_empty(),
            "quiet only since 40 ms"
        );
        let ready = d.close_quiet(t0 + ms(90));
        assert_eq!(ready.len(), 1);
        assert_eq!(
            kinds(&ready[0].1),
            [FileChange::Modify, FileChange::Attribute]
        );
        // The window stays open once more, so it closes without an event
        // when nothing else came.
        assert!(
            d.note(t0 + ms(100), "/share/a".into(), FileChange::Modify)
                .is_none()
        );
        assert_eq!(d.close_quiet(t0 + ms(150)).len(), 1);
        assert!(d.close_quiet(t0 + ms(200)).is_empty());
        assert!(d.windows.is_empty() && d.closing.is_empty());
        // A change after that opens a new window: sent at once.
        assert!(
            d.note(t0 + ms(300), "/share/a".into(), FileChange::Modify)
                .is_some()
        );
    }

    #[test]
    fn a_single_change_makes_a_single_event() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(DEBOUNCE, false, "/share".into());
        assert!(d.note(t0, "/share/a".into(), FileChange::Create).is_some());
        assert_eq!(d.next_close(), Some(t0 + DEBOUNCE));
        assert!(d.close_quiet(t0 + DEBOUNCE).is_empty());
        assert_eq!(d.next_close(), None);
    }

    #[test]
    fn without_a_debounce_every_change_is_sent() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(Duration::ZERO, false, "/share".into());
        for n in 0..5 {
            assert!(
                d.note(t0, "/share/a".into(), FileChange::Modify).is_some(),
                "{n}"
            );
        }
        assert_eq!(d.next_close(), None);
    }

    #[test]
    fn paths_are_debounced_apart_and_close_in_time_order() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(DEBOUNCE, false, "/share".into());
        for n in 0..1000u64 {
            let path = PathBuf::from(format!("/share/f{n}"));
            assert!(
                d.note(t0 + ms(n % 7), path.clone(), FileChange::Attribute)
                    .is_some()
            );
            assert!(
                d.note(t0 + ms(n % 7), path, FileChange::Attribute)
                    .is_none()
            );
        }
        let mut closed = 0;
        for step in 0..=10 {
            let now = t0 + DEBOUNCE + ms(step);
            for (key, _) in d.close_quiet(now) {
                let n: u64 = key.to_string_lossy()["/share/f".len()..].parse().unwrap();
                assert!(t0 + ms(n % 7) + DEBOUNCE <= now);
                closed += 1;
            }
        }
        assert_eq!(closed, 1000);
    }

    #[test]
    fn a_whole_tree_window_lists_its_paths_up_to_the_limit() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(DEBOUNCE, true, "/share".into());
        let (key, first) = d.note(t0, "/share/x".into(), FileChange::Create).unwrap();
        assert_eq!(key, PathBuf::from("/share"));
        assert_eq!(first.paths, [PathBuf::from("/share/x")]);
        for n in 0..MAX_LISTED_PATHS + 10 {
            assert!(
                d.note(t0, format!("/share/f{n}").into(), FileChange::Modify)
                    .is_none()
            );
        }
        let ready = d.close_quiet(t0 + DEBOUNCE);
        let (_, rest) = &ready[0];
        assert_eq!(rest.paths.len(), MAX_LISTED_PATHS);
        assert!(rest.truncated);
        let routed = event_of(
            "p",
            "/share",
            true,
            ready[0].0.clone(),
            ready.into_iter().next().unwrap().1,
        );
        assert!(routed.event.fields["paths"].ends_with("\n..."));
        assert!(routed.changed.unwrap().truncated);
    }

    #[test]
    fn a_rescan_is_sent_at_once_or_with_the_open_window() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(DEBOUNCE, false, "/share".into());
        let (key, first) = d.rescan(t0).unwrap();
        assert_eq!(key, PathBuf::from("/share"));
        assert!(first.rescan && first.truncated);
        assert!(d.rescan(t0 + ms(1)).is_none());
        let ready = d.close_quiet(t0 + ms(60));
        assert!(ready[0].1.rescan);
        let routed = event_of(
            "p",
            "/share",
            false,
            ready[0].0.clone(),
            Changes {
                rescan: true,
                ..Changes::default()
            },
        );
        assert_eq!(routed.event.fields["rescan"], "true");
    }
}
