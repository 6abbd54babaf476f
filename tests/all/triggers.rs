//! Triggers end to end, beyond the golden cases: the custom p99-alert
//! trigger from `examples/` running from its config, processing-time early
//! firings on a live input, and a trigger that traps or hangs (windows still
//! fire on time by the host's rule, with the error reported).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::common::{Bounded, generate, run_bounded, sluice, zoo_name};
use serde_json::Value;

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("result is JSON"))
        .collect()
}

/// Writes a pipeline over `input` with the given `trigger:` block (or none).
fn pipeline(dir: &Path, name: &str, input: &str, trigger: &str, extra: &str) -> PathBuf {
    let config = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &config,
        format!(
            r#"source: {{ file: {input} }}
event:
  key: [service]
  time: {{ field: ts, format: epoch_millis }}
watermark: {{ max_out_of_orderness: 3s }}
window: {{ tumbling: {{ size: 10s }} }}
allowed_lateness: 40s
aggregations:
  - {{ name: n, plugin: builtin/count }}
  - {{ name: latency_pct, plugin: builtin/percentiles, field: latency_ms, config: {{ quantiles: [0.99] }} }}
{trigger}
{extra}
sink: {{ file: {name}-results.jsonl }}
late_output: {{ file: {name}-late.jsonl }}
dead_letter: {{ file: {name}-dead.jsonl }}
"#
        ),
    )
    .expect("writing config");
    config
}

/// Longest a run may take before it is killed and the test fails: a
/// trigger that livelocks the host must fail a test, not hold it for ever.
const RUN_LIMIT: Duration = Duration::from_secs(120);

fn run(config: &Path) -> Bounded {
    let mut cmd = sluice();
    cmd.args(["run", "--config"]).arg(config);
    let out = run_bounded(cmd, RUN_LIMIT);
    assert_eq!(out.code, 0, "sluice failed: {}", out.stderr);
    out
}

fn of_kind<'a>(results: &'a [Value], emit: &str) -> Vec<&'a Value> {
    results.iter().filter(|r| r["emit"] == emit).collect()
}

#[test]
fn p99_alert_fires_early_once_above_the_threshold_and_changes_nothing_else() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("events.jsonl"), generate(20_000)).expect("input");
    let plugin = Path::new(sluice_test_plugins::P99_ALERT);
    let alert = pipeline(
        dir.path(),
        "alert",
        "events.jsonl",
        &format!(
            "trigger: {{ plugin: {}, config: {{ column: latency_pct.p99, above: 3900, check_every: 5 }} }}",
            plugin.display()
        ),
        "",
    );
    let plain = pipeline(dir.path(), "plain", "events.jsonl", "", "");
    run(&alert);
    run(&plain);
    let with = records(&dir.path().join("alert-results.jsonl"));
    let without = records(&dir.path().join("plain-results.jsonl"));

    // Everything but the early alerts is what the default trigger emits.
    let rest: Vec<&Value> = with.iter().filter(|r| r["emit"] != "early").collect();
    assert_eq!(rest, without.iter().collect::<Vec<_>>());

    let early = of_kind(&with, "early");
    assert!(!early.is_empty(), "no window crossed the threshold");
    let mut seen = std::collections::HashSet::new();
    for r in &early {
        let p99 = r["results"]["latency_pct.p99"].as_f64().expect("p99");
        assert!(p99 > 3900.0, "early alert below the threshold: {r}");
        let id = (r["key"].to_string(), r["window"]["start"].as_i64());
        assert!(seen.insert(id), "two alerts for one window: {r}");
        // An alert comes before its window's on-time result, with fewer events.
        let on_time = without
            .iter()
            .find(|w| w["key"] == r["key"] && w["window"] == r["window"] && w["emit"] == "on_time")
            .expect("on-time result of an alerted window");
        assert!(r["results"]["n.count"].as_u64() <= on_time["results"]["n.count"].as_u64());
    }
}

#[test]
fn processing_time_early_firings_on_a_live_input() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = pipeline(
        dir.path(),
        "clock",
        "\"-\"",
        "trigger: { plugin: builtin/early, config: { every: 100ms } }",
        "",
    );
    let mut child = sluice()
        .args(["run", "--batch-size", "1", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting sluice");
    let mut stdin = child.stdin.take().expect("stdin");
    for i in 0..8 {
        let line = format!(
            "{{\"ts\":{},\"service\":\"a\",\"latency_ms\":{}}}\n",
            1_700_000_000_000i64 + i * 100,
            100 + i
        );
        stdin.write_all(line.as_bytes()).expect("writing");
        stdin.flush().expect("flushing");
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(stdin);
    let out = child.wait_with_output().expect("sluice ends");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results = records(&dir.path().join("clock-results.jsonl"));
    let early = of_kind(&results, "early");
    assert!(
        early.len() >= 2,
        "a 100ms clock over 2 s of live input fired early {} times: {results:?}",
        early.len()
    );
    // Early results are cumulative and never exceed the final count.
    let counts: Vec<u64> = early
        .iter()
        .filter_map(|r| r["results"]["n.count"].as_u64())
        .collect();
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
    let on_time = of_kind(&results, "on_time");
    assert_eq!(on_time.len(), 1);
    assert_eq!(on_time[0]["results"]["n.count"], 8);
}

#[test]
fn a_trigger_that_traps_or_hangs_still_fires_on_time_with_the_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("events.jsonl"), generate(5_000)).expect("input");
    let trap = Path::new(sluice_test_plugins::TRIGGER_TRAP);
    let hostile = pipeline(
        dir.path(),
        "hostile",
        "events.jsonl",
        &format!("trigger: {{ plugin: {} }}", trap.display()),
        "plugins: { call_timeout: 200ms, quarantine_after: 1000 }",
    );
    let plain = pipeline(dir.path(), "plain", "events.jsonl", "", "");
    run(&hostile);
    run(&plain);
    let with = records(&dir.path().join("hostile-results.jsonl"));
    let without = records(&dir.path().join("plain-results.jsonl"));
    // Same windows, same numbers, same order: only the errors differ.
    assert_eq!(with.len(), without.len());
    let mut cursed = 0;
    for (a, b) in with.iter().zip(&without) {
        assert_eq!(
            (&a["key"], &a["window"], &a["emit"], &a["results"]),
            (&b["key"], &b["window"], &b["emit"], &b["results"])
        );
        let start = a["window"]["start"].as_i64().expect("start");
        let why = a["errors"]["trigger"].as_str();
        match (start.rem_euclid(60_000), a["emit"].as_str()) {
            // Panics at the window's end: the on-time result and any late
            // one after it report it (a window opened late never got there).
            (0, Some("on_time")) => {
                cursed += 1;
                let why = why.unwrap_or_else(|| panic!("no trigger error: {a}"));
                assert!(
                    why.contains("trigger-trap") && why.contains("panicked"),
                    "{why}"
                );
            }
            (0, _) => assert!(why.is_none_or(|w| w.contains("panicked")), "{a}"),
            // Hangs on a window's first element.
            (30_000, _) => {
                cursed += 1;
                let why = why.unwrap_or_else(|| panic!("no trigger error: {a}"));
                assert!(
                    why.contains("trigger-trap") && why.contains("timed out"),
                    "{why}"
                );
            }
            _ => assert!(a.get("errors").is_none(), "{a}"),
        }
    }
    assert!(cursed > 0, "no window started on a whole or half minute");
}

/// Runs the pipeline with the test trigger `plugin` (config `config`) and the
/// same pipeline with the default trigger over the same events; checks
/// they emit the same windows with the same numbers in the same order, the
/// hostile one reporting a trigger error that contains `cause` for some.
/// Returns both runs.
fn same_as_the_event_time_rule(
    plugin: &str,
    config: &str,
    events: usize,
    cause: &str,
) -> (Bounded, Bounded) {
    let name = zoo_name(plugin);
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("events.jsonl"), generate(events)).expect("input");
    let hostile = pipeline(
        dir.path(),
        "hostile",
        "events.jsonl",
        &format!("trigger: {{ plugin: {plugin}, config: {config} }}"),
        "plugins: { quarantine_after: 0 }",
    );
    let plain = pipeline(dir.path(), "plain", "events.jsonl", "", "");
    let hostile_run = run(&hostile);
    let plain_run = run(&plain);
    let with = records(&dir.path().join("hostile-results.jsonl"));
    let without = records(&dir.path().join("plain-results.jsonl"));
    assert_eq!(with.len(), without.len());
    let mut failed = 0;
    for (a, b) in with.iter().zip(&without) {
        assert_eq!(
            (&a["key"], &a["window"], &a["emit"], &a["results"]),
            (&b["key"], &b["window"], &b["emit"], &b["results"])
        );
        if let Some(errors) = a.get("errors") {
            let why = errors["trigger"].as_str().unwrap_or_else(|| panic!("{a}"));
            assert!(
                why.contains(&format!("zoo-{name}")) && why.contains(cause),
                "{why}"
            );
            failed += 1;
        }
    }
    assert!(failed > 0, "no window reported the trigger's failure");
    assert!(
        hostile_run.stderr.contains(cause),
        "the failure is logged: {}",
        hostile_run.stderr
    );
    (hostile_run, plain_run)
}

#[test]
fn a_trigger_asking_for_the_instant_it_is_called_for_fails_instead_of_livelocking() {
    // Every call for a timer asks for a timer at that instant: already due,
    // so the host called it again for ever, each call fast.
    same_as_the_event_time_rule(
        sluice_test_plugins::TRIGGER_LIVELOCK,
        "{ step: 0 }",
        5_000,
        "which is not later",
    );
}

#[test]
fn a_trigger_chaining_timers_through_every_millisecond_is_stopped_each_watermark_step() {
    use sluice_core::window::{TRIGGER_ERROR, Triggers, WindowOperator, WindowSpec};
    use sluice_wasm::registry::builtin_bytes;
    use sluice_wasm::{PluginEngine, PluginLimits};
    // One window a billion milliseconds long, its trigger asking for the
    // next millisecond each time: one jump of the watermark to the end of
    // input made as many calls, unless the calls per window and step are
    // capped (`timers_per_window`, 1024 by default).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let engine = PluginEngine::new(PluginLimits::default()).expect("engine");
        let bytes = std::fs::read(sluice_test_plugins::TRIGGER_LIVELOCK).expect("zoo trigger");
        let compiled = engine
            .compile_trigger("zoo/trigger-livelock", &bytes)
            .expect("compiles");
        let trigger = engine
            .open_trigger(&compiled, r#"{"step": 1}"#)
            .expect("opens");
        let count = engine
            .compile_any("count", builtin_bytes("count").expect("count"))
            .expect("compiles");
        let aggs = vec![engine.open_any(&count, "{}", "count").expect("opens")];
        let spec = WindowSpec::Tumbling {
            size: 1_000_000_000,
            offset: 0,
        };
        let limits = PluginLimits {
            quarantine_after: 0,
            ..PluginLimits::default()
        };
        let triggers = Triggers::new(Box::new(trigger), Vec::new(), &limits);
        let mut op = WindowOperator::new(spec, 0, aggs, triggers, 8, 0);
        let mut out = Vec::new();
        op.on_event(7, 5, &[Some(1.0)], 0, &mut out).expect("event");
        op.on_watermark(i64::MAX, &mut out).expect("end of input");
        let _ = tx.send((out, op.trigger_failures()));
    });
    let (out, failures) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the watermark step ends");
    assert_eq!(failures, 1);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].numbers(), vec![vec![Some(1.0)]]);
    let (index, why) = &out[0].errors[0];
    assert_eq!(*index, TRIGGER_ERROR);
    assert!(
        why.contains("kept asking for event-time timers: more than 1024 fell due by watermark"),
        "{why}"
    );
}

#[test]
fn a_trigger_hoarding_timers_fails_its_windows_and_memory_stays_bounded() {
    // 64 new timers per element, each window's far beyond its end: 6.4
    // million pending timers for 100k events without a cap per window (and
    // as many calls at the end of input). With it, a window's trigger fails
    // at its 17th element and its timers go when the window closes.
    let (hoard, plain) = same_as_the_event_time_rule(
        sluice_test_plugins::TIMER_HOARD,
        "{}",
        100_000,
        "asked for 64 more timers for a window with 1024 pending (at most 1024 per window",
    );
    // The bound: the default trigger's run plus 1024 timers of every window
    // open at once, with room to spare.
    let bound = plain.peak_rss + (48 << 20);
    assert!(
        hoard.peak_rss < bound,
        "peak RSS {} MiB, bound {} MiB",
        hoard.peak_rss >> 20,
        bound >> 20
    );
}
