//! `upstream-check`: the article's check of the road to the upstream
//! server. It resolves the configured `UpstreamServerName`, connects
//! (through the configured proxy, when one is used) and requests the
//! upstream's sync web service, reads the proxy settings, and reports the
//! first step that fails with what an administrator does about it: an
//! unresolved name, a proxy that cannot be reached, or proxy credentials
//! the proxy refuses (407; an expired password is the later edition's
//! "major cause"). It never reads or sets a password.
//!
//! The one change it may make: when the setting `upstream` names the
//! upstream this server should use and the configured name differs and
//! does not work, it sets `UpstreamServerName` to it. The example policy
//! runs it in approve mode, so that change waits for an operator.
//!
//! Settings (all optional):
//! - `upstream`: the upstream's `host[:port]` as it should be configured.

use medic_sdk::wsus::{ProxySettings, UpstreamProbe};
use medic_sdk::{
    Event, Outcome, Plugin, PluginInfo, Report, SystemEventMatch, TriggerHint, info, settings, wsus,
};

struct UpstreamCheck;

impl Plugin for UpstreamCheck {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "upstream-check".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Checks that the upstream server resolves and answers, through the proxy and its credentials; reports the broken step and, if allowed, restores the configured upstream name.".into(),
            capabilities: vec![
                wsus::Operation::Read.into(),
                wsus::Operation::Probe.into(),
                wsus::Operation::Configure.into(),
            ],
            triggers: vec![
                TriggerHint::SystemEvent(SystemEventMatch {
                    source: "Windows Server Update Services".into(),
                    id: 10021,
                }),
                TriggerHint::SystemEvent(SystemEventMatch {
                    source: "Windows Server Update Services".into(),
                    id: 10022,
                }),
                TriggerHint::Every(3600),
            ],
        }
    }

    fn handle(event: Event) -> Result<Outcome, String> {
        let facts = wsus::server_info()?;
        let Some(configured) = facts.upstream else {
            return Ok(Report::new()
                .finish("this server synchronizes from Microsoft Update: no upstream to check"));
        };
        let last_error = wsus::sync_status()?
            .last
            .and_then(|record| record.error.map(|e| (e, record.reason.unwrap_or_default())));
        let probe = wsus::check_upstream()?;
        let proxy = wsus::proxy()?;
        info!(
            "{configured}: {:?} ({} event; last sync error {last_error:?})",
            probe.problem, event.kind
        );
        let route = route(&probe, &proxy);
        let Some(problem) = probe.problem.clone() else {
            let earlier = last_error
                .map(|(error, _)| format!("; the last sync failed ({error}), the next should not"))
                .unwrap_or_default();
            return Ok(Report::new().finish(&format!(
                "{configured} resolves and answers{route} (HTTP {}){earlier}",
                probe.http_status.unwrap_or_default()
            )));
        };

        let mut report = Report::new();
        let wanted: Option<String> = settings::get("upstream");
        // The upstream's name does not resolve: here, or at the proxy
        // (502 Bad Gateway).
        let name_unresolved = if probe.via_proxy {
            probe.http_status == Some(502)
        } else {
            probe.addresses.is_empty()
        };
        if name_unresolved && let Some(wanted) = wanted.filter(|w| !same_upstream(w, &configured)) {
            let previous = wsus::set_config("UpstreamServerName", &wanted)?;
            let applied =
                wsus::get_config("UpstreamServerName")?.as_deref() == Some(wanted.as_str());
            report.push(
                "set-config",
                "UpstreamServerName",
                &format!("{} -> {wanted}", previous.as_deref().unwrap_or("unset")),
                applied,
            );
            return Ok(report.finish(&format!(
                "{problem}; UpstreamServerName {} {wanted}, the upstream the policy names",
                if applied {
                    "set back to"
                } else {
                    "to be set to"
                }
            )));
        }
        Ok(report.fail(&format!("{problem}. {}", advice(&probe, &proxy))))
    }
}

/// ` through proxy:port` when a proxy is used.
fn route(probe: &UpstreamProbe, proxy: &ProxySettings) -> String {
    if probe.via_proxy {
        format!(" through the proxy {}:{}", proxy.host, proxy.port)
    } else {
        String::new()
    }
}

/// What an administrator does about the failed step.
fn advice(probe: &UpstreamProbe, proxy: &ProxySettings) -> String {
    const CONSOLE: &str = "in the WSUS console: Options, Update Source and Proxy Server";
    match (probe.via_proxy, probe.connected, probe.http_status) {
        (true, true, Some(407)) => format!(
            "The proxy refuses the credentials{}: enter the account's current password {CONSOLE} (an expired proxy password is the usual cause)",
            proxy
                .user
                .as_deref()
                .map(|u| format!(" of {u}"))
                .unwrap_or_default()
        ),
        (true, false, _) => format!("Check the proxy's name and port {CONSOLE}"),
        (true, true, Some(502)) => format!(
            "Check the upstream server's name {CONSOLE} (set `upstream` in the policy to let this plugin restore it)"
        ),
        (true, true, _) => {
            "The proxy cannot reach the upstream: check the proxy's rules for it".into()
        }
        (false, _, _) if probe.addresses.is_empty() => format!(
            "Check the upstream server's name {CONSOLE}, and that this server's DNS resolves it (set `upstream` in the policy to let this plugin restore it)"
        ),
        _ => "Check that the upstream's WSUS service runs and that its port is open".into(),
    }
}

/// Whether two `host[:port]` names mean the same upstream (the port 8531
/// by default, names in any case).
fn same_upstream(a: &str, b: &str) -> bool {
    let normal = |name: &str| {
        let name = name.to_ascii_lowercase();
        if name.contains(':') {
            name
        } else {
            format!("{name}:8531")
        }
    };
    normal(a) == normal(b)
}

medic_sdk::register_plugin!(UpstreamCheck);
