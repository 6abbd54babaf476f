//! Sandbox limits for plugin calls: the one place that decides how long a
//! plugin may run, how much memory it may take, and what it may see.
//!
//! A plugin is code the pipeline's author may not have written; these limits
//! are what lets the host stay up whatever the plugin does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use sluice_config::PluginLimits;
use wasmtime::{Config, Engine, ResourceLimiter, StoreLimits, StoreLimitsBuilder};

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

/// The wasmtime configuration `limits` need, compiling with intra-module
/// inlining when `inline` is set.
pub fn engine_config(limits: &PluginLimits, inline: bool) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.consume_fuel(limits.fuel.is_some());
    // Inlining small wasm functions into their callers takes the sandbox's
    // deadline checks at function entries (and the register spills around
    // the calls) out of hot loops; which components get it, and why not
    // all: `engine::INLINE_UP_TO`.
    if inline {
        config.compiler_inlining(wasmtime::Inlining::Yes);
    }
    config
}

/// The per-store resource limits (memory, tables, instances).
pub fn store_limits(limits: &PluginLimits) -> MemoryCap {
    MemoryCap {
        limits: StoreLimitsBuilder::new()
            .memory_size(usize::try_from(limits.memory_limit).unwrap_or(usize::MAX))
            .trap_on_grow_failure(true)
            .build(),
        exceeded: false,
    }
}

/// How many epoch ticks a call may last under `limits`.
pub fn deadline_ticks(limits: &PluginLimits) -> u64 {
    let ticks = limits
        .call_timeout
        .as_nanos()
        .div_ceil(EPOCH_TICK.as_nanos());
    u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
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
    /// Starts ticking the epochs of `engines`.
    pub fn start(engines: Vec<Engine>) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engines.iter().for_each(Engine::increment_epoch);
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
