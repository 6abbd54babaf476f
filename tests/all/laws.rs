//! `sluice plugin test`, the law checker, run as users run it: every
//! built-in and the example plugin pass every law, a deliberately wrong
//! plugin (`tests/plugins/bad-merge`, a mean whose merge averages the two
//! means) is caught with a small failing input, and a file that is not a
//! plugin is refused with exit code 2.
//!
//! The example and test plugins come from the `sluice-test-plugins` crate,
//! which builds them from source.

use std::path::Path;
use std::process::Command;

/// Runs `sluice plugin test ARGS`; returns exit code and stdout.
fn plugin_test(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["plugin", "test"])
        .args(args)
        .output()
        .expect("sluice runs");
    (
        output.status.code().expect("exited normally"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The law lines of a run (everything after the header line).
fn law_lines(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|l| l.starts_with("PASS ") || l.starts_with("FAIL ") || l.starts_with("SKIP "))
        .collect()
}

fn assert_all_pass(args: &[&str]) {
    let (code, stdout, stderr) = plugin_test(args);
    assert_eq!(code, 0, "{args:?} should pass:\n{stdout}{stderr}");
    let lines = law_lines(&stdout);
    // Components of interface 0.2 (every built-in, the example) have
    // nine laws, those of 0.1 seven.
    assert_eq!(lines.len(), 9, "one line per law:\n{stdout}");
    for line in lines {
        assert!(
            line.starts_with("PASS ") && line.ends_with(" (100 cases)"),
            "{line}"
        );
    }
}

#[test]
fn every_builtin_passes_every_law() {
    for name in [
        "count",
        "distinct",
        "max",
        "mean",
        "min",
        "percentiles",
        "rate",
        "stats",
        "stddev",
        "sum",
        "top_k",
        "variance",
        "weighted_mean",
        "zscore",
    ] {
        assert_all_pass(&[&format!("builtin/{name}")]);
    }
    // The statistics plugins that need a configuration, with one.
    for (name, config) in [
        ("ema", r#"{"alpha":0.3}"#),
        ("rate", r#"{"window_seconds":10}"#),
        ("zscore", r#"{"threshold":1.5}"#),
        ("histogram", r#"{"buckets":[-10,0,0.5,100]}"#),
        (
            "histogram",
            r#"{"exponential":{"start":0.001,"factor":10,"count":8}}"#,
        ),
    ] {
        assert_all_pass(&[&format!("builtin/{name}"), "--config", config]);
    }
}

#[test]
fn the_example_plugin_passes_every_law() {
    let plugin = Path::new(sluice_test_plugins::SLO_BREACH);
    assert_all_pass(&[
        plugin.to_str().expect("utf-8 path"),
        "--config",
        r#"{"threshold":100}"#,
    ]);
}

#[test]
fn an_unweighted_merge_of_means_is_caught_with_a_small_input() {
    let plugin = Path::new(sluice_test_plugins::BAD_MERGE);
    let (code, stdout, stderr) = plugin_test(&[plugin.to_str().expect("utf-8 path")]);
    assert_eq!(code, 1, "a law fails:\n{stdout}{stderr}");
    let caught: Vec<&str> = law_lines(&stdout)
        .into_iter()
        .filter(|l| {
            l.starts_with("FAIL merge is associative: minimal failing input a=[")
                || l.starts_with(
                    "FAIL merging parts equals aggregating the whole: minimal failing input parts=[",
                )
        })
        .collect();
    assert!(!caught.is_empty(), "{stdout}");
    for line in &caught {
        assert!(
            line.contains(": got [") && line.contains("] want ["),
            "{line}"
        );
        // Shrunk: a handful of values, not the generated case.
        let input = line
            .split("minimal failing input ")
            .nth(1)
            .and_then(|rest| rest.split(": got").next())
            .expect("an input");
        assert!(input.matches(',').count() <= 3, "not shrunk: {line}");
    }
    // Each accumulator on its own is right: only the merge laws fail.
    for law in [
        "snapshot/restore round-trips exactly",
        "the same input gives the same output",
        "splitting batches differently changes nothing",
    ] {
        assert!(
            stdout.contains(&format!("PASS {law} (100 cases)")),
            "{stdout}"
        );
    }
}

#[test]
fn the_same_seed_checks_the_same_inputs() {
    let plugin = Path::new(sluice_test_plugins::BAD_MERGE);
    let path = plugin.to_str().expect("utf-8 path");
    let run = |seed: &str| plugin_test(&[path, "--cases", "30", "--seed", seed]).1;
    assert_eq!(run("7"), run("7"));
    assert!(run("7").contains("30 cases per law, seed 7"));
}

#[test]
fn a_file_that_is_not_a_plugin_exits_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"not a component").expect("write");
    let (code, stdout, stderr) = plugin_test(&[garbage.to_str().expect("utf-8 path")]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(
        stderr.contains("not a valid WebAssembly component"),
        "{stderr}"
    );
    assert!(law_lines(&stdout).is_empty(), "{stdout}");
}

#[test]
fn a_plugin_that_rejects_its_config_exits_2() {
    let plugin = Path::new(sluice_test_plugins::SLO_BREACH);
    let (code, _, stderr) = plugin_test(&[plugin.to_str().expect("utf-8 path")]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("rejected its config"), "{stderr}");
}

/// Runs `plugin test ARGS` on a trigger; returns exit code and the law lines.
fn trigger_laws(args: &[&str]) -> (i32, Vec<String>, String) {
    let (code, stdout, stderr) = plugin_test(args);
    let lines = law_lines(&stdout).into_iter().map(str::to_string).collect();
    (code, lines, format!("{stdout}{stderr}"))
}

#[test]
fn every_builtin_trigger_and_the_example_trigger_pass_the_trigger_laws() {
    let p99 = sluice_test_plugins::P99_ALERT;
    for args in [
        &["builtin/event-time"][..],
        &["builtin/early", "--config", r#"{"every_events":3}"#],
        &["builtin/early", "--config", r#"{"every":"2s"}"#],
        &[
            "builtin/count",
            "--trigger",
            "--config",
            r#"{"every_events":4}"#,
        ],
        &[
            p99,
            "--config",
            r#"{"column":"l.p99","above":500,"check_every":2}"#,
        ],
    ] {
        let (code, lines, out) = trigger_laws(args);
        assert_eq!(code, 0, "{args:?}:\n{out}");
        assert_eq!(lines.len(), 4, "one line per trigger law:\n{out}");
        for line in &lines {
            let stateless = line.starts_with("SKIP restore refuses an unknown state version");
            assert!(
                stateless || (line.starts_with("PASS ") && line.ends_with(" (100 cases)")),
                "{args:?}: {line}"
            );
        }
    }
}

#[test]
fn a_trigger_asking_for_a_timer_that_is_due_already_fails_that_law() {
    let (code, lines, out) = trigger_laws(&[sluice_test_plugins::TRIGGER_LIVELOCK]);
    assert_eq!(code, 1, "{out}");
    let failed: Vec<_> = lines.iter().filter(|l| l.starts_with("FAIL ")).collect();
    assert_eq!(failed.len(), 1, "{out}");
    assert!(
        failed[0].starts_with("FAIL event-time timers are later than the time called for: ")
            && failed[0].contains("which is not later than"),
        "{out}"
    );
}
