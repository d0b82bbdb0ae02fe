//! The WSUS pack in the real agent, on a real lab: for each fault the lab
//! can inject, the agent notices what the broken server writes, runs the
//! right plugin, and the lab is repaired (read back from the file system
//! and the lab's store), the audit journal says what was done, the next
//! sync succeeds, and a second pass changes nothing. Plus dry-run, replica
//! and autonomous behaviour, two faults at once, and the flap guard.

use crate::agent::Running;
use crate::support::{runtime, workspace};
use medic_agent::audit::journal::AuditRecord;
use medic_agent::policy::Policy;
use medic_lab::faults::Fault;
use medic_lab::model::{ServiceState, StartupType, SyncMode, SyncResult};
use medic_lab::server::UpdateQuery;
use medic_lab::{InitOptions, Lab, Server, UpdateState};
use medic_sandbox::EventRecord;
use medic_sandbox::Mode;
use medic_sandbox::{RunReport, RunRequest};
use std::path::PathBuf;
use std::sync::Arc;

/// A lab in a temporary folder and the example policy, verbatim, in a
/// copy of the layout it expects: `examples/wsus-pack.toml` beside
/// `target/demo/lab` (the lab), `target/plugins` (the suite's components),
/// `target/signing` (the development key they are signed with) and
/// `target/demo/state`.
pub struct WsusLab {
    /// Holds the lab, the policy and the state until the test ends.
    _dir: tempfile::TempDir,
    pub lab: Lab,
    pub policy: PathBuf,
}

/// Lay out `dir` as the example policy expects, with a lab in `mode`;
/// returns the lab and the policy file, whose text is the example's passed
/// through `edit`.
pub fn example_layout(
    dir: &std::path::Path,
    mode: SyncMode,
    edit: impl FnOnce(String) -> String,
) -> (Lab, PathBuf) {
    let lab = Lab::init(
        &dir.join("target/demo/lab"),
        &InitOptions {
            mode,
            ..InitOptions::default()
        },
    )
    .unwrap();
    for what in ["target/plugins", "target/signing"] {
        std::os::unix::fs::symlink(workspace().join(what), dir.join(what)).unwrap();
    }
    // The state keeps a compile cache of its own: the agent refuses a
    // linked one (compiled code in it runs as native code).
    std::fs::create_dir_all(dir.join("target/demo/state")).unwrap();
    std::fs::create_dir_all(dir.join("examples")).unwrap();
    let text = std::fs::read_to_string(workspace().join("examples/wsus-pack.toml")).unwrap();
    let policy = dir.join("examples/wsus-pack.toml");
    std::fs::write(&policy, edit(text)).unwrap();
    std::fs::copy(workspace().join(UPSTREAM_POLICY), dir.join(UPSTREAM_POLICY)).unwrap();
    (lab, policy)
}

impl WsusLab {
    pub fn new(mode: SyncMode) -> Self {
        Self::with_policy(mode, |text| text)
    }

    /// A lab whose policy is the example's, edited by `edit`, with the
    /// follow-up runs that verify a repair due after a second.
    pub fn with_policy(mode: SyncMode, edit: impl FnOnce(String) -> String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (lab, policy) = example_layout(dir.path(), mode, |text| {
            edit(text).replace(VERIFY_AFTER, "verify_after = 1")
        });
        Self {
            _dir: dir,
            lab,
            policy,
        }
    }

    /// The agent's state folder, as the policy names it.
    pub fn agent_state(&self) -> std::path::PathBuf {
        Policy::load(&self.policy).unwrap().agent.state_dir
    }

    /// The policy of the agent on the lab's upstream server.
    pub fn upstream_policy(&self) -> PathBuf {
        self.policy
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join(UPSTREAM_POLICY)
    }

    /// Run `plugin` once more, as the policy configures it, on a manual
    /// event.
    pub fn second_pass(&self, plugin: &str) -> RunReport {
        self.second_pass_on(&self.policy, Server::Downstream, plugin)
    }

    /// Run `plugin` once more, as `policy` configures it, on a manual
    /// event, against the lab's `server`.
    pub fn second_pass_on(
        &self,
        policy: &std::path::Path,
        server: Server,
        plugin: &str,
    ) -> RunReport {
        let policy = Policy::load(policy).unwrap();
        let config = policy.plugins.iter().find(|p| p.name == plugin).unwrap();
        let loaded = runtime().load_file(&config.component).unwrap();
        runtime().run(
            &loaded,
            RunRequest {
                run_id: medic_sandbox::new_id("again"),
                event: EventRecord::manual("again").completed(),
                mode: Mode::Enforce,
                grants: Arc::new(config.grants.clone()),
                limits: config.limits,
                settings: Arc::new(config.settings.clone()),
                backends: medic_lab::backend::backends(self.lab.clone(), server),
                state: None,
                own_effects: None,
            },
        )
    }
}

/// The example policy of the agent on the lab's upstream server.
const UPSTREAM_POLICY: &str = "examples/wsus-upstream.toml";

/// How long the example policy's plugins wait before verifying a repair.
const VERIFY_AFTER: &str = "verify_after = 10";

/// The follow-up run of `plugin` that verified its repair.
fn verified_by(agent: &Running, plugin: &str) -> AuditRecord {
    agent.wait_for_run(&format!("of {plugin} verifying its repair"), |r| {
        r.plugin == plugin && r.summary.starts_with("verified:")
    })
}

/// The first run of `plugin` that did something (not `healthy`).
fn repaired_by(agent: &Running, plugin: &str, status: &str) -> AuditRecord {
    agent.wait_for_run(&format!("of {plugin} ending {status}"), |r| {
        r.plugin == plugin && r.status.as_str() == status
    })
}

fn actions(record: &AuditRecord) -> Vec<(String, String, bool)> {
    record.detail["result"]["completed"]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["verb"].as_str().unwrap().to_string(),
                a["target"].as_str().unwrap().to_string(),
                a["applied"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn calls(record: &AuditRecord) -> Vec<String> {
    record.detail["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["function"].as_str().unwrap().to_string())
        .collect()
}

/// A second pass changes nothing and says so.
fn assert_no_op(report: &RunReport) {
    let outcome = report.outcome().unwrap_or_else(|| panic!("{report:#?}"));
    assert_eq!(
        outcome.status.as_str(),
        "healthy",
        "second pass: {}",
        outcome.summary
    );
    assert!(outcome.actions.is_empty(), "{:?}", outcome.actions);
    // The only mutating calls allowed are checks that found nothing to do.
    assert!(
        report
            .calls
            .iter()
            .filter(|c| c.mutating)
            .all(|c| c.function == "fs.ensure-access" && c.effects.is_empty()),
        "second pass changed something: {:#?}",
        report.calls
    );
}

/// The next sync succeeds and no download fails, and none is left Failed.
fn assert_next_sync_succeeds(lab: &Lab) {
    let sync = lab.sync().unwrap();
    assert_eq!(sync.result, SyncResult::Succeeded, "{sync:?}");
    assert_eq!(sync.download_failures, 0, "{sync:?}");
    let failed = lab
        .update_ids(
            Server::Downstream,
            &UpdateQuery {
                state: Some(UpdateState::Failed),
                approved: Some(true),
                declined: Some(false),
            },
        )
        .unwrap();
    assert!(
        failed.is_empty(),
        "approved downloads still Failed: {failed:?}"
    );
}

#[test]
fn content_root_read_is_restored() {
    let w = WsusLab::new(SyncMode::Replica);
    let agent = Running::start(&w.policy);
    // The agent may repair the folder before the fault's own sync runs
    // (the file trigger sees the ACL change at once): no assertion on it.
    w.lab.inject(Fault::ContentRootRead).unwrap();

    let run = repaired_by(&agent, "content-acl", "remediated");
    let access = w.lab.content_access().unwrap();
    assert_eq!(access.root_readers, ["NETWORK SERVICE", "Users"]);
    assert!(access.wsus_content_full_control);
    assert_eq!(access.lacking, 0);
    let root = w.lab.content_dir().display().to_string();
    let granted: Vec<_> = actions(&run)
        .into_iter()
        .filter(|(verb, target, applied)| verb == "grant-access" && *target == root && *applied)
        .collect();
    assert_eq!(granted.len(), 2, "{:?}", actions(&run));
    agent.stop();

    assert_next_sync_succeeds(&w.lab);
    assert_no_op(&w.second_pass("content-acl"));
}

#[test]
fn content_root_read_for_users_alone_is_restored_when_10012_says_so() {
    // Only event 10012 wakes the plugin here: its file and 364 triggers
    // are taken out of the policy.
    let w = WsusLab::with_policy(SyncMode::Replica, |text| {
        let file_trigger = "[[plugins.content-acl.triggers]]\nkind = \"file\"\npath = \"../target/demo/lab/downstream/WSUS\"\nchanges = [\"attribute\"]\nsubject = \"root\"                          # one run checks the whole tree\ndebounce = \"100ms\"\n";
        let denied = "[[plugins.content-acl.triggers]]\nkind = \"event_log\"\npath = \"../target/demo/lab/downstream/EventLog/Application.jsonl\"\nsource = \"Windows Server Update Services\"\nids = [364]\nmessage = \"Access is denied\"\n";
        assert!(text.contains(file_trigger) && text.contains(denied));
        text.replace(file_trigger, "").replace(denied, "")
    });
    let agent = Running::start(&w.policy);
    let injected = w.lab.inject(Fault::ContentUsersRead).unwrap();
    // NETWORK SERVICE can still read: Users must too.
    assert!(injected.sync.download_failures > 0, "{injected:?}");

    let run = repaired_by(&agent, "content-acl", "remediated");
    assert_eq!(
        run.detail["event"]["fields"]["event-id"], "10012",
        "{run:#?}"
    );
    let access = w.lab.content_access().unwrap();
    assert_eq!(access.root_readers, ["NETWORK SERVICE", "Users"]);
    let root = w.lab.content_dir().display().to_string();
    let granted: Vec<_> = actions(&run)
        .into_iter()
        .filter(|(verb, target, applied)| verb == "grant-access" && *target == root && *applied)
        .collect();
    assert_eq!(
        granted.len(),
        1,
        "only Users lacked it: {:?}",
        actions(&run)
    );
    agent.stop();

    assert_next_sync_succeeds(&w.lab);
    assert_no_op(&w.second_pass("content-acl"));
}

#[test]
fn content_full_control_is_restored_on_the_whole_tree() {
    let w = WsusLab::new(SyncMode::Replica);
    let agent = Running::start(&w.policy);
    w.lab.inject(Fault::ContentFullControl).unwrap();
    let run = repaired_by(&agent, "content-acl", "remediated");
    // The agent may start repairing while the fault is still revoking
    // (the first run then repairs part of the tree, later ones the rest):
    // wait for the whole tree, read back from the file system.
    let deadline = std::time::Instant::now() + crate::support::PATIENCE;
    let access = loop {
        let access = w.lab.content_access().unwrap();
        if access.lacking == 0 || std::time::Instant::now() > deadline {
            break access;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(access.wsus_content_full_control);
    assert_eq!(access.lacking, 0, "{access:?}");
    assert!(
        run.summary
            .starts_with("restored: full control for NETWORK SERVICE on"),
        "{}",
        run.summary
    );
    agent.stop();
    assert_next_sync_succeeds(&w.lab);
    assert_no_op(&w.second_pass("content-acl"));
}

#[test]
fn a_stopped_bits_is_started_and_the_sync_verified() {
    let w = WsusLab::new(SyncMode::Replica);
    let agent = Running::start(&w.policy);
    w.lab.inject(Fault::BitsStopped).unwrap();
    let run = repaired_by(&agent, "bits-restart", "remediated");
    let bits = w.lab.service(Server::Downstream, "BITS").unwrap();
    assert_eq!(bits.state, ServiceState::Running);
    assert_eq!(
        w.lab
            .service(Server::Downstream, "WsusService")
            .unwrap()
            .state,
        ServiceState::Running
    );
    let verbs: Vec<String> = actions(&run).into_iter().map(|a| a.0).collect();
    assert_eq!(verbs[..2], ["start-service", "restart-service"]);
    assert!(verbs.contains(&"resume-download".to_string()), "{verbs:?}");
    assert_eq!(verbs.last().map(String::as_str), Some("start-sync"));
    assert!(calls(&run).contains(&"wsus.start-sync".to_string()));
    let verified = verified_by(&agent, "bits-restart");
    assert!(
        verified.summary.contains("the sync succeeded"),
        "{}",
        verified.summary
    );
    agent.stop();
    assert_next_sync_succeeds(&w.lab);
    assert_no_op(&w.second_pass("bits-restart"));
}

#[test]
fn an_idle_bits_is_left_alone() {
    let w = WsusLab::new(SyncMode::Replica);
    let agent = Running::start(&w.policy);
    let injected = w.lab.inject(Fault::BitsIdle).unwrap();
    // The sync's downloads started BITS on demand, and it went idle again.
    assert_eq!(injected.sync.result, SyncResult::Succeeded, "{injected:?}");
    assert!(injected.sync.downloaded >= 1, "{injected:?}");
    let idle = w.lab.service(Server::Downstream, "BITS").unwrap();
    assert_eq!(idle.state, ServiceState::Stopped);
    let wsus_before = w.lab.service(Server::Downstream, "WsusService").unwrap();

    // The sync's downloads switched BITS to auto start and back, as BITS
    // does: those 7040s wake nothing. A 7040 "to disabled" written after
    // them wakes bits-restart (which finds BITS idle, not disabled); the
    // tail reads the others first, so a run they woke would be recorded
    // by then.
    let system =
        std::fs::read_to_string(w.lab.event_log(medic_lab::logs::EventLog::System)).unwrap();
    assert!(
        system.contains("changed from demand start to auto start"),
        "{system}"
    );
    let barrier = "The start type of the Background Intelligent Transfer Service service was changed from auto start to disabled.";
    let (run, woken) = run_after_barrier(
        &agent,
        &w.lab,
        medic_lab::logs::EventLog::System,
        (7040, "Service Control Manager"),
        "bits-restart",
        barrier,
    );
    assert!(run.summary.contains("left alone"), "{}", run.summary);
    assert!(woken.is_empty(), "BITS's own 7040s woke {woken:?}");

    // The schedule's check, asked for now: BITS is left alone.
    crate::agent::send_manual(&w.agent_state(), "bits-restart", "scheduled check");
    let run = agent.wait_for_run("of bits-restart on the idle BITS", |r| {
        r.plugin == "bits-restart" && r.detail["event"]["subject"] == "scheduled check"
    });
    assert_eq!(run.status.as_str(), "healthy", "{}", run.summary);
    assert!(run.summary.contains("left alone"), "{}", run.summary);
    assert!(actions(&run).is_empty(), "{:?}", actions(&run));
    assert!(!calls(&run).contains(&"wsus.start-sync".to_string()));
    agent.stop();
    assert_eq!(w.lab.service(Server::Downstream, "BITS").unwrap(), idle);
    assert_eq!(
        w.lab.service(Server::Downstream, "WsusService").unwrap(),
        wsus_before,
        "WsusService was not restarted"
    );
    assert_no_op(&w.second_pass("bits-restart"));
}

#[test]
fn a_disabled_bits_is_re_enabled_and_started() {
    let w = WsusLab::new(SyncMode::Replica);
    let agent = Running::start(&w.policy);
    w.lab.inject(Fault::BitsDisabled).unwrap();
    let run = repaired_by(&agent, "bits-restart", "remediated");
    let bits = w.lab.service(Server::Downstream, "BITS").unwrap();
    assert_eq!(bits.state, ServiceState::Running);
    assert_eq!(bits.startup, StartupType::Manual);
    let verbs: Vec<String> = actions(&run).into_iter().map(|a| a.0).collect();
    assert_eq!(
        verbs[..3],
        ["set-startup", "start-service", "restart-service"]
    );
    verified_by(&agent, "bits-restart");
    agent.stop();
    assert_next_sync_succeeds(&w.lab);
    assert_no_op(&w.second_pass("bits-restart"));
}

fn ids_in(lab: &Lab, state: UpdateState) -> Vec<String> {
    lab.update_ids(Server::Downstream, &UpdateQuery::in_state(state))
        .unwrap()
}

/// Inject the lost-updates fault under the example policy (approve mode)
/// and wait for decline-orphans' run ending `status`; check that it
/// changed nothing and names the article's way out. The orphans (HTTP 404)
/// are Failed, the transient ones (HTTP 503) still NotReady.
fn lose_updates(w: &WsusLab, status: &str) -> AuditRecord {
    let agent = Running::start(&w.policy);
    // The fault's 364 events wake the plugin, which may judge before the
    // injection's own sync or after it (when that sync fails).
    w.lab.inject(Fault::UpstreamLostUpdates).unwrap();
    let run = repaired_by(&agent, "decline-orphans", status);
    agent.stop();
    assert!(
        run.summary.contains("re-add their products on"),
        "{}",
        run.summary
    );
    assert_eq!(
        ids_in(&w.lab, UpdateState::Failed).len(),
        12,
        "nothing changed yet"
    );
    assert!(ids_in(&w.lab, UpdateState::Canceled).is_empty());
    run
}

/// Apply `plan` as an operator does, with `medic approve`; the record of
/// the run that applied it.
fn approve_plan(w: &WsusLab, plan: &AuditRecord) -> AuditRecord {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(["approve", &plan.run_id, "--policy"])
        .arg(&w.policy)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("outcome  remediated"),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    crate::support::run_records(&w.agent_state())
        .into_iter()
        .find(|r| {
            r.summary
                .starts_with(&format!("[approved {}]", plan.run_id))
        })
        .expect("the applied run is recorded")
}

/// Append `message` as event `id` from `source` to one of the lab's event
/// logs, after the events a test says wake nothing, and wait for the run of
/// `plugin` it wakes. The tail reads those events first, so any run they
/// woke is recorded by then: the list of such runs (by any plugin, woken by
/// a system event other than the barrier) is returned with the barrier's
/// run.
fn run_after_barrier(
    agent: &Running,
    lab: &Lab,
    log: medic_lab::logs::EventLog,
    (id, source): (u32, &str),
    plugin: &str,
    message: &str,
) -> (AuditRecord, Vec<String>) {
    let line = serde_json::json!({
        "time": "2026-01-01T00:00:00.000Z", "log": format!("{log:?}"), "id": id, "level": "Error",
        "source": source, "computer": "wsus-ds01.lab.example", "message": message,
    });
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(lab.event_log(log))
        .unwrap();
    std::io::Write::write_all(&mut file, format!("{line}\n").as_bytes()).unwrap();
    let run = agent.wait_for_run(&format!("of {plugin} on the barrier"), |r| {
        r.plugin == plugin && r.detail["event"]["fields"]["message"] == message
    });
    let woken = agent
        .runs()
        .iter()
        .filter(|r| r.detail["event"]["fields"]["message"] != message)
        .filter(|r| r.detail["event"]["kind"] == "system-event")
        .map(|r| format!("{}: {}", r.plugin, r.summary))
        .collect();
    (run, woken)
}

#[test]
fn a_transient_outage_wakes_no_repair() {
    let w = WsusLab::new(SyncMode::Replica);
    let agent = Running::start(&w.policy);
    let injected = w.lab.inject(Fault::TransientOutage).unwrap();
    // The next sync downloaded what the outage failed.
    assert_eq!(injected.sync.result, SyncResult::Succeeded, "{injected:?}");
    assert!(ids_in(&w.lab, UpdateState::Failed).is_empty());
    // A 404 for an update the lab does not have, written after the
    // outage's 503s: decline-orphans wakes for it, and the tail reads the
    // 503s before it, so a run they woke would be recorded by then.
    let barrier = "Content file download failed. Reason: HTTP status 404: The requested URL does not exist on the server. Source File: /Content/00/barrier.cab Destination File: barrier";
    let (run, woken) = run_after_barrier(
        &agent,
        &w.lab,
        medic_lab::logs::EventLog::Application,
        (364, "Windows Server Update Services"),
        "decline-orphans",
        barrier,
    );
    assert_eq!(run.status.as_str(), "healthy", "{}", run.summary);
    assert!(woken.is_empty(), "the 503s woke {woken:?}");
    agent.stop();
}

#[test]
fn on_a_replica_orphans_are_reported_for_the_upstream_to_fix() {
    let w = WsusLab::new(SyncMode::Replica);
    // A replica can neither decline nor cancel a Failed download: the run
    // fails, naming the way out on the upstream.
    let run = lose_updates(&w, "failed");
    assert!(actions(&run).is_empty(), "{:?}", actions(&run));
    assert!(
        run.summary.contains("A replica can neither decline them"),
        "{}",
        run.summary
    );
    assert!(!calls(&run).contains(&"wsus.decline".to_string()));
    let sync = w.lab.sync().unwrap();
    assert_eq!(
        sync.error.as_deref(),
        Some("UssInternalError"),
        "still broken until the upstream has the products again: {sync:?}"
    );
}

#[test]
fn on_an_autonomous_server_orphans_are_declined_once_approved() {
    let w = &WsusLab::new(SyncMode::Autonomous);
    let plan = lose_updates(w, "needs-approval");
    let orphans = ids_in(&w.lab, UpdateState::Failed);
    assert!(w.lab.upstream_has(&orphans).unwrap().is_empty());
    let applied = approve_plan(w, &plan);
    let mut declined = w
        .lab
        .update_ids(
            Server::Downstream,
            &UpdateQuery {
                declined: Some(true),
                ..UpdateQuery::default()
            },
        )
        .unwrap();
    declined.sort();
    let mut expected = orphans.clone();
    expected.sort();
    assert_eq!(declined, expected, "exactly the orphans are declined");
    let verbs: Vec<String> = actions(&applied).into_iter().map(|a| a.0).collect();
    assert_eq!(verbs.iter().filter(|v| *v == "decline").count(), 12);
    assert!(
        !verbs.contains(&"cancel-download".to_string()),
        "a Failed download cannot be cancelled: {verbs:?}"
    );
    assert_next_sync_succeeds(&w.lab);
    assert_no_op(&w.second_pass("decline-orphans"));
}

#[test]
fn approvals_left_inactive_by_a_language_change_are_removed_on_the_upstream() {
    let w = WsusLab::new(SyncMode::Replica);
    let (up, ds) = (Server::Upstream, Server::Downstream);
    let agent = Running::start(&w.upstream_policy());
    w.lab.inject(Fault::LanguageShrink).unwrap();
    let run = repaired_by(&agent, "language-approvals", "remediated");
    let upstream = w.lab.approval_tally(up).unwrap();
    let downstream = w.lab.approval_tally(ds).unwrap();
    assert_eq!(upstream.inactive, 0);
    assert_eq!(downstream.inactive, 0);
    assert_eq!(
        upstream.active, downstream.active,
        "the counts the article compares match again"
    );
    assert_eq!(w.lab.enabled_languages(ds).unwrap(), ["en"]);
    let detail = &run.detail["result"]["completed"]["actions"][0]["detail"];
    let detail = detail.as_str().unwrap();
    assert!(
        detail.contains("inactive") && detail.contains("-> 0"),
        "{detail}"
    );
    assert!(run.summary.contains("before") && run.summary.contains("after"));
    agent.stop();
    assert_next_sync_succeeds(&w.lab);
    assert_no_op(&w.second_pass_on(&w.upstream_policy(), up, "language-approvals"));
}

#[test]
fn the_http_range_problem_gets_foreground_downloads() {
    let w = WsusLab::new(SyncMode::Replica);
    let agent = Running::start(&w.policy);
    let injected = w.lab.inject(Fault::HttpRange).unwrap();
    assert!(
        injected
            .sync
            .first_download_failure
            .as_deref()
            .unwrap()
            .contains("Range protocol header")
    );
    let run = repaired_by(&agent, "bits-foreground", "remediated");
    assert_eq!(
        w.lab
            .config(Server::Downstream, "BitsDownloadPriorityForeground")
            .unwrap()
            .as_deref(),
        Some("1")
    );
    let verbs: Vec<String> = actions(&run).into_iter().map(|a| a.0).collect();
    assert_eq!(verbs[..2], ["set-config", "restart-service"]);
    assert!(verbs.contains(&"resume-download".to_string()), "{verbs:?}");
    verified_by(&agent, "bits-foreground");
    // The setting is the workaround; the report names the fix.
    assert!(
        run.summary.contains("the workaround; the fix is a proxy"),
        "{}",
        run.summary
    );
    agent.stop();
    assert_next_sync_succeeds(&w.lab);
    assert_no_op(&w.second_pass("bits-foreground"));
}

#[test]
fn in_dry_run_a_fault_is_planned_and_nothing_changes() {
    let w = WsusLab::with_policy(SyncMode::Replica, |text| {
        text.replace("mode = \"enforce\"", "mode = \"dry-run\"")
    });
    let agent = Running::start(&w.policy);
    w.lab.inject(Fault::ContentFullControl).unwrap();
    w.lab.inject(Fault::BitsStopped).unwrap();
    let acl = repaired_by(&agent, "content-acl", "needs-approval");
    let bits = repaired_by(&agent, "bits-restart", "needs-approval");
    agent.stop();

    let access = w.lab.content_access().unwrap();
    assert!(!access.wsus_content_full_control);
    assert!(access.lacking > 0, "the permissions stay broken");
    assert_eq!(
        w.lab.service(Server::Downstream, "BITS").unwrap().state,
        ServiceState::Stopped
    );
    for record in [&acl, &bits] {
        let planned = actions(record);
        assert!(!planned.is_empty());
        assert!(
            planned.iter().all(|(_, _, applied)| !applied),
            "{planned:?}"
        );
        let mutating = record.detail["calls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["mutating"] == true)
            .collect::<Vec<_>>();
        assert!(!mutating.is_empty());
        assert!(
            mutating.iter().all(|c| c["applied"] == false),
            "{mutating:?}"
        );
    }
    assert!(w.lab.sync().unwrap().download_failures > 0, "still broken");
}

#[test]
fn two_faults_at_once_are_both_repaired() {
    let w = WsusLab::new(SyncMode::Replica);
    let agent = Running::start(&w.policy);
    w.lab.inject(Fault::ContentRootRead).unwrap();
    w.lab.inject(Fault::BitsDisabled).unwrap();
    repaired_by(&agent, "content-acl", "remediated");
    repaired_by(&agent, "bits-restart", "remediated");
    agent.stop();
    let access = w.lab.content_access().unwrap();
    assert_eq!(access.root_readers.len(), 2);
    let bits = w.lab.service(Server::Downstream, "BITS").unwrap();
    assert_eq!(
        (bits.state, bits.startup),
        (ServiceState::Running, StartupType::Manual)
    );
    assert_next_sync_succeeds(&w.lab);
}

#[test]
fn bits_restart_stops_repairing_a_bits_that_keeps_failing() {
    let w = WsusLab::new(SyncMode::Replica);
    let agent = Running::start(&w.policy);
    let repairs = |agent: &Running| {
        agent
            .runs()
            .iter()
            .filter(|r| r.plugin == "bits-restart" && r.status.as_str() == "remediated")
            .count()
    };
    for round in 1..=3 {
        w.lab.inject(Fault::BitsStopped).unwrap();
        let deadline = std::time::Instant::now() + crate::support::PATIENCE;
        while repairs(&agent) < round {
            assert!(
                std::time::Instant::now() < deadline,
                "repair {round} not seen: {:#?}",
                agent
                    .runs()
                    .iter()
                    .map(|r| format!("{} {}: {}", r.plugin, r.status.as_str(), r.summary))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        assert_eq!(
            w.lab.service(Server::Downstream, "BITS").unwrap().state,
            ServiceState::Running
        );
    }
    // The fourth failure in 30 minutes: the guard turns the plugin to
    // dry-run and says so; BITS stays down for a person to look at.
    w.lab.inject(Fault::BitsStopped).unwrap();
    repaired_by(&agent, "bits-restart", "needs-approval");
    let trips = agent
        .ctx
        .journal
        .list(&medic_agent::audit::journal::Filter {
            kind: Some(medic_agent::audit::journal::RecordKind::FlapGuard),
            ..Default::default()
        })
        .unwrap();
    assert!(!trips.is_empty(), "the trip is recorded");
    agent.stop();
    assert_eq!(
        w.lab.service(Server::Downstream, "BITS").unwrap().state,
        ServiceState::Stopped
    );
}

#[test]
fn in_approve_mode_an_operator_applies_the_planned_repair() {
    let w = WsusLab::with_policy(SyncMode::Replica, |text| {
        let section = "[plugins.bits-foreground]\ncomponent = \"bits-foreground.wasm\"\nsettings = { verify_after = 10 }         # the follow-up run that verifies a repair\nmode = ";
        let edited = text.replace(
            &format!("{section}\"enforce\""),
            &format!("{section}\"approve\""),
        );
        assert_ne!(
            edited, text,
            "the example's bits-foreground section changed shape"
        );
        edited
    });
    let agent = Running::start(&w.policy);
    w.lab.inject(Fault::HttpRange).unwrap();
    let plan = repaired_by(&agent, "bits-foreground", "needs-approval");
    let foreground = || {
        w.lab
            .config(Server::Downstream, "BitsDownloadPriorityForeground")
            .unwrap()
    };
    assert_eq!(foreground().as_deref(), Some("0"), "nothing changed yet");
    agent.stop();

    // The operator reads the plan and applies it, with the agent stopped
    // or running alike: `medic approve` re-runs the plugin in enforce mode.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(["approve", &plan.run_id, "--policy"])
        .arg(&w.policy)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("outcome  remediated"), "{stdout}");
    assert_eq!(foreground().as_deref(), Some("1"));
    assert_next_sync_succeeds(&w.lab);
}

#[test]
fn an_expired_proxy_password_is_diagnosed_and_left_to_a_person() {
    let w = WsusLab::new(SyncMode::Replica);
    let agent = Running::start(&w.policy);
    let injected = w.lab.inject(Fault::ProxyPasswordExpired).unwrap();
    assert_eq!(injected.sync.error.as_deref(), Some("ProxyError"));
    let run = repaired_by(&agent, "upstream-check", "failed");
    agent.stop();
    for said in ["407", "LAB\\svc-wsus", "password"] {
        assert!(run.summary.contains(said), "{said}: {}", run.summary);
    }
    assert!(actions(&run).is_empty(), "{:?}", actions(&run));
    assert!(!calls(&run).contains(&"wsus.set-config".to_string()));
    assert_eq!(
        w.lab
            .config(Server::Downstream, "HasProxyPassword")
            .unwrap()
            .as_deref(),
        Some("1")
    );
    // What the report says to do, done by hand: then the road is clear.
    w.lab.mend_by_hand(Fault::ProxyPasswordExpired).unwrap();
    assert_next_sync_succeeds(&w.lab);
    let again = w.second_pass("upstream-check");
    assert_eq!(again.status().as_str(), "healthy", "{again:#?}");
}

#[test]
fn a_mistyped_upstream_name_is_set_back_once_approved() {
    let w = WsusLab::new(SyncMode::Replica);
    let agent = Running::start(&w.policy);
    let injected = w.lab.inject(Fault::UpstreamNameTypo).unwrap();
    assert_eq!(injected.sync.error.as_deref(), Some("UssNotFound"));
    let plan = repaired_by(&agent, "upstream-check", "needs-approval");
    assert!(
        plan.summary.contains("does not resolve"),
        "{}",
        plan.summary
    );
    assert_eq!(
        w.lab
            .config(Server::Downstream, "UpstreamServerName")
            .unwrap()
            .as_deref(),
        Some("wsus-up01.lab.exmaple"),
        "nothing changed before the approval"
    );
    approve_plan(&w, &plan);
    agent.stop();
    assert_eq!(
        w.lab
            .config(Server::Downstream, "UpstreamServerName")
            .unwrap()
            .as_deref(),
        Some("wsus-up01.lab.example:8531")
    );
    assert_next_sync_succeeds(&w.lab);
    assert_no_op(&w.second_pass("upstream-check"));
}

#[test]
fn a_storage_mismatch_is_resolved_once_approved_and_verified_by_the_agent() {
    let w = WsusLab::new(SyncMode::Replica);
    let agent = Running::start(&w.policy);
    w.lab.inject(Fault::StorageMismatch).unwrap();
    let plan = repaired_by(&agent, "storage-consistency", "needs-approval");
    assert!(!ids_in(&w.lab, UpdateState::Failed).is_empty());
    let applied = approve_plan(&w, &plan);
    let verbs: Vec<String> = actions(&applied).into_iter().map(|a| a.0).collect();
    assert_eq!(verbs[0], "set-config");
    assert!(verbs.contains(&"resume-download".to_string()), "{verbs:?}");
    assert_eq!(
        w.lab
            .config(Server::Downstream, "HostOnMu")
            .unwrap()
            .as_deref(),
        Some("1")
    );
    // The applied run's follow-up is handed to the running agent.
    let verified = verified_by(&agent, "storage-consistency");
    assert_eq!(verified.detail["event"]["kind"], "follow-up");
    agent.stop();
    assert_next_sync_succeeds(&w.lab);
    assert_no_op(&w.second_pass("storage-consistency"));
}
