//! `dedup:`: dropping redelivered events before windowing (the stage itself
//! is `sluice_core::dedup`).

use std::time::Duration;

use serde::Deserialize;

use crate::{ConfigError, de_duration, de_one_or_many, millis};

/// `dedup: { key: [request_id], ttl: 1h }`, optionally
/// `mode: bloom, false_positive_rate: 0.001, expected_keys: 1000000`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    /// Fields whose values together identify an event (one field or a list).
    #[serde(deserialize_with = "de_one_or_many")]
    pub key: Vec<String>,
    /// How long, in event time, a key is remembered.
    #[serde(deserialize_with = "de_duration")]
    pub ttl: Duration,
    /// Exact (a map) or probabilistic (Bloom filters).
    #[serde(default)]
    pub mode: DedupMode,
    /// `bloom`: the chance that a new key is taken for a duplicate.
    #[serde(default = "default_false_positive_rate")]
    pub false_positive_rate: f64,
    /// `bloom`: the distinct keys expected in half a TTL (sizes each filter).
    #[serde(default = "default_expected_keys")]
    pub expected_keys: usize,
}

fn default_false_positive_rate() -> f64 {
    0.001
}

fn default_expected_keys() -> usize {
    1_000_000
}

/// How keys are remembered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DedupMode {
    /// A map of every key: exact, memory grows with the keys.
    #[default]
    Exact,
    /// Bloom filters: fixed memory, a configurable false-positive rate.
    Bloom,
}

/// Checks what serde cannot.
pub fn validate(dedup: Option<&DedupConfig>) -> Result<(), ConfigError> {
    let Some(d) = dedup else { return Ok(()) };
    if d.key.is_empty() || d.key.iter().any(String::is_empty) {
        return Err(ConfigError(
            "key `dedup.key`: name at least one field".into(),
        ));
    }
    if millis(d.ttl) < 2 {
        return Err(ConfigError(
            "key `dedup.ttl`: must be at least 2ms (1h is usual)".into(),
        ));
    }
    if d.mode == DedupMode::Bloom {
        if !(d.false_positive_rate > 0.0 && d.false_positive_rate < 1.0) {
            return Err(ConfigError(format!(
                "key `dedup.false_positive_rate`: must be between 0 and 1, not {}",
                d.false_positive_rate
            )));
        }
        if d.expected_keys == 0 {
            return Err(ConfigError(
                "key `dedup.expected_keys`: must be positive".into(),
            ));
        }
    }
    Ok(())
}
