//! Durable window state: checkpoints of everything a run needs to carry on
//! after a crash, and the backends that keep them.
//!
//! A checkpoint is taken between two input batches, when no value is waiting
//! in a buffer and every output has been flushed. It holds:
//! - every open window (or pane, or session) with each aggregation's
//!   accumulator as the plugin's snapshot bytes, or the error that window
//!   reports instead;
//! - the interned keys, in id order (timers due together fire in key-id order,
//!   so a restored run must give every key the id it had);
//! - the watermark state per input partition, the source position, the byte
//!   length of each output file, the run's counters and the plugins' health.
//!
//! Timers are not stored: every timer of an open window that is due after
//! the checkpoint's watermark is one its window shape re-creates from the
//! window's bounds (see `WindowOperator::restore_slot`), and every earlier
//! one has already run.
//!
//! Checkpoints are incremental: only windows changed since the previous
//! checkpoint are written, and windows closed since are deleted. Each record
//! carries a CRC-32 of its bytes and the meta record carries the number of
//! window records and the sum of their CRCs, so a checkpoint whose records
//! do not add up is detected when it is read, and the previous one is used.

mod memory;
mod summary;

pub use memory::MemoryBackend;
pub use summary::RunSummary;

pub use crate::record::{StateError, decode_record, encode_record};
pub use crate::watermark::WatermarkState;
pub use crate::window::persist::{
    HealthState, LaneState, RetiringState, SlotKey, SlotState, WindowDelta,
};

use serde::{Deserialize, Serialize};

use crate::decode::KeyId;
use crate::dedup::DedupState;
use crate::fill::FillState;
use crate::window::TriggerRecord;

/// Bumped whenever the layout of checkpoint records changes.
pub const FORMAT_VERSION: u32 = 3;

/// Which plugin state an aggregation's snapshots are in, so that a restart
/// with a different plugin or state format is refused instead of misread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregationMeta {
    /// The aggregation's name in the config.
    pub name: String,
    /// The plugin's self-declared name.
    pub plugin: String,
    /// The plugin's version.
    pub version: String,
    /// The format of its snapshot bytes.
    pub state_version: u32,
}

/// How far the source had been read when the checkpoint was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourcePosition {
    /// A file: the byte offset of the next line to read, and how many lines
    /// came before it (for the line numbers of dead letters).
    File {
        /// Bytes consumed.
        offset: u64,
        /// Lines consumed.
        line: u64,
    },
    /// A Kafka consumer group member: the next offset to read of each
    /// partition it owned and had a position in.
    Kafka {
        /// Names this state directory in the group's commit metadata, so a
        /// restored run can tell whether another member has processed a
        /// partition since (then the checkpoint is not used).
        token: u64,
        /// `(topic, partition, next offset)`.
        partitions: Vec<(String, i32, i64)>,
    },
}

/// Where each output stood at the checkpoint; `None` for a standard stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkLengths {
    /// Window results.
    pub results: Option<OutputPosition>,
    /// Late events.
    pub late: Option<OutputPosition>,
    /// Dead letters.
    pub dead: Option<OutputPosition>,
    /// Dropped duplicates, when they have an output.
    pub dedup: Option<OutputPosition>,
}

/// Where one output stood at a checkpoint: what a restored run must not
/// write again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutputPosition {
    /// A file's length in bytes: a restored run cuts the file back to it.
    File(u64),
    /// A Kafka topic, which cannot be cut back: a restored run reads what
    /// was written after this position and does not write it again.
    Topic(TopicPosition),
}

/// A Kafka output's position at a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicPosition {
    /// Per partition of the topic, the offset after the last record the run
    /// knows of (its own, acknowledged, or read back at a restore).
    pub ends: Vec<(i32, i64)>,
    /// Records read back at an earlier restore that the replay has not
    /// written again yet, as `(message key, value)`.
    pub pending: Vec<(Option<String>, String)>,
}

impl OutputPosition {
    /// The file length, for a file output.
    pub fn file_length(&self) -> Option<u64> {
        match self {
            Self::File(length) => Some(*length),
            Self::Topic(_) => None,
        }
    }
}

/// Everything of a checkpoint but its windows and keys: small, and written
/// whole every time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    /// [`FORMAT_VERSION`] of the writer.
    pub format: u32,
    /// Increases by one per checkpoint.
    pub id: u64,
    /// Milliseconds since the epoch when it was taken (for `state inspect`).
    pub taken_at_ms: i64,
    /// The window shape, as text, so a changed shape is refused.
    pub window: String,
    /// The aggregations, in order.
    pub aggregations: Vec<AggregationMeta>,
    /// Per aggregation, its plugin's failure record.
    pub health: Vec<HealthState>,
    /// The watermarks.
    pub watermarks: WatermarkState,
    /// Where the source resumes.
    pub source: SourcePosition,
    /// Where the output files are cut back to on recovery.
    pub sinks: SinkLengths,
    /// The run's counters so far.
    pub summary: RunSummary,
    /// The dedup stage's remembered keys (written whole: they expire by
    /// event time, so they stay as small as the TTL allows).
    pub dedup: Option<DedupState>,
    /// The gap filler's per-key series.
    pub fill: Option<FillState>,
    /// Trigger state of the windows whose trigger is not as new (few: the
    /// default trigger keeps none), with the trigger timers they set.
    pub triggers: Vec<TriggerRecord>,
    /// The trigger plugin's (name, version, state format) that wrote them.
    pub trigger: (String, String, u32),
    /// How many keys the key table holds.
    pub keys: u64,
    /// How many window records the checkpoint holds.
    pub slots: u64,
    /// The wrapping sum of the window records' CRC-32s.
    pub slot_crc_sum: u32,
}

/// What one checkpoint changes: the whole meta, new keys, and the windows
/// written or removed since the previous checkpoint.
#[derive(Debug, Default)]
pub struct CheckpointDelta {
    /// The new meta; `None` only in a delta that was never filled.
    pub meta: Option<Meta>,
    /// Keys interned since the previous checkpoint, with their ids.
    pub new_keys: Vec<(KeyId, String)>,
    /// The window records that changed.
    pub windows: WindowDelta,
}

/// A checkpoint read back in full.
#[derive(Debug)]
pub struct Restored {
    /// Its meta.
    pub meta: Meta,
    /// The key table, in id order.
    pub keys: Vec<String>,
    /// Every open window, in (key id, start) order, with its record's CRC.
    pub slots: Vec<(SlotState, u32)>,
    /// The retiring versions its windows need.
    pub retiring: Vec<RetiringState>,
}

/// A summary of one stored checkpoint, for `sluice state inspect`.
#[derive(Debug)]
pub struct CheckpointInfo {
    /// Its id.
    pub id: u64,
    /// Its meta, or why it cannot be read.
    pub meta: Result<Meta, StateError>,
    /// Bytes it occupies on disk (0 in memory).
    pub disk_bytes: u64,
}

/// Keeps checkpoints. One small trait so that a run does not care whether
/// they live in memory (tests, short runs) or in RocksDB.
pub trait StateBackend {
    /// The newest checkpoint that reads back intact, or `None` for a fresh
    /// start. A damaged newer checkpoint is skipped with a warning.
    fn restore(&mut self) -> Result<Option<Restored>, StateError>;

    /// Writes one checkpoint atomically and durably: when this returns, a
    /// crash at any later moment restores exactly this state or a later one.
    fn commit(&mut self, delta: CheckpointDelta) -> Result<(), StateError>;

    /// Bytes of state the store holds after the last commit, for the
    /// `state_bytes` metric; `None` when the backend cannot tell cheaply.
    fn size_bytes(&self) -> Option<u64> {
        None
    }
}

/// Checks a fully read checkpoint against its meta's counts and checksum sum.
fn verify(meta: &Meta, keys: usize, slots: &[(SlotState, u32)]) -> Result<(), String> {
    if meta.format != FORMAT_VERSION {
        return Err(format!(
            "written in checkpoint format {}, this build reads format {FORMAT_VERSION}",
            meta.format
        ));
    }
    if keys as u64 != meta.keys {
        return Err(format!("{keys} keys stored, the meta says {}", meta.keys));
    }
    if slots.len() as u64 != meta.slots {
        return Err(format!(
            "{} windows stored, the meta says {}",
            slots.len(),
            meta.slots
        ));
    }
    let sum = slots
        .iter()
        .fold(0u32, |acc, (_, crc)| acc.wrapping_add(*crc));
    if sum != meta.slot_crc_sum {
        return Err("the windows' checksums do not add up to the meta's".into());
    }
    Ok(())
}

/// Decodes and verifies a checkpoint from its stored records: the meta, the
/// keys in id order, and the window records in key order.
pub fn assemble<'a>(
    meta: &[u8],
    keys: impl Iterator<Item = &'a [u8]>,
    slots: impl Iterator<Item = &'a [u8]>,
    retiring: impl Iterator<Item = &'a [u8]>,
) -> Result<Restored, String> {
    let (meta, _) = decode_record::<Meta>(meta).map_err(|e| format!("meta record: {e}"))?;
    let keys = keys
        .enumerate()
        .map(|(i, bytes)| {
            decode_record::<String>(bytes)
                .map(|(k, _)| k)
                .map_err(|e| format!("key {i}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let slots = slots
        .map(|bytes| decode_record::<SlotState>(bytes).map_err(|e| format!("window record: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    verify(&meta, keys.len(), &slots)?;
    let retiring = retiring
        .map(|bytes| {
            decode_record::<RetiringState>(bytes)
                .map(|(r, _)| r)
                .map_err(|e| format!("retiring plugin record: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Restored {
        meta,
        keys,
        slots,
        retiring,
    })
}
