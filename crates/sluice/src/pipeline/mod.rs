//! One run of a pipeline, wired in one direction:
//! source -> decode -> watermark -> window assignment -> batched plugin calls
//! -> emit -> sink, with late events and undecodable lines split off to their
//! own outputs on the way.
//!
//! By concept: `open` (plugins, outputs and the flow, after every check
//! that could refuse the run), `flow` (what happens to each event and each
//! watermark step), `checkpoint` (when and what a checkpoint writes, and
//! restoring), `file` and `kafka` (the two source loops), `guard` (the
//! run-level checks on dead letters and event times), `stop` (signals).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_config::{
    AggregationConfig, DEFAULT_TRIGGER, LoadedConfig, OutputConfig, PipelineConfig, SourceConfig,
    StateBackendKind, TimeConfig, millis,
};
use sluice_core::decode::{BoundInput, Event, EventDecoder, InputSource, KeyTable};
use sluice_core::dedup::{Deduplicator, Sighting};
use sluice_core::fill::{Emission, GapFiller};
use sluice_core::plugin::grouped::{
    GroupedAggregation, InputKind, InputSpec, describe_inputs, takes_one_number,
};
use sluice_core::plugin::{TriggerPolicy, check_outputs};
use sluice_core::sink::{self, JsonlWriter, OutputNames};
use sluice_core::source::read_ahead;
use sluice_core::source::{InputFile, LineBatch, LineSource, Origin};
use sluice_core::state::{
    AggregationMeta, CheckpointDelta, FORMAT_VERSION, Meta, OutputPosition, Restored,
    RetiringState, RunSummary, SinkLengths, SourcePosition, StateBackend, WatermarkState,
};
use sluice_core::watermark::Watermarks;
use sluice_core::window::{
    EventOutcome, Swap, Triggers, WindowOperator, WindowResult, WindowSpec, now_ms,
};
use sluice_kafka::KafkaWriter;
use sluice_rocks::{LockError, RocksBackend, StateLock};
use sluice_wasm::cache::CacheSetting;
use sluice_wasm::registry::{self, BUILTIN_PREFIX};
use sluice_wasm::reload::{Reloader, WatchedPlugin};
use sluice_wasm::{AnyAggregator, PluginEngine, PluginRegistry};

use crate::admin::AdminServer;
use crate::error::{ConfigError, Error};
use crate::metrics::{Metrics, MetricsServer};

mod checkpoint;
mod decode_ahead;
mod file;
mod flow;
mod guard;
mod kafka;
mod open;
mod output;
mod shards;
mod status_feed;
mod stop;

use file::run_file_source;
pub use open::{
    OpenedAggregations, bind_inputs, default_trigger, open_aggregations, open_trigger, validate,
    validate_file,
};
pub use output::Output;
use shards::Shards;

/// Run-time choices that are not part of the pipeline's meaning.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Overrides `batch_size` from the config (tests use it to show that batch
    /// sizes change nothing in the output).
    pub batch_size: Option<usize>,
    /// Overrides `parallelism` from the config (the same tests show that
    /// the number of window workers changes nothing either).
    pub parallelism: Option<usize>,
}

/// The processing half of a run, whatever the source: decode, watermark,
/// windows, plugins, outputs.
struct Flow {
    /// The window state, or shard 0 of it when `parallelism` is above 1.
    operator: WindowOperator,
    /// Shards 1 and up, and the round being gathered for them, when
    /// `parallelism` is above 1 (see [`shards`]).
    shards: Option<shards::Shards>,
    watermarks: Watermarks,
    decoder: EventDecoder,
    keys: KeyTable,
    event: Event,
    emitted: Vec<WindowResult>,
    /// Gap filling, when the pipeline asks for it.
    fill: Option<GapFiller>,
    /// What `advance` writes: results, and whether each was filled.
    emissions: Vec<Emission>,
    names: OutputNames,
    results: Output,
    late_out: Output,
    dead_out: Output,
    /// The dedup stage, when the pipeline asks for one, and where its drops go.
    dedup: Option<Deduplicator>,
    dedup_out: Option<Output>,
    lateness: i64,
    watermark_delay: i64,
    summary: RunSummary,
    line: String,
    /// Checkpoints, when the state backend keeps them.
    checkpoints: Option<Checkpointer>,
    /// Where the source resumes, when the run was restored from a checkpoint.
    resume: Option<SourcePosition>,
    /// The restored watermark state, for a source that learns its partition
    /// count only after the flow is open.
    resume_watermarks: Option<WatermarkState>,
    /// The endpoint that asks the reloader for a reload, when configured.
    /// Declared before it, so dropped first: no request comes to a stopped
    /// reloader.
    _admin: Option<AdminServer>,
    /// Hot reload of plugin files, when the pipeline asks for it.
    reloader: Option<Reloader>,
    /// The aggregations' names, in order.
    agg_names: Vec<String>,
    /// Per aggregation, whether the reloader was last told that an older
    /// version still finishes windows.
    retiring_told: Vec<bool>,
    /// The dead-letter limits and what the run has seen against them.
    guard: guard::DeadLetterGuard,
    /// Warnings about event times that cannot be right.
    times: guard::TimeGuard,
    /// `watermark.max_future` in milliseconds.
    max_future: Option<i64>,
    /// Where checkpoints and batches are measured, when the run serves metrics.
    metrics: Option<Arc<Metrics>>,
    /// When the current batch's first event was taken, and how many results
    /// had been written then (see [`Flow::batch_done`]).
    batch: Option<(Instant, u64)>,
    /// The status page's feed, when the operations address is served.
    status: Option<status_feed::StatusFeed>,
}

/// Takes checkpoints of a [`Flow`] into a state backend.
struct Checkpointer {
    backend: Box<dyn StateBackend>,
    interval: Duration,
    last: Instant,
    /// Take one at the next chance, whatever the interval: a reload to
    /// another state format made the last one unrestorable with the new file.
    soon: bool,
    next_id: u64,
    /// How many keys the stored checkpoints hold.
    keys_stored: usize,
    /// The window shape and timing, as checkpoints record it.
    window: String,
    /// The aggregations' names, in order.
    aggregations: Vec<String>,
    /// Names this state directory in a Kafka group's commit metadata.
    token: u64,
}

/// Runs a loaded pipeline over its whole input, or until SIGINT or SIGTERM
/// asks it to stop (see [`stop`]).
pub fn run(loaded: &LoadedConfig, options: &RunOptions) -> Result<RunSummary, Error> {
    let config = &loaded.pipeline;
    let batch_size = options.batch_size.unwrap_or(config.batch_size).max(1);
    let parallelism = options
        .parallelism
        .unwrap_or(config.parallelism)
        .clamp(1, sluice_config::MAX_PARALLELISM);
    crate::logging::init(&config.log);
    // First of all: a signal from here on asks for a clean stop.
    let stop = stop::Stop::install()?;
    let cache = match &config.plugin_cache {
        Some(setting) => CacheSetting::parse(setting, &loaded.base_dir),
        None => CacheSetting::default_dir(),
    };
    let engine = Arc::new(PluginEngine::with_cache(config.plugins.clone(), &cache)?);
    match &config.source {
        SourceConfig::File(path) => {
            run_file_source(loaded, &engine, path, batch_size, parallelism, &stop)
        }
        SourceConfig::Kafka(kafka) => {
            kafka::run(loaded, &engine, kafka, batch_size, parallelism, &stop)
        }
    }
}

/// Publishes the run's counters, its watermark and each aggregation's
/// plugin health.
fn publish_counters(metrics: &Metrics, flow: &Flow) {
    metrics.record_summary(&flow.summary(), flow.open_windows());
    if let Some(watermark) = flow.watermarks.known() {
        metrics.record_watermark(watermark);
    }
    for (name, health) in flow.agg_names.iter().zip(flow.plugin_health()) {
        metrics.record_plugin(name, &health);
    }
}

/// Loads the config at `path` and runs it.
pub fn run_file(path: &Path, options: &RunOptions) -> Result<RunSummary, Error> {
    let loaded = sluice_config::load(path)?;
    run(&loaded, options)
}
