//! The server settings `get-config` and `set-config` reach, by the names
//! the contract uses (SUSDB's `tbConfigurationA`/`C` names, as the lab
//! stores them), each mapped to its `IUpdateServerConfiguration`
//! property, with its type and whether medic may write it. A name not in
//! [`SETTINGS`] is refused before anything reaches the helper, and the
//! helper script refuses any property not in its own copy of the list.

use crate::{BackendError, ErrorKind, OpResult};
use serde_json::Value;

/// How a setting's value is written in the contract and in the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingKind {
    /// `"1"`/`"0"` in the contract, a boolean in the API.
    Flag,
    /// Text, shorter than 256 characters.
    Text,
    /// A TCP port, 1 to 65535.
    Port,
    /// `host` or `host:port`: `UpstreamWsusServerName` and
    /// `UpstreamWsusServerPortNumber` together.
    ServerName,
}

/// One setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The contract's name.
    pub name: &'static str,
    /// The `IUpdateServerConfiguration` property.
    pub property: &'static str,
    pub kind: SettingKind,
    /// Why medic does not write it, when it does not.
    pub read_only: Option<&'static str>,
}

const SETUP: Option<&str> =
    Some("is set by WSUS setup and the upstream configuration, not by medic");

/// Every setting medic reads.
pub const SETTINGS: [Setting; 12] = [
    Setting {
        name: "BitsDownloadPriorityForeground",
        property: "BitsDownloadPriorityForeground",
        kind: SettingKind::Flag,
        read_only: None,
    },
    Setting {
        name: "DownloadExpressPackages",
        property: "DownloadExpressPackages",
        kind: SettingKind::Flag,
        read_only: None,
    },
    Setting {
        name: "HostOnMu",
        property: "HostBinariesOnMicrosoftUpdate",
        kind: SettingKind::Flag,
        read_only: None,
    },
    Setting {
        name: "SyncToMu",
        property: "SyncFromMicrosoftUpdate",
        kind: SettingKind::Flag,
        read_only: SETUP,
    },
    Setting {
        name: "ReplicaMode",
        property: "IsReplicaServer",
        kind: SettingKind::Flag,
        read_only: SETUP,
    },
    Setting {
        name: "UpstreamServerName",
        property: "UpstreamWsusServerName",
        kind: SettingKind::ServerName,
        read_only: None,
    },
    Setting {
        name: "UseProxy",
        property: "UseProxy",
        kind: SettingKind::Flag,
        read_only: None,
    },
    Setting {
        name: "ProxyName",
        property: "ProxyName",
        kind: SettingKind::Text,
        read_only: None,
    },
    Setting {
        name: "ProxyServerPort",
        property: "ProxyServerPort",
        kind: SettingKind::Port,
        read_only: None,
    },
    Setting {
        name: "ProxyUserName",
        property: "ProxyUserName",
        kind: SettingKind::Text,
        read_only: None,
    },
    Setting {
        name: "ProxyUserDomain",
        property: "ProxyUserDomain",
        kind: SettingKind::Text,
        read_only: None,
    },
    Setting {
        name: "HasProxyPassword",
        property: "HasProxyPassword",
        kind: SettingKind::Flag,
        read_only: Some(
            "is set by entering the password in the WSUS console; medic never handles it",
        ),
    },
];

/// The property that holds an upstream's port, written with its name.
pub const UPSTREAM_PORT_PROPERTY: &str = "UpstreamWsusServerPortNumber";

/// The setting called `name`.
pub fn setting(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// The API properties to read for `setting`.
pub fn properties(setting: &Setting) -> Vec<&'static str> {
    match setting.kind {
        SettingKind::ServerName => vec![setting.property, UPSTREAM_PORT_PROPERTY],
        _ => vec![setting.property],
    }
}

/// The contract's text for the values the API returned for `setting`.
pub fn to_text(setting: &Setting, values: &serde_json::Map<String, Value>) -> OpResult<String> {
    let value = values.get(setting.property).unwrap_or(&Value::Null);
    let odd = || {
        BackendError::new(
            ErrorKind::Failed,
            format!("the helper returned {value} for {}", setting.property),
        )
    };
    Ok(match setting.kind {
        SettingKind::Flag => match value.as_bool() {
            Some(true) => "1".into(),
            Some(false) => "0".into(),
            None => return Err(odd()),
        },
        SettingKind::Text => match value {
            Value::Null => String::new(),
            Value::String(text) => text.clone(),
            _ => return Err(odd()),
        },
        SettingKind::Port => value.as_u64().ok_or_else(odd)?.to_string(),
        SettingKind::ServerName => {
            let name = value.as_str().unwrap_or_default();
            match values.get(UPSTREAM_PORT_PROPERTY).and_then(Value::as_u64) {
                Some(port) if !name.is_empty() => format!("{name}:{port}"),
                _ => name.to_string(),
            }
        }
    })
}

/// The property changes that set `setting` to `text`, or why not.
pub fn changes(setting: &Setting, text: &str) -> OpResult<Vec<(&'static str, Value)>> {
    if let Some(why) = setting.read_only {
        return Err(BackendError::new(
            ErrorKind::Conflict,
            format!("`{}` {why}", setting.name),
        ));
    }
    let invalid = |what: String| BackendError::new(ErrorKind::InvalidArgument, what);
    Ok(match setting.kind {
        SettingKind::Flag => match text {
            "1" => vec![(setting.property, Value::Bool(true))],
            "0" => vec![(setting.property, Value::Bool(false))],
            _ => {
                return Err(invalid(format!(
                    "{} must be 0 or 1, not `{text}`",
                    setting.name
                )));
            }
        },
        SettingKind::Text => {
            if text.chars().count() >= 256 || text.chars().any(char::is_control) {
                return Err(invalid(format!(
                    "{} must be shorter than 256 characters, without control characters",
                    setting.name
                )));
            }
            vec![(setting.property, Value::String(text.to_string()))]
        }
        SettingKind::Port => match text.parse::<u16>() {
            Ok(port) if port > 0 => vec![(setting.property, Value::from(port))],
            _ => {
                return Err(invalid(format!(
                    "{} must be a port from 1 to 65535, not `{text}`",
                    setting.name
                )));
            }
        },
        SettingKind::ServerName => {
            let (host, port) = match text.rsplit_once(':') {
                Some((host, port)) => (host, port.parse::<u16>().ok().filter(|p| *p > 0)),
                None => (text, Some(8530)),
            };
            let valid_host = !host.is_empty()
                && host.len() < 256
                && host.split('.').all(|label| {
                    !label.is_empty()
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            match (valid_host, port) {
                (true, Some(port)) => vec![
                    (setting.property, Value::String(host.to_string())),
                    (UPSTREAM_PORT_PROPERTY, Value::from(port)),
                ],
                _ => {
                    return Err(invalid(format!(
                        "{} must be a host name, with an optional :port, not `{text}`",
                        setting.name
                    )));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_convert_both_ways() {
        let flag = setting("BitsDownloadPriorityForeground").unwrap();
        let values = json!({"BitsDownloadPriorityForeground": true});
        assert_eq!(to_text(flag, values.as_object().unwrap()).unwrap(), "1");
        assert_eq!(
            changes(flag, "0").unwrap(),
            [("BitsDownloadPriorityForeground", json!(false))]
        );
        assert!(changes(flag, "yes").is_err());

        let upstream = setting("UpstreamServerName").unwrap();
        let values = json!({"UpstreamWsusServerName": "wsus-up.corp.example", "UpstreamWsusServerPortNumber": 8531});
        assert_eq!(
            to_text(upstream, values.as_object().unwrap()).unwrap(),
            "wsus-up.corp.example:8531"
        );
        assert_eq!(
            changes(upstream, "wsus-up:8531").unwrap(),
            [
                ("UpstreamWsusServerName", json!("wsus-up")),
                ("UpstreamWsusServerPortNumber", json!(8531))
            ]
        );
        assert_eq!(
            changes(upstream, "wsus-up").unwrap()[1],
            ("UpstreamWsusServerPortNumber", json!(8530))
        );
        for bad in [
            "",
            "wsus up",
            "a;b",
            "host:0",
            "host:99999",
            "x'; Remove-Item C:\\ -Recurse",
        ] {
            assert_eq!(
                changes(upstream, bad).unwrap_err().kind,
                ErrorKind::InvalidArgument,
                "{bad}"
            );
        }

        let port = setting("ProxyServerPort").unwrap();
        assert_eq!(
            changes(port, "8080").unwrap(),
            [("ProxyServerPort", json!(8080))]
        );
        assert!(changes(port, "0").is_err());
        let text = setting("ProxyUserName").unwrap();
        assert!(changes(text, "svc\nwsus").is_err());
        assert!(changes(text, &"x".repeat(256)).is_err());
    }

    #[test]
    fn setup_settings_and_the_password_are_not_written() {
        for name in ["SyncToMu", "ReplicaMode", "HasProxyPassword"] {
            let err = changes(setting(name).unwrap(), "1").unwrap_err();
            assert_eq!(err.kind, ErrorKind::Conflict, "{name}");
        }
        assert!(setting("ProxyPassword").is_none());
    }
}
