//! Manual events: `medic send` drops a JSON file into the agent's inbox
//! folder (written aside and renamed, so the agent never sees half a file);
//! the agent routes each one like any other event, and removes the file
//! once the event is durably queued (a kill before then sends it again).

use super::{EventSink, Intake, Routed};
use medic_sandbox::EventRecord;
use notify::{RecursiveMode, Watcher};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
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

/// Route every complete request in the inbox, oldest first, but for those
/// already sent (`sent`) whose removal waits for the dispatcher's commit.
/// Returns false when the dispatcher is gone.
async fn drain(dir: &Path, sink: &EventSink, sent: &mut HashSet<PathBuf>) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return true;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    // Files removed since are forgotten.
    sent.retain(|p| files.contains(p));
    for file in files {
        if sent.contains(&file) {
            continue;
        }
        let request = read_request(&file);
        let request = request.map(|r| Routed {
            from_inbox: true,
            ..Routed::new(r.plugin, r.event.completed())
        });
        match request {
            Ok(routed) => {
                if sink.send(routed.into()).await.is_err()
                    || sink
                        .send(Intake::InboxConsumed(file.clone()))
                        .await
                        .is_err()
                {
                    return false;
                }
                sent.insert(file);
            }
            Err(e) => {
                tracing::warn!(file = %file.display(), "ignoring a malformed manual request: {e}");
                let _ = std::fs::remove_file(&file);
            }
        }
    }
    true
}

/// The largest request file read; a larger one is malformed.
const MAX_REQUEST_BYTES: u64 = 1 << 20;

fn read_request(file: &Path) -> Result<InboxRequest, String> {
    use std::io::Read;
    // A link or a FIFO put there is not a request (and opening a FIFO
    // would wait for a writer).
    let meta = std::fs::symlink_metadata(file).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(MAX_REQUEST_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_REQUEST_BYTES {
        return Err(format!("larger than {MAX_REQUEST_BYTES} bytes"));
    }
    serde_json::from_slice::<InboxRequest>(&bytes).map_err(|e| e.to_string())
}

/// Watch the inbox.
pub fn spawn(state_dir: &Path, sink: EventSink) -> Result<JoinHandle<()>, String> {
    let dir = inbox_dir(state_dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let (wake_tx, mut wake_rx) = mpsc::channel::<()>(1);
    // Reading the folder is an access event of its own: only changes wake
    // the drain, or it would wake itself for ever.
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
            let _ = wake_tx.try_send(());
        }
    })
    .map_err(|e| e.to_string())?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| e.to_string())?;
    Ok(tokio::spawn(async move {
        let _watcher = watcher;
        let mut sent = HashSet::new();
        loop {
            if !drain(&dir, &sink, &mut sent).await {
                return;
            }
            tokio::select! {
                _ = wake_rx.recv() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }))
}
