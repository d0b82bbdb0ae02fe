//! The fake host's WSUS server and, behind it, its upstream, answering the
//! `medic:wsus` functions as their WIT documentation says: updates with
//! their download state, approval and declined flag; the server's
//! configuration (from which its storage option and upstream are read);
//! approvals left inactive; the upstream's facts and the check of the road
//! to it; and synchronizations that run on after `start-sync` returns and
//! end, as a [`SyncScript`] says, when a later run starts.

use super::error;
use crate::wsus::{
    Approval, ApprovalTally, BatchResult, ProxySettings, ServerFacts, ServerMode, StorageMode,
    SyncRecord, SyncResult, SyncState, UpdateFilter, UpdateState, UpdateSummary, UpstreamFacts,
    UpstreamProbe,
};
use crate::{Error, ErrorKind};
use std::collections::{BTreeMap, HashSet};

/// The configuration value that keeps update files on Microsoft Update.
const HOST_ON_MU: &str = "HostOnMu";
/// The configuration value naming the upstream server.
const UPSTREAM_NAME: &str = "UpstreamServerName";
/// Configuration values that are `0` or `1`.
const FLAGS: &[&str] = &["BitsDownloadPriorityForeground", HOST_ON_MU, "UseProxy"];
/// The port an upstream name without one uses.
const DEFAULT_PORT: u16 = 8531;

/// One update of the fake server.
///
/// ```
/// use medic_sdk::testing::Update;
/// use medic_sdk::wsus::UpdateState;
///
/// let failed = Update::new("6f1c0a9e-0001", "Security Update (KB5034127)").state(UpdateState::Failed);
/// let orphan = Update::new("6f1c0a9e-0002", "Feature Pack").state(UpdateState::NotReady).gone_upstream();
/// ```
#[derive(Debug, Clone)]
pub struct Update {
    summary: UpdateSummary,
    /// Whether the upstream still has it.
    upstream: bool,
}

impl Update {
    /// An approved, not declined update whose files are downloaded
    /// (`ready`), language-neutral, that the upstream has.
    pub fn new(id: &str, title: &str) -> Self {
        Self {
            summary: UpdateSummary {
                id: id.to_string(),
                revision: 1,
                title: title.to_string(),
                product: "Windows Server 2019".into(),
                classification: "Security Updates".into(),
                language: String::new(),
                state: UpdateState::Ready,
                declined: false,
                approved: true,
            },
            upstream: true,
        }
    }

    pub fn state(mut self, state: UpdateState) -> Self {
        self.summary.state = state;
        self
    }

    pub fn approved(mut self, approved: bool) -> Self {
        self.summary.approved = approved;
        self
    }

    pub fn declined(mut self, declined: bool) -> Self {
        self.summary.declined = declined;
        self
    }

    pub fn language(mut self, language: &str) -> Self {
        self.summary.language = language.to_string();
        self
    }

    pub fn product(mut self, product: &str) -> Self {
        self.summary.product = product.to_string();
        self
    }

    pub fn classification(mut self, classification: &str) -> Self {
        self.summary.classification = classification.to_string();
        self
    }

    /// The upstream no longer has it.
    pub fn gone_upstream(mut self) -> Self {
        self.upstream = false;
        self
    }
}

/// What happens to downloads when a synchronization ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Downloads {
    /// The approved, not declined `not-ready` updates are downloaded
    /// (`ready`): the sync succeeded.
    #[default]
    Complete,
    /// Their downloads fail (`failed`, event 364 on a real server).
    Fail,
    /// Nothing changes.
    Untouched,
}

/// How the next synchronizations go. The default: each succeeds, its
/// downloads complete, and it has ended by the next run.
#[derive(Debug, Clone)]
pub struct SyncScript {
    result: SyncResult,
    error: Option<String>,
    reason: Option<String>,
    downloads: Downloads,
    /// Runs that still find it running after the one that started it.
    runs_running: u32,
}

impl Default for SyncScript {
    fn default() -> Self {
        Self::succeeds()
    }
}

impl SyncScript {
    /// It succeeds and the downloads complete.
    pub fn succeeds() -> Self {
        Self {
            result: SyncResult::Succeeded,
            error: None,
            reason: None,
            downloads: Downloads::Complete,
            runs_running: 0,
        }
    }

    /// It fails with this `SynchronizationError` and reason; downloads are
    /// left as they are.
    pub fn fails(error: &str, reason: &str) -> Self {
        Self {
            result: SyncResult::Failed,
            error: Some(error.to_string()),
            reason: Some(reason.to_string()),
            downloads: Downloads::Untouched,
            runs_running: 0,
        }
    }

    /// What happens to downloads when it ends.
    pub fn downloads(mut self, downloads: Downloads) -> Self {
        self.downloads = downloads;
        self
    }

    /// `runs` runs after the one that started it still find it running.
    pub fn running_for(mut self, runs: u32) -> Self {
        self.runs_running = runs;
        self
    }
}

/// A synchronization in progress.
#[derive(Debug, Clone)]
struct RunningSync {
    started_ms: u64,
    script: SyncScript,
    runs_left: u32,
}

/// The upstream server, as seen from this one.
#[derive(Debug, Clone)]
struct Upstream {
    storage: StorageMode,
    languages: Vec<String>,
    approved: u32,
    inactive_approvals: u32,
}

/// The fake WSUS server. [`FakeWsus::new`] gives an autonomous server
/// named `wsus01` that synchronizes from Microsoft Update, stores files
/// locally in `D:\WSUS`, with English enabled, no updates, no
/// synchronizations and no proxy; `BitsDownloadPriorityForeground`,
/// `HostOnMu`, `UpstreamServerName` and the proxy's values are the
/// configuration values it knows.
#[derive(Debug, Clone)]
pub struct FakeWsus {
    name: String,
    mode: ServerMode,
    languages: Vec<String>,
    content_dir: String,
    config: BTreeMap<String, String>,
    updates: Vec<Update>,
    inactive: Vec<Approval>,
    upstream: Upstream,
    probes: BTreeMap<String, UpstreamProbe>,
    proxy: ProxySettings,
    /// Newest first.
    history: Vec<SyncRecord>,
    running: Option<RunningSync>,
    next_sync: SyncScript,
}

impl Default for FakeWsus {
    fn default() -> Self {
        Self::new()
    }
}

fn conflict(message: impl Into<String>) -> Error {
    error(ErrorKind::Conflict, message)
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

/// A host name (letters, digits, dots and dashes) with an optional `:port`.
fn is_server_name(value: &str) -> bool {
    let (host, port) = value.split_once(':').unwrap_or((value, "1"));
    !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        && port.parse::<u16>().is_ok_and(|p| p > 0)
}

impl FakeWsus {
    pub fn new() -> Self {
        let config = [
            ("BitsDownloadPriorityForeground", "0"),
            (HOST_ON_MU, "0"),
            (UPSTREAM_NAME, ""),
            ("UseProxy", "0"),
            ("ProxyName", ""),
            ("ProxyServerPort", "80"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Self {
            name: "wsus01".into(),
            mode: ServerMode::Autonomous,
            languages: vec!["en".into()],
            content_dir: r"D:\WSUS".into(),
            config,
            updates: Vec::new(),
            inactive: Vec::new(),
            upstream: Upstream {
                storage: StorageMode::LocalContent,
                languages: vec!["en".into()],
                approved: 0,
                inactive_approvals: 0,
            },
            probes: BTreeMap::new(),
            proxy: ProxySettings {
                enabled: false,
                host: String::new(),
                port: 80,
                user: None,
                has_password: false,
            },
            history: Vec::new(),
            running: None,
            next_sync: SyncScript::succeeds(),
        }
    }

    // ----- setup -----

    /// The server's host name.
    pub fn name(&mut self, name: &str) -> &mut Self {
        self.name = name.to_string();
        self
    }

    /// A replica of its upstream: it cannot decline updates.
    pub fn replica(&mut self) -> &mut Self {
        self.mode = ServerMode::Replica;
        self
    }

    /// Administered on its own.
    pub fn autonomous(&mut self) -> &mut Self {
        self.mode = ServerMode::Autonomous;
        self
    }

    /// Synchronize from the upstream WSUS server `name` (`host[:port]`),
    /// as `UpstreamServerName` says.
    pub fn upstream(&mut self, name: &str) -> &mut Self {
        self.set_config(UPSTREAM_NAME, name)
    }

    /// Synchronize from Microsoft Update: no upstream server.
    pub fn microsoft_update(&mut self) -> &mut Self {
        self.set_config(UPSTREAM_NAME, "")
    }

    /// Where this server stores update files (`HostOnMu`).
    pub fn storage(&mut self, storage: StorageMode) -> &mut Self {
        let value = match storage {
            StorageMode::MicrosoftUpdate => "1",
            StorageMode::LocalContent => "0",
        };
        self.set_config(HOST_ON_MU, value)
    }

    /// Where the upstream stores update files.
    pub fn upstream_storage(&mut self, storage: StorageMode) -> &mut Self {
        self.upstream.storage = storage;
        self
    }

    /// The upstream's enabled languages.
    pub fn upstream_languages(&mut self, languages: &[&str]) -> &mut Self {
        self.upstream.languages = languages.iter().map(|l| l.to_string()).collect();
        self
    }

    /// How many approved updates, and approvals left inactive, the
    /// upstream has.
    pub fn upstream_approvals(&mut self, approved: u32, inactive: u32) -> &mut Self {
        self.upstream.approved = approved;
        self.upstream.inactive_approvals = inactive;
        self
    }

    /// This server's enabled languages.
    pub fn languages(&mut self, languages: &[&str]) -> &mut Self {
        self.languages = languages.iter().map(|l| l.to_string()).collect();
        self
    }

    /// `ContentDir`: the folder that holds `WsusContent`.
    pub fn content_dir(&mut self, dir: &str) -> &mut Self {
        self.content_dir = dir.to_string();
        self
    }

    /// A configuration value (added when the server does not know it).
    pub fn set_config(&mut self, name: &str, value: &str) -> &mut Self {
        self.config.insert(name.to_string(), value.to_string());
        self
    }

    /// An update, replacing one with the same id.
    pub fn add_update(&mut self, update: Update) -> &mut Self {
        self.updates.retain(|u| u.summary.id != update.summary.id);
        self.updates.push(update);
        self
    }

    /// An approval left inactive by a change of the server's languages.
    pub fn inactive_approval(
        &mut self,
        update_id: &str,
        title: &str,
        target_group: &str,
        language: &str,
    ) -> &mut Self {
        self.inactive.push(Approval {
            update_id: update_id.to_string(),
            title: title.to_string(),
            target_group: target_group.to_string(),
            language: language.to_string(),
        });
        self
    }

    /// A finished synchronization, newer than those already recorded.
    pub fn add_sync(&mut self, record: SyncRecord) -> &mut Self {
        self.history.insert(0, record);
        self
    }

    /// A synchronization started at `started_ms` is running (it ends as
    /// the next sync script says).
    pub fn syncing(&mut self, started_ms: u64) -> &mut Self {
        let script = self.next_sync.clone();
        self.running = Some(RunningSync {
            started_ms,
            runs_left: script.runs_running,
            script,
        });
        self
    }

    /// How the synchronizations started from now on go.
    pub fn next_sync(&mut self, script: SyncScript) -> &mut Self {
        self.next_sync = script;
        self
    }

    /// What `check-upstream` finds while the upstream is configured as
    /// `target` (`host:port`). A target with no probe given is reachable;
    /// a probe with a `problem` also makes `upstream-info` fail.
    pub fn probe(&mut self, target: &str, probe: UpstreamProbe) -> &mut Self {
        self.probes.insert(target.to_string(), probe);
        self
    }

    /// The proxy the server uses to reach its upstream.
    pub fn proxy(&mut self, proxy: ProxySettings) -> &mut Self {
        self.proxy = proxy;
        self
    }

    // ----- looking at it -----

    /// A configuration value now.
    pub fn config(&self, name: &str) -> Option<&str> {
        self.config.get(name).map(String::as_str)
    }

    /// An update as `list-updates` lists it now.
    pub fn update(&self, id: &str) -> Option<UpdateSummary> {
        self.updates
            .iter()
            .find(|u| u.summary.id == id)
            .map(|u| u.summary.clone())
    }

    /// The synchronizations recorded, newest first.
    pub fn history(&self) -> &[SyncRecord] {
        &self.history
    }

    /// When the synchronization in progress started, if one is.
    pub fn running_sync(&self) -> Option<u64> {
        self.running.as_ref().map(|r| r.started_ms)
    }

    /// The approvals left inactive now.
    pub fn inactive_approvals(&self) -> &[Approval] {
        &self.inactive
    }

    // ----- what a run finds -----

    /// A run starts at `now_ms`: a synchronization due to end ends.
    pub(crate) fn next_run(&mut self, now_ms: u64) {
        let Some(running) = &mut self.running else {
            return;
        };
        if running.runs_left > 0 {
            running.runs_left -= 1;
            return;
        }
        let RunningSync {
            started_ms, script, ..
        } = self.running.take().expect("checked above");
        let downloaded = match script.downloads {
            Downloads::Complete => Some(UpdateState::Ready),
            Downloads::Fail => Some(UpdateState::Failed),
            Downloads::Untouched => None,
        };
        if let Some(state) = downloaded {
            for update in &mut self.updates {
                let s = &mut update.summary;
                if s.state == UpdateState::NotReady && s.approved && !s.declined {
                    s.state = state;
                }
            }
        }
        self.history.insert(
            0,
            SyncRecord {
                started_ms,
                finished_ms: now_ms.max(started_ms),
                result_kind: script.result,
                error: script.error,
                reason: script.reason,
            },
        );
    }

    /// `host:port` of the configured upstream; none for Microsoft Update.
    fn upstream_target(&self) -> Option<String> {
        let name = self.config(UPSTREAM_NAME).filter(|n| !n.is_empty())?;
        Some(if name.contains(':') {
            name.to_string()
        } else {
            format!("{name}:{DEFAULT_PORT}")
        })
    }

    fn storage_mode(&self) -> StorageMode {
        if self.config(HOST_ON_MU) == Some("1") {
            StorageMode::MicrosoftUpdate
        } else {
            StorageMode::LocalContent
        }
    }

    fn need_upstream(&self, call: &str) -> Result<String, Error> {
        self.upstream_target().ok_or_else(|| {
            conflict(format!(
                "this server synchronizes from Microsoft Update: `{call}` needs an upstream WSUS server"
            ))
        })
    }

    pub(crate) fn server_info(&self) -> ServerFacts {
        ServerFacts {
            name: self.name.clone(),
            mode: self.mode,
            upstream: self.upstream_target(),
            storage: self.storage_mode(),
            languages: self.languages.clone(),
            content_dir: self.content_dir.clone(),
            version: "10.0.17763.1".into(),
        }
    }

    pub(crate) fn list_updates(&self, filter: UpdateFilter) -> Vec<UpdateSummary> {
        self.updates
            .iter()
            .map(|u| &u.summary)
            .filter(|u| {
                filter.state.is_none_or(|s| s == u.state)
                    && filter.declined.is_none_or(|d| d == u.declined)
                    && filter.approved.is_none_or(|a| a == u.approved)
            })
            .cloned()
            .collect()
    }

    pub(crate) fn upstream_has(&self, ids: &[String]) -> Result<Vec<String>, Error> {
        self.need_upstream("upstream-has")?;
        Ok(ids
            .iter()
            .filter(|id| {
                self.updates
                    .iter()
                    .any(|u| &u.summary.id == *id && u.upstream)
            })
            .cloned()
            .collect())
    }

    /// Change each of `ids` (once each) with `change`, which says why it
    /// cannot (then the update is left as it is).
    fn batch(
        &mut self,
        ids: &[String],
        apply: bool,
        change: impl Fn(&mut UpdateSummary) -> Result<(), String>,
    ) -> BatchResult {
        let mut result = BatchResult {
            done: Vec::new(),
            failed: Vec::new(),
            applied: apply,
        };
        let mut seen = HashSet::new();
        for id in ids {
            if !seen.insert(id) {
                continue;
            }
            let Some(update) = self.updates.iter_mut().find(|u| &u.summary.id == id) else {
                result
                    .failed
                    .push((id.clone(), "no such update on this server".into()));
                continue;
            };
            let mut changed = update.summary.clone();
            match change(&mut changed) {
                Ok(()) => {
                    if apply {
                        update.summary = changed;
                    }
                    result.done.push(id.clone());
                }
                Err(why) => result.failed.push((id.clone(), why)),
            }
        }
        result
    }

    pub(crate) fn cancel_downloads(&mut self, ids: &[String], apply: bool) -> BatchResult {
        self.batch(ids, apply, |u| match u.state {
            UpdateState::NotReady => {
                u.state = UpdateState::Canceled;
                Ok(())
            }
            other => Err(format!(
                "only a NotReady download can be cancelled (state {})",
                state_name(other)
            )),
        })
    }

    pub(crate) fn resume_downloads(&mut self, ids: &[String], apply: bool) -> BatchResult {
        self.batch(ids, apply, |u| match u.state {
            UpdateState::Failed => {
                u.state = UpdateState::NotReady;
                Ok(())
            }
            other => Err(format!(
                "only a Failed download can be resumed (state {})",
                state_name(other)
            )),
        })
    }

    pub(crate) fn decline(&mut self, ids: &[String], apply: bool) -> Result<BatchResult, Error> {
        if self.mode == ServerMode::Replica {
            return Err(conflict(
                "this server is a replica: updates are declined on its upstream server (IUpdate.Decline() throws InvalidOperationException here)",
            ));
        }
        Ok(self.batch(ids, apply, |u| {
            if u.declined {
                Err("already declined".into())
            } else {
                u.declined = true;
                Ok(())
            }
        }))
    }

    pub(crate) fn approval_counts(&self) -> ApprovalTally {
        let active = self
            .updates
            .iter()
            .filter(|u| u.summary.approved && !u.summary.declined)
            .count() as u32;
        let inactive: HashSet<&str> = self.inactive.iter().map(|a| a.update_id.as_str()).collect();
        ApprovalTally {
            active,
            inactive: inactive.len() as u32,
            upstream_approved: self.upstream_target().map(|_| self.upstream.approved),
        }
    }

    pub(crate) fn list_inactive_approvals(&self) -> Vec<Approval> {
        self.inactive.clone()
    }

    pub(crate) fn remove_inactive_approvals(&mut self, apply: bool) -> u32 {
        let count = self.inactive.len() as u32;
        if apply {
            self.inactive.clear();
        }
        count
    }

    pub(crate) fn get_config(&self, name: &str) -> Option<String> {
        self.config(name).map(str::to_string)
    }

    pub(crate) fn set_config_call(
        &mut self,
        name: &str,
        value: &str,
        apply: bool,
    ) -> Result<Option<String>, Error> {
        let Some(previous) = self.get_config(name) else {
            return Err(error(
                ErrorKind::NotFound,
                format!("no configuration value `{name}` that medic may set on this server"),
            ));
        };
        if FLAGS.contains(&name) && !matches!(value, "0" | "1") {
            return Err(error(
                ErrorKind::InvalidArgument,
                format!("{name} must be 0 or 1, not `{value}`"),
            ));
        }
        if name == UPSTREAM_NAME && !is_server_name(value) {
            return Err(error(
                ErrorKind::InvalidArgument,
                format!(
                    "{UPSTREAM_NAME} must be a host name, with an optional :port, not `{value}`"
                ),
            ));
        }
        if apply {
            self.config.insert(name.to_string(), value.to_string());
        }
        Ok(Some(previous))
    }

    pub(crate) fn start_sync(&mut self, now_ms: u64, apply: bool) -> Result<u64, Error> {
        if !apply {
            return Ok(0);
        }
        if let Some(running) = &self.running {
            return Err(conflict(format!(
                "a synchronization is running (started at {}): wait for it to end",
                running.started_ms
            )));
        }
        self.syncing(now_ms);
        Ok(now_ms)
    }

    pub(crate) fn sync_status(&self) -> SyncState {
        SyncState {
            running: self.running.is_some(),
            last: self.history.first().cloned(),
        }
    }

    pub(crate) fn sync_history(&self, limit: u32) -> Vec<SyncRecord> {
        self.history.iter().take(limit as usize).cloned().collect()
    }

    fn probe_of(&self, target: String) -> UpstreamProbe {
        self.probes
            .get(&target)
            .cloned()
            .unwrap_or_else(|| UpstreamProbe {
                target,
                addresses: vec!["192.0.2.10".into()],
                via_proxy: self.proxy.enabled,
                connected: true,
                http_status: Some(200),
                problem: None,
            })
    }

    pub(crate) fn upstream_info(&self) -> Result<Option<UpstreamFacts>, Error> {
        let Some(target) = self.upstream_target() else {
            return Ok(None);
        };
        let probe = self.probe_of(target.clone());
        if let Some(problem) = probe.problem {
            return Err(error(
                ErrorKind::Failed,
                format!("the upstream cannot be reached: {problem}"),
            ));
        }
        Ok(Some(UpstreamFacts {
            name: target,
            storage: self.upstream.storage,
            languages: self.upstream.languages.clone(),
            approved: self.upstream.approved,
            inactive_approvals: self.upstream.inactive_approvals,
        }))
    }

    pub(crate) fn proxy_settings(&self) -> ProxySettings {
        self.proxy.clone()
    }

    pub(crate) fn check_upstream(&self) -> Result<UpstreamProbe, Error> {
        let target = self.need_upstream("check-upstream")?;
        Ok(self.probe_of(target))
    }
}
