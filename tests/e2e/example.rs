//! The example third-party plugin, end to end through the library: it
//! repairs a real folder tree's ACLs, plans without changing anything in
//! dry-run mode, keeps its state, and does nothing the second time.

use crate::support::{Run, load};
use medic_agent::audit::Store;
use medic_agent::audit::state::StateStore;
use medic_backends::FileSystem;
use medic_backends::local_fs::LocalFileSystem;
use medic_sandbox::Mode;
use medic_sandbox::RunResult;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A share only its owner can read: two folders, two files.
fn locked_share(root: &Path) {
    std::fs::create_dir_all(root.join("reports")).unwrap();
    std::fs::write(root.join("reports/q3.txt"), "figures").unwrap();
    std::fs::write(root.join("readme.txt"), "hello").unwrap();
    for (path, mode) in [
        ("", 0o700),
        ("reports", 0o700),
        ("reports/q3.txt", 0o600),
        ("readme.txt", 0o600),
    ] {
        std::fs::set_permissions(root.join(path), std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn guard(share: &Path) -> Run {
    Run::default()
        .grant(&format!("fs-write={}", share.display()))
        .setting("path", &share.display().to_string())
        .setting_list("principals", &["Users"])
        .principal("Users=user:nobody")
}

#[test]
fn share_guard_plans_then_repairs_then_finds_nothing_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    locked_share(&share);
    let store = Store::open(&dir.path().join("state")).unwrap();
    let plugin = load("share-guard");

    // Dry run: the plan lists all four paths; nothing on disk changes.
    let mut run = guard(&share).mode(Mode::DryRun);
    run.state = Some(StateStore::new(store.clone()));
    let plan = run.on(&plugin);
    let outcome = plan.outcome().expect("dry run completes");
    assert_eq!(outcome.status.as_str(), "needs-approval");
    assert_eq!(outcome.actions.len(), 4);
    assert!(outcome.actions.iter().all(|a| !a.applied));
    assert_eq!(plan.calls.len(), 1);
    assert!(plan.calls[0].mutating && !plan.calls[0].applied);
    assert_eq!(
        mode_of(&share.join("readme.txt")),
        0o600,
        "dry run changed a file"
    );

    // Enforce: the same four paths are repaired, as the file system shows.
    let mut run = guard(&share);
    run.state = Some(StateStore::new(store.clone()));
    let done = run.on(&plugin);
    let outcome = done.outcome().expect("repair completes");
    assert_eq!(outcome.status.as_str(), "remediated", "{outcome:?}");
    assert_eq!(outcome.actions.len(), 4);
    let by_target = |suffix: &str| {
        outcome
            .actions
            .iter()
            .find(|a| a.target.ends_with(suffix))
            .unwrap_or_else(|| panic!("no action on {suffix}: {outcome:?}"))
    };
    // A folder also gets the default entry that what is created in it
    // later inherits.
    assert_eq!(
        by_target("reports").detail,
        "Users: user:nobody:---; default:user:nobody:--- -> user:nobody:r-x; default:user:nobody:r-x"
    );
    assert_eq!(
        by_target("q3.txt").detail,
        "Users: user:nobody:--- -> user:nobody:r--"
    );
    // The mask (shown in the group bits) now lets the named entry through.
    assert_eq!(mode_of(&share.join("reports")), 0o750);
    assert_eq!(mode_of(&share.join("readme.txt")), 0o640);
    let mut names = medic_backends::PrincipalMap::default();
    names.insert_spec("Users=user:nobody").unwrap();
    let acl = LocalFileSystem::new(names)
        .read_access(&medic_backends::fs::Beneath::new(&share, "reports/q3.txt").unwrap())
        .unwrap();
    let users = acl
        .iter()
        .find(|e| e.principal == "Users")
        .expect("a Users entry");
    assert_eq!(users.raw, "user:nobody:r--");
    // A report written after the repair is readable at once.
    std::fs::write(share.join("reports/q4.txt"), "new").unwrap();
    let acl = LocalFileSystem::new({
        let mut names = medic_backends::PrincipalMap::default();
        names.insert_spec("Users=user:nobody").unwrap();
        names
    })
    .read_access(&medic_backends::fs::Beneath::new(&share, "reports/q4.txt").unwrap())
    .unwrap();
    assert!(
        acl.iter()
            .any(|e| e.principal == "Users" && e.raw.starts_with("user:nobody:r")),
        "{acl:?}"
    );

    // Again: healthy, nothing changed, nothing planned.
    let mut run = guard(&share);
    run.state = Some(StateStore::new(store.clone()));
    let again = run.on(&plugin);
    let outcome = again.outcome().unwrap();
    assert_eq!(outcome.status.as_str(), "healthy");
    assert!(outcome.actions.is_empty());
    assert!(
        outcome.summary.contains("5 paths checked"),
        "{}",
        outcome.summary
    );

    // The plugin counted one repairing run in its state.
    let state = StateStore::new(store);
    assert_eq!(
        state.get("share-guard", "repairs").unwrap().as_deref(),
        Some("1")
    );
}

#[test]
fn share_guard_reports_a_bad_setting_as_a_failed_run() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = load("share-guard");
    let report = guard(dir.path()).setting("right", "everything").on(&plugin);
    match &report.result {
        RunResult::Failed(failure) => {
            assert!(
                failure
                    .to_string()
                    .contains("expected read, modify or full-control"),
                "{failure}"
            )
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn share_guard_fails_cleanly_on_an_unmapped_principal() {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    locked_share(&share);
    let plugin = load("share-guard");
    let report = guard(&share)
        .setting_list("principals", &["NETWORK SERVICE"])
        .on(&plugin);
    let outcome = report.outcome().unwrap();
    assert_eq!(outcome.status.as_str(), "failed");
    assert!(
        outcome
            .summary
            .contains("unknown principal `NETWORK SERVICE`"),
        "{}",
        outcome.summary
    );
    assert_eq!(mode_of(&share.join("readme.txt")), 0o600);
}
