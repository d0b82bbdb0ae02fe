//! Without the privileges the namespace needs, the tests say so and skip;
//! under `MEDIC_REQUIRE_SYSTEMD=1` they fail. Proven by running this very
//! test binary again as `nobody` (through `setpriv`).

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

/// One of the real-systemd tests, run as `nobody` from a copy of this
/// binary that `nobody` can reach.
fn as_nobody(require: bool) -> Option<Output> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: only root can run a test as another user");
        return None;
    }
    let folder = tempfile::tempdir().unwrap();
    std::fs::set_permissions(folder.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = folder.path().join("linux-tests");
    std::fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&copy)
        .args([
            "services::a_oneshot_is_judged_by_its_result",
            "--exact",
            "--nocapture",
        ])
        .current_dir(folder.path())
        .env_remove("MEDIC_REQUIRE_SYSTEMD");
    if require {
        command.env("MEDIC_REQUIRE_SYSTEMD", "1");
    }
    Some(command.output().expect("setpriv runs"))
}

#[test]
fn without_root_the_tests_skip_saying_why() {
    let Some(out) = as_nobody(false) else {
        return;
    };
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("SKIPPED: this test needs a namespaced systemd, and not root"),
        "{said}"
    );
}

#[test]
fn without_root_the_tests_fail_when_systemd_is_required() {
    let Some(out) = as_nobody(true) else {
        return;
    };
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("a real systemd is required"), "{said}");
}
