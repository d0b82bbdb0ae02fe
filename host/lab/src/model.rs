//! The lab's vocabulary and how its rows are stored: the two servers,
//! update and service states, and the fixed-width encoding of the values
//! in its tables (names follow SUSDB where it has one).

use serde::{Deserialize, Serialize};

/// One of the lab's two servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Server {
    /// Synchronizes from Microsoft Update (simulated: it publishes).
    Upstream,
    /// Synchronizes from the upstream; the server the agent runs on.
    Downstream,
}

impl Server {
    pub const ALL: [Server; 2] = [Server::Upstream, Server::Downstream];

    /// Prefix of its tables in the lab database.
    pub fn key(self) -> &'static str {
        match self {
            Self::Upstream => "upstream",
            Self::Downstream => "downstream",
        }
    }

    /// Its host name.
    pub fn host_name(self) -> &'static str {
        match self {
            Self::Upstream => "wsus-up01.lab.example",
            Self::Downstream => "wsus-ds01.lab.example",
        }
    }
}

/// How the downstream relates to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    Replica,
    Autonomous,
}

impl SyncMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Replica => "replica",
            Self::Autonomous => "autonomous",
        }
    }
}

/// The states of an update's files on a server (`IUpdate` states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum UpdateState {
    NotReady = 0,
    Ready = 1,
    Failed = 2,
    Canceled = 3,
    LicenseAgreementFailed = 4,
    InstallationImpossible = 5,
}

impl UpdateState {
    pub const ALL: [UpdateState; 6] = [
        Self::NotReady,
        Self::Ready,
        Self::Failed,
        Self::Canceled,
        Self::LicenseAgreementFailed,
        Self::InstallationImpossible,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::NotReady => "NotReady",
            Self::Ready => "Ready",
            Self::Failed => "Failed",
            Self::Canceled => "Canceled",
            Self::LicenseAgreementFailed => "LicenseAgreementFailed",
            Self::InstallationImpossible => "InstallationImpossible",
        }
    }

    fn from_bits(bits: u8) -> Self {
        Self::ALL
            .into_iter()
            .find(|s| *s as u8 == bits)
            .unwrap_or(Self::NotReady)
    }
}

/// An update's state and whether it is declined: `tbUpdateStatus` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateStatus {
    pub state: UpdateState,
    pub declined: bool,
}

impl UpdateStatus {
    const DECLINED: u8 = 0x10;

    pub fn encode(self) -> u8 {
        self.state as u8 | if self.declined { Self::DECLINED } else { 0 }
    }

    pub fn decode(bits: u8) -> Self {
        Self {
            state: UpdateState::from_bits(bits & 0x0f),
            declined: bits & Self::DECLINED != 0,
        }
    }
}

/// An update's metadata: `tbUpdate` values (its revision, catalog indexes
/// and its one file, whose name is the SHA-1 of its content).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateMeta {
    pub revision: u32,
    pub kb: u32,
    /// Index into `tbProduct`.
    pub product: u8,
    /// Index into `tbClassification`.
    pub classification: u8,
    /// 0: language-neutral; otherwise 1 + index into `tbLanguage`.
    pub language: u8,
    /// Index into [`super::catalog::EXTENSIONS`].
    pub extension: u8,
    pub sha1: [u8; 20],
}

impl UpdateMeta {
    pub const LEN: usize = 32;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[0..4].copy_from_slice(&self.revision.to_le_bytes());
        out[4..8].copy_from_slice(&self.kb.to_le_bytes());
        out[8] = self.product;
        out[9] = self.classification;
        out[10] = self.language;
        out[11] = self.extension;
        out[12..32].copy_from_slice(&self.sha1);
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != Self::LEN {
            return None;
        }
        let mut sha1 = [0u8; 20];
        sha1.copy_from_slice(&bytes[12..32]);
        Some(Self {
            revision: u32::from_le_bytes(bytes[0..4].try_into().ok()?),
            kb: u32::from_le_bytes(bytes[4..8].try_into().ok()?),
            product: bytes[8],
            classification: bytes[9],
            language: bytes[10],
            extension: bytes[11],
            sha1,
        })
    }
}

/// A lab service's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceState {
    Stopped,
    Running,
}

/// How a lab service starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartupType {
    Automatic,
    /// "Automatic (Delayed Start)": BITS's own choice while it has jobs.
    AutomaticDelayed,
    Manual,
    Disabled,
}

impl StartupType {
    /// As the Service Control Manager words it in event 7040.
    pub fn scm_text(self) -> &'static str {
        match self {
            // The SCM words a delayed automatic start as "auto start" too.
            Self::Automatic | Self::AutomaticDelayed => "auto start",
            Self::Manual => "demand start",
            Self::Disabled => "disabled",
        }
    }
}

/// A service's state and startup type: `tbService` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceRow {
    pub state: ServiceState,
    pub startup: StartupType,
}

impl ServiceRow {
    pub fn encode(self) -> u8 {
        let state = match self.state {
            ServiceState::Stopped => 0,
            ServiceState::Running => 1,
        };
        let startup = match self.startup {
            StartupType::Automatic => 0,
            StartupType::Manual => 1,
            StartupType::Disabled => 2,
            StartupType::AutomaticDelayed => 3,
        };
        state | startup << 4
    }

    pub fn decode(bits: u8) -> Self {
        Self {
            state: if bits & 0x0f == 1 {
                ServiceState::Running
            } else {
                ServiceState::Stopped
            },
            startup: match bits >> 4 {
                0 => StartupType::Automatic,
                1 => StartupType::Manual,
                3 => StartupType::AutomaticDelayed,
                _ => StartupType::Disabled,
            },
        }
    }
}

/// The services of a WSUS server: short name and display name.
pub const SERVICES: [(&str, &str); 3] = [
    ("BITS", "Background Intelligent Transfer Service"),
    ("WsusService", "WSUS Service"),
    ("W3SVC", "World Wide Web Publishing Service"),
];

/// How a synchronization ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncResult {
    Succeeded,
    Failed,
    Canceled,
}

/// One synchronization: `tbSyncHistory` values (JSON). Its result covers
/// the catalog, as a real server's does; the content pass that follows is
/// counted beside it (what a console shows as download status), and does
/// not change the result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRecord {
    pub started_ms: u64,
    pub finished_ms: u64,
    pub result: SyncResult,
    /// The `SynchronizationError` member, e.g. `UssNotFound`.
    #[serde(default)]
    pub error: Option<String>,
    pub reason: Option<String>,
    /// Updates new to this server.
    pub imported: u32,
    /// Content files downloaded.
    pub downloaded: u32,
    /// Content files that failed to download.
    pub download_failures: u32,
    /// Why the first of them failed.
    #[serde(default)]
    pub first_download_failure: Option<String>,
}

impl SyncRecord {
    /// A record of a sync that starts at `started_ms` and, so far, succeeds.
    pub fn begun(started_ms: u64) -> Self {
        Self {
            started_ms,
            finished_ms: started_ms,
            result: SyncResult::Succeeded,
            error: None,
            reason: None,
            imported: 0,
            downloaded: 0,
            download_failures: 0,
            first_download_failure: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip() {
        let meta = UpdateMeta {
            revision: 204,
            kb: 5_034_127,
            product: 3,
            classification: 1,
            language: 2,
            extension: 1,
            sha1: [0xcc; 20],
        };
        assert_eq!(UpdateMeta::decode(&meta.encode()), Some(meta));
        assert_eq!(UpdateMeta::decode(&[0; 3]), None);
        for state in UpdateState::ALL {
            for declined in [false, true] {
                let status = UpdateStatus { state, declined };
                assert_eq!(UpdateStatus::decode(status.encode()), status);
            }
        }
        for state in [ServiceState::Stopped, ServiceState::Running] {
            for startup in [
                StartupType::Automatic,
                StartupType::AutomaticDelayed,
                StartupType::Manual,
                StartupType::Disabled,
            ] {
                let row = ServiceRow { state, startup };
                assert_eq!(ServiceRow::decode(row.encode()), row);
            }
        }
    }
}
