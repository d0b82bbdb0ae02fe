//! The one place that turns a policy's `[backend]` table into backends:
//! `local` (this machine's files, with Windows principal names mapped to
//! local users and groups, and systemd) and `lab` (the downstream server of
//! a lab made by `medic lab init`).

use medic_agent::BackendCatalog;
use medic_agent::policy::{BackendSection, PolicyError};
use medic_backends::{Backends, PrincipalMap};
use medic_lab::Lab;

/// The backend kinds this build offers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Catalog;

const KINDS: &str = "use kind = \"local\" or kind = \"lab\"";

impl BackendCatalog for Catalog {
    fn open(&self, section: &BackendSection) -> Result<Backends, Vec<PolicyError>> {
        let mut errors = Vec::new();
        let allowed: &[&str] = match section.kind.as_str() {
            "local" => &["principals"],
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
                    ("local", "lab") => (
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
        let backends = match section.kind.as_str() {
            "lab" => lab(section, &mut errors),
            _ => Some(Backends::local(principals(section, &mut errors))),
        };
        match backends {
            Some(backends) if errors.is_empty() => Ok(backends),
            _ => Err(errors),
        }
    }
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
    fn principals_are_checked() {
        let found = problems("[backend]\nprincipals = { Users = \"group:no-such-group-here\" }\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("2: principal `Users`"), "{found:?}");
        assert!(problems("[backend]\nprincipals = { Users = \"gid:100\" }\n").is_empty());
    }
}
