//! Toolchains for targets the rustup toolchain may lack: the choice is
//! medic-build's ([`medic_build::toolchain`], the one `medic build` makes
//! for plugin authors); this module adds the Windows build of medic.

use crate::run_command;
use anyhow::{Context, Result, bail};
use medic_build::toolchain::{Install, Toolchain};
use std::path::{Path, PathBuf};
use std::process::Command;

pub use medic_build::toolchain::package_installed;

/// Install Debian packages when running as root; otherwise say what to run.
pub fn ensure_packages(packages: &[&str], why: &str) -> Result<()> {
    Ok(medic_build::toolchain::ensure_packages(
        packages,
        why,
        Install::Missing,
    )?)
}

/// Pick (and if needed install) the toolchain for `target`.
pub fn for_target(target: &str) -> Result<Toolchain> {
    Ok(medic_build::toolchain::for_target(
        target,
        Install::Missing,
    )?)
}

/// The Windows target medic is built for on Linux.
pub const WINDOWS_TARGET: &str = "x86_64-pc-windows-gnu";

/// The MinGW tools a Windows build needs: `dlltool` for the standard
/// library's import libraries, `gcc` for the C that wasmtime's build
/// scripts compile for the target and as the linker.
fn ensure_mingw() -> Result<()> {
    let missing = ["x86_64-w64-mingw32-dlltool", "x86_64-w64-mingw32-gcc"]
        .into_iter()
        .any(|tool| Command::new(tool).arg("--version").output().is_err());
    if missing {
        ensure_packages(
            &["binutils-mingw-w64-x86-64", "gcc-mingw-w64-x86-64"],
            "building for Windows",
        )?;
    }
    Ok(())
}

/// A `cargo build`/`test` for Windows, set up for the
/// toolchain this machine has, its output under `target/windows`.
fn windows_cargo(root: &Path, verb: &str) -> Result<Command> {
    let toolchain = for_target(WINDOWS_TARGET)?;
    ensure_mingw()?;
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .current_dir(root)
        .args([verb, "--target", WINDOWS_TARGET, "--target-dir"])
        .arg(root.join("target/windows"))
        .env(
            "CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER",
            "x86_64-w64-mingw32-gcc",
        );
    // The agent unwinds on panic (a plugin's host call must not take the
    // agent down), so the unwinding runtime is built too.
    toolchain.configure(&mut command, "std,panic_abort,panic_unwind", None);
    println!("xtask: using {}", toolchain.describe(WINDOWS_TARGET));
    Ok(command)
}

/// Build `medic.exe` (x86_64-pc-windows-gnu) and return its path.
pub fn build_windows(root: &Path) -> Result<PathBuf> {
    let mut command = windows_cargo(root, "build")?;
    command.args(["-p", "medic", "--bin", "medic"]);
    run_command(&mut command)?;
    let exe = root
        .join("target/windows")
        .join(WINDOWS_TARGET)
        .join("debug/medic.exe");
    if !exe.is_file() {
        bail!("the build finished but {} does not exist", exe.display());
    }
    Ok(exe)
}

/// Build the Windows unit tests of `packages` without running them, and
/// return the test executables.
pub fn build_windows_tests(root: &Path, packages: &[&str]) -> Result<Vec<PathBuf>> {
    let mut command = windows_cargo(root, "test")?;
    for package in packages {
        command.args(["-p", package]);
    }
    command
        .args([
            "--lib",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .stdout(std::process::Stdio::piped());
    let output = command.output().context("cannot run cargo test --no-run")?;
    if !output.status.success() {
        bail!("building the Windows unit tests failed");
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|message| message.get("executable")?.as_str().map(PathBuf::from))
        .collect())
}
