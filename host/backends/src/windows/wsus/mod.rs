//! WSUS on Windows through its administration API
//! (`Microsoft.UpdateServices.Administration`), driven by one long-lived
//! Windows PowerShell 5.1 helper ([`helper`]), plus `wsusutil.exe`
//! ([`wsusutil`]) for inactive approvals and a check of the upstream done
//! here ([`probe`]).
//!
//! [`WsusAdmin`] implements [`WsusServer`] over a [`Transport`]: it turns
//! each call into helper requests and their JSON replies into the
//! backends' typed values. Decisions stay in Rust:
//!
//! - Dry-run: with `apply = false` only read operations reach the helper,
//!   and the plan is computed here from the updates' states, with the
//!   rules the API applies (cancel NotReady only, resume Failed only, no
//!   declines on a replica).
//! - After a change the helper reads each update back; an update whose
//!   state did not move is reported as failed, not done.
//! - Settings by name through an allow-list ([`settings`]); update ids
//!   must be GUIDs before they are sent.
//!
//! Every contract call maps to a documented API call; the table is in
//! `docs/windows.md`. The helper script, `helper.ps1`, ships inside the
//! binary.

pub mod helper;
pub mod probe;
#[cfg(windows)]
mod registry;
pub mod settings;
pub mod wsusutil;

pub use helper::{HelperCommand, HelperError, ProcessHelper, Transport};
use probe::UpstreamAddress;
use wsusutil::Wsusutil;

use crate::wsus::{
    Approval, ApprovalTally, BatchResult, ProxySettings, ServerFacts, ServerMode, StorageMode,
    SyncRecord, SyncResult, SyncState, UpdateFilter, UpdateState, UpdateSummary, UpstreamFacts,
    UpstreamProbe, WsusServer,
};
use crate::{BackendError, ErrorKind, OpResult};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

/// The helper script, shipped in the binary.
pub const SCRIPT: &str = include_str!("helper.ps1");

/// How long a read may take.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// How long listing every update may take: `GetUpdates` is slow on large
/// databases (Microsoft's own cleanup scripts warn it can time out).
const LIST_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a change may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(300);

/// Where WSUS is installed, from its Setup registry key
/// (`HKLM\SOFTWARE\Microsoft\Update Services\Server\Setup`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupPaths {
    /// `ContentDir`: the folder that holds `WsusContent`.
    pub content_dir: PathBuf,
    /// `TargetDir`: the installation, with `Tools\wsusutil.exe`.
    pub target_dir: PathBuf,
}

#[cfg(windows)]
impl SetupPaths {
    /// Read from the registry; unsupported where WSUS is not installed.
    pub fn from_registry() -> OpResult<Self> {
        registry::setup_paths()
    }
}

/// WSUS through its administration API.
#[derive(Debug)]
pub struct WsusAdmin<T, U> {
    helper: T,
    wsusutil: U,
    setup: SetupPaths,
}

#[cfg(windows)]
impl WsusAdmin<ProcessHelper, wsusutil::WsusutilProcess> {
    /// The WSUS server on this machine, found from the registry. The
    /// helper starts on the first call.
    pub fn local() -> OpResult<Self> {
        let setup = SetupPaths::from_registry()?;
        Ok(Self::new(
            ProcessHelper::new(
                HelperCommand::windows_powershell(SCRIPT),
                helper::START_TIMEOUT,
            ),
            wsusutil::WsusutilProcess::under(&setup.target_dir),
            setup,
        ))
    }
}

/// `server-info`'s reply.
#[derive(Debug, Clone, Deserialize)]
struct ServerReply {
    name: String,
    version: String,
    is_replica: bool,
    sync_from_microsoft_update: bool,
    #[serde(default)]
    upstream_name: String,
    #[serde(default)]
    upstream_port: u16,
    #[serde(default)]
    upstream_ssl: bool,
    host_binaries_on_microsoft_update: bool,
    all_languages: bool,
    #[serde(default)]
    languages: Vec<String>,
}

impl ServerReply {
    fn upstream(&self) -> Option<UpstreamAddress> {
        (!self.sync_from_microsoft_update && !self.upstream_name.is_empty()).then(|| {
            UpstreamAddress {
                host: self.upstream_name.clone(),
                port: self.upstream_port,
                ssl: self.upstream_ssl,
            }
        })
    }
}

/// One update as the helper describes it.
#[derive(Debug, Clone, Deserialize)]
struct UpdateReply {
    id: String,
    revision: u32,
    title: String,
    #[serde(default)]
    products: Vec<String>,
    #[serde(default)]
    classification: String,
    state: String,
    declined: bool,
    approved: bool,
}

#[derive(Debug, Clone, Deserialize)]
struct UpdatesReply {
    updates: Vec<UpdateReply>,
    #[serde(default)]
    missing: Vec<String>,
}

/// What a change did to one update, read back after it.
#[derive(Debug, Clone, Deserialize)]
struct ActionReply {
    id: String,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    declined: bool,
    #[serde(default)]
    error: Option<helper::RemoteError>,
}

#[derive(Debug, Clone, Deserialize)]
struct ActionsReply {
    results: Vec<ActionReply>,
}

#[derive(Debug, Clone, Deserialize)]
struct SyncReply {
    started_ms: u64,
    finished_ms: u64,
    result: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_text: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct SyncStatusReply {
    running: bool,
    last: Option<SyncReply>,
}

#[derive(Debug, Clone, Deserialize)]
struct SyncHistoryReply {
    history: Vec<SyncReply>,
}

#[derive(Debug, Clone, Deserialize)]
struct StartedReply {
    started_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
struct ProxyReply {
    use_proxy: bool,
    #[serde(default)]
    proxy_name: String,
    proxy_port: u16,
    #[serde(default)]
    user_name: String,
    #[serde(default)]
    user_domain: String,
    has_password: bool,
}

#[derive(Debug, Clone, Deserialize)]
struct CountReply {
    approved: u32,
}

#[derive(Debug, Clone, Deserialize)]
struct UpstreamReply {
    host_binaries_on_microsoft_update: bool,
    all_languages: bool,
    #[serde(default)]
    languages: Vec<String>,
    approved: u32,
}

#[derive(Debug, Clone, Deserialize)]
struct PresentReply {
    present: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct ConfigReply {
    values: serde_json::Map<String, Value>,
}

/// The languages a server downloads: `all`, or the list.
fn languages(all: bool, list: Vec<String>) -> Vec<String> {
    if all { vec!["all".to_string()] } else { list }
}

fn storage(on_microsoft_update: bool) -> StorageMode {
    if on_microsoft_update {
        StorageMode::MicrosoftUpdate
    } else {
        StorageMode::LocalContent
    }
}

/// An `UpdateState` member's name as the backends' state. The API has two
/// the contract lacks, both of updates with nothing downloaded yet:
/// `NotNeeded` (not approved: the state of most updates on a server) and
/// `LicenseAgreementNotReady`; they read as not-ready (their `approved`
/// says which they are), as does a name a later WSUS may add. Decisions
/// about an update (what may be cancelled or resumed) use the API's own
/// name, never this reading.
fn update_state(name: &str) -> UpdateState {
    match name {
        "Ready" => UpdateState::Ready,
        "Failed" => UpdateState::Failed,
        "Canceled" => UpdateState::Canceled,
        "LicenseAgreementFailed" => UpdateState::LicenseAgreementFailed,
        "InstallationImpossible" => UpdateState::InstallationImpossible,
        "NotReady" | "NotNeeded" | "LicenseAgreementNotReady" => UpdateState::NotReady,
        other => {
            tracing::debug!("an update state medic does not know, `{other}`, reads as NotReady");
            UpdateState::NotReady
        }
    }
}

fn state_name(state: UpdateState) -> &'static str {
    match state {
        UpdateState::NotReady => "NotReady",
        UpdateState::Ready => "Ready",
        UpdateState::Failed => "Failed",
        UpdateState::Canceled => "Canceled",
        UpdateState::LicenseAgreementFailed => "LicenseAgreementFailed",
        UpdateState::InstallationImpossible => "InstallationImpossible",
    }
}

fn summary(update: UpdateReply) -> UpdateSummary {
    UpdateSummary {
        state: update_state(&update.state),
        id: update.id.to_ascii_lowercase(),
        revision: update.revision,
        title: update.title,
        product: update.products.join(", "),
        classification: update.classification,
        // An update has no single language in the API: its files may be
        // per language.
        language: String::new(),
        declined: update.declined,
        approved: update.approved,
    }
}

fn sync_record(reply: SyncReply) -> SyncRecord {
    SyncRecord {
        started_ms: reply.started_ms,
        finished_ms: reply.finished_ms,
        result_kind: match reply.result.as_str() {
            "Succeeded" => SyncResult::Succeeded,
            "Canceled" => SyncResult::Canceled,
            _ => SyncResult::Failed,
        },
        error: reply
            .error
            .filter(|e| !e.is_empty() && e != "NotApplicable"),
        reason: reply.error_text.filter(|t| !t.trim().is_empty()),
    }
}

/// Whether `text` is a GUID, the form of an update id.
pub fn is_guid(text: &str) -> bool {
    text.len() == 36
        && text.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// `ids`, each once, lower case, every one a GUID.
fn update_ids(ids: &[String]) -> OpResult<Vec<String>> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for id in ids {
        if !is_guid(id) {
            return Err(BackendError::new(
                ErrorKind::InvalidArgument,
                format!("`{id}` is not an update id (a GUID)"),
            ));
        }
        let id = id.to_ascii_lowercase();
        if seen.insert(id.clone()) {
            out.push(id);
        }
    }
    Ok(out)
}

/// What a batch change does to one update: whether the API allows it in
/// the update's state (by the API's own state name), and whether the
/// update read back after the call shows it took effect.
struct BatchRule {
    op: &'static str,
    allowed: fn(&UpdateReply) -> Result<(), String>,
    took_effect: fn(&ActionReply) -> bool,
}

const CANCEL: BatchRule = BatchRule {
    op: "cancel-downloads",
    // "This method cancels the download only if the state of the update
    // is NotReady."
    allowed: |u| match u.state.as_str() {
        "NotReady" => Ok(()),
        other => Err(format!(
            "only a NotReady download can be cancelled (state {other})"
        )),
    },
    took_effect: |r| r.state.as_deref() != Some("NotReady"),
};

const RESUME: BatchRule = BatchRule {
    op: "resume-downloads",
    allowed: |u| match u.state.as_str() {
        "Failed" => Ok(()),
        other => Err(format!(
            "only a Failed download can be resumed (state {other})"
        )),
    },
    // `ResumeDownload` "only identifies to the synchronization agent the
    // update to download": the state may read Failed until the next sync,
    // which the plugin starts and its follow-up run judges.
    took_effect: |_| true,
};

const DECLINE: BatchRule = BatchRule {
    op: "decline",
    allowed: |u| {
        if u.declined {
            Err("already declined".into())
        } else {
            Ok(())
        }
    },
    took_effect: |r| r.declined,
};

impl<T: Transport, U: Wsusutil> WsusAdmin<T, U> {
    pub fn new(helper: T, wsusutil: U, setup: SetupPaths) -> Self {
        Self {
            helper,
            wsusutil,
            setup,
        }
    }

    fn call<R: DeserializeOwned>(&self, op: &str, args: Value, timeout: Duration) -> OpResult<R> {
        let value = self.helper.call(op, args, timeout)?;
        serde_json::from_value(value).map_err(|e| {
            BackendError::new(
                ErrorKind::Failed,
                format!("the WSUS helper's answer to `{op}` is not what medic expects: {e}"),
            )
        })
    }

    fn server(&self) -> OpResult<ServerReply> {
        self.call("server-info", json!({}), READ_TIMEOUT)
    }

    /// The upstream this server synchronizes from, or the refusal of a
    /// call that needs one.
    fn upstream(&self, call: &str) -> OpResult<UpstreamAddress> {
        self.server()?.upstream().ok_or_else(|| {
            BackendError::new(
                ErrorKind::Conflict,
                format!("this server synchronizes from Microsoft Update: `{call}` needs an upstream WSUS server"),
            )
        })
    }

    fn upstream_args(upstream: &UpstreamAddress) -> Value {
        json!({"name": upstream.host, "port": upstream.port, "ssl": upstream.ssl})
    }

    /// The updates `ids` name, read one by one; the ids this server does
    /// not have are refused.
    fn read_updates(&self, ids: &[String]) -> OpResult<UpdatesReply> {
        self.call("get-updates", json!({ "ids": ids }), READ_TIMEOUT)
    }

    fn batch(&self, rule: &BatchRule, ids: &[String], apply: bool) -> OpResult<BatchResult> {
        let ids = update_ids(ids)?;
        let UpdatesReply { updates, missing } = self.read_updates(&ids)?;
        let mut failed: Vec<(String, String)> = missing
            .into_iter()
            .map(|id| {
                (
                    id.to_ascii_lowercase(),
                    "no such update on this server".to_string(),
                )
            })
            .collect();
        let mut planned = Vec::new();
        for update in &updates {
            let id = update.id.to_ascii_lowercase();
            match (rule.allowed)(update) {
                Ok(()) => planned.push(id),
                Err(why) => failed.push((id, why)),
            }
        }
        if !apply || planned.is_empty() {
            return Ok(BatchResult {
                done: planned,
                failed,
                applied: false,
            });
        }
        let reply: ActionsReply = self.call(rule.op, json!({ "ids": planned }), WRITE_TIMEOUT)?;
        let mut done = Vec::new();
        for result in reply.results {
            let id = result.id.to_ascii_lowercase();
            match (&result.error, (rule.took_effect)(&result)) {
                (Some(error), _) => {
                    failed.push((id, format!("{}: {}", error.type_name, error.message)))
                }
                (None, true) => done.push(id),
                (None, false) => failed.push((
                    id,
                    format!(
                        "the server accepted the call but the update is still {}",
                        result.state.as_deref().unwrap_or("unchanged")
                    ),
                )),
            }
        }
        Ok(BatchResult {
            done,
            failed,
            applied: true,
        })
    }

    fn approved_count(&self, upstream: Option<&UpstreamAddress>) -> OpResult<u32> {
        let args = upstream.map_or(json!({}), |u| json!({ "upstream": Self::upstream_args(u) }));
        let reply: CountReply = self.call("approved-count", args, LIST_TIMEOUT)?;
        Ok(reply.approved)
    }
}

impl<T: Transport, U: Wsusutil> WsusServer for WsusAdmin<T, U> {
    fn server_info(&self) -> OpResult<ServerFacts> {
        let reply = self.server()?;
        let upstream = reply.upstream().map(|u| format!("{}:{}", u.host, u.port));
        Ok(ServerFacts {
            name: reply.name,
            mode: if reply.is_replica {
                ServerMode::Replica
            } else {
                ServerMode::Autonomous
            },
            upstream,
            storage: storage(reply.host_binaries_on_microsoft_update),
            languages: languages(reply.all_languages, reply.languages),
            content_dir: self.setup.content_dir.display().to_string(),
            version: reply.version,
        })
    }

    fn list_updates(&self, filter: &UpdateFilter) -> OpResult<Vec<UpdateSummary>> {
        let args = json!({
            "state": filter.state.map(state_name),
            "declined": filter.declined,
            "approved": filter.approved,
        });
        let reply: UpdatesReply = self.call("list-updates", args, LIST_TIMEOUT)?;
        Ok(reply.updates.into_iter().map(summary).collect())
    }

    fn upstream_has(&self, ids: &[String]) -> OpResult<Vec<String>> {
        let ids = update_ids(ids)?;
        let upstream = self.upstream("upstream-has")?;
        let reply: PresentReply = self.call(
            "upstream-has",
            json!({ "upstream": Self::upstream_args(&upstream), "ids": ids }),
            LIST_TIMEOUT,
        )?;
        Ok(reply
            .present
            .into_iter()
            .map(|id| id.to_ascii_lowercase())
            .collect())
    }

    fn cancel_downloads(&self, ids: &[String], apply: bool) -> OpResult<BatchResult> {
        self.batch(&CANCEL, ids, apply)
    }

    fn resume_downloads(&self, ids: &[String], apply: bool) -> OpResult<BatchResult> {
        self.batch(&RESUME, ids, apply)
    }

    fn decline(&self, ids: &[String], apply: bool) -> OpResult<BatchResult> {
        if self.server()?.is_replica {
            return Err(BackendError::new(
                ErrorKind::Conflict,
                "this server is a replica: updates are declined on its upstream server (IUpdate.Decline() throws InvalidOperationException here)",
            ));
        }
        self.batch(&DECLINE, ids, apply)
    }

    fn approval_counts(&self) -> OpResult<ApprovalTally> {
        let server = self.server()?;
        let active = self.approved_count(None)?;
        let inactive = self.list_inactive_approvals()?.len() as u32;
        // The upstream may refuse this server's account (it must be in the
        // upstream's WSUS Reporters): then its count is unknown, and this
        // server's counts still stand.
        let upstream_approved = server.upstream().and_then(|upstream| {
            self.approved_count(Some(&upstream))
                .map_err(|e| tracing::warn!("the upstream's approvals cannot be counted: {e}"))
                .ok()
        });
        Ok(ApprovalTally {
            active,
            inactive,
            upstream_approved,
        })
    }

    fn list_inactive_approvals(&self) -> OpResult<Vec<Approval>> {
        let output = self.wsusutil.run(&["listinactiveapprovals"])?;
        Ok(wsusutil::parse_inactive_approvals(&output))
    }

    fn remove_inactive_approvals(&self, apply: bool) -> OpResult<u32> {
        let before = self.list_inactive_approvals()?.len() as u32;
        if !apply || before == 0 {
            return Ok(before);
        }
        self.wsusutil.run(&["removeinactiveapprovals"])?;
        let after = self.list_inactive_approvals()?.len() as u32;
        Ok(before.saturating_sub(after))
    }

    fn get_config(&self, name: &str) -> OpResult<Option<String>> {
        let Some(setting) = settings::setting(name) else {
            return Ok(None);
        };
        let reply: ConfigReply = self.call(
            "get-config",
            json!({ "properties": settings::properties(setting) }),
            READ_TIMEOUT,
        )?;
        settings::to_text(setting, &reply.values).map(Some)
    }

    fn set_config(&self, name: &str, value: &str, apply: bool) -> OpResult<Option<String>> {
        let setting = settings::setting(name).ok_or_else(|| {
            BackendError::new(
                ErrorKind::NotFound,
                format!("no configuration value `{name}` that medic may set on this server"),
            )
        })?;
        let changes = settings::changes(setting, value)?;
        if !apply {
            return self.get_config(name);
        }
        let changes: Vec<Value> = changes
            .into_iter()
            .map(|(property, value)| json!({ "property": property, "value": value }))
            .collect();
        let reply: ConfigReply =
            self.call("set-config", json!({ "changes": changes }), WRITE_TIMEOUT)?;
        settings::to_text(setting, &reply.values).map(Some)
    }

    fn start_sync(&self, apply: bool) -> OpResult<u64> {
        if !apply {
            return Ok(0);
        }
        let reply: StartedReply = self.call("start-sync", json!({}), WRITE_TIMEOUT)?;
        Ok(reply.started_ms)
    }

    fn sync_status(&self) -> OpResult<SyncState> {
        let reply: SyncStatusReply = self.call("sync-status", json!({}), READ_TIMEOUT)?;
        Ok(SyncState {
            running: reply.running,
            last: reply.last.map(sync_record),
        })
    }

    fn sync_history(&self, limit: u32) -> OpResult<Vec<SyncRecord>> {
        let reply: SyncHistoryReply =
            self.call("sync-history", json!({ "limit": limit }), READ_TIMEOUT)?;
        Ok(reply
            .history
            .into_iter()
            .take(limit as usize)
            .map(sync_record)
            .collect())
    }

    fn upstream_info(&self) -> OpResult<Option<UpstreamFacts>> {
        let Some(upstream) = self.server()?.upstream() else {
            return Ok(None);
        };
        let reply: UpstreamReply = self.call(
            "upstream-info",
            json!({ "upstream": Self::upstream_args(&upstream) }),
            LIST_TIMEOUT,
        )?;
        Ok(Some(UpstreamFacts {
            name: format!("{}:{}", upstream.host, upstream.port),
            storage: storage(reply.host_binaries_on_microsoft_update),
            languages: languages(reply.all_languages, reply.languages),
            approved: reply.approved,
            // `wsusutil listinactiveapprovals` runs only on the server it
            // lists, and the API has no call for it: unknown from here.
            inactive_approvals: 0,
        }))
    }

    fn proxy_settings(&self) -> OpResult<ProxySettings> {
        let reply: ProxyReply = self.call("proxy", json!({}), READ_TIMEOUT)?;
        let user = match (reply.user_name.is_empty(), reply.user_domain.is_empty()) {
            (true, _) => None,
            (false, true) => Some(reply.user_name),
            (false, false) => Some(format!("{}\\{}", reply.user_domain, reply.user_name)),
        };
        Ok(ProxySettings {
            enabled: reply.use_proxy,
            host: reply.proxy_name,
            port: reply.proxy_port,
            user,
            has_password: reply.has_password,
        })
    }

    fn check_upstream(&self) -> OpResult<UpstreamProbe> {
        let upstream = self.upstream("check-upstream")?;
        let proxy = self.proxy_settings()?;
        Ok(probe::check(&upstream, &proxy, probe::STEP_TIMEOUT))
    }
}

#[cfg(test)]
mod tests;
