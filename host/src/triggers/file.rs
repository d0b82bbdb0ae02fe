//! The `file` trigger: notify watches a path (recursively for a folder);
//! changes are debounced per path (a burst on one file is one event once it
//! has been quiet for the debounce time) and filtered by kind.

use super::{EventSink, Routed, make_event};
use crate::config::FileChange;
use crate::contract::EventKind;
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

/// Start watching `path` for `plugin`.
pub fn spawn(
    plugin: String,
    path: PathBuf,
    wanted: Vec<FileChange>,
    debounce: Duration,
    sink: EventSink,
) -> Result<JoinHandle<()>, String> {
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
        let mut pending: HashMap<PathBuf, (Instant, BTreeSet<FileChange>)> = HashMap::new();
        loop {
            let next_due = pending.values().map(|(due, _)| *due).min();
            tokio::select! {
                raw = raw_rx.recv() => {
                    let Some(raw) = raw else { break };
                    if raw.need_rescan() {
                        // The kernel dropped events (queue overflow): report
                        // the watched root itself, so the plugin looks again.
                        tracing::warn!(plugin, path = %source, "file events were lost; asking for a rescan of the root");
                        let due = Instant::now() + debounce;
                        let entry = pending.entry(PathBuf::from(&source)).or_insert_with(|| (due, BTreeSet::new()));
                        entry.0 = due;
                        entry.1.insert(FileChange::Modify);
                        continue;
                    }
                    let Some(change) = classify(&raw.kind) else { continue };
                    if !wanted.contains(&change) {
                        continue;
                    }
                    let due = Instant::now() + debounce;
                    for changed in raw.paths {
                        let entry = pending.entry(changed).or_insert_with(|| (due, BTreeSet::new()));
                        entry.0 = due;
                        entry.1.insert(change);
                    }
                }
                _ = async { tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)).await }, if next_due.is_some() => {
                    let now = Instant::now();
                    let ready: Vec<PathBuf> = pending
                        .iter()
                        .filter(|(_, (due, _))| *due <= now)
                        .map(|(p, _)| p.clone())
                        .collect();
                    for changed in ready {
                        let Some((_, changes)) = pending.remove(&changed) else { continue };
                        let change_list = changes.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(",");
                        let subject = changed.display().to_string();
                        let event = make_event(
                            EventKind::FileChanged,
                            source.clone(),
                            subject.clone(),
                            vec![("change".into(), change_list), ("path".into(), subject)],
                        );
                        if sink.send(Routed { plugin: plugin.clone(), event }).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }))
}
