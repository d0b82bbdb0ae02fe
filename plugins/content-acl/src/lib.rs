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

#[cfg(test)]
mod tests {
    use super::*;
    use medic_sdk::Status;
    use medic_sdk::testing::{Entry, FakeHost, HostFn, Mode, Update, event};
    use medic_sdk::wsus::UpdateState;

    const ROOT: &str = r"D:\WSUS";
    const CAB: &str = r"D:\WSUS\WsusContent\A1\1.cab";

    /// The fault: Users cannot read the content folder, and a file in
    /// WsusContent lacks NETWORK SERVICE's full control; a download Failed.
    fn server() -> FakeHost {
        let mut host = FakeHost::new();
        let full = |entry: Entry| entry.allow("NETWORK SERVICE", AccessRight::FullControl);
        host.entry(
            ROOT,
            Entry::dir().allow("NETWORK SERVICE", AccessRight::Read),
        )
        .entry(r"D:\WSUS\WsusContent", full(Entry::dir()))
        .entry(r"D:\WSUS\WsusContent\A1", full(Entry::dir()))
        .entry(
            CAB,
            Entry::file("cab").allow("NETWORK SERVICE", AccessRight::Read),
        )
        .entry(r"D:\WSUS\WsusContent\A1\link", Entry::symlink());
        host.wsus().add_update(
            Update::new("u1", "Security Update (KB5034127)").state(UpdateState::Failed),
        );
        host
    }

    fn changes(run: &medic_sdk::testing::Run) -> Vec<(&str, &str)> {
        run.actions()
            .iter()
            .filter(|a| a.verb == "grant-access")
            .map(|a| (a.target.as_str(), a.detail.as_str()))
            .collect()
    }

    #[test]
    fn missing_rights_are_restored_and_the_downloads_verified() {
        let mut host = server();
        let run = host.run::<ContentAcl>(event::schedule(3600));
        assert_eq!(run.status(), Status::Remediated);
        assert_eq!(
            changes(&run),
            [
                (ROOT, "Users: Users: no entry -> Users: read"),
                (
                    CAB,
                    "NETWORK SERVICE: NETWORK SERVICE: read -> NETWORK SERVICE: full-control"
                ),
            ]
        );
        assert_eq!(
            run.summary(),
            r"restored: Read on D:\WSUS for Users; full control for NETWORK SERVICE on 1 of 3 paths in WsusContent"
        );
        assert_eq!(host.right(ROOT, "Users"), Some(AccessRight::Read));
        assert_eq!(
            host.right(CAB, "NETWORK SERVICE"),
            Some(AccessRight::FullControl)
        );
        // Resumed, and a sync started for them: resumed downloads wait for one.
        assert_eq!(host.update("u1").state, UpdateState::NotReady);
        assert_eq!(run.calls_to(HostFn::WsusStartSync).len(), 1);

        let verified = host.run::<ContentAcl>(run.follow_up_event().unwrap());
        assert_eq!(verified.status(), Status::Healthy);
        assert_eq!(
            verified.summary(),
            "verified: the content folder's permissions were restored; no approved download is Failed; the sync succeeded"
        );
        assert_eq!(host.update("u1").state, UpdateState::Ready);
    }

    #[test]
    fn dry_run_lists_what_would_be_restored_and_changes_nothing() {
        let mut host = server();
        host.mode(Mode::Approve);
        let run = host.run::<ContentAcl>(event::schedule(3600));
        assert_eq!(run.status(), Status::NeedsApproval);
        assert_eq!(changes(&run).len(), 2);
        assert!(run.actions().iter().all(|a| !a.applied));
        assert!(run.summary().starts_with("to restore: "));
        assert_eq!(
            run.planned().len(),
            3,
            "one call per reader, one for the tree"
        );
        assert_eq!(host.right(ROOT, "Users"), None);
        assert_eq!(host.update("u1").state, UpdateState::Failed, "not resumed");
        assert!(run.calls_to(HostFn::WsusStartSync).is_empty());
    }

    #[test]
    fn right_permissions_are_left_alone() {
        let mut host = server();
        host.allow(ROOT, "Users", AccessRight::Read).allow(
            CAB,
            "NETWORK SERVICE",
            AccessRight::FullControl,
        );
        let run = host.run::<ContentAcl>(event::file_changed(ROOT, "attributes"));
        assert_eq!(run.status(), Status::Healthy);
        assert_eq!(
            run.summary(),
            r"D:\WSUS: readable by NETWORK SERVICE and Users; NETWORK SERVICE has full control of all 3 paths in WsusContent"
        );
        assert!(!run.changed_anything());
        assert_eq!(
            host.update("u1").state,
            UpdateState::Failed,
            "not its business"
        );
    }

    #[test]
    fn a_follow_up_finding_the_permissions_broken_again_repairs_afresh() {
        let mut host = server();
        let run = host.run::<ContentAcl>(event::schedule(3600));
        host.revoke(ROOT, "Users", false);
        let again = host.run::<ContentAcl>(run.follow_up_event().unwrap());
        assert_eq!(again.status(), Status::Remediated);
        assert_eq!(
            changes(&again),
            [(ROOT, "Users: Users: no entry -> Users: read")]
        );
        assert!(again.outcome().follow_up.is_some());
    }

    #[test]
    fn the_settings_name_the_folder_and_who_needs_what() {
        let mut host = FakeHost::new();
        host.dir("/srv/wsus/WsusContent/A1")
            .setting("content_dir", "/srv/wsus/")
            .setting("readers", ["www-data"])
            .setting("owner", "wsus");
        host.wsus();
        let run = host.run::<ContentAcl>(event::manual());
        assert_eq!(run.status(), Status::Remediated);
        assert_eq!(host.right("/srv/wsus", "www-data"), Some(AccessRight::Read));
        assert_eq!(
            host.right("/srv/wsus/WsusContent/A1", "wsus"),
            Some(AccessRight::FullControl)
        );
        assert!(run.calls_to(HostFn::WsusServerInfo).is_empty());
        // Nothing was Failed: no sync; the follow-up checks the downloads.
        assert!(run.calls_to(HostFn::WsusStartSync).is_empty());
        assert!(run.outcome().follow_up.is_some());
    }

    #[test]
    fn a_folder_outside_the_granted_roots_ends_the_run_with_the_refusal() {
        let mut host = server();
        host.grant_root(r"D:\WSUS\WsusContent");
        let run = host.run::<ContentAcl>(event::schedule(3600));
        assert_eq!(
            run.error(),
            r"Read for NETWORK SERVICE on D:\WSUS: denied: `D:\WSUS` is outside the roots granted to fs-write (D:\WSUS\WsusContent)"
        );
        assert_eq!(host.right(CAB, "NETWORK SERVICE"), Some(AccessRight::Read));

        let mut host = server();
        host.setting("content_dir", r"E:\WSUS");
        let missing = host.run::<ContentAcl>(event::schedule(3600));
        assert!(
            missing.error().contains(r"not-found: E:\WSUS"),
            "{}",
            missing.error()
        );
    }
}
