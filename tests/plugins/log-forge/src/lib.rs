//! Tries to forge the host's log lines and to flood its logs and records
//! through every string it hands the host.
//!
//! Its name carries a newline and a forged log line. With
//! `{"open_error": N}` it refuses its config with an N-byte message full of
//! forged lines. Otherwise it counts values like `builtin/count` until it
//! meets a negative value; then (`{"fail": "merge"}`, the default) every
//! merge involving that state fails with a 1 MiB message, or
//! (`{"fail": "panic"}`) the `add` panics with one.

use serde::{Deserialize, Serialize};
use sluice_sdk::{Aggregator, Info, Output, export_aggregator_v1};

/// The line it hopes to see in the host's log as the host's own.
pub const FORGED: &str = "2030-01-01T00:00:00.000000Z  WARN forged: the host is compromised";

/// How the plugin misbehaves.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Refuse the config with a message of this many bytes.
    #[serde(default)]
    open_error: Option<usize>,
    /// What fails once a negative value has been seen.
    #[serde(default)]
    fail: Fail,
}

/// What fails once a negative value has been seen.
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Fail {
    /// Merges of that state.
    #[default]
    Merge,
    /// The `add` that sees it, with a panic.
    Panic,
}

/// A message of about `bytes` bytes that is mostly forged log lines.
fn flood(bytes: usize) -> String {
    let line = format!("\n{FORGED}\u{1b}[31m");
    let mut text = String::from("refused");
    while text.len() + line.len() <= bytes {
        text.push_str(&line);
    }
    text
}

/// The plugin.
pub struct Zoo {
    fail: Fail,
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
        "zoo-log-forge\n2030-01-01T00:00:00.000000Z  WARN forged: by the plugin name",
        env!("CARGO_PKG_VERSION"),
        "Tries to forge log lines.\u{1b}[2J\nIts description clears the terminal.",
    );

    fn new(config: Config) -> Result<Self, String> {
        if let Some(bytes) = config.open_error {
            return Err(flood(bytes));
        }
        Ok(Zoo { fail: config.fail })
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::integer(
            "count",
            "number of values\nand a forged line",
        )]
    }

    fn create(&self) -> Tally {
        Tally::default()
    }

    fn add(&self, state: &mut Tally, values: &[f64], _times: &[i64]) {
        if values.iter().any(|v| *v < 0.0) {
            state.poisoned = true;
            if self.fail == Fail::Panic {
                panic!("{}", flood(1 << 20));
            }
        }
        state.count += values.len() as u64;
    }

    fn merge(&self, state: &mut Tally, other: &Tally) -> Result<(), String> {
        if state.poisoned || other.poisoned {
            return Err(flood(1 << 20));
        }
        state.count += other.count;
        Ok(())
    }

    fn finish(&self, state: &Tally) -> Vec<Option<f64>> {
        vec![Some(state.count as f64)]
    }
}

export_aggregator_v1!(Zoo);
