//! What the canonical ABI costs per row for the column layouts a grouped
//! plugin call could use: text as one `option<string>` per row, or as one
//! byte buffer with offsets and a validity bitmap; floats as one
//! `option<f64>` per row, or as a `list<f64>` with a validity bitmap.
//!
//! Each call hands a batch of rows with a group index each to the guest
//! `tests/plugins/column-layout`, which folds every row into its group, so
//! the figures include the guest reading what it was given. The host side
//! of each call includes building the layout from decoded values
//! (`Vec<Option<String>>`-like rows), as the window store would.
//!
//! Prints nanoseconds per row for each layout, batch size and missing share.

use std::time::{Duration, Instant};

use sluice_config::PluginLimits;
use sluice_wasm::limits::engine_config;
use wasmtime::component::{Component, Linker, ResourceTable, TypedFunc};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The guest's standard library imports WASI; it is granted as a whole here
/// (the bench measures calls, not the sandbox).
struct Host {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Group indices: rows spread over this many groups, as windows of many keys.
const GROUPS: u32 = 1000;
/// How long each case is measured for.
const BUDGET: Duration = Duration::from_millis(800);

/// Text values shaped like model names and user ids.
fn texts(rows: usize, missing_every: usize) -> Vec<Option<String>> {
    const MODELS: [&str; 4] = [
        "gpt-4o-mini",
        "claude-3-5-sonnet",
        "llama-3.1-70b",
        "mistral-large",
    ];
    (0..rows)
        .map(|i| {
            if missing_every > 0 && i % missing_every == 0 {
                None
            } else if i % 2 == 0 {
                Some(MODELS[i % MODELS.len()].to_string())
            } else {
                Some(format!("user-{:08}", i * 7919 % 100_000))
            }
        })
        .collect()
}

fn floats(rows: usize, missing_every: usize) -> Vec<Option<f64>> {
    (0..rows)
        .map(|i| (missing_every == 0 || i % missing_every != 0).then_some(i as f64 * 0.5))
        .collect()
}

fn group_column(rows: usize) -> Vec<u32> {
    (0..rows as u32)
        .map(|i| i.wrapping_mul(2_654_435_761) % GROUPS)
        .collect()
}

/// Bit `i % 8` of byte `i / 8` set when row `i` has a value.
fn validity<T>(rows: &[Option<T>]) -> Vec<u8> {
    let mut bits = vec![0u8; rows.len().div_ceil(8)];
    for (i, row) in rows.iter().enumerate() {
        if row.is_some() {
            bits[i / 8] |= 1 << (i % 8);
        }
    }
    bits
}

/// Runs `call` repeatedly for [`BUDGET`]; nanoseconds per row.
fn measure(rows: usize, mut call: impl FnMut()) -> f64 {
    for _ in 0..20 {
        call();
    }
    let started = Instant::now();
    let mut calls = 0u64;
    while started.elapsed() < BUDGET {
        call();
        calls += 1;
    }
    started.elapsed().as_nanos() as f64 / (calls as f64 * rows as f64)
}

type TextPerValue = TypedFunc<(Vec<u32>, Vec<Option<String>>), (u64,)>;
type TextBuffer = TypedFunc<(Vec<u32>, Vec<u8>, Vec<u32>, Vec<u8>), (u64,)>;
type FloatPerValue = TypedFunc<(Vec<u32>, Vec<Option<f64>>), (f64,)>;
type FloatBuffer = TypedFunc<(Vec<u32>, Vec<f64>, Vec<u8>), (f64,)>;

fn main() -> wasmtime::Result<()> {
    let limits = PluginLimits::default();
    let mut config = engine_config(&limits, true);
    // The bench calls without deadlines; sluice's epoch checks stay compiled in.
    config.epoch_interruption(true);
    let engine = Engine::new(&config)?;
    let component = Component::from_file(&engine, sluice_test_plugins::COLUMN_LAYOUT)?;
    let mut linker = Linker::<Host>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    let host = Host {
        wasi: WasiCtx::builder().build(),
        table: ResourceTable::new(),
    };
    let mut store = Store::new(&engine, host);
    store.set_epoch_deadline(u64::MAX / 2);
    let instance = linker.instantiate(&mut store, &component)?;
    let text_per_value: TextPerValue = instance.get_typed_func(&mut store, "text-per-value")?;
    let text_buffer: TextBuffer = instance.get_typed_func(&mut store, "text-buffer")?;
    let float_per_value: FloatPerValue = instance.get_typed_func(&mut store, "float-per-value")?;
    let float_buffer: FloatBuffer = instance.get_typed_func(&mut store, "float-buffer")?;

    println!(
        "| column | rows per call | missing | per-value layout (ns/row) | buffer layout (ns/row) | ratio |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for rows in [64usize, 1024, 8192] {
        for (missing_every, missing) in [(0usize, "0%"), (10, "10%")] {
            let groups = group_column(rows);
            let text = texts(rows, missing_every);
            let per_value = measure(rows, || {
                let values = text.clone();
                let (sum,) = text_per_value
                    .call(&mut store, (groups.clone(), values))
                    .expect("text-per-value");
                std::hint::black_box(sum);
            });
            let buffer = measure(rows, || {
                let mut bytes = Vec::new();
                let mut offsets = Vec::with_capacity(rows + 1);
                offsets.push(0u32);
                for value in &text {
                    if let Some(s) = value {
                        bytes.extend_from_slice(s.as_bytes());
                    }
                    offsets.push(bytes.len() as u32);
                }
                let (sum,) = text_buffer
                    .call(
                        &mut store,
                        (groups.clone(), bytes, offsets, validity(&text)),
                    )
                    .expect("text-buffer");
                std::hint::black_box(sum);
            });
            println!(
                "| text | {rows} | {missing} | {per_value:.1} | {buffer:.1} | {:.2}x |",
                per_value / buffer
            );
            let nums = floats(rows, missing_every);
            let per_value = measure(rows, || {
                let (sum,) = float_per_value
                    .call(&mut store, (groups.clone(), nums.clone()))
                    .expect("float-per-value");
                std::hint::black_box(sum);
            });
            let buffer = measure(rows, || {
                let values: Vec<f64> = nums.iter().map(|v| v.unwrap_or(0.0)).collect();
                let (sum,) = float_buffer
                    .call(&mut store, (groups.clone(), values, validity(&nums)))
                    .expect("float-buffer");
                std::hint::black_box(sum);
            });
            println!(
                "| float | {rows} | {missing} | {per_value:.1} | {buffer:.1} | {:.2}x |",
                per_value / buffer
            );
        }
    }
    Ok(())
}
