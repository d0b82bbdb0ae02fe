//! Hostile and broken plugins: each run ends with a clear record and the
//! runtime goes on serving.

use crate::support::{Run, component, load, runtime, workspace};
use medic_backends::services::{
    ProblemKind, ServiceChange, ServiceManager, ServiceProblem, ServiceState, ServiceStatus,
    StartupType,
};
use medic_backends::{BackendError, ErrorKind, OpResult};
use medic_sandbox::Grants;
use medic_sandbox::{
    CacheUse, Limits, LoadError, LoadedPlugin, Mode, RunFailure, RunReport, RunResult, Runtime,
    RuntimeConfig, Tier,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn failure(result: &RunResult) -> &RunFailure {
    match result {
        RunResult::Failed(failure) => failure,
        RunResult::Completed(outcome) => panic!("expected a failed run, got {outcome:?}"),
    }
}

/// After any hostile run, a well-behaved plugin still runs.
fn assert_runtime_still_serves() {
    let noop = load("fixture-noop");
    let report = Run::default().grant("fs-read=/tmp").on(&noop);
    assert_eq!(report.status().as_str(), "healthy", "{:?}", report.result);
}

#[test]
fn an_infinite_loop_is_killed_at_its_timeout() {
    let spin = load("fixture-spin");
    let limits = Limits {
        timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let started = Instant::now();
    let report = Run::default().limits(limits).on(&spin);
    let elapsed = started.elapsed();
    assert!(
        matches!(
            failure(&report.result),
            RunFailure::Timeout { limit_ms: 200, elapsed_ms } if *elapsed_ms >= 200
        ),
        "{:?}",
        report.result
    );
    // Generous bound: the point is that the run is killed, not how fast.
    assert!(elapsed < Duration::from_secs(10), "run took {elapsed:?}");
    assert_runtime_still_serves();
}

#[test]
fn fuel_stops_a_loop_deterministically() {
    let spin = load("fixture-spin");
    let limits = Limits {
        fuel: Some(5_000_000),
        ..Limits::default()
    };
    let report = Run::default().limits(limits).on(&spin);
    assert_eq!(
        failure(&report.result),
        &RunFailure::FuelExhausted { fuel: 5_000_000 }
    );
    assert_eq!(report.fuel_used, Some(5_000_000));
}

#[test]
fn unbounded_allocation_stops_at_the_memory_cap() {
    let hog = load("fixture-hog");
    let limits = Limits {
        memory_bytes: 16 << 20,
        ..Limits::default()
    };
    let report = Run::default().limits(limits).on(&hog);
    match failure(&report.result) {
        RunFailure::MemoryCap {
            limit_bytes,
            asked_bytes,
        } => {
            assert_eq!(*limit_bytes, 16 << 20);
            assert!(*asked_bytes > 16 << 20);
        }
        other => panic!("expected the memory cap, got {other}"),
    }
    assert!(
        failure(&report.result)
            .to_string()
            .contains("memory cap of 16 MiB")
    );
    assert_runtime_still_serves();
}

/// The SDK's allocator serves a small run from the room its initial memory
/// already has, so such a run never grows its memory and the host never
/// makes pages accessible only to take them away again at the reset. A run
/// that needs more grows as before, and its report says how far.
#[test]
fn a_small_run_stays_in_its_initial_memory_and_a_big_one_grows() {
    let noop = load("fixture-noop");
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("file");
    std::fs::write(&target, b"data").unwrap();
    for round in 0..50 {
        let run = Run::default().grant(&format!("fs-read={}", dir.path().display()));
        let run = if round % 2 == 0 {
            run
        } else {
            run.setting("stat-path", &target.display().to_string())
                .setting("stat-count", "10")
        };
        let report = run.on(&noop);
        assert_eq!(report.status().as_str(), "healthy", "{:?}", report.result);
        assert!(report.memory.peak_bytes > 0);
        assert_eq!(report.memory.grows, 0, "round {round}: {:?}", report.memory);
    }

    let hog = load("fixture-hog");
    let limits = Limits {
        memory_bytes: 16 << 20,
        ..Limits::default()
    };
    let report = Run::default().limits(limits).on(&hog);
    assert!(report.memory.grows > 1, "{:?}", report.memory);
    assert!(report.memory.peak_bytes <= 16 << 20, "{:?}", report.memory);
}

#[test]
fn a_panic_ends_the_run_with_its_message() {
    let panicker = load("fixture-panicker");
    let report = Run::default().on(&panicker);
    let RunFailure::Panic { message } = failure(&report.result) else {
        panic!("expected a panic, got {:?}", report.result);
    };
    assert!(message.contains("fixture panicked on purpose"), "{message}");
    assert!(report.logs.iter().any(|l| l.level == "error"));
    assert_runtime_still_serves();
}

#[test]
fn calls_outside_the_grants_are_denied_as_values_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let overreach = load("fixture-overreach");
    let report = Run::default()
        .grant(&format!("fs-read={}", dir.path().display()))
        .setting("path", "/etc/hostname")
        .on(&overreach);
    let outcome = report
        .outcome()
        .expect("the plugin handles the errors itself");
    assert_eq!(outcome.summary, "stat denied; status denied");
    assert_eq!(report.calls.len(), 2);
    assert!(report.calls.iter().all(|c| c.denied), "{:?}", report.calls);
    let stat = &report.calls[0];
    assert_eq!(stat.function, "fs.stat");
    assert!(
        stat.error
            .as_deref()
            .unwrap()
            .contains("outside the roots granted to fs-read")
    );
    let query = &report.calls[1];
    assert_eq!(query.function, "services.query");
    assert!(
        query
            .error
            .as_deref()
            .unwrap()
            .contains("`services-read` is not granted")
    );

    // Inside its root the same call is allowed.
    std::fs::write(dir.path().join("ok.txt"), "12345").unwrap();
    let report = Run::default()
        .grant(&format!("fs-read={}", dir.path().display()))
        .setting("path", &dir.path().join("ok.txt").display().to_string())
        .on(&overreach);
    assert!(
        report
            .outcome()
            .unwrap()
            .summary
            .starts_with("stat ok: 5 bytes")
    );
}

#[test]
fn a_plugin_asking_for_more_than_granted_is_refused_at_load() {
    let plugin = load("share-guard");
    let mut grants = Grants::none();
    grants.add_spec("fs-read=/srv").unwrap();
    let error = plugin.check_grants(&grants).unwrap_err();
    assert!(matches!(error, LoadError::MissingGrants { .. }));
    let message = error.to_string();
    assert!(message.contains("plugin `share-guard`"), "{message}");
    assert!(
        message.contains("needs a capability that is not granted: fs-write; grant it in the plugin's policy table with `grants = { fs-write = [\"<root path>\"] }`, or on `medic trigger` with `--grant fs-write=<absolute path>`"),
        "{message}"
    );
}

#[test]
fn an_unknown_contract_version_is_refused_with_both_versions_named() {
    let error = runtime()
        .load_file(&component("fixture-future-contract"))
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("built for contract medic:plugin@9.0.0"),
        "{message}"
    );
    assert!(
        message.contains("supported: 0.4.0, 0.3.0, 0.2.0, 0.1.0"),
        "{message}"
    );
    assert!(
        message.contains("rebuild it against a medic-sdk"),
        "{message}"
    );
}

#[test]
fn a_plugin_built_for_0_2_0_sees_the_new_values_as_the_ones_it_knows() {
    let plugin = load("fixture-contract-0-2-0");
    assert_eq!(plugin.contract.version, "0.2.0");
    assert!(
        plugin
            .contract
            .imports
            .iter()
            .any(|i| i == "medic:wsus/wsus@0.1.0"),
        "{:?}",
        plugin.contract.imports
    );
    let dir = tempfile::tempdir().unwrap();
    let lab = medic_lab::Lab::init(
        &dir.path().join("lab"),
        &medic_lab::InitOptions {
            upstream_updates: 200,
            ..medic_lab::InitOptions::default()
        },
    )
    .unwrap();
    lab.set_startup(
        medic_lab::Server::Downstream,
        "BITS",
        medic_lab::model::StartupType::AutomaticDelayed,
        true,
    )
    .unwrap();
    let before = lab
        .sync_history(medic_lab::Server::Downstream, 100)
        .unwrap()
        .len();
    let mut request = Run::default()
        .grant("services-read=BITS")
        .grant("wsus-read")
        .grant("wsus-sync")
        .request();
    request.backends = medic_lab::backend::backends(lab.clone(), medic_lab::Server::Downstream);
    plugin.check_grants(&request.grants).unwrap();
    let report = runtime().run(&plugin, request);
    let summary = &report
        .outcome()
        .unwrap_or_else(|| panic!("{report:#?}"))
        .summary;
    // Delayed-automatic reads as automatic; the sync runs on.
    for said in [
        "ServiceState::Running",
        "StartupType::Automatic;",
        "sync running true",
    ] {
        assert!(summary.contains(said), "{said}: {summary}");
    }
    let started = report
        .calls
        .iter()
        .find(|c| c.function == "wsus.start-sync")
        .unwrap();
    assert!(started.applied && started.error.is_none(), "{started:?}");
    // The sync it started runs on and finishes, as for any plugin.
    let deadline = std::time::Instant::now() + crate::support::PATIENCE;
    while lab
        .sync_history(medic_lab::Server::Downstream, 100)
        .unwrap()
        .len()
        == before
    {
        lab.settle_sync().unwrap();
        assert!(
            std::time::Instant::now() < deadline,
            "the sync never finished"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A service manager that reports what a systemd host reports (every
/// state, startup type and problem 0.4.0 tells apart), and counts the
/// startup changes that reach it.
struct ReportedServices {
    statuses: Vec<ServiceStatus>,
    set_calls: AtomicUsize,
}

impl ReportedServices {
    fn new() -> Arc<Self> {
        let status = |name: &str,
                      state: ServiceState,
                      startup: StartupType,
                      problem: Option<(ProblemKind, &str)>| ServiceStatus {
            name: name.into(),
            display_name: name.into(),
            state,
            startup,
            problem: problem.map(|(kind, detail)| ServiceProblem {
                kind,
                detail: detail.into(),
            }),
        };
        Arc::new(Self {
            statuses: vec![
                status(
                    "bad",
                    ServiceState::Broken,
                    StartupType::Manual,
                    Some((
                        ProblemKind::Broken,
                        "systemd cannot load it: Unit configuration has fatal error",
                    )),
                ),
                status(
                    "crashed",
                    ServiceState::Failed,
                    StartupType::Automatic,
                    Some((
                        ProblemKind::ExitCode,
                        "systemd's result: exit-code, exit status 3",
                    )),
                ),
                status("tmpfiles", ServiceState::Stopped, StartupType::Static, None),
                status("getty", ServiceState::Running, StartupType::Indirect, None),
                status("mnt", ServiceState::Running, StartupType::Generated, None),
                status(
                    "for-now",
                    ServiceState::Running,
                    StartupType::AutomaticUntilReboot,
                    None,
                ),
                status(
                    "off-for-now",
                    ServiceState::Stopped,
                    StartupType::DisabledUntilReboot,
                    None,
                ),
            ],
            set_calls: AtomicUsize::new(0),
        })
    }

    fn names(&self) -> Vec<&str> {
        self.statuses.iter().map(|s| s.name.as_str()).collect()
    }

    /// A run of `plugin` against these services, with both services
    /// grants on each and `services` listing them all.
    fn run(self: &Arc<Self>, plugin: &LoadedPlugin, run: Run) -> RunReport {
        let mut run = run.setting_list("services", &self.names());
        for name in self.names() {
            run = run
                .grant(&format!("services-read={name}"))
                .grant(&format!("services-control={name}"));
        }
        let mut request = run.request();
        request.backends.services = self.clone();
        runtime().run(plugin, request)
    }
}

impl ServiceManager for ReportedServices {
    fn query(&self, name: &str) -> OpResult<ServiceStatus> {
        self.statuses
            .iter()
            .find(|s| s.name == name)
            .cloned()
            .ok_or_else(|| BackendError::new(ErrorKind::NotFound, format!("no service {name}")))
    }

    fn start(&self, _: &str, _: Duration, _: bool) -> OpResult<ServiceChange> {
        Err(BackendError::new(
            ErrorKind::Unsupported,
            "not in this test",
        ))
    }

    fn stop(&self, _: &str, _: Duration, _: bool) -> OpResult<ServiceChange> {
        Err(BackendError::new(
            ErrorKind::Unsupported,
            "not in this test",
        ))
    }

    fn restart(&self, _: &str, _: Duration, _: bool) -> OpResult<ServiceChange> {
        Err(BackendError::new(
            ErrorKind::Unsupported,
            "not in this test",
        ))
    }

    fn set_startup(
        &self,
        name: &str,
        startup: StartupType,
        apply: bool,
    ) -> OpResult<ServiceChange> {
        self.set_calls.fetch_add(1, Ordering::SeqCst);
        let before = self.query(name)?;
        let after = ServiceStatus {
            startup,
            ..before.clone()
        };
        Ok(ServiceChange {
            applied: apply && before != after,
            before,
            after,
        })
    }
}

#[test]
fn a_plugin_built_for_0_4_0_sees_broken_services_every_startup_type_and_the_problem() {
    let plugin = load("fixture-services");
    assert_eq!(plugin.contract.version, "0.4.0");
    assert!(
        plugin
            .contract
            .imports
            .iter()
            .any(|i| i == "medic:plugin/services@0.4.0"),
        "{:?}",
        plugin.contract.imports
    );
    let services = ReportedServices::new();
    let report = services.run(&plugin, Run::default());
    let outcome = report.outcome().unwrap_or_else(|| panic!("{report:#?}"));
    assert_eq!(
        outcome.summary,
        "bad broken manual (broken: systemd cannot load it: Unit configuration has fatal error); \
         crashed failed automatic (exit-code: systemd's result: exit-code, exit status 3); \
         tmpfiles stopped static (-); \
         getty running indirect (-); \
         mnt running generated (-); \
         for-now running automatic-until-reboot (-); \
         off-for-now stopped disabled-until-reboot (-)"
    );

    // The read-only startup types are refused as invalid, whatever the
    // service manager, and in dry-run as in enforce: none reaches it.
    for mode in [Mode::Enforce, Mode::DryRun] {
        let report = services.run(&plugin, Run::default().mode(mode).setting("set", "static"));
        let outcome = report.outcome().unwrap_or_else(|| panic!("{report:#?}"));
        assert_eq!(
            outcome
                .summary
                .matches("set static: invalid-argument")
                .count(),
            services.statuses.len(),
            "{}",
            outcome.summary
        );
        let refused = report
            .calls
            .iter()
            .find(|c| c.function == "services.set-startup")
            .unwrap();
        assert!(
            refused
                .error
                .as_deref()
                .unwrap()
                .contains("`static` is what a service's definition makes of it"),
            "{refused:?}"
        );
    }
    assert_eq!(services.set_calls.load(Ordering::SeqCst), 0);

    // The types that can be set reach the service manager, which answers
    // in the 0.4.0 values.
    let report = services.run(
        &plugin,
        Run::default()
            .mode(Mode::DryRun)
            .setting("set", "disabled-until-reboot"),
    );
    let summary = &report.outcome().unwrap().summary;
    assert!(
        summary.contains(
            "off-for-now stopped disabled-until-reboot (-), set disabled-until-reboot: unchanged"
        ),
        "{summary}"
    );
    assert!(
        summary.contains("tmpfiles stopped static (-), set disabled-until-reboot: planned"),
        "{summary}"
    );
    assert_eq!(
        services.set_calls.load(Ordering::SeqCst),
        services.statuses.len()
    );
}

#[test]
fn a_service_call_with_nothing_to_do_is_recorded_as_no_change() {
    let plugin = load("fixture-services");
    let services = ReportedServices::new();
    let report = services.run(
        &plugin,
        Run::default().setting("set", "disabled-until-reboot"),
    );
    let calls: Vec<_> = report
        .calls
        .iter()
        .filter(|c| c.function == "services.set-startup" && c.error.is_none())
        .collect();
    let call = |name: &str| {
        calls
            .iter()
            .find(|c| c.args["name"] == name)
            .unwrap_or_else(|| panic!("no call for {name}: {calls:#?}"))
    };
    // Executed both, but only one changed anything.
    let already = call("off-for-now");
    assert!(already.applied && !already.changed, "{already:?}");
    let changed = call("for-now");
    assert!(changed.applied && changed.changed, "{changed:?}");
    // In dry-run nothing is applied, so nothing changed.
    let planned = services.run(
        &plugin,
        Run::default()
            .mode(Mode::DryRun)
            .setting("set", "disabled-until-reboot"),
    );
    assert!(planned.calls.iter().all(|c| !c.applied && !c.changed));
}

#[test]
fn a_plugin_built_for_0_3_0_sees_the_0_4_0_service_values_as_the_ones_it_knows() {
    let plugin = load("fixture-contract-0-3-0");
    assert_eq!(plugin.contract.version, "0.3.0");
    assert!(
        plugin
            .contract
            .imports
            .iter()
            .any(|i| i == "medic:plugin/services@0.3.0"),
        "{:?}",
        plugin.contract.imports
    );
    let report = ReportedServices::new().run(&plugin, Run::default());
    let outcome = report.outcome().unwrap_or_else(|| panic!("{report:#?}"));
    // Broken reads as failed; until-reboot startups as automatic and
    // disabled; static, indirect and generated units as manual (something
    // else starts them).
    let seen: Vec<String> = [
        ("bad", "Failed", "Manual"),
        ("crashed", "Failed", "Automatic"),
        ("tmpfiles", "Stopped", "Manual"),
        ("getty", "Running", "Manual"),
        ("mnt", "Running", "Manual"),
        ("for-now", "Running", "Automatic"),
        ("off-for-now", "Stopped", "Disabled"),
    ]
    .iter()
    .map(|(name, state, startup)| format!("{name} ServiceState::{state} StartupType::{startup}"))
    .collect();
    assert_eq!(outcome.summary, seen.join("; "));
}

#[test]
fn bits_restart_leaves_a_broken_bits_for_a_person() {
    let plugin = load("bits-restart");
    let services = Arc::new(ReportedServices {
        statuses: vec![ServiceStatus {
            name: "BITS".into(),
            display_name: "Background Intelligent Transfer Service".into(),
            state: ServiceState::Broken,
            startup: StartupType::Manual,
            problem: Some(ServiceProblem {
                kind: ProblemKind::Broken,
                detail: "systemd cannot load it: Unit configuration has fatal error".into(),
            }),
        }],
        set_calls: AtomicUsize::new(0),
    });
    let report = services.run(&plugin, Run::default());
    let outcome = report.outcome().unwrap_or_else(|| panic!("{report:#?}"));
    assert_eq!(outcome.status.as_str(), "failed");
    assert!(
        outcome.summary.starts_with(
            "BITS is broken and cannot start: systemd cannot load it: Unit configuration has fatal error"
        ),
        "{}",
        outcome.summary
    );
    // It looked, and tried nothing.
    let functions: Vec<&str> = report.calls.iter().map(|c| c.function.as_str()).collect();
    assert_eq!(functions, ["services.query"]);
}

#[test]
fn a_plugin_built_against_the_previous_contract_still_loads_and_runs() {
    let plugin = load("fixture-contract-0-1-0");
    assert_eq!(plugin.contract.version, "0.1.0");
    assert!(
        plugin
            .contract
            .imports
            .iter()
            .any(|i| i == "medic:plugin/fs@0.1.0"),
        "{:?}",
        plugin.contract.imports
    );
    // Its WSUS capability, in 0.1.0's core package, is the same grant as
    // medic:wsus's.
    assert_eq!(
        plugin
            .info
            .capabilities
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>(),
        ["fs-read", "wsus-read"]
    );
    let dir = tempfile::tempdir().unwrap();
    let store = medic_agent::audit::Store::open(dir.path()).unwrap();
    let state = medic_agent::audit::state::StateStore::new(store);
    let run = || {
        Run::default()
            .grant("fs-read=/etc")
            .grant("wsus-read")
            .setting("path", "/etc/hostname")
            .setting_list("names", &["NETWORK SERVICE", "Users"])
            .with_state(state.clone())
            .on(&plugin)
    };
    let first = run();
    let summary = &first
        .outcome()
        .unwrap_or_else(|| panic!("{first:#?}"))
        .summary;
    assert!(summary.starts_with("/etc/hostname is "), "{summary}");
    // 0.1.0 reads lists as JSON text, as it always did.
    assert!(
        summary.contains(r#"names ["NETWORK SERVICE","Users"]"#),
        "{summary}"
    );
    assert!(summary.ends_with("run 1"), "{summary}");
    assert_eq!(first.calls[0].function, "fs.stat");
    assert_eq!(first.logs[0].message, "run 1");
    let second = run();
    assert!(second.outcome().unwrap().summary.ends_with("run 2"));
    let panicked = Run::default()
        .grant("fs-read=/etc")
        .grant("wsus-read")
        .setting("panic", "yes")
        .on(&plugin);
    let RunFailure::Panic { message } = failure(&panicked.result) else {
        panic!("expected a panic, got {:?}", panicked.result);
    };
    assert_eq!(message, "on purpose, the 0.1.0 way");
}

#[test]
fn wsus_is_a_package_of_its_own_imported_by_the_plugins_that_use_it() {
    let acl = load("content-acl");
    assert_eq!(acl.contract.version, "0.4.0");
    assert!(
        acl.contract
            .imports
            .iter()
            .any(|i| i == "medic:wsus/wsus@0.3.0"),
        "{:?}",
        acl.contract.imports
    );
    assert!(
        acl.info
            .capabilities
            .iter()
            .any(|c| c.to_string() == "wsus-read")
    );
    let noop = load("fixture-noop");
    assert!(
        !noop
            .contract
            .imports
            .iter()
            .any(|i| i.starts_with("medic:wsus")),
        "{:?}",
        noop.contract.imports
    );
}

#[test]
fn malformed_components_are_refused_with_the_file_named() {
    let error = runtime()
        .load_bytes(b"\0asm not really", "broken.wasm")
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with("broken.wasm is not a valid WebAssembly component"),
        "{message}"
    );

    // A core module is not a component either.
    let core = workspace().join("target/wasm/wasm32-unknown-unknown/release/fixture_noop.wasm");
    let error = runtime().load_file(&core).unwrap_err();
    assert!(matches!(error, LoadError::Compile { .. }), "{error}");

    let error = runtime()
        .load_file(&workspace().join("no/such/plugin.wasm"))
        .unwrap_err();
    assert!(
        error.to_string().starts_with("cannot read plugin"),
        "{error}"
    );
}

#[test]
fn compiled_components_are_cached_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..RuntimeConfig::default()
    };
    let first = Runtime::new(&config)
        .unwrap()
        .load_file(&component("fixture-noop"))
        .unwrap();
    assert_eq!(first.cache, CacheUse::Compiled);
    let second = Runtime::new(&config)
        .unwrap()
        .load_file(&component("fixture-noop"))
        .unwrap();
    assert_eq!(second.cache, CacheUse::Hit);
    assert_eq!(first.hash, second.hash);

    // A corrupt cache entry is recompiled, not trusted.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "cwasm") {
            std::fs::write(path, b"garbage").unwrap();
        }
    }
    let third = Runtime::new(&config)
        .unwrap()
        .load_file(&component("fixture-noop"))
        .unwrap();
    assert_eq!(third.cache, CacheUse::Compiled);
}

/// A component loaded already shares its compiled code with every later
/// load of the same bytes, without reading the cache, for as long as a
/// plugin holds it; then the cache serves it again. Each of many rounds
/// drops the plugins in a different order.
#[test]
fn plugins_loaded_from_one_component_share_its_compiled_code() {
    let dir = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::new(&config).unwrap();
    let noop = component("fixture-noop");
    let first = runtime.load_file(&noop).unwrap();
    assert_eq!(first.cache, CacheUse::Compiled);
    for round in 0..20 {
        let held = (0..3)
            .map(|_| runtime.load_file(&noop).unwrap())
            .collect::<Vec<_>>();
        assert!(held.iter().all(|p| p.cache == CacheUse::Shared), "{round}");
        assert_eq!(runtime.shared_code().len(), 1);
        // The shared code runs.
        let report = runtime.run(&held[round % 3], Run::default().request());
        assert!(
            matches!(report.result, RunResult::Completed(_)),
            "{report:?}"
        );
        drop(held);
    }
    // A different component is not confused with it.
    let other = runtime.load_file(&component("fixture-panicker")).unwrap();
    assert_ne!(other.cache, CacheUse::Shared);
    assert_eq!(runtime.shared_code().len(), 2);
    drop((first, other));
    assert!(runtime.shared_code().is_empty());
    assert_eq!(runtime.load_file(&noop).unwrap().cache, CacheUse::Hit);
}

#[test]
fn too_many_host_calls_end_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let noop = load("fixture-noop");
    let limits = Limits {
        max_host_calls: 10,
        ..Limits::default()
    };
    let report = Run::default()
        .grant(&format!("fs-read={}", dir.path().display()))
        .setting("stat-path", &dir.path().display().to_string())
        .setting("stat-count", "50")
        .limits(limits)
        .on(&noop);
    let RunFailure::Trap { message } = failure(&report.result) else {
        panic!("expected a trap, got {:?}", report.result);
    };
    assert!(message.contains("more than 10 host calls"), "{message}");
    assert_eq!(report.calls.len(), 10);
}

#[test]
fn wasi_is_linked_for_other_languages_and_shows_nothing_of_the_host() {
    // The agent's own environment is not empty; the plugin's must be.
    assert!(std::env::vars().count() > 0);
    let plugin = load("fixture-wasi-env");
    assert!(
        plugin
            .contract
            .imports
            .iter()
            .any(|i| i.starts_with("wasi:cli/environment@0.2")),
        "{:?}",
        plugin.contract.imports
    );
    let report = Run::default().on(&plugin);
    let outcome = report.outcome().expect("the run completes");
    assert_eq!(
        outcome.summary,
        "0 environment variables, 0 arguments, cwd false"
    );
}

/// The log lines a run kept from one stream.
fn stream_lines<'a>(report: &'a RunReport, stream: &str) -> Vec<&'a str> {
    report
        .logs
        .iter()
        .filter(|log| log.level == stream)
        .map(|log| log.message.as_str())
        .collect()
}

#[test]
fn what_a_plugin_prints_is_kept_as_its_log_lines() {
    let plugin = load("fixture-wasi-output");
    let report = Run::default().on_subject(&plugin, "ok");
    assert!(report.outcome().is_some(), "{:?}", report.result);
    assert_eq!(
        stream_lines(&report, "stdout"),
        ["checking the share", "all 3 folders readable"]
    );
    assert_eq!(stream_lines(&report, "stderr"), ["a warning on stderr"]);
}

#[test]
fn an_uncaught_error_is_told_by_what_the_plugin_said_last() {
    let plugin = load("fixture-wasi-output");
    for _ in 0..20 {
        let report = Run::default().on_subject(&plugin, "uncaught");
        let RunFailure::Uncaught { message, trap } = failure(&report.result) else {
            panic!("expected an uncaught error, got {:?}", report.result);
        };
        assert_eq!(message, "ValueError: the share is gone");
        assert!(trap.contains("unreachable"), "{trap}");
        let stderr = stream_lines(&report, "stderr");
        assert_eq!(
            stderr[..3],
            [
                "Traceback (most recent call last):",
                "  File \"/0/app.py\", line 12, in handle",
                "ValueError: the share is gone"
            ]
        );
        let shown = failure(&report.result).to_string();
        assert!(
            shown.starts_with("stopped by an uncaught error: ValueError: the share is gone"),
            "{shown}"
        );
    }
    assert_runtime_still_serves();
}

#[test]
fn a_flood_of_output_is_cut_to_its_head_and_tail_and_the_run_completes() {
    let plugin = load("fixture-wasi-output");
    for _ in 0..10 {
        let report = Run::default().on_subject(&plugin, "flood");
        assert!(report.outcome().is_some(), "{:?}", report.result);
        let stdout = stream_lines(&report, "stdout");
        assert_eq!(stdout.last(), Some(&"the end of the flood"), "{stdout:?}");
        assert!(
            stdout.iter().any(|l| l.ends_with("bytes left out]")),
            "{stdout:?}"
        );
        let kept: usize = report.logs.iter().map(|l| l.message.len()).sum();
        assert!(kept <= 64 * 1024, "{kept} bytes of log lines kept");
    }
}

#[test]
fn printed_control_characters_cannot_forge_the_agents_log() {
    let plugin = load("fixture-wasi-output");
    let report = Run::default().on_subject(&plugin, "escape");
    let stderr = stream_lines(&report, "stderr");
    assert_eq!(stderr.len(), 2, "{stderr:?}");
    assert!(
        stderr
            .iter()
            .all(|line| !line.chars().any(char::is_control)),
        "{stderr:?}"
    );
    assert!(stderr[0].starts_with("\\u{1b}[2J"), "{stderr:?}");
}

#[test]
fn a_component_importing_what_the_agent_lacks_is_refused_before_it_is_compiled() {
    let cache = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(&RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    for _ in 0..3 {
        let error = runtime
            .load_file(&component("fixture-wasi-http"))
            .unwrap_err();
        assert!(matches!(error, LoadError::Contract { .. }), "{error}");
        let message = error.to_string();
        assert!(
            message.contains("imports what this agent does not provide: `wasi:http/types@0.2.0`"),
            "{message}"
        );
        assert!(message.contains("--disable http fetch-event"), "{message}");
    }
    // Nothing was compiled, so nothing was cached (the cache's own key
    // is made with the runtime).
    let cached: Vec<_> = walk_files(cache.path())
        .into_iter()
        .filter(|f| !f.ends_with("cache.key"))
        .collect();
    assert!(cached.is_empty(), "{cached:?}");
}

/// Every file under `dir`.
fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk_files(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// With the quick tier, a component the cache does not hold serves at once
/// from Winch's code, which keeps every limit (the deadline, fuel, the
/// memory cap); Cranelift's code then takes over in the background, runs
/// under way finish, none is lost, and the cache holds it for the next
/// start. Ten rounds, each from an empty cache.
#[test]
fn the_quick_tier_serves_at_once_keeps_every_limit_and_moves_up() {
    for round in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let config = RuntimeConfig {
            cache_dir: Some(dir.path().to_path_buf()),
            quick_tier: true,
            ..RuntimeConfig::default()
        };
        let runtime = Runtime::new(&config).unwrap();
        let held = runtime.hold_optimizing();
        let noop = runtime.load_file(&component("fixture-noop")).unwrap();
        assert_eq!(noop.cache, CacheUse::Quick, "{round}");
        assert_eq!(noop.tier(), Tier::Quick, "{round}");
        // A second copy loaded before the optimized code is ready moves up
        // with the first, on one compiled copy.
        let second = runtime.load_file(&component("fixture-noop")).unwrap();
        assert_eq!(second.cache, CacheUse::Quick, "{round}");
        if round == 0 {
            let spin = runtime.load_file(&component("fixture-spin")).unwrap();
            let hog = runtime.load_file(&component("fixture-hog")).unwrap();
            assert_eq!(spin.tier(), Tier::Quick);
            let timeout = Limits {
                timeout: Duration::from_millis(200),
                ..Limits::default()
            };
            let report = runtime.run(&spin, Run::default().limits(timeout).request());
            assert!(
                matches!(
                    failure(&report.result),
                    RunFailure::Timeout { limit_ms: 200, .. }
                ),
                "{:?}",
                report.result
            );
            let fuel = Limits {
                fuel: Some(5_000_000),
                ..Limits::default()
            };
            let report = runtime.run(&spin, Run::default().limits(fuel).request());
            assert_eq!(
                failure(&report.result),
                &RunFailure::FuelExhausted { fuel: 5_000_000 }
            );
            let memory = Limits {
                memory_bytes: 16 << 20,
                ..Limits::default()
            };
            let report = runtime.run(&hog, Run::default().limits(memory).request());
            assert!(
                matches!(failure(&report.result), RunFailure::MemoryCap { .. }),
                "{:?}",
                report.result
            );
        }
        // Runs go on while the optimized code is compiled and swapped in.
        let (started, first_run) = std::sync::mpsc::channel();
        let runs = std::thread::scope(|scope| {
            let runner = scope.spawn(|| {
                let mut runs = 0;
                while runs < 5 || noop.tier() == Tier::Quick {
                    let report = runtime.run(&noop, Run::default().request());
                    assert_eq!(report.status().as_str(), "healthy", "{:?}", report.result);
                    runs += 1;
                    let _ = started.send(());
                }
                runs
            });
            first_run.recv().unwrap();
            drop(held);
            assert!(noop.wait_optimized(Duration::from_secs(120)), "{round}");
            runner.join().unwrap()
        });
        assert!(runs >= 5, "round {round}");
        assert!(second.wait_optimized(Duration::from_secs(120)), "{round}");
        assert_eq!(runtime.shared_code().len(), 1, "{round}");
        assert_eq!(noop.tier(), Tier::Optimized);
        let report = runtime.run(&noop, Run::default().request());
        assert_eq!(report.status().as_str(), "healthy");
        // Loaded again, it shares the optimized code; a new start reads it
        // from the cache.
        assert_eq!(
            runtime.load_file(&component("fixture-noop")).unwrap().cache,
            CacheUse::Shared
        );
        let again = Runtime::new(&config).unwrap();
        let from_cache = again.load_file(&component("fixture-noop")).unwrap();
        assert_eq!(from_cache.cache, CacheUse::Hit, "{round}");
        assert_eq!(from_cache.tier(), Tier::Optimized);
    }
}
