//! The real `medic run` with a `journal` trigger, journalctl being a fake
//! put first in `PATH` (`host/agent/src/triggers/fixtures/journal/
//! fake-journalctl`: a file of JSON entries, the one on line N with the
//! cursor `fake-N`): every entry the trigger takes runs the plugin exactly
//! once, through `kill -9` between batches and a journalctl that dies; a
//! reload and the agent's end stop its journalctl; `medic check` reports a
//! journal trigger's bad keys where they are.

#![cfg(unix)]

use crate::support::{MedicRun, PATIENCE, run_records, workspace};
use medic_agent::audit::Store;
use medic_agent::audit::journal::RecordStatus;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const FAKE: &str = "host/agent/src/triggers/fixtures/journal/fake-journalctl";

fn policy(dir: &Path, message: &str) -> PathBuf {
    let text = format!(
        r#"
[agent]
state_dir = "state"
plugin_dir = "{plugins}"

[plugins.fixture-noop]
component = "fixture-noop.wasm"
grants = {{ fs-read = ["/tmp"] }}
concurrency = 4

[[plugins.fixture-noop.triggers]]
kind = "journal"
identifier = "app"
priority = "err"
message = "{message}"
"#,
        plugins = workspace().join("target/plugins").display(),
    );
    let file = dir.join("policy.toml");
    std::fs::write(&file, text).unwrap();
    file
}

/// The fake journalctl's folder and journal, and what was written to it.
struct Journal {
    bin: PathBuf,
    file: PathBuf,
    written: usize,
    /// The subjects (units) of the entries the trigger takes.
    expected: Vec<String>,
    rng: fastrand::Rng,
}

impl Journal {
    fn new(dir: &Path) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let bin = dir.join("bin");
        std::fs::create_dir(&bin).unwrap();
        let program = bin.join("journalctl");
        std::fs::copy(workspace().join(FAKE), &program).unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = bin.join("journal.jsonl");
        std::fs::write(&file, "").unwrap();
        Self {
            bin,
            file,
            written: 0,
            expected: Vec::new(),
            rng: fastrand::Rng::with_seed(0x6a6f_7572),
        }
    }

    /// Start the agent with the fake first in its `PATH`.
    fn agent(&self, policy: &Path) -> MedicRun {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let path = std::env::join_paths(
            std::iter::once(self.bin.clone()).chain(std::env::split_paths(&path)),
        )
        .unwrap();
        MedicRun::start_with(policy, |command| {
            command.env("PATH", path);
        })
    }

    /// Append `count` entries in one write: a third are not the trigger's
    /// (another identifier, a lower priority, another message), each has a
    /// unit of its own (its subject, so that no two coalesce).
    fn write(&mut self, count: usize) {
        let mut text = String::new();
        for _ in 0..count {
            self.written += 1;
            let n = self.written;
            let unit = format!("s{n}.service");
            let (identifier, priority, message) = match self.rng.u32(0..9) {
                0 => ("other", "3", format!("fail {n}")),
                1 => ("app", "6", format!("fail {n}")),
                2 => ("app", "3", format!("ok {n}")),
                _ => {
                    self.expected.push(unit.clone());
                    ("app", ["0", "2", "3"][n % 3], format!("fail {n}"))
                }
            };
            text.push_str(
                &serde_json::json!({
                    "__CURSOR": format!("fake-{n}"),
                    "__REALTIME_TIMESTAMP": std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_micros()
                        .to_string(),
                    "_SYSTEMD_UNIT": unit,
                    "SYSLOG_IDENTIFIER": identifier,
                    "PRIORITY": priority,
                    "_PID": "4242",
                    "_HOSTNAME": "web-1",
                    "MESSAGE": message,
                })
                .to_string(),
            );
            text.push('\n');
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(&self.file)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }

    fn side(&self, suffix: &str) -> PathBuf {
        PathBuf::from(format!("{}.{suffix}", self.file.display()))
    }

    /// The arguments of each journalctl started so far.
    fn runs(&self) -> Vec<String> {
        std::fs::read_to_string(self.side("args"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The pid of the last journalctl started.
    fn last_pid(&self) -> i32 {
        std::fs::read_to_string(self.side("pids"))
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .parse()
            .unwrap()
    }
}

fn wait_until<W: std::fmt::Display>(what: impl Fn() -> W, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "not within {PATIENCE:?}: {}",
            what()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Gone, or a zombie nobody reaps (which runs nothing).
fn is_dead(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().next());
    matches!(state, None | Some("Z") | Some("X"))
}

/// Completed runs per subject (a run cut off by a kill runs again).
fn completed(state: &Path) -> BTreeMap<String, usize> {
    let mut done = BTreeMap::new();
    for run in run_records(state) {
        if matches!(run.status, RecordStatus::Run(_)) {
            let subject = run.detail["event"]["subject"].as_str().unwrap_or_default();
            *done.entry(subject.to_string()).or_default() += 1;
        }
    }
    done
}

/// The saved cursor, and how many events wait in the durable queue.
fn progress(state: &Path) -> (Option<String>, u64) {
    use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};
    let Ok(store) = Store::open(state) else {
        return (None, 0);
    };
    let Ok(txn) = store.database().begin_read() else {
        return (None, 0);
    };
    let cursors = redb::TableDefinition::<&str, &[u8]>::new("journal_cursors");
    let cursor = txn.open_table(cursors).ok().and_then(|t| {
        let (_, value) = t.iter().ok()?.next()?.ok()?;
        serde_json::from_slice::<String>(value.value()).ok()
    });
    let queue = redb::TableDefinition::<u64, &[u8]>::new("event_queue");
    let waiting = txn.open_table(queue).map_or(0, |t| t.len().unwrap_or(0));
    (cursor, waiting)
}

#[test]
fn every_entry_the_trigger_takes_runs_once_through_kill_9_and_a_dying_journalctl() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let state = root.join("state");
    let policy = policy(&root, "^fail");
    let mut journal = Journal::new(&root);
    // History: not replayed at the first start.
    journal.write(20);
    journal.expected.clear();

    let mut agent = journal.agent(&policy);
    wait_until(|| "journalctl starts", || !journal.runs().is_empty());
    let first = journal.runs()[0].clone();
    let (before, after) = first
        .split_once(" --since=@")
        .expect("a first start from its start time");
    assert_eq!(
        before,
        "--follow --output=json --no-pager --all --priority=0..3"
    );
    assert!(after.ends_with(" SYSLOG_IDENTIFIER=app"), "{first}");
    let said = || std::fs::read_to_string(root.join("agent.log")).unwrap_or_default();
    let missing = |journal: &Journal| {
        let done = completed(&state);
        let missing: Vec<_> = journal
            .expected
            .iter()
            .filter(|s| !done.contains_key(*s))
            .collect();
        format!(
            "missing {missing:?}; progress {:?}; journalctl runs {:?}; the agent said:\n{}",
            progress(&state),
            journal.runs(),
            said()
        )
    };
    let (mut kills, mut deaths) = (0, 0);
    for round in 0..40 {
        let count = journal.rng.usize(1..30);
        journal.write(count);
        match journal.rng.u32(0..6) {
            // Killed, perhaps before it read the batch; more written while
            // it is down. Its journalctl dies with it.
            0 | 1 => {
                let pid = journal.last_pid();
                agent.kill();
                wait_until(
                    || format!("round {round}: journalctl {pid} ends with the agent"),
                    || is_dead(pid),
                );
                let more = journal.rng.usize(1..30);
                journal.write(more);
                let runs = journal.runs().len();
                agent = journal.agent(&policy);
                wait_until(
                    || {
                        format!(
                            "round {round}: journalctl starts again; {}",
                            missing(&journal)
                        )
                    },
                    || journal.runs().len() > runs,
                );
                let last = journal.runs().last().cloned().unwrap();
                assert!(last.contains("--cursor=fake-"), "round {round}: {last}");
                kills += 1;
            }
            // journalctl exits under the agent, which starts it again.
            2 => {
                let runs = journal.runs().len();
                std::fs::write(journal.side("die"), "").unwrap();
                wait_until(
                    || {
                        format!(
                            "round {round}: journalctl starts again; {}",
                            missing(&journal)
                        )
                    },
                    || journal.runs().len() > runs,
                );
                deaths += 1;
            }
            _ => {}
        }
        if journal.rng.bool() {
            wait_until(
                || format!("round {round}: caught up; {}", missing(&journal)),
                || {
                    let done = completed(&state);
                    journal.expected.iter().all(|s| done.contains_key(s))
                },
            );
        }
    }

    // Everything read and saved, nothing waiting: no run can come later.
    let last = format!("fake-{}", journal.written);
    wait_until(
        || format!("all read and run; {}", missing(&journal)),
        || {
            let done = completed(&state);
            progress(&state) == (Some(last.clone()), 0)
                && journal.expected.iter().all(|s| done.contains_key(s))
        },
    );
    let done = completed(&state);
    let twice: Vec<_> = done.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "run more than once: {twice:?}");
    let unexpected: Vec<_> = done
        .keys()
        .filter(|s| !journal.expected.contains(s))
        .collect();
    assert!(
        unexpected.is_empty(),
        "runs for entries not taken: {unexpected:?}"
    );
    assert_eq!(done.len(), journal.expected.len());
    assert!(kills > 3 && deaths > 3, "{kills} kills, {deaths} deaths");
    eprintln!(
        "{} entries, {} taken: {kills} kills, {deaths} journalctl deaths, {} journalctl runs",
        journal.written,
        journal.expected.len(),
        journal.runs().len()
    );

    // The plugin's event.
    let subject = journal.expected.last().unwrap().clone();
    let run = run_records(&state)
        .into_iter()
        .find(|r| r.detail["event"]["subject"] == subject.as_str())
        .unwrap();
    let event = &run.detail["event"];
    assert_eq!(event["kind"], "system-event", "{event}");
    assert_eq!(event["source"], "journal:app", "{event}");
    let fields = &event["fields"];
    assert_eq!(fields["unit"], subject.as_str(), "{event}");
    assert_eq!(fields["identifier"], "app", "{event}");
    assert_eq!(fields["host"], "web-1", "{event}");
    assert_eq!(fields["pid"], "4242", "{event}");
    let n: usize = subject[1..subject.len() - ".service".len()]
        .parse()
        .unwrap();
    assert_eq!(fields["cursor"], format!("fake-{n}"), "{event}");
    assert_eq!(fields["message"], format!("fail {n}"), "{event}");
    assert!(["emerg", "crit", "err"].contains(&fields["level"].as_str().unwrap()));

    // Each death said once, as it happened, not per line or per retry.
    let said = said();
    let told = said.matches("journalctl exited").count();
    assert!(
        told >= 1 && told <= deaths,
        "{told} for {deaths} deaths:\n{said}"
    );
    assert!(said.contains("reads the journal again"), "{said}");
    agent.kill();
}

#[test]
fn a_reload_and_the_agent_s_end_stop_its_journalctl() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let state = root.join("state");
    let policy = policy(&root, "^fail");
    let mut journal = Journal::new(&root);
    let mut agent = journal.agent(&policy);
    wait_until(|| "journalctl starts", || !journal.runs().is_empty());
    journal.write(10);
    let first = journal.expected.clone();
    wait_until(
        || "the first entries run",
        || {
            let done = completed(&state);
            first.iter().all(|s| done.contains_key(s))
        },
    );

    // A changed trigger: the old journalctl is killed, a new one started
    // (its match is the same: it resumes at the saved cursor).
    let old = journal.last_pid();
    policy_with(&root, "^(?:fail|ok)");
    wait_until(|| "the reload kills the old journalctl", || is_dead(old));
    wait_until(|| "a new journalctl", || journal.runs().len() == 2);
    assert!(
        journal.runs()[1].contains("--cursor=fake-"),
        "{:?}",
        journal.runs()
    );
    journal.write(10);
    let all: Vec<String> = (11..=20).map(|n| format!("s{n}.service")).collect();
    let after: Vec<&String> = all
        .iter()
        .filter(|s| journal.expected.contains(s))
        .collect();
    wait_until(
        || "the entries after the reload run",
        || {
            let done = completed(&state);
            after.iter().all(|s| done.contains_key(*s))
        },
    );

    // The agent asked to stop: its journalctl stops with it.
    let pid = journal.last_pid();
    let status = agent.terminate();
    assert!(status.success(), "{status}");
    wait_until(|| "journalctl ends with the agent", || is_dead(pid));
}

fn policy_with(root: &Path, message: &str) {
    let text = std::fs::read_to_string(root.join("policy.toml")).unwrap();
    let line = text.lines().find(|l| l.starts_with("message = ")).unwrap();
    let changed = text.replace(line, &format!("message = \"{message}\""));
    // Written beside and renamed, so the watcher sees the whole file.
    let next = root.join("policy.toml.next");
    std::fs::write(&next, changed).unwrap();
    std::fs::rename(next, root.join("policy.toml")).unwrap();
}

/// `medic check` on `policy`: its exit code and what it said.
fn check(policy: &Path, path: Option<&str>) -> (Option<i32>, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_medic"));
    command
        .args(["check", "--policy"])
        .arg(policy)
        .env("MEDIC_CACHE_DIR", workspace().join("target/test-cache"));
    if let Some(path) = path {
        command.env("PATH", path);
    }
    let out = command.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_reports_a_journal_trigger_s_bad_keys_where_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("journal.toml");
    let text = format!(
        "[agent]\nplugin_dir = \"{}\"\n\n[plugins.fixture-noop]\ncomponent = \"fixture-noop.wasm\"\ngrants = {{ fs-read = [\"/tmp\"] }}\n\n[[plugins.fixture-noop.triggers]]\nkind = \"journal\"\nunit = [\"nginx\", \"getty@.service\"]\npriority = \"error\"\nmessage = \"(\"\nfollow = true\n",
        workspace().join("target/plugins").display()
    );
    std::fs::write(&policy, &text).unwrap();
    // A key no trigger has: said first, as for every kind.
    let (code, said) = check(&policy, None);
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains("journal.toml:13:1: in [plugins.fixture-noop]: unknown field `follow`"),
        "{said}"
    );

    // Without it, every other problem at once.
    std::fs::write(&policy, text.replace("follow = true\n", "")).unwrap();
    let (code, said) = check(&policy, None);
    assert_eq!(code, Some(1), "{said}");
    for expected in [
        "journal.toml:10:8: unit: unit \"getty@.service\" is a template",
        "journal.toml:11:12: priority = \"error\" is no syslog level",
        "fix: use emerg, alert, crit, err, warning, notice, info or debug",
        "journal.toml:12:11: message is not a valid regular expression",
        "3 problems found",
    ] {
        assert!(said.contains(expected), "missing {expected:?} in {said}");
    }

    // Fixed, it checks clean, whether or not journalctl is installed here.
    let fixed = text
        .replace("getty@.service", "getty@tty1")
        .replace("\"error\"", "\"err\"")
        .replace("\"(\"", "\"failed\"")
        .replace("follow = true\n", "");
    std::fs::write(&policy, fixed).unwrap();
    let (code, said) = check(&policy, Some("/nonexistent"));
    assert_eq!(code, Some(0), "{said}");
}

#[test]
fn without_journalctl_the_agent_does_not_start_and_names_the_package() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy(dir.path(), "^fail");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(["run", "--policy"])
        .arg(&policy)
        .env("PATH", &empty)
        .env("MEDIC_CACHE_DIR", workspace().join("target/test-cache"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("journalctl is not in PATH") && stderr.contains("package `systemd`"),
        "{stderr}"
    );
}
