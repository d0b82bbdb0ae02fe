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
        &["trigger", "--help"],
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
        "contract      medic:plugin@0.1.0",
        "capabilities  fs-read, fs-write",
        "exports       medic:plugin/plugin@0.1.0",
        "medic:plugin/fs@0.1.0",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in\n{stdout}"
        );
    }

    let out = medic(&["plugins", "inspect", "--json", path.to_str().unwrap()]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["name"], "share-guard");
    assert_eq!(
        json["capabilities"],
        serde_json::json!(["fs-read", "fs-write"])
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
fn trigger_rejects_bad_input_clearly() {
    let path = component("share-guard");
    let path = path.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (
            &["trigger", path],
            "needs capabilities that are not granted",
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
