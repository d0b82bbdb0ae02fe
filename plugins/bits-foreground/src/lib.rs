//! `bits-foreground`: the HTTP Range fix. When a proxy between the servers
//! strips the Range header, BITS background downloads fail (event 364:
//! "...requires that the server support the Range protocol header").
//! Foreground downloads do not need it: set
//! `BitsDownloadPriorityForeground=1` in `tbConfigurationC`, restart
//! WsusService so it takes the setting, resume the downloads that Failed
//! (a Failed update stays Failed until resumed), start a synchronization,
//! and come back after `verify_after` seconds to judge from the update
//! states and the sync's record.
//! This is the workaround: KB 922330's fix is a proxy that supports HTTP
//! 1.1 range requests ("If you can't modify the proxy server in this
//! manner, configure BITS to work in foreground mode"), and the report
//! says so, since foreground downloads are slower and compete with other
//! traffic.
//!
//! Settings (all optional):
//! - `wsus_service` [default `WsusService`].
//! - `timeout_ms` [default 30000].
//! - `verify_after` [default 60]: seconds before the follow-up run.

use medic_sdk::{
    Capability, Event, EventKind, Outcome, Plugin, PluginInfo, Report, SystemEventMatch,
    TriggerHint, info, services, settings, wsus,
};

const SETTING: &str = "BitsDownloadPriorityForeground";

/// The fix the workaround stands in for (KB 922330).
const PROXY_FIX: &str =
    "the fix is a proxy between the servers that passes HTTP 1.1 Range requests";

struct BitsForeground;

impl Plugin for BitsForeground {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "bits-foreground".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "The HTTP Range fix: foreground BITS downloads, WsusService restarted, synchronization verified.".into(),
            capabilities: vec![
                wsus::Operation::Read.into(),
                wsus::Operation::Configure.into(),
                wsus::Operation::Updates.into(),
                wsus::Operation::Sync.into(),
                Capability::ServicesRead,
                Capability::ServicesControl,
            ],
            triggers: vec![TriggerHint::SystemEvent(SystemEventMatch {
                source: "Windows Server Update Services".into(),
                id: 364,
            })],
        }
    }

    fn handle(event: Event) -> Result<Outcome, String> {
        let service = settings::get("wsus_service").unwrap_or_else(|| "WsusService".into());
        let timeout: u32 = settings::parse_or("timeout_ms", 30_000)?;
        let verify_after: u32 = settings::parse_or("verify_after", 60)?;
        if event.kind == EventKind::FollowUp {
            return Ok(wsus::verify(
                &format!("downloads run in the foreground (the workaround; {PROXY_FIX})"),
                verify_after,
            )?);
        }
        let current = wsus::get_config(SETTING)?;
        info!("{SETTING} = {current:?} ({} event)", event.kind);
        let mut report = Report::new();
        if current.as_deref() == Some("1") {
            return Ok(report.finish(&format!(
                "{SETTING} is already 1: downloads run in the foreground (the workaround; {PROXY_FIX})"
            )));
        }
        let previous = wsus::set_config(SETTING, "1")?;
        let applied = wsus::get_config(SETTING)?.as_deref() == Some("1");
        report.push(
            "set-config",
            SETTING,
            &format!("{} -> 1", previous.as_deref().unwrap_or("unset")),
            applied,
        );
        let change = services::restart(&service, timeout)
            .map_err(|e| format!("restarting {service}: {}", e.describe()))?;
        report.record_service("restart-service", &change, true);
        let done =
            format!("{SETTING} set to 1 and {service} restarted (the workaround; {PROXY_FIX})");
        // A plan is not verified: a sync that ends meanwhile (the server's
        // own) is not this plan's result.
        if !applied {
            return Ok(report.finish(&format!("{done}; then a sync (all planned)")));
        }
        wsus::resume_and_follow_up(&mut report, true, verify_after)?;
        Ok(report.finish(&format!(
            "{done}; failed downloads resumed: verifying in {verify_after}s"
        )))
    }
}

medic_sdk::register_plugin!(BitsForeground);

#[cfg(test)]
mod tests {
    use super::*;
    use medic_sdk::services::ServiceState;
    use medic_sdk::testing::{FakeHost, HostFn, Mode, Service, SyncScript, Update, event};
    use medic_sdk::wsus::UpdateState;
    use medic_sdk::{Event, Status};

    /// The fault: background downloads fail through a proxy that strips
    /// the Range header; `BitsDownloadPriorityForeground` is 0.
    fn server() -> FakeHost {
        let mut host = FakeHost::new();
        host.add_service(Service::new("WsusService"))
            .add_service(Service::new("BITS"));
        host.wsus()
            .upstream("wsus-up.example:8531")
            .add_update(Update::new("u1", "Security Update (KB5034127)").state(UpdateState::Failed))
            .add_update(
                Update::new("u2", "Cumulative Update (KB5034122)").state(UpdateState::Failed),
            );
        host
    }

    fn range_failure() -> Event {
        event::system_event(
            "Windows Server Update Services",
            364,
            "Content file download failed. Reason: BITS cannot complete the download because the server does not support the necessary HTTP protocol. BITS requires that the server support the Range protocol header.",
        )
    }

    #[test]
    fn downloads_move_to_the_foreground_and_the_repair_is_verified() {
        let mut host = server();
        let run = host.run::<BitsForeground>(range_failure());
        assert_eq!(run.status(), Status::Remediated);
        let steps: Vec<(&str, &str)> = run
            .actions()
            .iter()
            .map(|a| (a.verb.as_str(), a.target.as_str()))
            .collect();
        assert_eq!(
            steps,
            [
                ("set-config", SETTING),
                ("restart-service", "WsusService"),
                ("resume-download", "u1"),
                ("resume-download", "u2"),
                ("start-sync", "upstream"),
            ]
        );
        assert_eq!(run.actions()[0].detail, "0 -> 1");
        assert!(
            run.summary().contains(PROXY_FIX),
            "the report names the real fix"
        );
        assert_eq!(host.wsus().config(SETTING), Some("1"));
        assert_eq!(host.update("u1").state, UpdateState::NotReady);
        assert_eq!(run.outcome().follow_up.as_ref().unwrap().after_seconds, 60);

        let verified = host.run::<BitsForeground>(run.follow_up_event().unwrap());
        assert_eq!(verified.status(), Status::Healthy);
        assert!(
            verified
                .summary()
                .starts_with("verified: downloads run in the foreground"),
            "{}",
            verified.summary()
        );
        assert_eq!(host.update("u2").state, UpdateState::Ready);
    }

    #[test]
    fn dry_run_plans_the_setting_and_the_restart_only() {
        let mut host = server();
        host.mode(Mode::DryRun).setting("verify_after", 120);
        let run = host.run::<BitsForeground>(range_failure());
        assert_eq!(run.status(), Status::NeedsApproval);
        assert!(run.actions().iter().all(|a| !a.applied));
        let planned: Vec<HostFn> = run.planned().iter().map(|c| c.function).collect();
        assert_eq!(planned, [HostFn::WsusSetConfig, HostFn::ServicesRestart]);
        assert!(run.summary().ends_with("then a sync (all planned)"));
        assert_eq!(host.wsus().config(SETTING), Some("0"));
        assert_eq!(host.update("u1").state, UpdateState::Failed);
        assert!(run.outcome().follow_up.is_none());
    }

    #[test]
    fn foreground_downloads_already_set_need_nothing() {
        let mut host = server();
        host.wsus().set_config(SETTING, "1");
        let run = host.run::<BitsForeground>(range_failure());
        assert_eq!(run.status(), Status::Healthy);
        assert!(
            run.summary()
                .starts_with("BitsDownloadPriorityForeground is already 1")
        );
        assert!(run.calls.iter().all(|c| !c.function.is_mutating()));
    }

    #[test]
    fn a_follow_up_finding_downloads_failed_again_fails() {
        let mut host = server();
        host.wsus()
            .next_sync(SyncScript::succeeds().downloads(medic_sdk::testing::Downloads::Fail));
        let run = host.run::<BitsForeground>(range_failure());
        let verdict = host.run::<BitsForeground>(run.follow_up_event().unwrap());
        assert_eq!(verdict.status(), Status::Failed);
        assert!(
            verdict
                .summary()
                .contains("2 approved downloads are Failed again"),
            "{}",
            verdict.summary()
        );
    }

    #[test]
    fn a_restart_outside_the_grants_ends_the_run_after_the_setting() {
        let mut host = server();
        host.setting("wsus_service", "WsusSvc")
            .grant_service("WsusService");
        let run = host.run::<BitsForeground>(range_failure());
        assert_eq!(
            run.error(),
            "restarting WsusSvc: denied: service `WsusSvc` is not granted to services-control (granted: WsusService)"
        );
        assert_eq!(
            host.wsus().config(SETTING),
            Some("1"),
            "set before the restart"
        );
        assert_eq!(host.service("WsusService").state, ServiceState::Running);
    }
}
