//! `log`: plugin messages into the agent's tracing, tagged with plugin and
//! run, and kept with the run's record.

use super::{PluginLog, RunState};
use crate::text::{MAX_MESSAGE_BYTES, clean};

/// Messages kept (and written to the agent's log) per run.
const MAX_LOGS_PER_RUN: usize = 200;
/// Bytes of messages kept per run.
const MAX_LOG_BYTES_PER_RUN: usize = 64 * 1024;

/// How important a plugin's message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl RunState {
    /// Log a plugin's message: cleaned and cut, and within the run's
    /// budget; past it, messages are only counted (they reach neither the
    /// agent's log nor the record), so a plugin cannot flood either.
    pub(crate) fn log(&mut self, level: Level, message: String) {
        if self.logs.len() >= MAX_LOGS_PER_RUN || self.log_bytes >= MAX_LOG_BYTES_PER_RUN {
            self.dropped_logs += 1;
            return;
        }
        let message = clean(&message, MAX_MESSAGE_BYTES);
        self.log_bytes += message.len();
        let (plugin, run) = (self.plugin.as_str(), self.run_id.as_str());
        let name = match level {
            Level::Trace => {
                tracing::trace!(plugin, run, "{message}");
                "trace"
            }
            Level::Debug => {
                tracing::debug!(plugin, run, "{message}");
                "debug"
            }
            Level::Info => {
                tracing::info!(plugin, run, "{message}");
                "info"
            }
            Level::Warn => {
                tracing::warn!(plugin, run, "{message}");
                "warn"
            }
            Level::Error => {
                tracing::error!(plugin, run, "{message}");
                "error"
            }
        };
        self.logs.push(PluginLog {
            level: name.to_string(),
            message,
        });
    }
}

impl RunState {
    /// The plugin says it panicked: remember why, for the run's failure,
    /// and log it.
    pub(crate) fn panicked(&mut self, message: String) {
        let message = clean(&message, MAX_MESSAGE_BYTES);
        self.log(Level::Error, format!("panic: {message}"));
        self.panic = Some(message);
    }
}
