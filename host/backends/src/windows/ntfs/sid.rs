//! Security identifiers and the names plugins use for them. Plugins name
//! principals the way the WSUS documentation does (`NETWORK SERVICE`,
//! `Users`); on Windows those are resolved to SIDs and never looked up by
//! account name, because account names are localized (`NETZWERKDIENST`
//! on a German server) while SIDs are not.
//!
//! A name resolves, in this order, through the policy's map
//! (`[backend] principals = { "WSUS Admins" = "sid:S-1-5-21-…" }`), the
//! table of well-known principals below, and a literal `sid:S-…`.

use crate::{BackendError, ErrorKind, OpResult};
use std::collections::BTreeMap;

/// A SID in its string form, validated and canonical (`S-1-5-20`): upper
/// case `S`, revision 1, decimal numbers without leading zeros.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sid(String);

/// The most sub-authorities a SID holds (`SID_MAX_SUB_AUTHORITIES`).
const MAX_SUB_AUTHORITIES: usize = 15;

impl Sid {
    /// Parse `S-1-<authority>-<sub-authority>…`: the identifier authority
    /// in decimal or as `0x` and 12 hex digits (48 bits), then up to 15
    /// 32-bit sub-authorities. SDDL abbreviations (`NS`, `BU`) are not SIDs
    /// here.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("`{text}` is not a SID ({why}); expected S-1-5-…");
        let mut parts = text.split('-');
        if !parts.next().is_some_and(|s| s.eq_ignore_ascii_case("S")) {
            return Err(bad("it must start with S-"));
        }
        if parts.next() != Some("1") {
            return Err(bad("the revision must be 1"));
        }
        let authority = parts
            .next()
            .and_then(parse_authority)
            .ok_or_else(|| bad("the identifier authority is not a 48-bit number"))?;
        let subs = parts
            .map(|p| decimal(p).and_then(|n| u32::try_from(n).ok()))
            .collect::<Option<Vec<u32>>>()
            .ok_or_else(|| bad("a sub-authority is not a 32-bit number"))?;
        if subs.len() > MAX_SUB_AUTHORITIES {
            return Err(bad("more than 15 sub-authorities"));
        }
        let mut canonical = format!("S-1-{authority}");
        for sub in subs {
            canonical.push_str(&format!("-{sub}"));
        }
        Ok(Self(canonical))
    }

    /// A SID this crate spells out; panics on a typo, which the tests catch.
    pub(crate) fn known(text: &'static str) -> Self {
        Self::parse(text).expect("well-known SID literal")
    }

    /// `Everyone` (S-1-1-0): in every token.
    pub fn everyone() -> Self {
        Self::known("S-1-1-0")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Sid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Sid {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

/// A non-empty run of ASCII digits as a number (no sign, no spaces).
fn decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The identifier authority: decimal, or `0x` and hex digits, below 2^48.
fn parse_authority(text: &str) -> Option<u64> {
    let value = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u64::from_str_radix(hex, 16).ok()?
        }
        Some(_) => return None,
        None => decimal(text)?,
    };
    (value < 1 << 48).then_some(value)
}

/// The spec form a policy maps a name to: `sid:S-1-5-…`.
pub fn parse_sid_spec(spec: &str) -> Result<Sid, String> {
    let text = spec
        .strip_prefix("sid:")
        .ok_or_else(|| format!("`{spec}`: expected sid:S-1-5-… (a SID, never an account name)"))?;
    Sid::parse(text.trim()).map_err(|e| format!("`{spec}`: {e}"))
}

/// A principal every Windows system has, by its fixed SID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WellKnownPrincipal {
    pub sid: &'static str,
    /// `NT AUTHORITY`, `BUILTIN`, `NT SERVICE`, or empty for `Everyone`.
    pub domain: &'static str,
    /// The English account name, as plugins and the WSUS docs write it.
    pub name: &'static str,
}

impl WellKnownPrincipal {
    /// `NT AUTHORITY\NETWORK SERVICE`, as an English system shows it.
    pub fn qualified_name(&self) -> String {
        if self.domain.is_empty() {
            self.name.to_string()
        } else {
            format!("{}\\{}", self.domain, self.name)
        }
    }

    fn is_named(&self, name: &str) -> bool {
        let name = name.trim();
        name.eq_ignore_ascii_case(self.name)
            || name.rsplit_once('\\').is_some_and(|(domain, account)| {
                !self.domain.is_empty()
                    && domain.eq_ignore_ascii_case(self.domain)
                    && account.eq_ignore_ascii_case(self.name)
            })
    }
}

/// The well-known principals medic resolves without a policy entry.
pub const WELL_KNOWN: &[WellKnownPrincipal] = &[
    WellKnownPrincipal {
        sid: "S-1-1-0",
        domain: "",
        name: "Everyone",
    },
    WellKnownPrincipal {
        sid: "S-1-3-0",
        domain: "",
        name: "CREATOR OWNER",
    },
    WellKnownPrincipal {
        sid: "S-1-5-11",
        domain: "NT AUTHORITY",
        name: "Authenticated Users",
    },
    WellKnownPrincipal {
        sid: "S-1-5-18",
        domain: "NT AUTHORITY",
        name: "SYSTEM",
    },
    WellKnownPrincipal {
        sid: "S-1-5-19",
        domain: "NT AUTHORITY",
        name: "LOCAL SERVICE",
    },
    WellKnownPrincipal {
        sid: "S-1-5-20",
        domain: "NT AUTHORITY",
        name: "NETWORK SERVICE",
    },
    WellKnownPrincipal {
        sid: "S-1-5-32-544",
        domain: "BUILTIN",
        name: "Administrators",
    },
    WellKnownPrincipal {
        sid: "S-1-5-32-545",
        domain: "BUILTIN",
        name: "Users",
    },
    WellKnownPrincipal {
        sid: "S-1-5-32-568",
        domain: "BUILTIN",
        name: "IIS_IUSRS",
    },
    WellKnownPrincipal {
        sid: "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464",
        domain: "NT SERVICE",
        name: "TrustedInstaller",
    },
];

/// The well-known principal called `name` (`NETWORK SERVICE`,
/// `NT AUTHORITY\NETWORK SERVICE`, any case).
pub fn well_known_by_name(name: &str) -> Option<&'static WellKnownPrincipal> {
    WELL_KNOWN.iter().find(|p| p.is_named(name))
}

/// The well-known principal with this SID.
pub fn well_known_by_sid(sid: &Sid) -> Option<&'static WellKnownPrincipal> {
    WELL_KNOWN.iter().find(|p| p.sid == sid.as_str())
}

/// Policy names of principals mapped to SIDs. Lookups ignore case, as
/// Windows does. The Windows counterpart of [`crate::PrincipalMap`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SidMap {
    /// Lower-cased name → (the name as the policy wrote it, its SID).
    by_name: BTreeMap<String, (String, Sid)>,
}

impl SidMap {
    /// Map `name` (e.g. `WSUS Admins`) to `spec`, which must be
    /// `sid:S-1-5-…`.
    pub fn insert(&mut self, name: &str, spec: &str) -> Result<(), String> {
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("`{spec}`: the principal's name is empty"));
        }
        let sid = parse_sid_spec(spec.trim())?;
        self.by_name
            .insert(name.to_lowercase(), (name.to_string(), sid));
        Ok(())
    }

    /// Parse `NAME=sid:S-…`, the form of `medic trigger --principal`.
    pub fn insert_spec(&mut self, mapping: &str) -> Result<(), String> {
        let (name, spec) = mapping
            .split_once('=')
            .ok_or_else(|| format!("`{mapping}`: expected NAME=sid:S-1-5-…"))?;
        self.insert(name, spec)
    }

    /// The SID of a principal a plugin named: the policy's map first, then
    /// the well-known principals, then a literal `sid:S-…`.
    pub fn resolve(&self, name: &str) -> OpResult<Sid> {
        if let Some((_, sid)) = self.by_name.get(&name.trim().to_lowercase()) {
            return Ok(sid.clone());
        }
        if let Some(known) = well_known_by_name(name) {
            return Ok(Sid::known(known.sid));
        }
        if name.starts_with("sid:") {
            return parse_sid_spec(name)
                .map_err(|e| BackendError::new(ErrorKind::InvalidArgument, e));
        }
        Err(BackendError::new(
            ErrorKind::InvalidArgument,
            format!(
                "unknown principal `{name}`: map it to its SID in the policy (`[backend] principals = {{ \"{name}\" = \"sid:S-1-5-21-…\" }}`), name a well-known principal (NETWORK SERVICE, Users, …), or pass a SID as sid:S-1-5-…"
            ),
        ))
    }

    /// The policy's name for `sid`, if the policy maps one to it.
    pub fn name_of(&self, sid: &Sid) -> Option<&str> {
        self.by_name
            .values()
            .find(|(_, s)| s == sid)
            .map(|(name, _)| name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sids_parse_to_a_canonical_form() {
        assert_eq!(Sid::parse("S-1-5-20").unwrap().as_str(), "S-1-5-20");
        assert_eq!(Sid::parse("s-1-5-32-545").unwrap().as_str(), "S-1-5-32-545");
        assert_eq!(Sid::parse("S-1-05-020").unwrap().as_str(), "S-1-5-20");
        assert_eq!(Sid::parse("S-1-0x5-20").unwrap().as_str(), "S-1-5-20");
        assert_eq!(Sid::parse("S-1-5").unwrap().as_str(), "S-1-5");
        let domain = "S-1-5-21-3623811015-3361044348-30300820-1013";
        assert_eq!(Sid::parse(domain).unwrap().as_str(), domain);
        assert_eq!("S-1-1-0".parse::<Sid>().unwrap(), Sid::everyone());
    }

    #[test]
    fn bad_sids_are_refused_with_a_reason() {
        for bad in [
            "",
            "NS",
            "S-2-5-20",
            "S-1",
            "S-1--20",
            "S-1-5-",
            "S-1-5-x",
            "S-1-5-+20",
            "S-1-5- 20",
            "S-1-5-4294967296",
            "S-1-281474976710656-1",
            "S-1-0x-1",
            "S-1-5-1-2-3-4-5-6-7-8-9-10-11-12-13-14-15-16",
            "NETWORK SERVICE",
        ] {
            let err = Sid::parse(bad).unwrap_err();
            assert!(err.contains("is not a SID"), "{bad}: {err}");
        }
        assert!(Sid::parse("S-1-5-1-2-3-4-5-6-7-8-9-10-11-12-13-14-15").is_ok());
    }

    #[test]
    fn every_well_known_sid_is_valid_and_canonical() {
        for p in WELL_KNOWN {
            assert_eq!(Sid::parse(p.sid).unwrap().as_str(), p.sid);
        }
    }

    #[test]
    fn well_known_names_in_any_case_and_with_their_domain() {
        let map = SidMap::default();
        for (name, sid) in [
            ("NETWORK SERVICE", "S-1-5-20"),
            ("network service", "S-1-5-20"),
            ("NT AUTHORITY\\NETWORK SERVICE", "S-1-5-20"),
            ("nt authority\\Network Service", "S-1-5-20"),
            ("LOCAL SERVICE", "S-1-5-19"),
            ("SYSTEM", "S-1-5-18"),
            ("Users", "S-1-5-32-545"),
            ("BUILTIN\\Users", "S-1-5-32-545"),
            ("Administrators", "S-1-5-32-544"),
            ("Authenticated Users", "S-1-5-11"),
            ("Everyone", "S-1-1-0"),
            ("IIS_IUSRS", "S-1-5-32-568"),
        ] {
            assert_eq!(map.resolve(name).unwrap().as_str(), sid, "{name}");
        }
        // A domain that is not the principal's own is not that principal.
        assert!(map.resolve("BUILTIN\\NETWORK SERVICE").is_err());
        assert!(map.resolve("\\Everyone").is_err());
        assert_eq!(
            well_known_by_sid(&Sid::known("S-1-5-20"))
                .unwrap()
                .qualified_name(),
            "NT AUTHORITY\\NETWORK SERVICE"
        );
        assert_eq!(
            well_known_by_sid(&Sid::everyone())
                .unwrap()
                .qualified_name(),
            "Everyone"
        );
    }

    #[test]
    fn the_map_comes_first_then_well_known_then_literal_sids() {
        let mut map = SidMap::default();
        map.insert("WSUS Admins", "sid:S-1-5-21-1-2-3-1104")
            .unwrap();
        map.insert_spec("Users = sid:S-1-5-21-1-2-3-513").unwrap();
        assert_eq!(
            map.resolve("wsus admins").unwrap().as_str(),
            "S-1-5-21-1-2-3-1104"
        );
        assert_eq!(map.resolve("USERS").unwrap().as_str(), "S-1-5-21-1-2-3-513");
        assert_eq!(
            map.resolve("sid:S-1-5-21-9-9-9-500").unwrap().as_str(),
            "S-1-5-21-9-9-9-500"
        );
        assert_eq!(
            map.name_of(&Sid::parse("S-1-5-21-1-2-3-1104").unwrap()),
            Some("WSUS Admins")
        );
        assert_eq!(map.name_of(&Sid::known("S-1-5-20")), None);
    }

    #[test]
    fn the_map_takes_only_sid_specs() {
        let mut map = SidMap::default();
        for spec in [
            "user:www-data",
            "S-1-5-20",
            "sid:",
            "sid:S-1-5-x",
            "NETWORK SERVICE",
        ] {
            let err = map.insert("X", spec).unwrap_err();
            assert!(err.contains(spec), "{spec}: {err}");
        }
        assert!(map.insert(" ", "sid:S-1-5-20").is_err());
        assert!(map.insert_spec("no-equals-sign").is_err());
        assert_eq!(map, SidMap::default());
    }

    #[test]
    fn unknown_principals_say_how_to_map_them() {
        let map = SidMap::default();
        let err = map.resolve("WSUS Admins").unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
        assert!(err.message.contains("map it to its SID"), "{}", err.message);
        assert!(err.message.contains("\"WSUS Admins\" = \"sid:S-1-5-21-"));
        let err = map.resolve("sid:S-9").unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
        assert!(err.message.contains("is not a SID"), "{}", err.message);
    }
}
