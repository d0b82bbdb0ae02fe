//! The article's check of the upstream server, done the way the server
//! itself reaches it: resolve the name (the proxy's, when the server uses
//! one), connect, and ask for the upstream's self-update file
//! (`/selfupdate/wuident.cab`, which every WSUS server serves), through
//! the proxy when one is configured. It stops at the first step that
//! fails and says which.
//!
//! It runs in the agent's own process, as the agent's account, so it sees
//! the network as the WSUS service does except for one thing: it does not
//! know the proxy password the console stored. A proxy that asks for
//! credentials (407) is reported as that, not as the password's fault.

use crate::wsus::{ProxySettings, UpstreamProbe};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long each step may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The upstream as a downstream server is configured to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamAddress {
    pub host: String,
    pub port: u16,
    pub ssl: bool,
}

/// Check the way from this server to `upstream`.
pub fn check(
    upstream: &UpstreamAddress,
    proxy: &ProxySettings,
    timeout: Duration,
) -> UpstreamProbe {
    let target = format!("{}:{}", upstream.host, upstream.port);
    let mut probe = UpstreamProbe {
        target: target.clone(),
        addresses: Vec::new(),
        via_proxy: proxy.enabled,
        connected: false,
        http_status: None,
        problem: None,
    };
    let (host, port, setting) = if proxy.enabled {
        (proxy.host.as_str(), proxy.port, "the proxy")
    } else {
        (upstream.host.as_str(), upstream.port, "the upstream")
    };
    let addresses: Vec<SocketAddr> = match (host, port).to_socket_addrs() {
        Ok(found) => found.collect(),
        Err(_) => Vec::new(),
    };
    if addresses.is_empty() {
        probe.problem = Some(if proxy.enabled {
            format!("the proxy `{host}` does not resolve (ProxyName)")
        } else {
            format!("the upstream name `{host}` does not resolve (UpstreamServerName)")
        });
        return probe;
    }
    probe.addresses = addresses.iter().map(|a| a.ip().to_string()).collect();
    let mut last_error = None;
    let stream = addresses.iter().find_map(|address| {
        TcpStream::connect_timeout(address, timeout)
            .map_err(|e| last_error = Some(e))
            .ok()
    });
    let Some(mut stream) = stream else {
        probe.problem = Some(format!(
            "nothing answers on {host}:{port} ({}; {setting}'s {})",
            last_error.map_or_else(|| "no address".into(), |e| e.to_string()),
            if proxy.enabled {
                "ProxyServerPort"
            } else {
                "port"
            }
        ));
        return probe;
    };
    probe.connected = true;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let request = match (proxy.enabled, upstream.ssl) {
        // Through a proxy to an SSL upstream: ask for a tunnel.
        (true, true) => format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"),
        (true, false) => format!(
            "GET http://{target}/selfupdate/wuident.cab HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"
        ),
        // Straight to an SSL upstream: the connection is what can be
        // checked without a TLS client.
        (false, true) => return probe,
        (false, false) => format!(
            "GET /selfupdate/wuident.cab HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"
        ),
    };
    let status = stream
        .write_all(request.as_bytes())
        .and_then(|()| read_status(&mut stream));
    let status = match status {
        Ok(status) => status,
        Err(e) => {
            probe.problem = Some(format!(
                "{setting} at {host}:{port} gave no HTTP answer: {e}"
            ));
            return probe;
        }
    };
    probe.http_status = Some(status);
    probe.problem = match status {
        200..=299 => None,
        407 => Some(format!(
            "the proxy {host}:{port} answers 407 Proxy Authentication Required: {}",
            match &proxy.user {
                None =>
                    "no proxy credentials are set in WSUS (Options, Update Source and Proxy Server)"
                        .to_string(),
                Some(user) => format!(
                    "WSUS sends {user}'s stored password, which medic cannot test; if syncs fail with ProxyError, the password may have expired: enter the new one in the WSUS console"
                ),
            }
        )),
        502 | 504 if proxy.enabled => Some(format!(
            "the proxy cannot reach the upstream `{}` ({status})",
            upstream.host
        )),
        _ => Some(format!("{setting} answers HTTP {status}")),
    };
    probe
}

/// The status code of an HTTP response's first line.
fn read_status(stream: &mut TcpStream) -> std::io::Result<u16> {
    let mut line = String::new();
    // At most 8 KiB: a peer cannot feed the probe for ever.
    BufReader::new(std::io::Read::take(stream, 8 * 1024)).read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    parts
        .next()
        .filter(|_| version.starts_with("HTTP/"))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not an HTTP status line: {:?}", line.trim()),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    /// A loopback server answering each connection with `answer`, and
    /// handing back the request it read.
    fn server(answer: &'static str) -> (u16, std::sync::mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (sender, requests) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut request = vec![0u8; 4096];
                let n = stream.read(&mut request).unwrap_or(0);
                let _ = sender.send(String::from_utf8_lossy(&request[..n]).into_owned());
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        (port, requests)
    }

    fn no_proxy() -> ProxySettings {
        ProxySettings {
            enabled: false,
            host: String::new(),
            port: 80,
            user: None,
            has_password: false,
        }
    }

    fn upstream(host: &str, port: u16, ssl: bool) -> UpstreamAddress {
        UpstreamAddress {
            host: host.into(),
            port,
            ssl,
        }
    }

    const STEP: Duration = Duration::from_secs(5);

    #[test]
    fn a_healthy_upstream_answers_its_self_update_file() {
        let (port, requests) = server("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        let probe = check(&upstream("127.0.0.1", port, false), &no_proxy(), STEP);
        assert_eq!(probe.problem, None, "{probe:?}");
        assert_eq!((probe.connected, probe.http_status), (true, Some(200)));
        assert_eq!(probe.addresses, ["127.0.0.1"]);
        assert!(
            requests
                .recv()
                .unwrap()
                .starts_with("GET /selfupdate/wuident.cab HTTP/1.1")
        );
    }

    #[test]
    fn each_step_that_fails_is_named() {
        let probe = check(&upstream("wsus-up.invalid", 8530, false), &no_proxy(), STEP);
        assert!(
            probe
                .problem
                .unwrap()
                .contains("does not resolve (UpstreamServerName)")
        );

        // A port nothing listens on.
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let probe = check(&upstream("127.0.0.1", port, false), &no_proxy(), STEP);
        assert!(!probe.connected);
        assert!(probe.problem.unwrap().contains("nothing answers"));

        let (port, _) = server("HTTP/1.1 503 Service Unavailable\r\n\r\n");
        let probe = check(&upstream("127.0.0.1", port, false), &no_proxy(), STEP);
        assert_eq!(probe.http_status, Some(503));
        assert!(probe.problem.unwrap().contains("HTTP 503"));

        let (port, _) = server("SSH-2.0-OpenSSH\r\n");
        let probe = check(&upstream("127.0.0.1", port, false), &no_proxy(), STEP);
        assert!(probe.problem.unwrap().contains("no HTTP answer"));
    }

    #[test]
    fn through_a_proxy_the_request_names_the_upstream_and_407_is_explained() {
        let (port, requests) = server("HTTP/1.1 407 Proxy Authentication Required\r\n\r\n");
        let proxy = ProxySettings {
            enabled: true,
            host: "127.0.0.1".into(),
            port,
            user: Some("CORP\\svc-wsus".into()),
            has_password: true,
        };
        let probe = check(&upstream("wsus-up.corp.example", 8530, false), &proxy, STEP);
        assert!(probe.via_proxy);
        assert_eq!(probe.http_status, Some(407));
        let problem = probe.problem.unwrap();
        assert!(
            problem.contains("CORP\\svc-wsus") && problem.contains("cannot test"),
            "{problem}"
        );
        assert!(
            requests.recv().unwrap().starts_with(
                "GET http://wsus-up.corp.example:8530/selfupdate/wuident.cab HTTP/1.1"
            )
        );

        let (port, requests) = server("HTTP/1.1 200 Connection established\r\n\r\n");
        let proxy = ProxySettings { port, ..proxy };
        let probe = check(&upstream("wsus-up.corp.example", 8531, true), &proxy, STEP);
        assert_eq!(probe.problem, None);
        assert!(
            requests
                .recv()
                .unwrap()
                .starts_with("CONNECT wsus-up.corp.example:8531 HTTP/1.1")
        );

        let proxy = ProxySettings {
            host: "proxy.invalid".into(),
            ..proxy
        };
        let probe = check(&upstream("wsus-up.corp.example", 8531, true), &proxy, STEP);
        assert!(probe.problem.unwrap().contains("(ProxyName)"));
    }
}
