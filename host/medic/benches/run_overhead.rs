//! Run overhead: a fresh store, instantiation from the plugin's
//! `InstancePre` and one `handle` call, measured on two plugins runs:
//!
//! 1. a no-op `handle` (target: median <= 10 µs);
//! 2. a `handle` making 10 `fs.stat` host calls, against native Rust doing
//!    the same 10 grant-checked backend calls (target: <= 3x native).
//!
//! The no-op run is also counted in instructions, which a noisy machine
//! does not change: where `valgrind` is installed (`cargo xtask bench`
//! installs it), the benchmark runs itself twice under callgrind, making
//! 100 and then 600 no-op runs, and reports the difference over 500. Under
//! valgrind the instance pool holds one instance (valgrind cannot reserve
//! the whole pool's address space); a run takes the same path.
//!
//! Where the time went (`perf record` and callgrind of `--noop-runs`, 2-core
//! VM). Before (p50 17.5 µs, 70 300 instructions): a quarter of it was the
//! kernel's `mprotect`, half of that the TLB shootdown to every CPU: the
//! plugin's allocator grew the memory on every run (Rust's dlmalloc on
//! wasm32 only uses memory it grows), and the pool made the new pages
//! accessible, then took them away when it reset the slot; another tenth
//! was the page-map scan of that reset; the rest wasmtime's instantiation,
//! and the bindings type-checking every export of the interface on each
//! instantiation. After (p50 7-12 µs by run, 57 600 instructions): the
//! SDK's allocator serves a small run from its initial memory, so nothing
//! is re-protected, and `handle` is type-checked once at load; what is
//! left is wasmtime's store, instance allocation and export wiring, its
//! drop, and the page-map scan (about 15%).
//!
//! Needs the components from `cargo xtask plugins`. Run with
//! `cargo bench -p medic --bench run_overhead`.

use medic_backends::{Backends, PrincipalMap};
use medic_sandbox::EventRecord;
use medic_sandbox::Mode;
use medic_sandbox::{Grants, host::grants::checked_path};
use medic_sandbox::{Limits, RunRequest, Runtime, RuntimeConfig};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ITERATIONS: usize = 5_000;
const STATS: u32 = 10;

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

fn measure(mut f: impl FnMut()) -> (Duration, Duration) {
    for _ in 0..ITERATIONS / 10 {
        f();
    }
    let mut samples: Vec<Duration> = (0..ITERATIONS)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed()
        })
        .collect();
    (
        percentile(&mut samples, 0.5),
        percentile(&mut samples, 0.99),
    )
}

/// `--noop-runs N`: only make `N` no-op runs after the set-up, and stop
/// (for counting instructions, and for profiling).
fn noop_runs_only() -> Option<u64> {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|a| a == "--noop-runs")?;
    Some(
        args.get(at + 1)?
            .parse()
            .expect("--noop-runs takes a number"),
    )
}

/// Instructions one no-op run takes, counted by callgrind: this benchmark
/// run twice under it, with 100 and 600 runs, the difference over 500 (so
/// the set-up and the compile cancel out). `None` without valgrind.
fn noop_instructions() -> Option<f64> {
    let me = std::env::current_exe().ok()?;
    let dir = tempfile::tempdir().ok()?;
    let count = |runs: u64| -> Option<f64> {
        let out = dir.path().join(format!("callgrind.{runs}"));
        let status = Command::new("valgrind")
            .arg("--tool=callgrind")
            .arg(format!("--callgrind-out-file={}", out.display()))
            .arg(&me)
            .args(["--noop-runs", &runs.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        assert!(status.success(), "the no-op runs failed under callgrind");
        let text = std::fs::read_to_string(&out).ok()?;
        let total = text
            .lines()
            .find_map(|line| line.strip_prefix("summary: "))
            .expect("callgrind writes a summary line");
        Some(
            total
                .trim()
                .parse::<f64>()
                .expect("a number of instructions"),
        )
    };
    let (few, many) = (count(100)?, count(600)?);
    Some((many - few) / 500.0)
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let plugin_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/plugins/fixture-noop.wasm");
    let only_noop = noop_runs_only();
    let config = RuntimeConfig {
        max_instances: if only_noop.is_some() { 1 } else { 64 },
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::new(&config).expect("engine");
    let plugin = runtime
        .load_file(&plugin_path)
        .unwrap_or_else(|e| panic!("{e}: build the plugins with `cargo xtask plugins`"));
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("content.bin");
    std::fs::write(&target, vec![0u8; 4096]).unwrap();
    let mut grants = Grants::none();
    grants
        .add_spec(&format!("fs-read={}", dir.path().display()))
        .unwrap();
    let grants = Arc::new(grants);
    let backends = Backends::local(PrincipalMap::default());
    let event = EventRecord::manual("bench").completed();
    let request = |settings: Arc<medic_sandbox::Settings>| RunRequest {
        run_id: "bench".into(),
        event: event.clone(),
        mode: Mode::Enforce,
        grants: grants.clone(),
        limits: Limits::default(),
        settings,
        backends: backends.clone(),
        state: None,
        own_effects: None,
    };

    let no_settings = Arc::new(BTreeMap::new());
    let noop = || {
        let report = runtime.run(&plugin, request(no_settings.clone()));
        assert_eq!(report.status().as_str(), "healthy");
    };
    if let Some(runs) = only_noop {
        for _ in 0..runs {
            noop();
        }
        return;
    }
    let (noop_p50, noop_p99) = measure(noop);

    let stat_settings: Arc<medic_sandbox::Settings> = Arc::new(
        [
            (
                "stat-path".to_string(),
                target.display().to_string().as_str().into(),
            ),
            ("stat-count".to_string(), STATS.to_string().as_str().into()),
        ]
        .into(),
    );
    let (wasm_p50, wasm_p99) = measure(|| {
        let report = runtime.run(&plugin, request(stat_settings.clone()));
        assert_eq!(report.calls.len(), STATS as usize);
    });

    let raw_path = target.display().to_string();
    let (native_p50, native_p99) = measure(|| {
        let mut total = 0;
        for _ in 0..STATS {
            let path = checked_path(black_box(&raw_path)).unwrap();
            let scope = grants.read_scope(&path).unwrap();
            total += backends.fs.stat(&scope).unwrap().size;
        }
        black_box(format!("{STATS} stats, {total} bytes"));
    });

    let ratio = wasm_p50.as_secs_f64() / native_p50.as_secs_f64();
    let instructions = noop_instructions();
    println!("run overhead ({ITERATIONS} runs each, medians and p99)");
    println!(
        "  no-op plugin run (new store + instantiate + handle): p50 {:.1} µs, p99 {:.1} µs (target p50 <= 10 µs)",
        micros(noop_p50),
        micros(noop_p99)
    );
    println!(
        "  plugin run with {STATS} fs.stat calls:                p50 {:.1} µs, p99 {:.1} µs",
        micros(wasm_p50),
        micros(wasm_p99)
    );
    println!(
        "  native Rust, same {STATS} checked fs.stat calls:       p50 {:.1} µs, p99 {:.1} µs",
        micros(native_p50),
        micros(native_p99)
    );
    println!("  ratio plugin / native (p50): {ratio:.2}x (target <= 3x)");
    match instructions {
        Some(count) => println!("  no-op plugin run, instructions (callgrind): {count:.0}"),
        None => println!("  no-op plugin run, instructions: not counted (no valgrind)"),
    }
    println!(
        "BENCH run_overhead noop_p50_us={:.2} noop_instructions={} stat_p50_us={:.2} native_p50_us={:.2} ratio={ratio:.2}",
        micros(noop_p50),
        instructions.map_or("nan".to_string(), |count| format!("{count:.0}")),
        micros(wasm_p50),
        micros(native_p50)
    );
}
