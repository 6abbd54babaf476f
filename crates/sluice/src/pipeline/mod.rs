//! One run of a pipeline, wired in one direction:
//! source -> decode -> watermark -> window assignment -> batched plugin calls
//! -> emit -> sink, with late events and undecodable lines split off to their
//! own outputs on the way.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_config::{
    AggregationConfig, DEFAULT_TRIGGER, LoadedConfig, OutputConfig, PipelineConfig, SourceConfig,
    StateBackendKind, millis,
};
use sluice_core::decode::{Event, EventDecoder, KeyTable};
use sluice_core::dedup::{Deduplicator, Sighting};
use sluice_core::fill::{Emission, GapFiller};
use sluice_core::plugin::{Aggregation, TriggerPolicy, check_outputs};
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
use sluice_wasm::{PluginEngine, PluginRegistry};

use crate::admin::AdminServer;
use crate::error::{ConfigError, Error};
use crate::metrics::{Metrics, MetricsServer};

mod decode_ahead;
mod guard;
mod kafka;
mod output;

pub use output::Output;
mod stop;

/// Run-time choices that are not part of the pipeline's meaning.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Overrides `batch_size` from the config (tests use it to show that batch
    /// sizes change nothing in the output).
    pub batch_size: Option<usize>,
}

/// How far ahead of every earlier event an event's time may jump before
/// the run warns that its clock may be wrong: a day, or ten windows (or
/// session gaps) if that is longer.
fn jump_warning(spec: &WindowSpec) -> i64 {
    const DAY: i64 = 24 * 3600 * 1000;
    let span = match *spec {
        WindowSpec::Tumbling { size, .. } | WindowSpec::Sliding { size, .. } => size,
        WindowSpec::Session { gap } => gap,
    };
    DAY.max(span.saturating_mul(10))
}

/// Compiles and opens a checkpoint's retiring plugin version of aggregation
/// `agg`, checking that it is the version the checkpoint names.
fn open_retiring(
    engine: &PluginEngine,
    agg: &AggregationConfig,
    retiring: &RetiringState,
) -> Result<Box<dyn Aggregation>, String> {
    let source = format!("{} (retiring, from the checkpoint)", agg.plugin);
    let plugin = engine
        .compile(&source, &retiring.component)
        .map_err(|e| e.to_string())?;
    let config = agg.plugin_config();
    let mut instance = engine
        .open_aggregation(&plugin, &config)
        .map_err(|e| e.to_string())?;
    instance.set_aggregation_name(&agg.name);
    let info = instance.info();
    if info.name != retiring.plugin || info.state_version != retiring.state_version {
        return Err(format!(
            "its code says {} (state format {}), the checkpoint {} (format {})",
            info.name, info.state_version, retiring.plugin, retiring.state_version
        ));
    }
    Ok(Box::new(instance))
}

/// Loads, configures and checks every aggregation's plugin, so that a bad
/// plugin or plugin config stops the run before any event is read.
pub fn open_aggregations(
    engine: &PluginEngine,
    registry: &mut PluginRegistry<'_>,
    config: &PipelineConfig,
) -> Result<Vec<Box<dyn Aggregation>>, ConfigError> {
    let spec = WindowSpec::from(&config.window);
    let mut aggs = Vec::with_capacity(config.aggregations.len());
    for (i, agg) in config.aggregations.iter().enumerate() {
        let at = |e: &dyn std::fmt::Display| {
            ConfigError(format!("key `aggregations[{i}]` ({}): {e}", agg.name))
        };
        let plugin = registry.get(&agg.plugin).map_err(|e| at(&e))?;
        let plugin_config = agg.plugin_config();
        let mut instance = engine
            .open_aggregation(&plugin, &plugin_config)
            .map_err(|e| at(&e))?;
        instance.set_aggregation_name(&agg.name);
        if spec.needs_merge() && !instance.info().mergeable {
            return Err(at(&format!(
                "plugin {} cannot merge states, which {} windows need",
                instance.label(),
                match spec {
                    WindowSpec::Session { .. } => "session",
                    _ => "sliding",
                }
            )));
        }
        check_outputs(instance.outputs()).map_err(|e| at(&format!("{}: {e}", instance.label())))?;
        aggs.push(Box::new(instance) as Box<dyn Aggregation>);
    }
    Ok(aggs)
}

/// The default trigger, `builtin/event-time`, opened on its own: for
/// embedding the window operator without a pipeline config (tests, benches).
pub fn default_trigger(engine: &PluginEngine) -> Result<Triggers, ConfigError> {
    let at = |e: &dyn std::fmt::Display| ConfigError(format!("trigger {DEFAULT_TRIGGER}: {e}"));
    let bytes = registry::trigger_bytes(DEFAULT_TRIGGER, Path::new(".")).map_err(|e| at(&e))?;
    let compiled = engine
        .compile_trigger(DEFAULT_TRIGGER, &bytes)
        .map_err(|e| at(&e))?;
    let instance = engine.open_trigger(&compiled, "{}").map_err(|e| at(&e))?;
    Ok(Triggers::new(
        Box::new(instance),
        Vec::new(),
        engine.limits(),
    ))
}

/// Loads and opens the pipeline's trigger (`builtin/event-time` when it
/// names none) and resolves the result columns it previews, so that a bad
/// trigger stops the run before any event is read. `aggs` are the opened
/// aggregations, in configuration order.
pub fn open_trigger(
    engine: &PluginEngine,
    base_dir: &Path,
    config: &PipelineConfig,
    aggs: &[Box<dyn Aggregation>],
) -> Result<Triggers, ConfigError> {
    let (reference, trigger_config) = match &config.trigger {
        Some(t) => (
            t.plugin.as_str(),
            t.config
                .as_ref()
                .map_or_else(|| "{}".to_string(), serde_json::Value::to_string),
        ),
        None => (DEFAULT_TRIGGER, "{}".to_string()),
    };
    let at = |e: &dyn std::fmt::Display| ConfigError(format!("key `trigger` ({reference}): {e}"));
    let bytes = registry::trigger_bytes(reference, base_dir).map_err(|e| at(&e))?;
    let compiled = engine
        .compile_trigger(reference, &bytes)
        .map_err(|e| at(&e))?;
    let instance = engine
        .open_trigger(&compiled, &trigger_config)
        .map_err(|e| at(&e))?;
    let spec = WindowSpec::from(&config.window);
    if matches!(spec, WindowSpec::Session { .. }) && !instance.info().is_some_and(|i| i.mergeable) {
        return Err(at(&format!(
            "trigger {} cannot merge, which session windows need",
            instance.label()
        )));
    }
    let mut watches = Vec::new();
    for column in instance.watches() {
        let found =
            config
                .aggregations
                .iter()
                .zip(aggs)
                .enumerate()
                .find_map(|(a, (agg, opened))| {
                    let output = column.strip_prefix(agg.name.as_str())?.strip_prefix('.')?;
                    let o = opened
                        .outputs()
                        .iter()
                        .position(|spec| spec.name == output)?;
                    Some((a, o))
                });
        match found {
            Some(index) => watches.push(index),
            None => {
                return Err(at(&format!(
                    "trigger {} watches {column:?}, which is not a result column of this \
                     pipeline (columns are `<aggregation>.<output>`)",
                    instance.label()
                )));
            }
        }
    }
    Ok(Triggers::new(Box::new(instance), watches, &config.plugins))
}

/// Opens one output; `resume_at` is its position in the checkpoint a run is
/// restored from (a file is cut back to it; a topic's later records are read
/// back so as not to be written twice), `None` for a fresh start.
fn open_output(
    loaded: &LoadedConfig,
    output: Option<&OutputConfig>,
    source_brokers: Option<&str>,
    checkpoints: bool,
    resume_at: Option<&OutputPosition>,
) -> Result<Output, Error> {
    Ok(match output {
        Some(OutputConfig::File(path)) => {
            let path = loaded.resolve(path);
            Output::File(match resume_at.and_then(OutputPosition::file_length) {
                Some(length) => JsonlWriter::resume(&path, length)?,
                None => JsonlWriter::create(&path)?,
            })
        }
        Some(OutputConfig::Kafka(k)) => {
            let brokers = k.brokers.as_deref().or(source_brokers).unwrap_or_default();
            let resume = match resume_at {
                Some(OutputPosition::Topic(t)) => Some(t),
                _ => None,
            };
            Output::Kafka(KafkaWriter::create(k, brokers, checkpoints, resume)?)
        }
        None => Output::File(JsonlWriter::stderr()),
    })
}

/// The processing half of a run, whatever the source: decode, watermark,
/// windows, plugins, outputs.
struct Flow {
    operator: WindowOperator,
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

/// A token no other state directory is likely to have: random per start,
/// then kept in the checkpoints.
fn fresh_token() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

impl Flow {
    /// Opens the plugins and outputs of `loaded`, for a source of `partitions`.
    fn open(
        loaded: &LoadedConfig,
        engine: &Arc<PluginEngine>,
        batch_size: usize,
        partitions: usize,
        source_brokers: Option<&str>,
    ) -> Result<Self, Error> {
        let config = &loaded.pipeline;
        let mut registry = PluginRegistry::new(engine, &loaded.base_dir);
        let aggs = open_aggregations(engine, &mut registry, config)?;
        let triggers = open_trigger(engine, &loaded.base_dir, config, &aggs)?;
        let reloader = match &config.reload {
            Some(reload) => {
                let spec = WindowSpec::from(&config.window);
                let (watched, running): (Vec<WatchedPlugin>, Vec<&dyn Aggregation>) = config
                    .aggregations
                    .iter()
                    .zip(&aggs)
                    .enumerate()
                    .filter(|(_, (c, _))| !c.plugin.starts_with(BUILTIN_PREFIX))
                    .map(|(i, (c, instance))| {
                        let watched = WatchedPlugin {
                            aggregation: i,
                            name: c.name.clone(),
                            reference: c.plugin.clone(),
                            path: loaded.resolve(Path::new(&c.plugin)),
                            config: c.plugin_config(),
                            needs_merge: spec.needs_merge(),
                            fixed_outputs: config.fill.is_some(),
                        };
                        (watched, instance.as_ref())
                    })
                    .unzip();
                Some(Reloader::start(
                    reload,
                    Arc::clone(engine),
                    watched,
                    &running,
                )?)
            }
            None => None,
        };
        let admin = match (
            &reloader,
            config.reload.as_ref().and_then(|r| r.admin.as_ref()),
        ) {
            (Some(reloader), Some(listen)) => {
                Some(AdminServer::start(listen, reloader.requests())?)
            }
            _ => None,
        };
        let names = OutputNames::new(
            config
                .aggregations
                .iter()
                .zip(&aggs)
                .map(|(c, a)| (c.name.as_str(), a.outputs())),
        );
        let lateness = millis(config.allowed_lateness);
        let spec = WindowSpec::from(&config.window);
        let mut window = format!(
            "{spec:?}, allowed lateness {lateness} ms, out-of-orderness {} ms, fill {:?}, \
             dedup {:?}, trigger {:?}",
            millis(config.watermark.max_out_of_orderness),
            config.fill,
            config.dedup,
            config.trigger.as_ref().map(|t| (
                t.plugin.as_str(),
                t.config.as_ref().map(ToString::to_string)
            ))
        );
        // Only when set, so that checkpoints taken before the key existed
        // still restore.
        if let Some(max_future) = config.watermark.max_future {
            window.push_str(&format!(", max future {} ms", millis(max_future)));
        }
        let restore_started = Instant::now();
        let (checkpoints, restored) = match config.state.backend {
            StateBackendKind::Memory => (None, None),
            StateBackendKind::Rocksdb => {
                let dir = loaded.resolve(&config.state.path);
                // Before anything in the directory is touched: a second run
                // on it is refused (exit 2), not let loose on the first's state.
                let lock = StateLock::acquire(&dir).map_err(|e| match e {
                    LockError::InUse { .. } => {
                        Error::Config(ConfigError(format!("key `state.path`: {e}")))
                    }
                    LockError::Io { .. } => Error::State(sluice_core::state::StateError {
                        location: dir.display().to_string(),
                        message: e.to_string(),
                    }),
                })?;
                let mut backend = RocksBackend::open(&dir, config.state.keep, lock)?;
                let restored = backend.restore()?;
                let checkpoints = Checkpointer {
                    backend: Box::new(backend),
                    interval: config.state.checkpoint_interval,
                    last: Instant::now(),
                    soon: false,
                    next_id: 1,
                    keys_stored: 0,
                    window,
                    aggregations: config.aggregations.iter().map(|a| a.name.clone()).collect(),
                    token: fresh_token(),
                };
                (Some(checkpoints), restored)
            }
        };
        // Kafka outputs' brokers are reached before any output is opened: a
        // wrong address must not cost the file outputs their contents.
        let mut reached: Vec<&str> = source_brokers.into_iter().collect();
        let outputs = [
            Some(&config.sink),
            config.late_output.as_ref(),
            config.dead_letter.as_ref(),
            config.dedup_output.as_ref(),
        ];
        for output in outputs.into_iter().flatten() {
            if let OutputConfig::Kafka(k) = output {
                let brokers = k.brokers.as_deref().or(source_brokers).unwrap_or_default();
                if !reached.contains(&brokers) {
                    sluice_kafka::reach_brokers(brokers, &k.properties)?;
                    reached.push(brokers);
                }
            }
        }
        let sinks = restored
            .as_ref()
            .map(|r| r.meta.sinks.clone())
            .unwrap_or_default();
        let keeps = checkpoints.is_some();
        let results = open_output(
            loaded,
            Some(&config.sink),
            source_brokers,
            keeps,
            sinks.results.as_ref(),
        )?;
        let late_out = open_output(
            loaded,
            config.late_output.as_ref(),
            source_brokers,
            keeps,
            sinks.late.as_ref(),
        )?;
        let dead_out = open_output(
            loaded,
            config.dead_letter.as_ref(),
            source_brokers,
            keeps,
            sinks.dead.as_ref(),
        )?;
        let dedup_out = match &config.dedup_output {
            Some(output) => Some(open_output(
                loaded,
                Some(output),
                source_brokers,
                keeps,
                sinks.dedup.as_ref(),
            )?),
            None => None,
        };
        let dedup = config
            .dedup
            .as_ref()
            .map(|d| Deduplicator::new(d, &config.event.time));
        let kinds = aggs
            .iter()
            .map(|a| a.outputs().iter().map(|o| o.kind).collect())
            .collect();
        let fill = GapFiller::new(config.fill.as_ref(), &config.window, kinds);
        let mut flow = Self {
            operator: WindowOperator::new(
                spec,
                lateness,
                aggs,
                triggers,
                batch_size,
                config.plugins.quarantine_after,
            ),
            watermarks: Watermarks::new(millis(config.watermark.max_out_of_orderness), partitions),
            decoder: EventDecoder::new(&config.event.key, &config.event.time, &config.aggregations),
            keys: KeyTable::default(),
            event: Event::default(),
            emitted: Vec::new(),
            fill,
            emissions: Vec::new(),
            names,
            results,
            late_out,
            dead_out,
            dedup,
            dedup_out,
            lateness,
            watermark_delay: millis(config.watermark.max_out_of_orderness),
            summary: RunSummary::default(),
            line: String::new(),
            checkpoints,
            resume: None,
            resume_watermarks: None,
            _admin: admin,
            reloader,
            agg_names: config.aggregations.iter().map(|a| a.name.clone()).collect(),
            retiring_told: vec![false; config.aggregations.len()],
            guard: guard::DeadLetterGuard::new(&config.dead_letter_limits),
            times: guard::TimeGuard::new(config.event.time.format, jump_warning(&spec)),
            max_future: config.watermark.max_future.map(millis),
        };
        flow.operator
            .set_aggregation_names(config.aggregations.iter().map(|a| a.name.clone()).collect());
        if let Some(restored) = restored {
            flow.restore(config, engine, restored)?;
            tracing::debug!(
                millis = restore_started.elapsed().as_millis() as u64,
                "restore took {:?}",
                restore_started.elapsed()
            );
        }
        Ok(flow)
    }

    /// Carries on from a checkpoint: keys, watermarks, windows and counters
    /// as they were, and the source position to resume from.
    fn restore(
        &mut self,
        config: &PipelineConfig,
        engine: &PluginEngine,
        restored: Restored,
    ) -> Result<(), Error> {
        let meta = &restored.meta;
        let Some(checkpoints) = self.checkpoints.as_mut() else {
            return Ok(());
        };
        let refuse = |why: String| {
            Err(Error::Config(ConfigError(format!(
                "key `state.path`: checkpoint {} cannot be restored: {why}; restore the \
                 pipeline it was taken with, or delete the state directory to start over",
                meta.id
            ))))
        };
        if meta.window != checkpoints.window {
            return refuse(format!(
                "it was taken with window {}, the config now says {}",
                meta.window, checkpoints.window
            ));
        }
        let now = self.operator.plugin_infos();
        if meta.aggregations.len() != now.len() {
            return refuse(format!(
                "it holds {} aggregations, the config has {}",
                meta.aggregations.len(),
                now.len()
            ));
        }
        for ((then, (plugin, version, state_version)), agg) in
            meta.aggregations.iter().zip(&now).zip(&config.aggregations)
        {
            if then.name != agg.name || &then.plugin != plugin {
                return refuse(format!(
                    "aggregation `{}` ({}) is now `{}` ({plugin})",
                    then.name, then.plugin, agg.name
                ));
            }
            if then.state_version != *state_version {
                return refuse(format!(
                    "aggregation `{}`: the checkpoint holds state format {} of plugin {} {}, \
                     but the configured {plugin} {version} reads format {state_version}",
                    then.name, then.state_version, then.plugin, then.version
                ));
            }
            if &then.version != version {
                tracing::info!(
                    "aggregation `{}`: restoring state of {} {} into {plugin} {version} \
                     (same state format {state_version})",
                    then.name,
                    then.plugin,
                    then.version
                );
            }
        }
        let (name, version, state_version) = self.operator.trigger_identity();
        if !meta.triggers.is_empty() && meta.trigger.2 != state_version {
            return refuse(format!(
                "its trigger state is format {} of {} {}, but the configured trigger {name} \
                 {version} reads format {state_version}",
                meta.trigger.2, meta.trigger.0, meta.trigger.1
            ));
        }
        for key in &restored.keys {
            self.keys.intern(key);
        }
        for retiring in &restored.retiring {
            let a = retiring.aggregation as usize;
            let Some(agg) = config.aggregations.get(a) else {
                return refuse(format!(
                    "it holds a retiring plugin version for aggregation {a}, which the config lacks"
                ));
            };
            let instance = open_retiring(engine, agg, retiring);
            match &instance {
                Ok(i) => tracing::info!(
                    aggregation = %agg.name,
                    "aggregation `{}`: {} restored from the checkpoint to finish the windows it holds",
                    agg.name,
                    i.label()
                ),
                Err(why) => tracing::warn!(
                    aggregation = %agg.name,
                    "aggregation `{}`: the checkpoint's retiring version {} {} cannot run ({why}); \
                     the windows it holds report that",
                    agg.name,
                    retiring.plugin,
                    retiring.version
                ),
            }
            self.operator
                .restore_retiring(a, instance, Arc::from(retiring.component.as_slice()));
        }
        self.watermarks.restore(&meta.watermarks);
        let watermark = self.watermarks.current();
        self.operator
            .restore(&meta.health, &restored.slots, &meta.triggers, watermark);
        if let (Some(dedup), Some(state)) = (&mut self.dedup, &meta.dedup)
            && let Err(why) = dedup.restore(state.clone())
        {
            return refuse(why);
        }
        if let (Some(fill), Some(state)) = (&mut self.fill, &meta.fill) {
            fill.restore(state);
        }
        self.summary = meta.summary;
        checkpoints.next_id = meta.id + 1;
        checkpoints.keys_stored = restored.keys.len();
        if let SourcePosition::Kafka { token, .. } = &meta.source {
            checkpoints.token = *token;
        }
        self.resume = Some(meta.source.clone());
        self.resume_watermarks = Some(meta.watermarks.clone());
        tracing::info!(
            checkpoint = meta.id,
            windows = restored.slots.len(),
            "restored checkpoint {} ({} open windows, {} events read before it)",
            meta.id,
            restored.slots.len(),
            meta.summary.events_read
        );
        Ok(())
    }

    /// Swaps in the plugin versions the reloader has checked since the last
    /// call. Called between batches only, so that a batch is processed by
    /// one version throughout.
    fn apply_reloads(&mut self) {
        let Some(reloader) = &self.reloader else {
            return;
        };
        for staged in reloader.take_staged() {
            let a = staged.aggregation;
            let name = reloader.aggregation_name(a).to_string();
            let instance = match reloader.open(&staged) {
                Ok(instance) => instance,
                Err(why) => {
                    tracing::warn!(aggregation = %name, "reload of `{name}` failed: {why}; the running version keeps serving");
                    reloader.swapped(&staged, None);
                    continue;
                }
            };
            let label = instance.label().to_string();
            let old_label = self.operator.plugin_live(a).label().to_string();
            let old_outputs = self.operator.plugin_outputs(a).to_vec();
            let started = Instant::now();
            let component = reloader.running_component(a);
            match self.operator.replace_plugin(a, instance, component) {
                Ok(swap) => {
                    let outputs = self.operator.plugin_outputs(a);
                    let same = outputs.len() == old_outputs.len()
                        && outputs
                            .iter()
                            .zip(&old_outputs)
                            .all(|(n, o)| n.name == o.name && n.kind == o.kind);
                    if !same {
                        self.names.replace(a, &self.agg_names[a], outputs);
                    }
                    let took = started.elapsed();
                    match swap {
                        Swap::Moved(moved) => tracing::info!(
                            aggregation = %name,
                            moved,
                            micros = took.as_micros() as u64,
                            "reloaded `{name}`: {label} is live ({moved} open windows moved to it \
                             by snapshot and restore in {took:?})"
                        ),
                        Swap::SideBySide(held) => {
                            tracing::info!(
                                aggregation = %name,
                                held,
                                "reloaded `{name}`: {label} is live for new windows; it keeps \
                                 another state format, so the {held} open windows finish on \
                                 {old_label}, which retires once they have closed"
                            );
                            // The last checkpoint names the old state format,
                            // which the new file no longer reads.
                            if let Some(c) = &mut self.checkpoints {
                                c.soon = true;
                            }
                        }
                    }
                    // The instance is in the store now; the reloader needs
                    // its description only.
                    let live = self.operator.plugin_live(a);
                    reloader.swapped(&staged, Some(live));
                }
                Err(why) => {
                    tracing::warn!(aggregation = %name, "reload of `{name}` to {label} refused: {why}; the running version keeps serving");
                    reloader.swapped(&staged, None);
                }
            }
        }
        // Tell the reloader when a retiring version comes (a swap, a restored
        // checkpoint) or goes, so it refuses a third state format meanwhile.
        // Called between every two Kafka messages: the label is copied
        // only when the state changes.
        for (a, told) in self.retiring_told.iter_mut().enumerate() {
            let now = self.operator.retiring(a);
            if now.is_some() != *told {
                *told = now.is_some();
                reloader.set_retiring(a, now.map(|(label, _)| label.to_string()));
            }
        }
    }

    /// Whether the state backend keeps checkpoints and the interval has
    /// passed since the last one.
    fn checkpoint_due(&self) -> bool {
        self.checkpoints
            .as_ref()
            .is_some_and(|c| c.soon || c.last.elapsed() >= c.interval)
    }

    /// The token naming this run's state directory, when it keeps one.
    fn checkpoint_token(&self) -> Option<u64> {
        self.checkpoints.as_ref().map(|c| c.token)
    }

    /// Drops every window, the dedup and fill state, and the watermarks:
    /// the state is rebuilt by replay from committed offsets.
    fn clear_state(&mut self, partitions: usize) -> Result<(), Error> {
        self.operator.clear()?;
        if let Some(fill) = &mut self.fill {
            fill.clear();
        }
        if let Some(dedup) = &mut self.dedup {
            dedup.clear();
        }
        self.watermarks = Watermarks::new(self.watermark_delay, partitions);
        Ok(())
    }

    /// Takes a checkpoint if the interval has passed since the last one.
    fn maybe_checkpoint(&mut self, position: impl FnOnce() -> SourcePosition) -> Result<(), Error> {
        if self.checkpoint_due() {
            self.checkpoint(position())?;
        }
        Ok(())
    }

    /// Takes a checkpoint now, with the source at `position`: the outputs
    /// are made durable first, so the checkpoint never counts on a record
    /// that could still be lost.
    fn checkpoint(&mut self, position: SourcePosition) -> Result<(), Error> {
        if self.checkpoints.is_none() {
            return Ok(());
        }
        let started = Instant::now();
        self.results.sync()?;
        self.late_out.sync()?;
        self.dead_out.sync()?;
        if let Some(out) = &mut self.dedup_out {
            out.sync()?;
        }
        let mut delta = CheckpointDelta::default();
        let (slots, slot_crc_sum) = self.operator.checkpoint_into(&mut delta.windows)?;
        let names = self
            .checkpoints
            .as_ref()
            .map(|c| c.aggregations.clone())
            .unwrap_or_default();
        let aggregations = self
            .operator
            .plugin_infos()
            .into_iter()
            .zip(names)
            .map(|((plugin, version, state_version), name)| AggregationMeta {
                name,
                plugin,
                version,
                state_version,
            })
            .collect();
        let health = self.operator.health_state();
        let summary = self.summary;
        let sinks = SinkLengths {
            results: self.results.position(),
            late: self.late_out.position(),
            dead: self.dead_out.position(),
            dedup: self.dedup_out.as_ref().and_then(Output::position),
        };
        let dedup = self.dedup.as_ref().map(|d| d.snapshot().clone());
        let fill = self.fill.as_ref().map(GapFiller::snapshot);
        let triggers = self.operator.trigger_records();
        let watermarks = self.watermarks.state();
        let Some(checkpoints) = self.checkpoints.as_mut() else {
            return Ok(());
        };
        delta.new_keys = self
            .keys
            .since(checkpoints.keys_stored)
            .map(|(id, k)| (id, k.to_string()))
            .collect();
        let id = checkpoints.next_id;
        delta.meta = Some(Meta {
            format: FORMAT_VERSION,
            id,
            taken_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            window: checkpoints.window.clone(),
            aggregations,
            health,
            watermarks,
            source: position,
            sinks,
            summary,
            dedup,
            fill,
            triggers,
            trigger: self.operator.trigger_identity(),
            keys: self.keys.len() as u64,
            slots,
            slot_crc_sum,
        });
        checkpoints.backend.commit(delta)?;
        let pending = self.results.pending()
            + self.late_out.pending()
            + self.dead_out.pending()
            + self.dedup_out.as_ref().map_or(0, Output::pending);
        if pending > 0 {
            tracing::info!(
                checkpoint = id,
                "{pending} records written before the restore have not been emitted again yet"
            );
        }
        let Some(checkpoints) = self.checkpoints.as_mut() else {
            return Ok(());
        };
        checkpoints.next_id += 1;
        checkpoints.keys_stored = self.keys.len();
        checkpoints.last = Instant::now();
        checkpoints.soon = false;
        tracing::debug!(
            checkpoint = id,
            windows = slots,
            millis = started.elapsed().as_millis() as u64,
            "checkpoint {id} written"
        );
        Ok(())
    }

    /// Processes one raw event from `partition`. Returns its event time, or
    /// `i64::MIN` when it left no window state (a dead letter, a duplicate).
    ///
    /// A `replayed` event was processed before by a previous owner of its
    /// partition: it rebuilds window state, but if it is late now its effect
    /// was already written, so it is skipped rather than reported again.
    fn on_record(
        &mut self,
        origin: Origin<'_>,
        partition: usize,
        raw: &[u8],
        message_time: Option<i64>,
        replayed: bool,
    ) -> Result<i64, Error> {
        let decoded = self.decoder.decode_at(raw, message_time, &mut self.event);
        self.on_decoded(origin, partition, raw, message_time, replayed, decoded)
    }

    /// [`Flow::on_record`] for an event already decoded into `self.event`
    /// (`decoded` says whether it could be).
    fn on_decoded(
        &mut self,
        origin: Origin<'_>,
        partition: usize,
        raw: &[u8],
        message_time: Option<i64>,
        replayed: bool,
        decoded: Result<(), String>,
    ) -> Result<i64, Error> {
        self.summary.events_read += 1;
        let watermark = self.watermarks.current();
        let decoded = decoded.and_then(|()| self.too_far_ahead(watermark));
        if let Err(reason) = decoded {
            if replayed {
                self.summary.replayed_skipped += 1;
                return Ok(i64::MIN);
            }
            return self.dead_letter(&origin, &reason, raw).map(|()| i64::MIN);
        }
        self.times
            .observe(self.event.time, &origin, self.max_future.is_some());
        if let Some(dedup) = &mut self.dedup
            && dedup.check(raw, message_time, watermark) == Sighting::Duplicate
        {
            // Dropped before windowing: no window state, no watermark move
            // (the first copy already moved it).
            if replayed {
                self.summary.replayed_skipped += 1;
                return Ok(i64::MIN);
            }
            self.summary.duplicates += 1;
            if let Some(out) = &mut self.dedup_out {
                sink::write_duplicate(&mut self.line, &origin, dedup.key(), self.event.time, raw);
                out.write(Some(&self.event.key), &self.line, Some("duplicate"))?;
            }
            return Ok(i64::MIN);
        }
        let key = self.keys.intern(&self.event.key);
        let time = self.event.time;
        let outcome =
            self.operator
                .on_event(key, time, &self.event.values, watermark, &mut self.emitted)?;
        if let EventOutcome::Late(window) = outcome {
            if replayed {
                self.summary.replayed_skipped += 1;
            } else {
                sink::write_late(
                    &mut self.line,
                    &origin,
                    &self.event.key,
                    time,
                    window,
                    watermark,
                    self.lateness,
                    raw,
                );
                let reason = sink::late_reason(window, watermark, self.lateness);
                self.late_out
                    .write(Some(&self.event.key), &self.line, Some(&reason))?;
                self.summary.late += 1;
            }
        }
        let advanced = self.watermarks.observe(partition, time);
        self.advance(advanced)?;
        Ok(time)
    }

    /// Writes a dead letter for `raw`, which cannot be used because of
    /// `reason`, and counts it against the rate limit.
    fn dead_letter(&mut self, origin: &Origin<'_>, reason: &str, raw: &[u8]) -> Result<(), Error> {
        sink::write_dead_letter(&mut self.line, origin, reason, raw, self.guard.max_raw());
        self.dead_out.write(None, &self.line, Some(reason))?;
        self.summary.dead_lettered += 1;
        self.guard
            .on_dead_letter(reason, self.summary.dead_lettered)
            .map_err(Error::from)
    }

    /// Why the decoded event is refused under `watermark.max_future`: its
    /// time is that far ahead of the watermark. Before the first event
    /// there is no watermark to be ahead of.
    fn too_far_ahead(&self, watermark: i64) -> Result<(), String> {
        match self.max_future {
            Some(limit)
                if watermark != sluice_core::watermark::MIN_WATERMARK
                    && self.event.time > watermark.saturating_add(limit) =>
            {
                Err(format!(
                    "event time {} is {} ms ahead of the watermark {watermark}, more than \
                     watermark.max_future ({limit} ms) allows",
                    self.event.time,
                    self.event.time - watermark
                ))
            }
            _ => Ok(()),
        }
    }

    /// Judges the share of dead letters so far (see [`guard`]); `at_end`
    /// at the end of the input.
    fn judge_dead_letters(&mut self, at_end: bool) -> Result<(), Error> {
        self.guard.judge(&self.summary, at_end).map_err(Error::from)
    }

    /// Fires what a new watermark (if any) completes and writes what was emitted.
    fn advance(&mut self, watermark: Option<i64>) -> Result<(), Error> {
        if let Some(w) = watermark {
            self.operator.on_watermark(w, &mut self.emitted)?;
        }
        match &mut self.fill {
            Some(fill) => fill.apply(watermark, &mut self.emitted, &mut self.emissions),
            None => self
                .emissions
                .extend(self.emitted.drain(..).map(|r| (r, false))),
        }
        for (result, filled) in self.emissions.drain(..) {
            let key = self.keys.render(result.key);
            sink::write_result_marked(&mut self.line, key, &result, &self.names, filled);
            self.results.write(Some(key), &self.line, None)?;
            self.summary.windows_emitted += 1;
            self.summary.filled += u64::from(filled);
        }
        Ok(())
    }

    /// Runs the triggers' processing-time timers that the wall clock has
    /// reached, and writes what they emit.
    fn on_processing_time(&mut self) -> Result<(), Error> {
        let watermark = self.watermarks.current();
        self.operator
            .on_processing_time(now_ms(), watermark, &mut self.emitted);
        if self.emitted.is_empty() {
            return Ok(());
        }
        self.advance(None)
    }

    /// End of input: the watermark goes to +infinity and every window fires.
    fn finish(&mut self) -> Result<(), Error> {
        let end = self.watermarks.finish();
        self.advance(Some(end))?;
        self.flush()
    }

    /// The summary so far, with the plugins' failure counts.
    fn summary(&self) -> RunSummary {
        let health = self.operator.plugin_health();
        RunSummary {
            plugin_failures: health.iter().map(|h| h.failures).sum::<u64>()
                + self.operator.trigger_failures(),
            quarantined: health.iter().filter(|h| h.quarantined.is_some()).count() as u64,
            ..self.summary
        }
    }

    /// Moves on what Kafka outputs kept while their queues were full;
    /// returns whether any output is still backlogged.
    fn drain_outputs(&mut self) -> Result<bool, Error> {
        let mut backlogged = self.results.drain()?;
        backlogged |= self.late_out.drain()?;
        backlogged |= self.dead_out.drain()?;
        if let Some(out) = &mut self.dedup_out {
            backlogged |= out.drain()?;
        }
        Ok(backlogged)
    }

    /// Ends a file or stdin run that a signal asked to stop before the end
    /// of its input, at `position`: nothing is fired early (a window cut
    /// short would look complete); every output is flushed, and with a
    /// state backend a checkpoint is taken, from which the same command
    /// carries on as if the run had never stopped.
    fn stop_early(
        mut self,
        position: SourcePosition,
        signal: Option<i32>,
    ) -> Result<RunSummary, Error> {
        let checkpointed = self.checkpoints.is_some();
        tracing::info!(
            "stop requested: flushing the outputs{}",
            if checkpointed {
                " and checkpointing"
            } else {
                ""
            }
        );
        self.flush()?;
        self.checkpoint(position)?;
        let mut summary = self.summary();
        summary.stopped_by = Some(signal.unwrap_or(signal_hook::consts::SIGTERM));
        summary.left_open = self.operator.open_windows() as u64;
        summary.stop_checkpointed = checkpointed;
        Ok(summary)
    }

    /// Makes every record written so far durable.
    fn flush(&mut self) -> Result<(), Error> {
        self.results.flush()?;
        self.late_out.flush()?;
        if let Some(out) = &mut self.dedup_out {
            out.flush()?;
        }
        self.dead_out.flush()
    }
}

/// Runs a loaded pipeline over its whole input, or until SIGINT or SIGTERM
/// asks it to stop (see [`stop`]).
pub fn run(loaded: &LoadedConfig, options: &RunOptions) -> Result<RunSummary, Error> {
    let config = &loaded.pipeline;
    let batch_size = options.batch_size.unwrap_or(config.batch_size).max(1);
    crate::logging::init(&config.log);
    // First of all: a signal from here on asks for a clean stop.
    let stop = stop::Stop::install()?;
    let cache = match &config.plugin_cache {
        Some(setting) => CacheSetting::parse(setting, &loaded.base_dir),
        None => CacheSetting::default_dir(),
    };
    let engine = Arc::new(PluginEngine::with_cache(config.plugins.clone(), &cache)?);
    match &config.source {
        SourceConfig::File(path) => run_file_source(loaded, &engine, path, batch_size, &stop),
        SourceConfig::Kafka(kafka) => kafka::run(loaded, &engine, kafka, batch_size, &stop),
    }
}

/// How often a live stream's loop looks for a stop request while no line comes.
const STOP_CHECK: Duration = Duration::from_millis(100);

fn run_file_source(
    loaded: &LoadedConfig,
    engine: &Arc<PluginEngine>,
    path: &Path,
    batch_size: usize,
    stop: &stop::Stop,
) -> Result<RunSummary, Error> {
    let path = loaded.resolve(path);
    // The input first: a typo in its path is reported while the previous
    // run's outputs are still whole.
    let input = InputFile::open(&path)?;
    // An address it cannot listen on is reported before any output is touched.
    let mut metrics = FileMetrics::start(loaded)?;
    // Plugins and outputs next: a bad plugin is reported before the input is read.
    let mut flow = Flow::open(loaded, engine, batch_size, 1, None)?;
    if let Some(m) = &mut metrics {
        m.metrics.set_ready(true);
    }
    let (offset, line) = match flow.resume.take() {
        Some(SourcePosition::File { offset, line }) => (offset, line),
        Some(SourcePosition::Kafka { .. }) => {
            return Err(Error::Config(ConfigError(
                "key `state.path`: its checkpoints were taken from a Kafka source; this \
                 pipeline reads a file: use another state directory"
                    .into(),
            )));
        }
        None => (0, 0),
    };
    // Stdin or a FIFO is a live stream, not a replay: results are flushed
    // after every batch, so they come out as windows fire rather than when
    // a buffer fills.
    let live = input.is_live();
    let source = LineSource::start(input, offset, line)?;
    if !live {
        return replay_file(flow, &path, source, batch_size, stop, metrics);
    }
    live_stream(flow, &path, source, batch_size, stop, metrics)
}

/// The `/metrics`, `/healthz` and `/readyz` endpoints of a file or stdin run
/// (`metrics:`): the run's counters and plugin health, published between
/// batches (a file has no partitions or consumer lag).
struct FileMetrics {
    metrics: Arc<Metrics>,
    _server: MetricsServer,
}

impl FileMetrics {
    /// Serves the endpoints if the config asks for them.
    fn start(loaded: &LoadedConfig) -> Result<Option<Self>, Error> {
        let Some(m) = &loaded.pipeline.metrics else {
            return Ok(None);
        };
        let metrics = Arc::new(Metrics::new());
        let server = MetricsServer::start(&m.listen, Arc::clone(&metrics))?;
        Ok(Some(Self {
            metrics,
            _server: server,
        }))
    }
}

/// Publishes `flow`'s counters and plugin health to `metrics`, if served.
fn publish_flow(metrics: Option<&FileMetrics>, flow: &Flow) {
    if let Some(m) = metrics {
        publish_counters(&m.metrics, flow);
    }
}

/// Publishes the run's counters and each aggregation's plugin health.
fn publish_counters(metrics: &Metrics, flow: &Flow) {
    metrics.record_summary(&flow.summary(), flow.operator.open_windows());
    for (name, health) in flow.agg_names.iter().zip(flow.operator.plugin_health()) {
        metrics.record_plugin(name, &health);
    }
}

/// A live stream's run (stdin, a FIFO): lines are read on a thread of their
/// own, so that a stop request is seen while no line comes.
fn live_stream(
    mut flow: Flow,
    path: &Path,
    mut source: LineSource,
    batch_size: usize,
    stop: &stop::Stop,
    metrics: Option<FileMetrics>,
) -> Result<RunSummary, Error> {
    let mut position = file_position(source.position());
    let (to_loop, batches) =
        std::sync::mpsc::sync_channel::<Result<(LineBatch, (u64, u64)), crate::error::IoError>>(1);
    std::thread::Builder::new()
        .name("sluice-read".into())
        .spawn(move || {
            loop {
                let mut batch = LineBatch::default();
                let read = match source.next_batch(&mut batch, batch_size) {
                    Ok(true) => Ok((batch, source.position())),
                    Ok(false) => return,
                    Err(e) => Err(e),
                };
                let failed = read.is_err();
                if to_loop.send(read).is_err() || failed {
                    return;
                }
            }
        })
        .map_err(|e| crate::error::IoError {
            action: "starting a thread to read",
            path: path.to_path_buf(),
            source: e,
        })?;
    loop {
        if stop.requested() {
            return flow.stop_early(position, stop.signal());
        }
        let batch = match batches.recv_timeout(STOP_CHECK) {
            Ok(read) => read?,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                // A quiet stream is checkpointed too: what it sent is safe
                // before the next line comes.
                flow.maybe_checkpoint(|| position.clone())?;
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let (batch, at) = batch;
        flow.apply_reloads();
        for (line_no, raw) in batch.iter() {
            flow.on_record(Origin::Line(line_no), 0, raw, None, false)?;
        }
        flow.on_processing_time()?;
        flow.flush()?;
        position = file_position(at);
        publish_flow(metrics.as_ref(), &flow);
        flow.judge_dead_letters(false)?;
        flow.maybe_checkpoint(|| position.clone())?;
    }
    // The end of a file is where a later run over a longer file would carry
    // on, so the last checkpoint is taken before the end-of-input watermark:
    // a restart after a finished run fires the same last windows again, into
    // outputs cut back to where they were.
    flow.checkpoint(position)?;
    flow.judge_dead_letters(true)?;
    flow.finish()?;
    Ok(flow.summary())
}

/// A regular file's run: lines are decoded ahead on other threads
/// ([`read_ahead`]); windows, plugins and outputs stay on this one.
fn replay_file(
    mut flow: Flow,
    path: &Path,
    source: LineSource,
    batch_size: usize,
    stop: &stop::Stop,
    metrics: Option<FileMetrics>,
) -> Result<RunSummary, Error> {
    let mut position = file_position(source.position());
    // One decoder more than cores: on 2 cores, 3 decoders ran 7% faster than
    // 2 (this thread's share of the work leaves gaps that a spare fills).
    let decoders = std::thread::available_parallelism().map_or(1, |n| n.get().min(4)) + 1;
    let mut ahead =
        read_ahead::ReadAhead::start(path, source, batch_size, &flow.decoder, decoders)?;
    loop {
        if stop.requested() {
            return flow.stop_early(position, stop.signal());
        }
        let Some(batch) = ahead.next_batch()? else {
            break;
        };
        flow.apply_reloads();
        for (i, (line_no, raw)) in batch.lines().enumerate() {
            let decoded = batch.load(i, &mut flow.event);
            flow.on_decoded(Origin::Line(line_no), 0, raw, None, false, decoded)?;
        }
        flow.on_processing_time()?;
        position = file_position(batch.position);
        publish_flow(metrics.as_ref(), &flow);
        flow.judge_dead_letters(false)?;
        flow.maybe_checkpoint(|| position.clone())?;
    }
    // As in `live_stream`: the last checkpoint precedes the end of input.
    flow.checkpoint(position)?;
    flow.judge_dead_letters(true)?;
    flow.finish()?;
    Ok(flow.summary())
}

/// A checkpoint's position `(bytes, lines)` into a file.
fn file_position((offset, line): (u64, u64)) -> SourcePosition {
    SourcePosition::File { offset, line }
}

/// Loads the config at `path` and runs it.
pub fn run_file(path: &Path, options: &RunOptions) -> Result<RunSummary, Error> {
    let loaded = sluice_config::load(path)?;
    run(&loaded, options)
}
