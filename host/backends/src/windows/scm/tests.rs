//! [`Scm`] against a fake Service Control Manager on a fake clock: each
//! fake service moves through the pending states the way a real one
//! reports them, taking as long as its script says.

use super::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A clock that moves only when slept on.
#[derive(Clone)]
struct FakeClock(Arc<Mutex<Instant>>);

impl FakeClock {
    fn new() -> Self {
        Self(Arc::new(Mutex::new(Instant::now())))
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        *self.0.lock().unwrap()
    }

    fn sleep(&self, duration: Duration) {
        *self.0.lock().unwrap() += duration;
    }
}

/// How a fake service behaves when started.
#[derive(Clone, Copy)]
enum OnStart {
    /// Running after this long.
    Runs(Duration),
    /// Stopped with this Win32 exit code after this long.
    Fails(Duration, u32),
    /// Start-pending for ever.
    Hangs,
}

#[derive(Clone)]
struct FakeService {
    display_name: String,
    start_type: u32,
    delayed: bool,
    status: RawStatus,
    on_start: OnStart,
    stop_takes: Duration,
    /// A pending transition: the status it reaches, and when.
    pending: Option<(RawStatus, Instant)>,
    /// A control answers with this error, once.
    refuse: Option<(&'static str, u32)>,
}

fn status(state: u32) -> RawStatus {
    RawStatus {
        state,
        win32_exit_code: 0,
        service_exit_code: 0,
    }
}

impl FakeService {
    fn new(state: u32, start_type: u32) -> Self {
        Self {
            display_name: "Background Intelligent Transfer Service".into(),
            start_type,
            delayed: false,
            status: status(state),
            on_start: OnStart::Runs(Duration::from_millis(300)),
            stop_takes: Duration::from_millis(200),
            pending: None,
            refuse: None,
        }
    }
}

#[derive(Clone)]
struct FakeScm {
    clock: FakeClock,
    services: Arc<Mutex<BTreeMap<String, FakeService>>>,
    calls: Arc<Mutex<Vec<String>>>,
}

impl FakeScm {
    fn new(clock: &FakeClock) -> Self {
        Self {
            clock: clock.clone(),
            services: Arc::default(),
            calls: Arc::default(),
        }
    }

    fn add(&self, name: &str, service: FakeService) {
        self.services
            .lock()
            .unwrap()
            .insert(name.to_string(), service);
    }

    fn with<T>(
        &self,
        name: &str,
        call: &'static str,
        f: impl FnOnce(&mut FakeService, Instant) -> Result<T, ScmError>,
    ) -> Result<T, ScmError> {
        let now = self.clock.now();
        let mut services = self.services.lock().unwrap();
        let service = services.get_mut(name).ok_or(ScmError {
            call,
            code: raw::ERROR_SERVICE_DOES_NOT_EXIST,
        })?;
        if let Some((reached, at)) = service.pending
            && now >= at
        {
            service.status = reached;
            service.pending = None;
        }
        f(service, now)
    }

    fn log(&self, call: &str) {
        self.calls.lock().unwrap().push(call.to_string());
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn controls(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| !c.starts_with("status") && !c.starts_with("config"))
            .collect()
    }
}

impl ScmApi for FakeScm {
    fn status(&self, name: &str) -> Result<RawStatus, ScmError> {
        self.log("status");
        self.with(name, "QueryServiceStatusEx", |s, _| Ok(s.status))
    }

    fn config(&self, name: &str) -> Result<RawConfig, ScmError> {
        self.log("config");
        self.with(name, "QueryServiceConfigW", |s, _| {
            Ok(RawConfig {
                display_name: s.display_name.clone(),
                start_type: s.start_type,
                delayed_auto_start: s.delayed,
            })
        })
    }

    fn start(&self, name: &str) -> Result<(), ScmError> {
        self.log("start");
        self.with(name, "StartServiceW", |s, now| {
            if let Some((call, code)) = s.refuse.take() {
                if code == raw::ERROR_SERVICE_ALREADY_RUNNING {
                    // Another caller's start won the race.
                    s.status = status(raw::SERVICE_START_PENDING);
                    s.pending = Some((
                        status(raw::SERVICE_RUNNING),
                        now + Duration::from_millis(50),
                    ));
                }
                return Err(ScmError { call, code });
            }
            if s.start_type == raw::SERVICE_DISABLED {
                return Err(ScmError {
                    call: "StartServiceW",
                    code: raw::ERROR_SERVICE_DISABLED,
                });
            }
            if s.status.state != raw::SERVICE_STOPPED {
                return Err(ScmError {
                    call: "StartServiceW",
                    code: raw::ERROR_SERVICE_ALREADY_RUNNING,
                });
            }
            s.status = status(raw::SERVICE_START_PENDING);
            s.pending = match s.on_start {
                OnStart::Runs(after) => Some((status(raw::SERVICE_RUNNING), now + after)),
                OnStart::Fails(after, code) => Some((
                    RawStatus {
                        state: raw::SERVICE_STOPPED,
                        win32_exit_code: code,
                        service_exit_code: 0,
                    },
                    now + after,
                )),
                OnStart::Hangs => None,
            };
            Ok(())
        })
    }

    fn stop(&self, name: &str) -> Result<(), ScmError> {
        self.log("stop");
        self.with(name, "ControlService", |s, now| {
            if let Some((call, code)) = s.refuse.take() {
                return Err(ScmError { call, code });
            }
            if s.status.state == raw::SERVICE_STOPPED {
                return Err(ScmError {
                    call: "ControlService",
                    code: raw::ERROR_SERVICE_NOT_ACTIVE,
                });
            }
            s.status = status(raw::SERVICE_STOP_PENDING);
            s.pending = Some((status(raw::SERVICE_STOPPED), now + s.stop_takes));
            Ok(())
        })
    }

    fn set_start_type(
        &self,
        name: &str,
        start_type: u32,
        delayed: Option<bool>,
    ) -> Result<(), ScmError> {
        self.log(&format!("set_start_type {start_type} {delayed:?}"));
        self.with(name, "ChangeServiceConfigW", |s, _| {
            s.start_type = start_type;
            if let Some(delayed) = delayed {
                s.delayed = delayed;
            }
            Ok(())
        })
    }
}

fn setup(name: &str, service: FakeService) -> (Scm<FakeScm, FakeClock>, FakeScm, FakeClock) {
    let clock = FakeClock::new();
    let api = FakeScm::new(&clock);
    api.add(name, service);
    (Scm::new(api.clone(), clock.clone()), api, clock)
}

const SECS_30: Duration = Duration::from_secs(30);

#[test]
fn raw_states_and_start_types_map_to_the_contract() {
    let state = |state, win32_exit_code, service_exit_code| {
        service_state(&RawStatus {
            state,
            win32_exit_code,
            service_exit_code,
        })
        .unwrap()
    };
    assert_eq!(state(raw::SERVICE_STOPPED, 0, 0), ServiceState::Stopped);
    assert_eq!(
        state(raw::SERVICE_STOPPED, raw::ERROR_SERVICE_NEVER_STARTED, 0),
        ServiceState::Stopped
    );
    assert_eq!(state(raw::SERVICE_STOPPED, 1067, 0), ServiceState::Failed);
    assert_eq!(
        state(raw::SERVICE_STOPPED, raw::ERROR_SERVICE_SPECIFIC_ERROR, 0),
        ServiceState::Stopped
    );
    assert_eq!(
        state(raw::SERVICE_STOPPED, raw::ERROR_SERVICE_SPECIFIC_ERROR, 7),
        ServiceState::Failed
    );
    assert_eq!(state(raw::SERVICE_RUNNING, 0, 0), ServiceState::Running);
    assert_eq!(
        state(raw::SERVICE_START_PENDING, 0, 0),
        ServiceState::StartPending
    );
    assert_eq!(
        state(raw::SERVICE_CONTINUE_PENDING, 0, 0),
        ServiceState::StartPending
    );
    assert_eq!(
        state(raw::SERVICE_STOP_PENDING, 0, 0),
        ServiceState::StopPending
    );
    assert_eq!(state(raw::SERVICE_PAUSED, 0, 0), ServiceState::Paused);
    assert!(service_state(&status(99)).is_err());

    let startup = |start_type, delayed_auto_start| {
        startup_type(&RawConfig {
            display_name: String::new(),
            start_type,
            delayed_auto_start,
        })
        .unwrap()
    };
    assert_eq!(
        startup(raw::SERVICE_AUTO_START, false),
        StartupType::Automatic
    );
    assert_eq!(
        startup(raw::SERVICE_AUTO_START, true),
        StartupType::AutomaticDelayed
    );
    // The flag means nothing for demand start.
    assert_eq!(
        startup(raw::SERVICE_DEMAND_START, true),
        StartupType::Manual
    );
    assert_eq!(startup(raw::SERVICE_DISABLED, false), StartupType::Disabled);
    assert_eq!(
        startup(raw::SERVICE_BOOT_START, false),
        StartupType::Automatic
    );
    for startup in [
        StartupType::Automatic,
        StartupType::AutomaticDelayed,
        StartupType::Manual,
        StartupType::Disabled,
    ] {
        let (start_type, delayed) = start_type_of(startup).unwrap();
        let config = RawConfig {
            display_name: String::new(),
            start_type,
            delayed_auto_start: delayed.unwrap_or(false),
        };
        assert_eq!(startup_type(&config).unwrap(), startup, "round trip");
    }
}

#[test]
fn error_codes_map_to_kinds() {
    let table = [
        (raw::ERROR_ACCESS_DENIED, ErrorKind::Denied),
        (raw::ERROR_SERVICE_DOES_NOT_EXIST, ErrorKind::NotFound),
        (raw::ERROR_INVALID_NAME, ErrorKind::InvalidArgument),
        (raw::ERROR_SERVICE_DISABLED, ErrorKind::Conflict),
        (raw::ERROR_DEPENDENT_SERVICES_RUNNING, ErrorKind::Conflict),
        (raw::ERROR_SERVICE_CANNOT_ACCEPT_CTRL, ErrorKind::Conflict),
        (raw::ERROR_SERVICE_MARKED_FOR_DELETE, ErrorKind::Conflict),
        (raw::ERROR_SERVICE_REQUEST_TIMEOUT, ErrorKind::Timeout),
        (raw::ERROR_SERVICE_LOGON_FAILED, ErrorKind::Failed),
        (raw::ERROR_SERVICE_DEPENDENCY_FAIL, ErrorKind::Failed),
        (31, ErrorKind::Failed),
    ];
    for (code, kind) in table {
        assert_eq!(error_kind(code), kind, "code {code}");
    }
    let (scm, _, _) = setup("BITS", FakeService::new(raw::SERVICE_STOPPED, 3));
    let missing = scm.query("NoSuchService").unwrap_err();
    assert_eq!(missing.kind, ErrorKind::NotFound);
    assert!(
        missing.message.contains("no such service") && missing.message.contains("1060"),
        "{}",
        missing.message
    );
}

#[test]
fn start_waits_through_start_pending() {
    let (scm, api, clock) = setup(
        "BITS",
        FakeService::new(raw::SERVICE_STOPPED, raw::SERVICE_DEMAND_START),
    );
    let began = clock.now();
    let change = scm.start("BITS", SECS_30, true).unwrap();
    assert!(change.applied);
    assert_eq!(change.before.state, ServiceState::Stopped);
    assert_eq!(change.after.state, ServiceState::Running);
    assert_eq!(
        change.after.display_name,
        "Background Intelligent Transfer Service"
    );
    let waited = clock.now() - began;
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(1),
        "{waited:?}"
    );
    assert_eq!(api.controls(), ["start"]);
}

#[test]
fn a_start_that_fails_is_reported_at_once_with_its_exit_code() {
    let mut service = FakeService::new(raw::SERVICE_STOPPED, raw::SERVICE_DEMAND_START);
    service.on_start = OnStart::Fails(Duration::from_millis(200), raw::ERROR_SERVICE_LOGON_FAILED);
    let (scm, _, clock) = setup("WsusService", service);
    let began = clock.now();
    let err = scm.start("WsusService", SECS_30, true).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Failed);
    assert!(
        err.message.contains("exit code 1069") && err.message.contains("could not log on"),
        "{}",
        err.message
    );
    assert!(
        clock.now() - began < Duration::from_secs(1),
        "not the whole timeout"
    );
    assert_eq!(
        scm.query("WsusService").unwrap().state,
        ServiceState::Failed
    );
}

#[test]
fn a_hung_start_times_out_at_the_calls_timeout_and_says_so() {
    let mut service = FakeService::new(raw::SERVICE_STOPPED, raw::SERVICE_DEMAND_START);
    service.on_start = OnStart::Hangs;
    let (scm, _, clock) = setup("W3SVC", service);
    let began = clock.now();
    let err = scm
        .start("W3SVC", Duration::from_secs(5), true)
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout);
    assert!(
        err.message.contains("still start-pending"),
        "{}",
        err.message
    );
    assert_eq!(clock.now() - began, Duration::from_secs(5));
}

#[test]
fn calls_that_change_nothing_say_so() {
    let mut running = FakeService::new(raw::SERVICE_RUNNING, raw::SERVICE_AUTO_START);
    running.delayed = true;
    let (scm, api, _) = setup("BITS", running);
    for apply in [true, false] {
        let change = scm.start("BITS", SECS_30, apply).unwrap();
        assert!(!change.applied);
        assert_eq!(change.before, change.after);
        let change = scm
            .set_startup("BITS", StartupType::AutomaticDelayed, apply)
            .unwrap();
        assert!(!change.applied);
        assert_eq!(change.before, change.after);
    }
    let (stopped, _, _) = setup(
        "BITS",
        FakeService::new(raw::SERVICE_STOPPED, raw::SERVICE_DEMAND_START),
    );
    let change = stopped.stop("BITS", SECS_30, true).unwrap();
    assert!(!change.applied && change.before == change.after);
    assert!(api.controls().is_empty(), "{:?}", api.controls());
}

#[test]
fn dry_run_plans_what_enforce_does_refusals_included() {
    let (scm, api, _) = setup(
        "BITS",
        FakeService::new(raw::SERVICE_STOPPED, raw::SERVICE_DISABLED),
    );
    let planned = scm.start("BITS", SECS_30, false).unwrap_err();
    let enforced = scm.start("BITS", SECS_30, true).unwrap_err();
    assert_eq!(planned, enforced);
    assert_eq!(planned.kind, ErrorKind::Conflict);
    assert!(planned.message.contains("disabled"), "{}", planned.message);
    assert_eq!(
        scm.restart("BITS", SECS_30, false).unwrap_err().kind,
        ErrorKind::Conflict
    );

    let plan = scm.set_startup("BITS", StartupType::Manual, false).unwrap();
    assert!(!plan.applied);
    assert_eq!(plan.after.startup, StartupType::Manual);
    assert!(api.controls().is_empty(), "dry-run changed something");
    let done = scm.set_startup("BITS", StartupType::Manual, true).unwrap();
    assert!(done.applied);
    assert_eq!(done.after, plan.after);
    let start_plan = scm.start("BITS", SECS_30, false).unwrap();
    let started = scm.start("BITS", SECS_30, true).unwrap();
    assert_eq!(start_plan.after, started.after);
}

#[test]
fn set_startup_changes_only_the_start_type_and_the_delayed_flag() {
    let (scm, api, _) = setup(
        "BITS",
        FakeService::new(raw::SERVICE_STOPPED, raw::SERVICE_DEMAND_START),
    );
    let change = scm
        .set_startup("BITS", StartupType::AutomaticDelayed, true)
        .unwrap();
    assert_eq!(change.after.startup, StartupType::AutomaticDelayed);
    let change = scm.set_startup("BITS", StartupType::Manual, true).unwrap();
    assert_eq!(change.after.startup, StartupType::Manual);
    let change = scm
        .set_startup("BITS", StartupType::Automatic, true)
        .unwrap();
    assert_eq!(change.after.startup, StartupType::Automatic, "flag cleared");
    assert_eq!(
        api.controls(),
        [
            "set_start_type 2 Some(true)",
            "set_start_type 3 None",
            "set_start_type 2 Some(false)"
        ]
    );
}

#[test]
fn restart_stops_then_starts_within_one_timeout() {
    let (scm, api, clock) = setup(
        "WsusService",
        FakeService::new(raw::SERVICE_RUNNING, raw::SERVICE_AUTO_START),
    );
    let change = scm.restart("WsusService", SECS_30, true).unwrap();
    assert!(change.applied);
    assert_eq!(change.after.state, ServiceState::Running);
    assert_eq!(api.controls(), ["stop", "start"]);

    // Stop takes 4 s, start 4 s: a 5 s budget runs out during the start.
    let mut slow = FakeService::new(raw::SERVICE_RUNNING, raw::SERVICE_AUTO_START);
    slow.stop_takes = Duration::from_secs(4);
    slow.on_start = OnStart::Runs(Duration::from_secs(4));
    let (scm, _, clock2) = setup("W3SVC", slow);
    let began = clock2.now();
    let err = scm
        .restart("W3SVC", Duration::from_secs(5), true)
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout);
    assert_eq!(clock2.now() - began, Duration::from_secs(5));
    drop(clock);
}

#[test]
fn a_failed_service_restarts_and_a_stop_with_dependents_is_a_conflict() {
    let mut failed = FakeService::new(raw::SERVICE_STOPPED, raw::SERVICE_AUTO_START);
    failed.status.win32_exit_code = 1067;
    let (scm, api, _) = setup("WsusService", failed);
    assert_eq!(
        scm.query("WsusService").unwrap().state,
        ServiceState::Failed
    );
    let change = scm.restart("WsusService", SECS_30, true).unwrap();
    assert_eq!(change.before.state, ServiceState::Failed);
    assert_eq!(change.after.state, ServiceState::Running);
    assert_eq!(api.controls(), ["start"], "nothing to stop");

    let mut with_dependents = FakeService::new(raw::SERVICE_RUNNING, raw::SERVICE_AUTO_START);
    with_dependents.refuse = Some(("ControlService", raw::ERROR_DEPENDENT_SERVICES_RUNNING));
    let (scm, _, _) = setup("W3SVC", with_dependents);
    let err = scm.stop("W3SVC", SECS_30, true).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict);
    assert!(err.message.contains("depend on it"), "{}", err.message);
}

#[test]
fn a_start_racing_another_start_waits_instead_of_failing() {
    let mut pending = FakeService::new(raw::SERVICE_STOPPED, raw::SERVICE_DEMAND_START);
    pending.refuse = Some(("StartServiceW", raw::ERROR_SERVICE_ALREADY_RUNNING));
    let (scm, api, _) = setup("BITS", pending);
    // Someone else starts it between the query and the call: the SCM
    // says already running, and the call waits for Running.
    let change = scm.start("BITS", SECS_30, true).unwrap();
    assert_eq!(change.after.state, ServiceState::Running);
    assert_eq!(api.controls(), ["start"]);
}
