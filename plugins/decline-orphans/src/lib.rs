//! `decline-orphans`: on a downstream server, updates whose download failed
//! because the upstream no longer has them (an upstream rebuilt with fewer
//! products, say) wait forever and break every synchronization. This
//! plugin asks the upstream which of the failed updates it still has:
//! those are left for the next sync (the failure was transient); the
//! others are cancelled, and declined where the server may decline
//! (autonomous). A replica cannot decline (`IUpdate.Decline()` throws
//! there): it cancels and reports.
//!
//! Whether those updates are "no longer needed" is the administrator's
//! call, so the example policy runs this plugin in approve mode, and every
//! report names the article's other option: re-add the products on the
//! upstream and synchronize.
//!
//! Settings (all optional):
//! - `decline` [default true]: decline on autonomous servers.

use medic_sdk::wsus::{ServerMode, UpdateFilter, UpdateState};
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
        let failed = wsus::list_updates(UpdateFilter {
            state: Some(UpdateState::Failed),
            declined: Some(false),
            approved: None,
        })?;
        info!(
            "{} failed downloads on {} ({} event)",
            failed.len(),
            facts.name,
            event.kind
        );
        let report = Report::new();
        if failed.is_empty() {
            return Ok(report.finish("no failed downloads"));
        }
        let ids: Vec<String> = failed.iter().map(|u| u.id.clone()).collect();
        let still_upstream: HashSet<String> = wsus::upstream_has(&ids)?.into_iter().collect();
        let orphans: Vec<String> = ids
            .iter()
            .filter(|id| !still_upstream.contains(*id))
            .cloned()
            .collect();
        let upstream = facts.upstream.as_deref().unwrap_or("the upstream");
        let transient = format!(
            "{} still on {upstream}: left for the next sync",
            still_upstream.len()
        );
        if orphans.is_empty() {
            return Ok(report.finish(&format!(
                "{} failed downloads, all {transient}",
                failed.len()
            )));
        }
        let mut report = report;
        let cancelled = wsus::cancel_downloads(&orphans)?;
        report.record_batch("cancel-download", &cancelled);
        let mut summary = format!(
            "{} failed downloads: {} gone from {upstream}, download {}",
            failed.len(),
            cancelled.done.len(),
            if cancelled.applied {
                "cancelled"
            } else {
                "to be cancelled"
            }
        );
        match facts.mode {
            ServerMode::Autonomous if may_decline => {
                let declined = wsus::decline(&cancelled.done)?;
                report.record_batch("decline", &declined);
                summary.push_str(&format!(
                    " and {} {}",
                    declined.done.len(),
                    if declined.applied {
                        "declined"
                    } else {
                        "to be declined"
                    }
                ));
            }
            ServerMode::Autonomous => summary.push_str(" (declining is turned off)"),
            ServerMode::Replica => summary.push_str(" (a replica cannot decline them)"),
        }
        if !cancelled.failed.is_empty() {
            summary.push_str(&format!(
                "; {} could not be cancelled",
                cancelled.failed.len()
            ));
        }
        summary.push_str(&format!(
            "; {transient}. If they are still needed, re-add their products on {upstream} and synchronize instead"
        ));
        Ok(report.finish(&summary))
    }
}

medic_sdk::register_plugin!(DeclineOrphans);
