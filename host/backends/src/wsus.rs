//! A WSUS server and, through it, its upstream: the values `wsus` calls
//! exchange and the trait a WSUS backend (the lab, the administration API
//! on Windows) implements.

use crate::OpResult;

/// How a downstream server relates to its upstream server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerMode {
    Replica,
    Autonomous,
}

/// Where update files are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageMode {
    LocalContent,
    MicrosoftUpdate,
}

/// What `server_info` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFacts {
    pub name: String,
    pub mode: ServerMode,
    /// `host:port`, or none when it synchronizes from Microsoft Update.
    pub upstream: Option<String>,
    pub storage: StorageMode,
    pub languages: Vec<String>,
    /// `ContentDir`: the folder that holds `WsusContent`.
    pub content_dir: String,
    pub version: String,
}

/// The states of an update's files on a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateState {
    NotReady,
    Ready,
    Failed,
    Canceled,
    LicenseAgreementFailed,
    InstallationImpossible,
}

/// One update as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateSummary {
    pub id: String,
    pub revision: u32,
    pub title: String,
    pub product: String,
    pub classification: String,
    pub language: String,
    pub state: UpdateState,
    pub declined: bool,
    pub approved: bool,
}

/// Which updates to list; `None` matches any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateFilter {
    pub state: Option<UpdateState>,
    pub declined: Option<bool>,
    pub approved: Option<bool>,
}

/// What a batch operation did to each update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchResult {
    pub done: Vec<String>,
    /// Updates refused, each with the reason.
    pub failed: Vec<(String, String)>,
    pub applied: bool,
}

/// An approval of an update for a target group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub update_id: String,
    pub title: String,
    pub target_group: String,
    pub language: String,
}

/// Approvals on this server, and on its upstream where known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalTally {
    pub active: u32,
    pub inactive: u32,
    pub upstream_approved: Option<u32>,
}

/// The upstream server, as the downstream sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamFacts {
    /// `host:port`, as configured on the downstream.
    pub name: String,
    pub storage: StorageMode,
    pub languages: Vec<String>,
    pub approved: u32,
    pub inactive_approvals: u32,
}

/// The proxy a server uses to reach its upstream; the password is never
/// read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySettings {
    pub enabled: bool,
    pub host: String,
    pub port: u16,
    /// `DOMAIN\user` or `user`, when credentials are set.
    pub user: Option<String>,
    pub has_password: bool,
}

/// What a check of the connection to the upstream found; it stops at the
/// first step that fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamProbe {
    /// `host:port`.
    pub target: String,
    /// Empty when the name did not resolve.
    pub addresses: Vec<String>,
    pub via_proxy: bool,
    pub connected: bool,
    pub http_status: Option<u16>,
    /// The first step that failed.
    pub problem: Option<String>,
}

/// How a synchronization ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncResult {
    Succeeded,
    Failed,
    Canceled,
}

/// One synchronization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRecord {
    pub started_ms: u64,
    pub finished_ms: u64,
    pub result_kind: SyncResult,
    /// The `SynchronizationError` member, e.g. `UssNotFound`.
    pub error: Option<String>,
    pub reason: Option<String>,
}

/// Whether a synchronization is running, and the last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncState {
    pub running: bool,
    pub last: Option<SyncRecord>,
}

/// A WSUS server and its upstream.
pub trait WsusServer: Send + Sync {
    fn server_info(&self) -> OpResult<ServerFacts>;
    fn list_updates(&self, filter: &UpdateFilter) -> OpResult<Vec<UpdateSummary>>;
    fn upstream_has(&self, ids: &[String]) -> OpResult<Vec<String>>;
    /// Only NotReady updates can be cancelled.
    fn cancel_downloads(&self, ids: &[String], apply: bool) -> OpResult<BatchResult>;
    /// Only Failed updates can be resumed.
    fn resume_downloads(&self, ids: &[String], apply: bool) -> OpResult<BatchResult>;
    fn decline(&self, ids: &[String], apply: bool) -> OpResult<BatchResult>;
    fn approval_counts(&self) -> OpResult<ApprovalTally>;
    fn list_inactive_approvals(&self) -> OpResult<Vec<Approval>>;
    fn remove_inactive_approvals(&self, apply: bool) -> OpResult<u32>;
    fn get_config(&self, name: &str) -> OpResult<Option<String>>;
    fn set_config(&self, name: &str, value: &str, apply: bool) -> OpResult<Option<String>>;
    /// Starts a sync and returns its start time (milliseconds since the
    /// epoch) without waiting for it; 0 when not applied.
    fn start_sync(&self, apply: bool) -> OpResult<u64>;
    fn sync_status(&self) -> OpResult<SyncState>;
    fn sync_history(&self, limit: u32) -> OpResult<Vec<SyncRecord>>;
    fn upstream_info(&self) -> OpResult<Option<UpstreamFacts>>;
    fn proxy_settings(&self) -> OpResult<ProxySettings>;
    /// Resolves and connects to the configured upstream only.
    fn check_upstream(&self) -> OpResult<UpstreamProbe>;
}
