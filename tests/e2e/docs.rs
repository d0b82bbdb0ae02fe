//! `docs/plugins.md`, the plugin author's guide, cannot rot: every `sh`
//! block in it runs, in order, in one shell in a fresh folder, with the
//! built `medic` first on the `PATH`; and its contract reference is the one
//! generated here from the SDK's WIT (`MEDIC_BLESS=1` rewrites it).

use crate::support::workspace;
use std::fmt::Write as _;
use std::path::Path;

const GUIDE: &str = "docs/plugins.md";
const BEGIN: &str = "<!-- contract reference: generated from sdk/wit by tests/e2e/docs.rs (MEDIC_BLESS=1 rewrites it) -->";
const END: &str = "<!-- end of the contract reference -->";

/// The WIT files of the current contract, in the order the reference
/// lists their interfaces.
const WIT: &[&str] = &[
    "sdk/wit/medic-plugin/0.4.0/world.wit",
    "sdk/wit/medic-plugin/0.4.0/log.wit",
    "sdk/wit/medic-plugin/0.4.0/config.wit",
    "sdk/wit/medic-plugin/0.4.0/state.wit",
    "sdk/wit/medic-plugin/0.4.0/fs.wit",
    "sdk/wit/medic-plugin/0.4.0/services.wit",
    "sdk/wit/medic-wsus/0.3.0/wsus.wit",
];

/// One function of an interface, with its doc comment.
struct Function {
    signature: String,
    doc: String,
}

/// The interfaces of a WIT file: name, doc comment and functions. A
/// plain reading of the WIT this project writes (one function a line).
fn interfaces(text: &str) -> Vec<(String, String, Vec<Function>)> {
    let package = text
        .lines()
        .find_map(|l| l.strip_prefix("package "))
        .map(|p| p.trim_end_matches(';').to_string())
        .unwrap_or_default();
    let (name, version) = package.split_once('@').unwrap_or((&package, ""));
    let mut found = Vec::new();
    let mut doc = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(comment) = line.strip_prefix("///") {
            if !doc.is_empty() {
                doc.push(' ');
            }
            doc.push_str(comment.trim());
            continue;
        }
        if let Some(interface) = line.strip_prefix("interface ") {
            let interface = interface.trim_end_matches(['{', ' ']);
            found.push((
                format!("{name}/{interface}@{version}"),
                std::mem::take(&mut doc),
                Vec::new(),
            ));
        } else if line.contains(": func(") {
            let (function, rest) = line.split_once(": func").unwrap();
            let signature = format!("{function}{}", rest.trim_end_matches(';'));
            if let Some((_, _, functions)) = found.last_mut() {
                functions.push(Function {
                    signature,
                    doc: std::mem::take(&mut doc),
                });
            }
        } else {
            doc.clear();
        }
    }
    found
}

/// The reference as the guide carries it.
fn contract_reference() -> String {
    let mut out = String::new();
    for file in WIT {
        let text = std::fs::read_to_string(workspace().join(file)).unwrap();
        for (interface, doc, functions) in interfaces(&text) {
            let _ = writeln!(out, "#### `{interface}`\n");
            if !doc.is_empty() {
                let _ = writeln!(out, "{doc}\n");
            }
            let _ = writeln!(out, "| function | what it does |\n| --- | --- |");
            for function in functions {
                let _ = writeln!(
                    out,
                    "| `{}` | {} |",
                    function.signature.replace('|', "\\|"),
                    function.doc.replace('|', "\\|")
                );
            }
            out.push('\n');
        }
    }
    out
}

#[test]
fn the_guides_contract_reference_is_generated_from_the_wit() {
    let path = workspace().join(GUIDE);
    let guide = std::fs::read_to_string(&path).unwrap();
    let (before, rest) = guide
        .split_once(BEGIN)
        .expect("the guide has the reference's start marker");
    let (current, after) = rest
        .split_once(END)
        .expect("the guide has the reference's end marker");
    let generated = format!("\n\n{}", contract_reference());
    if current != generated {
        if std::env::var_os("MEDIC_BLESS").is_some() {
            std::fs::write(&path, format!("{before}{BEGIN}{generated}{END}{after}")).unwrap();
        } else {
            panic!(
                "{GUIDE}'s contract reference is not the WIT's: run the test with MEDIC_BLESS=1 to rewrite it"
            );
        }
    }
    // Every function of the contract is in it.
    let functions: usize = WIT
        .iter()
        .map(|f| std::fs::read_to_string(workspace().join(f)).unwrap())
        .map(|text| text.matches(": func(").count())
        .sum();
    assert_eq!(generated.matches("\n| `").count(), functions);
}

/// The guide's `sh` blocks, in order.
fn shell_blocks(guide: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in guide.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), line) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn every_command_of_the_guide_runs() {
    let guide = std::fs::read_to_string(workspace().join(GUIDE)).unwrap();
    let blocks = shell_blocks(&guide);
    assert!(
        blocks.len() >= 5,
        "the guide has {} sh blocks",
        blocks.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let medic = Path::new(env!("CARGO_BIN_EXE_medic"));
    let path = format!(
        "{}:{}",
        medic.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = format!("set -euo pipefail\n{}", blocks.join("\n"));
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("PATH", path)
        .env("MEDIC_SDK", workspace().join("sdk"))
        .env("XDG_STATE_HOME", dir.path().join("state"))
        .env("MEDIC_CACHE_DIR", workspace().join("target/test-cache"))
        .env(
            "CARGO_TARGET_DIR",
            workspace().join("target/plugin-projects"),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the guide's commands failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
