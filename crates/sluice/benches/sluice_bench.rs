//! The benchmarks behind docs/performance.md, printed as one table: `cargo bench -p sluice`
//! (quick: 1M events) or `cargo bench -p sluice -- --full` (10M events).
//!
//! 1. plugin call path: `stats` and `percentiles` natively (the plugin crates
//!    compiled into this binary) vs the same code as WASM components, per batch size;
//! 2. file replay end to end through the real pipeline (`pipeline::run_file`,
//!    in a child process so its peak RSS is its own), against a decode-only
//!    pass and an estimate with the aggregations native;
//! 3. sliding windows of 60 s as the slide shrinks (and at 100 ms with the
//!    partial aggregates off, every pane merged afresh);
//! 4. 100k keys with open windows: memory per window and events/s;
//! 5. latency from the event that moves the watermark past a window's end to
//!    that window's result written;
//!
//! plus a micro-benchmark of JSON decoders on the same event lines.
//!
//! `--baseline-plugins DIR` adds to benchmark 1 another build of `stats` and
//! `percentiles` (`DIR/sluice_plugin_NAME.wasm`), timed in the same rounds:
//! the way to compare two builds of a plugin on a machine whose speed drifts.
//! `--rounds N` repeats benchmark 1 N times and reports medians.
//!
//! Everything uses the real built-in plugins and the host's library API; the
//! events come from the project's generator `sluice-gen`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use serde::Deserialize;
use sluice::pipeline::{self, RunOptions};
use sluice_config::{self as config, LoadedConfig, millis};
use sluice_core::decode::{Event, EventDecoder, KeyTable};
use sluice_core::plugin::grouped::{ColumnValues, GroupId, Rows};
use sluice_core::sink::{JsonlWriter, OutputNames, write_result};
use sluice_core::source::{LineBatch, LineSource};
use sluice_core::watermark::Watermarks;
use sluice_core::window::{EventOutcome, WindowOperator, WindowSpec};
use sluice_plugin_percentiles::Percentiles;
use sluice_plugin_stats::Stats;
use sluice_sdk::Aggregator;
use sluice_wasm::bindings::{GroupedAggregatorPlugin, v0_2};
use sluice_wasm::cache::CacheSetting;
use sluice_wasm::registry::builtin_bytes;
use sluice_wasm::{AnyAggregator, PluginEngine, PluginLimits, PluginRegistry};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The `sluice` binary's allocator, so that the memory and rates measured
/// here in child processes are those of the product.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Batch sizes of the plugin call path benchmark (issue 8).
const BATCHES: [usize; 4] = [1, 16, 256, 4096];
/// The percentiles every pipeline here asks for.
const PCT_CONFIG: &str = r#"{"quantiles":[0.5,0.95,0.99]}"#;
/// `stats` as the pipelines use it: moments only, the quantiles come from `percentiles`.
const STATS_MOMENTS: &str = r#"{"quantiles":[]}"#;

/// How big a run is.
#[derive(Clone)]
struct Scale {
    full: bool,
    /// Events in the end-to-end file (benchmarks 2 and 5).
    events: u64,
    /// Events read for each sliding-window case (benchmark 3).
    sliding_events: usize,
    /// Values per native/WASM call-path measurement (benchmark 1).
    call_values: usize,
    /// Keys with an open window (benchmark 4) and events per key.
    keys: usize,
    events_per_key: usize,
    /// Another build of the built-ins (`sluice_plugin_NAME.wasm` files, as
    /// `cargo build --target wasm32-wasip2 --profile plugin` writes them),
    /// measured in the same rounds as benchmark 1's, so that two builds of a
    /// plugin compare on the same machine at the same moment.
    baseline_plugins: Option<PathBuf>,
    /// Rounds of benchmark 1 (`--rounds N`): each round times every case,
    /// and the table gives the medians.
    call_rounds: usize,
}

/// One line of the final table.
struct Row {
    bench: &'static str,
    case: String,
    result: String,
    note: String,
}

/// Rows as they are measured; each is also echoed to stderr at once.
#[derive(Default)]
struct Table(Vec<Row>);

impl Table {
    fn add(&mut self, bench: &'static str, case: impl Into<String>, result: String, note: String) {
        let row = Row {
            bench,
            case: case.into(),
            result,
            note,
        };
        eprintln!(
            "  [{}] {} | {} | {}",
            row.bench, row.case, row.result, row.note
        );
        self.0.push(row);
    }

    fn print(&self) {
        println!("| bench | case | result | ratio / target |");
        println!("|---|---|---|---|");
        for r in &self.0 {
            println!("| {} | {} | {} | {} |", r.bench, r.case, r.result, r.note);
        }
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Internal modes: the parent re-runs this binary so that a child's peak
    // RSS belongs to one workload only.
    match args.first().map(String::as_str) {
        Some("--child-run") => return child_run(args.get(1).context("config path")?),
        Some("--child-keys") => {
            let keys = args.get(1).context("keys")?.parse()?;
            let per_key = args.get(2).context("events per key")?.parse()?;
            let cache = PathBuf::from(args.get(3).context("compile cache")?);
            return child_keys(keys, per_key, &cache);
        }
        _ => {}
    }
    let mut full = false;
    let mut only: Option<Vec<String>> = None;
    let mut events: Option<u64> = None;
    let mut baseline_plugins: Option<PathBuf> = None;
    let mut call_rounds = 1;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--full" => full = true,
            // `cargo bench` passes this to every bench binary.
            "--bench" => {}
            "--only" => {
                let list = it.next().context("--only needs a list: 1,2,3,4,5,decode")?;
                only = Some(list.split(',').map(str::to_string).collect());
            }
            "--events" => events = Some(it.next().context("--events needs a number")?.parse()?),
            "--baseline-plugins" => {
                let dir = it.next().context("--baseline-plugins needs a directory")?;
                baseline_plugins = Some(PathBuf::from(dir));
            }
            "--rounds" => {
                call_rounds = it.next().context("--rounds needs a number")?.parse()?;
                if call_rounds == 0 {
                    bail!("--rounds needs at least 1");
                }
            }
            other => bail!(
                "unknown argument {other:?} (use --full, --events N, --only 1,2,3,4,5,decode, \
                 --baseline-plugins DIR, --rounds N)"
            ),
        }
    }
    let scale = Scale {
        full,
        events: events.unwrap_or(if full { 10_000_000 } else { 1_000_000 }),
        sliding_events: if full { 2_000_000 } else { 300_000 },
        call_values: if full { 4 << 20 } else { 1 << 20 },
        keys: 100_000,
        events_per_key: 10,
        baseline_plugins,
        call_rounds,
    };
    let wants = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == name));
    let work = work_dir()?;
    eprintln!(
        "sluice bench: {} mode, {} events end to end, work dir {}",
        if full { "full" } else { "quick" },
        scale.events,
        work.display()
    );
    let mut table = Table::default();
    if wants("1") {
        call_path(&scale, &mut table)?;
    }
    let needs_file = ["2", "3", "5", "decode"].iter().any(|b| wants(b));
    if needs_file {
        let file = events_file(&work, scale.events)?;
        if wants("decode") {
            decoders(&file, &mut table)?;
        }
        if wants("2") || wants("5") {
            replay(&scale, &work, &file, &mut table)?;
        }
        if wants("3") {
            sliding(&scale, &work, &file, &mut table)?;
        }
    }
    if wants("4") {
        many_keys(&scale, &mut table)?;
    }
    println!();
    println!(
        "sluice bench ({} mode: {} events end to end, {} per sliding case, {} values per call-path case)",
        if scale.full { "full" } else { "quick" },
        scale.events,
        scale.sliding_events,
        scale.call_values
    );
    println!("machine: {}", machine());
    println!();
    table.print();
    Ok(())
}

// ---------------------------------------------------------------- helpers --

/// `target/sluice-bench`: generated event files are kept there between runs.
fn work_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/sluice_bench-HASH
    let target = exe
        .ancestors()
        .nth(3)
        .context("bench binary is not under a cargo target directory")?;
    let dir = target.join("sluice-bench");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// CPU model and count, from /proc/cpuinfo.
fn machine() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']))
        })
        .unwrap_or("unknown CPU");
    let cpus = info.lines().filter(|l| l.starts_with("processor")).count();
    format!("{cpus} x {model}")
}

/// A field of /proc/self/status in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Deterministic latency-like values (exponential around 200..1000 ms) and times.
fn sample_values(n: usize) -> (Vec<f64>, Vec<i64>) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let values = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            200.0 - 400.0 * u.ln()
        })
        .collect();
    let times = (0..n as i64).map(|i| 1_700_000_000_000 + i).collect();
    (values, times)
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2}M/s", r / 1e6)
    } else {
        format!("{:.0}k/s", r / 1e3)
    }
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn fmt_ns(ns: u64) -> String {
    if ns >= 1_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else {
        format!("{:.1} us", ns as f64 / 1e3)
    }
}

// ------------------------------------------------------ 1. call path ------

/// Native ns/value of aggregator `A` with `config`, adding `values` in batches.
fn native_ns<A: Aggregator>(
    config: &str,
    values: &[f64],
    times: &[i64],
    batch: usize,
) -> Result<f64> {
    let agg = A::new(serde_json::from_str(config)?).map_err(|e| anyhow!(e))?;
    let mut state = agg.create();
    let start = Instant::now();
    for (v, t) in values.chunks(batch).zip(times.chunks(batch)) {
        agg.add(&mut state, black_box(v), black_box(t));
    }
    let elapsed = start.elapsed();
    black_box(agg.finish(&state));
    Ok(elapsed.as_nanos() as f64 / values.len() as f64)
}

/// ns/value through the host's engine (its sandbox limits, call accounting).
fn host_ns(
    engine: &PluginEngine,
    plugin: &AnyAggregator,
    config: &str,
    values: &[f64],
    times: &[i64],
    batch: usize,
) -> Result<f64> {
    let mut instance = engine.open_any(plugin, config, "bench")?;
    let mut rows = Rows::for_inputs(instance.inputs());
    let start = Instant::now();
    for (v, t) in values.chunks(batch).zip(times.chunks(batch)) {
        rows.clear();
        rows.groups.resize(v.len(), GroupId(0));
        rows.times.extend_from_slice(t);
        if let ColumnValues::Float(column) = &mut rows.columns[0].values {
            column.extend_from_slice(v);
        }
        instance.update(&rows)?;
    }
    let elapsed = start.elapsed();
    black_box(instance.evaluate(&[GroupId(0)])?);
    instance.release(&[GroupId(0)])?;
    Ok(elapsed.as_nanos() as f64 / values.len() as f64)
}

/// wasmtime's own error type, as an `anyhow` error.
fn w<T>(result: wasmtime::Result<T>) -> Result<T> {
    result.map_err(|e| anyhow!("{e:?}"))
}

/// A store with a WASI context and nothing else: no epoch deadline, no
/// memory limiter, no fuel, no per-call bookkeeping.
struct BareState {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for BareState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A plain wasmtime engine without interruption, for the "no sandbox limits" rows.
struct BareEngine {
    engine: Engine,
    linker: Linker<BareState>,
}

impl BareEngine {
    fn new() -> Result<Self> {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        let engine = w(Engine::new(&config))?;
        let mut linker = Linker::new(&engine);
        w(wasmtime_wasi::p2::add_to_linker_sync(&mut linker))?;
        Ok(Self { engine, linker })
    }

    fn ns(
        &self,
        component: &Component,
        config: &str,
        values: &[f64],
        times: &[i64],
        batch: usize,
    ) -> Result<f64> {
        let state = BareState {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        };
        let mut store = Store::new(&self.engine, state);
        let plugin = w(GroupedAggregatorPlugin::instantiate(
            &mut store,
            component,
            &self.linker,
        ))?;
        let iface = plugin.sluice_plugin_aggregator();
        let agg = w(iface.aggregation().call_open(&mut store, config))?.map_err(|e| anyhow!(e))?;
        let start = Instant::now();
        for (v, t) in values.chunks(batch).zip(times.chunks(batch)) {
            // As the host sends a batch: the columns copied into the call.
            let rows = v0_2::Rows {
                groups: vec![0; v.len()],
                times: t.to_vec(),
                columns: vec![v0_2::Column {
                    values: v0_2::ColumnValues::Float(v.to_vec()),
                    validity: Vec::new(),
                }],
            };
            w(iface.aggregation().call_update(&mut store, agg, &rows))?;
        }
        let elapsed = start.elapsed();
        black_box(w(iface.aggregation().call_evaluate(&mut store, agg, &[0]))?);
        Ok(elapsed.as_nanos() as f64 / values.len() as f64)
    }
}

/// Native ns/value of one aggregator with a config: [`native_ns`] of a type.
type NativeFn = fn(&str, &[f64], &[i64], usize) -> Result<f64>;

/// One plugin of benchmark 1, compiled for every engine it is timed in.
struct CallCase {
    label: &'static str,
    config: &'static str,
    native: NativeFn,
    limited: AnyAggregator,
    fueled: AnyAggregator,
    inlined: AnyAggregator,
    bare: Component,
    /// The other build of `--baseline-plugins`: its file, compiled for the
    /// host's engine and for the bare one.
    baseline: Option<(String, AnyAggregator, Component)>,
}

/// ns per value of one case at one batch size in one round.
struct CallTimes {
    native: f64,
    bare: f64,
    sandboxed: f64,
    inlined: f64,
    fueled: f64,
    /// The baseline build's bare and sandboxed figures.
    baseline: Option<(f64, f64)>,
}

/// The middle value (the mean of the two middle ones for an even count).
fn median_of(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn call_path(scale: &Scale, table: &mut Table) -> Result<()> {
    eprintln!("1. plugin call path");
    let (values, times) = sample_values(scale.call_values);
    let limited = PluginEngine::new(PluginLimits::default())?;
    let inlined = PluginEngine::new(PluginLimits {
        inline: true,
        ..PluginLimits::default()
    })?;
    let fueled = PluginEngine::new(PluginLimits {
        fuel: Some(1 << 50),
        ..PluginLimits::default()
    })?;
    let bare = BareEngine::new()?;
    // The moments-only case is the same plugin without its sketch: a
    // per-value loop that calls no function, beside the sketch's two calls
    // (DDSketch's `add_with_count` and the C library's `log`) per value.
    let plugins: [(&str, &str, &str, NativeFn); 3] = [
        (
            "stats",
            "stats (default: moments + 4 quantiles)",
            "{}",
            native_ns::<Stats>,
        ),
        (
            "stats",
            "stats, moments only (quantiles: [])",
            STATS_MOMENTS,
            native_ns::<Stats>,
        ),
        (
            "percentiles",
            "percentiles p50/p95/p99",
            PCT_CONFIG,
            native_ns::<Percentiles>,
        ),
    ];
    let mut cases = Vec::new();
    for (name, label, config, native) in plugins {
        let bytes = builtin_bytes(name).with_context(|| format!("no builtin/{name}"))?;
        let source = format!("builtin/{name}");
        let baseline = match &scale.baseline_plugins {
            Some(dir) => {
                let file = dir.join(format!("sluice_plugin_{name}.wasm"));
                let bytes = std::fs::read(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                let source = file.display().to_string();
                let compiled = limited.compile_any(&source, &bytes)?;
                Some((source, compiled, w(Component::new(&bare.engine, &bytes))?))
            }
            None => None,
        };
        cases.push(CallCase {
            label,
            config,
            native,
            limited: limited.compile_any(&source, bytes)?,
            fueled: fueled.compile_any(&source, bytes)?,
            inlined: inlined.compile_any(&source, bytes)?,
            bare: w(Component::new(&bare.engine, bytes))?,
            baseline,
        });
    }
    // [case][batch][round]: every round times every case at every batch
    // size, so that a drift of the machine's speed shows in all of them.
    let mut measured: Vec<Vec<Vec<CallTimes>>> = cases
        .iter()
        .map(|_| BATCHES.iter().map(|_| Vec::new()).collect())
        .collect();
    for round in 1..=scale.call_rounds {
        for (case, per_batch) in cases.iter().zip(&mut measured) {
            let (config, native) = (case.config, case.native);
            // Warm caches and the allocator before the first timed case.
            let warm = values.len() / 8;
            native(config, &values[..warm], &times[..warm], 256)?;
            for (&batch, rounds) in BATCHES.iter().zip(per_batch.iter_mut()) {
                let t = CallTimes {
                    native: native(config, &values, &times, batch)?,
                    bare: bare.ns(&case.bare, config, &values, &times, batch)?,
                    sandboxed: host_ns(&limited, &case.limited, config, &values, &times, batch)?,
                    fueled: host_ns(&fueled, &case.fueled, config, &values, &times, batch)?,
                    inlined: host_ns(&inlined, &case.inlined, config, &values, &times, batch)?,
                    baseline: match &case.baseline {
                        Some((_, compiled, component)) => Some((
                            bare.ns(component, config, &values, &times, batch)?,
                            host_ns(&limited, compiled, config, &values, &times, batch)?,
                        )),
                        None => None,
                    },
                };
                eprintln!(
                    "  round {round}: {}, batch {batch}: native {:.1} / bare {:.1} / sandboxed {:.1} / inlined {:.1} / +fuel {:.1}{} ns/value",
                    case.label,
                    t.native,
                    t.bare,
                    t.sandboxed,
                    t.inlined,
                    t.fueled,
                    t.baseline
                        .map(|(b, h)| format!(
                            " / baseline bare {b:.1} / baseline sandboxed {h:.1}"
                        ))
                        .unwrap_or_default(),
                );
                rounds.push(t);
            }
        }
    }
    // Each figure is the median of its rounds, each ratio the median of the
    // rounds' ratios: a ratio is steadier than either of its two times.
    let rounds_note = match scale.call_rounds {
        1 => String::new(),
        n => format!(" (medians of {n} rounds)"),
    };
    for (case, per_batch) in cases.iter().zip(&measured) {
        for (&batch, rounds) in BATCHES.iter().zip(per_batch) {
            let mid = |f: &dyn Fn(&CallTimes) -> f64| median_of(rounds.iter().map(f).collect());
            let vs_native = |f: &dyn Fn(&CallTimes) -> f64| mid(&|t| f(t) / t.native);
            table.add(
                "1 call path",
                format!("{}, batch {batch}", case.label),
                format!(
                    "native {:.1} / wasm bare {:.1} / sandboxed {:.1} / inlined {:.1} / +fuel {:.1} ns/value{rounds_note}",
                    mid(&|t| t.native),
                    mid(&|t| t.bare),
                    mid(&|t| t.sandboxed),
                    mid(&|t| t.inlined),
                    mid(&|t| t.fueled),
                ),
                format!(
                    "bare {:.2}x, sandboxed {:.2}x, inlined {:.2}x, +fuel {:.2}x native (target sandboxed <= 1.3x)",
                    vs_native(&|t| t.bare),
                    vs_native(&|t| t.sandboxed),
                    vs_native(&|t| t.inlined),
                    vs_native(&|t| t.fueled),
                ),
            );
            if let Some((source, _, _)) = &case.baseline {
                let base = |t: &CallTimes| t.baseline.unwrap_or((f64::NAN, f64::NAN));
                table.add(
                    "1 call path",
                    format!("{}, batch {batch}, baseline {source}", case.label),
                    format!(
                        "wasm bare {:.1} / sandboxed {:.1} ns/value{rounds_note}",
                        mid(&|t| base(t).0),
                        mid(&|t| base(t).1),
                    ),
                    format!(
                        "bare {:.2}x, sandboxed {:.2}x native; this build's sandboxed time {:.2}x the baseline's",
                        vs_native(&|t| base(t).0),
                        vs_native(&|t| base(t).1),
                        mid(&|t| t.sandboxed / base(t).1),
                    ),
                );
            }
        }
    }
    Ok(())
}

// ------------------------------------------------------ event files -------

/// The generator's binary, beside this bench's profile directory, built if missing.
fn generator() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let target = exe.ancestors().nth(3).context("no target directory")?;
    let release = target.join("release").join("sluice-gen");
    if !release.exists() {
        eprintln!("building sluice-gen (cargo build --release -p sluice-gen)");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "-p", "sluice-gen"])
            .env("CARGO_TARGET_DIR", target)
            .status()?;
        if !status.success() {
            bail!("building sluice-gen failed");
        }
    }
    Ok(release)
}

/// `n` events as issue 8 describes them: 10 keys, ~10k events/s of event
/// time, 5% out of order by up to 3 s. Kept in `dir` and reused (the
/// generator is deterministic for a seed).
fn events_file(dir: &Path, n: u64) -> Result<PathBuf> {
    let path = dir.join(format!("events-{n}.jsonl"));
    if path.exists() {
        return Ok(path);
    }
    let partial = dir.join(format!("events-{n}.jsonl.partial"));
    eprintln!("generating {n} events into {}", path.display());
    let status = Command::new(generator()?)
        .args([
            "--events",
            &n.to_string(),
            "--seed",
            "8",
            "--rate",
            "10000",
            "--services",
            "10",
        ])
        .args(["--out-of-order", "0.05", "--max-delay-ms", "3000", "--out"])
        .arg(&partial)
        .status()?;
    if !status.success() {
        bail!("sluice-gen failed");
    }
    std::fs::rename(&partial, &path)?;
    Ok(path)
}

/// Writes a pipeline config over `events` with the given `window:` YAML and
/// `stats` (moments) + `percentiles` (p50/p95/p99) of `latency_ms`.
fn write_config(dir: &Path, name: &str, events: &Path, window: &str) -> Result<PathBuf> {
    let path = dir.join(format!("{name}.yaml"));
    let yaml = format!(
        "source: {{ file: {events} }}
event: {{ key: [service], time: {{ field: ts, format: epoch_millis }} }}
watermark: {{ max_out_of_orderness: 5s }}
window: {window}
aggregations:
  - {{ name: latency, plugin: builtin/stats, field: latency_ms, config: {{ quantiles: [] }} }}
  - {{ name: latency_pct, plugin: builtin/percentiles, field: latency_ms, config: {{ quantiles: [0.5, 0.95, 0.99] }} }}
sink: {{ file: {name}-results.jsonl }}
late_output: {{ file: {name}-late.jsonl }}
dead_letter: {{ file: {name}-dead.jsonl }}
log: {{ level: error }}
",
        events = events.display()
    );
    std::fs::write(&path, yaml)?;
    Ok(path)
}

// ------------------------------------------------------ 2 + 5. replay -----

/// What a child running the real pipeline reports.
struct ChildRun {
    events: u64,
    secs: f64,
    /// Of `secs`, loading the config and compiling the plugins.
    startup_secs: f64,
    hwm_kib: u64,
}

/// Child mode: the real pipeline (`pipeline::run_file`) on `config`, then
/// its events, time and peak RSS on stdout.
fn child_run(config: &str) -> Result<()> {
    // The run compiles its plugins first; time that apart (the same work,
    // done once more here) so the rate can be given without start-up.
    let startup = {
        let start = Instant::now();
        let loaded = config::load(Path::new(config))?;
        let engine = PluginEngine::new(loaded.pipeline.plugins.clone())?;
        let mut registry = PluginRegistry::new(&engine, &loaded.base_dir);
        black_box(pipeline::open_aggregations(
            &engine,
            &mut registry,
            &loaded.pipeline,
        )?);
        start.elapsed().as_secs_f64()
    };
    let start = Instant::now();
    let summary = pipeline::run_file(Path::new(config), &RunOptions::default())?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "events={} secs={secs} startup_secs={startup} hwm_kib={} windows={}",
        summary.events_read,
        status_kib("VmHWM"),
        summary.windows_emitted
    );
    Ok(())
}

fn run_child(args: &[&str]) -> Result<String> {
    let out = Command::new(std::env::current_exe()?).args(args).output()?;
    if !out.status.success() {
        bail!(
            "child {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn field<T: std::str::FromStr>(line: &str, name: &str) -> Result<T> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {name}= in child output {line:?}"))
}

fn real_pipeline(config: &Path) -> Result<ChildRun> {
    let out = run_child(&["--child-run", &config.display().to_string()])?;
    Ok(ChildRun {
        events: field(&out, "events")?,
        secs: field(&out, "secs")?,
        startup_secs: field(&out, "startup_secs")?,
        hwm_kib: field(&out, "hwm_kib")?,
    })
}

/// Read and parse every line as the pipeline does (decode + key interning),
/// with no windowing: the rate a pipeline cannot beat.
fn decode_only(loaded: &LoadedConfig, file: &Path) -> Result<(u64, Duration)> {
    let cfg = &loaded.pipeline;
    let mut decoder = EventDecoder::new(&cfg.event.key, &cfg.event.time, &cfg.aggregations);
    let mut keys = KeyTable::default();
    let mut event = Event::default();
    let mut source = LineSource::open(file)?;
    let mut batch = LineBatch::default();
    let mut n = 0u64;
    let start = Instant::now();
    while source.next_batch(&mut batch, cfg.batch_size)? {
        for (_, raw) in batch.iter() {
            if decoder.decode(raw, &mut event).is_ok() {
                black_box(keys.intern(&event.key));
            }
            n += 1;
        }
    }
    Ok((n, start.elapsed()))
}

/// An instrumented copy of the pipeline's file loop, built from the same
/// library parts as `pipeline::run_file` (decoder, key table, watermarks,
/// window operator, result records, JSON-lines sink). It measures what the
/// real loop cannot report: time inside plugin calls and, per emitted window,
/// the time from the start of processing the event that moved the watermark
/// past its end to its result line being written to the sink's buffer.
struct Instrumented {
    events: u64,
    elapsed: Duration,
    plugin_time: Duration,
    plugin_calls: u64,
    windows: u64,
    /// Per on-time window fired by an event, nanoseconds.
    latencies: Vec<u64>,
    /// The most sliding-window partial accumulators held after a watermark.
    partials_peak: usize,
}

fn instrumented(
    loaded: &LoadedConfig,
    file: &Path,
    max_lines: Option<usize>,
    out: &Path,
    partials: bool,
) -> Result<Instrumented> {
    let cfg = &loaded.pipeline;
    let engine = PluginEngine::new(cfg.plugins.clone())?;
    let mut registry = PluginRegistry::new(&engine, &loaded.base_dir);
    let opened = pipeline::open_aggregations(&engine, &mut registry, cfg)?;
    let mut decoder = opened.decoder(cfg);
    let aggs = opened.aggs;
    let names = OutputNames::new(
        cfg.aggregations
            .iter()
            .zip(&aggs)
            .map(|(c, a)| (c.name.as_str(), a.outputs())),
    );
    let lateness = millis(cfg.allowed_lateness);
    let triggers = pipeline::open_trigger(&engine, &loaded.base_dir, cfg, &aggs)?;
    let mut operator = WindowOperator::new(
        WindowSpec::from(&cfg.window),
        lateness,
        aggs,
        triggers,
        cfg.batch_size,
        cfg.plugins.quarantine_after,
    );
    operator.set_sliding_partials(partials);
    let mut partials_peak = 0;
    let mut watermarks = Watermarks::new(millis(cfg.watermark.max_out_of_orderness), 1);
    let mut keys = KeyTable::default();
    let mut event = Event::default();
    let mut emitted = Vec::new();
    let mut line = String::new();
    let mut sink = JsonlWriter::create(out)?;
    let mut source = LineSource::open(file)?;
    let mut batch = LineBatch::default();
    let mut latencies = Vec::new();
    let (mut events, mut windows) = (0u64, 0u64);
    let limit = max_lines.unwrap_or(usize::MAX);
    let start = Instant::now();
    'read: while source.next_batch(&mut batch, cfg.batch_size)? {
        for (_, raw) in batch.iter() {
            if events as usize >= limit {
                break 'read;
            }
            let arrived = Instant::now();
            events += 1;
            if decoder.decode(raw, &mut event).is_err() {
                continue;
            }
            let key = keys.intern(&event.key);
            let watermark = watermarks.current();
            let outcome =
                operator.on_event(key, event.time, &event.values, watermark, &mut emitted)?;
            black_box(matches!(outcome, EventOutcome::Late(_)));
            let advanced = watermarks.observe(0, event.time);
            if let Some(w) = advanced {
                operator.on_watermark(w, &mut emitted)?;
                partials_peak = partials_peak.max(operator.sliding_partials_held());
            }
            for result in emitted.drain(..) {
                write_result(&mut line, keys.render(result.key), &result, &names);
                sink.write_line(&line)?;
                windows += 1;
                if advanced.is_some() {
                    latencies.push(arrived.elapsed().as_nanos() as u64);
                }
            }
        }
    }
    operator.on_watermark(watermarks.finish(), &mut emitted)?;
    for result in emitted.drain(..) {
        write_result(&mut line, keys.render(result.key), &result, &names);
        sink.write_line(&line)?;
        windows += 1;
    }
    sink.flush()?;
    let elapsed = start.elapsed();
    let health = operator.plugin_health();
    latencies.sort_unstable();
    Ok(Instrumented {
        events,
        elapsed,
        plugin_time: health.iter().map(|h| h.call_time).sum(),
        plugin_calls: health.iter().map(|h| h.calls).sum(),
        windows,
        latencies,
        partials_peak,
    })
}

fn replay(scale: &Scale, work: &Path, file: &Path, table: &mut Table) -> Result<()> {
    eprintln!(
        "2. file replay end to end ({} events) and 5. latency",
        scale.events
    );
    // The native cost of the same values, per value, measured here at batch 256.
    let (values, times) = sample_values(1 << 20);
    native_ns::<Stats>(STATS_MOMENTS, &values, &times, 256)?;
    let native_per_value = native_ns::<Stats>(STATS_MOMENTS, &values, &times, 256)?
        + native_ns::<Percentiles>(PCT_CONFIG, &values, &times, 256)?;
    let shapes = [
        ("tumbling 10s", "tumbling", "{ tumbling: { size: 10s } }"),
        (
            "sliding 10s/5s",
            "sliding",
            "{ sliding: { size: 10s, slide: 5s } }",
        ),
        ("session 2s", "session", "{ session: { gap: 2s } }"),
    ];
    for (label, name, window) in shapes {
        let config = write_config(work, name, file, window)?;
        let loaded = config::load(&config)?;
        // Measured again beside each run: on a shared machine the load moves
        // between runs, and a ratio of neighbours moves least.
        let (n, d) = decode_only(&loaded, file)?;
        let decode = rate(n, d);
        table.add(
            "2 replay",
            format!("decode only (read + parse + intern key), before {label}"),
            fmt_rate(decode),
            String::new(),
        );
        let real = real_pipeline(&config)?;
        let real_rate = real.events as f64 / real.secs;
        let steady_rate = real.events as f64 / (real.secs - real.startup_secs).max(1e-9);
        let inst = instrumented(
            &loaded,
            file,
            None,
            &work.join(format!("{name}-instrumented.jsonl")),
            true,
        )?;
        let inst_rate = rate(inst.events, inst.elapsed);
        // Native estimate: the instrumented run's time outside plugin calls,
        // plus the native cost of adding the same values. Merges, finishes,
        // creates and releases count as free natively, so this flatters the
        // native side.
        let native_secs = inst.elapsed.as_secs_f64() - inst.plugin_time.as_secs_f64()
            + inst.events as f64 * native_per_value * 1e-9;
        let native_rate = inst.events as f64 / native_secs;
        let share = inst.plugin_time.as_secs_f64() / inst.elapsed.as_secs_f64();
        table.add(
            "2 replay",
            format!("{label}, stats+percentiles"),
            format!(
                "{} ({} without the {:.2} s start-up; peak RSS {:.0} MiB); instrumented copy {}, {:.0}% of it in {} plugin calls, {} windows",
                fmt_rate(real_rate),
                fmt_rate(steady_rate),
                real.startup_secs,
                real.hwm_kib as f64 / 1024.0,
                fmt_rate(inst_rate),
                share * 100.0,
                inst.plugin_calls,
                inst.windows
            ),
            format!(
                "{:.0}% of decode-only ({:.0}% without start-up, instrumented copy {:.0}%; target >= 50%); native-aggregation estimate {} -> wasm at {:.2}x of native",
                real_rate / decode * 100.0,
                steady_rate / decode * 100.0,
                inst_rate / decode * 100.0,
                fmt_rate(native_rate),
                native_rate / inst_rate
            ),
        );
        if inst.latencies.is_empty() {
            table.add(
                "5 latency",
                label.to_string(),
                "no window was fired by an event: every key's session lasts to the end of input"
                    .into(),
                "not measurable on this input".into(),
            );
            continue;
        }
        table.add(
            "5 latency",
            label.to_string(),
            format!(
                "p50 {} / p99 {} / max {} over {} windows",
                fmt_ns(percentile(&inst.latencies, 0.5)),
                fmt_ns(percentile(&inst.latencies, 0.99)),
                fmt_ns(inst.latencies.last().copied().unwrap_or(0)),
                inst.latencies.len()
            ),
            "target p99 < 10 ms".into(),
        );
    }
    Ok(())
}

// ------------------------------------------------------ 3. sliding --------

fn sliding(scale: &Scale, work: &Path, file: &Path, table: &mut Table) -> Result<()> {
    eprintln!("3. sliding windows, first {} events", scale.sliding_events);
    let mut base = None;
    // The last case merges every pane afresh (partials off): the cost
    // partial aggregates remove.
    for (slide, partials) in [
        ("30s", true),
        ("5s", true),
        ("1s", true),
        ("100ms", true),
        ("100ms", false),
    ] {
        let name = format!("sliding60-{slide}{}", if partials { "" } else { "-panes" });
        let window = format!("{{ sliding: {{ size: 60s, slide: {slide} }} }}");
        let config = write_config(work, &name, file, &window)?;
        let loaded = config::load(&config)?;
        let inst = instrumented(
            &loaded,
            file,
            Some(scale.sliding_events),
            &work.join(format!("{name}-out.jsonl")),
            partials,
        )?;
        let r = rate(inst.events, inst.elapsed);
        let base_rate = *base.get_or_insert(r);
        table.add(
            "3 sliding",
            format!(
                "size 60s, slide {slide}{}",
                if partials {
                    ""
                } else {
                    ", partials off (every pane merged afresh)"
                }
            ),
            format!(
                "{} ({} windows, {:.0}% in {} plugin calls, at most {} partial accumulators)",
                fmt_rate(r),
                inst.windows,
                inst.plugin_time.as_secs_f64() / inst.elapsed.as_secs_f64() * 100.0,
                inst.plugin_calls,
                inst.partials_peak
            ),
            format!(
                "{:.2}x slower than slide 30s (target at 100ms: <= 1.5x)",
                base_rate / r
            ),
        );
    }
    Ok(())
}

// ------------------------------------------------------ 4. many keys ------

/// Child mode: `keys` keys x `per_key` events, all in one open 60 s tumbling
/// window per key (the watermark never reaches its end), through decode,
/// the window operator and both plugins; then every window fires.
fn child_keys(keys: usize, per_key: usize, cache: &Path) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = write_config(
        dir.path(),
        "keys",
        Path::new("unused.jsonl"),
        "{ tumbling: { size: 60s } }",
    )?;
    let loaded = config::load(&config)?;
    let cfg = &loaded.pipeline;
    // Compiled code from the cache the parent filled: a compile here would
    // leave its garbage in the allocator for the windows to reuse, and the
    // RSS growth would understate them.
    let engine = PluginEngine::with_cache(cfg.plugins.clone(), &CacheSetting::Dir(cache.into()))?;
    let mut registry = PluginRegistry::new(&engine, &loaded.base_dir);
    let opened = pipeline::open_aggregations(&engine, &mut registry, cfg)?;
    let mut decoder = opened.decoder(cfg);
    let aggs = opened.aggs;
    let triggers = pipeline::open_trigger(&engine, &loaded.base_dir, cfg, &aggs)?;
    let mut operator = WindowOperator::new(
        WindowSpec::from(&cfg.window),
        0,
        aggs,
        triggers,
        cfg.batch_size,
        cfg.plugins.quarantine_after,
    );
    let mut watermarks = Watermarks::new(millis(cfg.watermark.max_out_of_orderness), 1);
    let mut key_table = KeyTable::default();
    let mut event = Event::default();
    let mut emitted = Vec::new();
    let (values, _) = sample_values(keys * per_key);
    // Event lines of the generator's shape, made here for 100k distinct
    // services, in one buffer: a single large allocation is given back to the
    // system when dropped, so the RSS read after it is window state alone.
    let t0: i64 = 1_700_000_040_000; // a multiple of 60 s
    let n = keys * per_key;
    let mut buffer = Vec::with_capacity(n * 128);
    let mut ends = Vec::with_capacity(n);
    for (i, value) in values.iter().enumerate() {
        use std::io::Write as _;
        let ts = t0 + (i as i64 * 50_000) / n as i64;
        writeln!(
            buffer,
            r#"{{"ts":{ts},"request_id":"req-{i:09}","service":"svc-{}","model":"m","latency_ms":{value:.1},"error":false}}"#,
            i % keys
        )?;
        ends.push(buffer.len());
    }
    let before = status_kib("VmRSS").saturating_sub((buffer.capacity() / 1024) as u64);
    let start = Instant::now();
    let mut from = 0;
    for &end in &ends {
        let line = &buffer[from..end - 1];
        from = end;
        decoder.decode(line, &mut event).map_err(|e| anyhow!(e))?;
        let key = key_table.intern(&event.key);
        operator.on_event(
            key,
            event.time,
            &event.values,
            watermarks.current(),
            &mut emitted,
        )?;
        if let Some(w) = watermarks.observe(0, event.time) {
            operator.on_watermark(w, &mut emitted)?;
        }
    }
    let elapsed = start.elapsed();
    let open = operator.open_windows();
    drop(buffer);
    drop(ends);
    let after = status_kib("VmRSS");
    let fire_start = Instant::now();
    operator.on_watermark(i64::MAX, &mut emitted)?;
    let fire = fire_start.elapsed();
    println!(
        "events={n} secs={} open={open} rss_before_kib={before} rss_after_kib={after} fired={} fire_secs={}",
        elapsed.as_secs_f64(),
        emitted.len(),
        fire.as_secs_f64()
    );
    Ok(())
}

/// Rounds of bench 4.
const ROUNDS: usize = 5;
// An odd count, so that the median ratio is one round's, whose rates and
// memory the table then reports.
const _: () = assert!(ROUNDS % 2 == 1);

fn many_keys(scale: &Scale, table: &mut Table) -> Result<()> {
    eprintln!("4. {} keys with open windows", scale.keys);
    // The built-ins compiled once, here, into the cache the children load from.
    let cache = work_dir()?.join("component-cache");
    let engine =
        PluginEngine::with_cache(PluginLimits::default(), &CacheSetting::Dir(cache.clone()))?;
    for name in ["stats", "percentiles"] {
        let bytes = builtin_bytes(name).with_context(|| format!("no builtin/{name}"))?;
        engine.compile_any(&format!("builtin/{name}"), bytes)?;
    }
    let cache = cache.to_string_lossy().into_owned();
    let events = scale.keys * scale.events_per_key;
    // Rounds of the same events over 10 keys, then over the many keys: the
    // 10-key rate is what the many keys are held to, and pairing each
    // many-keys run with the 10-key run just before it keeps the ratio
    // steady while the machine's speed drifts. Medians of the rounds.
    let mut ratios = Vec::new();
    let mut runs = Vec::new();
    for _ in 0..ROUNDS {
        let few = run_child(&["--child-keys", "10", &(events / 10).to_string(), &cache])?;
        let few_rate = field::<f64>(&few, "events")? / field::<f64>(&few, "secs")?;
        let out = run_child(&[
            "--child-keys",
            &scale.keys.to_string(),
            &scale.events_per_key.to_string(),
            &cache,
        ])?;
        let events: u64 = field(&out, "events")?;
        let secs: f64 = field(&out, "secs")?;
        let open: u64 = field(&out, "open")?;
        let before: u64 = field(&out, "rss_before_kib")?;
        let after: u64 = field(&out, "rss_after_kib")?;
        let fire_secs: f64 = field(&out, "fire_secs")?;
        let rate = events as f64 / secs;
        let per_window = (after.saturating_sub(before)) as f64 * 1024.0 / open.max(1) as f64;
        ratios.push(rate / few_rate);
        runs.push((rate, few_rate, per_window, after, before, fire_secs, open));
    }
    let ratio = median_of(ratios.clone());
    let per_window = median_of(runs.iter().map(|r| r.2).collect());
    // The round whose ratio is the median, for its rates and memory.
    let (rate, few_rate, _, after, before, fire_secs, open) =
        runs[ratios.iter().position(|&r| r == ratio).unwrap_or(0)];
    table.add(
        "4 many keys",
        format!(
            "{open} open tumbling windows ({} keys), {events} events, stats+percentiles",
            scale.keys
        ),
        format!(
            "{} ({:.0}% of {} over 10 keys; median of {ROUNDS} rounds, {}); {per_window:.0} bytes per open window (median); RSS {:.0} MiB with the windows open (before them {:.0} MiB); firing all {open}: {fire_secs:.2} s",
            fmt_rate(rate),
            100.0 * ratio,
            fmt_rate(few_rate),
            ratios
                .iter()
                .map(|r| format!("{:.0}%", 100.0 * r))
                .collect::<Vec<_>>()
                .join(" "),
            after as f64 / 1024.0,
            before as f64 / 1024.0,
        ),
        "targets: >= 40% of the 10-key rate, <= 1,500 bytes a window, < 300 MB resident".into(),
    );
    Ok(())
}

// ------------------------------------------------------ decoders ----------

/// The fields the benchmark pipelines read, for decoding into a typed struct.
#[derive(Deserialize)]
struct Ev<'a> {
    ts: i64,
    #[serde(borrow)]
    service: std::borrow::Cow<'a, str>,
    latency_ms: f64,
}

fn decoders(file: &Path, table: &mut Table) -> Result<()> {
    const LINES: usize = 500_000;
    eprintln!("decode micro-benchmark, first {LINES} lines");
    let text = {
        use std::io::{BufRead, BufReader};
        let reader = BufReader::new(std::fs::File::open(file)?);
        let mut lines = Vec::with_capacity(LINES);
        for line in reader.lines().take(LINES) {
            lines.push(line?);
        }
        lines
    };
    let bytes: usize = text.iter().map(String::len).sum();
    let config = write_config(
        file.parent().unwrap_or(Path::new(".")),
        "decode",
        file,
        "{ tumbling: { size: 10s } }",
    )?;
    let loaded = config::load(&config)?;
    let cfg = &loaded.pipeline;
    let mut decoder = EventDecoder::new(&cfg.event.key, &cfg.event.time, &cfg.aggregations);
    let mut event = Event::default();
    let mut results: Vec<(&str, Duration)> = Vec::new();
    for round in 0..2 {
        let start = Instant::now();
        for line in &text {
            decoder
                .decode(line.as_bytes(), &mut event)
                .map_err(|e| anyhow!(e))?;
            black_box(&event);
        }
        let sluice = start.elapsed();
        let start = Instant::now();
        for line in &text {
            let ev: Ev<'_> = serde_json::from_slice(line.as_bytes())?;
            black_box((ev.ts, &ev.service, ev.latency_ms));
        }
        let serde = start.elapsed();
        let start = Instant::now();
        for line in &text {
            let ev: Ev<'_> = sonic_rs::from_slice(line.as_bytes())?;
            black_box((ev.ts, &ev.service, ev.latency_ms));
        }
        let sonic = start.elapsed();
        // simd-json parses in place, so each line is copied first (as a
        // decoder using it would have to: the raw line is kept for dead
        // letters); the buffers are reused, as sluice's are.
        let mut copy = Vec::new();
        let mut buffers = simd_json::Buffers::default();
        let start = Instant::now();
        for line in &text {
            copy.clear();
            copy.extend_from_slice(line.as_bytes());
            let ev: Ev<'_> = simd_json::serde::from_slice_with_buffers(&mut copy, &mut buffers)?;
            black_box((ev.ts, &ev.service, ev.latency_ms));
        }
        let simd = start.elapsed();
        if round == 1 {
            results = vec![
                (
                    "sluice decoder (serde_json streaming visitor; renders the key)",
                    sluice,
                ),
                ("serde_json::from_slice into a borrowed struct", serde),
                ("sonic_rs::from_slice into the same struct", sonic),
                (
                    "simd_json::serde::from_slice_with_buffers into the same struct (SIMD chosen at run time)",
                    simd,
                ),
            ];
        }
    }
    let base = results[0].1;
    for (name, d) in results {
        table.add(
            "decode",
            name,
            format!(
                "{:.0} ns/line, {:.0} MB/s",
                d.as_nanos() as f64 / text.len() as f64,
                bytes as f64 / d.as_secs_f64() / 1e6
            ),
            format!(
                "{:.2}x the sluice decoder's time",
                d.as_secs_f64() / base.as_secs_f64()
            ),
        );
    }
    Ok(())
}
