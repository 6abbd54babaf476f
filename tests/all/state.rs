//! Checkpoints and recovery with the RocksDB backend, through the `sluice`
//! binary: a run killed with SIGKILL at random moments and restarted, again
//! and again, must leave exactly the output of a run that was never
//! interrupted; damaged checkpoints fall back to older ones; a restart with
//! a different pipeline is refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{generate, sluice, xorshift};

/// The outputs a run writes, read back.
#[derive(Debug, PartialEq, Eq)]
struct Outputs {
    results: String,
    late: String,
    dead: String,
    dups: String,
}

fn read_outputs(dir: &Path) -> Outputs {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    Outputs {
        results: read("results.jsonl"),
        late: read("late.jsonl"),
        dead: read("dead.jsonl"),
        dups: read("dups.jsonl"),
    }
}

/// A run directory: input, a RocksDB pipeline over it, outputs beside it.
fn setup(dir: &Path, input: &str, window: &str, lateness: &str, interval: &str) -> PathBuf {
    setup_with(dir, input, window, lateness, interval, "")
}

/// [`setup`] with more top-level config lines.
fn setup_with(
    dir: &Path,
    input: &str,
    window: &str,
    lateness: &str,
    interval: &str,
    extra: &str,
) -> PathBuf {
    std::fs::write(dir.join("input.jsonl"), input).unwrap();
    let config = dir.join("pipeline.yaml");
    std::fs::write(
        &config,
        format!(
            "source: {{ file: input.jsonl }}\n\
             event: {{ key: [service], time: {{ field: ts, format: epoch_millis }} }}\n\
             watermark: {{ max_out_of_orderness: 2s }}\n\
             window: {window}\n\
             allowed_lateness: {lateness}\n\
             aggregations:\n\
             \x20 - {{ name: latency, plugin: builtin/stats, field: latency_ms }}\n\
             \x20 - {{ name: p, plugin: builtin/percentiles, field: latency_ms, config: {{ quantiles: [0.5, 0.99] }} }}\n\
             \x20 - {{ name: errors, plugin: builtin/count, field: error }}\n\
             sink: {{ file: results.jsonl }}\n\
             late_output: {{ file: late.jsonl }}\n\
             dead_letter: {{ file: dead.jsonl }}\n\
             batch_size: 64\n\
             state: {{ backend: rocksdb, path: state, checkpoint_interval: {interval}, keep: 3 }}\n\
             {extra}"
        ),
    )
    .unwrap();
    config
}

fn run(config: &Path) -> Output {
    sluice()
        .args(["run", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn checkpoints(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("state/checkpoints"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.starts_with("chk-") && !n.contains('.'))
                })
                .count()
        })
        .unwrap_or(0)
}

/// Starts the run and kills it once `results` has grown to `target` bytes
/// (so the kill lands while it is working, whatever its start-up costs), and
/// `extra` after that. Returns whether it was still running then.
fn run_and_kill(config: &Path, results: &Path, target: u64, extra: Duration) -> bool {
    let mut child = sluice()
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        let len = std::fs::metadata(results).map_or(0, |m| m.len());
        if len >= target || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(extra);
    let killed = child.try_wait().unwrap().is_none();
    // SIGKILL: no handler runs, nothing is flushed.
    let _ = child.kill();
    let _ = child.wait();
    killed
}

/// How many SIGKILLs each crash test deals (`SLUICE_CRASH_KILLS` raises it
/// for a longer soak).
fn kills() -> usize {
    std::env::var("SLUICE_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// Runs the pipeline once uninterrupted, then again in a fresh directory
/// with `kills()` SIGKILLs at pseudo-random moments, and compares.
fn crash_test(window: &str, lateness: &str) {
    crash_test_with(&generate(40_000), window, lateness, "");
}

/// [`crash_test`] over `input` with more config; returns the outputs.
fn crash_test_with(input: &str, window: &str, lateness: &str, extra: &str) -> Outputs {
    let clean = tempfile::tempdir().unwrap();
    let config = setup_with(clean.path(), input, window, lateness, "1h", extra);
    let started = Instant::now();
    let out = run(&config);
    let full = started.elapsed();
    assert!(out.status.success(), "{}", stderr(&out));
    let expected = read_outputs(clean.path());
    assert!(
        expected.results.lines().count() > 100,
        "too few results to test anything"
    );

    let crashed = tempfile::tempdir().unwrap();
    let config = setup_with(crashed.path(), input, window, lateness, "10ms", extra);
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
    let mut resumed = 0;
    let mut killed = 0;
    let total = expected.results.len() as u64;
    for i in 0..kills() {
        let seed = next();
        // Kill points spread over the output, each a little further on.
        let target = total * (i as u64 + 1) / (kills() as u64 + 1);
        let extra = Duration::from_micros(seed % 20_000);
        if checkpoints(crashed.path()) > 0 {
            resumed += 1;
        }
        if run_and_kill(
            &config,
            &crashed.path().join("results.jsonl"),
            target,
            extra,
        ) {
            killed += 1;
        }
    }
    let out = run(&config);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = read_outputs(crashed.path());
    assert!(
        killed >= kills() * 3 / 4 && resumed >= kills() / 2,
        "the kills missed the runs: {killed} of {} runs killed, {resumed} resumed from a \
         checkpoint (uninterrupted run took {full:?})",
        kills()
    );
    // Compare line by line first for a readable failure.
    let (e, g) = (&expected.results, &got.results);
    for (i, (a, b)) in e.lines().zip(g.lines()).enumerate() {
        assert_eq!(a, b, "results differ at line {}", i + 1);
    }
    assert_eq!(e.lines().count(), g.lines().count(), "result counts differ");
    assert_eq!(expected, got);
    got
}

#[test]
fn sliding_windows_survive_repeated_kill_nine() {
    crash_test("{ sliding: { size: 10s, slide: 5s } }", "5s");
}

#[test]
fn session_windows_survive_repeated_kill_nine() {
    crash_test("{ session: { gap: 1s } }", "3s");
}

#[test]
fn dedup_and_gap_filling_state_survives_repeated_kill_nine() {
    // Every 20th event delivered twice; the dedup key tells copies apart
    // from other events, and quiet keys get forward-filled windows.
    let mut input = String::new();
    for (i, line) in generate(30_000).lines().enumerate() {
        input.push_str(line);
        input.push('\n');
        if i % 20 == 0 {
            input.push_str(line);
            input.push('\n');
        }
    }
    let out = crash_test_with(
        &input,
        "{ tumbling: { size: 2s } }",
        "0s",
        "dedup: { key: [ts, latency_ms], ttl: 1m }\n\
         dedup_output: { file: dups.jsonl }\n\
         fill: { strategy: forward, max_gap: 20s }\n",
    );
    assert!(
        out.dups.lines().count() >= 1_000,
        "too few duplicates dropped"
    );
    assert!(
        out.results.contains(r#""filled":true"#),
        "no window was filled"
    );
}

#[test]
fn a_finished_run_restarted_writes_the_same_output() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(
        dir.path(),
        &generate(3_000),
        "{ tumbling: { size: 10s } }",
        "0s",
        "1h",
    );
    assert!(run(&config).status.success());
    let first = read_outputs(dir.path());
    let out = run(&config);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(read_outputs(dir.path()), first);
}

#[test]
fn a_damaged_newest_checkpoint_falls_back_to_the_one_before() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(20_000);
    let config = setup(
        dir.path(),
        &input,
        "{ tumbling: { size: 10s } }",
        "0s",
        "1ms",
    );
    assert!(run(&config).status.success());
    let expected = read_outputs(dir.path());
    assert!(checkpoints(dir.path()) >= 2);
    // Damage the newest checkpoint's own (copied, not shared) files.
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir.path().join("state/checkpoints"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    dirs.sort();
    let newest = dirs.last().unwrap().clone();
    for entry in std::fs::read_dir(&newest).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("MANIFEST") {
            std::fs::write(entry.path(), b"not a manifest").unwrap();
        }
    }
    let out = run(&config);
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("is damaged"),
        "no warning about the damage: {log}"
    );
    assert!(newest.with_extension("damaged").exists());
    assert_eq!(read_outputs(dir.path()), expected);
}

#[test]
fn a_changed_pipeline_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(
        dir.path(),
        &generate(2_000),
        "{ tumbling: { size: 10s } }",
        "0s",
        "1h",
    );
    assert!(run(&config).status.success());
    let yaml = std::fs::read_to_string(&config).unwrap();

    std::fs::write(&config, yaml.replace("size: 10s", "size: 20s")).unwrap();
    let out = run(&config);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("taken with window"),
        "{}",
        stderr(&out)
    );

    std::fs::write(&config, yaml.replace("builtin/count", "builtin/sum")).unwrap();
    let out = run(&config);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("aggregation `errors`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn state_inspect_lists_checkpoints_and_windows_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(
        dir.path(),
        &generate(5_000),
        "{ tumbling: { size: 10s } }",
        "0s",
        "1h",
    );
    assert!(run(&config).status.success());
    let out: Output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["state", "inspect"])
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.contains("events read"), "{text}");
    assert!(text.contains(r#"{"service":"svc-"#), "{text}");
    assert!(text.contains("aggregation latency: stats"), "{text}");

    let out = sluice()
        .args(["state", "inspect"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not a sluice state directory"));
}

#[test]
fn trigger_state_survives_repeated_kill_nine() {
    // Early firings every 3 elements of a session: the trigger's count since
    // its last firing, its interest and the elements it has not heard of yet
    // are in the checkpoint, so firings land on the same elements.
    let out = crash_test_with(
        &generate(40_000),
        "{ session: { gap: 1s } }",
        "3s",
        "trigger: { plugin: builtin/early, config: { every_events: 3 } }\n",
    );
    assert!(
        out.results.matches(r#""emit":"early""#).count() >= 100,
        "too few early firings to test anything"
    );
}
