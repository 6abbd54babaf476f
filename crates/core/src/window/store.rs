//! Window state: per key and window (or pane, or session), one accumulator per
//! aggregation in the plugins, plus the values not yet handed to them.
//!
//! Values are buffered per slot and handed to plugins in batches: when the
//! buffers together reach the batch size, or before a slot is read, merged or
//! closed. Plugins accumulate sequentially, so when a batch is cut changes
//! speed, never results.
//!
//! By concept:
//! - [`slots`]: opening, re-bounding, purging and closing slots;
//! - [`batching`]: values buffered and handed over in batches, and the
//!   snapshots that bound a replay;
//! - [`finishing`]: outputs of a slot or of merged slots, and merging;
//! - [`replay`]: what happens when a plugin fails, and rebuilding the lost
//!   accumulators;
//! - [`retiring`]: two versions of a plugin side by side after a reload;
//! - [`persistence`]: checkpoints and restoring from them;
//! - [`partials`]: sliding windows' partial aggregates.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

mod batching;
mod finishing;
mod instance;
mod partials;
mod persistence;
mod replay;
mod retiring;
mod slots;
mod starts;

pub(crate) use partials::Fold;

use slab::Slab;

use super::Window;
use super::persist::{HealthState, LaneState, RetiringState, SlotKey, SlotState, WindowDelta};
use crate::decode::KeyId;
use crate::decode::Row;
use crate::plugin::grouped::{Column, GroupedAggregation, OutputValue, takes_one_number};
use crate::plugin::{OutputSpec, PluginError};
use crate::record::{StateError, encode_record};
use instance::Instance;
use starts::ByKey;

/// One window's (or pane's, session's, partial's) state in an [`Instance`]:
/// a group of the grouped plugin.
type Accumulator = crate::plugin::grouped::GroupId;

/// How many values an accumulator takes in after its last snapshot before the
/// store snapshots it again: bounds the replay log at 64 KiB per accumulator
/// (16 bytes a number and its time). The snapshots of every lane past it in
/// a batch are one call per aggregation; at 4,096 a window that takes 800
/// values a batch (10 keys sharing the default 8,192) is snapshotted every
/// fifth batch rather than nearly every batch, which at 1,024 made the
/// snapshot calls as many as the updates.
pub(crate) const REPLAY_LIMIT: usize = 4096;

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

/// Which of an aggregation's instances holds an accumulator (see the
/// module doc on two versions side by side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    /// The version configured, or the last one swapped in.
    Current,
    /// The version before a reload to another state format, finishing the
    /// windows that were open at the swap.
    Retiring,
}

/// One aggregation's state in one slot.
#[derive(Debug)]
struct Lane {
    /// The accumulator, or why this window has no result for the aggregation.
    acc: Result<Accumulator, Arc<str>>,
    /// The instance `acc` lives in.
    version: Version,
    /// The accumulator's state when `values` began; `None`: a new accumulator.
    snapshot: Option<Box<[u8]>>,
    /// The rows since the snapshot, one per entry of `times`: rows
    /// `..handed` are in the accumulator (the replay log), rows `handed..`
    /// wait for the next batch. An aggregation of one number logs them in
    /// `values`; one of typed inputs in `columns`, one per input.
    values: Vec<f64>,
    columns: Box<[Column]>,
    times: Vec<i64>,
    /// How many rows of the log are in the accumulator: a `u32` (the log is
    /// cut at [`REPLAY_LIMIT`] rows by snapshots, and a lane whose snapshot
    /// fails fails), which keeps a lane at 112 bytes, two in 224.
    handed: u32,
    /// The same values in the retiring version, for a current lane that may
    /// still be merged into a retiring window; its replay log is `values`.
    /// Boxed, like the snapshot and the columns: a store holds a lane per
    /// window and aggregation, and what only a reload or typed inputs need
    /// should not make every lane larger.
    shadow: Option<Box<Shadow>>,
}

/// Rows of a lane's log, as [`Instance::queue`] takes them: `values` (an
/// aggregation of one number) are those rows already; of `columns` (typed
/// inputs), the rows `range`.
pub(crate) struct Log<'a> {
    values: &'a [f64],
    columns: &'a [Column],
    times: &'a [i64],
    range: std::ops::Range<usize>,
}

/// A current lane's state in the retiring version.
#[derive(Debug)]
struct Shadow {
    acc: Result<Accumulator, Arc<str>>,
    /// Its state when the lane's `values` began.
    snapshot: Option<Box<[u8]>>,
}

/// Accumulators a lane gave up, to be released by their instances.
#[derive(Debug, Default)]
struct Released {
    main: Option<(Version, Accumulator)>,
    shadow: Option<Accumulator>,
}

/// How restoring one accumulator from a checkpoint went.
enum Restoring {
    /// Restored, with the snapshot it was restored from.
    Done(Accumulator, Option<Box<[u8]>>),
    /// No call made: the window has no result for the aggregation, and why.
    Failed(Arc<str>),
    /// The plugin's call failed.
    CallFailed(PluginError),
}

/// The SHA-256 of a component, to tell retiring versions apart.
fn hash(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

impl Lane {
    /// This lane as a checkpoint stores it.
    fn state(&self) -> LaneState {
        fn plain(acc: &Result<Accumulator, Arc<str>>, snapshot: Option<&[u8]>) -> LaneState {
            match (acc, snapshot) {
                (Err(why), _) => LaneState::Failed(why.to_string()),
                (Ok(_), Some(bytes)) => LaneState::Snapshot(bytes.to_vec()),
                (Ok(_), None) => LaneState::Fresh,
            }
        }
        let own = plain(&self.acc, self.snapshot.as_deref());
        match (self.version, &self.shadow) {
            (Version::Retiring, _) => LaneState::Retiring(Box::new(own)),
            (Version::Current, Some(shadow)) if self.acc.is_ok() => LaneState::Shadowed(
                Box::new(own),
                Box::new(plain(&shadow.acc, shadow.snapshot.as_deref())),
            ),
            (Version::Current, _) => own,
        }
    }

    fn new(acc: Result<Accumulator, Arc<str>>) -> Self {
        Self {
            acc,
            version: Version::Current,
            snapshot: None,
            values: Vec::new(),
            columns: Box::default(),
            times: Vec::new(),
            handed: 0,
            shadow: None,
        }
    }

    /// How many rows of the log are in the accumulator.
    fn handed(&self) -> usize {
        self.handed as usize
    }

    /// Notes that every logged row is now in the accumulator.
    fn hand_all(&mut self) {
        self.handed = u32::try_from(self.times.len()).unwrap_or(u32::MAX);
    }

    /// How many rows the log holds (handed over or not).
    fn logged(&self) -> usize {
        self.times.len()
    }

    /// Whether every logged row is in the accumulator.
    fn all_handed(&self) -> bool {
        self.handed() == self.times.len()
    }

    /// Rows `range` of the log.
    fn log(&self, range: std::ops::Range<usize>) -> Log<'_> {
        Log {
            values: self.values.get(range.clone()).unwrap_or_default(),
            columns: &self.columns,
            times: &self.times[range.clone()],
            range,
        }
    }

    /// The rows not handed over yet.
    fn unhanded(&self) -> Log<'_> {
        self.log(self.handed()..self.logged())
    }

    /// Gives up on this window for the aggregation, keeping why.
    fn fail(&mut self, why: Arc<str>) -> Released {
        let main = std::mem::replace(&mut self.acc, Err(why))
            .ok()
            .map(|acc| (self.version, acc));
        self.snapshot = None;
        self.values = Vec::new();
        self.columns = Box::default();
        self.times = Vec::new();
        self.handed = 0;
        Released {
            main,
            shadow: self.take_shadow(),
        }
    }

    /// The accumulator's state is now `bytes`, which hold everything
    /// handed to it: the replay log starts afresh from there.
    fn snapshotted(&mut self, bytes: Vec<u8>) {
        self.snapshot = Some(bytes.into_boxed_slice());
        let handed = self.handed();
        self.values.drain(..handed.min(self.values.len()));
        for column in &mut self.columns {
            column.drain_front(handed);
        }
        self.times.drain(..handed);
        self.handed = 0;
    }

    /// Removes the shadow, returning its accumulator if it had one.
    fn take_shadow(&mut self) -> Option<Accumulator> {
        self.shadow.take().and_then(|s| s.acc.ok())
    }

    /// The accumulator in the retiring version that stands for this lane:
    /// its own if it retires, else its shadow's.
    fn retiring_acc(&self) -> Result<Accumulator, Arc<str>> {
        match (self.version, &self.acc, &self.shadow) {
            (_, Err(why), _) => Err(Arc::clone(why)),
            (Version::Retiring, Ok(acc), _) => Ok(*acc),
            (Version::Current, Ok(_), Some(shadow)) => shadow.acc.clone(),
            (Version::Current, Ok(_), None) => Err(Arc::from(
                "this part of the window holds no state in the retiring plugin version it \
                 must finish in",
            )),
        }
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
    instance: Instance,
    /// Failed calls since the last `add`, `merge` or `finish` that
    /// succeeded. Only those count as the plugin working: a plugin whose
    /// every `create` succeeds and every `add` traps must still end up
    /// quarantined.
    consecutive_failures: u32,
    /// Failed calls over the whole run.
    failures: u64,
    /// Why the plugin is no longer called, once it is quarantined.
    quarantined: Option<Arc<str>>,
    /// The version before a reload to another state format, while windows
    /// it holds are open.
    retiring: Option<Retiring>,
    /// For typed inputs, where the aggregation's cells start in an event's
    /// [`Row::cells`] and how many it has; `None` for one number per event.
    cells: Option<(usize, usize)>,
}

impl Plugin {
    /// The instance of `version` (the current one when none retires).
    fn of(&mut self, version: Version) -> &mut Instance {
        match (version, &mut self.retiring) {
            (Version::Retiring, Some(r)) => &mut r.instance,
            _ => &mut self.instance,
        }
    }

    /// Whether the instance of `version` is called at all: the plugin is
    /// not quarantined, and a retiring version is still there.
    fn serves(&self, version: Version) -> bool {
        self.quarantined.is_none() && (version == Version::Current || self.retiring.is_some())
    }

    /// [`Self::of`], to look at.
    fn of_ref(&self, version: Version) -> &Instance {
        match (version, &self.retiring) {
            (Version::Retiring, Some(r)) => &r.instance,
            _ => &self.instance,
        }
    }
}

/// A version finishing the windows open when a reload to another state
/// format swapped it out.
struct Retiring {
    instance: Instance,
    /// The component's bytes: a checkpoint keeps them, so that a restart can
    /// finish these windows after the file has changed.
    component: Arc<[u8]>,
    /// For each output the current version declares, the place of the same
    /// name among this version's outputs.
    outputs: Vec<Option<usize>>,
    /// Lanes of this version (failed or not): it goes when none is left.
    lanes: usize,
}

/// What a reload did with the open windows (see [`WindowStore::replace_plugin`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swap {
    /// This many accumulators moved to the new version.
    Moved(usize),
    /// The new version has another state format: this many windows finish
    /// on the old one, which retires when they have closed.
    SideBySide(usize),
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
    pub values: Vec<Vec<Option<OutputValue>>>,
    /// `(aggregation, why)` for each aggregation that failed, in order.
    pub errors: Vec<(usize, Arc<str>)>,
}

/// All open window state of an operator, and the plugins that hold it.
pub(crate) struct WindowStore {
    plugins: Vec<Plugin>,
    quarantine_after: u32,
    slots: Slab<Slot>,
    by_key: ByKey,
    timers: BTreeSet<Timer>,
    dirty: Vec<usize>,
    pending_total: usize,
    batch_size: usize,
    /// What the stored checkpoint holds of this store, kept up to date so a
    /// checkpoint writes only what changed.
    persisted: Persisted,
    /// Sliding windows' partial aggregates (see `partials`); never checkpointed.
    partials: partials::Partials,
    /// Whether slots merge (sliding panes, sessions), so that new slots of a
    /// key with retiring slots need shadows.
    merges_slots: bool,
    /// While a checkpoint is restored: why a retiring version it holds
    /// could not be loaded, per aggregation.
    unrunnable_retiring: HashMap<usize, Arc<str>>,
    /// The aggregations' names in the pipeline, for the log.
    names: Vec<String>,
    /// Per aggregation, how often its instance was reopened for memory.
    memory_recoveries: Vec<u64>,
    /// Outputs evaluated ahead for slots about to fire, one `evaluate` call
    /// per aggregation for all of them (see [`WindowStore::prefetch`]), by
    /// slot and aggregation; taken by the slot's next `finish`, dropped
    /// when the slot changes.
    prefetched: foldhash::HashMap<(usize, usize), Vec<Option<OutputValue>>>,
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
    /// Per aggregation, the retiring version whose record it holds, by
    /// component hash (the record is written once per retiring version).
    retiring: HashMap<usize, [u8; 32]>,
}

impl WindowStore {
    pub fn new(
        aggs: Vec<Box<dyn GroupedAggregation>>,
        batch_size: usize,
        quarantine_after: u32,
    ) -> Self {
        let names = (0..aggs.len()).map(|a| format!("#{a}")).collect();
        let memory_recoveries = vec![0; aggs.len()];
        let mut cells = 0;
        Self {
            plugins: aggs
                .into_iter()
                .map(|plugin| {
                    let inputs = plugin.inputs();
                    let own = (!takes_one_number(inputs)).then(|| {
                        cells += inputs.len();
                        (cells - inputs.len(), inputs.len())
                    });
                    Plugin {
                        instance: Instance::new(plugin),
                        consecutive_failures: 0,
                        failures: 0,
                        quarantined: None,
                        retiring: None,
                        cells: own,
                    }
                })
                .collect(),
            quarantine_after,
            slots: Slab::new(),
            by_key: ByKey::default(),
            timers: BTreeSet::new(),
            dirty: Vec::new(),
            pending_total: 0,
            batch_size: batch_size.max(1),
            persisted: Persisted::default(),
            partials: partials::Partials::default(),
            merges_slots: false,
            unrunnable_retiring: HashMap::new(),
            prefetched: foldhash::HashMap::default(),
            names,
            memory_recoveries,
        }
    }

    /// Names the aggregations as the pipeline does, for the log.
    pub fn set_names(&mut self, names: Vec<String>) {
        if names.len() == self.plugins.len() {
            self.names = names;
        }
    }

    /// Aggregation `a`'s name in the pipeline.
    fn name(&self, a: usize) -> &str {
        self.names.get(a).map_or("?", String::as_str)
    }

    /// Says that slots merge (sliding panes, sessions): set by the operator.
    pub fn set_merges_slots(&mut self, merges: bool) {
        self.merges_slots = merges;
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

    /// Aggregation `a`'s running plugin instance.
    pub fn instance(&self, a: usize) -> &dyn GroupedAggregation {
        self.plugins[a].instance.grouped()
    }

    /// The outputs aggregation `a`'s plugin declares.
    pub fn outputs(&self, a: usize) -> &[OutputSpec] {
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

    /// The slots of the fire timers due at watermark `w`, up to `limit`, in
    /// timer order: those [`WindowStore::prefetch`] is worth calling for.
    pub fn due_to_fire(&self, w: i64, limit: usize) -> Vec<usize> {
        self.timers
            .iter()
            .take_while(|t| t.time <= w)
            .filter(|t| t.kind == TimerKind::Fire)
            .filter_map(|t| self.find(t.key, t.start))
            .take(limit)
            .collect()
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
    use crate::plugin::grouped::PerWindow;
    use crate::plugin::native;

    fn count(store: &mut WindowStore, id: usize) -> Option<f64> {
        store.finish(id).values[0][0].as_ref()?.number()
    }

    #[test]
    fn replace_plugin_moves_every_open_window_or_none() {
        let mut store = WindowStore::new(
            vec![PerWindow::boxed(
                native::aggregation("count", "{}").unwrap(),
            )],
            4,
            5,
        );
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
            .replace_plugin(
                0,
                PerWindow::boxed(native::aggregation("sum", "{}").unwrap()),
                Arc::from(&[][..]),
            )
            .expect_err("sum cannot restore count's state");
        assert!(refused.contains("corrupt sum state"), "{refused}");
        assert_eq!(store.instance(0).info().name, "count");

        // A fresh count instance takes both windows with what they held.
        assert_eq!(
            store.replace_plugin(
                0,
                PerWindow::boxed(native::aggregation("count", "{}").unwrap()),
                Arc::from(&[][..])
            ),
            Ok(Swap::Moved(2))
        );
        store.push(a, &[Some(1.0)], 7);
        assert_eq!(count(&mut store, a), Some(7.0));
        assert_eq!(count(&mut store, b), Some(1.0));
    }

    /// A grouped plugin that counts the `update`, `evaluate`, `snapshot`
    /// and `release` calls made on it.
    struct Counting {
        inner: PerWindow,
        updates: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        evaluations: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        snapshots: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        releases: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl GroupedAggregation for Counting {
        fn label(&self) -> &str {
            self.inner.label()
        }
        fn info(&self) -> &crate::plugin::PluginInfo {
            self.inner.info()
        }
        fn inputs(&self) -> &[crate::plugin::grouped::InputSpec] {
            self.inner.inputs()
        }
        fn outputs(&self) -> &[OutputSpec] {
            self.inner.outputs()
        }
        fn is_poisoned(&self) -> bool {
            self.inner.is_poisoned()
        }
        fn call_stats(&self) -> (u64, std::time::Duration) {
            self.inner.call_stats()
        }
        fn reopen(&mut self) -> Result<(), PluginError> {
            self.inner.reopen()
        }
        fn update(&mut self, rows: &crate::plugin::grouped::Rows) -> Result<(), PluginError> {
            self.updates
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.inner.update(rows)
        }
        fn merge(&mut self, into: &[Accumulator], from: &[Accumulator]) -> Result<(), PluginError> {
            self.inner.merge(into, from)
        }
        fn evaluate(
            &mut self,
            groups: &[Accumulator],
        ) -> Result<Vec<Vec<Option<OutputValue>>>, PluginError> {
            self.evaluations
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.inner.evaluate(groups)
        }
        fn snapshot(&mut self, groups: &[Accumulator]) -> Result<Vec<Vec<u8>>, PluginError> {
            self.snapshots
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.inner.snapshot(groups)
        }
        fn restore(
            &mut self,
            groups: &[Accumulator],
            states: &[&[u8]],
            state_version: u32,
        ) -> Result<Vec<crate::plugin::grouped::GroupError>, PluginError> {
            self.inner.restore(groups, states, state_version)
        }
        fn release(&mut self, groups: &[Accumulator]) -> Result<(), PluginError> {
            self.releases
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.inner.release(groups)
        }
    }

    #[test]
    fn a_batch_of_many_windows_is_one_call_per_aggregation() {
        let updates = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let evaluations = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let snapshots = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let releases = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counting = |name: &str| -> Box<dyn GroupedAggregation> {
            Box::new(Counting {
                inner: PerWindow::new(native::aggregation(name, "{}").unwrap()),
                updates: std::sync::Arc::clone(&updates),
                evaluations: std::sync::Arc::clone(&evaluations),
                snapshots: std::sync::Arc::clone(&snapshots),
                releases: std::sync::Arc::clone(&releases),
            })
        };
        let mut store = WindowStore::new(vec![counting("count"), counting("sum")], 8, 5);
        let ids: Vec<usize> = (0..4)
            .map(|key| store.open(key, Window { start: 0, end: 10 }))
            .collect();
        // Eight values over four windows: the batch size, so one flush.
        for t in 0..2 {
            for (i, &id) in ids.iter().enumerate() {
                store.push(id, &[Some(1.0), Some(i as f64)], t);
            }
        }
        assert_eq!(
            updates.load(std::sync::atomic::Ordering::Relaxed),
            2,
            "one update per aggregation for the four windows"
        );
        // A checkpoint snapshots the four changed windows: one call each.
        let mut delta = WindowDelta::default();
        store.checkpoint_into(&mut delta).expect("checkpoint");
        assert_eq!(delta.put.len(), 4);
        assert_eq!(
            snapshots.load(std::sync::atomic::Ordering::Relaxed),
            2,
            "one snapshot per aggregation for the four windows"
        );
        // Windows about to fire are evaluated in one call per aggregation.
        store.prefetch(&ids);
        assert_eq!(
            evaluations.load(std::sync::atomic::Ordering::Relaxed),
            2,
            "one evaluate per aggregation for the four windows"
        );
        for (i, &id) in ids.iter().enumerate() {
            let out = store.finish(id);
            assert_eq!(out.values[0][0], Some(OutputValue::Integer(2)));
            assert_eq!(out.values[1][0], Some(OutputValue::Float(2.0 * i as f64)));
        }
        assert_eq!(evaluations.load(std::sync::atomic::Ordering::Relaxed), 2);
        // A purged window's outputs are asked for again, not taken from
        // before the purge.
        store.purge(ids[3]);
        assert_eq!(
            store.finish(ids[3]).values[0][0],
            Some(OutputValue::Integer(0))
        );
        store.drop_prefetched();

        // A window read (so flushed on its own) and then filled again is
        // listed twice for the next batch: its values still count once.
        store.push(ids[0], &[Some(1.0), Some(0.0)], 3);
        let _ = store.finish(ids[0]);
        for t in 4..6 {
            for &id in &ids {
                store.push(id, &[Some(1.0), Some(0.0)], t);
            }
        }
        store.flush_all();
        let counts: Vec<_> = ids
            .iter()
            .map(|&id| store.finish(id).values[0][0].clone())
            .collect();
        assert_eq!(
            counts,
            // Window 3 was purged after its first two values.
            [5, 4, 4, 2].map(|n| Some(OutputValue::Integer(n))),
            "each value once"
        );

        // Closed windows are freed at the next flush, one call per aggregation.
        for &id in &ids {
            store.close(id);
        }
        let load =
            |n: &std::sync::atomic::AtomicUsize| n.load(std::sync::atomic::Ordering::Relaxed);
        // (The purge's groups were released at an earlier flush.)
        let before = load(&releases);
        let reused = store.open(9, Window { start: 0, end: 10 });
        assert_eq!(load(&releases), before);
        store.push(reused, &[Some(1.0), Some(1.0)], 7);
        store.flush_all();
        assert_eq!(load(&releases) - before, 2, "one release per aggregation");
        assert_eq!(
            store.finish(reused).values[0][0],
            Some(OutputValue::Integer(1)),
            "a new window starts empty"
        );
    }
}
