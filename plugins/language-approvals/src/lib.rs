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
