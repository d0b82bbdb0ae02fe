//! Rust plugin projects: `cargo build` for `wasm32-unknown-unknown` with the
//! toolchain this machine has ([`crate::toolchain`]), then the core module
//! wrapped into a component with `wit-component` ([`encode`]). A plugin
//! built with medic-sdk imports no WASI, so no adapter is needed.

use crate::toolchain::{self, Install};
use crate::{BuildError, Project};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The target plugins are compiled for.
pub const TARGET: &str = "wasm32-unknown-unknown";

/// Size-optimized, whole-program, no symbols: small components compile
/// fast in the agent. Set on the plugin build only.
pub const RELEASE_PROFILE: &[(&str, &str)] = &[
    ("CARGO_PROFILE_RELEASE_OPT_LEVEL", "s"),
    ("CARGO_PROFILE_RELEASE_LTO", "true"),
    ("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1"),
    ("CARGO_PROFILE_RELEASE_STRIP", "true"),
];

/// A `cargo build --release --target wasm32-unknown-unknown` set up for
/// `toolchain`, with the plugin profile.
pub fn cargo_build(toolchain: &toolchain::Toolchain) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.args(["build", "--release", "--target", TARGET]);
    for (key, value) in RELEASE_PROFILE {
        command.env(key, value);
    }
    toolchain.configure(
        &mut command,
        "std,panic_abort",
        Some("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER"),
    );
    command
}

/// Wrap a core module into a component.
pub fn encode(module: &Path) -> Result<Vec<u8>, BuildError> {
    let bytes = std::fs::read(module).map_err(BuildError::io(module))?;
    wit_component::ComponentEncoder::default()
        .module(&bytes)
        .and_then(|encoder| encoder.validate(true).encode())
        .map_err(|e| BuildError::Encode {
            module: module.to_path_buf(),
            reason: format!("{e:#}"),
        })
}

/// Write `bytes` to `path` through a temporary file, so a reader (an
/// agent hot-reloading it) never sees half a component.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    let tmp = path.with_extension("wasm.tmp");
    std::fs::write(&tmp, bytes).map_err(BuildError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(BuildError::io(path))
}

/// The target folder cargo uses for the project.
fn target_dir(project: &Project) -> Result<PathBuf, BuildError> {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(&project.dir)
        .output()
        .map_err(|cause| BuildError::Missing {
            program: "cargo".into(),
            cause,
            fix: "install Rust with rustup (https://rustup.rs)".into(),
        })?;
    if !output.status.success() {
        return Err(BuildError::Project(format!(
            "cargo cannot read {}: {}",
            project.dir.join("Cargo.toml").display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| BuildError::Project(format!("cargo metadata: {e}")))?;
    metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| BuildError::Project("cargo metadata names no target directory".into()))
}

/// Build the Rust project into `component`; say how.
pub fn build(project: &Project, component: &Path, install: Install) -> Result<String, BuildError> {
    let toolchain = toolchain::for_target(TARGET, install)?;
    let mut command = cargo_build(&toolchain);
    command.current_dir(&project.dir);
    crate::run(
        &mut command,
        "cargo build",
        "install Rust with rustup (https://rustup.rs)",
    )?;
    let module = target_dir(project)?
        .join(TARGET)
        .join("release")
        .join(format!("{}.wasm", project.name.replace('-', "_")));
    let bytes = encode(&module)?;
    write_atomically(component, &bytes)?;
    Ok(format!("cargo with {}", toolchain.describe(TARGET)))
}
