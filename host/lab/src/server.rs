//! What each lab server does when asked: its services, its configuration,
//! its updates (list, cancel, decline), its approvals, and its
//! synchronization history. Every change a real server would log is
//! logged the same way (`logs`).

use super::logs::{self, EventLog, Level};
use super::model::{
    SERVICES, ServiceRow, ServiceState, StartupType, SyncMode, SyncRecord, UpdateMeta, UpdateStatus,
};
use super::{Lab, LabError, LabResult, Server, UpdateState, catalog, table_name, tables};
use redb::{
    ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction,
};
use std::collections::{BTreeMap, HashSet};

type Str<'a> = TableDefinition<'a, &'static str, &'static str>;

/// Writes updates into a server's tables within one transaction.
pub(crate) struct UpdateWriter<'t> {
    meta: redb::Table<'t, &'static str, &'static [u8]>,
    status: redb::Table<'t, &'static str, u8>,
    deployment: redb::Table<'t, (&'static str, &'static str), u8>,
}

impl<'t> UpdateWriter<'t> {
    pub(crate) fn open(txn: &'t WriteTransaction, server: Server) -> LabResult<Self> {
        Ok(Self {
            meta: txn.open_table(TableDefinition::new(&table_name(server, tables::UPDATE)))?,
            status: txn.open_table(TableDefinition::new(&table_name(
                server,
                tables::UPDATE_STATUS,
            )))?,
            deployment: txn.open_table(TableDefinition::new(&table_name(
                server,
                tables::DEPLOYMENT,
            )))?,
        })
    }

    /// Add an update; `approval`: `Some(active)` approves it for its target
    /// group.
    pub(crate) fn insert(
        &mut self,
        id: &str,
        meta: &UpdateMeta,
        state: UpdateState,
        approval: Option<bool>,
    ) -> LabResult<()> {
        self.meta.insert(id, meta.encode().as_slice())?;
        self.status.insert(
            id,
            UpdateStatus {
                state,
                declined: false,
            }
            .encode(),
        )?;
        if let Some(active) = approval {
            self.deployment
                .insert((id, target_group(meta)), u8::from(active))?;
        }
        Ok(())
    }

    /// Remove an update and its approvals.
    pub(crate) fn remove(&mut self, id: &str) -> LabResult<()> {
        self.meta.remove(id)?;
        self.status.remove(id)?;
        for group in catalog::TARGET_GROUPS {
            self.deployment.remove((id, group))?;
        }
        Ok(())
    }
}

/// The target group an update is approved for.
pub(crate) fn target_group(meta: &UpdateMeta) -> &'static str {
    if catalog::auto_approved(meta) {
        catalog::TARGET_GROUPS[0]
    } else {
        catalog::TARGET_GROUPS[1]
    }
}

/// Which updates to list; unset fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct UpdateQuery {
    pub state: Option<UpdateState>,
    pub declined: Option<bool>,
    /// Active approval or not.
    pub approved: Option<bool>,
}

impl UpdateQuery {
    /// Every update in `state`.
    pub fn in_state(state: UpdateState) -> Self {
        Self {
            state: Some(state),
            ..Self::default()
        }
    }
}

/// Approval of an update on a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalState {
    None,
    Active,
    Inactive,
}

/// One update as a server knows it.
#[derive(Debug, Clone)]
pub struct UpdateView {
    pub id: String,
    pub meta: UpdateMeta,
    pub status: UpdateStatus,
    pub approval: ApprovalState,
}

impl UpdateView {
    pub fn title(&self) -> String {
        catalog::title(&self.meta)
    }
}

/// Approval counts of a server (distinct updates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct ApprovalTally {
    pub active: u32,
    pub inactive: u32,
}

/// What a call on many updates did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub done: Vec<String>,
    pub refused: Vec<(String, String)>,
}

/// A service's state before and after a control call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceChange {
    pub before: ServiceRow,
    pub after: ServiceRow,
}

pub fn display_name(service: &str) -> Option<&'static str> {
    SERVICES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(service))
        .map(|(_, display)| *display)
}

fn canonical_service(service: &str) -> LabResult<&'static str> {
    SERVICES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(service))
        .map(|(name, _)| *name)
        .ok_or_else(|| {
            LabError::NotFound(format!(
                "no service `{service}` on this server (it has BITS, WsusService and W3SVC)"
            ))
        })
}

impl Lab {
    // ----- services -----

    /// A service's state and startup type.
    pub fn service(&self, server: Server, name: &str) -> LabResult<ServiceRow> {
        let name = canonical_service(name)?;
        let txn = self.database().begin_read()?;
        let table_name = table_name(server, tables::SERVICE);
        let table = txn.open_table(TableDefinition::<&str, u8>::new(&table_name))?;
        let bits = table
            .get(name)?
            .ok_or_else(|| LabError::Corrupt(format!("service {name} has no row")))?
            .value();
        Ok(ServiceRow::decode(bits))
    }

    fn put_service(&self, server: Server, name: &str, row: ServiceRow) -> LabResult<()> {
        let txn = self.database().begin_write()?;
        {
            let table_name = table_name(server, tables::SERVICE);
            let mut table = txn.open_table(TableDefinition::<&str, u8>::new(&table_name))?;
            table.insert(name, row.encode())?;
        }
        txn.commit()?;
        Ok(())
    }

    fn log_service_state(&self, server: Server, name: &str, state: ServiceState) -> LabResult<()> {
        if server != Server::Downstream {
            return Ok(());
        }
        let word = match state {
            ServiceState::Running => "running",
            ServiceState::Stopped => "stopped",
        };
        let message = format!(
            "The {} service entered the {word} state.",
            display_name(name).unwrap_or(name)
        );
        self.write_event(
            EventLog::System,
            logs::EVENT_SERVICE_STATE,
            Level::Information,
            logs::SCM_SOURCE,
            &message,
        )
    }

    /// Set a service's state (no checks: the fault injector and `start`
    /// and `stop` use it), logging 7036 when it changes.
    pub(crate) fn set_service_state(
        &self,
        server: Server,
        name: &str,
        state: ServiceState,
    ) -> LabResult<ServiceChange> {
        let name = canonical_service(name)?;
        let before = self.service(server, name)?;
        let after = ServiceRow { state, ..before };
        if before != after {
            self.put_service(server, name, after)?;
            self.log_service_state(server, name, state)?;
        }
        Ok(ServiceChange { before, after })
    }

    /// Start a service. A disabled one cannot start. When WsusService
    /// starts, it loads its configuration and resumes pending downloads.
    pub fn start_service(
        &self,
        server: Server,
        name: &str,
        apply: bool,
    ) -> LabResult<ServiceChange> {
        let name = canonical_service(name)?;
        let before = self.service(server, name)?;
        if before.startup == StartupType::Disabled {
            return Err(LabError::Conflict(format!(
                "cannot start {name}: {}",
                logs::reasons::SERVICE_DISABLED
            )));
        }
        let after = ServiceRow {
            state: ServiceState::Running,
            ..before
        };
        if !apply || before.state == ServiceState::Running {
            return Ok(ServiceChange { before, after });
        }
        let change = self.set_service_state(server, name, ServiceState::Running)?;
        if name == "WsusService" && server == Server::Downstream {
            self.on_wsus_service_start()?;
        }
        if name == "BITS" && server == Server::Downstream {
            // Started by hand, a BITS that would not start by itself runs.
            self.set_fact(super::faults::BITS_START_FAILS, "0")?;
        }
        Ok(change)
    }

    pub fn stop_service(
        &self,
        server: Server,
        name: &str,
        apply: bool,
    ) -> LabResult<ServiceChange> {
        let name = canonical_service(name)?;
        let before = self.service(server, name)?;
        let after = ServiceRow {
            state: ServiceState::Stopped,
            ..before
        };
        if !apply {
            return Ok(ServiceChange { before, after });
        }
        self.set_service_state(server, name, ServiceState::Stopped)
    }

    pub fn restart_service(
        &self,
        server: Server,
        name: &str,
        apply: bool,
    ) -> LabResult<ServiceChange> {
        let before = self.service(server, name)?;
        if before.startup == StartupType::Disabled {
            return Err(LabError::Conflict(format!(
                "cannot restart {name}: {}",
                logs::reasons::SERVICE_DISABLED
            )));
        }
        if !apply {
            let after = ServiceRow {
                state: ServiceState::Running,
                ..before
            };
            return Ok(ServiceChange { before, after });
        }
        self.stop_service(server, name, true)?;
        let started = self.start_service(server, name, true)?;
        Ok(ServiceChange {
            before,
            after: started.after,
        })
    }

    /// Change how a service starts, logging 7040.
    pub fn set_startup(
        &self,
        server: Server,
        name: &str,
        startup: StartupType,
        apply: bool,
    ) -> LabResult<ServiceChange> {
        let name = canonical_service(name)?;
        let before = self.service(server, name)?;
        let after = ServiceRow { startup, ..before };
        if apply && before != after {
            self.put_service(server, name, after)?;
            if server == Server::Downstream {
                let message = format!(
                    "The start type of the {} service was changed from {} to {}.",
                    display_name(name).unwrap_or(name),
                    before.startup.scm_text(),
                    startup.scm_text()
                );
                self.write_event(
                    EventLog::System,
                    logs::EVENT_START_TYPE,
                    Level::Information,
                    logs::SCM_SOURCE,
                    &message,
                )?;
            }
        }
        Ok(ServiceChange { before, after })
    }

    /// WsusService just started: it reads `BitsDownloadPriorityForeground`
    /// and hands its pending downloads to BITS again.
    fn on_wsus_service_start(&self) -> LabResult<()> {
        let foreground = self
            .config(Server::Downstream, "BitsDownloadPriorityForeground")?
            .unwrap_or_default();
        self.set_fact("foreground_loaded", &foreground)?;
        self.content_pass()?;
        Ok(())
    }

    // ----- configuration -----

    fn config_table(name: &str) -> &'static str {
        match name {
            "SyncToMu" | "UpstreamServerName" | "ReplicaMode" => tables::CONFIG_A,
            _ => tables::CONFIG_C,
        }
    }

    /// A configuration value from `tbConfigurationA` or `C`.
    pub fn config(&self, server: Server, name: &str) -> LabResult<Option<String>> {
        let txn = self.database().begin_read()?;
        let table_name = table_name(server, Self::config_table(name));
        let table = txn.open_table(Str::new(&table_name))?;
        Ok(table.get(name)?.map(|v| v.value().to_string()))
    }

    /// Set a configuration value; returns the previous one. Only known
    /// `tbConfigurationC` names are accepted (a typo must not pass).
    pub fn set_config(
        &self,
        server: Server,
        name: &str,
        value: &str,
        apply: bool,
    ) -> LabResult<Option<String>> {
        let previous = self.config(server, name)?;
        if previous.is_none() {
            return Err(LabError::NotFound(format!(
                "no configuration value `{name}` on this server"
            )));
        }
        // The upstream's name is what "you enter in the WSUS console on the
        // downstream WSUS server" (the article); the rest of
        // tbConfigurationA is setup's.
        let upstream_name = name == "UpstreamServerName" && server == Server::Downstream;
        if Self::config_table(name) == tables::CONFIG_A && !upstream_name {
            return Err(LabError::Conflict(format!(
                "`{name}` is set by WSUS setup and the upstream configuration, not here"
            )));
        }
        if upstream_name && !is_server_name(value) {
            return Err(LabError::Invalid(format!(
                "UpstreamServerName must be a host name, with an optional :port, not `{value}`"
            )));
        }
        let flag = matches!(
            name,
            "BitsDownloadPriorityForeground" | "UseProxy" | "HasProxyPassword" | "HostOnMu"
        );
        if flag && !matches!(value, "0" | "1") {
            return Err(LabError::Invalid(format!(
                "{name} must be 0 or 1, not `{value}`"
            )));
        }
        if name == "ProxyServerPort" && !value.parse::<u16>().is_ok_and(|port| port > 0) {
            return Err(LabError::Invalid(format!(
                "ProxyServerPort must be a port from 1 to 65535, not `{value}`"
            )));
        }
        if matches!(name, "ProxyName" | "ProxyUserName" | "ProxyUserDomain") && value.len() >= 256 {
            return Err(LabError::Invalid(format!(
                "{name} must be shorter than 256 characters"
            )));
        }
        if apply {
            let txn = self.database().begin_write()?;
            {
                let table_name = table_name(server, Self::config_table(name));
                let mut table = txn.open_table(Str::new(&table_name))?;
                table.insert(name, value)?;
            }
            txn.commit()?;
        }
        Ok(previous)
    }

    /// The name of the upstream this server synchronizes from (the host
    /// part of `UpstreamServerName`); `None` when it has none.
    pub(crate) fn upstream_name(&self, server: Server) -> LabResult<Option<String>> {
        Ok(self
            .config(server, "UpstreamServerName")?
            .filter(|name| !name.is_empty())
            .map(|name| name.split(':').next().unwrap_or_default().to_string()))
    }

    /// Languages and whether each is enabled.
    pub fn languages(&self, server: Server) -> LabResult<Vec<(String, bool)>> {
        let txn = self.database().begin_read()?;
        let table_name = table_name(server, tables::LANGUAGE);
        let table = txn.open_table(TableDefinition::<&str, bool>::new(&table_name))?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            out.push((k.value().to_string(), v.value()));
        }
        out.sort_by_key(|(l, _)| catalog::LANGUAGES.iter().position(|x| x == l));
        Ok(out)
    }

    pub fn enabled_languages(&self, server: Server) -> LabResult<Vec<String>> {
        Ok(self
            .languages(server)?
            .into_iter()
            .filter_map(|(l, on)| on.then_some(l))
            .collect())
    }

    // ----- updates -----

    /// The updates of `server` matching `query`, in id order.
    pub fn updates(&self, server: Server, query: &UpdateQuery) -> LabResult<Vec<UpdateView>> {
        let txn = self.database().begin_read()?;
        let (meta_t, status_t, dep_t) = (
            table_name(server, tables::UPDATE),
            table_name(server, tables::UPDATE_STATUS),
            table_name(server, tables::DEPLOYMENT),
        );
        let meta_table = txn.open_table(TableDefinition::<&str, &[u8]>::new(&meta_t))?;
        let status_table = txn.open_table(TableDefinition::<&str, u8>::new(&status_t))?;
        let dep_table = txn.open_table(TableDefinition::<(&str, &str), u8>::new(&dep_t))?;
        let mut approvals: BTreeMap<String, ApprovalState> = BTreeMap::new();
        for row in dep_table.iter()? {
            let (key, active) = row?;
            let (id, _) = key.value();
            let state = if active.value() == 1 {
                ApprovalState::Active
            } else {
                ApprovalState::Inactive
            };
            let entry = approvals.entry(id.to_string()).or_insert(state);
            if state == ApprovalState::Active {
                *entry = state;
            }
        }
        let mut out = Vec::new();
        for row in status_table.iter()? {
            let (id, bits) = row?;
            let status = UpdateStatus::decode(bits.value());
            if query.state.is_some_and(|s| s != status.state)
                || query.declined.is_some_and(|d| d != status.declined)
            {
                continue;
            }
            let id = id.value();
            let approval = approvals.get(id).copied().unwrap_or(ApprovalState::None);
            if query
                .approved
                .is_some_and(|a| a != (approval == ApprovalState::Active))
            {
                continue;
            }
            let meta = meta_table
                .get(id)?
                .and_then(|m| UpdateMeta::decode(m.value()))
                .ok_or_else(|| LabError::Corrupt(format!("update {id} has no metadata")))?;
            out.push(UpdateView {
                id: id.to_string(),
                meta,
                status,
                approval,
            });
        }
        Ok(out)
    }

    /// The ids of the updates of `server` matching `query`, in order.
    pub fn update_ids(&self, server: Server, query: &UpdateQuery) -> LabResult<Vec<String>> {
        Ok(self
            .updates(server, query)?
            .into_iter()
            .map(|u| u.id)
            .collect())
    }

    /// How many updates of `server` are in each state (declined ones apart).
    pub fn state_counts(&self, server: Server) -> LabResult<(BTreeMap<UpdateState, u64>, u64)> {
        let txn = self.database().begin_read()?;
        let status_t = table_name(server, tables::UPDATE_STATUS);
        let table = txn.open_table(TableDefinition::<&str, u8>::new(&status_t))?;
        let mut counts = BTreeMap::new();
        let mut declined = 0;
        for row in table.iter()? {
            let status = UpdateStatus::decode(row?.1.value());
            if status.declined {
                declined += 1;
            } else {
                *counts.entry(status.state).or_insert(0) += 1;
            }
        }
        Ok((counts, declined))
    }

    /// Of `ids`, those the upstream has.
    pub fn upstream_has(&self, ids: &[String]) -> LabResult<Vec<String>> {
        let txn = self.database().begin_read()?;
        let meta_t = table_name(Server::Upstream, tables::UPDATE);
        let table = txn.open_table(TableDefinition::<&str, &[u8]>::new(&meta_t))?;
        let mut out = Vec::new();
        for id in ids {
            if table.get(id.as_str())?.is_some() {
                out.push(id.clone());
            }
        }
        Ok(out)
    }

    /// Change the status of each of `ids` on the downstream with `change`,
    /// which says why it cannot (then the update is left as it is).
    fn change_updates(
        &self,
        ids: &[String],
        apply: bool,
        change: impl Fn(UpdateStatus) -> Result<UpdateStatus, String>,
    ) -> LabResult<Batch> {
        let mut batch = Batch::default();
        let txn = self.database().begin_write()?;
        {
            let status_t = table_name(Server::Downstream, tables::UPDATE_STATUS);
            let mut table = txn.open_table(TableDefinition::<&str, u8>::new(&status_t))?;
            let mut seen = HashSet::new();
            for id in ids {
                if !seen.insert(id.as_str()) {
                    continue;
                }
                let current = table.get(id.as_str())?.map(|v| v.value());
                let Some(bits) = current else {
                    batch
                        .refused
                        .push((id.clone(), "no such update on this server".into()));
                    continue;
                };
                match change(UpdateStatus::decode(bits)) {
                    Ok(new) => {
                        if apply {
                            table.insert(id.as_str(), new.encode())?;
                        }
                        batch.done.push(id.clone());
                    }
                    Err(why) => batch.refused.push((id.clone(), why)),
                }
            }
        }
        if apply {
            txn.commit()?;
        } else {
            txn.abort()?;
        }
        Ok(batch)
    }

    /// `IUpdate.CancelDownload()` for each: only while it is NotReady
    /// ("Cancels the download of update content if the update is in the
    /// NotReady state").
    pub fn cancel_downloads(&self, ids: &[String], apply: bool) -> LabResult<Batch> {
        self.change_updates(ids, apply, |status| match status.state {
            UpdateState::NotReady => Ok(UpdateStatus {
                state: UpdateState::Canceled,
                ..status
            }),
            other => Err(format!(
                "only a NotReady download can be cancelled (state {})",
                other.name()
            )),
        })
    }

    /// `IUpdate.ResumeDownload()` for each Failed update: it is NotReady
    /// again, and "the synchronization agent will then start the download
    /// based on the synchronization schedule or earlier if you call
    /// StartSynchronization": the next sync downloads it.
    pub fn resume_downloads(&self, ids: &[String], apply: bool) -> LabResult<Batch> {
        self.change_updates(ids, apply, |status| match status.state {
            UpdateState::Failed => Ok(UpdateStatus {
                state: UpdateState::NotReady,
                ..status
            }),
            other => Err(format!(
                "only a Failed download can be resumed (state {})",
                other.name()
            )),
        })
    }

    /// `IUpdate.Decline()` for each; refused on a replica, as the real one
    /// throws InvalidOperationException there.
    pub fn decline(&self, ids: &[String], apply: bool) -> LabResult<Batch> {
        if self.mode() == SyncMode::Replica {
            return Err(LabError::Conflict(
                "this server is a replica: updates are declined on its upstream server (IUpdate.Decline() throws InvalidOperationException here)".into(),
            ));
        }
        self.change_updates(ids, apply, |status| {
            if status.declined {
                Err("already declined".into())
            } else {
                Ok(UpdateStatus {
                    declined: true,
                    ..status
                })
            }
        })
    }

    // ----- approvals -----

    /// Distinct updates with an active approval, and with only inactive
    /// ones.
    pub fn approval_tally(&self, server: Server) -> LabResult<ApprovalTally> {
        let txn = self.database().begin_read()?;
        let dep_t = table_name(server, tables::DEPLOYMENT);
        let table = txn.open_table(TableDefinition::<(&str, &str), u8>::new(&dep_t))?;
        let mut per_update: BTreeMap<String, bool> = BTreeMap::new();
        for row in table.iter()? {
            let (key, active) = row?;
            let entry = per_update.entry(key.value().0.to_string()).or_insert(false);
            *entry |= active.value() == 1;
        }
        let active = per_update.values().filter(|a| **a).count() as u32;
        Ok(ApprovalTally {
            active,
            inactive: per_update.len() as u32 - active,
        })
    }

    /// Inactive approvals (`wsusutil listinactiveapprovals`): update,
    /// target group.
    pub fn inactive_approvals(&self, server: Server) -> LabResult<Vec<(UpdateView, String)>> {
        let txn = self.database().begin_read()?;
        let (dep_t, meta_t, status_t) = (
            table_name(server, tables::DEPLOYMENT),
            table_name(server, tables::UPDATE),
            table_name(server, tables::UPDATE_STATUS),
        );
        let dep = txn.open_table(TableDefinition::<(&str, &str), u8>::new(&dep_t))?;
        let meta_table = txn.open_table(TableDefinition::<&str, &[u8]>::new(&meta_t))?;
        let status_table = txn.open_table(TableDefinition::<&str, u8>::new(&status_t))?;
        let mut out = Vec::new();
        for row in dep.iter()? {
            let (key, active) = row?;
            if active.value() == 1 {
                continue;
            }
            let (id, group) = key.value();
            let meta = meta_table
                .get(id)?
                .and_then(|m| UpdateMeta::decode(m.value()))
                .ok_or_else(|| LabError::Corrupt(format!("approved update {id} is missing")))?;
            let status = status_table
                .get(id)?
                .map_or(UpdateStatus::decode(0), |s| UpdateStatus::decode(s.value()));
            out.push((
                UpdateView {
                    id: id.to_string(),
                    meta,
                    status,
                    approval: ApprovalState::Inactive,
                },
                group.to_string(),
            ));
        }
        Ok(out)
    }

    /// Remove every inactive approval (`wsusutil removeinactiveapprovals`).
    pub fn remove_inactive_approvals(&self, server: Server, apply: bool) -> LabResult<u32> {
        let txn = self.database().begin_write()?;
        let removed;
        {
            let dep_t = table_name(server, tables::DEPLOYMENT);
            let mut dep = txn.open_table(TableDefinition::<(&str, &str), u8>::new(&dep_t))?;
            let before = dep.len()?;
            dep.retain(|_, active| active == 1)?;
            removed = (before - dep.len()?) as u32;
        }
        if apply {
            txn.commit()?;
        } else {
            txn.abort()?;
        }
        Ok(removed)
    }

    // ----- synchronizations -----

    pub(crate) fn record_sync(&self, server: Server, record: &SyncRecord) -> LabResult<()> {
        let json = serde_json::to_vec(record).map_err(|e| LabError::Corrupt(e.to_string()))?;
        let txn = self.database().begin_write()?;
        {
            let sync_t = table_name(server, tables::SYNC_HISTORY);
            let mut table = txn.open_table(TableDefinition::<u64, &[u8]>::new(&sync_t))?;
            let mut key = record.started_ms;
            while table.get(key)?.is_some() {
                key += 1;
            }
            table.insert(key, json.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// The most recent synchronizations of `server`, newest first.
    pub fn sync_history(&self, server: Server, limit: usize) -> LabResult<Vec<SyncRecord>> {
        let txn = self.database().begin_read()?;
        let sync_t = table_name(server, tables::SYNC_HISTORY);
        let table = txn.open_table(TableDefinition::<u64, &[u8]>::new(&sync_t))?;
        let mut out = Vec::new();
        for row in table.iter()?.rev().take(limit) {
            let (_, json) = row?;
            out.push(
                serde_json::from_slice(json.value())
                    .map_err(|e| LabError::Corrupt(format!("sync record: {e}")))?,
            );
        }
        Ok(out)
    }
}

/// A host name (letters, digits, dots and dashes), with an optional
/// `:port`.
fn is_server_name(value: &str) -> bool {
    let (host, port) = value.split_once(':').unwrap_or((value, "1"));
    !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        && port.parse::<u16>().is_ok_and(|p| p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::small_lab as lab;

    #[test]
    fn a_replica_refuses_to_decline_and_cancel_needs_a_pending_download() {
        let (_dir, lab) = lab(SyncMode::Replica);
        let ready = lab
            .update_ids(
                Server::Downstream,
                &UpdateQuery::in_state(UpdateState::Ready),
            )
            .unwrap();
        let id = ready[0].clone();
        assert!(matches!(
            lab.decline(std::slice::from_ref(&id), true),
            Err(LabError::Conflict(m)) if m.contains("replica")
        ));
        let batch = lab
            .cancel_downloads(&[id.clone(), "no-such-update".into()], true)
            .unwrap();
        assert!(batch.done.is_empty());
        assert_eq!(batch.refused.len(), 2, "{batch:?}");
        assert!(batch.refused[0].1.contains("only a NotReady download"));
    }

    #[test]
    fn dry_runs_plan_without_changing_and_declines_happen_on_autonomous_servers() {
        let (_dir, lab) = lab(SyncMode::Autonomous);
        let mut ids = lab
            .update_ids(
                Server::Downstream,
                &UpdateQuery::in_state(UpdateState::NotReady),
            )
            .unwrap();
        ids.truncate(3);
        let plan = lab.cancel_downloads(&ids, false).unwrap();
        assert_eq!(plan.done.len(), 3);
        assert_eq!(
            lab.state_counts(Server::Downstream)
                .unwrap()
                .0
                .get(&UpdateState::Canceled),
            None
        );
        lab.cancel_downloads(&ids, true).unwrap();
        let declined = lab.decline(&ids, true).unwrap();
        assert_eq!(declined.done, ids);
        assert_eq!(lab.state_counts(Server::Downstream).unwrap().1, 3);
        assert_eq!(
            lab.decline(&ids, true).unwrap().refused.len(),
            3,
            "already declined"
        );
    }

    #[test]
    fn services_log_their_changes_and_a_disabled_one_cannot_start() {
        let (_dir, lab) = lab(SyncMode::Replica);
        let ds = Server::Downstream;
        lab.set_startup(ds, "bits", StartupType::Disabled, true)
            .unwrap();
        lab.stop_service(ds, "BITS", true).unwrap();
        assert!(matches!(
            lab.start_service(ds, "BITS", true),
            Err(LabError::Conflict(m)) if m.contains("disabled")
        ));
        assert!(matches!(
            lab.service(ds, "Spooler"),
            Err(LabError::NotFound(_))
        ));
        let events = std::fs::read_to_string(lab.event_log(logs::EventLog::System)).unwrap();
        assert!(events.contains(
            "The start type of the Background Intelligent Transfer Service service was changed from demand start to disabled."
        ));
        assert!(events.contains(
            "The Background Intelligent Transfer Service service entered the stopped state."
        ));
    }

    #[test]
    fn configuration_values_are_checked() {
        let (_dir, lab) = lab(SyncMode::Replica);
        let ds = Server::Downstream;
        let previous = lab
            .set_config(ds, "BitsDownloadPriorityForeground", "1", true)
            .unwrap();
        assert_eq!(previous.as_deref(), Some("0"));
        assert!(matches!(
            lab.set_config(ds, "BitsDownloadPriorityForeground", "yes", true),
            Err(LabError::Invalid(_))
        ));
        assert!(matches!(
            lab.set_config(ds, "BitsDownloadPriorityForegrund", "1", true),
            Err(LabError::NotFound(_))
        ));
        // The upstream's name is the administrator's to set; the rest of
        // tbConfigurationA is setup's.
        for bad in ["", "wsus up", "wsus:0", "wsus:99999", "wsus;rm"] {
            assert!(
                matches!(
                    lab.set_config(ds, "UpstreamServerName", bad, true),
                    Err(LabError::Invalid(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            lab.set_config(ds, "SyncToMu", "1", true),
            Err(LabError::Conflict(_))
        ));
        let previous = lab
            .set_config(ds, "UpstreamServerName", "wsus-up02.lab.example:8531", true)
            .unwrap();
        assert_eq!(previous.as_deref(), Some(Server::Upstream.host_name()));
        assert_eq!(
            lab.upstream_name(ds).unwrap().as_deref(),
            Some("wsus-up02.lab.example")
        );
    }
}
