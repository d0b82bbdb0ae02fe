//! Synchronization of the downstream server with its upstream, and the
//! content downloads that follow, as a real server does them and logs
//! them. A sync started through the API runs on after `start_sync`
//! returns and finishes [`SYNC_DURATION_MS`] later (settled by whoever
//! looks first, or by the backend's timer). Its record covers the catalog,
//! which fails where a real one fails (an upstream name that does not
//! resolve, updates the upstream can no longer return), with the
//! `SynchronizationError` name. The content pass that follows downloads
//! NotReady updates only: BITS, the content folder's permissions, the
//! upstream or the proxy can fail a file, which leaves its update Failed
//! (event 364) until its download is resumed.

use super::logs::{self, EventLog, Level, reasons};
use super::model::{ServiceState, StartupType, SyncMode, SyncRecord, SyncResult, UpdateStatus};
use super::server::{ApprovalState, UpdateQuery, UpdateWriter};
use super::{Lab, LabError, LabResult, Server, UpdateState, catalog, table_name, tables};
use redb::{ReadableTable, TableDefinition};
use std::collections::HashSet;

/// Each sync, the upstream has published at least this many new updates
/// that the automatic approval rule approves (a Patch Tuesday, compressed).
pub const APPROVED_PER_PUBLICATION: usize = 3;
/// Event 364 is written for at most this many files per pass; the rest are
/// counted in `SoftwareDistribution.log`.
pub(crate) const MAX_DOWNLOAD_EVENTS: usize = 25;

/// Lab fact: the sync `start_sync` began that has not finished yet, as
/// `started_ms:due_ms`.
const RUNNING_SYNC: &str = "sync_running";
/// Lab fact: how long a sync started through the API runs, in
/// milliseconds ([`DEFAULT_SYNC_DURATION_MS`] when unset).
pub const SYNC_DURATION_MS: &str = "sync_duration_ms";
/// A sync's run time unless the lab says otherwise: long enough that a
/// plugin sees it running, short enough for a demo.
pub const DEFAULT_SYNC_DURATION_MS: u64 = 1_500;

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

    /// Start a synchronization the way `StartSynchronization` does: it
    /// returns at once with the sync's start time, and the sync finishes
    /// [`SYNC_DURATION_MS`] later, when [`Lab::settle_sync`] is called.
    /// Refused while WsusService is stopped or another sync runs.
    pub fn start_sync(&self) -> LabResult<u64> {
        if self.service(Server::Downstream, "WsusService")?.state != ServiceState::Running {
            return Err(LabError::Conflict(
                "WsusService is not running: the server cannot start a synchronization".into(),
            ));
        }
        let duration = self
            .fact(SYNC_DURATION_MS)?
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_SYNC_DURATION_MS);
        let txn = self.database().begin_write()?;
        let started_ms;
        {
            let mut lab = txn.open_table(TableDefinition::<&str, &str>::new(tables::LAB))?;
            if let Some(running) = lab.get(RUNNING_SYNC)?
                && !running.value().is_empty()
            {
                return Err(LabError::Conflict(format!(
                    "a synchronization is already running (started at {})",
                    running.value().split(':').next().unwrap_or_default()
                )));
            }
            started_ms = medic_backends::now_ms();
            let due_ms = started_ms + duration;
            lab.insert(RUNNING_SYNC, format!("{started_ms}:{due_ms}").as_str())?;
        }
        txn.commit()?;
        Ok(started_ms)
    }

    /// The sync started through the API that has not finished: its start
    /// and due times.
    pub fn running_sync(&self) -> LabResult<Option<(u64, u64)>> {
        Ok(self.fact(RUNNING_SYNC)?.as_deref().and_then(parse_running))
    }

    /// Finish the running sync if it is due; the record when it finished
    /// here. Safe to call from anywhere at any time: one caller takes it.
    pub fn settle_sync(&self) -> LabResult<Option<SyncRecord>> {
        let now = medic_backends::now_ms();
        // Most calls find nothing due: a read says so without a write.
        if self.running_sync()?.is_none_or(|(_, due)| due > now) {
            return Ok(None);
        }
        let txn = self.database().begin_write()?;
        let started_ms;
        {
            let mut lab = txn.open_table(TableDefinition::<&str, &str>::new(tables::LAB))?;
            let running = lab.get(RUNNING_SYNC)?.map(|v| v.value().to_string());
            match running.as_deref().and_then(parse_running) {
                Some((started, due)) if due <= now => started_ms = started,
                _ => return Ok(None),
            }
            lab.insert(RUNNING_SYNC, "")?;
        }
        txn.commit()?;
        self.run_sync(started_ms).map(Some)
    }

    /// Synchronize the downstream with the upstream now, to the end (the
    /// server's own schedule, or a fault's injection), then download what
    /// is approved. Records and returns how it went.
    pub fn sync(&self) -> LabResult<SyncRecord> {
        self.run_sync(medic_backends::now_ms())
    }

    fn run_sync(&self, started_ms: u64) -> LabResult<SyncRecord> {
        let record = SyncRecord::begun(started_ms);
        let finish = |lab: &Self, mut record: SyncRecord| -> LabResult<SyncRecord> {
            record.finished_ms = medic_backends::now_ms().max(record.started_ms);
            lab.record_sync(Server::Downstream, &record)?;
            Ok(record)
        };
        // The catalog phase failed: 10021 (its text is not documented; this
        // is the lab's), and the sync ends there.
        let catalog_failed = |lab: &Self, mut record: SyncRecord, error: &str, reason: String| {
            lab.app_event(
                logs::EVENT_SYNC_FAILED,
                Level::Error,
                &format!("Catalog synchronization failed. Reason: {error}: {reason}"),
            )?;
            record.result = SyncResult::Failed;
            record.error = Some(error.to_string());
            record.reason = Some(reason);
            finish(lab, record)
        };
        if self.service(Server::Downstream, "WsusService")?.state != ServiceState::Running {
            // A stopped server runs no sync; the lab records the one it
            // was asked for as failed, so that it is not lost silently.
            let mut record = record;
            record.result = SyncResult::Failed;
            record.error = Some("Unknown".into());
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
            let reason = format!("Unable to resolve the specified upstream server {upstream}");
            return catalog_failed(self, record, "UssNotFound", reason);
        }
        if let Some(reason) = self.proxy_refusal()? {
            return catalog_failed(self, record, "ProxyError", reason);
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
            return catalog_failed(self, record, "UssInternalError", reason);
        }
        let mut record = record;
        record.imported = self.import_from_upstream()?;
        self.write_log_line(
            "Info",
            "WsusService.12",
            "CatalogSyncAgentCore.ExecuteSyncProtocol",
            &format!(
                "Synchronization completed successfully: {} new updates",
                record.imported
            ),
        )?;

        // The content pass that follows: its failures are update states
        // and 364s, not the sync's result.
        let pass = self.content_pass()?;
        record.downloaded = pass.downloaded;
        record.download_failures = pass.failed;
        record.first_download_failure = pass.first_reason;
        finish(self, record)
    }

    /// Approved, not declined updates whose files are not here yet, Failed
    /// ones included: the catalog must still have their data.
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

    /// The downloads BITS works on: approved updates still NotReady. A
    /// Failed one waits for `ResumeDownload` (or a new approval).
    fn pending_downloads(&self) -> LabResult<Vec<super::server::UpdateView>> {
        Ok(self
            .waiting_downloads()?
            .into_iter()
            .filter(|u| u.status.state == UpdateState::NotReady)
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
            let dep_t = table_name(Server::Downstream, tables::DEPLOYMENT);
            let mut dep = txn.open_table(TableDefinition::<(&str, &str), u8>::new(&dep_t))?;
            let meta_table = txn.open_table(TableDefinition::<&str, &[u8]>::new(&meta_t))?;
            let up_dep_t = table_name(Server::Upstream, tables::DEPLOYMENT);
            let up_dep = txn.open_table(TableDefinition::<(&str, &str), u8>::new(&up_dep_t))?;
            let mut stale = Vec::new();
            for row in dep.iter()? {
                let (key, active) = row?;
                if active.value() != 1 {
                    continue;
                }
                let (id, group) = key.value();
                let keep = match self.mode() {
                    // A replica takes only the upstream's active approvals
                    // ("replica servers synchronize only active
                    // approvals"): one the upstream no longer has active
                    // is not kept here.
                    SyncMode::Replica => up_dep.get((id, group))?.map(|v| v.value()) == Some(1),
                    // An autonomous server keeps its own approvals; those
                    // for languages the hierarchy no longer has turn
                    // inactive here.
                    SyncMode::Autonomous => meta_table
                        .get(id)?
                        .and_then(|m| super::model::UpdateMeta::decode(m.value()))
                        .is_none_or(|meta| language_ok(meta.language)),
                };
                if !keep {
                    stale.push((id.to_string(), group.to_string()));
                }
            }
            for (id, group) in &stale {
                match self.mode() {
                    SyncMode::Replica => dep.remove((id.as_str(), group.as_str()))?,
                    SyncMode::Autonomous => dep.insert((id.as_str(), group.as_str()), 0)?,
                };
            }
            // ...and every active approval the upstream has for an update
            // known here.
            if self.mode() == SyncMode::Replica {
                let mut missing = Vec::new();
                for row in up_dep.iter()? {
                    let (key, active) = row?;
                    let (id, group) = key.value();
                    if active.value() == 1
                        && meta_table.get(id)?.is_some()
                        && dep.get((id, group))?.is_none()
                    {
                        missing.push((id.to_string(), group.to_string()));
                    }
                }
                for (id, group) in &missing {
                    dep.insert((id.as_str(), group.as_str()), 1)?;
                }
            }
        }
        txn.commit()?;
        Ok(imported)
    }

    /// Download the files of every approved update still NotReady, the way
    /// BITS would: each failure marks the update Failed and writes event
    /// 364 with its reason.
    pub fn content_pass(&self) -> LabResult<ContentPass> {
        let waiting = self.pending_downloads()?;
        let mut pass = ContentPass::default();
        if waiting.is_empty() {
            return Ok(pass);
        }
        // A server that keeps its files on Microsoft Update downloads
        // none: its clients fetch them from there.
        if self.config(Server::Downstream, "HostOnMu")?.as_deref() == Some("1") {
            let ready: Vec<(String, UpdateStatus)> = waiting
                .iter()
                .map(|u| {
                    let status = UpdateStatus {
                        state: UpdateState::Ready,
                        ..u.status
                    };
                    (u.id.clone(), status)
                })
                .collect();
            self.write_statuses(&ready)?;
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
                self.set_startup(
                    Server::Downstream,
                    "BITS",
                    StartupType::AutomaticDelayed,
                    true,
                )?;
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
        // An upstream that keeps its files on Microsoft Update has none to
        // give a downstream that stores them locally.
        let upstream_has_no_files =
            self.config(Server::Upstream, "HostOnMu")?.as_deref() == Some("1");
        let foreground = self.fact("foreground_loaded")?.as_deref() == Some("1");
        let mut results: Vec<(String, UpdateStatus)> = Vec::new();
        for update in &waiting {
            let reason = blocker.or_else(|| {
                if !on_upstream.contains(&update.id) || upstream_has_no_files {
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

/// `started_ms:due_ms`; an empty value is no running sync.
fn parse_running(value: &str) -> Option<(u64, u64)> {
    let (started, due) = value.split_once(':')?;
    Some((started.parse().ok()?, due.parse().ok()?))
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

    fn in_state(lab: &Lab, state: UpdateState) -> Vec<String> {
        lab.update_ids(Server::Downstream, &UpdateQuery::in_state(state))
            .unwrap()
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
        let injection = stuck.inject(Fault::BitsStopped).unwrap();
        assert_eq!(
            injection.sync.result,
            SyncResult::Succeeded,
            "the catalog does not need BITS"
        );
        let failed = in_state(&stuck, UpdateState::Failed);
        assert_eq!(failed.len() as u32, injection.sync.download_failures);
        assert!(!failed.is_empty());
        stuck.start_service(ds, "BITS", true).unwrap();
        stuck.sync().unwrap();
        assert_eq!(
            in_state(&stuck, UpdateState::Failed),
            failed,
            "Failed stays Failed until resumed"
        );
        let resumed = stuck.resume_downloads(&failed, true).unwrap();
        assert_eq!(resumed.done, failed);
        assert!(in_state(&stuck, UpdateState::Failed).is_empty());
        let record = stuck.sync().unwrap();
        assert_eq!(record.download_failures, 0, "{record:?}");
        assert!(record.downloaded as usize >= failed.len(), "{record:?}");
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
        assert_eq!(record.error.as_deref(), Some("UssNotFound"), "{record:?}");
        assert!(application_log(&lab).contains("\"id\":10021,"));
        assert_eq!(record.imported, 0, "nothing imported");
        lab.set_config(ds, "UpstreamServerName", "WSUS-UP01.lab.example:8531", true)
            .unwrap();
        assert_eq!(lab.sync().unwrap().result, SyncResult::Succeeded);
    }

    #[test]
    fn a_started_sync_runs_on_until_it_is_due_and_one_caller_finishes_it() {
        let (_dir, lab) = lab();
        lab.set_fact(SYNC_DURATION_MS, "60000").unwrap();
        let before = lab.sync_history(Server::Downstream, 10).unwrap().len();
        let started = lab.start_sync().unwrap();
        assert_eq!(lab.running_sync().unwrap().map(|(s, _)| s), Some(started));
        assert!(matches!(lab.start_sync(), Err(LabError::Conflict(_))));
        assert_eq!(lab.settle_sync().unwrap(), None, "not due yet");
        // Make it due, then let several callers race to finish it.
        lab.set_fact(RUNNING_SYNC, &format!("{started}:{started}"))
            .unwrap();
        let finished: Vec<Option<SyncRecord>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| lab.settle_sync().unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let records: Vec<&SyncRecord> = finished.iter().flatten().collect();
        assert_eq!(records.len(), 1, "one caller finishes it: {finished:?}");
        assert_eq!(records[0].started_ms, started);
        assert_eq!(lab.running_sync().unwrap(), None);
        let history = lab.sync_history(Server::Downstream, 10).unwrap();
        assert_eq!(history.len(), before + 1);
        assert_eq!(history[0].started_ms, started);
    }

    #[test]
    fn a_transient_outage_resolves_itself_at_the_next_sync() {
        let (_dir, lab) = lab();
        let broken = lab.apply_fault(Fault::TransientOutage).unwrap();
        assert!(broken[0].starts_with("3 downloads failed"), "{broken:?}");
        assert!(
            in_state(&lab, UpdateState::Failed).is_empty(),
            "BITS retries a 503: nothing is Failed"
        );
        assert!(application_log(&lab).contains(reasons::OVERLOADED));
        let record = lab.sync().unwrap();
        assert_eq!(record.result, SyncResult::Succeeded, "{record:?}");
        assert_eq!(record.download_failures, 0, "{record:?}");
        assert!(record.downloaded >= 3);
    }

    #[test]
    fn a_healthy_lab_syncs_and_downloads_what_is_new() {
        let (_dir, lab) = lab();
        let before = lab.content_access().unwrap().checked;
        let record = lab.sync().unwrap();
        assert_eq!(record.result, SyncResult::Succeeded, "{record:?}");
        assert_eq!(record.error, None);
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
    fn each_download_blocker_fails_downloads_until_gone_and_resumed() {
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
            assert_eq!(
                injection.sync.result,
                SyncResult::Succeeded,
                "{fault:?}: the catalog is fine"
            );
            assert!(injection.sync.download_failures > 0, "{fault:?}");
            assert!(
                injection
                    .sync
                    .first_download_failure
                    .as_deref()
                    .unwrap()
                    .contains(reason),
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
            let failed = in_state(&lab, UpdateState::Failed);
            assert!(!failed.is_empty(), "{fault:?}");
            let resumed = lab.resume_downloads(&failed, true).unwrap();
            assert_eq!(resumed.done, failed, "{fault:?}");
            lab.sync().unwrap();
            let again = in_state(&lab, UpdateState::Failed);
            assert!(
                failed.iter().all(|id| again.contains(id)),
                "{fault:?} persists: resumed downloads fail again at the next sync"
            );
        }
    }

    #[test]
    fn the_range_problem_goes_once_wsus_service_restarts_with_foreground_and_resumes() {
        let (_dir, lab) = lab();
        lab.inject(Fault::HttpRange).unwrap();
        let ds = Server::Downstream;
        lab.set_config(ds, "BitsDownloadPriorityForeground", "1", true)
            .unwrap();
        lab.restart_service(ds, "WsusService", true).unwrap();
        let failed = in_state(&lab, UpdateState::Failed);
        assert!(!failed.is_empty(), "a restart resumes nothing");
        lab.resume_downloads(&failed, true).unwrap();
        let record = lab.sync().unwrap();
        assert_eq!(record.download_failures, 0, "{record:?}");
        assert!(in_state(&lab, UpdateState::Failed).is_empty());
    }

    #[test]
    fn lost_updates_fail_the_catalog_until_declined() {
        let (_dir, lab) = crate::small_lab(SyncMode::Autonomous);
        let injection = lab.inject(Fault::UpstreamLostUpdates).unwrap();
        assert_eq!(injection.sync.result, SyncResult::Failed);
        assert_eq!(injection.sync.error.as_deref(), Some("UssInternalError"));
        let log = std::fs::read_to_string(lab.software_distribution_log()).unwrap();
        assert!(log.contains("USS ThrowException: Actor = https://wsus-up01.lab.example:8531/ServerSyncWebService/ServerSyncWebService.asmx, Method = \"http://www.microsoft.com/SoftwareDistribution/Server/ServerSyncWebService/GetUpdateData\", ErrorCode = InternalServerError, Message = , Client = False"));
        assert!(application_log(&lab).contains("\"id\":10021"));
        let failed = in_state(&lab, UpdateState::Failed);
        assert!(!failed.is_empty());
        assert!(
            lab.upstream_has(&failed).unwrap().is_empty(),
            "only the orphans gave up (404); the 503s are retried"
        );
        let cancel = lab.cancel_downloads(&failed, true).unwrap();
        assert!(cancel.done.is_empty(), "Failed cannot be cancelled");
        lab.decline(&failed, true).unwrap();
        assert_eq!(lab.sync().unwrap().result, SyncResult::Succeeded);
    }

    #[test]
    fn a_language_shrink_leaves_inactive_approvals_on_the_upstream() {
        let (_dir, lab) = lab();
        let (up, ds) = (Server::Upstream, Server::Downstream);
        assert_eq!(lab.approval_tally(up).unwrap().inactive, 0);
        let injection = lab.inject(Fault::LanguageShrink).unwrap();
        assert_eq!(injection.sync.result, SyncResult::Succeeded);
        let upstream = lab.approval_tally(up).unwrap();
        assert!(upstream.inactive > 0, "{upstream:?}");
        let downstream = lab.approval_tally(ds).unwrap();
        assert_eq!(
            downstream.inactive, 0,
            "a replica takes active approvals only"
        );
        assert!(
            downstream.active < upstream.active + upstream.inactive,
            "the article's mismatch: {downstream:?} vs {upstream:?}"
        );
        let inactive = lab.inactive_approvals(up).unwrap();
        assert!(
            inactive.iter().all(|(u, _)| u.meta.language > 1),
            "only dropped languages"
        );
        assert_eq!(
            lab.remove_inactive_approvals(up, false).unwrap(),
            upstream.inactive,
            "planned"
        );
        assert_eq!(lab.approval_tally(up).unwrap(), upstream);
        lab.remove_inactive_approvals(up, true).unwrap();
        assert_eq!(lab.approval_tally(up).unwrap().inactive, 0);
        lab.sync().unwrap();
        let upstream = lab.approval_tally(up).unwrap();
        let downstream = lab.approval_tally(ds).unwrap();
        assert_eq!(
            (upstream.active, upstream.inactive),
            (downstream.active, 0),
            "the counts match once the upstream's inactive approvals are gone"
        );
    }

    #[test]
    fn the_road_to_the_upstream_can_break_at_the_name_or_the_proxy() {
        for (fault, error) in [
            (Fault::ProxyPasswordExpired, "ProxyError"),
            (Fault::UpstreamNameTypo, "UssNotFound"),
        ] {
            let (_dir, lab) = lab();
            let injection = lab.inject(fault).unwrap();
            assert_eq!(injection.sync.result, SyncResult::Failed, "{fault:?}");
            assert_eq!(injection.sync.error.as_deref(), Some(error), "{fault:?}");
            assert!(application_log(&lab).contains("\"id\":10021,"), "{fault:?}");
            let probe = lab.check_upstream().unwrap();
            assert!(probe.problem.is_some(), "{fault:?}: {probe:?}");
        }
    }

    #[test]
    fn a_storage_mismatch_fails_downloads_until_the_hierarchy_agrees() {
        let (_dir, lab) = lab();
        let injection = lab.inject(Fault::StorageMismatch).unwrap();
        assert_eq!(injection.sync.result, SyncResult::Succeeded);
        assert!(
            injection
                .sync
                .first_download_failure
                .as_deref()
                .unwrap()
                .contains("404"),
            "{injection:?}"
        );
        let failed = in_state(&lab, UpdateState::Failed);
        assert!(!failed.is_empty());
        lab.set_config(Server::Downstream, "HostOnMu", "1", true)
            .unwrap();
        lab.resume_downloads(&failed, true).unwrap();
        assert_eq!(lab.sync().unwrap().download_failures, 0);
        assert!(in_state(&lab, UpdateState::Failed).is_empty());
    }
}
