//! `plugins:`: the sandbox limits every plugin of a pipeline runs under (the
//! sandbox that enforces them is `sluice_wasm`; `docs/plugins/sandbox.md`
//! says what happens when each is hit).

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
    /// Largest snapshot one accumulator or window trigger may return, in
    /// bytes. Snapshots are copied into checkpoints and kept per open
    /// window, so a plugin returning tens of MiB per window multiplies the
    /// host's memory and the state directory by the number of windows; a
    /// larger snapshot is a failed call.
    #[serde(deserialize_with = "de_bytes")]
    pub snapshot_limit: u64,
    /// Most timers (event-time and processing-time) one window's trigger
    /// may have pending at once, and most calls for event-time timers one
    /// window gets in one advance of the watermark. A trigger that asks for
    /// more fails for that window, which then fires by the host's rule.
    pub timers_per_window: u32,
    /// Longest text a plugin can put into a log line or a result record (an
    /// error message, a line it prints), in bytes; longer text is cut, with
    /// a marker giving its length.
    #[serde(deserialize_with = "de_bytes")]
    pub message_limit: u64,
    /// Lines of a plugin's stdout and stderr logged per second, on average,
    /// per aggregation (bursts of ten seconds' worth); lines beyond are
    /// counted, not logged. `0` logs none.
    pub log_lines_per_second: u32,
    /// Compile plugins of up to 4 MiB with inlining: their calls run
    /// 1.2-1.6x faster, and each compile (once per plugin version, with the
    /// compile cache) takes about four times as long and some 270 MiB more
    /// memory while it runs. Off by default, so that a first start needs
    /// little memory.
    pub inline: bool,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(1),
            memory_limit: 64 << 20,
            fuel: None,
            quarantine_after: 5,
            snapshot_limit: 4 << 20,
            timers_per_window: 1024,
            message_limit: 1024,
            log_lines_per_second: 10,
            inline: false,
        }
    }
}

impl PluginLimits {
    /// Why these limits cannot work, naming the key; `None` when they can.
    pub fn check(&self) -> Option<String> {
        if self.memory_limit < (1 << 20) {
            return Some("key `plugins.memory_limit`: must be at least 1MiB".into());
        }
        if self.call_timeout.is_zero() {
            return Some("key `plugins.call_timeout`: must be positive".into());
        }
        if self.snapshot_limit == 0 {
            return Some("key `plugins.snapshot_limit`: must be positive".into());
        }
        if self.timers_per_window == 0 {
            return Some("key `plugins.timers_per_window`: must be at least 1".into());
        }
        if self.message_limit < 64 {
            return Some("key `plugins.message_limit`: must be at least 64 bytes".into());
        }
        None
    }

    /// [`Self::message_limit`] as a length.
    pub fn message_bytes(&self) -> usize {
        usize::try_from(self.message_limit).unwrap_or(usize::MAX)
    }

    /// The memory limit as people write it (`64 MiB`), for error messages.
    pub fn memory_limit_text(&self) -> String {
        bytes_text(self.memory_limit)
    }
}

/// A size as people write it: `64 MiB` when it is whole MiB, `4 KiB` when
/// whole KiB, else in bytes.
pub fn bytes_text(bytes: u64) -> String {
    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}
