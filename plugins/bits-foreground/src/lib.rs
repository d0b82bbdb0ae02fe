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
