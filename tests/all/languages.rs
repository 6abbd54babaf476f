//! Plugins in Python, JavaScript and C beside Rust, built from source by
//! `scripts/test.sh` (`build_language_plugins`) into `out/plugins/`:
//!
//! - each passes the law checker;
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

/// Runs the law checker; asserts every law passes (commutativity may be
/// skipped when the plugin does not promise it).
fn assert_laws_hold(wasm: &Path, config: &str, commutative: bool) {
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
    assert_eq!(passed, if commutative { 7 } else { 6 }, "{report}");
    if !commutative {
        assert!(report.contains("SKIP merge is commutative"), "{report}");
    }
}

#[test]
fn python_ewma_passes_the_laws() {
    if let Some(wasm) = built("ewma_python") {
        assert_laws_hold(&wasm, r#"{"alpha": 0.3}"#, false);
    }
}

#[test]
fn js_zscore_passes_the_laws() {
    if let Some(wasm) = built("zscore_js") {
        assert_laws_hold(&wasm, r#"{"mean": 5, "stddev": 2, "threshold": 1}"#, true);
    }
}

#[test]
fn c_histogram_passes_the_laws() {
    if let Some(wasm) = built("histogram_c") {
        assert_laws_hold(&wasm, r#"{"bounds": [-10, 0.5, 5, 500]}"#, true);
    }
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
    let dir = tempfile::tempdir().unwrap();
    // Relative paths in the config are taken from its directory: keep it
    // in examples/ by pointing the plugin paths at absolute ones.
    let config = config.replace(
        "../out/plugins/",
        &format!("{}/out/plugins/", root().display()),
    );
    let config_path = dir.path().join("languages.yaml");
    std::fs::write(&config_path, config).unwrap();

    let events = events();
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

    let want = expected(&events);
    let results = std::fs::read_to_string(dir.path().join("results.jsonl")).unwrap();
    let mut seen = 0;
    for line in results.lines() {
        let record: Value = serde_json::from_str(line).unwrap();
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
    assert_laws_hold(&wasm, r#"{"above": 10}"#, true);
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
