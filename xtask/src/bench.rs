//! `cargo xtask bench`: run every benchmark the project has and write
//! `BENCHMARKS.md` with each figure, its baseline, the ratio, the target
//! and the machine it ran on.
//!
//! Each benchmark prints one machine-readable line,
//! `BENCH <name> key=value ...`, which this module reads.

use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// The benchmarks, in the order they run.
const BENCHES: &[&str] = &[
    "run_overhead",
    "agent_latency",
    "content_acl",
    "decline_orphans",
    "agent_footprint",
    "large_plugins",
];

/// The sizes `decline_orphans` runs (downstream updates).
const DECLINE_SIZES: [u32; 3] = [50_000, 100_000, 200_000];

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")?
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
        })
        .map_or(0, |kib| kib / (1024 * 1024));
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!(
        "{cpu}, {cores} cores, {memory_gib} GiB, {} {}; {rustc}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

/// `BENCH name k=v ...` lines of `output`.
fn figures(output: &str) -> BTreeMap<String, BTreeMap<String, f64>> {
    output
        .lines()
        .filter_map(|line| line.strip_prefix("BENCH "))
        .filter_map(|rest| {
            let mut parts = rest.split_whitespace();
            let name = parts.next()?.to_string();
            let values = parts
                .filter_map(|kv| {
                    kv.split_once('=')
                        .and_then(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
                })
                .collect();
            Some((name, values))
        })
        .collect()
}

/// Run the benchmarks `only` names (every one when empty), and write
/// `BENCHMARKS.md` from their output and, for the others, the output of
/// their last run on this machine (kept in `target/bench/`, and said in
/// the file).
pub fn run(root: &Path, only: &[String]) -> Result<()> {
    if let Some(unknown) = only.iter().find(|name| !BENCHES.contains(&name.as_str())) {
        anyhow::bail!(
            "no benchmark `{unknown}`; there are: {}",
            BENCHES.join(", ")
        );
    }
    // `content_acl` compares with getfacl and setfacl on the same tree;
    // `agent_latency` with a shell loop around inotifywait and with monit;
    // `run_overhead` counts instructions with callgrind.
    let missing: Vec<&str> = [
        ("getfacl", "acl"),
        ("inotifywait", "inotify-tools"),
        ("monit", "monit"),
        ("valgrind", "valgrind"),
    ]
    .into_iter()
    .filter(|(program, _)| Command::new(program).arg("--help").output().is_err())
    .map(|(_, package)| package)
    .collect();
    if !missing.is_empty() {
        crate::toolchain::ensure_packages(
            &missing,
            "the content_acl, agent_latency and run_overhead benchmarks",
        )?;
    }
    crate::plugins::build_all(root)?;
    let kept = root.join("target/bench");
    std::fs::create_dir_all(&kept)?;
    let mut output = String::new();
    let mut reused = Vec::new();
    for bench in BENCHES {
        let kept = kept.join(format!("{bench}.txt"));
        if !only.is_empty() && !only.iter().any(|name| name == bench) {
            let text = std::fs::read_to_string(&kept).with_context(|| {
                format!("no earlier output of the {bench} benchmark: run it too")
            })?;
            output.push_str(&text);
            reused.push(*bench);
            continue;
        }
        println!("xtask: cargo bench --bench {bench}");
        let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(root)
            .args(["bench", "-p", "medic", "--bench", bench])
            .output()
            .with_context(|| format!("running the {bench} benchmark"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        print!("{text}");
        if !out.status.success() {
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
            anyhow::bail!("the {bench} benchmark failed");
        }
        std::fs::write(&kept, text.as_bytes())?;
        output.push_str(&text);
    }
    let f = figures(&output);
    let get = |bench: &str, key: &str| {
        f.get(bench)
            .and_then(|v| v.get(key))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Benchmarks\n\nWritten by `cargo xtask bench`. Machine: {}.\n",
        machine()
    );
    let _ = writeln!(
        md,
        "Shared virtual machines are noisy: compare figures from one run, not across runs.\n"
    );
    if !reused.is_empty() {
        let _ = writeln!(
            md,
            "This run measured only {}; the figures of {} are from an earlier run on this machine (`cargo xtask bench` with no names runs them all).\n",
            BENCHES
                .iter()
                .filter(|b| !reused.contains(b))
                .map(|b| format!("`{b}`"))
                .collect::<Vec<_>>()
                .join(", "),
            reused
                .iter()
                .map(|b| format!("`{b}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let _ = writeln!(
        md,
        "| what | figure | baseline | ratio | target |\n| --- | --- | --- | --- | --- |"
    );
    let noop = get("run_overhead", "noop_p50_us");
    let instructions = get("run_overhead", "noop_instructions");
    let counted = if instructions.is_nan() {
        "not counted (no valgrind)".to_string()
    } else {
        format!("{instructions:.0} instructions (callgrind)")
    };
    let _ = writeln!(
        md,
        "| no-op plugin run (new store, instantiate, `handle`), p50 | {noop:.1} µs; {counted} | — | — | <= 10 µs |"
    );
    let (stat, native) = (
        get("run_overhead", "stat_p50_us"),
        get("run_overhead", "native_p50_us"),
    );
    let _ = writeln!(
        md,
        "| plugin run with 10 `fs.stat` calls, p50 | {stat:.1} µs | native Rust, same calls: {native:.1} µs | {:.2}x | <= 3x |",
        stat / native
    );
    for (trigger, key, peer) in [
        (
            "file",
            "file",
            "`inotifywait -m \\| while read; do getfacl \\| grep \\|\\| setfacl; done`",
        ),
        (
            "log",
            "log",
            "`tail -F \\| grep --line-buffered \\| while read; do getfacl \\| grep \\|\\| setfacl; done`",
        ),
    ] {
        let (p50, p99) = (
            get("agent_latency", &format!("{key}_p50_ms")),
            get("agent_latency", &format!("{key}_p99_ms")),
        );
        let (shell_p50, shell_p99) = (
            get("agent_latency", &format!("shell_{key}_p50_ms")),
            get("agent_latency", &format!("shell_{key}_p99_ms")),
        );
        let (baseline, ratio) = if shell_p50.is_nan() {
            (format!("{peer}: not run (no inotifywait)"), "—".to_string())
        } else {
            (
                format!("{peer}: p50 {shell_p50:.2} ms, p99 {shell_p99:.2} ms"),
                format!("{:.1}x faster (p50)", shell_p50 / p50),
            )
        };
        let _ = writeln!(
            md,
            "| {trigger} trigger, event -> remediation applied (ACL entry lost, put back) | p50 {p50:.2} ms, p99 {p99:.2} ms | {baseline} | {ratio} | p50 <= 0.5 ms, p99 <= 3 ms, >= 5x faster |"
        );
    }
    let (file_p50, monit_p50, monit_p99) = (
        get("agent_latency", "file_p50_ms"),
        get("agent_latency", "monit_file_p50_ms"),
        get("agent_latency", "monit_file_p99_ms"),
    );
    let (baseline, ratio) = if monit_p50.is_nan() {
        ("monit: not run (no monit)".to_string(), "—".to_string())
    } else {
        (
            format!(
                "monit at its shortest cycle (1 s; `check program` getfacl \\| grep, `exec` setfacl), 20 faults: p50 {monit_p50:.0} ms, p99 {monit_p99:.0} ms"
            ),
            format!("{:.0}x faster (p50)", monit_p50 / file_p50),
        )
    };
    let _ = writeln!(
        md,
        "| file trigger against monit (same fault) | p50 {file_p50:.2} ms | {baseline} | {ratio} | — |"
    );
    let _ = writeln!(
        md,
        "| one store commit (a small write and its fsync) on this disk, p50 | {:.2} ms | — | — | what a run waiting for its commit would add; runs start from the start log instead |",
        get("agent_latency", "commit_ms")
    );
    for (key, subject) in [
        ("burst", "per path (the default)"),
        ("burst_root", "the watched root (`subject = \"root\"`)"),
    ] {
        let _ = writeln!(
            md,
            "| burst of 100 000 file events on 1 000 files, subject {subject}, drained with coalescing | {:.0} ms, {} runs, {} dropped, peak RSS {} MiB (+{} MiB) | — | — | < 1 s, memory bounded, nothing dropped |",
            get("agent_latency", &format!("{key}_drain_ms")),
            get("agent_latency", &format!("{key}_runs")),
            get("agent_latency", &format!("{key}_dropped")),
            get("agent_latency", &format!("{key}_peak_rss_mib")),
            get("agent_latency", &format!("{key}_rss_growth_mib")),
        );
    }
    let paths = get("content_acl", "paths");
    // Outputs of earlier versions of the benchmark say neither.
    let passes = match get("content_acl", "passes") {
        n if n.is_nan() => String::new(),
        n => format!(", median of {n:.0} passes"),
    };
    let pass_range = |what: &str| {
        let (low, high) = (
            get("content_acl", &format!("{what}_ratio_low")),
            get("content_acl", &format!("{what}_ratio_high")),
        );
        if low.is_nan() || high.is_nan() {
            String::new()
        } else {
            format!(" (passes {low:.2}–{high:.2}x)")
        }
    };
    let (scan, setfacl_scan, getfacl) = (
        get("content_acl", "healthy_ms"),
        get("content_acl", "setfacl_healthy_ms"),
        get("content_acl", "getfacl_ms"),
    );
    let _ = writeln!(
        md,
        "| `content-acl` scan of a healthy lab content tree ({paths:.0} paths){passes} | {scan:.0} ms | `setfacl -R -m u:…:rwX` on the same tree: {setfacl_scan:.0} ms (`getfacl -R`: {getfacl:.0} ms, {:.2}x setfacl) | {:.2}x{} | <= 0.3x setfacl |",
        getfacl / setfacl_scan,
        scan / setfacl_scan,
        pass_range("healthy"),
    );
    let (repair, setfacl_repair) = (
        get("content_acl", "repair_ms"),
        get("content_acl", "setfacl_repair_ms"),
    );
    let _ = writeln!(
        md,
        "| `content-acl` repair of the fully broken tree{passes} | {repair:.0} ms | `setfacl -R -m` repairing the same: {setfacl_repair:.0} ms | {:.2}x{} | <= 0.5x setfacl |",
        repair / setfacl_repair,
        pass_range("repair"),
    );
    for size in DECLINE_SIZES {
        let bench = format!("decline_orphans_{size}");
        let (ms, upstream, failed, orphans) = (
            get(&bench, "run_ms"),
            get(&bench, "upstream"),
            get(&bench, "failed"),
            get(&bench, "orphans"),
        );
        let _ = writeln!(
            md,
            "| `decline-orphans`, {size} downstream / {upstream:.0} upstream updates ({failed:.0} failed, {orphans:.0} gone upstream: cancelled and declined) | {ms:.0} ms | — | {:.2} µs per downstream update | < 1 s at 200 000 / 1 000 000, linear |",
            ms * 1e3 / f64::from(size)
        );
    }
    let _ = writeln!(
        md,
        "| agent serving the WSUS pack: start to ready, warm compile cache | {:.0} ms (cold cache, serving from the quick tier: {:.0} ms) | — | — | < 200 ms |",
        get("agent_footprint", "warm_start_ms"),
        get("agent_footprint", "cold_start_ms")
    );
    let _ = writeln!(
        md,
        "| agent serving the WSUS pack: idle memory | {:.1} MiB RSS | — | — | < 30 MB |",
        get("agent_footprint", "idle_rss_mib")
    );
    let _ = writeln!(
        md,
        "| hot reload: rebuilt Rust plugin renamed into the plugin folder -> new version serving from the quick tier (median of 5) | {:.0} ms | — | — | < 50 ms |",
        get("agent_footprint", "reload_ms")
    );
    large_plugin_rows(&mut md, &get);
    let _ = writeln!(
        md,
        "\nThe benchmarks: `host/medic/benches/run_overhead.rs`, `host/medic/benches/agent_latency.rs`, `host/medic/benches/content_acl.rs`, `host/medic/benches/decline_orphans.rs`, `host/medic/benches/agent_footprint.rs`, `host/medic/benches/large_plugins.rs` (each states what it measures and how)."
    );
    plots(root, &kept, &mut md)?;
    std::fs::write(root.join("BENCHMARKS.md"), &md)?;
    println!("xtask: wrote {}", root.join("BENCHMARKS.md").display());
    Ok(())
}

/// The rows of `large_plugins`: a Python and a JavaScript plugin made
/// with `medic new`, beside the Rust `content-acl`.
fn large_plugin_rows(md: &mut String, get: &dyn Fn(&str, &str) -> f64) {
    let rust = |key: &str| get("large_plugins_rust", key);
    for (lang, title) in [
        ("python", "Python plugin (componentize-py)"),
        ("js", "JavaScript plugin (componentize-js)"),
    ] {
        let bench = format!("large_plugins_{lang}");
        let v = |key: &str| get(&bench, key);
        if v("cold_ms").is_nan() {
            let _ = writeln!(
                md,
                "| {title} from `medic new` | skipped (no python3 or npm, or no registry: see the benchmark's SKIP line) | — | — | — |"
            );
            continue;
        }
        let _ = writeln!(
            md,
            "| {title} from `medic new`, {:.1} MiB: cold load, empty compile cache | {:.2} s ({:.2} s CPU), cache entry {:.1} MiB | Rust `content-acl`, {:.0} KiB: {:.0} ms | {:.0}x | <= 3 s for 15 MB |",
            v("size_mib"),
            v("cold_ms") / 1e3,
            v("cold_cpu_ms") / 1e3,
            v("cache_mib"),
            rust("size_kib"),
            rust("cold_ms"),
            v("cold_ms") / rust("cold_ms")
        );
        let _ = writeln!(
            md,
            "| {title}: cold load with the quick tier (the agent's way): serving from Winch's code, then Cranelift's in the background | serving after {:.2} s; optimized code after {:.2} s; a run on Winch's code {:.2} ms (Cranelift's: {:.2} ms) | Rust `content-acl`: serving after {:.1} ms, optimized after {:.1} ms | {:.0}x | <= 3 s for 15 MB |",
            v("quick_ms") / 1e3,
            v("optimized_ms") / 1e3,
            v("quick_run_ms"),
            v("run_ms"),
            rust("quick_ms"),
            rust("optimized_ms"),
            v("quick_ms") / rust("quick_ms")
        );
        let _ = writeln!(
            md,
            "| {title}: load from the compile cache (median of 5) | {:.1} ms (reading and hashing the component {:.1} ms; the cache entry {:.1} ms: mapping it and its MAC {:.1} ms, the rest wasmtime mapping the file and registering its code; copied rather than mapped, deserializing alone took {:.1} ms) | Rust `content-acl`: {:.2} ms | {:.0}x | <= 50 ms |",
            v("warm_ms"),
            v("read_hash_ms"),
            v("lookup_ms"),
            v("entry_mac_ms"),
            v("shipped_deserialize_ms"),
            rust("warm_ms"),
            v("warm_ms") / rust("warm_ms")
        );
        let _ = writeln!(
            md,
            "| {title}: loaded again while loaded (a second policy entry, a version brought back), compiled code shared (median of 5) | {:.1} ms | Rust `content-acl`: {:.2} ms | {:.0}x | <= 50 ms |",
            v("shared_ms"),
            rust("shared_ms"),
            v("shared_ms") / rust("shared_ms")
        );
        let _ = writeln!(
            md,
            "| {title}: a run (new instance, one `handle`), median of 21 | {:.2} ms | Rust `content-acl`: {:.3} ms | {:.0}x | — |",
            v("run_ms"),
            rust("run_ms"),
            v("run_ms") / rust("run_ms")
        );
        let _ = writeln!(
            md,
            "| agent serving the {title}: start to ready (warm cache), idle memory | {:.0} ms, {:.1} MiB RSS | the agent serving a Rust plugin: {:.1} MiB | +{:.1} MiB | — |",
            v("start_ms"),
            v("rss_mib"),
            v("base_rss_mib"),
            v("rss_mib") - v("base_rss_mib")
        );
        let _ = writeln!(
            md,
            "| hot reload of the {title} | same component, policy changed: {:.0} ms; a version in the cache: {:.0} ms; the rebuilt one, never compiled (the quick tier): {:.2} s | Rust WSUS pack (above): {:.0} ms | — | — |",
            v("reload_same_ms"),
            v("reload_cached_ms"),
            v("reload_compiled_ms") / 1e3,
            get("agent_footprint", "reload_ms")
        );
        let _ = writeln!(
            md,
            "| agent memory after hot reloads of the {title} | {:.0} MiB RSS after the reload that compiled ({:.0} MiB left to the allocator by a compile), {:.0} MiB after swapping versions from the cache{}; compiled versions mapped: {:.0} | — | — | — |",
            v("rss_compiled_mib"),
            v("trimmed_mib"),
            v("rss_after_mib"),
            // Outputs of earlier versions of the benchmark do not split it.
            match (v("rss_after_anon_mib"), v("rss_after_file_mib")) {
                (anon, file) if anon.is_nan() || file.is_nan() => String::new(),
                (anon, file) =>
                    format!(" ({anon:.0} MiB anonymous, {file:.0} MiB of files mapped)"),
            },
            v("code_maps")
        );
        let _ = writeln!(
            md,
            "| engine settings on the {title}: compile, code, deserialize | shipped: {:.1} s, {:.1} MiB, {:.1} ms | wasmtime's defaults for the address map and unwind information: {:.1} s, {:.1} MiB, {:.1} ms; Cranelift unoptimized (not shipped): {:.1} s | code {:.2}x | — |",
            v("shipped_compile_ms") / 1e3,
            v("shipped_code_mib"),
            v("shipped_deserialize_ms"),
            v("before_compile_ms") / 1e3,
            v("before_code_mib"),
            v("before_deserialize_ms"),
            v("opt_none_compile_ms") / 1e3,
            v("shipped_code_mib") / v("before_code_mib")
        );
    }
}

/// Draw the plots the benchmarks left samples for (in `kept`) into
/// `docs/bench/`, and show them in `md`.
fn plots(root: &Path, kept: &Path, md: &mut String) -> Result<()> {
    use crate::plot::{Series, histogram, lines, read_points, read_samples};
    let read = |name: &str| std::fs::read_to_string(kept.join(name)).ok();
    let out = root.join("docs/bench");
    std::fs::create_dir_all(&out)?;
    let mut shown = Vec::new();
    for (trigger, file) in [("file", "latency-file.svg"), ("log", "latency-log.svg")] {
        let (Some(medic), peer) = (
            read(&format!("agent_latency-medic_{trigger}.samples")),
            read(&format!("agent_latency-shell_{trigger}.samples")),
        ) else {
            continue;
        };
        let (medic, peer) = (read_samples(&medic), peer.map(|p| read_samples(&p)));
        let mut series = vec![Series {
            name: "medic",
            values: &medic,
        }];
        if let Some(peer) = &peer {
            series.push(Series {
                name: "shell loop",
                values: peer,
            });
        }
        let title = format!("{trigger} trigger: event -> remediation applied");
        std::fs::write(out.join(file), histogram(&title, &series))?;
        shown.push((title, file));
    }
    let bursts: Vec<(&str, Vec<(f64, f64)>)> = [
        ("per-path subject", "agent_latency-burst_path.rss"),
        ("subject = root", "agent_latency-burst_root.rss"),
    ]
    .into_iter()
    .filter_map(|(name, file)| Some((name, read_points(&read(file)?))))
    .collect();
    if !bursts.is_empty() {
        let series: Vec<(&str, &[(f64, f64)])> =
            bursts.iter().map(|(n, p)| (*n, p.as_slice())).collect();
        let title = "RSS of the process serving a burst of 100 000 file events";
        std::fs::write(
            out.join("burst-memory.svg"),
            lines(title, "ms since the first change", "MiB", &series),
        )?;
        shown.push((title.to_string(), "burst-memory.svg"));
    }
    if !shown.is_empty() {
        let _ = writeln!(md, "\n## Distributions\n");
        for (title, file) in shown {
            let _ = writeln!(md, "![{title}](docs/bench/{file})\n");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::figures;

    #[test]
    fn reads_bench_lines() {
        let f = figures("noise\nBENCH run_overhead noop_p50_us=17.5 ratio=1.72\nBENCH x a=b\n");
        assert_eq!(f["run_overhead"]["noop_p50_us"], 17.5);
        assert!(f["x"].is_empty());
    }
}
