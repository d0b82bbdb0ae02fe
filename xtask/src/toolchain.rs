//! Choosing how to compile for targets the rustup toolchain lacks.
//!
//! Where rustup has the `wasm32-unknown-unknown` target installed, plugins
//! build the ordinary way. Otherwise Debian's `rustc-web` compiler (with its
//! library sources, `rust-web-src`) builds the standard library itself with
//! `-Zbuild-std`, linking with the rustup toolchain's `rust-lld`.

use crate::run_command;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_LIBRARY: &str = "/usr/lib/rustlib/src/rust/library/std/Cargo.toml";

/// How to compile for a target without a prebuilt standard library.
#[derive(Debug, Clone)]
pub enum Toolchain {
    /// rustup's compiler with its installed target.
    Rustup,
    /// Debian's compiler building `std` from source.
    BuildStd { lld: PathBuf },
}

impl Toolchain {
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Rustup => "the rustup wasm32-unknown-unknown target",
            Self::BuildStd { .. } => {
                "Debian's rustc-web with -Zbuild-std (no rustup wasm32-unknown-unknown target installed)"
            }
        }
    }

    /// Set up `command` (a `cargo build`/`check`) for this toolchain.
    pub fn configure(&self, command: &mut Command, linker_env: Option<&str>) {
        if let Self::BuildStd { lld } = self {
            command
                .env("RUSTC", DEBIAN_RUSTC)
                .env("RUSTC_BOOTSTRAP", "1")
                .arg("-Zbuild-std=std,panic_abort");
            if let Some(var) = linker_env {
                command.env(var, lld);
            }
        }
    }
}

fn rustup_has_target(target: &str) -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim() == target)
        })
        .unwrap_or(false)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Whether Debian's package `name` is installed.
pub fn package_installed(name: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Status}", name])
        .output()
        .is_ok_and(|out| out.stdout == b"installed")
}

/// Install Debian packages when running as root; otherwise say what to run.
pub fn ensure_packages(packages: &[&str], why: &str) -> Result<()> {
    if !is_root() {
        bail!(
            "{why} needs the Debian packages {}: run `sudo apt-get install -y {}`",
            packages.join(", "),
            packages.join(" ")
        );
    }
    println!("xtask: installing {} ({why})", packages.join(" "));
    run_command(Command::new("apt-get").args(["update", "-qq"]))?;
    run_command(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// The rustup toolchain's `rust-lld`.
fn rustup_lld() -> Result<PathBuf> {
    let out = Command::new("rustc")
        .env_remove("RUSTC")
        .args(["--print", "sysroot"])
        .output()
        .context("cannot run rustc")?;
    let sysroot = String::from_utf8(out.stdout).context("sysroot is not UTF-8")?;
    let lld = Path::new(sysroot.trim()).join("lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld");
    if !lld.exists() {
        bail!(
            "{} does not exist; the rustup toolchain has no rust-lld",
            lld.display()
        );
    }
    Ok(lld)
}

/// Pick (and if needed install) the toolchain for `target`.
pub fn for_target(target: &str) -> Result<Toolchain> {
    if rustup_has_target(target) {
        return Ok(Toolchain::Rustup);
    }
    if !Path::new(DEBIAN_RUSTC).exists() || !Path::new(DEBIAN_LIBRARY).exists() {
        ensure_packages(
            &["rustc-web", "rust-web-src"],
            &format!("building for {target}"),
        )?;
    }
    Ok(Toolchain::BuildStd { lld: rustup_lld()? })
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
    if let Toolchain::BuildStd { .. } = toolchain {
        // The agent unwinds on panic (a plugin's host call must not take
        // the agent down), so the unwinding runtime is built too.
        command
            .env("RUSTC", DEBIAN_RUSTC)
            .env("RUSTC_BOOTSTRAP", "1")
            .arg("-Zbuild-std=std,panic_abort,panic_unwind");
    }
    println!(
        "xtask: using {}",
        toolchain
            .describe()
            .replace("wasm32-unknown-unknown", WINDOWS_TARGET)
    );
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
