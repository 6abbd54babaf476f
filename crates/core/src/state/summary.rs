//! What a run did: its counters, as the closing summary line, the metrics
//! and every checkpoint report them.

/// What a run did, for its closing summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunSummary {
    /// Non-blank input lines read.
    pub events_read: u64,
    /// Window results written (on-time and late emissions).
    pub windows_emitted: u64,
    /// Events written to the late-data output.
    pub late: u64,
    /// Lines written to the dead-letter output.
    pub dead_lettered: u64,
    /// Kafka messages read again after a rebalance or restart whose effect
    /// had already been written, and so were not counted again.
    pub replayed_skipped: u64,
    /// Plugin calls that failed (each gave a window an `errors` entry).
    pub plugin_failures: u64,
    /// Plugins quarantined during the run.
    pub quarantined: u64,
    /// Window results made up by gap filling (included in `windows_emitted`).
    pub filled: u64,
    /// Events dropped by dedup because their key was seen within the TTL.
    pub duplicates: u64,
    /// The signal number (SIGINT 2, SIGTERM 15) that stopped a file or
    /// stdin run before the end of its input; not kept in checkpoints.
    #[serde(skip)]
    pub stopped_by: Option<i32>,
    /// Windows (or panes, or sessions) left open, not emitted, by such a stop.
    #[serde(skip)]
    pub left_open: u64,
    /// Whether such a stop was checkpointed, so that the same command resumes.
    #[serde(skip)]
    pub stop_checkpointed: bool,
}

impl std::fmt::Display for RunSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} events read, {} windows emitted, {} late, {} dead-lettered",
            self.events_read, self.windows_emitted, self.late, self.dead_lettered
        )?;
        if self.filled > 0 {
            write!(f, " ({} of them filled)", self.filled)?;
        }
        if self.duplicates > 0 {
            write!(f, ", {} duplicates dropped", self.duplicates)?;
        }
        if self.replayed_skipped > 0 {
            write!(f, ", {} replayed and skipped", self.replayed_skipped)?;
        }
        if self.plugin_failures > 0 {
            write!(
                f,
                ", {} failed plugin calls ({} plugins quarantined)",
                self.plugin_failures, self.quarantined
            )?;
        }
        if let Some(signal) = self.stopped_by {
            write!(
                f,
                "; stopped by {} before the end of the input: {} open windows (or panes) \
                 not emitted, {}",
                signal_name(signal),
                self.left_open,
                if self.stop_checkpointed {
                    "kept in a checkpoint (the same command resumes)"
                } else {
                    "lost (no state backend keeps them)"
                }
            )?;
        }
        Ok(())
    }
}

/// `SIGTERM` for 15, as operators know the signals (the numbers POSIX
/// fixes for the two that stop a run).
fn signal_name(signal: i32) -> String {
    match signal {
        2 => "SIGINT".into(),
        15 => "SIGTERM".into(),
        n => format!("signal {n}"),
    }
}
