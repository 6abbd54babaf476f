//! A correct count that prints: harmless, and must not be killed for it.
//!
//! Every `add` and `finish` writes a 120-byte line to stderr and one to
//! stdout (`eprintln!` panics, and so traps, when the host refuses the
//! write). A batch with a negative value also writes a line that tries to
//! forge a log line of the host's, one with terminal escapes, and a 1 MiB
//! line without a newline, then a last line. The count is exact either way.

use serde::{Deserialize, Serialize};
use sluice_sdk::{Aggregator, Info, NoConfig, Output, export_aggregator_v1};

/// The plugin.
pub struct Zoo;

/// A count.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Tally {
    count: u64,
}

/// The line a forging plugin hopes to see in the host's log as its own.
pub const FORGED: &str = "2030-01-01T00:00:00.000000Z  WARN forged: the host is compromised";

fn chatter(call: &str, count: u64) {
    let line = format!("chatty {call}: {count:>10} values so far ");
    let line = format!("{line:-<120}");
    eprintln!("{line}");
    println!("{line}");
}

impl Aggregator for Zoo {
    type Config = NoConfig;
    type State = Tally;
    const INFO: Info = Info::mergeable(
        "zoo-chatty",
        env!("CARGO_PKG_VERSION"),
        "A correct count that prints on every call.",
    );

    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(Zoo)
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::integer("count", "number of values")]
    }

    fn create(&self) -> Tally {
        Tally::default()
    }

    fn add(&self, state: &mut Tally, values: &[f64], _times: &[i64]) {
        state.count += values.len() as u64;
        chatter("add", state.count);
        if values.iter().any(|v| *v < 0.0) {
            eprintln!("a negative value\n{FORGED}");
            eprintln!("\u{1b}[2J\u{1b}[Hterminal cleared\r{FORGED}");
            eprint!("{}", "x".repeat(1 << 20));
            eprintln!("\nafter the long line");
        }
    }

    fn merge(&self, state: &mut Tally, other: &Tally) -> Result<(), String> {
        state.count += other.count;
        Ok(())
    }

    fn finish(&self, state: &Tally) -> Vec<Option<f64>> {
        chatter("finish", state.count);
        vec![Some(state.count as f64)]
    }
}

export_aggregator_v1!(Zoo);
