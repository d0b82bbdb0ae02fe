//! An operator's decision on a plan waiting for approval: `medic approve`
//! runs the plugin again in enforce mode on the same event and records
//! both; `medic reject` records the refusal.

use crate::audit::journal::{Journal, NewRecord, RecordKind, RecordStatus};
use crate::audit::state::StateStore;
use crate::audit::{Store, StoreError};
use crate::backend::BackendCatalog;
use crate::by_hand::ByHandError;
use crate::loading::AgentError;
use crate::policy::Policy;
use medic_sandbox::Status;
use std::path::Path;

/// Why an approval or rejection could not be done.
#[derive(Debug, thiserror::Error)]
pub enum DecisionError {
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "no run `{0}` in the audit journal; `medic audit --status needs-approval` lists the runs waiting"
    )]
    UnknownRun(String),
    #[error("run `{run}` is {status}, not waiting for approval")]
    NotPending { run: String, status: String },
    #[error("run `{run}` was already {decision}")]
    AlreadyDecided { run: String, decision: String },
    #[error("run `{run}` belongs to plugin `{plugin}`, which the policy no longer has")]
    PluginGone { run: String, plugin: String },
    #[error("run `{0}` has no event to replay")]
    NoEvent(String),
    #[error(
        "the applied run asked for a follow-up run, which could not be handed to the agent's inbox {}: {cause}",
        dir.display()
    )]
    FollowUp {
        dir: std::path::PathBuf,
        cause: std::io::Error,
    },
}

/// A pending run, checked to be waiting for a decision.
fn pending_run(
    journal: &Journal,
    run_id: &str,
) -> Result<crate::audit::journal::AuditRecord, DecisionError> {
    let record = journal
        .find_run(run_id)?
        .ok_or_else(|| DecisionError::UnknownRun(run_id.to_string()))?;
    if record.status != RecordStatus::Run(Status::NeedsApproval) {
        return Err(DecisionError::NotPending {
            run: run_id.into(),
            status: record.entry.status.to_string(),
        });
    }
    let decided = journal
        .list(&crate::audit::journal::Filter::default())?
        .into_iter()
        .find(|r| {
            matches!(r.kind, RecordKind::Approved | RecordKind::Rejected) && r.run_id == run_id
        });
    if let Some(decision) = decided {
        return Err(DecisionError::AlreadyDecided {
            run: run_id.into(),
            decision: decision.entry.kind.to_string(),
        });
    }
    Ok(record)
}

/// Apply a pending plan: run the plugin again in enforce mode on the same
/// event, record that run and the approval, and return the new run.
pub fn approve(
    policy_file: &Path,
    run_id: &str,
    catalog: &dyn BackendCatalog,
) -> Result<medic_sandbox::RunReport, DecisionError> {
    let policy = Policy::load(policy_file).map_err(AgentError::from)?;
    let store = Store::open(&policy.agent.state_dir)?;
    let journal = Journal::new(store.clone());
    let pending = pending_run(&journal, run_id)?;
    let event: medic_sandbox::EventRecord = serde_json::from_value(pending.detail["event"].clone())
        .map_err(|_| DecisionError::NoEvent(run_id.into()))?;
    let prepared =
        crate::by_hand::prepare(policy_file, &pending.plugin, catalog).map_err(|e| match e {
            ByHandError::UnknownPlugin { .. } => DecisionError::PluginGone {
                run: run_id.into(),
                plugin: pending.plugin.clone(),
            },
            ByHandError::Policy(errors) => AgentError::Policy(errors).into(),
            ByHandError::SetAside { errors, .. } => AgentError::Policy(errors).into(),
            ByHandError::Runtime(e) => AgentError::Runtime(e).into(),
        })?;
    let planned_with = pending.detail["hash"].as_str().unwrap_or_default();
    if planned_with != prepared.loaded.hash {
        tracing::warn!(
            run = run_id,
            "the plan was made by another version of `{}`; applying with the current one",
            prepared.plugin.name
        );
    }
    let request = prepared.request(
        event,
        Some(medic_sandbox::Mode::Enforce),
        Some(StateStore::new(store)),
    );
    let report = prepared.runtime.run(&prepared.loaded, request);
    let summary = report
        .outcome()
        .map_or_else(|| "failed".to_string(), |o| o.summary.clone());
    journal.append(NewRecord {
        kind: RecordKind::Run,
        plugin: report.plugin.clone(),
        run_id: report.run_id.clone(),
        status: RecordStatus::Run(report.status()),
        summary: format!("[approved {run_id}] {summary}"),
        detail: serde_json::to_value(&report).unwrap_or_default(),
    })?;
    // The follow-up the applied run asks for is the agent's to run: handed
    // over through its inbox, due when the run asked.
    if let Some(request) = report.outcome().and_then(|o| o.follow_up.clone()) {
        let due_ms = medic_sandbox::now_ms() + u64::from(request.after_seconds) * 1_000;
        let follow_up = crate::dispatch::follow_up::event(&report.event, &request, due_ms);
        crate::triggers::inbox::send(
            &policy.agent.state_dir,
            &crate::triggers::inbox::InboxRequest {
                plugin: report.plugin.clone(),
                event: follow_up,
            },
        )
        .map_err(|cause| DecisionError::FollowUp {
            dir: crate::triggers::inbox::inbox_dir(&policy.agent.state_dir),
            cause,
        })?;
    }
    journal.append(NewRecord {
        kind: RecordKind::Approved,
        plugin: report.plugin.clone(),
        run_id: run_id.into(),
        status: RecordStatus::Run(report.status()),
        summary: format!("approved; applied by run {}", report.run_id),
        detail: serde_json::json!({ "applied_by": report.run_id }),
    })?;
    Ok(report)
}

/// Drop a pending plan, recording the decision.
pub fn reject(policy_file: &Path, run_id: &str, reason: &str) -> Result<(), DecisionError> {
    let policy = Policy::load(policy_file).map_err(AgentError::from)?;
    let journal = Journal::new(Store::open(&policy.agent.state_dir)?);
    let pending = pending_run(&journal, run_id)?;
    journal.append(NewRecord {
        kind: RecordKind::Rejected,
        plugin: pending.entry.plugin,
        run_id: run_id.into(),
        status: RecordStatus::Rejected,
        summary: if reason.is_empty() {
            "rejected by an operator".into()
        } else {
            format!("rejected: {reason}")
        },
        detail: serde_json::Value::Null,
    })?;
    Ok(())
}
