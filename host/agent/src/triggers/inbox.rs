//! Manual events: `medic send` drops a JSON file into the agent's inbox
//! folder (written aside and renamed, so the agent never sees half a file);
//! the agent routes each one like any other event and removes it.

use super::{EventSink, Routed};
use medic_sandbox::EventRecord;
use notify::{RecursiveMode, Watcher};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The inbox inside a state directory.
pub fn inbox_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("inbox")
}

/// One request in the inbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboxRequest {
    pub plugin: String,
    pub event: EventRecord,
}

/// Put a request into the inbox of the agent using `state_dir`.
pub fn send(state_dir: &Path, request: &InboxRequest) -> std::io::Result<PathBuf> {
    let dir = inbox_dir(state_dir);
    std::fs::create_dir_all(&dir)?;
    let name = medic_sandbox::new_id("manual");
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(format!("{name}.json"));
    std::fs::write(
        &tmp,
        serde_json::to_vec(request).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Route every complete request in the inbox, oldest first.
async fn drain(dir: &Path, sink: &EventSink) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for file in files {
        let request = std::fs::read(&file)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                serde_json::from_slice::<InboxRequest>(&bytes).map_err(|e| e.to_string())
            });
        let _ = std::fs::remove_file(&file);
        match request.map(|r| Routed::new(r.plugin, r.event.completed())) {
            Ok(routed) => {
                if sink.send(routed).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(file = %file.display(), "ignoring a malformed manual request: {e}")
            }
        }
    }
}

/// Watch the inbox.
pub fn spawn(state_dir: &Path, sink: EventSink) -> Result<JoinHandle<()>, String> {
    let dir = inbox_dir(state_dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let (wake_tx, mut wake_rx) = mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |_: notify::Result<notify::Event>| {
        let _ = wake_tx.try_send(());
    })
    .map_err(|e| e.to_string())?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| e.to_string())?;
    Ok(tokio::spawn(async move {
        let _watcher = watcher;
        loop {
            drain(&dir, &sink).await;
            tokio::select! {
                _ = wake_rx.recv() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }))
}
