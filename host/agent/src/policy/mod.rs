//! The policy: one TOML file holding the agent's settings, the backend, and
//! per plugin its component, triggers, mode, grants, limits, rate limits,
//! flap guard, concurrency, settings and the keys its component must be
//! signed with.
//!
//! Parsing collects every error it can find, each with the file, line and
//! column and the fix, instead of stopping at the first one: a TOML syntax
//! error stops only the section it is in, a key with a problem (unknown,
//! or of the wrong type) is left out and the rest of its table read, and a
//! bad plugin does not hide the errors of the others. Each error is tagged
//! with the plugin table it is in, so a serving read
//! ([`Policy::load_serving`]) can set aside a bad table and keep the rest.
//! Checks that need the components themselves (do they load, are their
//! grants enough) are in [`crate::loading`], which also checks what can be
//! of a table with problems ([`Reading::partial`]); the `[backend]` table
//! is kept as written and checked by the caller's
//! [`crate::BackendCatalog`].

mod check;
mod diff;
mod parse;
mod trust;

pub use check::{Probe, SystemProbe};
pub use diff::{PluginChange, PolicyDiff};
pub use parse::{resolve, setting_value};
pub use trust::{KeyEntryError, Trust, read_key};

use medic_sandbox::{Grants, Limits, Mode, Settings};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem has no place in the file.
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// What to do about it.
    pub fix: String,
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )?;
        } else {
            write!(f, "{}: {}", self.file.display(), self.message)?;
        }
        if !self.fix.is_empty() {
            write!(f, "\n    fix: {}", self.fix)?;
        }
        Ok(())
    }
}

/// Every problem found in a policy file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl std::fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (n, error) in self.0.iter().enumerate() {
            if n > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        write!(
            f,
            "\n{} problem{} found",
            self.0.len(),
            if self.0.len() == 1 { "" } else { "s" }
        )
    }
}

/// One problem found, with the plugin table it is in (`None`: outside the
/// plugin tables: the file, `[agent]` or `[backend]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub plugin: Option<String>,
    pub error: PolicyError,
}

/// A policy read to report every problem in it, what `medic check` wants:
/// the plugins whose tables are valid, every problem, and what could be
/// read of the tables with problems, so that their components are checked
/// in the same round.
#[derive(Debug, Clone)]
pub struct Reading {
    /// The policy with the plugins whose tables are valid.
    pub policy: Policy,
    /// Every problem found, in the order found.
    pub problems: Vec<Problem>,
    /// The plugin tables with problems whose components can still be
    /// checked: named, there, and with the keys they must be signed with
    /// read.
    pub partial: Vec<PartialPlugin>,
    /// `[agent]`'s `trusted_keys` and `require_signatures` had no problem:
    /// the signatures of the plugins that use them can be checked as the
    /// policy means them to be (and their components then run).
    pub trust_read: bool,
}

impl Reading {
    /// The problems outside the plugin tables: any refuses the policy.
    pub fn outside(&self) -> Vec<PolicyError> {
        self.problems
            .iter()
            .filter(|p| p.plugin.is_none())
            .map(|p| p.error.clone())
            .collect()
    }

    /// The plugin tables with problems, each with its problems in the
    /// order found.
    pub fn set_aside(&self) -> Vec<SetAside> {
        let mut set_aside: Vec<SetAside> = Vec::new();
        for Problem { plugin, error } in &self.problems {
            let Some(plugin) = plugin else { continue };
            match set_aside.iter_mut().find(|s| &s.plugin == plugin) {
                Some(entry) => entry.errors.push(error.clone()),
                None => set_aside.push(SetAside {
                    plugin: plugin.clone(),
                    errors: vec![error.clone()],
                }),
            }
        }
        set_aside
    }

    /// Every problem, in the order found.
    pub fn every_problem(&self) -> PolicyErrors {
        PolicyErrors(self.problems.iter().map(|p| p.error.clone()).collect())
    }
}

/// A `[plugins.<name>]` table with problems, as far as it could be read:
/// defaults stand where a value had a problem.
#[derive(Debug, Clone)]
pub struct PartialPlugin {
    pub policy: PluginPolicy,
    /// Its grants had no problem: what the component asks for can be
    /// checked against them.
    pub grants_read: bool,
}

/// A policy read for serving: the plugins whose tables are valid, and the
/// tables set aside with their problems.
#[derive(Debug, Clone)]
pub struct ServingPolicy {
    pub policy: Policy,
    pub set_aside: Vec<SetAside>,
}

/// A `[plugins.<name>]` table with problems, left out of the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    /// The table's key, as written.
    pub plugin: String,
    /// Every problem found in the table, in the order found.
    pub errors: Vec<PolicyError>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// The `[agent]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSettings {
    /// The embedded store, the log offsets, the inbox of manual events.
    pub state_dir: PathBuf,
    /// Where components are loaded from (and watched for new versions).
    pub plugin_dir: PathBuf,
    /// Compiled components; `None`: `<state_dir>/cache`.
    pub cache_dir: PathBuf,
    pub log_format: LogFormat,
    /// Plugin runs in flight at once, across all plugins.
    pub max_concurrent_runs: usize,
    /// Events waiting per plugin before new ones are dropped (and counted).
    pub queue_capacity: usize,
}

/// The `[backend]` table as written: which kind of backend, and its keys.
/// The caller's [`crate::BackendCatalog`] knows the kinds and checks them.
/// Two are equal when they select the same backend, wherever they are in
/// the file.
#[derive(Debug, Clone)]
pub struct BackendSection {
    /// The policy file, for messages.
    pub file: PathBuf,
    /// The policy's folder: relative paths in the table are under it.
    pub base: PathBuf,
    /// `kind`; `local` when the table or the key is missing.
    pub kind: String,
    /// Every other key with its value.
    pub settings: BTreeMap<String, toml::Value>,
    /// Where each key (and `kind`) is, for messages.
    pub lines: BTreeMap<String, (usize, usize)>,
    /// Where the table is (its header), or where one would go: the place
    /// of a problem with a key that is missing.
    pub table: (usize, usize),
}

impl PartialEq for BackendSection {
    fn eq(&self, other: &Self) -> bool {
        self.base == other.base && self.kind == other.kind && self.settings == other.settings
    }
}

impl BackendSection {
    /// A problem with the key `key` (or the table, when it has none).
    pub fn error(
        &self,
        key: &str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> PolicyError {
        let (line, column) = self.lines.get(key).copied().unwrap_or(self.table);
        PolicyError {
            file: self.file.clone(),
            line,
            column,
            message: message.into(),
            fix: fix.into(),
        }
    }

    /// A path setting, resolved against the policy's folder.
    pub fn path(&self, raw: &str) -> PathBuf {
        resolve(&self.base, raw)
    }
}

/// Which file changes a `file` trigger reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileChange {
    Create,
    Modify,
    Attribute,
    Remove,
}

impl FileChange {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Modify => "modify",
            Self::Attribute => "attribute",
            Self::Remove => "remove",
        }
    }
}

/// A regular expression from the policy; two are equal when written the
/// same.
#[derive(Debug, Clone)]
pub struct Pattern(regex::Regex);

impl Pattern {
    pub fn new(text: &str) -> Result<Self, regex::Error> {
        regex::Regex::new(text).map(Self)
    }

    pub fn regex(&self) -> &regex::Regex {
        &self.0
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

/// Where an `event_log` trigger reads its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventSource {
    /// A JSON-lines event journal file, such as the lab writes (`path`).
    Journal { path: PathBuf },
    /// A Windows event log channel such as `Application` (`channel`);
    /// read only on Windows.
    Channel { name: String },
}

/// Which systemd journal entries a `journal` trigger takes: those of one
/// of the units, at the priority or more urgent, with one of the
/// identifiers (each when given). journalctl is asked for them, and each
/// entry it gives is checked again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct JournalMatch {
    /// Full unit names (`nginx.service`): a unit's own entries
    /// (`_SYSTEMD_UNIT`) and systemd's about it (`UNIT`, written by PID 1).
    pub units: Vec<String>,
    /// The least urgent priority taken (`err`: emerg, alert, crit and err).
    pub priority: Option<crate::triggers::journal::Priority>,
    /// `SYSLOG_IDENTIFIER`s.
    pub identifiers: Vec<String>,
    /// A journal folder read instead of the system's journal, as
    /// `journalctl --directory` reads it (a container's journal).
    pub directory: Option<PathBuf>,
}

/// What wakes a plugin.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// Changes under a path (recursive for directories).
    File {
        path: PathBuf,
        changes: Vec<FileChange>,
        debounce: Duration,
        /// One event for the whole watched tree (subject: the watched path,
        /// the changed paths in the `paths` field) instead of one per path:
        /// for plugins that always check the whole tree.
        whole_tree: bool,
    },
    /// New lines of a text log matching a regex.
    Log {
        path: PathBuf,
        pattern: Pattern,
        /// The longest line taken whole: longer ones are cut and marked.
        max_line: usize,
    },
    /// New event log entries, from a JSON-lines journal or a Windows
    /// channel, that have this source, one of these ids and a message
    /// matching the pattern (each when given).
    EventLog {
        from: EventSource,
        /// The longest line (a journal's) or message (a channel's) taken
        /// whole: longer ones are cut and marked.
        max_line: usize,
        /// The source name (a Windows event's provider).
        source: Option<String>,
        ids: Vec<u32>,
        message: Option<Pattern>,
    },
    /// New entries of the systemd journal (Linux) that match, with a
    /// message matching the pattern (when given).
    Journal {
        matching: JournalMatch,
        message: Option<Pattern>,
        /// The longest message taken whole: longer ones are cut and marked.
        max_line: usize,
    },
    /// Every interval.
    Every { interval: Duration },
    /// Once when the agent starts, and when a reload adds the plugin or
    /// changes its triggers.
    Startup,
    /// On `medic send`.
    Manual,
}

impl Trigger {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::File { .. } => "file",
            Self::Log { .. } => "log",
            Self::EventLog { .. } => "event_log",
            Self::Journal { .. } => "journal",
            Self::Every { .. } => "every",
            Self::Startup => "startup",
            Self::Manual => "manual",
        }
    }
}

/// Rate limits of one plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// At most this many runs per `window`.
    pub max_runs: u32,
    pub window: Duration,
    /// At least this long between two runs.
    pub cooldown: Duration,
}

/// "At most N mutating runs in W, then stop acting, record why, and alert".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlapGuard {
    pub max_mutating_runs: u32,
    pub within: Duration,
}

/// One `[plugins.<name>]` table. Two are equal when they mean the same,
/// wherever the table is in the file.
#[derive(Debug, Clone)]
pub struct PluginPolicy {
    /// The table's key; must be the name the component describes itself
    /// with.
    pub name: String,
    /// The component file (relative paths are under the plugin directory).
    pub component: PathBuf,
    pub mode: Mode,
    pub triggers: Vec<Trigger>,
    pub grants: Grants,
    pub limits: Limits,
    pub rate: Option<RateLimit>,
    pub flap_guard: Option<FlapGuard>,
    /// Runs of this plugin in flight at once.
    pub concurrency: usize,
    pub settings: Settings,
    /// The keys its component must be signed with, and whether it must be.
    pub trust: Trust,
    /// Where the plugin's table starts, for messages.
    pub line: usize,
}

impl PartialEq for PluginPolicy {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && PluginChange::between(self, other).is_none()
    }
}

/// A whole policy, validated.
#[derive(Debug, Clone)]
pub struct Policy {
    pub file: PathBuf,
    pub agent: AgentSettings,
    /// `[agent] trusted_keys` and `require_signatures`: the trust of every
    /// plugin without keys of its own. Unlike the rest of `[agent]`, it is
    /// taken at a reload (through each plugin's [`PluginPolicy::trust`]).
    pub trust: Trust,
    pub backend: BackendSection,
    pub plugins: Vec<PluginPolicy>,
}

impl Policy {
    /// Read and validate a policy file.
    pub fn load(file: &Path) -> Result<Self, PolicyErrors> {
        Self::load_with(file, &mut |_| Vec::new())
    }

    /// Read and validate a policy file, checking its `[backend]` table with
    /// `check_backend` even when other parts have errors, so that every
    /// problem is reported at once.
    pub fn load_with(
        file: &Path,
        check_backend: &mut dyn FnMut(&BackendSection) -> Vec<PolicyError>,
    ) -> Result<Self, PolicyErrors> {
        let bytes = read_policy(file)?;
        Self::parse_bytes_with(file, &bytes, &SystemProbe, check_backend)
    }

    /// As [`Policy::load`], but a plugin table with problems is set aside
    /// and the rest returned: what an agent serves, and where it keeps its
    /// state.
    pub fn load_serving(file: &Path) -> Result<ServingPolicy, PolicyErrors> {
        Self::load_serving_with(file, &mut |_| Vec::new())
    }

    /// Read a policy file to report every problem in it (see
    /// [`Policy::parse_reading_with`]); an error only when it cannot be
    /// read or is not UTF-8 text.
    pub fn load_reading_with(
        file: &Path,
        check_backend: &mut dyn FnMut(&BackendSection) -> Vec<PolicyError>,
    ) -> Result<Reading, PolicyErrors> {
        let bytes = read_policy(file)?;
        Self::parse_reading_with(file, &bytes, &SystemProbe, check_backend)
    }

    /// As [`Policy::load_with`], but a plugin table with problems is set
    /// aside and the rest returned (see [`Policy::parse_serving_with`]).
    pub fn load_serving_with(
        file: &Path,
        check_backend: &mut dyn FnMut(&BackendSection) -> Vec<PolicyError>,
    ) -> Result<ServingPolicy, PolicyErrors> {
        let bytes = read_policy(file)?;
        Self::parse_serving_with(file, &bytes, &SystemProbe, check_backend)
    }
}

/// The largest policy file medic reads: a policy is a page or two of
/// TOML; anything near this is not one.
pub const MAX_POLICY_BYTES: u64 = 4 << 20;

/// A policy file's bytes, at most [`MAX_POLICY_BYTES`] of them.
fn read_policy(file: &Path) -> Result<Vec<u8>, PolicyErrors> {
    read_policy_bytes(file).map_err(|(message, fix)| {
        PolicyErrors(vec![PolicyError {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            message,
            fix: fix.into(),
        }])
    })
}

/// [`read_policy`]; on failure the message and the fix.
fn read_policy_bytes(file: &Path) -> Result<Vec<u8>, (String, &'static str)> {
    use std::io::Read;
    let cannot = |e: std::io::Error| {
        (
            format!("cannot read the policy: {e}"),
            "check the path given to --policy",
        )
    };
    let opened = std::fs::File::open(file).map_err(cannot)?;
    let mut bytes = Vec::new();
    opened
        .take(MAX_POLICY_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_POLICY_BYTES {
        return Err((
            format!(
                "the policy is larger than the largest policy medic reads, {} MiB",
                MAX_POLICY_BYTES >> 20
            ),
            "give --policy the policy's TOML file",
        ));
    }
    Ok(bytes)
}
