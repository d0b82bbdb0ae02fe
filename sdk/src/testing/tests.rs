//! The fake host itself: that every host function is swapped for it, with
//! the generated signature; and that it answers as the agent does in each
//! mode, refusals and no-ops included.

use super::*;
use crate::fs::{AccessRight, EntryKind};
use crate::services::{ProblemKind, ServiceState, StartupType};
use crate::wsus::{
    Operation, ServerMode, StorageMode, SyncCheck, SyncResult, UpdateFilter, UpdateState,
    UpstreamProbe,
};
use crate::{Capability, EventKind, PluginInfo, Report, TriggerHint};
use crate::{bindings, fs, log, services, settings, state, wsus};
use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

// ----- every function is the fake's -----

/// `interface.function` for every `func` of the interfaces a plugin
/// imports, from the WIT of the contract versions the SDK builds for.
fn wit_functions() -> BTreeSet<String> {
    let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("wit");
    let folders = [
        wit.join("medic-plugin").join(crate::CONTRACT_VERSION),
        wit.join("medic-wsus").join(crate::WSUS_VERSION),
    ];
    let mut functions = BTreeSet::new();
    for folder in folders {
        for file in std::fs::read_dir(folder).unwrap() {
            let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
            let mut interface = "";
            for line in text.lines().map(str::trim) {
                if let Some(rest) = line.strip_prefix("interface ") {
                    interface = rest.trim_end_matches('{').trim();
                } else if let Some((name, _)) = line.split_once(": func(")
                    && interface != "plugin"
                {
                    functions.insert(format!("{interface}.{name}"));
                }
            }
        }
    }
    functions
}

#[test]
fn every_function_of_the_wit_is_a_host_function_of_the_fake() {
    let wit = wit_functions();
    let fake: BTreeSet<String> = HostFn::ALL.iter().map(|f| f.name().to_string()).collect();
    assert_eq!(wit, fake);
    assert_eq!(wit.len(), 35, "{wit:?}");
}

fn same<T>(_generated: T, _native: T) {}

/// The public functions keep the generated signatures: plugin code
/// compiles the same for wasm32 and natively.
#[test]
fn the_native_functions_have_the_generated_signatures() {
    use bindings::medic::plugin as core;
    use bindings::medic::wsus::wsus as gen_wsus;
    same(core::fs::stat as fn(_) -> _, fs::stat as fn(_) -> _);
    same(core::fs::list_dir as fn(_) -> _, fs::list_dir as fn(_) -> _);
    same(
        core::fs::read_access as fn(_) -> _,
        fs::read_access as fn(_) -> _,
    );
    same(
        core::fs::read_file as fn(_, _) -> _,
        fs::read_file as fn(_, _) -> _,
    );
    same(
        core::fs::ensure_access as fn(_, _, _, _) -> _,
        fs::ensure_access as fn(_, _, _, _) -> _,
    );
    same(
        core::services::query as fn(_) -> _,
        services::query as fn(_) -> _,
    );
    same(
        core::services::start as fn(_, _) -> _,
        services::start as fn(_, _) -> _,
    );
    same(
        core::services::stop as fn(_, _) -> _,
        services::stop as fn(_, _) -> _,
    );
    same(
        core::services::restart as fn(_, _) -> _,
        services::restart as fn(_, _) -> _,
    );
    same(
        core::services::set_startup as fn(_, _) -> _,
        services::set_startup as fn(_, _) -> _,
    );
    same(
        core::config::get as fn(_) -> _,
        crate::config::get as fn(_) -> _,
    );
    same(
        core::config::all as fn() -> _,
        crate::config::all as fn() -> _,
    );
    same(core::state::get as fn(_) -> _, state::get as fn(_) -> _);
    same(
        core::state::set as fn(_, _) -> _,
        state::set as fn(_, _) -> _,
    );
    same(
        core::state::remove as fn(_) -> _,
        state::remove as fn(_) -> _,
    );
    same(core::state::keys as fn() -> _, state::keys as fn() -> _);
    same(core::log::log as fn(_, _), log::log as fn(_, _));
    same(core::log::panicked as fn(_), log::panicked as fn(_));
    same(
        gen_wsus::server_info as fn() -> _,
        wsus::server_info as fn() -> _,
    );
    same(
        gen_wsus::list_updates as fn(_) -> _,
        wsus::list_updates as fn(_) -> _,
    );
    same(
        gen_wsus::upstream_has as fn(_) -> _,
        wsus::upstream_has as fn(_) -> _,
    );
    same(
        gen_wsus::cancel_downloads as fn(_) -> _,
        wsus::cancel_downloads as fn(_) -> _,
    );
    same(
        gen_wsus::resume_downloads as fn(_) -> _,
        wsus::resume_downloads as fn(_) -> _,
    );
    same(gen_wsus::decline as fn(_) -> _, wsus::decline as fn(_) -> _);
    same(
        gen_wsus::approval_counts as fn() -> _,
        wsus::approval_counts as fn() -> _,
    );
    same(
        gen_wsus::list_inactive_approvals as fn() -> _,
        wsus::list_inactive_approvals as fn() -> _,
    );
    same(
        gen_wsus::remove_inactive_approvals as fn() -> _,
        wsus::remove_inactive_approvals as fn() -> _,
    );
    same(
        gen_wsus::get_config as fn(_) -> _,
        wsus::get_config as fn(_) -> _,
    );
    same(
        gen_wsus::set_config as fn(_, _) -> _,
        wsus::set_config as fn(_, _) -> _,
    );
    same(
        gen_wsus::start_sync as fn() -> _,
        wsus::start_sync as fn() -> _,
    );
    same(
        gen_wsus::sync_status as fn() -> _,
        wsus::sync_status as fn() -> _,
    );
    same(
        gen_wsus::sync_history as fn(_) -> _,
        wsus::sync_history as fn(_) -> _,
    );
    same(
        gen_wsus::upstream_info as fn() -> _,
        wsus::upstream_info as fn() -> _,
    );
    same(gen_wsus::proxy as fn() -> _, wsus::proxy as fn() -> _);
    same(
        gen_wsus::check_upstream as fn() -> _,
        wsus::check_upstream as fn() -> _,
    );
}

/// A host function's name, and a call of it.
type NamedCall<'a> = (&'a str, Box<dyn Fn() + 'a>);

/// Every public host function, called once with no fake host running: a
/// generated import left in place would abort the test binary instead of
/// panicking.
#[test]
fn without_a_fake_host_every_function_panics_saying_so() {
    let ids = vec!["x".to_string()];
    let calls: Vec<NamedCall> = vec![
        ("fs.stat", Box::new(|| drop(fs::stat("/x")))),
        ("fs.list-dir", Box::new(|| drop(fs::list_dir("/x")))),
        ("fs.read-access", Box::new(|| drop(fs::read_access("/x")))),
        ("fs.read-file", Box::new(|| drop(fs::read_file("/x", 1)))),
        (
            "fs.ensure-access",
            Box::new(|| drop(fs::ensure_access("/x", "u", AccessRight::Read, false))),
        ),
        ("services.query", Box::new(|| drop(services::query("s")))),
        ("services.start", Box::new(|| drop(services::start("s", 1)))),
        ("services.stop", Box::new(|| drop(services::stop("s", 1)))),
        (
            "services.restart",
            Box::new(|| drop(services::restart("s", 1))),
        ),
        (
            "services.set-startup",
            Box::new(|| drop(services::set_startup("s", StartupType::Manual))),
        ),
        ("config.get", Box::new(|| drop(settings::value("k")))),
        ("config.all", Box::new(|| drop(settings::all()))),
        ("state.get", Box::new(|| drop(state::get("k")))),
        ("state.set", Box::new(|| drop(state::set("k", "v")))),
        ("state.remove", Box::new(|| drop(state::remove("k")))),
        ("state.keys", Box::new(|| drop(state::keys()))),
        ("log.log", Box::new(|| log::log(log::Level::Info, "m"))),
        ("log.panicked", Box::new(|| log::panicked("m"))),
        ("wsus.server-info", Box::new(|| drop(wsus::server_info()))),
        (
            "wsus.list-updates",
            Box::new(|| {
                drop(wsus::list_updates(UpdateFilter {
                    state: None,
                    declined: None,
                    approved: None,
                }))
            }),
        ),
        (
            "wsus.upstream-has",
            Box::new(|| drop(wsus::upstream_has(&ids))),
        ),
        (
            "wsus.cancel-downloads",
            Box::new(|| drop(wsus::cancel_downloads(&ids))),
        ),
        (
            "wsus.resume-downloads",
            Box::new(|| drop(wsus::resume_downloads(&ids))),
        ),
        ("wsus.decline", Box::new(|| drop(wsus::decline(&ids)))),
        (
            "wsus.approval-counts",
            Box::new(|| drop(wsus::approval_counts())),
        ),
        (
            "wsus.list-inactive-approvals",
            Box::new(|| drop(wsus::list_inactive_approvals())),
        ),
        (
            "wsus.remove-inactive-approvals",
            Box::new(|| drop(wsus::remove_inactive_approvals())),
        ),
        ("wsus.get-config", Box::new(|| drop(wsus::get_config("n")))),
        (
            "wsus.set-config",
            Box::new(|| drop(wsus::set_config("n", "v"))),
        ),
        ("wsus.start-sync", Box::new(|| drop(wsus::start_sync()))),
        ("wsus.sync-status", Box::new(|| drop(wsus::sync_status()))),
        (
            "wsus.sync-history",
            Box::new(|| drop(wsus::sync_history(1))),
        ),
        (
            "wsus.upstream-info",
            Box::new(|| drop(wsus::upstream_info())),
        ),
        ("wsus.proxy", Box::new(|| drop(wsus::proxy()))),
        (
            "wsus.check-upstream",
            Box::new(|| drop(wsus::check_upstream())),
        ),
    ];
    let called: BTreeSet<String> = calls.iter().map(|(name, _)| name.to_string()).collect();
    assert_eq!(called, wit_functions(), "one call per function");
    for (name, call) in &calls {
        let panic = catch_unwind(AssertUnwindSafe(call)).expect_err(name);
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        assert_eq!(message, NO_HOST, "{name}");
    }
}

// ----- plugins for the runs below -----

/// Asks for `fs-read` and `fs-write`; grants Read on its `path` setting.
struct Reader;

impl Plugin for Reader {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "reader".into(),
            version: "0.1.0".into(),
            description: "Makes a path readable.".into(),
            capabilities: vec![Capability::FsRead, Capability::FsWrite],
            triggers: vec![TriggerHint::Manual],
        }
    }

    fn handle(_event: Event) -> Result<Outcome, String> {
        let path: String = settings::required("path")?;
        let access = fs::ensure_access(&path, "Users", AccessRight::Read, true)?;
        crate::info!("{} checked", access.checked);
        let mut report = Report::new();
        report.record_access("Users", &access);
        if !report.is_empty() {
            report.follow_up(60, "check again");
        }
        Ok(report.finish("done"))
    }
}

/// Asks for the WSUS operations and nothing else; calls `services.query`.
struct Overreach;

impl Plugin for Overreach {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "overreach".into(),
            version: "0.1.0".into(),
            description: "Queries a service it did not ask for.".into(),
            capabilities: vec![Operation::Read.into(), Operation::Sync.into()],
            triggers: vec![],
        }
    }

    fn handle(_event: Event) -> Result<Outcome, String> {
        services::query("BITS")?;
        Ok(Report::new().finish("queried"))
    }
}

/// Panics in `handle`.
struct Panicker;

impl Plugin for Panicker {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "panicker".into(),
            version: "0.1.0".into(),
            description: "Panics.".into(),
            capabilities: vec![],
            triggers: vec![],
        }
    }

    fn handle(_event: Event) -> Result<Outcome, String> {
        state::set("before", "the panic").unwrap();
        panic!("boom in handle");
    }
}

fn share() -> FakeHost {
    let mut host = FakeHost::new();
    host.dir("/srv/share/docs")
        .file("/srv/share/docs/a.txt", "a")
        .entry(
            "/srv/share/b.txt",
            Entry::file("b").allow("users", AccessRight::Modify),
        )
        .entry("/srv/share/link", Entry::symlink())
        .allow("/srv/share", "Users", AccessRight::Read)
        .setting("path", "/srv/share");
    host
}

// ----- runs, modes and grants -----

#[test]
fn dry_run_plans_the_same_changes_as_enforce_and_changes_nothing() {
    let mut host = share();
    host.mode(Mode::DryRun);
    let plan = host.run::<Reader>(event::manual());
    assert_eq!(plan.status(), Status::NeedsApproval);
    let planned: Vec<&str> = plan.actions().iter().map(|a| a.target.as_str()).collect();
    assert_eq!(planned, ["/srv/share/docs", "/srv/share/docs/a.txt"]);
    assert!(plan.actions().iter().all(|a| !a.applied));
    assert_eq!(
        plan.actions()[0].detail,
        "Users: Users: no entry -> Users: read"
    );
    assert_eq!(plan.planned().len(), 1);
    assert!(!plan.changed_anything());
    assert_eq!(host.right("/srv/share/docs/a.txt", "Users"), None);
    assert!(
        plan.logged("4 checked"),
        "root, docs, a.txt, b.txt; not the link"
    );

    host.mode(Mode::Enforce);
    let done = host.run::<Reader>(event::manual());
    assert_eq!(done.status(), Status::Remediated);
    assert_eq!(done.actions().len(), 2);
    assert!(done.changed_anything());
    assert_eq!(
        host.right("/srv/share/docs/a.txt", "Users"),
        Some(AccessRight::Read)
    );
    assert_eq!(
        host.right("/srv/share/b.txt", "Users"),
        Some(AccessRight::Modify),
        "rights are only ever added"
    );

    let again = host.run::<Reader>(event::manual());
    assert_eq!(again.status(), Status::Healthy);
    assert!(matches!(
        again.calls_to(HostFn::FsEnsureAccess)[0].outcome,
        CallOutcome::Applied { changed: false }
    ));
}

#[test]
fn approve_mode_plans_like_dry_run() {
    let mut host = share();
    host.mode(Mode::Approve);
    let plan = host.run::<Reader>(event::manual());
    assert_eq!(plan.status(), Status::NeedsApproval);
    assert_eq!(host.right("/srv/share/docs", "Users"), None);
}

#[test]
fn a_path_outside_the_granted_roots_is_denied() {
    let mut host = share();
    host.grant_root("/srv/other");
    let run = host.run::<Reader>(event::manual());
    assert!(
        run.error().starts_with(
            "denied: `/srv/share` is outside the roots granted to fs-write (/srv/other)"
        ),
        "{}",
        run.error()
    );
    assert_eq!(run.denied().len(), 1);
    assert_eq!(run.denied()[0].arg("path"), Some("/srv/share"));

    let mut host = share();
    host.grants(Grants::none().fs_read("/srv").fs_write("/srv/share/docs"));
    let run = host.run::<Reader>(event::manual());
    assert!(
        run.error()
            .contains("outside the roots granted to fs-write (/srv/share/docs)")
    );
}

#[test]
fn a_capability_the_plugin_did_not_ask_for_is_denied() {
    let mut host = FakeHost::new();
    host.wsus();
    host.add_service(Service::new("BITS"));
    let run = host.run::<Overreach>(event::manual());
    assert_eq!(
        run.error(),
        "denied: capability `services-read` is not granted to plugin `overreach`"
    );
    assert_eq!(run.denied()[0].function, HostFn::ServicesQuery);
}

#[test]
fn the_agent_refuses_a_plugin_whose_capabilities_are_not_all_granted() {
    let mut host = share();
    host.grants(Grants::none().fs_read("/srv"));
    let refused = host.try_run::<Reader>(event::manual()).unwrap_err();
    assert_eq!(
        refused,
        LoadError::MissingGrants {
            plugin: "reader".into(),
            missing: vec!["fs-write".into()],
        }
    );
    assert!(
        refused.to_string().ends_with(
            "needs a capability that is not granted: fs-write; grant it in the plugin's policy table \
             with `grants = { fs-write = [\"<root path>\"] }`, or on `medic trigger` with \
             `--grant fs-write=<absolute path>`"
        ),
        "{refused}"
    );
    // As the agent writes them.
    let refused = LoadError::MissingGrants {
        plugin: "keeper".into(),
        missing: vec![
            "wsus-sync".into(),
            "services-control".into(),
            "wsus-read".into(),
        ],
    };
    assert!(
        refused.to_string().ends_with(
            "`grants = { services-control = [\"<service name>\"], wsus = [\"read\", \"sync\"] }`, \
             or on `medic trigger` with \
             `--grant wsus-sync --grant services-control=<service name> --grant wsus-read`"
        ),
        "{refused}"
    );

    struct Unknown;
    impl Plugin for Unknown {
        fn describe() -> PluginInfo {
            PluginInfo {
                name: "unknown".into(),
                version: "0".into(),
                description: String::new(),
                capabilities: vec![Capability::Operation("wsus-reboot".into())],
                triggers: vec![],
            }
        }
        fn handle(_: Event) -> Result<Outcome, String> {
            unreachable!("never loaded")
        }
    }
    assert!(matches!(
        FakeHost::new().try_run::<Unknown>(event::manual()),
        Err(LoadError::UnknownCapability { name, .. }) if name == "wsus-reboot"
    ));
}

#[test]
#[should_panic(expected = "boom in handle")]
fn a_panic_in_handle_is_the_test_s_panic() {
    FakeHost::new().run::<Panicker>(event::manual());
}

#[test]
fn after_a_panic_the_fake_host_is_whole_and_can_run_again() {
    let mut host = share();
    let caught = catch_unwind(AssertUnwindSafe(|| host.run::<Panicker>(event::manual())));
    assert!(caught.is_err());
    assert_eq!(host.state("before"), Some("the panic"));
    assert_eq!(
        host.run::<Reader>(event::manual()).status(),
        Status::Remediated
    );
}

#[test]
fn a_follow_up_event_is_the_agent_s() {
    let mut host = share();
    let first = event::file_changed("/srv/share", "modified");
    let run = host.run::<Reader>(first.clone());
    let next = run.follow_up_event().unwrap();
    assert_eq!(next.kind, EventKind::FollowUp);
    assert_eq!(next.subject, "/srv/share");
    assert_eq!(next.field("follows"), Some(first.id.as_str()));
    assert_eq!(next.field("reason"), Some("check again"));
    assert_eq!(next.time_ms, first.time_ms + 60_000);
    assert!(host.run::<Reader>(next).follow_up_event().is_none());
}

// ----- files -----

#[test]
fn reads_follow_no_link_and_name_what_is_missing() {
    let mut host = share();
    host.entry(
        "/srv/share/docs/a.txt",
        Entry::file("hello").owner("www-data").modified_ms(7),
    );
    let run = host.with(|| {
        let info = fs::stat("/srv/share/docs/a.txt").unwrap();
        assert_eq!(
            (info.kind, info.size, info.owner.as_str(), info.modified_ms),
            (EntryKind::File, 5, "www-data", 7)
        );
        let names: Vec<String> = fs::list_dir("/srv/share")
            .unwrap()
            .into_iter()
            .map(|i| i.path)
            .collect();
        assert_eq!(
            names,
            ["/srv/share/b.txt", "/srv/share/docs", "/srv/share/link"]
        );
        assert_eq!(fs::read_file("/srv/share/docs/a.txt", 4).unwrap(), b"hell");
        assert_eq!(
            fs::stat("/srv/share/link").unwrap().kind,
            EntryKind::Symlink
        );
        let link = fs::read_file("/srv/share/link", 10).unwrap_err();
        assert_eq!(link.kind, ErrorKind::Denied);
        let through = fs::stat("/srv/share/link/x").unwrap_err();
        assert_eq!(through.kind, ErrorKind::Denied);
        assert!(through.message.contains("symbolic link"));
        assert_eq!(
            fs::stat("/srv/nothing").unwrap_err().kind,
            ErrorKind::NotFound
        );
        assert_eq!(
            fs::list_dir("/srv/share/b.txt").unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            fs::stat("srv").unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            fs::stat("/srv/../etc").unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
        let entries = fs::read_access("/srv/share/b.txt").unwrap();
        assert_eq!(entries[0].principal, "users");
        assert_eq!(entries[0].right, Some(AccessRight::Modify));
        assert_eq!(entries[0].raw, "users:modify");
        let missing = fs::ensure_access("/srv/none", "Users", AccessRight::Read, true);
        assert_eq!(missing.unwrap_err().kind, ErrorKind::NotFound);
        let link = fs::ensure_access("/srv/share/link", "Users", AccessRight::Read, true).unwrap();
        assert_eq!(
            (link.checked, link.changed.len()),
            (0, 0),
            "a link is skipped"
        );
    });
    assert!(run.calls.iter().all(|c| !c.function.is_mutating()
        || c.error().is_some()
        || matches!(c.outcome, CallOutcome::Applied { changed: false })));
}

#[test]
fn windows_paths_are_paths_too() {
    let mut host = FakeHost::new();
    host.dir(r"D:\WSUS\WsusContent\AB");
    host.with(|| {
        let report = fs::ensure_access(
            r"D:\WSUS/WsusContent",
            "NETWORK SERVICE",
            AccessRight::FullControl,
            true,
        )
        .unwrap();
        assert_eq!(report.checked, 2);
        assert_eq!(report.changed[1].path, r"D:\WSUS\WsusContent\AB");
    });
    assert_eq!(
        host.right(r"d:\WSUS\WsusContent\AB", "network service"),
        Some(AccessRight::FullControl)
    );
}

// ----- services -----

#[test]
fn service_calls_with_nothing_to_do_are_unapplied_and_change_nothing() {
    let mut host = FakeHost::new();
    host.add_service(Service::new("BITS")).add_service(
        Service::new("W3SVC")
            .state(ServiceState::Stopped)
            .startup(StartupType::Manual),
    );
    let run = host.with(|| {
        let start = services::start("bits", 1000).unwrap();
        assert!(!start.applied);
        assert_eq!(
            (start.before.state, start.before.startup),
            (start.after.state, start.after.startup)
        );
        assert_eq!(start.before.name, "bits", "named as asked");
        let stop = services::stop("W3SVC", 1000).unwrap();
        assert!(!stop.applied);
        let same = services::set_startup("W3SVC", StartupType::Manual).unwrap();
        assert!(!same.applied);
        assert_eq!(same.before.startup, same.after.startup);
    });
    assert!(!run.changed_anything());
    assert_eq!(run.applied().len(), 3, "executed, with nothing to do");
}

#[test]
fn services_start_stop_and_change_startup_in_enforce_only() {
    let mut host = FakeHost::new();
    host.add_service(
        Service::new("BITS")
            .state(ServiceState::Stopped)
            .startup(StartupType::Disabled),
    );
    host.mode(Mode::DryRun);
    host.with(|| {
        let refused = services::start("BITS", 1000).unwrap_err();
        assert_eq!(
            refused.kind,
            ErrorKind::Conflict,
            "refusals are planned too"
        );
        let plan = services::set_startup("BITS", StartupType::Manual).unwrap();
        assert!(!plan.applied);
        assert_eq!(plan.after.startup, StartupType::Manual);
    });
    assert_eq!(host.service("BITS").startup, StartupType::Disabled);
    host.mode(Mode::Enforce);
    let run = host.with(|| {
        services::set_startup("BITS", StartupType::Manual).unwrap();
        let start = services::start("BITS", 1000).unwrap();
        assert!(start.applied);
        assert_eq!(start.after.state, ServiceState::Running);
        let restart = services::restart("BITS", 1000).unwrap();
        assert!(restart.applied, "a restart always has something to do");
        services::stop("BITS", 1000).unwrap()
    });
    assert!(run.outcome.applied);
    assert_eq!(host.service("BITS").state, ServiceState::Stopped);
    assert_eq!(host.service("BITS").startup, StartupType::Manual);
    assert_eq!(run.applied().len(), 4);
}

#[test]
fn broken_failing_and_hanging_services_answer_as_their_manager_does() {
    let mut host = FakeHost::new();
    host.add_service(Service::new("a").broken("bad setting"))
        .add_service(
            Service::new("b")
                .failed(ProblemKind::ExitCode, "status=1")
                .fails_to_start(ProblemKind::ExitCode, "status=2"),
        )
        .add_service(
            Service::new("c")
                .state(ServiceState::Stopped)
                .hangs_on_start(),
        );
    host.with(|| {
        let broken = services::restart("a", 1000).unwrap_err();
        assert_eq!(broken.kind, ErrorKind::Conflict);
        assert!(broken.message.contains("bad setting"));
        assert!(!services::stop("a", 1000).unwrap().applied);
        let failed = services::restart("b", 1000).unwrap_err();
        assert_eq!(failed.kind, ErrorKind::Failed);
        assert!(failed.message.contains("status=2"));
        let hung = services::start("c", 1000).unwrap_err();
        assert_eq!(hung.kind, ErrorKind::Timeout);
        assert_eq!(
            services::query("nope").unwrap_err().kind,
            ErrorKind::NotFound
        );
    });
    let b = host.service("b");
    assert_eq!(b.state, ServiceState::Failed);
    assert_eq!(b.problem.unwrap().detail, "status=2");
    assert_eq!(host.service("c").state, ServiceState::StartPending);
}

#[test]
fn startup_types_follow_the_service_manager_s_rules() {
    let mut host = FakeHost::new();
    host.add_service(Service::new("BITS"));
    host.with(|| {
        let read_only = services::set_startup("BITS", StartupType::Static).unwrap_err();
        assert_eq!(read_only.kind, ErrorKind::InvalidArgument);
        let runtime = services::set_startup("BITS", StartupType::AutomaticUntilReboot).unwrap_err();
        assert_eq!(runtime.kind, ErrorKind::Unsupported);
        services::set_startup("BITS", StartupType::AutomaticDelayed).unwrap();
    });
    let mut host = FakeHost::new();
    host.service_manager(ServiceManager::Systemd)
        .add_service(Service::new("dbus").startup(StartupType::Static))
        .add_service(Service::new("getty@tty1.service").startup(StartupType::Indirect));
    host.with(|| {
        assert_eq!(
            services::query("dbus.service").unwrap().startup,
            StartupType::Static
        );
        let enable = services::set_startup("dbus", StartupType::Automatic).unwrap_err();
        assert_eq!(enable.kind, ErrorKind::Conflict);
        assert!(
            services::set_startup("dbus", StartupType::Disabled)
                .unwrap()
                .applied
        );
        let delayed = services::set_startup("dbus", StartupType::AutomaticDelayed).unwrap_err();
        assert_eq!(delayed.kind, ErrorKind::Unsupported);
        assert!(
            !services::set_startup("getty@tty1.service", StartupType::Manual)
                .unwrap()
                .applied
        );
    });
}

#[test]
fn services_outside_the_granted_names_are_denied() {
    let mut host = FakeHost::new();
    host.add_service(Service::new("BITS"))
        .add_service(Service::new("W3SVC"))
        .grants(
            Grants::none()
                .services_read("W3SVC")
                .services_control("BITS"),
        );
    host.with(|| {
        services::query("W3SVC").unwrap();
        services::restart("BITS", 1).unwrap();
        let e = services::restart("W3SVC", 1).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Denied);
        assert_eq!(
            e.message,
            "service `W3SVC` is not granted to services-control (granted: BITS)"
        );
    });
}

// ----- WSUS -----

fn server(host: &mut FakeHost) -> &mut FakeWsus {
    host.wsus()
        .add_update(Update::new("u1", "one").state(UpdateState::Failed))
        .add_update(Update::new("u2", "two").state(UpdateState::NotReady))
        .add_update(
            Update::new("u3", "three")
                .state(UpdateState::NotReady)
                .approved(false),
        )
}

#[test]
fn without_a_server_wsus_calls_are_unsupported() {
    let mut host = FakeHost::new();
    host.with(|| {
        assert_eq!(
            wsus::server_info().unwrap_err().kind,
            ErrorKind::Unsupported
        );
    });
}

#[test]
fn batch_calls_change_what_they_may_and_plan_in_dry_run() {
    let mut host = FakeHost::new();
    server(&mut host);
    host.mode(Mode::DryRun);
    let ids = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let run = host.with(|| {
        let cancel = wsus::cancel_downloads(&ids(&["u1", "u2", "u2", "nope"])).unwrap();
        assert_eq!(cancel.done, ["u2"]);
        assert!(!cancel.applied);
        assert_eq!(cancel.failed.len(), 2);
        assert!(cancel.failed[0].1.contains("state Failed"));
        assert_eq!(wsus::resume_failed().unwrap().unwrap().done, ["u1"]);
        assert_eq!(wsus::start_sync().unwrap(), 0, "planned");
    });
    assert_eq!(run.planned().len(), 3);
    assert_eq!(host.update("u2").state, UpdateState::NotReady);
    assert_eq!(host.update("u1").state, UpdateState::Failed);
    assert_eq!(host.wsus().running_sync(), None);

    host.mode(Mode::Enforce);
    host.with(|| {
        wsus::cancel_downloads(&ids(&["u2"])).unwrap();
        let declined = wsus::decline(&ids(&["u2", "u2"])).unwrap();
        assert_eq!(declined.done, ["u2"]);
        assert_eq!(
            wsus::decline(&ids(&["u2"])).unwrap().failed[0].1,
            "already declined"
        );
    });
    let u2 = host.update("u2");
    assert_eq!((u2.state, u2.declined), (UpdateState::Canceled, true));
    host.wsus().replica();
    host.with(|| {
        let e = wsus::decline(&ids(&["u1"])).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict);
        assert_eq!(wsus::server_info().unwrap().mode, ServerMode::Replica);
    });
}

#[test]
fn configuration_values_are_checked_and_only_set_in_enforce() {
    let mut host = FakeHost::new();
    host.wsus();
    host.mode(Mode::DryRun);
    host.with(|| {
        let previous = wsus::set_config("HostOnMu", "1").unwrap();
        assert_eq!(previous.as_deref(), Some("0"));
        assert_eq!(wsus::get_config("HostOnMu").unwrap().as_deref(), Some("0"));
        assert_eq!(
            wsus::set_config("HostOnMu", "yes").unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            wsus::set_config("Typo", "1").unwrap_err().kind,
            ErrorKind::NotFound
        );
        assert_eq!(wsus::get_config("Typo").unwrap(), None);
    });
    host.mode(Mode::Enforce);
    host.with(|| {
        wsus::set_config("HostOnMu", "1").unwrap();
        assert_eq!(
            wsus::server_info().unwrap().storage,
            StorageMode::MicrosoftUpdate
        );
        assert_eq!(
            wsus::set_config("UpstreamServerName", "a b")
                .unwrap_err()
                .kind,
            ErrorKind::InvalidArgument
        );
        wsus::set_config("UpstreamServerName", "up").unwrap();
        assert_eq!(
            wsus::server_info().unwrap().upstream.as_deref(),
            Some("up:8531")
        );
    });
    assert_eq!(host.wsus().config("HostOnMu"), Some("1"));
}

#[test]
fn a_sync_runs_on_and_ends_as_scripted_when_a_later_run_starts() {
    let mut host = FakeHost::new();
    server(&mut host).next_sync(SyncScript::succeeds().running_for(1));
    let started = host
        .with(|| {
            wsus::resume_failed().unwrap();
            let started = wsus::start_sync().unwrap();
            assert_eq!(wsus::start_sync().unwrap_err().kind, ErrorKind::Conflict);
            assert_eq!(wsus::sync_check(started).unwrap(), SyncCheck::Running);
            started
        })
        .outcome;
    assert!(started >= FakeHost::START_MS);
    host.with(|| assert_eq!(wsus::sync_check(started).unwrap(), SyncCheck::Running));
    host.with(|| {
        assert_eq!(wsus::sync_check(started).unwrap(), SyncCheck::Succeeded);
        assert!(wsus::failed_downloads().unwrap().is_empty());
    });
    assert_eq!(
        host.update("u1").state,
        UpdateState::Ready,
        "resumed and downloaded"
    );
    assert_eq!(
        host.update("u3").state,
        UpdateState::NotReady,
        "not approved"
    );

    host.wsus()
        .next_sync(SyncScript::fails("ProxyError", "the proxy refused"));
    let started = host.with(|| wsus::start_sync().unwrap()).outcome;
    host.with(|| {
        let status = wsus::sync_status().unwrap();
        assert!(!status.running);
        assert_eq!(status.last.unwrap().result_kind, SyncResult::Failed);
        assert_eq!(
            wsus::sync_check(started).unwrap(),
            SyncCheck::Failed {
                error: Some("ProxyError".into()),
                reason: "the proxy refused".into()
            }
        );
        assert_eq!(wsus::sync_history(10).unwrap().len(), 2);
    });
}

#[test]
fn the_sdk_s_verification_judges_a_repair_across_runs() {
    let mut host = FakeHost::new();
    server(&mut host).next_sync(SyncScript::succeeds().downloads(Downloads::Fail));
    let run = host.with(|| {
        let mut report = Report::new();
        wsus::resume_and_follow_up(&mut report, true, 60).unwrap();
        report.finish("repaired")
    });
    assert_eq!(run.outcome.status, Status::Remediated);
    assert_eq!(run.outcome.follow_up.as_ref().unwrap().after_seconds, 60);
    let verdict = host.with(|| wsus::verify("repaired", 60).unwrap()).outcome;
    assert_eq!(verdict.status, Status::Failed);
    assert!(
        verdict
            .summary
            .contains("approved downloads are Failed again"),
        "{}",
        verdict.summary
    );

    host.wsus().next_sync(SyncScript::succeeds());
    host.with(|| {
        let mut report = Report::new();
        wsus::resume_and_follow_up(&mut report, false, 60).unwrap();
    });
    let verdict = host.with(|| wsus::verify("repaired", 60).unwrap()).outcome;
    assert_eq!(verdict.status, Status::Healthy, "{}", verdict.summary);
    assert!(verdict.summary.starts_with("verified: repaired"));
}

#[test]
fn the_upstream_answers_from_its_configuration_and_probes() {
    let mut host = FakeHost::new();
    host.wsus();
    host.with(|| {
        assert!(wsus::upstream_info().unwrap().is_none());
        assert_eq!(
            wsus::check_upstream().unwrap_err().kind,
            ErrorKind::Conflict
        );
        assert_eq!(wsus::approval_counts().unwrap().upstream_approved, None);
    });
    let broken = UpstreamProbe {
        target: "old:8531".into(),
        addresses: vec![],
        via_proxy: false,
        connected: false,
        http_status: None,
        problem: Some("`old` does not resolve".into()),
    };
    host.wsus()
        .upstream("old")
        .upstream_storage(StorageMode::MicrosoftUpdate)
        .upstream_approvals(12, 0)
        .probe("old:8531", broken);
    host.with(|| {
        assert!(wsus::check_upstream().unwrap().problem.is_some());
        assert_eq!(wsus::upstream_info().unwrap_err().kind, ErrorKind::Failed);
        wsus::set_config("UpstreamServerName", "new:8530").unwrap();
        let facts = wsus::upstream_info().unwrap().unwrap();
        assert_eq!(
            (facts.name.as_str(), facts.storage),
            ("new:8530", StorageMode::MicrosoftUpdate)
        );
        assert_eq!(wsus::check_upstream().unwrap().http_status, Some(200));
        assert_eq!(wsus::approval_counts().unwrap().upstream_approved, Some(12));
    });
}

#[test]
fn inactive_approvals_are_counted_and_removed_in_enforce_only() {
    let mut host = FakeHost::new();
    host.wsus()
        .add_update(Update::new("u1", "one"))
        .inactive_approval("u2", "two", "All Computers", "de")
        .inactive_approval("u2", "two", "Servers", "de");
    host.mode(Mode::DryRun);
    host.with(|| {
        let tally = wsus::approval_counts().unwrap();
        assert_eq!((tally.active, tally.inactive), (1, 1));
        assert_eq!(wsus::remove_inactive_approvals().unwrap(), 2);
    });
    assert_eq!(host.wsus().inactive_approvals().len(), 2);
    host.mode(Mode::Enforce);
    host.with(|| assert_eq!(wsus::remove_inactive_approvals().unwrap(), 2));
    assert!(host.wsus().inactive_approvals().is_empty());
}

#[test]
fn wsus_operations_are_granted_one_by_one() {
    let mut host = FakeHost::new();
    host.wsus();
    host.grants(Grants::none().operation(Operation::Read));
    host.with(|| {
        wsus::server_info().unwrap();
        let e = wsus::start_sync().unwrap_err();
        assert_eq!(e.kind, ErrorKind::Denied);
        assert_eq!(
            e.message,
            "capability `wsus-sync` is not granted to plugin `test-plugin`"
        );
    });
    assert_eq!(host.wsus().running_sync(), None);
}

// ----- settings, state and logs -----

#[test]
fn settings_are_typed_as_the_policy_writes_them() {
    let mut host = FakeHost::new();
    host.setting("name", "BITS")
        .setting("count", 3)
        .setting("on", false)
        .setting("units", ["a", "b"])
        .setting("ratio", "0.5");
    host.with(|| {
        assert_eq!(settings::get("name").as_deref(), Some("BITS"));
        assert_eq!(settings::parse_or("count", 0u32).unwrap(), 3);
        assert!(!settings::parse_or("on", true).unwrap());
        assert_eq!(settings::list("units").unwrap(), ["a", "b"]);
        assert_eq!(settings::parse::<f64>("ratio").unwrap(), Some(0.5));
        assert!(settings::required::<String>("missing").is_err());
        assert_eq!(settings::all().len(), 5);
    });
}

#[test]
fn state_is_kept_across_runs_and_in_dry_run() {
    let mut host = FakeHost::new();
    host.mode(Mode::DryRun).set_state("seen", "1");
    host.with(|| {
        assert_eq!(state::get_parsed::<u32>("seen"), Some(1));
        state::set("b", "2").unwrap();
        state::set("a", "1").unwrap();
        assert_eq!(
            state::set("", "x").unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
        state::remove("seen").unwrap();
        state::remove("never").unwrap();
    });
    let run = host.with(state::keys);
    assert_eq!(run.outcome, ["a", "b"]);
    assert_eq!(host.state("b"), Some("2"));
}

#[test]
fn logs_are_kept_per_run() {
    let mut host = FakeHost::new();
    let run = host.with(|| {
        crate::info!("one {}", 1);
        crate::warn!("two");
        log::panicked("three");
    });
    let logged: Vec<(Level, &str)> = run
        .logs
        .iter()
        .map(|l| (l.level, l.message.as_str()))
        .collect();
    assert_eq!(
        logged,
        [
            (Level::Info, "one 1"),
            (Level::Warn, "two"),
            (Level::Error, "panic: three")
        ]
    );
    assert!(host.with(|| ()).logs.is_empty());
}

#[test]
fn events_are_made_as_the_triggers_make_them() {
    let e = event::system_event("Windows Server Update Services", 364, "it failed")
        .about("BITS")
        .with_field("level", "error")
        .at(5);
    assert_eq!(e.kind, EventKind::SystemEvent);
    assert_eq!(e.source, "event-log:Windows Server Update Services");
    assert_eq!((e.subject.as_str(), e.time_ms), ("BITS", 5));
    assert_eq!(e.field("event-id"), Some("364"));
    assert_eq!(e.field("level"), Some("error"));
    assert_ne!(event::manual().id, event::manual().id);
    assert_eq!(
        event::journal("nginx", "nginx", "bye").field("identifier"),
        Some("nginx")
    );
    assert_eq!(
        event::log_line("/var/log/x", "ERROR").field("line"),
        Some("ERROR")
    );
    assert_eq!(event::schedule(60).kind, EventKind::Schedule);
    assert_eq!(event::startup().kind, EventKind::Startup);
}
