//! Synchronization of the downstream server with its upstream, and the
//! content downloads that follow, as a real server does them and logs
//! them. A sync fails where a real one fails: the catalog phase when the
//! upstream cannot return updates the downstream still waits for; the
//! content phase (reported in the same record, where a console would show
//! download failures beside the sync) when BITS, the content folder's
//! permissions, the upstream or the proxy stop the files.

use super::logs::{self, EventLog, Level, reasons};
use super::model::{ServiceState, StartupType, SyncMode, SyncRecord, SyncResult, UpdateStatus};
use super::server::{ApprovalState, UpdateQuery, UpdateWriter};
use super::{Lab, LabResult, Server, UpdateState, catalog, table_name, tables};
use redb::{ReadableTable, TableDefinition};
use std::collections::HashSet;

/// Each sync, the upstream has published at least this many new updates
/// that the automatic approval rule approves (a Patch Tuesday, compressed).
pub const APPROVED_PER_PUBLICATION: usize = 3;
/// Event 364 is written for at most this many files per pass; the rest are
/// counted in `SoftwareDistribution.log`.
pub(crate) const MAX_DOWNLOAD_EVENTS: usize = 25;

/// What a content pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContentPass {
    pub downloaded: u32,
    pub failed: u32,
    pub first_reason: Option<String>,
}

impl Lab {
    fn app_event(&self, id: u32, level: Level, message: &str) -> LabResult<()> {
        self.write_event(EventLog::Application, id, level, logs::WSUS_SOURCE, message)
    }

    /// Event 364 for an update whose file could not be downloaded.
    pub(crate) fn log_download_failure(
        &self,
        update: &super::server::UpdateView,
        reason: &str,
    ) -> LabResult<()> {
        let relative = catalog::content_path(&update.meta);
        let message = format!(
            "Content file download failed. Reason: {reason} Source File: /Content/{relative} Destination File: {}/{relative}",
            self.wsus_content().display()
        );
        self.app_event(logs::EVENT_DOWNLOAD_FAILED, Level::Error, &message)
    }

    /// Synchronize the downstream with the upstream, then download what is
    /// approved. Records and returns how it went.
    pub fn sync(&self) -> LabResult<SyncRecord> {
        let started_ms = medic_backends::now_ms();
        let mut record = SyncRecord {
            started_ms,
            finished_ms: started_ms,
            result: SyncResult::Succeeded,
            reason: None,
            imported: 0,
            downloaded: 0,
            download_failures: 0,
        };
        let finish = |lab: &Self, mut record: SyncRecord| -> LabResult<SyncRecord> {
            record.finished_ms = medic_backends::now_ms();
            lab.record_sync(Server::Downstream, &record)?;
            Ok(record)
        };
        // The catalog phase failed: 10021 (its text is not documented; this
        // is the lab's), and the sync ends there.
        let catalog_failed = |lab: &Self, mut record: SyncRecord, reason: String| {
            lab.app_event(
                logs::EVENT_SYNC_FAILED,
                Level::Error,
                &format!("Catalog synchronization failed. Reason: {reason}"),
            )?;
            record.result = SyncResult::Failed;
            record.reason = Some(reason);
            finish(lab, record)
        };
        if self.service(Server::Downstream, "WsusService")?.state != ServiceState::Running {
            record.result = SyncResult::Failed;
            record.reason = Some("WsusService is not running: nothing synchronizes".into());
            return finish(self, record);
        }
        let upstream = self
            .upstream_name(Server::Downstream)?
            .unwrap_or_else(|| Server::Upstream.host_name().to_string());
        self.write_log_line(
            "Info",
            "WsusService.12",
            "CatalogSyncAgentCore.ExecuteSyncProtocol",
            &format!("Synchronization started with upstream server https://{upstream}:8531"),
        )?;
        // The lab's network knows one upstream by name: any other name
        // does not resolve (SynchronizationError.UssNotFound, "Unable to
        // resolve the specified upstream server").
        if !upstream.eq_ignore_ascii_case(Server::Upstream.host_name()) {
            let reason =
                format!("UssNotFound: Unable to resolve the specified upstream server {upstream}");
            return catalog_failed(self, record, reason);
        }
        self.publish()?;

        // Catalog: the upstream must return the data of every update this
        // server still waits for.
        let waiting = self.waiting_downloads()?;
        let ids: Vec<String> = waiting.iter().map(|u| u.id.clone()).collect();
        let on_upstream: HashSet<String> = self.upstream_has(&ids)?.into_iter().collect();
        let gone = ids.iter().filter(|id| !on_upstream.contains(*id)).count();
        if gone > 0 {
            self.write_log_line(
                "Error",
                "WsusService.25",
                "SoapUtilities.LogException",
                &format!(
                    "USS ThrowException: Actor = https://{upstream}:8531/ServerSyncWebService/ServerSyncWebService.asmx, Method = \"http://www.microsoft.com/SoftwareDistribution/Server/ServerSyncWebService/GetUpdateData\", ErrorCode = InternalServerError, Message = , Client = False"
                ),
            )?;
            let reason = format!(
                "the upstream server could not return the data of {gone} updates this server is waiting for (GetUpdateData: InternalServerError)"
            );
            return catalog_failed(self, record, reason);
        }
        record.imported = self.import_from_upstream()?;

        let pass = self.content_pass()?;
        record.downloaded = pass.downloaded;
        record.download_failures = pass.failed;
        if pass.failed > 0 {
            record.result = SyncResult::Failed;
            record.reason = Some(format!(
                "{} content file downloads failed: {}",
                pass.failed,
                pass.first_reason.unwrap_or_default()
            ));
            self.write_log_line(
                "Warning",
                "WsusService.12",
                "CatalogSyncAgentCore.ExecuteSyncProtocol",
                &format!(
                    "Synchronization finished with {} failed content downloads",
                    pass.failed
                ),
            )?;
        } else {
            self.write_log_line(
                "Info",
                "WsusService.12",
                "CatalogSyncAgentCore.ExecuteSyncProtocol",
                &format!(
                    "Synchronization completed successfully: {} new updates, {} files downloaded",
                    record.imported, record.downloaded
                ),
            )?;
        }
        finish(self, record)
    }

    /// Approved, not declined updates whose files are not here yet.
    fn waiting_downloads(&self) -> LabResult<Vec<super::server::UpdateView>> {
        let approved = self.updates(
            Server::Downstream,
            &UpdateQuery {
                approved: Some(true),
                declined: Some(false),
                ..Default::default()
            },
        )?;
        Ok(approved
            .into_iter()
            .filter(|u| matches!(u.status.state, UpdateState::NotReady | UpdateState::Failed))
            .collect())
    }

    /// The upstream publishes new updates (skipping retired products once
    /// it has been rebuilt without them) until enough are auto-approved.
    fn publish(&self) -> LabResult<()> {
        let mut next: u64 = self
            .fact("published")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let retired = self.fact("retired")?.as_deref() == Some("1");
        let txn = self.database().begin_write()?;
        {
            let mut writer = UpdateWriter::open(&txn, Server::Upstream)?;
            let mut approved = 0;
            while approved < APPROVED_PER_PUBLICATION {
                let (id, meta) = catalog::update(self.seed(), next);
                next += 1;
                if retired && catalog::RETIRED_PRODUCTS.contains(&meta.product) {
                    continue;
                }
                let auto = catalog::auto_approved(&meta);
                approved += usize::from(auto);
                writer.insert(&id, &meta, UpdateState::Ready, auto.then_some(true))?;
            }
            let mut lab = txn.open_table(TableDefinition::<&str, &str>::new(tables::LAB))?;
            lab.insert("published", next.to_string().as_str())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Take the upstream's languages and new updates; approve new ones (a
    /// replica copies the upstream's approvals, an autonomous server applies
    /// its automatic approval rule); approvals for languages no longer
    /// enabled turn inactive. Returns how many updates were new.
    fn import_from_upstream(&self) -> LabResult<u32> {
        let languages = self.languages(Server::Upstream)?;
        let enabled: HashSet<&str> = languages
            .iter()
            .filter(|(_, on)| *on)
            .map(|(l, _)| l.as_str())
            .collect();
        let language_ok = |language: u8| {
            let name = catalog::language_name(language);
            name.is_empty() || enabled.contains(name)
        };
        let upstream = self.updates(Server::Upstream, &UpdateQuery::default())?;
        let txn = self.database().begin_write()?;
        let mut imported = 0;
        {
            let lang_t = table_name(Server::Downstream, tables::LANGUAGE);
            let mut lang = txn.open_table(TableDefinition::<&str, bool>::new(&lang_t))?;
            for (name, on) in &languages {
                lang.insert(name.as_str(), *on)?;
            }
            let meta_t = table_name(Server::Downstream, tables::UPDATE);
            let known: HashSet<String> = {
                let table = txn.open_table(TableDefinition::<&str, &[u8]>::new(&meta_t))?;
                let mut known = HashSet::new();
                for row in table.iter()? {
                    known.insert(row?.0.value().to_string());
                }
                known
            };
            let mut writer = UpdateWriter::open(&txn, Server::Downstream)?;
            for update in upstream.iter().filter(|u| !known.contains(&u.id)) {
                let approve = match self.mode() {
                    SyncMode::Replica => {
                        update.approval == ApprovalState::Active
                            && language_ok(update.meta.language)
                    }
                    SyncMode::Autonomous => catalog::auto_approved(&update.meta),
                };
                let approval = approve.then(|| language_ok(update.meta.language));
                writer.insert(&update.id, &update.meta, UpdateState::NotReady, approval)?;
                imported += 1;
            }
            drop(writer);
            // Approvals for languages the hierarchy no longer has turn
            // inactive.
            let dep_t = table_name(Server::Downstream, tables::DEPLOYMENT);
            let mut dep = txn.open_table(TableDefinition::<(&str, &str), u8>::new(&dep_t))?;
            let meta_table = txn.open_table(TableDefinition::<&str, &[u8]>::new(&meta_t))?;
            let mut deactivate = Vec::new();
            for row in dep.iter()? {
                let (key, active) = row?;
                if active.value() != 1 {
                    continue;
                }
                let (id, group) = key.value();
                if let Some(meta) = meta_table
                    .get(id)?
                    .and_then(|m| super::model::UpdateMeta::decode(m.value()))
                    && !language_ok(meta.language)
                {
                    deactivate.push((id.to_string(), group.to_string()));
                }
            }
            for (id, group) in &deactivate {
                dep.insert((id.as_str(), group.as_str()), 0)?;
            }
        }
        txn.commit()?;
        Ok(imported)
    }

    /// Download the files of every approved update still waiting for them,
    /// the way BITS would: each failure marks the update Failed and writes
    /// event 364 with its reason.
    pub fn content_pass(&self) -> LabResult<ContentPass> {
        let waiting = self.waiting_downloads()?;
        let mut pass = ContentPass::default();
        if waiting.is_empty() {
            return Ok(pass);
        }
        let bits = self.service(Server::Downstream, "BITS")?;
        // BITS has demand start: a stopped BITS is idle, and starts when
        // WSUS hands it a job (and stops again when it has none), unless it
        // is disabled or, in the lab, marked as failing to start. While it
        // has jobs it switches itself to (delayed) automatic start, and back
        // to demand start after: the 7040s a real server logs all day
        // ("… changed from demand start to auto start").
        let start_fails = self.fact(super::faults::BITS_START_FAILS)?.as_deref() == Some("1");
        let mut started_on_demand = false;
        let mut switched_to_auto = false;
        let blocker = if bits.startup == StartupType::Disabled {
            Some(reasons::SERVICE_DISABLED)
        } else if bits.state != ServiceState::Running && start_fails {
            Some(reasons::SERVICE_NOT_ACTIVE)
        } else {
            if bits.startup == StartupType::Manual {
                self.set_startup(Server::Downstream, "BITS", StartupType::Automatic, true)?;
                switched_to_auto = true;
            }
            if bits.state != ServiceState::Running {
                self.set_service_state(Server::Downstream, "BITS", ServiceState::Running)?;
                started_on_demand = true;
            }
            self.download_access_blocker()?
        };
        let ids: Vec<String> = waiting.iter().map(|u| u.id.clone()).collect();
        let on_upstream: HashSet<String> = self.upstream_has(&ids)?.into_iter().collect();
        let range_stripped = self.fact("proxy_strips_range")?.as_deref() == Some("1");
        let foreground = self.fact("foreground_loaded")?.as_deref() == Some("1");
        let mut results: Vec<(String, UpdateStatus)> = Vec::new();
        for update in &waiting {
            let reason = blocker.or_else(|| {
                if !on_upstream.contains(&update.id) {
                    Some(reasons::NOT_FOUND)
                } else if range_stripped && !foreground {
                    Some(reasons::RANGE)
                } else {
                    None
                }
            });
            let state = match reason {
                None => match self.write_content_file(&update.id, &update.meta) {
                    Ok(()) => {
                        pass.downloaded += 1;
                        UpdateState::Ready
                    }
                    Err(e) => {
                        tracing::warn!("lab download of {} failed: {e}", update.id);
                        self.download_failed(&mut pass, update, reasons::ACCESS_DENIED)?;
                        UpdateState::Failed
                    }
                },
                Some(reason) => {
                    self.download_failed(&mut pass, update, reason)?;
                    UpdateState::Failed
                }
            };
            results.push((
                update.id.clone(),
                UpdateStatus {
                    state,
                    ..update.status
                },
            ));
        }
        if pass.failed as usize > MAX_DOWNLOAD_EVENTS {
            self.write_log_line(
                "Warning",
                "WsusService.31",
                "ContentSyncAgent.DownloadFiles",
                &format!(
                    "{} more content downloads failed (event 364 written for the first {MAX_DOWNLOAD_EVENTS})",
                    pass.failed as usize - MAX_DOWNLOAD_EVENTS
                ),
            )?;
        }
        if blocker == Some(reasons::ACCESS_DENIED) {
            // Once per pass, beside the 364s (the text is the lab's own).
            self.app_event(
                logs::EVENT_CONTENT_ACCESS,
                Level::Error,
                &format!(
                    "The WSUS content directory is not accessible: {} needs Read for NETWORK SERVICE and Users, and WsusContent Full Control for NETWORK SERVICE. {}",
                    self.content_dir().display(),
                    reasons::ACCESS_DENIED
                ),
            )?;
        }
        self.write_statuses(&results)?;
        // No job is left: the failed ones wait for the next pass.
        if switched_to_auto {
            self.set_startup(Server::Downstream, "BITS", StartupType::Manual, true)?;
        }
        if started_on_demand {
            self.set_service_state(Server::Downstream, "BITS", ServiceState::Stopped)?;
        }
        Ok(pass)
    }

    fn download_failed(
        &self,
        pass: &mut ContentPass,
        update: &super::server::UpdateView,
        reason: &str,
    ) -> LabResult<()> {
        pass.failed += 1;
        pass.first_reason.get_or_insert_with(|| reason.to_string());
        if pass.failed as usize <= MAX_DOWNLOAD_EVENTS {
            self.log_download_failure(update, reason)?;
        }
        Ok(())
    }

    pub(crate) fn write_statuses(&self, statuses: &[(String, UpdateStatus)]) -> LabResult<()> {
        let txn = self.database().begin_write()?;
        {
            let status_t = table_name(Server::Downstream, tables::UPDATE_STATUS);
            let mut table = txn.open_table(TableDefinition::<&str, u8>::new(&status_t))?;
            for (id, status) in statuses {
                table.insert(id.as_str(), status.encode())?;
            }
        }
        txn.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::Fault;

    fn lab() -> (tempfile::TempDir, Lab) {
        crate::small_lab(SyncMode::Replica)
    }

    fn application_log(lab: &Lab) -> String {
        std::fs::read_to_string(lab.event_log(EventLog::Application)).unwrap()
    }

    #[test]
    fn an_idle_bits_starts_on_demand_and_a_stopped_one_only_by_hand() {
        let ds = Server::Downstream;
        let (_dir, lab) = lab();
        let injection = lab.inject(Fault::BitsIdle).unwrap();
        assert_eq!(injection.sync.result, SyncResult::Succeeded);
        assert!(injection.sync.downloaded >= 1);
        let bits = lab.service(ds, "BITS").unwrap();
        assert_eq!(bits.state, ServiceState::Stopped, "idle again");
        assert_eq!(bits.startup, StartupType::Manual);
        let system = std::fs::read_to_string(lab.event_log(EventLog::System)).unwrap();
        let bits_entered = |state: &str| {
            system.rfind(&format!(
                "Background Intelligent Transfer Service service entered the {state} state"
            ))
        };
        assert!(
            bits_entered("running") < bits_entered("stopped"),
            "{system}"
        );
        assert!(bits_entered("running").is_some(), "{system}");
        assert!(
            system.contains("The start type of the Background Intelligent Transfer Service service was changed from demand start to auto start.")
                && system.contains("The start type of the Background Intelligent Transfer Service service was changed from auto start to demand start."),
            "{system}"
        );
        assert!(!application_log(&lab).contains("\"id\":364,"));

        let (_other, stuck) = super::tests::lab();
        stuck.inject(Fault::BitsStopped).unwrap();
        for _ in 0..3 {
            assert_eq!(stuck.sync().unwrap().result, SyncResult::Failed);
        }
        stuck.start_service(ds, "BITS", true).unwrap();
        assert_eq!(stuck.sync().unwrap().result, SyncResult::Succeeded);
        assert_eq!(
            stuck.service(ds, "BITS").unwrap().state,
            ServiceState::Running
        );
    }

    #[test]
    fn an_upstream_name_that_does_not_resolve_fails_the_catalog() {
        let (_dir, lab) = lab();
        let ds = Server::Downstream;
        lab.set_config(ds, "UpstreamServerName", "wsus-up01.lab.exmaple", true)
            .unwrap();
        let record = lab.sync().unwrap();
        assert_eq!(record.result, SyncResult::Failed);
        assert!(
            record.reason.as_deref().unwrap().starts_with("UssNotFound"),
            "{record:?}"
        );
        assert!(application_log(&lab).contains("\"id\":10021,"));
        assert_eq!(record.imported, 0, "nothing imported");
        lab.set_config(ds, "UpstreamServerName", "WSUS-UP01.lab.example:8531", true)
            .unwrap();
        assert_eq!(lab.sync().unwrap().result, SyncResult::Succeeded);
    }

    #[test]
    fn a_transient_outage_resolves_itself_at_the_next_sync() {
        let (_dir, lab) = lab();
        let broken = lab.apply_fault(Fault::TransientOutage).unwrap();
        assert!(broken[0].starts_with("3 downloads failed"), "{broken:?}");
        let failed = lab
            .update_ids(
                Server::Downstream,
                &UpdateQuery::in_state(UpdateState::Failed),
            )
            .unwrap();
        assert_eq!(failed.len(), 3);
        assert_eq!(
            lab.upstream_has(&failed).unwrap().len(),
            3,
            "still upstream"
        );
        assert!(application_log(&lab).contains(reasons::OVERLOADED));
        let record = lab.sync().unwrap();
        assert_eq!(record.result, SyncResult::Succeeded, "{record:?}");
        assert!(
            lab.update_ids(
                Server::Downstream,
                &UpdateQuery::in_state(UpdateState::Failed)
            )
            .unwrap()
            .is_empty()
        );
    }

    #[test]
    fn a_healthy_lab_syncs_and_downloads_what_is_new() {
        let (_dir, lab) = lab();
        let before = lab.content_access().unwrap().checked;
        let record = lab.sync().unwrap();
        assert_eq!(record.result, SyncResult::Succeeded, "{record:?}");
        assert!(record.imported >= APPROVED_PER_PUBLICATION as u32);
        assert!(record.downloaded >= 1);
        let after = lab.content_access().unwrap();
        assert!(after.checked > before);
        assert_eq!(after.lacking, 0, "new files inherit their folder's entries");
        assert!(
            std::fs::read_to_string(lab.software_distribution_log())
                .unwrap()
                .contains("Synchronization completed successfully")
        );
    }

    #[test]
    fn each_download_blocker_fails_the_sync_until_it_is_gone() {
        for (fault, reason) in [
            (Fault::BitsStopped, reasons::SERVICE_NOT_ACTIVE),
            (Fault::BitsDisabled, reasons::SERVICE_DISABLED),
            (Fault::ContentRootRead, reasons::ACCESS_DENIED),
            (Fault::ContentUsersRead, reasons::ACCESS_DENIED),
            (Fault::ContentFullControl, reasons::ACCESS_DENIED),
            (Fault::HttpRange, reasons::RANGE),
        ] {
            let (_dir, lab) = lab();
            let injection = lab.inject(fault).unwrap();
            assert_eq!(injection.sync.result, SyncResult::Failed, "{fault:?}");
            assert!(
                injection.sync.reason.as_deref().unwrap().contains(reason),
                "{fault:?}: {:?}",
                injection.sync
            );
            assert!(application_log(&lab).contains(&format!(
                "\"id\":364,\"level\":\"Error\",\"source\":\"Windows Server Update Services\",\"computer\":\"wsus-ds01.lab.example\",\"message\":\"Content file download failed. Reason: {reason} Source File: /Content/"
            )), "{fault:?}");
            // A permissions problem also shows as 10012.
            assert_eq!(
                application_log(&lab).contains("\"id\":10012,"),
                reason == reasons::ACCESS_DENIED,
                "{fault:?}"
            );
            assert_eq!(
                lab.sync().unwrap().result,
                SyncResult::Failed,
                "{fault:?} persists"
            );
        }
    }

    #[test]
    fn the_range_problem_goes_once_wsus_service_restarts_with_foreground_downloads() {
        let (_dir, lab) = lab();
        lab.inject(Fault::HttpRange).unwrap();
        let ds = Server::Downstream;
        lab.set_config(ds, "BitsDownloadPriorityForeground", "1", true)
            .unwrap();
        assert_eq!(
            lab.sync().unwrap().result,
            SyncResult::Failed,
            "not until a restart"
        );
        lab.restart_service(ds, "WsusService", true).unwrap();
        let (states, _) = lab.state_counts(ds).unwrap();
        assert_eq!(
            states.get(&UpdateState::Failed),
            None,
            "the restart resumed the downloads"
        );
        assert_eq!(lab.sync().unwrap().result, SyncResult::Succeeded);
    }

    #[test]
    fn lost_updates_fail_the_catalog_until_cancelled() {
        let (_dir, lab) = lab();
        let injection = lab.inject(Fault::UpstreamLostUpdates).unwrap();
        assert_eq!(injection.sync.result, SyncResult::Failed);
        let log = std::fs::read_to_string(lab.software_distribution_log()).unwrap();
        assert!(log.contains("USS ThrowException: Actor = https://wsus-up01.lab.example:8531/ServerSyncWebService/ServerSyncWebService.asmx, Method = \"http://www.microsoft.com/SoftwareDistribution/Server/ServerSyncWebService/GetUpdateData\", ErrorCode = InternalServerError, Message = , Client = False"));
        assert!(application_log(&lab).contains("\"id\":10021"));
        let failed = lab
            .update_ids(
                Server::Downstream,
                &UpdateQuery::in_state(UpdateState::Failed),
            )
            .unwrap();
        let still_there = lab.upstream_has(&failed).unwrap();
        let gone: Vec<String> = failed
            .iter()
            .filter(|id| !still_there.contains(id))
            .cloned()
            .collect();
        assert!(!gone.is_empty() && !still_there.is_empty());
        lab.cancel_downloads(&gone, true).unwrap();
        assert_eq!(lab.sync().unwrap().result, SyncResult::Succeeded);
    }

    #[test]
    fn a_language_shrink_leaves_inactive_approvals_that_can_be_removed() {
        let (_dir, lab) = lab();
        let before = lab.approval_tally(Server::Downstream).unwrap();
        assert_eq!(before.inactive, 0);
        let injection = lab.inject(Fault::LanguageShrink).unwrap();
        assert_eq!(injection.sync.result, SyncResult::Succeeded);
        let after = lab.approval_tally(Server::Downstream).unwrap();
        assert!(after.inactive > 0);
        let inactive = lab.inactive_approvals(Server::Downstream).unwrap();
        assert!(
            inactive.iter().all(|(u, _)| u.meta.language > 1),
            "only dropped languages"
        );
        assert_eq!(
            lab.remove_inactive_approvals(Server::Downstream, false)
                .unwrap(),
            after.inactive,
            "planned"
        );
        assert_eq!(lab.approval_tally(Server::Downstream).unwrap(), after);
        lab.remove_inactive_approvals(Server::Downstream, true)
            .unwrap();
        assert_eq!(lab.approval_tally(Server::Downstream).unwrap().inactive, 0);
        lab.sync().unwrap();
        assert_eq!(
            lab.approval_tally(Server::Downstream).unwrap().inactive,
            0,
            "a replica takes only active approvals: removed ones do not come back"
        );
    }
}
