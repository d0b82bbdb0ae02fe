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

#[cfg(test)]
mod tests {
    use super::*;
    use medic_sdk::services::ProblemKind;
    use medic_sdk::testing::{FakeHost, HostFn, Mode, Service, SyncScript, Update, event};
    use medic_sdk::wsus::{SyncRecord, SyncResult, UpdateState};
    use medic_sdk::{Event, Status};

    const STOPPED_REASON: &str = "Content file download failed. Reason: The service has not been started. Source File: /Content/A1/1.cab";

    /// The article's fault: BITS disabled and stopped, WsusService running,
    /// one approved download Failed meanwhile.
    fn server() -> FakeHost {
        let mut host = FakeHost::new();
        host.add_service(
            Service::new("BITS")
                .display_name("Background Intelligent Transfer Service")
                .state(ServiceState::Stopped)
                .startup(StartupType::Disabled),
        )
        .add_service(Service::new("WsusService"));
        host.wsus()
            .add_update(
                Update::new("u-failed", "Security Update (KB5034127)").state(UpdateState::Failed),
            )
            .add_update(Update::new("u-ready", "Cumulative Update (KB5034122)"));
        host
    }

    /// Event 7040: BITS's start type changed to disabled.
    fn start_type_changed() -> Event {
        event::system_event(
            "Service Control Manager",
            7040,
            "The start type of the Background Intelligent Transfer Service service was changed from demand start to disabled.",
        )
        .about("BITS")
    }

    fn steps(run: &medic_sdk::testing::Run) -> Vec<(&str, &str, bool)> {
        run.actions()
            .iter()
            .map(|a| (a.verb.as_str(), a.target.as_str(), a.applied))
            .collect()
    }

    #[test]
    fn a_disabled_bits_is_re_enabled_started_and_the_repair_verified() {
        let mut host = server();
        let run = host.run::<BitsRestart>(start_type_changed());
        assert_eq!(run.status(), Status::Remediated);
        assert_eq!(
            steps(&run),
            [
                ("set-startup", "BITS", true),
                ("start-service", "BITS", true),
                ("restart-service", "WsusService", true),
                ("resume-download", "u-failed", true),
                ("start-sync", "upstream", true),
            ]
        );
        assert_eq!(
            run.actions()[0].detail,
            "stopped (disabled) -> stopped (manual)"
        );
        assert_eq!(
            run.summary(),
            "BITS was disabled and stopped: re-enabled (manual start) and started; WsusService restarted; failed downloads resumed: verifying in 60s"
        );
        let bits = host.service("BITS");
        assert_eq!(
            (bits.state, bits.startup),
            (ServiceState::Running, StartupType::Manual)
        );
        assert_eq!(host.update("u-failed").state, UpdateState::NotReady);
        assert!(host.wsus().running_sync().is_some());

        // The follow-up: the sync ended and downloaded what was resumed.
        let follow_up = run.follow_up_event().expect("a follow-up");
        let verified = host.run::<BitsRestart>(follow_up);
        assert_eq!(verified.status(), Status::Healthy);
        assert_eq!(
            verified.summary(),
            "verified: BITS was brought back; no approved download is Failed; the sync succeeded"
        );
        assert!(verified.applied().is_empty());
        assert_eq!(host.update("u-failed").state, UpdateState::Ready);
    }

    #[test]
    fn dry_run_plans_the_whole_repair_and_changes_nothing() {
        let mut host = server();
        host.mode(Mode::DryRun);
        let run = host.run::<BitsRestart>(start_type_changed());
        assert_eq!(run.status(), Status::NeedsApproval);
        assert_eq!(
            steps(&run),
            [
                ("set-startup", "BITS", false),
                ("start-service", "BITS", false),
                ("restart-service", "WsusService", false),
            ]
        );
        assert_eq!(
            run.summary(),
            "BITS was disabled and stopped: re-enabled (manual start) and started; WsusService restarted; then a sync (all planned)"
        );
        assert!(
            run.calls_to(HostFn::ServicesStart).is_empty(),
            "no start the host must refuse"
        );
        assert_eq!(run.planned().len(), 2);
        assert_eq!(host.service("BITS").startup, StartupType::Disabled);
        assert_eq!(host.update("u-failed").state, UpdateState::Failed);
        assert!(host.wsus().running_sync().is_none());
        assert!(run.follow_up_event().is_none(), "a plan is not verified");
    }

    #[test]
    fn a_running_bits_needs_nothing() {
        let mut host = server();
        host.add_service(Service::new("BITS").startup(StartupType::AutomaticDelayed));
        let run = host.run::<BitsRestart>(event::schedule(900));
        assert_eq!(run.status(), Status::Healthy);
        assert_eq!(
            run.summary(),
            "BITS is running (automatic-delayed start): nothing to do"
        );
        assert!(run.calls.iter().all(|c| !c.function.is_mutating()));
    }

    #[test]
    fn a_stopped_bits_is_started_only_on_evidence_that_it_fails() {
        let mut host = server();
        host.add_service(
            Service::new("BITS")
                .state(ServiceState::Stopped)
                .startup(StartupType::Manual),
        );
        let idle = host.run::<BitsRestart>(event::schedule(900));
        assert_eq!(idle.status(), Status::Healthy);
        assert!(
            idle.summary()
                .ends_with("an idle BITS starts when WSUS needs it; left alone")
        );
        assert_eq!(host.service("BITS").state, ServiceState::Stopped);

        // A 364 naming the stopped service is evidence.
        let event_364 = event::system_event("Windows Server Update Services", 364, STOPPED_REASON);
        let run = host.run::<BitsRestart>(event_364);
        assert_eq!(run.status(), Status::Remediated);
        assert_eq!(steps(&run)[0], ("start-service", "BITS", true));
        assert!(run.summary().starts_with("BITS was stopped: started"));
        assert!(run.logged("BITS is stopped, and it fails: event 364"));
    }

    #[test]
    fn a_last_sync_that_failed_on_bits_is_evidence_too() {
        let mut host = server();
        host.add_service(
            Service::new("BITS")
                .state(ServiceState::Stopped)
                .startup(StartupType::Manual),
        );
        host.wsus().add_sync(SyncRecord {
            started_ms: FakeHost::START_MS - 3_600_000,
            finished_ms: FakeHost::START_MS - 3_500_000,
            result_kind: SyncResult::Failed,
            error: Some("UnknownServiceError".into()),
            reason: Some("The service cannot be started because it is disabled".into()),
        });
        let run = host.run::<BitsRestart>(event::schedule(900));
        assert_eq!(run.status(), Status::Remediated);
        assert_eq!(host.service("BITS").state, ServiceState::Running);
    }

    #[test]
    fn a_broken_bits_is_left_for_a_person() {
        let mut host = server();
        host.add_service(Service::new("BITS").broken("The system cannot find the file specified."));
        let run = host.run::<BitsRestart>(start_type_changed());
        assert_eq!(run.status(), Status::Failed);
        assert_eq!(
            run.summary(),
            "BITS is broken and cannot start: The system cannot find the file specified.; fix its definition, then it can be started"
        );
        assert_eq!(run.calls_to(HostFn::ServicesQuery).len(), 1);
        assert!(run.calls.iter().all(|c| !c.function.is_mutating()));
    }

    #[test]
    fn a_follow_up_that_finds_the_sync_failed_says_so() {
        let mut host = server();
        host.wsus().next_sync(SyncScript::fails(
            "ProxyError",
            "The proxy refused the connection",
        ));
        let run = host.run::<BitsRestart>(start_type_changed());
        let verdict = host.run::<BitsRestart>(run.follow_up_event().unwrap());
        assert_eq!(verdict.status(), Status::Failed);
        assert!(
            verdict
                .summary()
                .contains("failed (ProxyError): The proxy refused the connection"),
            "{}",
            verdict.summary()
        );
    }

    #[test]
    fn a_wsus_service_outside_the_grants_stops_the_repair_half_way() {
        let mut host = server();
        host.grant_service("BITS");
        let run = host.run::<BitsRestart>(start_type_changed());
        assert_eq!(
            run.error(),
            "restarting WsusService: denied: service `WsusService` is not granted to services-control (granted: BITS)"
        );
        assert_eq!(run.denied().len(), 1);
        assert_eq!(
            host.service("BITS").state,
            ServiceState::Running,
            "BITS came first"
        );
        assert_eq!(
            host.update("u-failed").state,
            UpdateState::Failed,
            "not resumed"
        );
    }

    #[test]
    fn a_bits_that_fails_to_start_ends_the_run_with_the_manager_s_words() {
        let mut host = server();
        host.add_service(
            Service::new("BITS")
                .state(ServiceState::Stopped)
                .startup(StartupType::Disabled)
                .fails_to_start(ProblemKind::ExitCode, "exit code 1067"),
        );
        let run = host.run::<BitsRestart>(start_type_changed());
        assert_eq!(
            run.error(),
            "starting BITS: failed: `BITS` failed to start: exit code 1067"
        );
        assert_eq!(host.service("BITS").state, ServiceState::Failed);
    }
}
