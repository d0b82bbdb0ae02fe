//! The `file` trigger: notify watches a path (recursively for a folder);
//! changes are debounced per path (a burst on one file is one event once it
//! has been quiet for the debounce time) and filtered by kind. With
//! `whole_tree`, every change under the watched path feeds one event for
//! the tree, whose `paths` field lists the changed paths.
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
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

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

/// Changes waiting for their debounce time, per event subject.
struct Pending {
    due: Instant,
    changes: BTreeSet<FileChange>,
    /// The changed paths (whole-tree events only).
    paths: Vec<PathBuf>,
    truncated: bool,
    /// Asks the plugin to look at everything under the root.
    rescan: bool,
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
    let root = PathBuf::from(&source);
    Ok(tokio::spawn(async move {
        let _watcher = watcher; // lives as long as the task
        let mut pending: HashMap<PathBuf, Pending> = HashMap::new();
        let note = |pending: &mut HashMap<PathBuf, Pending>, changed: PathBuf, change| {
            let key = if whole_tree {
                root.clone()
            } else {
                changed.clone()
            };
            let due = Instant::now()
                .checked_add(debounce)
                .unwrap_or_else(Instant::now);
            let entry = pending.entry(key).or_insert_with(|| Pending {
                due,
                changes: BTreeSet::new(),
                paths: Vec::new(),
                truncated: false,
                rescan: false,
            });
            entry.due = due;
            entry.changes.insert(change);
            if whole_tree {
                if entry.paths.len() < MAX_LISTED_PATHS {
                    entry.paths.push(changed);
                } else {
                    entry.truncated = true;
                }
            }
        };
        let rescan = |pending: &mut HashMap<PathBuf, Pending>| {
            note(pending, root.clone(), FileChange::Modify);
            if let Some(entry) = pending.get_mut(&root) {
                entry.truncated = true;
                entry.rescan = true;
            }
        };
        // What changed while nothing watched is looked at once.
        rescan(&mut pending);
        loop {
            let next_due = pending.values().map(|p| p.due).min();
            tokio::select! {
                raw = raw_rx.recv() => {
                    let Some(raw) = raw else { break };
                    if raw.need_rescan() {
                        // The kernel dropped events (queue overflow): report
                        // the watched root itself, so the plugin looks again.
                        tracing::warn!(plugin, path = %source, "file events were lost; asking for a rescan of the root");
                        rescan(&mut pending);
                        continue;
                    }
                    let Some(change) = classify(&raw.kind) else { continue };
                    if !wanted.contains(&change) {
                        continue;
                    }
                    for changed in raw.paths {
                        note(&mut pending, changed, change);
                    }
                }
                _ = async { tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)).await }, if next_due.is_some() => {
                    let now = Instant::now();
                    let ready: Vec<PathBuf> = pending
                        .iter()
                        .filter(|(_, p)| p.due <= now)
                        .map(|(key, _)| key.clone())
                        .collect();
                    for key in ready {
                        let Some(entry) = pending.remove(&key) else { continue };
                        let change_list = entry.changes.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(",");
                        let subject = key.display().to_string();
                        let mut fields = vec![("change".into(), change_list), ("path".into(), subject.clone())];
                        if entry.rescan {
                            fields.push(("rescan".into(), "true".into()));
                        }
                        let changed = whole_tree.then(|| {
                            let mut paths = entry.paths;
                            paths.sort();
                            paths.dedup();
                            let mut listed: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                            if entry.truncated {
                                listed.push("...".into());
                            }
                            fields.push(("paths".into(), listed.join("\n")));
                            ChangedPaths { paths, truncated: entry.truncated }
                        });
                        let event = make_event(EventKind::FileChanged, source.clone(), subject, fields);
                        let routed = Routed { plugin: plugin.clone(), event, changed };
                        if sink.send(routed.into()).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }))
}
