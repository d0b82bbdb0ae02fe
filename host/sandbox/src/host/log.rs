//! `log`: plugin messages into the agent's tracing, tagged with plugin and
//! run, and kept with the run's record.

use super::output::Stream;
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
        let name = match level {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        let Some(message) = self.keep_log(name, message) else {
            return;
        };
        let (plugin, run) = (self.plugin.as_str(), self.run_id.as_str());
        match level {
            Level::Trace => tracing::trace!(plugin, run, "{message}"),
            Level::Debug => tracing::debug!(plugin, run, "{message}"),
            Level::Info => tracing::info!(plugin, run, "{message}"),
            Level::Warn => tracing::warn!(plugin, run, "{message}"),
            Level::Error => tracing::error!(plugin, run, "{message}"),
        }
    }

    /// Turn what the plugin wrote to standard output and error into log
    /// lines (`stdout` at info, `stderr` at warn in the agent's log), within
    /// the same budget as its messages. Called once, when the run ends.
    pub(crate) fn log_output(&mut self) {
        let Some(output) = self.output.take() else {
            return;
        };
        for (stream, captured) in [
            (Stream::Stdout, &output.stdout),
            (Stream::Stderr, &output.stderr),
        ] {
            for line in captured.lines() {
                let Some(message) = self.keep_log(stream.as_str(), line) else {
                    continue;
                };
                let (plugin, run) = (self.plugin.as_str(), self.run_id.as_str());
                match stream {
                    Stream::Stdout => tracing::info!(plugin, run, stream = "stdout", "{message}"),
                    Stream::Stderr => tracing::warn!(plugin, run, stream = "stderr", "{message}"),
                }
            }
        }
        self.output = Some(output);
    }

    /// Keep one log line under `name` (a level, or the stream it came
    /// from): cleaned and cut; `None` past the run's budget, where it is
    /// only counted.
    fn keep_log(&mut self, name: &str, message: String) -> Option<String> {
        if self.logs.len() >= MAX_LOGS_PER_RUN || self.log_bytes >= MAX_LOG_BYTES_PER_RUN {
            self.dropped_logs += 1;
            return None;
        }
        let message = clean(&message, MAX_MESSAGE_BYTES);
        self.log_bytes += message.len();
        self.logs.push(PluginLog {
            level: name.to_string(),
            message: message.clone(),
        });
        Some(message)
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
