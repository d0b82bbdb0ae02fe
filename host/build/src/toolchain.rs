//! Choosing how to compile Rust for `wasm32-unknown-unknown` (and other
//! targets the rustup toolchain may lack).
//!
//! Where rustup has the target, plugins build the ordinary way; where it
//! has not, `rustup target add` is tried first. Where that cannot reach its
//! server, Debian's `rustc-web` compiler (with its library sources,
//! `rust-web-src`) builds the standard library itself with `-Zbuild-std`,
//! linking with the rustup toolchain's `rust-lld`; as root those packages
//! are installed when missing, otherwise the command that installs them is
//! named.

use std::path::{Path, PathBuf};
use std::process::Command;

const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_LIBRARY: &str = "/usr/lib/rustlib/src/rust/library/std/Cargo.toml";

/// Why no toolchain could be set up.
#[derive(Debug, thiserror::Error)]
pub enum ToolchainError {
    #[error(
        "the Rust target {target} is not installed and cannot be: run `rustup target add {target}`{debian}"
    )]
    NoTarget { target: String, debian: String },
    #[error("{why} needs the Debian packages {}: run `sudo apt-get install -y {}`", packages.join(", "), packages.join(" "))]
    NeedsPackages { why: String, packages: Vec<String> },
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("{} does not exist; the rustup toolchain has no rust-lld", .0.display())]
    NoLld(PathBuf),
}

/// Whether a missing piece may be installed (as root, with apt-get).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// Install what is missing: rustup's target, and Debian packages when
    /// running as root.
    Missing,
    /// Only name what is missing.
    Never,
}

/// How to compile for a target without a prebuilt standard library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Toolchain {
    /// rustup's compiler with its installed target.
    Rustup,
    /// Debian's compiler building `std` from source.
    BuildStd { lld: PathBuf },
}

impl Toolchain {
    /// For messages: which way it builds, and why.
    pub fn describe(&self, target: &str) -> String {
        match self {
            Self::Rustup => format!("the rustup {target} target"),
            Self::BuildStd { .. } => {
                format!("Debian's rustc-web with -Zbuild-std (no rustup {target} target installed)")
            }
        }
    }

    /// Set up `command` (a `cargo build`, `check` or `test`) for this
    /// toolchain; `std_crates` is the `-Zbuild-std` list (e.g.
    /// `std,panic_abort`); `linker_env` the variable naming the linker.
    pub fn configure(&self, command: &mut Command, std_crates: &str, linker_env: Option<&str>) {
        if let Self::BuildStd { lld } = self {
            command
                .env("RUSTC", DEBIAN_RUSTC)
                .env("RUSTC_BOOTSTRAP", "1")
                .arg(format!("-Zbuild-std={std_crates}"));
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

/// Ask rustup for the target; whether it is installed now.
fn rustup_add_target(target: &str) -> bool {
    Command::new("rustup")
        .args(["target", "add", target])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
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

/// Install Debian packages when running as root and `install` allows;
/// otherwise an error naming the command to run.
pub fn ensure_packages(
    packages: &[&str],
    why: &str,
    install: Install,
) -> Result<(), ToolchainError> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|package| !package_installed(package))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if install == Install::Never || !is_root() {
        return Err(ToolchainError::NeedsPackages {
            why: why.to_string(),
            packages: missing.iter().map(|p| p.to_string()).collect(),
        });
    }
    eprintln!("installing {} ({why})", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn run(command: &mut Command) -> Result<(), ToolchainError> {
    let line = format!("{command:?}");
    match command.status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(ToolchainError::Command {
            command: line,
            detail: status.to_string(),
        }),
        Err(e) => Err(ToolchainError::Command {
            command: line,
            detail: e.to_string(),
        }),
    }
}

/// The rustup toolchain's `rust-lld`.
fn rustup_lld() -> Result<PathBuf, ToolchainError> {
    let out = Command::new("rustc")
        .env_remove("RUSTC")
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| ToolchainError::Command {
            command: "rustc --print sysroot".into(),
            detail: e.to_string(),
        })?;
    let sysroot = String::from_utf8_lossy(&out.stdout);
    let lld = Path::new(sysroot.trim()).join("lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld");
    if !lld.exists() {
        return Err(ToolchainError::NoLld(lld));
    }
    Ok(lld)
}

/// Pick (and, where allowed, install) the toolchain for `target`.
pub fn for_target(target: &str, install: Install) -> Result<Toolchain, ToolchainError> {
    if rustup_has_target(target) || (install == Install::Missing && rustup_add_target(target)) {
        return Ok(Toolchain::Rustup);
    }
    if !Path::new(DEBIAN_RUSTC).exists() || !Path::new(DEBIAN_LIBRARY).exists() {
        ensure_packages(
            &["rustc-web", "rust-web-src"],
            &format!("building for {target} without rustup's {target} target"),
            install,
        )
        .map_err(|e| match e {
            ToolchainError::NeedsPackages { .. } => ToolchainError::NoTarget {
                target: target.to_string(),
                debian: " (or, on Debian without rustup's servers, `sudo apt-get install -y rustc-web rust-web-src`)".into(),
            },
            other => other,
        })?;
    }
    Ok(Toolchain::BuildStd { lld: rustup_lld()? })
}
