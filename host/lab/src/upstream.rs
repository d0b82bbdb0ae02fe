//! The road from the downstream to its upstream: the proxy settings
//! (`IUpdateServerConfiguration`'s `UseProxy`, `ProxyName`,
//! `ProxyServerPort`, `ProxyUserName`, `ProxyUserDomain`,
//! `HasProxyPassword`), credentials that can expire on the proxy's side,
//! the name the downstream resolves, and what the downstream knows of its
//! upstream (storage option, languages, approvals). The lab's network
//! knows two names: the upstream's and the proxy's ([`PROXY_HOST`]).

use super::{Lab, LabError, LabResult, Server};
use medic_backends::wsus::{ProxySettings, StorageMode, UpstreamFacts, UpstreamProbe};

/// The one proxy the lab's network has.
pub const PROXY_HOST: &str = "proxy01.lab.example";
/// The lab's addresses for the names it resolves (documentation ranges).
const UPSTREAM_ADDRESS: &str = "192.0.2.10";
const PROXY_ADDRESS: &str = "192.0.2.80";
/// The port the proxy listens on.
pub const PROXY_PORT: u16 = 8080;

/// Lab fact: the proxy no longer accepts the stored password (it expired
/// or was changed on the proxy's side), so it answers 407.
pub const PROXY_PASSWORD_EXPIRED: &str = "proxy_password_expired";

/// The configuration names of the proxy settings, with their defaults.
pub const PROXY_CONFIG: [(&str, &str); 6] = [
    ("UseProxy", "0"),
    ("ProxyName", ""),
    ("ProxyServerPort", "80"),
    ("ProxyUserName", ""),
    ("ProxyUserDomain", ""),
    ("HasProxyPassword", "0"),
];

/// The address the lab's resolver gives `host`, if any.
fn resolve(host: &str) -> Option<&'static str> {
    if host.eq_ignore_ascii_case(Server::Upstream.host_name()) {
        Some(UPSTREAM_ADDRESS)
    } else if host.eq_ignore_ascii_case(PROXY_HOST) {
        Some(PROXY_ADDRESS)
    } else {
        None
    }
}

impl Lab {
    /// The downstream's proxy settings.
    pub fn proxy(&self) -> LabResult<ProxySettings> {
        let ds = Server::Downstream;
        let value =
            |name: &str| -> LabResult<String> { Ok(self.config(ds, name)?.unwrap_or_default()) };
        let user_name = value("ProxyUserName")?;
        let domain = value("ProxyUserDomain")?;
        Ok(ProxySettings {
            enabled: value("UseProxy")? == "1",
            host: value("ProxyName")?,
            port: value("ProxyServerPort")?.parse().unwrap_or(80),
            user: (!user_name.is_empty()).then(|| {
                if domain.is_empty() {
                    user_name.clone()
                } else {
                    format!("{domain}\\{user_name}")
                }
            }),
            has_password: value("HasProxyPassword")? == "1",
        })
    }

    /// Why the proxy stops a sync, if it does: the `ProxyError` reason.
    pub(crate) fn proxy_refusal(&self) -> LabResult<Option<String>> {
        let probe = self.check_upstream()?;
        Ok(if probe.via_proxy { probe.problem } else { None })
    }

    /// Resolve the configured upstream and request its sync web service,
    /// through the proxy when one is configured; the first step that fails
    /// ends the check.
    pub fn check_upstream(&self) -> LabResult<UpstreamProbe> {
        let ds = Server::Downstream;
        let configured = self
            .config(ds, "UpstreamServerName")?
            .filter(|name| !name.is_empty())
            .ok_or_else(|| {
                LabError::Conflict(
                    "this server synchronizes from Microsoft Update: it has no upstream to check"
                        .into(),
                )
            })?;
        let host = configured.split(':').next().unwrap_or_default().to_string();
        let target = if configured.contains(':') {
            configured.clone()
        } else {
            format!("{configured}:8531")
        };
        let proxy = self.proxy()?;
        let mut probe = UpstreamProbe {
            target,
            addresses: Vec::new(),
            via_proxy: proxy.enabled,
            connected: false,
            http_status: None,
            problem: None,
        };
        if proxy.enabled {
            // The proxy resolves the upstream; the server resolves the proxy.
            let Some(address) = resolve(&proxy.host) else {
                probe.problem = Some(format!(
                    "the proxy `{}` does not resolve (ProxyName)",
                    proxy.host
                ));
                return Ok(probe);
            };
            if proxy.port != PROXY_PORT {
                probe.problem = Some(format!(
                    "no proxy answers on {}:{} (connection refused; ProxyServerPort)",
                    proxy.host, proxy.port
                ));
                return Ok(probe);
            }
            probe.addresses.push(address.to_string());
            probe.connected = true;
            let expired = self.fact(PROXY_PASSWORD_EXPIRED)?.as_deref() == Some("1");
            if proxy.user.is_none() || !proxy.has_password || expired {
                probe.http_status = Some(407);
                probe.problem = Some(format!(
                    "the proxy {}:{} answers 407 Proxy Authentication Required: {}",
                    proxy.host,
                    proxy.port,
                    match &proxy.user {
                        None => "no credentials are set".to_string(),
                        Some(user) if !proxy.has_password => format!("{user} has no password set"),
                        Some(user) => format!(
                            "the password stored for {user} is refused (expired or changed on the proxy)"
                        ),
                    }
                ));
                return Ok(probe);
            }
            if resolve(&host).is_none() {
                probe.http_status = Some(502);
                probe.problem = Some(format!(
                    "the proxy cannot resolve the upstream `{host}` (502 Bad Gateway)"
                ));
                return Ok(probe);
            }
            probe.http_status = Some(200);
            return Ok(probe);
        }
        let Some(address) = resolve(&host) else {
            probe.problem = Some(format!(
                "the upstream name `{host}` does not resolve (UpstreamServerName)"
            ));
            return Ok(probe);
        };
        probe.addresses.push(address.to_string());
        probe.connected = true;
        probe.http_status = Some(200);
        Ok(probe)
    }

    /// Where `server` keeps update files (`HostOnMu`).
    pub fn storage(&self, server: Server) -> LabResult<StorageMode> {
        Ok(
            if self.config(server, "HostOnMu")?.as_deref() == Some("1") {
                StorageMode::MicrosoftUpdate
            } else {
                StorageMode::LocalContent
            },
        )
    }

    /// The upstream's facts, read through the connection a sync uses: none
    /// without an upstream, an error when it cannot be reached.
    pub fn upstream_view(&self) -> LabResult<Option<UpstreamFacts>> {
        let ds = Server::Downstream;
        let Some(name) = self
            .config(ds, "UpstreamServerName")?
            .filter(|name| !name.is_empty())
        else {
            return Ok(None);
        };
        let probe = self.check_upstream()?;
        if let Some(problem) = probe.problem {
            return Err(LabError::Unreachable(problem));
        }
        let up = Server::Upstream;
        let tally = self.approval_tally(up)?;
        Ok(Some(UpstreamFacts {
            name: if name.contains(':') {
                name
            } else {
                probe.target
            },
            storage: self.storage(up)?,
            languages: self.enabled_languages(up)?,
            approved: tally.active,
            inactive_approvals: tally.inactive,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SyncMode;

    fn configure(lab: &Lab, values: &[(&str, &str)]) {
        for (name, value) in values {
            lab.set_config(Server::Downstream, name, value, true)
                .unwrap();
        }
    }

    #[test]
    fn a_direct_upstream_resolves_and_answers() {
        let (_dir, lab) = crate::small_lab(SyncMode::Replica);
        let probe = lab.check_upstream().unwrap();
        assert_eq!(probe.problem, None, "{probe:?}");
        assert_eq!(probe.http_status, Some(200));
        assert!(!probe.via_proxy);
        configure(&lab, &[("UpstreamServerName", "wsus-up01.lab.exmaple")]);
        let probe = lab.check_upstream().unwrap();
        assert!(probe.addresses.is_empty());
        assert!(probe.problem.unwrap().contains("does not resolve"));
    }

    #[test]
    fn a_proxy_needs_credentials_that_it_still_accepts() {
        let (_dir, lab) = crate::small_lab(SyncMode::Replica);
        configure(
            &lab,
            &[
                ("UseProxy", "1"),
                ("ProxyName", PROXY_HOST),
                ("ProxyServerPort", "8080"),
            ],
        );
        let probe = lab.check_upstream().unwrap();
        assert_eq!(probe.http_status, Some(407), "{probe:?}");
        assert!(probe.problem.unwrap().contains("no credentials"));
        configure(
            &lab,
            &[
                ("ProxyUserName", "svc-wsus"),
                ("ProxyUserDomain", "LAB"),
                ("HasProxyPassword", "1"),
            ],
        );
        let probe = lab.check_upstream().unwrap();
        assert_eq!((probe.http_status, probe.problem), (Some(200), None));
        assert_eq!(lab.proxy().unwrap().user.as_deref(), Some("LAB\\svc-wsus"));
        lab.set_fact(PROXY_PASSWORD_EXPIRED, "1").unwrap();
        let probe = lab.check_upstream().unwrap();
        assert_eq!(probe.http_status, Some(407));
        assert!(probe.problem.unwrap().contains("LAB\\svc-wsus"));
        let record = lab.sync().unwrap();
        assert_eq!(record.error.as_deref(), Some("ProxyError"), "{record:?}");
        assert!(
            lab.upstream_view().is_err(),
            "unreachable through the proxy"
        );
    }
}
