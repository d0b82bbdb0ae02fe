//! What a component imports and exports, read from its bytes before it is
//! compiled, and whether this agent provides every import. A component
//! that cannot be linked is refused in milliseconds, with the import named
//! and the build flag or world that avoids it, instead of after a compile
//! that takes seconds for a Python or JavaScript plugin (whose result would
//! then be cached for nothing).

use super::{SUPPORTED_VERSIONS, WSUS_VERSIONS};
use wasmparser::{Encoding, Parser, Payload};

/// The names a component's outermost level imports and exports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

/// Why a component's names could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("it is a core WebAssembly module, not a component")]
    CoreModule,
    #[error("{0}")]
    Malformed(String),
}

/// Read the imports and exports of the component in `bytes`, without
/// validating or compiling it.
pub fn names(bytes: &[u8]) -> Result<Names, ScanError> {
    let mut names = Names::default();
    // Nested modules and components have imports of their own; only the
    // outermost level's are the component's.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| ScanError::Malformed(e.to_string()))? {
            Payload::Version { encoding, .. } if depth == 0 && encoding == Encoding::Module => {
                return Err(ScanError::CoreModule);
            }
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(section) if depth == 0 => {
                for import in section {
                    let import = import.map_err(|e| ScanError::Malformed(e.to_string()))?;
                    names.imports.push(import.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(section) if depth == 0 => {
                for export in section {
                    let export = export.map_err(|e| ScanError::Malformed(e.to_string()))?;
                    names.exports.push(export.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(names)
}

/// The WASI 0.2 packages this agent links (locked down).
const WASI_PACKAGES: &[&str] = &["cli", "clocks", "filesystem", "io", "random", "sockets"];

/// An import this agent does not provide, and how to build without it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unprovided {
    pub name: String,
    pub advice: String,
}

/// The imports in `imports` that no agent of this version can link.
pub fn unprovided(imports: &[String]) -> Vec<Unprovided> {
    imports
        .iter()
        .filter_map(|name| {
            advice(name).map(|advice| Unprovided {
                name: name.clone(),
                advice,
            })
        })
        .collect()
}

/// How to avoid importing `name`; `None` when this agent provides it.
fn advice(name: &str) -> Option<String> {
    let (path, version) = name.rsplit_once('@').unwrap_or((name, ""));
    let (package, _interface) = path.split_once('/').unwrap_or((path, ""));
    let world = format!(
        "build against the world `medic:plugin/remediation@{}` (or `medic:wsus/remediation@{}`) and nothing else",
        SUPPORTED_VERSIONS[0], WSUS_VERSIONS[0].0
    );
    match package.split_once(':') {
        Some(("medic", "plugin")) if SUPPORTED_VERSIONS.contains(&version) => None,
        Some(("medic", "wsus")) if WSUS_VERSIONS.iter().any(|(v, _)| *v == version) => None,
        Some(("medic", _)) => Some(format!(
            "not an interface of any contract version this agent runs; {world}"
        )),
        Some(("wasi", "http")) => Some(
            "WASI's HTTP is not linked: plugins reach the system through medic's interfaces only. componentize-js adds it unless told not to: build with `--disable http fetch-event` (`medic build` does)"
                .to_string(),
        ),
        Some(("wasi", wasi)) if WASI_PACKAGES.contains(&wasi) && version.starts_with("0.2.") => {
            None
        }
        Some(("wasi", wasi)) if WASI_PACKAGES.contains(&wasi) => Some(format!(
            "this agent links WASI 0.2 only (wasi:{wasi}@0.2.x); build for WASI 0.2"
        )),
        _ => Some(world),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn the_contract_and_wasi_0_2_are_provided() {
        let imports = list(&[
            "medic:plugin/types@0.4.0",
            "medic:plugin/fs@0.1.0",
            "medic:wsus/wsus@0.3.0",
            "wasi:io/streams@0.2.9",
            "wasi:cli/stdout@0.2.12",
            "wasi:sockets/tcp@0.2.0",
            "wasi:filesystem/preopens@0.2.3",
        ]);
        assert_eq!(unprovided(&imports), []);
    }

    #[test]
    fn what_is_not_provided_is_named_with_how_to_avoid_it() {
        let imports = list(&[
            "wasi:http/types@0.2.10",
            "wasi:cli/stdout@0.3.0",
            "medic:plugin/types@9.9.9",
            "example:thing/api@1.0.0",
            "unversioned",
        ]);
        let found = unprovided(&imports);
        let names: Vec<&str> = found.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, imports);
        assert!(found[0].advice.contains("--disable http fetch-event"));
        assert!(found[1].advice.contains("WASI 0.2 only"));
        assert!(found[2].advice.contains("medic:plugin/remediation@"));
        assert!(found[3].advice.contains("nothing else"));
    }

    #[test]
    fn garbage_and_core_modules_are_told_apart() {
        assert!(matches!(
            names(b"\0asm not really"),
            Err(ScanError::Malformed(_))
        ));
        assert!(matches!(names(b""), Ok(_) | Err(_)));
        let core = b"\0asm\x01\0\0\0";
        assert_eq!(names(core), Err(ScanError::CoreModule));
    }
}
