//! `sluice state inspect DIR`: what a state directory holds, for an operator
//! deciding whether a restart will resume where they expect.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use sluice_core::state::{LaneState, SourcePosition, StateError};

use crate::RocksBackend;

/// A text report: every checkpoint with its meta and size, then the newest
/// complete one's windows per key (the `top_keys` keys with most windows)
/// and state bytes per aggregation.
pub fn report(dir: &Path, top_keys: usize) -> Result<String, StateError> {
    let mut out = String::new();
    let checkpoints = RocksBackend::inspect(dir)?;
    let _ = writeln!(out, "state directory {}", dir.display());
    if checkpoints.is_empty() {
        let _ = writeln!(
            out,
            "no complete checkpoint: a run starts from the beginning"
        );
        return Ok(out);
    }
    let _ = writeln!(
        out,
        "{:>6}  {:<24}  {:>8}  {:>6}  {:>12}  {:<28}  {:>10}",
        "id", "taken at (UTC)", "windows", "keys", "events read", "source position", "disk bytes"
    );
    for c in &checkpoints {
        match &c.meta {
            Ok(m) => {
                let taken = chrono::DateTime::from_timestamp_millis(m.taken_at_ms)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
                    .unwrap_or_default();
                let position = match &m.source {
                    SourcePosition::File { offset, line } => {
                        format!("file byte {offset} (line {line})")
                    }
                    SourcePosition::Kafka { partitions, .. } => partitions
                        .iter()
                        .map(|(topic, p, next)| format!("{topic}/{p}@{next}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                };
                let _ = writeln!(
                    out,
                    "{:>6}  {:<24}  {:>8}  {:>6}  {:>12}  {:<28}  {:>10}",
                    c.id, taken, m.slots, m.keys, m.summary.events_read, position, c.disk_bytes
                );
            }
            Err(e) => {
                let _ = writeln!(out, "{:>6}  unreadable: {}", c.id, e.message);
            }
        }
    }
    let _ = writeln!(
        out,
        "(checkpoints share unchanged table files through hard links: their sizes overlap)"
    );
    let Some(newest) = RocksBackend::read_newest(dir)? else {
        let _ = writeln!(
            out,
            "no checkpoint reads back intact: a run starts from the beginning"
        );
        return Ok(out);
    };
    let meta = &newest.meta;
    let _ = writeln!(
        out,
        "\nnewest intact checkpoint {}: window {}; watermark {}",
        meta.id, meta.window, meta.watermarks.current
    );
    let mut per_key: BTreeMap<u32, usize> = BTreeMap::new();
    let mut bytes = vec![0usize; meta.aggregations.len()];
    let mut failed = vec![0usize; meta.aggregations.len()];
    let mut retiring = vec![0usize; meta.aggregations.len()];
    for (slot, _) in &newest.slots {
        *per_key.entry(slot.key).or_default() += 1;
        for (a, lane) in slot.lanes.iter().enumerate().take(bytes.len()) {
            if matches!(lane, LaneState::Retiring(_)) {
                retiring[a] += 1;
            }
            tally(lane, &mut bytes[a], &mut failed[a]);
        }
    }
    for (a, agg) in meta.aggregations.iter().enumerate() {
        let _ = writeln!(
            out,
            "aggregation {}: {} {} (state format {}), {} bytes of state, {} windows failed",
            agg.name, agg.plugin, agg.version, agg.state_version, bytes[a], failed[a]
        );
        if let Some(r) = newest.retiring.iter().find(|r| r.aggregation as usize == a) {
            let _ = writeln!(
                out,
                "  retiring: {} {} (state format {}, {} bytes of code) finishes {} windows",
                r.plugin,
                r.version,
                r.state_version,
                r.component.len(),
                retiring[a]
            );
        }
    }
    let mut keys: Vec<(usize, u32)> = per_key.iter().map(|(k, n)| (*n, *k)).collect();
    keys.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let _ = writeln!(
        out,
        "open windows per key ({} keys with windows):",
        keys.len()
    );
    for (n, key) in keys.iter().take(top_keys) {
        let name = newest
            .keys
            .get(*key as usize)
            .map(String::as_str)
            .unwrap_or("?");
        let _ = writeln!(out, "  {n:>6}  {name}");
    }
    if keys.len() > top_keys {
        let _ = writeln!(out, "  ... and {} more keys", keys.len() - top_keys);
    }
    Ok(out)
}

/// Adds one lane's snapshot bytes (its shadow's included) or failure.
fn tally(lane: &LaneState, bytes: &mut usize, failed: &mut usize) {
    match lane {
        LaneState::Snapshot(b) => *bytes += b.len(),
        LaneState::Failed(_) => *failed += 1,
        LaneState::Fresh => {}
        LaneState::Retiring(own) => tally(own, bytes, failed),
        LaneState::Shadowed(own, shadow) => {
            tally(own, bytes, failed);
            let mut ignored = 0;
            tally(shadow, bytes, &mut ignored);
        }
    }
}
