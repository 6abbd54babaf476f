//! Returns a huge snapshot once it has seen a negative value.
//!
//! Counts values like `builtin/count` until it meets a negative value, so a
//! test can make some windows misbehave and watch the others stay correct.
//! The snapshot of a poisoned accumulator is `{"bytes": N}` long (default
//! 40 MiB: within a 64 MiB memory limit, so the plugin can build it).

use serde::{Deserialize, Serialize};
use sluice_sdk::{Aggregator, Info, Output, export_aggregator_v1};

/// `{"bytes": N}`: the size of a poisoned accumulator's snapshot.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "forty_mib")]
    bytes: usize,
}

fn forty_mib() -> usize {
    40 << 20
}

/// The plugin.
pub struct Zoo {
    bytes: usize,
}

/// A count, and whether a negative value has been seen.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Tally {
    count: u64,
    poisoned: bool,
}

impl Aggregator for Zoo {
    type Config = Config;
    type State = Tally;
    const INFO: Info = Info::mergeable(
        "zoo-snapshot-bomb",
        env!("CARGO_PKG_VERSION"),
        "Returns a huge snapshot once it has seen a negative value.",
    );

    fn new(config: Config) -> Result<Self, String> {
        Ok(Zoo {
            bytes: config.bytes,
        })
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::integer("count", "number of values")]
    }

    fn create(&self) -> Tally {
        Tally::default()
    }

    fn add(&self, state: &mut Tally, values: &[f64], _times: &[i64]) {
        state.poisoned |= values.iter().any(|v| *v < 0.0);
        state.count += values.len() as u64;
    }

    fn merge(&self, state: &mut Tally, other: &Tally) -> Result<(), String> {
        state.count += other.count;
        state.poisoned |= other.poisoned;
        Ok(())
    }

    fn finish(&self, state: &Tally) -> Vec<Option<f64>> {
        vec![Some(state.count as f64)]
    }

    fn snapshot(&self, state: &Tally) -> Vec<u8> {
        let mut bytes = postcard::to_allocvec(state).unwrap_or_default();
        if state.poisoned {
            // The state, then padding that a restore ignores.
            bytes.resize(self.bytes.max(bytes.len()), 0);
        }
        bytes
    }

    fn restore(&self, bytes: &[u8], _version: u32) -> Result<Tally, String> {
        postcard::take_from_bytes(bytes)
            .map(|(state, _)| state)
            .map_err(|e| format!("bad snapshot: {e}"))
    }
}

export_aggregator_v1!(Zoo);
