//! Principals: who an access right is for. Plugins speak Windows names
//! (`NETWORK SERVICE`, `Users`); the policy maps them to local users and
//! groups (`user:www-data`, `group:users`, `uid:33`, `gid:100`).

use crate::{BackendError, ErrorKind};
use std::collections::BTreeMap;

/// A local user or group by numeric id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Principal {
    User(u32),
    Group(u32),
}

impl Principal {
    /// Parse `user:NAME`, `group:NAME`, `uid:N` or `gid:N`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (kind, name) = spec
            .split_once(':')
            .ok_or_else(|| format!("`{spec}`: expected user:NAME, group:NAME, uid:N or gid:N"))?;
        let number = |n: &str| {
            n.parse::<u32>()
                .map_err(|_| format!("`{spec}`: `{n}` is not a numeric id"))
        };
        match kind {
            "uid" => Ok(Self::User(number(name)?)),
            "gid" => Ok(Self::Group(number(name)?)),
            "user" => lookup_id("/etc/passwd", name)
                .map(Self::User)
                .ok_or_else(|| format!("`{spec}`: no such user on this system")),
            "group" => lookup_id("/etc/group", name)
                .map(Self::Group)
                .ok_or_else(|| format!("`{spec}`: no such group on this system")),
            _ => Err(format!(
                "`{spec}`: expected user:NAME, group:NAME, uid:N or gid:N"
            )),
        }
    }

    /// `user:www-data`, or `uid:1234` when the id has no name.
    pub fn display(&self) -> String {
        match *self {
            Self::User(uid) => lookup_name("/etc/passwd", uid)
                .map(|n| format!("user:{n}"))
                .unwrap_or_else(|| format!("uid:{uid}")),
            Self::Group(gid) => lookup_name("/etc/group", gid)
                .map(|n| format!("group:{n}"))
                .unwrap_or_else(|| format!("gid:{gid}")),
        }
    }
}

/// A parsed `name:x:id:...` database file (`/etc/passwd`, `/etc/group`),
/// kept until the file's modification time changes, so that naming the
/// owners of a large tree does not read the file once per path.
struct IdDatabase {
    file: &'static str,
    modified: Option<std::time::SystemTime>,
    entries: Vec<(String, u32)>,
}

static DATABASES: std::sync::Mutex<Vec<IdDatabase>> = std::sync::Mutex::new(Vec::new());

fn with_entries<T>(file: &'static str, f: impl FnOnce(&[(String, u32)]) -> T) -> T {
    let modified = std::fs::metadata(file).and_then(|m| m.modified()).ok();
    let mut databases = DATABASES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let index = match databases.iter().position(|db| db.file == file) {
        Some(index) => index,
        None => {
            databases.push(IdDatabase {
                file,
                modified: None,
                entries: Vec::new(),
            });
            databases.len() - 1
        }
    };
    let db = &mut databases[index];
    if db.modified != modified || modified.is_none() {
        db.modified = modified;
        db.entries = std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?.to_string();
                let id = fields.nth(1)?.parse().ok()?;
                Some((name, id))
            })
            .collect();
    }
    f(&db.entries)
}

fn lookup_id(file: &'static str, name: &str) -> Option<u32> {
    with_entries(file, |entries| {
        entries.iter().find(|(n, _)| n == name).map(|(_, id)| *id)
    })
}

fn lookup_name(file: &'static str, id: u32) -> Option<String> {
    with_entries(file, |entries| {
        entries
            .iter()
            .find(|(_, i)| *i == id)
            .map(|(n, _)| n.clone())
    })
}

/// Policy names of principals mapped to local ones. Lookups ignore case,
/// as Windows does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrincipalMap {
    by_name: BTreeMap<String, (String, Principal)>,
}

impl PrincipalMap {
    /// Map `name` (e.g. `NETWORK SERVICE`) to a local principal spec.
    pub fn insert(&mut self, name: &str, spec: &str) -> Result<(), String> {
        let principal = Principal::parse(spec)?;
        self.by_name
            .insert(name.to_lowercase(), (name.to_string(), principal));
        Ok(())
    }

    /// Parse `NAME=SPEC`, the form of `medic trigger --principal`.
    pub fn insert_spec(&mut self, mapping: &str) -> Result<(), String> {
        let (name, spec) = mapping.split_once('=').ok_or_else(|| {
            format!("`{mapping}`: expected NAME=user:NAME (or group:, uid:, gid:)")
        })?;
        self.insert(name.trim(), spec.trim())
    }

    /// Resolve a principal a plugin named.
    pub fn resolve(&self, name: &str) -> Result<Principal, BackendError> {
        if let Some((_, principal)) = self.by_name.get(&name.to_lowercase()) {
            return Ok(*principal);
        }
        Principal::parse(name).map_err(|_| {
            BackendError::new(
                ErrorKind::InvalidArgument,
                format!(
                    "unknown principal `{name}`: map it to a local user or group in the policy (e.g. `\"{name}\" = \"group:users\"`) or name one as user:NAME or group:NAME"
                ),
            )
        })
    }

    /// The policy name of a local principal, if it is mapped; otherwise its
    /// system name.
    pub fn name_of(&self, principal: Principal) -> String {
        self.by_name
            .values()
            .find(|(_, p)| *p == principal)
            .map(|(name, _)| name.clone())
            .unwrap_or_else(|| principal.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ids_and_names() {
        assert_eq!(Principal::parse("uid:33"), Ok(Principal::User(33)));
        assert_eq!(Principal::parse("gid:100"), Ok(Principal::Group(100)));
        #[cfg(unix)]
        assert_eq!(Principal::parse("user:root"), Ok(Principal::User(0)));
        assert!(Principal::parse("user:no-such-user-here").is_err());
        assert!(Principal::parse("NETWORK SERVICE").is_err());
        assert!(Principal::parse("uid:x").is_err());
    }

    #[test]
    fn map_resolves_windows_names_ignoring_case() {
        let mut map = PrincipalMap::default();
        map.insert_spec("NETWORK SERVICE=uid:33").unwrap();
        assert_eq!(map.resolve("network service").unwrap(), Principal::User(33));
        assert_eq!(map.resolve("gid:5").unwrap(), Principal::Group(5));
        assert_eq!(map.name_of(Principal::User(33)), "NETWORK SERVICE");
        let err = map.resolve("Users").unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
        assert!(err.message.contains("map it"), "{}", err.message);
        assert!(map.insert_spec("no-equals-sign").is_err());
    }
}
