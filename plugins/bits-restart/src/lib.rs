//! `bits-restart`: when downloads or synchronizations fail because BITS is
//! disabled or will not run, bring it back: startup type Manual if it was
//! Disabled, start it, restart WsusService, resume the downloads that
//! Failed meanwhile (a Failed update stays Failed until resumed), start a
//! synchronization, and come back after `verify_after` seconds to judge
//! from the update states and the sync's record (again while it runs).
//!
//! BITS switches itself between delayed-automatic start (with jobs) and
//! demand start (without), and a stopped BITS with demand start is idle,
//! not broken: it starts when WSUS hands it a download. So a BITS that is
//! merely stopped is started only on fresh evidence that it fails: the
//! event that woke the plugin is a 364 naming the service, or the last
//! synchronization failed on it. Otherwise it is left alone, and the run
//! says so. A disabled BITS (the article's failure) is always repaired. A
//! broken BITS (its definition cannot be loaded) is reported as failed and
//! left for a person: no start can succeed.
//! Pair it with a flap guard in the policy: a BITS that keeps dying needs a
//! person.
//!
//! Settings (all optional):
//! - `bits` [default `BITS`], `wsus_service` [default `WsusService`]:
//!   service names.
//! - `timeout_ms` [default 30000]: how long each service step may take.
//! - `verify_sync` [default true]: start a synchronization afterwards.
//! - `verify_after` [default 60]: seconds before the follow-up run.

use medic_sdk::services::{ServiceState, StartupType};
use medic_sdk::{
    Capability, Event, EventKind, Outcome, Plugin, PluginInfo, Report, SystemEventMatch,
    TriggerHint, info, services, settings, wsus,
};

struct BitsRestart;

impl Plugin for BitsRestart {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "bits-restart".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Brings BITS back (re-enabled, started), restarts WsusService and verifies a synchronization.".into(),
            capabilities: vec![
                Capability::ServicesRead,
                Capability::ServicesControl,
                wsus::Operation::Read.into(),
                wsus::Operation::Updates.into(),
                wsus::Operation::Sync.into(),
            ],
            triggers: vec![
                TriggerHint::SystemEvent(SystemEventMatch {
                    source: "Windows Server Update Services".into(),
                    id: 364,
                }),
                TriggerHint::SystemEvent(SystemEventMatch {
                    source: "Service Control Manager".into(),
                    id: 7040,
                }),
                TriggerHint::Every(900),
            ],
        }
    }

    fn handle(event: Event) -> Result<Outcome, String> {
        let bits = settings::get("bits").unwrap_or_else(|| "BITS".into());
        let wsus_service = settings::get("wsus_service").unwrap_or_else(|| "WsusService".into());
        let timeout: u32 = settings::parse_or("timeout_ms", 30_000)?;
        let verify = settings::parse_or("verify_sync", true)?;
        let verify_after: u32 = settings::parse_or("verify_after", 60)?;

        let status = services::query(&bits)?;
        info!(
            "{bits} is {} ({} start) after a {} event",
            status.state, status.startup, event.kind
        );
        // A BITS whose definition cannot be loaded cannot start: restarting
        // it would fail every time. It needs a person.
        if status.state == ServiceState::Broken {
            let why = status
                .problem
                .map(|p| p.detail)
                .unwrap_or_else(|| "its service manager cannot load it".into());
            return Ok(Report::new().fail(&format!(
                "{bits} is broken and cannot start: {why}; fix its definition, then it can be started"
            )));
        }
        let disabled = matches!(
            status.startup,
            StartupType::Disabled | StartupType::DisabledUntilReboot
        );
        // A follow-up verifies the last repair, unless BITS is down again:
        // then it is judged afresh (a new 364 for the same subject may
        // have been folded into this run).
        if event.kind == EventKind::FollowUp && !disabled && status.state == ServiceState::Running {
            return Ok(wsus::verify(
                &format!("{bits} was brought back"),
                verify_after,
            )?);
        }
        if !disabled && status.state != ServiceState::Running {
            if let Some(evidence) = failing(&event)? {
                info!("{bits} is stopped, and it fails: {evidence}");
            } else {
                return Ok(Report::new().finish(&format!(
                    "{bits} is stopped ({} start) with no sign that it fails: an idle BITS starts when WSUS needs it; left alone",
                    status.startup
                )));
            }
        }
        let mut report = Report::new();
        let mut enabled = !disabled;
        if disabled {
            let change = services::set_startup(&bits, StartupType::Manual)
                .map_err(|e| format!("re-enabling {bits}: {}", e.describe()))?;
            report.record_service("set-startup", &change, true);
            enabled = change.applied;
        }
        if status.state != ServiceState::Running {
            if enabled {
                let change = services::start(&bits, timeout)
                    .map_err(|e| format!("starting {bits}: {}", e.describe()))?;
                report.record_service("start-service", &change, true);
            } else {
                // The re-enabling is only planned (dry-run, approve): BITS
                // is still disabled, and the host, planning from the
                // service as it is, would refuse a start. The start that
                // follows the re-enabling is planned here.
                let detail = format!("{} (manual) -> running (manual)", status.state);
                report.push("start-service", &bits, &detail, false);
            }
        }
        if report.is_empty() {
            return Ok(report.finish(&format!(
                "{bits} is running ({} start): nothing to do",
                status.startup
            )));
        }
        let change = services::restart(&wsus_service, timeout)
            .map_err(|e| format!("restarting {wsus_service}: {}", e.describe()))?;
        report.record_service("restart-service", &change, true);

        let repaired = if disabled {
            format!("{bits} was disabled and stopped: re-enabled (manual start) and started")
        } else {
            format!("{bits} was stopped: started")
        };
        // A plan is not verified: a sync that ends meanwhile (the server's
        // own) is not this plan's result.
        if !change.applied {
            return Ok(report.finish(&format!(
                "{repaired}; {wsus_service} restarted; then a sync (all planned)"
            )));
        }
        wsus::resume_and_follow_up(&mut report, verify, verify_after)?;
        Ok(report.finish(&format!(
            "{repaired}; {wsus_service} restarted; failed downloads resumed: verifying in {verify_after}s"
        )))
    }
}

/// Fresh evidence that a stopped BITS fails, or `None`: the event that
/// woke the plugin is a 364 naming the service, or the last
/// synchronization failed on it.
fn failing(event: &Event) -> Result<Option<String>, String> {
    if event.kind == EventKind::FollowUp {
        let failed = wsus::failed_downloads()?;
        if !failed.is_empty() {
            return Ok(Some(format!(
                "{} downloads Failed again since the last repair",
                failed.len()
            )));
        }
    }
    if event.field("event-id") == Some("364")
        && let Some(message) = event.field("message")
        && mentions_service(message)
    {
        return Ok(Some(format!("event 364: {message}")));
    }
    let last = wsus::sync_status()?.last;
    Ok(last
        .and_then(|record| record.reason)
        .filter(|reason| mentions_service(reason))
        .map(|reason| format!("the last synchronization failed: {reason}")))
}

/// Whether a sync failure is still BITS's (the texts Windows gives for a
/// stopped or disabled service).
fn mentions_service(reason: &str) -> bool {
    reason.contains("service has not been started") || reason.contains("because it is disabled")
}

medic_sdk::register_plugin!(BitsRestart);
