//! Building an [`Outcome`] from the actions a run took or planned.

use crate::bindings::medic::plugin::fs::AccessReport;
use crate::bindings::medic::plugin::services::ServiceChange;
use crate::bindings::medic::wsus::wsus::BatchResult;
use crate::{Action, FollowUp, Outcome, Status};

/// Paths or updates listed one by one per call; the rest are counted in
/// one more action, so that a repair of a large tree stays readable (and
/// its audit record small).
pub const MAX_LISTED: usize = 50;

/// Collects actions during a run and turns them into an [`Outcome`].
///
/// The host tells a plugin whether each mutating call was applied (enforce
/// mode) or only planned (dry-run and approve modes); the report keeps that
/// flag, so [`Report::finish`] picks the right status by itself.
#[derive(Debug, Default, Clone)]
pub struct Report {
    actions: Vec<Action>,
    follow_up: Option<FollowUp>,
}

impl Report {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add one action.
    pub fn push(&mut self, verb: &str, target: &str, detail: &str, applied: bool) -> &mut Self {
        self.actions.push(Action {
            verb: verb.to_string(),
            target: target.to_string(),
            detail: detail.to_string(),
            applied,
        });
        self
    }

    /// Add one `grant-access` action per path that `fs.ensure-access` changed
    /// (the first [`MAX_LISTED`], then one action counting the rest).
    pub fn record_access(&mut self, principal: &str, report: &AccessReport) -> &mut Self {
        for change in report.changed.iter().take(MAX_LISTED) {
            let detail = format!("{principal}: {} -> {}", change.before, change.after);
            self.push("grant-access", &change.path, &detail, report.applied);
        }
        if let Some(more) = report
            .changed
            .len()
            .checked_sub(MAX_LISTED)
            .filter(|n| *n > 0)
        {
            let detail = format!("{principal}: the same change on {more} more paths");
            self.push(
                "grant-access",
                &format!("{more} more paths"),
                &detail,
                report.applied,
            );
        }
        self
    }

    /// Add a service action (`start-service`, `restart-service`, ...) if the
    /// call changed (or would change) anything or `always` is set.
    pub fn record_service(
        &mut self,
        verb: &str,
        change: &ServiceChange,
        always: bool,
    ) -> &mut Self {
        let (before, after) = (&change.before, &change.after);
        if always || before.state != after.state || before.startup != after.startup {
            let detail = format!(
                "{} ({}) -> {} ({})",
                before.state, before.startup, after.state, after.startup
            );
            self.push(verb, &before.name, &detail, change.applied);
        }
        self
    }

    /// Add one action per update a batch call changed (the first
    /// [`MAX_LISTED`], then one action counting the rest).
    pub fn record_batch(&mut self, verb: &str, result: &BatchResult) -> &mut Self {
        for id in result.done.iter().take(MAX_LISTED) {
            self.push(verb, id, "", result.applied);
        }
        if let Some(more) = result.done.len().checked_sub(MAX_LISTED).filter(|n| *n > 0) {
            let detail = format!("the same on {more} more updates");
            self.push(
                verb,
                &format!("{more} more updates"),
                &detail,
                result.applied,
            );
        }
        self
    }

    /// Ask to be run again in `after_seconds` (1 to 86400) with a
    /// `follow-up` event for the same subject, e.g. to verify a repair
    /// whose effect the system shows later.
    pub fn follow_up(&mut self, after_seconds: u32, reason: &str) -> &mut Self {
        self.follow_up = Some(FollowUp {
            after_seconds: after_seconds.clamp(1, 86_400),
            reason: reason.to_string(),
        });
        self
    }

    /// The actions so far.
    pub fn actions(&self) -> &[Action] {
        &self.actions
    }

    /// True when nothing was changed or planned.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// End the run: `healthy` with no actions, `remediated` when every
    /// action was applied, `needs-approval` when any was only planned.
    pub fn finish(self, summary: &str) -> Outcome {
        let status = if self.actions.is_empty() {
            Status::Healthy
        } else if self.actions.iter().all(|a| a.applied) {
            Status::Remediated
        } else {
            Status::NeedsApproval
        };
        self.finish_with(status, summary)
    }

    /// End the run as `failed`, keeping the actions taken before the failure.
    pub fn fail(self, summary: &str) -> Outcome {
        self.finish_with(Status::Failed, summary)
    }

    /// End the run with an explicit status.
    pub fn finish_with(self, status: Status, summary: &str) -> Outcome {
        Outcome {
            status,
            summary: summary.to_string(),
            actions: self.actions,
            follow_up: self.follow_up,
        }
    }
}
