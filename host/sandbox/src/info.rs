//! What a plugin says about itself, whatever contract version it was built
//! for: its name, version, the capabilities it asks for and the triggers it
//! suggests.

use crate::host::grants::Capability;

/// What `describe()` returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// Stable name, lowercase with dashes: the policy refers to it.
    pub name: String,
    pub version: String,
    pub description: String,
    /// Every capability it may use.
    pub capabilities: Vec<Capability>,
    /// The triggers it is designed for.
    pub triggers: Vec<TriggerHint>,
}

impl PluginInfo {
    /// What a plugin said about itself, cleaned and cut (see
    /// [`crate::text`]); the name is checked separately, and strictly.
    pub fn bounded(mut self) -> Self {
        use crate::text::{MAX_FIELD_BYTES, clean, clean_in_place};
        clean_in_place(&mut self.name, MAX_FIELD_BYTES);
        clean_in_place(&mut self.version, MAX_FIELD_BYTES);
        clean_in_place(&mut self.description, MAX_FIELD_BYTES);
        self.triggers.truncate(100);
        for trigger in &mut self.triggers {
            match trigger {
                TriggerHint::File(text) | TriggerHint::LogLine(text) => {
                    *text = clean(text, MAX_FIELD_BYTES)
                }
                TriggerHint::SystemEvent { source, .. } => *source = clean(source, MAX_FIELD_BYTES),
                _ => {}
            }
        }
        self
    }
}

/// A trigger a plugin suggests; the policy decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerHint {
    /// Changes under a path (or the name of the setting holding one).
    File(String),
    /// Lines of a text log matching this regular expression.
    LogLine(String),
    /// A system event with this source and event id.
    SystemEvent {
        source: String,
        id: u32,
    },
    /// Every so many seconds.
    Every(u32),
    Startup,
    Manual,
}

impl std::fmt::Display for TriggerHint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "file {path}"),
            Self::LogLine(pattern) => write!(f, "log-line /{pattern}/"),
            Self::SystemEvent { source, id } => write!(f, "system-event {source} {id}"),
            Self::Every(seconds) => write!(f, "every {seconds}s"),
            Self::Startup => f.write_str("startup"),
            Self::Manual => f.write_str("manual"),
        }
    }
}
