//! Sandbox limits for plugin calls: the one place that decides how long a
//! plugin may run, how much memory it may take, and what it may see.
//!
//! A plugin is code the pipeline's author may not have written; these limits
//! are what lets the host stay up whatever the plugin does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Deserialize;
use wasmtime::{Config, Engine, ResourceLimiter, StoreLimits, StoreLimitsBuilder};

use crate::config::{de_bytes, de_duration};

/// How often the epoch ticker advances the engine's epoch.
///
/// A call's time limit is rounded up to whole ticks, so this is the limit's
/// resolution; checking an epoch is a load and compare in compiled code.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Most resource handles (accumulators, in practice) one plugin instance may
/// hold at once.
///
/// One instance serves every open window of its aggregation, one accumulator
/// handle per window (or pane, or session), so this caps the open windows
/// per aggregation. wasmtime's default of 100,000 per store failed the
/// 100,001st window of a 100k-key pipeline; a handle costs the host a table
/// slot of a few dozen bytes, so 10 million bound what a plugin creating
/// handles in a loop can make the host hold to a few hundred MB (its own
/// state for them counts against `memory_limit`).
pub const MAX_HANDLES: usize = 10_000_000;

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
        }
    }
}

impl PluginLimits {
    /// Why these limits cannot work, naming the key; `None` when they can.
    /// (`memory_limit` and `call_timeout` are checked with the pipeline.)
    pub fn check(&self) -> Option<String> {
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

    /// The wasmtime configuration these limits need.
    pub fn engine_config(&self) -> Config {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.consume_fuel(self.fuel.is_some());
        config
    }

    /// The per-store resource limits (memory, tables, instances).
    pub fn store_limits(&self) -> MemoryCap {
        MemoryCap {
            limits: StoreLimitsBuilder::new()
                .memory_size(usize::try_from(self.memory_limit).unwrap_or(usize::MAX))
                .trap_on_grow_failure(true)
                .build(),
            exceeded: false,
        }
    }

    /// The memory limit as people write it (`64 MiB`), for error messages.
    pub fn memory_limit_text(&self) -> String {
        bytes_text(self.memory_limit)
    }

    /// How many epoch ticks a call may last.
    pub fn deadline_ticks(&self) -> u64 {
        let ticks = self.call_timeout.as_nanos().div_ceil(EPOCH_TICK.as_nanos());
        u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
    }
}

/// A store's resource limits, remembering whether a memory growth was refused.
///
/// A refused growth traps with wasmtime's generic message (or, in a guest
/// that handles allocation failure itself, ends in `unreachable`); the flag
/// lets the host say "exceeded the memory limit" instead.
pub struct MemoryCap {
    limits: StoreLimits,
    exceeded: bool,
}

impl MemoryCap {
    /// Whether a memory growth has been refused since the last [`Self::reset`].
    pub fn exceeded(&self) -> bool {
        self.exceeded
    }

    /// Forgets earlier refusals, so that a failure is blamed on its own call.
    pub fn reset(&mut self) {
        self.exceeded = false;
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum);
        if !matches!(allowed, Ok(true)) {
            self.exceeded = true;
        }
        allowed
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// A background thread that advances the engine's epoch every [`EPOCH_TICK`],
/// so that a plugin stuck in a loop reaches its deadline and traps.
///
/// Stopped and joined on drop.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    /// Starts ticking `engine`'s epoch.
    pub fn start(engine: &Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = engine.clone();
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
