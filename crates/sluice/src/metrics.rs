//! Operations endpoints of a long-running pipeline: Prometheus `/metrics`,
//! `/healthz` (the process is up) and `/readyz` (it has joined its source and
//! is processing), served on a thread of their own.
//!
//! The pipeline publishes its counters here every poll round; scraping never
//! touches pipeline state, so a slow scraper cannot slow the data path.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

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
    /// Wall-clock time minus the partition's watermark, in milliseconds.
    watermark_lag_ms: Family<PartitionLabels, Gauge>,
    /// Messages between the committed offset and the partition's end, as
    /// librdkafka's statistics report it (commits lag behind open windows).
    consumer_lag: Family<PartitionLabels, Gauge>,
    commit_seconds: Histogram,
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
            watermark_lag_ms: Family::default(),
            consumer_lag: Family::default(),
            commit_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
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
            "watermark_lag_milliseconds",
            "Wall-clock time minus the partition's watermark",
            m.watermark_lag_ms.clone(),
        );
        registry.register(
            "consumer_lag_messages",
            "Messages between the committed offset and the partition's end (librdkafka statistics)",
            m.consumer_lag.clone(),
        );
        registry.register(
            "commit_duration_seconds",
            "Time to flush outputs and commit offsets",
            m.commit_seconds.clone(),
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

    /// Publishes a partition's watermark lag and consumer lag.
    pub fn record_partition(
        &self,
        topic: &str,
        partition: i32,
        watermark_lag_ms: i64,
        consumer_lag: Option<i64>,
    ) {
        let labels = PartitionLabels {
            topic: topic.to_string(),
            partition,
        };
        self.watermark_lag_ms
            .get_or_create(&labels)
            .set(watermark_lag_ms);
        if let Some(lag) = consumer_lag {
            self.consumer_lag.get_or_create(&labels).set(lag);
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

/// The HTTP server of the operations endpoints; stopped on drop.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
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
                let (status, body) = match request.url() {
                    "/metrics" => (200, metrics.render()),
                    "/healthz" => (200, "ok\n".to_string()),
                    "/readyz" if metrics.ready.load(Ordering::Relaxed) => (200, "ready\n".into()),
                    "/readyz" => (503, "not ready\n".into()),
                    _ => (404, "not found\n".into()),
                };
                let response = tiny_http::Response::from_string(body).with_status_code(status);
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
