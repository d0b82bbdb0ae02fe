//! The `medic` binary: `plugins inspect`, `trigger`, and `--help` on every
//! verb; bad input gets a clear error and a non-zero exit.

use crate::support::component;
use std::process::{Command, Output};

fn medic(args: &[&str]) -> Output {
    let cache = crate::support::workspace().join("target/test-cache");
    Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(args)
        .env("MEDIC_CACHE_DIR", cache)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn every_verb_has_help() {
    for verb in [
        &["--help"][..],
        &["plugins", "--help"],
        &["plugins", "inspect", "--help"],
        &["plugins", "keygen", "--help"],
        &["plugins", "sign", "--help"],
        &["plugins", "verify", "--help"],
        &["trigger", "--help"],
        &["lab", "--help"],
        &["lab", "init", "--help"],
        &["lab", "fault", "--help"],
    ] {
        let out = medic(verb);
        assert!(out.status.success(), "{verb:?}");
        assert!(
            text(&out.stdout).contains("Usage: medic"),
            "{verb:?}: {}",
            text(&out.stdout)
        );
    }
}

#[test]
fn inspect_shows_what_a_plugin_is_and_asks_for() {
    let path = component("share-guard");
    let out = medic(&["plugins", "inspect", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for expected in [
        "name          share-guard",
        "contract      medic:plugin@0.4.0",
        "capabilities  fs-read, fs-write\n  in a policy grants = { fs-read = [\"<root path>\"], fs-write = [\"<root path>\"] }\n  on trigger  --grant fs-read=<absolute path> --grant fs-write=<absolute path>\n",
        "exports       medic:plugin/plugin@0.4.0",
        "medic:plugin/fs@0.4.0",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in\n{stdout}"
        );
    }
    // A plugin that calls no WSUS function does not import the package.
    assert!(!stdout.contains("medic:wsus"), "{stdout}");

    let out = medic(&["plugins", "inspect", "--json", path.to_str().unwrap()]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["name"], "share-guard");
    assert_eq!(
        json["capabilities"],
        serde_json::json!(["fs-read", "fs-write"])
    );
    assert_eq!(
        json["policy_grants"],
        r#"grants = { fs-read = ["<root path>"], fs-write = ["<root path>"] }"#
    );
    assert_eq!(
        json["grant_flags"],
        "--grant fs-read=<absolute path> --grant fs-write=<absolute path>"
    );
}

#[test]
fn inspect_refuses_a_future_contract() {
    let path = component("fixture-future-contract");
    let out = medic(&["plugins", "inspect", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("medic:plugin@9.0.0"), "{stderr}");
    assert_eq!(
        stderr.matches("medic:plugin@9.0.0").count(),
        1,
        "said once: {stderr}"
    );
}

#[test]
fn trigger_runs_once_and_prints_every_host_call() {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let state = dir.path().join("state");
    let path = component("share-guard");
    let grant = format!("fs-write={}", share.display());
    let setting = format!("path={}", share.display());
    let args = [
        "trigger",
        path.to_str().unwrap(),
        "--grant",
        &grant,
        "--setting",
        &setting,
        "--principal",
        "Users=user:nobody",
        "--state-dir",
        state.to_str().unwrap(),
        "--event",
        r#"{"kind": "file-changed", "subject": "share"}"#,
    ];
    let out = medic(&[&args[..], &["--dry-run"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("in dry-run mode"), "{stdout}");
    assert!(stdout.contains("file-changed"), "{stdout}");
    assert!(stdout.contains("1. fs.ensure-access"), "{stdout}");
    assert!(stdout.contains("[planned]"), "{stdout}");
    assert!(stdout.contains("outcome  needs-approval"), "{stdout}");

    let out = medic(&[&args[..], &["--json"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["mode"], "enforce");
    assert_eq!(report["calls"][0]["function"], "fs.ensure-access");
    assert_eq!(report["calls"][0]["applied"], true);
    assert_eq!(report["result"]["completed"]["status"], "remediated");
}

#[test]
fn trigger_with_a_policy_runs_its_plugin_exactly_as_configured() {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let plugins = crate::support::workspace().join("target/plugins");
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[agent]\nstate_dir = \"agent-state\"\nplugin_dir = \"{plugins}\"\ntrusted_keys = [\"{plugins}/../signing/dev.pub\"]\n\n[backend]\nkind = \"local\"\nprincipals = {{ \"Users\" = \"user:nobody\" }}\n\n[plugins.share-guard]\ncomponent = \"share-guard.wasm\"\nmode = \"dry-run\"\ngrants = {{ fs-write = [\"{share}\"] }}\nsettings = {{ path = \"{share}\", principals = [\"Users\"], right = \"read\" }}\n[[plugins.share-guard.triggers]]\nkind = \"manual\"\n\n[plugins.broken]\ncomponent = \"nowhere.wasm\"\nmode = \"yolo\"\n",
            plugins = plugins.display(),
            share = share.display()
        ),
    )
    .unwrap();
    let state = dir.path().join("trigger-state");
    let run = |extra: &[&str]| {
        let args = [
            &[
                "trigger",
                "share-guard",
                "--policy",
                policy.to_str().unwrap(),
                "--state-dir",
                state.to_str().unwrap(),
                "--json",
            ][..],
            extra,
        ]
        .concat();
        medic(&args)
    };
    // The table's mode, grants, settings and principals, though another
    // table of the policy is broken.
    let out = run(&[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["mode"], "dry-run");
    assert_eq!(report["calls"][0]["function"], "fs.ensure-access");
    assert_eq!(report["calls"][0]["applied"], false);
    assert!(
        report["calls"][0]["args"]
            .to_string()
            .contains(&share.display().to_string()),
        "{}",
        report["calls"][0]
    );
    assert_eq!(report["result"]["completed"]["status"], "needs-approval");
    // --mode overrides the table's mode; nothing else can be retyped.
    let out = run(&["--mode", "enforce"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["result"]["completed"]["status"], "remediated");
    let out = run(&["--grant", "fs-write=/"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot be used with"),
        "{}",
        text(&out.stderr)
    );
    // The agent's store is left alone (its compile cache is shared).
    assert!(!dir.path().join("agent-state/medic.redb").exists());
    assert!(state.join("medic.redb").exists());

    let out = medic(&[
        "trigger",
        "share-gaurd",
        "--policy",
        policy.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("names no plugin `share-gaurd`; it names `share-guard`"),
        "{stderr}"
    );
    let out = medic(&["trigger", "broken", "--policy", policy.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("`broken` has problems"), "{stderr}");
    assert!(stderr.contains("yolo"), "{stderr}");
}

#[test]
fn trigger_rejects_bad_input_clearly() {
    let path = component("share-guard");
    let path = path.to_str().unwrap();
    let cases: [(&[&str], &str); 7] = [
        (
            &["trigger", path],
            "needs capabilities that are not granted: fs-read, fs-write; grant them in the plugin's policy table with `grants = { fs-read = [\"<root path>\"], fs-write = [\"<root path>\"] }`, or on `medic trigger` with `--grant fs-read=<absolute path> --grant fs-write=<absolute path>`",
        ),
        (
            &["trigger", path, "--grant", "fs-delete=/x"],
            "unknown capability `fs-delete`",
        ),
        (
            &["trigger", path, "--event", "{"],
            "event is not valid JSON",
        ),
        (
            &["trigger", path, "--setting", "novalue"],
            "expected KEY=VALUE",
        ),
        (&["trigger", path, "--timeout", "soon"], "is not a duration"),
        (
            &["trigger", path, "--timeout", "5ms"],
            "the timeout is below 10ms",
        ),
        (
            &["trigger", path, "--memory", "2GiB"],
            "out of range; use from 1MiB to 1GiB",
        ),
    ];
    for (args, expected) in cases {
        let out = medic(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(expected),
            "{args:?}: expected {expected:?} in {stderr}"
        );
    }
}

#[test]
fn a_failed_run_exits_2() {
    let path = component("fixture-panicker");
    let dir = tempfile::tempdir().unwrap();
    let out = medic(&[
        "trigger",
        path.to_str().unwrap(),
        "--state-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stdout).contains("fixture panicked on purpose"));
}

#[test]
fn every_example_policy_checks_clean() {
    let examples = crate::support::workspace().join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            // A policy for the lab is checked, verbatim, against a fresh
            // lab laid out where it expects one.
            let scratch = tempfile::tempdir().unwrap();
            let source = std::fs::read_to_string(&path).unwrap();
            let path = if source.contains("kind = \"windows\"") {
                windows_layout(scratch.path(), &path, &source)
            } else if source.contains("kind = \"lab\"") {
                let name = path.file_name().unwrap().to_owned();
                let (_, policy) = crate::wsus::example_layout(
                    scratch.path(),
                    medic_lab::model::SyncMode::Replica,
                    |_| source.clone(),
                );
                std::fs::rename(&policy, scratch.path().join("examples").join(&name)).unwrap();
                scratch.path().join("examples").join(name)
            } else {
                path
            };
            let out = medic(&["check", "--policy", path.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "{}:\n{}",
                path.display(),
                text(&out.stderr)
            );
            assert!(text(&out.stdout).contains(": ok"), "{}", text(&out.stdout));
            checked += 1;
        }
    }
    assert!(checked > 0, "no example policies found");
}

/// A Windows server's policy, checked here as `medic check` on Linux checks
/// it (the backend validated, not opened): laid out as on the server, its
/// plugins and key beside it, and each Windows absolute path (`'C:\WSUS'`,
/// which Linux cannot have) replaced by a scratch folder. Nothing else of
/// the text changes.
fn windows_layout(
    scratch: &std::path::Path,
    policy: &std::path::Path,
    source: &str,
) -> std::path::PathBuf {
    let workspace = crate::support::workspace();
    std::os::unix::fs::symlink(workspace.join("target/plugins"), scratch.join("plugins")).unwrap();
    std::fs::create_dir(scratch.join("keys")).unwrap();
    std::fs::copy(
        workspace.join("target/signing/dev.pub"),
        scratch.join("keys/ops.pub"),
    )
    .unwrap();
    let mut replaced = 0;
    let mut lines = Vec::new();
    for line in source.lines() {
        let mut parts: Vec<String> = line.split('\'').map(str::to_string).collect();
        if !line.trim_start().starts_with('#') {
            // Inside single quotes (TOML literal strings): every odd part.
            for part in parts.iter_mut().skip(1).step_by(2) {
                let bytes = part.as_bytes();
                if bytes.len() >= 3 && bytes[0].is_ascii_alphabetic() && &bytes[1..3] == b":\\" {
                    replaced += 1;
                    let folder = scratch.join(format!("drive-{replaced}"));
                    std::fs::create_dir_all(&folder).unwrap();
                    *part = folder.display().to_string();
                }
            }
        }
        lines.push(parts.join("'"));
    }
    let text = lines.join("\n");
    assert!(
        replaced > 0,
        "{}: no Windows path to lay out",
        policy.display()
    );
    let path = scratch.join(policy.file_name().unwrap());
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_reports_every_problem_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("bad.toml");
    let plugins = crate::support::workspace().join("target/plugins");
    // Problems of every kind, in different places: outside the plugin
    // tables, in their keys, in their triggers, and in the components
    // they name (one of them in a table with problems of its own).
    std::fs::write(
        &policy,
        format!(
            r#"[agent]
plugin_dir = "{}"
require_signatures = false
colour = "blue"

[backend]
kind = "lab"
lab = "no-lab-here"

[plugins.share-guard]
component = "share-guard.wasm"
mode = "yolo"
rate = {{ max_runs = 1, per = "soon" }}

[[plugins.share-guard.triggers]]
kind = "manual"

[plugins.bits-restart]
component = "missing.wasm"

[[plugins.bits-restart.triggers]]
kind = "every"
interval = "1ms"

[plugins.spinner]
component = "fixture-spin.wasm"

[[plugins.spinner.triggers]]
kind = "manual"

[plugins.unit-keeper]
component = "unit-keeper.wasm"

[[plugins.unit-keeper.triggers]]
kind = "manual"

[plugins.fixture-noop]
component = "fixture-noop.wasm"
trusted_keys = ["RWQ4/U1bBuKY9I4G3pL8NkZ8I4WcZKv0+UdIP6ONt+sY0CkZyqKZmhdD"]

[[plugins.fixture-noop.triggers]]
kind = "manual"
"#,
            plugins.display()
        ),
    )
    .unwrap();
    let expected = [
        ("bad.toml:4:1: in [agent]: unknown field `colour`", ""),
        ("bad.toml:8:7: ", "no-lab-here is not a lab"),
        (
            "bad.toml:10:1: plugin `share-guard`",
            "needs capabilities that are not granted",
        ),
        ("bad.toml:12:8: unknown mode `yolo`", ""),
        ("bad.toml:13:", "rate.per: `soon` is not a duration"),
        ("bad.toml:19:13: component ", "missing.wasm does not exist"),
        ("bad.toml:23:12: interval is below 100ms", ""),
        (
            "bad.toml:25:1: [plugins.spinner] names a component that describes itself as `fixture-spin`",
            "",
        ),
        (
            "bad.toml:31:1: plugin `unit-keeper`",
            "needs capabilities that are not granted",
        ),
        (
            "bad.toml:37:1: plugin `fixture-noop`",
            "which is not trusted for it",
        ),
    ];
    // `medic check` reports them all in one run, each with its place and
    // its fix; `medic run` refuses the same policy the same way.
    for verb in ["check", "run"] {
        let out = medic(&[verb, "--policy", policy.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{verb}");
        let stderr = text(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        for (start, rest) in expected {
            let at = lines
                .iter()
                .position(|l| l.contains(start) && l.contains(rest));
            let Some(at) = at else {
                panic!("{verb}: no {start:?} … {rest:?} in\n{stderr}");
            };
            assert!(
                lines
                    .get(at + 1)
                    .is_some_and(|l| l.trim_start().starts_with("fix: ")),
                "{verb}: no fix after {start:?} in\n{stderr}"
            );
        }
        assert!(stderr.contains("10 problems found"), "{verb}: {stderr}");
        // A missing grant's fix is the line the table needs.
        for fix in [
            r#"fix: add to [plugins.share-guard]: grants = { fs-read = ["<root path>"], fs-write = ["<root path>"] }"#,
            r#"fix: add to [plugins.unit-keeper]: grants = { services-read = ["<service name>"], services-control = ["<service name>"] }"#,
        ] {
            assert!(stderr.contains(fix), "{verb}: no {fix:?} in\n{stderr}");
        }
    }
}

#[test]
fn the_audit_survives_kill_9_mid_run_and_its_chain_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = crate::support::workspace().join("target/plugins");
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[agent]\nplugin_dir = \"{}\"\n\n[plugins.fixture-spin]\ncomponent = \"fixture-spin.wasm\"\nlimits = {{ timeout = \"300ms\" }}\n[[plugins.fixture-spin.triggers]]\nkind = \"manual\"\n",
            plugins.display()
        ),
    )
    .unwrap();
    let policy_arg = policy.to_str().unwrap();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(["run", "--policy", policy_arg])
        .spawn()
        .unwrap();
    let state = dir.path().join("state");
    let audit_count = || -> usize {
        let out = medic(&[
            "audit",
            "--state-dir",
            state.to_str().unwrap(),
            "--kind",
            "run",
            "--json",
        ]);
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).map_or(0, |v| v.len())
    };
    for n in 1..=3 {
        let out = medic(&[
            "send",
            "fixture-spin",
            "--subject",
            &format!("s{n}"),
            "--policy",
            policy_arg,
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let deadline = std::time::Instant::now() + crate::support::PATIENCE;
        while audit_count() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "run {n} was not recorded"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    // One more run, killed in the middle of it.
    medic(&[
        "send",
        "fixture-spin",
        "--subject",
        "s4",
        "--policy",
        policy_arg,
    ]);
    std::thread::sleep(std::time::Duration::from_millis(150));
    agent.kill().unwrap(); // SIGKILL
    agent.wait().unwrap();

    let out = medic(&["audit", "--state-dir", state.to_str().unwrap(), "--verify"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("audit chain intact"),
        "{}",
        text(&out.stdout)
    );
    assert!(audit_count() >= 3);
    let out = medic(&[
        "audit",
        "--state-dir",
        state.to_str().unwrap(),
        "--plugin",
        "fixture-spin",
    ]);
    assert!(
        text(&out.stdout).contains("ended at its timeout of 300 ms"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn the_lab_verbs_create_break_show_and_sync_a_lab() {
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path().join("lab");
    let lab_arg = lab.to_str().unwrap();

    let out = medic(&["lab", "status", "--lab", lab_arg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is not a lab") && text(&out.stderr).contains("medic lab init"),
        "{}",
        text(&out.stderr)
    );

    let out = medic(&["lab", "init", lab_arg, "--autonomous", "--updates", "400"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("(autonomous)"),
        "{}",
        text(&out.stdout)
    );
    let out = medic(&["lab", "init", lab_arg]);
    assert_eq!(out.status.code(), Some(1), "a lab is never overwritten");
    assert!(text(&out.stderr).contains("already holds a lab"));

    let out = medic(&["lab", "fault", "--lab", lab_arg, "printer-on-fire"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("unknown fault `printer-on-fire`")
            && text(&out.stderr).contains("bits-stopped"),
        "{}",
        text(&out.stderr)
    );

    let out = medic(&["lab", "fault", "--lab", lab_arg, "bits-stopped"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The catalog does not need BITS; the downloads after it do.
    assert!(
        text(&out.stdout).contains("sync succeeded")
            && text(&out.stdout).contains("downloads FAILED"),
        "{}",
        text(&out.stdout)
    );
    let out = medic(&["lab", "sync", "--lab", lab_arg]);
    assert_eq!(out.status.code(), Some(2), "failed downloads exit 2");
    let events = std::fs::read_to_string(lab.join("downstream/EventLog/System.jsonl")).unwrap();
    assert!(
        events.contains(
            "The Background Intelligent Transfer Service service entered the stopped state."
        ),
        "{events}"
    );

    let out = medic(&["lab", "status", "--lab", lab_arg, "--json"]);
    assert!(out.status.success());
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let downstream = &status["servers"][1];
    assert_eq!(downstream["server"], "downstream");
    assert_eq!(downstream["services"][0][0], "BITS");
    assert_eq!(downstream["services"][0][1], "Stopped");
    assert_eq!(downstream["last_sync"]["result"], "Succeeded");
    assert!(downstream["last_sync"]["download_failures"].as_u64() > Some(0));
    assert_eq!(status["content"]["lacking"], 0);
}

#[test]
fn a_lab_policy_without_its_lab_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("lab.toml");
    std::fs::write(
        &policy,
        "[backend]\nkind = \"lab\"\nlab = \"no-lab-here\"\nprincipals = { Users = \"group:users\" }\n",
    )
    .unwrap();
    let out = medic(&["check", "--policy", policy.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("lab.toml:3:7:") && stderr.contains("no-lab-here is not a lab"),
        "{stderr}"
    );
    assert!(
        stderr.contains("fix: create it with `medic lab init"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the lab maps Windows principals itself"),
        "{stderr}"
    );
}

/// A policy serving `fixture-noop` on manual events, with its state in
/// `dir/state`.
fn noop_policy(dir: &std::path::Path) -> std::path::PathBuf {
    let plugins = crate::support::workspace().join("target/plugins");
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[agent]\nplugin_dir = \"{}\"\n\n[plugins.fixture-noop]\ncomponent = \"fixture-noop.wasm\"\ngrants = {{ fs-read = [\"{}\"] }}\n[[plugins.fixture-noop.triggers]]\nkind = \"manual\"\n",
            plugins.display(),
            dir.display()
        ),
    )
    .unwrap();
    policy
}

/// A running agent, killed when dropped (a failed test leaves none).
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wait for `child` at most `limit`; kill it and fail if it is still
/// running then.
fn wait_at_most(
    child: &mut std::process::Child,
    limit: std::time::Duration,
    what: &str,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still running after {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Ended as a one-shot verb may when its reader has gone: by SIGPIPE
/// (as `cat` would), or having finished; with no panic.
fn ended_quietly(status: std::process::ExitStatus, stderr: &str, what: &str) {
    use std::os::unix::process::ExitStatusExt;
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    assert!(
        status.signal() == Some(libc::SIGPIPE) || status.success(),
        "{what}: {status:?}\n{stderr}"
    );
}

/// Run `medic args` with its standard output a pipe whose reader is
/// already gone; its standard error.
fn into_closed_pipe(args: &[&str]) -> (std::process::ExitStatus, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let cache = crate::support::workspace().join("target/test-cache");
    let mut child = Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(args)
        .env("MEDIC_CACHE_DIR", cache)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    let status = wait_at_most(&mut child, std::time::Duration::from_secs(60), "medic");
    (status, stderr)
}

#[test]
fn a_reader_that_goes_away_ends_every_verb_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // A journal far larger than a pipe holds.
    {
        let store = medic_agent::audit::Store::open(&state).unwrap();
        let journal = medic_agent::audit::journal::Journal::new(store);
        for n in 0..2000 {
            journal
                .append(medic_agent::audit::journal::NewRecord {
                    kind: medic_agent::audit::journal::RecordKind::Run,
                    plugin: "fixture-noop".into(),
                    run_id: format!("run-{n}"),
                    status: medic_agent::audit::journal::RecordStatus::Run(
                        medic_sandbox::Status::Healthy,
                    ),
                    summary: "all is well with a summary long enough to fill a pipe".into(),
                    detail: serde_json::json!({}),
                })
                .unwrap();
        }
    }
    let state_arg = state.to_str().unwrap();
    // `medic audit | head -1`, many times.
    for _ in 0..20 {
        let cache = crate::support::workspace().join("target/test-cache");
        let mut child = Command::new(env!("CARGO_BIN_EXE_medic"))
            .args(["audit", "--state-dir", state_arg])
            .env("MEDIC_CACHE_DIR", cache)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
        assert!(first.contains("fixture-noop"), "{first}");
        drop(stdout);
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        let status = wait_at_most(&mut child, std::time::Duration::from_secs(60), "audit");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGPIPE), "{stderr}");
        assert!(stderr.is_empty(), "{stderr}");
    }

    // Every verb that prints, into a pipe already closed.
    let policy = noop_policy(dir.path());
    let policy_arg = policy.to_str().unwrap();
    let lab = dir.path().join("lab");
    let lab_arg = lab.to_str().unwrap();
    let out = medic(&["lab", "init", lab_arg, "--updates", "50"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let noop = component("fixture-noop");
    let noop_arg = noop.to_str().unwrap();
    let trigger_state = dir.path().join("trigger-state");
    let grant = format!("fs-read={}", dir.path().display());
    let verbs: [&[&str]; 9] = [
        &["audit", "--state-dir", state_arg],
        &["audit", "--state-dir", state_arg, "--json"],
        &["audit", "--state-dir", state_arg, "--verify"],
        &["check", "-p", policy_arg],
        &[
            "trigger",
            "--json",
            noop_arg,
            "--grant",
            &grant,
            "--state-dir",
            trigger_state.to_str().unwrap(),
        ],
        &["lab", "status", "--lab", lab_arg],
        &["lab", "fault", "--list"],
        &["plugins", "inspect", noop_arg],
        &["plugins", "inspect", "--json", noop_arg],
    ];
    for verb in verbs {
        for _ in 0..5 {
            let (status, stderr) = into_closed_pipe(verb);
            ended_quietly(status, &stderr, &format!("{verb:?}"));
        }
    }
}

#[test]
fn audit_and_status_show_times_as_dates() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let state_arg = state.to_str().unwrap();
    {
        let store = medic_agent::audit::Store::open(&state).unwrap();
        medic_agent::audit::journal::Journal::new(store.clone())
            .append(medic_agent::audit::journal::NewRecord {
                kind: medic_agent::audit::journal::RecordKind::Run,
                plugin: "fixture-noop".into(),
                run_id: "run-1".into(),
                status: medic_agent::audit::journal::RecordStatus::Run(
                    medic_sandbox::Status::Healthy,
                ),
                summary: "all is well".into(),
                detail: serde_json::json!({}),
            })
            .unwrap();
        // An agent that started and was last seen long ago.
        store
            .put_json(
                "agent_status",
                "agent",
                &serde_json::json!({
                    "pid": 4242, "started_ms": 1_795_559_000_000_u64,
                    "updated_ms": 1_795_559_943_123_u64, "running": 0, "plugins": [],
                }),
            )
            .unwrap();
    }
    // JSON keeps the milliseconds, with the same time in RFC 3339 beside.
    let out = medic(&["audit", "--state-dir", state_arg, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let records: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let ms = records[0]["time_ms"].as_u64().unwrap();
    let time = records[0]["time"].as_str().unwrap().to_string();
    let shape = |t: &str| {
        t.len() == 24
            && t.chars().enumerate().all(|(n, c)| match n {
                4 | 7 => c == '-',
                10 => c == 'T',
                13 | 16 => c == ':',
                19 => c == '.',
                23 => c == 'Z',
                _ => c.is_ascii_digit(),
            })
    };
    assert!(shape(&time), "{time}");
    let seconds = (ms / 1000) % 60;
    assert_eq!(time[17..19], format!("{seconds:02}"), "{time} for {ms}");
    assert_eq!(time[20..23], format!("{:03}", ms % 1000), "{time} for {ms}");

    // Text shows the date, never the milliseconds.
    let out = medic(&["audit", "--state-dir", state_arg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    let date = format!("{} UTC", time.replace('T', " ").trim_end_matches('Z'));
    assert!(listed.contains(&date), "{date} in {listed}");
    assert!(!listed.contains(&ms.to_string()), "{listed}");

    let out = medic(&["status", "--state-dir", state_arg]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("NOT RUNNING (last seen 2026-11-24 22:39:03.123 UTC, "),
        "{shown}"
    );
    assert!(!shown.contains("1795559943123"), "{shown}");
}

#[test]
fn a_log_written_to_a_file_has_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let policy = noop_policy(dir.path());
    // A plugin that cannot serve: the agent logs it as an error.
    let mut text_of_policy = std::fs::read_to_string(&policy).unwrap();
    text_of_policy.push_str(
        "\n[plugins.unit-keeper]\ncomponent = \"missing.wasm\"\n[[plugins.unit-keeper.triggers]]\nkind = \"manual\"\n",
    );
    std::fs::write(&policy, text_of_policy).unwrap();
    let log = dir.path().join("agent.log");
    let mut agent = Running(
        Command::new(env!("CARGO_BIN_EXE_medic"))
            .args(["run", "--policy"])
            .arg(&policy)
            .env_remove("NO_COLOR")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + crate::support::PATIENCE;
    let written = loop {
        let written = std::fs::read_to_string(&log).unwrap_or_default();
        if written.contains("plugin DISABLED") {
            break written;
        }
        assert!(
            agent.0.try_wait().unwrap().is_none(),
            "the agent ended: {written}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "nothing logged: {written}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    drop(agent);
    assert!(!written.contains("\x1b["), "{written:?}");
    assert!(written.contains("ERROR"), "{written}");

    // A one-shot verb's log, into a file too.
    let log = dir.path().join("check.log");
    let status = Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(["--log", "debug", "check", "--policy"])
        .arg(&policy)
        .env("MEDIC_CACHE_DIR", dir.path().join("cache"))
        .env_remove("NO_COLOR")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
    let written = std::fs::read_to_string(&log).unwrap();
    assert!(written.contains("DEBUG"), "{written}");
    assert!(!written.contains("\x1b["), "{written:?}");
}

#[test]
fn trigger_json_with_a_large_report_ends_quietly_when_its_reader_goes() {
    let dir = tempfile::tempdir().unwrap();
    let noop = component("fixture-noop");
    let grant = format!("fs-read={}", dir.path().display());
    let stat_path = format!("stat-path={}", dir.path().display());
    let state = dir.path().join("trigger-state");
    // A report of thousands of host calls, far larger than a pipe holds.
    let args = [
        "trigger",
        "--json",
        noop.to_str().unwrap(),
        "--grant",
        &grant,
        "--setting",
        &stat_path,
        "--setting",
        "stat-count=3000",
        "--state-dir",
        state.to_str().unwrap(),
    ];
    let out = medic(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.len() > 256 << 10, "{}", out.stdout.len());

    // `medic trigger --json … | head -1`.
    for _ in 0..5 {
        let cache = crate::support::workspace().join("target/test-cache");
        let mut child = Command::new(env!("CARGO_BIN_EXE_medic"))
            .args(args)
            .env("MEDIC_CACHE_DIR", cache)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
        assert_eq!(first, "{\n");
        drop(stdout);
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        let status = wait_at_most(&mut child, std::time::Duration::from_secs(60), "trigger");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGPIPE), "{stderr}");
        assert!(stderr.is_empty(), "{stderr}");
    }
    // Into a pipe already closed.
    let (status, stderr) = into_closed_pipe(&args);
    ended_quietly(status, &stderr, "trigger --json");
}

#[test]
fn a_refusal_names_a_service_granted_to_read_and_to_control_once() {
    let dir = tempfile::tempdir().unwrap();
    let services = component("fixture-services");
    let state = dir.path().join("trigger-state");
    let out = medic(&[
        "trigger",
        services.to_str().unwrap(),
        "--grant",
        "services-read=BITS",
        "--grant",
        "services-control=BITS",
        "--setting",
        "services=W3SVC",
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(
        report.contains(
            "[DENIED] denied: service `W3SVC` is not granted to services-read (granted: BITS)\n"
        ),
        "{report}"
    );
}

#[test]
fn the_agent_outlives_a_closed_stdout_and_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let policy = noop_policy(dir.path());
    let state = dir.path().join("state");
    let (out_reader, out_writer) = std::io::pipe().unwrap();
    let (err_reader, err_writer) = std::io::pipe().unwrap();
    drop((out_reader, err_reader));
    let mut agent = Running(
        Command::new(env!("CARGO_BIN_EXE_medic"))
            .args(["--log", "debug", "run", "--policy"])
            .arg(&policy)
            .stdout(out_writer)
            .stderr(err_writer)
            .spawn()
            .unwrap(),
    );
    let state_arg = state.to_str().unwrap();
    let runs = || {
        let out = medic(&["audit", "--state-dir", state_arg, "--kind", "run", "--json"]);
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).map_or(0, |v| v.len())
    };
    for n in 1..=3 {
        let out = medic(&[
            "send",
            "fixture-noop",
            "--subject",
            &format!("s{n}"),
            "--policy",
            policy.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while runs() < n {
            assert!(
                agent.0.try_wait().unwrap().is_none(),
                "the agent died: {:?}",
                agent.0.try_wait()
            );
            assert!(
                std::time::Instant::now() < deadline,
                "run {n} was not recorded"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    assert!(agent.0.try_wait().unwrap().is_none(), "the agent died");
}

#[test]
fn send_refuses_a_plugin_the_agent_does_not_serve() {
    let dir = tempfile::tempdir().unwrap();
    let policy = noop_policy(dir.path());
    let policy_arg = policy.to_str().unwrap();
    let state = dir.path().join("state");
    let state_arg = state.to_str().unwrap();

    let out = medic(&["send", "fixture-nope", "--policy", policy_arg]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("names no plugin `fixture-nope`; it names `fixture-noop`"),
        "{stderr}"
    );
    assert!(!state.join("inbox").exists(), "nothing was queued");
    let out = medic(&["send", "fixture-noop", "--policy", policy_arg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("queued for `fixture-noop`"));

    // A state folder no agent has used: nothing to check against, and
    // no store is made there by asking.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = medic(&[
        "send",
        "fixture-noop",
        "--state-dir",
        empty.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("no agent has left a status") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
    let out = medic(&[
        "send",
        "fixture-noop",
        "--state-dir",
        empty.to_str().unwrap(),
        "--force",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // An agent's last status says what it serves.
    let agent = Running(
        Command::new(env!("CARGO_BIN_EXE_medic"))
            .args(["run", "--policy", policy_arg])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = medic(&["status", "--state-dir", state_arg, "--json"]);
        if text(&out.stdout).contains("fixture-noop") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no status");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    drop(agent);
    let out = medic(&["send", "fixture-nope", "--state-dir", state_arg]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("does not serve `fixture-nope`; it serves `fixture-noop`"),
        "{stderr}"
    );
    let out = medic(&["send", "fixture-noop", "--state-dir", state_arg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn a_failed_lab_init_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path().join("labs/lab");
    let lab_arg = lab.to_str().unwrap();
    for _ in 0..10 {
        let out = medic(&[
            "lab",
            "init",
            lab_arg,
            "--updates",
            "50",
            "--principal",
            "Users=user:medic-no-such-user",
        ]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            text(&out.stderr).contains("medic-no-such-user"),
            "{}",
            text(&out.stderr)
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
    // Somewhere nothing can be made.
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    for _ in 0..5 {
        let out = medic(&["lab", "init", file.join("lab").to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
    let out = medic(&["lab", "init", lab_arg, "--updates", "50"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = medic(&["lab", "status", "--lab", lab_arg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn inspect_reads_only_a_regular_file_of_bounded_size() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.wasm");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let large = dir.path().join("large.wasm");
    std::fs::File::create(&large)
        .unwrap()
        .set_len(medic_sandbox::MAX_COMPONENT_BYTES + 1)
        .unwrap();
    for (path, expected) in [
        (std::path::Path::new("/dev/zero"), "a character device"),
        (fifo.as_path(), "a FIFO"),
        (
            large.as_path(),
            "larger than the largest component medic reads (128 MiB)",
        ),
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_medic"))
            .args(["plugins", "inspect", "--no-cache", path.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        let status = wait_at_most(
            &mut child,
            crate::support::PATIENCE,
            &format!("inspect {}", path.display()),
        );
        assert_eq!(status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
}

#[test]
fn check_and_run_refuse_the_same_bad_numbers_and_bytes_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(noop_policy(dir.path())).unwrap();
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "cooldown",
            good.replace(
                "[[plugins",
                "rate = { max_runs = 1, per = \"1s\", cooldown = \"18446744073709551615ms\" }\n[[plugins",
            )
            .into_bytes(),
            "bad.toml:7:47: rate.cooldown: `18446744073709551615ms` is longer than the longest duration medic takes, 366 days",
        ),
        (
            "memory",
            good.replace(
                "[[plugins",
                "limits = { memory = \"99999999999GiB\" }\n[[plugins",
            )
            .into_bytes(),
            "bad.toml:7:21: limits.memory: `99999999999GiB` is larger than the largest size medic takes, 1 TiB",
        ),
        (
            "queue",
            good.replace("[agent]", "[agent]\nqueue_capacity = 9223372036854775807")
                .into_bytes(),
            "bad.toml:2:18: queue_capacity = 9223372036854775807 is out of range",
        ),
        (
            "utf-8",
            [good.as_bytes(), b"# caf\xe9\n"].concat(),
            "bad.toml:9:6: the policy is not UTF-8 text",
        ),
    ];
    for (what, bytes, expected) in cases {
        let policy = dir.path().join("bad.toml");
        std::fs::write(&policy, &bytes).unwrap();
        for verb in ["check", "run"] {
            let out = medic(&[verb, "--policy", policy.to_str().unwrap()]);
            assert_eq!(out.status.code(), Some(1), "{what} {verb}");
            let stderr = text(&out.stderr);
            assert!(stderr.contains(expected), "{what} {verb}: {stderr}");
            assert!(stderr.contains("fix: "), "{what} {verb}: {stderr}");
            assert!(!stderr.contains("panicked"), "{what} {verb}: {stderr}");
        }
    }
}
