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

#[cfg(test)]
mod tests {
    use super::*;
    use medic_sdk::Status;
    use medic_sdk::testing::{Entry, FakeHost, HostFn, Mode, event};

    /// A share whose new folder `reports` (and the file in it) Users cannot
    /// read: the fault. The rest has Read for Users.
    fn share() -> FakeHost {
        let mut host = FakeHost::new();
        host.entry("/srv/share", Entry::dir().allow("Users", AccessRight::Read))
            .entry(
                "/srv/share/old.txt",
                Entry::file("old").allow("Users", AccessRight::Read),
            )
            .dir("/srv/share/reports")
            .file("/srv/share/reports/q3.txt", "new")
            .setting("path", "/srv/share")
            .grant_root("/srv/share");
        host
    }

    fn targets(run: &medic_sdk::testing::Run) -> Vec<&str> {
        run.actions().iter().map(|a| a.target.as_str()).collect()
    }

    #[test]
    fn enforce_grants_read_where_it_is_missing_and_counts_the_repair() {
        let mut host = share();
        let run = host.run::<ShareGuard>(event::file_changed("/srv/share/reports", "created"));
        assert_eq!(run.status(), Status::Remediated);
        assert_eq!(
            targets(&run),
            ["/srv/share/reports", "/srv/share/reports/q3.txt"]
        );
        assert!(
            run.actions()
                .iter()
                .all(|a| a.verb == "grant-access" && a.applied)
        );
        assert_eq!(
            run.summary(),
            "2 of 4 paths under /srv/share lacked read access"
        );
        for path in ["/srv/share/reports", "/srv/share/reports/q3.txt"] {
            assert_eq!(host.right(path, "Users"), Some(AccessRight::Read), "{path}");
        }
        assert_eq!(host.state("repairs"), Some("1"));

        let again = host.run::<ShareGuard>(event::schedule(3600));
        assert_eq!(again.status(), Status::Healthy);
        assert_eq!(
            again.summary(),
            "4 paths checked under /srv/share: access is as it should be"
        );
        assert!(!again.changed_anything());
        assert_eq!(
            host.state("repairs"),
            Some("1"),
            "a healthy run is no repair"
        );
    }

    #[test]
    fn dry_run_plans_the_same_grants_and_changes_nothing() {
        let mut host = share();
        host.mode(Mode::DryRun);
        let run = host.run::<ShareGuard>(event::manual());
        assert_eq!(run.status(), Status::NeedsApproval);
        assert_eq!(
            targets(&run),
            ["/srv/share/reports", "/srv/share/reports/q3.txt"]
        );
        assert!(run.actions().iter().all(|a| !a.applied));
        assert_eq!(run.planned().len(), 1);
        assert_eq!(host.right("/srv/share/reports/q3.txt", "Users"), None);
        assert_eq!(host.state("repairs"), None, "a plan is no repair");
    }

    #[test]
    fn every_principal_gets_the_right_asked_for() {
        let mut host = share();
        host.setting("principals", ["Users", "www-data"])
            .setting("right", "modify")
            .setting("recursive", false);
        let run = host.run::<ShareGuard>(event::manual());
        assert_eq!(run.status(), Status::Remediated);
        let details: Vec<&str> = run.actions().iter().map(|a| a.detail.as_str()).collect();
        assert_eq!(
            details,
            [
                "Users: Users: read -> Users: modify",
                "www-data: www-data: no entry -> www-data: modify"
            ]
        );
        assert_eq!(run.calls_to(HostFn::FsEnsureAccess).len(), 2);
        assert_eq!(
            host.right("/srv/share", "www-data"),
            Some(AccessRight::Modify)
        );
        assert_eq!(
            host.right("/srv/share/reports", "www-data"),
            None,
            "not recursive"
        );
    }

    #[test]
    fn a_path_outside_the_granted_root_fails_the_run_with_the_refusal() {
        let mut host = share();
        host.dir("/etc").setting("path", "/etc");
        let run = host.run::<ShareGuard>(event::manual());
        assert_eq!(run.status(), Status::Failed);
        assert_eq!(
            run.summary(),
            "Users on /etc: denied: `/etc` is outside the roots granted to fs-write (/srv/share)"
        );
        assert_eq!(run.denied().len(), 1);
        assert!(run.logged("cannot ensure access for Users on /etc"));
    }

    #[test]
    fn bad_settings_end_the_run_with_an_error() {
        let mut host = share();
        host.setting("right", "write");
        let run = host.run::<ShareGuard>(event::manual());
        assert_eq!(
            run.error(),
            "setting `right` = \"write\": expected read, modify or full-control"
        );
        host.unset("right").unset("path");
        let run = host.run::<ShareGuard>(event::manual());
        assert!(run.error().starts_with("setting `path` is required"));
        assert!(run.calls_to(HostFn::FsEnsureAccess).is_empty());
    }
}
