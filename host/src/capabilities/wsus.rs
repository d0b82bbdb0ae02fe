//! `wsus`: read-only calls need `wsus-read`; each mutating call needs its
//! own grant (`wsus-updates`, `wsus-approvals`, `wsus-configure`,
//! `wsus-sync`).

use super::RunState;
use super::grants::WsusGrant;
use crate::backends::WsusServer;
use crate::contract::PluginError;
use crate::contract::v0_1_0::medic::plugin::wsus::{
    Approval, ApprovalTally, BatchResult, Host, ServerFacts, SyncRecord, SyncState, UpdateFilter,
    UpdateSummary,
};
use serde_json::{Value, json};

impl RunState {
    fn wsus_call<T>(
        &mut self,
        function: &'static str,
        args: Value,
        grant: WsusGrant,
        op: impl FnOnce(&dyn WsusServer, bool) -> Result<T, PluginError>,
        summary: impl FnOnce(&T) -> String,
    ) -> wasmtime::Result<Result<T, PluginError>> {
        let mutating = grant != WsusGrant::Read;
        self.host_call(
            function,
            args,
            mutating,
            |run, apply| {
                run.require(grant.capability())?;
                op(run.backends.wsus.as_ref(), apply)
            },
            summary,
        )
    }
}

/// Lists of update ids can be long: record the count and the first few.
fn ids_arg(ids: &[String]) -> Value {
    const SHOWN: usize = 10;
    json!({
        "count": ids.len(),
        "first": ids.iter().take(SHOWN).collect::<Vec<_>>(),
    })
}

fn batch_summary(result: &BatchResult) -> String {
    format!(
        "{} {}, {} refused",
        result.done.len(),
        if result.applied { "done" } else { "planned" },
        result.failed.len()
    )
}

impl Host for RunState {
    fn server_info(&mut self) -> wasmtime::Result<Result<ServerFacts, PluginError>> {
        self.wsus_call(
            "wsus.server-info",
            json!({}),
            WsusGrant::Read,
            |w, _| w.server_info(),
            |f| format!("{} ({:?}, upstream {:?})", f.name, f.mode, f.upstream),
        )
    }

    fn list_updates(
        &mut self,
        filter: UpdateFilter,
    ) -> wasmtime::Result<Result<Vec<UpdateSummary>, PluginError>> {
        let args = json!({
            "state": filter.state.map(|s| format!("{s:?}")),
            "declined": filter.declined,
            "approved": filter.approved,
        });
        self.wsus_call(
            "wsus.list-updates",
            args,
            WsusGrant::Read,
            |w, _| w.list_updates(&filter),
            |updates| format!("{} updates", updates.len()),
        )
    }

    fn upstream_has(
        &mut self,
        ids: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<String>, PluginError>> {
        self.wsus_call(
            "wsus.upstream-has",
            ids_arg(&ids),
            WsusGrant::Read,
            |w, _| w.upstream_has(&ids),
            |has| format!("{} of {} still upstream", has.len(), ids.len()),
        )
    }

    fn cancel_downloads(
        &mut self,
        ids: Vec<String>,
    ) -> wasmtime::Result<Result<BatchResult, PluginError>> {
        self.wsus_call(
            "wsus.cancel-downloads",
            ids_arg(&ids),
            WsusGrant::Updates,
            |w, apply| w.cancel_downloads(&ids, apply),
            batch_summary,
        )
    }

    fn decline(&mut self, ids: Vec<String>) -> wasmtime::Result<Result<BatchResult, PluginError>> {
        self.wsus_call(
            "wsus.decline",
            ids_arg(&ids),
            WsusGrant::Updates,
            |w, apply| w.decline(&ids, apply),
            batch_summary,
        )
    }

    fn approval_counts(&mut self) -> wasmtime::Result<Result<ApprovalTally, PluginError>> {
        self.wsus_call(
            "wsus.approval-counts",
            json!({}),
            WsusGrant::Read,
            |w, _| w.approval_counts(),
            |t| {
                format!(
                    "{} active, {} inactive, upstream {:?}",
                    t.active, t.inactive, t.upstream_approved
                )
            },
        )
    }

    fn list_inactive_approvals(&mut self) -> wasmtime::Result<Result<Vec<Approval>, PluginError>> {
        self.wsus_call(
            "wsus.list-inactive-approvals",
            json!({}),
            WsusGrant::Read,
            |w, _| w.list_inactive_approvals(),
            |a| format!("{} inactive approvals", a.len()),
        )
    }

    fn remove_inactive_approvals(&mut self) -> wasmtime::Result<Result<u32, PluginError>> {
        self.wsus_call(
            "wsus.remove-inactive-approvals",
            json!({}),
            WsusGrant::Approvals,
            |w, apply| w.remove_inactive_approvals(apply),
            |n| format!("{n} inactive approvals"),
        )
    }

    fn get_config(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Option<String>, PluginError>> {
        self.wsus_call(
            "wsus.get-config",
            json!({ "name": name }),
            WsusGrant::Read,
            |w, _| w.get_config(&name),
            |v| format!("{v:?}"),
        )
    }

    fn set_config(
        &mut self,
        name: String,
        value: String,
    ) -> wasmtime::Result<Result<Option<String>, PluginError>> {
        self.wsus_call(
            "wsus.set-config",
            json!({ "name": name, "value": value }),
            WsusGrant::Configure,
            |w, apply| w.set_config(&name, &value, apply),
            |previous| format!("was {previous:?}"),
        )
    }

    fn start_sync(&mut self) -> wasmtime::Result<Result<(), PluginError>> {
        self.wsus_call(
            "wsus.start-sync",
            json!({}),
            WsusGrant::Sync,
            |w, apply| w.start_sync(apply),
            |_| "started".into(),
        )
    }

    fn sync_status(&mut self) -> wasmtime::Result<Result<SyncState, PluginError>> {
        self.wsus_call(
            "wsus.sync-status",
            json!({}),
            WsusGrant::Read,
            |w, _| w.sync_status(),
            |s| {
                format!(
                    "running {}, last {:?}",
                    s.running,
                    s.last.as_ref().map(|l| l.result_kind)
                )
            },
        )
    }

    fn sync_history(
        &mut self,
        limit: u32,
    ) -> wasmtime::Result<Result<Vec<SyncRecord>, PluginError>> {
        self.wsus_call(
            "wsus.sync-history",
            json!({ "limit": limit }),
            WsusGrant::Read,
            |w, _| w.sync_history(limit),
            |h| format!("{} records", h.len()),
        )
    }
}
