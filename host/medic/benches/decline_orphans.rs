//! `decline-orphans` at scale, in the lab: downstream servers of 50 000,
//! 100 000 and 200 000 updates synchronized from upstreams of 250 000,
//! 500 000 and 1 000 000, each upstream rebuilt without two retired
//! products (every approved-and-pending update of theirs downstream is an
//! orphan) while 1 % other downloads failed transiently. One plugin run per
//! size, autonomous mode (cancel and decline): the time should grow
//! linearly, and the largest stay under one second.
//!
//! Needs the components from `cargo xtask plugins`. Run with
//! `cargo bench -p medic --bench decline_orphans`.

mod support;

use medic_lab::model::SyncMode;
use medic_lab::{InitOptions, Lab, Server, UpdateState};
use medic_sandbox::{Limits, Runtime, RuntimeConfig};
use std::time::{Duration, Instant};

const SIZES: [(u64, u64); 3] = [(50_000, 250_000), (100_000, 500_000), (200_000, 1_000_000)];

fn main() {
    let runtime = Runtime::new(&RuntimeConfig::default()).expect("engine");
    let plugin = support::plugin(&runtime, "decline-orphans");
    let grants = support::grants(&["wsus-read", "wsus-updates"]);
    let limits = Limits {
        timeout: Duration::from_secs(300),
        memory_bytes: 256 << 20,
        ..Limits::default()
    };

    for (downstream, upstream) in SIZES {
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let lab = Lab::init(
            &dir.path().join("lab"),
            &InitOptions {
                mode: SyncMode::Autonomous,
                upstream_updates: upstream,
                downstream_updates: Some(downstream),
                content_files: false,
                ..InitOptions::default()
            },
        )
        .unwrap();
        lab.lose_upstream_products(usize::MAX, (downstream / 100) as usize)
            .unwrap();
        let (states, _) = lab.state_counts(Server::Downstream).unwrap();
        let failed = states.get(&UpdateState::Failed).copied().unwrap_or(0);
        eprintln!(
            "lab of {downstream}/{upstream} updates with {failed} failed downloads built in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let started = Instant::now();
        let report = support::run(
            &runtime,
            &plugin,
            &grants,
            &medic_lab::backend::backends(lab.clone(), medic_lab::Server::Downstream),
            limits,
            Some(support::state(&dir.path().join("state"))),
        );
        let elapsed = started.elapsed();
        assert_eq!(report.status().as_str(), "remediated", "{report:#?}");
        // Declined updates are counted apart from the states.
        let (_, orphans) = lab.state_counts(Server::Downstream).unwrap();
        let ms = elapsed.as_secs_f64() * 1e3;
        println!(
            "decline-orphans, {downstream} downstream / {upstream} upstream updates: {failed} failed, {orphans} gone upstream cancelled and declined in {ms:.0} ms ({:.2} µs per downstream update)",
            ms * 1e3 / downstream as f64
        );
        println!(
            "BENCH decline_orphans_{downstream} downstream={downstream} upstream={upstream} failed={failed} orphans={orphans} run_ms={ms:.1}"
        );
    }
}
