//! Triggers turn what happens on the system into events for plugins: file
//! changes (notify, debounced), new lines of text logs and of JSON-lines
//! event journals (tailed across rotation and truncation, resuming at the
//! remembered offset after a restart), intervals, the agent's start, and
//! manual requests dropped into the agent's inbox by `medic send`.
//!
//! Every trigger runs as a task sending [`Routed`] events to the dispatcher;
//! dropping the returned [`TriggerSet`] stops them all.

pub mod file;
pub mod inbox;
pub mod tail;

use crate::audit::Store;
use crate::policy::{PluginPolicy, Trigger};
use medic_sandbox::{EventKind, EventRecord};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// An event on its way to one plugin.
#[derive(Debug, Clone)]
pub struct Routed {
    pub plugin: String,
    pub event: EventRecord,
}

/// Where triggers send their events.
pub type EventSink = mpsc::Sender<Routed>;

/// A new event with a fresh id and the current time.
pub fn make_event(
    kind: EventKind,
    source: String,
    subject: String,
    fields: Vec<(String, String)>,
) -> EventRecord {
    EventRecord::new(kind, source, subject, fields.into_iter().collect())
}

/// The running trigger tasks; dropping it stops them.
#[derive(Debug, Default)]
pub struct TriggerSet {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for TriggerSet {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Why a trigger could not start.
#[derive(Debug, thiserror::Error)]
#[error("plugin `{plugin}`: cannot start its {kind} trigger on {target}: {reason}")]
pub struct TriggerError {
    pub plugin: String,
    pub kind: &'static str,
    pub target: String,
    pub reason: String,
}

impl TriggerSet {
    /// Start every trigger of `plugins`. Manual events come through the
    /// inbox, started separately by the agent.
    pub fn start(
        plugins: &[PluginPolicy],
        sink: &EventSink,
        store: &Store,
    ) -> Result<Self, TriggerError> {
        let mut set = Self::default();
        for plugin in plugins {
            for trigger in &plugin.triggers {
                let name = plugin.name.clone();
                let sink = sink.clone();
                let fail = |target: &std::path::Path, reason: String| TriggerError {
                    plugin: plugin.name.clone(),
                    kind: trigger.kind(),
                    target: target.display().to_string(),
                    reason,
                };
                let task = match trigger {
                    Trigger::File {
                        path,
                        changes,
                        debounce,
                        whole_tree,
                    } => file::spawn(
                        name,
                        path.clone(),
                        file::Options {
                            wanted: changes.clone(),
                            debounce: *debounce,
                            whole_tree: *whole_tree,
                        },
                        sink,
                    )
                    .map_err(|e| fail(path, e))?,
                    Trigger::Log { path, pattern } => tail::spawn(
                        name,
                        path.clone(),
                        tail::LineFilter::Log(pattern.clone()),
                        store.clone(),
                        sink,
                    )
                    .map_err(|e| fail(path, e))?,
                    Trigger::EventLog {
                        path,
                        source,
                        ids,
                        message,
                    } => tail::spawn(
                        name,
                        path.clone(),
                        tail::LineFilter::EventLog {
                            source: source.clone(),
                            ids: ids.clone(),
                            message: message.clone(),
                        },
                        store.clone(),
                        sink,
                    )
                    .map_err(|e| fail(path, e))?,
                    Trigger::Every { interval } => spawn_every(name, *interval, sink),
                    Trigger::Startup => tokio::spawn(async move {
                        let event = make_event(
                            EventKind::Startup,
                            "agent".into(),
                            String::new(),
                            Vec::new(),
                        );
                        let _ = sink
                            .send(Routed {
                                plugin: name,
                                event,
                            })
                            .await;
                    }),
                    Trigger::Manual => continue,
                };
                set.tasks.push(task);
            }
        }
        Ok(set)
    }
}

fn spawn_every(plugin: String, interval: Duration, sink: EventSink) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        ticker.tick().await; // the first tick is immediate: wait a full interval
        loop {
            ticker.tick().await;
            let source = format!("every {}ms", interval.as_millis());
            let event = make_event(EventKind::Schedule, source, String::new(), Vec::new());
            if sink
                .send(Routed {
                    plugin: plugin.clone(),
                    event,
                })
                .await
                .is_err()
            {
                break;
            }
        }
    })
}
