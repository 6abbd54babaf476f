//! End-to-end tests of `sluice run` against a real Kafka-protocol broker:
//! Tansu, started here as a separate process (scripts/setup.sh installs it),
//! and librdkafka's in-process mock cluster for `brokers: embedded`.
//!
//! Broker features relied on: topic creation with several partitions,
//! produce to an explicit partition, consumer groups with manual offset
//! commits (with metadata) and committed-offset fetch, message headers.
//! Tansu runs with SQLite storage: its in-memory storage returns nothing to a
//! consumer that resumes from an offset inside a record batch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{free_port, http_response, xorshift};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

/// A Tansu broker on a free local port, stopped on drop.
struct Broker {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tansu() -> PathBuf {
    if let Ok(path) = which("tansu") {
        return path;
    }
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo")
        });
    let path = home.join("bin/tansu");
    assert!(
        path.is_file(),
        "the tansu broker is not installed: run scripts/setup.sh (cargo install tansu)"
    );
    path
}

fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}

impl Broker {
    fn start() -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("tcp://127.0.0.1:{port}");
        // Tansu resolves a SQLite URL's path against its working directory.
        let storage = "sqlite://tansu.db";
        let child = Command::new(tansu())
            .current_dir(dir.path())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", storage])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("broker.log")).expect("log file"))
            .spawn()
            .expect("starting tansu");
        let broker = Broker {
            child,
            address: format!("127.0.0.1:{port}"),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&broker.address).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start listening");
            std::thread::sleep(Duration::from_millis(100));
        }
        broker
    }

    fn create_topic(&self, name: &str, partitions: u32) {
        let status = Command::new(tansu())
            .args([
                "topic",
                "create",
                name,
                "--partitions",
                &partitions.to_string(),
            ])
            .args(["--broker", &format!("tcp://{}", self.address)])
            .stdout(Stdio::null())
            .status()
            .expect("tansu topic create");
        assert!(status.success(), "creating topic {name}");
    }
}

/// Events for 6 services over ~2 minutes, 10% out of order within the 2 s
/// bound, none late; service `svc-i` goes to partition `i % 3`, so partition
/// 3 of the topic stays empty (an idle partition).
fn events() -> Vec<(usize, String)> {
    events_of(3_000)
}

/// [`events`] with `count` well-formed events (~40 ms of event time apart
/// on average), then the same two undecodable ones.
fn events_of(count: usize) -> Vec<(usize, String)> {
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::new();
    let mut t: i64 = 1_700_000_000_000;
    for _ in 0..count {
        t += (next() % 80) as i64;
        let svc = (next() % 6) as usize;
        let ts = if next().is_multiple_of(10) {
            t - (next() % 1_500) as i64
        } else {
            t
        };
        let latency = 20.0 + (next() % 200_000) as f64 / 100.0;
        out.push((
            svc % 3,
            format!(
                r#"{{"ts":{ts},"service":"svc-{svc}","latency_ms":{latency},"error":{}}}"#,
                next().is_multiple_of(17)
            ),
        ));
    }
    // Two undecodable messages: dead letters with their reason.
    out.push((
        0,
        r#"{"ts":1700000001000,"service":"svc-0","latency_ms":"slow"}"#.into(),
    ));
    out.push((1, "not json".into()));
    out
}

fn produce(brokers: &str, topic: &str, events: &[(usize, String)]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    for (partition, line) in events {
        producer
            .send(
                BaseRecord::<str, str>::to(topic)
                    .partition(*partition as i32)
                    .payload(line.as_str()),
            )
            .map_err(|(e, _)| e)
            .expect("queue a message");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// Every message of `topic` (all partitions), with its `reason` header.
fn consume_all(brokers: &str, topic: &str) -> Vec<(String, Option<String>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{topic}"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions = metadata.topics()[0].partitions().len() as i32;
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks");
        ends.insert(p, high);
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    let mut got = Vec::new();
    let mut next: BTreeMap<i32, i64> = ends.keys().map(|&p| (p, 0)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while next.iter().any(|(p, n)| *n < ends[p]) {
        assert!(Instant::now() < deadline, "timed out reading {topic}");
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.expect("a message");
        next.insert(message.partition(), message.offset() + 1);
        let reason = message.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == "reason")
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        });
        let value = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
        got.push((value, reason));
    }
    got
}

const PIPELINE: &str = "\
event: { key: [service], time: { field: ts, format: epoch_millis } }
watermark: { max_out_of_orderness: 2s }
window: { tumbling: { size: 10s } }
aggregations:
  - { name: latency, plugin: builtin/stats, field: latency_ms }
  - { name: errors, plugin: builtin/mean, field: error }
";

/// Runs `sluice run` on `config` and waits at most `limit` for it to exit
/// (a hang fails the test with what the run logged, not the whole suite).
fn sluice_within(config: &Path, limit: Duration) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let (stdout, stderr) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = KillOnDrop(Some(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["run", "--config"])
            .arg(config)
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap(),
    ));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.0.as_mut().unwrap().try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "sluice did not finish within {limit:?}:\n{}",
            std::fs::read_to_string(&stderr).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    std::process::Output {
        status,
        stdout: std::fs::read(&stdout).unwrap_or_default(),
        stderr: std::fs::read(&stderr).unwrap_or_default(),
    }
}

fn sluice(config: &Path) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SLUICE_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(["run", "--config"])
        .arg(config)
        .output()
        .expect("running sluice")
}

/// Writes `events` to `dir/events.jsonl` and runs [`PIPELINE`] over it as a
/// file: the reference a Kafka run is compared with. Returns the results.
fn file_run(dir: &Path, events: &[(usize, String)]) -> String {
    file_run_of(dir, PIPELINE, events)
}

/// [`file_run`] with `pipeline` in place of [`PIPELINE`].
fn file_run_of(dir: &Path, pipeline: &str, events: &[(usize, String)]) -> String {
    let input: String = events.iter().map(|(_, l)| format!("{l}\n")).collect();
    std::fs::write(dir.join("events.jsonl"), input).unwrap();
    let config = dir.join("file.yaml");
    std::fs::write(
        &config,
        format!(
            "source: {{ file: events.jsonl }}\n{pipeline}sink: {{ file: file-results.jsonl }}\n\
             late_output: {{ file: file-late.jsonl }}\ndead_letter: {{ file: file-dead.jsonl }}\n"
        ),
    )
    .unwrap();
    let out = sluice(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("file-late.jsonl")).unwrap(),
        ""
    );
    std::fs::read_to_string(dir.join("file-results.jsonl")).unwrap()
}

fn sorted_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

/// The same events through Kafka (3 busy partitions and an idle one) and
/// through a file give the same window results; dead letters reach their
/// topic with the reason in a header; the group's offsets end up committed
/// at the end of every partition.
#[test]
fn kafka_run_matches_the_file_run() {
    let broker = Broker::start();
    broker.create_topic("events", 4);
    for topic in ["results", "late", "dead"] {
        broker.create_topic(topic, 1);
    }
    let events = events();
    produce(&broker.address, "events", &events);

    let dir = tempfile::tempdir().unwrap();
    let file_results = file_run(dir.path(), &events);
    assert!(file_results.lines().count() > 50);

    let kafka_config = dir.path().join("kafka.yaml");
    std::fs::write(
        &kafka_config,
        format!(
            "source: {{ kafka: {{ brokers: \"{b}\", topics: [events], group: e2e, stop_at_end: true }} }}\n\
             {PIPELINE}sink: {{ kafka: {{ topic: results }} }}\n\
             late_output: {{ kafka: {{ topic: late }} }}\ndead_letter: {{ kafka: {{ topic: dead }} }}\n",
            b = broker.address
        ),
    )
    .unwrap();
    let out = sluice(&kafka_config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("3002 events read") && stderr.contains("2 dead-lettered"),
        "{stderr}"
    );

    let results: Vec<String> = consume_all(&broker.address, "results")
        .into_iter()
        .map(|(v, _)| v)
        .collect();
    assert_eq!(
        sorted_lines(&results.join("\n")),
        sorted_lines(&file_results)
    );

    let dead = consume_all(&broker.address, "dead");
    assert_eq!(dead.len(), 2);
    let mut dead_partitions = Vec::new();
    for (record, reason) in &dead {
        let reason = reason.as_deref().expect("a reason header");
        let record: serde_json::Value = serde_json::from_str(record).expect("a JSON record");
        assert_eq!(record["topic"], "events");
        assert_eq!(record["reason"], reason);
        dead_partitions.push(record["partition"].as_i64().expect("a partition number"));
    }
    // The two undecodable messages were produced to partitions 0 and 1.
    dead_partitions.sort_unstable();
    assert_eq!(dead_partitions, [0, 1]);
    assert!(consume_all(&broker.address, "late").is_empty());

    // Offsets: committed at the end of each partition, nothing held back.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .set("group.id", "e2e")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition("events", p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    for elem in committed.elements() {
        let (_, high) = consumer
            .fetch_watermarks("events", elem.partition(), Duration::from_secs(10))
            .unwrap();
        if high > 0 {
            assert_eq!(
                elem.offset(),
                Offset::Offset(high),
                "partition {}",
                elem.partition()
            );
        }
    }
}

/// `brokers: embedded` with a feed: the run starts the in-process broker,
/// produces the file into it while consuming, and ends when all is consumed,
/// with the same results as the file run.
#[test]
fn embedded_broker_with_a_feed_matches_the_file_run() {
    embedded_feed_matches_the_file_run("");
}

/// The same with window shards (`parallelism: 2`): the results do not
/// depend on how the keys' windows are spread over workers.
#[test]
fn embedded_broker_with_window_shards_matches_the_file_run() {
    embedded_feed_matches_the_file_run("parallelism: 2\n");
}

/// Runs [`PIPELINE`] with `extra` on the embedded broker fed from the file,
/// and compares its results with the file run's.
fn embedded_feed_matches_the_file_run(extra: &str) {
    let dir = tempfile::tempdir().unwrap();
    // Keyed by service, each key keeps its order within one partition.
    let want = file_run(dir.path(), &events());
    let embedded_config = dir.path().join("embedded.yaml");
    std::fs::write(
        &embedded_config,
        format!(
            "source: {{ kafka: {{ brokers: embedded, topics: [events], feed: events.jsonl }} }}\n\
             {PIPELINE}sink: {{ file: results.jsonl }}\n{extra}\
             late_output: {{ file: late.jsonl }}\ndead_letter: {{ file: dead.jsonl }}\n"
        ),
    )
    .unwrap();
    let out = sluice(&embedded_config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("3002 events read"), "{stderr}");
    let got = std::fs::read_to_string(dir.path().join("results.jsonl")).unwrap();
    assert_eq!(sorted_lines(&got), sorted_lines(&want));
}

/// The whole response of the operations endpoint at `port` (status line,
/// headers, body).
fn metrics_get(port: u16, path: &str) -> String {
    http_response(port, path).expect("the operations address answers")
}

/// A child process that is killed if still running when dropped.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The group's committed offsets, by partition.
fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let Ok(committed) = consumer.committed_offsets(tpl, Duration::from_secs(10)) else {
        return BTreeMap::new();
    };
    committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

/// SIGTERM stops a run without firing open windows, exits 0 and commits
/// behind them; a restart replays those windows from the committed offsets:
/// nothing is lost. (Suppressing re-emission of windows that the first run
/// already wrote needs the watermark stored as offset-commit metadata, which
/// Tansu 0.6 drops, so this test checks at-least-once: every result of an
/// uninterrupted run appears, complete, in the two runs' output.)
#[test]
fn sigterm_then_restart_loses_nothing() {
    let broker = Broker::start();
    broker.create_topic("events", 4);
    broker.create_topic("results", 1);
    let events = events();
    let (first, second) = events.split_at(events.len() / 2);
    produce(&broker.address, "events", first);

    let dir = tempfile::tempdir().unwrap();
    let file_results = file_run(dir.path(), &events);

    let metrics_port = free_port();
    let config = |stop_at_end: bool| {
        let path = dir.path().join(format!("kafka-{stop_at_end}.yaml"));
        let metrics = if stop_at_end {
            String::new()
        } else {
            format!("metrics: {{ listen: \"127.0.0.1:{metrics_port}\" }}\n")
        };
        std::fs::write(
            &path,
            format!(
                "source: {{ kafka: {{ brokers: \"{b}\", topics: [events], group: restart, \
                 stop_at_end: {stop_at_end}, idle_timeout: 1s, commit_interval: 200ms }} }}\n\
                 {PIPELINE}sink: {{ kafka: {{ topic: results }} }}\n\
                 late_output: {{ file: late.jsonl }}\ndead_letter: {{ file: dead.jsonl }}\n{metrics}",
                b = broker.address
            ),
        )
        .unwrap();
        path
    };

    // Run 1: unbounded; stopped once it has processed the first half.
    let run1 = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--config"])
        .arg(config(false))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Killed if the test fails before it stops the run itself.
    let mut run1 = KillOnDrop(Some(run1));
    let ends: BTreeMap<i32, i64> = (0..3)
        .map(|p| {
            let c: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &broker.address)
                .create()
                .unwrap();
            (
                p,
                c.fetch_watermarks("events", p, Duration::from_secs(10))
                    .unwrap()
                    .1,
            )
        })
        .collect();
    // Run 1 has read the first half once its commits stop moving and it has
    // emitted results (the newest windows stay open: they hold the commits).
    let last = settled_commits(&broker.address, "restart");
    for (p, offset) in &last {
        assert!(
            *offset > 0 && *offset < ends[p],
            "partition {p}: committed {offset} of {}",
            ends[p]
        );
    }
    // The operations endpoints of the running process. Everything produced
    // so far is processed: every assigned partition, the idle one too, has
    // a lag series, and it reaches 0 (librdkafka's statistics come once a
    // second) although open windows hold the commits back.
    let lags_zero = |m: &str| {
        (0..4).all(|p| {
            m.contains(&format!(
                "sluice_consumer_lag_messages{{topic=\"events\",partition=\"{p}\"}} 0\n"
            ))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut metrics = metrics_get(metrics_port, "/metrics");
    while !lags_zero(&metrics) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        metrics = metrics_get(metrics_port, "/metrics");
    }
    assert!(lags_zero(&metrics), "{metrics}");
    assert!(metrics.starts_with("HTTP/1.0 200"), "{metrics}");
    assert!(
        metrics.contains("Content-Type: application/openmetrics-text; version=1.0.0"),
        "{metrics}"
    );
    let first_half = first.len();
    assert!(
        metrics.contains(&format!("sluice_events_in_total {first_half}\n")),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_partitions_assigned 4\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"sluice_watermark_lag_seconds{topic="events",partition="0"} "#),
        "{metrics}"
    );
    assert!(metrics.contains("sluice_watermark_seconds "), "{metrics}");
    assert!(
        metrics.contains("sluice_commit_duration_seconds_count"),
        "{metrics}"
    );
    let calls = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"sluice_plugin_calls_total{aggregation="latency"} "#))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(calls.is_some_and(|n| n > 0), "{metrics}");
    assert!(
        metrics.contains(r#"sluice_plugin_call_seconds_total{aggregation="latency"}"#),
        "{metrics}"
    );
    assert!(metrics_get(metrics_port, "/healthz").starts_with("HTTP/1.0 200"));
    assert!(metrics_get(metrics_port, "/readyz").starts_with("HTTP/1.0 200"));

    let run1 = run1.0.take().unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &run1.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = run1.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Run 2: the rest of the events, bounded.
    produce(&broker.address, "events", second);
    let out = sluice(&config(true));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    let results: std::collections::HashSet<String> = consume_all(&broker.address, "results")
        .into_iter()
        .map(|(v, _)| v)
        .collect();
    for line in file_results.lines() {
        assert!(results.contains(line), "lost: {line}");
    }
}

/// Waits until the group's committed offsets for partitions 0..3 stop moving
/// (the members have read what there is) and returns them.
fn settled_commits(brokers: &str, group: &str) -> BTreeMap<i32, i64> {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = BTreeMap::new();
    let mut stable = 0;
    while stable < 15 {
        assert!(
            Instant::now() < deadline,
            "the group never settled: {last:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
        let now = committed(brokers, group, "events", 3);
        // Settled: every partition has committed past its first events
        // (windows have fired) and nothing moved for a while.
        stable = if now == last && now.len() == 3 && now.values().all(|&o| o > 0) {
            stable + 1
        } else {
            0
        };
        last = now;
    }
    last
}

/// A source over two topics: each message is told apart by its topic (the
/// name librdkafka gives each message, read only when there are several),
/// the per-partition watermarks span both topics' partitions (two of which
/// stay empty), the results are the file run's, and dead letters name the
/// topic their message came from.
#[test]
fn two_topics_match_the_file_run() {
    let broker = Broker::start();
    broker.create_topic("left", 3);
    broker.create_topic("right", 2);
    let events = events();
    let dir = tempfile::tempdir().unwrap();
    let file_results = file_run(dir.path(), &events);

    // Partitions 0 and 2 of `events()` go to the same partitions of
    // `left`, partition 1 to `right/1`: `left/1` and `right/0` stay empty.
    let (right, left): (Vec<_>, Vec<_>) = events.iter().cloned().partition(|(p, _)| *p == 1);
    produce(&broker.address, "left", &left);
    produce(&broker.address, "right", &right);

    let config = dir.path().join("two.yaml");
    std::fs::write(
        &config,
        format!(
            "source: {{ kafka: {{ brokers: \"{b}\", topics: [left, right], group: two, stop_at_end: true }} }}\n\
             {PIPELINE}sink: {{ file: two-results.jsonl }}\n\
             late_output: {{ file: two-late.jsonl }}\ndead_letter: {{ file: two-dead.jsonl }}\n",
            b = broker.address
        ),
    )
    .unwrap();
    // Bounded in time: a message taken for another topic's partition
    // would leave the real one short of its end offset for ever.
    let out = sluice_within(&config, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = std::fs::read_to_string(dir.path().join("two-results.jsonl")).unwrap();
    assert_eq!(sorted_lines(&got), sorted_lines(&file_results));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("two-late.jsonl")).unwrap(),
        ""
    );
    // The two undecodable messages, one in each topic, named by it.
    let dead = std::fs::read_to_string(dir.path().join("two-dead.jsonl")).unwrap();
    let mut origins: Vec<(String, i64)> = dead
        .lines()
        .map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).expect("JSON");
            (
                record["topic"].as_str().expect("a topic").to_string(),
                record["partition"].as_i64().expect("a partition"),
            )
        })
        .collect();
    origins.sort();
    assert_eq!(origins, [("left".to_string(), 0), ("right".to_string(), 1)]);
}

/// `time: { format: kafka_timestamp }` takes event time from the message
/// timestamp: events produced with their time as the message timestamp (and
/// no time field) give the results of the file run.
#[test]
fn event_time_from_the_message_timestamp() {
    let broker = Broker::start();
    broker.create_topic("stamped", 4);
    let events = events();
    let dir = tempfile::tempdir().unwrap();
    let file_results = file_run(dir.path(), &events);

    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .create()
        .expect("producer");
    for (partition, line) in &events {
        // Move `ts` from the payload to the message timestamp.
        let mut record = BaseRecord::<str, str>::to("stamped").partition(*partition as i32);
        let payload;
        if let Ok(serde_json::Value::Object(mut object)) = serde_json::from_str(line) {
            if let Some(ts) = object.remove("ts").and_then(|t| t.as_i64()) {
                record = record.timestamp(ts);
            }
            payload = serde_json::Value::Object(object).to_string();
        } else {
            payload = line.clone();
        }
        producer
            .send(record.payload(payload.as_str()))
            .map_err(|(e, _)| e)
            .expect("queue a message");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");

    let config = dir.path().join("stamped.yaml");
    let pipeline = PIPELINE.replace(
        "time: { field: ts, format: epoch_millis }",
        "time: { format: kafka_timestamp }",
    );
    assert_ne!(pipeline, PIPELINE);
    std::fs::write(
        &config,
        format!(
            "source: {{ kafka: {{ brokers: \"{b}\", topics: [stamped], group: stamped, stop_at_end: true }} }}\n\
             {pipeline}sink: {{ file: stamped-results.jsonl }}\n\
             late_output: {{ file: stamped-late.jsonl }}\ndead_letter: {{ file: stamped-dead.jsonl }}\n",
            b = broker.address
        ),
    )
    .unwrap();
    let out = sluice(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = std::fs::read_to_string(dir.path().join("stamped-results.jsonl")).unwrap();
    assert_eq!(sorted_lines(&got), sorted_lines(&file_results));
}

/// Two members of one group: the second joins mid-stream (a rebalance moves
/// partitions to it, the first drops their windows without emitting), then
/// both stop and a bounded run finishes the open windows. Together they lose
/// no result of the uninterrupted run, write none it does not write (a window
/// written twice is written whole both times), and count no event late. The
/// broker is librdkafka's mock cluster, run by this test and reached by the
/// members over its port: the new owner of a partition needs the watermark
/// its previous owner committed as offset metadata, which Tansu 0.6 drops.
#[test]
fn a_member_joining_mid_stream_loses_nothing() {
    // When the group's timing leaves the joiner nothing to read, the run
    // shows no rebalance at all: it is tried again on a fresh broker.
    assert!(
        (0..3).any(|_| member_joins_mid_stream()),
        "in three attempts the joining member never read from a partition"
    );
}

/// One run of the scenario; `false` when the joiner read nothing (after
/// checking that still nothing was lost).
fn member_joins_mid_stream() -> bool {
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("events", 3, 1).expect("topic");
    cluster.create_topic("results", 1, 1).expect("topic");
    let broker = MockBroker {
        address: cluster.bootstrap_servers(),
    };
    let events = events();
    let (first, second) = events.split_at(events.len() / 2);
    produce(&broker.address, "events", first);
    let dir = tempfile::tempdir().unwrap();
    let file_results = file_run(dir.path(), &events);

    let config = |name: &str, stop_at_end: bool| {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!(
                "source: {{ kafka: {{ brokers: \"{b}\", topics: [events], group: shared, \
                 stop_at_end: {stop_at_end}, idle_timeout: 1m, commit_interval: 200ms, \
                 properties: {{ heartbeat.interval.ms: \"300\", session.timeout.ms: \"6000\" }} }} }}\n\
                 {PIPELINE}sink: {{ kafka: {{ topic: results }} }}\n\
                 late_output: {{ file: {name}-late.jsonl }}\ndead_letter: {{ file: {name}-dead.jsonl }}\n",
                b = broker.address
            ),
        )
        .unwrap();
        path
    };
    let spawn = |name: &str| {
        KillOnDrop(Some(
            Command::new(env!("CARGO_BIN_EXE_sluice"))
                .args(["run", "--config"])
                .arg(config(name, false))
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        ))
    };
    let stop = |mut member: KillOnDrop| {
        let child = member.0.take().unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        stderr
    };

    let a = spawn("a");
    let before = settled_commits(&broker.address, "shared");
    let b = spawn("b");
    // The second half trickles in over a few seconds, so that the group
    // rebalances while it is read (a join takes a heartbeat or two).
    for chunk in second.chunks(second.len() / 10 + 1) {
        produce(&broker.address, "events", chunk);
        std::thread::sleep(Duration::from_millis(700));
    }
    let after = settled_commits(&broker.address, "shared");
    assert!(
        after.iter().all(|(p, o)| *o >= before[p]),
        "{before:?} -> {after:?}"
    );
    let a_summary = stop(a);
    let b_summary = stop(b);
    eprintln!("member a: {a_summary}member b: {b_summary}");
    // The joiner got partitions and read from them.
    let joined = !b_summary.contains(" 0 events read");

    let out = sluice(&config("c", true));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let results: std::collections::HashSet<String> = consume_all(&broker.address, "results")
        .into_iter()
        .map(|(v, _)| v)
        .collect();
    let late = |name: &str| {
        std::fs::read_to_string(dir.path().join(format!("{name}-late.jsonl"))).unwrap_or_default()
    };
    for line in file_results.lines() {
        assert!(
            results.contains(line),
            "lost: {line}\na: {a_summary}\nb: {b_summary}\nlate at a:\n{}\nlate at b:\n{}",
            late("a"),
            late("b")
        );
    }
    // Nothing partial either: a window written again after a rebalance (it
    // fired after the last commit) is written whole, as the same record.
    let file_set: std::collections::HashSet<&str> = file_results.lines().collect();
    let extra: Vec<&String> = results
        .iter()
        .filter(|r| !file_set.contains(r.as_str()))
        .collect();
    assert!(
        extra.is_empty(),
        "results no single run writes: {extra:#?}\na: {a_summary}\nb: {b_summary}"
    );
    // The events arrive in order within the bounded disorder: none is late
    // for a member whose watermark follows its own partitions.
    for name in ["a", "b"] {
        assert!(late(name).is_empty(), "late at {name}:\n{}", late(name));
    }
    if !joined {
        eprintln!("the joiner read nothing this time: {b_summary}");
    }
    joined
}

/// The address of a broker this test runs in-process.
struct MockBroker {
    address: String,
}

/// With RocksDB checkpoints, a Kafka run killed with SIGKILL again and again
/// while its input still arrives, and restarted each time, ends with the
/// file run's results on the result topic, each exactly once, and each dead
/// letter once: restarts resume from the checkpoint's offsets, and records
/// written after a checkpoint are read back rather than produced again.
///
/// On a mock cluster run by the test: it keeps commit metadata, which the
/// checkpoint's ownership check reads (Tansu drops it). Every other run has
/// two window shards (`parallelism: 2`), so checkpoints are also restored
/// into another number of shards than took them.
#[test]
fn kill_nine_with_checkpoints_writes_every_result_once() {
    let kills: usize = std::env::var("SLUICE_KAFKA_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("events", 3, 1).expect("topic");
    cluster.create_topic("results", 2, 1).expect("topic");
    cluster.create_topic("dead", 1, 1).expect("topic");
    let brokers = cluster.bootstrap_servers();
    let events = events();
    let dir = tempfile::tempdir().unwrap();
    let file_results = file_run(dir.path(), &events);

    let config = |stop_at_end: bool, parallelism: usize| {
        let path = dir
            .path()
            .join(format!("kafka-{stop_at_end}-{parallelism}.yaml"));
        std::fs::write(
            &path,
            format!(
                "source: {{ kafka: {{ brokers: \"{brokers}\", topics: [events], group: ck, \
                 stop_at_end: {stop_at_end}, idle_timeout: 1m, \
                 properties: {{ heartbeat.interval.ms: \"300\", session.timeout.ms: \"6000\" }} }} }}\n\
                 {PIPELINE}state: {{ backend: rocksdb, path: state, checkpoint_interval: 2s }}\n\
                 sink: {{ kafka: {{ topic: results }} }}\n\
                 late_output: {{ file: late.jsonl }}\ndead_letter: {{ kafka: {{ topic: dead }} }}\n\
                 log: {{ level: info }}\nparallelism: {parallelism}\n"
            ),
        )
        .unwrap();
        path
    };

    // The input arrives while the runs are killed and restarted (a restart
    // waits ~6 s for the killed member's session to expire), so each run
    // finds a backlog, writes results from it and is killed before its next
    // checkpoint: the following run reads those results back.
    let feed = {
        let brokers = brokers.clone();
        let events = events.clone();
        let pause = Duration::from_millis(120 * kills as u64);
        std::thread::spawn(move || {
            for chunk in events.chunks(events.len() / 60 + 1) {
                produce(&brokers, "events", chunk);
                std::thread::sleep(pause);
            }
        })
    };
    let mut next = xorshift(0x5eed_cafe);
    let mut resumed = 0;
    let mut logs = String::new();
    for kill in 0..kills {
        let log = dir.path().join(format!("run-{kill}.log"));
        let mut run = KillOnDrop(Some(
            Command::new(env!("CARGO_BIN_EXE_sluice"))
                .args(["run", "--config"])
                .arg(config(false, 1 + kill % 2))
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap(),
        ));
        // Killed at a random moment once it owns partitions (a restart
        // waits for the killed member's session to expire first).
        let deadline = Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(&log)
            .unwrap()
            .contains("partitions assigned")
        {
            assert!(
                Instant::now() < deadline,
                "run {kill} got no partitions in 30 s\n{logs}--- run {kill}\n{}",
                std::fs::read_to_string(&log).unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100 + next() % 1_800));
        let mut child = run.0.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        resumed += usize::from(text.contains("resuming from the checkpoint's offsets"));
        logs.push_str(&format!("--- run {kill}\n{text}"));
    }
    feed.join().unwrap();
    let out = sluice_within(&config(true, 2), Duration::from_secs(120));
    let last = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{logs}--- last run\n{last}");
    resumed += usize::from(last.contains("resuming from the checkpoint's offsets"));
    let read_back = format!("{logs}{last}")
        .matches("the replay will not produce them")
        .count();
    eprintln!(
        "{resumed} of {} runs resumed from a checkpoint; {read_back} read-backs",
        kills + 1
    );
    assert!(
        read_back >= 1,
        "no run read back records written after its checkpoint\n{logs}--- last run\n{last}"
    );
    assert!(
        resumed >= kills / 2,
        "only {resumed} of {kills} restarts resumed from a checkpoint\n{logs}--- last run\n{last}"
    );

    let mut seen = std::collections::HashMap::new();
    for (value, _) in consume_all(&brokers, "results") {
        *seen.entry(value).or_insert(0) += 1;
    }
    let twice: Vec<&String> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(v, _)| v)
        .collect();
    assert!(twice.is_empty(), "written more than once: {twice:?}");
    let mut results: Vec<String> = seen.into_keys().collect();
    results.sort();
    assert_eq!(
        results,
        sorted_lines(&file_results),
        "{logs}--- last run\n{last}"
    );
    let dead = consume_all(&brokers, "dead");
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("late.jsonl")).unwrap(),
        ""
    );
}

/// A sink whose producer queue holds only a few records: consumption is
/// paused while it is backlogged and resumed once drained, and the result
/// topic still ends with exactly the file run's results.
///
/// The run checks for a backlog between polls, not once every message is
/// through (it then flushes), so results must come while much of the input
/// is still to be read. Two things make that certain rather than likely:
/// - a count trigger: results come from the first events on, whichever
///   partition the consumer serves first (with the default trigger, no
///   window fires before every partition has been read past it, so the
///   results could all come from the last partition read);
/// - about twice as many events as the poll loop holds polled but not yet
///   applied (16 batches of 256, see `decode_ahead.rs`): a drain (the
///   idleness check every 50 ms, for one) applies all it holds, and when
///   that is the rest of the input the run goes to its end without
///   checking again.
///
/// Each service's events sit in one partition, in the file's order, so the
/// count trigger's firings are those of the file run.
#[test]
fn a_backlogged_sink_pauses_consumption_and_loses_nothing() {
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("events", 3, 1).expect("topic");
    cluster.create_topic("results", 1, 1).expect("topic");
    let brokers = cluster.bootstrap_servers();
    let events = events_of(9_000);
    produce(&brokers, "events", &events);
    let dir = tempfile::tempdir().unwrap();
    let pipeline =
        format!("{PIPELINE}trigger: {{ plugin: builtin/count, config: {{ every_events: 20 }} }}\n");
    let file_results = file_run_of(dir.path(), &pipeline, &events);
    let config = dir.path().join("slow.yaml");
    std::fs::write(
        &config,
        format!(
            "source: {{ kafka: {{ brokers: \"{brokers}\", topics: [events], group: slow, \
             stop_at_end: true, idle_timeout: 1m }} }}\n\
             {pipeline}sink: {{ kafka: {{ topic: results, properties: \
             {{ queue.buffering.max.messages: \"2\", linger.ms: \"20\" }} }} }}\n\
             late_output: {{ file: late.jsonl }}\ndead_letter: {{ file: dead.jsonl }}\n\
             log: {{ level: info }}\n"
        ),
    )
    .unwrap();
    let out = sluice_within(&config, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("consumption was paused"),
        "the sink never held the consumer back:\n{stderr}"
    );
    let mut results: Vec<String> = consume_all(&brokers, "results")
        .into_iter()
        .map(|(v, _)| v)
        .collect();
    results.sort();
    assert_eq!(results, sorted_lines(&file_results), "{stderr}");
    eprintln!(
        "{}",
        stderr
            .lines()
            .find(|l| l.contains("consumption was paused"))
            .unwrap_or_default()
    );
}
