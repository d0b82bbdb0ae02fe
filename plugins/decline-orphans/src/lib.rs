//! `decline-orphans`: on a downstream server, approved updates whose files
//! the upstream no longer has (an upstream rebuilt with fewer products,
//! say) wait forever and break every synchronization. This plugin asks the
//! upstream which of the waiting updates it still has: those are left
//! alone; the others are cancelled where `CancelDownload` can (NotReady
//! only) and declined where the server may decline (autonomous). A replica
//! cannot decline (`IUpdate.Decline()` throws there) nor cancel a Failed
//! download: it reports, as failed, the article's way out.
//!
//! Whether those updates are "no longer needed" is the administrator's
//! call, so the example policy runs this plugin in approve mode, and every
//! report names the article's other option: re-add the products on the
//! upstream and synchronize.
//!
//! Settings (all optional):
//! - `decline` [default true]: decline on autonomous servers.

use medic_sdk::wsus::{ServerMode, UpdateFilter, UpdateState, UpdateSummary};
use medic_sdk::{
    Event, Outcome, Plugin, PluginInfo, Report, SystemEventMatch, TriggerHint, info, settings, wsus,
};
use std::collections::HashSet;

struct DeclineOrphans;

impl Plugin for DeclineOrphans {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "decline-orphans".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Cancels (and on autonomous servers declines) failed downloads of updates the upstream no longer has.".into(),
            capabilities: vec![wsus::Operation::Read.into(), wsus::Operation::Updates.into()],
            triggers: vec![
                TriggerHint::SystemEvent(SystemEventMatch {
                    source: "Windows Server Update Services".into(),
                    id: 10021,
                }),
                TriggerHint::SystemEvent(SystemEventMatch {
                    source: "Windows Server Update Services".into(),
                    id: 364,
                }),
                TriggerHint::Every(3600),
            ],
        }
    }

    fn handle(event: Event) -> Result<Outcome, String> {
        let may_decline = settings::parse_or("decline", true)?;
        let facts = wsus::server_info()?;
        // Every download the server still waits for: Failed (BITS gave
        // up) or NotReady (BITS still tries).
        let mut waiting = Vec::new();
        for state in [UpdateState::Failed, UpdateState::NotReady] {
            waiting.extend(wsus::list_updates(UpdateFilter {
                state: Some(state),
                declined: Some(false),
                approved: Some(true),
            })?);
        }
        info!(
            "{} downloads waiting on {} ({} event)",
            waiting.len(),
            facts.name,
            event.kind
        );
        let report = Report::new();
        if waiting.is_empty() {
            return Ok(report.finish("no download is waiting"));
        }
        let ids: Vec<String> = waiting.iter().map(|u| u.id.clone()).collect();
        let still_upstream: HashSet<String> = wsus::upstream_has(&ids)?.into_iter().collect();
        let orphans: Vec<&UpdateSummary> = waiting
            .iter()
            .filter(|u| !still_upstream.contains(&u.id))
            .collect();
        let upstream = facts.upstream.as_deref().unwrap_or("the upstream");
        if orphans.is_empty() {
            return Ok(report.finish(&format!(
                "{} downloads waiting, all still on {upstream}",
                waiting.len()
            )));
        }
        let mut report = report;
        // CancelDownload acts on NotReady updates only.
        let pending: Vec<String> = orphans
            .iter()
            .filter(|u| u.state == UpdateState::NotReady)
            .map(|u| u.id.clone())
            .collect();
        let mut summary = format!("{} downloads gone from {upstream}", orphans.len());
        if !pending.is_empty() {
            let cancelled = wsus::cancel_downloads(&pending)?;
            report.record_batch("cancel-download", &cancelled);
            summary.push_str(&format!(
                "; {} NotReady {}",
                cancelled.done.len(),
                if cancelled.applied {
                    "cancelled"
                } else {
                    "to be cancelled"
                }
            ));
            // CancelDownload says nothing of its effect: read it back.
            if cancelled.applied {
                let now_canceled: HashSet<String> = wsus::list_updates(UpdateFilter {
                    state: Some(UpdateState::Canceled),
                    declined: None,
                    approved: None,
                })?
                .into_iter()
                .map(|u| u.id)
                .collect();
                let confirmed = cancelled
                    .done
                    .iter()
                    .filter(|id| now_canceled.contains(*id))
                    .count();
                if confirmed < cancelled.done.len() {
                    summary.push_str(&format!(" (only {confirmed} of them read back Canceled)"));
                }
            }
        }
        let orphan_ids: Vec<String> = orphans.iter().map(|u| u.id.clone()).collect();
        match facts.mode {
            ServerMode::Autonomous if may_decline => {
                let declined = wsus::decline(&orphan_ids)?;
                report.record_batch("decline", &declined);
                summary.push_str(&format!(
                    "; {} {}",
                    declined.done.len(),
                    if declined.applied {
                        "declined"
                    } else {
                        "to be declined"
                    }
                ));
                summary.push_str(&format!(
                    ". If they are still needed, re-add their products on {upstream} and synchronize instead"
                ));
            }
            ServerMode::Autonomous => summary.push_str(&format!(
                " (declining is turned off). Either re-add their products on {upstream} and synchronize, or decline them here"
            )),
            ServerMode::Replica => {
                summary.push_str(&format!(
                    ". A replica can neither decline them nor cancel a Failed download: re-add their products on {upstream} and synchronize"
                ));
                if report.is_empty() {
                    return Ok(report.fail(&summary));
                }
            }
        }
        Ok(report.finish(&summary))
    }
}

medic_sdk::register_plugin!(DeclineOrphans);

#[cfg(test)]
mod tests {
    use super::*;
    use medic_sdk::Status;
    use medic_sdk::testing::{FakeHost, HostFn, Mode, Update, event};

    /// The fault: approved downloads the rebuilt upstream no longer has (one
    /// Failed, one NotReady), beside one it still has and one downloaded.
    fn server() -> FakeHost {
        let mut host = FakeHost::new();
        host.wsus()
            .upstream("wsus-up.example")
            .add_update(
                Update::new("gone-failed", "Feature Pack A")
                    .state(UpdateState::Failed)
                    .gone_upstream(),
            )
            .add_update(
                Update::new("gone-pending", "Feature Pack B")
                    .state(UpdateState::NotReady)
                    .gone_upstream(),
            )
            .add_update(Update::new("kept", "Security Update").state(UpdateState::NotReady))
            .add_update(Update::new("done", "Cumulative Update").gone_upstream());
        host
    }

    fn actions(run: &medic_sdk::testing::Run) -> Vec<(&str, &str, bool)> {
        run.actions()
            .iter()
            .map(|a| (a.verb.as_str(), a.target.as_str(), a.applied))
            .collect()
    }

    #[test]
    fn orphans_are_cancelled_and_declined_on_an_autonomous_server() {
        let mut host = server();
        let run = host.run::<DeclineOrphans>(event::schedule(3600));
        assert_eq!(run.status(), Status::Remediated);
        assert_eq!(
            actions(&run),
            [
                ("cancel-download", "gone-pending", true),
                ("decline", "gone-failed", true),
                ("decline", "gone-pending", true),
            ]
        );
        assert_eq!(
            run.summary(),
            "2 downloads gone from wsus-up.example:8531; 1 NotReady cancelled; 2 declined. If they are still needed, re-add their products on wsus-up.example:8531 and synchronize instead"
        );
        let pending = host.update("gone-pending");
        assert_eq!(
            (pending.state, pending.declined),
            (UpdateState::Canceled, true)
        );
        assert!(host.update("gone-failed").declined);
        let kept = host.update("kept");
        assert_eq!((kept.state, kept.declined), (UpdateState::NotReady, false));
        assert!(
            !host.update("done").declined,
            "not waiting: not its business"
        );

        let again = host.run::<DeclineOrphans>(event::schedule(3600));
        assert_eq!(again.status(), Status::Healthy);
        assert_eq!(
            again.summary(),
            "1 downloads waiting, all still on wsus-up.example:8531"
        );
    }

    #[test]
    fn approve_mode_plans_the_cancels_and_declines() {
        let mut host = server();
        host.mode(Mode::Approve);
        let run = host.run::<DeclineOrphans>(event::schedule(3600));
        assert_eq!(run.status(), Status::NeedsApproval);
        assert!(actions(&run).iter().all(|(_, _, applied)| !applied));
        assert_eq!(actions(&run).len(), 3);
        assert!(
            run.summary()
                .contains("1 NotReady to be cancelled; 2 to be declined")
        );
        assert_eq!(host.update("gone-pending").state, UpdateState::NotReady);
        assert!(!host.update("gone-failed").declined);
        // No read-back of a cancel that was only planned.
        assert_eq!(run.calls_to(HostFn::WsusListUpdates).len(), 2);
    }

    #[test]
    fn a_replica_cancels_what_it_can_and_fails_on_the_rest() {
        let mut host = server();
        host.wsus().replica();
        let run = host.run::<DeclineOrphans>(event::schedule(3600));
        assert_eq!(run.status(), Status::Remediated, "the cancel is a repair");
        assert_eq!(actions(&run), [("cancel-download", "gone-pending", true)]);
        assert!(run.summary().contains("A replica can neither decline them"));
        assert!(run.calls_to(HostFn::WsusDecline).is_empty());

        // Only the Failed orphan left: nothing a replica can do.
        let run = host.run::<DeclineOrphans>(event::schedule(3600));
        assert_eq!(run.status(), Status::Failed);
        assert!(run.actions().is_empty());
        assert_eq!(
            run.summary(),
            "1 downloads gone from wsus-up.example:8531. A replica can neither decline them nor cancel a Failed download: re-add their products on wsus-up.example:8531 and synchronize"
        );
    }

    #[test]
    fn declining_can_be_turned_off() {
        let mut host = server();
        host.setting("decline", false);
        let run = host.run::<DeclineOrphans>(event::manual());
        assert_eq!(actions(&run), [("cancel-download", "gone-pending", true)]);
        assert!(run.summary().ends_with(
            "(declining is turned off). Either re-add their products on wsus-up.example:8531 and synchronize, or decline them here"
        ));
        assert!(!host.update("gone-failed").declined);
    }

    #[test]
    fn nothing_waiting_is_healthy() {
        let mut host = FakeHost::new();
        host.wsus()
            .add_update(Update::new("done", "Cumulative Update"));
        let run = host.run::<DeclineOrphans>(event::manual());
        assert_eq!(run.status(), Status::Healthy);
        assert_eq!(run.summary(), "no download is waiting");
        assert!(run.calls_to(HostFn::WsusUpstreamHas).is_empty());
    }

    #[test]
    fn a_server_without_an_upstream_cannot_be_asked() {
        let mut host = server();
        host.wsus().microsoft_update();
        let run = host.run::<DeclineOrphans>(event::manual());
        assert_eq!(
            run.error(),
            "conflict: this server synchronizes from Microsoft Update: `upstream-has` needs an upstream WSUS server"
        );
        assert!(run.applied().is_empty());
    }
}
