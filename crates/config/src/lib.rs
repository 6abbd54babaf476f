//! The pipeline configuration: what to read, how to decode and window it, which
//! plugins aggregate it and where results go.
//!
//! Loaded from YAML with `SLUICE_`-prefixed environment overrides
//! (`SLUICE_SOURCE__FILE=other.jsonl` sets `source.file`), and validated as a
//! whole before any event is read, so that a mistake is reported by key.
//!
//! This crate is the leaf of the house: every other sluice crate reads its
//! types, and it imports none of theirs. The sections that belong to one
//! stage live in a module each ([`dedup`], [`fill`], [`limits`],
//! [`reload`], [`log`]); the rest, which the whole pipeline shares, is here.

#![warn(missing_docs)]

pub mod dedup;
pub mod fill;
pub mod limits;
pub mod log;
pub mod reload;

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Yaml};
use serde::{Deserialize, Deserializer};

pub use dedup::{DedupConfig, DedupMode};
pub use fill::{FillConfig, FillStrategy};
pub use limits::PluginLimits;
pub use log::{LogConfig, LogFormat, LogLevel};
pub use reload::ReloadConfig;

/// A bad pipeline configuration: the user's to fix. The message names the
/// key (such as `window.sliding.slide`) or the file concerned.
#[derive(Debug, thiserror::Error)]
#[error("config error: {0}")]
pub struct ConfigError(pub String);

/// A whole pipeline, as written in `pipeline.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Where events come from.
    pub source: SourceConfig,
    /// How to read an event's key, time and values.
    pub event: EventConfig,
    /// How event time turns into a watermark.
    #[serde(default)]
    pub watermark: WatermarkConfig,
    /// How events are grouped into windows.
    pub window: WindowConfig,
    /// How long after a window fires late events still update it.
    #[serde(default, deserialize_with = "de_duration")]
    pub allowed_lateness: Duration,
    /// The aggregations computed for every window, in output order.
    pub aggregations: Vec<AggregationConfig>,
    /// When windows emit: a trigger plugin and its config (the event-time
    /// trigger, `builtin/event-time`, when absent).
    #[serde(default)]
    pub trigger: Option<TriggerConfig>,
    /// Where window results go.
    pub sink: OutputConfig,
    /// Where events too late for any window go (stderr when absent).
    #[serde(default)]
    pub late_output: Option<OutputConfig>,
    /// Where events that cannot be decoded go (stderr when absent).
    #[serde(default)]
    pub dead_letter: Option<OutputConfig>,
    /// Sandbox limits for every plugin of the pipeline.
    #[serde(default)]
    pub plugins: PluginLimits,
    /// Where compiled plugins are cached (a directory, relative to the
    /// config's), or `off`; by default `$XDG_CACHE_HOME/sluice/components`
    /// (see `sluice_wasm::cache`). `SLUICE_PLUGIN_CACHE` overrides it.
    #[serde(default)]
    pub plugin_cache: Option<String>,
    /// Hot reload of the pipeline's plugin files (see [`reload`]).
    #[serde(default)]
    pub reload: Option<ReloadConfig>,
    /// Most values buffered for one window before a plugin call; also how many
    /// lines are read at a time. Changes speed, never results.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Operations endpoints (`/metrics`, `/healthz`, `/readyz`) of a Kafka run.
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    /// Diagnostic log format and level.
    #[serde(default)]
    pub log: LogConfig,
    /// Where window state lives and how often it is checkpointed.
    #[serde(default)]
    pub state: StateConfig,
    /// Gap filling of tumbling windows (see [`fill`]).
    #[serde(default)]
    pub fill: Option<FillConfig>,
    /// Dropping redelivered events before windowing (see [`dedup`]).
    #[serde(default)]
    pub dedup: Option<DedupConfig>,
    /// Where dropped duplicates go (nowhere when absent: they are only counted).
    #[serde(default)]
    pub dedup_output: Option<OutputConfig>,
}

/// Which state backend keeps the pipeline's window state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateBackendKind {
    /// Window state lives in the process only; nothing survives a crash.
    #[default]
    Memory,
    /// Checkpoints go to a RocksDB database at `state.path`, and a restart
    /// resumes from the last complete one.
    Rocksdb,
}

/// `state: { backend: rocksdb, path: ./state, checkpoint_interval: 10s, keep: 3 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// `memory` (the default) or `rocksdb`.
    #[serde(default)]
    pub backend: StateBackendKind,
    /// The state directory (RocksDB only), relative to the config file.
    #[serde(default = "default_state_path")]
    pub path: PathBuf,
    /// Wall-clock time between checkpoints; one is also taken at the end of
    /// input and on shutdown.
    #[serde(
        default = "default_checkpoint_interval",
        deserialize_with = "de_duration"
    )]
    pub checkpoint_interval: Duration,
    /// How many complete checkpoints are kept (at least 1): older ones are
    /// pruned, and a damaged newest one falls back to the one before it.
    #[serde(default = "default_keep")]
    pub keep: usize,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            backend: StateBackendKind::Memory,
            path: default_state_path(),
            checkpoint_interval: default_checkpoint_interval(),
            keep: default_keep(),
        }
    }
}

fn default_state_path() -> PathBuf {
    PathBuf::from("state")
}

fn default_checkpoint_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_keep() -> usize {
    3
}

/// Where the operations endpoints listen.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port`, e.g. `127.0.0.1:9464`.
    pub listen: String,
}

fn default_batch_size() -> usize {
    1024
}

/// Where events come from: exactly one of `file` or `kafka`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum SourceConfig {
    /// A JSON-lines file; `-` reads stdin.
    File(PathBuf),
    /// Topics of a Kafka cluster, read as a consumer group.
    Kafka(KafkaSourceConfig),
}

/// A Kafka consumer group over one or more topics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Bootstrap servers (`host:port,...`), or `embedded` for an in-process
    /// broker that lives as long as the run (for demos and trials).
    #[serde(default = "default_brokers")]
    pub brokers: String,
    /// Topics to consume.
    pub topics: Vec<String>,
    /// Consumer group id; members of one group share the topics' partitions.
    #[serde(default = "default_group")]
    pub group: String,
    /// Read up to the end offsets seen at start, then fire everything, commit
    /// and exit (a bounded source, for backfills and tests).
    #[serde(default)]
    pub stop_at_end: bool,
    /// A partition that delivers nothing for this long stops holding the
    /// watermark back (Flink's idleness); it counts again with its next event.
    #[serde(default = "default_idle_timeout", deserialize_with = "de_duration")]
    pub idle_timeout: Duration,
    /// How often offsets are committed (after the outputs are flushed).
    #[serde(default = "default_commit_interval", deserialize_with = "de_duration")]
    pub commit_interval: Duration,
    /// Extra librdkafka consumer settings, passed through as they are.
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, String>,
    /// With `brokers: embedded`: a JSON-lines file (`-` for stdin) that the
    /// run produces into the first topic while it consumes; the run ends once
    /// the feed is exhausted and everything it wrote has been consumed.
    #[serde(default)]
    pub feed: Option<PathBuf>,
}

/// Partitions of each topic the embedded broker creates.
pub const EMBEDDED_PARTITIONS: i32 = 4;

fn default_brokers() -> String {
    "embedded".into()
}

fn default_group() -> String {
    "sluice".into()
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_commit_interval() -> Duration {
    Duration::from_secs(5)
}

/// Where records go: exactly one of `file` or `kafka`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum OutputConfig {
    /// A JSON-lines file, created or truncated; `-` writes stdout.
    File(PathBuf),
    /// A Kafka topic.
    Kafka(KafkaOutputConfig),
}

/// A Kafka topic written by an idempotent producer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaOutputConfig {
    /// The topic.
    pub topic: String,
    /// Bootstrap servers; by default the Kafka source's.
    #[serde(default)]
    pub brokers: Option<String>,
    /// Extra librdkafka producer settings, passed through as they are.
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, String>,
}

/// The fields of an event that sluice reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventConfig {
    /// Fields whose values together form the grouping key (may be empty: one global key).
    #[serde(default, deserialize_with = "de_one_or_many")]
    pub key: Vec<String>,
    /// The event-time field and its format.
    pub time: TimeConfig,
}

/// Where and how an event carries its event time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeConfig {
    /// The field name (unused, and may be left out, with `kafka_timestamp`).
    #[serde(default)]
    pub field: String,
    /// Its format.
    pub format: TimeFormat,
}

/// Formats an event time may come in; all become epoch milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// Integer (or fractional) seconds since the epoch.
    EpochSeconds,
    /// Milliseconds since the epoch.
    EpochMillis,
    /// Microseconds since the epoch.
    EpochMicros,
    /// Nanoseconds since the epoch.
    EpochNanos,
    /// An RFC 3339 string such as `2024-05-01T12:00:00.250Z`.
    Rfc3339,
    /// Not a field: the Kafka message's timestamp (producer or log-append
    /// time, as the topic is configured). Only for a Kafka source.
    KafkaTimestamp,
}

/// The watermark strategy.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatermarkConfig {
    /// How far behind the largest event time seen the watermark trails.
    #[serde(default, deserialize_with = "de_duration")]
    pub max_out_of_orderness: Duration,
}

/// The window kind and its sizes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum WindowConfig {
    /// Fixed-size, non-overlapping windows.
    Tumbling {
        /// Window length.
        #[serde(deserialize_with = "de_duration")]
        size: Duration,
        /// Shift of window starts from the epoch.
        #[serde(default, deserialize_with = "de_duration")]
        offset: Duration,
    },
    /// Fixed-size windows starting every `slide`.
    Sliding {
        /// Window length.
        #[serde(deserialize_with = "de_duration")]
        size: Duration,
        /// Distance between window starts; at most `size`.
        #[serde(deserialize_with = "de_duration")]
        slide: Duration,
        /// Shift of window starts from the epoch.
        #[serde(default, deserialize_with = "de_duration")]
        offset: Duration,
    },
    /// Per-key bursts of activity separated by silences longer than `gap`.
    Session {
        /// The silence that ends a session.
        #[serde(deserialize_with = "de_duration")]
        gap: Duration,
    },
}

/// What to do with an event that lacks an aggregation's field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingPolicy {
    /// Send the whole event to the dead-letter output.
    #[default]
    DeadLetter,
    /// Leave this aggregation out for this event; others still see it.
    Skip,
}

/// One aggregation computed for every window.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregationConfig {
    /// Prefix of this aggregation's outputs (`<name>.<output>`).
    pub name: String,
    /// `builtin/NAME` or a path to a `.wasm` component.
    pub plugin: String,
    /// The numeric (or boolean) field this aggregation reads; when absent every
    /// event contributes the value 1.
    #[serde(default)]
    pub field: Option<String>,
    /// The plugin's configuration, passed to it as JSON.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    /// What to do when an event lacks `field`.
    #[serde(default)]
    pub on_missing: MissingPolicy,
}

impl AggregationConfig {
    /// The plugin's configuration as the JSON text it is opened with (`{}`
    /// when the pipeline gives none).
    pub fn plugin_config(&self) -> String {
        self.config
            .as_ref()
            .map_or_else(|| "{}".to_string(), serde_json::Value::to_string)
    }
}

/// `trigger: { plugin: builtin/early, config: { every_events: 1000 } }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerConfig {
    /// `builtin/event-time`, `builtin/early`, `builtin/count`, or a path to a
    /// `.wasm` trigger component.
    pub plugin: String,
    /// The trigger's configuration, passed to it as JSON.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
}

/// The trigger used when a pipeline names none.
pub const DEFAULT_TRIGGER: &str = "builtin/event-time";

/// A loaded configuration with the directory its relative paths are taken from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The pipeline.
    pub pipeline: PipelineConfig,
    /// The config file's directory.
    pub base_dir: PathBuf,
}

impl LoadedConfig {
    /// A path from the config, resolved against the config's directory
    /// (`-` is kept as is: it means stdin or stdout).
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path == Path::new("-") || path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }
}

/// Loads and validates a pipeline config file, applying `SLUICE_` overrides.
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
    if !path.is_file() {
        return Err(ConfigError(format!(
            "config file {} does not exist",
            path.display()
        )));
    }
    let pipeline: PipelineConfig = Figment::from(Yaml::file(path))
        .merge(env_overrides())
        .extract()
        .map_err(|e| ConfigError(format!("{}: {}", path.display(), describe(e))))?;
    pipeline.validate()?;
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    Ok(LoadedConfig { pipeline, base_dir })
}

/// The keys a pipeline file has at its top level; only `SLUICE_` variables
/// that start with one of them are overrides, so an unrelated variable that
/// happens to share the prefix cannot break a config.
const TOP_LEVEL_KEYS: &[&str] = &[
    "source",
    "event",
    "watermark",
    "window",
    "allowed_lateness",
    "aggregations",
    "sink",
    "late_output",
    "dead_letter",
    "plugins",
    "plugin_cache",
    "reload",
    "batch_size",
    "metrics",
    "state",
    "log",
    "fill",
    "dedup",
    "dedup_output",
];

/// `SLUICE_SINK__FILE=x` overrides `sink.file`: `__` separates nested keys.
fn env_overrides() -> Env {
    Env::prefixed("SLUICE_").split("__").filter(|key| {
        let top = key.as_str().split('.').next().unwrap_or_default();
        TOP_LEVEL_KEYS.iter().any(|k| k.eq_ignore_ascii_case(top))
    })
}

/// Figment's errors, one line each, with the key path they concern.
fn describe(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            if key.is_empty() {
                e.kind.to_string()
            } else {
                format!("key `{key}`: {}", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl PipelineConfig {
    /// Checks what serde cannot: sizes, names and their relations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        match &self.window {
            WindowConfig::Tumbling { size, offset } => {
                positive_ms("window.tumbling.size", *size)?;
                if offset >= size {
                    return err("key `window.tumbling.offset`: must be less than size".into());
                }
            }
            WindowConfig::Sliding {
                size,
                slide,
                offset,
            } => {
                positive_ms("window.sliding.size", *size)?;
                positive_ms("window.sliding.slide", *slide)?;
                if slide > size {
                    return err(format!(
                        "key `window.sliding.slide`: {} is larger than size {}; events between \
                         windows would belong to none (use a tumbling window or a smaller slide)",
                        humantime::format_duration(*slide),
                        humantime::format_duration(*size)
                    ));
                }
                if offset >= slide {
                    return err("key `window.sliding.offset`: must be less than slide".into());
                }
            }
            WindowConfig::Session { gap } => positive_ms("window.session.gap", *gap)?,
        }
        fill::validate(self.fill.as_ref(), &self.window)?;
        dedup::validate(self.dedup.as_ref())?;
        if self.aggregations.is_empty() {
            return err("key `aggregations`: at least one aggregation is needed".into());
        }
        let mut seen = std::collections::HashSet::new();
        for (i, agg) in self.aggregations.iter().enumerate() {
            let valid = !agg.name.is_empty()
                && agg
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                return err(format!(
                    "key `aggregations[{i}].name`: {:?} must be non-empty letters, digits, `_` or `-`",
                    agg.name
                ));
            }
            if !seen.insert(agg.name.as_str()) {
                return err(format!(
                    "key `aggregations[{i}].name`: {:?} is used twice",
                    agg.name
                ));
            }
            if agg.plugin.is_empty() {
                return err(format!("key `aggregations[{i}].plugin`: must not be empty"));
            }
        }
        if self.state.backend == StateBackendKind::Rocksdb {
            if self.state.keep == 0 {
                return err("key `state.keep`: keep at least 1 checkpoint".into());
            }
            positive_ms("state.checkpoint_interval", self.state.checkpoint_interval)?;
            match &self.source {
                SourceConfig::File(path) if path == Path::new("-") => {
                    return err(
                        "key `state.backend`: rocksdb checkpoints resume the source from \
                                a byte offset, which stdin cannot seek to; read a file instead"
                            .into(),
                    );
                }
                SourceConfig::File(_) | SourceConfig::Kafka(_) => {}
            }
        }
        if let SourceConfig::Kafka(k) = &self.source {
            if k.topics.is_empty() || k.topics.iter().any(String::is_empty) {
                return err("key `source.kafka.topics`: list at least one topic".into());
            }
            if k.brokers.is_empty() {
                return err("key `source.kafka.brokers`: must not be empty".into());
            }
            if k.feed.is_some() && k.brokers != "embedded" {
                return err(
                    "key `source.kafka.feed`: only for `brokers: embedded` (produce into a real \
                     cluster with `sluice produce`)"
                        .into(),
                );
            }
        }
        let outputs = [
            ("sink", Some(&self.sink)),
            ("late_output", self.late_output.as_ref()),
            ("dead_letter", self.dead_letter.as_ref()),
        ];
        for (key, output) in outputs {
            if let Some(OutputConfig::Kafka(k)) = output {
                if k.topic.is_empty() {
                    return err(format!("key `{key}.kafka.topic`: must not be empty"));
                }
                if k.brokers.is_none() && !matches!(self.source, SourceConfig::Kafka(_)) {
                    return err(format!(
                        "key `{key}.kafka.brokers`: needed when the source is not Kafka"
                    ));
                }
            }
        }
        let from_message = self.event.time.format == TimeFormat::KafkaTimestamp;
        if from_message && !matches!(self.source, SourceConfig::Kafka(_)) {
            return err("key `event.time.format`: kafka_timestamp needs a Kafka source".into());
        }
        if self.event.time.field.is_empty() && !from_message {
            return err("key `event.time.field`: must not be empty".into());
        }
        if self.batch_size == 0 {
            return err("key `batch_size`: must be at least 1".into());
        }
        if let Some(why) = self.plugins.check() {
            return err(why);
        }
        if let Some(why) = self.plugins.check() {
            return err(why);
        }
        Ok(())
    }
}

fn positive_ms(key: &str, d: Duration) -> Result<(), ConfigError> {
    if d.as_millis() == 0 || !d.subsec_nanos().is_multiple_of(1_000_000) {
        return Err(ConfigError(format!(
            "key `{key}`: must be a positive whole number of milliseconds, got {}",
            humantime::format_duration(d)
        )));
    }
    if d.as_millis() > (1u128 << 50) {
        return Err(ConfigError(format!("key `{key}`: is too large")));
    }
    Ok(())
}

/// Milliseconds in a duration, for window arithmetic (checked in validation).
pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Reads a duration written as `250ms`, `5s`, `1m 30s`, `2h`.
pub fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d).map_err(|_| {
        serde::de::Error::custom("expected a duration with a unit, such as `500ms`, `5s` or `1m`")
    })?;
    humantime::parse_duration(text.trim()).map_err(|e| {
        serde::de::Error::custom(format!(
            "`{text}` is not a duration ({e}); write it with a unit, such as `500ms`, `5s` or `1m`"
        ))
    })
}

/// Reads a byte size written as a number of bytes or with a unit (`64MiB`, `1GiB`).
pub fn de_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Bytes(n) => Ok(n),
        Size::Text(text) => parse_bytes(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{text}` is not a size; write bytes or use KiB, MiB or GiB, such as `64MiB`"
            ))
        }),
    }
}

fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let scale = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1 << 10,
        "MiB" | "M" | "MB" => 1 << 20,
        "GiB" | "G" | "GB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// Reads one string or a list of strings (`key: service` or `key: [a, b]`).
pub fn de_one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<PipelineConfig, String> {
        let cfg: PipelineConfig = Figment::from(Yaml::string(yaml))
            .extract()
            .map_err(describe)?;
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(cfg)
    }

    const BASE: &str = "source: { file: in.jsonl }\n\
        event: { key: [service], time: { field: ts, format: epoch_millis } }\n\
        sink: { file: out.jsonl }\n\
        aggregations: [ { name: lat, plugin: builtin/stats, field: latency_ms } ]\n";

    #[test]
    fn parses_the_documented_shape() {
        let cfg = parse(&format!(
            "{BASE}window: {{ sliding: {{ size: 10s, slide: 5s }} }}\n\
             watermark: {{ max_out_of_orderness: 5s }}\nallowed_lateness: 250ms\n"
        ))
        .unwrap();
        assert!(
            matches!(cfg.window, WindowConfig::Sliding { size, slide, .. }
            if size == Duration::from_secs(10) && slide == Duration::from_secs(5))
        );
        assert_eq!(cfg.allowed_lateness, Duration::from_millis(250));
        assert_eq!(cfg.watermark.max_out_of_orderness, Duration::from_secs(5));
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse(&format!("{BASE}window: {{ tumbling: {{ size: ten }} }}\n")).unwrap_err();
        assert!(e.contains("window.tumbling.size"), "{e}");
        let e = parse(&format!(
            "{BASE}window: {{ sliding: {{ size: 5s, slide: 10s }} }}\n"
        ))
        .unwrap_err();
        assert!(e.contains("window.sliding.slide"), "{e}");
        let e = parse(&format!(
            "{BASE}window: {{ tumbling: {{ size: 10s }} }}\nbogus: 1\n"
        ))
        .unwrap_err();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("64MiB"), Some(64 << 20));
        assert_eq!(parse_bytes("1024"), Some(1024));
        assert_eq!(parse_bytes("12 parsecs"), None);
    }
}
