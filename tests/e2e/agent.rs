//! The agent serving a real policy: each trigger kind fires the right
//! plugin, events are coalesced, the flap guard trips and stays tripped
//! across a restart, and the journal's chain verifies.

use crate::support::workspace;
use medic_agent::audit::journal::{AuditRecord, Filter};
use medic_agent::{Agent, AgentContext};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A temporary folder with a policy, a share, a log and an event journal.
pub struct Lab {
    pub dir: tempfile::TempDir,
}

impl Lab {
    pub fn new() -> Self {
        let lab = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(lab.share()).unwrap();
        std::fs::write(lab.share().join("readme.txt"), "hello").unwrap();
        std::fs::write(lab.path("access.log"), "").unwrap();
        std::fs::write(lab.path("events.jsonl"), "").unwrap();
        lab.lock("readme.txt");
        lab
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn share(&self) -> PathBuf {
        self.path("share")
    }

    /// Owner-only: on a file with an ACL, chmod also narrows the mask, so
    /// named entries stop counting.
    pub fn lock(&self, file: &str) {
        std::fs::set_permissions(
            self.share().join(file),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }

    /// The policy: share-guard on the share, with every trigger kind.
    pub fn policy(&self, extra: &str) -> PathBuf {
        let text = format!(
            r#"
[agent]
state_dir = "state"
plugin_dir = "{plugins}"
max_concurrent_runs = 4

[backend]
kind = "local"
principals = {{ "Users" = "user:nobody" }}

[plugins.share-guard]
component = "share-guard.wasm"
grants = {{ fs-write = ["{share}"] }}
settings = {{ path = "{share}", principals = ["Users"] }}
{extra}

[[plugins.share-guard.triggers]]
kind = "file"
path = "{share}"
changes = ["attribute", "create"]
debounce = "50ms"

[[plugins.share-guard.triggers]]
kind = "log"
path = "{log}"
pattern = "access denied on (?P<subject>\\S+)"

[[plugins.share-guard.triggers]]
kind = "event_log"
path = "{events}"
source = "Windows Server Update Services"
ids = [364]

[[plugins.share-guard.triggers]]
kind = "manual"
"#,
            plugins = workspace().join("target/plugins").display(),
            share = self.share().display(),
            log = self.path("access.log").display(),
            events = self.path("events.jsonl").display(),
        );
        let file = self.path("policy.toml");
        std::fs::write(&file, text).unwrap();
        file
    }

    pub fn append(&self, name: &str, line: &str) {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(self.path(name))
            .unwrap();
        writeln!(file, "{line}").unwrap();
    }
}

/// An agent serving on a background runtime until dropped.
pub struct Running {
    pub ctx: Arc<AgentContext>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    pub fn start(policy: &Path) -> Self {
        let agent = Agent::load(policy, std::sync::Arc::new(medic::catalog::Catalog))
            .unwrap_or_else(|e| panic!("{e}"));
        let ctx = agent.context().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(agent.serve(async {
                let _ = stopped.await;
            }))
            .unwrap();
        });
        // Let the watchers start before the test changes anything.
        std::thread::sleep(Duration::from_millis(300));
        Self {
            ctx,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Wait (up to the suite's patience) for a run record matching `pred`.
    pub fn wait_for_run(&self, what: &str, pred: impl Fn(&AuditRecord) -> bool) -> AuditRecord {
        let deadline = Instant::now() + crate::support::PATIENCE;
        loop {
            let runs = self.runs();
            if let Some(found) = runs.iter().find(|r| pred(r)) {
                return found.clone();
            }
            if Instant::now() >= deadline {
                // Every record, not only runs: a rejection says why.
                let journal: Vec<String> = self
                    .ctx
                    .journal
                    .list(&Filter::default())
                    .unwrap()
                    .iter()
                    .map(|r| format!("{} {} {}: {}", r.seq, r.kind.as_str(), r.plugin, r.summary))
                    .collect();
                panic!(
                    "no run {what} within {:?}; the journal: {journal:#?}",
                    crate::support::PATIENCE
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Wait (up to the suite's patience) for a flap-guard record with this status.
    pub fn wait_for_guard(&self, status: &str) {
        let deadline = Instant::now() + crate::support::PATIENCE;
        while !self
            .ctx
            .journal
            .list(&Filter {
                kind: Some(medic_agent::audit::journal::RecordKind::FlapGuard),
                ..Filter::default()
            })
            .unwrap()
            .iter()
            .any(|r| r.status.as_str() == status)
        {
            assert!(Instant::now() < deadline, "the flap guard never {status}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Wait (up to the suite's patience) until the status snapshot shows no event queued
    /// and no run in flight.
    pub fn wait_until_idle(&self) {
        let deadline = Instant::now() + crate::support::PATIENCE;
        loop {
            let idle = medic_agent::dispatch::read_status(&self.ctx.store)
                .is_some_and(|s| s.running == 0 && s.plugins.iter().all(|p| p.queued == 0));
            if idle {
                return;
            }
            assert!(Instant::now() < deadline, "the agent never became idle");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn runs(&self) -> Vec<AuditRecord> {
        self.ctx
            .journal
            .list(&Filter {
                kind: Some(medic_agent::audit::journal::RecordKind::Run),
                ..Filter::default()
            })
            .unwrap()
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn event_kind(record: &AuditRecord) -> String {
    record.detail["event"]["kind"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Whether `nobody` can read `path`, mask included: a dry-run
/// `ensure-access` that would change nothing.
pub(crate) fn readable_by_nobody(path: &Path) -> bool {
    use medic_backends::FileSystem;
    use medic_backends::fs::AccessRight;
    let mut names = medic_backends::PrincipalMap::default();
    names.insert_spec("Users=user:nobody").unwrap();
    let fs = medic_backends::local_fs::LocalFileSystem::new(names);
    let path = medic_backends::fs::Beneath::new(path, "").unwrap();
    fs.ensure_access(&path, "Users", AccessRight::Read, false, false, None)
        .unwrap()
        .changed
        .is_empty()
}

#[test]
fn each_trigger_kind_fires_the_plugin() {
    let lab = Lab::new();
    let agent = Running::start(&lab.policy(""));

    // file: an attribute change on the share is repaired.
    std::fs::set_permissions(
        lab.share().join("readme.txt"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let run = agent.wait_for_run("after a file change", |r| {
        event_kind(r) == "file-changed" && r.status.as_str() == "remediated"
    });
    assert!(readable_by_nobody(&lab.share().join("readme.txt")));
    assert!(
        run.summary.contains("lacked read access"),
        "{}",
        run.summary
    );

    // log: a matching line, with the named capture as subject.
    lab.lock("readme.txt");
    lab.append("access.log", "ignored line");
    lab.append("access.log", "2026-11-24 access denied on readme.txt");
    let run = agent.wait_for_run("after a log line", |r| event_kind(r) == "log-line");
    assert_eq!(run.detail["event"]["subject"], "readme.txt");

    // event_log: a WSUS 364 entry.
    lab.append("events.jsonl", r#"{"id": 364, "source": "Windows Server Update Services", "level": "Error", "message": "Content file download failed. Reason: Access is denied."}"#);
    let run = agent.wait_for_run("after an event-log entry", |r| {
        event_kind(r) == "system-event"
    });
    assert_eq!(run.detail["event"]["fields"]["event-id"], "364");

    // manual: `medic send` drops a request into the inbox.
    medic_agent::triggers::inbox::send(
        &lab.path("state"),
        &medic_agent::triggers::inbox::InboxRequest {
            plugin: "share-guard".into(),
            event: medic_sandbox::EventRecord::manual("by hand"),
        },
    )
    .unwrap();
    let run = agent.wait_for_run("after a manual request", |r| event_kind(r) == "manual");
    assert_eq!(run.detail["event"]["subject"], "by hand");

    // The plugin's own ACL changes did not set off further file-triggered runs.
    std::thread::sleep(Duration::from_millis(500));
    let file_runs = agent
        .runs()
        .iter()
        .filter(|r| event_kind(r) == "file-changed")
        .count();
    assert!(
        file_runs <= 2,
        "the plugin re-triggered itself: {file_runs} file runs"
    );

    assert!(matches!(agent.ctx.journal.verify().unwrap(), Ok(n) if n >= 5));
    agent.stop();
}

#[test]
fn the_flap_guard_trips_and_holds_across_a_restart() {
    let lab = Lab::new();
    let policy = lab.policy("flap_guard = { max_mutating_runs = 2, within = \"1h\" }");
    let send = || {
        medic_agent::triggers::inbox::send(
            &lab.path("state"),
            &medic_agent::triggers::inbox::InboxRequest {
                plugin: "share-guard".into(),
                event: medic_sandbox::EventRecord::manual(&format!("{:?}", Instant::now())),
            },
        )
        .unwrap();
    };
    {
        // The file trigger's look at start-up repairs the locked file: one
        // run that changed the system. A manual event after a new lock
        // makes the second, and the guard trips.
        let agent = Running::start(&policy);
        agent.wait_for_run("the look at start-up that repairs", |r| {
            r.status.as_str() == "remediated"
        });
        lab.lock("readme.txt");
        send();
        agent.wait_for_guard("tripped");
        // Runs decided before the guard tripped may still change the file:
        // wait until none is queued or in flight, then break it again.
        agent.wait_until_idle();
        lab.lock("readme.txt");
        let before = agent.runs().len();
        send();
        let held = agent.wait_for_run("held by the flap guard", |r| {
            agent.runs().len() > before
                && r.summary.starts_with("[flap guard: dry run]")
                && r.seq > agent.runs()[before - 1].seq
        });
        assert_eq!(held.status.as_str(), "needs-approval");
        assert!(
            !readable_by_nobody(&lab.share().join("readme.txt")),
            "the held run changed nothing"
        );
        let trips = agent
            .ctx
            .journal
            .list(&Filter {
                kind: Some(medic_agent::audit::journal::RecordKind::FlapGuard),
                ..Filter::default()
            })
            .unwrap();
        assert_eq!(trips.len(), 1);
        assert_eq!(trips[0].status.as_str(), "tripped");
        agent.stop();
    }
    // After a restart the guard still holds.
    let agent = Running::start(&policy);
    send();
    let before = agent.runs().len();
    let held = agent.wait_for_run("held after the restart", |r| {
        r.seq > 0
            && agent.runs().len() > before
            && r.summary.starts_with("[flap guard: dry run]")
            && r.seq == agent.runs().last().unwrap().seq
    });
    assert_eq!(held.status.as_str(), "needs-approval");
    assert!(!readable_by_nobody(&lab.share().join("readme.txt")));
    agent.stop();
}

/// Write `policy.toml` in `dir`: state in `dir/state`, the components
/// `cargo xtask plugins` built, and `plugins` (the `[plugins.*]` tables).
fn write_policy(dir: &Path, plugins: &str) -> PathBuf {
    let text = format!(
        "[agent]\nstate_dir = \"state\"\nplugin_dir = \"{}\"\n\n{plugins}",
        workspace().join("target/plugins").display()
    );
    let file = dir.join("policy.toml");
    std::fs::write(&file, text).unwrap();
    file
}

/// A policy running only the endless-loop fixture on manual events.
fn spin_policy(dir: &Path, timeout: &str) -> PathBuf {
    write_policy(
        dir,
        &format!(
            r#"
[plugins.fixture-spin]
component = "fixture-spin.wasm"
limits = {{ timeout = "{timeout}" }}
concurrency = 1

[[plugins.fixture-spin.triggers]]
kind = "manual"
"#
        ),
    )
}

pub(crate) fn send_manual(state: &Path, plugin: &str, subject: &str) {
    medic_agent::triggers::inbox::send(
        state,
        &medic_agent::triggers::inbox::InboxRequest {
            plugin: plugin.into(),
            event: medic_sandbox::EventRecord::manual(subject),
        },
    )
    .unwrap();
}

#[test]
fn events_for_a_subject_already_queued_are_coalesced() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Running::start(&spin_policy(dir.path(), "400ms"));
    let state = dir.path().join("state");
    send_manual(&state, "fixture-spin", "BITS");
    // Wait until the first run is in flight, then pile up events.
    let deadline = Instant::now() + Duration::from_secs(10);
    while medic_agent::dispatch::read_status(&agent.ctx.store).is_none_or(|s| s.running == 0) {
        assert!(Instant::now() < deadline, "the first run never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    for _ in 0..20 {
        send_manual(&state, "fixture-spin", "BITS");
    }
    agent.wait_for_run("for the coalesced events", |_| agent.runs().len() >= 2);
    std::thread::sleep(Duration::from_millis(900));
    let runs = agent.runs();
    assert_eq!(
        runs.len(),
        2,
        "20 events for one subject made one more run: {runs:#?}"
    );
    assert!(
        runs.iter()
            .all(|r| r.summary.contains("ended at its timeout of 400 ms"))
    );
    let status = medic_agent::dispatch::read_status(&agent.ctx.store).unwrap();
    assert_eq!(status.plugins[0].coalesced, 19);
    agent.stop();
}

#[test]
fn approve_mode_records_a_plan_that_an_operator_applies_or_rejects() {
    let lab = Lab::new();
    let policy = lab.policy("mode = \"approve\"");
    let agent = Running::start(&policy);
    send_manual(&lab.path("state"), "share-guard", "first");
    let pending = agent.wait_for_run("waiting for approval", |r| {
        r.status.as_str() == "needs-approval"
    });
    assert!(
        !readable_by_nobody(&lab.share().join("readme.txt")),
        "approve mode changed the file"
    );

    let medic = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_medic"))
            .args(args)
            .output()
            .unwrap()
    };
    let policy_arg = policy.to_str().unwrap();
    let out = medic(&["approve", &pending.run_id, "--policy", policy_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("outcome  remediated"));
    assert!(readable_by_nobody(&lab.share().join("readme.txt")));

    let again = medic(&["approve", &pending.run_id, "--policy", policy_arg]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("was already approved"));

    lab.lock("readme.txt");
    send_manual(&lab.path("state"), "share-guard", "second");
    let second = agent.wait_for_run("a second plan", |r| {
        r.status.as_str() == "needs-approval" && r.run_id != pending.run_id
    });
    let out = medic(&[
        "reject",
        &second.run_id,
        "--policy",
        policy_arg,
        "--reason",
        "change freeze",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!readable_by_nobody(&lab.share().join("readme.txt")));
    let decisions = agent
        .ctx
        .journal
        .list(&Filter {
            kind: Some(medic_agent::audit::journal::RecordKind::Rejected),
            ..Filter::default()
        })
        .unwrap();
    assert_eq!(decisions[0].summary, "rejected: change freeze");
    let out = medic(&["approve", &second.run_id, "--policy", policy_arg]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("was already rejected"));
    assert!(agent.ctx.journal.verify().unwrap().is_ok());
    agent.stop();
}

/// The same component with a custom section appended: identical behaviour,
/// a different file and hash, as a rebuilt plugin would be.
pub(crate) fn new_build_of(component: &[u8], tag: &str) -> Vec<u8> {
    let name = b"medic-test-build";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = component.to_vec();
    out.push(0); // custom section id
    out.push(payload.len() as u8); // LEB128, < 128
    out.extend_from_slice(&payload);
    out
}

pub(crate) fn install(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.partial"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn noop_policy(dir: &Path) -> PathBuf {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let text = r#"
[agent]
state_dir = "state"
plugin_dir = "plugins"
max_concurrent_runs = 4

[plugins.fixture-noop]
component = "fixture-noop.wasm"
grants = { fs-read = ["/tmp"] }
concurrency = 2

[[plugins.fixture-noop.triggers]]
kind = "manual"
"#;
    let file = dir.join("policy.toml");
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn hot_reload_under_a_stream_of_events_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let policy = noop_policy(dir.path());
    let plugins = dir.path().join("plugins");
    let v1 = std::fs::read(workspace().join("target/plugins/fixture-noop.wasm")).unwrap();
    let v2 = new_build_of(&v1, "v2");
    install(&plugins, "fixture-noop.wasm", &v1);
    let (hash1, hash2) = (
        medic_sandbox::content_hash(&v1),
        medic_sandbox::content_hash(&v2),
    );
    let agent = Running::start(&policy);
    let state = dir.path().join("state");

    const EVENTS: usize = 200;
    for n in 0..EVENTS {
        if n == 60 {
            install(&plugins, "fixture-noop.wasm", &v2);
        }
        if n == 120 {
            // A broken build: rejected, and the last good one keeps serving.
            install(
                &plugins,
                "fixture-noop.wasm",
                b"\0asm this is not a component",
            );
        }
        send_manual(&state, "fixture-noop", &format!("event-{n}"));
        std::thread::sleep(Duration::from_millis(5));
    }
    agent.wait_for_run("for every event", |_| agent.runs().len() >= EVENTS);
    let runs = agent.runs();
    assert_eq!(runs.len(), EVENTS, "one run per event");
    let subjects: std::collections::HashSet<String> = runs
        .iter()
        .map(|r| r.detail["event"]["subject"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(subjects.len(), EVENTS, "no event lost or run twice");
    assert!(
        runs.iter().all(|r| r.status.as_str() == "healthy"),
        "a run failed: {runs:#?}"
    );
    let on = |hash: &str| runs.iter().filter(|r| r.detail["hash"] == hash).count();
    assert!(
        on(&hash1) > 0 && on(&hash2) > 0,
        "runs on v1: {}, on v2: {}",
        on(&hash1),
        on(&hash2)
    );
    assert_eq!(
        on(&hash1) + on(&hash2),
        EVENTS,
        "every run was on a whole, loaded version"
    );
    // Once v2 served, v1 never came back (no half-swapped state).
    let first_v2 = runs.iter().position(|r| r.detail["hash"] == hash2).unwrap();
    let last_v1 = runs
        .iter()
        .rposition(|r| r.detail["hash"] == hash1)
        .unwrap();
    assert!(last_v1 < first_v2 + 4, "v1 ran long after v2 was serving");

    let rejected = agent
        .ctx
        .journal
        .list(&Filter {
            kind: Some(medic_agent::audit::journal::RecordKind::PluginRejected),
            ..Filter::default()
        })
        .unwrap();
    assert!(
        !rejected.is_empty(),
        "the broken build was not recorded as rejected"
    );
    assert!(
        rejected[0]
            .summary
            .contains("not a valid WebAssembly component"),
        "{}",
        rejected[0].summary
    );
    assert!(agent.ctx.journal.verify().unwrap().is_ok());
    agent.stop();
}

/// The first record of `kind`, waited for.
fn wait_for_record(
    agent: &Running,
    kind: medic_agent::audit::journal::RecordKind,
    what: &str,
) -> AuditRecord {
    let deadline = Instant::now() + crate::support::PATIENCE;
    loop {
        let found = agent
            .ctx
            .journal
            .list(&Filter {
                kind: Some(kind),
                ..Filter::default()
            })
            .unwrap();
        if let Some(first) = found.into_iter().next() {
            return first;
        }
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_broken_policy_edit_keeps_the_last_good_policy_serving() {
    use medic_agent::audit::journal::RecordKind;
    let dir = tempfile::tempdir().unwrap();
    let policy = noop_policy(dir.path());
    install(
        &dir.path().join("plugins"),
        "fixture-noop.wasm",
        &std::fs::read(workspace().join("target/plugins/fixture-noop.wasm")).unwrap(),
    );
    let agent = Running::start(&policy);
    let good = std::fs::read_to_string(&policy).unwrap();
    // A problem outside the plugin tables: the whole edit is rejected.
    std::fs::write(
        &policy,
        good.replace("max_concurrent_runs = 4", "max_concurrent_runs = \"four\""),
    )
    .unwrap();
    let rejected = wait_for_record(
        &agent,
        RecordKind::PolicyRejected,
        "the broken policy was not rejected",
    );
    assert!(
        rejected.summary.contains("policy.toml:5"),
        "{}",
        rejected.summary
    );
    // A problem in the plugin's own table: that plugin keeps the version
    // serving.
    std::fs::write(
        &policy,
        good.replace("concurrency = 2", "concurrency = \"many\""),
    )
    .unwrap();
    let rejected = wait_for_record(
        &agent,
        RecordKind::PluginRejected,
        "the broken table was not rejected",
    );
    assert_eq!(rejected.plugin, "fixture-noop");
    assert!(
        rejected.summary.contains("policy.toml:10"),
        "{}",
        rejected.summary
    );
    send_manual(&dir.path().join("state"), "fixture-noop", "still serving");
    let run = agent.wait_for_run("on the old policy", |r| {
        r.detail["event"]["subject"] == "still serving"
    });
    assert_eq!(run.status.as_str(), "healthy");
    agent.stop();
}

/// `medic status --json` of a state directory.
fn status_json(state: &Path) -> Option<serde_json::Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(["status", "--json", "--state-dir"])
        .arg(state)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).ok()
}

#[test]
fn one_bad_table_or_component_at_start_up_disables_that_plugin_and_the_rest_serve() {
    use medic_agent::audit::journal::{Journal, RecordKind};
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let noop = std::fs::read(workspace().join("target/plugins/fixture-noop.wasm")).unwrap();
    install(&plugins, "fixture-noop.wasm", &noop);
    install(&plugins, "garbage.wasm", b"\0asm but not a component");
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        r#"
[agent]
state_dir = "state"
plugin_dir = "plugins"

[plugins.bad-table]
component = "fixture-noop.wasm"
concurrency = 0
mode = "sideways"

[plugins.bad-component]
component = "garbage.wasm"
[[plugins.bad-component.triggers]]
kind = "manual"

[plugins.fixture-noop]
component = "fixture-noop.wasm"
grants = { fs-read = ["/tmp"] }
[[plugins.fixture-noop.triggers]]
kind = "manual"
"#,
    )
    .unwrap();
    // `medic check` refuses the policy, with every problem at once.
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(["check", "--policy"])
        .arg(&policy)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{said}");
    for problem in ["policy.toml:8", "policy.toml:9", "garbage.wasm"] {
        assert!(said.contains(problem), "{problem} not in {said}");
    }

    let state = dir.path().join("state");
    let _agent = crate::support::MedicRun::start(&policy);
    let deadline = Instant::now() + crate::support::PATIENCE;
    let status = loop {
        if let Some(status) = status_json(&state)
            && status["agent_running"] == true
            && status["disabled"].as_array().is_some_and(|d| d.len() == 2)
        {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not start with two plugins disabled: {:?}\n{}",
            status_json(&state),
            std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let reason = |name: &str| {
        status["disabled"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .map(|d| d["reason"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("{name} is not disabled: {status}"))
    };
    assert!(reason("bad-table").contains("more problems"), "{status}");
    assert!(!reason("bad-component").is_empty());
    let serving: Vec<&str> = status["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(serving, ["fixture-noop"]);
    let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap();
    assert!(
        log.contains("plugin DISABLED") && log.contains("policy.toml:9"),
        "{log}"
    );

    // `medic send` says why a plugin set aside is not served.
    let send = std::process::Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(["send", "bad-table", "--policy"])
        .arg(&policy)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&send.stderr);
    assert_eq!(send.status.code(), Some(1), "{said}");
    assert!(
        said.contains("table for `bad-table` has problems") && said.contains("policy.toml:8"),
        "{said}"
    );

    // The one left serves.
    send_manual(&state, "fixture-noop", "served");
    let deadline = Instant::now() + crate::support::PATIENCE;
    while !crate::support::run_records(&state)
        .iter()
        .any(|r| r.detail["event"]["subject"] == "served")
    {
        assert!(Instant::now() < deadline, "the serving plugin did not run");
        std::thread::sleep(Duration::from_millis(50));
    }
    let store = medic_agent::audit::Store::open(&state).unwrap();
    let rejected: Vec<String> = Journal::new(store)
        .list(&Filter {
            kind: Some(RecordKind::PluginRejected),
            ..Filter::default()
        })
        .unwrap()
        .into_iter()
        .map(|r| r.plugin.clone())
        .collect();
    assert!(
        rejected.contains(&"bad-table".to_string())
            && rejected.contains(&"bad-component".to_string()),
        "{rejected:?}"
    );
}

/// Two plugins: the endless loop (killed at 3 s) and the no-op.
fn two_plugin_policy(dir: &Path, noop_extra: &str) -> PathBuf {
    write_policy(
        dir,
        &format!(
            r#"
[plugins.fixture-spin]
component = "fixture-spin.wasm"
limits = {{ timeout = "3s" }}
[[plugins.fixture-spin.triggers]]
kind = "manual"

[plugins.fixture-noop]
component = "fixture-noop.wasm"
grants = {{ fs-read = ["/tmp"] }}
{noop_extra}
[[plugins.fixture-noop.triggers]]
kind = "manual"
"#
        ),
    )
}

#[test]
fn a_hung_plugin_does_not_hold_up_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Running::start(&two_plugin_policy(dir.path(), ""));
    let state = dir.path().join("state");
    send_manual(&state, "fixture-spin", "stuck");
    std::thread::sleep(Duration::from_millis(100));
    send_manual(&state, "fixture-noop", "meanwhile");
    let noop = agent.wait_for_run("of the no-op", |r| r.plugin == "fixture-noop");
    assert_eq!(noop.status.as_str(), "healthy");
    assert!(
        agent.runs().iter().all(|r| r.plugin != "fixture-spin"),
        "the no-op waited for the hung plugin"
    );
    let spin = agent.wait_for_run("of the hung plugin", |r| r.plugin == "fixture-spin");
    assert!(
        spin.summary.contains("ended at its timeout of 3000 ms"),
        "{}",
        spin.summary
    );
    agent.stop();
}

#[test]
fn rate_limits_delay_events_and_persist_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let policy = two_plugin_policy(dir.path(), "rate = { max_runs = 2, per = \"1h\" }");
    let state = dir.path().join("state");
    {
        let agent = Running::start(&policy);
        for n in 0..5 {
            send_manual(&state, "fixture-noop", &format!("e{n}"));
        }
        agent.wait_for_run("up to the limit", |_| agent.runs().len() >= 2);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            agent.runs().len(),
            2,
            "the rate limit let more runs through"
        );
        let status = medic_agent::dispatch::read_status(&agent.ctx.store).unwrap();
        let noop = status
            .plugins
            .iter()
            .find(|p| p.name == "fixture-noop")
            .unwrap();
        assert_eq!(noop.queued, 3, "the other events wait rather than vanish");
        agent.stop();
    }
    let agent = Running::start(&policy);
    send_manual(&state, "fixture-noop", "after restart");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        agent.runs().len(),
        2,
        "the window's count survived the restart"
    );
    agent.stop();
}

#[test]
fn startup_and_interval_triggers_fire() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write_policy(
        dir.path(),
        r#"
[plugins.fixture-noop]
component = "fixture-noop.wasm"
grants = { fs-read = ["/tmp"] }
[[plugins.fixture-noop.triggers]]
kind = "startup"
[[plugins.fixture-noop.triggers]]
kind = "every"
interval = "200ms"
"#,
    );
    let agent = Running::start(&policy);
    agent.wait_for_run("at startup", |r| event_kind(r) == "startup");
    agent.wait_for_run("on schedule, twice", |_| {
        agent
            .runs()
            .iter()
            .filter(|r| event_kind(r) == "schedule")
            .count()
            >= 2
    });
    agent.stop();
}

#[test]
fn a_reload_that_adds_a_plugin_starts_it_and_leaves_the_others_alone() {
    let dir = tempfile::tempdir().unwrap();
    let policy = noop_policy(dir.path());
    let plugins = dir.path().join("plugins");
    for name in ["fixture-noop.wasm", "fixture-panicker.wasm"] {
        install(
            &plugins,
            name,
            &std::fs::read(workspace().join("target/plugins").join(name)).unwrap(),
        );
    }
    // One run at a time: a run queued before the manual one below is
    // recorded before it.
    let with_startup = std::fs::read_to_string(&policy)
        .unwrap()
        .replace("concurrency = 2", "concurrency = 1")
        .replace(
            "kind = \"manual\"",
            "kind = \"manual\"\n\n[[plugins.fixture-noop.triggers]]\nkind = \"startup\"",
        );
    std::fs::write(&policy, &with_startup).unwrap();
    let agent = Running::start(&policy);
    let is_startup = |r: &AuditRecord| r.detail["event"]["kind"] == "startup";
    agent.wait_for_run("the no-op's startup run", |r| {
        r.plugin == "fixture-noop" && is_startup(r)
    });
    std::fs::write(
        &policy,
        format!(
            "{with_startup}\n[plugins.fixture-panicker]\ncomponent = \"fixture-panicker.wasm\"\n[[plugins.fixture-panicker.triggers]]\nkind = \"startup\"\n"
        ),
    )
    .unwrap();
    let added = agent.wait_for_run("the added plugin's startup run", |r| {
        r.plugin == "fixture-panicker" && is_startup(r)
    });
    assert!(added.summary.contains("panicked"), "{}", added.summary);
    // The unchanged plugin's triggers kept running: no second startup run
    // (one would have been queued, and run, before this manual event).
    send_manual(
        &dir.path().join("state"),
        "fixture-noop",
        "after the reload",
    );
    agent.wait_for_run("a manual run after the reload", |r| {
        r.detail["event"]["subject"] == "after the reload"
    });
    let startups = agent
        .runs()
        .iter()
        .filter(|r| r.plugin == "fixture-noop" && is_startup(r))
        .count();
    assert_eq!(startups, 1);
    agent.stop();
}
