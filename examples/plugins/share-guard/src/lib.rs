//! `share-guard`: keeps a shared folder tree accessible to the principals
//! that need it. An example of a third-party plugin: it uses only
//! `medic-sdk`.
//!
//! Settings:
//! - `path` (required): the folder to guard.
//! - `principals` (default `["Users"]`): who needs access.
//! - `right` (default `read`): `read`, `modify` or `full-control`.
//! - `recursive` (default `true`): include everything under `path`.
//!
//! It keeps a count of the runs that repaired something in its state.

use medic_sdk::{
    AccessRight, Capability, Event, Outcome, Plugin, PluginInfo, Report, TriggerHint, fs, info,
    settings, state, warn,
};

struct ShareGuard;

fn parse_right(raw: &str) -> Result<AccessRight, String> {
    match raw {
        "read" => Ok(AccessRight::Read),
        "modify" => Ok(AccessRight::Modify),
        "full-control" => Ok(AccessRight::FullControl),
        other => Err(format!(
            "setting `right` = {other:?}: expected read, modify or full-control"
        )),
    }
}

impl Plugin for ShareGuard {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "share-guard".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Keeps a shared folder tree accessible to the principals that need it."
                .into(),
            capabilities: vec![Capability::FsRead, Capability::FsWrite],
            triggers: vec![
                TriggerHint::File("path".into()),
                TriggerHint::Every(3600),
                TriggerHint::Manual,
            ],
        }
    }

    fn handle(event: Event) -> Result<Outcome, String> {
        let path: String = settings::required("path")?;
        let mut principals = settings::list("principals")?;
        if principals.is_empty() {
            principals.push("Users".into());
        }
        let right_name = settings::get("right").unwrap_or_else(|| "read".into());
        let right = parse_right(&right_name)?;
        let recursive = settings::parse_or("recursive", true)?;
        info!(
            "checking {path} for {principals:?} ({right_name}) after a {} event",
            event.kind
        );

        let mut report = Report::new();
        let mut checked = 0;
        for principal in &principals {
            match fs::ensure_access(&path, principal, right, recursive) {
                Ok(access) => {
                    checked = checked.max(access.checked);
                    report.record_access(principal, &access);
                }
                Err(e) => {
                    warn!(
                        "cannot ensure access for {principal} on {path}: {}",
                        e.describe()
                    );
                    return Ok(report.fail(&format!("{principal} on {path}: {}", e.describe())));
                }
            }
        }

        let changed = report.actions().len();
        if changed > 0 && report.actions().iter().all(|a| a.applied) {
            let repairs = state::get_parsed::<u64>("repairs").unwrap_or(0) + 1;
            state::set("repairs", &repairs.to_string())?;
        }
        let summary = if changed == 0 {
            format!("{checked} paths checked under {path}: access is as it should be")
        } else {
            format!("{changed} of {checked} paths under {path} lacked {right_name} access")
        };
        Ok(report.finish(&summary))
    }
}

medic_sdk::register_plugin!(ShareGuard);
