//! The systemd backend given units with names that could confuse
//! `systemctl`: a name beginning with a dash, names with escapes or at
//! systemd's length limit.

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
