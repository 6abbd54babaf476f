//! Plugins in Python, JavaScript and C beside Rust, built from source by
//! `scripts/test.sh` (`build_language_plugins`) into `out/plugins/`: the
//! examples of `examples/plugins/` against interface 0.2 (`NAME.wasm`), and
//! their 0.1 versions, kept in `tests/plugins-0.1/`, against interface 0.1
//! (`NAME_v01.wasm`), so that plugins of either interface in these languages
//! stay tested:
//!
//! - each build of each passes the law checker of its interface;
//! - the 0.1 and 0.2 builds of each give identical results over the same
//!   events (tumbling, sliding and session windows), skip missing values
//!   alike, and read each other's snapshots;
//! - `examples/llm-languages.yaml` runs all four side by side over the same
//!   events, and every number it writes is checked against a computation
//!   made here from the events, by the definitions (not by the plugins'
//!   update formulas);
//! - `sluice plugin new --lang python|js|c` scaffolds a plugin that builds
//!   with its `build.sh` and passes the law checker.
//!
//! A language whose toolchain could not be installed on this machine was
//! skipped by the build, which leaves `out/plugins/NAME.skipped` saying
//! why; its checks print `SKIP` with that reason instead of passing silently,
//! and a plugin that is neither built nor skipped fails the test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{next_step, xorshift};

use serde_json::Value;
use sluice_core::plugin::grouped::{GroupId, GroupedAggregation, InputSpec, Rows, Value as Input};
use sluice_wasm::cache::CacheSetting;
use sluice_wasm::{PluginEngine, PluginLimits};

/// Says on the terminal that a check was skipped and why. Written to the
/// stderr handle directly: the test harness captures `println!` and
/// `eprintln!` of passing tests, and a skip must not pass silently.
fn skip(message: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIP {message}");
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn sluice() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SLUICE_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// The built component `out/plugins/NAME.wasm`, or `None` after printing why
/// it was skipped. Panics when it was neither built nor skipped.
fn built(name: &str) -> Option<PathBuf> {
    let dir = root().join("out/plugins");
    let wasm = dir.join(format!("{name}.wasm"));
    if wasm.is_file() {
        return Some(wasm);
    }
    let skipped = dir.join(format!("{name}.skipped"));
    match std::fs::read_to_string(&skipped) {
        Ok(why) => {
            skip(&format!("{name}: {}", why.trim()));
            None
        }
        Err(_) => panic!(
            "{} is missing and was not skipped: run scripts/test.sh, which builds the language plugins",
            wasm.display()
        ),
    }
}

/// Whether the toolchain for `lang` is usable here, as scripts/common.sh decides.
fn toolchain_missing(lang: &str) -> Option<String> {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source '{}/scripts/common.sh' && language_toolchain_missing {lang}",
            root().display()
        ))
        .output()
        .expect("bash runs");
    let why = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!why.is_empty()).then_some(why)
}

/// The plugin interface a component was built against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interface {
    /// `sluice:plugin@0.1.0` (`wit/`): one accumulator per window.
    V01,
    /// `sluice:plugin@0.2.0` (`wit/v0.2/`): grouped calls.
    V02,
}

impl Interface {
    /// Both, oldest first.
    const BOTH: [Interface; 2] = [Interface::V01, Interface::V02];

    /// The file name of `name`'s build for this interface, without `.wasm`
    /// (as `build_language_plugins` names it).
    fn file(self, name: &str) -> String {
        match self {
            Interface::V01 => format!("{name}_v01"),
            Interface::V02 => name.to_string(),
        }
    }

    /// How many laws `sluice plugin test` checks for it: 0.2 adds "one
    /// grouped call equals the rows sent group by group" and "a released
    /// group is empty again".
    fn laws(self) -> usize {
        match self {
            Interface::V01 => 7,
            Interface::V02 => 9,
        }
    }
}

/// Runs the law checker; asserts every law of `interface` passes
/// (commutativity may be skipped when the plugin does not promise it).
fn assert_laws_hold(wasm: &Path, config: &str, commutative: bool, interface: Interface) {
    let out = sluice()
        .args(["plugin", "test", "--config", config])
        .arg(wasm)
        .output()
        .expect("sluice runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}: {report}{}",
        wasm.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let passed = report.lines().filter(|l| l.starts_with("PASS ")).count();
    let laws = interface.laws();
    assert_eq!(
        passed,
        if commutative { laws } else { laws - 1 },
        "{report}"
    );
    if !commutative {
        assert!(report.contains("SKIP merge is commutative"), "{report}");
    }
}

/// The law checker on the 0.1 and the 0.2 build of `name`.
fn both_builds_pass_the_laws(name: &str, config: &str, commutative: bool) {
    for interface in Interface::BOTH {
        if let Some(wasm) = built(&interface.file(name)) {
            assert_laws_hold(&wasm, config, commutative, interface);
        }
    }
}

#[test]
fn python_ewma_passes_the_laws() {
    both_builds_pass_the_laws("ewma_python", r#"{"alpha": 0.3}"#, false);
}

#[test]
fn js_zscore_passes_the_laws() {
    both_builds_pass_the_laws(
        "zscore_js",
        r#"{"mean": 5, "stddev": 2, "threshold": 1}"#,
        true,
    );
}

#[test]
fn c_histogram_passes_the_laws() {
    both_builds_pass_the_laws("histogram_c", r#"{"bounds": [-10, 0.5, 5, 500]}"#, true);
}

#[test]
fn plugins_reject_bad_configs_naming_the_key() {
    // One case for the Python and JS plugins: each load compiles a runtime
    // of 12-18 MB (about 20 s of CPU).
    let cases = [
        ("ewma_python", r#"{"alpha": 0}"#, "alpha"),
        ("zscore_js", r#"{"mean": 1}"#, "stddev"),
        ("histogram_c", r#"{"bounds": [2, 1]}"#, "bounds"),
        ("histogram_c", r#"{"buckets": [1]}"#, "buckets"),
    ];
    for (name, config, key) in cases {
        let Some(wasm) = built(name) else { continue };
        let out = sluice()
            .args(["plugin", "inspect", "--config", config])
            .arg(&wasm)
            .output()
            .expect("sluice runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name} {config}: {stderr}");
        assert!(
            stderr.contains("rejected its config") && stderr.contains(key),
            "{name} {config}: {stderr}"
        );
    }
}

// ---------------------------------------------------------------------------
// The four languages side by side.

const SERVICES: [&str; 3] = ["chat-api", "search-rag", "summarizer"];
const START: i64 = 1_700_000_000_000;
const WINDOW: i64 = 10_000;

/// One event: (time, service, latency in ms).
type Event = (i64, &'static str, f64);

/// Runs the pipeline `config` (YAML, its plugin paths relative to
/// `examples/` as in `examples/llm-languages.yaml`) over `events`, to the
/// end; asserts that it read every event and that none was late or
/// dead-lettered, and returns the result records.
fn run_pipeline(config: &str, events: &[Event]) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    // Relative paths in the config are taken from its directory: keep it
    // in examples/ by pointing the plugin paths at absolute ones.
    let config = config.replace(
        "../out/plugins/",
        &format!("{}/out/plugins/", root().display()),
    );
    let config_path = dir.path().join("languages.yaml");
    std::fs::write(&config_path, config).unwrap();
    let input: String = events
        .iter()
        .map(|(ts, service, latency)| {
            format!(r#"{{"ts":{ts},"service":"{service}","latency_ms":{latency}}}"#) + "\n"
        })
        .collect();
    std::fs::write(dir.path().join("events.jsonl"), input).unwrap();
    let out = sluice()
        .args(["run", "--config"])
        .arg(&config_path)
        .env("SLUICE_SOURCE__FILE", dir.path().join("events.jsonl"))
        .env("SLUICE_SINK__FILE", dir.path().join("results.jsonl"))
        .env("SLUICE_LATE_OUTPUT__FILE", dir.path().join("late.jsonl"))
        .env("SLUICE_DEAD_LETTER__FILE", dir.path().join("dead.jsonl"))
        .output()
        .expect("sluice runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("{} events read", events.len()))
            && stderr.contains("0 late, 0 dead-lettered"),
        "{stderr}"
    );
    let results = std::fs::read_to_string(dir.path().join("results.jsonl")).unwrap();
    results
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Deterministic events: ~30 per second over 95 s, some moved back by up
/// to 2 s (within the config's 5 s of out-of-orderness, so none is late),
/// latencies with a long tail that crosses the SLO and the z-score limit.
fn events() -> Vec<Event> {
    let mut bits = xorshift(0x9e37_79b9_7f4a_7c15);
    let mut next = move || (bits() >> 11) as f64 / (1u64 << 53) as f64;
    let mut events = Vec::new();
    let mut t = START;
    while t < START + 95_000 {
        t += 1 + (next() * 65.0) as i64;
        let service = SERVICES[(next() * 3.0) as usize];
        let u = next();
        let latency = (150.0 + 900.0 * u * u + 6_000.0 * u.powi(12) + next() * 50.0).round() / 4.0
            * 4.0
            + next();
        let ts = if next() < 0.08 {
            t - (next() * 2_000.0) as i64
        } else {
            t
        };
        events.push((ts, service, latency));
    }
    events
}

/// What each window should report: `(service, window start)` to output
/// name and value, computed from the window's values in arrival order.
fn expected(events: &[Event]) -> BTreeMap<(String, i64), BTreeMap<String, Option<f64>>> {
    let mut windows: BTreeMap<(String, i64), Vec<f64>> = BTreeMap::new();
    for &(ts, service, latency) in events {
        let start = ts - ts.rem_euclid(WINDOW);
        windows
            .entry((service.to_string(), start))
            .or_default()
            .push(latency);
    }
    windows
        .into_iter()
        .map(|(key, values)| {
            let n = values.len() as f64;
            let mut out = BTreeMap::new();
            // Rust: slo-breach, threshold 2000.
            let breaches = values.iter().filter(|&&v| v > 2000.0).count() as f64;
            out.insert("slo.total".into(), Some(n));
            out.insert("slo.breaches".into(), Some(breaches));
            out.insert("slo.breach_ratio".into(), Some(breaches / n));
            // Python: the i-th of n values weighs (1 - alpha)^(n - 1 - i).
            let alpha: f64 = 0.2;
            let weights: Vec<f64> = (0..values.len())
                .map(|i| (1.0 - alpha).powi((values.len() - 1 - i) as i32))
                .collect();
            let total: f64 = weights.iter().sum();
            let mean = values.iter().zip(&weights).map(|(v, w)| v * w).sum::<f64>() / total;
            let variance = values
                .iter()
                .zip(&weights)
                .map(|(v, w)| w * (v - mean) * (v - mean))
                .sum::<f64>()
                / total;
            out.insert("ewma.count".into(), Some(n));
            out.insert("ewma.mean".into(), Some(mean));
            out.insert("ewma.variance".into(), Some(variance));
            out.insert("ewma.stddev".into(), Some(variance.sqrt()));
            // JavaScript: z = (v - 800) / 400, anomalies beyond 3.
            let z: Vec<f64> = values.iter().map(|v| (v - 800.0) / 400.0).collect();
            let high = z.iter().filter(|&&z| z > 3.0).count() as f64;
            let low = z.iter().filter(|&&z| z < -3.0).count() as f64;
            out.insert("zscore.count".into(), Some(n));
            out.insert("zscore.anomalies".into(), Some(high + low));
            out.insert("zscore.high".into(), Some(high));
            out.insert("zscore.low".into(), Some(low));
            out.insert("zscore.anomaly_ratio".into(), Some((high + low) / n));
            let max_z = z.iter().map(|z| z.abs()).fold(0.0, f64::max);
            out.insert("zscore.max_abs_z".into(), Some(max_z));
            // C: cumulative buckets.
            for bound in [250, 500, 1000, 2000, 5000] {
                let le = values.iter().filter(|&&v| v <= f64::from(bound)).count() as f64;
                out.insert(format!("latency_hist.le_{bound}"), Some(le));
            }
            out.insert("latency_hist.count".into(), Some(n));
            (key, out)
        })
        .collect()
}

fn close(got: f64, want: f64) -> bool {
    got == want || (got - want).abs() <= 1e-9 * got.abs().max(want.abs())
}

#[test]
fn four_languages_side_by_side_give_the_expected_results() {
    let plugins = [
        ("ewma_python", "ewma."),
        ("zscore_js", "zscore."),
        ("histogram_c", "latency_hist."),
    ];
    let example = root().join("out/plugins/slo_breach.wasm");
    assert!(
        example.is_file(),
        "{} is missing: run scripts/test.sh",
        example.display()
    );
    // A language that was skipped is left out of the pipeline (its line in
    // the example names its .wasm file) and of the expected results.
    let config = std::fs::read_to_string(root().join("examples/llm-languages.yaml")).unwrap();
    let mut skipped = Vec::new();
    for (name, prefix) in plugins {
        if built(name).is_none() {
            skipped.push((format!("{name}.wasm"), prefix));
        }
    }
    let config: String = config
        .lines()
        .filter(|line| !skipped.iter().any(|(file, _)| line.contains(file.as_str())))
        .map(|line| format!("{line}\n"))
        .collect();
    let events = events();
    let want = expected(&events);
    let mut seen = 0;
    for record in run_pipeline(&config, &events) {
        let line = record.to_string();
        assert!(record.get("errors").is_none(), "{line}");
        let key = (
            record["key"]["service"].as_str().unwrap().to_string(),
            record["window"]["start"].as_i64().unwrap(),
        );
        let want = want
            .get(&key)
            .unwrap_or_else(|| panic!("unexpected window {key:?}"));
        let got = record["results"].as_object().unwrap();
        let mut checked = 0;
        for (name, value) in want {
            if skipped.iter().any(|(_, prefix)| name.starts_with(prefix)) {
                continue;
            }
            let got = got
                .get(name)
                .unwrap_or_else(|| panic!("{name} missing: {line}"));
            match (got.as_f64(), value) {
                (Some(g), Some(w)) => assert!(close(g, *w), "{key:?} {name}: got {g}, want {w}"),
                (None, None) => {}
                (g, w) => panic!("{key:?} {name}: got {g:?}, want {w:?}"),
            }
            checked += 1;
        }
        assert_eq!(
            got.len(),
            checked,
            "outputs beyond the expected ones: {line}"
        );
        seen += 1;
    }
    assert_eq!(seen, want.len(), "one record per window and service");
    for (file, _) in &skipped {
        skip(&format!("the pipeline ran without {file}"));
    }
}

// ---------------------------------------------------------------------------
// The 0.1 and 0.2 builds of each plugin agree.

/// Runs `name`'s 0.1 build (aggregation `v01`) and 0.2 build (`v02`),
/// both with `config`, in one pipeline over the events of [`events`], with
/// tumbling, sliding and session windows; asserts that every window's
/// results are identical, value for value. Sliding windows merge panes in
/// time order, and sessions merge as events join them, so merges are
/// compared too.
fn both_builds_agree_in_pipelines(name: &str, config: &str) {
    let (Some(_), Some(_)) = (
        built(&Interface::V01.file(name)),
        built(&Interface::V02.file(name)),
    ) else {
        return;
    };
    let events = events();
    let windows = [
        "{ tumbling: { size: 10s } }",
        "{ sliding: { size: 10s, slide: 2s } }",
        "{ session: { gap: 300ms } }",
    ];
    for window in windows {
        let pipeline = format!(
            "source: {{ file: events.jsonl }}
event:
  key: [service]
  time: {{ field: ts, format: epoch_millis }}
watermark: {{ max_out_of_orderness: 5s }}
window: {window}
allowed_lateness: 0s
aggregations:
  - {{ name: v01, plugin: ../out/plugins/{v01}.wasm, field: latency_ms, config: {config} }}
  - {{ name: v02, plugin: ../out/plugins/{v02}.wasm, field: latency_ms, config: {config} }}
sink: {{ file: results.jsonl }}
",
            v01 = Interface::V01.file(name),
            v02 = Interface::V02.file(name),
        );
        let records = run_pipeline(&pipeline, &events);
        assert!(!records.is_empty(), "{name} {window}: no results");
        for record in &records {
            assert!(record.get("errors").is_none(), "{name} {window}: {record}");
            let results = record["results"].as_object().unwrap();
            let by = |prefix: &str| -> BTreeMap<String, Value> {
                results
                    .iter()
                    .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_string(), v.clone())))
                    .collect()
            };
            let (v01, v02) = (by("v01."), by("v02."));
            assert!(!v01.is_empty(), "{name} {window}: {record}");
            assert_eq!(v01, v02, "{name} {window}: {record}");
        }
    }
}

#[test]
fn python_ewma_0_1_and_0_2_give_identical_results() {
    both_builds_agree_in_pipelines("ewma_python", r#"{ alpha: 0.2 }"#);
}

#[test]
fn js_zscore_0_1_and_0_2_give_identical_results() {
    both_builds_agree_in_pipelines("zscore_js", r#"{ mean: 800, stddev: 400, threshold: 3 }"#);
}

#[test]
fn c_histogram_0_1_and_0_2_give_identical_results() {
    both_builds_agree_in_pipelines("histogram_c", r#"{ bounds: [250, 500, 1000, 2000, 5000] }"#);
}

/// `name`'s build for `interface`, opened with `config` behind the grouped
/// trait (a 0.1 build through the host's adapter, as a pipeline runs it);
/// `None` when the build was skipped.
fn open_build(
    name: &str,
    interface: Interface,
    config: &str,
) -> Option<Box<dyn GroupedAggregation>> {
    let wasm = built(&interface.file(name))?;
    let engine = PluginEngine::with_cache(PluginLimits::default(), &CacheSetting::from_env())
        .expect("engine");
    let bytes = std::fs::read(&wasm).unwrap();
    let plugin = engine
        .compile_any(&wasm.display().to_string(), &bytes)
        .unwrap_or_else(|e| panic!("{}: {e}", wasm.display()));
    Some(
        engine
            .open_any(&plugin, config, "test")
            .unwrap_or_else(|e| panic!("{}: {e}", wasm.display())),
    )
}

/// One batch of rows for groups `base`, `base + 1` and `base + 2`,
/// interleaved, with the latencies of [`events`]; every fifth or so value
/// missing (a clear bit in the column's validity bitmap) when `missing`, or
/// left out when not.
fn latency_rows(inputs: &[InputSpec], base: u32, missing: bool) -> Rows {
    let mut rows = Rows::for_inputs(inputs);
    let mut bits = xorshift(0x5eed_1e55);
    for (ts, _, latency) in events().into_iter().take(600) {
        let draw = bits();
        let absent = draw.is_multiple_of(5);
        if absent && !missing {
            continue;
        }
        rows.groups.push(GroupId(base + (draw >> 8) as u32 % 3));
        rows.times.push(ts);
        let pushed = rows.columns[0].push((!absent).then_some(Input::Float(latency)));
        assert!(pushed, "the plugin's input is a float");
    }
    rows
}

/// Calls `name`'s 0.1 and 0.2 builds directly: a batch with missing values
/// gives what the same batch without them gives (the 0.2 plugin reads the
/// validity bitmap; the host's adapter skips them for 0.1), both builds
/// agree, write the same snapshot bytes and restore each other's
/// (checkpoints and hot reloads carry over between them), merge alike, and
/// a released group is empty.
fn both_builds_agree_on_calls(name: &str, config: &str) {
    let (Some(mut old), Some(mut new)) = (
        open_build(name, Interface::V01, config),
        open_build(name, Interface::V02, config),
    ) else {
        return;
    };
    let groups = |base: u32| [GroupId(base), GroupId(base + 1), GroupId(base + 2)];
    assert_eq!(new.inputs().len(), 1, "{name}: one input");
    assert!(!new.inputs()[0].optional, "{name}: a required input");
    let with_missing = latency_rows(new.inputs(), 0, true);
    assert!(!with_missing.columns[0].validity.is_empty());
    new.update(&with_missing).unwrap();
    new.update(&latency_rows(new.inputs(), 10, false)).unwrap();
    old.update(&latency_rows(old.inputs(), 0, true)).unwrap();
    let want = new.evaluate(&groups(0)).unwrap();
    assert_eq!(
        new.evaluate(&groups(10)).unwrap(),
        want,
        "{name}: missing values are skipped"
    );
    assert_eq!(
        old.evaluate(&groups(0)).unwrap(),
        want,
        "{name}: 0.1 and 0.2 agree"
    );

    let version = new.info().state_version;
    assert_eq!(
        old.info().state_version,
        version,
        "{name}: one state format"
    );
    let (old_states, new_states) = (
        old.snapshot(&groups(0)).unwrap(),
        new.snapshot(&groups(0)).unwrap(),
    );
    assert_eq!(old_states, new_states, "{name}: the same snapshot bytes");
    let states: Vec<&[u8]> = old_states.iter().map(Vec::as_slice).collect();
    assert!(
        new.restore(&groups(20), &states, version)
            .unwrap()
            .is_empty()
    );
    assert!(
        old.restore(&groups(20), &states, version)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        new.evaluate(&groups(20)).unwrap(),
        want,
        "{name}: 0.2 restores 0.1's snapshot"
    );
    assert_eq!(
        old.evaluate(&groups(20)).unwrap(),
        want,
        "{name}: 0.1 restores 0.2's snapshot"
    );

    let (into, from) = ([GroupId(0), GroupId(0)], [GroupId(1), GroupId(2)]);
    old.merge(&into, &from).unwrap();
    new.merge(&into, &from).unwrap();
    let merged = new.evaluate(&groups(0)).unwrap();
    assert_eq!(
        old.evaluate(&groups(0)).unwrap(),
        merged,
        "{name}: merges agree"
    );
    assert_eq!(
        merged[1..],
        want[1..],
        "{name}: merging leaves `from` as it was"
    );

    new.release(&[GroupId(0)]).unwrap();
    assert_eq!(
        new.evaluate(&[GroupId(0)]).unwrap(),
        new.evaluate(&[GroupId(99)]).unwrap(),
        "{name}: a released group is empty"
    );
}

#[test]
fn python_ewma_0_1_and_0_2_agree_on_calls() {
    both_builds_agree_on_calls("ewma_python", r#"{"alpha": 0.2}"#);
}

#[test]
fn js_zscore_0_1_and_0_2_agree_on_calls() {
    both_builds_agree_on_calls(
        "zscore_js",
        r#"{"mean": 800, "stddev": 400, "threshold": 3}"#,
    );
}

#[test]
fn c_histogram_0_1_and_0_2_agree_on_calls() {
    both_builds_agree_on_calls("histogram_c", r#"{"bounds": [250, 500, 1000, 2000, 5000]}"#);
}

// ---------------------------------------------------------------------------
// Scaffolds.

fn scaffold_builds_and_passes_the_laws(lang: &str) {
    if let Some(why) = toolchain_missing(lang) {
        skip(&format!("sluice plugin new --lang {lang}: {why}"));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = sluice()
        .args(["plugin", "new", "above-mean", "--lang", lang, "--dir"])
        .arg(dir.path())
        .output()
        .expect("sluice runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let project = dir.path().join("above-mean");
    let steps = String::from_utf8_lossy(&out.stdout);
    let wasm = project.join("above_mean.wasm");
    assert_eq!(
        next_step(&steps, "build it"),
        project.join("build.sh").display().to_string()
    );
    assert_eq!(next_step(&steps, "component"), wasm.display().to_string());
    let build = Command::new(project.join("build.sh"))
        .output()
        .expect("build.sh runs");
    assert!(
        build.status.success(),
        "{}{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );
    assert_laws_hold(&wasm, r#"{"above": 10}"#, true, Interface::V02);
}

#[test]
fn plugin_new_python_builds_and_passes_the_laws() {
    scaffold_builds_and_passes_the_laws("python");
}

#[test]
fn plugin_new_js_builds_and_passes_the_laws() {
    scaffold_builds_and_passes_the_laws("js");
}

#[test]
fn plugin_new_c_builds_and_passes_the_laws() {
    scaffold_builds_and_passes_the_laws("c");
}
