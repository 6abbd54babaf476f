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
        const MIB: u64 = 1 << 20;
        if self.memory_limit >= MIB && self.memory_limit.is_multiple_of(MIB) {
            format!("{} MiB", self.memory_limit / MIB)
        } else {
            format!("{} bytes", self.memory_limit)
        }
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
