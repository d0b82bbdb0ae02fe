//! [`WsusAdmin`] against recorded helper transcripts (`transcripts/`):
//! each contract call must send exactly the requests of its transcript,
//! in order, and turn the replies into the right values. A dry-run that
//! sent a write, or a call that asked for more than it needs, fails here.

use super::*;
use crate::wsus::WsusServer;
use std::collections::VecDeque;
use std::sync::Mutex;

struct Step {
    line: usize,
    op: String,
    args: Value,
    reply: Result<Value, helper::RemoteError>,
}

/// A transport that replays a transcript and checks every request.
struct Replay {
    name: &'static str,
    steps: Mutex<VecDeque<Step>>,
}

impl Replay {
    fn new(name: &'static str, text: &str) -> Self {
        let steps = text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty() && !line.starts_with("//"))
            .map(|(i, line)| {
                let value: Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}:{}: {e}", i + 1));
                let reply = match value.get("error") {
                    Some(error) => Err(serde_json::from_value(error.clone()).unwrap()),
                    None => Ok(value["result"].clone()),
                };
                Step {
                    line: i + 1,
                    op: value["op"].as_str().unwrap().to_string(),
                    args: value["args"].clone(),
                    reply,
                }
            })
            .collect();
        Self {
            name,
            steps: Mutex::new(steps),
        }
    }

    fn assert_done(&self) {
        let left: Vec<String> = self
            .steps
            .lock()
            .unwrap()
            .iter()
            .map(|s| format!("{}:{} {}", self.name, s.line, s.op))
            .collect();
        assert!(left.is_empty(), "requests never made: {left:?}");
    }
}

impl Transport for Replay {
    fn call(&self, op: &str, args: Value, _: Duration) -> Result<Value, HelperError> {
        let step = self
            .steps
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| panic!("{}: unexpected request `{op}` {args}", self.name));
        assert_eq!(
            (op, &args),
            (step.op.as_str(), &step.args),
            "{}:{}",
            self.name,
            step.line
        );
        step.reply.map_err(HelperError::Remote)
    }
}

/// `wsusutil` answering from a list, recording what it was asked.
#[derive(Default)]
struct FakeWsusutil {
    outputs: Mutex<VecDeque<OpResult<String>>>,
    asked: Mutex<Vec<String>>,
}

impl Wsusutil for FakeWsusutil {
    fn run(&self, args: &[&str]) -> OpResult<String> {
        self.asked.lock().unwrap().push(args.join(" "));
        self.outputs
            .lock()
            .unwrap()
            .pop_front()
            .expect("an unexpected wsusutil run")
    }
}

macro_rules! transcript {
    ($name:literal) => {
        Replay::new(
            $name,
            include_str!(concat!("transcripts/", $name, ".jsonl")),
        )
    };
}

fn replaying(replay: Replay) -> WsusAdmin<Replay, FakeWsusutil> {
    admin_with(replay, FakeWsusutil::default())
}

fn admin_with(replay: Replay, wsusutil: FakeWsusutil) -> WsusAdmin<Replay, FakeWsusutil> {
    WsusAdmin::new(
        replay,
        wsusutil,
        SetupPaths {
            content_dir: PathBuf::from(r"D:\WSUS"),
            target_dir: PathBuf::from(r"C:\Program Files\Update Services"),
        },
    )
}

const NOT_READY: &str = "0b6f3a40-9f6e-4d1c-8c2a-3e5f7a9b1c2d";
const FAILED: &str = "7a1c9e2b-4d3f-4a5b-9c8d-1e2f3a4b5c6d";

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn server_facts_come_from_the_configuration_and_the_registry() {
    let admin = replaying(transcript!("server-info"));
    let facts = admin.server_info().unwrap();
    assert_eq!(facts.name, "WSUS-DOWN");
    assert_eq!(facts.mode, ServerMode::Autonomous);
    assert_eq!(facts.upstream.as_deref(), Some("wsus-up.corp.example:8530"));
    assert_eq!(facts.storage, StorageMode::LocalContent);
    assert_eq!(facts.languages, ["en", "de"]);
    assert_eq!(facts.content_dir, r"D:\WSUS");
    let upstream = admin.server_info().unwrap();
    assert_eq!(upstream.upstream, None, "it syncs from Microsoft Update");
    assert_eq!(upstream.storage, StorageMode::MicrosoftUpdate);
    assert_eq!(upstream.languages, ["all"]);
    admin.helper.assert_done();
}

#[test]
fn a_dry_run_only_reads_and_plans_by_the_apis_rules() {
    let admin = replaying(transcript!("cancel-dry-run"));
    let plan = admin
        .cancel_downloads(
            &ids(&[
                &NOT_READY.to_uppercase(),
                FAILED,
                "11111111-2222-3333-4444-555555555555",
                NOT_READY,
            ]),
            false,
        )
        .unwrap();
    assert!(!plan.applied);
    assert_eq!(plan.done, [NOT_READY]);
    assert_eq!(plan.failed.len(), 2, "{:?}", plan.failed);
    assert!(
        plan.failed
            .iter()
            .any(|(id, why)| id == "11111111-2222-3333-4444-555555555555"
                && why.contains("no such update"))
    );
    assert!(
        plan.failed
            .iter()
            .any(|(id, why)| id == FAILED && why.contains("only a NotReady"))
    );
    admin.helper.assert_done();
}

#[test]
fn a_change_that_did_not_take_is_reported_failed() {
    let admin = replaying(transcript!("cancel-apply"));
    let done = admin
        .cancel_downloads(
            &ids(&[NOT_READY, "5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a"]),
            true,
        )
        .unwrap();
    assert!(done.applied);
    assert_eq!(done.done, [NOT_READY]);
    assert_eq!(done.failed.len(), 1);
    assert!(
        done.failed[0].1.contains("still NotReady"),
        "{:?}",
        done.failed
    );
    admin.helper.assert_done();

    let admin = replaying(transcript!("resume-apply"));
    let done = admin
        .resume_downloads(
            &ids(&[FAILED, "9e8d7c6b-5a4f-4e3d-2c1b-0a9f8e7d6c5b", NOT_READY]),
            true,
        )
        .unwrap();
    assert_eq!(done.done, [FAILED]);
    let reasons: Vec<&str> = done.failed.iter().map(|(_, why)| why.as_str()).collect();
    assert!(
        reasons.iter().any(|r| r.contains("only a Failed")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("SqlException: Timeout expired.")),
        "{reasons:?}"
    );
    admin.helper.assert_done();
}

#[test]
fn declines_are_refused_on_a_replica_before_anything_is_read() {
    let admin = replaying(transcript!("decline-replica"));
    let err = admin.decline(&ids(&[FAILED]), true).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict);
    admin.helper.assert_done();

    let admin = admin_with(transcript!("decline-autonomous"), FakeWsusutil::default());
    let done = admin.decline(&ids(&[FAILED]), true).unwrap();
    assert_eq!(done.done, [FAILED]);
    admin.helper.assert_done();
}

#[test]
fn update_ids_must_be_guids_before_anything_is_sent() {
    let admin = replaying(Replay::new("empty", ""));
    for bad in [
        "",
        "KB5060531",
        "0b6f3a40-9f6e-4d1c-8c2a-3e5f7a9b1c2d'; Remove-Item",
        "{0b6f3a40-9f6e-4d1c-8c2a-3e5f7a9b1c2d}",
    ] {
        let err = admin.cancel_downloads(&ids(&[bad]), true).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{bad}");
        assert_eq!(
            admin.upstream_has(&ids(&[bad])).unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
    }
    admin.helper.assert_done();
}

#[test]
fn settings_go_through_the_allow_list_and_dry_run_only_reads() {
    let admin = replaying(transcript!("config"));
    assert_eq!(
        admin
            .get_config("BitsDownloadPriorityForeground")
            .unwrap()
            .as_deref(),
        Some("0")
    );
    assert_eq!(admin.get_config("SomethingElse").unwrap(), None);
    let planned = admin
        .set_config("BitsDownloadPriorityForeground", "1", false)
        .unwrap();
    assert_eq!(planned.as_deref(), Some("0"), "the value it has now");
    let set = admin
        .set_config("BitsDownloadPriorityForeground", "1", true)
        .unwrap();
    assert_eq!(set.as_deref(), Some("1"), "the value read back");
    let set = admin
        .set_config("UpstreamServerName", "wsus-up.corp.example", true)
        .unwrap();
    assert_eq!(set.as_deref(), Some("wsus-up.corp.example:8530"));
    assert_eq!(
        admin
            .set_config("ProxyPassword", "x", true)
            .unwrap_err()
            .kind,
        ErrorKind::NotFound
    );
    assert_eq!(
        admin.set_config("ReplicaMode", "0", true).unwrap_err().kind,
        ErrorKind::Conflict
    );
    admin.helper.assert_done();
}

#[test]
fn syncs_start_at_once_and_their_records_carry_the_error() {
    let admin = replaying(transcript!("sync"));
    assert_eq!(admin.start_sync(false).unwrap(), 0, "dry-run sends nothing");
    assert_eq!(admin.start_sync(true).unwrap(), 1_764_115_200_000);
    let running = admin.sync_status().unwrap();
    assert!(running.running);
    assert_eq!(
        running.last.as_ref().unwrap().error,
        None,
        "NotApplicable is no error"
    );
    let failed = admin.sync_status().unwrap();
    let last = failed.last.unwrap();
    assert_eq!(last.result_kind, SyncResult::Failed);
    assert_eq!(last.error.as_deref(), Some("UssNotFound"));
    assert_eq!(
        last.reason.as_deref(),
        Some("Unable to resolve the specified upstream server.")
    );
    let history = admin.sync_history(5).unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].reason, None);
    let again = admin.start_sync(true).unwrap_err();
    assert_eq!(again.kind, ErrorKind::Conflict);
    assert!(again.message.contains("already running"));
    assert_eq!(admin.sync_status().unwrap().last, None);
    admin.helper.assert_done();
}

#[test]
fn the_upstream_is_read_through_the_api_and_the_proxy_without_its_password() {
    let admin = replaying(transcript!("upstream"));
    let upstream = admin.upstream_info().unwrap().unwrap();
    assert_eq!(upstream.name, "wsus-up.corp.example:8530");
    assert_eq!(upstream.storage, StorageMode::MicrosoftUpdate);
    assert_eq!((upstream.approved, upstream.inactive_approvals), (300, 0));
    let present = admin
        .upstream_has(&ids(&[FAILED, "9e8d7c6b-5a4f-4e3d-2c1b-0a9f8e7d6c5b"]))
        .unwrap();
    assert_eq!(present, [FAILED]);
    let proxy = admin.proxy_settings().unwrap();
    assert_eq!(proxy.user.as_deref(), Some("CORP\\svc-wsus"));
    assert!(proxy.enabled && proxy.has_password);
    admin.helper.assert_done();
}

#[test]
fn inactive_approvals_come_from_wsusutil_and_removal_is_counted_by_reading_again() {
    let listing = "Security Update A - Japanese\nSecurity Update B - Japanese\n";
    let wsusutil = FakeWsusutil::default();
    wsusutil.outputs.lock().unwrap().extend([
        Ok(listing.to_string()),
        Ok(listing.to_string()),
        Ok(listing.to_string()),
        Ok("Removing inactive approvals...\n".to_string()),
        Ok("There are no inactive approvals.\n".to_string()),
    ]);
    let admin = admin_with(transcript!("approvals"), wsusutil);
    let tally = admin.approval_counts().unwrap();
    assert_eq!(
        (tally.active, tally.inactive, tally.upstream_approved),
        (300, 2, None)
    );
    assert_eq!(
        admin.remove_inactive_approvals(false).unwrap(),
        2,
        "dry-run lists only"
    );
    assert_eq!(admin.remove_inactive_approvals(true).unwrap(), 2);
    assert_eq!(
        *admin.wsusutil.asked.lock().unwrap(),
        [
            "listinactiveapprovals",
            "listinactiveapprovals",
            "listinactiveapprovals",
            "removeinactiveapprovals",
            "listinactiveapprovals"
        ]
    );
    admin.helper.assert_done();
}

#[test]
fn api_errors_odd_replies_and_states_the_contract_lacks() {
    let admin = replaying(transcript!("errors"));
    let filter = UpdateFilter {
        state: Some(UpdateState::Failed),
        declined: Some(false),
        approved: None,
    };
    assert_eq!(
        admin.list_updates(&filter).unwrap_err().kind,
        ErrorKind::Denied
    );
    let unapproved = admin.list_updates(&UpdateFilter::default()).unwrap();
    assert_eq!(
        (unapproved[0].state, unapproved[0].approved),
        (UpdateState::NotReady, false),
        "NotNeeded reads as not-ready, and unapproved"
    );
    let odd_shape = admin.list_updates(&UpdateFilter::default()).unwrap_err();
    assert!(
        odd_shape.message.contains("not what medic expects"),
        "{}",
        odd_shape.message
    );
    admin.helper.assert_done();
}

#[test]
fn the_script_fits_a_command_line_and_lists_every_op_and_setting() {
    let command = HelperCommand::windows_powershell(SCRIPT);
    let length: usize =
        command.args.iter().map(|a| a.len() + 1).sum::<usize>() + command.program.as_os_str().len();
    assert!(length < helper::MAX_COMMAND_LINE, "{length} characters");
    for op in [
        "server-info",
        "list-updates",
        "get-updates",
        "upstream-has",
        "cancel-downloads",
        "resume-downloads",
        "decline",
        "approved-count",
        "upstream-info",
        "get-config",
        "set-config",
        "start-sync",
        "sync-status",
        "sync-history",
        "proxy",
    ] {
        assert!(
            SCRIPT.contains(&format!("'{op}' = {{")),
            "the script has no `{op}`"
        );
    }
    for setting in settings::SETTINGS {
        for property in settings::properties(&setting) {
            assert!(
                SCRIPT.contains(&format!("'{property}'")),
                "the script cannot read {property}"
            );
        }
    }
    assert!(
        !SCRIPT.contains("Invoke-Expression") && !SCRIPT.contains("iex "),
        "no evaluation of text"
    );
}
