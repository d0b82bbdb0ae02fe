//! `language-approvals`: after a server's language set shrinks, its
//! approvals for the dropped languages turn inactive there, and its
//! replicas, which synchronize only active approvals, show fewer approved
//! updates than it does. `wsusutil` is local, so this plugin runs on that
//! server (the parent upstream; `server = "upstream"` in a lab policy): it
//! lists the inactive approvals, removes them (`wsusutil
//! removeinactiveapprovals`) and reports the counts before and after.

use medic_sdk::{Event, Outcome, Plugin, PluginInfo, Report, TriggerHint, info, wsus};
use std::collections::BTreeMap;

struct LanguageApprovals;

fn upstream_text(tally: &wsus::ApprovalTally) -> String {
    tally
        .upstream_approved
        .map_or_else(String::new, |n| format!(" (upstream: {n} approved)"))
}

impl Plugin for LanguageApprovals {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "language-approvals".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Removes approvals left inactive by a language change on this server (the upstream of its replicas), with counts before and after.".into(),
            capabilities: vec![wsus::Operation::Read.into(), wsus::Operation::Approvals.into()],
            triggers: vec![
                TriggerHint::Startup,
                TriggerHint::Every(3600),
            ],
        }
    }

    fn handle(event: Event) -> Result<Outcome, String> {
        let before = wsus::approval_counts()?;
        info!(
            "{} active, {} inactive approvals{} ({} event)",
            before.active,
            before.inactive,
            upstream_text(&before),
            event.kind
        );
        let mut report = Report::new();
        if before.inactive == 0 {
            return Ok(report.finish(&format!(
                "{} active approvals, none inactive{}",
                before.active,
                upstream_text(&before)
            )));
        }
        let inactive = wsus::list_inactive_approvals()?;
        let mut by_language: BTreeMap<String, u32> = BTreeMap::new();
        for approval in &inactive {
            let language = if approval.language.is_empty() {
                "neutral".to_string()
            } else {
                approval.language.clone()
            };
            *by_language.entry(language).or_default() += 1;
        }
        let languages = by_language
            .iter()
            .map(|(l, n)| format!("{l}: {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let removed = wsus::remove_inactive_approvals()?;
        let after = wsus::approval_counts()?;
        let applied = after.inactive < before.inactive;
        report.push(
            "remove-inactive-approvals",
            "inactive approvals",
            &format!(
                "{removed} removed ({languages}); active {} -> {}, inactive {} -> {}",
                before.active, after.active, before.inactive, after.inactive
            ),
            applied,
        );
        let summary = format!(
            "{removed} approvals left inactive by dropped languages ({languages}) {}: before {} active + {} inactive, after {} active + {} inactive{}",
            if applied { "removed" } else { "to remove" },
            before.active,
            before.inactive,
            after.active,
            after.inactive,
            upstream_text(&after)
        );
        Ok(report.finish(&summary))
    }
}

medic_sdk::register_plugin!(LanguageApprovals);

#[cfg(test)]
mod tests {
    use super::*;
    use medic_sdk::Status;
    use medic_sdk::testing::{FakeHost, Grants, HostFn, LoadError, Mode, Update, event};

    /// The upstream after German and French were dropped: its approvals for
    /// them are inactive (one update approved for two groups).
    fn upstream_server() -> FakeHost {
        let mut host = FakeHost::new();
        let server = host.wsus().name("wsus-up").languages(&["en"]);
        for n in 1..=5 {
            server.add_update(Update::new(&format!("u{n}"), &format!("Update {n}")));
        }
        server
            .inactive_approval("d1", "Update (German)", "All Computers", "de")
            .inactive_approval("d1", "Update (German)", "Servers", "de")
            .inactive_approval("f1", "Update (French)", "All Computers", "fr")
            .inactive_approval("n1", "Language Pack", "All Computers", "");
        host
    }

    #[test]
    fn inactive_approvals_are_removed_with_counts_before_and_after() {
        let mut host = upstream_server();
        let run = host.run::<LanguageApprovals>(event::startup());
        assert_eq!(run.status(), Status::Remediated);
        let action = &run.actions()[0];
        assert_eq!(action.verb, "remove-inactive-approvals");
        assert_eq!(
            action.detail,
            "4 removed (de: 2, fr: 1, neutral: 1); active 5 -> 5, inactive 3 -> 0"
        );
        assert!(action.applied);
        assert_eq!(
            run.summary(),
            "4 approvals left inactive by dropped languages (de: 2, fr: 1, neutral: 1) removed: before 5 active + 3 inactive, after 5 active + 0 inactive"
        );
        assert!(host.wsus().inactive_approvals().is_empty());

        let again = host.run::<LanguageApprovals>(event::schedule(3600));
        assert_eq!(again.status(), Status::Healthy);
        assert_eq!(again.summary(), "5 active approvals, none inactive");
    }

    #[test]
    fn dry_run_counts_what_it_would_remove_and_removes_nothing() {
        let mut host = upstream_server();
        host.mode(Mode::DryRun);
        let run = host.run::<LanguageApprovals>(event::startup());
        assert_eq!(run.status(), Status::NeedsApproval);
        assert!(!run.actions()[0].applied);
        assert!(
            run.summary()
                .contains("(de: 2, fr: 1, neutral: 1) to remove")
        );
        assert_eq!(
            run.planned()[0].function,
            HostFn::WsusRemoveInactiveApprovals
        );
        assert_eq!(host.wsus().inactive_approvals().len(), 4);
    }

    #[test]
    fn a_downstream_says_what_its_upstream_approved() {
        let mut host = FakeHost::new();
        host.wsus()
            .upstream("wsus-up")
            .upstream_approvals(12, 0)
            .add_update(Update::new("u1", "Update 1"));
        let run = host.run::<LanguageApprovals>(event::startup());
        assert_eq!(run.status(), Status::Healthy);
        assert_eq!(
            run.summary(),
            "1 active approvals, none inactive (upstream: 12 approved)"
        );
    }

    #[test]
    fn without_the_approvals_grant_the_agent_does_not_run_it() {
        let mut host = upstream_server();
        host.grants(Grants::none().operation(wsus::Operation::Read));
        let refused = host
            .try_run::<LanguageApprovals>(event::startup())
            .unwrap_err();
        assert_eq!(
            refused,
            LoadError::MissingGrants {
                plugin: "language-approvals".into(),
                missing: vec!["wsus-approvals".into()],
            }
        );
        assert_eq!(host.wsus().inactive_approvals().len(), 4);
    }

    #[test]
    fn without_a_wsus_server_the_run_fails_as_unsupported() {
        let run = FakeHost::new().run::<LanguageApprovals>(event::startup());
        assert!(
            run.error()
                .starts_with("unsupported: no WSUS server is configured")
        );
    }
}
