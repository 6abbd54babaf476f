//! The plugin runtime across restarts and versions, through the real
//! `sluice` binary: the compile cache (filled by the first run, used by the
//! next, a damaged entry compiled again rather than loaded) and hot reload
//! (a new plugin version swapped in under a running stream, with every
//! window's count checked, and a broken version refused while the old one
//! keeps serving).
//!
//! The second version is `tests/plugins/count-v2` (built by `scripts/test.sh`
//! into `out/zoo/count-v2.wasm`): `builtin/count` with an extra output
//! `generation` = 2, so each result shows which version finished it.
//! `count-format2` (another state format) and `count-bad-merge` (breaks the
//! merge laws) are versions a reload must refuse.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use common::{sluice, zoo_path};
use sluice_host::plugin::registry::builtin_bytes;

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
    stdin: &mut ChildStdin,
    keys: &[&str],
    tally: &mut BTreeMap<(String, i64), u64>,
    second: i64,
    from: i64,
    count: i64,
) {
    let mut text = String::new();
    for i in 0..count {
        for key in keys {
            let ts = second * 1000 + from + i * 100;
            text.push_str(&format!("{{\"ts\":{ts},\"service\":\"{key}\",\"x\":1}}\n"));
            *tally.entry((key.to_string(), second * 1000)).or_default() += 1;
        }
    }
    stdin.write_all(text.as_bytes()).expect("write events");
    stdin.flush().expect("flush events");
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
    let v2 = std::fs::read(zoo_path("count-v2")).expect("v2");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
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
    log.wait_for(&["admin endpoint"]);
    log.wait_for(&["watching"]);

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
        &std::fs::read(zoo_path("count-format2")).expect("format 2"),
        "count 0.3.0 keeps state format 2, the running count 0.2.0 format 1",
    );
    refused(
        &std::fs::read(zoo_path("count-bad-merge")).expect("bad merge"),
        "count 0.4.0 fails the law checker: FAIL merging parts equals aggregating the whole",
    );
    for second in 8..10 {
        send(&mut stdin, keys, &mut tally, second, 0, 10);
    }
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
        if *start < 5000 {
            assert_eq!(generation, None, "emitted by version 1: {r}");
        } else {
            assert_eq!(generation, Some(2), "emitted by version 2: {r}");
        }
    }
    assert_eq!(counted, events, "every event counted once");
}
