//! The plugin contract as the host sees it: host bindings for each supported
//! version of the `medic:plugin` WIT package, and the check that tells which
//! version a component was built for before anything is linked.
//!
//! One bindgen module per contract version: when `0.2.0` ships, it gets a
//! module of its own beside `v0_1_0`, and components built for `0.1.0` keep
//! loading through theirs.

use wasmtime::Engine;
use wasmtime::component::Component;

/// Bindings for `medic:plugin@0.1.0`, generated from `sdk/wit`.
pub mod v0_1_0 {
    wasmtime::component::bindgen!({
        world: "remediation",
        path: "../sdk/wit",
        imports: { default: trappable },
    });
}

pub use v0_1_0::medic::plugin::types::{
    Action, Capability, Error as PluginError, ErrorKind, Event, EventKind, Outcome, PluginInfo,
    Status, SystemEventMatch, TriggerHint,
};

/// The WIT package every plugin imports from and exports to.
pub const PACKAGE: &str = "medic:plugin";

/// Contract versions this agent can run, newest first.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.1.0"];

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
}

/// Read the contract version from a component's import and export names.
pub fn contract_use(engine: &Engine, component: &Component) -> Result<ContractUse, ContractError> {
    let ty = component.component_type();
    let imports: Vec<String> = ty
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let export_names: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
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

impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(capability_name(*self))
    }
}

/// The policy's name for a capability (`fs-read`, `services-control`, ...).
pub fn capability_name(capability: Capability) -> &'static str {
    match capability {
        Capability::FsRead => "fs-read",
        Capability::FsWrite => "fs-write",
        Capability::ServicesRead => "services-read",
        Capability::ServicesControl => "services-control",
        Capability::WsusRead => "wsus-read",
        Capability::WsusUpdates => "wsus-updates",
        Capability::WsusApprovals => "wsus-approvals",
        Capability::WsusConfigure => "wsus-configure",
        Capability::WsusSync => "wsus-sync",
    }
}

/// Every capability, in contract order.
pub const ALL_CAPABILITIES: [Capability; 9] = [
    Capability::FsRead,
    Capability::FsWrite,
    Capability::ServicesRead,
    Capability::ServicesControl,
    Capability::WsusRead,
    Capability::WsusUpdates,
    Capability::WsusApprovals,
    Capability::WsusConfigure,
    Capability::WsusSync,
];

/// Parse a capability from its policy name.
pub fn parse_capability(name: &str) -> Option<Capability> {
    ALL_CAPABILITIES
        .into_iter()
        .find(|c| capability_name(*c) == name)
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Healthy => "healthy",
            Status::Remediated => "remediated",
            Status::Failed => "failed",
            Status::NeedsApproval => "needs-approval",
        })
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(event_kind_name(*self))
    }
}

/// The name of an event kind as written in events and policy.
pub fn event_kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::FileChanged => "file-changed",
        EventKind::LogLine => "log-line",
        EventKind::SystemEvent => "system-event",
        EventKind::Schedule => "schedule",
        EventKind::Startup => "startup",
        EventKind::Manual => "manual",
    }
}

/// Parse an event kind from its name.
pub fn parse_event_kind(name: &str) -> Option<EventKind> {
    [
        EventKind::FileChanged,
        EventKind::LogLine,
        EventKind::SystemEvent,
        EventKind::Schedule,
        EventKind::Startup,
        EventKind::Manual,
    ]
    .into_iter()
    .find(|k| event_kind_name(*k) == name)
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorKind::Denied => "denied",
            ErrorKind::NotFound => "not-found",
            ErrorKind::InvalidArgument => "invalid-argument",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Failed => "failed",
        })
    }
}

impl PluginError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names_round_trip() {
        for capability in ALL_CAPABILITIES {
            assert_eq!(
                parse_capability(capability_name(capability)),
                Some(capability)
            );
        }
        assert_eq!(parse_capability("fs-delete"), None);
    }

    #[test]
    fn version_is_read_from_interface_names() {
        assert_eq!(version_of("medic:plugin/fs@0.1.0"), Some("0.1.0"));
        assert_eq!(version_of("medic:plugin/fs"), None);
    }
}
