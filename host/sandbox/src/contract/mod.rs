//! The plugin contract as the host sees it: one module of bindings per
//! supported version of the `medic:plugin` WIT package, the check that tells
//! which version a component was built for before anything is linked, and
//! [`Bindings`], which calls a plugin through its version's module.
//!
//! A new version gets a module of its own beside the others (its WIT frozen
//! in the SDK, one small file per interface converting to [`crate::host`]);
//! components built for older versions keep loading through theirs.

pub mod convert;
mod interfaces;
pub mod scan;
pub mod v0_1_0;
pub mod v0_2_0;
pub mod v0_3_0;
pub mod v0_4_0;

use crate::event::{EventRecord, OutcomeRecord};
use crate::host::RunState;
use crate::info::PluginInfo;
use wasmtime::Store;
use wasmtime::component::{Component, Linker};

/// The WIT package every plugin imports from and exports to.
pub const PACKAGE: &str = "medic:plugin";

/// Contract versions this agent can run, newest first.
pub const SUPPORTED_VERSIONS: &[&str] = &[
    v0_4_0::VERSION,
    v0_3_0::VERSION,
    v0_2_0::VERSION,
    v0_1_0::VERSION,
];

/// The `medic:wsus` versions this agent links, each with the `medic:plugin`
/// version it is built on, newest first.
pub const WSUS_VERSIONS: &[(&str, &str)] = &[
    (v0_4_0::WSUS_VERSION, v0_4_0::VERSION),
    (v0_3_0::WSUS_VERSION, v0_3_0::VERSION),
    (v0_2_0::WSUS_VERSION, v0_2_0::VERSION),
];

/// [`WSUS_VERSIONS`] as an operator reads it: `0.3.0 (with medic:plugin
/// 0.4.0), ...`.
pub fn wsus_versions_text() -> String {
    WSUS_VERSIONS
        .iter()
        .map(|(wsus, core)| format!("{wsus} (with {PACKAGE} {core})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Link every supported version's interfaces, and the locked-down WASI
/// that components from other languages import, into `linker`.
pub fn add_to_linker(linker: &mut Linker<RunState>) -> wasmtime::Result<()> {
    v0_1_0::add_to_linker(linker)?;
    v0_2_0::add_to_linker(linker)?;
    v0_3_0::add_to_linker(linker)?;
    v0_4_0::add_to_linker(linker)?;
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    crate::host::deadline::shadow_clock(linker)?;
    Ok(())
}

/// A component linked against the bindings of the version it was built
/// for, ready to instantiate.
#[derive(Clone)]
pub enum Bindings {
    V0_1_0(v0_1_0::Pre),
    V0_2_0(v0_2_0::Pre),
    V0_3_0(v0_3_0::Pre),
    V0_4_0(v0_4_0::Pre),
}

impl Bindings {
    /// Link `component`, built for `version` (one of
    /// [`SUPPORTED_VERSIONS`], as [`contract_use`] found).
    pub fn new(
        version: &str,
        linker: &Linker<RunState>,
        component: &Component,
    ) -> wasmtime::Result<Self> {
        match version {
            v0_1_0::VERSION => v0_1_0::Pre::new(linker, component).map(Self::V0_1_0),
            v0_2_0::VERSION => v0_2_0::Pre::new(linker, component).map(Self::V0_2_0),
            v0_3_0::VERSION => v0_3_0::Pre::new(linker, component).map(Self::V0_3_0),
            v0_4_0::VERSION => v0_4_0::Pre::new(linker, component).map(Self::V0_4_0),
            other => Err(wasmtime::format_err!(
                "contract version {other} has no bindings"
            )),
        }
    }

    /// Instantiate and call `describe()`.
    pub fn describe(&self, store: &mut Store<RunState>) -> wasmtime::Result<PluginInfo> {
        match self {
            Self::V0_1_0(pre) => pre.describe(store),
            Self::V0_2_0(pre) => pre.describe(store),
            Self::V0_3_0(pre) => pre.describe(store),
            Self::V0_4_0(pre) => pre.describe(store),
        }
    }

    /// Instantiate and call `handle(event)`.
    pub fn handle(
        &self,
        store: &mut Store<RunState>,
        event: &EventRecord,
    ) -> Result<Result<OutcomeRecord, String>, CallError> {
        match self {
            Self::V0_1_0(pre) => pre.handle(store, event),
            Self::V0_2_0(pre) => pre.handle(store, event),
            Self::V0_3_0(pre) => pre.handle(store, event),
            Self::V0_4_0(pre) => pre.handle(store, event),
        }
    }
}

/// Why a call into a plugin did not return.
#[derive(Debug)]
pub enum CallError {
    /// No instance could be made (e.g. the instance pool is full).
    Instantiate(wasmtime::Error),
    /// The call trapped: a panic, a limit, a host error.
    Trap(wasmtime::Error),
}

/// What a component's imports and exports say about the contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractUse {
    /// The `medic:plugin` version the component was built for.
    pub version: String,
    /// Every import name, e.g. `medic:plugin/fs@0.1.0`.
    pub imports: Vec<String>,
    /// Every export name, e.g. `medic:plugin/plugin@0.1.0`.
    pub exports: Vec<String>,
}

/// Why a component cannot be run as a medic plugin.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContractError {
    #[error(
        "it does not export `{PACKAGE}/plugin`: it is not a medic plugin (exports: {exports}); build it with medic-sdk and `register_plugin!`"
    )]
    NotAPlugin { exports: String },
    #[error(
        "it was built for contract {PACKAGE}@{found}, which this agent does not support (supported: {supported}); rebuild it against a medic-sdk for one of those, or upgrade the agent"
    )]
    UnsupportedVersion { found: String, supported: String },
    #[error(
        "it mixes contract versions ({versions}); rebuild it against a single medic-sdk version"
    )]
    MixedVersions { versions: String },
    #[error(
        "it imports what this agent does not provide: {}; a plugin may import only medic:plugin (versions {}), medic:wsus {} and WASI 0.2 ({})",
        unprovided_list(imports),
        SUPPORTED_VERSIONS.join(", "),
        wsus_versions_text(),
        "wasi:cli, clocks, filesystem, io, random and sockets, all locked down"
    )]
    Unprovided { imports: Vec<scan::Unprovided> },
}

/// `` `name` (advice); ... `` for a message.
fn unprovided_list(imports: &[scan::Unprovided]) -> String {
    imports
        .iter()
        .map(|u| format!("`{}` ({})", u.name, u.advice))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Read the contract version from a component's import and export names
/// (see [`scan::names`]), and check that this agent provides every import.
pub fn contract_use(names: scan::Names) -> Result<ContractUse, ContractError> {
    let scan::Names {
        imports,
        exports: export_names,
    } = names;
    let plugin_export = export_names
        .iter()
        .find(|name| name.starts_with(&format!("{PACKAGE}/plugin")))
        .ok_or_else(|| ContractError::NotAPlugin {
            exports: if export_names.is_empty() {
                "none".into()
            } else {
                export_names.join(", ")
            },
        })?;
    let version = version_of(plugin_export).unwrap_or_default().to_string();
    let mut versions: Vec<&str> = imports
        .iter()
        .chain(&export_names)
        .filter(|name| name.starts_with(PACKAGE))
        .filter_map(|name| version_of(name))
        .collect();
    versions.sort_unstable();
    versions.dedup();
    if versions.len() > 1 {
        return Err(ContractError::MixedVersions {
            versions: versions.join(", "),
        });
    }
    if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
        return Err(ContractError::UnsupportedVersion {
            found: if version.is_empty() {
                "(unversioned)".into()
            } else {
                version
            },
            supported: SUPPORTED_VERSIONS.join(", "),
        });
    }
    let unprovided = scan::unprovided(&imports);
    if !unprovided.is_empty() {
        return Err(ContractError::Unprovided {
            imports: unprovided,
        });
    }
    Ok(ContractUse {
        version,
        imports,
        exports: export_names,
    })
}

/// `medic:plugin/fs@0.1.0` -> `0.1.0`.
fn version_of(name: &str) -> Option<&str> {
    name.rsplit_once('@').map(|(_, version)| version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_read_from_interface_names() {
        assert_eq!(version_of("medic:plugin/fs@0.1.0"), Some("0.1.0"));
        assert_eq!(version_of("medic:plugin/fs"), None);
    }
}
