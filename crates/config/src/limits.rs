//! `plugins:`: the sandbox limits every plugin of a pipeline runs under (the
//! sandbox that enforces them is `sluice_wasm`).

use std::time::Duration;

use serde::Deserialize;

use crate::{de_bytes, de_duration};

/// Per-call and per-instance limits, from the pipeline's `plugins:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginLimits {
    /// Longest a single plugin call may run before it is interrupted.
    #[serde(deserialize_with = "de_duration")]
    pub call_timeout: Duration,
    /// Largest linear memory one plugin instance may grow to, in bytes.
    #[serde(deserialize_with = "de_bytes")]
    pub memory_limit: u64,
    /// Optional fuel (roughly, wasm instructions) per call: a deterministic
    /// limit, at some cost in speed, for when wall-clock limits are not wanted.
    pub fuel: Option<u64>,
    /// Consecutive failed calls after which an aggregation is quarantined:
    /// its plugin is no longer called and its results carry an error until
    /// the run ends. `0` never quarantines.
    ///
    /// A count of consecutive failures rather than failures per second keeps
    /// the output a function of the input alone (for deterministic failures),
    /// and still stops a plugin that fails on every window from costing a
    /// fresh instance and a restore of every open window each time.
    pub quarantine_after: u32,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(1),
            memory_limit: 64 << 20,
            fuel: None,
            quarantine_after: 5,
        }
    }
}

impl PluginLimits {
    /// The memory limit as people write it (`64 MiB`), for error messages.
    pub fn memory_limit_text(&self) -> String {
        const MIB: u64 = 1 << 20;
        if self.memory_limit >= MIB && self.memory_limit.is_multiple_of(MIB) {
            format!("{} MiB", self.memory_limit / MIB)
        } else {
            format!("{} bytes", self.memory_limit)
        }
    }
}
