//! Project automation, run as `cargo xtask <command>`:
//!
//! - `plugins`: build every plugin crate (built-ins, examples, test
//!   fixtures) into components under `target/plugins/`, each signed with
//!   the development key `target/signing/dev.key` (made on first use).
//! - `test`: build the plugins, run the whole test suite, build (not run)
//!   the benchmarks. The Linux system tests' packages (systemd,
//!   nss_wrapper, acl) are installed first when missing; under CI
//!   (`CI` set) the tests against a real systemd must run, not skip.
//! - `lint`: `cargo fmt --check` and clippy with warnings as errors.
//! - `windows`: build `medic.exe` for Windows (x86_64-pc-windows-gnu) with
//!   MinGW, installing what it needs, and run it and the backends' Windows
//!   unit tests under Wine; see [`wine`].
//! - `demo`: build everything, create a lab, start the agent with the WSUS
//!   pack, inject every fault in turn and show the repairs.
//! - `bench [NAME...]`: run every benchmark (or the named ones, the
//!   others' figures taken from their last run) and write `BENCHMARKS.md`.
//! - `fuzz`: run each fuzz target (cargo-fuzz, libFuzzer) for a bounded
//!   time; see [`fuzz`].
//!
//! On a machine without a rustup `wasm32-unknown-unknown` target, plugins
//! are built with Debian's `rustc-web` compiler and `-Zbuild-std`; when run
//! as root, the missing packages are installed.

mod bench;
mod demo;
mod fuzz;
mod plot;
mod plugins;
mod sign;
mod toolchain;
mod wine;

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

const USAGE: &str = "usage: cargo xtask <plugins|test|lint|windows|demo|bench|fuzz>

  plugins   build every plugin crate into a component under target/plugins/,
            signed with the development key target/signing/dev.key
  test      build the plugins, then run the whole test suite
  lint      cargo fmt --check, clippy -D warnings
  windows   build medic.exe for Windows (x86_64-pc-windows-gnu), run it
            and the backends' Windows unit tests under Wine
  demo      build, then show the agent repairing every fault of a lab
  bench     run every benchmark (or those named), write BENCHMARKS.md
  fuzz [--time SECS] [--asan] [TARGET...] [-- LIBFUZZER ARGS]
            run each fuzz target (policy, units, event_journal, journal_entry, log_line,
            component) for SECS seconds [default: 60], installing
            cargo-fuzz if missing; its build and corpora go to target/fuzz";

fn main() {
    if let Err(e) = run() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    match args.first().map(String::as_str) {
        Some("plugins") => plugins::build_all(&root).map(|_| ()),
        Some("test") => test(&root, &args[1..]),
        Some("lint") => lint(&root),
        Some("windows") => windows(&root),
        Some("demo") => demo::run(&root),
        Some("bench") => bench::run(&root, &args[1..]),
        Some("fuzz") => fuzz::run(&root, &args[1..]),
        Some("-h" | "--help" | "help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown command `{other}`\n\n{USAGE}"),
    }
}

/// The workspace root: the parent of this crate's folder.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// Run a command in `dir`, failing with its command line if it fails.
pub fn run_command(command: &mut Command) -> Result<()> {
    let line = format!("{command:?}");
    let status = command
        .status()
        .with_context(|| format!("cannot start {line}"))?;
    if !status.success() {
        bail!("{line} failed with {status}");
    }
    Ok(())
}

pub fn cargo(root: &Path) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root);
    command
}

/// What the Linux system tests need from the machine: a systemd to boot in
/// namespaces, its journal, `unshare` and `nsenter`, nss_wrapper for
/// principals only the name service knows, and `getfacl` to check access
/// lists from outside.
#[cfg(target_os = "linux")]
const LINUX_TEST_PACKAGES: &[&str] = &["systemd", "util-linux", "libnss-wrapper", "acl"];

fn test(root: &Path, extra: &[String]) -> Result<()> {
    #[cfg(target_os = "linux")]
    {
        let missing: Vec<&str> = LINUX_TEST_PACKAGES
            .iter()
            .copied()
            .filter(|package| !toolchain::package_installed(package))
            .collect();
        if !missing.is_empty() {
            toolchain::ensure_packages(&missing, "the Linux system tests")?;
        }
    }
    plugins::build_all(root)?;
    println!("xtask: running the test suite");
    let mut command = cargo(root);
    command
        .args(["test", "--workspace", "--lib", "--bins", "--tests"])
        .args(extra);
    // In CI the tests against a real systemd must run, not skip.
    if std::env::var_os("CI").is_some() {
        command.env("MEDIC_REQUIRE_SYSTEMD", "1");
    }
    run_command(&mut command)?;
    // Benchmarks are measurements, not tests: built here so they cannot
    // rot, run by `cargo xtask bench`.
    run_command(cargo(root).args(["test", "--workspace", "--benches", "--no-run"]))?;
    run_command(cargo(root).args(["test", "--doc", "-p", "medic", "-p", "medic-sdk"]))
}

fn lint(root: &Path) -> Result<()> {
    println!("xtask: cargo fmt --check");
    run_command(cargo(root).args(["fmt", "--all", "--check"]))?;
    println!("xtask: cargo clippy -D warnings");
    run_command(cargo(root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    Ok(())
}

/// Build `medic.exe` for Windows on this machine and run it under Wine.
fn windows(root: &Path) -> Result<()> {
    println!(
        "xtask: building medic.exe for {}",
        toolchain::WINDOWS_TARGET
    );
    let exe = toolchain::build_windows(root)?;
    let size = std::fs::metadata(&exe)?.len();
    println!(
        "xtask: built {} ({:.1} MiB)",
        exe.strip_prefix(root).unwrap_or(&exe).display(),
        size as f64 / (1024.0 * 1024.0)
    );
    plugins::build_all(root)?;
    wine::check(root, &exe)
}
