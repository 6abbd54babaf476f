//! The sandbox, proven with hostile plugins: every member of the zoo in
//! `tests/plugins/` (real components built from source by the
//! `sluice-test-plugins` crate, named by its constants) is contained, reported clearly, and
//! leaves the engine able to serve a healthy plugin.
//!
//! The zoo plugins count values like `builtin/count` and misbehave on a
//! negative value, so a test chooses which call (and, end to end, which
//! window) goes wrong.

use crate::common::{run_bounded, sluice, zoo_name};
use std::time::{Duration, Instant};

use sluice_core::plugin::Aggregation;
use sluice_core::plugin::grouped::{GroupedAggregation, PerWindow};
use sluice_wasm::registry::builtin_bytes;
use sluice_wasm::{AggregationInstance, PluginEngine, PluginLimits};

/// Small limits, so that the hostile plugins fail fast.
fn limits() -> PluginLimits {
    PluginLimits {
        call_timeout: Duration::from_millis(200),
        memory_limit: 16 << 20,
        fuel: None,
        quarantine_after: 5,
        ..PluginLimits::default()
    }
}

/// A misbehaving call must fail within this, timeouts included (generous:
/// the tests share two cores with builds).
const BOUND: Duration = Duration::from_secs(10);

/// The bytes of a test plugin (a `sluice_test_plugins` constant).
fn zoo(plugin: &str) -> Vec<u8> {
    std::fs::read(plugin).expect("readable zoo plugin")
}

/// Opens a test plugin (a `sluice_test_plugins` constant) with `config`,
/// labelled `zoo/NAME`.
fn open(engine: &PluginEngine, plugin: &str, config: &str) -> AggregationInstance {
    let name = zoo_name(plugin);
    let bytes = zoo(plugin);
    let plugin = engine
        .compile(&format!("zoo/{name}"), &bytes)
        .unwrap_or_else(|e| panic!("zoo/{name} should load: {e}"));
    engine
        .open_aggregation(&plugin, config)
        .unwrap_or_else(|e| panic!("zoo/{name} should open: {e}"))
}

/// `builtin/count` still gives the right answer on this engine.
fn assert_engine_serves_a_healthy_plugin(engine: &PluginEngine) {
    use sluice_core::plugin::grouped::{Column, GroupId, OutputValue, Rows};
    let mut count = open_builtin(engine, "count");
    let rows = Rows {
        groups: vec![GroupId(0); 3],
        times: vec![0; 3],
        columns: vec![Column::floats(vec![1.0, 2.0, 3.0])],
    };
    count.update(&rows).expect("update");
    assert_eq!(
        count.evaluate(&[GroupId(0)]).expect("evaluate"),
        vec![vec![Some(OutputValue::Integer(3))]]
    );
}

/// A built-in, opened as a pipeline opens it.
fn open_builtin(engine: &PluginEngine, name: &str) -> Box<dyn GroupedAggregation> {
    let plugin = engine
        .compile_any(name, builtin_bytes(name).expect("a built-in"))
        .unwrap_or_else(|e| panic!("{name} compiles: {e}"));
    engine
        .open_any(&plugin, "{}", name)
        .unwrap_or_else(|e| panic!("{name} opens: {e}"))
}

/// Adds a good batch, then a batch with a negative value; returns the second
/// call's error and how long it took. Checks the instance is poisoned, then
/// reopens it and shows the fresh instance works.
fn misbehave_in_add(plugin: &str) -> (String, Duration) {
    let name = zoo_name(plugin);
    let engine = PluginEngine::new(limits()).expect("engine");
    let mut agg = open(&engine, plugin, "{}");
    let acc = agg.create().expect("create");
    agg.add(acc, &[1.0, 2.0], &[0, 0])
        .expect("a good batch is fine");
    let started = Instant::now();
    let err = agg
        .add(acc, &[3.0, -1.0], &[0, 0])
        .expect_err("a negative value makes the plugin misbehave");
    let took = started.elapsed();
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("plugin zoo/{name} (zoo-{name} 0.1.0) ")),
        "the error names the plugin and its version: {message}"
    );
    assert!(took < BOUND, "{name} took {took:?} to be stopped");
    assert!(agg.is_poisoned(), "a trapped instance is not called again");
    agg.reopen().expect("a fresh instance of the same plugin");
    let acc = agg.create().expect("create after reopen");
    agg.add(acc, &[5.0], &[0]).expect("add after reopen");
    assert_eq!(agg.finish(acc).expect("finish"), vec![Some(1.0)]);
    assert_engine_serves_a_healthy_plugin(&engine);
    (message, took)
}

#[test]
fn an_infinite_loop_times_out() {
    let (message, took) = misbehave_in_add(sluice_test_plugins::INFINITE_LOOP);
    assert!(message.ends_with("timed out after 200ms"), "{message}");
    assert!(
        took >= Duration::from_millis(190),
        "stopped early: {took:?}"
    );
}

/// `plugins.inline` compiles the plugin with its functions inlined: the
/// deadline checks left in its loops still stop it at the timeout.
#[test]
fn an_inlined_infinite_loop_times_out_too() {
    let engine = PluginEngine::new(PluginLimits {
        inline: true,
        ..limits()
    })
    .expect("engine");
    let mut agg = open(&engine, sluice_test_plugins::INFINITE_LOOP, "{}");
    let acc = agg.create().expect("create");
    agg.add(acc, &[1.0], &[0]).expect("a good batch is fine");
    let started = Instant::now();
    let err = agg.add(acc, &[-1.0], &[0]).expect_err("loops").to_string();
    let took = started.elapsed();
    assert!(err.ends_with("timed out after 200ms"), "{err}");
    assert!(took < BOUND, "stopped after {took:?}");
    agg.reopen().expect("a fresh instance");
    assert_engine_serves_a_healthy_plugin(&engine);
}

#[test]
fn fuel_stops_an_infinite_loop_whatever_the_clock() {
    let engine = PluginEngine::new(PluginLimits {
        call_timeout: Duration::from_secs(60),
        fuel: Some(5_000_000),
        ..limits()
    })
    .expect("engine");
    let mut agg = open(&engine, sluice_test_plugins::INFINITE_LOOP, "{}");
    let acc = agg.create().expect("create");
    agg.add(acc, &[1.0], &[0])
        .expect("a good batch fits the budget");
    let started = Instant::now();
    let err = agg.add(acc, &[-1.0], &[0]).expect_err("loops").to_string();
    assert!(
        started.elapsed() < BOUND,
        "fuel, not the 60 s timeout, stopped it"
    );
    assert!(
        err.ends_with("ran out of fuel (budget 5000000 per call)"),
        "{err}"
    );
}

#[test]
fn a_memory_bomb_hits_the_memory_limit() {
    let (message, _) = misbehave_in_add(sluice_test_plugins::MEMORY_BOMB);
    assert!(
        message.ends_with("exceeded the memory limit of 16 MiB"),
        "{message}"
    );
}

#[test]
fn unbounded_recursion_is_a_stack_overflow() {
    let (message, _) = misbehave_in_add(sluice_test_plugins::STACK_OVERFLOW);
    assert!(message.ends_with("stack overflow"), "{message}");
}

#[test]
fn an_explicit_trap_is_reported_as_such() {
    let (message, _) = misbehave_in_add(sluice_test_plugins::UNREACHABLE);
    assert!(message.ends_with("trapped: unreachable"), "{message}");
}

#[test]
fn a_rust_panic_is_reported_with_its_message() {
    let (message, _) = misbehave_in_add(sluice_test_plugins::PANIC);
    assert!(
        message.ends_with("panicked: zoo plugin refuses negative values"),
        "{message}"
    );
}

#[test]
fn a_finish_with_the_wrong_number_of_outputs_is_refused() {
    let engine = PluginEngine::new(limits()).expect("engine");
    let mut agg = open(
        &engine,
        sluice_test_plugins::HUGE_OUTPUT,
        r#"{"entries": 100000}"#,
    );
    let acc = agg.create().expect("create");
    agg.add(acc, &[-1.0], &[0])
        .expect("add only notes the value");
    let err = agg.finish(acc).expect_err("100000 outputs, 1 declared");
    assert_eq!(
        err.to_string(),
        "plugin zoo/huge-output (zoo-huge-output 0.1.0) returned 100000 values from finish \
         but declares 1 outputs"
    );
    // The plugin returned a value: the instance is intact and keeps serving.
    assert!(!agg.is_poisoned());
    let fine = agg.create().expect("create");
    agg.add(fine, &[2.0], &[0]).expect("add");
    assert_eq!(agg.finish(fine).expect("finish"), vec![Some(1.0)]);
}

#[test]
fn a_finish_of_ten_million_outputs_is_bounded_by_the_memory_limit() {
    let engine = PluginEngine::new(limits()).expect("engine");
    // Ten million option<f64> take 160 MB in the guest: the plugin cannot
    // build the list within its limit, so the host never lifts it.
    let mut agg = open(&engine, sluice_test_plugins::HUGE_OUTPUT, "{}");
    let acc = agg.create().expect("create");
    agg.add(acc, &[-1.0], &[0]).expect("add");
    let started = Instant::now();
    let err = agg.finish(acc).expect_err("too big").to_string();
    assert!(started.elapsed() < BOUND);
    assert!(
        err.ends_with("exceeded the memory limit of 16 MiB"),
        "{err}"
    );
    assert!(agg.is_poisoned());
    assert_engine_serves_a_healthy_plugin(&engine);
}

fn refusal(name: &str, bytes: &[u8]) -> String {
    let engine = PluginEngine::new(limits()).expect("engine");
    let err = match engine.compile(name, bytes) {
        Ok(_) => panic!("{name} should be refused at load"),
        Err(e) => e.to_string(),
    };
    assert_engine_serves_a_healthy_plugin(&engine);
    err
}

#[test]
fn a_plugin_importing_the_filesystem_is_refused_at_load() {
    let err = refusal("zoo/filesystem", &zoo(sluice_test_plugins::FILESYSTEM));
    assert!(
        err.starts_with("plugin zoo/filesystem: imports wasi:filesystem/types@0.2."),
        "{err}"
    );
    assert!(
        err.ends_with("which sluice does not grant (plugins get no files, network or environment)"),
        "{err}"
    );
}

#[test]
fn a_plugin_importing_sockets_is_refused_at_load() {
    let err = refusal("zoo/sockets", &zoo(sluice_test_plugins::SOCKETS));
    assert!(
        err.contains("imports wasi:sockets/") && err.contains("wasi:sockets/tcp@0.2."),
        "{err}"
    );
    assert!(err.contains("which sluice does not grant"), "{err}");
}

#[test]
fn a_plugin_of_another_wit_version_is_refused_at_load() {
    let err = refusal("zoo/wrong-world", &zoo(sluice_test_plugins::WRONG_WORLD));
    assert_eq!(
        err,
        "plugin zoo/wrong-world: does not export sluice:plugin/aggregator@0.1.0 \
         (it exports sluice:plugin/aggregator@9.0.0); this host runs plugins built \
         against the WIT package sluice:plugin@0.1.0"
    );
}

#[test]
fn garbage_bytes_are_refused_at_load() {
    let garbage: Vec<u8> = (0u32..4096)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let err = refusal("zoo/garbage.wasm", &garbage);
    assert!(
        err.starts_with("plugin zoo/garbage.wasm: not a valid WebAssembly component"),
        "{err}"
    );
    // A wasm header followed by garbage is no better.
    let mut headed = b"\0asm\x0d\0\x01\0".to_vec();
    headed.extend_from_slice(&garbage);
    let err = refusal("zoo/headed.wasm", &headed);
    assert!(err.contains("not a valid WebAssembly component"), "{err}");
}

#[test]
fn the_builtins_import_only_what_is_granted() {
    let engine = PluginEngine::new(limits()).expect("engine");
    for name in sluice_wasm::registry::builtin_names() {
        let bytes = builtin_bytes(name).expect("built-in");
        let plugin = engine
            .compile_any(name, bytes)
            .unwrap_or_else(|e| panic!("built-in {name} must load: {e}"));
        let (imports, exports) = engine.any_world(&plugin);
        assert_eq!(exports, vec!["sluice:plugin/aggregator@0.2.0".to_string()]);
        assert!(
            imports
                .iter()
                .all(|i| !i.starts_with("wasi:filesystem") && !i.starts_with("wasi:sockets")),
            "{name}: {imports:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// End to end: the `sluice` binary with a zoo plugin beside builtin/count.

/// One event: `(time in ms, service, value)`.
type Ev = (i64, &'static str, f64);

/// Tumbling windows of 10 s.
const TUMBLING: &str = "{ tumbling: { size: 10s } }";

/// Runs a pipeline of `requests` (builtin/count) and `zoo` (the zoo plugin
/// `plugin` on field `v`) over `events`. Returns the exit code, the result
/// records and stderr.
fn run_pipeline(
    window: &str,
    plugin: &str,
    zoo_config: &str,
    plugins: &str,
    events: &[Ev],
    batch_size: usize,
) -> (i32, Vec<serde_json::Value>, String) {
    let run = run_zoo(window, plugin, zoo_config, plugins, "", events, batch_size);
    (run.code, run.records, run.stderr)
}

/// How a run of [`run_zoo`] ended.
struct Run {
    code: i32,
    records: Vec<serde_json::Value>,
    stderr: String,
    took: Duration,
    /// Peak resident memory of the `sluice` process, in bytes.
    peak_rss: u64,
}

/// Longest a pipeline run of these tests may take before it is killed and
/// the test fails: a hang must fail a test, not hold it for ever.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// [`run_pipeline`] with `extra` top-level config (`state:`, `log:`),
/// bounded in time by [`RUN_LIMIT`], measuring peak memory.
fn run_zoo(
    window: &str,
    plugin: &str,
    zoo_config: &str,
    plugins: &str,
    extra: &str,
    events: &[Ev],
    batch_size: usize,
) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lines = String::new();
    for (t, service, v) in events {
        lines.push_str(&format!(r#"{{"ts":{t},"service":"{service}","v":{v}}}"#));
        lines.push('\n');
    }
    std::fs::write(dir.path().join("events.jsonl"), lines).expect("write events");
    let config = format!(
        "source: {{ file: events.jsonl }}
event:
  key: [service]
  time: {{ field: ts, format: epoch_millis }}
watermark: {{ max_out_of_orderness: 0s }}
window: {window}
aggregations:
  - {{ name: requests, plugin: builtin/count }}
  - {{ name: zoo, plugin: '{plugin}', field: v, config: {zoo_config} }}
sink: {{ file: results.jsonl }}
late_output: {{ file: late.jsonl }}
dead_letter: {{ file: dead.jsonl }}
plugins: {plugins}
{extra}
"
    );
    let config_path = dir.path().join("pipeline.yaml");
    std::fs::write(&config_path, config).expect("write config");
    let mut cmd = sluice();
    cmd.args(["run", "--config"])
        .arg(&config_path)
        .args(["--batch-size", &batch_size.to_string()]);
    let out = run_bounded(cmd, RUN_LIMIT);
    let results = std::fs::read_to_string(dir.path().join("results.jsonl")).unwrap_or_default();
    let records = results
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad record {l}: {e}")))
        .collect();
    Run {
        code: out.code,
        records,
        stderr: out.stderr,
        took: out.took,
        peak_rss: out.peak_rss,
    }
}

const SMALL_LIMITS: &str = "{ call_timeout: 200ms, memory_limit: 16MiB }";

/// Three services over three windows; only `a` in [10 s, 20 s) sees a
/// negative value. `c` gets 1500 values in that window, so its accumulator
/// has been snapshotted (after 1024 values) and must be restored from the
/// snapshot plus the values since when the instance is lost.
fn events() -> Vec<Ev> {
    let mut ev = vec![
        (1_000, "a", 1.0),
        (2_000, "b", 4.0),
        (3_000, "a", 2.0),
        (4_000, "b", 5.0),
        (5_000, "a", 3.0),
        (11_000, "a", 2.0),
        (12_000, "b", 6.0),
    ];
    for i in 0..1500 {
        ev.push((12_000 + i, "c", 1.0));
    }
    ev.extend([
        (14_000, "a", -1.0),
        (15_000, "a", 2.5),
        (16_000, "b", 7.0),
        (21_000, "a", 7.0),
        (22_000, "b", 8.0),
        (23_000, "b", 9.0),
    ]);
    ev
}

/// `(service, window start, requests.count, zoo.count, errors.zoo)` of a record.
type Row = (String, i64, i64, Option<i64>, Option<String>);

fn summarize(records: &[serde_json::Value]) -> Vec<Row> {
    records
        .iter()
        .map(|r| {
            (
                r["key"]["service"].as_str().expect("service").to_string(),
                r["window"]["start"].as_i64().expect("start"),
                r["results"]["requests.count"].as_i64().expect("count"),
                r["results"]["zoo.count"].as_i64(),
                r.get("errors")
                    .map(|e| e["zoo"].as_str().expect("zoo error").to_string()),
            )
        })
        .collect()
}

/// The failing window reports `cause` for `zoo` only; every other window,
/// including those whose accumulators were lost with the instance, is exact.
fn assert_contained(plugin: &str, config: &str, cause: &str) {
    let name = zoo_name(plugin);
    let mut outputs = Vec::new();
    for batch_size in [1, 1024] {
        let started = Instant::now();
        let (code, records, stderr) = run_pipeline(
            TUMBLING,
            plugin,
            config,
            SMALL_LIMITS,
            &events(),
            batch_size,
        );
        assert_eq!(code, 0, "{name}: the run must succeed; stderr: {stderr}");
        assert!(
            started.elapsed() < BOUND * 3,
            "{name}: took {:?}",
            started.elapsed()
        );
        let label = format!("plugin {plugin} (zoo-{name} 0.1.0) {cause}");
        let got = summarize(&records);
        let want: Vec<Row> = vec![
            ("a".into(), 0, 3, Some(3), None),
            ("b".into(), 0, 2, Some(2), None),
            ("a".into(), 10_000, 3, None, Some(label.clone())),
            ("b".into(), 10_000, 2, Some(2), None),
            ("c".into(), 10_000, 1500, Some(1500), None),
            ("a".into(), 20_000, 1, Some(1), None),
            ("b".into(), 20_000, 2, Some(2), None),
        ];
        assert_eq!(got, want, "{name} with batch size {batch_size}");
        assert!(
            stderr.contains(&label),
            "{name}: the failure is logged: {stderr}"
        );
        assert!(
            stderr.contains("1513 events read, 7 windows emitted, 0 late, 0 dead-lettered"),
            "{name}: no event lost: {stderr}"
        );
        let failing = records
            .iter()
            .find(|r| r.get("errors").is_some())
            .expect("a record with errors");
        assert_eq!(failing["results"]["zoo.count"], serde_json::Value::Null);
        outputs.push(records);
    }
    assert_eq!(
        outputs[0], outputs[1],
        "{name}: batch size changed the output"
    );
}

#[test]
fn end_to_end_a_panic_fails_one_window_of_one_aggregation() {
    assert_contained(
        sluice_test_plugins::PANIC,
        "{}",
        "panicked: zoo plugin refuses negative values",
    );
}

#[test]
fn end_to_end_an_infinite_loop_fails_one_window_of_one_aggregation() {
    assert_contained(
        sluice_test_plugins::INFINITE_LOOP,
        "{}",
        "timed out after 200ms",
    );
}

#[test]
fn end_to_end_a_memory_bomb_fails_one_window_of_one_aggregation() {
    assert_contained(
        sluice_test_plugins::MEMORY_BOMB,
        "{}",
        "exceeded the memory limit of 16 MiB",
    );
}

#[test]
fn end_to_end_a_stack_overflow_fails_one_window_of_one_aggregation() {
    assert_contained(sluice_test_plugins::STACK_OVERFLOW, "{}", "stack overflow");
}

#[test]
fn end_to_end_a_trap_fails_one_window_of_one_aggregation() {
    assert_contained(
        sluice_test_plugins::UNREACHABLE,
        "{}",
        "trapped: unreachable",
    );
}

#[test]
fn end_to_end_a_huge_finish_fails_one_window_of_one_aggregation() {
    // Refused without losing the instance.
    assert_contained(
        sluice_test_plugins::HUGE_OUTPUT,
        r#"{"entries": 100000}"#,
        "returned 100000 values from finish but declares 1 outputs",
    );
    // Too big to build: the instance is lost and the others rebuilt.
    assert_contained(
        sluice_test_plugins::HUGE_OUTPUT,
        "{}",
        "exceeded the memory limit of 16 MiB",
    );
}

#[test]
fn end_to_end_consecutive_failures_quarantine_the_aggregation_only() {
    let events: Vec<Ev> = vec![
        (1_000, "a", 1.0),
        (2_000, "a", -1.0),
        (3_000, "b", -2.0),
        (4_000, "c", 1.0),
        (11_000, "a", 1.0),
        (12_000, "b", 2.0),
    ];
    let limits = "{ call_timeout: 200ms, memory_limit: 16MiB, quarantine_after: 2 }";
    for batch_size in [1, 1024] {
        let (code, records, stderr) = run_pipeline(
            TUMBLING,
            sluice_test_plugins::PANIC,
            "{}",
            limits,
            &events,
            batch_size,
        );
        assert_eq!(code, 0, "stderr: {stderr}");
        let label = format!("plugin {} (zoo-panic 0.1.0)", sluice_test_plugins::PANIC);
        let panicked = format!("{label} panicked: zoo plugin refuses negative values");
        let quarantined = format!(
            "{panicked} (failure 2 in a row: {label} is quarantined for the rest of the run)"
        );
        let got = summarize(&records);
        let want: Vec<Row> = vec![
            ("a".into(), 0, 2, None, Some(panicked.clone())),
            ("b".into(), 0, 1, None, Some(panicked.clone())),
            ("c".into(), 0, 1, None, Some(quarantined.clone())),
            ("a".into(), 10_000, 1, None, Some(quarantined.clone())),
            ("b".into(), 10_000, 1, None, Some(quarantined.clone())),
        ];
        assert_eq!(got, want, "batch size {batch_size}");
        assert!(
            stderr.contains(&format!("quarantined {label} after 2 consecutive failures")),
            "{stderr}"
        );
        assert!(
            stderr.contains("6 events read, 5 windows emitted"),
            "{stderr}"
        );
    }
}

#[test]
fn end_to_end_a_refused_plugin_stops_the_run_before_any_event() {
    let (code, records, stderr) = run_pipeline(
        TUMBLING,
        sluice_test_plugins::FILESYSTEM,
        "{}",
        SMALL_LIMITS,
        &events(),
        1024,
    );
    assert_eq!(code, 2, "a bad plugin is a configuration error: {stderr}");
    assert!(records.is_empty());
    assert!(
        stderr.contains("imports wasi:filesystem/types@0.2.")
            && stderr.contains("which sluice does not grant"),
        "{stderr}"
    );
}

#[test]
fn end_to_end_a_failed_pane_fails_the_sliding_windows_that_cover_it() {
    let events: Vec<Ev> = vec![
        (1_000, "a", 1.0),
        (6_000, "a", 2.0),
        (7_000, "b", 2.0),
        (11_000, "a", -1.0),
        (12_000, "b", 3.0),
        (16_000, "a", 3.0),
    ];
    let sliding = "{ sliding: { size: 10s, slide: 5s } }";
    let label = format!("plugin {} (zoo-panic 0.1.0)", sluice_test_plugins::PANIC);
    let panicked = Some(format!(
        "{label} panicked: zoo plugin refuses negative values"
    ));
    for batch_size in [1, 1024] {
        let (code, records, stderr) = run_pipeline(
            sliding,
            sluice_test_plugins::PANIC,
            "{}",
            SMALL_LIMITS,
            &events,
            batch_size,
        );
        assert_eq!(code, 0, "stderr: {stderr}");
        let mut got = summarize(&records);
        got.sort_by(|x, y| (&x.0, x.1).cmp(&(&y.0, y.1)));
        let want: Vec<Row> = vec![
            ("a".into(), -5_000, 1, Some(1), None),
            ("a".into(), 0, 2, Some(2), None),
            ("a".into(), 5_000, 2, None, panicked.clone()),
            ("a".into(), 10_000, 2, None, panicked.clone()),
            ("a".into(), 15_000, 1, Some(1), None),
            ("b".into(), 0, 1, Some(1), None),
            ("b".into(), 5_000, 2, Some(2), None),
            ("b".into(), 10_000, 1, Some(1), None),
        ];
        assert_eq!(got, want, "batch size {batch_size}");
    }
}

#[test]
fn end_to_end_a_failed_session_half_fails_the_merged_session() {
    // Sessions with a 3 s gap and 10 s of allowed lateness. a's [1 s, 4 s)
    // fires when the event at 6 s (which fails) opens [6 s, 9 s); the late
    // event at 3.5 s then bridges the two. Half the merged session has no
    // result for `zoo`, so neither has the whole; `requests` counts all 3.
    let events: Vec<Ev> = vec![
        (1_000, "a", 1.0),
        (1_500, "b", 1.0),
        (2_500, "b", 1.0),
        (6_000, "a", -1.0),
        (3_500, "a", 2.0),
        (30_000, "c", 1.0),
    ];
    let session = "{ session: { gap: 3s } }\nallowed_lateness: 10s";
    let label = format!("plugin {} (zoo-panic 0.1.0)", sluice_test_plugins::PANIC);
    let panicked = Some(format!(
        "{label} panicked: zoo plugin refuses negative values"
    ));
    for batch_size in [1, 1024] {
        let (code, records, stderr) = run_pipeline(
            session,
            sluice_test_plugins::PANIC,
            "{}",
            SMALL_LIMITS,
            &events,
            batch_size,
        );
        assert_eq!(code, 0, "stderr: {stderr}");
        let got = summarize(&records);
        let want: Vec<Row> = vec![
            ("a".into(), 1_000, 1, Some(1), None),
            ("b".into(), 1_500, 2, Some(2), None),
            ("a".into(), 1_000, 3, None, panicked.clone()),
            ("c".into(), 30_000, 1, Some(1), None),
        ];
        assert_eq!(got, want, "batch size {batch_size}: {stderr}");
    }
}

/// A sliding window whose pane failed reports the same error, and every
/// other window the same numbers, whether results come from partial
/// aggregates or from merging every pane afresh: a failed pane sends its
/// windows the plain way, and the instance rebuilt after the panic drops
/// the partials it held.
#[test]
fn a_failed_pane_gives_the_same_sliding_results_with_or_without_partials() {
    use sluice_core::window::{WindowOperator, WindowSpec};
    let run = |partials: bool| {
        let engine = PluginEngine::new(limits()).expect("engine");
        let aggs = vec![
            PerWindow::boxed(Box::new(open(&engine, sluice_test_plugins::PANIC, "{}"))),
            open_builtin(&engine, "count"),
        ];
        let triggers = sluice::pipeline::default_trigger(&engine).expect("trigger");
        let spec = WindowSpec::Sliding {
            size: 1_000,
            slide: 100,
            offset: 0,
        };
        let mut op = WindowOperator::new(spec, 0, aggs, triggers, 4, 5);
        op.set_sliding_partials(partials);
        let mut out = Vec::new();
        for i in 0..400i64 {
            let (key, time) = ((i % 2) as u32, i * 25);
            // One negative value, in key 1's pane at 5 s: the plugin panics.
            let value = if i == 201 { -1.0 } else { 1.0 };
            let watermark = time - 200;
            op.on_event(key, time, &[Some(value), Some(value)], watermark, &mut out)
                .expect("event");
            op.on_watermark(watermark, &mut out).expect("watermark");
        }
        op.on_watermark(i64::MAX, &mut out).expect("end");
        out
    };
    let plain = run(false);
    let fast = run(true);
    assert!(
        plain.iter().any(|r| !r.errors.is_empty()),
        "the panic fails some windows"
    );
    assert!(
        plain.iter().filter(|r| r.errors.is_empty()).count() > 100,
        "the other windows have results"
    );
    assert_eq!(plain, fast);
}

// ---------------------------------------------------------------------------
// Hostile plugins that trap nothing: a wait inside WASI, a huge snapshot,
// printing, a wrong output type, strings made to forge or flood the log.

/// Runs `f` on a thread of its own and fails the test if it has not
/// returned within `limit`: a call that hangs in the host must fail a test,
/// not hold it for ever.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(f());
    });
    result
        .recv_timeout(limit)
        .unwrap_or_else(|_| panic!("still running after {limit:?}"))
}

#[test]
fn waiting_on_the_stopped_clock_is_over_at_once() {
    // `add` blocks on a pollable for u64::MAX ns, polls one for an instant
    // that never comes and one for 3 s, then sleeps 3 s through `std`:
    // every wait must end at once, in a host that never waits in real time.
    let (values, took) = within(BOUND, || {
        let engine = PluginEngine::new(limits()).expect("engine");
        let mut agg = open(
            &engine,
            sluice_test_plugins::CLOCK_BLOCK,
            r#"{"then": "count"}"#,
        );
        let acc = agg.create().expect("create");
        let started = Instant::now();
        agg.add(acc, &[1.0, -1.0], &[0, 0])
            .expect("the waits return and the plugin counts");
        let took = started.elapsed();
        (agg.finish(acc).expect("finish"), took)
    });
    assert_eq!(values, vec![Some(2.0)]);
    // Far below the 3 s of the shortest wait, and below the call deadline.
    assert!(took < Duration::from_millis(200), "the waits took {took:?}");
}

#[test]
fn end_to_end_a_plugin_waiting_for_its_clock_to_move_fails_one_window() {
    // Waits on the clock, then for it to move: the first wait hung a host
    // whose clocks sleep in real time; here the loop meets the deadline.
    assert_contained(
        sluice_test_plugins::CLOCK_BLOCK,
        "{}",
        "timed out after 200ms",
    );
}

/// Each of `SNAPSHOT_KEYS` services gets 1100 values in [0 s, 10 s), so
/// that each accumulator is snapshotted (after 4096 values); all but the
/// last two see a negative value, which makes zoo/snapshot-bomb's
/// snapshot 40 MiB.
const SNAPSHOT_KEYS: [&str; 16] = [
    "s00", "s01", "s02", "s03", "s04", "s05", "s06", "s07", "s08", "s09", "s10", "s11", "s12",
    "s13", "ok1", "ok2",
];

/// Values per key: past the store's replay limit, within one 10 s window.
const SNAPSHOT_VALUES: i64 = 4200;

fn snapshot_events() -> Vec<Ev> {
    let mut events = Vec::new();
    for i in 0..SNAPSHOT_VALUES {
        for (k, &service) in SNAPSHOT_KEYS.iter().enumerate() {
            let poisoned = i == 7 && service.starts_with('s');
            events.push((
                i * 2 + k as i64 % 2,
                service,
                if poisoned { -1.0 } else { 1.0 },
            ));
        }
    }
    events.push((20_000, "ok1", 1.0));
    events
}

/// With 64 MiB of plugin memory a snapshot of 40 MiB can be built; 14 of
/// them, kept per window and copied into checkpoints, took the host to
/// nearly a GiB. Each is refused instead (the window reports it), and the
/// host stays under `SNAPSHOT_RSS_BOUND`: the plugin's own 64 MiB, one
/// 40 MiB snapshot being refused, and the rest of the host.
const SNAPSHOT_RSS_BOUND: u64 = 320 << 20;

#[test]
fn end_to_end_an_oversized_snapshot_fails_its_window_and_memory_stays_bounded() {
    let limits = "{ call_timeout: 2s, quarantine_after: 0 }";
    let label = format!(
        "plugin {} (zoo-snapshot-bomb 0.1.0) returned a snapshot of 40 MiB, over the \
         snapshot limit of 4 MiB",
        sluice_test_plugins::SNAPSHOT_BOMB
    );
    for state in [
        "",
        "state: { backend: rocksdb, path: state, checkpoint_interval: 100ms }",
    ] {
        let run = run_zoo(
            TUMBLING,
            sluice_test_plugins::SNAPSHOT_BOMB,
            "{}",
            limits,
            state,
            &snapshot_events(),
            1024,
        );
        assert_eq!(run.code, 0, "{state}: {}", run.stderr);
        assert!(
            run.peak_rss < SNAPSHOT_RSS_BOUND,
            "{state}: peak RSS {} MiB",
            run.peak_rss >> 20
        );
        let got = summarize(&run.records);
        let mut want: Vec<Row> = SNAPSHOT_KEYS
            .iter()
            .map(|&s| {
                let failed = s.starts_with('s');
                (
                    s.to_string(),
                    0,
                    SNAPSHOT_VALUES,
                    (!failed).then_some(SNAPSHOT_VALUES),
                    failed.then(|| label.clone()),
                )
            })
            .collect();
        want.push(("ok1".into(), 20_000, 1, Some(1), None));
        let mut got_sorted = got.clone();
        got_sorted.sort();
        want.sort();
        assert_eq!(got_sorted, want, "{state}");
        assert!(run.stderr.contains(&label), "{state}: {}", run.stderr);
    }
}

#[test]
fn end_to_end_a_plugin_that_prints_is_logged_not_killed() {
    let path = sluice_test_plugins::CHATTY.to_string();
    let who = format!("aggregation `zoo` (plugin {path} (zoo-chatty 0.1.0))");
    // Every line logged: one per call on each stream, each attributed, the
    // hostile ones escaped and cut.
    let run = run_zoo(
        TUMBLING,
        sluice_test_plugins::CHATTY,
        "{}",
        "{ log_lines_per_second: 1000000 }",
        "",
        &events(),
        1024,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_exact_and_clean(&run.records);
    for stream in ["stderr", "stdout"] {
        assert!(
            run.stderr.contains(&format!(
                "{who} {stream}: chatty finish:          3 values so far -----"
            )),
            "{stream}: {}",
            run.stderr
        );
    }
    assert_no_forged_line(&run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "{who} stderr: 2030-01-01T00:00:00.000000Z  WARN forged: the host is compromised"
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!(
            "{who} stderr: \\u{{1b}}[2J\\u{{1b}}[Hterminal cleared\\r2030-01-01T00:00:00"
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(" [cut: 1048576 bytes in all]"),
        "the 1 MiB line is cut"
    );
    assert!(
        run.stderr
            .contains(&format!("{who} stderr: after the long line"))
    );
    assert!(
        run.stderr.len() < 64 << 10,
        "{} bytes of log",
        run.stderr.len()
    );

    // At the default rate, a line per value is mostly counted, not logged:
    // a burst of 100 lines, then 10 a second.
    let run = run_zoo(
        TUMBLING,
        sluice_test_plugins::CHATTY,
        "{}",
        "{}",
        "",
        &events(),
        1,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_exact_and_clean(&run.records);
    let logged = run
        .stderr
        .lines()
        .filter(|l| l.contains(&format!("{who} std")))
        .count();
    let allowed = 100 + 10 * run.took.as_secs_f64().ceil() as usize;
    assert!(
        (100..=allowed).contains(&logged),
        "{logged} lines logged, at most {allowed} allowed"
    );
    assert!(
        run.stderr
            .contains("lines of plugin output not logged (over 10 lines per second)"),
        "{}",
        run.stderr
    );
}

/// Every window of `events()` with `zoo.count` equal to `requests.count`
/// and no error.
fn assert_exact_and_clean(records: &[serde_json::Value]) {
    assert_eq!(records.len(), 7);
    for r in records {
        assert!(r.get("errors").is_none(), "{r}");
        assert_eq!(
            r["results"]["zoo.count"], r["results"]["requests.count"],
            "{r}"
        );
    }
}

/// No line of the host's log is one a plugin wrote: each starts as the
/// host's own do, and nothing in it can move a terminal's cursor.
fn assert_no_forged_line(log: &str) {
    for line in log.lines() {
        assert!(!line.starts_with("2030-"), "forged line: {line}");
    }
    assert!(!log.contains('\u{1b}'), "a terminal escape reached the log");
    assert!(!log.contains('\r'), "a carriage return reached the log");
}

#[test]
fn end_to_end_a_fraction_for_an_integer_output_fails_one_window() {
    // Window a [10 s, 20 s) has 3 values, one negative: 3.5, then NaN.
    assert_contained(
        sluice_test_plugins::WRONG_TYPE,
        "{}",
        "returned 3.5 for integer output `count`, which must be integral",
    );
    assert_contained(
        sluice_test_plugins::WRONG_TYPE,
        r#"{"value": "nan"}"#,
        "returned NaN for integer output `count`, which must be integral",
    );
}

#[test]
fn a_plugin_name_over_the_limit_is_refused_at_load_in_few_words() {
    let engine = PluginEngine::new(limits()).expect("engine");
    let plugin = engine
        .compile("zoo/long-name", &zoo(sluice_test_plugins::LONG_NAME))
        .expect("a valid component");
    let err = match engine.open_aggregation(&plugin, "{}") {
        Ok(_) => panic!("a 256 KiB name must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.starts_with(
            "plugin zoo/long-name: declares a name of 262144 bytes (nnnnnnnnnnnnnnnnnnnn"
        ),
        "{err}"
    );
    assert!(
        err.ends_with(" [cut: 262144 bytes in all]), longer than the 128 bytes allowed"),
        "{err}"
    );
    assert!(err.len() < 200, "{} bytes", err.len());
    assert_engine_serves_a_healthy_plugin(&engine);

    let (code, records, stderr) = run_pipeline(
        TUMBLING,
        sluice_test_plugins::LONG_NAME,
        "{}",
        SMALL_LIMITS,
        &events(),
        1024,
    );
    assert_eq!(
        code, 2,
        "a refused plugin is a configuration error: {stderr}"
    );
    assert!(records.is_empty());
    assert!(
        stderr.contains("declares a name of 262144 bytes"),
        "{stderr}"
    );
    assert!(
        stderr.len() < 1024,
        "{} bytes of log: {stderr}",
        stderr.len()
    );
}

/// How zoo/log-forge names itself in errors: its name, escaped.
fn forge_label(source: &str) -> String {
    format!(
        "plugin {source} (zoo-log-forge\\n2030-01-01T00:00:00.000000Z  WARN forged: by the \
         plugin name 0.1.0)"
    )
}

#[test]
fn a_flood_refusing_the_config_is_cut_and_escaped() {
    // Room for the plugin to build its 10 MiB message.
    let engine = PluginEngine::new(PluginLimits {
        memory_limit: 64 << 20,
        ..limits()
    })
    .expect("engine");
    let plugin = engine
        .compile("zoo/log-forge", &zoo(sluice_test_plugins::LOG_FORGE))
        .expect("compiles");
    let err = match engine.open_aggregation(&plugin, r#"{"open_error": 10485760}"#) {
        Ok(_) => panic!("the config is refused"),
        Err(e) => e.to_string(),
    };
    let start = format!(
        "{} rejected its config: refused\\n2030-01-01T00:00:00.000000Z  WARN forged: the host is \
         compromised\\u{{1b}}[31m\\n2030",
        forge_label("zoo/log-forge")
    );
    assert!(err.starts_with(&start), "{err}");
    assert!(err.ends_with(" bytes in all]"), "{err}");
    assert!(!err.contains('\n') && !err.contains('\u{1b}'), "{err}");
    // The message limit (1 KiB), the label and the marker.
    assert!(err.len() < 1400, "{} bytes", err.len());

    let (code, _, stderr) = run_pipeline(
        TUMBLING,
        sluice_test_plugins::LOG_FORGE,
        r#"{"open_error": 10485760}"#,
        "{}",
        &events(),
        1024,
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("rejected its config: refused\\n2030"),
        "{stderr}"
    );
    assert!(stderr.len() < 2048, "{} bytes of log", stderr.len());
    assert_no_forged_line(&stderr);
}

#[test]
fn end_to_end_a_flood_of_merge_errors_is_cut_in_each_record_and_log_line() {
    // Sliding windows merge panes; every merge with a's pane at [10 s, 15 s)
    // (which saw -1) fails with 1 MiB of forged lines.
    let events: Vec<Ev> = vec![
        (1_000, "a", 1.0),
        (6_000, "a", 2.0),
        (7_000, "b", 2.0),
        (11_000, "a", -1.0),
        (12_000, "b", 3.0),
        (16_000, "a", 3.0),
    ];
    let sliding = "{ sliding: { size: 10s, slide: 5s } }";
    let label = forge_label(sluice_test_plugins::LOG_FORGE);
    for (config, cause) in [
        (
            "{}",
            "merge failed: refused\\n2030-01-01T00:00:00.000000Z  WARN forged",
        ),
        (
            r#"{"fail": "panic"}"#,
            "panicked: refused\n2030-01-01T00:00:00.000000Z  WARN forged",
        ),
    ] {
        let limits = "{ call_timeout: 200ms, memory_limit: 16MiB, quarantine_after: 0 }";
        let run = run_zoo(
            sliding,
            sluice_test_plugins::LOG_FORGE,
            config,
            limits,
            "",
            &events,
            1,
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
        let mut failed = 0;
        for r in &run.records {
            let start = r["window"]["start"].as_i64().expect("start");
            let service = r["key"]["service"].as_str().expect("service");
            match r["errors"]["zoo"].as_str() {
                Some(why) => {
                    failed += 1;
                    assert_eq!(
                        (service, start == 5_000 || start == 10_000),
                        ("a", true),
                        "{r}"
                    );
                    // A panic's message lines are read apart, so the first
                    // newline is the one between them, escaped at the end.
                    let cause = cause.replace('\n', "\\n");
                    assert!(why.starts_with(&format!("{label} {cause}")), "{why}");
                    assert!(why.ends_with(" bytes in all]"), "{why}");
                    assert!(why.len() < 1024 + label.len() + 64, "{} bytes", why.len());
                }
                None => assert_eq!(r["results"]["zoo.count"], r["results"]["requests.count"]),
            }
        }
        assert_eq!(failed, 2, "{config}: {:?}", run.records);
        assert_no_forged_line(&run.stderr);
        assert!(
            run.stderr.len() < 32 << 10,
            "{} bytes of log",
            run.stderr.len()
        );
    }
}

#[test]
fn an_exit_is_reported_by_its_cause_not_a_backtrace() {
    let (message, _) = misbehave_in_add(sluice_test_plugins::EXIT);
    assert!(
        message.ends_with("exited (wasi:cli/exit) with status 1"),
        "{message}"
    );
    assert!(!message.contains("backtrace"), "{message}");
}

#[test]
fn end_to_end_the_wasm_backtrace_of_a_failure_is_logged_at_debug_level_only() {
    let cause = "exited (wasi:cli/exit) with status 1";
    assert_contained(sluice_test_plugins::EXIT, "{}", cause);
    let run = run_zoo(
        TUMBLING,
        sluice_test_plugins::EXIT,
        "{}",
        SMALL_LIMITS,
        "log: { level: debug }",
        &events(),
        1024,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let traced = run
        .stderr
        .lines()
        .find(|l| l.contains("DEBUG") && l.contains("wasm backtrace"))
        .unwrap_or_else(|| panic!("no backtrace at debug level: {}", run.stderr));
    assert!(traced.contains("zoo-exit"), "{traced}");
    let why = run
        .records
        .iter()
        .find_map(|r| r["errors"]["zoo"].as_str())
        .expect("the failed window");
    assert!(why.ends_with(cause), "{why}");
}
