//! The lab backend: `services` and `wsus` on one of the lab's servers (the
//! downstream, or the upstream where a plugin must run on the parent
//! server), `fs` on the real content folder with the lab's principal
//! mapping. Converts between the lab's own types and the backends', and
//! the lab's errors into the values a plugin sees. A sync started here
//! finishes on a timer of this process, or when anyone next looks.

use crate::model::{ServiceRow, ServiceState, StartupType, SyncMode, SyncRecord, SyncResult};
use crate::server::{ApprovalState, Batch, ServiceChange, UpdateQuery, UpdateView};
use crate::{Lab, LabError, Server, UpdateState, catalog};
use medic_backends::{
    BackendError, Backends, ErrorKind, OpResult, ServiceManager, WsusServer, local_fs, services,
    wsus,
};
use std::sync::Arc;
use std::time::Duration;

/// One of the lab's servers: the content folder on this machine's file
/// system (with the lab's principal mapping), the server's services and
/// its WSUS server.
pub fn backends(lab: Lab, server: Server) -> Backends {
    Backends {
        fs: Arc::new(local_fs::LocalFileSystem::new(lab.principals().clone())),
        services: Arc::new(LabServices {
            lab: lab.clone(),
            server,
        }),
        wsus: Some(Arc::new(LabWsus { lab, server })),
    }
}

/// The WSUS version the lab reports.
pub const LAB_WSUS_VERSION: &str = "10.0.17763.1";

fn plugin_error(error: LabError) -> BackendError {
    let kind = match &error {
        LabError::NotFound(_) => ErrorKind::NotFound,
        LabError::Conflict(_) => ErrorKind::Conflict,
        LabError::Invalid(_) => ErrorKind::InvalidArgument,
        LabError::Unsupported(_) => ErrorKind::Unsupported,
        _ => ErrorKind::Failed,
    };
    BackendError::new(kind, error.to_string())
}

/// A lab server as a service manager.
#[derive(Debug, Clone)]
pub struct LabServices {
    pub lab: Lab,
    pub server: Server,
}

fn status(name: &str, row: ServiceRow) -> services::ServiceStatus {
    services::ServiceStatus {
        name: name.to_string(),
        display_name: crate::server::display_name(name)
            .unwrap_or(name)
            .to_string(),
        state: match row.state {
            ServiceState::Running => services::ServiceState::Running,
            ServiceState::Stopped => services::ServiceState::Stopped,
        },
        startup: match row.startup {
            StartupType::Automatic => services::StartupType::Automatic,
            StartupType::AutomaticDelayed => services::StartupType::AutomaticDelayed,
            StartupType::Manual => services::StartupType::Manual,
            StartupType::Disabled => services::StartupType::Disabled,
        },
        problem: None,
    }
}

fn change(name: &str, change: ServiceChange, applied: bool) -> services::ServiceChange {
    services::ServiceChange {
        before: status(name, change.before),
        after: status(name, change.after),
        applied,
    }
}

/// A start, stop or startup change: applied only when it changed
/// something, as the contract says of a call with nothing to do.
fn change_if_any(name: &str, c: ServiceChange, apply: bool) -> services::ServiceChange {
    let changed = c.before != c.after;
    change(name, c, apply && changed)
}

impl ServiceManager for LabServices {
    fn query(&self, name: &str) -> OpResult<services::ServiceStatus> {
        let row = self.lab.service(self.server, name).map_err(plugin_error)?;
        Ok(status(name, row))
    }

    fn start(&self, name: &str, _: Duration, apply: bool) -> OpResult<services::ServiceChange> {
        let c = self
            .lab
            .start_service(self.server, name, apply)
            .map_err(plugin_error)?;
        Ok(change_if_any(name, c, apply))
    }

    fn stop(&self, name: &str, _: Duration, apply: bool) -> OpResult<services::ServiceChange> {
        let c = self
            .lab
            .stop_service(self.server, name, apply)
            .map_err(plugin_error)?;
        Ok(change_if_any(name, c, apply))
    }

    fn restart(&self, name: &str, _: Duration, apply: bool) -> OpResult<services::ServiceChange> {
        let c = self
            .lab
            .restart_service(self.server, name, apply)
            .map_err(plugin_error)?;
        Ok(change(name, c, apply))
    }

    fn set_startup(
        &self,
        name: &str,
        startup: services::StartupType,
        apply: bool,
    ) -> OpResult<services::ServiceChange> {
        let startup = match startup {
            services::StartupType::Automatic => StartupType::Automatic,
            services::StartupType::AutomaticDelayed => StartupType::AutomaticDelayed,
            services::StartupType::Manual => StartupType::Manual,
            services::StartupType::Disabled => StartupType::Disabled,
            other => {
                return Err(BackendError::new(
                    ErrorKind::Unsupported,
                    format!(
                        "the lab's Windows services have no `{}` startup",
                        other.as_str()
                    ),
                ));
            }
        };
        let c = self
            .lab
            .set_startup(self.server, name, startup, apply)
            .map_err(plugin_error)?;
        Ok(change_if_any(name, c, apply))
    }
}

/// A lab server as the local WSUS server. The upstream publishes (it
/// stands in for Microsoft Update's side too) and keeps approvals; the
/// calls about downloads and syncs are the downstream's.
#[derive(Debug, Clone)]
pub struct LabWsus {
    pub lab: Lab,
    pub server: Server,
}

impl LabWsus {
    /// The downstream's lab, for the calls only it answers; settles a sync
    /// that is due first, so every answer sees the server as it is now.
    fn downstream(&self, call: &str) -> OpResult<&Lab> {
        if self.server != Server::Downstream {
            return Err(BackendError::new(
                ErrorKind::Unsupported,
                format!(
                    "the lab's upstream server does not model `{call}`: it publishes updates and keeps approvals"
                ),
            ));
        }
        self.settled()
    }

    fn settled(&self) -> OpResult<&Lab> {
        self.lab.settle_sync().map_err(plugin_error)?;
        Ok(&self.lab)
    }
}

fn lab_state(state: wsus::UpdateState) -> UpdateState {
    match state {
        wsus::UpdateState::NotReady => UpdateState::NotReady,
        wsus::UpdateState::Ready => UpdateState::Ready,
        wsus::UpdateState::Failed => UpdateState::Failed,
        wsus::UpdateState::Canceled => UpdateState::Canceled,
        wsus::UpdateState::LicenseAgreementFailed => UpdateState::LicenseAgreementFailed,
        wsus::UpdateState::InstallationImpossible => UpdateState::InstallationImpossible,
    }
}

fn contract_state(state: UpdateState) -> wsus::UpdateState {
    match state {
        UpdateState::NotReady => wsus::UpdateState::NotReady,
        UpdateState::Ready => wsus::UpdateState::Ready,
        UpdateState::Failed => wsus::UpdateState::Failed,
        UpdateState::Canceled => wsus::UpdateState::Canceled,
        UpdateState::LicenseAgreementFailed => wsus::UpdateState::LicenseAgreementFailed,
        UpdateState::InstallationImpossible => wsus::UpdateState::InstallationImpossible,
    }
}

fn summary(update: &UpdateView) -> wsus::UpdateSummary {
    wsus::UpdateSummary {
        id: update.id.clone(),
        revision: update.meta.revision,
        title: update.title(),
        product: catalog::PRODUCTS
            .get(update.meta.product as usize)
            .copied()
            .unwrap_or_default()
            .to_string(),
        classification: catalog::CLASSIFICATIONS
            .get(update.meta.classification as usize)
            .copied()
            .unwrap_or_default()
            .to_string(),
        language: catalog::language_name(update.meta.language).to_string(),
        state: contract_state(update.status.state),
        declined: update.status.declined,
        approved: update.approval == ApprovalState::Active,
    }
}

fn batch(result: Batch, applied: bool) -> wsus::BatchResult {
    wsus::BatchResult {
        done: result.done,
        failed: result.refused,
        applied,
    }
}

fn sync_record(record: &SyncRecord) -> wsus::SyncRecord {
    wsus::SyncRecord {
        started_ms: record.started_ms,
        finished_ms: record.finished_ms,
        result_kind: match record.result {
            SyncResult::Succeeded => wsus::SyncResult::Succeeded,
            SyncResult::Failed => wsus::SyncResult::Failed,
            SyncResult::Canceled => wsus::SyncResult::Canceled,
        },
        error: record.error.clone(),
        reason: record.reason.clone(),
    }
}

impl WsusServer for LabWsus {
    fn server_info(&self) -> OpResult<wsus::ServerFacts> {
        let lab = self.settled()?;
        let server = self.server;
        let upstream = lab
            .config(server, "UpstreamServerName")
            .map_err(plugin_error)?
            .filter(|name| !name.is_empty());
        Ok(wsus::ServerFacts {
            name: server.host_name().to_string(),
            mode: match (server, lab.mode()) {
                (Server::Downstream, SyncMode::Replica) => wsus::ServerMode::Replica,
                _ => wsus::ServerMode::Autonomous,
            },
            // As configured: the name an administrator entered, even one
            // that does not resolve.
            upstream: upstream.map(|name| {
                if name.contains(':') {
                    name
                } else {
                    format!("{name}:8531")
                }
            }),
            storage: lab.storage(server).map_err(plugin_error)?,
            languages: lab.enabled_languages(server).map_err(plugin_error)?,
            content_dir: lab.content_dir().display().to_string(),
            version: LAB_WSUS_VERSION.to_string(),
        })
    }

    fn list_updates(&self, filter: &wsus::UpdateFilter) -> OpResult<Vec<wsus::UpdateSummary>> {
        let query = UpdateQuery {
            state: filter.state.map(lab_state),
            declined: filter.declined,
            approved: filter.approved,
        };
        let updates = self
            .settled()?
            .updates(self.server, &query)
            .map_err(plugin_error)?;
        Ok(updates.iter().map(summary).collect())
    }

    fn upstream_has(&self, ids: &[String]) -> OpResult<Vec<String>> {
        self.downstream("upstream-has")?
            .upstream_has(ids)
            .map_err(plugin_error)
    }

    fn cancel_downloads(&self, ids: &[String], apply: bool) -> OpResult<wsus::BatchResult> {
        let result = self
            .downstream("cancel-downloads")?
            .cancel_downloads(ids, apply)
            .map_err(plugin_error)?;
        Ok(batch(result, apply))
    }

    fn resume_downloads(&self, ids: &[String], apply: bool) -> OpResult<wsus::BatchResult> {
        let result = self
            .downstream("resume-downloads")?
            .resume_downloads(ids, apply)
            .map_err(plugin_error)?;
        Ok(batch(result, apply))
    }

    fn decline(&self, ids: &[String], apply: bool) -> OpResult<wsus::BatchResult> {
        let result = self
            .downstream("decline")?
            .decline(ids, apply)
            .map_err(plugin_error)?;
        Ok(batch(result, apply))
    }

    fn approval_counts(&self) -> OpResult<wsus::ApprovalTally> {
        let lab = self.settled()?;
        let here = lab.approval_tally(self.server).map_err(plugin_error)?;
        // What the upstream's console counts as approved: its active and
        // its inactive approvals alike.
        let upstream_approved = match self.server {
            Server::Downstream => {
                let up = lab.approval_tally(Server::Upstream).map_err(plugin_error)?;
                Some(up.active + up.inactive)
            }
            Server::Upstream => None,
        };
        Ok(wsus::ApprovalTally {
            active: here.active,
            inactive: here.inactive,
            upstream_approved,
        })
    }

    fn list_inactive_approvals(&self) -> OpResult<Vec<wsus::Approval>> {
        let inactive = self
            .settled()?
            .inactive_approvals(self.server)
            .map_err(plugin_error)?;
        Ok(inactive
            .into_iter()
            .map(|(update, group)| wsus::Approval {
                title: update.title(),
                language: catalog::language_name(update.meta.language).to_string(),
                update_id: update.id,
                target_group: group,
            })
            .collect())
    }

    fn remove_inactive_approvals(&self, apply: bool) -> OpResult<u32> {
        self.settled()?
            .remove_inactive_approvals(self.server, apply)
            .map_err(plugin_error)
    }

    fn get_config(&self, name: &str) -> OpResult<Option<String>> {
        self.settled()?
            .config(self.server, name)
            .map_err(plugin_error)
    }

    fn set_config(&self, name: &str, value: &str, apply: bool) -> OpResult<Option<String>> {
        self.settled()?
            .set_config(self.server, name, value, apply)
            .map_err(plugin_error)
    }

    fn start_sync(&self, apply: bool) -> OpResult<u64> {
        let lab = self.downstream("start-sync")?;
        if !apply {
            return Ok(0);
        }
        let started = lab.start_sync().map_err(plugin_error)?;
        // The sync runs on, in this process's time: a timer finishes it
        // when it is due (whoever looks first finishes it otherwise).
        let lab = lab.clone();
        std::thread::spawn(move || {
            while let Ok(Some((_, due))) = lab.running_sync() {
                let now = medic_backends::now_ms();
                if now >= due {
                    if let Err(e) = lab.settle_sync() {
                        tracing::warn!("the lab's sync could not finish: {e}");
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(due - now));
            }
        });
        Ok(started)
    }

    fn sync_status(&self) -> OpResult<wsus::SyncState> {
        let lab = self.downstream("sync-status")?;
        let last = lab
            .sync_history(Server::Downstream, 1)
            .map_err(plugin_error)?;
        Ok(wsus::SyncState {
            running: lab.running_sync().map_err(plugin_error)?.is_some(),
            last: last.first().map(sync_record),
        })
    }

    fn sync_history(&self, limit: u32) -> OpResult<Vec<wsus::SyncRecord>> {
        let history = self
            .downstream("sync-history")?
            .sync_history(Server::Downstream, limit as usize)
            .map_err(plugin_error)?;
        Ok(history.iter().map(sync_record).collect())
    }

    fn upstream_info(&self) -> OpResult<Option<wsus::UpstreamFacts>> {
        self.downstream("upstream-info")?
            .upstream_view()
            .map_err(plugin_error)
    }

    fn proxy_settings(&self) -> OpResult<wsus::ProxySettings> {
        self.downstream("proxy")?.proxy().map_err(plugin_error)
    }

    fn check_upstream(&self) -> OpResult<wsus::UpstreamProbe> {
        self.downstream("check-upstream")?
            .check_upstream()
            .map_err(plugin_error)
    }
}
