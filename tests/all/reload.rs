//! The plugin runtime across restarts and versions, through the real
//! `sluice` binary: the compile cache (filled by the first run, used by the
//! next, a damaged entry compiled again rather than loaded) and hot reload
//! (a new plugin version swapped in under a running stream, with every
//! window's count checked, and a broken version refused while the old one
//! keeps serving).
//!
//! The second version is `tests/plugins/count-v2`
//! (`sluice_test_plugins::COUNT_V2`): `builtin/count` with an extra output
//! `generation` = 2, so each result shows which version finished it. The
//! third, `count-format2`, keeps another state format (and says generation
//! 3): it runs beside version 2, which finishes the windows open at the swap.
//! `count-bad-merge` (breaks the merge laws) is a version a reload must refuse.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use crate::common::sluice;
use sluice_wasm::registry::builtin_bytes;

/// How long to wait for the host to react (generous: the tests share two
/// cores with builds).
const WAIT: Duration = Duration::from_secs(60);

fn cache_entries(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
                .collect()
        })
        .unwrap_or_default();
    entries.sort();
    entries
}

/// Runs a small pipeline over a file with `cache` as its compile cache;
/// returns (stderr, results).
fn run_with_cache(dir: &Path, cache: &Path) -> (String, String) {
    let events: String = (0..200)
        .map(|i| {
            format!(
                "{{\"ts\":{},\"service\":\"s{}\",\"latency_ms\":{}}}\n",
                i * 50,
                i % 3,
                i % 17
            )
        })
        .collect();
    std::fs::write(dir.join("events.jsonl"), events).expect("write events");
    std::fs::write(
        dir.join("pipeline.yaml"),
        format!(
            "source: {{ file: events.jsonl }}\n\
             event: {{ key: [service], time: {{ field: ts, format: epoch_millis }} }}\n\
             window: {{ tumbling: {{ size: 1s }} }}\n\
             aggregations:\n\
             \x20 - {{ name: n, plugin: builtin/count }}\n\
             \x20 - {{ name: latency, plugin: builtin/stats, field: latency_ms }}\n\
             sink: {{ file: results.jsonl }}\n\
             plugin_cache: {}\n\
             log: {{ level: debug }}\n",
            cache.display()
        ),
    )
    .expect("write config");
    let out = sluice()
        .args(["run", "--config"])
        .arg(dir.join("pipeline.yaml"))
        .output()
        .expect("run sluice");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "run failed: {stderr}");
    let results = std::fs::read_to_string(dir.join("results.jsonl")).expect("results");
    (stderr, results)
}

#[test]
fn compile_cache_is_filled_then_used_and_a_damaged_entry_is_compiled_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");

    // First run: nothing cached, the two aggregations' plugins and the
    // default trigger (`builtin/event-time`) compiled and stored.
    let (stderr, first) = run_with_cache(dir.path(), &cache);
    assert_eq!(
        stderr
            .matches("compile cache miss: compiled and stored")
            .count(),
        3,
        "{stderr}"
    );
    let entries = cache_entries(&cache);
    assert_eq!(entries.len(), 3, "one entry per plugin: {entries:?}");

    // Second run: all loaded from the cache, same results.
    let (stderr, second) = run_with_cache(dir.path(), &cache);
    assert_eq!(
        stderr.matches("compile cache hit: loaded").count(),
        3,
        "{stderr}"
    );
    assert!(!stderr.contains("compiled and stored"), "{stderr}");
    assert_eq!(first, second);

    // Damage: one entry gets a flipped byte in its code, another is cut
    // short. Both are detected, compiled again and replaced, never loaded.
    let mut bytes = std::fs::read(&entries[0]).expect("entry");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&entries[0], &bytes).expect("damage");
    let bytes = std::fs::read(&entries[1]).expect("entry");
    std::fs::write(&entries[1], &bytes[..bytes.len() - 100]).expect("truncate");
    let (stderr, third) = run_with_cache(dir.path(), &cache);
    assert!(stderr.contains("checksum mismatch"), "{stderr}");
    assert!(stderr.contains("truncated"), "{stderr}");
    assert_eq!(
        stderr.matches("damaged entry").count(),
        2,
        "both compiled again: {stderr}"
    );
    assert_eq!(first, third);

    // The replaced entries are sound again.
    let (stderr, _) = run_with_cache(dir.path(), &cache);
    assert_eq!(
        stderr.matches("compile cache hit: loaded").count(),
        3,
        "{stderr}"
    );

    // `plugin inspect` says where the code came from; `off` compiles.
    let inspect = |setting: &str| {
        let out = sluice()
            .args(["plugin", "inspect", "builtin/count"])
            .env("SLUICE_PLUGIN_CACHE", setting)
            .output()
            .expect("inspect");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let cache_text = cache.display().to_string();
    assert!(inspect(&cache_text).contains("compile cache: hit: loaded"));
    assert!(inspect("off").contains("compile cache: off (compiled)"));
}

/// Lines of the host's stderr, as they come, with all of them kept.
struct Log {
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Log {
    fn new(child: &mut Child) -> Self {
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing every one of `parts`; returns it.
    fn wait_for(&mut self, parts: &[&str]) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if parts.iter().all(|p| line.contains(p)) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line with {parts:?} within {WAIT:?}; the log so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn rest(&mut self) -> String {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }
}

/// Writes `count` events of each of `keys` into the one-second window starting
/// at `second`, from `from` ms into it, 100 ms apart; tallies them.
fn send(
    stdin: &mut impl Write,
    keys: &[&str],
    tally: &mut BTreeMap<(String, i64), u64>,
    second: i64,
    from: i64,
    count: i64,
) -> String {
    let text = window_events(keys, tally, second, from, count);
    stdin.write_all(text.as_bytes()).expect("write events");
    stdin.flush().expect("flush events");
    text
}

/// The lines [`send`] writes.
fn window_events(
    keys: &[&str],
    tally: &mut BTreeMap<(String, i64), u64>,
    second: i64,
    from: i64,
    count: i64,
) -> String {
    let mut text = String::new();
    for i in 0..count {
        for key in keys {
            let ts = second * 1000 + from + i * 100;
            text.push_str(&format!("{{\"ts\":{ts},\"service\":\"{key}\",\"x\":1}}\n"));
            *tally.entry((key.to_string(), second * 1000)).or_default() += 1;
        }
    }
    text
}

/// Replaces `path` the way a deploy should: a new file renamed over it.
fn replace_file(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).expect("write new version");
    std::fs::rename(&tmp, path).expect("rename new version into place");
}

/// `POST /admin/reload`; returns status code and body.
fn admin_reload(port: u16) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to admin");
    stream
        .write_all(
            b"POST /admin/reload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// Windows whose `results.jsonl` line has been written, by (key, start).
fn results(path: &Path) -> BTreeMap<(String, i64), serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|r| {
            let key = r["key"]["service"].as_str().unwrap_or_default().to_string();
            let start = r["window"]["start"].as_i64().unwrap_or_default();
            ((key, start), r)
        })
        .collect()
}

fn wait_for_window(path: &Path, key: &str, start: i64) {
    let deadline = Instant::now() + WAIT;
    while !results(path).contains_key(&(key.to_string(), start)) {
        assert!(
            Instant::now() < deadline,
            "window {key}@{start} not emitted within {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn hot_reload_on_stdin_swaps_a_version_and_refuses_a_broken_one() {
    reload_under_a_stream(r#"source: { file: "-" }"#, &["a", "b"]);
}

/// The same with window shards (`parallelism: 2`): keys `a` and `b` live
/// in different shards, and each shard's instance is swapped.
#[test]
fn hot_reload_swaps_the_version_of_every_window_shard() {
    reload_under_a_stream("source: { file: \"-\" }\nparallelism: 2", &["a", "b"]);
}

/// The same over Kafka: the embedded broker, fed from stdin while consumed.
/// One key, so one partition: with two, one partition's backlog can be read
/// ahead of the other's, and per-partition watermarks then make the other's
/// first windows late (as they should), which is not what this test is about.
#[test]
fn hot_reload_over_kafka_swaps_a_version_and_refuses_a_broken_one() {
    reload_under_a_stream(
        r#"source: { kafka: { brokers: embedded, topics: [events], feed: "-", idle_timeout: 200ms, commit_interval: 100ms } }"#,
        &["a"],
    );
}

/// Streams events into a pipeline with `source` (which reads stdin), swaps
/// its plugin file for version 2 mid-window, then for broken files, and
/// checks every window.
fn reload_under_a_stream(source: &str, keys: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).expect("plugins dir");
    let plugin = plugins.join("count.wasm");
    std::fs::write(&plugin, builtin_bytes("count").expect("builtin count")).expect("v1");
    let v2 = std::fs::read(sluice_test_plugins::COUNT_V2).expect("v2");
    let port = crate::common::free_port();
    let results_path = dir.path().join("results.jsonl");
    std::fs::write(
        dir.path().join("pipeline.yaml"),
        format!(
            "{source}\n\
             event: {{ key: [service], time: {{ field: ts, format: epoch_millis }} }}\n\
             watermark: {{ max_out_of_orderness: 0s }}\n\
             window: {{ tumbling: {{ size: 1s }} }}\n\
             aggregations:\n\
             \x20 - {{ name: n, plugin: plugins/count.wasm }}\n\
             \x20 - {{ name: control, plugin: builtin/count }}\n\
             sink: {{ file: results.jsonl }}\n\
             batch_size: 1\n\
             plugin_cache: cache\n\
             reload: {{ watch: true, admin: \"127.0.0.1:{port}\", law_cases: 20 }}\n"
        ),
    )
    .expect("config");
    // Run from the directory with a relative config path, as an operator
    // would: the watched directory is then `./plugins`.
    let mut child = sluice()
        .current_dir(dir.path())
        .args(["run", "--config", "pipeline.yaml"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sluice");
    let mut log = Log::new(&mut child);
    let mut stdin = child.stdin.take().expect("stdin piped");
    let mut tally = BTreeMap::new();
    let last = keys.last().expect("a key");
    // The watcher starts with the reloader, the admin endpoint after it.
    log.wait_for(&["watching"]);
    log.wait_for(&["admin endpoint"]);

    // Version 1 serves windows 0-4 and the first half of window 5.
    for second in 0..5 {
        send(&mut stdin, keys, &mut tally, second, 0, 10);
    }
    send(&mut stdin, keys, &mut tally, 5, 0, 5);
    wait_for_window(&results_path, last, 4000);

    // A new version in the watched directory: checked, then staged.
    replace_file(&plugin, &v2);
    log.wait_for(&["staged count 0.2.0"]);
    // An explicit reload now finds nothing new to do (the Kafka loop may
    // have swapped it in already: it does not wait for a message).
    let (status, body) = admin_reload(port);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("already staged") || body.contains("unchanged (count 0.2.0)"),
        "{body}"
    );

    // The next batch goes to version 2; window 5 moves to it half full.
    send(&mut stdin, keys, &mut tally, 5, 500, 5);
    log.wait_for(&[
        "reloaded `n`",
        "(count 0.2.0) is live",
        "open windows moved",
    ]);
    for second in 6..8 {
        send(&mut stdin, keys, &mut tally, second, 0, 10);
    }
    wait_for_window(&results_path, last, 6000);

    // A broken file is refused, by the watcher and by an admin request,
    // and version 2 keeps serving.
    replace_file(&plugin, b"\0asm this is not a component");
    log.wait_for(&["refused plugins/count.wasm", "count 0.2.0 keeps serving"]);
    let (status, body) = admin_reload(port);
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("not a valid WebAssembly component"), "{body}");
    assert!(body.contains("count 0.2.0 keeps serving"), "{body}");
    // So are another plugin in its place, a version with another state
    // format and one that breaks the laws (asked for with the CLI).
    let refused = |bytes: &[u8], why: &str| {
        replace_file(&plugin, bytes);
        let out = sluice()
            .args(["plugin", "reload", "--admin"])
            .arg(format!("127.0.0.1:{port}"))
            .output()
            .expect("sluice plugin reload");
        let body = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{body}");
        assert!(body.contains(why), "{why:?} in {body}");
        assert!(body.contains("count 0.2.0 keeps serving"), "{body}");
    };
    refused(
        builtin_bytes("sum").expect("builtin sum"),
        "it is plugin `sum`, not a new version of `count`",
    );
    refused(
        &std::fs::read(sluice_test_plugins::COUNT_BAD_MERGE).expect("bad merge"),
        "count 0.4.0 fails the law checker: FAIL merging parts equals aggregating the whole",
    );
    for second in 8..10 {
        send(&mut stdin, keys, &mut tally, second, 0, 10);
    }
    send(&mut stdin, keys, &mut tally, 10, 0, 5);
    wait_for_window(&results_path, last, 9000);

    // Another state format: window 10, half full, finishes on version 2;
    // windows from 11 on start on version 3.
    replace_file(
        &plugin,
        &std::fs::read(sluice_test_plugins::COUNT_FORMAT2).expect("format 2"),
    );
    log.wait_for(&["staged count 0.3.0", "finish on", "count 0.2.0"]);
    send(&mut stdin, keys, &mut tally, 10, 500, 5);
    log.wait_for(&[
        "reloaded `n`",
        "(count 0.3.0) is live for new windows",
        "finish on",
    ]);
    for second in 11..13 {
        send(&mut stdin, keys, &mut tally, second, 0, 10);
    }
    log.wait_for(&["count 0.2.0) retired"]);
    drop(stdin);
    let status = child.wait().expect("sluice exits");
    let log = log.rest();
    assert!(status.success(), "{log}");

    let events: u64 = tally.values().sum();
    assert!(
        log.contains(&format!("sluice: {events} events read")),
        "{log}"
    );
    let results = results(&results_path);
    assert_eq!(
        results.keys().collect::<Vec<_>>(),
        tally.keys().collect::<Vec<_>>(),
        "one result per window"
    );
    let mut counted = 0;
    for ((key, start), expected) in &tally {
        let r = &results[&(key.clone(), *start)];
        let n = r["results"]["n.count"].as_u64();
        assert_eq!(n, Some(*expected), "{key}@{start}: {r}");
        assert_eq!(
            r["results"]["control.count"].as_u64(),
            Some(*expected),
            "{r}"
        );
        counted += expected;
        let generation = r["results"].get("n.generation").and_then(|g| g.as_u64());
        let finished_by = match *start {
            ..5000 => None,
            5000..11000 => Some(2),
            _ => Some(3),
        };
        assert_eq!(generation, finished_by, "{r}");
    }
    assert_eq!(counted, events, "every event counted once");
}

/// A reload moves the open windows from a version of a plugin built against
/// interface 0.1 (`count-v2`, with an extra `generation` output) to one
/// built against 0.2 (the built-in `count`): same name, same state format,
/// so the half-full window carries on in the 0.2 instance and every count
/// is whole. (The stream test above reloads the other way, 0.2 to 0.1.)
#[test]
fn a_reload_moves_open_windows_from_a_0_1_version_to_a_0_2_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).expect("plugins dir");
    let plugin = plugins.join("count.wasm");
    let v01 = std::fs::read(sluice_test_plugins::COUNT_V2).expect("count-v2");
    std::fs::write(&plugin, &v01).expect("0.1 version");
    let results_path = dir.path().join("results.jsonl");
    std::fs::write(
        dir.path().join("pipeline.yaml"),
        "source: { file: \"-\" }\n\
         event: { key: [service], time: { field: ts, format: epoch_millis } }\n\
         watermark: { max_out_of_orderness: 0s }\n\
         window: { tumbling: { size: 1s } }\n\
         aggregations:\n\
         \x20 - { name: n, plugin: plugins/count.wasm }\n\
         sink: { file: results.jsonl }\n\
         batch_size: 1\n\
         plugin_cache: cache\n\
         reload: { watch: true, law_cases: 20 }\n",
    )
    .expect("config");
    let mut child = sluice()
        .current_dir(dir.path())
        .args(["run", "--config", "pipeline.yaml"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sluice");
    let mut log = Log::new(&mut child);
    let mut stdin = child.stdin.take().expect("stdin piped");
    let mut tally = BTreeMap::new();
    log.wait_for(&["watching"]);
    for second in 0..3 {
        send(&mut stdin, &["a"], &mut tally, second, 0, 10);
    }
    send(&mut stdin, &["a"], &mut tally, 3, 0, 5);
    wait_for_window(&results_path, "a", 2000);
    replace_file(&plugin, builtin_bytes("count").expect("builtin count"));
    log.wait_for(&["staged count 0.1.0"]);
    send(&mut stdin, &["a"], &mut tally, 3, 500, 5);
    log.wait_for(&[
        "reloaded `n`",
        "(count 0.1.0) is live",
        "open windows moved",
    ]);
    for second in 4..6 {
        send(&mut stdin, &["a"], &mut tally, second, 0, 10);
    }
    drop(stdin);
    let status = child.wait().expect("sluice exits");
    let log = log.rest();
    assert!(status.success(), "{log}");
    let results = results(&results_path);
    assert_eq!(results.len(), tally.len(), "one result per window");
    for ((key, start), expected) in &tally {
        let r = &results[&(key.clone(), *start)];
        assert_eq!(r["results"]["n.count"].as_u64(), Some(*expected), "{r}");
        // Windows 0-2 finished on the 0.1 version, the rest on 0.2.
        let generation = r["results"].get("n.generation").and_then(|g| g.as_u64());
        assert_eq!(generation, (*start < 3000).then_some(2), "{r}");
    }
}

/// A checkpoint taken while an older version retires keeps that version's
/// code: a later run, whose plugin file holds only the new version, still
/// finishes the retiring windows on the old one.
///
/// The first run reads a FIFO (a live stream, as stdin, but one a state
/// directory may follow) and swaps state formats mid-window; at the end of
/// its input it checkpoints before firing, so its last checkpoint holds a
/// retiring window. The second run carries on over a file that starts with
/// the same bytes.
#[test]
fn a_restart_finishes_the_windows_of_a_retiring_version_from_the_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).expect("plugins dir");
    let plugin = plugins.join("count.wasm");
    std::fs::write(
        &plugin,
        std::fs::read(sluice_test_plugins::COUNT_V2).expect("v2"),
    )
    .expect("v2");
    let config = |source: &str| {
        format!(
            "source: {{ file: \"{source}\" }}\n\
             event: {{ key: [service], time: {{ field: ts, format: epoch_millis }} }}\n\
             watermark: {{ max_out_of_orderness: 1s }}\n\
             window: {{ tumbling: {{ size: 1s }} }}\n\
             aggregations:\n\
             \x20 - {{ name: n, plugin: plugins/count.wasm }}\n\
             sink: {{ file: results.jsonl }}\n\
             batch_size: 1\n\
             plugin_cache: cache\n\
             state: {{ backend: rocksdb, path: state, checkpoint_interval: 1h }}\n\
             reload: {{ watch: true, law_cases: 20 }}\n\
             log: {{ level: debug }}\n"
        )
    };
    let fifo = dir.path().join("events.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    std::fs::write(dir.path().join("fifo.yaml"), config("events.fifo")).expect("config");
    std::fs::write(dir.path().join("file.yaml"), config("events.jsonl")).expect("config");
    let keys = &["a", "b"];
    let mut tally = BTreeMap::new();
    let mut input = String::new();

    let mut child = sluice()
        .current_dir(dir.path())
        .args(["run", "--config", "fifo.yaml"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sluice");
    let mut log = Log::new(&mut child);
    log.wait_for(&["watching"]);
    // Opening blocks until sluice opens the other end.
    let mut stdin = std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .expect("open the FIFO");
    for second in 0..2 {
        input += &send(&mut stdin, keys, &mut tally, second, 0, 10);
    }
    input += &send(&mut stdin, keys, &mut tally, 2, 0, 5);
    replace_file(
        &plugin,
        &std::fs::read(sluice_test_plugins::COUNT_FORMAT2).expect("format 2"),
    );
    log.wait_for(&["staged count 0.3.0"]);
    input += &send(&mut stdin, keys, &mut tally, 2, 500, 5);
    log.wait_for(&["(count 0.3.0) is live for new windows"]);
    // The swap asks for a checkpoint at once (the interval is an hour): the
    // last one names format 1, which the new file does not read.
    log.wait_for(&["checkpoint", "written"]);
    // Window 3 starts on the new version while window 2 (the watermark lags
    // by a second) is still open on the old one.
    input += &send(&mut stdin, keys, &mut tally, 3, 0, 5);
    drop(stdin);
    let status = child.wait().expect("sluice exits");
    let first = log.rest();
    assert!(status.success(), "{first}");

    // The last checkpoint holds window 2 in the retiring version, with its code.
    let out = sluice()
        .current_dir(dir.path())
        .args(["state", "inspect", "state"])
        .output()
        .expect("state inspect");
    let inspect = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{inspect}");
    assert!(
        inspect.contains("retiring: count 0.2.0 (state format 1")
            && inspect.contains("finishes 2 windows"),
        "{inspect}"
    );

    // The second run: the same bytes, then the rest of window 3 and window 4.
    input += &window_events(keys, &mut tally, 3, 500, 5);
    input += &window_events(keys, &mut tally, 4, 0, 10);
    std::fs::write(dir.path().join("events.jsonl"), &input).expect("input file");
    let out = sluice()
        .current_dir(dir.path())
        .args(["run", "--config", "file.yaml"])
        .output()
        .expect("second run");
    let second = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{second}");
    assert!(
        second.contains("count 0.2.0) restored from the checkpoint to finish the windows it holds"),
        "{second}"
    );
    assert!(second.contains("count 0.2.0) retired"), "{second}");

    let results = results(&dir.path().join("results.jsonl"));
    assert_eq!(
        results.keys().collect::<Vec<_>>(),
        tally.keys().collect::<Vec<_>>(),
        "one result per window"
    );
    for ((key, start), expected) in &tally {
        let r = &results[&(key.clone(), *start)];
        assert_eq!(r["results"]["n.count"].as_u64(), Some(*expected), "{r}");
        let generation = if *start <= 2000 { 2 } else { 3 };
        assert_eq!(
            r["results"]["n.generation"].as_u64(),
            Some(generation),
            "{r}"
        );
    }
}

/// Two versions side by side in the window operator, without the binary:
/// every shape, with the swap to another state format at several points
/// and a checkpoint taken and restored while the old version retires.
mod side_by_side {
    use std::sync::Arc;

    use sluice_core::plugin::grouped::{GroupedAggregation, PerWindow};
    use sluice_core::state::{
        LaneState, RetiringState, SlotKey, SlotState, WindowDelta, decode_record,
    };
    use sluice_core::watermark::Watermarks;
    use sluice_core::window::{EventOutcome, Swap, WindowOperator, WindowResult, WindowSpec};
    use sluice_wasm::{PluginEngine, PluginLimits};

    /// Out-of-orderness the events have and the watermark allows.
    const DELAY: i64 = 300;

    fn open(engine: &PluginEngine, bytes: &[u8]) -> Box<dyn GroupedAggregation> {
        let plugin = engine.compile("zoo", bytes).expect("compiles");
        PerWindow::boxed(Box::new(
            engine.open_aggregation(&plugin, "{}").expect("opens"),
        ))
    }

    /// Events of three keys, roughly in time order (within `DELAY`).
    fn events(seed: u64, n: usize) -> Vec<(u32, i64)> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut next = move |m: u64| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) % m
        };
        let mut t = 0i64;
        (0..n)
            .map(|_| {
                t += next(400) as i64;
                let jitter = next(DELAY as u64) as i64;
                (next(3) as u32, (t - jitter).max(0))
            })
            .collect()
    }

    fn operator(
        engine: &PluginEngine,
        spec: WindowSpec,
        agg: Box<dyn GroupedAggregation>,
    ) -> WindowOperator {
        let triggers = sluice::pipeline::default_trigger(engine).expect("default trigger");
        WindowOperator::new(spec, 0, vec![agg], triggers, 4, 5)
    }

    /// Checkpoints `op` and builds a new operator from the records alone,
    /// as a restart does: the current version from `current`, the retiring
    /// one from the bytes the checkpoint kept.
    /// Also returns how many slots had a shadow and whether the old version
    /// was kept, so a test can tell that it covered them.
    fn restart(
        engine: &PluginEngine,
        spec: WindowSpec,
        op: &mut WindowOperator,
        current: &[u8],
        watermark: i64,
    ) -> (WindowOperator, usize, bool) {
        let mut delta = WindowDelta::default();
        op.checkpoint_into(&mut delta).expect("checkpoint");
        let mut slots: Vec<(SlotKey, SlotState, u32)> = delta
            .put
            .iter()
            .map(|(k, bytes)| {
                let (state, crc) = decode_record::<SlotState>(bytes).expect("window record");
                (*k, state, crc)
            })
            .collect();
        slots.sort_by_key(|(k, _, _)| *k);
        let shadowed = slots
            .iter()
            .filter(|(_, s, _)| matches!(s.lanes[0], LaneState::Shadowed(..)))
            .count();
        let slots: Vec<(SlotState, u32)> = slots.into_iter().map(|(_, s, c)| (s, c)).collect();
        let health = op.health_state();
        let triggers = op.trigger_records();
        let mut restored = operator(engine, spec, open(engine, current));
        for (a, bytes) in &delta.retiring_put {
            let (record, _) = decode_record::<RetiringState>(bytes).expect("retiring record");
            assert_eq!(record.aggregation, *a);
            assert_eq!(
                (record.version.as_str(), record.state_version),
                ("0.2.0", 1)
            );
            let instance = open(engine, &record.component);
            restored.restore_retiring(*a as usize, Ok(instance), Arc::from(record.component));
        }
        restored.restore(&health, &slots, &triggers, watermark);
        (restored, shadowed, !delta.retiring_put.is_empty())
    }

    /// Runs `events` through count-v2, swapping in count-format2 before
    /// event `swap_at` and, if asked, restarting from a checkpoint before
    /// event `restart_at`; with the results, what the checkpoint held (see
    /// [`restart`]).
    fn run(
        spec: WindowSpec,
        events: &[(u32, i64)],
        swap_at: usize,
        restart_at: Option<usize>,
    ) -> (Vec<WindowResult>, usize, bool) {
        let engine = PluginEngine::new(PluginLimits::default()).expect("engine");
        let v2 = std::fs::read(sluice_test_plugins::COUNT_V2).expect("count-v2 built");
        let format2 =
            std::fs::read(sluice_test_plugins::COUNT_FORMAT2).expect("count-format2 built");
        let mut op = operator(&engine, spec, open(&engine, &v2));
        let mut wm = Watermarks::new(DELAY, 1);
        let mut out = Vec::new();
        let mut held = (0, false);
        for (i, &(key, time)) in events.iter().enumerate() {
            if i == swap_at {
                let swap = op
                    .replace_plugin(0, open(&engine, &format2), Arc::from(v2.as_slice()))
                    .expect("swap");
                let open_now = op.open_windows();
                assert_eq!(swap, Swap::SideBySide(open_now), "every open slot retires");
                if open_now > 0 {
                    assert!(op.retiring(0).is_some());
                    // Back to format 1 would be a third version at once: refused.
                    let refused = op
                        .replace_plugin(0, open(&engine, &v2), Arc::from(format2.as_slice()))
                        .expect_err("one version retires at a time");
                    assert!(refused.contains("still finishes"), "{refused}");
                }
            }
            if restart_at == Some(i) {
                let (restored, shadowed, kept) =
                    restart(&engine, spec, &mut op, &format2, wm.current());
                op = restored;
                held = (shadowed, kept);
            }
            let outcome = op
                .on_event(key, time, &[Some(1.0)], wm.current(), &mut out)
                .expect("event");
            assert_eq!(outcome, EventOutcome::Accepted, "event {i} at {time}");
            if let Some(w) = wm.observe(0, time) {
                op.on_watermark(w, &mut out).expect("watermark");
            }
        }
        op.on_watermark(wm.finish(), &mut out).expect("end");
        assert_eq!(
            op.retiring(0),
            None,
            "the old version retired with its last window"
        );
        (out, held.0, held.1)
    }

    /// Each result counts exactly the events of its key and window, and was
    /// finished by version 2 if and only if it holds an event that arrived
    /// before the swap.
    fn check(events: &[(u32, i64)], swap_at: usize, results: &[WindowResult], what: &str) {
        assert!(!results.is_empty(), "{what}");
        for r in results {
            let inside =
                |&(k, t): &(u32, i64)| k == r.key && r.window.start <= t && t < r.window.end;
            let count = events.iter().filter(|e| inside(e)).count() as f64;
            let early = events[..swap_at].iter().any(inside);
            let generation = if early { 2.0 } else { 3.0 };
            assert_eq!(
                r.numbers()[0],
                vec![Some(count), Some(generation)],
                "{what}: key {} window {:?}",
                r.key,
                r.window
            );
        }
    }

    fn shapes() -> [(&'static str, WindowSpec); 3] {
        [
            (
                "tumbling",
                WindowSpec::Tumbling {
                    size: 1000,
                    offset: 0,
                },
            ),
            (
                "sliding",
                WindowSpec::Sliding {
                    size: 2000,
                    slide: 500,
                    offset: 0,
                },
            ),
            ("session", WindowSpec::Session { gap: 700 }),
        ]
    }

    #[test]
    fn open_windows_finish_on_the_old_format_and_new_ones_start_on_the_new() {
        for (name, spec) in shapes() {
            for seed in 0..3 {
                let events = events(seed, 400);
                for swap_at in [0, 1, 137, 250, 399] {
                    let (results, _, _) = run(spec, &events, swap_at, None);
                    check(
                        &events,
                        swap_at,
                        &results,
                        &format!("{name} seed {seed} swap {swap_at}"),
                    );
                }
            }
        }
    }

    #[test]
    fn a_checkpoint_taken_while_a_version_retires_restores_both() {
        for (name, spec) in shapes() {
            let events = events(7, 400);
            let (whole, _, _) = run(spec, &events, 150, None);
            let (mut shadows, mut kept) = (0, 0);
            // The transition lasts about a window (or a session): a few events.
            for restart_at in 151..160 {
                let (restarted, shadowed, old_kept) = run(spec, &events, 150, Some(restart_at));
                assert_eq!(
                    restarted, whole,
                    "{name}: restarted before event {restart_at}"
                );
                shadows += shadowed;
                kept += usize::from(old_kept);
            }
            check(&events, 150, &whole, name);
            assert!(kept > 0, "{name}: no checkpoint held the retiring version");
            if name != "tumbling" {
                assert!(shadows > 0, "{name}: no checkpoint held a shadow");
            }
        }
    }
}
