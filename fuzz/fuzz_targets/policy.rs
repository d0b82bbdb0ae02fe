//! The policy parser, from the bytes of a file: any input is a policy or a
//! list of errors, each located (line and column) with a fix, never a
//! panic. A policy it accepts is then driven through the dispatcher's
//! scheduler at the edges of time, as `medic run` would: whatever `medic
//! check` accepts must not panic the agent.

#![no_main]

use libfuzzer_sys::fuzz_target;
use medic_agent::BackendCatalog;
use medic_agent::dispatch::schedule::{Counters, Rules, Scheduler};
use medic_agent::policy::{Policy, Probe, Trigger};
use medic_agent::units::MAX_DURATION;
use std::path::{Path, PathBuf};

/// A file system where every path exists: the parse goes as far as it can.
struct Everywhere;

impl Probe for Everywhere {
    fn is_dir(&self, _: &Path) -> bool {
        true
    }
    fn is_file(&self, _: &Path) -> bool {
        true
    }
    fn canonicalize(&self, path: &Path) -> std::io::Result<PathBuf> {
        Ok(path.to_path_buf())
    }
    fn read_text(&self, _: &Path, _: u64) -> std::io::Result<String> {
        Err(std::io::ErrorKind::NotFound.into())
    }
}

fuzz_target!(|bytes: &[u8]| {
    let file = Path::new("/fuzz/policy.toml");
    let parsed = Policy::parse_bytes_with(file, bytes, &Everywhere, &mut |section| {
        medic::catalog::Catalog
            .open(section)
            .err()
            .unwrap_or_default()
    });
    let policy = match parsed {
        Ok(policy) => policy,
        Err(errors) => {
            assert!(!errors.0.is_empty());
            for error in &errors.0 {
                assert!(
                    error.line > 0 && error.column > 0 && !error.fix.is_empty(),
                    "unlocated or without a fix: {error:?}"
                );
            }
            return;
        }
    };
    let max_ms = MAX_DURATION.as_millis() as u64;
    let mut scheduler: Scheduler<()> = Scheduler::new(
        policy.agent.max_concurrent_runs,
        policy.agent.queue_capacity,
    );
    scheduler.set_plugins(policy.plugins.iter().map(|plugin| {
        for trigger in &plugin.triggers {
            match trigger {
                Trigger::File { debounce, .. } => assert!(*debounce <= MAX_DURATION),
                Trigger::Every { interval } => assert!(*interval <= MAX_DURATION),
                _ => {}
            }
        }
        assert!(plugin.limits.timeout <= MAX_DURATION);
        let rules = Rules {
            concurrency: plugin.concurrency,
            rate: plugin.rate,
            flap_guard: plugin.flap_guard,
        };
        (plugin.name.clone(), rules, Counters::default())
    }));
    for now in [
        0,
        1,
        max_ms,
        u64::MAX / 2,
        u64::MAX - max_ms,
        u64::MAX - 1,
        u64::MAX,
    ] {
        for plugin in &policy.plugins {
            let _ = scheduler.offer(&plugin.name, "subject", ());
        }
        let decisions = scheduler.next_runs(now);
        for start in decisions.starts {
            let _ = scheduler.finish(start.ticket, true, now);
        }
        let _ = scheduler.next_wake(now);
    }
});
