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
