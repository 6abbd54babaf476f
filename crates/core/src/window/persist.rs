//! The window state a checkpoint keeps: one record per open window (or
//! pane, or session) with each aggregation's state, the aggregations'
//! failure records, and the retiring plugin versions still finishing
//! windows. The window store writes and reads these; `crate::state`
//! gathers them into a checkpoint with everything else a run needs.

use serde::{Deserialize, Serialize};

use crate::decode::KeyId;

/// Where a window's record lives: its key and its start.
///
/// Encoded big-endian with the sign bit of the start flipped, so that keys
/// sort by (key id, start) in RocksDB as they do here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotKey {
    /// The key's id in the run's key table.
    pub key: KeyId,
    /// The window's (or pane's, or session's) start in epoch milliseconds.
    pub start: i64,
}

/// One aggregation's state in one window, as a checkpoint holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LaneState {
    /// An accumulator that has taken no value yet.
    Fresh,
    /// The plugin's snapshot bytes, in its declared state format.
    Snapshot(Vec<u8>),
    /// The window has no result for this aggregation, and this is why.
    Failed(String),
    /// The window finishes in the aggregation's retiring version (after a
    /// hot reload to another state format); its state in that version.
    Retiring(Box<LaneState>),
    /// A current-version state (first) with its shadow in the retiring
    /// version (second), for a slot that may merge into a retiring window.
    Shadowed(Box<LaneState>, Box<LaneState>),
}

/// An aggregation's retiring version, kept while it finishes windows: the
/// code to run them with after a restart, whatever the plugin file holds by then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetiringState {
    /// The aggregation's index.
    pub aggregation: u32,
    /// The plugin's self-declared name.
    pub plugin: String,
    /// Its version.
    pub version: String,
    /// The format of its snapshot bytes.
    pub state_version: u32,
    /// The component, as loaded.
    pub component: Vec<u8>,
}

/// One open window (or pane, or session) of one key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotState {
    /// The key's id.
    pub key: KeyId,
    /// First millisecond in the window.
    pub start: i64,
    /// First millisecond after it.
    pub end: i64,
    /// Per aggregation, in configuration order.
    pub lanes: Vec<LaneState>,
}

/// A plugin's failure record, carried across restarts so that a quarantined
/// plugin stays quarantined.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthState {
    /// Failed calls over the run.
    pub failures: u64,
    /// Failed calls since the last success.
    pub consecutive_failures: u32,
    /// Why the plugin is quarantined, if it is.
    pub quarantined: Option<String>,
}

/// The window records one checkpoint changes: written or removed since the
/// previous checkpoint.
#[derive(Debug, Default)]
pub struct WindowDelta {
    /// Windows new or changed, encoded by [`crate::record::encode_record`].
    pub put: Vec<(SlotKey, Vec<u8>)>,
    /// Windows closed (or moved, for sessions).
    pub delete: Vec<SlotKey>,
    /// Retiring versions new since the previous checkpoint, per aggregation,
    /// encoded by [`crate::record::encode_record`] from a [`RetiringState`].
    pub retiring_put: Vec<(u32, Vec<u8>)>,
    /// Aggregations whose retiring version has gone since.
    pub retiring_delete: Vec<u32>,
}

impl SlotKey {
    /// 12 bytes that sort like the key.
    pub fn encode(self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[..4].copy_from_slice(&self.key.to_be_bytes());
        out[4..].copy_from_slice(&((self.start as u64) ^ (1 << 63)).to_be_bytes());
        out
    }

    /// The inverse of [`SlotKey::encode`].
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let key = KeyId::from_be_bytes(bytes.get(..4)?.try_into().ok()?);
        let start = u64::from_be_bytes(bytes.get(4..12)?.try_into().ok()?) ^ (1 << 63);
        Some(Self {
            key,
            start: start as i64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_keys_sort_by_key_then_signed_start() {
        let keys = [
            SlotKey { key: 0, start: -5 },
            SlotKey { key: 0, start: 0 },
            SlotKey { key: 0, start: 7 },
            SlotKey {
                key: 1,
                start: i64::MIN,
            },
        ];
        for pair in keys.windows(2) {
            assert!(pair[0].encode() < pair[1].encode());
        }
        for k in keys {
            assert_eq!(SlotKey::decode(&k.encode()), Some(k));
        }
    }
}
