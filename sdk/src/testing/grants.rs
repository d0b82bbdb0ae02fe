//! What the fake host lets a plugin touch, checked as the agent checks it:
//! once before the run against what `describe()` asks for, and on every
//! call against its capability and its target (a path beneath a granted
//! root, a granted service name). Refusals carry the `denied` error kind
//! and the agent's wording.

use super::fs::FakePath;
use super::{HostFn, error};
use crate::wsus::Operation;
use crate::{Capability, Error, ErrorKind, PluginInfo};
use std::fmt;

/// Every operation of `medic:wsus`.
const OPERATIONS: [Operation; 6] = [
    Operation::Read,
    Operation::Updates,
    Operation::Approvals,
    Operation::Configure,
    Operation::Sync,
    Operation::Probe,
];

/// A capability as the checks know it: the core ones, or an operation of
/// `medic:wsus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    FsRead,
    FsWrite,
    ServicesRead,
    ServicesControl,
    Operation(Operation),
}

impl Need {
    /// The capability a plugin asks for; `None` for an operation no
    /// package has.
    fn of(capability: &Capability) -> Option<Self> {
        Some(match capability {
            Capability::FsRead => Self::FsRead,
            Capability::FsWrite => Self::FsWrite,
            Capability::ServicesRead => Self::ServicesRead,
            Capability::ServicesControl => Self::ServicesControl,
            Capability::Operation(name) => {
                Self::Operation(*OPERATIONS.iter().find(|op| op.name() == name)?)
            }
        })
    }
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::FsRead => "fs-read",
            Self::FsWrite => "fs-write",
            Self::ServicesRead => "services-read",
            Self::ServicesControl => "services-control",
            Self::Operation(op) => op.name(),
        })
    }
}

impl HostFn {
    /// The capability a call needs; none for logging, settings and state.
    fn needs(self) -> Option<Need> {
        use HostFn::*;
        Some(match self {
            FsStat | FsListDir | FsReadAccess | FsReadFile => Need::FsRead,
            FsEnsureAccess => Need::FsWrite,
            ServicesQuery => Need::ServicesRead,
            ServicesStart | ServicesStop | ServicesRestart | ServicesSetStartup => {
                Need::ServicesControl
            }
            ConfigGet | ConfigAll | StateGet | StateSet | StateRemove | StateKeys | LogLog
            | LogPanicked => return None,
            WsusCancelDownloads | WsusResumeDownloads | WsusDecline => {
                Need::Operation(Operation::Updates)
            }
            WsusRemoveInactiveApprovals => Need::Operation(Operation::Approvals),
            WsusSetConfig => Need::Operation(Operation::Configure),
            WsusStartSync => Need::Operation(Operation::Sync),
            WsusCheckUpstream => Need::Operation(Operation::Probe),
            WsusServerInfo
            | WsusListUpdates
            | WsusUpstreamHas
            | WsusApprovalCounts
            | WsusListInactiveApprovals
            | WsusGetConfig
            | WsusSyncStatus
            | WsusSyncHistory
            | WsusUpstreamInfo
            | WsusProxy => Need::Operation(Operation::Read),
        })
    }
}

/// What a grant of a scoped capability covers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope<T> {
    /// Everything: the test gave no scope.
    All,
    Only(T),
}

impl<T: fmt::Display> fmt::Display for Scope<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::All => f.write_str("*"),
            Scope::Only(scope) => scope.fmt(f),
        }
    }
}

/// What the policy grants a plugin: file-system roots for `fs-read` and
/// `fs-write`, service names for `services-read` and `services-control`,
/// and operations of `medic:wsus`. Build it from [`Grants::none`]:
///
/// ```
/// use medic_sdk::testing::Grants;
/// use medic_sdk::wsus::Operation;
///
/// let grants = Grants::none()
///     .fs_read("/srv")
///     .fs_write("/srv/share")
///     .services_control("BITS")
///     .operation(Operation::Read);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Grants {
    fs_read: Vec<Scope<FakePath>>,
    fs_write: Vec<Scope<FakePath>>,
    services_read: Vec<Scope<String>>,
    services_control: Vec<Scope<String>>,
    operations: Vec<Operation>,
}

/// Why the agent would not run a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// `describe()` asks for an operation no package of this contract has.
    UnknownCapability { plugin: String, name: String },
    /// `describe()` asks for capabilities the grants do not give.
    MissingGrants {
        plugin: String,
        /// The capabilities' names, in the order asked.
        missing: Vec<String>,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownCapability { plugin, name } => write!(
                f,
                "plugin `{plugin}`: describe() asks for the capability `{name}`, which this agent does not know"
            ),
            Self::MissingGrants { plugin, missing } => write!(
                f,
                "plugin `{plugin}` needs {} not granted: {}; grant {} in the plugin's policy table with `{}`, or on `medic trigger` with `{}`",
                if missing.len() == 1 {
                    "a capability that is"
                } else {
                    "capabilities that are"
                },
                missing.join(", "),
                if missing.len() == 1 { "it" } else { "them" },
                policy_line(missing),
                grant_flags(missing),
            ),
        }
    }
}

impl std::error::Error for LoadError {}

/// The capabilities named `missing` as a plugin's policy table grants
/// them, a placeholder for each scope, as the agent writes it: `grants = {
/// fs-write = ["<root path>"], wsus = ["read", "sync"] }`.
fn policy_line(missing: &[String]) -> String {
    let keys = ["fs-read", "fs-write", "services-read", "services-control"];
    let mut entries: Vec<String> = Vec::new();
    for key in keys {
        if missing.iter().any(|m| m == key) {
            let scope = if key.starts_with("fs-") {
                "<root path>"
            } else {
                "<service name>"
            };
            entries.push(format!("{key} = [\"{scope}\"]"));
        }
    }
    let operations: Vec<String> = OPERATIONS
        .iter()
        .filter(|op| missing.iter().any(|m| m == op.name()))
        .map(|op| format!("\"{}\"", op.name().trim_start_matches("wsus-")))
        .collect();
    if !operations.is_empty() {
        entries.push(format!("wsus = [{}]", operations.join(", ")));
    }
    format!("grants = {{ {} }}", entries.join(", "))
}

/// The `--grant` flags of `medic trigger` that grant the capabilities
/// named `missing`, as the agent writes them.
fn grant_flags(missing: &[String]) -> String {
    missing
        .iter()
        .map(|name| match name.as_str() {
            "fs-read" | "fs-write" => format!("--grant {name}=<absolute path>"),
            "services-read" | "services-control" => format!("--grant {name}=<service name>"),
            _ => format!("--grant {name}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every capability, for runs of no plugin.
pub(crate) fn every_capability() -> Vec<Capability> {
    let mut all = vec![
        Capability::FsRead,
        Capability::FsWrite,
        Capability::ServicesRead,
        Capability::ServicesControl,
    ];
    all.extend(OPERATIONS.map(Capability::from));
    all
}

#[track_caller]
fn root(path: &str) -> FakePath {
    match FakePath::parse(path) {
        Ok(path) => path,
        Err(e) => panic!("granted root `{path}`: {}", e.message),
    }
}

impl Grants {
    /// No grants at all: the plugin may only log, read its settings and use
    /// its state.
    pub fn none() -> Self {
        Self::default()
    }

    /// `fs-read` beneath `root`.
    #[track_caller]
    pub fn fs_read(mut self, root_path: &str) -> Self {
        self.fs_read.push(Scope::Only(root(root_path)));
        self
    }

    /// `fs-write` (and reads) beneath `root`.
    #[track_caller]
    pub fn fs_write(mut self, root_path: &str) -> Self {
        self.fs_write.push(Scope::Only(root(root_path)));
        self
    }

    /// `services-read` of the service `name`.
    pub fn services_read(mut self, name: &str) -> Self {
        self.services_read.push(Scope::Only(name.to_string()));
        self
    }

    /// `services-control` (and reads) of the service `name`.
    pub fn services_control(mut self, name: &str) -> Self {
        self.services_control.push(Scope::Only(name.to_string()));
        self
    }

    /// An operation of `medic:wsus`.
    pub fn operation(mut self, operation: Operation) -> Self {
        if !self.operations.contains(&operation) {
            self.operations.push(operation);
        }
        self
    }

    /// The grants of the capabilities `asked`, scoped to `roots` and
    /// `services` (everything where none are given). Unknown operations
    /// are left out: loading refuses them.
    pub(crate) fn asked_for(asked: &[Capability], roots: &[String], services: &[String]) -> Self {
        let roots: Vec<Scope<FakePath>> = if roots.is_empty() {
            vec![Scope::All]
        } else {
            roots.iter().map(|r| Scope::Only(root(r))).collect()
        };
        let names: Vec<Scope<String>> = if services.is_empty() {
            vec![Scope::All]
        } else {
            services.iter().map(|s| Scope::Only(s.clone())).collect()
        };
        let mut grants = Self::none();
        for need in asked.iter().filter_map(Need::of) {
            match need {
                Need::FsRead => grants.fs_read = roots.clone(),
                Need::FsWrite => grants.fs_write = roots.clone(),
                Need::ServicesRead => grants.services_read = names.clone(),
                Need::ServicesControl => grants.services_control = names.clone(),
                Need::Operation(op) => grants = grants.operation(op),
            }
        }
        grants
    }

    /// Whether the capability is granted with at least one scope.
    fn has(&self, need: Need) -> bool {
        match need {
            Need::FsRead => !self.fs_read.is_empty() || !self.fs_write.is_empty(),
            Need::FsWrite => !self.fs_write.is_empty(),
            Need::ServicesRead => {
                !self.services_read.is_empty() || !self.services_control.is_empty()
            }
            Need::ServicesControl => !self.services_control.is_empty(),
            Need::Operation(op) => self.operations.contains(&op),
        }
    }

    /// The agent's check before it runs `info`'s plugin: every capability
    /// asked for must be known and granted.
    pub(crate) fn check_load(&self, info: &PluginInfo) -> Result<(), LoadError> {
        let mut missing: Vec<String> = Vec::new();
        for capability in &info.capabilities {
            let Some(need) = Need::of(capability) else {
                let Capability::Operation(name) = capability else {
                    unreachable!("core capabilities are always known")
                };
                return Err(LoadError::UnknownCapability {
                    plugin: info.name.clone(),
                    name: name.clone(),
                });
            };
            let name = need.to_string();
            if !self.has(need) && !missing.contains(&name) {
                missing.push(name);
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(LoadError::MissingGrants {
                plugin: info.name.clone(),
                missing,
            })
        }
    }

    /// Refuse a call whose capability is not granted at all.
    pub(crate) fn require(&self, function: HostFn, plugin: &str) -> Result<(), Error> {
        match function.needs() {
            Some(need) if !self.has(need) => Err(denied(format!(
                "capability `{need}` is not granted to plugin `{plugin}`"
            ))),
            _ => Ok(()),
        }
    }

    /// The path a read may use: absolute, without `..`, beneath a root of
    /// `fs-read` or `fs-write`.
    pub(crate) fn read_path(&self, raw: &str) -> Result<FakePath, Error> {
        self.scoped_path(raw, false)
    }

    /// The path `ensure-access` may change: beneath a root of `fs-write`.
    pub(crate) fn write_path(&self, raw: &str) -> Result<FakePath, Error> {
        self.scoped_path(raw, true)
    }

    fn scoped_path(&self, raw: &str, write: bool) -> Result<FakePath, Error> {
        let path = FakePath::parse(raw)?;
        let roots: Vec<&Scope<FakePath>> = if write {
            self.fs_write.iter().collect()
        } else {
            self.fs_read.iter().chain(&self.fs_write).collect()
        };
        let inside = roots.iter().any(|root| match root {
            Scope::All => true,
            Scope::Only(root) => path.starts_with(root),
        });
        if inside {
            return Ok(path);
        }
        Err(denied(format!(
            "`{path}` is outside the roots granted to {} ({})",
            if write { "fs-write" } else { "fs-read" },
            listed(&roots)
        )))
    }

    /// Refuse a service the grants do not name (for `control`, in
    /// `services-control`).
    pub(crate) fn check_service(&self, name: &str, control: bool) -> Result<(), Error> {
        let granted: Vec<&Scope<String>> = if control {
            self.services_control.iter().collect()
        } else {
            self.services_read
                .iter()
                .chain(&self.services_control)
                .collect()
        };
        let allowed = granted.iter().any(|scope| match scope {
            Scope::All => true,
            Scope::Only(granted) => granted == name,
        });
        if allowed {
            return Ok(());
        }
        // Sorted, as the agent lists services.
        let mut granted = granted;
        granted.sort_by_key(|scope| scope.to_string());
        Err(denied(format!(
            "service `{name}` is not granted to {} (granted: {})",
            if control {
                "services-control"
            } else {
                "services-read"
            },
            listed(&granted)
        )))
    }
}

/// The scopes of a refused call's grants, each once (a scope may be
/// granted both to read and to change), as the agent lists them.
fn listed<T: fmt::Display>(scopes: &[&Scope<T>]) -> String {
    let mut names: Vec<String> = Vec::new();
    for scope in scopes {
        let name = scope.to_string();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names.join(", ")
}

fn denied(message: String) -> Error {
    error(ErrorKind::Denied, message)
}
