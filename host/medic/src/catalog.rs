//! The one place that turns a policy's `[backend]` table into backends:
//! `local` (this machine's files, with Windows principal names mapped to
//! local users and groups, and systemd), `windows` (a Windows server: NTFS
//! with principals by SID, the Service Control Manager, and its WSUS
//! server through the administration API) and `lab` (the downstream
//! server of a lab made by `medic lab init`).
//!
//! A `windows` policy is checked on any system (`medic check` on a Linux
//! workstation validates it before it ships) but opened only on Windows.

use medic_agent::BackendCatalog;
use medic_agent::policy::{BackendSection, PolicyError};
use medic_backends::{Backends, PrincipalMap};
use medic_lab::Lab;

/// The backend kinds this build offers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Catalog;

const KINDS: &str = "use kind = \"local\", \"windows\" or \"lab\"";

impl BackendCatalog for Catalog {
    fn open(&self, section: &BackendSection) -> Result<Backends, Vec<PolicyError>> {
        match self.read(section, true)? {
            Selected::Opened(backends) => Ok(backends),
            // `read` opens whatever it is asked to open, or says why not;
            // this answer stands for a backend that would not say.
            Selected::Checked => Err(vec![section.error(
                "kind",
                "this backend is checked but cannot be opened on this system",
                "run the policy on the system its backend is for",
            )]),
        }
    }

    fn check(&self, section: &BackendSection) -> Vec<PolicyError> {
        self.read(section, false).err().unwrap_or_default()
    }
}

/// A `[backend]` table read, and opened where it can be.
enum Selected {
    Opened(Backends),
    /// Checked, but not opened here (the `windows` backend elsewhere).
    #[cfg_attr(windows, allow(dead_code))]
    Checked,
}

impl Catalog {
    /// Check `section` and, with `open` (or wherever checking needs it),
    /// open the backends it selects.
    fn read(&self, section: &BackendSection, open: bool) -> Result<Selected, Vec<PolicyError>> {
        let mut errors = Vec::new();
        let allowed: &[&str] = match section.kind.as_str() {
            "local" => &["principals"],
            "windows" => &["principals", "wsus"],
            "lab" => &["lab", "server"],
            other => {
                return Err(vec![section.error(
                    "kind",
                    format!("unknown backend `{other}`"),
                    KINDS,
                )]);
            }
        };
        for key in section.settings.keys() {
            if !allowed.contains(&key.as_str()) {
                let (message, fix) = match (section.kind.as_str(), key.as_str()) {
                    ("local" | "windows", "lab") => (
                        "`lab` is only read with kind = \"lab\"".to_string(),
                        "set kind = \"lab\", or remove `lab`".to_string(),
                    ),
                    ("lab", "principals") => (
                        "the lab maps Windows principals itself".to_string(),
                        "remove `principals` (set them with `medic lab init --principal`)"
                            .to_string(),
                    ),
                    (kind, key) => (
                        format!("a `{kind}` backend takes no `{key}`"),
                        format!("its keys are: kind, {}", allowed.join(", ")),
                    ),
                };
                errors.push(section.error(key, message, fix));
            }
        }
        let selected = match section.kind.as_str() {
            "lab" => lab(section, &mut errors).map(Selected::Opened),
            "windows" => windows(section, open, &mut errors),
            _ if cfg!(windows) => {
                errors.push(section.error(
                    "kind",
                    "`local` is this machine's POSIX files and systemd, which Windows has not",
                    "on Windows use kind = \"windows\"",
                ));
                None
            }
            _ => Some(Selected::Opened(Backends::local(principals(
                section,
                &mut errors,
            )))),
        };
        match selected {
            Some(selected) if errors.is_empty() => Ok(selected),
            _ => Err(errors),
        }
    }
}

/// `kind = "windows"`, `principals = { "WSUS Admins" = "sid:S-1-5-…" }`
/// and `wsus = false` on a machine that is not a WSUS server.
fn windows(
    section: &BackendSection,
    open: bool,
    errors: &mut Vec<PolicyError>,
) -> Option<Selected> {
    let mut principals = medic_backends::windows::ntfs::SidMap::default();
    match section.settings.get("principals").map(|v| v.as_table()) {
        None => {}
        Some(None) => errors.push(section.error(
            "principals",
            "`principals` must be a table",
            "write principals = { \"WSUS Admins\" = \"sid:S-1-5-21-…\" }",
        )),
        Some(Some(table)) => {
            for (name, spec) in table {
                let result = match spec.as_str() {
                    Some(spec) => principals.insert(name, spec),
                    None => Err(format!("`{name}` must map to a string")),
                };
                if let Err(e) = result {
                    errors.push(section.error(
                        "principals",
                        format!("principal `{name}`: {e}"),
                        "map it to its SID, sid:S-1-5-…, never to an account name (names are localized); NETWORK SERVICE, Users, Administrators and the other well-known principals need no entry",
                    ));
                }
            }
        }
    }
    let wsus = match section.settings.get("wsus").map(|v| v.as_bool()) {
        None => true,
        Some(Some(wsus)) => wsus,
        Some(None) => {
            errors.push(section.error(
                "wsus",
                "`wsus` must be true or false",
                "write wsus = false on a machine that is not a WSUS server",
            ));
            true
        }
    };
    if !errors.is_empty() {
        return None;
    }
    let config = medic_backends::windows::WindowsConfig { principals, wsus };
    open_windows(section, config, open, errors)
}

#[cfg(windows)]
fn open_windows(
    section: &BackendSection,
    config: medic_backends::windows::WindowsConfig,
    _open: bool,
    errors: &mut Vec<PolicyError>,
) -> Option<Selected> {
    // On Windows, checking opens: a missing WSUS role is a problem to
    // report now.
    match medic_backends::windows::backends(config) {
        Ok(backends) => Some(Selected::Opened(backends)),
        Err(e) => {
            errors.push(section.error(
                "kind",
                format!("cannot open the windows backend: {}", e.message),
                "install the WSUS role, or set wsus = false on a machine that is not a WSUS server",
            ));
            None
        }
    }
}

#[cfg(not(windows))]
fn open_windows(
    section: &BackendSection,
    _config: medic_backends::windows::WindowsConfig,
    open: bool,
    errors: &mut Vec<PolicyError>,
) -> Option<Selected> {
    if !open {
        return Some(Selected::Checked);
    }
    errors.push(section.error(
        "kind",
        format!(
            "the windows backend acts on Windows only, and this medic is built for {}",
            std::env::consts::OS
        ),
        "run this policy with medic.exe on the Windows server (`medic check` validates it here)",
    ));
    None
}

/// `principals = { "NETWORK SERVICE" = "user:nobody", ... }`.
fn principals(section: &BackendSection, errors: &mut Vec<PolicyError>) -> PrincipalMap {
    let mut map = PrincipalMap::default();
    let Some(value) = section.settings.get("principals") else {
        return map;
    };
    let Some(table) = value.as_table() else {
        errors.push(section.error(
            "principals",
            "`principals` must be a table",
            "write principals = { \"NETWORK SERVICE\" = \"user:nobody\" }",
        ));
        return map;
    };
    for (name, spec) in table {
        let result = match spec.as_str() {
            Some(spec) => map.insert(name, spec),
            None => Err(format!("`{name}` must map to a string")),
        };
        if let Err(e) = result {
            errors.push(section.error(
                "principals",
                format!("principal `{name}`: {e}"),
                "map it to user:NAME, group:NAME, uid:N or gid:N of this system",
            ));
        }
    }
    map
}

/// `kind = "lab"`, `lab = "<folder>"`, and `server = "downstream"` (the
/// default) or `"upstream"`: the lab server the agent runs on.
fn lab(section: &BackendSection, errors: &mut Vec<PolicyError>) -> Option<Backends> {
    let Some(value) = section.settings.get("lab") else {
        errors.push(section.error(
            "kind",
            "kind = \"lab\" needs the lab folder",
            "add lab = \"<folder>\" (created by `medic lab init <folder>`)",
        ));
        return None;
    };
    let Some(raw) = value.as_str() else {
        errors.push(section.error("lab", "`lab` must be a path", "write lab = \"<folder>\""));
        return None;
    };
    let server = match section.settings.get("server").map(|v| v.as_str()) {
        None | Some(Some("downstream")) => medic_lab::Server::Downstream,
        Some(Some("upstream")) => medic_lab::Server::Upstream,
        Some(_) => {
            errors.push(section.error(
                "server",
                "`server` must be \"downstream\" or \"upstream\"",
                "write server = \"upstream\" for an agent on the lab's upstream server",
            ));
            return None;
        }
    };
    let folder = section.path(raw);
    if !folder.join(medic_lab::DATABASE_FILE).is_file() {
        errors.push(section.error(
            "lab",
            format!("{} is not a lab", folder.display()),
            format!("create it with `medic lab init {}`", folder.display()),
        ));
        return None;
    }
    match Lab::open(&folder) {
        Ok(lab) => Some(medic_lab::backend::backends(lab, server)),
        Err(e) => {
            errors.push(section.error(
                "lab",
                format!("cannot open the lab {}: {e}", folder.display()),
                "check the folder, or create a lab there with `medic lab init`",
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medic_agent::policy::{Policy, SystemProbe};
    use std::path::Path;

    fn problems(text: &str) -> Vec<String> {
        let mut found = Vec::new();
        let _ = Policy::parse_with(
            Path::new("/nowhere/policy.toml"),
            text,
            &SystemProbe,
            &mut |section| {
                let errors = Catalog.open(section).err().unwrap_or_default();
                found = errors
                    .iter()
                    .map(|e| format!("{}: {}", e.line, e.message))
                    .collect();
                errors
            },
        );
        found
    }

    #[test]
    fn unknown_kinds_and_keys_are_located() {
        let found = problems("[backend]\nkind = \"cloud\"\n");
        assert_eq!(found, ["2: unknown backend `cloud`"]);
        let found = problems("[backend]\nkind = \"local\"\nlab = \"x\"\ncolour = 1\n");
        assert_eq!(
            found,
            [
                "4: a `local` backend takes no `colour`",
                "3: `lab` is only read with kind = \"lab\""
            ]
        );
    }

    #[test]
    fn a_windows_policy_is_checked_here_and_opened_only_on_windows() {
        let text = "[backend]\nkind = \"windows\"\nprincipals = { \"WSUS Admins\" = \"sid:S-1-5-21-1004336348-1177238915-682003330-1001\" }\n";
        let mut checked = Vec::new();
        let _ = Policy::parse_with(
            Path::new("/nowhere/policy.toml"),
            text,
            &SystemProbe,
            &mut |section| {
                checked = Catalog.check(section);
                Vec::new()
            },
        );
        assert!(checked.is_empty(), "{checked:?}");
        #[cfg(not(windows))]
        {
            let found = problems(text);
            assert_eq!(found.len(), 1, "{found:?}");
            assert!(
                found[0].starts_with("2: the windows backend acts on Windows only"),
                "{found:?}"
            );
        }
        let found = problems(
            "[backend]\nkind = \"windows\"\nprincipals = { Users = \"group:users\" }\nwsus = \"yes\"\n",
        );
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found.iter().any(|f| f.starts_with("3: principal `Users`")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|f| f.starts_with("4: `wsus` must be true or false")),
            "{found:?}"
        );
    }

    #[test]
    fn principals_are_checked() {
        let found = problems("[backend]\nprincipals = { Users = \"group:no-such-group-here\" }\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("2: principal `Users`"), "{found:?}");
        assert!(problems("[backend]\nprincipals = { Users = \"gid:100\" }\n").is_empty());
    }
}
