//! A thousand hostile runs in a loop: the host's memory must not grow, and
//! what the runs leave in the audit store stays within its budgets. Alone
//! in its own test binary, so the process's memory is these tests'; the
//! tests take turns.

use medic_backends::{Backends, PrincipalMap};
use medic_sandbox::EventRecord;
use medic_sandbox::Grants;
use medic_sandbox::Mode;
use medic_sandbox::{Limits, RunRequest, Runtime, RuntimeConfig};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// One test at a time: each measures the whole process.
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn a_thousand_hostile_runs_do_not_grow_host_memory() {
    let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
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

/// Runs that emit as much as they can (megabyte summaries, errors and log
/// lines, thousands of calls with megabyte arguments, terminal controls),
/// each recorded in a real journal as the agent records it.
#[test]
fn a_thousand_runs_with_large_payloads_stay_within_their_budgets() {
    let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/plugins");
    let runtime = Runtime::new(&RuntimeConfig::default()).unwrap();
    let plugin = runtime
        .load_file(&plugins.join("fixture-hostile.wasm"))
        .unwrap_or_else(|e| panic!("{e}: build the plugins with `cargo xtask plugins`"));
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    let store = medic_agent::audit::Store::open(&dir.path().join("state")).unwrap();
    let journal = medic_agent::audit::journal::Journal::new(store.clone());
    let state = Arc::new(medic_agent::audit::state::StateStore::new(store));
    let mut grants = Grants::none();
    for spec in ["fs-read", "fs-write"] {
        grants
            .add_spec(&format!("{spec}={}", share.display()))
            .unwrap();
    }
    grants.add_spec("services-control=medic-test-none").unwrap();
    let grants = Arc::new(grants);
    let mib = (1usize << 20).to_string();
    let path = format!("{}/", share.display());
    let attacks: Vec<Arc<medic_sandbox::Settings>> = [
        vec![("attack", "big-summary"), ("bytes", mib.as_str())],
        vec![("attack", "big-error"), ("bytes", mib.as_str())],
        vec![
            ("attack", "log-flood"),
            ("count", "300"),
            ("bytes", "65536"),
        ],
        vec![
            ("attack", "stat-flood"),
            ("count", "1500"),
            ("bytes", "65536"),
            ("path", path.as_str()),
        ],
        vec![
            ("attack", "state-flood"),
            ("count", "20"),
            ("bytes", "60000"),
        ],
        vec![("attack", "control-chars")],
    ]
    .into_iter()
    .map(|pairs| {
        Arc::new(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.into()))
                .collect(),
        )
    })
    .collect();
    let run = |n: usize| {
        let report = runtime.run(
            &plugin,
            RunRequest {
                run_id: format!("soak-{n}"),
                event: EventRecord::manual("soak").completed(),
                mode: Mode::Enforce,
                grants: grants.clone(),
                limits: Limits::default(),
                settings: attacks[n % attacks.len()].clone(),
                backends: Backends::local(PrincipalMap::default()),
                state: Some(state.clone() as Arc<dyn medic_sandbox::PluginState>),
                own_effects: None,
            },
        );
        journal
            .append(medic_agent::audit::journal::NewRecord {
                kind: medic_agent::audit::journal::RecordKind::Run,
                plugin: report.plugin.clone(),
                run_id: report.run_id.clone(),
                status: medic_agent::audit::journal::RecordStatus::Run(report.status()),
                summary: match &report.result {
                    medic_sandbox::RunResult::Completed(o) => o.summary.clone(),
                    medic_sandbox::RunResult::Failed(f) => f.to_string(),
                },
                detail: serde_json::to_value(&report).unwrap(),
            })
            .unwrap();
    };
    for n in 0..100 {
        run(n);
    }
    let store_file = dir.path().join("state/medic.redb");
    let store_size = || std::fs::metadata(&store_file).map_or(0, |m| m.len());
    let (before, stored_before) = (resident_bytes(), store_size());
    for n in 100..1100 {
        run(n);
    }
    let (after, stored_after) = (resident_bytes(), store_size());
    let growth = after.saturating_sub(before);
    let per_run = stored_after.saturating_sub(stored_before) / 1000;
    println!(
        "resident memory: {} KiB before, {} KiB after 1000 runs with large payloads; store {} KiB before, {} KiB after ({} bytes per run)",
        before >> 10,
        after >> 10,
        stored_before >> 10,
        stored_after >> 10,
        per_run
    );
    assert!(
        growth < 32 << 20,
        "host memory grew by {} KiB over 1000 runs",
        growth >> 10
    );
    assert!(
        per_run < 256 << 10,
        "each run added {per_run} bytes to the store"
    );
    let used = state.usage("fixture-hostile").unwrap();
    assert!(used <= Limits::default().state_quota_bytes, "{used}");
    assert_eq!(journal.verify().unwrap(), Ok(1100));
}
