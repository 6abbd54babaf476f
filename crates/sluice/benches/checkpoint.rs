//! Checkpoint cost at scale: 100k open windows (one per key) with the
//! `stats` and `percentiles` plugins, through the `sluice` binary with the
//! RocksDB backend. Reports the full checkpoint's time, an incremental
//! checkpoint's time (1% of windows changed), restore time, state size on
//! disk and the run's peak resident memory.
//!
//! `cargo bench -p sluice --bench checkpoint` (about a minute on 2 cores).
//! `SLUICE_BENCH_KEYS` changes the number of windows.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn main() {
    let keys: usize = std::env::var("SLUICE_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("input.jsonl");
    // Two events per key in one hour-long window: nothing fires before the
    // checkpoint at the end of the file, so it holds one window per key.
    let mut events = String::new();
    for round in 0..2 {
        for k in 0..keys {
            let t = 1_700_000_000_000i64 + (round * keys + k) as i64 % 1_000_000;
            let latency = 20.0 + ((k * 7919 + round) % 5000) as f64 / 3.0;
            let _ = writeln!(
                events,
                r#"{{"ts":{t},"user":"u{k}","latency_ms":{latency}}}"#
            );
        }
    }
    std::fs::write(&input, &events).expect("write input");
    let config = dir.path().join("pipeline.yaml");
    std::fs::write(
        &config,
        "source: { file: input.jsonl }\n\
         event: { key: [user], time: { field: ts, format: epoch_millis } }\n\
         watermark: { max_out_of_orderness: 1h }\n\
         window: { tumbling: { size: 1h } }\n\
         aggregations:\n\
         \x20 - { name: latency, plugin: builtin/stats, field: latency_ms, config: { quantiles: [] } }\n\
         \x20 - { name: pct, plugin: builtin/percentiles, field: latency_ms, config: { quantiles: [0.5, 0.95, 0.99] } }\n\
         sink: { file: results.jsonl }\n\
         state: { backend: rocksdb, path: state, checkpoint_interval: 1h }\n\
         log: { format: json, level: debug }\n",
    )
    .expect("write config");

    let first = run(&config);
    let state_bytes = dir_bytes(&dir.path().join("state/checkpoints"));
    // A second run over the same file plus 1% more events: it restores the
    // 100k windows, changes 1% of them and checkpoints again.
    let mut more = String::new();
    for k in (0..keys).step_by(100) {
        let _ = writeln!(
            more,
            r#"{{"ts":1700000500000,"user":"u{k}","latency_ms":42.0}}"#
        );
    }
    std::fs::write(&input, format!("{events}{more}")).expect("append");
    let second = run(&config);

    println!("checkpoint benchmark: {keys} open windows, stats + percentiles (p50/p95/p99)");
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| full checkpoint ({keys} windows) | {} ms |",
        first.checkpoint_ms
    );
    println!(
        "| incremental checkpoint ({} windows changed) | {} ms |",
        keys / 100,
        second.checkpoint_ms
    );
    println!("| restore ({keys} windows) | {} ms |", second.restore_ms);
    println!(
        "| checkpoint on disk | {:.1} MB ({:.0} bytes/window) |",
        state_bytes as f64 / 1e6,
        state_bytes as f64 / keys as f64
    );
    println!(
        "| peak resident memory, first run | {:.0} MB |",
        first.peak_rss_kb as f64 / 1024.0
    );
    println!(
        "| peak resident memory, restored run | {:.0} MB |",
        second.peak_rss_kb as f64 / 1024.0
    );
    println!("| whole first run (wall) | {:.2} s |", first.wall_s);
}

struct RunStats {
    checkpoint_ms: u64,
    restore_ms: u64,
    peak_rss_kb: i64,
    wall_s: f64,
}

/// Runs `sluice run`, reading checkpoint and restore times from its JSON
/// logs and its peak memory from the kernel's accounting of the child.
// The child is reaped by `wait4` (which also returns its resource usage),
// not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn run(config: &Path) -> RunStats {
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--config"])
        .arg(config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut stderr = child.stderr.expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    // SAFETY: pid is our own child, not yet reaped; both pointers are valid.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4 failed");
    let wall_s = started.elapsed().as_secs_f64();
    let log = reader.join().expect("stderr reader");
    assert!(status == 0, "sluice failed: {log}");
    let mut stats = RunStats {
        checkpoint_ms: 0,
        restore_ms: 0,
        peak_rss_kb: usage.ru_maxrss,
        wall_s,
    };
    for line in log.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let fields = &v["fields"];
        let message = fields["message"].as_str().unwrap_or_default();
        let millis = fields["millis"].as_u64().unwrap_or(0);
        if message.starts_with("checkpoint ") && message.ends_with(" written") {
            // The last checkpoint of the run is the one at the end of the file.
            stats.checkpoint_ms = millis;
        } else if message.starts_with("restore took") {
            stats.restore_ms = millis;
        }
    }
    stats
}

fn dir_bytes(path: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_bytes(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}
