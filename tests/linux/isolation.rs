//! The namespace the tests boot systemd in leaves the host alone: what a
//! unit or systemd itself writes to the places a machine shares (sysctls,
//! the hostname, `/tmp`, `/var/lib`, `/dev`) stays inside.

use crate::namespace::NamespacedSystemd;
use std::path::Path;

#[test]
fn writes_inside_the_namespace_never_reach_the_host() {
    use std::os::unix::fs::MetadataExt;
    let dev_log = || std::fs::symlink_metadata("/dev/log").ok().map(|m| m.ino());
    let host_dev_log = dev_log();
    let Some(systemd) = NamespacedSystemd::boot() else {
        return;
    };
    let marker = format!("medic-isolation-{}", std::process::id());
    let inside = |script: &str| systemd.run("sh", &["-c", script]);

    // Sysctls are read-only inside.
    let write = inside("echo 4096 > /proc/sys/net/unix/max_dgram_qlen");
    assert!(!write.status.success(), "a sysctl was writable inside");

    // The hostname is the namespace's own.
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let renamed = inside(&format!("hostname {marker}"));
    assert!(renamed.status.success(), "{renamed:?}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host_name
    );

    // Files written where the host has folders of its own stay inside.
    for folder in [
        "/tmp",
        "/var/tmp",
        "/var/lib",
        "/dev",
        "/run",
        "/etc/systemd/system",
    ] {
        let path = format!("{folder}/{marker}");
        let touched = inside(&format!("touch {path}"));
        assert!(touched.status.success(), "{path}: {touched:?}");
        assert!(
            !Path::new(&path).exists(),
            "{path} written inside the namespace appeared on the host"
        );
    }
    // journald's /dev/log is the namespace's.
    assert!(std::fs::symlink_metadata(systemd.root().join("dev/log")).is_ok());
    assert_eq!(dev_log(), host_dev_log, "the host's /dev/log");
}
