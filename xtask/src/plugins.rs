//! Building the repository's plugin crates into components, the way
//! `medic build` builds a plugin author's ([`medic_build::rust`]), all in
//! one cargo run: compile each crate to a core wasm module for
//! `wasm32-unknown-unknown`, wrap the module into a component, and sign it
//! with the development key ([`crate::sign`]). Output:
//! `target/plugins/<crate name>.wasm` and `<crate name>.wasm.minisig`.

use crate::run_command;
use crate::toolchain;
use anyhow::{Context, Result, bail};
use medic_build::rust::TARGET;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Folders whose subfolders are plugin crates.
const PLUGIN_DIRS: &[&str] = &["plugins", "examples/plugins", "tests/fixtures/plugins"];

/// A plugin crate, by package name.
#[derive(Debug, Clone)]
pub struct PluginCrate {
    pub name: String,
}

/// The `name` of a crate's `[package]`.
fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package
            && let Some(value) = line.strip_prefix("name")
            && let Some(value) = value.trim().strip_prefix('=')
        {
            return Some(value.trim().trim_matches('"').to_string());
        }
    }
    None
}

/// Every plugin crate in the workspace, sorted by name.
pub fn discover(root: &Path) -> Result<Vec<PluginCrate>> {
    let mut crates = Vec::new();
    for dir in PLUGIN_DIRS {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries {
            let dir = entry?.path();
            let manifest = dir.join("Cargo.toml");
            if !manifest.exists() {
                continue;
            }
            let text = std::fs::read_to_string(&manifest)?;
            let name = package_name(&text)
                .with_context(|| format!("{} has no [package] name", manifest.display()))?;
            crates.push(PluginCrate { name });
        }
    }
    crates.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(crates)
}

/// Build every plugin; return the component paths.
pub fn build_all(root: &Path) -> Result<Vec<PathBuf>> {
    let crates = discover(root)?;
    if crates.is_empty() {
        bail!("no plugin crates found under {}", PLUGIN_DIRS.join(", "));
    }
    let toolchain = toolchain::for_target(TARGET)?;
    println!(
        "xtask: building {} plugins with {}",
        crates.len(),
        toolchain.describe(TARGET)
    );
    let started = Instant::now();
    let target_dir = root.join("target/wasm");
    let mut command = medic_build::rust::cargo_build(&toolchain);
    command
        .current_dir(root)
        .arg("--target-dir")
        .arg(&target_dir);
    for plugin in &crates {
        command.args(["-p", &plugin.name]);
    }
    run_command(&mut command)?;

    let out_dir = root.join("target/plugins");
    std::fs::create_dir_all(&out_dir)?;
    let mut built = Vec::new();
    for plugin in &crates {
        let module = target_dir
            .join(TARGET)
            .join("release")
            .join(format!("{}.wasm", plugin.name.replace('-', "_")));
        let component = out_dir.join(format!("{}.wasm", plugin.name));
        if is_newer(&component, &module)? {
            built.push(component);
            continue;
        }
        let encoded = medic_build::rust::encode(&module)?;
        medic_build::rust::write_atomically(&component, &encoded)?;
        println!(
            "xtask:   {} ({} KiB)",
            component.display(),
            encoded.len() / 1024
        );
        built.push(component);
    }
    println!(
        "xtask: {} components in {} ({:.1} s)",
        built.len(),
        out_dir.display(),
        started.elapsed().as_secs_f64()
    );
    crate::sign::sign_components(root, &built)?;
    Ok(built)
}

/// Whether `output` exists and is at least as new as `input`.
fn is_newer(output: &Path, input: &Path) -> Result<bool> {
    let Ok(out_meta) = std::fs::metadata(output) else {
        return Ok(false);
    };
    let in_meta = std::fs::metadata(input)
        .with_context(|| format!("the build did not produce {}", input.display()))?;
    Ok(out_meta.modified()? >= in_meta.modified()?)
}

#[cfg(test)]
mod tests {
    use super::package_name;

    #[test]
    fn reads_the_package_name_only() {
        let manifest = "[package]\nname = \"share-guard\"\n\n[dependencies]\nname = \"x\"\n";
        assert_eq!(package_name(manifest).as_deref(), Some("share-guard"));
        assert_eq!(package_name("[dependencies]\nname = \"x\"\n"), None);
    }
}
