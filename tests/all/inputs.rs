//! Plugins of interface 0.2 in pipelines: declared inputs bound to event
//! fields with `inputs:`, typed decoding, what happens to events whose
//! fields are missing or of another type, and the refusals at load.
//!
//! The plugin is `tests/plugins/grouped-weighted-mean` (a weighted mean of
//! `value` by `weight`, written against the WIT with no SDK in between);
//! its results are checked against a computation made here.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::common::{run_config as run, sluice, stderr, xorshift};

const T0: i64 = 1_700_000_000_000;

/// Events of 3 services over about a minute, each with a latency and a
/// token count; some tokens are missing, null or text, some latencies are
/// text. One window of `svc-0` holds over 4,096 rows, so its replay log is
/// cut at a snapshot.
fn events() -> String {
    let mut next = xorshift(0x51ce_0a2b_77d1_4e09);
    let mut out = String::new();
    let mut t = T0;
    for i in 0..10_000u64 {
        t += (next() % 12) as i64;
        let service = if i < 6_000 { 0 } else { next() % 3 };
        let latency = match next() % 100 {
            0 => "\"slow\"".to_string(),
            _ => format!("{}", 20 + next() % 900),
        };
        let tokens = match next() % 100 {
            0 => String::new(),
            1 => r#","tokens":null"#.to_string(),
            2 => r#","tokens":"many""#.to_string(),
            _ => format!(r#","tokens":{}"#, 1 + next() % 300),
        };
        let _ = writeln!(
            out,
            r#"{{"ts":{t},"service":"svc-{service}","latency_ms":{latency}{tokens}}}"#
        );
    }
    out
}

/// The weighted means of `events` per service and 60 s window, over the
/// events whose latency and tokens are both numbers: `(sum, weight, rows)`.
fn expected(events: &str) -> BTreeMap<(String, i64), (f64, f64, i64)> {
    let mut out: BTreeMap<(String, i64), (f64, f64, i64)> = BTreeMap::new();
    for line in events.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let (Some(latency), Some(tokens)) = (v["latency_ms"].as_f64(), v["tokens"].as_f64()) else {
            continue;
        };
        let ts = v["ts"].as_i64().unwrap();
        let start = ts - ts.rem_euclid(60_000);
        let service = v["service"].as_str().unwrap().to_string();
        let e = out.entry((service, start)).or_default();
        e.0 += latency * tokens;
        e.1 += tokens;
        e.2 += 1;
    }
    out
}

/// A pipeline over `events.jsonl` in `dir` with the weighted mean bound as
/// `binding` (the aggregation's keys after `plugin`), and `extra` lines.
fn pipeline(dir: &Path, binding: &str, extra: &str) -> PathBuf {
    pipeline_of(
        dir,
        sluice_test_plugins::GROUPED_WEIGHTED_MEAN,
        binding,
        extra,
    )
}

/// [`pipeline`] with another plugin as `wm`.
fn pipeline_of(dir: &Path, plugin: &str, binding: &str, extra: &str) -> PathBuf {
    let config = dir.join("pipeline.yaml");
    std::fs::write(
        &config,
        format!(
            "source: {{ file: events.jsonl }}\n\
             event: {{ key: [service], time: {{ field: ts, format: epoch_millis }} }}\n\
             window: {{ tumbling: {{ size: 60s }} }}\n\
             aggregations:\n\
             \x20 - {{ name: wm, plugin: {plugin}, {binding} }}\n\
             \x20 - {{ name: n, plugin: builtin/count }}\n\
             sink: {{ file: results.jsonl }}\n\
             dead_letter: {{ file: dead.jsonl }}\n\
             {extra}"
        ),
    )
    .unwrap();
    config
}

fn records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Two typed inputs read from two fields give each window the weighted mean
/// computed here; events whose fields are missing, null or text are left
/// out of that aggregation only (`on_missing: skip`), and the results do
/// not depend on the batch size.
#[test]
fn a_0_2_plugin_reads_its_bound_inputs_and_matches_an_independent_computation() {
    // The test plugin (no SDK) and the built-in (SDK) give the same outputs.
    for plugin in [
        sluice_test_plugins::GROUPED_WEIGHTED_MEAN,
        "builtin/weighted_mean",
    ] {
        weighted_means_match(plugin);
    }
}

fn weighted_means_match(plugin: &str) {
    let events = events();
    let want = expected(&events);
    let mut first: Option<String> = None;
    for batch in [1, 7, 4096] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("events.jsonl"), &events).unwrap();
        let config = pipeline_of(
            dir.path(),
            plugin,
            "inputs: { value: latency_ms, weight: tokens }, on_missing: skip",
            &format!("batch_size: {batch}\n"),
        );
        let out = run(&config);
        assert!(out.status.success(), "{plugin}: {}", stderr(&out));
        let results = dir.path().join("results.jsonl");
        let got = records(&results);
        assert_eq!(got.len(), want.len(), "{plugin}: windows");
        let mut counted = 0;
        for r in &got {
            let key = (
                r["key"]["service"].as_str().unwrap().to_string(),
                r["window"]["start"].as_i64().unwrap(),
            );
            let (sum, weight, rows) = want[&key];
            let res = &r["results"];
            assert!(r.get("errors").is_none(), "{r}");
            assert_eq!(res["wm.rows"].as_i64(), Some(rows), "{r}");
            assert!(close(res["wm.weight"].as_f64().unwrap(), weight), "{r}");
            assert!(close(res["wm.mean"].as_f64().unwrap(), sum / weight), "{r}");
            counted += res["n.count"].as_i64().unwrap();
        }
        assert_eq!(
            counted, 10_000,
            "every event counted by the other aggregation"
        );
        assert!(
            want.values().any(|w| w.2 > 1_024),
            "a window past the replay limit"
        );
        let text = std::fs::read_to_string(&results).unwrap();
        match &first {
            None => first = Some(text),
            Some(first) => assert_eq!(first, &text, "batch size {batch} changed the output"),
        }
    }
}

/// Under `on_missing: dead_letter`, an event whose bound field is of the
/// wrong type or missing is dead-lettered, the reason naming the field, the
/// type expected, the input and the aggregation; a null is a missing value.
#[test]
fn a_wrong_type_is_dead_lettered_naming_field_type_and_input() {
    let dir = tempfile::tempdir().unwrap();
    let events = [
        format!(r#"{{"ts":{T0},"service":"a","latency_ms":10,"tokens":2}}"#),
        format!(r#"{{"ts":{T0},"service":"a","latency_ms":"slow","tokens":2}}"#),
        format!(r#"{{"ts":{T0},"service":"a","latency_ms":10,"tokens":null}}"#),
        format!(r#"{{"ts":{T0},"service":"a","latency_ms":10}}"#),
        format!(r#"{{"ts":{T0},"service":"a","latency_ms":40,"tokens":6.0}}"#),
    ];
    std::fs::write(dir.path().join("events.jsonl"), events.join("\n")).unwrap();
    let config = pipeline(
        dir.path(),
        "inputs: { value: latency_ms, weight: tokens }",
        "",
    );
    let out = run(&config);
    assert!(out.status.success(), "{}", stderr(&out));
    let dead = records(&dir.path().join("dead.jsonl"));
    let reasons: Vec<&str> = dead.iter().map(|d| d["reason"].as_str().unwrap()).collect();
    assert_eq!(
        reasons,
        [
            "value field `latency_ms` is \"slow\", not a float (input `value` of aggregation `wm`)",
            "missing value field `tokens` (input `weight` of aggregation `wm`)",
            "missing value field `tokens` (input `weight` of aggregation `wm`)",
        ]
    );
    let got = records(&dir.path().join("results.jsonl"));
    assert_eq!(got.len(), 1);
    let res = &got[0]["results"];
    assert_eq!(res["wm.rows"], 2);
    assert_eq!(res["wm.mean"], 32.5, "(10*2 + 40*6) / 8");
    assert_eq!(res["n.count"], 2);
}

/// A plugin that returns an output of another kind than it declared gives
/// each window an `errors` entry and counts failures; the run goes on and
/// the other aggregation's results are whole.
#[test]
fn a_0_2_plugin_returning_the_wrong_kind_fails_its_windows_not_the_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("events.jsonl"), events()).unwrap();
    let config = pipeline(
        dir.path(),
        "inputs: { value: latency_ms, weight: tokens }, on_missing: skip, \
         config: { misbehave: kind }",
        "",
    );
    let out = run(&config);
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    let got = records(&dir.path().join("results.jsonl"));
    assert!(!got.is_empty());
    for r in &got {
        let why = r["errors"]["wm"].as_str().unwrap_or_default();
        assert!(why.contains("mean"), "{r}");
        assert!(r["results"]["wm.mean"].is_null(), "{r}");
        assert!(r["results"]["n.count"].as_i64().unwrap() > 0, "{r}");
    }
    assert!(
        log.contains("quarantined") || log.contains("failed"),
        "{log}"
    );
}

/// Bindings a plugin's declared inputs do not allow are refused at load
/// (exit 2), naming the plugin and the input, before any output exists.
#[test]
fn bindings_that_do_not_fit_the_declared_inputs_are_refused_at_load() {
    let cases = [
        (
            "inputs: { value: latency_ms }",
            "input `weight` (float) is not bound to a field",
        ),
        (
            "inputs: { value: latency_ms, weight: tokens, colour: c }",
            "`inputs` binds `colour`, which the plugin does not declare (it takes `value` \
             (float), `weight` (float))",
        ),
        (
            "inputs: { value: latency_ms, weight: ts }",
            "input `weight` (float) is bound to the time field `ts`; only a timestamp input \
             can read the event time",
        ),
        (
            "field: latency_ms",
            "`field` binds a plugin's one input, but it takes `value` (float), `weight` \
             (float): bind them with `inputs`",
        ),
        ("", "input `value` (float) is not bound to a field"),
        (
            "field: latency_ms, inputs: { value: latency_ms, weight: tokens }",
            "give `field` or `inputs`, not both",
        ),
        (
            "inputs: { value: latency_ms, value: tokens, weight: tokens }",
            "key `aggregations[0].inputs.value` is given twice",
        ),
    ];
    for (binding, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("events.jsonl"), events()).unwrap();
        let config = pipeline(dir.path(), binding, "");
        let out = run(&config);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{binding}: {err}");
        assert!(err.contains(want), "{binding}: {err}");
        if !want.contains("both") && !want.contains("twice") {
            assert!(
                err.contains("(wm):") && err.contains("grouped-weighted-mean"),
                "{binding}: names the aggregation and the plugin: {err}"
            );
        }
        assert!(
            !dir.path().join("results.jsonl").exists() && !dir.path().join("dead.jsonl").exists(),
            "{binding}: an output was touched"
        );
    }
    // A 0.1 plugin takes one number, bound with `field`.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("events.jsonl"), events()).unwrap();
    let config = dir.path().join("p.yaml");
    std::fs::write(
        &config,
        format!(
            "source: {{ file: events.jsonl }}\n\
             event: {{ key: [service], time: {{ field: ts, format: epoch_millis }} }}\n\
             window: {{ tumbling: {{ size: 60s }} }}\n\
             aggregations: [ {{ name: n, plugin: {}, inputs: {{ value: latency_ms }} }} ]\n\
             sink: {{ file: results.jsonl }}\n",
            sluice_test_plugins::COUNT_V2
        ),
    )
    .unwrap();
    let out = run(&config);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("is of interface 0.1 and takes one number: bind it with `field`"),
        "{err}"
    );
    // `sluice validate` refuses the same way, touching nothing.
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), "inputs: { value: latency_ms }", "");
    std::fs::write(dir.path().join("events.jsonl"), "").unwrap();
    let out = sluice()
        .args(["validate", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("input `weight` (float) is not bound"));
}

/// Events of 2 services with a user id (text, or a number for some), a
/// model and a token count that is sometimes missing or text.
fn llm_events() -> String {
    let models = [
        "gpt-4o",
        "gpt-4o-mini",
        "claude",
        "llama-70b",
        "llama-8b",
        "mistral",
    ];
    let mut next = xorshift(0x7a11_5eed_0b0e_c0de);
    let mut out = String::new();
    let mut t = T0;
    for _ in 0..8_000 {
        t += (next() % 60) as i64;
        let service = next() % 2;
        // Users: a few heavy ones and a long tail.
        let user = if next().is_multiple_of(3) {
            next() % 20
        } else {
            next() % 3_000
        };
        let user = if user.is_multiple_of(7) {
            user.to_string()
        } else {
            format!("\"u{user}\"")
        };
        // Skewed models: the first ones far more often.
        let model = models[(next() % 64).trailing_zeros().min(5) as usize];
        let tokens = match next() % 50 {
            0 => String::new(),
            1 => r#","tokens":"lots""#.to_string(),
            _ => format!(r#","tokens":{}"#, 1 + next() % 500),
        };
        let _ = writeln!(
            out,
            r#"{{"ts":{t},"service":"svc-{service}","user":{user},"model":"{model}"{tokens}}}"#
        );
    }
    out
}

/// `builtin/distinct` over a text field whose values are sometimes numbers
/// (read as their JSON text) is within four standard errors of the exact
/// distinct count of every window; `builtin/top_k` weighted by an optional
/// input (a missing or non-numeric weight counts 1) lists exactly the
/// heaviest models, as a ranked list, while a window has fewer distinct
/// models than its capacity.
#[test]
fn distinct_and_top_k_match_exact_computations() {
    let events = llm_events();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("events.jsonl"), &events).unwrap();
    let config = dir.path().join("p.yaml");
    std::fs::write(
        &config,
        "source: { file: events.jsonl }\n\
         event: { key: [service], time: { field: ts, format: epoch_millis } }\n\
         window: { tumbling: { size: 60s } }\n\
         aggregations:\n\
         \x20 - { name: users, plugin: builtin/distinct, field: user }\n\
         \x20 - { name: top, plugin: builtin/top_k, inputs: { value: model, weight: tokens }, \
         config: { k: 3 } }\n\
         sink: { file: results.jsonl }\n\
         dead_letter: { file: dead.jsonl }\n",
    )
    .unwrap();
    let out = run(&config);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !dir.path().join("dead.jsonl").exists()
            || records(&dir.path().join("dead.jsonl")).is_empty()
    );
    type Window = (String, i64);
    let mut users: BTreeMap<Window, std::collections::BTreeSet<String>> = BTreeMap::new();
    let mut weights: BTreeMap<Window, BTreeMap<String, f64>> = BTreeMap::new();
    for line in events.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let ts = v["ts"].as_i64().unwrap();
        let key = (
            v["service"].as_str().unwrap().to_string(),
            ts - ts.rem_euclid(60_000),
        );
        users
            .entry(key.clone())
            .or_default()
            .insert(v["user"].to_string());
        let weight = v["tokens"].as_f64().unwrap_or(1.0);
        *weights
            .entry(key)
            .or_default()
            .entry(v["model"].as_str().unwrap().to_string())
            .or_default() += weight;
    }
    let got = records(&dir.path().join("results.jsonl"));
    assert_eq!(got.len(), users.len());
    let mut worst: f64 = 0.0;
    for r in &got {
        let key = (
            r["key"]["service"].as_str().unwrap().to_string(),
            r["window"]["start"].as_i64().unwrap(),
        );
        let exact = users[&key].len() as f64;
        let estimate = r["results"]["users.distinct"].as_f64().unwrap();
        let error = (estimate - exact).abs() / exact;
        worst = worst.max(error);
        assert!(error < 4.0 * 1.04 / 64.0, "{key:?}: {estimate} for {exact}");
        let mut ranked: Vec<(&String, &f64)> = weights[&key].iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(a.1).then_with(|| a.0.cmp(b.0)));
        let want: Vec<serde_json::Value> = ranked
            .iter()
            .take(3)
            .map(|(label, value)| serde_json::json!({ "label": label, "value": value }))
            .collect();
        assert_eq!(
            r["results"]["top.top"],
            serde_json::Value::Array(want),
            "{r}"
        );
        assert_eq!(r["results"]["top.error"], 0.0, "{r}");
    }
    assert!(worst > 0.0, "an estimate, not a count");
}

/// The example plugin `llm-cost` (three typed inputs, one optional, and a
/// price table) gives each window the cost computed here.
#[test]
fn the_llm_cost_example_prices_each_window() {
    let dir = tempfile::tempdir().unwrap();
    let mut next = xorshift(0xc057_c057_c057_c057);
    let models = ["gpt-4o", "llama-8b", "unknown-model"];
    let mut events = String::new();
    let mut want: BTreeMap<i64, (f64, i64)> = BTreeMap::new();
    for i in 0..3_000i64 {
        let t = T0 + i * 50;
        let model = models[(next() % 3) as usize];
        let prompt = next() % 2_000;
        let completion = (!next().is_multiple_of(4)).then(|| next() % 800);
        let completion_field =
            completion.map_or(String::new(), |c| format!(r#","completion_tokens":{c}"#));
        let _ = writeln!(
            events,
            r#"{{"ts":{t},"service":"chat","model":"{model}","prompt_tokens":{prompt}{completion_field}}}"#
        );
        let entry = want.entry(t - t.rem_euclid(60_000)).or_default();
        let price = match model {
            "gpt-4o" => (0.0025, 0.01),
            "llama-8b" => (0.00018, 0.00018),
            _ => {
                entry.1 += 1;
                continue;
            }
        };
        entry.0 +=
            prompt as f64 / 1000.0 * price.0 + completion.unwrap_or(0) as f64 / 1000.0 * price.1;
    }
    std::fs::write(dir.path().join("events.jsonl"), events).unwrap();
    let config = dir.path().join("p.yaml");
    std::fs::write(
        &config,
        format!(
            "source: {{ file: events.jsonl }}\n\
             event: {{ key: [service], time: {{ field: ts, format: epoch_millis }} }}\n\
             window: {{ tumbling: {{ size: 60s }} }}\n\
             aggregations:\n\
             \x20 - name: cost\n\
             \x20   plugin: {}\n\
             \x20   inputs: {{ model: model, prompt_tokens: prompt_tokens, \
             completion_tokens: completion_tokens }}\n\
             \x20   config: {{ prices: {{ gpt-4o: {{ prompt: 0.0025, completion: 0.01 }}, \
             llama-8b: {{ prompt: 0.00018, completion: 0.00018 }} }} }}\n\
             sink: {{ file: results.jsonl }}\n",
            sluice_test_plugins::LLM_COST
        ),
    )
    .unwrap();
    let out = run(&config);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = records(&dir.path().join("results.jsonl"));
    assert_eq!(got.len(), want.len());
    for r in &got {
        let (usd, unpriced) = want[&r["window"]["start"].as_i64().unwrap()];
        let res = &r["results"];
        assert!(close(res["cost.usd"].as_f64().unwrap(), usd), "{r}");
        assert_eq!(res["cost.unpriced"], unpriced, "{r}");
        let by_model = res["cost.by_model"].as_array().unwrap();
        assert_eq!(by_model.len(), 2, "{r}");
        let sum: f64 = by_model.iter().map(|e| e["value"].as_f64().unwrap()).sum();
        assert!(close(sum, usd), "{r}");
        assert!(
            by_model[0]["value"].as_f64() >= by_model[1]["value"].as_f64(),
            "{r}"
        );
    }
}
