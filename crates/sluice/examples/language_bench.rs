//! Per-value cost of the example plugins in each language, at batch sizes
//! 256 and 4096, beside the same computation compiled natively.
//!
//! `cargo run --release -p sluice --example language_bench` after
//! `scripts/test.sh` (or `build_example_plugins` and `build_language_plugins`
//! from `scripts/common.sh`) has built `out/plugins/`. One row per plugin and
//! batch size: nanoseconds per value through the component (one `update`
//! call per batch, every row for one window, as the window store sends a
//! window's rows) and for a native Rust loop doing the same arithmetic, so
//! the ratio is the price of the language and the sandbox. The plugins are
//! loaded as a pipeline loads them, whichever interface they export (the
//! examples are 0.2; a 0.1 build such as `ewma_python_v01` goes through the
//! host's adapter). A plugin that was not built is reported and left out.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use sluice_core::plugin::grouped::{Column, GroupId, InputKind, Rows};
use sluice_wasm::cache::CacheSetting;
use sluice_wasm::{PluginEngine, PluginLimits};

/// Values per measurement: enough for stable numbers in about a second per row.
const VALUES: usize = 1 << 21;

/// The same arithmetic as each plugin's update, natively, for the
/// comparison (a 0.1 build, `NAME_v01`, does what `NAME` does).
fn native(name: &str, values: &[f64], state: &mut [f64; 4]) {
    match name.trim_end_matches("_v01") {
        "slo_breach" => {
            state[0] += values.len() as f64;
            state[1] += values.iter().filter(|&&v| v > 2000.0).count() as f64;
        }
        "ewma_python" => {
            let decay = 0.8;
            let (mut w, mut mean, mut m2) = (state[0], state[1], state[2]);
            for &x in values {
                w = w * decay + 1.0;
                let delta = x - mean;
                mean += delta / w;
                m2 = m2 * decay + delta * (x - mean);
            }
            (state[0], state[1], state[2]) = (w, mean, m2);
        }
        "zscore_js" => {
            for &v in values {
                let z: f64 = (v - 800.0) / 400.0;
                state[3] = state[3].max(z.abs());
                if z.abs() > 3.0 {
                    state[if z > 0.0 { 1 } else { 2 }] += 1.0;
                }
            }
            state[0] += values.len() as f64;
        }
        _ => {
            let bounds = [250.0, 500.0, 1000.0, 2000.0, 5000.0];
            for &v in values {
                let b = bounds.iter().take_while(|&&b| v > b).count();
                if b < 4 {
                    state[b] += 1.0;
                }
            }
        }
    }
}

fn per_value(elapsed: Duration) -> f64 {
    elapsed.as_nanos() as f64 / VALUES as f64
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let plugins = [
        ("slo_breach", "Rust", r#"{"threshold": 2000}"#),
        ("ewma_python", "Python", r#"{"alpha": 0.2}"#),
        ("ewma_python_v01", "Python", r#"{"alpha": 0.2}"#),
        ("zscore_js", "JavaScript", r#"{"mean": 800, "stddev": 400}"#),
        (
            "zscore_js_v01",
            "JavaScript",
            r#"{"mean": 800, "stddev": 400}"#,
        ),
        (
            "histogram_c",
            "C",
            r#"{"bounds": [250, 500, 1000, 2000, 5000]}"#,
        ),
        (
            "histogram_c_v01",
            "C",
            r#"{"bounds": [250, 500, 1000, 2000, 5000]}"#,
        ),
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../out/plugins");
    // The compile cache spares the Python and JavaScript components' 20 s
    // of compiling after the first run.
    let engine = PluginEngine::with_cache(PluginLimits::default(), &CacheSetting::from_env())?;
    // Latency-like values: deterministic, spread over the buckets.
    let values: Vec<f64> = (0..4096u64)
        .map(|i| 100.0 + ((i * 2_654_435_761) % 4000) as f64)
        .collect();
    let times: Vec<i64> = (0..4096).map(|i| 1_700_000_000_000 + i).collect();
    println!("| language | plugin | batch | ns/value (wasm) | ns/value (native) | ratio |");
    println!("|---|---|---:|---:|---:|---:|");
    for (name, language, config) in plugins {
        let path = dir.join(format!("{name}.wasm"));
        let Ok(bytes) = std::fs::read(&path) else {
            eprintln!("SKIP {language}: {} is not built", path.display());
            continue;
        };
        let compiled = engine.compile_any(name, &bytes)?;
        for batch in [256usize, 4096] {
            // A fresh instance per row, so that one row's garbage does not
            // count against the next row's memory limit.
            let mut instance = engine.open_any(&compiled, config, name)?;
            let one_float = matches!(instance.inputs(), [input] if input.kind == InputKind::Float);
            if !one_float {
                return Err(format!("{name} does not take one float input").into());
            }
            let rows = Rows {
                groups: vec![GroupId(0); batch],
                times: times[..batch].to_vec(),
                columns: vec![Column::floats(values[..batch].to_vec())],
            };
            instance.update(&rows)?; // warm-up
            let started = Instant::now();
            let mut calls = 0;
            let mut failed = None;
            for _ in 0..VALUES / batch {
                if let Err(e) = instance.update(&rows) {
                    failed = Some(e);
                    break;
                }
                calls += 1;
            }
            if let Some(e) = failed {
                println!(
                    "| {language} | {name} | {batch} | failed after {calls} calls ({} values): {e} | | |",
                    calls * batch
                );
                continue;
            }
            let wasm = per_value(started.elapsed());
            // The best of three native runs: they are short and noisy.
            let native = (0..3)
                .map(|_| {
                    let mut state = [0.0; 4];
                    let started = Instant::now();
                    for _ in 0..VALUES / batch {
                        native(name, black_box(&values[..batch]), &mut state);
                    }
                    black_box(state);
                    per_value(started.elapsed())
                })
                .fold(f64::INFINITY, f64::min);
            println!(
                "| {language} | {name} | {batch} | {wasm:.2} | {native:.2} | {:.0}x |",
                wasm / native
            );
        }
    }
    Ok(())
}
