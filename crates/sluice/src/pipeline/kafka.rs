//! A run over Kafka: the poll loop around [`Flow`], with per-partition
//! watermarks and idleness, periodic commits of the offsets whose effects are
//! written, rebalances, graceful shutdown, and the embedded broker.

use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use sluice_config::{EMBEDDED_PARTITIONS, KafkaSourceConfig, LoadedConfig, OutputConfig};
use sluice_core::state::{RunSummary, SourcePosition};
use sluice_core::watermark::{MIN_WATERMARK, Watermarks};
use sluice_kafka::KafkaSource;
use sluice_wasm::PluginEngine;

use super::Flow;
use super::decode_ahead::DecodeAhead;
use super::stop::Stop;
use crate::error::{ConfigError, Error, IoError, KafkaError};
use crate::metrics::{Metrics, MetricsServer, PartitionSample};

/// How long one poll waits for a message: also how often shutdown, idleness
/// and commit deadlines are checked.
const POLL: Duration = Duration::from_millis(50);

/// Runs `loaded` against the Kafka source `config` until a bounded source
/// reaches its end or a SIGINT/SIGTERM asks it to stop.
pub(super) fn run(
    loaded: &LoadedConfig,
    engine: &Arc<PluginEngine>,
    config: &KafkaSourceConfig,
    batch_size: usize,
    parallelism: usize,
    stop: &Stop,
) -> Result<RunSummary, Error> {
    // Declared first so that it is dropped last, after every client of it.
    let embedded = match config.brokers.as_str() {
        "embedded" => Some(EmbeddedBroker::start(loaded, config)?),
        _ => None,
    };
    let brokers = embedded
        .as_ref()
        .map_or_else(|| config.brokers.clone(), EmbeddedBroker::bootstrap);

    // The brokers first: an address that answers nothing is reported, with
    // why, while the outputs of the last run are still whole.
    if embedded.is_none() {
        sluice_kafka::reach_brokers(&brokers, &config.properties)?;
    }
    // Plugins and outputs before the source: a bad plugin is reported before
    // the consumer joins its group.
    let mut flow = Flow::open(loaded, engine, (batch_size, parallelism), 1, Some(&brokers))?;
    let mut source = KafkaSource::open(config, &brokers)?;
    flow.watermarks = Watermarks::new(flow.watermark_delay, source.partition_count());
    let token = flow.checkpoint_token();
    // A restored checkpoint is used only if, at the first assignment, every
    // partition it read is ours with our last commit (see `Restore`).
    let mut restore = match (flow.resume.take(), flow.resume_watermarks.take()) {
        (Some(SourcePosition::Kafka { token, partitions }), Some(watermarks)) => {
            if watermarks.max_seen.len() == source.partition_count() {
                flow.watermarks.restore(&watermarks);
                Some(Restore { token, partitions })
            } else {
                tracing::warn!(
                    "the checkpoint was taken with {} partitions, the topics now have {}: \
                     dropping it and replaying from committed offsets",
                    watermarks.max_seen.len(),
                    source.partition_count()
                );
                flow.clear_state(source.partition_count())?;
                None
            }
        }
        (Some(SourcePosition::File { .. }), _) => {
            return Err(Error::Config(ConfigError(
                "key `state.path`: its checkpoints were taken from a file source; this \
                 pipeline reads Kafka: use another state directory"
                    .into(),
            )));
        }
        _ => None,
    };

    let mut feed = match (&embedded, &config.feed) {
        (Some(_), Some(path)) => Some(Feed::start(
            &brokers,
            &config.topics[0],
            &loaded.resolve(path),
            &loaded.pipeline.event.key,
        )?),
        _ => None,
    };

    let metrics = Arc::new(Metrics::new());
    let server = match &loaded.pipeline.metrics {
        Some(m) => {
            let status = crate::status::StatusBoard::new(loaded);
            flow.attach_status(Arc::clone(&status));
            Some(MetricsServer::start_with_status(
                &m.listen,
                Arc::clone(&metrics),
                Some(status),
            )?)
        }
        None => None,
    };
    if server.is_some() {
        flow.metrics = Some(Arc::clone(&metrics));
    }

    let mut last_commit = Instant::now();
    let mut last_idle_check = Instant::now();
    // When partitions were last assigned, until their first message comes:
    // the log says how long fetching took to start (offset lookups, the
    // first fetch round trip).
    let mut awaiting_first: Option<Instant> = None;
    let mut ahead = DecodeAhead::start(&flow.decoder)?;
    loop {
        // Between messages: a new plugin version goes live here.
        flow.apply_reloads()?;
        if stop.requested() {
            tracing::info!("stop requested: flushing, checkpointing, committing");
            ahead.drain(&mut flow, &mut source)?;
            // Fire nothing early: open windows are restored from the
            // checkpoint, or rebuilt from the committed offsets, by the next run.
            flow.flush()?;
            if restore.is_none() {
                checkpoint(&mut flow, &source)?;
            }
            commit(&mut source, &flow, token)?;
            break;
        }
        if let Some(f) = feed.as_mut()
            && f.done()
        {
            f.join()?;
            feed = None;
            source.stop_at_current_end()?;
        }
        if feed.is_none() && !ahead.pending() && source.at_end() {
            tracing::info!("end offsets reached: firing every window");
            // As for a file, the last checkpoint precedes the end-of-input
            // watermark: a later run carries on from the end offsets.
            if restore.is_none() {
                checkpoint(&mut flow, &source)?;
            }
            let watermark = flow.watermarks.current();
            flow.judge_dead_letters(true)?;
            flow.finish()?;
            let offsets = source.plan_commit(None, watermark, token);
            source.commit(&offsets)?;
            break;
        }

        // Backpressure: while an output holds records its producer's queue
        // could not take, nothing new is fetched; the loop goes on polling
        // (rebalances, idleness, commits) and resumes once it is drained.
        if flow.drain_outputs()? {
            if !source.is_paused() {
                tracing::debug!("an output is backlogged: pausing consumption");
                source.pause()?;
            }
        } else if source.is_paused() {
            tracing::debug!("outputs drained: resuming consumption");
            source.resume()?;
        }

        // Messages are decoded on another thread while the next are polled
        // (see `decode_ahead`); with some pending, the poll does not wait,
        // so that a slow stream's events are not held back for a batch.
        let timeout = if ahead.pending() {
            Duration::ZERO
        } else {
            POLL
        };
        // Up to a batch at a time of what the consumer holds: the checks
        // around the poll run once per batch instead of per message.
        // Polling only copies values into the batch; results, and so any
        // backlog of an output, come from applying batches, after which the
        // loop comes round to its checks as before.
        let taken = source.poll(timeout, ahead.room(), |record| ahead.push(&record))?;
        if taken > 0 {
            if ahead.room() == 0 {
                ahead.send(&mut flow, &mut source)?;
            }
            if let Some(since) = awaiting_first.take() {
                tracing::info!(
                    millis = since.elapsed().as_millis() as u64,
                    "first message {:?} after the assignment",
                    since.elapsed()
                );
            }
        } else {
            ahead.step(&mut flow, &mut source)?;
        }
        flow.batch_done()?;
        if source.rebalanced() {
            // Dropping window state for a revocation, or seeding watermarks,
            // must come after every message polled before it.
            ahead.drain(&mut flow, &mut source)?;
        }

        let reassignment = source.take_reassignment()?;
        if reassignment.revoked {
            tracing::info!(
                open_windows = flow.open_windows(),
                "partitions revoked: dropping window state for replay by the next owner"
            );
            // The partitions' next owners (perhaps us again) rebuild these
            // windows from the committed offsets.
            flow.clear_state(source.partition_count())?;
            restore = None;
        }
        if !reassignment.assigned.is_empty() {
            tracing::info!(
                partitions = reassignment.assigned.len(),
                "partitions assigned"
            );
            awaiting_first = Some(Instant::now());
        }
        // Assigned partitions hold the watermark back from now on, not from
        // the next idleness check: until then the events of one of them
        // could carry it past the others' (whose events would be late).
        for &(partition, _) in &reassignment.assigned {
            let advanced = flow.watermarks.set_idle(partition, false);
            flow.advance(advanced)?;
        }
        if source.is_paused() && !reassignment.assigned.is_empty() {
            // Partitions assigned while paused start paused too.
            source.pause()?;
        }
        let mut resumed = reassignment.resumed;
        if !reassignment.assigned.is_empty()
            && let Some(r) = restore.take()
        {
            if r.holds(&reassignment.assigned, &source) {
                let mut from_checkpoint = Vec::new();
                for (topic, partition, next) in &r.partitions {
                    if let Some(i) = source.index_of(topic, *partition) {
                        source.resume_at(i, *next)?;
                        from_checkpoint.push(i);
                    }
                }
                resumed.retain(|(i, _)| !from_checkpoint.contains(i));
                tracing::info!(
                    partitions = from_checkpoint.len(),
                    "resuming from the checkpoint's offsets"
                );
            } else {
                tracing::warn!(
                    "another member has processed partitions of the checkpoint since, or it \
                     read partitions that are not ours now: dropping it and replaying from \
                     committed offsets"
                );
                flow.clear_state(source.partition_count())?;
            }
        }
        if !resumed.is_empty() {
            tracing::info!(
                partitions = resumed.len(),
                "partitions assigned with a committed watermark: replaying"
            );
        }
        for (partition, watermark) in resumed {
            let advanced = flow
                .watermarks
                .seed(partition, watermark.saturating_add(flow.watermark_delay));
            flow.advance(advanced)?;
        }

        let now = Instant::now();
        if now.duration_since(last_idle_check) >= POLL {
            last_idle_check = now;
            // Idleness moves watermarks: every polled event goes first.
            ahead.drain(&mut flow, &mut source)?;
            let changes = source.idleness(now);
            for (partition, idle) in changes {
                let advanced = flow.watermarks.set_idle(partition, idle);
                flow.advance(advanced)?;
            }
            flow.on_processing_time()?;
            flow.judge_dead_letters(false)?;
            publish(&metrics, &mut flow, &source);
        }
        // With a state backend, offsets are committed right after the
        // checkpoint that covers them; without one, every commit interval.
        let due = match token {
            Some(_) => restore.is_none() && flow.checkpoint_due(),
            None => now.duration_since(last_commit) >= config.commit_interval,
        };
        if due {
            last_commit = now;
            ahead.drain(&mut flow, &mut source)?;
            flow.flush()?;
            if token.is_some() {
                checkpoint(&mut flow, &source)?;
            }
            commit(&mut source, &flow, token)?;
            metrics.record_commit(now.elapsed());
            publish(&metrics, &mut flow, &source);
        }
    }
    let (pauses, paused_for) = source.pauses();
    if pauses > 0 {
        tracing::info!(
            pauses,
            seconds = paused_for.as_secs_f64(),
            "consumption was paused {pauses} times ({:.1} s in all) while outputs were backlogged",
            paused_for.as_secs_f64()
        );
    }
    if source.stale() > 0 {
        tracing::info!(
            messages = source.stale(),
            "left {} messages fetched for partitions revoked since",
            source.stale()
        );
    }
    source.close();
    Ok(flow.summary())
}

/// Publishes the run's counters, plugin health and the lags of every
/// assigned partition, to the metrics and the status page; the run is ready
/// while it has partitions assigned.
fn publish(metrics: &Metrics, flow: &mut Flow, source: &KafkaSource) {
    super::publish_counters(metrics, flow);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let mut assigned = Vec::new();
    for i in (0..source.partition_count()).filter(|&i| source.is_assigned(i)) {
        let Some((topic, partition)) = source.partition_name(i) else {
            continue;
        };
        let seen = flow.watermarks.max_seen(i);
        let watermark_lag = (seen != MIN_WATERMARK).then(|| {
            let watermark = seen.saturating_sub(flow.watermark_delay);
            Duration::from_millis(u64::try_from(now_ms.saturating_sub(watermark)).unwrap_or(0))
        });
        assigned.push(PartitionSample {
            topic: topic.to_string(),
            partition,
            watermark_lag,
            consumer_lag: source.consumer_lag(i),
        });
    }
    metrics.set_ready(!assigned.is_empty());
    metrics.record_partitions(&assigned);
    flow.publish_status(|| assigned);
}

/// A checkpoint restored at start, waiting for the first assignment to
/// show whether it still holds.
struct Restore {
    token: u64,
    partitions: Vec<(String, i32, i64)>,
}

impl Restore {
    /// Whether the checkpoint can be used: every partition it has a
    /// position for is assigned to this member, and the group's last commit
    /// of it is this state directory's (no other member has processed it
    /// since). Partitions it did not read are replayed from their commits.
    fn holds(&self, assigned: &[(usize, Option<u64>)], source: &KafkaSource) -> bool {
        self.partitions.iter().all(|(topic, partition, _)| {
            source.index_of(topic, *partition).is_some_and(|i| {
                assigned
                    .iter()
                    .any(|&(a, token)| a == i && token == Some(self.token))
            })
        })
    }
}

/// Takes a checkpoint with the source's current positions (the outputs are
/// flushed by it first).
fn checkpoint(flow: &mut Flow, source: &KafkaSource) -> Result<(), Error> {
    let Some(token) = flow.checkpoint_token() else {
        return Ok(());
    };
    flow.checkpoint(SourcePosition::Kafka {
        token,
        partitions: source.positions(),
    })
}

/// Commits what the flushed outputs cover (and the checkpoint named by
/// `token`, when the run keeps them).
fn commit(source: &mut KafkaSource, flow: &Flow, token: Option<u64>) -> Result<(), Error> {
    let offsets = source.plan_commit(flow.oldest_open_start(), flow.watermarks.current(), token);
    source.commit(&offsets)?;
    tracing::debug!(partitions = offsets.count(), "committed offsets");
    Ok(())
}

/// librdkafka's in-process mock cluster, for `brokers: embedded`: a real
/// Kafka-protocol broker on a local port that lives as long as the run.
///
/// It keeps at most 5 MiB per partition (older data is dropped), which suits
/// demos and trials, not production.
struct EmbeddedBroker {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl EmbeddedBroker {
    fn start(loaded: &LoadedConfig, config: &KafkaSourceConfig) -> Result<Self, KafkaError> {
        let error = |what: &str| {
            let what = what.to_string();
            move |e: rdkafka::error::KafkaError| KafkaError {
                what,
                message: e.to_string(),
            }
        };
        let cluster = MockCluster::new(1).map_err(error("starting the embedded broker"))?;
        for topic in &config.topics {
            cluster
                .create_topic(topic, EMBEDDED_PARTITIONS, 1)
                .map_err(error("creating a topic on the embedded broker"))?;
        }
        let pipeline = &loaded.pipeline;
        let outputs = [
            Some(&pipeline.sink),
            pipeline.late_output.as_ref(),
            pipeline.dead_letter.as_ref(),
        ];
        for output in outputs.into_iter().flatten() {
            if let OutputConfig::Kafka(k) = output
                && k.brokers.is_none()
            {
                cluster
                    .create_topic(&k.topic, 1, 1)
                    .map_err(error("creating a topic on the embedded broker"))?;
            }
        }
        tracing::info!(
            brokers = cluster.bootstrap_servers(),
            "embedded Kafka broker at {}",
            cluster.bootstrap_servers()
        );
        Ok(Self { cluster })
    }

    fn bootstrap(&self) -> String {
        self.cluster.bootstrap_servers()
    }
}

/// Produces a JSON-lines file into a topic on a thread of its own, keyed by
/// the pipeline's key fields so that each key stays in one partition.
struct Feed {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<u64, Error>>>,
}

impl Feed {
    fn start(
        brokers: &str,
        topic: &str,
        path: &std::path::Path,
        key_fields: &[String],
    ) -> Result<Self, Error> {
        let reader = sluice_core::source::open_reader(path)?;
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .map_err(|e| KafkaError {
                what: "creating the feed producer".into(),
                message: e.to_string(),
            })?;
        let done = Arc::new(AtomicBool::new(false));
        let finished = Arc::clone(&done);
        let topic = topic.to_string();
        let key_fields = key_fields.to_vec();
        let path = path.to_path_buf();
        let thread = std::thread::spawn(move || {
            let result = produce_lines(&producer, &topic, reader, &path, &key_fields);
            finished.store(true, Ordering::Release);
            result
        });
        Ok(Self {
            done,
            thread: Some(thread),
        })
    }

    fn done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    fn join(&mut self) -> Result<u64, Error> {
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(KafkaError {
                what: "feeding the embedded broker".into(),
                message: "the feed thread panicked".into(),
            }
            .into()),
            None => Ok(0),
        }
    }
}

/// Produces every non-blank line of `reader` to `topic`; returns how many.
fn produce_lines(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    reader: Box<dyn BufRead + Send>,
    path: &std::path::Path,
    key_fields: &[String],
) -> Result<u64, Error> {
    let mut count = 0;
    for line in reader.lines() {
        let line = line.map_err(|source| IoError {
            action: "reading",
            path: path.to_path_buf(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let key = message_key(&line, key_fields);
        let mut record = BaseRecord::<String, str>::to(topic).payload(line.as_str());
        if let Some(key) = &key {
            record = record.key(key);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    back,
                )) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => {
                    return Err(KafkaError {
                        what: format!("producing to topic {topic}"),
                        message: e.to_string(),
                    }
                    .into());
                }
            }
        }
        count += 1;
    }
    producer
        .flush(Duration::from_secs(60))
        .map_err(|e| KafkaError {
            what: format!("flushing topic {topic}"),
            message: e.to_string(),
        })?;
    Ok(count)
}

/// The values of `fields` in a JSON line, joined: a message key that keeps
/// each pipeline key in one partition. `None` for a line that is not an
/// object with those fields (it still gets produced, to be dead-lettered).
fn message_key(line: &str, fields: &[String]) -> Option<String> {
    if fields.is_empty() {
        return None;
    }
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let parts: Option<Vec<String>> = fields
        .iter()
        .map(|f| value.get(f).map(|v| v.to_string()))
        .collect();
    parts.map(|p| p.join("|"))
}
