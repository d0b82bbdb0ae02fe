//! `wsus`: the local WSUS server (in 0.1.0 part of the core package).

use super::bindings::medic::plugin::{types::Error, wsus as wit};
use crate::contract::convert::{Convert, convert_enum, convert_record, result};
use crate::host::RunState;
use medic_backends::wsus::{
    Approval, ApprovalTally, BatchResult, ServerFacts, ServerMode, StorageMode, SyncRecord,
    SyncResult, SyncState, UpdateFilter, UpdateState, UpdateSummary,
};

convert_enum!(
    ServerMode,
    wit::ServerMode {
        Replica,
        Autonomous
    }
);
convert_enum!(
    StorageMode,
    wit::StorageMode {
        LocalContent,
        MicrosoftUpdate
    }
);
convert_record!(
    ServerFacts,
    wit::ServerFacts {
        name,
        mode,
        upstream,
        storage,
        languages,
        content_dir,
        version
    }
);
convert_enum!(
    UpdateState,
    wit::UpdateState {
        NotReady,
        Ready,
        Failed,
        Canceled,
        LicenseAgreementFailed,
        InstallationImpossible
    }
);
convert_record!(
    UpdateSummary,
    wit::UpdateSummary {
        id,
        revision,
        title,
        product,
        classification,
        language,
        state,
        declined,
        approved
    }
);
convert_record!(
    UpdateFilter,
    wit::UpdateFilter {
        state,
        declined,
        approved
    }
);
convert_record!(
    BatchResult,
    wit::BatchResult {
        done,
        failed,
        applied
    }
);
convert_record!(
    Approval,
    wit::Approval {
        update_id,
        title,
        target_group,
        language
    }
);
convert_record!(
    ApprovalTally,
    wit::ApprovalTally {
        active,
        inactive,
        upstream_approved
    }
);
convert_enum!(
    SyncResult,
    wit::SyncResult {
        Succeeded,
        Failed,
        Canceled
    }
);
convert_record!(
    SyncRecord,
    wit::SyncRecord {
        started_ms,
        finished_ms,
        result_kind,
        reason
    }
);
convert_record!(SyncState, wit::SyncState { running, last });

impl wit::Host for RunState {
    fn server_info(&mut self) -> wasmtime::Result<Result<wit::ServerFacts, Error>> {
        Ok(result(self.wsus_server_info()?))
    }

    fn list_updates(
        &mut self,
        filter: wit::UpdateFilter,
    ) -> wasmtime::Result<Result<Vec<wit::UpdateSummary>, Error>> {
        Ok(result(self.wsus_list_updates(filter.convert())?))
    }

    fn upstream_has(&mut self, ids: Vec<String>) -> wasmtime::Result<Result<Vec<String>, Error>> {
        Ok(result(self.wsus_upstream_has(ids)?))
    }

    fn cancel_downloads(
        &mut self,
        ids: Vec<String>,
    ) -> wasmtime::Result<Result<wit::BatchResult, Error>> {
        Ok(result(self.wsus_cancel_downloads(ids)?))
    }

    fn decline(&mut self, ids: Vec<String>) -> wasmtime::Result<Result<wit::BatchResult, Error>> {
        Ok(result(self.wsus_decline(ids)?))
    }

    fn approval_counts(&mut self) -> wasmtime::Result<Result<wit::ApprovalTally, Error>> {
        Ok(result(self.wsus_approval_counts()?))
    }

    fn list_inactive_approvals(&mut self) -> wasmtime::Result<Result<Vec<wit::Approval>, Error>> {
        Ok(result(self.wsus_list_inactive_approvals()?))
    }

    fn remove_inactive_approvals(&mut self) -> wasmtime::Result<Result<u32, Error>> {
        Ok(result(self.wsus_remove_inactive_approvals()?))
    }

    fn get_config(&mut self, name: String) -> wasmtime::Result<Result<Option<String>, Error>> {
        Ok(result(self.wsus_get_config(name)?))
    }

    fn set_config(
        &mut self,
        name: String,
        value: String,
    ) -> wasmtime::Result<Result<Option<String>, Error>> {
        Ok(result(self.wsus_set_config(name, value)?))
    }

    fn start_sync(&mut self) -> wasmtime::Result<Result<(), Error>> {
        Ok(result(self.wsus_start_sync()?))
    }

    fn sync_status(&mut self) -> wasmtime::Result<Result<wit::SyncState, Error>> {
        Ok(result(self.wsus_sync_status()?))
    }

    fn sync_history(
        &mut self,
        limit: u32,
    ) -> wasmtime::Result<Result<Vec<wit::SyncRecord>, Error>> {
        Ok(result(self.wsus_sync_history(limit)?))
    }
}
