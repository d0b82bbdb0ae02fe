//! Per-plugin limits: wall-clock timeout (enforced by epoch interruption),
//! memory cap (enforced by a resource limiter), optional fuel, a cap on
//! host calls per run, and the plugin's state quota.

use serde::Serialize;
use std::time::Duration;

/// Limits of one plugin's runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The run is killed when it has not finished after this long.
    pub timeout: Duration,
    /// Linear memory a run may grow to, in bytes.
    pub memory_bytes: usize,
    /// Instructions' worth of fuel a run may burn; unlimited when `None`.
    pub fuel: Option<u64>,
    /// Host calls a run may make before it is killed.
    pub max_host_calls: usize,
    /// Bytes of keys and values the plugin may keep in its state, across
    /// runs; a write past it fails (the plugin sees the error).
    pub state_quota_bytes: u64,
}

/// The state quota when the policy sets none.
pub const DEFAULT_STATE_QUOTA_BYTES: u64 = 1 << 20;

/// The largest memory cap a policy may set.
pub const MAX_MEMORY_BYTES: usize = 1 << 30;

/// The smallest memory cap a policy may set.
pub const MIN_MEMORY_BYTES: usize = 1 << 20;

/// The shortest timeout a run may have.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(10);

/// A limit outside what the sandbox accepts. Both the policy and
/// `medic trigger` check their limits with [`Limits::check_timeout`] and
/// [`Limits::check_memory`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("the timeout is below {}ms; give the plugin at least that", MIN_TIMEOUT.as_millis())]
    TimeoutTooShort,
    #[error("the memory cap {} is out of range; use from 1MiB to 1GiB", mib(*.0))]
    MemoryOutOfRange(usize),
}

impl Limits {
    pub fn check_timeout(timeout: Duration) -> Result<Duration, LimitError> {
        if timeout < MIN_TIMEOUT {
            Err(LimitError::TimeoutTooShort)
        } else {
            Ok(timeout)
        }
    }

    pub fn check_memory(bytes: usize) -> Result<usize, LimitError> {
        if (MIN_MEMORY_BYTES..=MAX_MEMORY_BYTES).contains(&bytes) {
            Ok(bytes)
        } else {
            Err(LimitError::MemoryOutOfRange(bytes))
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            memory_bytes: 64 << 20,
            fuel: None,
            max_host_calls: 100_000,
            state_quota_bytes: DEFAULT_STATE_QUOTA_BYTES,
        }
    }
}

/// Enforces the memory cap and remembers whether it was hit, so a run that
/// ends because of it is reported as such rather than as a bare trap, and
/// how far the memory went.
#[derive(Debug, Clone)]
pub struct MemoryLimiter {
    pub cap: usize,
    pub exceeded: Option<usize>,
    pub usage: MemoryUsage,
}

/// The linear memory of a run's instance: how often a memory that had
/// pages grew (a memory's first pages, given at instantiation, are no
/// growth), and the largest size a memory was allowed to reach, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MemoryUsage {
    pub grows: u32,
    pub peak_bytes: usize,
}

impl MemoryLimiter {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            exceeded: None,
            usage: MemoryUsage::default(),
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.exceeded = Some(desired);
            return Err(wasmtime::format_err!(
                "memory cap of {} MiB exceeded: the plugin asked for {} MiB",
                self.cap >> 20,
                desired >> 20
            ));
        }
        if current > 0 {
            self.usage.grows = self.usage.grows.saturating_add(1);
        }
        self.usage.peak_bytes = self.usage.peak_bytes.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// Format bytes as MiB for messages.
pub fn mib(bytes: usize) -> String {
    format!("{} MiB", bytes >> 20)
}
