//! A thousand hostile runs in a loop: the host's memory must not grow.
//! Alone in its own test binary, so the process's memory is this test's.

use medic_backends::{Backends, PrincipalMap};
use medic_sandbox::EventRecord;
use medic_sandbox::Grants;
use medic_sandbox::Mode;
use medic_sandbox::{Limits, RunRequest, Runtime, RuntimeConfig};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn a_thousand_hostile_runs_do_not_grow_host_memory() {
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/plugins");
    let runtime = Runtime::new(&RuntimeConfig::default()).unwrap();
    let hostile: Vec<_> = [
        "fixture-panicker",
        "fixture-hog",
        "fixture-overreach",
        "fixture-spin",
    ]
    .iter()
    .map(|name| {
        let path = plugins.join(format!("{name}.wasm"));
        runtime
            .load_file(&path)
            .unwrap_or_else(|e| panic!("{e}: build the plugins with `cargo xtask plugins`"))
    })
    .collect();
    let mut grants = Grants::none();
    grants.add_spec("fs-read=/tmp").unwrap();
    let grants = Arc::new(grants);
    let settings: Arc<medic_sandbox::Settings> =
        Arc::new([("path".to_string(), "/etc/hostname".into())].into());
    let limits = Limits {
        timeout: Duration::from_secs(10),
        memory_bytes: 8 << 20,
        fuel: Some(2_000_000),
        ..Limits::default()
    };
    let run = |n: usize| {
        let plugin = &hostile[n % hostile.len()];
        let report = runtime.run(
            plugin,
            RunRequest {
                run_id: format!("soak-{n}"),
                event: EventRecord::manual("soak").completed(),
                mode: Mode::Enforce,
                grants: grants.clone(),
                limits,
                settings: settings.clone(),
                backends: Backends::local(PrincipalMap::default()),
                state: None,
                own_effects: None,
            },
        );
        let expected = if plugin.info.name == "fixture-overreach" {
            "healthy"
        } else {
            "failed"
        };
        assert_eq!(
            report.status().as_str(),
            expected,
            "run {n} of {}: {:?}",
            plugin.info.name,
            report.result
        );
    };
    for n in 0..200 {
        run(n);
    }
    let before = resident_bytes();
    for n in 200..1200 {
        run(n);
    }
    let after = resident_bytes();
    let growth = after.saturating_sub(before);
    println!(
        "resident memory: {} KiB before, {} KiB after 1000 hostile runs",
        before >> 10,
        after >> 10
    );
    assert!(
        growth < 16 << 20,
        "host memory grew by {} KiB over 1000 hostile runs",
        growth >> 10
    );
}
