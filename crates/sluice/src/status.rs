//! The live status page of a run, served at `/` on the operations address
//! (`metrics.listen`) beside `/metrics`: the pipeline at a glance, events/s
//! and results/s over the last minutes, watermark and lags, plugin health,
//! checkpoints, and the latest result per key.
//!
//! Two halves, so that serving the page never slows the data path:
//!
//! - the pipeline thread owns a [`Tap`]: it keeps the latest result per key
//!   (at most [`MAX_KEYS`] keys) and the points since its last publish, with
//!   no lock at all, and every [`PUBLISH_EVERY`] hands them, with the run's
//!   counters, to the shared [`StatusBoard`] under a `try_lock`: if the page
//!   is being served at that moment, the pipeline does not wait but keeps
//!   what it has for the next publish;
//! - the HTTP thread of the operations endpoints asks the board for `/`,
//!   `/status.js`, `/status.css` and `/status.json` (which the page polls
//!   every second), and keeps the per-second samples of the last
//!   [`RATE_SECONDS`] seconds, so that a page opened late still shows them.
//!
//! The page is three files under `src/status/`, compiled into the binary:
//! nothing is fetched from elsewhere. The script writes every string that
//! comes from the config, a plugin or the data with `textContent` or
//! `setAttribute`, never as HTML.

use std::collections::{HashMap, VecDeque};
use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use sluice_config::{DEFAULT_TRIGGER, LoadedConfig, SourceConfig, StateBackendKind};
use sluice_core::plugin::grouped::OutputValue;
use sluice_core::window::{PluginHealth, WindowResult};

/// The page, its script and its style sheet.
const PAGE: &str = include_str!("status/index.html");
const SCRIPT: &str = include_str!("status/status.js");
const STYLE: &str = include_str!("status/status.css");

/// Seconds of events/s and results/s history the board keeps.
pub const RATE_SECONDS: usize = 600;
/// Keys whose latest result the page shows.
pub const MAX_KEYS: usize = 50;
/// Results kept per key for the chart of one output over time.
pub const HISTORY: usize = 120;
/// How often at most the pipeline publishes to the board.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// A key with no result for this long gives its place to a new key once
/// the table is full.
const STALE: Duration = Duration::from_secs(300);

/// The run's totals, as the page shows them (the same counts as `/metrics`).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Totals {
    /// Events read from the source.
    pub events_in: u64,
    /// Window results written.
    pub results_out: u64,
    /// Events too late for any window.
    pub late: u64,
    /// Events that could not be used.
    pub dead_lettered: u64,
    /// Events dropped by dedup.
    pub duplicates: u64,
    /// Results made up by gap filling.
    pub filled: u64,
    /// Replayed messages whose effect was already written.
    pub replayed_skipped: u64,
}

/// One assigned Kafka partition's lags: what the metrics publish too.
pub use crate::metrics::PartitionSample as PartitionStatus;

/// The last checkpoint, as the page shows it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CheckpointReading {
    /// Unix time (seconds) at which it completed.
    pub unix_seconds: f64,
    /// Bytes of state on disk, when known.
    pub bytes: Option<u64>,
}

/// What the pipeline publishes to the board besides results.
pub struct Reading<'a> {
    /// The run's totals.
    pub totals: Totals,
    /// Windows, panes or sessions holding state.
    pub windows_open: u64,
    /// The pipeline's watermark (event time, ms); `None` before the first event.
    pub watermark_ms: Option<i64>,
    /// Per aggregation, in config order: its plugin's health.
    pub plugins: &'a [PluginHealth],
    /// Assigned partitions (Kafka); empty for a file or stdin.
    pub partitions: Vec<PartitionStatus>,
    /// The last checkpoint, if one was taken.
    pub checkpoint: Option<CheckpointReading>,
}

/// The pipeline as configured, for the page's header.
#[derive(Debug, Serialize)]
struct PipelineView {
    source: String,
    source_kind: &'static str,
    window: String,
    allowed_lateness: String,
    out_of_orderness: String,
    aggregations: Vec<AggregationView>,
    trigger: String,
    /// The state directory, when checkpoints are taken.
    state: Option<String>,
    checkpoint_interval: Option<String>,
}

#[derive(Debug, Serialize)]
struct AggregationView {
    name: String,
    plugin: String,
    field: Option<String>,
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl PipelineView {
    fn new(loaded: &LoadedConfig) -> Self {
        let config = &loaded.pipeline;
        let (source, source_kind) = match &config.source {
            SourceConfig::File(path) if path == std::path::Path::new("-") => {
                ("stdin".to_string(), "stdin")
            }
            SourceConfig::File(path) => (loaded.resolve(path).display().to_string(), "file"),
            SourceConfig::Kafka(k) => (
                format!(
                    "topics {} at {} (group {})",
                    k.topics.join(", "),
                    k.brokers,
                    k.group
                ),
                "kafka",
            ),
        };
        let window = config.window.to_string();
        let rocks = config.state.backend == StateBackendKind::Rocksdb;
        Self {
            source,
            source_kind,
            window,
            allowed_lateness: human(config.allowed_lateness),
            out_of_orderness: human(config.watermark.max_out_of_orderness),
            aggregations: config
                .aggregations
                .iter()
                .map(|a| AggregationView {
                    name: a.name.clone(),
                    plugin: a.plugin.clone(),
                    field: a.field.clone(),
                })
                .collect(),
            trigger: config
                .trigger
                .as_ref()
                .map_or(DEFAULT_TRIGGER, |t| t.plugin.as_str())
                .to_string(),
            state: rocks.then(|| loaded.resolve(&config.state.path).display().to_string()),
            checkpoint_interval: rocks.then(|| human(config.state.checkpoint_interval)),
        }
    }
}

/// The latest result of one key.
#[derive(Debug, Clone, Default)]
struct Latest {
    start: i64,
    end: i64,
    emit: &'static str,
    filled: bool,
    /// Every output, in column order.
    values: Vec<Option<f64>>,
    /// `(aggregation, why)` for each aggregation that failed for the window.
    errors: Vec<(String, String)>,
}

/// One result of a key for the chart: its window's end and its outputs.
type Point = (i64, Box<[Option<f64>]>);

/// A key's place on the board.
#[derive(Debug, Default)]
struct BoardSlot {
    key: String,
    latest: Latest,
    history: VecDeque<Point>,
}

/// A plugin's row in the health table.
#[derive(Debug, Serialize)]
struct PluginRow {
    aggregation: String,
    plugin: String,
    calls: u64,
    seconds: f64,
    failures: u64,
    quarantined: Option<String>,
}

/// Per-second totals of events and results: `ends[i]` are the totals at
/// the end of second `last - (len - 1 - i)`.
#[derive(Debug, Default)]
struct Rates {
    last: u64,
    ends: VecDeque<(u64, u64)>,
}

impl Rates {
    /// Records the totals of every whole second before `now` (Unix seconds)
    /// not recorded yet: the totals published so far belong to them.
    fn catch_up(&mut self, now: u64, totals: &Totals) {
        if self.ends.is_empty() {
            // The run starts from zero in the second before the first sample.
            self.last = now.saturating_sub(1);
            self.ends.push_back((0, 0));
            return;
        }
        let behind = now.saturating_sub(1).saturating_sub(self.last);
        if behind as usize > RATE_SECONDS {
            self.last = now.saturating_sub(1 + RATE_SECONDS as u64);
        }
        while self.last + 1 < now {
            self.last += 1;
            self.ends.push_back((totals.events_in, totals.results_out));
            if self.ends.len() > RATE_SECONDS + 1 {
                self.ends.pop_front();
            }
        }
    }
}

/// What the board holds, behind its lock.
#[derive(Debug, Default)]
struct Live {
    /// Whether the pipeline has published yet.
    published: bool,
    /// Unix seconds of the last publish.
    updated: f64,
    totals: Totals,
    windows_open: u64,
    watermark_ms: Option<i64>,
    partitions: Vec<PartitionStatus>,
    plugins: Vec<PluginRow>,
    checkpoint: Option<CheckpointReading>,
    rates: Rates,
    /// The outputs' names (`agg.output`), in the order of each result's values.
    columns: Vec<String>,
    slots: Vec<BoardSlot>,
    /// Whether results came for more keys than the table holds.
    more_keys: bool,
}

/// The shared state of the status page: written by the pipeline's [`Tap`],
/// read by the HTTP thread.
#[derive(Debug)]
pub struct StatusBoard {
    pipeline: PipelineView,
    started: f64,
    live: Mutex<Live>,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Locks `mutex`, taking its value over if a thread panicked holding it
/// (the board holds numbers only, none of them left half-written).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The response to one request for the page: its body and content type.
type Page = tiny_http::Response<Cursor<Vec<u8>>>;

fn header(name: &str, value: &str) -> Option<tiny_http::Header> {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
}

impl StatusBoard {
    /// A board for the pipeline `loaded`, empty until the first publish.
    pub fn new(loaded: &LoadedConfig) -> Arc<Self> {
        Arc::new(Self {
            pipeline: PipelineView::new(loaded),
            started: unix_now(),
            live: Mutex::new(Live::default()),
        })
    }

    /// The page's answer to a GET of `url`, or `None` when `url` is not
    /// one of the page's.
    pub fn respond(&self, url: &str) -> Option<Page> {
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let (body, content_type) = match path {
            "/" | "/index.html" => (PAGE.as_bytes().to_vec(), "text/html; charset=utf-8"),
            "/status.js" => (SCRIPT.as_bytes().to_vec(), "text/javascript; charset=utf-8"),
            "/status.css" => (STYLE.as_bytes().to_vec(), "text/css; charset=utf-8"),
            "/status.json" => (
                self.json(chosen_output(query)).into_bytes(),
                "application/json",
            ),
            _ => return None,
        };
        let headers = [
            header("Content-Type", content_type),
            header("Cache-Control", "no-store"),
            header("X-Content-Type-Options", "nosniff"),
            // The page loads nothing from elsewhere and runs no inline script.
            header(
                "Content-Security-Policy",
                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
            ),
        ];
        let mut response = tiny_http::Response::from_data(body);
        for h in headers.into_iter().flatten() {
            response.add_header(h);
        }
        Some(response)
    }

    /// `/status.json`: everything the page shows, with the history of
    /// output column `output` per key.
    pub fn json(&self, output: Option<usize>) -> String {
        let now = unix_now();
        let mut live = lock(&self.live);
        let totals = live.totals;
        live.rates.catch_up(now as u64, &totals);
        let live = &*live;
        let ends = &live.rates.ends;
        let rate = |pick: fn(&(u64, u64)) -> u64| -> Vec<u64> {
            ends.iter()
                .zip(ends.iter().skip(1))
                .map(|(a, b)| pick(b).saturating_sub(pick(a)))
                .collect()
        };
        let output = output.filter(|&c| c < live.columns.len());
        let mut results: Vec<ResultView<'_>> = live
            .slots
            .iter()
            .map(|s| ResultView {
                key: &s.key,
                start: s.latest.start,
                end: s.latest.end,
                emit: s.latest.emit,
                filled: s.latest.filled,
                values: &s.latest.values,
                errors: &s.latest.errors,
                history: output.map_or_else(Vec::new, |c| {
                    s.history
                        .iter()
                        .map(|(end, values)| (*end, values.get(c).copied().flatten()))
                        .collect()
                }),
            })
            .collect();
        results.sort_by(|a, b| a.key.cmp(b.key));
        let view = View {
            now,
            started: self.started,
            updated: live.published.then_some(live.updated),
            pipeline: &self.pipeline,
            totals: &live.totals,
            windows_open: live.windows_open,
            watermark_ms: live.watermark_ms,
            partitions: live
                .partitions
                .iter()
                .map(|p| PartitionView {
                    topic: &p.topic,
                    partition: p.partition,
                    watermark_lag_seconds: p.watermark_lag.map(|d| d.as_secs_f64()),
                    consumer_lag: p.consumer_lag,
                })
                .collect(),
            plugins: &live.plugins,
            checkpoint: live.checkpoint,
            rates: RatesView {
                last: live.rates.last,
                events: rate(|e| e.0),
                results: rate(|e| e.1),
            },
            columns: &live.columns,
            output,
            more_keys: live.more_keys,
            results,
        };
        // Plain data: serializing it cannot fail.
        serde_json::to_string(&view).unwrap_or_else(|_| "{}".to_string())
    }
}

/// The `output=N` of a `/status.json` query.
fn chosen_output(query: &str) -> Option<usize> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("output="))
        .and_then(|n| n.parse().ok())
}

#[derive(Serialize)]
struct View<'a> {
    now: f64,
    started: f64,
    updated: Option<f64>,
    pipeline: &'a PipelineView,
    totals: &'a Totals,
    windows_open: u64,
    watermark_ms: Option<i64>,
    partitions: Vec<PartitionView<'a>>,
    plugins: &'a [PluginRow],
    checkpoint: Option<CheckpointReading>,
    rates: RatesView,
    columns: &'a [String],
    output: Option<usize>,
    more_keys: bool,
    results: Vec<ResultView<'a>>,
}

#[derive(Serialize)]
struct PartitionView<'a> {
    topic: &'a str,
    partition: i32,
    watermark_lag_seconds: Option<f64>,
    consumer_lag: Option<i64>,
}

/// Events and results per second, oldest first; the last is second `last`.
#[derive(Serialize)]
struct RatesView {
    last: u64,
    events: Vec<u64>,
    results: Vec<u64>,
}

#[derive(Serialize)]
struct ResultView<'a> {
    /// The key as the result records write it (a JSON object's text).
    key: &'a str,
    start: i64,
    end: i64,
    emit: &'static str,
    filled: bool,
    values: &'a [Option<f64>],
    errors: &'a [(String, String)],
    /// `(window end, value)` of the chosen output, oldest first.
    history: Vec<(i64, Option<f64>)>,
}

/// A key's place in the [`Tap`].
#[derive(Debug)]
struct TapSlot {
    key: Box<str>,
    latest: Latest,
    /// Results since the last publish, at most [`HISTORY`].
    fresh: VecDeque<Point>,
    /// Whether the board's slot belongs to another key (or older columns)
    /// and starts over at the next publish.
    reset: bool,
    /// Whether a result came since the last publish.
    dirty: bool,
    touched: Instant,
}

/// The pipeline thread's side of the status page: collects results as they
/// are written and publishes them, with the run's counters, to the board.
/// Exists only when the operations address is configured.
pub struct Tap {
    board: Arc<StatusBoard>,
    index: HashMap<Box<str>, usize>,
    slots: Vec<TapSlot>,
    /// Column names not yet on the board (at start, and after a reload
    /// changed an aggregation's outputs).
    columns: Option<Vec<String>>,
    more_keys: bool,
    /// When the last publish reached the board.
    last_publish: Option<Instant>,
    /// The time of the last publish attempt: a clock for the slots that
    /// costs no system call per result.
    now: Instant,
}

impl Tap {
    /// A tap feeding `board`, whose results have the columns `columns`.
    pub fn new(board: Arc<StatusBoard>, columns: Vec<String>) -> Self {
        Self {
            board,
            index: HashMap::new(),
            slots: Vec::new(),
            columns: Some(columns),
            more_keys: false,
            last_publish: None,
            now: Instant::now(),
        }
    }

    /// The results' columns changed (a reload gave an aggregation other
    /// outputs): every key's history starts over.
    pub fn set_columns(&mut self, columns: Vec<String>) {
        self.columns = Some(columns);
        for slot in &mut self.slots {
            slot.fresh.clear();
            slot.reset = true;
        }
    }

    /// Takes note of a result just written for `key` (its JSON text);
    /// `aggregations` names the aggregations, for its errors.
    pub fn result(
        &mut self,
        key: &str,
        result: &WindowResult,
        filled: bool,
        aggregations: &[String],
    ) {
        let i = match self.index.get(key) {
            Some(&i) => i,
            None => match self.claim(key) {
                Some(i) => i,
                None => {
                    self.more_keys = true;
                    return;
                }
            },
        };
        let slot = &mut self.slots[i];
        let latest = &mut slot.latest;
        latest.start = result.window.start;
        latest.end = result.window.end;
        latest.emit = result.emit.as_str();
        latest.filled = filled;
        latest.values.clear();
        latest
            .values
            .extend(result.outputs.iter().flatten().map(|v| {
                // The page charts numbers; other kinds show as empty.
                v.as_ref().and_then(OutputValue::number)
            }));
        latest.errors.clear();
        for (a, why) in &result.errors {
            let name = aggregations.get(*a).map_or("trigger", String::as_str);
            latest.errors.push((name.to_string(), why.to_string()));
        }
        if slot.fresh.len() == HISTORY {
            slot.fresh.pop_front();
        }
        slot.fresh
            .push_back((result.window.end, latest.values.clone().into_boxed_slice()));
        slot.dirty = true;
        slot.touched = self.now;
    }

    /// A place for a key not in the table: a free one, or that of a key
    /// silent for [`STALE`]; `None` when every place is taken.
    fn claim(&mut self, key: &str) -> Option<usize> {
        let i = if self.slots.len() < MAX_KEYS {
            self.slots.push(TapSlot {
                key: key.into(),
                latest: Latest::default(),
                fresh: VecDeque::new(),
                reset: true,
                dirty: false,
                touched: self.now,
            });
            self.slots.len() - 1
        } else {
            let (i, oldest) = self
                .slots
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.touched)?;
            if self.now.duration_since(oldest.touched) < STALE {
                return None;
            }
            self.index.remove(&oldest.key);
            let slot = &mut self.slots[i];
            slot.key = key.into();
            slot.fresh.clear();
            slot.reset = true;
            i
        };
        self.index.insert(key.into(), i);
        Some(i)
    }

    /// Whether a publish is due ([`PUBLISH_EVERY`] since the last one that
    /// reached the board); the caller then gathers a [`Reading`].
    pub fn due(&mut self) -> bool {
        self.now = Instant::now();
        self.last_publish
            .is_none_or(|t| self.now.duration_since(t) >= PUBLISH_EVERY)
    }

    /// Hands `reading` and the results since the last publish to the board,
    /// unless the board is being read right now: then nothing waits, and
    /// the results stay here for the next publish.
    pub fn publish(&mut self, reading: Reading<'_>) {
        let plugins: Vec<PluginRow> = self
            .board
            .pipeline
            .aggregations
            .iter()
            .zip(reading.plugins)
            .map(|(agg, health)| PluginRow {
                aggregation: agg.name.clone(),
                plugin: health.plugin.clone(),
                calls: health.calls,
                seconds: health.call_time.as_secs_f64(),
                failures: health.failures,
                quarantined: health.quarantined.clone(),
            })
            .collect();
        let mut partitions = reading.partitions;
        let now = unix_now();
        let mut live = match self.board.live.try_lock() {
            Ok(live) => live,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        // The totals so far belong to the seconds before this one.
        let totals = live.totals;
        live.rates.catch_up(now as u64, &totals);
        live.published = true;
        live.updated = now;
        live.totals = reading.totals;
        live.windows_open = reading.windows_open;
        live.watermark_ms = reading.watermark_ms;
        for p in partitions.iter_mut().filter(|p| p.consumer_lag.is_none()) {
            p.consumer_lag = live
                .partitions
                .iter()
                .find(|o| o.partition == p.partition && o.topic == p.topic)
                .and_then(|o| o.consumer_lag);
        }
        live.partitions = partitions;
        live.plugins = plugins;
        live.checkpoint = reading.checkpoint;
        live.more_keys = self.more_keys;
        if let Some(columns) = self.columns.take() {
            live.columns = columns;
        }
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if !slot.dirty && !slot.reset {
                continue;
            }
            if live.slots.len() <= i {
                live.slots.push(BoardSlot::default());
            }
            let shared = &mut live.slots[i];
            if slot.reset {
                shared.key.clear();
                shared.key.push_str(&slot.key);
                shared.history.clear();
                slot.reset = false;
            }
            if slot.dirty {
                shared.latest.clone_from(&slot.latest);
                shared.history.extend(slot.fresh.drain(..));
                let over = shared.history.len().saturating_sub(HISTORY);
                shared.history.drain(..over);
                slot.dirty = false;
            }
        }
        drop(live);
        self.last_publish = Some(self.now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::window::{EmitKind, Window};

    fn board() -> Arc<StatusBoard> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.yaml");
        std::fs::write(
            &path,
            "source: { file: '-' }\n\
             event: { key: [k], time: { field: ts, format: epoch_millis } }\n\
             window: { sliding: { size: 10s, slide: 5s } }\n\
             aggregations: [ { name: n, plugin: builtin/count } ]\n\
             sink: { file: r.jsonl }\n",
        )
        .unwrap();
        StatusBoard::new(&sluice_config::load(&path).unwrap())
    }

    fn result(end: i64, value: f64) -> WindowResult {
        WindowResult {
            key: Default::default(),
            window: Window {
                start: end - 10_000,
                end,
            },
            emit: EmitKind::OnTime,
            outputs: vec![vec![Some(OutputValue::Float(value))]],
            errors: Vec::new(),
        }
    }

    fn reading(events_in: u64) -> Reading<'static> {
        Reading {
            totals: Totals {
                events_in,
                ..Totals::default()
            },
            windows_open: 0,
            watermark_ms: None,
            plugins: &[],
            partitions: Vec::new(),
            checkpoint: None,
        }
    }

    /// The table keeps its first [`MAX_KEYS`] keys and says that more
    /// came; each key keeps its last [`HISTORY`] results.
    #[test]
    fn memory_is_bounded() {
        let board = board();
        let mut tap = Tap::new(Arc::clone(&board), vec!["n.count".into()]);
        for i in 0..(HISTORY as i64 + 30) {
            for k in 0..(MAX_KEYS + 10) {
                let key = format!(r#"{{"k":"{k}"}}"#);
                tap.result(&key, &result(i * 1000, i as f64), false, &["n".into()]);
            }
        }
        assert!(tap.due());
        tap.publish(reading(7));
        let json: serde_json::Value = serde_json::from_str(&board.json(Some(0))).unwrap();
        let results = json["results"].as_array().unwrap();
        assert_eq!(results.len(), MAX_KEYS);
        assert_eq!(json["more_keys"], true);
        let history = results[0]["history"].as_array().unwrap();
        assert_eq!(history.len(), HISTORY);
        assert_eq!(history[HISTORY - 1][1], HISTORY as f64 + 29.0);
        assert_eq!(results[0]["values"][0], HISTORY as f64 + 29.0);
        assert_eq!(json["totals"]["events_in"], 7);
        assert_eq!(json["pipeline"]["window"], "sliding 10s every 5s");
    }

    /// Seconds with no publish count as seconds with nothing new.
    #[test]
    fn rates_fill_quiet_seconds() {
        let mut rates = Rates::default();
        let mut totals = Totals::default();
        rates.catch_up(100, &totals);
        totals.events_in = 50;
        rates.catch_up(103, &totals);
        totals.events_in = 80;
        rates.catch_up(104, &totals);
        let ends: Vec<u64> = rates.ends.iter().map(|e| e.0).collect();
        assert_eq!(ends, [0, 50, 50, 50, 80]);
        assert_eq!(rates.last, 103);
        rates.catch_up(100_000, &totals);
        assert_eq!(rates.ends.len(), RATE_SECONDS + 1);
        assert_eq!(rates.last, 99_999);
    }
}
