//! `wsus`: the WSUS extension package. It owns its capabilities: read-only
//! calls need `wsus-read`; each mutating call needs its own operation
//! (`wsus-updates`, `wsus-approvals`, `wsus-configure`, `wsus-sync`), and
//! the check of the connection to the upstream needs `wsus-probe`; a
//! policy grants them as `wsus = ["read", "sync", ...]`.

use super::RunState;
use super::grants::{Capability, Operation};
use medic_backends::wsus::{
    Approval, ApprovalTally, BatchResult, ProxySettings, ServerFacts, SyncRecord, SyncState,
    UpdateFilter, UpdateSummary, UpstreamFacts, UpstreamProbe, WsusServer,
};
use medic_backends::{BackendError, ErrorKind};
use serde_json::{Value, json};

/// The package's name in policies and capability names.
pub const PACKAGE: &str = "wsus";

const fn operation(name: &'static str) -> Operation {
    Operation {
        package: PACKAGE,
        name,
    }
}

/// Every read-only function.
pub const READ: Operation = operation("read");
/// `cancel-downloads`, `resume-downloads` and `decline`.
pub const UPDATES: Operation = operation("updates");
/// `remove-inactive-approvals`.
pub const APPROVALS: Operation = operation("approvals");
/// `set-config`.
pub const CONFIGURE: Operation = operation("configure");
/// `start-sync`.
pub const SYNC: Operation = operation("sync");
/// `check-upstream`: it opens a connection, to the configured upstream
/// (or its proxy) only, so it is granted apart from the reads.
pub const PROBE: Operation = operation("probe");

/// The package's operations, in contract order.
pub const OPERATIONS: &[Operation] = &[READ, UPDATES, APPROVALS, CONFIGURE, SYNC, PROBE];

impl RunState {
    fn wsus_call<T>(
        &mut self,
        function: &'static str,
        args: Value,
        operation: Operation,
        op: impl FnOnce(&dyn WsusServer, bool) -> Result<T, BackendError>,
        summary: impl FnOnce(&T) -> String,
    ) -> wasmtime::Result<Result<T, BackendError>> {
        let mutating = !matches!(operation, READ | PROBE);
        self.host_call(
            function,
            args,
            mutating,
            |run, apply| {
                run.require(Capability::Operation(operation))?;
                let server = run.backends.wsus.as_deref().ok_or_else(|| {
                    BackendError::new(
                        ErrorKind::Unsupported,
                        "no WSUS server is configured for this agent: select the `lab` backend in the policy",
                    )
                })?;
                op(server, apply)
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

impl RunState {
    pub(crate) fn wsus_server_info(
        &mut self,
    ) -> wasmtime::Result<Result<ServerFacts, BackendError>> {
        self.wsus_call(
            "wsus.server-info",
            json!({}),
            READ,
            |w, _| w.server_info(),
            |f| format!("{} ({:?}, upstream {:?})", f.name, f.mode, f.upstream),
        )
    }

    pub(crate) fn wsus_list_updates(
        &mut self,
        filter: UpdateFilter,
    ) -> wasmtime::Result<Result<Vec<UpdateSummary>, BackendError>> {
        let args = json!({
            "state": filter.state.map(|s| format!("{s:?}")),
            "declined": filter.declined,
            "approved": filter.approved,
        });
        self.wsus_call(
            "wsus.list-updates",
            args,
            READ,
            |w, _| w.list_updates(&filter),
            |updates| format!("{} updates", updates.len()),
        )
    }

    pub(crate) fn wsus_upstream_has(
        &mut self,
        ids: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<String>, BackendError>> {
        self.wsus_call(
            "wsus.upstream-has",
            ids_arg(&ids),
            READ,
            |w, _| w.upstream_has(&ids),
            |has| format!("{} of {} still upstream", has.len(), ids.len()),
        )
    }

    pub(crate) fn wsus_cancel_downloads(
        &mut self,
        ids: Vec<String>,
    ) -> wasmtime::Result<Result<BatchResult, BackendError>> {
        self.wsus_call(
            "wsus.cancel-downloads",
            ids_arg(&ids),
            UPDATES,
            |w, apply| w.cancel_downloads(&ids, apply),
            batch_summary,
        )
    }

    pub(crate) fn wsus_decline(
        &mut self,
        ids: Vec<String>,
    ) -> wasmtime::Result<Result<BatchResult, BackendError>> {
        self.wsus_call(
            "wsus.decline",
            ids_arg(&ids),
            UPDATES,
            |w, apply| w.decline(&ids, apply),
            batch_summary,
        )
    }

    pub(crate) fn wsus_approval_counts(
        &mut self,
    ) -> wasmtime::Result<Result<ApprovalTally, BackendError>> {
        self.wsus_call(
            "wsus.approval-counts",
            json!({}),
            READ,
            |w, _| w.approval_counts(),
            |t| {
                format!(
                    "{} active, {} inactive, upstream {:?}",
                    t.active, t.inactive, t.upstream_approved
                )
            },
        )
    }

    pub(crate) fn wsus_list_inactive_approvals(
        &mut self,
    ) -> wasmtime::Result<Result<Vec<Approval>, BackendError>> {
        self.wsus_call(
            "wsus.list-inactive-approvals",
            json!({}),
            READ,
            |w, _| w.list_inactive_approvals(),
            |a| format!("{} inactive approvals", a.len()),
        )
    }

    pub(crate) fn wsus_remove_inactive_approvals(
        &mut self,
    ) -> wasmtime::Result<Result<u32, BackendError>> {
        self.wsus_call(
            "wsus.remove-inactive-approvals",
            json!({}),
            APPROVALS,
            |w, apply| w.remove_inactive_approvals(apply),
            |n| format!("{n} inactive approvals"),
        )
    }

    pub(crate) fn wsus_get_config(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Option<String>, BackendError>> {
        self.wsus_call(
            "wsus.get-config",
            json!({ "name": name }),
            READ,
            |w, _| w.get_config(&name),
            |v| format!("{v:?}"),
        )
    }

    pub(crate) fn wsus_set_config(
        &mut self,
        name: String,
        value: String,
    ) -> wasmtime::Result<Result<Option<String>, BackendError>> {
        self.wsus_call(
            "wsus.set-config",
            json!({ "name": name, "value": value }),
            CONFIGURE,
            |w, apply| w.set_config(&name, &value, apply),
            |previous| format!("was {previous:?}"),
        )
    }

    pub(crate) fn wsus_start_sync(&mut self) -> wasmtime::Result<Result<u64, BackendError>> {
        self.wsus_call(
            "wsus.start-sync",
            json!({}),
            SYNC,
            |w, apply| w.start_sync(apply),
            |started| {
                if *started == 0 {
                    "planned".into()
                } else {
                    format!("started at {started}")
                }
            },
        )
    }

    pub(crate) fn wsus_resume_downloads(
        &mut self,
        ids: Vec<String>,
    ) -> wasmtime::Result<Result<BatchResult, BackendError>> {
        self.wsus_call(
            "wsus.resume-downloads",
            ids_arg(&ids),
            UPDATES,
            |w, apply| w.resume_downloads(&ids, apply),
            batch_summary,
        )
    }

    pub(crate) fn wsus_upstream_info(
        &mut self,
    ) -> wasmtime::Result<Result<Option<UpstreamFacts>, BackendError>> {
        self.wsus_call(
            "wsus.upstream-info",
            json!({}),
            READ,
            |w, _| w.upstream_info(),
            |facts| match facts {
                Some(f) => format!(
                    "{} ({:?}, {} languages)",
                    f.name,
                    f.storage,
                    f.languages.len()
                ),
                None => "Microsoft Update".into(),
            },
        )
    }

    pub(crate) fn wsus_proxy_settings(
        &mut self,
    ) -> wasmtime::Result<Result<ProxySettings, BackendError>> {
        self.wsus_call(
            "wsus.proxy",
            json!({}),
            READ,
            |w, _| w.proxy_settings(),
            |p| {
                if p.enabled {
                    format!("{}:{} (credentials {})", p.host, p.port, p.has_password)
                } else {
                    "no proxy".into()
                }
            },
        )
    }

    pub(crate) fn wsus_check_upstream(
        &mut self,
    ) -> wasmtime::Result<Result<UpstreamProbe, BackendError>> {
        self.wsus_call(
            "wsus.check-upstream",
            json!({}),
            PROBE,
            |w, _| w.check_upstream(),
            |p| match &p.problem {
                Some(problem) => format!("{}: {problem}", p.target),
                None => format!("{}: reachable ({:?})", p.target, p.http_status),
            },
        )
    }

    pub(crate) fn wsus_sync_status(&mut self) -> wasmtime::Result<Result<SyncState, BackendError>> {
        self.wsus_call(
            "wsus.sync-status",
            json!({}),
            READ,
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

    pub(crate) fn wsus_sync_history(
        &mut self,
        limit: u32,
    ) -> wasmtime::Result<Result<Vec<SyncRecord>, BackendError>> {
        self.wsus_call(
            "wsus.sync-history",
            json!({ "limit": limit }),
            READ,
            |w, _| w.sync_history(limit),
            |h| format!("{} records", h.len()),
        )
    }
}
