//! The systemd backend when systemd itself does not answer (frozen, or
//! busy reloading): a service call still ends within its timeout, and
//! works again once systemd answers.

use crate::namespace::{NamespacedSystemd, UnitDir};
use medic_backends::ErrorKind;
use medic_backends::services::{ServiceManager, ServiceState};
use std::time::{Duration, Instant};

const OK: &str = "[Service]\nExecStart=/bin/sleep infinity\n";

/// systemd stopped (SIGSTOP) for as long as this lives.
struct Frozen(i32);

impl Frozen {
    fn new(systemd: &NamespacedSystemd) -> Self {
        let pid = i32::try_from(systemd.pid).unwrap();
        // SAFETY: kill(2) on the namespace's own PID 1, started by this test.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        Self(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: as in `new`.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

#[test]
fn a_control_call_ends_within_its_timeout_when_systemd_does_not_answer() {
    let Some(systemd) = NamespacedSystemd::boot() else {
        return;
    };
    let backend = systemd.backend();
    systemd.install_unit(UnitDir::Vendor, "medic-ok.service", OK);

    let timeout = Duration::from_millis(500);
    {
        let _frozen = Frozen::new(&systemd);
        for (verb, call) in [
            (
                "start",
                ServiceManager::start as fn(&_, &str, Duration, bool) -> _,
            ),
            ("stop", ServiceManager::stop),
            ("restart", ServiceManager::restart),
        ] {
            for apply in [true, false] {
                let began = Instant::now();
                let e = call(&backend, "medic-ok", timeout, apply).unwrap_err();
                let took = began.elapsed();
                assert_eq!(e.kind, ErrorKind::Timeout, "{verb}: {e:?}");
                assert!(
                    e.message.contains("nothing was done"),
                    "{verb}: {}",
                    e.message
                );
                // systemctl itself waits 90 s for an answer.
                assert!(took < Duration::from_secs(5), "{verb} took {took:?}");
            }
        }
    }
    let started = backend
        .start("medic-ok", Duration::from_secs(60), true)
        .unwrap();
    assert_eq!(started.after.state, ServiceState::Running);
}
