//! The systemd backend given units with names and properties that could
//! confuse `systemctl` or the parsing of what it prints: a name beginning
//! with a dash, names with escapes or at systemd's length limit, and a
//! description made of lines that look like other properties.

use crate::namespace::{NamespacedSystemd, UnitDir};
use medic_backends::services::{ServiceManager, ServiceState, StartupType};
use std::time::Duration;

const OK: &str = "[Unit]\nDescription=medic test: odd name\n[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n";
const SLOW_START: &str = "[Service]\nType=oneshot\nExecStart=/bin/sleep 300\nTimeoutStartSec=600\n";

#[test]
fn a_unit_whose_name_begins_with_a_dash_is_no_option_to_systemctl() {
    let Some(systemd) = NamespacedSystemd::boot() else {
        return;
    };
    let backend = systemd.backend();
    systemd.install_unit(UnitDir::Vendor, "-medic.service", OK);

    let enabled = backend
        .set_startup("-medic.service", StartupType::Automatic, true)
        .unwrap();
    assert_eq!(enabled.after.startup, StartupType::Automatic);
    let file_state = systemd.systemctl(&["show", "-P", "UnitFileState", "--", "-medic.service"]);
    assert_eq!(file_state.trim(), "enabled");
    let masked = backend
        .set_startup("-medic.service", StartupType::DisabledUntilReboot, true)
        .unwrap();
    assert_eq!(masked.after.startup, StartupType::DisabledUntilReboot);
    let manual = backend
        .set_startup("-medic.service", StartupType::Manual, true)
        .unwrap();
    assert_eq!(manual.after.startup, StartupType::Manual);

    let started = backend
        .start("-medic.service", Duration::from_secs(60), true)
        .unwrap();
    assert_eq!(started.after.state, ServiceState::Running);
}

#[test]
fn jobs_of_units_with_escapes_or_the_longest_names_are_cancelled() {
    let Some(systemd) = NamespacedSystemd::boot() else {
        return;
    };
    let backend = systemd.backend();
    // `\x2d` is how systemd escapes a dash in an instance or a path; a
    // backslash is also what a glob pattern escapes with.
    let longest = format!("medic-{}.service", "l".repeat(255 - "medic-.service".len()));
    for name in ["medic-slow\\x2dstart.service", longest.as_str()] {
        systemd.install_unit(UnitDir::Vendor, name, SLOW_START);
        let e = backend
            .start(name, Duration::from_millis(1500), true)
            .unwrap_err();
        assert!(e.message.contains("cancelled"), "{name}: {}", e.message);
        let jobs = systemd.systemctl(&["list-jobs", "--no-legend", "--plain", "--full"]);
        assert!(jobs.trim().is_empty(), "{name}: no job left behind: {jobs}");
        systemd.run("systemctl", &["kill", "--signal=KILL", "--", name]);
    }
}

#[test]
fn a_description_of_several_lines_cannot_pose_as_other_properties() {
    let Some(systemd) = NamespacedSystemd::boot() else {
        return;
    };
    let backend = systemd.backend();
    // A transient unit's description may hold any text.
    let out = systemd.run(
        "systemd-run",
        &[
            "--unit=medic-forged",
            "--description=x\nId=other.service\nLoadState=masked\nActiveState=failed",
            "/bin/sleep",
            "infinity",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let status = backend.query("medic-forged").unwrap();
    assert_eq!(status.state, ServiceState::Running);
    assert_eq!(status.startup, StartupType::Generated);
    assert!(!status.display_name.contains('\n'), "{status:?}");
    // Stopped, a transient unit is gone at once: the stop succeeded.
    let stopped = backend
        .stop("medic-forged", Duration::from_secs(60), true)
        .unwrap();
    assert!(stopped.applied);
    assert_eq!(stopped.after.state, ServiceState::Stopped);
    assert_eq!(stopped.after.startup, StartupType::Generated);
}

#[test]
fn a_running_unit_whose_file_was_removed_can_still_be_queried_and_stopped() {
    let Some(systemd) = NamespacedSystemd::boot() else {
        return;
    };
    let backend = systemd.backend();
    systemd.install_unit(UnitDir::Admin, "medic-orphan.service", OK);
    backend
        .start("medic-orphan", Duration::from_secs(60), true)
        .unwrap();
    std::fs::remove_file(
        systemd
            .root()
            .join("etc/systemd/system/medic-orphan.service"),
    )
    .unwrap();
    systemd.systemctl(&["daemon-reload"]);
    assert_eq!(
        systemd.property("medic-orphan.service", "LoadState"),
        "not-found"
    );
    assert_eq!(
        systemd.property("medic-orphan.service", "ActiveState"),
        "active"
    );

    assert_eq!(
        backend.query("medic-orphan").unwrap().state,
        ServiceState::Running
    );
    let stopped = backend
        .stop("medic-orphan", Duration::from_secs(60), true)
        .unwrap();
    assert!(stopped.applied);
    assert_eq!(stopped.after.state, ServiceState::Stopped);
    assert_eq!(
        systemd.property("medic-orphan.service", "ActiveState"),
        "inactive"
    );
    // Now it is gone.
    let gone = backend.query("medic-orphan").unwrap_err();
    assert_eq!(gone.kind, medic_backends::ErrorKind::NotFound);
}

#[test]
fn a_pattern_names_no_unit() {
    let Some(systemd) = NamespacedSystemd::boot() else {
        return;
    };
    let backend = systemd.backend();
    for unit in ["medic-a.service", "medic-b.service"] {
        systemd.install_unit(UnitDir::Vendor, unit, OK);
        systemd.systemctl(&["start", unit]);
    }
    // systemctl reads these as globs, and would act on the first unit it
    // lists among those they match.
    for pattern in ["medic-*", "medic-?", "medic-[ab]"] {
        let e = backend
            .stop(pattern, Duration::from_secs(60), true)
            .unwrap_err();
        assert_eq!(e.kind, medic_backends::ErrorKind::InvalidArgument, "{e:?}");
        assert!(backend.query(pattern).is_err());
    }
    for unit in ["medic-a.service", "medic-b.service"] {
        assert_eq!(systemd.property(unit, "ActiveState"), "active", "{unit}");
    }
}
