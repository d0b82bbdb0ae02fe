//! The systemd backend against a real systemd: test units of every kind
//! (ok, failing, oneshot, slow to start, slow to stop, masked, static,
//! broken, dying after start, an alias, an administrator's own), every
//! call in enforce and dry-run modes.

use crate::namespace::{NamespacedSystemd, UnitDir};
use medic_backends::ErrorKind;
use medic_backends::services::{ProblemKind, ServiceManager, ServiceState, StartupType};
use std::time::{Duration, Instant};

const SHORT: Duration = Duration::from_secs(1);
const LONG: Duration = Duration::from_secs(60);

const OK: &str = "[Unit]\nDescription=medic test: ok\n[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n";
const FAILING: &str =
    "[Service]\nExecStart=/bin/sh -c 'exit 3'\n[Install]\nWantedBy=multi-user.target\n";
const MISSING_BINARY: &str = "[Service]\nExecStart=/nonexistent/daemon\n";
const ONESHOT_OK: &str = "[Service]\nType=oneshot\nExecStart=/bin/true\n";
const ONESHOT_FAILING: &str = "[Service]\nType=oneshot\nExecStart=/bin/false\n";
const SLOW_START: &str = "[Service]\nType=oneshot\nExecStart=/bin/sleep 300\nTimeoutStartSec=600\n";
const SLOW_STOP: &str = "[Service]\nExecStart=/bin/sh -c 'trap \"\" TERM; while :; do sleep 0.1; done'\nTimeoutStopSec=600\n";
const DYING: &str = "[Service]\nExecStart=/bin/sh -c 'sleep 0.3; exit 7'\n";
const STATIC: &str = "[Service]\nExecStart=/bin/sleep infinity\n";
const BROKEN: &str = "[Service]\nType=simple\n";

#[test]
fn start_stop_and_restart_report_what_systemd_did() {
    let Some(systemd) = NamespacedSystemd::boot() else {
        return;
    };
    let backend = systemd.backend();
    systemd.install_unit(UnitDir::Vendor, "medic-ok.service", OK);

    let status = backend.query("medic-ok").unwrap();
    assert_eq!(status.state, ServiceState::Stopped);
    assert_eq!(status.startup, StartupType::Manual);
    assert_eq!(status.display_name, "medic test: ok");

    // Dry-run plans and changes nothing.
    let planned = backend.start("medic-ok", LONG, false).unwrap();
    assert!(!planned.applied);
    assert_eq!(planned.after.state, ServiceState::Running);
    assert_eq!(
        systemd.property("medic-ok.service", "ActiveState"),
        "inactive"
    );

    let started = backend.start("medic-ok", LONG, true).unwrap();
    assert!(started.applied);
    assert_eq!(
        (started.before.state, started.after.state),
        (ServiceState::Stopped, ServiceState::Running)
    );
    assert_eq!(
        systemd.property("medic-ok.service", "ActiveState"),
        "active"
    );

    // Starting a running unit is no change.
    let again = backend.start("medic-ok", LONG, true).unwrap();
    assert!(!again.applied);
    assert_eq!(again.before, again.after);

    // Dry-run stop and restart plan, and leave the same process running.
    let pid = systemd.property("medic-ok.service", "MainPID");
    let stop = backend.stop("medic-ok", LONG, false).unwrap();
    assert!(!stop.applied);
    assert_eq!(stop.after.state, ServiceState::Stopped);
    let restart = backend.restart("medic-ok", LONG, false).unwrap();
    assert!(!restart.applied);
    assert_eq!(restart.after.state, ServiceState::Running);
    assert_eq!(systemd.property("medic-ok.service", "MainPID"), pid);

    let restarted = backend.restart("medic-ok", LONG, true).unwrap();
    assert!(restarted.applied);
    assert_eq!(restarted.after.state, ServiceState::Running);
    assert_ne!(
        systemd.property("medic-ok.service", "MainPID"),
        pid,
        "a new process"
    );

    let stopped = backend.stop("medic-ok", LONG, true).unwrap();
    assert!(stopped.applied);
    assert_eq!(stopped.after.state, ServiceState::Stopped);
    let again = backend.stop("medic-ok", LONG, true).unwrap();
    assert!(!again.applied, "stopping a stopped unit is no change");
    assert_eq!(again.before, again.after);

    let missing = backend.query("medic-nonexistent").unwrap_err();
    assert_eq!(missing.kind, ErrorKind::NotFound);
}

#[test]
fn a_failing_start_is_reported_failed_at_once_with_systemds_result() {
    let Some(systemd) = NamespacedSystemd::boot() else {
        return;
    };
    let backend = systemd.backend();
    systemd.install_unit(UnitDir::Admin, "medic-failing.service", FAILING);
    systemd.install_unit(UnitDir::Admin, "medic-missing.service", MISSING_BINARY);
    systemd.install_unit(
        UnitDir::Vendor,
        "medic-oneshot-bad.service",
        ONESHOT_FAILING,
    );

    for (name, says) in [
        ("medic-failing", "exit status 3"),
        ("medic-missing", "exit-code"),
        ("medic-oneshot-bad", "exit status 1"),
    ] {
        let began = Instant::now();
        let e = backend.start(name, LONG, true).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Failed, "{name}: {e:?}");
        assert!(e.message.contains(says), "{name}: {}", e.message);
        assert!(
            began.elapsed() < LONG / 2,
            "{name}: the failure is reported when systemd reports it, not at the end of the wait"
        );
        let status = backend.query(name).unwrap();
        assert_eq!(status.state, ServiceState::Failed, "{name}");
        assert!(status.problem.is_some(), "{name}");
    }
    let problem = backend.query("medic-failing").unwrap().problem.unwrap();
    assert_eq!(problem.kind, ProblemKind::ExitCode);
}

#[test]
fn a_oneshot_is_judged_by_its_result() {
    let Some(systemd) = NamespacedSystemd::boot() else {
        return;
    };
    let backend = systemd.backend();
    systemd.install_unit(UnitDir::Vendor, "medic-oneshot.service", ONESHOT_OK);
    let planned = backend.start("medic-oneshot", LONG, false).unwrap();
    assert_eq!(planned.after.state, ServiceState::Stopped, "it runs once");
    let ran = backend.start("medic-oneshot", LONG, true).unwrap();
    assert!(ran.applied);
    assert_eq!(ran.after.state, ServiceState::Stopped);
    assert_eq!(ran.after.problem, None);
    assert_eq!(
        systemd.property("medic-oneshot.service", "Result"),
        "success"
    );
}

#[test]
fn a_job_past_its_timeout_is_cancelled_and_the_state_said() {
    let Some(systemd) = NamespacedSystemd::boot() else {
        return;
    };
    let backend = systemd.backend();
    systemd.install_unit(UnitDir::Vendor, "medic-slow-start.service", SLOW_START);
    systemd.install_unit(UnitDir::Vendor, "medic-slow-stop.service", SLOW_STOP);

    // Deadlines from a moment to a second, each tried again: the job is
    // cancelled however early the deadline falls.
    let deadlines = [1, 5, 20, 100, 300, 1000].map(Duration::from_millis);
    let no_job_left = |unit: &str| {
        let jobs = systemd.systemctl(&["list-jobs", "--no-legend", "--plain"]);
        assert!(!jobs.contains(unit), "no job left behind: {jobs}");
    };
    for timeout in deadlines {
        let e = backend
            .start("medic-slow-start", timeout, true)
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Timeout, "{timeout:?}: {e:?}");
        no_job_left("medic-slow-start");
        // Unless the kill came before systemd had the request, the unit
        // is left starting.
        if timeout >= SHORT {
            assert!(e.message.contains("cancelled"), "{}", e.message);
            assert!(e.message.contains("start-pending"), "{}", e.message);
        }
        // (Not loaded at all when the request never reached systemd.)
        systemd.run(
            "systemctl",
            &["kill", "--signal=KILL", "medic-slow-start.service"],
        );
        systemd.wait_for("the slow start to end", || {
            backend.query("medic-slow-start").unwrap().state != ServiceState::StartPending
        });
        systemd.run("systemctl", &["reset-failed", "medic-slow-start.service"]);
    }

    for timeout in deadlines {
        backend.start("medic-slow-stop", LONG, true).unwrap();
        let e = backend.stop("medic-slow-stop", timeout, true).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Timeout, "{timeout:?}: {e:?}");
        no_job_left("medic-slow-stop");
        if timeout >= SHORT {
            assert!(e.message.contains("stop-pending"), "{}", e.message);
            // A unit still stopping reads so.
            assert_eq!(
                backend.query("medic-slow-stop").unwrap().state,
                ServiceState::StopPending
            );
        }
        systemd.run(
            "systemctl",
            &["kill", "--signal=KILL", "medic-slow-stop.service"],
        );
        systemd.wait_for("the slow stop to end", || {
            matches!(
                backend.query("medic-slow-stop").unwrap().state,
                ServiceState::Stopped | ServiceState::Failed
            )
        });
        systemd.run("systemctl", &["reset-failed", "medic-slow-stop.service"]);
    }
}

#[test]
fn a_unit_dying_after_start_reads_failed() {
    let Some(systemd) = NamespacedSystemd::boot() else {
        return;
    };
    let backend = systemd.backend();
    systemd.install_unit(UnitDir::Vendor, "medic-dying.service", DYING);
    let started = backend.start("medic-dying", LONG, true).unwrap();
    assert_eq!(started.after.state, ServiceState::Running);
    systemd.wait_for("the unit failing", || {
        backend.query("medic-dying").unwrap().state == ServiceState::Failed
    });
    let problem = backend.query("medic-dying").unwrap().problem.unwrap();
    assert_eq!(problem.kind, ProblemKind::ExitCode);
    assert!(problem.detail.contains("exit status 7"), "{problem:?}");
    // Stopping a failed unit is no change; restarting it runs it again.
    assert!(!backend.stop("medic-dying", LONG, true).unwrap().applied);
    let restarted = backend.restart("medic-dying", LONG, true).unwrap();
    assert!(restarted.applied);
}

#[test]
fn a_broken_or_masked_unit_is_refused_alike_in_both_modes() {
    let Some(systemd) = NamespacedSystemd::boot() else {
        return;
    };
    let backend = systemd.backend();
    systemd.install_unit(UnitDir::Admin, "medic-broken.service", BROKEN);
    systemd.install_unit(UnitDir::Vendor, "medic-masked.service", OK);
    systemd.systemctl(&["mask", "medic-masked.service"]);

    let broken = backend.query("medic-broken").unwrap();
    assert_eq!(broken.state, ServiceState::Broken);
    assert_eq!(broken.problem.unwrap().kind, ProblemKind::Broken);
    let masked = backend.query("medic-masked").unwrap();
    assert_eq!(masked.startup, StartupType::Disabled);

    for name in ["medic-broken", "medic-masked"] {
        for apply in [false, true] {
            for e in [
                backend.start(name, LONG, apply).unwrap_err(),
                backend.restart(name, LONG, apply).unwrap_err(),
            ] {
                assert_eq!(e.kind, ErrorKind::Conflict, "{name} apply={apply}: {e:?}");
            }
        }
    }
    assert_eq!(
        systemd.property("medic-masked.service", "ActiveState"),
        "inactive"
    );
}

#[test]
fn startup_types_read_and_set_truly() {
    let Some(systemd) = NamespacedSystemd::boot() else {
        return;
    };
    let backend = systemd.backend();
    systemd.install_unit(UnitDir::Vendor, "medic-vendor.service", OK);
    systemd.install_unit(UnitDir::Admin, "medic-admin.service", OK);
    systemd.install_unit(UnitDir::Vendor, "medic-static.service", STATIC);
    let startup = |name: &str| backend.query(name).unwrap().startup;
    assert_eq!(startup("medic-static"), StartupType::Static);
    assert_eq!(startup("medic-vendor"), StartupType::Manual);

    // Manual -> automatic -> disabled -> manual, each checked in systemd.
    for (want, file_state) in [
        (StartupType::Automatic, "enabled"),
        (StartupType::Disabled, "masked"),
        (StartupType::Manual, "disabled"),
        (StartupType::AutomaticUntilReboot, "enabled-runtime"),
        (StartupType::Automatic, "enabled"),
        (StartupType::DisabledUntilReboot, "masked-runtime"),
        (StartupType::Manual, "disabled"),
    ] {
        let planned = backend.set_startup("medic-vendor", want, false).unwrap();
        assert!(!planned.applied);
        assert_eq!(planned.after.startup, want);
        let changed = backend.set_startup("medic-vendor", want, true).unwrap();
        assert!(changed.applied, "{want:?}");
        assert_eq!(changed.after.startup, want);
        assert_eq!(
            systemd.property("medic-vendor.service", "UnitFileState"),
            file_state,
            "{want:?}"
        );
        let again = backend.set_startup("medic-vendor", want, true).unwrap();
        assert!(!again.applied, "setting {want:?} twice is no change");
    }

    // An alias outside `Also=` makes the unit it names indirect; asked for
    // by the alias, the unit itself is read and changed.
    std::os::unix::fs::symlink(
        "/usr/lib/systemd/system/medic-vendor.service",
        systemd
            .root()
            .join("etc/systemd/system/medic-alias.service"),
    )
    .unwrap();
    systemd.systemctl(&["daemon-reload"]);
    assert_eq!(startup("medic-alias"), StartupType::Indirect);
    assert!(
        !backend
            .set_startup("medic-alias", StartupType::Manual, true)
            .unwrap()
            .applied
    );
    let enabled = backend
        .set_startup("medic-alias", StartupType::Automatic, true)
        .unwrap();
    assert_eq!(enabled.after.startup, StartupType::Automatic);
    assert_eq!(
        systemd.property("medic-vendor.service", "UnitFileState"),
        "enabled"
    );

    // A static unit cannot be enabled, in either mode, and changes nothing.
    for apply in [false, true] {
        let e = backend
            .set_startup("medic-static", StartupType::Automatic, apply)
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict, "{e:?}");
    }
    assert_eq!(startup("medic-static"), StartupType::Static);
    // ... but can be masked.
    backend
        .set_startup("medic-static", StartupType::Disabled, true)
        .unwrap();
    assert_eq!(
        systemd.property("medic-static.service", "UnitFileState"),
        "masked"
    );

    // An administrator's unit is disabled, never masked over its file.
    backend
        .set_startup("medic-admin", StartupType::Automatic, true)
        .unwrap();
    for apply in [false, true] {
        let e = backend
            .set_startup("medic-admin", StartupType::Disabled, apply)
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict, "{e:?}");
        assert!(
            e.message
                .contains("/etc/systemd/system/medic-admin.service"),
            "{}",
            e.message
        );
    }
    assert!(
        std::fs::read_to_string(
            systemd
                .root()
                .join("etc/systemd/system/medic-admin.service")
        )
        .unwrap()
        .contains("medic test: ok"),
        "the file is untouched"
    );
    let disabled = backend
        .set_startup("medic-admin", StartupType::Manual, true)
        .unwrap();
    assert!(disabled.applied);
    assert_eq!(
        systemd.property("medic-admin.service", "UnitFileState"),
        "disabled"
    );
}
