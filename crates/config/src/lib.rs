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
    /// How many window workers share the keys (each with its own plugin
    /// instances and trigger); 1 keeps every window on the pipeline's
    /// thread. Changes speed, never results.
    #[serde(default = "default_parallelism")]
    pub parallelism: usize,
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
    /// How large a dead letter may be, how fast they may come, and what
    /// share of the input they may take before the run says so.
    #[serde(default)]
    pub dead_letter_limits: DeadLetterLimits,
}

/// `dead_letter_limits: { max_raw_bytes: 64KiB, max_share: 0.1, min_events: 1000, on_share: warn, max_per_second: 1000 }`.
///
/// Bad input never stops a run by itself; these say when it has gone too
/// far to be ordinary: a field-name typo that dead-letters every event, a
/// binary file read as JSON lines.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadLetterLimits {
    /// Raw input bytes kept in one dead letter; a longer line is cut there
    /// and its record says so (`"raw_truncated":true`, `"raw_bytes":N`).
    #[serde(deserialize_with = "de_bytes")]
    pub max_raw_bytes: u64,
    /// The share of events read (0 to 1) that may be dead-lettered before
    /// the run warns, or fails with `on_share: fail`; 1 never.
    pub max_share: f64,
    /// Events read before the share is judged (it is always judged at the
    /// end of the input), so that one bad line among the first few does
    /// not count as a flood.
    pub min_events: u64,
    /// What a share above `max_share` does.
    pub on_share: ShareAction,
    /// Most dead letters per second of wall-clock time, with a burst of ten
    /// seconds' worth; beyond it the run stops with an error. Absent: no limit.
    pub max_per_second: Option<u64>,
}

impl Default for DeadLetterLimits {
    fn default() -> Self {
        Self {
            max_raw_bytes: 64 << 10,
            max_share: 0.1,
            min_events: 1000,
            on_share: ShareAction::Warn,
            max_per_second: None,
        }
    }
}

/// What a dead-letter share above its limit does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShareAction {
    /// Log a warning once while the run goes on, and again at its end.
    #[default]
    Warn,
    /// Stop the run with an error (exit code 3).
    Fail,
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

/// Lines read at a time and values buffered before plugin calls: 8192 was
/// the fastest of 1024-16384 on a file replay of every window kind, for about
/// 50 MB more memory than 1024 (docs/performance.md, "Batch size").
fn default_batch_size() -> usize {
    8192
}

/// Half the machine's cores, at least one: the other half decodes. On 2
/// cores that is one worker, as a second pays only for windowing-heavy
/// pipelines there (docs/performance.md, "Parallelism").
fn default_parallelism() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).clamp(1, MAX_PARALLELISM))
}

/// The most window workers `parallelism` may ask for.
pub const MAX_PARALLELISM: usize = 256;

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
    /// Events more than this ahead of the watermark are dead-lettered (with
    /// the reason) instead of moving it: one event from a wrong clock cannot
    /// then make every later event late. Absent: no bound.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub max_future: Option<Duration>,
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

/// The window as people write it: `tumbling 10s`, `sliding 1m every 10s,
/// offset 5s`, `session, gap 2s` (for `sluice validate` and the status page).
impl std::fmt::Display for WindowConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let human = humantime::format_duration;
        let offset = match self {
            WindowConfig::Tumbling { size, offset } => {
                write!(f, "tumbling {}", human(*size))?;
                offset
            }
            WindowConfig::Sliding {
                size,
                slide,
                offset,
            } => {
                write!(f, "sliding {} every {}", human(*size), human(*slide))?;
                offset
            }
            WindowConfig::Session { gap } => return write!(f, "session, gap {}", human(*gap)),
        };
        if offset.is_zero() {
            Ok(())
        } else {
            write!(f, ", offset {}", human(*offset))
        }
    }
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
    /// For a plugin of interface 0.2: each declared input's name and the
    /// event field it reads (`{ value: latency_ms, weight: completion_tokens }`).
    /// `field` is the shorthand for a plugin of one input; a pipeline gives
    /// one or the other.
    #[serde(default)]
    pub inputs: Option<std::collections::BTreeMap<String, String>>,
    /// The plugin's configuration, passed to it as JSON.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    /// What to do when an event lacks `field` (or a required input), or
    /// holds a value of another type than the input takes.
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
///
/// Besides what serde checks (types, unknown keys), a file is refused when
/// it gives a key twice (YAML would keep the last silently), when a choice
/// such as `window` names two alternatives (only one would be used), when a
/// `SLUICE_` variable names no key, and when two outputs, the input or the
/// state directory share a path (one would overwrite the other).
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
    if !path.is_file() {
        return Err(ConfigError(format!(
            "config file {} does not exist",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
    unknown_env_overrides()?;
    let pipeline = pipeline_from(&text, path)?;
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let loaded = LoadedConfig { pipeline, base_dir };
    paths_apart(&loaded)?;
    Ok(loaded)
}

/// The pipeline in `text` (the contents of `file`) with the environment's
/// overrides, checked as a whole.
fn pipeline_from(text: &str, file: &Path) -> Result<PipelineConfig, ConfigError> {
    let in_file = |e: String| ConfigError(format!("{}: {e}", file.display()));
    no_key_twice(text).map_err(in_file)?;
    let figment = Figment::from(Yaml::string(text)).merge(env_overrides());
    one_choice_each(&figment).map_err(in_file)?;
    let pipeline: PipelineConfig = figment
        .extract()
        .map_err(|e| ConfigError(describe(e, file)))?;
    pipeline.validate()?;
    Ok(pipeline)
}

/// The keys a pipeline file has at its top level; only `SLUICE_` variables
/// that start with one of them are overrides.
const TOP_LEVEL_KEYS: &[&str] = &[
    "source",
    "event",
    "watermark",
    "window",
    "allowed_lateness",
    "aggregations",
    "trigger",
    "sink",
    "late_output",
    "dead_letter",
    "dead_letter_limits",
    "plugins",
    "plugin_cache",
    "reload",
    "batch_size",
    "parallelism",
    "metrics",
    "state",
    "log",
    "fill",
    "dedup",
    "dedup_output",
];

/// `SLUICE_` variables that are not overrides: read by sluice's own
/// benchmarks, tests, crash script and plugin build scripts, which may
/// start `sluice` with them set.
const NOT_OVERRIDES: &[&str] = &[
    "SLUICE_BENCH_",
    "SLUICE_CRASH_",
    "SLUICE_KAFKA_KILLS",
    "SLUICE_CHAOS_",
    "SLUICE_TOOLS",
];

/// `SLUICE_SINK__FILE=x` overrides `sink.file`: `__` separates nested keys.
fn env_overrides() -> Env {
    Env::prefixed("SLUICE_").split("__").filter(|key| {
        let top = key.as_str().split('.').next().unwrap_or_default();
        TOP_LEVEL_KEYS.iter().any(|k| k.eq_ignore_ascii_case(top))
    })
}

/// Refuses a `SLUICE_` variable that overrides no key (`SLUICE_SINKK__FILE`,
/// `SLUICE_SINK_FILE`): left alone it would be ignored, and the run would
/// use what the file says without a word.
fn unknown_env_overrides() -> Result<(), ConfigError> {
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix("SLUICE_") else {
            continue;
        };
        if NOT_OVERRIDES.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let top = rest.split("__").next().unwrap_or_default();
        if !TOP_LEVEL_KEYS.iter().any(|k| k.eq_ignore_ascii_case(top)) {
            return Err(ConfigError(format!(
                "environment variable {name}: `{}` is not a pipeline key. An override is \
                 SLUICE_ plus the key path with `__` between levels (SLUICE_SINK__FILE sets \
                 sink.file); the top-level keys are {}",
                top.to_ascii_lowercase(),
                TOP_LEVEL_KEYS.join(", ")
            )));
        }
    }
    Ok(())
}

/// Keys whose value names one of several alternatives (`window: { tumbling:
/// ... }`), and those alternatives.
const CHOICES: &[(&str, &[&str])] = &[
    ("source", &["file", "kafka"]),
    ("window", &["tumbling", "sliding", "session"]),
    ("sink", &["file", "kafka"]),
    ("late_output", &["file", "kafka"]),
    ("dead_letter", &["file", "kafka"]),
    ("dedup_output", &["file", "kafka"]),
];

/// Refuses a choice that names two alternatives (say `tumbling` in the file
/// and `sliding` from the environment): serde would take the first and
/// drop the other silently.
fn one_choice_each(figment: &Figment) -> Result<(), String> {
    for (key, alternatives) in CHOICES {
        if let Ok(figment::value::Value::Dict(_, dict)) = figment.find_value(key)
            && dict.len() > 1
        {
            let given: Vec<&str> = dict.keys().map(String::as_str).collect();
            return Err(format!(
                "key `{key}`: give one of {}, not {} together",
                alternatives.join(", "),
                given.join(" and ")
            ));
        }
    }
    Ok(())
}

/// Refuses YAML that gives one key twice in a mapping: parsers keep the last
/// value, so the first would be ignored without a word.
fn no_key_twice(text: &str) -> Result<(), String> {
    use serde::de::DeserializeSeed as _;
    let mut path = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        KeysOnce { path: &mut path }
            .deserialize(document)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Walks a YAML document, failing on a mapping that holds a key twice.
struct KeysOnce<'a> {
    /// Where the walk is, for the message.
    path: &'a mut Vec<String>,
}

impl<'de> serde::de::DeserializeSeed<'de> for KeysOnce<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for KeysOnce<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<serde_yaml::Value>()? {
            let name = match &key {
                serde_yaml::Value::String(s) => s.clone(),
                other => serde_yaml::to_string(other)
                    .map(|s| s.trim_end().to_string())
                    .unwrap_or_default(),
            };
            self.path.push(name.clone());
            if !seen.insert(name) {
                return Err(serde::de::Error::custom(format!(
                    "key `{}` is given twice (the second would silently replace the first)",
                    self.path.join(".")
                )));
            }
            map.next_value_seed(KeysOnce {
                path: &mut *self.path,
            })?;
            self.path.pop();
        }
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            let last = self.path.pop().unwrap_or_default();
            self.path.push(format!("{last}[{i}]"));
            let more = seq
                .next_element_seed(KeysOnce {
                    path: &mut *self.path,
                })?
                .is_some();
            self.path.pop();
            self.path.push(last);
            if !more {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        // A tagged value (`!tag`): walk what it tags.
        use serde::de::VariantAccess as _;
        let (_, variant) = data.variant::<serde::de::IgnoredAny>()?;
        variant.newtype_variant_seed(self)
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_i128<E>(self, _: i128) -> Result<(), E> {
        Ok(())
    }
    fn visit_u128<E>(self, _: u128) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// Figment's errors, one line each, with the key path they concern and
/// where the value came from: the file `file`, or an environment variable
/// (named as the user would have set it).
fn describe(error: figment::Error, file: &Path) -> String {
    error
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let from_env = e
                .metadata
                .as_ref()
                .is_some_and(|m| m.name.contains("environment"));
            match (from_env, key.is_empty()) {
                (true, _) => format!(
                    "environment variable SLUICE_{} (key `{key}`): {}",
                    e.path.join("__").to_ascii_uppercase(),
                    e.kind
                ),
                (false, true) => format!("{}: {}", file.display(), e.kind),
                (false, false) => format!("{}: key `{key}`: {}", file.display(), e.kind),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A path made absolute (against the working directory) with `.` and `..`
/// taken out, its longest existing ancestor resolved through symlinks: two
/// spellings of one file come out equal.
fn normalized(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    };
    let mut clean = PathBuf::new();
    for part in absolute.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                clean.pop();
            }
            other => clean.push(other),
        }
    }
    let mut existing = clean.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            let mut out = real;
            out.extend(rest.iter().rev());
            return out;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return clean,
        }
    }
}

/// Refuses two outputs (results, late events, dead letters, duplicates) on
/// one file or both on stdout, an output on the input file, and an output
/// or the input inside the state directory: either would overwrite or
/// interleave records (the first result line cut by a dead letter) or
/// lose the input, with exit code 0.
fn paths_apart(loaded: &LoadedConfig) -> Result<(), ConfigError> {
    let config = &loaded.pipeline;
    let outputs = [
        ("sink.file", Some(&config.sink)),
        ("late_output.file", config.late_output.as_ref()),
        ("dead_letter.file", config.dead_letter.as_ref()),
        ("dedup_output.file", config.dedup_output.as_ref()),
    ];
    let mut files: Vec<(&str, PathBuf)> = Vec::new();
    let mut stdout: Option<&str> = None;
    for (key, output) in outputs {
        let Some(OutputConfig::File(path)) = output else {
            continue;
        };
        if path == Path::new("-") {
            if let Some(first) = stdout {
                return Err(ConfigError(format!(
                    "keys `{first}` and `{key}` both write stdout (`-`), where their records \
                     would interleave: give one of them a file"
                )));
            }
            stdout = Some(key);
            continue;
        }
        files.push((key, normalized(&loaded.resolve(path))));
    }
    let same = |a: &Path, b: &Path| {
        use std::os::unix::fs::MetadataExt as _;
        a == b
            || matches!((std::fs::metadata(a), std::fs::metadata(b)),
                (Ok(x), Ok(y)) if x.dev() == y.dev() && x.ino() == y.ino())
    };
    for (i, (key, path)) in files.iter().enumerate() {
        if let Some((other, _)) = files[..i].iter().find(|(_, p)| same(p, path)) {
            return Err(ConfigError(format!(
                "keys `{other}` and `{key}` name the same file {}: one would overwrite the \
                 other's records; give each output its own file",
                path.display()
            )));
        }
    }
    if let SourceConfig::File(input) = &config.source
        && input != Path::new("-")
    {
        let input = normalized(&loaded.resolve(input));
        if let Some((key, _)) = files.iter().find(|(_, p)| same(p, &input)) {
            return Err(ConfigError(format!(
                "key `{key}` names the input file {} (`source.file`): writing it would \
                 destroy the input",
                input.display()
            )));
        }
    }
    if config.state.backend == StateBackendKind::Rocksdb {
        let state = normalized(&loaded.resolve(&config.state.path));
        let mut inputs = Vec::new();
        if let SourceConfig::File(input) = &config.source
            && input != Path::new("-")
        {
            inputs.push(("source.file", normalized(&loaded.resolve(input))));
        }
        for (key, path) in files.iter().cloned().chain(inputs) {
            if path.starts_with(&state) || same(&path, &state) {
                return Err(ConfigError(format!(
                    "key `{key}` names {}, which is in the state directory {} \
                     (`state.path`): sluice replaces what is there; keep it apart",
                    path.display(),
                    state.display()
                )));
            }
        }
    }
    Ok(())
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
            if agg.field.as_deref() == Some("") {
                return err(format!("key `aggregations[{i}].field`: must not be empty"));
            }
            if let Some(inputs) = &agg.inputs {
                if agg.field.is_some() {
                    return err(format!(
                        "key `aggregations[{i}].inputs`: give `field` or `inputs`, not both \
                         (`field` binds a plugin's one input)"
                    ));
                }
                if let Some((input, _)) = inputs.iter().find(|(_, field)| field.is_empty()) {
                    return err(format!(
                        "key `aggregations[{i}].inputs.{input}`: names no field"
                    ));
                }
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
        if !(1..=MAX_PARALLELISM).contains(&self.parallelism) {
            return err(format!(
                "key `parallelism`: must be 1 to {MAX_PARALLELISM}, not {}",
                self.parallelism
            ));
        }
        if let Some(max_future) = self.watermark.max_future {
            positive_ms("watermark.max_future", max_future)?;
        }
        let limits = &self.dead_letter_limits;
        if !(0.0..=1.0).contains(&limits.max_share) {
            return err(format!(
                "key `dead_letter_limits.max_share`: {} is not a share between 0 and 1",
                limits.max_share
            ));
        }
        if limits.max_raw_bytes == 0 {
            return err("key `dead_letter_limits.max_raw_bytes`: must be at least 1".into());
        }
        if limits.max_per_second == Some(0) {
            return err(
                "key `dead_letter_limits.max_per_second`: must be at least 1 (leave it out for \
                 no limit)"
                    .into(),
            );
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

/// Reads an optional duration (see [`de_duration`]).
pub fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
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
        pipeline_from(yaml, Path::new("test.yaml")).map_err(|e| e.to_string())
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
        assert_eq!(cfg.window.to_string(), "sliding 10s every 5s");
        let shifted = WindowConfig::Tumbling {
            size: Duration::from_secs(60),
            offset: Duration::from_millis(1500),
        };
        assert_eq!(shifted.to_string(), "tumbling 1m, offset 1s 500ms");
        let session = WindowConfig::Session {
            gap: Duration::from_secs(2),
        };
        assert_eq!(session.to_string(), "session, gap 2s");
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

    /// Mistakes that serde alone lets through: a key given twice (the last
    /// would win), two alternatives of one choice (the first would win),
    /// a share that is no share.
    #[test]
    fn silent_mistakes_are_refused() {
        let e = parse(&format!(
            "{BASE}window: {{ tumbling: {{ size: 10s }} }}\nallowed_lateness: 1s\nallowed_lateness: 2s\n"
        ))
        .unwrap_err();
        assert!(e.contains("key `allowed_lateness` is given twice"), "{e}");
        let e = parse(&format!(
            "{BASE}window:\n  tumbling: {{ size: 10s, size: 20s }}\n"
        ))
        .unwrap_err();
        assert!(
            e.contains("key `window.tumbling.size` is given twice"),
            "{e}"
        );
        let e = parse(&format!(
            "{BASE}window: {{ tumbling: {{ size: 10s }}, sliding: {{ size: 10s, slide: 5s }} }}\n"
        ))
        .unwrap_err();
        assert!(e.contains("key `window`: give one of"), "{e}");
        assert!(e.contains("sliding and tumbling"), "{e}");
        let e = parse(&format!(
            "{BASE}window: {{ tumbling: {{ size: 10s }} }}\ndead_letter_limits: {{ max_share: 1.5 }}\n"
        ))
        .unwrap_err();
        assert!(e.contains("dead_letter_limits.max_share"), "{e}");
        // A key repeated inside a list item, with its place in the list.
        let e = parse(
            "source: { file: in.jsonl }\n\
             event: { key: [service], time: { field: ts, format: epoch_millis } }\n\
             sink: { file: out.jsonl }\n\
             window: { tumbling: { size: 10s } }\n\
             aggregations:\n  - { name: a, plugin: builtin/count }\n  - { name: b, plugin: builtin/count, name: c }\n",
        )
        .unwrap_err();
        assert!(
            e.contains("key `aggregations[1].name` is given twice"),
            "{e}"
        );
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("64MiB"), Some(64 << 20));
        assert_eq!(parse_bytes("1024"), Some(1024));
        assert_eq!(parse_bytes("12 parsecs"), None);
    }
}
