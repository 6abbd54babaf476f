//! Operations endpoints of a running pipeline: Prometheus `/metrics` (in the
//! OpenMetrics text format, every value in base units), `/healthz` (the
//! process is up) and `/readyz` (its source is open, or it has partitions
//! assigned), served on a thread of their own.
//!
//! The pipeline publishes its counters here every batch or poll round;
//! scraping never touches pipeline state, so a slow scraper cannot slow the
//! data path.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use sluice_core::window::PluginHealth;
use sluice_core::{IoError, RunSummary};

use crate::status::StatusBoard;

/// Labels of a per-partition series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
}

/// Labels of a per-plugin series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    /// The aggregation's name in the pipeline.
    pub aggregation: String,
}

/// Every series sluice exports.
pub struct Metrics {
    registry: Registry,
    events_in: Counter,
    results_out: Counter,
    late: Counter,
    dead_lettered: Counter,
    replayed_skipped: Counter,
    duplicates: Counter,
    filled: Counter,
    windows_open: Gauge,
    plugin_failures: Family<PluginLabels, Counter>,
    plugin_quarantined: Family<PluginLabels, Gauge>,
    plugin_calls: Family<PluginLabels, Counter>,
    plugin_call_seconds: Family<PluginLabels, Counter<f64, AtomicU64>>,
    /// Wall-clock time minus the partition's watermark.
    watermark_lag: Family<PartitionLabels, Gauge<f64, AtomicU64>>,
    /// The pipeline's event-time watermark, as Unix time.
    watermark: Gauge<f64, AtomicU64>,
    /// Messages between the next offset to process and the partition's end.
    consumer_lag: Family<PartitionLabels, Gauge>,
    partitions_assigned: Gauge,
    commit_seconds: Histogram,
    processing_latency: Histogram,
    state_bytes: Gauge,
    checkpoint_seconds: Histogram,
    last_checkpoint: Gauge<f64, AtomicU64>,
    /// The partitions whose series were published last, so that a revoked
    /// partition's series go away.
    partitions: Mutex<HashSet<PartitionLabels>>,
    published: Published,
    ready: AtomicBool,
}

/// What has been added to the counters so far, to add only the difference.
#[derive(Default)]
struct Published {
    events_in: AtomicU64,
    results_out: AtomicU64,
    late: AtomicU64,
    dead_lettered: AtomicU64,
    replayed_skipped: AtomicU64,
    duplicates: AtomicU64,
    filled: AtomicU64,
}

fn add_delta(counter: &Counter, published: &AtomicU64, total: u64) {
    let before = published.swap(total, Ordering::Relaxed);
    counter.inc_by(total.saturating_sub(before));
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every series, all zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sluice");
        let m = Self {
            events_in: Counter::default(),
            results_out: Counter::default(),
            late: Counter::default(),
            dead_lettered: Counter::default(),
            replayed_skipped: Counter::default(),
            duplicates: Counter::default(),
            filled: Counter::default(),
            windows_open: Gauge::default(),
            plugin_failures: Family::default(),
            plugin_quarantined: Family::default(),
            plugin_calls: Family::default(),
            plugin_call_seconds: Family::default(),
            watermark_lag: Family::default(),
            watermark: Gauge::default(),
            consumer_lag: Family::default(),
            partitions_assigned: Gauge::default(),
            commit_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            // 0.5 ms to about 16 s.
            processing_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            state_bytes: Gauge::default(),
            checkpoint_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            last_checkpoint: Gauge::default(),
            partitions: Mutex::new(HashSet::new()),
            published: Published::default(),
            ready: AtomicBool::new(false),
            registry: Registry::default(),
        };
        registry.register(
            "events_in",
            "Events read from the source",
            m.events_in.clone(),
        );
        registry.register(
            "results_out",
            "Window results written",
            m.results_out.clone(),
        );
        registry.register(
            "late_events",
            "Events too late for any window",
            m.late.clone(),
        );
        registry.register(
            "dead_lettered",
            "Events that could not be decoded",
            m.dead_lettered.clone(),
        );
        registry.register(
            "replayed_skipped",
            "Replayed messages whose effect was already written",
            m.replayed_skipped.clone(),
        );
        registry.register(
            "duplicates",
            "Events dropped by dedup: their key was seen within the TTL",
            m.duplicates.clone(),
        );
        registry.register(
            "results_filled",
            "Window results made up by gap filling (also in results_out)",
            m.filled.clone(),
        );
        registry.register(
            "windows_open",
            "Windows, panes or sessions holding state",
            m.windows_open.clone(),
        );
        registry.register(
            "plugin_failures",
            "Plugin calls that failed, per aggregation",
            m.plugin_failures.clone(),
        );
        registry.register(
            "plugin_quarantined",
            "1 when the aggregation's plugin is quarantined",
            m.plugin_quarantined.clone(),
        );
        registry.register(
            "plugin_calls",
            "Calls into the aggregation's plugin (each carries a batch)",
            m.plugin_calls.clone(),
        );
        registry.register(
            "plugin_call_seconds",
            "Time spent in calls into the aggregation's plugin; divide by plugin_calls for latency",
            m.plugin_call_seconds.clone(),
        );
        registry.register(
            "watermark_lag_seconds",
            "Wall-clock time minus the partition's watermark, per assigned partition that has had an event",
            m.watermark_lag.clone(),
        );
        registry.register(
            "watermark_seconds",
            "The pipeline's event-time watermark as Unix time (absent before the first event)",
            m.watermark.clone(),
        );
        registry.register(
            "consumer_lag_messages",
            "Messages between the next offset to process and the partition's end, per assigned partition; 0 once all is consumed",
            m.consumer_lag.clone(),
        );
        registry.register(
            "partitions_assigned",
            "Partitions assigned to this member (Kafka); 1 once a file or stdin source is open",
            m.partitions_assigned.clone(),
        );
        registry.register(
            "commit_duration_seconds",
            "Time to flush outputs and commit offsets (Kafka)",
            m.commit_seconds.clone(),
        );
        registry.register(
            "processing_latency_seconds",
            "Time from taking a batch of events from the source to having written the results it completed",
            m.processing_latency.clone(),
        );
        registry.register(
            "state_bytes",
            "Bytes of window state in the RocksDB store after the last checkpoint (0 without a state backend)",
            m.state_bytes.clone(),
        );
        registry.register(
            "checkpoint_duration_seconds",
            "Time to take a checkpoint (outputs made durable first)",
            m.checkpoint_seconds.clone(),
        );
        registry.register(
            "last_checkpoint_timestamp_seconds",
            "Unix time of the last completed checkpoint (0 before the first)",
            m.last_checkpoint.clone(),
        );
        Self { registry, ..m }
    }

    /// Publishes the run's totals.
    pub fn record_summary(&self, summary: &RunSummary, windows_open: usize) {
        let p = &self.published;
        add_delta(&self.events_in, &p.events_in, summary.events_read);
        add_delta(&self.results_out, &p.results_out, summary.windows_emitted);
        add_delta(&self.late, &p.late, summary.late);
        add_delta(&self.dead_lettered, &p.dead_lettered, summary.dead_lettered);
        add_delta(
            &self.replayed_skipped,
            &p.replayed_skipped,
            summary.replayed_skipped,
        );
        add_delta(&self.duplicates, &p.duplicates, summary.duplicates);
        add_delta(&self.filled, &p.filled, summary.filled);
        self.windows_open
            .set(i64::try_from(windows_open).unwrap_or(i64::MAX));
    }

    /// Publishes one aggregation's plugin health and call statistics.
    pub fn record_plugin(&self, aggregation: &str, health: &PluginHealth) {
        let labels = PluginLabels {
            aggregation: aggregation.to_string(),
        };
        let (failures, quarantined) = (health.failures, health.quarantined.is_some());
        let calls = self.plugin_calls.get_or_create(&labels);
        calls.inc_by(health.calls.saturating_sub(calls.get()));
        let seconds = self.plugin_call_seconds.get_or_create(&labels);
        let more = health.call_time.as_secs_f64() - seconds.get();
        if more > 0.0 {
            seconds.inc_by(more);
        }
        let counter = self.plugin_failures.get_or_create(&labels);
        let seen = counter.get();
        counter.inc_by(failures.saturating_sub(seen));
        self.plugin_quarantined
            .get_or_create(&labels)
            .set(i64::from(quarantined));
    }

    /// Publishes the assigned partitions' lags: every assigned partition
    /// has its series from the assignment on, and a partition no longer
    /// assigned loses them.
    pub fn record_partitions(&self, assigned: &[PartitionSample]) {
        let Ok(mut published) = self.partitions.lock() else {
            return;
        };
        let mut now = HashSet::with_capacity(assigned.len());
        for sample in assigned {
            let labels = PartitionLabels {
                topic: sample.topic.clone(),
                partition: sample.partition,
            };
            match sample.watermark_lag {
                Some(lag) => {
                    self.watermark_lag
                        .get_or_create(&labels)
                        .set(lag.as_secs_f64());
                }
                None => {
                    self.watermark_lag.remove(&labels);
                }
            }
            if let Some(lag) = sample.consumer_lag {
                self.consumer_lag.get_or_create(&labels).set(lag);
            }
            now.insert(labels);
        }
        for gone in published.difference(&now) {
            self.watermark_lag.remove(gone);
            self.consumer_lag.remove(gone);
        }
        *published = now;
        self.partitions_assigned
            .set(i64::try_from(assigned.len()).unwrap_or(i64::MAX));
    }

    /// Publishes the pipeline's watermark (event time, in milliseconds).
    pub fn record_watermark(&self, watermark_ms: i64) {
        self.watermark.set(watermark_ms as f64 / 1000.0);
    }

    /// When the last checkpoint completed (Unix seconds) and the state's
    /// size after it; `None` before the first.
    pub fn last_checkpoint(&self) -> Option<(f64, u64)> {
        let at = self.last_checkpoint.get();
        (at > 0.0).then(|| (at, u64::try_from(self.state_bytes.get()).unwrap_or(0)))
    }

    /// Marks a file or stdin source open: one input, ready.
    pub fn source_opened(&self) {
        self.partitions_assigned.set(1);
        self.set_ready(true);
    }

    /// Records a batch that wrote results, `took` after it was taken from
    /// the source.
    pub fn record_latency(&self, took: Duration) {
        self.processing_latency.observe(took.as_secs_f64());
    }

    /// Records a completed checkpoint: how long it took and, when the
    /// backend can tell, the size of the state it holds.
    pub fn record_checkpoint(&self, took: Duration, state_bytes: Option<u64>) {
        self.checkpoint_seconds.observe(took.as_secs_f64());
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_checkpoint.set(now);
        if let Some(bytes) = state_bytes {
            self.state_bytes
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }

    /// Records how long a commit (flush plus offset commit) took.
    pub fn record_commit(&self, took: Duration) {
        self.commit_seconds.observe(took.as_secs_f64());
    }

    /// Marks the pipeline ready: `/readyz` answers 200 from now on.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// One assigned partition's lags, as [`Metrics::record_partitions`] takes them.
#[derive(Debug, Clone)]
pub struct PartitionSample {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// Wall-clock time minus its watermark; `None` before its first event.
    pub watermark_lag: Option<Duration>,
    /// Messages not yet processed; `None` while librdkafka has not said.
    pub consumer_lag: Option<i64>,
}

/// The content type of `/metrics`: the body is OpenMetrics text (it ends
/// with `# EOF`), which Prometheus negotiates and parses as such.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The HTTP server of the operations endpoints; stopped on drop.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

/// The content type of the plain-text endpoints.
const TEXT: &str = "text/plain; charset=utf-8";

/// A response with `body` and one Content-Type header (tiny_http's
/// `from_string` would add a second, `text/plain`, of its own).
pub fn respond_with(
    status: u16,
    body: String,
    content_type: &str,
) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let headers = tiny_http::Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes())
        .into_iter()
        .collect();
    let bytes = body.into_bytes();
    let len = bytes.len();
    tiny_http::Response::new(
        tiny_http::StatusCode(status),
        headers,
        std::io::Cursor::new(bytes),
        Some(len),
        None,
    )
}

impl MetricsServer {
    /// Serves `metrics` on `listen` (`host:port`).
    pub fn start(listen: &str, metrics: Arc<Metrics>) -> Result<Self, IoError> {
        Self::start_with_status(listen, metrics, None)
    }

    /// Serves `metrics` on `listen`, and `status_page` at `/` (see
    /// [`crate::status`]).
    pub fn start_with_status(
        listen: &str,
        metrics: Arc<Metrics>,
        status_page: Option<Arc<StatusBoard>>,
    ) -> Result<Self, IoError> {
        let server = tiny_http::Server::http(listen).map_err(|e| IoError {
            action: "listening for /metrics on",
            path: listen.into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let server = Arc::new(server);
        let serving = Arc::clone(&server);
        let thread = std::thread::spawn(move || {
            for request in serving.incoming_requests() {
                if let Some(page) = status_page.as_ref().and_then(|s| s.respond(request.url())) {
                    let _ = request.respond(page);
                    continue;
                }
                let (status, body, content_type) = match request.url() {
                    "/metrics" => (200, metrics.render(), OPENMETRICS),
                    "/healthz" => (200, "ok\n".to_string(), TEXT),
                    "/readyz" if metrics.ready.load(Ordering::Relaxed) => {
                        (200, "ready\n".into(), TEXT)
                    }
                    "/readyz" => (503, "not ready\n".into(), TEXT),
                    _ => (404, "not found\n".into(), TEXT),
                };
                let response = respond_with(status, body, content_type);
                // A scraper that hung up is its own problem.
                let _ = request.respond(response);
            }
        });
        Ok(Self {
            server,
            thread: Some(thread),
        })
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
