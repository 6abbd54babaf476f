//! End-to-end tests of the `sluice` binary: determinism, bad input and bad
//! configuration, custom plugins by path, stdin/stdout, `plugin inspect`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{
    free_port, generate, generate_keys, http_response, metric_value, next_step, output_with_stdin,
    run_config, run_fed, sluice, stderr, with_copies, xorshift,
};

/// The example plugin `examples/plugins/slo-breach`, as a component.
fn example_plugin() -> PathBuf {
    PathBuf::from(sluice_test_plugins::SLO_BREACH)
}

fn pipeline(dir: &Path, window: &str, extra: &str) -> PathBuf {
    let path = dir.join("pipeline.yaml");
    let yaml = format!(
        "source: {{ file: input.jsonl }}\n\
         event: {{ key: [service], time: {{ field: ts, format: epoch_millis }} }}\n\
         watermark: {{ max_out_of_orderness: 2s }}\n\
         window: {window}\n\
         allowed_lateness: 1s\n\
         aggregations:\n\
         \x20 - {{ name: latency, plugin: builtin/stats, field: latency_ms }}\n\
         \x20 - {{ name: pct, plugin: builtin/percentiles, field: latency_ms, config: {{ quantiles: [0.5, 0.99] }} }}\n\
         \x20 - {{ name: errors, plugin: builtin/mean, field: error }}\n\
         sink: {{ file: results.jsonl }}\n\
         late_output: {{ file: late.jsonl }}\n\
         dead_letter: {{ file: dead.jsonl }}\n{extra}"
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

fn outputs(dir: &Path) -> [String; 3] {
    ["results.jsonl", "late.jsonl", "dead.jsonl"]
        .map(|f| std::fs::read_to_string(dir.join(f)).unwrap_or_default())
}

/// Plugins compiled with inlining (`plugins.inline`) give the same bytes,
/// and are compiled differently (their cache entries carry another engine
/// tag).
#[test]
fn output_is_identical_with_plugins_inlined() {
    let input = generate(3_000);
    let mut got = Vec::new();
    let mut tags = Vec::new();
    for inline in ["false", "true"] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("input.jsonl"), &input).unwrap();
        let extra = format!("plugins: {{ inline: {inline} }}\nplugin_cache: cache\n");
        let config = pipeline(dir.path(), "{ sliding: { size: 10s, slide: 2s } }", &extra);
        let out = run_config(&config);
        assert!(out.status.success(), "inline {inline}: {}", stderr(&out));
        got.push(outputs(dir.path()));
        let mut tag: Vec<String> = std::fs::read_dir(dir.path().join("cache"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter_map(|name| Some(name.strip_suffix(".cwasm")?.rsplit_once('-')?.1.to_string()))
            .collect();
        tag.dedup();
        assert_eq!(tag.len(), 1, "one engine compiled the built-ins: {tag:?}");
        tags.push(tag);
    }
    assert!(got[0][0].lines().count() > 50, "too few results");
    assert_eq!(got[0], got[1], "inlining changed the output");
    assert_ne!(
        tags[0], tags[1],
        "`plugins.inline` made no difference to the compile"
    );
}

/// The same bytes out whatever the batch size, read from the file (ahead,
/// on other threads, batches handed back to be filled again) and from stdin
/// (the live-stream path, which reuses its batches too).
#[test]
fn output_is_identical_whatever_the_batch_size() {
    let input = generate(6_000);
    for window in [
        "{ tumbling: { size: 10s } }",
        "{ sliding: { size: 10s, slide: 2s } }",
        "{ session: { gap: 300ms } }",
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("input.jsonl"), &input).unwrap();
        let config = pipeline(dir.path(), window, "");
        let mut reference: Option<[String; 3]> = None;
        for (batch, from_stdin) in [1, 7, 256, 100_000]
            .into_iter()
            .flat_map(|batch| [(batch, false), (batch, true)])
        {
            let mut run = sluice();
            run.args(["run", "--batch-size", &batch.to_string(), "--config"])
                .arg(&config);
            let out = if from_stdin {
                output_with_stdin(run.env("SLUICE_SOURCE__FILE", "-"), input.as_bytes())
            } else {
                run.output().unwrap()
            };
            assert!(out.status.success(), "{window}: {}", stderr(&out));
            let got = outputs(dir.path());
            match &reference {
                None => {
                    let [results, late, dead] = &got;
                    assert!(results.lines().count() > 50, "{window}: too few results");
                    assert!(late.lines().count() > 5, "{window}: no late events");
                    assert!(dead.lines().count() > 5, "{window}: no dead letters");
                    assert!(
                        results.contains(r#""emit":"late""#),
                        "{window}: no late re-emission"
                    );
                    reference = Some(got);
                }
                Some(r) => assert!(
                    r == &got,
                    "{window}: batch size {batch} (stdin: {from_stdin}) changed the output"
                ),
            }
        }
    }
}

/// The output is the same bytes whatever the number of window workers
/// (`--parallelism`): every window kind with late events, re-emissions and
/// dead letters, and with early-firing and purging triggers, dedup and gap
/// filling; at a small batch size too, so that rounds cut through steps.
#[test]
fn output_is_identical_whatever_the_parallelism() {
    // 23 keys over the shards, and some lines sent twice for dedup.
    let input = with_copies(&generate_keys(8_000, 23), 97);
    for (window, extra) in [
        (
            "{ tumbling: { size: 10s } }",
            "fill: { strategy: linear, max_gap: 1m }\n",
        ),
        (
            "{ sliding: { size: 10s, slide: 2s } }",
            "trigger: { plugin: builtin/early, config: { every_events: 7 } }\n",
        ),
        (
            "{ session: { gap: 300ms } }",
            "dedup: { key: [ts, latency_ms], ttl: 1m }\ndedup_output: { file: dups.jsonl }\n",
        ),
        (
            "{ tumbling: { size: 5s } }",
            "trigger: { plugin: builtin/count, config: { every_events: 5 } }\n",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("input.jsonl"), &input).unwrap();
        let config = pipeline(dir.path(), window, extra);
        let mut reference: Option<[String; 4]> = None;
        for (parallelism, batch) in [(1, 8192), (2, 8192), (3, 100), (4, 8192), (2, 1)] {
            let out = sluice()
                .args(["run", "--parallelism", &parallelism.to_string()])
                .args(["--batch-size", &batch.to_string(), "--config"])
                .arg(&config)
                .output()
                .unwrap();
            assert!(out.status.success(), "{window}: {}", stderr(&out));
            let [results, late, dead] = outputs(dir.path());
            let dups = std::fs::read_to_string(dir.path().join("dups.jsonl")).unwrap_or_default();
            let got = [results, late, dead, dups];
            match &reference {
                None => {
                    assert!(got[0].lines().count() > 100, "{window}: too few results");
                    assert!(got[1].lines().count() > 5, "{window}: no late events");
                    assert!(got[2].lines().count() > 5, "{window}: no dead letters");
                    if extra.contains("dedup") {
                        assert!(got[3].lines().count() > 50, "{window}: no duplicates");
                    }
                    reference = Some(got);
                }
                Some(r) => {
                    for (i, name) in ["results", "late", "dead letters", "duplicates"]
                        .iter()
                        .enumerate()
                    {
                        assert!(
                            r[i] == got[i],
                            "{window} {extra}: parallelism {parallelism} (batch {batch}) \
                             changed the {name}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn every_event_is_accounted_for() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("input.jsonl"), generate(3_000)).unwrap();
    let config = pipeline(dir.path(), "{ tumbling: { size: 5s } }", "");
    let out = sluice()
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let [results, late, dead] = outputs(dir.path());
    // Each event is in exactly one window's count, or late, or dead-lettered.
    // A window's last emission carries its full count.
    let mut last = std::collections::BTreeMap::new();
    for line in results.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = (v["key"].to_string(), v["window"].to_string());
        last.insert(id, v["results"]["latency.count"].as_u64().unwrap());
    }
    let counted: u64 = last.values().sum();
    let total = counted + late.lines().count() as u64 + dead.lines().count() as u64;
    assert_eq!(total, 3_000);
    assert!(
        stderr(&out).contains("3000 events read"),
        "{}",
        stderr(&out)
    );
}

fn run_expecting_error(dir: &Path, config: &Path) -> String {
    let out = sluice()
        .args(["run", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        !dir.join("results.jsonl").exists(),
        "outputs were opened before the config was checked"
    );
    stderr(&out)
}

#[test]
fn bad_configs_fail_before_reading_events_and_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("input.jsonl"), generate(10)).unwrap();
    std::fs::write(dir.path().join("garbage.wasm"), b"\0asm but not really").unwrap();
    let cases = [
        ("{ tumbling: { size: 10s } }", "bogus: 1\n", "bogus"),
        ("{ tumbling: { size: soon } }", "", "window.tumbling.size"),
        (
            "{ sliding: { size: 1s, slide: 2s } }",
            "",
            "window.sliding.slide",
        ),
        (
            "{ tumbling: { size: 10s } }",
            "plugins: { memory_limit: 12 parsecs }\n",
            "plugins.memory_limit",
        ),
        // Gap filling needs a regular series of windows.
        (
            "{ sliding: { size: 10s, slide: 5s } }",
            "fill: { strategy: zero, max_gap: 1m }\n",
            "gap filling needs tumbling windows",
        ),
        (
            "{ session: { gap: 10s } }",
            "fill: { strategy: linear, max_gap: 1m }\n",
            "gap filling needs tumbling windows",
        ),
        (
            "{ tumbling: { size: 10s } }",
            "fill: { strategy: zero, max_gap: 5s }\n",
            "fill.max_gap",
        ),
        (
            "{ tumbling: { size: 10s } }",
            "fill: { strategy: cubic, max_gap: 1m }\n",
            "cubic",
        ),
        (
            "{ tumbling: { size: 10s } }",
            "parallelism: 0\n",
            "key `parallelism`: must be 1 to 256, not 0",
        ),
    ];
    for (window, extra, want) in cases {
        let config = pipeline(dir.path(), window, extra);
        let err = run_expecting_error(dir.path(), &config);
        assert!(err.contains(want), "expected {want:?} in: {err}");
    }
    // Plugin problems name the aggregation and the plugin.
    let base =
        std::fs::read_to_string(pipeline(dir.path(), "{ tumbling: { size: 10s } }", "")).unwrap();
    let plugin_cases = [
        (
            "builtin/stats",
            "builtin/nonesuch",
            "no such built-in plugin",
        ),
        ("builtin/stats", "missing.wasm", "missing.wasm"),
        (
            "builtin/stats",
            "garbage.wasm",
            "not a valid WebAssembly component",
        ),
        (
            "quantiles: [0.5, 0.99]",
            "quantiles: [1.5]",
            "aggregations[1]",
        ),
    ];
    for (from, to, want) in plugin_cases {
        std::fs::write(dir.path().join("pipeline.yaml"), base.replacen(from, to, 1)).unwrap();
        let err = run_expecting_error(dir.path(), &dir.path().join("pipeline.yaml"));
        assert!(err.contains(want), "expected {want:?} in: {err}");
    }
    let out = sluice()
        .args(["run", "--config", "/nonexistent/pipeline.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/pipeline.yaml"));
}

/// `sluice validate` says whether a run would start, and touches nothing:
/// a good pipeline exits 0 describing what it would run; a bad plugin, a
/// bad key or a missing source exits 2 naming it; no output file appears
/// either way.
#[test]
fn validate_checks_a_pipeline_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("input.jsonl"), generate(10)).unwrap();
    let config = pipeline(
        dir.path(),
        "{ tumbling: { size: 10s } }",
        "trigger: { plugin: builtin/early, config: { every_events: 5 } }\n",
    );
    let validate = |config: &Path| {
        sluice()
            .args(["validate", "--config"])
            .arg(config)
            .output()
            .unwrap()
    };
    let out = validate(&config);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.starts_with("valid: "), "{report}");
    assert!(report.contains("window:       tumbling 10s\n"), "{report}");
    assert!(
        report.contains("pct: builtin/percentiles (percentiles ") && report.contains("-> p50, p99"),
        "{report}"
    );
    assert!(
        report.contains("trigger:      builtin/early (early "),
        "{report}"
    );

    let base = std::fs::read_to_string(&config).unwrap();
    for (from, to, want) in [
        (
            "builtin/stats",
            "builtin/nonesuch",
            "no such built-in plugin",
        ),
        ("every_events: 5", "every_events: 0", "key `trigger`"),
        ("input.jsonl", "inptu.jsonl", "key `source.file`"),
        (
            "allowed_lateness: 1s",
            "allowed_lateness: soon",
            "allowed_lateness",
        ),
    ] {
        std::fs::write(&config, base.replacen(from, to, 1)).unwrap();
        let out = validate(&config);
        assert_eq!(out.status.code(), Some(2), "{to}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(want),
            "expected {want:?} in: {}",
            stderr(&out)
        );
    }
    let mut files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["input.jsonl", "pipeline.yaml"],
        "validate wrote something"
    );
}

#[test]
fn custom_plugin_by_path_over_stdin_and_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pipeline.yaml");
    std::fs::write(
        &config,
        format!(
            "source: {{ file: '-' }}\n\
             event: {{ key: [], time: {{ field: ts, format: epoch_seconds }} }}\n\
             window: {{ tumbling: {{ size: 1m }} }}\n\
             aggregations:\n\
             \x20 - {{ name: slo, plugin: {}, field: latency_ms, config: {{ threshold: 100 }} }}\n\
             sink: {{ file: '-' }}\n",
            example_plugin().display()
        ),
    )
    .unwrap();
    let out = output_with_stdin(
        sluice().args(["run", "--config"]).arg(&config),
        b"{\"ts\":60,\"latency_ms\":50}\n{\"ts\":61,\"latency_ms\":150}\n{\"ts\":62,\"latency_ms\":101}\n{\"ts\":62.5,\"latency_ms\":100}\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\"key\":{},\"window\":{\"start\":60000,\"end\":120000},\"emit\":\"on_time\",\"results\":{\"slo.total\":4,\"slo.breaches\":2,\"slo.breach_ratio\":0.5}}\n"
    );
}

#[test]
fn plugin_inspect_describes_builtins_and_custom_plugins() {
    let out = sluice()
        .args(["plugin", "inspect", "builtin/stats"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "name:          stats",
        "mergeable:     yes",
        "count",
        "stddev_samp",
        "p99",
        "an aggregator of interface 0.2",
        "value          float     required",
        "export sluice:plugin/aggregator@0.2.0",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    let out = sluice()
        .args(["plugin", "inspect"])
        .arg(example_plugin())
        .args(["--config", r#"{"threshold":5}"#])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("breach_ratio"));
    let out = sluice().args(["plugin", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    let (aggregators, triggers) = list
        .split_once("triggers")
        .unwrap_or_else(|| panic!("no triggers section: {list}"));
    for name in [
        "count",
        "sum",
        "mean",
        "min",
        "max",
        "variance",
        "stddev",
        "percentiles",
        "stats",
    ] {
        assert!(
            aggregators
                .lines()
                .any(|l| l.trim() == format!("builtin/{name}")),
            "{name} missing from {list}"
        );
    }
    for name in ["event-time", "early", "count"] {
        assert!(
            triggers
                .lines()
                .any(|l| l.trim() == format!("builtin/{name}")),
            "trigger {name} missing from {list}"
        );
    }
}

/// A trigger is inspected as a trigger: a built-in by its name (`count` is
/// also an aggregator: `--trigger` picks the trigger), a file by what it
/// exports; its watched columns are listed with the config given.
#[test]
fn plugin_inspect_describes_triggers() {
    let inspect = |args: &[&str]| {
        let out = sluice()
            .args(["plugin", "inspect"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let early = inspect(&["builtin/early", "--config", r#"{"every_events":3}"#]);
    assert!(early.contains("a trigger"), "{early}");
    assert!(
        early.contains("export sluice:plugin/trigger@0.1.0"),
        "{early}"
    );
    let count = inspect(&[
        "builtin/count",
        "--trigger",
        "--config",
        r#"{"every_events":3}"#,
    ]);
    assert!(count.contains("a trigger"), "{count}");
    assert!(inspect(&["builtin/count"]).contains("an aggregator"));
    let p99 = inspect(&[
        sluice_test_plugins::P99_ALERT,
        "--config",
        r#"{"column":"latency_pct.p99","above":500}"#,
    ]);
    assert!(p99.contains("a trigger"), "{p99}");
    assert!(
        p99.lines().any(|l| l.trim() == "latency_pct.p99"),
        "the watched column: {p99}"
    );
}

/// `log: { format: json }` writes diagnostics (here a plugin failure) as JSON
/// lines on stderr, while the run goes on; its summary, and an error that
/// ends a run, are JSON lines too.
#[test]
fn json_logs_report_plugin_failures() {
    let zoo = Path::new(sluice_test_plugins::PANIC);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("input.jsonl"),
        "{\"ts\":1000,\"service\":\"a\",\"latency_ms\":5}\n\
         {\"ts\":2000,\"service\":\"a\",\"latency_ms\":-1}\n",
    )
    .unwrap();
    let config = dir.path().join("pipeline.yaml");
    std::fs::write(
        &config,
        format!(
            "source: {{ file: input.jsonl }}\n\
             event: {{ key: [service], time: {{ field: ts, format: epoch_millis }} }}\n\
             window: {{ tumbling: {{ size: 10s }} }}\n\
             aggregations:\n\
             \x20 - {{ name: n, plugin: builtin/count }}\n\
             \x20 - {{ name: zoo, plugin: {}, field: latency_ms }}\n\
             sink: {{ file: results.jsonl }}\n\
             log: {{ format: json, level: warn }}\n",
            zoo.display()
        ),
    )
    .unwrap();
    let out = sluice()
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let logs: Vec<serde_json::Value> = err
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("a JSON log line"))
        .collect();
    assert!(
        logs.iter().any(|l| l["level"] == "WARN"
            && l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("panicked"))),
        "{err}"
    );
    assert!(
        err.lines().all(|l| l.starts_with('{')),
        "every line is JSON: {err}"
    );
    assert!(
        logs.iter().any(|l| l["level"] == "INFO"
            && l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("2 events read, 1 windows emitted"))),
        "the summary: {err}"
    );
    let results = std::fs::read_to_string(dir.path().join("results.jsonl")).unwrap();
    assert!(results.contains(r#""n.count":2"#), "{results}");

    // An error that ends the run, after the log format is known.
    std::fs::remove_file(dir.path().join("input.jsonl")).unwrap();
    let out = sluice()
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    let last: serde_json::Value =
        serde_json::from_str(err.lines().last().unwrap_or_default()).expect("a JSON line");
    assert_eq!(last["level"], "ERROR", "{err}");
    assert!(
        last["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("input.jsonl")),
        "{err}"
    );
}

/// `sluice plugin new` makes a crate that builds for wasm32-wasip2 as it is
/// and whose plugin passes the law checker.
#[test]
fn plugin_new_scaffolds_a_crate_that_builds_and_passes_the_laws() {
    let dir = tempfile::tempdir().unwrap();
    // A target dir of its own beside this build's (cargo holds the lock of
    // the one running this test), kept between runs as a cache.
    let target = Path::new(env!("CARGO_BIN_EXE_sluice"))
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("scaffold");
    let out = sluice()
        .args(["plugin", "new", "p95-guard", "--dir"])
        .arg(dir.path())
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let root = dir.path().join("p95-guard");
    // It says where the component will be, how to check it and how to use it.
    let steps = String::from_utf8_lossy(&out.stdout);
    let wasm = target.join("wasm32-wasip2/release/p95_guard.wasm");
    assert_eq!(next_step(&steps, "component"), wasm.display().to_string());
    assert_eq!(
        next_step(&steps, "check it"),
        format!("sluice plugin test {}", wasm.display())
    );
    assert!(
        steps.contains(&format!(
            "- {{ name: p95-guard, plugin: {}, field: ",
            wasm.display()
        )),
        "{steps}"
    );
    // Again: refused, the directory exists.
    let again = sluice()
        .args(["plugin", "new", "p95-guard", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));

    let build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2"])
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", stderr(&build));
    let laws = sluice()
        .args(["plugin", "test", "--config", r#"{"above": 10}"#])
        .arg(&wasm)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&laws.stdout);
    assert!(laws.status.success(), "{report}{}", stderr(&laws));
    assert_eq!(report.matches("PASS").count(), 9, "{report}");
}

/// Writes `lines` and a pipeline with `dedup` (YAML) over them into `dir`;
/// runs it and returns (sorted result lines, stderr).
fn run_dedup(dir: &Path, name: &str, lines: &[String], dedup: &str) -> (Vec<String>, String) {
    let input = dir.join(format!("{name}.jsonl"));
    std::fs::write(&input, lines.concat()).unwrap();
    let config = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &config,
        format!(
            "source: {{ file: {name}.jsonl }}\n\
             event: {{ key: [service], time: {{ field: ts, format: epoch_millis }} }}\n\
             watermark: {{ max_out_of_orderness: 4s }}\n\
             window: {{ tumbling: {{ size: 10s }} }}\n\
             {dedup}\
             aggregations:\n\
             \x20 - {{ name: n, plugin: builtin/count }}\n\
             \x20 - {{ name: total, plugin: builtin/sum, field: v }}\n\
             \x20 - {{ name: peak, plugin: builtin/max, field: v }}\n\
             \x20 - {{ name: lat, plugin: builtin/percentiles, field: v }}\n\
             sink: {{ file: {name}-results.jsonl }}\n\
             late_output: {{ file: {name}-late.jsonl }}\n\
             dead_letter: {{ file: {name}-dead.jsonl }}\n"
        ),
    )
    .unwrap();
    let out = sluice()
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let results = std::fs::read_to_string(dir.join(format!("{name}-results.jsonl"))).unwrap();
    let mut results: Vec<String> = results.lines().map(str::to_owned).collect();
    results.sort();
    (results, stderr(&out))
}

#[test]
fn redelivered_events_shuffled_within_the_bound_give_the_results_of_one_delivery() {
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
    // 2000 requests over ~200 s, each with a unique id.
    let mut t: i64 = 1_700_000_000_000;
    let events: Vec<(i64, String)> = (0..2000)
        .map(|i| {
            t += (next() % 200) as i64;
            let line = format!(
                "{{\"ts\":{t},\"request_id\":\"req-{i}\",\"service\":\"svc-{}\",\"v\":{}}}\n",
                next() % 4,
                next() % 1000
            );
            (t, line)
        })
        .collect();
    let once: Vec<String> = events.iter().map(|(_, l)| l.clone()).collect();
    // Every event twice; each copy arrives at its time plus up to 2 s of
    // jitter, so that no copy is later than the 4 s bound allows.
    let mut twice: Vec<(i64, u64, String)> = events
        .iter()
        .chain(&events)
        .map(|(ts, line)| (ts + (next() % 2_000) as i64, next(), line.clone()))
        .collect();
    twice.sort();
    let twice: Vec<String> = twice.into_iter().map(|(_, _, l)| l).collect();

    let dir = tempfile::tempdir().unwrap();
    let (reference, summary) = run_dedup(dir.path(), "once", &once, "");
    assert!(summary.contains("0 late"), "{summary}");
    assert!(reference.len() > 60, "{}", reference.len());
    // Without dedup the redelivery doubles the counts: the test can fail.
    let (doubled, _) = run_dedup(dir.path(), "plain", &twice, "");
    assert!(
        doubled != reference,
        "redelivery without dedup changed nothing"
    );
    for mode in ["exact", "bloom"] {
        let dedup = format!(
            "dedup: {{ key: [request_id], ttl: 1h, mode: {mode}, false_positive_rate: 0.000001, expected_keys: 10000 }}\n\
             dedup_output: {{ file: {mode}-dups.jsonl }}\n"
        );
        let (got, summary) = run_dedup(dir.path(), mode, &twice, &dedup);
        // (Aggregations whose result does not depend on arrival order, so
        // that the comparison can be exact.)
        let differing = got.iter().zip(&reference).filter(|(a, b)| a != b).count();
        assert!(
            got.len() == reference.len() && differing == 0,
            "{mode}: {} results, {} expected, {differing} differ; first: {:?}",
            got.len(),
            reference.len(),
            got.iter().zip(&reference).find(|(a, b)| a != b)
        );
        assert!(
            summary.contains("4000 events read") && summary.contains("2000 duplicates dropped"),
            "{mode}: {summary}"
        );
        let dups = std::fs::read_to_string(dir.path().join(format!("{mode}-dups.jsonl"))).unwrap();
        assert_eq!(dups.lines().count(), 2000);
        let first = dups.lines().next().unwrap();
        assert!(
            first.contains(r#""reason":"duplicate","dedup_key":{"request_id":"req-"#),
            "{first}"
        );
    }
}

#[test]
fn dedup_ttl_is_event_time_against_the_watermark() {
    // The same id 5 s apart is a duplicate with a 10 s TTL; 60 s later (the
    // watermark has passed the TTL) it counts again.
    let lines: Vec<String> = [
        (0, "x"),
        (5_000, "x"),
        (6_000, "y"),
        (60_000, "x"),
        (61_000, "y"),
    ]
    .iter()
    .map(|(ts, id)| format!("{{\"ts\":{ts},\"request_id\":\"{id}\",\"service\":\"s\",\"v\":1}}\n"))
    .collect();
    let dir = tempfile::tempdir().unwrap();
    let (results, summary) = run_dedup(
        dir.path(),
        "ttl",
        &lines,
        "dedup: { key: request_id, ttl: 10s }\n",
    );
    assert!(summary.contains("1 duplicates dropped"), "{summary}");
    let counts: Vec<bool> = results
        .iter()
        .map(|r| r.contains(r#""n.count":2"#))
        .collect();
    // Window 0 s: x and y (the second x dropped); window 60 s: x and y again.
    assert_eq!(counts, [true, true], "{results:?}");
}

/// Runs `config` with `env` set; returns the output.
fn run_with_env(config: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = sluice();
    cmd.args(["run", "--config"]).arg(config);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Files standing for a previous run's outputs, to see that a refused run
/// leaves them as they were.
fn previous_outputs(dir: &Path) -> Vec<(PathBuf, &'static str)> {
    let files = [
        ("results.jsonl", "{\"previous\":\"results\"}\n"),
        ("late.jsonl", "{\"previous\":\"late\"}\n"),
        ("dead.jsonl", "{\"previous\":\"dead\"}\n"),
    ];
    files
        .iter()
        .map(|(name, text)| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            (path, *text)
        })
        .collect()
}

fn assert_untouched(files: &[(PathBuf, &str)]) {
    for (path, text) in files {
        assert_eq!(
            std::fs::read_to_string(path).unwrap(),
            *text,
            "{} was touched",
            path.display()
        );
    }
}

/// Two outputs on one file (however spelled, or through a symlink), two on
/// stdout, an output on the input or in the state directory: refused at
/// load (exit 2, naming both keys) with the files as they were.
#[test]
fn outputs_on_one_path_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("input.jsonl"), generate(100)).unwrap();
    std::os::unix::fs::symlink(
        dir.path().join("results.jsonl"),
        dir.path().join("link.jsonl"),
    )
    .unwrap();
    let base =
        std::fs::read_to_string(pipeline(dir.path(), "{ tumbling: { size: 10s } }", "")).unwrap();
    let cases = [
        (
            "dead_letter: { file: dead.jsonl }",
            "dead_letter: { file: results.jsonl }",
            "`sink.file` and `dead_letter.file`",
        ),
        (
            "dead_letter: { file: dead.jsonl }",
            "dead_letter: { file: ./sub/../results.jsonl }",
            "`sink.file` and `dead_letter.file`",
        ),
        (
            "late_output: { file: late.jsonl }",
            "late_output: { file: link.jsonl }",
            "`sink.file` and `late_output.file`",
        ),
        (
            "late_output: { file: late.jsonl }",
            "late_output: { file: dead.jsonl }",
            "`late_output.file` and `dead_letter.file`",
        ),
        (
            "sink: { file: results.jsonl }",
            "sink: { file: input.jsonl }",
            "names the input file",
        ),
        (
            "sink: { file: results.jsonl }",
            "sink: { file: '-' }\ndedup_output: { file: '-' }",
            "both write stdout",
        ),
        (
            "sink: { file: results.jsonl }",
            "sink: { file: state/results.jsonl }\nstate: { backend: rocksdb, path: state }",
            "in the state directory",
        ),
    ];
    for (from, to, want) in cases {
        let files = previous_outputs(dir.path());
        std::fs::write(dir.path().join("pipeline.yaml"), base.replacen(from, to, 1)).unwrap();
        let out = sluice()
            .args(["run", "--config"])
            .arg(dir.path().join("pipeline.yaml"))
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{to}: {err}");
        assert!(err.contains(want), "{to}: expected {want:?} in: {err}");
        assert_untouched(&files);
    }
}

/// A source path with a typo fails (exit 1, naming the path) before any
/// output is opened: the previous run's results stay whole.
#[test]
fn a_missing_source_leaves_the_previous_outputs_untouched() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("input.jsonl"), generate(100)).unwrap();
    let config = pipeline(dir.path(), "{ tumbling: { size: 10s } }", "");
    let yaml = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        yaml.replace("file: input.jsonl", "file: inptu.jsonl"),
    )
    .unwrap();
    let files = previous_outputs(dir.path());
    let out = run_with_env(&config, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("inptu.jsonl"), "{err}");
    assert_untouched(&files);
    // A directory is no input either.
    std::fs::create_dir(dir.path().join("inptu.jsonl")).unwrap();
    let out = run_with_env(&config, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("is a directory"), "{}", stderr(&out));
    assert_untouched(&files);
}

/// Mistakes that used to be silent are refused (exit 2) before any output
/// is opened: a key given twice, two window kinds, a `SLUICE_` variable
/// that names no key, `--batch-size 0`; and an environment value's error
/// names the variable, not the file.
#[test]
fn silent_misconfigurations_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("input.jsonl"), generate(10)).unwrap();
    let cases = [
        (
            "{ tumbling: { size: 10s } }",
            "allowed_lateness: 5s\n",
            "key `allowed_lateness` is given twice",
        ),
        (
            "{ tumbling: { size: 10s }, sliding: { size: 10s, slide: 5s } }",
            "",
            "key `window`: give one of tumbling, sliding, session",
        ),
    ];
    for (window, extra, want) in cases {
        let config = pipeline(dir.path(), window, extra);
        let err = run_expecting_error(dir.path(), &config);
        assert!(err.contains(want), "expected {want:?} in: {err}");
    }
    let config = pipeline(dir.path(), "{ tumbling: { size: 10s } }", "");
    for (env, want) in [
        (
            ("SLUICE_SINKK__FILE", "x.jsonl"),
            "environment variable SLUICE_SINKK__FILE: `sinkk` is not a pipeline key",
        ),
        (
            ("SLUICE_SINK_FILE", "x.jsonl"),
            "`sink_file` is not a pipeline key",
        ),
        (
            ("SLUICE_BATCH_SIZE", "lots"),
            "environment variable SLUICE_BATCH_SIZE (key `batch_size`)",
        ),
        (
            ("SLUICE_WINDOW__SLIDING__SIZE", "10s"),
            "not sliding and tumbling together",
        ),
    ] {
        let out = run_with_env(&config, &[env]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{env:?}: {err}");
        assert!(err.contains(want), "{env:?}: expected {want:?} in: {err}");
        assert!(!err.contains("pipeline.yaml: key `batch_size`"), "{err}");
        assert!(!dir.path().join("results.jsonl").exists());
    }
    let out = sluice()
        .args(["run", "--batch-size", "0", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("at least 1"), "{}", stderr(&out));
    assert!(!dir.path().join("results.jsonl").exists());
}

/// A field-name typo sends every event to the dead letters: the run says
/// so (and with `on_share: fail` stops, exit 3); milliseconds read as
/// seconds and an event from a clock centuries ahead are warned of; with
/// `watermark.max_future`, that event is dead-lettered with the reason and
/// the others are not late.
#[test]
fn obviously_wrong_runs_say_so() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("input.jsonl"), generate(2_000)).unwrap();
    let config = pipeline(dir.path(), "{ tumbling: { size: 10s } }", "");
    let yaml = std::fs::read_to_string(&config).unwrap();
    let typo = yaml.replace("field: latency_ms }", "field: latency }");
    std::fs::write(&config, &typo).unwrap();
    let out = run_with_env(&config, &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("dead_letter_limits.max_share"), "{err}");
    assert!(err.contains("went to the dead-letter output"), "{err}");
    std::fs::write(
        &config,
        format!("{typo}dead_letter_limits: {{ on_share: fail }}\n"),
    )
    .unwrap();
    let out = run_with_env(&config, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("on_share: fail"), "{}", stderr(&out));

    // Milliseconds read as seconds.
    std::fs::write(&config, yaml.replace("epoch_millis", "epoch_seconds")).unwrap();
    let out = run_with_env(&config, &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("`event.time.format: epoch_seconds` right?"),
        "{err}"
    );
    assert!(err.contains("look like `epoch_millis`"), "{err}");

    // One event in the year 3000, early in the input.
    let mut lines: Vec<String> = generate(2_000).lines().map(str::to_owned).collect();
    lines.insert(
        10,
        r#"{"ts":32503680000000,"service":"svc-1","latency_ms":5,"error":false}"#.into(),
    );
    std::fs::write(dir.path().join("input.jsonl"), lines.join("\n") + "\n").unwrap();
    std::fs::write(&config, &yaml).unwrap();
    let out = run_with_env(&config, &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("ahead of every event before it"), "{err}");
    assert!(err.contains("watermark.max_future"), "{err}");
    let late_without = std::fs::read_to_string(dir.path().join("late.jsonl")).unwrap();
    assert!(
        late_without.lines().count() > 1_000,
        "the bad clock made few events late"
    );
    std::fs::write(
        &config,
        yaml.replace(
            "watermark: { max_out_of_orderness: 2s }",
            "watermark: { max_out_of_orderness: 2s, max_future: 1h }",
        ),
    )
    .unwrap();
    let out = run_with_env(&config, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dead = std::fs::read_to_string(dir.path().join("dead.jsonl")).unwrap();
    let far = dead
        .lines()
        .find(|l| l.contains("\"line\":11,"))
        .expect("a dead letter");
    assert!(far.contains("ahead of the watermark"), "{far}");
    assert!(far.contains("watermark.max_future"), "{far}");
    let late = std::fs::read_to_string(dir.path().join("late.jsonl")).unwrap();
    assert!(
        late.lines().count() * 10 < late_without.lines().count(),
        "{} late with the bound, {} without",
        late.lines().count(),
        late_without.lines().count()
    );
}

/// A huge bad line keeps only `max_raw_bytes` of itself in its dead letter,
/// which says so; dead letters faster than `max_per_second` stop the run
/// with an error (exit 3).
#[test]
fn dead_letters_are_capped_and_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = "x".repeat(200_000);
    let mut input = generate(100);
    input.push_str(&garbage);
    input.push('\n');
    std::fs::write(dir.path().join("input.jsonl"), &input).unwrap();
    let config = pipeline(dir.path(), "{ tumbling: { size: 10s } }", "");
    let out = run_with_env(&config, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dead = std::fs::read_to_string(dir.path().join("dead.jsonl")).unwrap();
    let big = dead
        .lines()
        .find(|l| l.contains("\"line\":101,"))
        .expect("the long line");
    assert!(big.len() < 70 * 1024, "{} bytes", big.len());
    let record: serde_json::Value = serde_json::from_str(big).unwrap();
    assert_eq!(record["raw"].as_str().unwrap().len(), 64 * 1024);
    assert_eq!(record["raw_truncated"], true);
    assert_eq!(record["raw_bytes"], 200_000);

    // Lines of garbage only, with a rate limit.
    let junk: String = (0..5_000).map(|i| format!("junk {i}\n")).collect();
    std::fs::write(dir.path().join("input.jsonl"), junk).unwrap();
    let config = pipeline(
        dir.path(),
        "{ tumbling: { size: 10s } }",
        "dead_letter_limits: { max_per_second: 100 }\n",
    );
    let out = run_with_env(&config, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("faster than dead_letter_limits.max_per_second"),
        "{err}"
    );
    let dead = std::fs::read_to_string(dir.path().join("dead.jsonl")).unwrap();
    assert!(dead.lines().count() <= 1_100, "{}", dead.lines().count());
}

/// A byte-order mark does not cost the first event; a null key field is
/// dead-lettered like a missing one, not grouped under `null`.
#[test]
fn a_byte_order_mark_and_null_keys() {
    let dir = tempfile::tempdir().unwrap();
    let input = "\u{feff}{\"ts\":1000,\"service\":\"a\",\"latency_ms\":5,\"error\":false}\n\
                 {\"ts\":2000,\"service\":null,\"latency_ms\":6,\"error\":false}\n\
                 {\"ts\":3000,\"latency_ms\":7,\"error\":false}\n";
    std::fs::write(dir.path().join("input.jsonl"), input).unwrap();
    let config = pipeline(dir.path(), "{ tumbling: { size: 10s } }", "");
    let out = run_with_env(&config, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let [results, _, dead] = outputs(dir.path());
    assert_eq!(results.lines().count(), 1, "{results}");
    assert!(results.contains(r#""key":{"service":"a"}"#), "{results}");
    assert!(results.contains(r#""latency.count":1"#), "{results}");
    let reasons: Vec<&str> = dead.lines().collect();
    assert_eq!(reasons.len(), 2, "{dead}");
    assert!(reasons[0].contains("key field `service` is null"), "{dead}");
    assert!(reasons[1].contains("missing key field `service`"), "{dead}");
}

/// Kafka with no broker at the address fails at once, naming the address
/// and the cause, before any output file is opened.
#[test]
fn kafka_without_a_broker_names_the_address_and_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pipeline.yaml");
    std::fs::write(
        &config,
        "source: { kafka: { brokers: \"127.0.0.1:1\", topics: [events] } }\n\
         event: { key: [service], time: { field: ts, format: epoch_millis } }\n\
         window: { tumbling: { size: 10s } }\n\
         aggregations: [ { name: n, plugin: builtin/count } ]\n\
         sink: { file: results.jsonl }\n\
         late_output: { file: late.jsonl }\n\
         dead_letter: { file: dead.jsonl }\n",
    )
    .unwrap();
    let files = previous_outputs(dir.path());
    let started = std::time::Instant::now();
    let out = run_with_env(&config, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert!(err.contains("Connection refused"), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert_untouched(&files);
    // A file run whose dead letters go to an unreachable Kafka: its file
    // outputs are not touched either.
    std::fs::write(dir.path().join("input.jsonl"), generate(10)).unwrap();
    let config = pipeline(dir.path(), "{ tumbling: { size: 10s } }", "");
    let yaml = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        yaml.replace(
            "dead_letter: { file: dead.jsonl }",
            "dead_letter: { kafka: { topic: dead, brokers: \"127.0.0.1:1\" } }",
        ),
    )
    .unwrap();
    let out = run_with_env(&config, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_untouched(&files);
}

/// SIGTERM on a stdin run with no more input coming: it stops (exit 143)
/// with the lines it was given written out, dead letters included, and
/// says that it stopped.
#[test]
fn sigterm_stops_a_stdin_run_waiting_for_input() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pipeline.yaml");
    std::fs::write(
        &config,
        "source: { file: '-' }\n\
         event: { key: [service], time: { field: ts, format: epoch_millis } }\n\
         window: { tumbling: { size: 10s } }\n\
         aggregations: [ { name: n, plugin: builtin/count } ]\n\
         sink: { file: results.jsonl }\n\
         dead_letter: { file: dead.jsonl }\n",
    )
    .unwrap();
    let mut child = run_fed(&config);
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(
            b"{\"ts\":1000,\"service\":\"a\"}\nnot json\n{\"ts\":20000,\"service\":\"a\"}\nbroken {\n",
        )
        .unwrap();
    stdin.flush().unwrap();
    // The lines are taken as they come, not once a batch is full.
    let dead = dir.path().join("dead.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_to_string(&dead).map_or(0, |d| d.lines().count()) < 2
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on our own child's pid, with a valid signal.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(err.contains("4 events read"), "{err}");
    assert!(err.contains("2 dead-lettered"), "{err}");
    assert!(err.contains("stopped by SIGTERM"), "{err}");
    assert_eq!(std::fs::read_to_string(&dead).unwrap().lines().count(), 2);
    // The window [0, 10 s) fired when the event at 20 s came.
    let results = std::fs::read_to_string(dir.path().join("results.jsonl")).unwrap();
    assert_eq!(results.lines().count(), 1, "{results}");
}

/// `metrics:` on a stdin run serves `/metrics`, `/healthz` and `/readyz`
/// while it runs, with the events read so far, as a Kafka run does: in the
/// OpenMetrics format, with its watermark and the latency of the batch that
/// wrote results. (Checkpoint metrics: `ops::`, on a Kafka run.)
#[test]
fn a_stdin_run_serves_its_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("pipeline.yaml");
    std::fs::write(
        &config,
        format!(
            "source: {{ file: '-' }}\n\
             event: {{ key: [service], time: {{ field: ts, format: epoch_millis }} }}\n\
             window: {{ tumbling: {{ size: 10s }} }}\n\
             aggregations: [ {{ name: n, plugin: builtin/count }} ]\n\
             sink: {{ file: results.jsonl }}\n\
             dead_letter: {{ file: dead.jsonl }}\n\
             metrics: {{ listen: \"127.0.0.1:{port}\" }}\n"
        ),
    )
    .unwrap();
    let mut child = run_fed(&config);
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(
            b"{\"ts\":1000,\"service\":\"a\"}\nnot json\n{\"ts\":2000,\"service\":\"b\"}\n\
              {\"ts\":25000,\"service\":\"a\"}\n",
        )
        .unwrap();
    stdin.flush().unwrap();
    let settled = |m: &str| m.contains("sluice_events_in_total 4\n");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut metrics = None;
    while std::time::Instant::now() < deadline {
        metrics = http_response(port, "/metrics");
        if metrics.as_deref().is_some_and(settled) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let metrics = metrics.expect("nothing listens on the metrics address");
    assert!(metrics.starts_with("HTTP/1.0 200"), "{metrics}");
    assert!(settled(&metrics), "{metrics}");
    assert!(
        metrics.contains("Content-Type: application/openmetrics-text; version=1.0.0"),
        "{metrics}"
    );
    assert!(metrics.trim_end().ends_with("# EOF"), "{metrics}");
    // Window [0 s, 10 s) of both keys fired on the event at 25 s.
    assert_eq!(
        metric_value(&metrics, "sluice_results_out_total"),
        Some(2.0)
    );
    assert!(
        metric_value(&metrics, "sluice_processing_latency_seconds_count").is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    assert!(
        metric_value(&metrics, "sluice_watermark_seconds").is_some_and(|w| w > 10.0 && w <= 25.0),
        "{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, "sluice_partitions_assigned"),
        Some(1.0)
    );
    assert_eq!(metric_value(&metrics, "sluice_state_bytes"), Some(0.0));
    assert!(
        metrics.contains("sluice_dead_lettered_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"sluice_plugin_calls_total{aggregation="n"}"#),
        "{metrics}"
    );
    assert!(http_response(port, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.0 200")));
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Every example runs from a clean copy of `examples/` with nothing but its
/// own events file (and, for those that name one, the example plugin built
/// where `scripts/example-plugins.sh` puts it), and writes results.
#[test]
fn every_example_runs_on_its_own_events() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().unwrap();
    let examples = dir.path().join("examples");
    std::fs::create_dir_all(examples.join("data")).unwrap();
    for entry in std::fs::read_dir(root.join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            std::fs::copy(&path, examples.join(path.file_name().unwrap())).unwrap();
        }
    }
    for file in ["llm-events.jsonl", "llm-events-dup.jsonl"] {
        std::fs::copy(
            root.join("examples/data").join(file),
            examples.join("data").join(file),
        )
        .unwrap();
    }
    let plugins = dir.path().join("out/plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(
        sluice_test_plugins::SLO_BREACH,
        plugins.join("slo_breach.wasm"),
    )
    .unwrap();
    std::fs::copy(
        sluice_test_plugins::P99_ALERT,
        plugins.join("p99_alert.wasm"),
    )
    .unwrap();
    std::fs::copy(sluice_test_plugins::LLM_COST, plugins.join("llm_cost.wasm")).unwrap();
    let events = std::fs::read(examples.join("data/llm-events.jsonl")).unwrap();
    // The languages example needs the other languages' toolchains: the
    // languages tests run it.
    let runs = [
        ("llm-latency.yaml", "results.jsonl", None),
        ("llm-alert.yaml", "alert-results.jsonl", None),
        ("llm-extras.yaml", "extras-results.jsonl", None),
        ("llm-cost.yaml", "cost-results.jsonl", None),
        ("llm-kafka.yaml", "kafka-results.jsonl", Some(&events)),
    ];
    for (config, results, stdin) in runs {
        let mut run = sluice();
        run.args(["run", "--config"]).arg(examples.join(config));
        let out = match stdin {
            Some(bytes) => output_with_stdin(&mut run, bytes),
            // `output` gives the child an empty stdin.
            None => run.output().unwrap(),
        };
        assert!(out.status.success(), "{config}: {}", stderr(&out));
        let written = std::fs::read_to_string(dir.path().join("out").join(results)).unwrap();
        assert!(written.lines().count() >= 10, "{config}: {written}");
        assert!(
            stderr(&out).contains("1200 events read")
                || config == "llm-extras.yaml"
                || config == "llm-cost.yaml",
            "{config}: {}",
            stderr(&out)
        );
    }
}

/// `plugin inspect` describes a component of interface 0.2 with its typed
/// inputs and its outputs' kinds; `plugin test` checks the grouped laws on
/// it, and catches a plugin that mixes up the groups of one call.
#[test]
fn plugin_inspect_describes_a_0_2_component() {
    let plugin = sluice_test_plugins::GROUPED_WEIGHTED_MEAN;
    let out = sluice()
        .args(["plugin", "inspect", plugin])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("an aggregator of interface 0.2"), "{text}");
    let inputs = text
        .split("inputs with config {}:\n")
        .nth(1)
        .and_then(|rest| rest.split("outputs with config").next())
        .unwrap_or_default();
    let words = |line: &str| {
        line.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let inputs: Vec<String> = inputs.lines().map(words).collect();
    assert_eq!(
        inputs,
        ["value float required", "weight float required"],
        "{text}"
    );
    assert!(
        text.contains("  rows           integer  rows seen"),
        "{text}"
    );
    assert!(
        text.contains("export sluice:plugin/aggregator@0.2.0"),
        "{text}"
    );

    let out = sluice()
        .args(["plugin", "test", plugin, "--cases", "50"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    for law in [
        "PASS one grouped call equals the rows sent group by group (50 cases)",
        "PASS splitting batches differently changes nothing",
        "PASS a released group is empty again",
        "PASS merge is associative",
        "PASS snapshot/restore round-trips exactly",
        "PASS restore refuses an unknown state version",
    ] {
        assert!(text.contains(law), "{law}:\n{text}");
    }

    let out = sluice()
        .args(["plugin", "test", plugin, "--config"])
        .arg(r#"{"misbehave": "grouping"}"#)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    let line = text
        .lines()
        .find(|l| l.starts_with("FAIL one grouped call equals the rows sent group by group"))
        .unwrap_or_else(|| panic!("the grouped law fails:\n{text}"));
    // Shrunk to two rows of two groups: one row alone cannot show it.
    assert_eq!(line.matches("part ").count(), 2, "{line}");
    assert!(
        text.contains("PASS a released group is empty again"),
        "{text}"
    );
}
