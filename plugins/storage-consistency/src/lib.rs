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
