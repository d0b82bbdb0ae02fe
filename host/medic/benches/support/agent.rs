//! The agent as a process, for the benchmarks that measure it: `medic run`
//! on a policy, its JSON log read for readiness and reloads, its memory
//! read from `/proc` (as any process's, [`memory_kib`]). Stopped (SIGTERM, then waited for) when dropped.

#![allow(dead_code, reason = "each benchmark uses the part it measures")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    /// `medic run --policy POLICY` in `dir`, its log (JSON, info) in
    /// `log`; returns once it logs `agent ready`, with the time from
    /// spawn to that line.
    pub fn start(dir: &Path, policy: &str, log: PathBuf) -> (Self, Duration) {
        let started = Instant::now();
        let child = Command::new(env!("CARGO_BIN_EXE_medic"))
            .args(["run", "--policy", policy, "--log", "info"])
            .args(["--log-format", "json"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let agent = Self { child, log };
        agent.wait_for_lines(&["agent ready"], 1, Duration::from_secs(600));
        (agent, started.elapsed())
    }

    /// How many lines of the log hold every one of `texts`.
    pub fn count(&self, texts: &[&str]) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|line| texts.iter().all(|t| line.contains(t)))
            .count()
    }

    /// Wait until `n` lines of the log hold every one of `texts`. Polls
    /// every half millisecond for the first second, then every 10 ms (a
    /// long compile is not slowed by the polling).
    pub fn wait_for_lines(&self, texts: &[&str], n: usize, limit: Duration) {
        let started = Instant::now();
        while self.count(texts) < n {
            assert!(
                started.elapsed() < limit,
                "no {n} lines with {texts:?} in the agent's log {} within {limit:?}",
                self.log.display()
            );
            std::thread::sleep(if started.elapsed() < Duration::from_secs(1) {
                Duration::from_micros(500)
            } else {
                Duration::from_millis(10)
            });
        }
    }

    /// The agent's resident memory, KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        self.memory_kib("VmRSS")
    }

    /// A figure of the agent's `/proc/PID/status` ([`memory_kib`]).
    pub fn memory_kib(&self, field: &str) -> u64 {
        memory_kib(&self.child.id().to_string(), field)
    }

    /// How many compiled components of at least 1 MiB the agent has
    /// mapped: executable mappings that are anonymous or a cache entry's
    /// file (its own code is the binary's).
    pub fn code_maps(&self) -> usize {
        std::fs::read_to_string(format!("/proc/{}/maps", self.child.id()))
            .unwrap()
            .lines()
            .filter(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let size = fields[0].split_once('-').map_or(0, |(start, end)| {
                    let at = |hex| u64::from_str_radix(hex, 16).unwrap_or(0);
                    at(end).saturating_sub(at(start))
                });
                // Code compiled in the agent is anonymous memory; code
                // from the cache is its entry's file, mapped.
                let path = fields.get(5..).map_or(String::new(), |rest| rest.join(" "));
                fields[1] == "r-xp"
                    && size >= 1 << 20
                    && (path.is_empty() || path.contains(".cwasm"))
            })
            .count()
    }
}

/// A memory figure of process `pid` (`self` for this one), KiB, as
/// `/proc/PID/status` gives it: `VmRSS` (resident now) or `VmHWM` (its
/// peak).
pub fn memory_kib(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} for process {pid}"))
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}
