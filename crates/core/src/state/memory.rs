//! Checkpoints kept in the process: for tests of checkpoint and restore
//! within one run, and for runs that need no recovery. Records are encoded
//! and checked exactly as the RocksDB backend stores them.

use std::collections::{BTreeMap, VecDeque};

use super::{CheckpointDelta, Restored, SlotKey, StateBackend, StateError, assemble};

/// One complete checkpoint's records.
#[derive(Debug, Clone, Default)]
struct Image {
    meta: Vec<u8>,
    keys: Vec<Vec<u8>>,
    slots: BTreeMap<SlotKey, Vec<u8>>,
    retiring: BTreeMap<u32, Vec<u8>>,
}

/// The last `keep` checkpoints, in memory.
#[derive(Debug)]
pub struct MemoryBackend {
    live: Image,
    kept: VecDeque<Image>,
    keep: usize,
}

impl MemoryBackend {
    /// Keeps the last `keep` checkpoints (at least one).
    pub fn new(keep: usize) -> Self {
        Self {
            live: Image::default(),
            kept: VecDeque::new(),
            keep: keep.max(1),
        }
    }

    /// Flips one byte of the newest checkpoint's record for window `slot`,
    /// as a disk might: for tests of damage detection.
    pub fn corrupt_newest(&mut self, slot: SlotKey) -> bool {
        let Some(bytes) = self.kept.back_mut().and_then(|i| i.slots.get_mut(&slot)) else {
            return false;
        };
        if let Some(last) = bytes.last_mut() {
            *last ^= 0x40;
        }
        true
    }

    /// How many checkpoints are kept.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }
}

impl StateBackend for MemoryBackend {
    fn restore(&mut self) -> Result<Option<Restored>, StateError> {
        while let Some(image) = self.kept.back() {
            match assemble(
                &image.meta,
                image.keys.iter().map(Vec::as_slice),
                image.slots.values().map(Vec::as_slice),
                image.retiring.values().map(Vec::as_slice),
            ) {
                Ok(restored) => {
                    self.live = image.clone();
                    return Ok(Some(restored));
                }
                Err(why) => {
                    tracing::warn!("checkpoint in memory is damaged ({why}); using the one before");
                    self.kept.pop_back();
                }
            }
        }
        self.live = Image::default();
        Ok(None)
    }

    fn commit(&mut self, delta: CheckpointDelta) -> Result<(), StateError> {
        let meta = delta.meta.as_ref().ok_or_else(|| StateError {
            location: "memory".into(),
            message: "a checkpoint without meta".into(),
        })?;
        let (meta_bytes, _) = super::encode_record(meta)?;
        for (id, key) in &delta.new_keys {
            let (bytes, _) = super::encode_record(key)?;
            let at = *id as usize;
            if at != self.live.keys.len() {
                return Err(StateError {
                    location: "memory".into(),
                    message: format!("key {at} out of order"),
                });
            }
            self.live.keys.push(bytes);
        }
        for key in &delta.windows.delete {
            self.live.slots.remove(key);
        }
        for a in &delta.windows.retiring_delete {
            self.live.retiring.remove(a);
        }
        for (a, bytes) in delta.windows.retiring_put {
            self.live.retiring.insert(a, bytes);
        }
        for (key, bytes) in delta.windows.put {
            self.live.slots.insert(key, bytes);
        }
        self.live.meta = meta_bytes;
        self.kept.push_back(self.live.clone());
        while self.kept.len() > self.keep {
            self.kept.pop_front();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{
        FORMAT_VERSION, LaneState, Meta, SinkLengths, SlotState, SourcePosition, WatermarkState,
        WindowDelta, encode_record,
    };

    /// A checkpoint holding `slots` (with the meta's counts right).
    fn delta(id: u64, slots: &[(SlotKey, f64)], delete: &[SlotKey], keys: u64) -> CheckpointDelta {
        let mut put = Vec::new();
        for (key, value) in slots {
            let state = SlotState {
                key: key.key,
                start: key.start,
                end: key.start + 10,
                lanes: vec![LaneState::Snapshot(value.to_le_bytes().to_vec())],
            };
            put.push((*key, encode_record(&state).unwrap().0));
        }
        CheckpointDelta {
            meta: Some(Meta {
                format: FORMAT_VERSION,
                id,
                taken_at_ms: 0,
                window: "w".into(),
                aggregations: Vec::new(),
                health: Vec::new(),
                watermarks: WatermarkState {
                    current: id as i64,
                    max_seen: vec![0],
                    idle: vec![false],
                },
                source: SourcePosition::File {
                    offset: id,
                    line: id,
                },
                sinks: SinkLengths::default(),
                summary: Default::default(),
                dedup: None,
                fill: None,
                triggers: Vec::new(),
                trigger: Default::default(),
                keys,
                slots: 0,
                slot_crc_sum: 0,
            }),
            new_keys: Vec::new(),
            windows: WindowDelta {
                put,
                delete: delete.to_vec(),
                ..WindowDelta::default()
            },
        }
    }

    /// Fills in the meta's counts from what the image will hold after `d`.
    fn seal(backend: &MemoryBackend, mut d: CheckpointDelta) -> CheckpointDelta {
        let mut slots = backend.live.slots.clone();
        for k in &d.windows.delete {
            slots.remove(k);
        }
        for (k, v) in &d.windows.put {
            slots.insert(*k, v.clone());
        }
        let meta = d.meta.as_mut().unwrap();
        meta.slots = slots.len() as u64;
        meta.slot_crc_sum = slots.values().fold(0u32, |acc, v| {
            acc.wrapping_add(u32::from_le_bytes([v[0], v[1], v[2], v[3]]))
        });
        d
    }

    #[test]
    fn restores_the_newest_and_falls_back_when_it_is_damaged() {
        let a = SlotKey { key: 0, start: 0 };
        let b = SlotKey { key: 0, start: 10 };
        let mut backend = MemoryBackend::new(2);
        assert!(backend.restore().unwrap().is_none());
        let d = seal(&backend, delta(1, &[(a, 1.0)], &[], 0));
        backend.commit(d).unwrap();
        // Incremental: the second checkpoint changes `a`'s record only by deleting it.
        let d = seal(&backend, delta(2, &[(b, 2.0)], &[a], 0));
        backend.commit(d).unwrap();
        let newest = backend.restore().unwrap().unwrap();
        assert_eq!(newest.meta.id, 2);
        assert_eq!(newest.slots.len(), 1);
        assert_eq!(newest.slots[0].0.start, 10);

        assert!(backend.corrupt_newest(b));
        let older = backend.restore().unwrap().unwrap();
        assert_eq!(older.meta.id, 1);
        assert_eq!(older.slots[0].0.start, 0);
    }

    #[test]
    fn a_missing_record_is_detected_by_the_meta_counts() {
        let a = SlotKey { key: 0, start: 0 };
        let mut backend = MemoryBackend::new(3);
        let d = seal(&backend, delta(1, &[(a, 1.0)], &[], 0));
        backend.commit(d).unwrap();
        // A meta that claims two windows where one is stored.
        let mut d = seal(&backend, delta(2, &[], &[], 0));
        d.meta.as_mut().unwrap().slots = 2;
        backend.commit(d).unwrap();
        assert_eq!(backend.restore().unwrap().unwrap().meta.id, 1);
    }
}
