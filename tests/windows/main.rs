//! medic against a real Windows system: the Service Control Manager with a
//! throwaway service (medic itself, installed by `medic service install`),
//! NTFS trees with inheritance, protected folders and denies checked with
//! `icacls`, and the Application event log written by a registered test
//! source and read by a running agent across a kill.
//!
//! These run only on Windows, as an administrator (the workflow in
//! `.github/workflows/windows.yml`), after `cargo xtask plugins`. They
//! change the machine they run on (a service, an event source) and undo it.

#![cfg(windows)]

use medic_backends::fs::{AccessRight, Beneath, FileSystem};
use medic_backends::services::{ServiceManager, ServiceState, StartupType};
use medic_backends::windows::ntfs::{self, SidMap};
use medic_backends::windows::scm::{Scm, SystemClock, Win32Scm};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(120);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

fn medic(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    ok(&out, &format!("{program} {args:?}"));
    text(&out.stdout)
}

fn powershell(script: &str) -> String {
    run(
        "powershell.exe",
        &["-NoProfile", "-NonInteractive", "-Command", script],
    )
}

/// Wait for `done`, or fail saying `what`.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A policy serving the no-op fixture, on the windows backend (no WSUS).
fn policy(dir: &Path, triggers: &str) -> PathBuf {
    let plugins = workspace().join("target/plugins");
    let key = workspace().join("target/signing/dev.pub");
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[agent]\nstate_dir = 'state'\nplugin_dir = '{}'\ntrusted_keys = ['{}']\nrequire_signatures = true\n\n[backend]\nkind = \"windows\"\nwsus = false\n\n[plugins.fixture-noop]\ncomponent = \"fixture-noop.wasm\"\ngrants = {{ fs-read = ['{}'] }}\n{triggers}\n",
            plugins.display(),
            key.display(),
            dir.display()
        ),
    )
    .unwrap();
    policy
}

struct Uninstall(String);

impl Drop for Uninstall {
    fn drop(&mut self) {
        let _ = medic(&["service", "uninstall", "--name", &self.0]);
    }
}

#[test]
fn the_agent_installs_starts_stops_and_uninstalls_as_a_service() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy(
        dir.path(),
        "[[plugins.fixture-noop.triggers]]\nkind = \"manual\"\n",
    );
    let name = format!("medic-test-{}", std::process::id());
    let policy_arg = policy.to_str().unwrap();
    ok(
        &medic(&[
            "service", "install", "--name", &name, "--policy", policy_arg, "--manual",
        ]),
        "install",
    );
    let _cleanup = Uninstall(name.clone());
    let scm = Scm::new(Win32Scm, SystemClock);
    let status = scm.query(&name).unwrap();
    assert_eq!(
        (status.state, status.startup),
        (ServiceState::Stopped, StartupType::Manual)
    );

    // The start type alone changes, delayed-automatic included.
    for startup in [
        StartupType::AutomaticDelayed,
        StartupType::Automatic,
        StartupType::Manual,
    ] {
        let change = scm.set_startup(&name, startup, true).unwrap();
        assert_eq!(change.after.startup, startup);
        let config = run("sc.exe", &["qc", &name]);
        assert!(config.contains("service run"), "binary path kept: {config}");
    }
    let dry = scm.start(&name, Duration::from_secs(60), false).unwrap();
    assert!(!dry.applied);
    assert_eq!(scm.query(&name).unwrap().state, ServiceState::Stopped);

    ok(&medic(&["service", "start", "--name", &name]), "start");
    assert_eq!(scm.query(&name).unwrap().state, ServiceState::Running);
    wait_for("the agent to say it runs", || {
        medic(&["status", "--policy", policy_arg]).status.code() == Some(0)
    });
    let logs = dir.path().join("state/logs");
    wait_for("the service's log file", || {
        std::fs::read_dir(&logs).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("starting with"))
            })
        })
    });
    let again = scm.start(&name, Duration::from_secs(60), true).unwrap();
    assert!(!again.applied, "starting a running service changes nothing");

    ok(&medic(&["service", "stop", "--name", &name]), "stop");
    assert_eq!(
        scm.query(&name).unwrap().state,
        ServiceState::Stopped,
        "stopped cleanly, not failed"
    );
    ok(
        &medic(&["service", "uninstall", "--name", &name]),
        "uninstall",
    );
    let gone = scm.query(&name).unwrap_err();
    assert_eq!(gone.kind, medic_backends::ErrorKind::NotFound);
}

#[test]
fn a_recursive_grant_is_one_inheritable_entry_and_blocked_children_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("WSUS");
    for folder in ["WsusContent/0A", "protected", "denied"] {
        std::fs::create_dir_all(root.join(folder)).unwrap();
    }
    std::fs::write(root.join("WsusContent/0A/update.cab"), b"cab").unwrap();
    std::fs::write(root.join("protected/p.txt"), b"p").unwrap();
    let root_arg = root.to_str().unwrap();
    // Only Administrators and SYSTEM: no entry for NETWORK SERVICE.
    run(
        "icacls",
        &[
            root_arg,
            "/inheritance:r",
            "/grant:r",
            "*S-1-5-32-544:(OI)(CI)F",
            "*S-1-5-18:(OI)(CI)F",
        ],
    );
    let protected = root.join("protected");
    run(
        "icacls",
        &[
            protected.to_str().unwrap(),
            "/inheritance:r",
            "/grant:r",
            "*S-1-5-32-544:(OI)(CI)F",
        ],
    );
    let denied = root.join("denied");
    run(
        "icacls",
        &[denied.to_str().unwrap(), "/deny", "*S-1-5-20:(OI)(CI)R"],
    );

    let fs = ntfs::local(SidMap::default());
    let path = Beneath::new(&root, "").unwrap();
    let before = run("icacls", &[root_arg]);
    let plan = fs
        .ensure_access(
            &path,
            "NETWORK SERVICE",
            AccessRight::Read,
            true,
            false,
            None,
        )
        .unwrap();
    assert!(!plan.applied);
    assert_eq!(
        run("icacls", &[root_arg]),
        before,
        "dry-run changed nothing"
    );
    let planned: Vec<&str> = plan.changed.iter().map(|c| c.path.as_str()).collect();
    assert!(planned.iter().any(|p| p.ends_with("WSUS")), "{planned:?}");
    assert!(
        planned.iter().any(|p| p.ends_with("protected")),
        "{planned:?}"
    );
    assert!(
        plan.skipped.iter().any(|s| s.path.ends_with("denied")),
        "{:?}",
        plan.skipped
    );
    assert!(
        planned.len() < 5,
        "no walk that rewrites every file: {planned:?}"
    );

    let done = fs
        .ensure_access(
            &path,
            "NETWORK SERVICE",
            AccessRight::Read,
            true,
            true,
            None,
        )
        .unwrap();
    assert!(done.applied);
    assert_eq!(
        done.changed, plan.changed,
        "enforce did what dry-run planned"
    );
    let root_acl = run("icacls", &[root_arg]);
    assert!(
        root_acl.contains("NETWORK SERVICE:(OI)(CI)(RX)"),
        "{root_acl}"
    );
    let file_acl = run(
        "icacls",
        &[root.join("WsusContent/0A/update.cab").to_str().unwrap()],
    );
    assert!(
        file_acl.contains("NETWORK SERVICE:(I)(RX)"),
        "Windows propagated it: {file_acl}"
    );
    let protected_acl = run("icacls", &[protected.to_str().unwrap()]);
    assert!(protected_acl.contains("NETWORK SERVICE"), "{protected_acl}");
    let denied_acl = run("icacls", &[denied.to_str().unwrap()]);
    assert!(
        denied_acl.contains("(DENY)"),
        "the deny is left: {denied_acl}"
    );

    let again = fs
        .ensure_access(
            &path,
            "NETWORK SERVICE",
            AccessRight::Read,
            true,
            true,
            None,
        )
        .unwrap();
    assert!(again.changed.is_empty(), "{:?}", again.changed);
}

const SOURCE: &str = "medic-test-wsus";

fn write_event(id: u32, message: &str) {
    powershell(&format!(
        "Write-EventLog -LogName Application -Source '{SOURCE}' -EventId {id} -EntryType Error -Message '{message}'"
    ));
}

fn runs(state: &Path) -> Vec<String> {
    let out = medic(&[
        "audit",
        "--state-dir",
        state.to_str().unwrap(),
        "--kind",
        "run",
        "--json",
    ]);
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
        .map(|records| records.iter().map(|r| r.to_string()).collect())
        .unwrap_or_default()
}

struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(policy: &Path) -> Agent {
    let agent = Agent(
        Command::new(env!("CARGO_BIN_EXE_medic"))
            .args(["run", "--policy"])
            .arg(policy)
            .spawn()
            .unwrap(),
    );
    wait_for("the agent to run", || {
        medic(&["status", "--policy", policy.to_str().unwrap()])
            .status
            .code()
            == Some(0)
    });
    agent
}

#[test]
fn event_log_events_reach_the_plugin_once_across_a_kill() {
    powershell(&format!(
        "if (-not [System.Diagnostics.EventLog]::SourceExists('{SOURCE}')) {{ New-EventLog -LogName Application -Source '{SOURCE}' }}"
    ));
    let dir = tempfile::tempdir().unwrap();
    let policy = policy(
        dir.path(),
        &format!(
            "[[plugins.fixture-noop.triggers]]\nkind = \"event_log\"\nchannel = \"Application\"\nsource = \"{SOURCE}\"\nids = [364, 10012, 10021]\n"
        ),
    );
    let state = dir.path().join("state");
    let agent = start_agent(&policy);
    write_event(
        364,
        "Content file download failed. Reason: Access is denied.",
    );
    write_event(10012, "medic test 10012");
    write_event(7, "an id the trigger does not take");
    write_event(10021, "medic test 10021");
    wait_for("three runs", || runs(&state).len() >= 3);
    drop(agent);

    // Written while no agent runs: delivered after the restart, once.
    write_event(10021, "medic test while stopped");
    let agent = start_agent(&policy);
    write_event(364, "medic test after the restart");
    wait_for("five runs", || runs(&state).len() >= 5);
    drop(agent);
    let all = runs(&state);
    assert_eq!(all.len(), 5, "nothing replayed, nothing lost: {all:#?}");
    assert!(all.iter().any(|r| r.contains("while stopped")), "{all:#?}");
    assert!(!all.iter().any(|r| r.contains("does not take")), "{all:#?}");
}
