//! The Kafka rows of the benchmarks (issue 3): `cargo bench -p sluice --bench kafka_bench`.
//!
//! 1. **Consume and aggregate vs a raw consume loop**: the same events in the
//!    same topic, read once by a bare rdkafka consumer loop (poll, borrow the
//!    payload, nothing else) and once by `sluice run` (a bounded Kafka source,
//!    tumbling 10 s windows, `stats` + `percentiles`, results produced to a
//!    topic). Both are timed from the moment the group assigned them
//!    partitions to the moment they had everything (the raw loop) or exited
//!    (sluice: that includes firing every window, flushing the results and
//!    committing), so the group join, the same for both, is left out.
//! 2. **Event-to-result latency**: events produced live with the wall clock
//!    as event time, through a running `sluice` (tumbling 1 s windows, no
//!    out-of-orderness allowance), read back from the result topic: per
//!    result, the time it arrived minus its window's end, which is when the
//!    first event that closes the window was produced. Broker round trips
//!    (sluice's fetch, its produce, the reader's fetch) are included.
//!
//! The broker is librdkafka's mock cluster, in this process, as in
//! `brokers: embedded`: it keeps at most 5 MiB per partition, so the event
//! count stays small (150k events over 8 partitions, ~2.6 MiB each).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The same allocator as the `sluice` binary, unprefixed too, so that the
/// raw loops' librdkafka (and the broker) allocate as sluice's does.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const PARTITIONS: i32 = 8;

/// The event mapping and aggregations of both pipelines: `stats` (moments)
/// and `percentiles` of `latency_ms` per service, as in the file benchmarks.
const AGGREGATIONS: &str = "\
event: { key: [service], time: { field: ts, format: epoch_millis } }
aggregations:
  - { name: latency, plugin: builtin/stats, field: latency_ms, config: { quantiles: [] } }
  - { name: pct, plugin: builtin/percentiles, field: latency_ms, config: { quantiles: [0.5, 0.95, 0.99] } }
";
const SERVICES: u64 = 10;

fn main() -> Result<()> {
    let mut events: u64 = 150_000;
    let mut rounds: usize = 5;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--events" => {
                events = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .context("--events needs a number")?;
            }
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .context("--rounds needs a number")?;
            }
            // cargo bench passes --bench.
            "--bench" => {}
            other => bail!("unknown argument {other:?} (use --events N, --rounds N)"),
        }
    }
    let cluster = MockCluster::new(1).context("starting the mock cluster")?;
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir()?;

    println!("| bench | case | result | ratio / target |");
    println!("|---|---|---|---|");
    throughput(&cluster, &brokers, dir.path(), events, rounds.max(1))?;
    latency(&cluster, &brokers, dir.path())?;
    Ok(())
}

/// One event line as the examples write them.
fn event(i: u64, ts: i64) -> String {
    let svc = i % SERVICES;
    let latency = 50.0 + ((i * 7919) % 4000) as f64 / 2.0;
    format!(
        r#"{{"ts":{ts},"service":"svc-{svc}","model":"m-{}","latency_ms":{latency},"tokens":{},"error":{}}}"#,
        i % 3,
        100 + i % 900,
        i.is_multiple_of(23)
    )
}

/// Wall-clock time in epoch milliseconds.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn producer(brokers: &str) -> Result<ThreadedProducer<DefaultProducerContext>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()?)
}

fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    partition: i32,
    line: &str,
) -> Result<()> {
    let mut record = BaseRecord::<str, str>::to(topic)
        .partition(partition)
        .payload(line);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((e, back)) if e.to_string().contains("Queue full") => {
                record = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

fn write_config(dir: &Path, name: &str, body: &str) -> Result<PathBuf> {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, body)?;
    Ok(path)
}

/// Row 1: sluice's consume-and-aggregate rate against a raw consume loop.
fn throughput(
    cluster: &MockCluster<'_, DefaultProducerContext>,
    brokers: &str,
    dir: &Path,
    n: u64,
    rounds: usize,
) -> Result<()> {
    cluster.create_topic("events", PARTITIONS, 1)?;
    cluster.create_topic("results", 1, 1)?;
    let p = producer(brokers)?;
    let base: i64 = 1_700_000_000_000;
    for i in 0..n {
        // A key's events stay in one partition, as a keyed producer puts them.
        let partition = (i % SERVICES) as i32 % PARTITIONS;
        send(&p, "events", partition, &event(i, base + i as i64))?;
    }
    p.flush(Duration::from_secs(60))?;

    // Rounds, each a raw loop then a sluice run in groups of their own, so
    // that medians (and the spread) stand for the noise of a shared machine.
    let mut raws = Vec::new();
    let mut batch_raws = Vec::new();
    let mut runs = Vec::new();
    let mut config = PathBuf::new();
    for round in 0..rounds {
        raws.push(raw_loop(brokers, &format!("raw-{round}"), n)?);
        batch_raws.push(raw_batch_loop(brokers, &format!("raw-batch-{round}"), n)?);
        config = write_config(
            dir,
            "throughput",
            &format!(
                "source: {{ kafka: {{ brokers: \"{brokers}\", topics: [events], group: sluice-{round}, stop_at_end: true, properties: {{ {props} }} }} }}\n\
                 {AGGREGATIONS}\
                 watermark: {{ max_out_of_orderness: 1s }}\n\
                 window: {{ tumbling: {{ size: 10s }} }}\n\
                 sink: {{ kafka: {{ topic: results }} }}\n\
                 log: {{ level: info }}\n",
                props = std::env::var("SLUICE_BENCH_PROPS").unwrap_or_default()
            ),
        )?;
        let timed = timed_sluice(&config)?;
        if timed.events != n {
            bail!("sluice read {} events, {n} were produced", timed.events);
        }
        if std::env::var_os("SLUICE_BENCH_ROUNDS").is_some() {
            let raw = raws.last().map_or(Duration::ZERO, |r| r.0);
            eprintln!(
                "round {round}: raw {:.3} s, sluice {:.3} s ({:.2}x), sluice CPU by thread {:?}",
                raw.as_secs_f64(),
                timed.to_end.as_secs_f64(),
                timed.to_end.as_secs_f64() / raw.as_secs_f64().max(1e-9),
                timed.threads
            );
        }
        runs.push(timed);
    }
    let ratios: Vec<f64> = raws
        .iter()
        .zip(&runs)
        .map(|(r, t)| t.to_end.as_secs_f64() / r.0.as_secs_f64().max(1e-9))
        .collect();
    let (low, high) = ratios
        .iter()
        .fold((f64::MAX, 0.0f64), |(l, h), &r| (l.min(r), h.max(r)));
    // Each round's sluice run against the raw loop just before it: pairs
    // taken at the same moment, so the machine's load moves both.
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    let paired = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
    let raw_cpu = median(raws.iter().map(|r| r.1).collect());
    let raw = median(raws.iter().map(|r| r.0).collect());
    let batch_raw = median(batch_raws.iter().map(|r| r.0).collect());
    let batch_raw_cpu = median(batch_raws.iter().map(|r| r.1).collect());
    let timed = Timed {
        to_end: median(runs.iter().map(|t| t.to_end).collect()),
        to_exit: median(runs.iter().map(|t| t.to_exit).collect()),
        to_first: median(runs.iter().map(|t| t.to_first).collect()),
        events: n,
        broker_cpu: median(runs.iter().map(|t| t.broker_cpu).collect()),
        sluice_cpu: median(runs.iter().map(|t| t.sluice_cpu).collect()),
        threads: std::array::from_fn(|g| median(runs.iter().map(|t| t.threads[g]).collect())),
    };

    // The same events and pipeline from a file: what the source costs.
    let file = dir.join("events.jsonl");
    let lines: String = (0..n).map(|i| event(i, base + i as i64) + "\n").collect();
    std::fs::write(&file, lines)?;
    let text = std::fs::read_to_string(&config)?;
    let source_line = text.lines().next().unwrap_or_default();
    let file_config = write_config(
        dir,
        "file",
        &text
            .replace(
                source_line,
                &format!("source: {{ file: {} }}", file.display()),
            )
            .replace(
                "sink: { kafka: { topic: results } }",
                "sink: { file: results.jsonl }",
            ),
    )?;
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--config"])
        .arg(&file_config)
        .stdout(Stdio::null())
        .output()?;
    let file_secs = start.elapsed();
    if !out.status.success() {
        bail!("file run failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    let rate = |d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
    let secs = |d: Duration| d.as_secs_f64();
    println!(
        "| kafka 1 | {n} events, {PARTITIONS} partitions, raw rdkafka consume loop | {:.0}k/s ({:.2} s from its first message) | baseline |",
        rate(raw) / 1e3,
        secs(raw)
    );
    println!(
        "| kafka 1 | same topic, `sluice run` (tumbling 10 s, stats + percentiles, results to a topic), to the end offsets | {:.0}k/s ({:.2} s from its first message, {:.2} s after the assignment) | {:.2}x the raw loop's time (target <= 1.3x); per round {low:.2}-{high:.2}x, median {paired:.2}x |",
        rate(timed.to_end) / 1e3,
        secs(timed.to_end),
        secs(timed.to_first),
        secs(timed.to_end) / secs(raw).max(1e-9)
    );
    println!(
        "| kafka 1 | same topic, raw loop reading in batches of 256 (`rd_kafka_consume_batch_queue`, partitions assigned by hand: no group to serve), as sluice reads | {:.0}k/s ({:.2} s from its first message; {:.2} core-s) | sluice's time to the end offsets is {:.2}x this |",
        rate(batch_raw) / 1e3,
        secs(batch_raw),
        secs(batch_raw_cpu),
        secs(timed.to_end) / secs(batch_raw).max(1e-9)
    );
    println!(
        "| kafka 1 | the same run, to its exit (fire all, flush, commit, leave the group) | {:.2} s from its first message | {:.2}x the raw loop's time |",
        secs(timed.to_exit),
        secs(timed.to_exit) / secs(raw).max(1e-9)
    );
    println!(
        "| kafka 1 | the same events from a file, whole `sluice run` (start-up and exit included) | {:.0}k/s ({:.2} s) | the Kafka run to the end offsets takes {:.2}x this |",
        rate(file_secs) / 1e3,
        secs(file_secs),
        secs(timed.to_end) / secs(file_secs).max(1e-9)
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let busy = |cpu: Duration, wall: Duration| secs(cpu) / secs(wall).max(1e-9);
    let sluice_total = timed.broker_cpu + timed.sluice_cpu;
    let split: Vec<String> = GROUPS
        .iter()
        .zip(timed.threads)
        .map(|(name, cpu)| format!("{name} {:.2}", secs(cpu)))
        .collect();
    println!(
        "| kafka 1 | CPU time over the same spans (raw: broker and consumer in this process; sluice: broker here, sluice in its own; medians, so the parts need not add up) | raw {:.2} core-s ({:.1} of {cores} cores busy); sluice run {:.2} core-s: broker {:.2}, sluice {:.2} ({}; {:.1} cores busy) | with every core busy, this CPU alone bounds sluice's time at {:.2}x the raw loop's |",
        secs(raw_cpu),
        busy(raw_cpu, raw),
        secs(sluice_total),
        secs(timed.broker_cpu),
        secs(timed.sluice_cpu),
        split.join(", "),
        busy(sluice_total, timed.to_end),
        secs(sluice_total) / cores / secs(raw).max(1e-9)
    );
    Ok(())
}

/// User plus system CPU time of a process (`self` or a pid) so far, all of
/// its threads, from `/proc` (zero where it cannot be read). Resolution:
/// one clock tick (10 ms).
fn cpu_time(pid: &str) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // The command name (field 2) may hold spaces; fields after it are plain.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after the name.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    Duration::from_millis(ticks * 10)
}

/// The median of `values` (the upper one of an even count).
fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// A bare consumer loop in group `group` over the `n` events: the time from
/// its first message to its last, and the CPU this process spent meanwhile
/// (the broker's and the consumer's).
fn raw_loop(brokers: &str, group: &str, n: u64) -> Result<(Duration, Duration)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&["events"])?;
    let mut read = 0u64;
    let mut bytes = 0usize;
    let mut first: Option<(Instant, Duration)> = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while read < n {
        if Instant::now() > deadline {
            bail!("the raw loop read {read} of {n} events in 120 s");
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                first.get_or_insert_with(|| (Instant::now(), cpu_time("self")));
                bytes += m.payload().map_or(0, <[u8]>::len);
                read += 1;
            }
            Some(Err(e)) => bail!("raw consume: {e}"),
            None => {}
        }
    }
    std::hint::black_box(bytes);
    consumer.unsubscribe();
    let (at, cpu) = first.unwrap_or((Instant::now(), Duration::ZERO));
    Ok((at.elapsed(), cpu_time("self").saturating_sub(cpu)))
}

/// The plainest fast consumer of the same events: every partition assigned
/// by hand from the beginning (no group, so no rebalance to serve), read
/// from the consumer's queue in batches of up to 256 as sluice reads them,
/// each payload's length summed. Time and CPU as for [`raw_loop`].
fn raw_batch_loop(brokers: &str, group: &str, n: u64) -> Result<(Duration, Duration)> {
    use rdkafka::bindings as rdsys;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset("events", p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    // SAFETY: a live consumer's handle; the queue is destroyed below,
    // before the consumer.
    let queue = unsafe { rdsys::rd_kafka_queue_get_consumer(consumer.client().native_ptr()) };
    if queue.is_null() {
        bail!("the consumer has no queue");
    }
    let mut batch = vec![std::ptr::null_mut(); 256];
    let mut read = 0u64;
    let mut bytes = 0usize;
    let mut first: Option<(Instant, Duration)> = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut failed = None;
    while read < n && failed.is_none() && Instant::now() < deadline {
        // A batch read waits for all it asks for: wait for one, then take
        // what is there.
        let mut got = 0;
        for (wait, max) in [(100, 1), (0, batch.len() - 1)] {
            // SAFETY: `batch` has room for `max` messages from `got` on.
            let taken = unsafe {
                rdsys::rd_kafka_consume_batch_queue(queue, wait, batch[got..].as_mut_ptr(), max)
            };
            got += usize::try_from(taken).unwrap_or(0);
            if got == 0 {
                break;
            }
        }
        if got > 0 {
            first.get_or_insert_with(|| (Instant::now(), cpu_time("self")));
        }
        for &m in &batch[..got] {
            // SAFETY: messages librdkafka handed over, each destroyed once.
            unsafe {
                if (*m).err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                    failed = Some((*m).err);
                } else {
                    bytes += (*m).len;
                    read += 1;
                }
                rdsys::rd_kafka_message_destroy(m);
            }
        }
    }
    // SAFETY: the queue handle's last use.
    unsafe { rdsys::rd_kafka_queue_destroy(queue) };
    std::hint::black_box(bytes);
    if let Some(err) = failed {
        bail!("raw batch consume: {err:?}");
    }
    if read < n {
        bail!("the raw batch loop read {read} of {n} events in 120 s");
    }
    let (at, cpu) = first.unwrap_or((Instant::now(), Duration::ZERO));
    Ok((at.elapsed(), cpu_time("self").saturating_sub(cpu)))
}

/// What [`timed_sluice`] measured.
struct Timed {
    /// From the first message after the assignment (as the raw loop is
    /// timed) to the "end offsets reached" log line: every event consumed
    /// and aggregated.
    to_end: Duration,
    /// From the first message to the exit: also fires every window, flushes
    /// the results, commits and leaves the group.
    to_exit: Duration,
    /// From the assignment to the first message (offset lookups and the
    /// first fetch), left out of both.
    to_first: Duration,
    events: u64,
    /// CPU time over `to_end`: this process's (the broker's) and sluice's,
    /// the latter split into its main thread and librdkafka's threads.
    broker_cpu: Duration,
    sluice_cpu: Duration,
    /// Sluice's CPU time per [`GROUPS`] entry.
    threads: [Duration; 5],
}

/// The thread groups whose CPU time the bench reports, by what their
/// threads are named: the main thread (the poll loop and the pipeline),
/// the decoder, librdkafka's threads (consumer and producers), the
/// producers' polling threads, and the rest (plugin epoch ticker, metrics).
const GROUPS: [&str; 5] = [
    "main thread",
    "decoder",
    "librdkafka",
    "producer polls",
    "other",
];

/// CPU time of a process's threads so far, per [`GROUPS`] entry.
fn thread_cpu(pid: &str) -> [Duration; 5] {
    let mut groups = [Duration::ZERO; 5];
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return groups;
    };
    for task in tasks.flatten() {
        let tid = task.file_name().to_string_lossy().into_owned();
        let comm =
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).unwrap_or_default();
        let group = if tid == pid {
            0
        } else if comm.starts_with("sluice-decode") {
            1
        } else if comm.starts_with("rdk:") {
            2
        } else if comm.starts_with("producer poll") {
            3
        } else {
            4
        };
        groups[group] += cpu_time(&format!("{pid}/task/{tid}"));
    }
    groups
}

/// Runs `sluice run` on a bounded Kafka config and times it.
fn timed_sluice(config: &Path) -> Result<Timed> {
    // SLUICE_BENCH_WRAP="perf record -g -o FILE --" (for example) runs
    // sluice under a profiler.
    let wrap = std::env::var("SLUICE_BENCH_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    let mut command = match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(env!("CARGO_BIN_EXE_sluice"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_sluice")),
    };
    let mut child = command
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().context("no stderr")?;
    let pid = child.id().to_string();
    let mut assigned: Option<Instant> = None;
    let mut first: Option<Instant> = None;
    let mut at_end: Option<Instant> = None;
    let (mut broker_cpu, mut sluice_cpu) = (Duration::ZERO, Duration::ZERO);
    let mut threads = [Duration::ZERO; 5];
    let mut summary = String::new();
    for line in std::io::BufReader::new(stderr).lines() {
        let line = line?;
        if assigned.is_none() && line.contains("partitions assigned") {
            assigned = Some(Instant::now());
        }
        if first.is_none() && line.contains("first message") {
            first = Some(Instant::now());
            broker_cpu = cpu_time("self");
            sluice_cpu = cpu_time(&pid);
            threads = thread_cpu(&pid);
        }
        if at_end.is_none() && line.contains("end offsets reached") {
            at_end = Some(Instant::now());
            broker_cpu = cpu_time("self").saturating_sub(broker_cpu);
            sluice_cpu = cpu_time(&pid).saturating_sub(sluice_cpu);
            for (at_first, now) in threads.iter_mut().zip(thread_cpu(&pid)) {
                *at_first = now.saturating_sub(*at_first);
            }
        }
        summary.push_str(&line);
        summary.push('\n');
    }
    let status = child.wait()?;
    let exited = Instant::now();
    if std::env::var_os("SLUICE_BENCH_WRAP").is_some() {
        eprintln!("{summary}");
    }
    if !status.success() {
        bail!("sluice failed:\n{summary}");
    }
    let assigned =
        assigned.with_context(|| format!("sluice never logged an assignment:\n{summary}"))?;
    let first =
        first.with_context(|| format!("sluice never logged its first message:\n{summary}"))?;
    let events = summary
        .split_whitespace()
        .zip(summary.split_whitespace().skip(1))
        .find_map(|(n, word)| (word == "events").then(|| n.parse().ok()).flatten())
        .with_context(|| format!("no event count in:\n{summary}"))?;
    let at_end =
        at_end.with_context(|| format!("sluice never reached the end offsets:\n{summary}"))?;
    Ok(Timed {
        to_end: at_end - first,
        to_exit: exited - first,
        to_first: first - assigned,
        events,
        broker_cpu,
        sluice_cpu,
        threads,
    })
}

/// Row 2: event-to-result latency through a running sluice.
fn latency(
    cluster: &MockCluster<'_, DefaultProducerContext>,
    brokers: &str,
    dir: &Path,
) -> Result<()> {
    cluster.create_topic("live", PARTITIONS, 1)?;
    cluster.create_topic("live-results", 1, 1)?;
    let config = write_config(
        dir,
        "latency",
        &format!(
            "source: {{ kafka: {{ brokers: \"{brokers}\", topics: [live], group: live, \
             properties: {{ fetch.wait.max.ms: \"5\" }} }} }}\n\
             {AGGREGATIONS}\
             watermark: {{ max_out_of_orderness: 0s }}\n\
             window: {{ tumbling: {{ size: 1s }} }}\n\
             sink: {{ kafka: {{ topic: live-results, properties: {{ linger.ms: \"0\" }} }} }}\n\
             log: {{ level: info }}\n"
        ),
    )?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;

    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "latency-reader")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "5")
        .create()?;
    reader.subscribe(&["live-results"])?;

    // ~20k events/s spread over every partition, event time = wall clock.
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let stop = Arc::clone(&stop);
        let p = producer(brokers)?;
        std::thread::spawn(move || -> Result<()> {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let now = now_ms();
                for _ in 0..100 {
                    send(&p, "live", (i % PARTITIONS as u64) as i32, &event(i, now))?;
                    i += 1;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            p.flush(Duration::from_secs(10))?;
            Ok(())
        })
    };

    // Results of windows that ended while the run was warm: skip the first
    // seconds (group join, plugin compilation), then collect for 15 s.
    let warm = now_ms() + 8_000;
    let until = Instant::now() + Duration::from_secs(25);
    let mut lags: Vec<i64> = Vec::new();
    while Instant::now() < until {
        let Some(message) = reader.poll(Duration::from_millis(20)) else {
            continue;
        };
        let arrived = now_ms();
        let message = message?;
        let value: serde_json::Value =
            serde_json::from_slice(message.payload().unwrap_or_default())?;
        let end = value["window"]["end"]
            .as_i64()
            .context("result without window end")?;
        if end >= warm {
            lags.push(arrived - end);
        }
    }
    stop.store(true, Ordering::Relaxed);
    feeder
        .join()
        .map_err(|_| anyhow::anyhow!("the feeder panicked"))??;
    let _ = child.kill();
    let _ = child.wait();
    reader.unsubscribe();
    if lags.is_empty() {
        bail!("no result arrived for a window after warm-up");
    }
    lags.sort_unstable();
    let pick = |q: f64| lags[((lags.len() - 1) as f64 * q).round() as usize];
    println!(
        "| kafka 2 | event-to-result, tumbling 1 s, ~20k events/s over {PARTITIONS} partitions | p50 {} ms / p99 {} ms / max {} ms over {} results | includes three broker round trips (sluice's fetch and produce, the reader's fetch) |",
        pick(0.5),
        pick(0.99),
        lags[lags.len() - 1],
        lags.len()
    );
    Ok(())
}
