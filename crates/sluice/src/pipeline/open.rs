//! Opening a run: the plugins (aggregations, the trigger, retiring
//! versions named by a checkpoint), the outputs, and the [`Flow`] that wires
//! them, after every check that could refuse the run has passed.

use super::checkpoint::fresh_token;
use super::*;

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

/// The opened aggregations of a pipeline, and where each reads its inputs.
pub struct OpenedAggregations {
    /// One per configured aggregation, in order.
    pub aggs: Vec<Box<dyn GroupedAggregation>>,
    /// Per aggregation, its declared inputs bound to event fields; `None`
    /// for a plugin of one number bound with `field` (or none, counting
    /// events), read as interface 0.1 always read it.
    pub bindings: Vec<Option<Vec<BoundInput>>>,
}

impl OpenedAggregations {
    /// The decoder of `config`'s events for these aggregations.
    pub fn decoder(&self, config: &PipelineConfig) -> EventDecoder {
        let mut decoder =
            EventDecoder::new(&config.event.key, &config.event.time, &config.aggregations);
        for (a, binding) in self.bindings.iter().enumerate() {
            if let Some(inputs) = binding {
                decoder.bind(a, inputs);
            }
        }
        decoder
    }
}

/// Loads, configures and checks every aggregation's plugin, so that a bad
/// plugin or plugin config stops the run before any event is read: a
/// plugin of interface 0.1 serves behind [`PerWindow`], one of 0.2 has its
/// declared inputs bound to event fields (see [`bind_inputs`]).
pub fn open_aggregations(
    engine: &PluginEngine,
    registry: &mut PluginRegistry<'_>,
    config: &PipelineConfig,
) -> Result<OpenedAggregations, ConfigError> {
    let spec = WindowSpec::from(&config.window);
    let mut aggs = Vec::with_capacity(config.aggregations.len());
    let mut bindings = Vec::with_capacity(config.aggregations.len());
    for (i, agg) in config.aggregations.iter().enumerate() {
        let at = |e: &dyn std::fmt::Display| {
            ConfigError(format!("key `aggregations[{i}]` ({}): {e}", agg.name))
        };
        let plugin = registry.get(&agg.plugin).map_err(|e| at(&e))?;
        let plugin_config = agg.plugin_config();
        let instance = engine
            .open_any(&plugin, &plugin_config, &agg.name)
            .map_err(|e| at(&e))?;
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
        bindings.push(match plugin {
            AnyAggregator::PerWindow(_) => {
                if agg.inputs.is_some() {
                    return Err(at(&format!(
                        "plugin {} is of interface 0.1 and takes one number: bind it with \
                         `field`, not `inputs`",
                        instance.label()
                    )));
                }
                None
            }
            // One number, bound with `field` (or counting events without
            // it): read as a 0.1 plugin's, whatever the interface.
            AnyAggregator::Grouped(_)
                if agg.inputs.is_none() && takes_one_number(instance.inputs()) =>
            {
                None
            }
            AnyAggregator::Grouped(_) => Some(
                bind_inputs(agg, &config.event.time, instance.inputs())
                    .map_err(|e| at(&format!("plugin {}: {e}", instance.label())))?,
            ),
        });
        aggs.push(instance);
    }
    Ok(OpenedAggregations { aggs, bindings })
}

/// Binds the declared `inputs` of an aggregation of interface 0.2 to event
/// fields as `agg` says: `inputs: { NAME: FIELD }`, or `field` for a plugin
/// of one input. Refuses an input bound that the plugin does not declare, a
/// required input left unbound, and a binding to the time field of an
/// input that is not a timestamp, each naming the input.
pub fn bind_inputs(
    agg: &AggregationConfig,
    time: &TimeConfig,
    inputs: &[InputSpec],
) -> Result<Vec<BoundInput>, String> {
    let declared = || format!("it takes {}", describe_inputs(inputs));
    let mut fields: std::collections::BTreeMap<&str, &str> = std::collections::BTreeMap::new();
    match (&agg.field, &agg.inputs) {
        (Some(field), _) => match inputs {
            [one] => {
                fields.insert(one.name.as_str(), field.as_str());
            }
            _ => {
                return Err(format!(
                    "`field` binds a plugin's one input, but {}: bind them with `inputs`",
                    declared()
                ));
            }
        },
        (None, Some(bound)) => {
            for (name, field) in bound {
                if !inputs.iter().any(|i| &i.name == name) {
                    return Err(format!(
                        "`inputs` binds `{name}`, which the plugin does not declare ({})",
                        declared()
                    ));
                }
                fields.insert(name.as_str(), field.as_str());
            }
        }
        (None, None) => {}
    }
    let time_field =
        (time.format != sluice_config::TimeFormat::KafkaTimestamp).then_some(time.field.as_str());
    inputs
        .iter()
        .map(|input| {
            let source = match fields.get(input.name.as_str()) {
                None if input.optional => InputSource::Unbound,
                None => {
                    return Err(format!(
                        "input `{}` ({}) is not bound to a field: add `inputs: {{ {}: FIELD }}` \
                         ({})",
                        input.name,
                        input.kind.name(),
                        input.name,
                        declared()
                    ));
                }
                Some(field) if Some(*field) == time_field => {
                    if input.kind != InputKind::Timestamp {
                        return Err(format!(
                            "input `{}` ({}) is bound to the time field `{field}`; only a \
                             timestamp input can read the event time",
                            input.name,
                            input.kind.name()
                        ));
                    }
                    InputSource::Time
                }
                Some(field) => InputSource::Field((*field).to_string()),
            };
            Ok(BoundInput {
                spec: input.clone(),
                source,
            })
        })
        .collect()
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
    aggs: &[Box<dyn GroupedAggregation>],
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

impl Flow {
    /// Opens the plugins and outputs of `loaded`, for a source of
    /// `partitions`, buffering `batch_size` values per plugin call, with
    /// `parallelism` window shards.
    pub(super) fn open(
        loaded: &LoadedConfig,
        engine: &Arc<PluginEngine>,
        (batch_size, parallelism): (usize, usize),
        partitions: usize,
        source_brokers: Option<&str>,
    ) -> Result<Self, Error> {
        let config = &loaded.pipeline;
        let mut registry = PluginRegistry::new(engine, &loaded.base_dir);
        let opened = open_aggregations(engine, &mut registry, config)?;
        let decoder = opened.decoder(config);
        let aggs = opened.aggs;
        let triggers = open_trigger(engine, &loaded.base_dir, config, &aggs)?;
        // Shards 1 and up: instances of their own, opened as the first's.
        let mut more = Vec::with_capacity(parallelism.saturating_sub(1));
        for _ in 1..parallelism {
            let aggs = open_aggregations(engine, &mut registry, config)?.aggs;
            let triggers = open_trigger(engine, &loaded.base_dir, config, &aggs)?;
            more.push((aggs, triggers));
        }
        let reloader = match &config.reload {
            Some(reload) => {
                let spec = WindowSpec::from(&config.window);
                let (watched, running): (Vec<WatchedPlugin>, Vec<&dyn GroupedAggregation>) = config
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
        let agg_names: Vec<String> = config.aggregations.iter().map(|a| a.name.clone()).collect();
        let operator = |aggs, triggers| {
            let mut op = WindowOperator::new(
                spec,
                lateness,
                aggs,
                triggers,
                batch_size,
                config.plugins.quarantine_after,
            );
            op.set_aggregation_names(agg_names.clone());
            op
        };
        if parallelism > 1 {
            tracing::info!(
                workers = parallelism,
                "{parallelism} window workers share the keys"
            );
        }
        let shards = match more.is_empty() {
            true => None,
            false => Some(shards::Shards::start(
                more.into_iter()
                    .map(|(aggs, triggers)| operator(aggs, triggers))
                    .collect(),
                spec.span().saturating_add(lateness),
            )?),
        };
        let mut flow = Self {
            operator: operator(aggs, triggers),
            shards,
            watermarks: Watermarks::new(millis(config.watermark.max_out_of_orderness), partitions),
            decoder,
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
            metrics: None,
            batch: None,
            status: None,
        };
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
}

/// `sluice validate`: loads a pipeline as a run would, up to the last check
/// that could refuse it (the config and its keys, the plugins compiled and
/// opened with their configs, the trigger and the columns it watches, the
/// source file's existence), and opens nothing else: no output is created
/// or touched, no source read, no state directory locked, no port bound
/// (the plugin compile cache is used as a run uses it).
/// Returns what the run would do, for the operator to read.
pub fn validate(loaded: &LoadedConfig) -> Result<String, Error> {
    let config = &loaded.pipeline;
    let cache = match &config.plugin_cache {
        Some(setting) => CacheSetting::parse(setting, &loaded.base_dir),
        None => CacheSetting::default_dir(),
    };
    let engine = PluginEngine::with_cache(config.plugins.clone(), &cache)?;
    let mut registry = PluginRegistry::new(&engine, &loaded.base_dir);
    let aggs = open_aggregations(&engine, &mut registry, config)?.aggs;
    let triggers = open_trigger(&engine, &loaded.base_dir, config, &aggs)?;
    let source = match &config.source {
        SourceConfig::File(path) if path == Path::new("-") => "stdin".to_string(),
        SourceConfig::File(path) => {
            let resolved = loaded.resolve(path);
            if !resolved.is_file() {
                return Err(ConfigError(format!(
                    "key `source.file`: {} is not a readable file",
                    resolved.display()
                ))
                .into());
            }
            format!("file {}", resolved.display())
        }
        SourceConfig::Kafka(kafka) => format!(
            "Kafka topics {} at {} as group {} (brokers not contacted)",
            kafka.topics.join(", "),
            kafka.brokers,
            kafka.group
        ),
    };
    let mut report = format!(
        "valid: nothing was opened, written or read\n\
         source:       {source}\n\
         window:       {}\n\
         aggregations:\n",
        config.window
    );
    for (agg, instance) in config.aggregations.iter().zip(&aggs) {
        let outputs: Vec<&str> = instance.outputs().iter().map(|o| o.name.as_str()).collect();
        report.push_str(&format!(
            "  {}: {} -> {}\n",
            agg.name,
            instance.label(),
            outputs.join(", ")
        ));
    }
    report.push_str(&format!("trigger:      {}\n", triggers.label()));
    Ok(report)
}

/// [`validate`] of the pipeline file at `path`.
pub fn validate_file(path: &Path) -> Result<String, Error> {
    validate(&sluice_config::load(path)?)
}
