//! What the lab's downstream server writes for people and tools to read:
//! the Windows event logs (Application and System) as JSON-lines journals,
//! and `LogFiles/SoftwareDistribution.log` in the real log's format
//! (`<time> UTC<TAB>level<TAB>thread<TAB>component<TAB>message`).

use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The source WSUS writes its events under.
pub const WSUS_SOURCE: &str = "Windows Server Update Services";
/// The source of service state changes (System log).
pub const SCM_SOURCE: &str = "Service Control Manager";

/// Content file download failed (Application log).
pub const EVENT_DOWNLOAD_FAILED: u32 = 364;
/// Catalog synchronization failed (Application log).
pub const EVENT_SYNC_FAILED: u32 = 10021;
/// The content folder's permissions stop downloads (Application log):
/// "One indication of this problem may be event ID 10012" (*Issues with
/// Update Storage*). Its message text is not documented; the lab's is
/// invented.
pub const EVENT_CONTENT_ACCESS: u32 = 10012;
/// A service entered the running or stopped state (System log).
pub const EVENT_SERVICE_STATE: u32 = 7036;
/// A service's start type changed (System log).
pub const EVENT_START_TYPE: u32 = 7040;

/// Reasons event 364 gives, as documented (or, where marked, as Windows
/// words the underlying error).
pub mod reasons {
    /// A proxy strips the Range header BITS needs.
    pub const RANGE: &str = "The server does not support the necessary HTTP protocol. Background Intelligent Transfer Service (BITS) requires that the server support the Range protocol header.";
    /// The file is missing upstream.
    pub const NOT_FOUND: &str = "HTTP status 404: The requested URL does not exist on the server.";
    /// The destination folder denies the service. Not documented for 364;
    /// this is the Windows text of ERROR_ACCESS_DENIED.
    pub const ACCESS_DENIED: &str = "Access is denied.";
    /// A service (BITS, for 364) is stopped. Not documented for 364;
    /// Windows' text of ERROR_SERVICE_NOT_ACTIVE.
    pub const SERVICE_NOT_ACTIVE: &str = "The service has not been started.";
    /// A service (BITS, for 364) is disabled; also what starting a
    /// disabled service answers. Not documented for 364; Windows' text of
    /// ERROR_SERVICE_DISABLED.
    pub const SERVICE_DISABLED: &str = "The service cannot be started, either because it is disabled or because it has no enabled devices associated with it.";
    /// The upstream was briefly overloaded (BITS' text for HTTP 503).
    pub const OVERLOADED: &str = "HTTP status 503: The service is temporarily overloaded.";
}

/// A Windows event log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EventLog {
    Application,
    System,
}

impl EventLog {
    pub fn file_name(self) -> &'static str {
        match self {
            Self::Application => "Application.jsonl",
            Self::System => "System.jsonl",
        }
    }
}

/// Event levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Level {
    Information,
    Warning,
    Error,
}

/// One event log entry as the journal stores it.
#[derive(Debug, Clone, Serialize)]
struct Entry<'a> {
    time: String,
    log: EventLog,
    id: u32,
    level: Level,
    source: &'a str,
    computer: &'a str,
    message: &'a str,
}

/// Appends to the downstream server's logs.
#[derive(Debug, Clone)]
pub struct Logs {
    event_dir: PathBuf,
    software_distribution: PathBuf,
    computer: &'static str,
}

impl Logs {
    pub fn new(event_dir: PathBuf, software_distribution: PathBuf, computer: &'static str) -> Self {
        Self {
            event_dir,
            software_distribution,
            computer,
        }
    }

    /// The journal file of `log`.
    pub fn event_log_path(&self, log: EventLog) -> PathBuf {
        self.event_dir.join(log.file_name())
    }

    /// Write one event.
    pub fn event(
        &self,
        log: EventLog,
        id: u32,
        level: Level,
        source: &str,
        message: &str,
    ) -> std::io::Result<()> {
        let entry = Entry {
            time: iso_time(medic_backends::now_ms()),
            log,
            id,
            level,
            source,
            computer: self.computer,
            message,
        };
        let mut line = serde_json::to_string(&entry).map_err(std::io::Error::other)?;
        line.push('\n');
        append(&self.event_log_path(log), &line)
    }

    /// Write one `SoftwareDistribution.log` line.
    pub fn software_distribution(
        &self,
        level: &str,
        thread: &str,
        component: &str,
        message: &str,
    ) -> std::io::Result<()> {
        let line = format!(
            "{} UTC\t{level}\t{thread}\t{component}\t{message}\n",
            log_time(medic_backends::now_ms())
        );
        append(&self.software_distribution, &line)
    }
}

/// Append `text` with one write, so concurrent writers and tailing readers
/// never see half a line.
fn append(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(text.as_bytes())
}

/// `2026-11-24T22:39:03.123Z`.
pub fn iso_time(ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(time).to_string()
}

/// `2026-11-24 22:39:03.123`, as `SoftwareDistribution.log` writes it.
pub fn log_time(ms: u64) -> String {
    iso_time(ms)
        .replacen('T', " ", 1)
        .trim_end_matches('Z')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_formatted_in_utc() {
        assert_eq!(iso_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_time(1_795_559_943_123), "2026-11-24T22:39:03.123Z");
        assert_eq!(log_time(951_782_400_000), "2000-02-29 00:00:00.000");
    }

    #[test]
    fn events_and_log_lines_are_appended_whole() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Logs::new(
            dir.path().to_path_buf(),
            dir.path().join("SoftwareDistribution.log"),
            "wsus-ds01.lab.example",
        );
        logs.event(
            EventLog::Application,
            EVENT_DOWNLOAD_FAILED,
            Level::Error,
            WSUS_SOURCE,
            "Content file download failed. Reason: Access is denied.",
        )
        .unwrap();
        let text = std::fs::read_to_string(logs.event_log_path(EventLog::Application)).unwrap();
        let entry: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(entry["id"], 364);
        assert_eq!(entry["source"], WSUS_SOURCE);
        assert_eq!(entry["level"], "Error");
        logs.software_distribution("Error", "WsusService.25", "SoapUtilities.LogException", "x")
            .unwrap();
        let line = std::fs::read_to_string(dir.path().join("SoftwareDistribution.log")).unwrap();
        let fields: Vec<&str> = line.trim_end().split('\t').collect();
        assert_eq!(fields.len(), 5, "{line}");
        assert!(fields[0].ends_with(" UTC"));
    }
}
