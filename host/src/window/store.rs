//! Window state: per key and window (or pane, or session), one accumulator per
//! aggregation in the plugins, plus the values not yet handed to them.
//!
//! Values are buffered per slot and handed to plugins in batches: when the
//! buffers together reach the batch size, or before a slot is read, merged or
//! closed. Plugins accumulate sequentially, so when a batch is cut changes
//! speed, never results.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use slab::Slab;

use super::Window;
use crate::decode::KeyId;
use crate::error::PluginError;
use crate::plugin::{Accumulator, AggregationInstance};

/// What a timer does when the watermark reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKind {
    /// Emit the window's result. Ordered before cleanup of the same instant.
    Fire,
    /// Drop the state: the window is past its allowed lateness.
    Cleanup,
}

/// An event-time timer. Ordered by time, then kind, then key and start, so that
/// timers due together run in an order that depends only on the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Timer {
    pub time: i64,
    pub kind: TimerKind,
    pub key: KeyId,
    /// The start of the window (or pane, or session) the timer is for.
    pub start: i64,
}

/// Values waiting to be added to one accumulator.
#[derive(Debug, Default)]
struct Pending {
    values: Vec<f64>,
    times: Vec<i64>,
}

/// One unit of window state: a tumbling window, a sliding-window pane, or a session.
#[derive(Debug)]
struct Slot {
    key: KeyId,
    bounds: Window,
    accs: Vec<Accumulator>,
    pending: Vec<Pending>,
    pending_len: usize,
}

/// All open window state of an operator, and the plugins that hold it.
pub(crate) struct WindowStore {
    aggs: Vec<AggregationInstance>,
    slots: Slab<Slot>,
    by_key: HashMap<KeyId, BTreeMap<i64, usize>>,
    timers: BTreeSet<Timer>,
    dirty: Vec<usize>,
    pending_total: usize,
    batch_size: usize,
}

impl WindowStore {
    pub fn new(aggs: Vec<AggregationInstance>, batch_size: usize) -> Self {
        Self {
            aggs,
            slots: Slab::new(),
            by_key: HashMap::new(),
            timers: BTreeSet::new(),
            dirty: Vec::new(),
            pending_total: 0,
            batch_size: batch_size.max(1),
        }
    }

    /// How many slots are open.
    pub fn open_slots(&self) -> usize {
        self.slots.len()
    }

    /// The slot of `key` starting at `start`.
    pub fn find(&self, key: KeyId, start: i64) -> Option<usize> {
        self.by_key.get(&key)?.get(&start).copied()
    }

    /// The slot's bounds.
    pub fn bounds(&self, id: usize) -> Option<Window> {
        self.slots.get(id).map(|s| s.bounds)
    }

    /// Slots of `key` whose start lies in `[from, to)`, in start order.
    pub fn range(&self, key: KeyId, from: i64, to: i64) -> Vec<usize> {
        match self.by_key.get(&key) {
            Some(map) if from < to => map.range(from..to).map(|(_, &id)| id).collect(),
            _ => Vec::new(),
        }
    }

    /// Slots of `key` that start at or before `at`, latest first.
    pub fn starting_at_or_before(&self, key: KeyId, at: i64) -> impl Iterator<Item = usize> + '_ {
        self.by_key
            .get(&key)
            .into_iter()
            .flat_map(move |map| map.range(..=at).rev().map(|(_, &id)| id))
    }

    /// Opens a slot with a new accumulator per aggregation.
    pub fn open(&mut self, key: KeyId, bounds: Window) -> Result<usize, PluginError> {
        let mut accs = Vec::with_capacity(self.aggs.len());
        for agg in &mut self.aggs {
            accs.push(agg.create()?);
        }
        let pending = (0..self.aggs.len()).map(|_| Pending::default()).collect();
        let id = self.slots.insert(Slot {
            key,
            bounds,
            accs,
            pending,
            pending_len: 0,
        });
        self.by_key.entry(key).or_default().insert(bounds.start, id);
        Ok(id)
    }

    /// Buffers one event's values (`None` skips that aggregation).
    pub fn push(
        &mut self,
        id: usize,
        values: &[Option<f64>],
        time: i64,
    ) -> Result<(), PluginError> {
        let Some(slot) = self.slots.get_mut(id) else {
            return Ok(());
        };
        if slot.pending_len == 0 {
            self.dirty.push(id);
        }
        for (pending, value) in slot.pending.iter_mut().zip(values) {
            if let Some(v) = value {
                pending.values.push(*v);
                pending.times.push(time);
            }
        }
        slot.pending_len += 1;
        self.pending_total += 1;
        if self.pending_total >= self.batch_size {
            self.flush_all()?;
        }
        Ok(())
    }

    /// Hands one slot's buffered values to the plugins.
    pub fn flush(&mut self, id: usize) -> Result<(), PluginError> {
        let Some(slot) = self.slots.get_mut(id) else {
            return Ok(());
        };
        if slot.pending_len == 0 {
            return Ok(());
        }
        self.pending_total -= slot.pending_len;
        slot.pending_len = 0;
        for ((agg, acc), pending) in self.aggs.iter_mut().zip(&slot.accs).zip(&mut slot.pending) {
            if !pending.values.is_empty() {
                agg.add(*acc, &pending.values, &pending.times)?;
                pending.values.clear();
                pending.times.clear();
            }
        }
        Ok(())
    }

    /// Hands every buffered value to the plugins.
    pub fn flush_all(&mut self) -> Result<(), PluginError> {
        let dirty = std::mem::take(&mut self.dirty);
        for &id in &dirty {
            self.flush(id)?;
        }
        // Keep the list's capacity for the next round.
        self.dirty = dirty;
        self.dirty.clear();
        Ok(())
    }

    /// The current outputs of one slot, per aggregation.
    pub fn finish(&mut self, id: usize) -> Result<Vec<Vec<Option<f64>>>, PluginError> {
        self.flush(id)?;
        let Some(slot) = self.slots.get(id) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(self.aggs.len());
        for (agg, acc) in self.aggs.iter_mut().zip(&slot.accs) {
            out.push(agg.finish(*acc)?);
        }
        Ok(out)
    }

    /// The outputs of the union of several slots (a sliding window's panes),
    /// merged in the given order into a scratch accumulator.
    pub fn finish_merged(&mut self, ids: &[usize]) -> Result<Vec<Vec<Option<f64>>>, PluginError> {
        for &id in ids {
            self.flush(id)?;
        }
        let mut out = Vec::with_capacity(self.aggs.len());
        for (a, agg) in self.aggs.iter_mut().enumerate() {
            let scratch = agg.create()?;
            let mut result = Ok(());
            for &id in ids {
                if let Some(slot) = self.slots.get(id) {
                    result = agg.merge(scratch, slot.accs[a]);
                    if result.is_err() {
                        break;
                    }
                }
            }
            let values = result.and_then(|()| agg.finish(scratch));
            agg.release(scratch)?;
            out.push(values?);
        }
        Ok(out)
    }

    /// Folds slot `from` into slot `into` and closes `from` (session merges).
    pub fn merge_into(&mut self, into: usize, from: usize) -> Result<(), PluginError> {
        self.flush(into)?;
        self.flush(from)?;
        if let (Some(target), Some(source)) = (self.slots.get(into), self.slots.get(from)) {
            for ((agg, t), s) in self.aggs.iter_mut().zip(&target.accs).zip(&source.accs) {
                agg.merge(*t, *s)?;
            }
        }
        self.close(from)
    }

    /// Moves a slot to new bounds (a session that grew), re-indexing it by its new start.
    pub fn set_bounds(&mut self, id: usize, bounds: Window) {
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        if let Some(map) = self.by_key.get_mut(&slot.key) {
            map.remove(&slot.bounds.start);
            map.insert(bounds.start, id);
        }
        slot.bounds = bounds;
    }

    /// Drops a slot and gives its accumulators back to the plugins.
    pub fn close(&mut self, id: usize) -> Result<(), PluginError> {
        let Some(slot) = self.slots.try_remove(id) else {
            return Ok(());
        };
        self.pending_total -= slot.pending_len;
        if let Some(map) = self.by_key.get_mut(&slot.key) {
            map.remove(&slot.bounds.start);
            if map.is_empty() {
                self.by_key.remove(&slot.key);
            }
        }
        for (agg, acc) in self.aggs.iter_mut().zip(slot.accs) {
            agg.release(acc)?;
        }
        Ok(())
    }

    pub fn add_timer(&mut self, timer: Timer) {
        self.timers.insert(timer);
    }

    pub fn remove_timer(&mut self, timer: &Timer) {
        self.timers.remove(timer);
    }

    /// Whether any timer is due at watermark `w`.
    pub fn has_due(&self, w: i64) -> bool {
        self.timers.first().is_some_and(|t| t.time <= w)
    }

    /// The earliest timer due at watermark `w`, removed from the queue.
    pub fn pop_due(&mut self, w: i64) -> Option<Timer> {
        if self.has_due(w) {
            self.timers.pop_first()
        } else {
            None
        }
    }
}
