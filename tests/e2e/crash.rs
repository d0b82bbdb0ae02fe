//! The real `medic run`, killed with SIGKILL at random moments, and at the
//! worst one (runs started from the start log, their commit not landed),
//! while a log grows steadily: every event it accepted runs, exactly once
//! where no run was cut off, and every repair has a record.
//!
//! Each log line names one file, broken (unreadable by `nobody`) before
//! the line is written; `fixture-per-event` repairs that one file. So
//! after the last restart: every file must be readable (no event lost),
//! each line must have exactly one completed run (the tail's position and
//! the queued events land together, so nothing is read twice, and a run
//! cut off is recorded as interrupted and runs again), and each repaired
//! file must have a run that says it repaired it, or an interrupted run
//! that may have (no repair without a record).
//!
//! The same with a file trigger: every file is repaired and every repair
//! has a record.

use crate::agent::readable_by_nobody;
use crate::support::{MedicRun, run_records, workspace};
use medic_agent::audit::Store;
use medic_agent::audit::journal::RecordStatus;
use medic_sandbox::Status;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// `fixture-per-event` repairing files under `files`, on a log trigger
/// naming them in `app.log`.
fn policy(dir: &Path) -> PathBuf {
    let trigger = format!(
        "kind = \"log\"\npath = \"{}\"\npattern = \"broken: (?P<subject>f[0-9]+)\"",
        dir.join("app.log").display()
    );
    policy_with_trigger(dir, &trigger)
}

/// The same plugin with `trigger` (a TOML table's body).
fn policy_with_trigger(dir: &Path, trigger: &str) -> PathBuf {
    let text = format!(
        r#"
[agent]
state_dir = "state"
plugin_dir = "{plugins}"
max_concurrent_runs = 4

[backend]
kind = "local"
principals = {{ "nobody" = "user:nobody" }}

[plugins.fixture-per-event]
component = "fixture-per-event.wasm"
grants = {{ fs-write = ["{files}"] }}
settings = {{ root = "{files}" }}
concurrency = 2

[[plugins.fixture-per-event.triggers]]
{trigger}
"#,
        plugins = workspace().join("target/plugins").display(),
        files = dir.join("files").display(),
    );
    let file = dir.join("policy.toml");
    std::fs::write(&file, text).unwrap();
    file
}

/// The end of the agents' log, for a failure's message.
fn agent_log(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Whether the agent has saved where its tail starts: before that, lines
/// written would be taken for the file's old content and skipped.
fn tail_position_saved(state: &Path) -> bool {
    use redb::{ReadableDatabase, ReadableTableMetadata};
    let Ok(store) = Store::open(state) else {
        return false;
    };
    let txn = store.database().begin_read().unwrap();
    let table = redb::TableDefinition::<&str, &[u8]>::new("tail_offsets");
    txn.open_table(table)
        .is_ok_and(|t| t.len().unwrap_or(0) > 0)
}

/// Wait until `done` says `Ok`; its last `Err` says how far it got.
fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + limit;
    loop {
        match done() {
            Ok(()) => return,
            Err(progress) => assert!(
                Instant::now() < deadline,
                "not within {limit:?}: {what}; {progress}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Spin (up to 5 s) until the start log holds something: the worst moment
/// for a kill, with runs started whose commit has not landed.
fn wait_for_the_start_log(state: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if ["start-a.log", "start-b.log"]
            .iter()
            .any(|name| std::fs::metadata(state.join(name)).is_ok_and(|m| m.len() > 0))
        {
            return;
        }
        std::hint::spin_loop();
    }
}

#[test]
fn killed_at_random_moments_the_agent_loses_no_event_and_no_record() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let log = dir.path().join("app.log");
    std::fs::write(&log, "").unwrap();
    let policy = policy(dir.path());
    let state = dir.path().join("state");

    let mut agent = MedicRun::start(&policy);
    wait_until(
        "the first agent saves its tail position",
        Duration::from_secs(60),
        || {
            tail_position_saved(&state)
                .then_some(())
                .ok_or_else(|| agent_log(dir.path()))
        },
    );

    // A steady stream: a broken file, then the line that names it.
    let written = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (written, stop, files, log) =
            (written.clone(), stop.clone(), files.clone(), log.clone());
        std::thread::spawn(move || {
            let mut out = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
            while !stop.load(Ordering::Relaxed) {
                let n = written.load(Ordering::Relaxed);
                let file = files.join(format!("f{n}"));
                std::fs::write(&file, "x").unwrap();
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
                writeln!(out, "2026-11-25 10:00:00 ERROR broken: f{n}").unwrap();
                written.store(n + 1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(4));
            }
        })
    };

    let mut rng = fastrand::Rng::with_seed(0x006d_6564_6963);
    let kills = 25;
    for kill in 0..kills {
        // Anywhere: during start-up, mid-backlog, mid-run, mid-commit;
        // every other time while lines are in the start log.
        std::thread::sleep(Duration::from_millis(rng.u64(20..1200)));
        if kill % 2 == 1 {
            wait_for_the_start_log(&state);
        }
        agent.kill();
        agent = MedicRun::start(&policy);
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let accepted = written.load(Ordering::Relaxed);

    // The last agent takes up every line and every event left.
    let mut completed: BTreeMap<String, Vec<Status>> = BTreeMap::new();
    let mut interrupted: BTreeMap<String, usize> = BTreeMap::new();
    wait_until(
        "every line has a completed run",
        Duration::from_secs(300),
        || {
            let runs = run_records(&state);
            completed.clear();
            interrupted.clear();
            for run in &runs {
                let subject = run.detail["event"]["subject"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                match run.status {
                    RecordStatus::Interrupted => *interrupted.entry(subject).or_default() += 1,
                    RecordStatus::Run(status) => completed.entry(subject).or_default().push(status),
                    _ => {}
                }
            }
            if completed.len() >= accepted {
                Ok(())
            } else {
                Err(format!(
                    "{} of {accepted} lines have a completed run; agent log:\n{}",
                    completed.len(),
                    agent_log(dir.path())
                ))
            }
        },
    );
    agent.kill();

    let mut lost = Vec::new();
    let mut twice = Vec::new();
    let mut unrecorded_repairs = Vec::new();
    for n in 0..accepted {
        let name = format!("f{n}");
        if !readable_by_nobody(&files.join(&name)) {
            lost.push(name.clone());
        }
        let runs = completed.get(&name).cloned().unwrap_or_default();
        if runs.len() > 1 {
            twice.push((name.clone(), runs.clone()));
        }
        let repaired_on_record =
            runs.contains(&Status::Remediated) || interrupted.get(&name).is_some_and(|n| *n > 0);
        if !repaired_on_record {
            unrecorded_repairs.push((name.clone(), runs));
        }
    }
    let cut_off: usize = interrupted.values().sum();
    eprintln!(
        "{kills} kills: {accepted} events accepted, {} run, {cut_off} runs cut off and run again",
        completed.len()
    );
    assert!(lost.is_empty(), "events never run: {lost:?}");
    assert!(twice.is_empty(), "events run more than once: {twice:?}");
    assert!(
        unrecorded_repairs.is_empty(),
        "repairs with no record: {unrecorded_repairs:?}"
    );
    assert_eq!(
        completed.len(),
        accepted,
        "runs for lines never written: {:?}",
        completed.keys().filter(|k| {
            k.trim_start_matches('f')
                .parse::<usize>()
                .is_ok_and(|n| n >= accepted)
        })
    );

    let verify = Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(["audit", "--verify", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// A follow-up run a plugin asked for is kept in the durable queue: the
/// agent killed before, while or after it is due, each event still gets
/// exactly one completed follow-up run (besides any cut off and recorded
/// as interrupted), naming the event it follows.
#[test]
fn follow_up_runs_survive_kills_and_run_once() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let log = dir.path().join("app.log");
    std::fs::write(&log, "").unwrap();
    let policy = policy(dir.path());
    let text = std::fs::read_to_string(&policy).unwrap();
    let text = text.replace(
        "settings = { root = ",
        "settings = { follow_up_after = \"2\", root = ",
    );
    assert!(text.contains("follow_up_after"));
    std::fs::write(&policy, text).unwrap();
    let state = dir.path().join("state");

    let follow_ups = |state: &Path| -> BTreeMap<String, Vec<String>> {
        let mut by_follows: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for run in run_records(state) {
            let event = &run.detail["event"];
            if event["kind"] == "follow-up" && matches!(run.status, RecordStatus::Run(_)) {
                by_follows
                    .entry(
                        event["fields"]["follows"]
                            .as_str()
                            .unwrap_or("")
                            .to_string(),
                    )
                    .or_default()
                    .push(event["subject"].as_str().unwrap_or("").to_string());
            }
        }
        by_follows
    };
    let first_runs = |state: &Path| -> BTreeMap<String, String> {
        run_records(state)
            .into_iter()
            .filter(|r| r.detail["event"]["kind"] == "log-line")
            .filter(|r| matches!(r.status, RecordStatus::Run(_)))
            .map(|r| {
                (
                    r.detail["event"]["id"].as_str().unwrap_or("").to_string(),
                    r.detail["event"]["subject"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                )
            })
            .collect()
    };

    let mut rng = fastrand::Rng::with_seed(0x666f_6c6c_6f77);
    let mut agent = MedicRun::start(&policy);
    let mut out = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    let rounds = 6;
    let per_round = 3;
    for round in 0..rounds {
        wait_until(
            "the agent saves its tail position",
            Duration::from_secs(60),
            || {
                tail_position_saved(&state)
                    .then_some(())
                    .ok_or_else(|| agent_log(dir.path()))
            },
        );
        for i in 0..per_round {
            let name = format!("f{}", round * per_round + i);
            let file = files.join(&name);
            std::fs::write(&file, "x").unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
            writeln!(out, "2026-11-25 10:00:00 ERROR broken: {name}").unwrap();
        }
        let expected = (round + 1) * per_round;
        wait_until("this round's first runs", Duration::from_secs(120), || {
            let done = first_runs(&state).len();
            (done >= expected)
                .then_some(())
                .ok_or_else(|| format!("{done} of {expected} first runs"))
        });
        // Before the follow-ups are due, about when they are, or after.
        std::thread::sleep(Duration::from_millis(rng.u64(0..3000)));
        agent.kill();
        agent = MedicRun::start(&policy);
    }
    let total = rounds * per_round;
    wait_until(
        "every event's follow-up ran",
        Duration::from_secs(120),
        || {
            let done = follow_ups(&state).len();
            (done >= total).then_some(()).ok_or_else(|| {
                format!(
                    "{done} of {total} follow-ups; agent log:\n{}",
                    agent_log(dir.path())
                )
            })
        },
    );
    agent.kill();
    let first = first_runs(&state);
    let follow_ups = follow_ups(&state);
    assert_eq!(first.len(), total, "{first:?}");
    for (event_id, subject) in &first {
        assert_eq!(
            follow_ups.get(event_id),
            Some(&vec![subject.clone()]),
            "the follow-up of {event_id} ({subject}): {follow_ups:#?}"
        );
    }
}

/// A file trigger's runs start from the start log, before their commit
/// lands. Killed at random moments while files break one after another,
/// the agent still repairs every file (a run cut off is put back from the
/// log; a change made while it was down is found by the rescan at start),
/// and every repaired file has a record: a completed run that names it,
/// or a run recorded as interrupted that may have repaired it.
#[test]
fn killed_at_random_moments_file_trigger_repairs_all_land_and_have_records() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let trigger = format!(
        "kind = \"file\"\npath = \"{}\"\nchanges = [\"attribute\"]\ndebounce = \"1ms\"",
        files.display()
    );
    let policy = policy_with_trigger(dir.path(), &trigger);
    let state = dir.path().join("state");

    // When each file was broken, in ms since the epoch.
    let broken_at = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (broken_at, stop, files) = (broken_at.clone(), stop.clone(), files.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let n = broken_at.lock().unwrap().len();
                let file = files.join(format!("f{n}"));
                std::fs::write(&file, "x").unwrap();
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
                broken_at.lock().unwrap().push(medic_sandbox::now_ms());
                std::thread::sleep(Duration::from_millis(3));
            }
        })
    };
    let mut rng = fastrand::Rng::with_seed(0x0073_7461_7274);
    let mut agent = MedicRun::start(&policy);
    let kills = 40;
    let mut killed_at = Vec::new();
    for kill in 0..kills {
        // Anywhere: during start-up, the rescan, mid-run, mid-commit; and
        // every other time at the worst moment, while a run is in the
        // start log and its commit has not landed.
        std::thread::sleep(Duration::from_millis(rng.u64(20..600)));
        if kill % 2 == 1 {
            wait_for_the_start_log(&state);
        }
        agent.kill();
        killed_at.push(medic_sandbox::now_ms());
        agent = MedicRun::start(&policy);
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let broken_at = broken_at.lock().unwrap().clone();
    let broken = broken_at.len();
    wait_until("every file is repaired", Duration::from_secs(300), || {
        let left: Vec<usize> = (0..broken)
            .filter(|n| !readable_by_nobody(&files.join(format!("f{n}"))))
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} of {broken} files not repaired, the first {:?}; agent log:\n{}",
                left.len(),
                &left[..left.len().min(10)],
                agent_log(dir.path())
            ))
        }
    });
    // The last runs' records land once their commit does.
    let root = files.display().to_string();
    let mut unrecorded = Vec::new();
    let mut cut_off = 0;
    wait_until("every repair has a record", Duration::from_secs(60), || {
        let runs = run_records(&state);
        let mut named = std::collections::BTreeSet::new();
        cut_off = 0;
        for run in &runs {
            let subject = run.detail["event"]["subject"].as_str().unwrap_or_default();
            match run.status {
                RecordStatus::Interrupted => {
                    cut_off += 1;
                    named.insert(subject.to_string());
                    if subject == root {
                        // A rescan cut off may have repaired any file
                        // broken before the kill that cut it off.
                        let started = run.detail["started_ms"].as_u64().unwrap_or(0);
                        let kill = killed_at
                            .iter()
                            .copied()
                            .find(|k| *k >= started)
                            .unwrap_or(u64::MAX);
                        for (n, at) in broken_at.iter().enumerate() {
                            if *at <= kill {
                                named.insert(format!("{root}/f{n}"));
                            }
                        }
                    }
                }
                RecordStatus::Run(Status::Remediated) => {
                    // The paths its actions changed (a rescan's lists
                    // every one).
                    let detail = run.detail.to_string();
                    for n in 0..broken {
                        let path = format!("{root}/f{n}");
                        if detail.contains(&format!("\"{path}\"")) {
                            named.insert(path);
                        }
                    }
                }
                _ => {}
            }
        }
        unrecorded = (0..broken)
            .map(|n| format!("{root}/f{n}"))
            .filter(|path| !named.contains(path))
            .collect();
        if unrecorded.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} repairs have no record, the first {:?}",
                unrecorded.len(),
                &unrecorded[..unrecorded.len().min(10)]
            ))
        }
    });
    agent.kill();
    eprintln!(
        "{kills} kills: {broken} files broken and repaired, {cut_off} runs cut off and run again"
    );
    let verify = Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(["audit", "--verify", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}
