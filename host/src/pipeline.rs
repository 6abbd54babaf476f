//! One run of a pipeline, wired in one direction:
//! source -> decode -> watermark -> window assignment -> batched plugin calls
//! -> emit -> sink, with late events and undecodable lines split off to their
//! own outputs on the way.

use std::path::Path;

use crate::config::{LoadedConfig, OutputConfig, PipelineConfig, WindowConfig, millis};
use crate::decode::{Event, EventDecoder, KeyTable};
use crate::error::{ConfigError, Error};
use crate::plugin::bindings::OutputSpec;
use crate::plugin::{AggregationInstance, PluginEngine, PluginRegistry};
use crate::sink::{self, JsonlWriter, OutputNames};
use crate::source::{LineBatch, LineSource};
use crate::watermark::Watermarks;
use crate::window::{EventOutcome, WindowOperator, WindowResult, WindowSpec};

/// Run-time choices that are not part of the pipeline's meaning.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Overrides `batch_size` from the config (tests use it to show that batch
    /// sizes change nothing in the output).
    pub batch_size: Option<usize>,
}

/// What a run did, for its closing summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Non-blank input lines read.
    pub events_read: u64,
    /// Window results written (on-time and late emissions).
    pub windows_emitted: u64,
    /// Events written to the late-data output.
    pub late: u64,
    /// Lines written to the dead-letter output.
    pub dead_lettered: u64,
}

impl std::fmt::Display for RunSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} events read, {} windows emitted, {} late, {} dead-lettered",
            self.events_read, self.windows_emitted, self.late, self.dead_lettered
        )
    }
}

/// The window shape of a config, in milliseconds.
pub fn window_spec(window: &WindowConfig) -> WindowSpec {
    match *window {
        WindowConfig::Tumbling { size, offset } => WindowSpec::Tumbling {
            size: millis(size),
            offset: millis(offset),
        },
        WindowConfig::Sliding {
            size,
            slide,
            offset,
        } => WindowSpec::Sliding {
            size: millis(size),
            slide: millis(slide),
            offset: millis(offset),
        },
        WindowConfig::Session { gap } => WindowSpec::Session { gap: millis(gap) },
    }
}

/// Loads, configures and checks every aggregation's plugin, so that a bad
/// plugin or plugin config stops the run before any event is read.
pub fn open_aggregations(
    engine: &PluginEngine,
    registry: &mut PluginRegistry<'_>,
    config: &PipelineConfig,
) -> Result<Vec<AggregationInstance>, ConfigError> {
    let spec = window_spec(&config.window);
    let mut aggs = Vec::with_capacity(config.aggregations.len());
    for (i, agg) in config.aggregations.iter().enumerate() {
        let at = |e: &dyn std::fmt::Display| {
            ConfigError(format!("key `aggregations[{i}]` ({}): {e}", agg.name))
        };
        let plugin = registry.get(&agg.plugin).map_err(|e| at(&e))?;
        let plugin_config = agg
            .config
            .as_ref()
            .map_or_else(|| "{}".to_string(), serde_json::Value::to_string);
        let instance = engine
            .open_aggregation(&plugin, &plugin_config)
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
        aggs.push(instance);
    }
    Ok(aggs)
}

fn check_outputs(outputs: &[OutputSpec]) -> Result<(), String> {
    if outputs.is_empty() {
        return Err("declares no outputs".into());
    }
    let mut seen = std::collections::HashSet::new();
    for o in outputs {
        let valid = !o.name.is_empty()
            && o.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid {
            return Err(format!("output name {:?} is not a plain name", o.name));
        }
        if !seen.insert(o.name.as_str()) {
            return Err(format!("output name {:?} is declared twice", o.name));
        }
    }
    Ok(())
}

fn open_output(loaded: &LoadedConfig, output: Option<&OutputConfig>) -> Result<JsonlWriter, Error> {
    Ok(match output {
        Some(o) => JsonlWriter::create(&loaded.resolve(&o.file))?,
        None => JsonlWriter::stderr(),
    })
}

/// Runs a loaded pipeline over its whole input.
pub fn run(loaded: &LoadedConfig, options: &RunOptions) -> Result<RunSummary, Error> {
    let config = &loaded.pipeline;
    let batch_size = options.batch_size.unwrap_or(config.batch_size).max(1);
    let engine = PluginEngine::new(config.plugins.clone())?;
    let mut registry = PluginRegistry::new(&engine, &loaded.base_dir);
    let aggs = open_aggregations(&engine, &mut registry, config)?;
    let names = OutputNames::new(
        config
            .aggregations
            .iter()
            .zip(&aggs)
            .map(|(c, a)| (c.name.as_str(), a.outputs())),
    );

    let mut source = LineSource::open(&loaded.resolve(&config.source.file))?;
    let mut results = JsonlWriter::create(&loaded.resolve(&config.sink.file))?;
    let mut late_out = open_output(loaded, config.late_output.as_ref())?;
    let mut dead_out = open_output(loaded, config.dead_letter.as_ref())?;

    let lateness = millis(config.allowed_lateness);
    let mut operator = WindowOperator::new(window_spec(&config.window), lateness, aggs, batch_size);
    let mut watermarks = Watermarks::new(millis(config.watermark.max_out_of_orderness), 1);
    let mut decoder =
        EventDecoder::new(&config.event.key, &config.event.time, &config.aggregations);
    let mut keys = KeyTable::default();
    let mut event = Event::default();
    let mut batch = LineBatch::default();
    let mut emitted: Vec<WindowResult> = Vec::new();
    let mut line = String::new();
    let mut summary = RunSummary::default();

    let mut write_results = |emitted: &mut Vec<WindowResult>,
                             keys: &KeyTable,
                             summary: &mut RunSummary|
     -> Result<(), Error> {
        for result in emitted.drain(..) {
            sink::write_result(&mut line, keys.render(result.key), &result, &names);
            results.write_line(&line)?;
            summary.windows_emitted += 1;
        }
        Ok(())
    };

    let mut scratch = String::new();
    while source.next_batch(&mut batch, batch_size)? {
        for (line_no, raw) in batch.iter() {
            summary.events_read += 1;
            if let Err(reason) = decoder.decode(raw, &mut event) {
                sink::write_dead_letter(&mut scratch, line_no, &reason, raw);
                dead_out.write_line(&scratch)?;
                summary.dead_lettered += 1;
                continue;
            }
            let key = keys.intern(&event.key);
            let watermark = watermarks.current();
            let outcome =
                operator.on_event(key, event.time, &event.values, watermark, &mut emitted)?;
            if let EventOutcome::Late(window) = outcome {
                sink::write_late(
                    &mut scratch,
                    line_no,
                    &event.key,
                    event.time,
                    window,
                    watermark,
                    lateness,
                    raw,
                );
                late_out.write_line(&scratch)?;
                summary.late += 1;
            }
            if let Some(advanced) = watermarks.observe(0, event.time) {
                operator.on_watermark(advanced, &mut emitted)?;
            }
            if !emitted.is_empty() {
                write_results(&mut emitted, &keys, &mut summary)?;
            }
        }
    }
    operator.on_watermark(watermarks.finish(), &mut emitted)?;
    write_results(&mut emitted, &keys, &mut summary)?;
    results.flush()?;
    late_out.flush()?;
    dead_out.flush()?;
    Ok(summary)
}

/// Loads the config at `path` and runs it.
pub fn run_file(path: &Path, options: &RunOptions) -> Result<RunSummary, Error> {
    let loaded = crate::config::load(path)?;
    run(&loaded, options)
}
