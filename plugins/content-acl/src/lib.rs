//! `content-acl`: the WSUS content folder's permissions. The folder that
//! holds `WsusContent` needs Read for `NETWORK SERVICE` and `Users` (WSUS
//! setup does not set it; without it BITS downloads fail), and
//! `WsusContent` needs Full Control for `NETWORK SERVICE`. Repairs only what
//! is missing and reports each change. A repair resumes the downloads that
//! Failed meanwhile (a Failed update stays Failed until resumed), starts a
//! synchronization (resumed downloads wait for the next one), and comes
//! back after `verify_after` seconds to check that they completed.
//!
//! Settings (all optional):
//! - `content_dir`: the folder holding `WsusContent` [default: the server's
//!   `ContentDir`, from `wsus.server-info`].
//! - `readers` [default `["NETWORK SERVICE", "Users"]`]: who needs Read on it.
//! - `owner` [default `NETWORK SERVICE`]: who needs Full Control of
//!   `WsusContent` and everything in it.
//! - `verify_after` [default 60]: seconds before the follow-up run.

use medic_sdk::{
    AccessRight, Capability, Event, EventKind, Outcome, Plugin, PluginInfo, Report,
    SystemEventMatch, TriggerHint, fs, info, settings, wsus,
};

struct ContentAcl;

impl Plugin for ContentAcl {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "content-acl".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Keeps the WSUS content folder readable by NETWORK SERVICE and Users, and WsusContent under NETWORK SERVICE's full control.".into(),
            capabilities: vec![
                Capability::FsRead,
                Capability::FsWrite,
                wsus::Operation::Read.into(),
                wsus::Operation::Updates.into(),
                wsus::Operation::Sync.into(),
            ],
            triggers: vec![
                TriggerHint::File("content_dir".into()),
                TriggerHint::SystemEvent(SystemEventMatch {
                    source: "Windows Server Update Services".into(),
                    id: 364,
                }),
                TriggerHint::SystemEvent(SystemEventMatch {
                    source: "Windows Server Update Services".into(),
                    id: 10012,
                }),
                TriggerHint::Every(3600),
            ],
        }
    }

    fn handle(event: Event) -> Result<Outcome, String> {
        let verify_after: u32 = settings::parse_or("verify_after", 60)?;
        let content_dir = match settings::get("content_dir") {
            Some(dir) => dir,
            None => wsus::server_info()?.content_dir,
        };
        let mut readers = settings::list("readers")?;
        if readers.is_empty() {
            readers = vec!["NETWORK SERVICE".into(), "Users".into()];
        }
        let owner = settings::get("owner").unwrap_or_else(|| "NETWORK SERVICE".into());
        let wsus_content = format!("{}/WsusContent", content_dir.trim_end_matches(['/', '\\']));
        info!("checking {content_dir} after a {} event", event.kind);

        let mut report = Report::new();
        let mut restored = Vec::new();
        for reader in &readers {
            let access = fs::ensure_access(&content_dir, reader, AccessRight::Read, false)
                .map_err(|e| format!("Read for {reader} on {content_dir}: {}", e.describe()))?;
            if !access.changed.is_empty() {
                restored.push(reader.as_str());
            }
            report.record_access(reader, &access);
        }
        let tree = fs::ensure_access(&wsus_content, &owner, AccessRight::FullControl, true)
            .map_err(|e| {
                format!(
                    "Full Control for {owner} on {wsus_content}: {}",
                    e.describe()
                )
            })?;
        report.record_access(&owner, &tree);

        // A follow-up that finds the permissions still right verifies the
        // last repair; one that finds them broken again repairs afresh.
        if event.kind == EventKind::FollowUp && report.is_empty() {
            return Ok(wsus::verify(
                "the content folder's permissions were restored",
                verify_after,
            )?);
        }
        let summary = if report.is_empty() {
            format!(
                "{content_dir}: readable by {}; {owner} has full control of all {} paths in WsusContent",
                readers.join(" and "),
                tree.checked
            )
        } else {
            let mut parts = Vec::new();
            if !restored.is_empty() {
                parts.push(format!(
                    "Read on {content_dir} for {}",
                    restored.join(" and ")
                ));
            }
            if !tree.changed.is_empty() {
                parts.push(format!(
                    "full control for {owner} on {} of {} paths in WsusContent",
                    tree.changed.len(),
                    tree.checked
                ));
            }
            let done = if tree.applied {
                "restored"
            } else {
                "to restore"
            };
            format!("{done}: {}", parts.join("; "))
        };
        let applied = report.actions().iter().any(|a| a.applied);
        if applied {
            wsus::resume_and_follow_up(&mut report, false, verify_after)?;
        }
        Ok(report.finish(&summary))
    }
}

medic_sdk::register_plugin!(ContentAcl);
