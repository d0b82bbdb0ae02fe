//! `log`: plugin messages into the agent's tracing, tagged with plugin and
//! run, and kept with the run's record.

use super::{MAX_LOGS_PER_RUN, PluginLog, RunState};

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
    pub(crate) fn log(&mut self, level: Level, message: String) {
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
        if self.logs.len() < MAX_LOGS_PER_RUN {
            self.logs.push(PluginLog {
                level: name.to_string(),
                message,
            });
        } else {
            self.dropped_logs += 1;
        }
    }
}

impl RunState {
    /// The plugin says it panicked: remember why, for the run's failure,
    /// and log it.
    pub(crate) fn panicked(&mut self, message: String) {
        self.log(Level::Error, format!("panic: {message}"));
        self.panic = Some(message);
    }
}
