//! The store fails safe: read-only verbs never create one; a damaged store
//! (bytes flipped, pages zeroed, the file cut short or to nothing) never
//! panics `medic`, `medic audit --verify` says where the journal breaks,
//! the agent refuses to start on it, and a repair always gives a store
//! that verifies; a full disk degrades the store, which recovers by itself
//! with no record lost; `medic status` tells a live agent from a dead one.

use medic_agent::audit::journal::{AuditRecord, Filter, Journal, NewRecord, RecordKind};
use medic_agent::audit::state::StateStore;
use medic_agent::audit::{DATABASE_FILE, Store, StoreError, anchor, repair};
use medic_sandbox::Status;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn medic(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn record(n: usize) -> NewRecord {
    NewRecord {
        kind: RecordKind::Run,
        plugin: ["content-acl", "bits-restart", "decline-orphans"][n % 3].into(),
        run_id: format!("run-{n:06}"),
        status: medic_agent::audit::journal::RecordStatus::Run(Status::Remediated),
        summary: format!("record {n}"),
        detail: serde_json::json!({
            "calls": (0..n % 7).map(|i| serde_json::json!({ "function": "fs.stat", "path": format!("/srv/{n}/{i}") })).collect::<Vec<_>>(),
        }),
    }
}

/// Wait until `done` holds; fails after a generous deadline.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: timed out");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A process that ended on its own, not by a signal or a panic.
fn assert_clean_exit(out: &Output, what: &str) {
    let stderr = text(&out.stderr);
    assert!(
        matches!(out.status.code(), Some(0 | 1 | 3)),
        "{what}: ended with {:?}\n{stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
}

#[test]
fn read_only_verbs_never_create_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo");
    for args in [
        &["audit", "--verify"][..],
        &["audit"],
        &["audit", "--json"],
        &["status"],
    ] {
        let mut all = args.to_vec();
        all.extend(["--state-dir", arg(&typo)]);
        let out = medic(&all);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            text(&out.stderr).contains("no agent has run with this state directory"),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(!typo.exists(), "{args:?} made {}", typo.display());
    }
}

/// A journal of a few hundred records, plugin state and a table of the
/// kind the agent keeps, made once and copied for each trial.
fn template(dir: &Path) -> Vec<AuditRecord> {
    let store = Store::open(dir).unwrap();
    let journal = Journal::new(store.clone());
    let state = StateStore::new(store.clone());
    let records: Vec<AuditRecord> = store
        .write(|txn| {
            (0..300)
                .map(|n| journal.append_in(txn, record(n)))
                .collect()
        })
        .unwrap();
    journal.committed(&records);
    for n in 0..40 {
        state
            .set(
                "content-acl",
                &format!("key-{n}"),
                &"v".repeat(n * 10),
                1 << 20,
            )
            .unwrap();
        store
            .put_json("tail_offsets", &format!("log-{n}"), &(n * 1000))
            .unwrap();
    }
    assert_eq!(journal.verify().unwrap(), Ok(300));
    records
}

fn copy_state(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for name in [DATABASE_FILE, anchor::ANCHOR_FILE] {
        std::fs::copy(from.join(name), to.join(name)).unwrap();
    }
}

/// Damage the store file as a disk or a person might; says what it did.
fn damage(path: &Path, rng: &mut fastrand::Rng) -> String {
    let mut bytes = std::fs::read(path).unwrap();
    let len = bytes.len();
    match rng.u8(0..6) {
        0 => {
            let n = rng.usize(1..=16);
            for _ in 0..n {
                let at = rng.usize(..len);
                bytes[at] ^= 1 << rng.u8(0..8);
            }
            std::fs::write(path, &bytes).unwrap();
            format!("{n} bit(s) flipped")
        }
        1 => {
            let page = rng.usize(..len / 4096);
            bytes[page * 4096..(page + 1) * 4096].fill(0);
            std::fs::write(path, &bytes).unwrap();
            format!("page {page} zeroed")
        }
        2 => {
            let page = rng.usize(..len / 4096);
            for b in &mut bytes[page * 4096..(page + 1) * 4096] {
                *b = rng.u8(..);
            }
            std::fs::write(path, &bytes).unwrap();
            format!("page {page} filled with noise")
        }
        3 => {
            let at = rng.usize(..len);
            bytes[at..(at + 512).min(len)].fill(0);
            std::fs::write(path, &bytes).unwrap();
            format!("512 bytes zeroed at {at}")
        }
        4 => {
            let at = rng.usize(1..len);
            std::fs::write(path, &bytes[..at]).unwrap();
            format!("cut to {at} of {len} bytes")
        }
        _ => {
            std::fs::write(path, b"").unwrap();
            "cut to 0 bytes".into()
        }
    }
}

/// The records `medic audit --json` lists.
fn listed(state: &Path) -> Option<Vec<serde_json::Value>> {
    let out = medic(&["audit", "--state-dir", arg(state), "--json"]);
    assert_clean_exit(&out, "medic audit --json");
    serde_json::from_slice(&out.stdout).ok()
}

#[test]
fn a_damaged_store_never_panics_is_refused_by_the_agent_and_repairs_to_an_intact_one() {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("template");
    let records = template(&original);
    let hashes: Vec<&str> = records.iter().map(|r| r.hash.as_str()).collect();
    let mut rng = fastrand::Rng::with_seed(0x5707_e5a1);
    let trials = 60;
    let (mut intact, mut broken) = (0, 0);
    for trial in 0..trials {
        let state = dir.path().join(format!("trial-{trial}"));
        copy_state(&original, &state);
        let what = damage(&state.join(DATABASE_FILE), &mut rng);
        let what = format!("trial {trial} ({what})");

        let out = medic(&["audit", "--state-dir", arg(&state), "--verify"]);
        assert_clean_exit(&out, &what);
        let said_intact = out.status.success();
        if said_intact {
            // Intact means intact: every record is there, unchanged.
            intact += 1;
            assert!(
                text(&out.stdout).contains("audit chain intact: 300 records"),
                "{what}: {}",
                text(&out.stdout)
            );
            let listed = listed(&state).unwrap();
            let listed: Vec<&str> = listed.iter().map(|r| r["hash"].as_str().unwrap()).collect();
            assert_eq!(listed, hashes, "{what}: said intact");
        } else {
            broken += 1;
            let stderr = text(&out.stderr);
            assert!(
                stderr.contains("BROKEN after record")
                    || (stderr.contains(DATABASE_FILE) && stderr.contains("medic audit --repair")),
                "{what}: {stderr}"
            );
        }

        // The agent's open: refuses what --verify calls broken, never
        // panics, and names the file and the way out.
        match Store::open(&state) {
            Ok(store) => {
                assert!(
                    said_intact,
                    "{what}: the agent would start on a broken store"
                );
                assert_eq!(Journal::new(store).verify().unwrap(), Ok(300), "{what}");
            }
            Err(e) => {
                assert!(!said_intact, "{what}: refused an intact store: {e}");
                let message = e.to_string();
                assert!(
                    message.contains(DATABASE_FILE) && message.contains("medic audit --repair"),
                    "{what}: {message}"
                );
            }
        }

        // A repair always gives a store that verifies, and keeps the
        // intact part of the journal as it was.
        let report = repair::repair(&state).unwrap_or_else(|e| panic!("{what}: {e}"));
        let kept = report.records_kept as usize;
        if said_intact {
            assert_eq!(kept, 300, "{what}");
        }
        let out = medic(&["audit", "--state-dir", arg(&state), "--verify"]);
        assert!(
            out.status.success(),
            "{what}: after repair: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(text(&out.stdout).contains(&format!("intact: {} records", kept + 1)));
        let listed = listed(&state).unwrap();
        let listed: Vec<&str> = listed.iter().map(|r| r["hash"].as_str().unwrap()).collect();
        assert_eq!(listed[..kept], hashes[..kept], "{what}");
        assert!(report.kept_as.as_ref().is_none_or(|p| p.exists()));
        let store = Store::open(&state).unwrap_or_else(|e| panic!("{what}: {e}"));
        Journal::new(store).append(record(1000)).unwrap();
    }
    eprintln!("{trials} trials: {intact} said intact (damage in unused bytes), {broken} broken");
    assert!(broken > trials / 2, "most damage should show");
}

fn fixture_policy(dir: &Path) -> PathBuf {
    let plugins = crate::support::workspace().join("target/plugins");
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[agent]\nplugin_dir = \"{}\"\n\n[plugins.fixture-spin]\ncomponent = \"fixture-spin.wasm\"\n[[plugins.fixture-spin.triggers]]\nkind = \"manual\"\n",
            plugins.display()
        ),
    )
    .unwrap();
    crate::support::component("fixture-spin");
    policy
}

#[test]
fn the_agent_refuses_a_broken_journal_and_starts_on_the_repaired_store() {
    let dir = tempfile::tempdir().unwrap();
    let policy = fixture_policy(dir.path());
    let state = dir.path().join("state");
    {
        let journal = Journal::new(Store::open(&state).unwrap());
        for n in 0..20 {
            journal.append(record(n)).unwrap();
        }
        journal
            .tamper(12, |r| r.entry.summary = "nothing to see".into())
            .unwrap();
    }
    let out = medic(&["run", "--policy", arg(&policy)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("record 12"), "{stderr}");
    assert!(stderr.contains("medic audit --repair"), "{stderr}");
    // Nothing was appended to it.
    let journal = Journal::new(Store::open_existing(&state).unwrap());
    assert_eq!(journal.list(&Filter::default()).unwrap().len(), 20);
    drop(journal);

    let out = medic(&["audit", "--policy", arg(&policy), "--verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("BROKEN after record 11: record 12 does not match its own hash"),
        "{}",
        text(&out.stderr)
    );

    let report = repair::repair(&state).unwrap();
    assert_eq!(report.records_kept, 11);
    let mut agent = Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(["run", "--policy", arg(&policy)])
        .spawn()
        .unwrap();
    let journal = Journal::new(Store::open_existing(&state).unwrap());
    wait_until("the agent records its plugin", || {
        journal
            .list(&Filter {
                kind: Some(RecordKind::PluginLoaded),
                ..Filter::default()
            })
            .is_ok_and(|r| !r.is_empty())
    });
    agent.kill().unwrap();
    agent.wait().unwrap();
    let out = medic(&["audit", "--policy", arg(&policy), "--verify"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn status_tells_a_live_agent_from_a_dead_one() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let store = Store::open(&state).unwrap();
    let now = medic_sandbox::now_ms();
    store
        .put_json(
            "agent_status",
            "agent",
            &serde_json::json!({
                "pid": 4242, "started_ms": now, "updated_ms": now, "running": 0, "plugins": [],
            }),
        )
        .unwrap();
    let lock = Store::lock_agent(&state).unwrap();
    let out = medic(&["status", "--state-dir", arg(&state)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("agent pid 4242 running"),
        "{}",
        text(&out.stdout)
    );
    // A second agent is refused, naming the first.
    let e = Store::lock_agent(&state).unwrap_err();
    assert!(matches!(e, StoreError::AgentRunning { .. }), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("pid {}", std::process::id())),
        "{e}"
    );

    drop(lock);
    let out = medic(&["status", "--state-dir", arg(&state)]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("NOT RUNNING"),
        "{}",
        text(&out.stdout)
    );
    let out = medic(&["status", "--state-dir", arg(&state), "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["agent_running"], false);
}

/// A small file system of its own, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                arg(at),
            ])
            .output()
            .ok()?;
        out.status.success().then(|| Self(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Fill the file system holding `dir` up to its last byte.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let filler = dir.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let block = vec![0x66; 64 << 10];
    let mut size = block.len();
    loop {
        match file.write(&block[..size]) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) if size > 1 => size /= 2,
            Err(_) => break,
        }
    }
    let _ = file.sync_all();
    filler
}

#[test]
fn a_full_disk_degrades_the_store_which_recovers_by_itself_with_no_record_lost() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&dir.path().join("small"), "4M") else {
        eprintln!(
            "SKIPPED: cannot mount a tmpfs here (needs root); the unit tests of the audit module inject the same failures"
        );
        return;
    };
    let state = fs.0.join("state");
    let store = Store::open(&state).unwrap();
    let journal = Journal::new(store.clone());
    let mut expected = Vec::new();
    let mut n = 0;
    let big = |n: usize| {
        let mut r = record(n);
        // Large enough that redb must grow its file.
        r.detail = serde_json::json!({ "output": format!("{n}").repeat(40_000) });
        r
    };
    for cycle in 0..5 {
        for _ in 0..3 {
            journal.append(record(n)).unwrap();
            expected.push(format!("record {n}"));
            n += 1;
        }
        let filler = fill(&fs.0);
        // Appends fail once the file must grow; each waits in memory.
        let mut failed = 0;
        while failed < 3 {
            let r = big(n);
            expected.push(r.summary.clone());
            n += 1;
            match journal.append(r) {
                Ok(_) => {}
                Err(StoreError::Deferred { waiting, cause }) => {
                    failed += 1;
                    assert_eq!(waiting, failed, "cycle {cycle}: {cause}");
                }
                Err(e) => panic!("cycle {cycle}: {e}"),
            }
        }
        let health = store.health();
        assert!(
            health.degraded_since_ms.is_some(),
            "cycle {cycle}: {health:?}"
        );
        assert_eq!(health.records_waiting, 3, "cycle {cycle}");
        assert!(
            health.last_error.as_deref().unwrap_or("").contains("space"),
            "cycle {cycle}: {health:?}"
        );
        // The committed part reads and verifies meanwhile.
        let out = medic(&["audit", "--state-dir", arg(&state), "--verify"]);
        assert_clean_exit(&out, "verify on a full disk");

        std::fs::remove_file(&filler).unwrap();
        wait_until("the backlog is written", || journal.flush_backlog().is_ok());
        assert!(
            !store.health().is_degraded(),
            "cycle {cycle}: {:?}",
            store.health()
        );
        let listed: Vec<String> = journal
            .list(&Filter::default())
            .unwrap()
            .into_iter()
            .map(|r| r.entry.summary)
            .collect();
        assert_eq!(listed, expected, "cycle {cycle}");
        let out = medic(&["audit", "--state-dir", arg(&state), "--verify"]);
        assert!(
            text(&out.stdout).contains(&format!("intact: {} records", expected.len())),
            "cycle {cycle}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    drop((journal, store));
}

/// `medic audit --repair`, from the command line.
#[test]
fn repair_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    {
        let journal = Journal::new(Store::open(&state).unwrap());
        for n in 0..5 {
            journal.append(record(n)).unwrap();
        }
        journal.tamper(4, |r| r.entry.summary = "x".into()).unwrap();
    }
    let lock = Store::lock_agent(&state).unwrap();
    let out = medic(&["audit", "--state-dir", arg(&state), "--repair"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("another agent runs"),
        "{}",
        text(&out.stderr)
    );
    drop(lock);
    let out = medic(&["audit", "--state-dir", arg(&state), "--repair"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("3 record(s) kept"), "{stdout}");
    assert!(stdout.contains("record 4"), "{stdout}");
    assert!(stdout.contains("kept as"), "{stdout}");
    let out = medic(&["audit", "--state-dir", arg(&state), "--verify"]);
    assert!(text(&out.stdout).contains("intact: 4 records"));
}
