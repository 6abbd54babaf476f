//! Event deduplication: a stage before windowing that drops an event whose
//! dedup key was already seen within a TTL, for sources that deliver at least
//! once (a producer retry, a consumer replay after a crash).
//!
//! The TTL runs in event time, against the watermark: a key seen at event
//! time `t` is remembered until the watermark (or the time of the event
//! being checked) passes `t + ttl`. The decision
//! for an event therefore depends on the events before it and not on wall
//! clock or batch sizes, so a replay gives the same results. Remembered keys
//! whose TTL the watermark has passed are swept out every half TTL of
//! watermark progress, which bounds memory by the keys of about 1.5 TTL.
//!
//! Two ways to remember keys:
//! - `exact` (default): a hash map from the rendered key to its event time.
//!   Never wrong; memory grows with the distinct keys per TTL.
//! - `bloom`: Bloom filters (the `fastbloom` crate) over generations of half a
//!   TTL of event time, with a fixed seed. Memory is fixed by
//!   `expected_keys` and `false_positive_rate`; a new key is wrongly taken
//!   for a duplicate (and dropped) with probability at most about
//!   `false_positive_rate` while a generation holds no more than
//!   `expected_keys` keys. A generation is dropped only when all its keys are
//!   past the TTL, so a key is remembered for between 1 and 1.5 TTL.
//!
//! The whole state is a serde value ([`DedupState`]) so that a checkpoint
//! can persist it beside the windows and restore it on restart.

use std::collections::{BTreeMap, HashMap};

use fastbloom::BloomFilter;
use serde::{Deserialize, Serialize};

use sluice_config::{DedupConfig, DedupMode, TimeConfig, millis};

use crate::decode::{Event, EventDecoder};

/// What the dedup stage says about one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sighting {
    /// First sighting within the TTL: aggregate it.
    Unique,
    /// Its key was seen within the TTL: drop it.
    Duplicate,
    /// It lacks a dedup key field (or cannot be read): aggregate it, undeduplicated.
    NoKey,
}

/// Everything the dedup stage remembers, as a serde value for checkpoints.
///
/// Restoring it into a stage built from the same configuration continues
/// exactly where the snapshot was taken.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DedupState {
    /// Remembered keys.
    seen: Seen,
    /// Watermark of the last sweep of expired keys.
    swept_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Seen {
    /// Rendered key -> event time it was first seen at.
    Exact(HashMap<String, i64>),
    /// Generation (event time / half TTL) -> the keys first seen in it.
    Bloom(BTreeMap<i64, BloomFilter>),
}

/// The dedup stage of one pipeline.
#[derive(Debug)]
pub struct Deduplicator {
    decoder: EventDecoder,
    event: Event,
    ttl: i64,
    false_positive_rate: f64,
    expected_keys: usize,
    state: DedupState,
}

/// Every run hashes with the same seed, so the same keys collide in the same
/// way and a replay drops the same events.
const BLOOM_SEED: u128 = 0x736c_7569_6365_2d64_6564_7570_2d76_3031;

impl Deduplicator {
    /// A stage for `config`, reading event times as `time` says.
    pub fn new(config: &DedupConfig, time: &TimeConfig) -> Self {
        let seen = match config.mode {
            DedupMode::Exact => Seen::Exact(HashMap::new()),
            DedupMode::Bloom => Seen::Bloom(BTreeMap::new()),
        };
        Self {
            decoder: EventDecoder::new(&config.key, time, &[]),
            event: Event::default(),
            ttl: millis(config.ttl).max(2),
            false_positive_rate: config.false_positive_rate,
            expected_keys: config.expected_keys,
            state: DedupState {
                seen,
                swept_at: i64::MIN,
            },
        }
    }

    /// Decides about the event in `raw` (stamped `message_time` by its
    /// source) at `watermark`, and remembers its key if it is new.
    pub fn check(&mut self, raw: &[u8], message_time: Option<i64>, watermark: i64) -> Sighting {
        if self
            .decoder
            .decode_at(raw, message_time, &mut self.event)
            .is_err()
        {
            return Sighting::NoKey;
        }
        self.sweep(watermark);
        let (key, time, ttl) = (self.event.key.as_str(), self.event.time, self.ttl);
        // A key expires once the watermark, or this event's own time, is
        // past its TTL: an event a TTL after the first is not a duplicate
        // even before the watermark catches up with it.
        let now = watermark.max(time);
        let fp = self.false_positive_rate;
        let expected = self.expected_keys;
        match &mut self.state.seen {
            Seen::Exact(map) => match map.get_mut(key) {
                Some(first) if first.saturating_add(ttl) >= now => Sighting::Duplicate,
                Some(first) => {
                    // Expired but not yet swept: a new sighting.
                    *first = time;
                    Sighting::Unique
                }
                None => {
                    map.insert(key.to_owned(), time);
                    Sighting::Unique
                }
            },
            Seen::Bloom(generations) => {
                let half = ttl / 2;
                // Only generations with a key still within its TTL answer, so
                // the verdict does not depend on when the last sweep ran.
                let live = generations
                    .iter()
                    .filter(|&(&g, _)| generation_live(g, half, ttl, now));
                if live.clone().any(|(_, f)| f.contains(key)) {
                    return Sighting::Duplicate;
                }
                generations
                    .entry(time.div_euclid(half))
                    .or_insert_with(|| {
                        // Each live generation may answer a false yes; up to
                        // three are live, so each gets a third of the rate.
                        BloomFilter::with_false_pos(fp / 3.0)
                            .seed(&BLOOM_SEED)
                            .expected_items(expected)
                    })
                    .insert(key);
                Sighting::Unique
            }
        }
    }

    /// Forgets keys whose TTL the watermark has passed, every half TTL.
    fn sweep(&mut self, watermark: i64) {
        let ttl = self.ttl;
        if watermark < self.state.swept_at.saturating_add(ttl / 2) {
            return;
        }
        self.state.swept_at = watermark;
        match &mut self.state.seen {
            Seen::Exact(map) => map.retain(|_, first| first.saturating_add(ttl) >= watermark),
            Seen::Bloom(generations) => {
                let half = ttl / 2;
                generations.retain(|&g, _| generation_live(g, half, ttl, watermark));
            }
        }
    }

    /// The dedup key of the event last checked, as a JSON object.
    pub fn key(&self) -> &str {
        &self.event.key
    }

    /// Keys (exact) or generations (bloom) remembered now.
    pub fn remembered(&self) -> usize {
        match &self.state.seen {
            Seen::Exact(map) => map.len(),
            Seen::Bloom(generations) => generations.len(),
        }
    }

    /// The state, for a checkpoint.
    pub fn snapshot(&self) -> &DedupState {
        &self.state
    }

    /// Continues from a checkpointed state; refuses one of the other mode.
    pub fn restore(&mut self, state: DedupState) -> Result<(), String> {
        let same_mode = matches!(
            (&self.state.seen, &state.seen),
            (Seen::Exact(_), Seen::Exact(_)) | (Seen::Bloom(_), Seen::Bloom(_))
        );
        if !same_mode {
            return Err("the dedup state was written for another dedup mode".into());
        }
        self.state = state;
        Ok(())
    }

    /// Forgets everything (a Kafka consumer that lost its partitions: their
    /// next owner rebuilds the state by replaying from the committed offsets).
    pub fn clear(&mut self) {
        match &mut self.state.seen {
            Seen::Exact(map) => map.clear(),
            Seen::Bloom(generations) => generations.clear(),
        }
        self.state.swept_at = i64::MIN;
    }
}

/// Whether generation `g` (event times `[g * half, (g + 1) * half)`) still
/// holds a key within its TTL at `watermark`.
fn generation_live(g: i64, half: i64, ttl: i64, watermark: i64) -> bool {
    let last = g.saturating_add(1).saturating_mul(half).saturating_sub(1);
    last.saturating_add(ttl) >= watermark
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_config::TimeFormat;

    fn stage(mode: &str) -> Deduplicator {
        let config: DedupConfig = serde_json::from_str(&format!(
            r#"{{"key":["id"],"ttl":"10s","mode":"{mode}","expected_keys":1000}}"#
        ))
        .expect("config");
        let time = TimeConfig {
            field: "ts".into(),
            format: TimeFormat::EpochMillis,
        };
        Deduplicator::new(&config, &time)
    }

    fn event(id: &str, ts: i64) -> Vec<u8> {
        format!(r#"{{"id":"{id}","ts":{ts},"v":1}}"#).into_bytes()
    }

    #[test]
    fn a_key_is_a_duplicate_until_the_watermark_passes_its_ttl() {
        for mode in ["exact", "bloom"] {
            let mut d = stage(mode);
            assert_eq!(d.check(&event("a", 1_000), None, 0), Sighting::Unique);
            assert_eq!(
                d.check(&event("a", 1_000), None, 5_000),
                Sighting::Duplicate
            );
            assert_eq!(d.check(&event("b", 1_000), None, 5_000), Sighting::Unique);
            // Watermark far past 1 s + 10 s (+ half a TTL for bloom generations).
            assert_eq!(
                d.check(&event("a", 30_000), None, 30_000),
                Sighting::Unique,
                "{mode}"
            );
            assert_eq!(d.check(&br#"{"ts":5}"#[..], None, 30_000), Sighting::NoKey);
        }
    }

    #[test]
    fn memory_is_swept_by_event_time() {
        let mut d = stage("exact");
        for i in 0..100 {
            d.check(&event(&i.to_string(), i * 1_000), None, i * 1_000 - 1_000);
        }
        // Keys older than the watermark (98 s) minus the TTL (10 s), give or
        // take the half-TTL sweep interval, are gone.
        assert!(d.remembered() <= 16, "{}", d.remembered());
    }

    #[test]
    fn a_restored_snapshot_decides_as_the_original() {
        for mode in ["exact", "bloom"] {
            let mut d = stage(mode);
            for i in 0..20 {
                d.check(&event(&i.to_string(), i * 100), None, 0);
            }
            let json = serde_json::to_string(d.snapshot()).expect("serialize");
            let mut restored = stage(mode);
            restored
                .restore(serde_json::from_str(&json).expect("deserialize"))
                .expect("same mode");
            for i in 15..25 {
                let e = event(&i.to_string(), i * 100);
                assert_eq!(
                    restored.check(&e, None, 0),
                    d.check(&e, None, 0),
                    "{mode} {i}"
                );
            }
            let other = stage(if mode == "exact" { "bloom" } else { "exact" });
            assert!(restored.restore(other.snapshot().clone()).is_err());
        }
    }
}
