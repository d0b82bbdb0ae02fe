//! Startup changes on units whose state has layers `UnitFileState` shows
//! only the top of: a unit masked (for good or until reboot) while its
//! enablement links are still there, as `systemctl mask` leaves them.

use crate::namespace::{NamespacedSystemd, UnitDir};
use medic_backends::services::{ServiceManager, StartupType};

const OK: &str =
    "[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n";

#[test]
fn a_masked_unit_still_enabled_underneath_is_set_to_what_was_asked() {
    let Some(systemd) = NamespacedSystemd::boot() else {
        return;
    };
    let backend = systemd.backend();
    systemd.install_unit(UnitDir::Vendor, "medic-layered.service", OK);
    for (mask, want, file_state) in [
        ("--persistent", StartupType::Manual, "disabled"),
        ("--runtime", StartupType::Manual, "disabled"),
        (
            "--persistent",
            StartupType::AutomaticUntilReboot,
            "enabled-runtime",
        ),
        (
            "--runtime",
            StartupType::AutomaticUntilReboot,
            "enabled-runtime",
        ),
    ] {
        systemd.systemctl(&["disable", "--runtime", "medic-layered.service"]);
        systemd.systemctl(&["enable", "medic-layered.service"]);
        if mask == "--runtime" {
            systemd.systemctl(&["mask", "--runtime", "medic-layered.service"]);
        } else {
            systemd.systemctl(&["mask", "medic-layered.service"]);
        }
        let masked = backend.query("medic-layered").unwrap().startup;
        assert!(
            matches!(
                masked,
                StartupType::Disabled | StartupType::DisabledUntilReboot
            ),
            "{masked:?}"
        );
        let change = backend
            .set_startup("medic-layered", want, true)
            .unwrap_or_else(|e| panic!("{mask} -> {want:?}: {e:?}"));
        assert_eq!(change.after.startup, want, "{mask}");
        assert_eq!(
            systemd.property("medic-layered.service", "UnitFileState"),
            file_state,
            "{mask} -> {want:?}"
        );
        systemd.run("systemctl", &["unmask", "medic-layered.service"]);
        systemd.run(
            "systemctl",
            &["unmask", "--runtime", "medic-layered.service"],
        );
    }
}
