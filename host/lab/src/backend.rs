//! The lab backend: `services` and `wsus` on the lab's downstream server,
//! `fs` on its real content folder with the lab's principal mapping.
//! Converts between the lab's own types and the backends', and the lab's
//! errors into the values a plugin sees.

use crate::model::{ServiceRow, ServiceState, StartupType, SyncMode, SyncRecord, SyncResult};
use crate::server::{ApprovalState, Batch, ServiceChange, UpdateQuery, UpdateView};
use crate::{Lab, LabError, Server, UpdateState, catalog};
use medic_backends::{
    BackendError, Backends, ErrorKind, OpResult, ServiceManager, WsusServer, local_fs, services,
    wsus,
};
use std::sync::Arc;
use std::time::Duration;

/// The lab's downstream server: its content folder on this machine's file
/// system (with the lab's principal mapping), its services and its WSUS
/// server.
pub fn backends(lab: Lab) -> Backends {
    Backends {
        fs: Arc::new(local_fs::LocalFileSystem::new(lab.principals().clone())),
        services: Arc::new(LabServices(lab.clone())),
        wsus: Some(Arc::new(LabWsus(lab))),
    }
}

/// The WSUS version the lab reports.
pub const LAB_WSUS_VERSION: &str = "10.0.17763.1";

fn plugin_error(error: LabError) -> BackendError {
    let kind = match &error {
        LabError::NotFound(_) => ErrorKind::NotFound,
        LabError::Conflict(_) => ErrorKind::Conflict,
        LabError::Invalid(_) => ErrorKind::InvalidArgument,
        _ => ErrorKind::Failed,
    };
    BackendError::new(kind, error.to_string())
}

/// The lab's downstream server as a service manager.
#[derive(Debug, Clone)]
pub struct LabServices(pub Lab);

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
            StartupType::Manual => services::StartupType::Manual,
            StartupType::Disabled => services::StartupType::Disabled,
        },
    }
}

fn change(name: &str, change: ServiceChange, applied: bool) -> services::ServiceChange {
    services::ServiceChange {
        before: status(name, change.before),
        after: status(name, change.after),
        applied,
    }
}

impl ServiceManager for LabServices {
    fn query(&self, name: &str) -> OpResult<services::ServiceStatus> {
        let row = self
            .0
            .service(Server::Downstream, name)
            .map_err(plugin_error)?;
        Ok(status(name, row))
    }

    fn start(&self, name: &str, _: Duration, apply: bool) -> OpResult<services::ServiceChange> {
        let c = self
            .0
            .start_service(Server::Downstream, name, apply)
            .map_err(plugin_error)?;
        Ok(change(name, c, apply))
    }

    fn stop(&self, name: &str, _: Duration, apply: bool) -> OpResult<services::ServiceChange> {
        let c = self
            .0
            .stop_service(Server::Downstream, name, apply)
            .map_err(plugin_error)?;
        Ok(change(name, c, apply))
    }

    fn restart(&self, name: &str, _: Duration, apply: bool) -> OpResult<services::ServiceChange> {
        let c = self
            .0
            .restart_service(Server::Downstream, name, apply)
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
            services::StartupType::Manual => StartupType::Manual,
            services::StartupType::Disabled => StartupType::Disabled,
        };
        let c = self
            .0
            .set_startup(Server::Downstream, name, startup, apply)
            .map_err(plugin_error)?;
        Ok(change(name, c, apply))
    }
}

/// The lab's downstream server as the local WSUS server.
#[derive(Debug, Clone)]
pub struct LabWsus(pub Lab);

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
        reason: record.reason.clone(),
    }
}

impl WsusServer for LabWsus {
    fn server_info(&self) -> OpResult<wsus::ServerFacts> {
        let lab = &self.0;
        Ok(wsus::ServerFacts {
            name: Server::Downstream.host_name().to_string(),
            mode: match lab.mode() {
                SyncMode::Replica => wsus::ServerMode::Replica,
                SyncMode::Autonomous => wsus::ServerMode::Autonomous,
            },
            // As configured: the name an administrator entered, even one
            // that does not resolve.
            upstream: lab
                .config(Server::Downstream, "UpstreamServerName")
                .map_err(plugin_error)?
                .filter(|name| !name.is_empty())
                .map(|name| {
                    if name.contains(':') {
                        name
                    } else {
                        format!("{name}:8531")
                    }
                }),
            storage: wsus::StorageMode::LocalContent,
            languages: lab
                .enabled_languages(Server::Downstream)
                .map_err(plugin_error)?,
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
            .0
            .updates(Server::Downstream, &query)
            .map_err(plugin_error)?;
        Ok(updates.iter().map(summary).collect())
    }

    fn upstream_has(&self, ids: &[String]) -> OpResult<Vec<String>> {
        self.0.upstream_has(ids).map_err(plugin_error)
    }

    fn cancel_downloads(&self, ids: &[String], apply: bool) -> OpResult<wsus::BatchResult> {
        let result = self.0.cancel_downloads(ids, apply).map_err(plugin_error)?;
        Ok(batch(result, apply))
    }

    fn decline(&self, ids: &[String], apply: bool) -> OpResult<wsus::BatchResult> {
        let result = self.0.decline(ids, apply).map_err(plugin_error)?;
        Ok(batch(result, apply))
    }

    fn approval_counts(&self) -> OpResult<wsus::ApprovalTally> {
        let here = self
            .0
            .approval_tally(Server::Downstream)
            .map_err(plugin_error)?;
        let upstream = self
            .0
            .approval_tally(Server::Upstream)
            .map_err(plugin_error)?;
        Ok(wsus::ApprovalTally {
            active: here.active,
            inactive: here.inactive,
            upstream_approved: Some(upstream.active),
        })
    }

    fn list_inactive_approvals(&self) -> OpResult<Vec<wsus::Approval>> {
        let inactive = self
            .0
            .inactive_approvals(Server::Downstream)
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
        self.0
            .remove_inactive_approvals(Server::Downstream, apply)
            .map_err(plugin_error)
    }

    fn get_config(&self, name: &str) -> OpResult<Option<String>> {
        self.0
            .config(Server::Downstream, name)
            .map_err(plugin_error)
    }

    fn set_config(&self, name: &str, value: &str, apply: bool) -> OpResult<Option<String>> {
        self.0
            .set_config(Server::Downstream, name, value, apply)
            .map_err(plugin_error)
    }

    fn start_sync(&self, apply: bool) -> OpResult<()> {
        if apply {
            // The lab's sync runs to its end before returning; its result
            // is in `sync-status`.
            self.0.sync().map_err(plugin_error)?;
        }
        Ok(())
    }

    fn sync_status(&self) -> OpResult<wsus::SyncState> {
        let last = self
            .0
            .sync_history(Server::Downstream, 1)
            .map_err(plugin_error)?;
        Ok(wsus::SyncState {
            running: false,
            last: last.first().map(sync_record),
        })
    }

    fn sync_history(&self, limit: u32) -> OpResult<Vec<wsus::SyncRecord>> {
        let history = self
            .0
            .sync_history(Server::Downstream, limit as usize)
            .map_err(plugin_error)?;
        Ok(history.iter().map(sync_record).collect())
    }
}
