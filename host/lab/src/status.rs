//! `medic lab status`: both servers at a glance (services, last sync,
//! updates by state, approvals, languages, the settings that matter) and
//! the downstream's content permissions.

use super::content::ContentAccess;
use super::model::{SERVICES, ServiceState, StartupType, SyncRecord, SyncResult};
use super::server::ApprovalTally;
use super::{Lab, LabResult, Server};
use serde::Serialize;
use std::fmt::Write as _;

/// One server's state.
#[derive(Debug, Clone, Serialize)]
pub struct ServerStatus {
    pub server: Server,
    pub name: String,
    pub role: String,
    pub services: Vec<(String, ServiceState, StartupType)>,
    pub last_sync: Option<SyncRecord>,
    /// Updates by state (declined ones counted apart).
    pub updates: Vec<(String, u64)>,
    pub declined: u64,
    pub approvals: ApprovalTally,
    pub languages: Vec<String>,
    pub bits_foreground: Option<String>,
}

/// The whole lab.
#[derive(Debug, Clone, Serialize)]
pub struct LabStatus {
    pub root: String,
    pub servers: Vec<ServerStatus>,
    pub content: ContentAccess,
    pub proxy_strips_range: bool,
}

impl Lab {
    pub fn status(&self) -> LabResult<LabStatus> {
        self.settle_sync()?;
        let mut servers = Vec::new();
        for server in Server::ALL {
            let mut services = Vec::new();
            for (name, _) in SERVICES {
                let row = self.service(server, name)?;
                services.push((name.to_string(), row.state, row.startup));
            }
            let (counts, declined) = self.state_counts(server)?;
            let role = match server {
                Server::Upstream => "upstream, syncs from Microsoft Update".to_string(),
                Server::Downstream => format!(
                    "downstream, {} of {}",
                    self.mode().name(),
                    Server::Upstream.host_name()
                ),
            };
            servers.push(ServerStatus {
                server,
                name: server.host_name().to_string(),
                role,
                services,
                last_sync: self.sync_history(server, 1)?.into_iter().next(),
                updates: counts
                    .into_iter()
                    .map(|(s, n)| (s.name().to_string(), n))
                    .collect(),
                declined,
                approvals: self.approval_tally(server)?,
                languages: self.enabled_languages(server)?,
                bits_foreground: self.config(server, "BitsDownloadPriorityForeground")?,
            });
        }
        Ok(LabStatus {
            root: self.root().display().to_string(),
            servers,
            content: self.content_access()?,
            proxy_strips_range: self.fact("proxy_strips_range")?.as_deref() == Some("1"),
        })
    }
}

fn sync_text(record: &Option<SyncRecord>) -> String {
    match record {
        None => "never".into(),
        Some(r) => {
            let when = super::logs::log_time(r.finished_ms);
            match r.result {
                SyncResult::Succeeded => format!("{when} UTC, succeeded"),
                SyncResult::Canceled => format!("{when} UTC, canceled"),
                SyncResult::Failed => format!(
                    "{when} UTC, FAILED: {}",
                    r.reason.as_deref().unwrap_or("no reason given")
                ),
            }
        }
    }
}

impl LabStatus {
    /// For a terminal.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "lab {}", self.root);
        for s in &self.servers {
            let _ = writeln!(out, "\n{} ({})", s.name, s.role);
            let services: Vec<String> = s
                .services
                .iter()
                .map(|(n, state, startup)| format!("{n} {state:?}/{startup:?}"))
                .collect();
            let _ = writeln!(out, "  services   {}", services.join(", "));
            let _ = writeln!(out, "  last sync  {}", sync_text(&s.last_sync));
            let updates: Vec<String> = s.updates.iter().map(|(k, n)| format!("{n} {k}")).collect();
            let _ = writeln!(
                out,
                "  updates    {}; {} declined",
                updates.join(", "),
                s.declined
            );
            let _ = writeln!(
                out,
                "  approvals  {} active, {} inactive",
                s.approvals.active, s.approvals.inactive
            );
            let _ = writeln!(out, "  languages  {}", s.languages.join(", "));
            let _ = writeln!(
                out,
                "  BitsDownloadPriorityForeground = {}",
                s.bits_foreground.as_deref().unwrap_or("(unset)")
            );
        }
        let c = &self.content;
        let _ = writeln!(out, "\ncontent permissions (downstream)");
        let _ = writeln!(
            out,
            "  content root readable by  {}",
            if c.root_readers.is_empty() {
                "NOBODY (NETWORK SERVICE and Users lack Read)".to_string()
            } else {
                c.root_readers.join(", ")
            }
        );
        let _ = writeln!(
            out,
            "  WsusContent               NETWORK SERVICE {}; {} of {} paths lack it",
            if c.wsus_content_full_control {
                "has full control"
            } else {
                "LACKS full control"
            },
            c.lacking,
            c.checked
        );
        if self.proxy_strips_range {
            let _ = writeln!(
                out,
                "\nnetwork: a proxy between the servers strips the HTTP Range header"
            );
        }
        out
    }
}
