//! Window state: per key and window (or pane, or session), one accumulator per
//! aggregation in the plugins, plus the values not yet handed to them.
//!
//! Values are buffered per slot and handed to plugins in batches: when the
//! buffers together reach the batch size, or before a slot is read, merged or
//! closed. Plugins accumulate sequentially, so when a batch is cut changes
//! speed, never results.
//!
//! # When a plugin fails
//!
//! A failed call never leaves this module as an error: the window whose call
//! failed reports it for that aggregation (an `errors` entry in its result)
//! and the run goes on. A call that traps, times out or runs out of memory
//! takes the whole instance with it, and with it every accumulator of that
//! aggregation, in every open window. Those are rebuilt in a fresh instance.
//!
//! To rebuild them the store keeps, per accumulator, the state as of its last
//! snapshot (none: a fresh `create`) and the values handed to it since, and
//! replays those values after restoring the snapshot: the rebuilt state is
//! exactly the lost one, so a failure in one window changes no other window's
//! result. The alternatives cost more or lose more: a snapshot after every
//! batch doubles the calls on the hot path; snapshots taken after the failure
//! are impossible (a trapped instance cannot be entered); failing every open
//! window of the aggregation turns one bad window into many. Here a snapshot
//! is taken only after [`REPLAY_LIMIT`] values (one extra call per that many
//! values, and a bound on the replay buffer's memory) and after a session
//! merge, which values cannot replay.
//!
//! The window whose call failed is not retried: a plugin that fails on some
//! input fails on it again, and retrying would make a window's result depend
//! on how often that was tried. After `quarantine_after` consecutive failures
//! the aggregation is quarantined: its plugin is no longer called and every
//! window reports the error.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

mod partials;

pub(crate) use partials::Fold;

use slab::Slab;

use super::Window;
use crate::decode::KeyId;
use crate::error::PluginError;
use crate::plugin::{Accumulator, AggregationInstance};
use crate::state::{
    CheckpointDelta, HealthState, LaneState, SlotKey, SlotState, StateError, encode_record,
};

/// How many values an accumulator takes in after its last snapshot before the
/// store snapshots it again: bounds the replay buffer at 16 KiB per
/// accumulator while keeping the snapshot calls to one per that many values.
pub(crate) const REPLAY_LIMIT: usize = 1024;

/// What a timer does when the watermark reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKind {
    /// Emit the window's result (or ask its trigger). Ordered before cleanup
    /// of the same instant.
    Fire,
    /// An event-time timer a window's trigger asked for.
    Trigger,
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

/// One aggregation's state in one slot.
#[derive(Debug)]
struct Lane {
    /// The accumulator, or why this window has no result for the aggregation.
    acc: Result<Accumulator, Arc<str>>,
    /// The accumulator's state when `values` began; `None`: a new accumulator.
    snapshot: Option<Vec<u8>>,
    /// `values[..handed]` are in the accumulator (the replay log since the
    /// snapshot); `values[handed..]` wait for the next batch.
    values: Vec<f64>,
    times: Vec<i64>,
    handed: usize,
}

impl Lane {
    fn new(acc: Result<Accumulator, Arc<str>>) -> Self {
        Self {
            acc,
            snapshot: None,
            values: Vec::new(),
            times: Vec::new(),
            handed: 0,
        }
    }

    /// Gives up on this window for the aggregation, keeping why.
    fn fail(&mut self, why: Arc<str>) -> Option<Accumulator> {
        let old = std::mem::replace(&mut self.acc, Err(why)).ok();
        self.snapshot = None;
        self.values = Vec::new();
        self.times = Vec::new();
        self.handed = 0;
        old
    }
}

/// One unit of window state: a tumbling window, a sliding-window pane, or a session.
#[derive(Debug)]
struct Slot {
    key: KeyId,
    bounds: Window,
    lanes: Vec<Lane>,
    pending_len: usize,
    /// Changed since the last checkpoint wrote it.
    changed: bool,
    /// The start its last checkpoint record is stored under (a session's
    /// start moves as it grows), and that record's CRC.
    stored: Option<(i64, u32)>,
}

/// One configured aggregation's plugin and its failure record.
struct Plugin {
    instance: AggregationInstance,
    /// Failed calls since the last `add`, `merge` or `finish` that
    /// succeeded. Only those count as the plugin working: a plugin whose
    /// every `create` succeeds and every `add` traps must still end up
    /// quarantined.
    consecutive_failures: u32,
    /// Failed calls over the whole run.
    failures: u64,
    /// Why the plugin is no longer called, once it is quarantined.
    quarantined: Option<Arc<str>>,
}

/// How one aggregation's plugin has fared so far in a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginHealth {
    /// The plugin, with its name and version.
    pub plugin: String,
    /// Calls that failed over the run.
    pub failures: u64,
    /// Why it is quarantined, if it is.
    pub quarantined: Option<String>,
    /// Calls made into the plugin.
    pub calls: u64,
    /// Time spent in those calls.
    pub call_time: std::time::Duration,
}

/// The outputs of one slot (or merged slots), per aggregation, with the
/// aggregations that could not give any.
pub(crate) struct Outputs {
    /// Per aggregation, its outputs in declared order (`None` where it failed).
    pub values: Vec<Vec<Option<f64>>>,
    /// `(aggregation, why)` for each aggregation that failed, in order.
    pub errors: Vec<(usize, Arc<str>)>,
}

/// All open window state of an operator, and the plugins that hold it.
pub(crate) struct WindowStore {
    plugins: Vec<Plugin>,
    quarantine_after: u32,
    slots: Slab<Slot>,
    by_key: HashMap<KeyId, BTreeMap<i64, usize>>,
    timers: BTreeSet<Timer>,
    dirty: Vec<usize>,
    pending_total: usize,
    batch_size: usize,
    /// What the stored checkpoint holds of this store, kept up to date so a
    /// checkpoint writes only what changed.
    persisted: Persisted,
    /// Sliding windows' partial aggregates (see `partials`); never checkpointed.
    partials: partials::Partials,
}

/// The window records of the last checkpoint, as far as the store knows.
#[derive(Debug, Default)]
struct Persisted {
    /// Records of slots closed since, with their CRCs: to delete.
    removed: Vec<(SlotKey, u32)>,
    /// How many window records the checkpoint holds.
    count: u64,
    /// The wrapping sum of their CRCs.
    crc_sum: u32,
}

impl WindowStore {
    pub fn new(aggs: Vec<AggregationInstance>, batch_size: usize) -> Self {
        let quarantine_after = aggs.first().map_or(0, |a| a.limits().quarantine_after);
        Self {
            plugins: aggs
                .into_iter()
                .map(|instance| Plugin {
                    instance,
                    consecutive_failures: 0,
                    failures: 0,
                    quarantined: None,
                })
                .collect(),
            quarantine_after,
            slots: Slab::new(),
            by_key: HashMap::new(),
            timers: BTreeSet::new(),
            dirty: Vec::new(),
            pending_total: 0,
            batch_size: batch_size.max(1),
            persisted: Persisted::default(),
            partials: partials::Partials::default(),
        }
    }

    /// How many slots are open.
    pub fn open_slots(&self) -> usize {
        self.slots.len()
    }

    /// How each aggregation's plugin has fared, in configuration order.
    pub fn health(&self) -> Vec<PluginHealth> {
        self.plugins
            .iter()
            .map(|p| PluginHealth {
                plugin: p.instance.label().to_string(),
                failures: p.failures,
                quarantined: p.quarantined.as_deref().map(str::to_string),
                calls: p.instance.call_stats().0,
                call_time: p.instance.call_stats().1,
            })
            .collect()
    }

    /// How many outputs aggregation `a` declares.
    fn output_count(&self, a: usize) -> usize {
        self.plugins[a].instance.outputs().len()
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
    pub fn open(&mut self, key: KeyId, bounds: Window) -> usize {
        let id = self.slots.insert(Slot {
            key,
            bounds,
            lanes: Vec::with_capacity(self.plugins.len()),
            pending_len: 0,
            changed: true,
            stored: None,
        });
        self.by_key.entry(key).or_default().insert(bounds.start, id);
        self.fill_lanes(id);
        self.pane_changed(None, key, bounds.start);
        id
    }

    /// Empties a slot (a trigger's purge): its accumulators are given back
    /// and new ones created, so the next emission covers only what comes next.
    pub fn purge(&mut self, id: usize) {
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        self.pending_total -= slot.pending_len;
        slot.pending_len = 0;
        slot.changed = true;
        let (key, start) = (slot.key, slot.bounds.start);
        let lanes = std::mem::take(&mut slot.lanes);
        for (a, lane) in lanes.into_iter().enumerate() {
            if let Ok(acc) = lane.acc {
                self.release(a, acc);
            }
        }
        self.fill_lanes(id);
        self.pane_changed(None, key, start);
    }

    /// Gives an empty slot a new accumulator per aggregation.
    fn fill_lanes(&mut self, id: usize) {
        for a in 0..self.plugins.len() {
            let plugin = &mut self.plugins[a];
            let acc = match &plugin.quarantined {
                Some(why) => Err(Arc::clone(why)),
                None => match plugin.instance.create() {
                    Ok(acc) => Ok(acc),
                    Err(e) => {
                        // The lane must exist for the failure to be recorded
                        // in it (and for a rebuild to pass it over).
                        self.slots[id].lanes.push(Lane::new(Err(Arc::from(""))));
                        self.fail(a, Some(id), e);
                        continue;
                    }
                },
            };
            self.slots[id].lanes.push(Lane::new(acc));
        }
    }

    /// Buffers one event's values (`None` skips that aggregation).
    pub fn push(&mut self, id: usize, values: &[Option<f64>], time: i64) {
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        if slot.pending_len == 0 {
            self.dirty.push(id);
            // The pane's first value since its last flush: partials that
            // cover it are out of date from here on (any partial built later
            // flushes it first).
            let (key, start) = (slot.key, slot.bounds.start);
            self.pane_changed(None, key, start);
        }
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        slot.changed = true;
        for (lane, value) in slot.lanes.iter_mut().zip(values) {
            // A window that failed for this aggregation reports that instead
            // of a result, so it needs no more values.
            if let (Some(v), Ok(_)) = (value, &lane.acc) {
                lane.values.push(*v);
                lane.times.push(time);
            }
        }
        slot.pending_len += 1;
        self.pending_total += 1;
        if self.pending_total >= self.batch_size {
            self.flush_all();
        }
    }

    /// Hands one slot's buffered values to the plugins.
    pub fn flush(&mut self, id: usize) {
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        if slot.pending_len == 0 {
            return;
        }
        self.pending_total -= slot.pending_len;
        slot.pending_len = 0;
        for a in 0..self.plugins.len() {
            let lane = &self.slots[id].lanes[a];
            let Ok(acc) = lane.acc else { continue };
            if lane.handed == lane.values.len() {
                continue;
            }
            let added = self.plugins[a].instance.add(
                acc,
                &lane.values[lane.handed..],
                &lane.times[lane.handed..],
            );
            match added {
                Ok(()) => {
                    self.plugins[a].consecutive_failures = 0;
                    let lane = &mut self.slots[id].lanes[a];
                    lane.handed = lane.values.len();
                    if lane.handed >= REPLAY_LIMIT {
                        self.checkpoint(a, id);
                    }
                }
                Err(e) => {
                    self.fail(a, Some(id), e);
                }
            }
        }
    }

    /// Snapshots one accumulator so that its replay log can be dropped.
    fn checkpoint(&mut self, a: usize, id: usize) {
        let Some(lane) = self.slots.get_mut(id).map(|s| &mut s.lanes[a]) else {
            return;
        };
        let Ok(acc) = lane.acc else { return };
        match self.plugins[a].instance.snapshot(acc) {
            Ok(bytes) => {
                lane.snapshot = Some(bytes);
                lane.values.drain(..lane.handed);
                lane.times.drain(..lane.handed);
                lane.handed = 0;
            }
            Err(e) => {
                self.fail(a, Some(id), e);
            }
        }
    }

    /// Hands every buffered value to the plugins.
    pub fn flush_all(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for &id in &dirty {
            self.flush(id);
        }
        // Keep the list's capacity for the next round.
        self.dirty = dirty;
        self.dirty.clear();
    }

    /// The current outputs of one slot, per aggregation.
    pub fn finish(&mut self, id: usize) -> Outputs {
        self.flush(id);
        let mut out = Outputs {
            values: Vec::with_capacity(self.plugins.len()),
            errors: Vec::new(),
        };
        for a in 0..self.plugins.len() {
            let acc = match self.slots.get(id).map(|s| &s.lanes[a].acc) {
                Some(Ok(acc)) => Ok(*acc),
                Some(Err(why)) => Err(Arc::clone(why)),
                None => Err(Arc::from("window state missing")),
            };
            let values = match acc {
                Ok(acc) => match self.plugins[a].instance.finish(acc) {
                    Ok(values) => {
                        self.plugins[a].consecutive_failures = 0;
                        Ok(values)
                    }
                    Err(e) => {
                        // A refused result leaves the state intact; a trap
                        // does not, and the window cannot be restored from it.
                        let mark = self.plugins[a].instance.is_poisoned().then_some(id);
                        Err(self.fail(a, mark, e))
                    }
                },
                Err(why) => Err(why),
            };
            self.push_outputs(&mut out, a, values);
        }
        out
    }

    fn push_outputs(
        &self,
        out: &mut Outputs,
        a: usize,
        values: Result<Vec<Option<f64>>, Arc<str>>,
    ) {
        match values {
            Ok(values) => out.values.push(values),
            Err(why) => {
                out.values.push(vec![None; self.output_count(a)]);
                out.errors.push((a, why));
            }
        }
    }

    /// The outputs of the union of several slots (a sliding window's panes),
    /// merged in the given order into a scratch accumulator.
    pub fn finish_merged(&mut self, ids: &[usize]) -> Outputs {
        for &id in ids {
            self.flush(id);
        }
        let mut out = Outputs {
            values: Vec::with_capacity(self.plugins.len()),
            errors: Vec::new(),
        };
        for a in 0..self.plugins.len() {
            let values = self.merge_panes(a, ids);
            self.push_outputs(&mut out, a, values);
        }
        out
    }

    /// Aggregation `a`'s result over the (flushed) slots `ids`, merged in
    /// that order; the first slot that failed for `a` gives its error instead.
    fn merge_panes(&mut self, a: usize, ids: &[usize]) -> Result<Vec<Option<f64>>, Arc<str>> {
        let mut panes = Vec::with_capacity(ids.len());
        for &id in ids {
            match self.slots.get(id).map(|s| &s.lanes[a].acc) {
                Some(Ok(acc)) => panes.push(*acc),
                Some(Err(why)) => return Err(Arc::clone(why)),
                None => {}
            }
        }
        self.merge_and_finish(a, &panes)
    }

    /// Merges `panes` into a scratch accumulator of aggregation `a` and
    /// finishes it. A failure fails this emission only: merging leaves the
    /// panes unchanged, and if the instance was lost they are rebuilt.
    fn merge_and_finish(
        &mut self,
        a: usize,
        panes: &[Accumulator],
    ) -> Result<Vec<Option<f64>>, Arc<str>> {
        if let Some(why) = &self.plugins[a].quarantined {
            return Err(Arc::clone(why));
        }
        let instance = &mut self.plugins[a].instance;
        let result = instance.create().and_then(|scratch| {
            let mut merged = Ok(());
            for &pane in panes {
                merged = instance.merge(scratch, pane);
                if merged.is_err() {
                    break;
                }
            }
            let values = merged.and_then(|()| instance.finish(scratch));
            if instance.is_poisoned() {
                return values;
            }
            let released = instance.release(scratch);
            values.and_then(|values| released.map(|()| values))
        });
        match result {
            Ok(values) => {
                self.plugins[a].consecutive_failures = 0;
                Ok(values)
            }
            Err(e) => Err(self.fail(a, None, e)),
        }
    }

    /// Folds slot `from` into slot `into` and closes `from` (session merges).
    pub fn merge_into(&mut self, into: usize, from: usize) {
        self.flush(into);
        self.flush(from);
        if let Some(slot) = self.slots.get_mut(into) {
            slot.changed = true;
        }
        if self.slots.contains(into) && self.slots.contains(from) {
            for a in 0..self.plugins.len() {
                let source = match &self.slots[from].lanes[a].acc {
                    Ok(acc) => Ok(*acc),
                    Err(why) => Err(Arc::clone(why)),
                };
                let Ok(target) = self.slots[into].lanes[a].acc else {
                    continue;
                };
                match source {
                    Ok(source) => match self.plugins[a].instance.merge(target, source) {
                        Ok(()) => {
                            self.plugins[a].consecutive_failures = 0;
                            // A merge is not a replay of values: start the
                            // replay log afresh from a snapshot of the result.
                            self.slots[into].lanes[a].handed =
                                self.slots[into].lanes[a].values.len();
                            self.checkpoint(a, into);
                        }
                        Err(e) => {
                            self.fail(a, Some(into), e);
                        }
                    },
                    Err(why) => {
                        // Half a session has no result: neither has the whole.
                        if let Some(acc) = self.slots[into].lanes[a].fail(why) {
                            self.release(a, acc);
                        }
                    }
                }
            }
        }
        self.close(from);
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
        slot.changed = true;
    }

    /// Drops a slot and gives its accumulators back to the plugins.
    pub fn close(&mut self, id: usize) {
        let Some(slot) = self.slots.try_remove(id) else {
            return;
        };
        self.pending_total -= slot.pending_len;
        if let Some((start, crc)) = slot.stored {
            let key = SlotKey {
                key: slot.key,
                start,
            };
            self.persisted.removed.push((key, crc));
        }
        if let Some(map) = self.by_key.get_mut(&slot.key) {
            map.remove(&slot.bounds.start);
            if map.is_empty() {
                self.by_key.remove(&slot.key);
            }
        }
        self.pane_closed(slot.key, slot.bounds.start);
        for (a, lane) in slot.lanes.into_iter().enumerate() {
            if let Ok(acc) = lane.acc {
                self.release(a, acc);
            }
        }
    }

    /// Gives one accumulator back to its plugin.
    fn release(&mut self, a: usize, acc: Accumulator) {
        let plugin = &mut self.plugins[a];
        if plugin.quarantined.is_some() || plugin.instance.is_poisoned() {
            return;
        }
        if let Err(e) = plugin.instance.release(acc) {
            self.fail(a, None, e);
        }
    }

    /// Handles a failed call of aggregation `a`: marks slot `failed` (the
    /// window whose call it was, if its state is lost or suspect), rebuilds
    /// the instance if the call took it down, quarantines the aggregation
    /// after too many failures in a row. Returns what to report.
    fn fail(&mut self, a: usize, failed: Option<usize>, error: PluginError) -> Arc<str> {
        let why: Arc<str> = Arc::from(error.to_string());
        tracing::warn!(aggregation = a, "{why}");
        if let Some((key, start)) = failed
            .and_then(|id| self.slots.get(id))
            .map(|s| (s.key, s.bounds.start))
        {
            self.pane_changed(Some(a), key, start);
        }
        if let Some(acc) = failed
            .and_then(|id| self.slots.get_mut(id))
            .and_then(|slot| {
                slot.changed = true;
                slot.lanes[a].fail(Arc::clone(&why))
            })
        {
            self.release(a, acc);
        }
        let plugin = &mut self.plugins[a];
        plugin.failures += 1;
        plugin.consecutive_failures += 1;
        if self.quarantine_after > 0 && plugin.consecutive_failures >= self.quarantine_after {
            self.quarantine(a, &why);
        } else if plugin.instance.is_poisoned() {
            self.rebuild(a, &why);
        }
        why
    }

    /// Stops calling aggregation `a`'s plugin for the rest of the run.
    fn quarantine(&mut self, a: usize, last: &str) {
        let plugin = &mut self.plugins[a];
        let why: Arc<str> = Arc::from(format!(
            "{last} (failure {} in a row: plugin {} is quarantined for the rest of the run)",
            plugin.consecutive_failures,
            plugin.instance.label()
        ));
        tracing::warn!(
            plugin = plugin.instance.label(),
            failures = plugin.consecutive_failures,
            "quarantined plugin {} after {} consecutive failures",
            plugin.instance.label(),
            plugin.consecutive_failures
        );
        plugin.quarantined = Some(Arc::clone(&why));
        self.forget_partials(Some(a));
        for (_, slot) in self.slots.iter_mut() {
            let lane = &mut slot.lanes[a];
            // A window that failed already keeps its own cause. Accumulators
            // are not released: the plugin is not called again.
            if lane.acc.is_ok() {
                let _ = lane.fail(Arc::clone(&why));
                slot.changed = true;
            }
        }
    }

    /// Replaces aggregation `a`'s lost instance with a fresh one and rebuilds
    /// every open window's accumulator in it from its snapshot and replay log.
    ///
    /// A window whose rebuild fails is marked failed; if that failure takes
    /// the new instance down too, the rebuild starts over in another one,
    /// without that window. Each round fails one window more (and counts
    /// towards quarantine), so this ends.
    fn rebuild(&mut self, a: usize, cause: &str) {
        // Partials lived in the lost instance; they are rebuilt when needed.
        self.forget_partials(Some(a));
        loop {
            let plugin = &mut self.plugins[a];
            if let Err(e) = plugin.instance.reopen() {
                plugin.failures += 1;
                plugin.consecutive_failures += 1;
                self.quarantine(a, &format!("{e} (restarting it after: {cause})"));
                return;
            }
            let state_version = plugin.instance.info().state_version;
            let mut lost_instance = None;
            for (_, slot) in self.slots.iter_mut() {
                let lane = &mut slot.lanes[a];
                if lane.acc.is_err() {
                    continue;
                }
                let instance = &mut self.plugins[a].instance;
                let rebuilt = match &lane.snapshot {
                    Some(bytes) => instance.restore(bytes, state_version),
                    None => instance.create(),
                }
                .and_then(|acc| {
                    if lane.handed > 0 {
                        instance.add(
                            acc,
                            &lane.values[..lane.handed],
                            &lane.times[..lane.handed],
                        )?;
                    }
                    Ok(acc)
                });
                match rebuilt {
                    Ok(acc) => lane.acc = Ok(acc),
                    Err(e) => {
                        let why: Arc<str> = Arc::from(format!(
                            "{e} (rebuilding this window's state after: {cause})"
                        ));
                        tracing::warn!(aggregation = a, "{why}");
                        let _ = lane.fail(why);
                        slot.changed = true;
                        let plugin = &mut self.plugins[a];
                        plugin.failures += 1;
                        plugin.consecutive_failures += 1;
                        if plugin.instance.is_poisoned() {
                            lost_instance = Some(e);
                            break;
                        }
                    }
                }
            }
            let Some(e) = lost_instance else {
                return;
            };
            let plugin = &self.plugins[a];
            if self.quarantine_after > 0 && plugin.consecutive_failures >= self.quarantine_after {
                self.quarantine(a, &e.to_string());
                return;
            }
        }
    }

    /// Swaps aggregation `a`'s plugin for `new` (a new version of it, with
    /// the same state format), moving every open window's accumulator
    /// across: buffered values are handed to the old instance first, each
    /// accumulator is snapshotted there and restored in `new`. Returns how
    /// many accumulators moved.
    ///
    /// All or nothing: if any snapshot or restore fails, `new` is dropped
    /// and the old instance keeps serving, with every window as it was.
    /// A window that had already failed for this aggregation keeps its
    /// error; a quarantine ends, since the new version has not failed yet.
    pub fn replace_plugin(
        &mut self,
        a: usize,
        mut new: AggregationInstance,
    ) -> Result<usize, String> {
        if a >= self.plugins.len() {
            return Err(format!("no aggregation {a}"));
        }
        self.flush_all();
        let state_version = new.info().state_version;
        let old_label = self.plugins[a].instance.label().to_string();
        let mut moved = Vec::new();
        let ids: Vec<usize> = self.slots.iter().map(|(id, _)| id).collect();
        for id in ids {
            let Ok(acc) = self.slots[id].lanes[a].acc else {
                continue;
            };
            let bytes = match self.plugins[a].instance.snapshot(acc) {
                Ok(bytes) => bytes,
                Err(e) => {
                    let why = format!("snapshotting an open window in {old_label} failed: {e}");
                    // The old instance's failure is handled as any other.
                    self.fail(a, Some(id), e);
                    return Err(why);
                }
            };
            match new.restore(&bytes, state_version) {
                Ok(restored) => moved.push((id, restored, bytes)),
                Err(e) => {
                    return Err(format!(
                        "{} could not restore an open window's state from {old_label}: {e}",
                        new.label()
                    ));
                }
            }
        }
        let count = moved.len();
        for (id, restored, bytes) in moved {
            let slot = &mut self.slots[id];
            slot.changed = true;
            let lane = &mut slot.lanes[a];
            lane.acc = Ok(restored);
            lane.snapshot = Some(bytes);
            // Everything handed so far is in the snapshot; nothing is pending
            // after the flush above.
            lane.values.drain(..lane.handed);
            lane.times.drain(..lane.handed);
            lane.handed = 0;
        }
        // Partials belong to the old instance, dropped here with it.
        self.forget_partials(Some(a));
        let plugin = &mut self.plugins[a];
        plugin.instance = new;
        plugin.consecutive_failures = 0;
        plugin.quarantined = None;
        Ok(count)
    }

    /// Aggregation `a`'s running plugin instance.
    pub fn instance(&self, a: usize) -> &AggregationInstance {
        &self.plugins[a].instance
    }

    /// The outputs aggregation `a`'s plugin declares.
    pub fn outputs(&self, a: usize) -> &[crate::plugin::bindings::OutputSpec] {
        self.plugins[a].instance.outputs()
    }

    /// The earliest start of any open slot: every event older than it has
    /// left the window state (emitted and cleaned up, or reported late).
    pub fn oldest_start(&self) -> Option<i64> {
        self.slots.iter().map(|(_, s)| s.bounds.start).min()
    }

    /// Drops every slot and timer without firing anything.
    pub fn clear(&mut self) -> Result<(), PluginError> {
        self.drop_partials();
        let ids: Vec<usize> = self.slots.iter().map(|(id, _)| id).collect();
        for id in ids {
            self.close(id);
        }
        self.timers.clear();
        self.dirty.clear();
        Ok(())
    }

    /// Writes into `delta` every slot changed since the last checkpoint and
    /// every record of a slot closed since; returns the number of window
    /// records and the sum of their CRCs once `delta` is committed.
    ///
    /// Every changed accumulator is snapshotted, which also empties its
    /// replay log: the checkpoint and the failure-recovery snapshot are the
    /// same bytes.
    pub fn checkpoint_into(
        &mut self,
        delta: &mut CheckpointDelta,
    ) -> Result<(u64, u32), StateError> {
        self.flush_all();
        for (key, crc) in self.persisted.removed.drain(..) {
            delta.delete.push(key);
            self.persisted.count -= 1;
            self.persisted.crc_sum = self.persisted.crc_sum.wrapping_sub(crc);
        }
        let changed: Vec<usize> = self
            .slots
            .iter()
            .filter(|(_, s)| s.changed)
            .map(|(id, _)| id)
            .collect();
        for id in changed {
            for a in 0..self.plugins.len() {
                if self.slots[id].lanes[a].handed > 0 {
                    self.checkpoint(a, id);
                }
            }
            let slot = &mut self.slots[id];
            let state = SlotState {
                key: slot.key,
                start: slot.bounds.start,
                end: slot.bounds.end,
                lanes: slot
                    .lanes
                    .iter()
                    .map(|lane| match (&lane.acc, &lane.snapshot) {
                        (Err(why), _) => LaneState::Failed(why.to_string()),
                        (Ok(_), Some(bytes)) => LaneState::Snapshot(bytes.clone()),
                        (Ok(_), None) => LaneState::Fresh,
                    })
                    .collect(),
            };
            let (bytes, crc) = encode_record(&state)?;
            if let Some((start, old_crc)) = slot.stored {
                if start != slot.bounds.start {
                    delta.delete.push(SlotKey {
                        key: slot.key,
                        start,
                    });
                }
                self.persisted.count -= 1;
                self.persisted.crc_sum = self.persisted.crc_sum.wrapping_sub(old_crc);
            }
            let key = SlotKey {
                key: slot.key,
                start: slot.bounds.start,
            };
            delta.put.push((key, bytes));
            self.persisted.count += 1;
            self.persisted.crc_sum = self.persisted.crc_sum.wrapping_add(crc);
            slot.stored = Some((slot.bounds.start, crc));
            slot.changed = false;
        }
        Ok((self.persisted.count, self.persisted.crc_sum))
    }

    /// Reopens a slot from a checkpoint. `crc` is its record's checksum.
    /// A lane whose plugin cannot restore its bytes reports that error
    /// for the window instead of a result.
    pub fn restore_slot(&mut self, state: &SlotState, crc: u32) -> usize {
        let bounds = Window {
            start: state.start,
            end: state.end,
        };
        let id = self.slots.insert(Slot {
            key: state.key,
            bounds,
            lanes: Vec::with_capacity(self.plugins.len()),
            pending_len: 0,
            changed: false,
            stored: Some((state.start, crc)),
        });
        self.by_key
            .entry(state.key)
            .or_default()
            .insert(bounds.start, id);
        self.persisted.count += 1;
        self.persisted.crc_sum = self.persisted.crc_sum.wrapping_add(crc);
        for a in 0..self.plugins.len() {
            let plugin = &mut self.plugins[a];
            let state_version = plugin.instance.info().state_version;
            let lane = state.lanes.get(a).unwrap_or(&LaneState::Fresh);
            let called = match (lane, &plugin.quarantined) {
                (LaneState::Failed(why), _) => Err(Arc::from(why.as_str())),
                (_, Some(why)) => Err(Arc::clone(why)),
                (LaneState::Fresh, None) => Ok((plugin.instance.create(), None)),
                (LaneState::Snapshot(bytes), None) => Ok((
                    plugin.instance.restore(bytes, state_version),
                    Some(bytes.clone()),
                )),
            };
            match called {
                Ok((Ok(acc), snapshot)) => {
                    let mut lane = Lane::new(Ok(acc));
                    lane.snapshot = snapshot;
                    self.slots[id].lanes.push(lane);
                }
                Ok((Err(e), _)) => {
                    self.slots[id].lanes.push(Lane::new(Err(Arc::from(""))));
                    self.fail(a, Some(id), e);
                }
                Err(why) => self.slots[id].lanes.push(Lane::new(Err(why))),
            }
        }
        id
    }

    /// Each aggregation's failure record, for a checkpoint.
    pub fn health_state(&self) -> Vec<HealthState> {
        self.plugins
            .iter()
            .map(|p| HealthState {
                failures: p.failures,
                consecutive_failures: p.consecutive_failures,
                quarantined: p.quarantined.as_deref().map(str::to_string),
            })
            .collect()
    }

    /// Takes back the failure records of a checkpoint (before any slot is restored).
    pub fn restore_health(&mut self, health: &[HealthState]) {
        for (plugin, h) in self.plugins.iter_mut().zip(health) {
            plugin.failures = h.failures;
            plugin.consecutive_failures = h.consecutive_failures;
            plugin.quarantined = h.quarantined.as_deref().map(Arc::from);
        }
    }

    /// Each aggregation's plugin identity, for a checkpoint's meta.
    pub fn plugin_infos(&self) -> impl Iterator<Item = (&str, &str, u32)> {
        self.plugins.iter().map(|p| {
            let info = p.instance.info();
            (
                info.name.as_str(),
                info.version.as_str(),
                info.state_version,
            )
        })
    }

    /// Every open slot's key and bounds, for re-creating timers after a restore.
    pub fn slot_bounds(&self) -> Vec<(KeyId, Window)> {
        self.slots.iter().map(|(_, s)| (s.key, s.bounds)).collect()
    }

    /// The pending trigger timers, per (key, window start): for checkpoints.
    pub fn trigger_timers(&self) -> HashMap<(KeyId, i64), Vec<i64>> {
        let mut timers: HashMap<(KeyId, i64), Vec<i64>> = HashMap::new();
        for t in self.timers.iter().filter(|t| t.kind == TimerKind::Trigger) {
            timers.entry((t.key, t.start)).or_default().push(t.time);
        }
        timers
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::registry::builtin_bytes;
    use crate::plugin::{PluginEngine, PluginLimits};

    fn open(engine: &PluginEngine, name: &str) -> AggregationInstance {
        let bytes = builtin_bytes(name).expect("a built-in");
        let plugin = engine.compile(name, bytes).expect("compiles");
        engine.open_aggregation(&plugin, "{}").expect("opens")
    }

    fn count(store: &mut WindowStore, id: usize) -> Option<f64> {
        store.finish(id).values[0][0]
    }

    #[test]
    fn replace_plugin_moves_every_open_window_or_none() {
        let engine = PluginEngine::new(PluginLimits::default()).expect("engine");
        let mut store = WindowStore::new(vec![open(&engine, "count")], 4);
        let a = store.open(1, Window { start: 0, end: 10 });
        let b = store.open(2, Window { start: 0, end: 10 });
        // Six values in `a` (four handed to the plugin, two still buffered), one in `b`.
        for t in 0..6 {
            store.push(a, &[Some(1.0)], t);
        }
        store.push(b, &[Some(1.0)], 0);

        // `sum` declares the same state format but cannot read count's bytes:
        // the swap is refused and count keeps every window.
        let refused = store
            .replace_plugin(0, open(&engine, "sum"))
            .expect_err("sum cannot restore count's state");
        assert!(refused.contains("corrupt sum state"), "{refused}");
        assert_eq!(store.instance(0).info().name, "count");

        // A fresh count instance takes both windows with what they held.
        assert_eq!(store.replace_plugin(0, open(&engine, "count")), Ok(2));
        store.push(a, &[Some(1.0)], 7);
        assert_eq!(count(&mut store, a), Some(7.0));
        assert_eq!(count(&mut store, b), Some(1.0));
    }
}
