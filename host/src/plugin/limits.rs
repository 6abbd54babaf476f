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
use wasmtime::{Config, Engine, StoreLimits, StoreLimitsBuilder};

use crate::config::{de_bytes, de_duration};

/// How often the epoch ticker advances the engine's epoch.
///
/// A call's time limit is rounded up to whole ticks, so this is the limit's
/// resolution; checking an epoch is a load and compare in compiled code.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

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
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(1),
            memory_limit: 64 << 20,
            fuel: None,
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
    pub fn store_limits(&self) -> StoreLimits {
        StoreLimitsBuilder::new()
            .memory_size(usize::try_from(self.memory_limit).unwrap_or(usize::MAX))
            .trap_on_grow_failure(true)
            .build()
    }

    /// How many epoch ticks a call may last.
    pub fn deadline_ticks(&self) -> u64 {
        let ticks = self.call_timeout.as_nanos().div_ceil(EPOCH_TICK.as_nanos());
        u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
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
