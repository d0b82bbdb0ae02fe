//! What the policy allows a plugin to touch: file-system roots, service
//! names and WSUS operations. Checked once at load time against what the
//! plugin asks for, and again on every host call against its arguments.

use medic_backends::fs::Beneath;
use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

/// A capability a plugin may ask for and a policy may grant. The core ones
/// are scoped (paths, service names); an extension package's operations
/// (`wsus-read`, `wsus-sync`, ...) are not.
///
/// A capability has one name wherever a person reads it (`fs-read`,
/// `wsus-sync`: [`Capability::parse`] and `Display`), the name `medic
/// trigger --grant` takes; a policy grants it in its plugin's `grants`
/// table, under the same name for a core one (`fs-read = ["/srv/share"]`)
/// and in its package's list for an operation (`wsus = ["sync"]`):
/// [`Grants::policy_line`] writes that form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    /// `fs.stat`, `fs.list-dir`, `fs.read-access`, `fs.read-file` under a root.
    FsRead,
    /// `fs.ensure-access` (and reads) under a root.
    FsWrite,
    /// `services.query` of a service.
    ServicesRead,
    /// Start, stop, restart, set the startup type of a service (and query).
    ServicesControl,
    /// One operation of an extension package, owned by its host module.
    Operation(Operation),
}

/// An unscoped operation of an extension package: its policy name is
/// `<package>-<name>`, and the policy grants it as `<package> = ["<name>"]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Operation {
    pub package: &'static str,
    pub name: &'static str,
}

/// The operations of every extension package this host implements.
pub const OPERATIONS: &[Operation] = super::wsus::OPERATIONS;

impl Capability {
    /// The scoped core capabilities.
    pub const CORE: [Capability; 4] = [
        Self::FsRead,
        Self::FsWrite,
        Self::ServicesRead,
        Self::ServicesControl,
    ];

    /// Parse a capability from its policy name (`fs-read`, `wsus-sync`).
    pub fn parse(name: &str) -> Option<Self> {
        Self::CORE
            .into_iter()
            .chain(OPERATIONS.iter().map(|op| Self::Operation(*op)))
            .find(|c| c.to_string() == name)
    }

    /// The operation named `name` of extension package `package`.
    pub fn operation(package: &str, name: &str) -> Option<Self> {
        OPERATIONS
            .iter()
            .find(|op| op.package == package && op.name == name)
            .map(|op| Self::Operation(*op))
    }

    /// The key of a policy's `grants` table that grants it, and the entry
    /// of its list for an operation: `("fs-read", None)`, `("wsus",
    /// Some("sync"))`.
    pub fn policy_key(self) -> (&'static str, Option<&'static str>) {
        match self {
            Self::FsRead => ("fs-read", None),
            Self::FsWrite => ("fs-write", None),
            Self::ServicesRead => ("services-read", None),
            Self::ServicesControl => ("services-control", None),
            Self::Operation(op) => (op.package, Some(op.name)),
        }
    }

    /// What the scope of a grant of this capability is, if it has one.
    pub fn scope(self) -> Option<&'static str> {
        match self {
            Self::FsRead | Self::FsWrite => Some("absolute path"),
            Self::ServicesRead | Self::ServicesControl => Some("service name"),
            Self::Operation(_) => None,
        }
    }
}

impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::FsRead => f.write_str("fs-read"),
            Self::FsWrite => f.write_str("fs-write"),
            Self::ServicesRead => f.write_str("services-read"),
            Self::ServicesControl => f.write_str("services-control"),
            Self::Operation(op) => write!(f, "{}-{}", op.package, op.name),
        }
    }
}

/// The extension packages whose operations can be granted.
pub fn extension_packages() -> BTreeSet<&'static str> {
    OPERATIONS.iter().map(|op| op.package).collect()
}

/// The grants of one plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Roots under which `fs-read` calls are allowed.
    pub fs_read: Vec<PathBuf>,
    /// Roots under which `fs-write` calls (and reads) are allowed.
    pub fs_write: Vec<PathBuf>,
    /// Services whose status may be read.
    pub services_read: BTreeSet<String>,
    /// Services that may be controlled (and read).
    pub services_control: BTreeSet<String>,
    /// Granted operations of extension packages.
    pub operations: BTreeSet<Operation>,
}

/// A grant written as text could not be understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GrantError {
    #[error("unknown capability `{0}`; expected one of {known}", known = known_capabilities())]
    UnknownCapability(String),
    #[error("`{0}` needs a scope: write `{0}=<{1}>`")]
    MissingScope(String, &'static str),
    #[error("`{0}` takes no scope; write just `{0}`")]
    UnexpectedScope(String),
    #[error("file-system root `{0}` must be an absolute path without `..`")]
    BadRoot(String),
}

impl Grants {
    /// No grants at all: the plugin may only log, read its settings and use
    /// its own state.
    pub fn none() -> Self {
        Self::default()
    }

    /// Add one grant written as `capability[=scope]`, the form used by
    /// `medic trigger --grant`: `fs-read=/srv/share`, `services-control=BITS`,
    /// `wsus-read`.
    pub fn add_spec(&mut self, spec: &str) -> Result<(), GrantError> {
        let (name, scope) = match spec.split_once('=') {
            Some((name, scope)) => (name.trim(), Some(scope.trim())),
            None => (spec.trim(), None),
        };
        let capability = Capability::parse(name)
            .ok_or_else(|| GrantError::UnknownCapability(name.to_string()))?;
        self.add(capability, scope)
    }

    /// Add one grant with its scope (a path for `fs-*`, a service name for
    /// `services-*`, none for an extension's operations).
    pub fn add(&mut self, capability: Capability, scope: Option<&str>) -> Result<(), GrantError> {
        let name = capability.to_string();
        let kind = match (capability, capability.scope()) {
            (Capability::Operation(op), _) => {
                if scope.is_some() {
                    return Err(GrantError::UnexpectedScope(name));
                }
                self.operations.insert(op);
                return Ok(());
            }
            (_, kind) => kind.unwrap_or_default(),
        };
        let scope = scope.filter(|s| !s.is_empty());
        match capability {
            Capability::FsRead | Capability::FsWrite => {
                let root = scope.ok_or(GrantError::MissingScope(name, kind))?;
                let root = normalize_root(root)?;
                if capability == Capability::FsRead {
                    self.fs_read.push(root);
                } else {
                    self.fs_write.push(root);
                }
            }
            _ => {
                let service = scope.ok_or(GrantError::MissingScope(name, kind))?;
                if capability == Capability::ServicesRead {
                    self.services_read.insert(service.to_string());
                } else {
                    self.services_control.insert(service.to_string());
                }
            }
        }
        Ok(())
    }

    /// Whether the capability is granted with at least one scope.
    pub fn has(&self, capability: Capability) -> bool {
        match capability {
            Capability::FsRead => !self.fs_read.is_empty() || !self.fs_write.is_empty(),
            Capability::FsWrite => !self.fs_write.is_empty(),
            Capability::ServicesRead => {
                !self.services_read.is_empty() || !self.services_control.is_empty()
            }
            Capability::ServicesControl => !self.services_control.is_empty(),
            Capability::Operation(op) => self.operations.contains(&op),
        }
    }

    /// The capabilities asked for that are not granted, in the order asked.
    pub fn missing(&self, asked: &[Capability]) -> Vec<Capability> {
        let mut missing: Vec<Capability> = Vec::new();
        for capability in asked {
            if !self.has(*capability) && !missing.contains(capability) {
                missing.push(*capability);
            }
        }
        missing
    }

    /// Where `path` (already checked by [`checked_path`]) may be read: the
    /// path beneath the first root that holds it, for the backend to
    /// resolve by descriptor.
    pub fn read_scope(&self, path: &Path) -> Option<Beneath> {
        Beneath::within(path, self.fs_read.iter().chain(&self.fs_write))
    }

    /// Where access on `path` may be changed, as [`Grants::read_scope`].
    pub fn write_scope(&self, path: &Path) -> Option<Beneath> {
        Beneath::within(path, &self.fs_write)
    }

    pub fn may_query_service(&self, name: &str) -> bool {
        self.services_read.contains(name) || self.services_control.contains(name)
    }

    pub fn may_control_service(&self, name: &str) -> bool {
        self.services_control.contains(name)
    }

    /// The services that may be controlled (`control`), or queried, each
    /// once (one may be granted both to read and to control), sorted.
    pub fn services(&self, control: bool) -> Vec<&str> {
        let granted: BTreeSet<&str> = if control {
            self.services_control.iter().map(String::as_str).collect()
        } else {
            self.services_read
                .iter()
                .chain(&self.services_control)
                .map(String::as_str)
                .collect()
        };
        granted.into_iter().collect()
    }

    /// The grants as `capability=scope` strings, for display and audit.
    pub fn describe(&self) -> Vec<String> {
        let paths = |name: &str, roots: &[PathBuf]| {
            roots
                .iter()
                .map(|r| format!("{name}={}", r.display()))
                .collect::<Vec<_>>()
        };
        let names = |name: &str, set: &BTreeSet<String>| {
            set.iter()
                .map(|s| format!("{name}={s}"))
                .collect::<Vec<_>>()
        };
        let mut out = paths("fs-read", &self.fs_read);
        out.extend(paths("fs-write", &self.fs_write));
        out.extend(names("services-read", &self.services_read));
        out.extend(names("services-control", &self.services_control));
        out.extend(
            self.operations
                .iter()
                .map(|op| Capability::Operation(*op).to_string()),
        );
        out
    }
}

/// The `--grant` flags of `medic trigger` that grant `capabilities`, with
/// a placeholder for each scope: `--grant fs-write=<absolute path> --grant
/// wsus-sync`.
pub fn grant_flags(capabilities: &[Capability]) -> String {
    capabilities
        .iter()
        .map(|c| match c.scope() {
            Some(scope) => format!("--grant {c}=<{scope}>"),
            None => format!("--grant {c}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Grants {
    /// These grants, and the capabilities `more` with a placeholder for
    /// each scope (`"<root path>"`, `"<service name>"`), as a plugin's
    /// policy table writes them: `grants = { fs-read = ["/srv/share"],
    /// wsus = ["read", "sync"] }`.
    pub fn policy_line(&self, more: &[Capability]) -> String {
        let text = |items: &[String]| {
            items
                .iter()
                .map(|item| serde_json::to_string(item).unwrap_or_default())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut entries: Vec<(&str, Vec<String>)> = vec![
            (
                "fs-read",
                self.fs_read
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect(),
            ),
            (
                "fs-write",
                self.fs_write
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect(),
            ),
            (
                "services-read",
                self.services_read.iter().cloned().collect(),
            ),
            (
                "services-control",
                self.services_control.iter().cloned().collect(),
            ),
        ];
        for package in extension_packages() {
            let granted = self.operations.iter().filter(|op| op.package == package);
            entries.push((package, granted.map(|op| op.name.to_string()).collect()));
        }
        for capability in more {
            let (key, _) = capability.policy_key();
            let placeholder = match capability {
                Capability::FsRead | Capability::FsWrite => "<root path>".to_string(),
                Capability::ServicesRead | Capability::ServicesControl => {
                    "<service name>".to_string()
                }
                Capability::Operation(op) => op.name.to_string(),
            };
            if let Some((_, items)) = entries.iter_mut().find(|(k, _)| *k == key)
                && !items.contains(&placeholder)
            {
                items.push(placeholder);
            }
        }
        // A package's operations in the order it lists them.
        for (key, items) in &mut entries {
            items.sort_by_key(|item| {
                OPERATIONS
                    .iter()
                    .position(|op| op.package == *key && op.name == item.as_str())
            });
        }
        let written: Vec<String> = entries
            .iter()
            .filter(|(_, items)| !items.is_empty())
            .map(|(key, items)| format!("{key} = [{}]", text(items)))
            .collect();
        if written.is_empty() {
            "grants = {}".to_string()
        } else {
            format!("grants = {{ {} }}", written.join(", "))
        }
    }
}

/// Every capability's policy name, for messages.
fn known_capabilities() -> String {
    Capability::CORE
        .into_iter()
        .chain(OPERATIONS.iter().map(|op| Capability::Operation(*op)))
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A granted root: absolute, without `..`, spelled as the policy writes it
/// (its components normalised; the file system is not consulted). The
/// root and its ancestors are trusted: the backend opens the root by name
/// and everything under it by descriptor.
fn normalize_root(root: &str) -> Result<PathBuf, GrantError> {
    checked_path(root).map_err(|_| GrantError::BadRoot(root.to_string()))
}

/// Why a path a plugin passed cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("`{0}` is not an absolute path")]
    NotAbsolute(String),
    #[error("`{0}` contains `..`")]
    ParentComponent(String),
    #[error("`{0}` contains a NUL character")]
    Nul(String),
}

/// Turn a path a plugin passed into the path the checks use: absolute,
/// without `..` or NUL, its components normalised (`a//b/./c` is `a/b/c`).
/// Nothing is resolved here: the backend resolves the part under the
/// granted root by descriptor, following no symbolic link.
pub fn checked_path(raw: &str) -> Result<PathBuf, PathError> {
    let path = Path::new(raw);
    if !path.is_absolute() {
        return Err(PathError::NotAbsolute(raw.to_string()));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(PathError::ParentComponent(raw.to_string()));
    }
    if raw.contains('\0') {
        return Err(PathError::Nul(raw.escape_debug().to_string()));
    }
    Ok(path.components().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names_round_trip() {
        for capability in Capability::CORE
            .into_iter()
            .chain(OPERATIONS.iter().map(|op| Capability::Operation(*op)))
        {
            assert_eq!(Capability::parse(&capability.to_string()), Some(capability));
        }
        assert_eq!(Capability::parse("fs-delete"), None);
        assert_eq!(
            Capability::operation("wsus", "sync").map(|c| c.to_string()),
            Some("wsus-sync".into())
        );
    }

    #[test]
    fn specs_parse_with_and_without_scope() {
        let mut grants = Grants::none();
        grants.add_spec("fs-read=/srv/share").unwrap();
        grants.add_spec("services-control=BITS").unwrap();
        grants.add_spec("wsus-read").unwrap();
        assert!(grants.has(Capability::FsRead));
        assert!(!grants.has(Capability::FsWrite));
        assert!(grants.may_query_service("BITS"));
        assert!(grants.may_control_service("BITS"));
        assert!(!grants.may_control_service("W3SVC"));
        assert!(grants.has(Capability::parse("wsus-read").unwrap()));
        assert!(!grants.has(Capability::parse("wsus-updates").unwrap()));
        assert_eq!(
            grants.describe(),
            vec!["fs-read=/srv/share", "services-control=BITS", "wsus-read"]
        );
    }

    #[test]
    fn bad_specs_say_how_to_fix_them() {
        let mut grants = Grants::none();
        assert_eq!(
            grants.add_spec("fs-delete=/x"),
            Err(GrantError::UnknownCapability("fs-delete".into()))
        );
        assert_eq!(
            grants.add_spec("fs-read").unwrap_err().to_string(),
            "`fs-read` needs a scope: write `fs-read=<absolute path>`"
        );
        assert!(matches!(
            grants.add_spec("wsus-sync=x"),
            Err(GrantError::UnexpectedScope(_))
        ));
        assert!(matches!(
            grants.add_spec("fs-write=relative"),
            Err(GrantError::BadRoot(_))
        ));
        assert!(matches!(
            grants.add_spec("fs-write=/a/../b"),
            Err(GrantError::BadRoot(_))
        ));
    }

    #[test]
    fn missing_lists_each_ungranted_capability_once() {
        let mut grants = Grants::none();
        grants.add_spec("fs-write=/srv").unwrap();
        let asked = [
            Capability::FsRead,
            Capability::FsWrite,
            Capability::parse("wsus-sync").unwrap(),
            Capability::parse("wsus-sync").unwrap(),
            Capability::ServicesRead,
        ];
        assert_eq!(
            grants.missing(&asked),
            vec![
                Capability::parse("wsus-sync").unwrap(),
                Capability::ServicesRead
            ]
        );
    }

    #[test]
    fn a_service_granted_to_read_and_to_control_is_listed_once() {
        let mut grants = Grants::none();
        for spec in [
            "services-read=BITS",
            "services-control=BITS",
            "services-read=W3SVC",
            "services-control=WsusService",
        ] {
            grants.add_spec(spec).unwrap();
        }
        assert_eq!(grants.services(false), ["BITS", "W3SVC", "WsusService"]);
        assert_eq!(grants.services(true), ["BITS", "WsusService"]);
    }

    #[test]
    fn grants_are_written_as_a_policy_and_a_command_line_write_them() {
        let sync = Capability::parse("wsus-sync").unwrap();
        let read = Capability::parse("wsus-read").unwrap();
        assert_eq!(Grants::none().policy_line(&[]), "grants = {}");
        assert_eq!(
            Grants::none().policy_line(&[Capability::FsWrite, read, sync]),
            r#"grants = { fs-write = ["<root path>"], wsus = ["read", "sync"] }"#
        );
        // What is granted already is kept, with what is missing added.
        let mut grants = Grants::none();
        grants.add_spec("fs-read=/srv/share").unwrap();
        grants.add_spec("services-control=BITS").unwrap();
        grants.add_spec("wsus-sync").unwrap();
        assert_eq!(
            grants.policy_line(&[read, Capability::ServicesRead]),
            r#"grants = { fs-read = ["/srv/share"], services-read = ["<service name>"], services-control = ["BITS"], wsus = ["read", "sync"] }"#
        );
        // A path is written as a TOML string, whatever it holds.
        let mut grants = Grants::none();
        grants.add_spec(r#"fs-read=/srv/a "b"\c"#).unwrap();
        assert_eq!(
            grants.policy_line(&[]),
            r#"grants = { fs-read = ["/srv/a \"b\"\\c"] }"#
        );
        assert_eq!(
            grant_flags(&[Capability::FsWrite, Capability::ServicesControl, sync]),
            "--grant fs-write=<absolute path> --grant services-control=<service name> --grant wsus-sync"
        );
        assert_eq!(Capability::FsRead.policy_key(), ("fs-read", None));
        assert_eq!(
            Capability::ServicesControl.policy_key(),
            ("services-control", None)
        );
        assert_eq!(sync.policy_key(), ("wsus", Some("sync")));
    }

    #[test]
    fn paths_are_confined_to_roots() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(root.join("inside")).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("/etc", root.join("escape")).unwrap();
        let mut grants = Grants::none();
        grants
            .add_spec(&format!("fs-read={}", root.display()))
            .unwrap();

        let inside = checked_path(&format!("{}//inside/./file", root.display())).unwrap();
        let scope = grants.read_scope(&inside).unwrap();
        assert_eq!(scope.root(), root);
        assert_eq!(scope.relative(), Path::new("inside/file"));
        assert!(grants.write_scope(&inside).is_none());
        assert!(
            grants
                .read_scope(&checked_path("/etc/passwd").unwrap())
                .is_none()
        );
        // A link under the root stays under it here: the backend refuses
        // to follow it when it resolves the path.
        let through_link = checked_path(&format!("{}/escape/passwd", root.display())).unwrap();
        assert_eq!(
            grants.read_scope(&through_link).unwrap().relative(),
            Path::new("escape/passwd")
        );
        assert!(matches!(checked_path("/a\0b"), Err(PathError::Nul(_))));
        assert!(matches!(
            checked_path("relative"),
            Err(PathError::NotAbsolute(_))
        ));
        assert!(matches!(
            checked_path(&format!("{}/inside/../../x", root.display())),
            Err(PathError::ParentComponent(_))
        ));
    }
}
