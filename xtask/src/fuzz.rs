//! `cargo xtask fuzz [--time SECS] [--asan] [TARGET...] [-- LIBFUZZER ARGS]`:
//! build the fuzz targets in `fuzz/` with cargo-fuzz (libFuzzer) and run
//! each for a bounded time, seeded from the examples and the built
//! plugins; stop with the crashing input's path if one fails.
//!
//! The fuzz crate is its own workspace: `cargo xtask lint` and `cargo
//! xtask test` build `--workspace` and must not compile libFuzzer. It is
//! built with the workspace's `Cargo.lock` (copied beside it before every
//! build, never committed) into `target/fuzz`, and everything a run makes
//! (corpus, crashing inputs) stays under `target/fuzz` too.
//!
//! Toolchain: cargo-fuzz needs nightly only for a sanitizer. By default the
//! targets are built without one (`--sanitizer none`) with the toolchain at
//! hand: the code under test is safe Rust, and what is looked for is a
//! panic, an arithmetic overflow (debug assertions are on), a hang or
//! unbounded memory, which need no sanitizer, at two to three times the
//! executions per second. `--asan` adds AddressSanitizer, for the unsafe
//! code underneath: with a nightly toolchain when rustup has one, else
//! with the stable one and `RUSTC_BOOTSTRAP=1`.

use crate::{cargo, run_command};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every target, with what it feeds.
pub const TARGETS: [(&str, &str); 6] = [
    (
        "policy",
        "a policy file's bytes, through medic check's parser",
    ),
    ("units", "durations and sizes"),
    ("event_journal", "event-journal lines (event_log trigger)"),
    ("journal_entry", "journalctl JSON lines (journal trigger)"),
    ("log_line", "a log pattern and a log line (log trigger)"),
    ("component", "component bytes, through the plugin loader"),
];

/// How long each target runs by default.
const DEFAULT_SECONDS: u64 = 60;

#[derive(Debug)]
struct Options {
    seconds: u64,
    asan: bool,
    targets: Vec<String>,
    libfuzzer: Vec<String>,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut options = Options {
        seconds: DEFAULT_SECONDS,
        asan: false,
        targets: Vec::new(),
        libfuzzer: Vec::new(),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--time" => {
                let value = args.next().context("--time needs a number of seconds")?;
                options.seconds = value
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .with_context(|| format!("--time {value}: expected seconds, e.g. 60"))?;
            }
            "--asan" => options.asan = true,
            "--" => options.libfuzzer = args.by_ref().cloned().collect(),
            name if TARGETS.iter().any(|(t, _)| *t == name) => {
                options.targets.push(name.to_string())
            }
            other => bail!(
                "unknown fuzz target or option `{other}`; the targets are: {}",
                TARGETS.map(|(t, _)| t).join(", ")
            ),
        }
    }
    if options.targets.is_empty() {
        options.targets = TARGETS.iter().map(|(t, _)| t.to_string()).collect();
    }
    Ok(options)
}

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let options = parse(args)?;
    ensure_cargo_fuzz(root)?;
    let work = root.join("target/fuzz");
    std::fs::create_dir_all(&work)?;
    // The workspace's lockfile: the same dependency versions as the agent.
    std::fs::copy(root.join("Cargo.lock"), root.join("fuzz/Cargo.lock"))
        .context("cannot copy Cargo.lock into fuzz/")?;

    let sanitizer = if options.asan { "address" } else { "none" };
    let flags = |command: &mut Command| {
        command.args([
            "--sanitizer",
            sanitizer,
            "--debug-assertions",
            "--target-dir",
            "target/fuzz",
        ]);
    };
    println!(
        "xtask: building the fuzz targets ({}, sanitizer {sanitizer})",
        toolchain_name(options.asan)
    );
    let mut build = fuzz_command(root, options.asan);
    build.arg("build");
    flags(&mut build);
    run_command(&mut build)?;

    let mut results = Vec::new();
    for target in &options.targets {
        let corpus = work.join("corpus").join(target);
        let seeds = work.join("seeds").join(target);
        let artifacts = work.join("artifacts").join(target);
        for dir in [&corpus, &artifacts] {
            std::fs::create_dir_all(dir)?;
        }
        write_seeds(root, target, &seeds)?;
        println!(
            "\nxtask: fuzzing `{target}` for {} s (corpus {})",
            options.seconds,
            corpus.display()
        );
        let mut command = fuzz_command(root, options.asan);
        command.args(["run"]);
        flags(&mut command);
        command
            .arg(target)
            .arg(&corpus)
            .arg(&seeds)
            .arg("--")
            .args([
                format!("-max_total_time={}", options.seconds),
                // One input taking this long is a hang. Compiling a
                // component (all its functions, before an invalid one is
                // reported) takes seconds under the fuzzer's
                // instrumentation, more on a busy machine: that one gets
                // longer.
                format!("-timeout={}", if target == "component" { 120 } else { 30 }),
                "-rss_limit_mb=2048".to_string(),
                format!("-artifact_prefix={}/", artifacts.display()),
                "-print_final_stats=1".to_string(),
            ]);
        command.args(&options.libfuzzer);
        let output = command
            .stderr(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {command:?}"))?
            .wait_with_output()?;
        let log = String::from_utf8_lossy(&output.stderr);
        let runs = stat(&log, "stat::number_of_executed_units:");
        let corpus_size = std::fs::read_dir(&corpus).map_or(0, |d| d.count());
        if !output.status.success() {
            eprintln!("{}", tail(&log, 60));
            results.push(format!(
                "{target:<14} FAILED after {runs} runs: see {}",
                artifacts.display()
            ));
            print_summary(&results);
            bail!(
                "fuzz target `{target}` failed; the input is in {}",
                artifacts.display()
            );
        }
        results.push(format!(
            "{target:<14} {runs:>10} runs in {} s, corpus {corpus_size} inputs",
            options.seconds
        ));
    }
    print_summary(&results);
    println!(
        "the build and the corpora are in {}: `rm -rf target/fuzz` reclaims the space",
        work.display()
    );
    Ok(())
}

fn print_summary(results: &[String]) {
    println!("\nxtask: fuzzing summary");
    for line in results {
        println!("  {line}");
    }
}

/// A number libFuzzer printed after `key`, or `?`.
fn stat(log: &str, key: &str) -> String {
    log.lines()
        .rev()
        .find_map(|line| line.strip_prefix(key))
        .map_or_else(|| "?".to_string(), |n| n.trim().to_string())
}

fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn has_nightly() -> bool {
    Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("nightly"))
}

fn toolchain_name(asan: bool) -> &'static str {
    match (asan, has_nightly()) {
        (false, _) => "the default toolchain",
        (true, true) => "nightly",
        (true, false) => "stable with RUSTC_BOOTSTRAP=1",
    }
}

/// `cargo fuzz`, through nightly when AddressSanitizer is wanted and
/// rustup has it.
fn fuzz_command(root: &Path, asan: bool) -> Command {
    let mut command = if asan && has_nightly() {
        let mut c = Command::new("rustup");
        c.args(["run", "nightly", "cargo", "fuzz"]);
        c
    } else {
        let mut c = cargo(root);
        c.arg("fuzz");
        if asan {
            c.env("RUSTC_BOOTSTRAP", "1");
        }
        c
    };
    command.current_dir(root);
    command
}

fn ensure_cargo_fuzz(root: &Path) -> Result<()> {
    let installed = cargo(root)
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !installed {
        println!("xtask: installing cargo-fuzz");
        run_command(cargo(root).args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}

/// Small starting inputs for `target` in `dir`, from the examples and the
/// built plugins: rewritten on every run, not committed.
fn write_seeds(root: &Path, target: &str, dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    let mut files = |folder: &str, ext: &str, only: &[&str]| -> Result<()> {
        let Ok(entries) = std::fs::read_dir(root.join(folder)) else {
            return Ok(());
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
        paths.sort();
        for path in paths {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let stem = name.strip_suffix(ext).unwrap_or(&name);
            if name.ends_with(ext) && (only.is_empty() || only.contains(&stem)) {
                seeds.push((name.to_string(), std::fs::read(&path)?));
            }
        }
        Ok(())
    };
    match target {
        "policy" => files("examples", ".toml", &[])?,
        "component" => files(
            "target/plugins",
            ".wasm",
            &[
                "fixture-noop",
                "fixture-future-contract",
                "fixture-contract-0-1-0",
                "fixture-panicker",
                "content-acl",
            ],
        )?,
        "units" => {
            for (n, text) in ["500ms", "30s", "5m", "1h", "8784h", "64MiB", "1GiB", "4096"]
                .iter()
                .enumerate()
            {
                seeds.push((format!("seed-{n}"), text.as_bytes().to_vec()));
            }
        }
        "event_journal" => {
            let lines = [
                r#"{"time":"2026-01-01T00:00:00.000Z","log":"Application","id":364,"level":"Error","source":"Windows Server Update Services","computer":"WSUS-DOWN","message":"Content file download failed. Reason: Access is denied."}"#,
                r#"{"id":"10021","source":"Windows Server Update Services","subject":"sync","message":null}"#,
                r#"{"id":7040,"source":"Service Control Manager","message":"The start type of the Background Intelligent Transfer Service service was changed from demand start to disabled."}"#,
            ];
            for (n, line) in lines.iter().enumerate() {
                let mut seed = vec![n as u8];
                seed.extend_from_slice(line.as_bytes());
                seeds.push((format!("seed-{n}"), seed));
            }
        }
        "journal_entry" => {
            let fixtures = root.join("host/agent/src/triggers/fixtures/journal");
            for (n, name) in [
                "service-stderr.json",
                "unit-failed.json",
                "message-bytes.json",
                "message-null.json",
                "repeated-field.json",
            ]
            .iter()
            .enumerate()
            {
                let mut seed = vec![12u8];
                seed.extend(std::fs::read(fixtures.join(name))?);
                seeds.push((format!("seed-{n}"), seed));
            }
        }
        "log_line" => {
            let pairs = [
                "(?i)access (is )?denied\n2026-01-01 00:00:00.000 UTC\tError\tWsusService.13\tContentSyncAgent.DownloadFile\tAccess is denied",
                "Synchronization completed\n2026-01-01 00:00:00.000 UTC\tInfo\tWsusService.1\tSyncAgent\tSynchronization completed",
                r"(?P<subject>[0-9a-f]{40})\.cab\nfile 0123456789abcdef0123456789abcdef01234567.cab failed",
            ];
            for (n, pair) in pairs.iter().enumerate() {
                seeds.push((format!("seed-{n}"), pair.as_bytes().to_vec()));
            }
        }
        _ => {}
    }
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_are_read() {
        let options = parse(&args(&[])).unwrap();
        assert_eq!(options.seconds, DEFAULT_SECONDS);
        assert_eq!(options.targets.len(), TARGETS.len());
        let options = parse(&args(&["--time", "5", "units", "policy", "--", "-jobs=2"])).unwrap();
        assert_eq!(options.seconds, 5);
        assert_eq!(options.targets, ["units", "policy"]);
        assert_eq!(options.libfuzzer, ["-jobs=2"]);
        assert!(parse(&args(&["--time", "0"])).is_err());
        assert!(parse(&args(&["--time"])).is_err());
        let error = parse(&args(&["nothing"])).unwrap_err().to_string();
        assert!(error.contains("policy, units"), "{error}");
    }

    #[test]
    fn every_target_has_a_source_file() {
        let root = crate::workspace_root();
        let manifest = std::fs::read_to_string(root.join("fuzz/Cargo.toml")).unwrap();
        for (target, _) in TARGETS {
            assert!(
                root.join(format!("fuzz/fuzz_targets/{target}.rs"))
                    .is_file(),
                "{target}"
            );
            assert!(
                manifest.contains(&format!("name = \"{target}\"")),
                "{target}"
            );
        }
    }
}
