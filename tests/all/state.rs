//! Checkpoints and recovery with the RocksDB backend, through the `sluice`
//! binary: a run killed with SIGKILL at random moments and restarted, again
//! and again, must leave exactly the output of a run that was never
//! interrupted; damaged checkpoints fall back to older ones; a restart with
//! a different pipeline is refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{
    generate, generate_keys, generate_with, run_config as run, sluice, stderr, with_copies,
    xorshift,
};

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
    setup_full(dir, input, window, lateness, interval, "", extra)
}

/// [`setup_with`] with more aggregations (lines of the list, each ending
/// in a newline).
fn setup_full(
    dir: &Path,
    input: &str,
    window: &str,
    lateness: &str,
    interval: &str,
    aggregations: &str,
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
             {aggregations}\
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

/// How a run is interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interrupt {
    /// SIGKILL: no handler runs, nothing is flushed.
    Kill,
    /// SIGTERM: the run stops between two batches, flushes and checkpoints.
    Term,
}

/// Starts the run and interrupts it once `results` has grown to `target`
/// bytes (so that it lands while the run is working, whatever its start-up
/// costs), and `extra` after that. Returns whether it was still running
/// then, and its stderr.
fn run_and_interrupt(
    config: &Path,
    results: &Path,
    target: u64,
    extra: Duration,
    how: Interrupt,
) -> (bool, String) {
    let mut child = sluice()
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let spawned = Instant::now();
    // Drained meanwhile, so that a chatty run never blocks on a full pipe.
    let mut pipe = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut finished = false;
    loop {
        if child.try_wait().unwrap().is_some() {
            finished = true;
            break;
        }
        let len = std::fs::metadata(results).map_or(0, |m| m.len());
        if len >= target || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    if !finished {
        std::thread::sleep(extra);
        // The file may have been long enough already (a previous run's):
        // a signal before the run has installed its handler would kill it
        // the default way, which is not what a SIGTERM test is after.
        while how == Interrupt::Term
            && !catches_sigterm(child.id())
            && child.try_wait().unwrap().is_none()
            && spawned.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let interrupted = child.try_wait().unwrap().is_none();
    match how {
        Interrupt::Kill => {
            let _ = child.kill();
        }
        Interrupt::Term => {
            let pid = libc::pid_t::try_from(child.id()).unwrap();
            // SAFETY: kill(2) on our own child's pid, with a valid signal.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
    let status = child.wait().unwrap();
    let log = log.join().unwrap();
    if how == Interrupt::Term && interrupted {
        // A stop, not a death: the summary, and the shell's status for SIGTERM
        // (or 0 when the signal came as the run was finishing anyway).
        assert!(
            status.code() == Some(143) || status.success(),
            "SIGTERM: {status:?}\n{log}"
        );
        if status.code() == Some(143) {
            assert!(log.contains("stopped by SIGTERM"), "{log}");
        }
    }
    (interrupted, log)
}

/// Whether process `pid` has a handler for SIGTERM installed (from the
/// caught-signals mask in `/proc/PID/status`).
fn catches_sigterm(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
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
    restart_test(&RestartCase {
        input,
        window,
        lateness,
        reference: extra,
        interrupted: extra,
        aggregations: "",
        how: Interrupt::Kill,
        stops: kills(),
    })
    .0
}

/// One restart test: a reference run, then the same input in a fresh
/// directory stopped `stops` times and restarted each time.
struct RestartCase<'a> {
    input: &'a str,
    window: &'a str,
    lateness: &'a str,
    /// More config lines for the reference run.
    reference: &'a str,
    /// More config lines for the interrupted runs (another memory limit, say).
    interrupted: &'a str,
    /// More aggregations, for both.
    aggregations: &'a str,
    how: Interrupt,
    stops: usize,
}

/// Runs `case`; returns the outputs (equal to the reference's) and the
/// stderr of every interrupted run and of the last one.
fn restart_test(case: &RestartCase<'_>) -> (Outputs, String) {
    let clean = tempfile::tempdir().unwrap();
    let config = setup_full(
        clean.path(),
        case.input,
        case.window,
        case.lateness,
        "1h",
        case.aggregations,
        case.reference,
    );
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
    let config = setup_full(
        crashed.path(),
        case.input,
        case.window,
        case.lateness,
        "10ms",
        case.aggregations,
        case.interrupted,
    );
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
    let mut resumed = 0;
    let mut interrupted = 0;
    let mut logs = String::new();
    let total = expected.results.len() as u64;
    for i in 0..case.stops {
        let seed = next();
        // Stop points spread over the output, each a little further on.
        let target = total * (i as u64 + 1) / (case.stops as u64 + 1);
        let extra = Duration::from_micros(seed % 20_000);
        if checkpoints(crashed.path()) > 0 {
            resumed += 1;
        }
        let (stopped, log) = run_and_interrupt(
            &config,
            &crashed.path().join("results.jsonl"),
            target,
            extra,
            case.how,
        );
        interrupted += usize::from(stopped);
        logs.push_str(&log);
    }
    let out = run(&config);
    assert!(out.status.success(), "{}", stderr(&out));
    logs.push_str(&stderr(&out));
    let got = read_outputs(crashed.path());
    assert!(
        interrupted >= case.stops * 3 / 4 && resumed >= case.stops / 2,
        "the stops missed the runs: {interrupted} of {} runs stopped, {resumed} resumed from a \
         checkpoint (uninterrupted run took {full:?})",
        case.stops
    );
    // Compare line by line first for a readable failure.
    let (e, g) = (&expected.results, &got.results);
    for (i, (a, b)) in e.lines().zip(g.lines()).enumerate() {
        assert_eq!(a, b, "results differ at line {}", i + 1);
    }
    assert_eq!(e.lines().count(), g.lines().count(), "result counts differ");
    assert_eq!(expected, got);

    // A second run on the finished state directory writes the same again.
    let out = run(&config);
    assert!(out.status.success(), "{}", stderr(&out));
    let again = read_outputs(crashed.path());
    for (i, (a, b)) in e.lines().zip(again.results.lines()).enumerate() {
        assert_eq!(
            a,
            b,
            "a second run on the finished state: results differ at line {}",
            i + 1
        );
    }
    assert_eq!(expected, again);
    (got, logs)
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
    let input = with_copies(&generate(30_000), 20);
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

/// Window shards (`parallelism`) checkpoint and restore their keys'
/// windows and trigger state: runs killed again and again at 2 workers
/// give the bytes of one uninterrupted run at 1.
#[test]
fn sharded_windows_survive_repeated_kill_nine() {
    let input = generate_keys(40_000, 11);
    let (out, _) = restart_test(&RestartCase {
        input: &input,
        window: "{ session: { gap: 1s } }",
        lateness: "3s",
        reference: "trigger: { plugin: builtin/early, config: { every_events: 3 } }\n",
        interrupted: "trigger: { plugin: builtin/early, config: { every_events: 3 } }\n\
                      parallelism: 2\n",
        aggregations: "",
        how: Interrupt::Kill,
        stops: kills(),
    });
    assert!(
        out.results.matches(r#""emit":"early""#).count() >= 100,
        "too few early firings to test anything"
    );
}

/// [`sharded_windows_survive_repeated_kill_nine`] for tumbling windows with
/// dedup and gap filling, at 3 workers.
#[test]
fn sharded_dedup_and_fill_survive_repeated_kill_nine() {
    let input = with_copies(&generate_keys(30_000, 11), 20);
    let extra = "dedup: { key: [ts, latency_ms], ttl: 1m }\n\
                 dedup_output: { file: dups.jsonl }\n\
                 fill: { strategy: forward, max_gap: 20s }\n";
    let (out, _) = restart_test(&RestartCase {
        input: &input,
        window: "{ tumbling: { size: 2s } }",
        lateness: "2s",
        reference: extra,
        interrupted: &format!("{extra}parallelism: 3\n"),
        aggregations: "",
        how: Interrupt::Kill,
        stops: kills(),
    });
    assert!(out.dups.lines().count() >= 1_000, "too few duplicates");
}

#[test]
fn tumbling_windows_survive_repeated_kill_nine() {
    crash_test("{ tumbling: { size: 10s } }", "5s");
}

/// SIGTERM on a file run stops it between two batches: every output is
/// flushed (the dead letters of the lines read are all in their file), a
/// checkpoint is taken, the summary says what happened, and the exit code
/// is 128 + 15; the same command then carries on to exactly the output of
/// a run that never stopped. SIGINT does the same with 130.
#[test]
fn a_signal_stops_a_file_run_cleanly_and_the_same_command_resumes() {
    let input = generate(40_000);
    let clean = tempfile::tempdir().unwrap();
    let window = "{ sliding: { size: 10s, slide: 1s } }";
    let config = setup(clean.path(), &input, window, "2s", "1h");
    assert!(run(&config).status.success());
    let expected = read_outputs(clean.path());

    for (signal, code, name) in [
        (libc::SIGTERM, 143, "SIGTERM"),
        (libc::SIGINT, 130, "SIGINT"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        // A checkpoint interval longer than the run: the stop's own
        // checkpoint is the one the restart resumes from.
        let config = setup(dir.path(), &input, window, "2s", "1h");
        let child = sluice()
            .args(["run", "--config"])
            .arg(&config)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let results = dir.path().join("results.jsonl");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::fs::metadata(&results).map_or(0, |m| m.len()) < expected.results.len() as u64 / 3
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        let pid = libc::pid_t::try_from(child.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid, with a valid signal.
        unsafe { libc::kill(pid, signal) };
        let out = child.wait_with_output().unwrap();
        let log = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{name}: {log}");
        assert!(
            log.contains(&format!("stopped by {name} before the end of the input")),
            "{log}"
        );
        assert!(log.contains("kept in a checkpoint"), "{log}");
        // Every dead letter counted is in the file, whole.
        let dead = std::fs::read_to_string(dir.path().join("dead.jsonl")).unwrap();
        let counted: u64 = log
            .lines()
            .find(|l| l.starts_with("sluice: ") && l.contains("events read"))
            .and_then(|l| l.split(" dead-lettered").next())
            .and_then(|s| s.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .expect("a summary line");
        assert!(counted > 0, "{log}");
        assert_eq!(dead.lines().count() as u64, counted, "{name}: {log}");
        assert!(dead.ends_with('\n'));
        let partial = read_outputs(dir.path());
        assert!(
            partial.results.len() < expected.results.len(),
            "{name}: the run had finished"
        );
        assert!(expected.results.starts_with(&partial.results));

        let out = run(&config);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            read_outputs(dir.path()),
            expected,
            "{name}: resumed output differs"
        );
    }
}

/// Restarts after SIGTERM give byte-identical outputs for every window kind.
#[test]
fn every_window_kind_resumes_byte_identically_after_sigterm() {
    let input = generate(20_000);
    for (window, lateness) in [
        ("{ tumbling: { size: 10s } }", "3s"),
        ("{ sliding: { size: 10s, slide: 1s } }", "3s"),
        ("{ session: { gap: 1s } }", "3s"),
    ] {
        restart_test(&RestartCase {
            input: &input,
            window,
            lateness,
            reference: "",
            interrupted: "",
            aggregations: "",
            how: Interrupt::Term,
            stops: 8,
        });
    }
}

/// A plugin of interface 0.2 with two bound inputs keeps its windows
/// through SIGKILLs in every window kind: its typed rows are replayed and
/// its groups restored from checkpoints, byte-identically.
#[test]
fn a_0_2_plugin_survives_repeated_kill_nine_in_every_window_kind() {
    let input = generate(20_000);
    let aggregations = format!(
        "\x20 - {{ name: wm, plugin: {}, inputs: {{ value: latency_ms, weight: error }}, \
         on_missing: skip }}\n",
        sluice_test_plugins::GROUPED_WEIGHTED_MEAN
    );
    for (window, lateness) in [
        ("{ tumbling: { size: 10s } }", "3s"),
        ("{ sliding: { size: 10s, slide: 2s } }", "3s"),
        ("{ session: { gap: 1s } }", "3s"),
    ] {
        let (got, _) = restart_test(&RestartCase {
            input: &input,
            window,
            lateness,
            reference: "",
            interrupted: "",
            aggregations: &aggregations,
            how: Interrupt::Kill,
            stops: 6,
        });
        assert!(
            got.results.contains("\"wm.rows\":"),
            "{window}: no wm results"
        );
    }
}

/// The plugin memory limit a run is interrupted under, small enough that
/// partial aggregates of the sliding shape below do not fit (the instance
/// is reopened with only its open panes, more than once), large enough for
/// the panes themselves.
const TIGHT_MEMORY: &str = "plugins: { memory_limit: 8MiB }\n";

/// Output after restarts is byte-identical whatever the plugins' memory
/// does: runs at a memory limit that partial aggregates overflow, killed
/// and stopped at random points, write exactly what an uninterrupted run
/// at the default limit writes, for every window kind, and so does a
/// second run on the finished state directory. Every merge of panes or
/// partials happens in an order that is a function of the input alone.
#[test]
fn restarts_are_byte_identical_at_a_tight_memory_limit() {
    // 20 keys, an event every half millisecond: 300 panes a window, each
    // with a few events.
    let dense = generate_with(20_000, 20, 2);
    let sparse = generate_keys(20_000, 20);
    let mut recovered = false;
    for (input, window, lateness, how) in [
        (
            &dense,
            "{ sliding: { size: 30s, slide: 100ms } }",
            "2s",
            Interrupt::Kill,
        ),
        (
            &dense,
            "{ sliding: { size: 30s, slide: 100ms } }",
            "2s",
            Interrupt::Term,
        ),
        (
            &sparse,
            "{ tumbling: { size: 10s } }",
            "3s",
            Interrupt::Kill,
        ),
        (&sparse, "{ session: { gap: 1s } }", "3s", Interrupt::Term),
    ] {
        let (_, logs) = restart_test(&RestartCase {
            input,
            window,
            lateness,
            reference: "",
            interrupted: TIGHT_MEMORY,
            aggregations: "",
            how,
            stops: 6,
        });
        if logs.contains("reached its memory limit") {
            recovered = true;
            // The log names the aggregation and the setting to raise.
            assert!(
                logs.contains("aggregation `latency`: plugin builtin/stats")
                    && logs.contains("Raise `plugins.memory_limit`"),
                "{logs}"
            );
        }
    }
    assert!(
        recovered,
        "no run reached the memory limit: the test shows nothing about memory"
    );
}

/// A reasonable sliding shape (60 s every 100 ms, 20 keys, `stats` and
/// `count`, 200,000 events at 2,000 a second) stays within the default
/// plugin memory limit.
#[test]
fn a_reasonable_sliding_shape_fits_the_default_memory_limit() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("input.jsonl"),
        generate_with(200_000, 20, 2),
    )
    .unwrap();
    let config = dir.path().join("pipeline.yaml");
    std::fs::write(
        &config,
        "source: { file: input.jsonl }\n\
         event: { key: [service], time: { field: ts, format: epoch_millis } }\n\
         watermark: { max_out_of_orderness: 2s }\n\
         window: { sliding: { size: 60s, slide: 100ms } }\n\
         aggregations:\n\
         \x20 - { name: latency, plugin: builtin/stats, field: latency_ms }\n\
         \x20 - { name: n, plugin: builtin/count }\n\
         sink: { file: results.jsonl }\n\
         late_output: { file: late.jsonl }\n\
         dead_letter: { file: dead.jsonl }\n",
    )
    .unwrap();
    let out = run(&config);
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(!log.contains("memory limit"), "{log}");
    let results = std::fs::read_to_string(dir.path().join("results.jsonl")).unwrap();
    assert!(results.lines().count() > 10_000, "too few results");
    assert!(!results.contains("\"errors\""));
}

/// A second run on a state directory in use is refused before it touches
/// anything (exit 2, naming the first run's pid); the first run finishes
/// with its output whole.
#[test]
fn a_second_run_on_a_state_directory_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(5_000);
    let config = setup(dir.path(), "", "{ tumbling: { size: 10s } }", "0s", "10ms");
    // The first run reads a FIFO, so it is still running when the second starts.
    let fifo = dir.path().join("input.jsonl");
    std::fs::remove_file(&fifo).unwrap();
    let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let first = sluice()
        .args(["run", "--config"])
        .arg(&config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    let half = input.len() / 2;
    let cut = input[..half].rfind('\n').unwrap() + 1;
    std::io::Write::write_all(&mut writer, &input.as_bytes()[..cut]).unwrap();
    // Until the first run has written and checkpointed something.
    let deadline = Instant::now() + Duration::from_secs(60);
    while checkpoints(dir.path()) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let results_before = std::fs::read(dir.path().join("results.jsonl")).unwrap();

    let second = run(&config);
    let log = stderr(&second);
    assert_eq!(second.status.code(), Some(2), "{log}");
    assert!(
        log.contains(&format!("in use by pid {}", first.id())),
        "{log}"
    );
    // Nothing of the first run's was touched.
    let results_now = std::fs::read(dir.path().join("results.jsonl")).unwrap();
    assert!(results_now.starts_with(&results_before));

    std::io::Write::write_all(&mut writer, &input.as_bytes()[cut..]).unwrap();
    drop(writer);
    let out = first.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // The same as a run over a plain file.
    let plain = tempfile::tempdir().unwrap();
    let reference = setup(
        plain.path(),
        &input,
        "{ tumbling: { size: 10s } }",
        "0s",
        "10ms",
    );
    assert!(run(&reference).status.success());
    assert_eq!(read_outputs(dir.path()), read_outputs(plain.path()));
}

/// Copies directory `from` to `to`, recursively.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A checkpoint written while the built-in aggregators were components of
/// interface 0.1 (`tests/fixtures/checkpoint-0.1`, see its README) resumes
/// with today's built-ins: for each window kind, the windows it holds are
/// restored from every built-in's own snapshots, only the events after it
/// are read, no plugin call fails, and the outputs are byte for byte the
/// expected ones (those of a 0.1 run that never stopped).
#[test]
fn a_checkpoint_of_the_0_1_builtins_resumes_byte_identically() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/checkpoint-0.1");
    for case in ["tumbling", "sliding", "session"] {
        // A copy: a run rewrites its outputs and its state directory.
        let tmp = tempfile::tempdir().unwrap();
        std::fs::copy(fixture.join("input.jsonl"), tmp.path().join("input.jsonl")).unwrap();
        let dir = tmp.path().join(case);
        copy_tree(&fixture.join(case), &dir);
        let out = run(&dir.join("pipeline.yaml"));
        let log = stderr(&out);
        assert!(out.status.success(), "{case}: {log}");
        let restored = log
            .lines()
            .find_map(|l| l.split("restored checkpoint 1 (").nth(1))
            .unwrap_or_else(|| panic!("{case}: not resumed from the fixture's checkpoint: {log}"));
        let open: usize = restored
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{case}: {restored}"));
        assert!(
            open > 0 && restored.contains(", 300 events read before it)"),
            "{case}: {restored}"
        );
        assert!(
            !log.contains(" WARN "),
            "{case}: a warning (a plugin call failed?): {log}"
        );
        assert!(log.contains("sluice: 600 events read"), "{case}: {log}");

        let expected_file = |what: &str| {
            std::fs::read_to_string(fixture.join(case).join(format!("expected-{what}.jsonl")))
                .unwrap()
        };
        let expected = Outputs {
            results: expected_file("results"),
            late: expected_file("late"),
            dead: expected_file("dead"),
            dups: String::new(),
        };
        assert!(
            expected.results.lines().count() > 20 && !expected.results.contains(r#""errors""#),
            "{case}: the fixture's expected results hold failures or too little"
        );
        let got = read_outputs(&dir);
        for (i, (want, line)) in expected
            .results
            .lines()
            .zip(got.results.lines())
            .enumerate()
        {
            assert_eq!(line, want, "{case}: results differ at line {}", i + 1);
        }
        assert_eq!(got, expected, "{case}");
    }
}
