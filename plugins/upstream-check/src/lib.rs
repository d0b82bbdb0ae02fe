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

#[cfg(test)]
mod tests {
    use super::*;
    use medic_sdk::Status;
    use medic_sdk::testing::{FakeHost, HostFn, Mode, event};
    use medic_sdk::wsus::{SyncRecord, SyncResult};

    const OLD: &str = "wsus-old.example:8531";
    const NEW: &str = "wsus-up.example:8531";

    fn unresolved() -> UpstreamProbe {
        UpstreamProbe {
            target: OLD.into(),
            addresses: vec![],
            via_proxy: false,
            connected: false,
            http_status: None,
            problem: Some("`wsus-old.example` does not resolve (UpstreamServerName)".into()),
        }
    }

    /// The fault: `UpstreamServerName` names a host that no longer
    /// resolves; the policy names the right one.
    fn downstream() -> FakeHost {
        let mut host = FakeHost::new();
        host.wsus()
            .upstream("wsus-old.example")
            .probe(OLD, unresolved())
            .add_sync(SyncRecord {
                started_ms: FakeHost::START_MS - 3_600_000,
                finished_ms: FakeHost::START_MS - 3_590_000,
                result_kind: SyncResult::Failed,
                error: Some("UssNotFound".into()),
                reason: Some("The upstream server could not be found".into()),
            });
        host.setting("upstream", NEW);
        host
    }

    #[test]
    fn an_unresolved_upstream_name_is_set_back_to_the_policy_s() {
        let mut host = downstream();
        let run = host.run::<UpstreamCheck>(event::system_event(
            "Windows Server Update Services",
            10021,
            "The synchronization failed",
        ));
        assert_eq!(run.status(), Status::Remediated);
        let action = &run.actions()[0];
        assert_eq!(
            (action.verb.as_str(), action.target.as_str()),
            ("set-config", "UpstreamServerName")
        );
        assert_eq!(action.detail, format!("wsus-old.example -> {NEW}"));
        assert_eq!(
            run.summary(),
            format!(
                "`wsus-old.example` does not resolve (UpstreamServerName); UpstreamServerName set back to {NEW}, the upstream the policy names"
            )
        );
        assert_eq!(host.wsus().config("UpstreamServerName"), Some(NEW));

        let again = host.run::<UpstreamCheck>(event::schedule(3600));
        assert_eq!(again.status(), Status::Healthy);
        assert_eq!(
            again.summary(),
            format!(
                "{NEW} resolves and answers (HTTP 200); the last sync failed (UssNotFound), the next should not"
            )
        );
    }

    #[test]
    fn approve_mode_plans_the_new_name() {
        let mut host = downstream();
        host.mode(Mode::Approve);
        let run = host.run::<UpstreamCheck>(event::schedule(3600));
        assert_eq!(run.status(), Status::NeedsApproval);
        assert!(!run.actions()[0].applied);
        assert!(run.summary().contains("UpstreamServerName to be set to"));
        assert_eq!(run.planned()[0].function, HostFn::WsusSetConfig);
        assert_eq!(
            host.wsus().config("UpstreamServerName"),
            Some("wsus-old.example")
        );
    }

    #[test]
    fn a_reachable_upstream_is_healthy() {
        let mut host = FakeHost::new();
        host.wsus().upstream(NEW);
        let run = host.run::<UpstreamCheck>(event::schedule(3600));
        assert_eq!(run.status(), Status::Healthy);
        assert_eq!(
            run.summary(),
            format!("{NEW} resolves and answers (HTTP 200)")
        );
        assert!(run.calls.iter().all(|c| !c.function.is_mutating()));

        host.wsus().microsoft_update();
        let run = host.run::<UpstreamCheck>(event::schedule(3600));
        assert_eq!(
            run.summary(),
            "this server synchronizes from Microsoft Update: no upstream to check"
        );
    }

    #[test]
    fn refused_proxy_credentials_are_reported_and_nothing_is_changed() {
        let mut host = downstream();
        host.wsus()
            .upstream(NEW)
            .proxy(ProxySettings {
                enabled: true,
                host: "proxy.example".into(),
                port: 3128,
                user: Some(r"CORP\wsus-svc".into()),
                has_password: true,
            })
            .probe(
                NEW,
                UpstreamProbe {
                    target: NEW.into(),
                    addresses: vec!["192.0.2.20".into()],
                    via_proxy: true,
                    connected: true,
                    http_status: Some(407),
                    problem: Some("the proxy refuses the credentials (HTTP 407)".into()),
                },
            );
        let run = host.run::<UpstreamCheck>(event::schedule(3600));
        assert_eq!(run.status(), Status::Failed);
        assert!(
            run.summary().starts_with(
                r"the proxy refuses the credentials (HTTP 407). The proxy refuses the credentials of CORP\wsus-svc: enter the account's current password"
            ),
            "{}",
            run.summary()
        );
        assert!(run.calls_to(HostFn::WsusSetConfig).is_empty());
    }

    #[test]
    fn without_a_name_to_restore_it_says_what_to_check() {
        let mut host = downstream();
        host.unset("upstream");
        let run = host.run::<UpstreamCheck>(event::schedule(3600));
        assert_eq!(run.status(), Status::Failed);
        assert!(
            run.summary()
                .contains("Check the upstream server's name in the WSUS console")
        );

        // The policy's name is the one configured (other case, port implied).
        host.setting("upstream", "WSUS-OLD.example");
        let run = host.run::<UpstreamCheck>(event::schedule(3600));
        assert_eq!(run.status(), Status::Failed);
        assert!(run.actions().is_empty());
    }

    #[test]
    fn without_the_probe_grant_the_check_is_refused() {
        let mut host = downstream();
        host.grants(
            medic_sdk::testing::Grants::none()
                .operation(wsus::Operation::Read)
                .operation(wsus::Operation::Configure)
                .operation(wsus::Operation::Probe),
        );
        assert!(host.try_run::<UpstreamCheck>(event::manual()).is_ok());
        host.grants(
            medic_sdk::testing::Grants::none()
                .operation(wsus::Operation::Read)
                .operation(wsus::Operation::Configure),
        );
        let refused = host.try_run::<UpstreamCheck>(event::manual()).unwrap_err();
        assert!(
            refused.to_string().contains("not granted: wsus-probe"),
            "{refused}"
        );
    }
}
