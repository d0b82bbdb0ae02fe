//! `storage-consistency`: "the entire hierarchy must use the same update
//! storage option" (the article). A downstream that stores update files
//! locally under an upstream that keeps them on Microsoft Update asks for
//! files the upstream does not have (364, HTTP 404); the other way round,
//! its clients go to Microsoft Update. This plugin compares the two
//! servers' options and, when they differ, sets this server's to the
//! upstream's, resumes the downloads that failed meanwhile, starts a
//! synchronization (resumed downloads wait for the next one) and comes
//! back to verify. Which server should change is the administrator's call: the
//! example policy runs it in approve mode, and its report names the other
//! way (change the upstream's option).
//!
//! Settings (all optional):
//! - `verify_after` [default 60]: seconds before the follow-up run.

use medic_sdk::wsus::StorageMode;
use medic_sdk::{
    Event, EventKind, Outcome, Plugin, PluginInfo, Report, SystemEventMatch, TriggerHint, info,
    settings, wsus,
};

/// The server setting that keeps update files on Microsoft Update.
const SETTING: &str = "HostOnMu";

struct StorageConsistency;

fn name(mode: StorageMode) -> &'static str {
    match mode {
        StorageMode::LocalContent => "stored locally",
        StorageMode::MicrosoftUpdate => "kept on Microsoft Update",
    }
}

impl Plugin for StorageConsistency {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "storage-consistency".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Keeps this server's update storage option the same as its upstream's, and verifies the downloads after.".into(),
            capabilities: vec![
                wsus::Operation::Read.into(),
                wsus::Operation::Configure.into(),
                wsus::Operation::Updates.into(),
                wsus::Operation::Sync.into(),
            ],
            triggers: vec![
                TriggerHint::SystemEvent(SystemEventMatch {
                    source: "Windows Server Update Services".into(),
                    id: 364,
                }),
                TriggerHint::Every(3600),
            ],
        }
    }

    fn handle(event: Event) -> Result<Outcome, String> {
        let verify_after: u32 = settings::parse_or("verify_after", 60)?;
        let facts = wsus::server_info()?;
        let Some(upstream) = wsus::upstream_info()? else {
            return Ok(Report::new().finish(
                "this server synchronizes from Microsoft Update: no hierarchy to compare",
            ));
        };
        info!(
            "files {} here, {} on {} ({} event)",
            name(facts.storage),
            name(upstream.storage),
            upstream.name,
            event.kind
        );
        if facts.storage == upstream.storage {
            if event.kind == EventKind::FollowUp {
                return Ok(wsus::verify(
                    &format!("update files are {} on both servers", name(facts.storage)),
                    verify_after,
                )?);
            }
            return Ok(Report::new().finish(&format!(
                "update files are {} here and on {}",
                name(facts.storage),
                upstream.name
            )));
        }
        let mut report = Report::new();
        let value = match upstream.storage {
            StorageMode::MicrosoftUpdate => "1",
            StorageMode::LocalContent => "0",
        };
        let previous = wsus::set_config(SETTING, value)?;
        let applied = wsus::get_config(SETTING)?.as_deref() == Some(value);
        report.push(
            "set-config",
            SETTING,
            &format!("{} -> {value}", previous.as_deref().unwrap_or("unset")),
            applied,
        );
        if applied {
            wsus::resume_and_follow_up(&mut report, false, verify_after)?;
        }
        Ok(report.finish(&format!(
            "update files were {} here but {} on {}: this server's option {} the upstream's (or change the upstream's instead: the whole hierarchy must use one)",
            name(facts.storage),
            name(upstream.storage),
            upstream.name,
            if applied { "now matches" } else { "to be set to match" }
        )))
    }
}

medic_sdk::register_plugin!(StorageConsistency);

#[cfg(test)]
mod tests {
    use super::*;
    use medic_sdk::Status;
    use medic_sdk::testing::{FakeHost, HostFn, Mode, Update, event};
    use medic_sdk::wsus::{UpdateState, UpstreamProbe};

    /// The fault: files stored locally here, on Microsoft Update upstream;
    /// downloads fail (364, HTTP 404).
    fn downstream() -> FakeHost {
        let mut host = FakeHost::new();
        host.wsus()
            .upstream("wsus-up.example")
            .storage(StorageMode::LocalContent)
            .upstream_storage(StorageMode::MicrosoftUpdate)
            .add_update(Update::new("u1", "Security Update").state(UpdateState::Failed));
        host
    }

    #[test]
    fn this_server_s_option_is_set_to_the_upstream_s_and_verified() {
        let mut host = downstream();
        let run = host.run::<StorageConsistency>(event::schedule(3600));
        assert_eq!(run.status(), Status::Remediated);
        let steps: Vec<(&str, &str)> = run
            .actions()
            .iter()
            .map(|a| (a.verb.as_str(), a.target.as_str()))
            .collect();
        assert_eq!(
            steps,
            [
                ("set-config", SETTING),
                ("resume-download", "u1"),
                ("start-sync", "upstream")
            ]
        );
        assert_eq!(run.actions()[0].detail, "0 -> 1");
        assert!(
            run.summary()
                .contains("this server's option now matches the upstream's")
        );
        assert!(run.summary().contains("or change the upstream's instead"));
        assert_eq!(host.wsus().config(SETTING), Some("1"));

        let verified = host.run::<StorageConsistency>(run.follow_up_event().unwrap());
        assert_eq!(verified.status(), Status::Healthy);
        assert_eq!(
            verified.summary(),
            "verified: update files are kept on Microsoft Update on both servers; no approved download is Failed; the sync succeeded"
        );
    }

    #[test]
    fn approve_mode_plans_the_change_only() {
        let mut host = downstream();
        host.mode(Mode::Approve);
        let run = host.run::<StorageConsistency>(event::schedule(3600));
        assert_eq!(run.status(), Status::NeedsApproval);
        assert_eq!(run.actions().len(), 1);
        assert!(!run.actions()[0].applied);
        assert!(run.summary().contains("to be set to match"));
        assert_eq!(host.wsus().config(SETTING), Some("0"));
        assert_eq!(host.update("u1").state, UpdateState::Failed);
        assert!(run.calls_to(HostFn::WsusStartSync).is_empty());
    }

    #[test]
    fn the_same_option_on_both_servers_is_healthy() {
        let mut host = downstream();
        host.wsus().upstream_storage(StorageMode::LocalContent);
        let run = host.run::<StorageConsistency>(event::schedule(3600));
        assert_eq!(run.status(), Status::Healthy);
        assert_eq!(
            run.summary(),
            "update files are stored locally here and on wsus-up.example:8531"
        );
        assert!(run.calls.iter().all(|c| !c.function.is_mutating()));

        host.wsus().microsoft_update();
        let run = host.run::<StorageConsistency>(event::schedule(3600));
        assert_eq!(run.status(), Status::Healthy);
        assert!(
            run.summary()
                .starts_with("this server synchronizes from Microsoft Update")
        );
    }

    #[test]
    fn an_upstream_that_cannot_be_reached_ends_the_run_with_the_error() {
        let mut host = downstream();
        host.wsus().probe(
            "wsus-up.example:8531",
            UpstreamProbe {
                target: "wsus-up.example:8531".into(),
                addresses: vec!["192.0.2.10".into()],
                via_proxy: false,
                connected: false,
                http_status: None,
                problem: Some("no connection to wsus-up.example:8531".into()),
            },
        );
        let run = host.run::<StorageConsistency>(event::schedule(3600));
        assert_eq!(
            run.error(),
            "failed: the upstream cannot be reached: no connection to wsus-up.example:8531"
        );
        assert_eq!(host.wsus().config(SETTING), Some("0"));
    }
}
