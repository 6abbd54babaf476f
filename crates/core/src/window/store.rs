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
//!
//! # Two versions side by side
//!
//! A hot reload to a version with the same state format moves every open
//! window into the new instance (snapshot there, restore here). One with
//! another state format cannot take those windows, so the old instance stays
//! on as the *retiring* version: the windows open at the swap finish there,
//! windows opened later start in the new one, and once the last retiring
//! window closes the old instance is dropped. At most one version retires at
//! a time per aggregation; a reload to yet another format waits until then.
//!
//! Sliding panes and sessions merge with their neighbours, and states of two
//! formats cannot merge. So in those shapes a slot opened while its key still
//! has a retiring slot also takes its values in the retiring version, as a
//! *shadow* accumulator: a window (or session) holding any retiring slot
//! finishes in the retiring version, from the retiring slots and the shadows
//! of the others; one made only of new slots finishes in the new version.
//! The shadow costs one more plugin call per batch, for the keys and the
//! time (a window's length, or a session's life) that the transition lasts.
//! A retiring window reports the outputs the new version declares: each
//! output the old version also declares carries its value, the others null.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

mod partials;

pub(crate) use partials::Fold;

use slab::Slab;

use super::Window;
use super::persist::{HealthState, LaneState, RetiringState, SlotKey, SlotState, WindowDelta};
use crate::decode::KeyId;
use crate::plugin::{AccumulatorHandle as Accumulator, Aggregation, OutputSpec, PluginError};
use crate::record::{StateError, encode_record};
use sluice_config::limits::bytes_text;

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
    snapshot: Option<Vec<u8>>,
    /// `values[..handed]` are in the accumulator (the replay log since the
    /// snapshot); `values[handed..]` wait for the next batch.
    values: Vec<f64>,
    times: Vec<i64>,
    handed: usize,
    /// The same values in the retiring version, for a current lane that may
    /// still be merged into a retiring window; its replay log is `values`.
    shadow: Option<Shadow>,
}

/// A current lane's state in the retiring version.
#[derive(Debug)]
struct Shadow {
    acc: Result<Accumulator, Arc<str>>,
    /// Its state when the lane's `values` began.
    snapshot: Option<Vec<u8>>,
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
    Done(Accumulator, Option<Vec<u8>>),
    /// No call made: the window has no result for the aggregation, and why.
    Failed(Arc<str>),
    /// The plugin's call failed.
    CallFailed(PluginError),
}

/// Whether `n` is 1, 10, 100, ...: when a repeated event is logged again.
fn tenfold(mut n: u64) -> bool {
    while n > 1 && n.is_multiple_of(10) {
        n /= 10;
    }
    n == 1
}

/// The SHA-256 of a component, to tell retiring versions apart.
fn hash(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

impl Lane {
    /// This lane as a checkpoint stores it.
    fn state(&self) -> LaneState {
        fn plain(acc: &Result<Accumulator, Arc<str>>, snapshot: Option<&Vec<u8>>) -> LaneState {
            match (acc, snapshot) {
                (Err(why), _) => LaneState::Failed(why.to_string()),
                (Ok(_), Some(bytes)) => LaneState::Snapshot(bytes.clone()),
                (Ok(_), None) => LaneState::Fresh,
            }
        }
        let own = plain(&self.acc, self.snapshot.as_ref());
        match (self.version, &self.shadow) {
            (Version::Retiring, _) => LaneState::Retiring(Box::new(own)),
            (Version::Current, Some(shadow)) if self.acc.is_ok() => LaneState::Shadowed(
                Box::new(own),
                Box::new(plain(&shadow.acc, shadow.snapshot.as_ref())),
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
            times: Vec::new(),
            handed: 0,
            shadow: None,
        }
    }

    /// Gives up on this window for the aggregation, keeping why.
    fn fail(&mut self, why: Arc<str>) -> Released {
        let main = std::mem::replace(&mut self.acc, Err(why))
            .ok()
            .map(|acc| (self.version, acc));
        self.snapshot = None;
        self.values = Vec::new();
        self.times = Vec::new();
        self.handed = 0;
        Released {
            main,
            shadow: self.take_shadow(),
        }
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
    instance: Box<dyn Aggregation>,
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
}

impl Plugin {
    /// The instance of `version` (the current one when none retires).
    fn of(&mut self, version: Version) -> &mut Box<dyn Aggregation> {
        match (version, &mut self.retiring) {
            (Version::Retiring, Some(r)) => &mut r.instance,
            _ => &mut self.instance,
        }
    }

    /// [`Self::of`], to look at.
    fn of_ref(&self, version: Version) -> &dyn Aggregation {
        match (version, &self.retiring) {
            (Version::Retiring, Some(r)) => r.instance.as_ref(),
            _ => self.instance.as_ref(),
        }
    }
}

/// A version finishing the windows open when a reload to another state
/// format swapped it out.
struct Retiring {
    instance: Box<dyn Aggregation>,
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
    pub values: Vec<Vec<Option<f64>>>,
    /// `(aggregation, why)` for each aggregation that failed, in order.
    pub errors: Vec<(usize, Arc<str>)>,
}

/// All open window state of an operator, and the plugins that hold it.
pub(crate) struct WindowStore {
    plugins: Vec<Plugin>,
    quarantine_after: u32,
    slots: Slab<Slot>,
    by_key: foldhash::HashMap<KeyId, BTreeMap<i64, usize>>,
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
    pub fn new(aggs: Vec<Box<dyn Aggregation>>, batch_size: usize, quarantine_after: u32) -> Self {
        let names = (0..aggs.len()).map(|a| format!("#{a}")).collect();
        let memory_recoveries = vec![0; aggs.len()];
        Self {
            plugins: aggs
                .into_iter()
                .map(|instance| Plugin {
                    instance,
                    consecutive_failures: 0,
                    failures: 0,
                    quarantined: None,
                    retiring: None,
                })
                .collect(),
            quarantine_after,
            slots: Slab::new(),
            by_key: foldhash::HashMap::default(),
            timers: BTreeSet::new(),
            dirty: Vec::new(),
            pending_total: 0,
            batch_size: batch_size.max(1),
            persisted: Persisted::default(),
            partials: partials::Partials::default(),
            merges_slots: false,
            unrunnable_retiring: HashMap::new(),
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

    /// After a call of aggregation `a`'s instance of `version` failed with
    /// `e`: if it ran out of memory, reopens the instance with only the open
    /// windows' accumulators (rebuilt exactly from their snapshots and
    /// replay logs, in a heap that holds nothing else) and halves the
    /// partial aggregates it may keep, so that the call can be made again.
    /// Returns whether it can: false when `e` is another failure, or the
    /// reopened instance is not usable.
    ///
    /// Memory is not the input's doing: how full a heap is depends on what
    /// the instance held before (partials, freed space), which a restart
    /// from a checkpoint does not reproduce. Failing the window would make
    /// the output depend on that; a window fails for memory only when its
    /// call fails again in an instance holding nothing but the open windows.
    fn recover_memory(&mut self, a: usize, version: Version, e: &PluginError) -> bool {
        let plugin = &mut self.plugins[a];
        if plugin.quarantined.is_some()
            || (version == Version::Retiring && plugin.retiring.is_none())
        {
            return false;
        }
        let Some(limit) = plugin.of(version).out_of_memory().map(bytes_text) else {
            return false;
        };
        let label = plugin.of(version).label().to_string();
        let budget = match version {
            Version::Current => self.halve_partials(a),
            Version::Retiring => None,
        };
        self.memory_recoveries[a] += 1;
        let n = self.memory_recoveries[a];
        // Every time would flood the log; the first and each tenfold after.
        if tenfold(n) {
            let partials = match budget {
                Some(b) => format!(
                    "; it keeps at most {b} partial aggregates of sliding windows from now on \
                     (windows beyond them are computed afresh: the same results, slower)"
                ),
                None => String::new(),
            };
            tracing::warn!(
                aggregation = %self.name(a),
                recoveries = n,
                "aggregation `{}`: plugin {label} reached its memory limit ({limit}) \
                 ({n} time(s) so far): its instance was reopened holding only the open \
                 windows, and the call is made again{partials}. Raise `plugins.memory_limit` \
                 to give it room",
                self.name(a)
            );
        }
        self.rebuild(a, version, &e.to_string());
        let plugin = &mut self.plugins[a];
        plugin.quarantined.is_none()
            && (version == Version::Current || plugin.retiring.is_some())
            && !plugin.of(version).is_poisoned()
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
        // An emptied window has nothing to finish in a retiring version:
        // it starts afresh in the current one, like any new window.
        for (a, lane) in lanes.into_iter().enumerate() {
            self.drop_lane(a, lane);
        }
        self.fill_lanes(id);
        self.pane_changed(None, key, start);
    }

    /// Whether any open slot of `key` holds aggregation `a` in the retiring version.
    fn key_retires(&self, a: usize, key: KeyId) -> bool {
        self.by_key.get(&key).is_some_and(|map| {
            map.values().any(|&id| {
                self.slots
                    .get(id)
                    .and_then(|s| s.lanes.get(a))
                    .is_some_and(|l| l.version == Version::Retiring)
            })
        })
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
                        let created = if self.recover_memory(a, Version::Current, &e) {
                            self.plugins[a].instance.create()
                        } else {
                            Err(e)
                        };
                        match created {
                            Ok(acc) => self.slots[id].lanes[a].acc = Ok(acc),
                            Err(e) => {
                                self.fail(a, Version::Current, Some(id), e);
                                continue;
                            }
                        }
                        self.add_shadow(a, id);
                        continue;
                    }
                },
            };
            self.slots[id].lanes.push(Lane::new(acc));
            self.add_shadow(a, id);
        }
    }

    /// Gives slot `id`'s new lane of aggregation `a` a shadow in the
    /// retiring version, if it may merge into a retiring window.
    fn add_shadow(&mut self, a: usize, id: usize) {
        let key = self.slots[id].key;
        if self.merges_slots
            && self.plugins[a].retiring.is_some()
            && self.slots[id].lanes[a].acc.is_ok()
            && self.key_retires(a, key)
        {
            match self.plugins[a].of(Version::Retiring).create() {
                Ok(acc) => {
                    self.slots[id].lanes[a].shadow = Some(Shadow {
                        acc: Ok(acc),
                        snapshot: None,
                    });
                }
                Err(e) => self.shadow_failed(a, id, e),
            }
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
            if lane.acc.is_err() || lane.handed == lane.values.len() {
                continue;
            }
            let shadow = lane
                .shadow
                .as_ref()
                .and_then(|s| s.acc.as_ref().ok().copied());
            if let Some(shadow) = shadow {
                let added = self.plugins[a].of(Version::Retiring).add(
                    shadow,
                    &lane.values[lane.handed..],
                    &lane.times[lane.handed..],
                );
                if let Err(e) = added {
                    self.shadow_failed(a, id, e);
                }
            }
            // Looked up again: the shadow's failure may have quarantined the plugin.
            let mut added = self.hand_over(a, id);
            if let Err((version, e)) = &added
                && self.recover_memory(a, *version, e)
            {
                // The lane was rebuilt with what it had taken in; the rest
                // is still to be handed over.
                added = self.hand_over(a, id);
            }
            if let Err((version, e)) = added {
                self.fail(a, version, Some(id), e);
            }
        }
    }

    /// Hands slot `id`'s buffered values of aggregation `a` to its
    /// accumulator (nothing if the lane has failed); on failure, the
    /// version whose call failed.
    fn hand_over(&mut self, a: usize, id: usize) -> Result<(), (Version, PluginError)> {
        let lane = &self.slots[id].lanes[a];
        let (Ok(acc), version) = (&lane.acc, lane.version) else {
            return Ok(());
        };
        if lane.handed == lane.values.len() {
            return Ok(());
        }
        self.plugins[a]
            .of(version)
            .add(
                *acc,
                &lane.values[lane.handed..],
                &lane.times[lane.handed..],
            )
            .map_err(|e| (version, e))?;
        self.plugins[a].consecutive_failures = 0;
        let lane = &mut self.slots[id].lanes[a];
        lane.handed = lane.values.len();
        if lane.handed >= REPLAY_LIMIT {
            self.checkpoint(a, id);
        }
        Ok(())
    }

    /// Snapshots one accumulator so that its replay log can be dropped.
    fn checkpoint(&mut self, a: usize, id: usize) {
        let Some(lane) = self.slots.get(id).map(|s| &s.lanes[a]) else {
            return;
        };
        let (Ok(acc), version) = (lane.acc.clone(), lane.version) else {
            return;
        };
        let bytes = match self.plugins[a].of(version).snapshot(acc) {
            Ok(bytes) => bytes,
            Err(e) => {
                if self.recover_memory(a, version, &e) {
                    // Rebuilt in a fresh instance (the same state): snapshot it there.
                    let acc = self.slots.get(id).and_then(|s| s.lanes[a].acc.clone().ok());
                    let again = acc.map(|acc| self.plugins[a].of(version).snapshot(acc));
                    match again {
                        Some(Ok(bytes)) => bytes,
                        Some(Err(e)) => {
                            self.fail(a, version, Some(id), e);
                            return;
                        }
                        None => return,
                    }
                } else {
                    self.fail(a, version, Some(id), e);
                    return;
                }
            }
        };
        self.snapshot_shadow(a, id);
        let Some(lane) = self.slots.get_mut(id).map(|s| &mut s.lanes[a]) else {
            return;
        };
        if lane.acc.is_ok() {
            lane.snapshot = Some(bytes);
            lane.values.drain(..lane.handed);
            lane.times.drain(..lane.handed);
            lane.handed = 0;
        }
    }

    /// Snapshots slot `id`'s shadow of aggregation `a`, if it has a live
    /// one, at the replay log's current point: whenever the lane's own
    /// snapshot moves (and the log is cut), since the two share the log.
    fn snapshot_shadow(&mut self, a: usize, id: usize) {
        let shadow = self
            .slots
            .get(id)
            .and_then(|s| s.lanes[a].shadow.as_ref())
            .and_then(|s| s.acc.as_ref().ok().copied());
        let Some(shadow) = shadow else {
            return;
        };
        match self.plugins[a].of(Version::Retiring).snapshot(shadow) {
            Ok(bytes) => {
                if let Some(s) = &mut self.slots[id].lanes[a].shadow {
                    s.snapshot = Some(bytes);
                }
            }
            Err(e) => self.shadow_failed(a, id, e),
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
            let mut recovered = false;
            let values = loop {
                let (acc, version) = match self.slots.get(id).map(|s| &s.lanes[a]) {
                    Some(lane) => (lane.acc.clone(), lane.version),
                    None => (Err(Arc::from("window state missing")), Version::Current),
                };
                let acc = match acc {
                    Ok(acc) => acc,
                    Err(why) => break Err(why),
                };
                match self.plugins[a].of(version).finish(acc) {
                    Ok(values) => {
                        self.plugins[a].consecutive_failures = 0;
                        break Ok(self.present(a, version, values));
                    }
                    Err(e) if !recovered && self.recover_memory(a, version, &e) => {
                        // Rebuilt in a fresh instance: finish it there.
                        recovered = true;
                    }
                    Err(e) => {
                        // A refused result leaves the state intact; a trap
                        // does not, and the window cannot be restored from it.
                        let mark = self.plugins[a].of(version).is_poisoned().then_some(id);
                        break Err(self.fail(a, version, mark, e));
                    }
                }
            };
            self.push_outputs(&mut out, a, values);
        }
        out
    }

    /// Outputs of aggregation `a` finished in `version`, laid out as the
    /// current version declares them.
    fn present(&self, a: usize, version: Version, values: Vec<Option<f64>>) -> Vec<Option<f64>> {
        match (version, &self.plugins[a].retiring) {
            (Version::Retiring, Some(r)) => r
                .outputs
                .iter()
                .map(|at| at.and_then(|i| values.get(i).copied().flatten()))
                .collect(),
            _ => values,
        }
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
    ///
    /// A window holding any pane of the retiring version finishes there,
    /// from the other panes' shadows.
    fn merge_panes(&mut self, a: usize, ids: &[usize]) -> Result<Vec<Option<f64>>, Arc<str>> {
        match self.merge_panes_once(a, ids) {
            Err((version, e)) if self.recover_memory(a, version, &e) => {
                // The panes were rebuilt in a fresh instance: merge them there.
                match self.merge_panes_once(a, ids) {
                    Ok(values) => values,
                    Err((version, e)) => Err(self.fail(a, version, None, e)),
                }
            }
            Err((version, e)) => Err(self.fail(a, version, None, e)),
            Ok(values) => values,
        }
    }

    /// One attempt at [`Self::merge_panes`]; the outer error is a failed
    /// call, with the version it was made in.
    #[allow(clippy::type_complexity)] // a result inside the result of one attempt
    fn merge_panes_once(
        &mut self,
        a: usize,
        ids: &[usize],
    ) -> Result<Result<Vec<Option<f64>>, Arc<str>>, (Version, PluginError)> {
        let retiring = ids.iter().any(|&id| {
            self.slots
                .get(id)
                .is_some_and(|s| s.lanes[a].version == Version::Retiring)
        });
        let version = if retiring {
            Version::Retiring
        } else {
            Version::Current
        };
        let mut panes = Vec::with_capacity(ids.len());
        for &id in ids {
            let Some(lane) = self.slots.get(id).map(|s| &s.lanes[a]) else {
                continue;
            };
            let acc = if retiring {
                lane.retiring_acc()
            } else {
                lane.acc.clone()
            };
            match acc {
                Ok(acc) => panes.push(acc),
                Err(why) => return Ok(Err(why)),
            }
        }
        self.merge_and_finish(a, version, &panes)
    }

    /// Merges `panes` into a scratch accumulator of aggregation `a` and
    /// finishes it. A failure fails this emission only: merging leaves the
    /// panes unchanged, and if the instance was lost they are rebuilt.
    #[allow(clippy::type_complexity)] // as `merge_panes_once`
    fn merge_and_finish(
        &mut self,
        a: usize,
        version: Version,
        panes: &[Accumulator],
    ) -> Result<Result<Vec<Option<f64>>, Arc<str>>, (Version, PluginError)> {
        if let Some(why) = &self.plugins[a].quarantined {
            return Ok(Err(Arc::clone(why)));
        }
        let instance = self.plugins[a].of(version);
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
                Ok(Ok(self.present(a, version, values)))
            }
            Err(e) => Err((version, e)),
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
                self.merge_lane(a, into, from);
            }
        }
        self.close(from);
    }

    /// Folds aggregation `a`'s state of slot `from` into slot `into`.
    ///
    /// If either holds the retiring version, so does the result (see the
    /// module doc): a current `into` then continues as its shadow.
    fn merge_lane(&mut self, a: usize, into: usize, from: usize) {
        self.merge_lane_try(a, into, from, true);
    }

    /// [`Self::merge_lane`], made once more after the instance was reopened
    /// for memory if `retry` (both lanes are rebuilt as they were before).
    fn merge_lane_try(&mut self, a: usize, into: usize, from: usize, retry: bool) {
        let (target, source) = (&self.slots[into].lanes[a], &self.slots[from].lanes[a]);
        if target.acc.is_err() {
            return;
        }
        if let Err(why) = &source.acc {
            // Half a session has no result: neither has the whole.
            let why = Arc::clone(why);
            let released = self.slots[into].lanes[a].fail(why);
            self.release_parts(a, released);
            return;
        }
        let merged = match (target.version, source.version) {
            (Version::Current, Version::Current) => {
                let (Ok(t), Ok(f)) = (&target.acc, &source.acc) else {
                    return;
                };
                let shadows = (
                    target
                        .shadow
                        .as_ref()
                        .and_then(|s| s.acc.as_ref().ok().copied()),
                    source.shadow.as_ref().map(|s| s.acc.clone()),
                );
                let (t, f) = (*t, *f);
                match self.plugins[a].instance.merge(t, f) {
                    Ok(()) => {
                        match shadows {
                            (Some(ts), Some(Ok(fs))) => {
                                if let Err(e) = self.plugins[a].of(Version::Retiring).merge(ts, fs)
                                {
                                    self.shadow_failed(a, into, e);
                                }
                            }
                            (Some(ts), other) => {
                                // The merged session lacks part of its values
                                // in the retiring version: its shadow is void.
                                let why = match other {
                                    Some(Err(why)) => why,
                                    _ => Arc::from(
                                        "merged with a part that has no state in the retiring \
                                         plugin version",
                                    ),
                                };
                                if let Some(s) = &mut self.slots[into].lanes[a].shadow {
                                    s.acc = Err(why);
                                }
                                self.release(a, Version::Retiring, ts);
                            }
                            (None, _) => {}
                        }
                        Ok(())
                    }
                    Err(e) => Err((Version::Current, e)),
                }
            }
            (Version::Retiring, _) | (Version::Current, Version::Retiring) => {
                let (t, f) = (target.retiring_acc(), source.retiring_acc());
                let convert = target.version == Version::Current;
                match (t, f) {
                    (Err(why), _) | (_, Err(why)) => {
                        let released = self.slots[into].lanes[a].fail(why);
                        self.release_parts(a, released);
                        return;
                    }
                    (Ok(t), Ok(f)) => match self.plugins[a].of(Version::Retiring).merge(t, f) {
                        Ok(()) => {
                            if convert {
                                self.convert_to_retiring(a, into);
                            }
                            Ok(())
                        }
                        Err(e) => Err((Version::Retiring, e)),
                    },
                }
            }
        };
        match merged {
            Ok(()) => {
                self.plugins[a].consecutive_failures = 0;
                // A merge is not a replay of values: start the replay log
                // afresh from a snapshot of the result.
                let lane = &mut self.slots[into].lanes[a];
                lane.handed = lane.values.len();
                self.checkpoint(a, into);
            }
            Err((version, e)) => {
                if retry && self.recover_memory(a, version, &e) {
                    self.merge_lane_try(a, into, from, false);
                    return;
                }
                self.fail(a, version, Some(into), e);
            }
        }
    }

    /// A current lane that took in a retiring part continues as its shadow,
    /// in the retiring version; its own accumulator is given back.
    fn convert_to_retiring(&mut self, a: usize, id: usize) {
        let lane = &mut self.slots[id].lanes[a];
        let Some(shadow) = lane.shadow.take() else {
            return;
        };
        let old = std::mem::replace(&mut lane.acc, shadow.acc);
        lane.snapshot = shadow.snapshot;
        lane.version = Version::Retiring;
        if let Some(r) = &mut self.plugins[a].retiring {
            r.lanes += 1;
        }
        if let Ok(old) = old {
            self.release(a, Version::Current, old);
        }
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
            self.drop_lane(a, lane);
        }
    }

    /// Gives the accumulators of a lane that leaves the store back to their
    /// instances, and retires the old version when this was its last lane.
    fn drop_lane(&mut self, a: usize, mut lane: Lane) {
        let retiring = lane.version == Version::Retiring;
        let shadow = lane.take_shadow();
        if let Ok(acc) = lane.acc {
            self.release(a, lane.version, acc);
        }
        if let Some(acc) = shadow {
            self.release(a, Version::Retiring, acc);
        }
        if retiring {
            if let Some(r) = &mut self.plugins[a].retiring {
                r.lanes = r.lanes.saturating_sub(1);
            }
            self.retire_if_done(a);
        }
    }

    /// Drops aggregation `a`'s retiring version once it holds no window.
    fn retire_if_done(&mut self, a: usize) {
        if self.plugins[a]
            .retiring
            .as_ref()
            .is_none_or(|r| r.lanes != 0)
        {
            return;
        }
        let Some(retired) = self.plugins[a].retiring.take() else {
            return;
        };
        // Shadows lived in the dropped instance; no window needs them now.
        for (_, slot) in self.slots.iter_mut() {
            if let Some(lane) = slot.lanes.get_mut(a)
                && lane.shadow.take().is_some()
            {
                slot.changed = true;
            }
        }
        tracing::info!(
            aggregation = a,
            "{} retired: the last window it held has closed; {} serves alone",
            retired.instance.label(),
            self.plugins[a].instance.label()
        );
    }

    /// Gives what a failed lane held back to the instances.
    fn release_parts(&mut self, a: usize, released: Released) {
        if let Some((version, acc)) = released.main {
            self.release(a, version, acc);
        }
        if let Some(acc) = released.shadow {
            self.release(a, Version::Retiring, acc);
        }
    }

    /// Gives one accumulator back to the instance of `version`.
    fn release(&mut self, a: usize, version: Version, acc: Accumulator) {
        let plugin = &mut self.plugins[a];
        if plugin.quarantined.is_some()
            || (version == Version::Retiring && plugin.retiring.is_none())
        {
            return;
        }
        let instance = plugin.of(version);
        if instance.is_poisoned() {
            return;
        }
        if let Err(e) = instance.release(acc) {
            self.fail(a, version, None, e);
        }
    }

    /// Handles a failed call of aggregation `a` in `version`: marks slot
    /// `failed` (the window whose call it was, if its state is lost or
    /// suspect), rebuilds the instance if the call took it down, quarantines
    /// the aggregation after too many failures in a row. Returns what to report.
    fn fail(
        &mut self,
        a: usize,
        version: Version,
        failed: Option<usize>,
        error: PluginError,
    ) -> Arc<str> {
        let why: Arc<str> = Arc::from(error.to_string());
        let plugin = &self.plugins[a];
        let limit = (version == Version::Current || plugin.retiring.is_some())
            .then(|| plugin.of_ref(version).out_of_memory())
            .flatten()
            .filter(|_| plugin.quarantined.is_none());
        let hint = limit.map_or(String::new(), |l| {
            format!(
                "; raise `plugins.memory_limit` (now {}) to give it room",
                bytes_text(l)
            )
        });
        tracing::warn!(
            aggregation = %self.name(a),
            "aggregation `{}`: {why}{hint}",
            self.name(a)
        );
        if let Some((key, start)) = failed
            .and_then(|id| self.slots.get(id))
            .map(|s| (s.key, s.bounds.start))
        {
            self.pane_changed(Some(a), key, start);
        }
        if let Some(released) = failed.and_then(|id| self.slots.get_mut(id)).map(|slot| {
            slot.changed = true;
            slot.lanes[a].fail(Arc::clone(&why))
        }) {
            self.release_parts(a, released);
        }
        self.count_failure(a, version, &why);
        why
    }

    /// A call on slot `id`'s shadow in the retiring version failed: the shadow
    /// is void (a retiring window it joins reports this), the lane itself is not.
    fn shadow_failed(&mut self, a: usize, id: usize, error: PluginError) {
        let why: Arc<str> = Arc::from(error.to_string());
        tracing::warn!(aggregation = a, "{why}");
        let old = self
            .slots
            .get_mut(id)
            .and_then(|slot| {
                slot.changed = true;
                slot.lanes[a].shadow.replace(Shadow {
                    acc: Err(Arc::clone(&why)),
                    snapshot: None,
                })
            })
            .and_then(|s| s.acc.ok());
        if let Some(acc) = old {
            self.release(a, Version::Retiring, acc);
        }
        self.count_failure(a, Version::Retiring, &why);
    }

    /// Counts a failed call in `version`; quarantines the aggregation after
    /// too many in a row, or rebuilds the instance if the call took it down.
    fn count_failure(&mut self, a: usize, version: Version, why: &str) {
        let plugin = &mut self.plugins[a];
        plugin.failures += 1;
        plugin.consecutive_failures += 1;
        if self.quarantine_after > 0 && plugin.consecutive_failures >= self.quarantine_after {
            self.quarantine(a, why);
        } else if (version == Version::Current || plugin.retiring.is_some())
            && plugin.of(version).is_poisoned()
        {
            self.rebuild(a, version, why);
        }
    }

    /// Stops calling aggregation `a`'s plugin (both versions, if one
    /// retires) for the rest of the run.
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
        // No window can finish in the retiring version any more either.
        plugin.retiring = None;
        self.forget_partials(Some(a));
        for (_, slot) in self.slots.iter_mut() {
            let lane = &mut slot.lanes[a];
            lane.version = Version::Current;
            if lane.shadow.take().is_some() {
                slot.changed = true;
            }
            // A window that failed already keeps its own cause. Accumulators
            // are not released: the plugin is not called again.
            if lane.acc.is_ok() {
                let _ = lane.fail(Arc::clone(&why));
                slot.changed = true;
            }
        }
    }

    /// Replaces aggregation `a`'s lost instance of `version` with a fresh
    /// one and rebuilds every open window's accumulator in it (shadows too,
    /// for the retiring version) from its snapshot and replay log.
    ///
    /// A window whose rebuild fails is marked failed; if that failure takes
    /// the new instance down too, the rebuild starts over in another one,
    /// without that window. Each round fails one window more (and counts
    /// towards quarantine), so this ends.
    fn rebuild(&mut self, a: usize, version: Version, cause: &str) {
        // Partials lived in the lost instance; they are rebuilt when needed.
        if version == Version::Current {
            self.forget_partials(Some(a));
        }
        loop {
            let plugin = &mut self.plugins[a];
            if let Err(e) = plugin.of(version).reopen() {
                plugin.failures += 1;
                plugin.consecutive_failures += 1;
                self.quarantine(a, &format!("{e} (restarting it after: {cause})"));
                return;
            }
            let state_version = plugin.of(version).info().state_version;
            let mut lost_instance = None;
            for (_, slot) in self.slots.iter_mut() {
                // A slot being filled has no lane for `a` yet.
                let Some(lane) = slot.lanes.get_mut(a) else {
                    continue;
                };
                let shadow = version == Version::Retiring
                    && lane.version == Version::Current
                    && lane.shadow.as_ref().is_some_and(|s| s.acc.is_ok());
                if !(shadow || (lane.version == version && lane.acc.is_ok())) {
                    continue;
                }
                let snapshot = if shadow {
                    lane.shadow.as_ref().and_then(|s| s.snapshot.as_ref())
                } else {
                    lane.snapshot.as_ref()
                };
                let instance = self.plugins[a].of(version);
                let rebuilt = match snapshot {
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
                match (rebuilt, shadow) {
                    (Ok(acc), false) => lane.acc = Ok(acc),
                    (Ok(acc), true) => {
                        if let Some(s) = &mut lane.shadow {
                            s.acc = Ok(acc);
                        }
                    }
                    (Err(e), _) => {
                        let why: Arc<str> = Arc::from(format!(
                            "{e} (rebuilding this window's state after: {cause})"
                        ));
                        tracing::warn!(aggregation = a, "{why}");
                        if shadow {
                            if let Some(s) = &mut lane.shadow {
                                s.acc = Err(why);
                            }
                        } else {
                            // The lane's shadow (if any) lives in the retiring
                            // instance, which is not being rebuilt: it leaks
                            // there until that instance goes.
                            let _ = lane.fail(why);
                        }
                        slot.changed = true;
                        let plugin = &mut self.plugins[a];
                        plugin.failures += 1;
                        plugin.consecutive_failures += 1;
                        if plugin.of(version).is_poisoned() {
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

    /// Swaps aggregation `a`'s plugin for `new`, a new version of it.
    ///
    /// With the same state format every open window's accumulator moves
    /// across: buffered values are handed to the old instance first, each
    /// accumulator is snapshotted there and restored in `new`. All or
    /// nothing: if any snapshot or restore fails, `new` is dropped and the
    /// old instance keeps serving, with every window as it was. A window
    /// that had already failed for this aggregation keeps its error; a
    /// quarantine ends, since the new version has not failed yet.
    ///
    /// With another state format the old instance retires (see the module
    /// doc): `component` is its code, kept for checkpoints. Refused while an
    /// older version still retires.
    pub fn replace_plugin(
        &mut self,
        a: usize,
        mut new: Box<dyn Aggregation>,
        component: Arc<[u8]>,
    ) -> Result<Swap, String> {
        if a >= self.plugins.len() {
            return Err(format!("no aggregation {a}"));
        }
        self.flush_all();
        let state_version = new.info().state_version;
        if state_version != self.plugins[a].instance.info().state_version {
            return self.retire_plugin(a, new, component);
        }
        let old_label = self.plugins[a].instance.label().to_string();
        let mut moved = Vec::new();
        let ids: Vec<usize> = self.slots.iter().map(|(id, _)| id).collect();
        for id in ids {
            let lane = &self.slots[id].lanes[a];
            let (Ok(acc), Version::Current) = (&lane.acc, lane.version) else {
                continue;
            };
            let bytes = match self.plugins[a].instance.snapshot(*acc) {
                Ok(bytes) => bytes,
                Err(e) => {
                    let why = format!("snapshotting an open window in {old_label} failed: {e}");
                    // The old instance's failure is handled as any other.
                    self.fail(a, Version::Current, Some(id), e);
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
            // The replay log is dropped below.
            self.snapshot_shadow(a, id);
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
        Ok(Swap::Moved(count))
    }

    /// The swap to a version of another state format: the open windows stay
    /// with the old instance, which retires.
    fn retire_plugin(
        &mut self,
        a: usize,
        new: Box<dyn Aggregation>,
        component: Arc<[u8]>,
    ) -> Result<Swap, String> {
        if let Some(r) = &self.plugins[a].retiring {
            return Err(format!(
                "{} still finishes {} open window(s) from before the last reload; a version with \
                 yet another state format can go live once they have closed",
                r.instance.label(),
                r.lanes
            ));
        }
        let outputs = new
            .outputs()
            .iter()
            .map(|o| {
                self.plugins[a]
                    .instance
                    .outputs()
                    .iter()
                    .position(|x| x.name == o.name)
            })
            .collect();
        self.forget_partials(Some(a));
        let plugin = &mut self.plugins[a];
        let old = std::mem::replace(&mut plugin.instance, new);
        plugin.consecutive_failures = 0;
        // A quarantined version's windows have already failed: nothing to finish.
        if plugin.quarantined.take().is_some() {
            return Ok(Swap::SideBySide(0));
        }
        let mut lanes = 0;
        for (_, slot) in self.slots.iter_mut() {
            slot.lanes[a].version = Version::Retiring;
            slot.changed = true;
            lanes += 1;
        }
        if lanes > 0 {
            self.plugins[a].retiring = Some(Retiring {
                instance: old,
                component,
                outputs,
                lanes,
            });
        }
        Ok(Swap::SideBySide(lanes))
    }

    /// Aggregation `a`'s retiring version, if one finishes windows now:
    /// its label and how many windows it holds.
    pub fn retiring(&self, a: usize) -> Option<(&str, usize)> {
        self.plugins[a]
            .retiring
            .as_ref()
            .map(|r| (r.instance.label(), r.lanes))
    }

    /// Aggregation `a`'s running plugin instance.
    pub fn instance(&self, a: usize) -> &dyn Aggregation {
        self.plugins[a].instance.as_ref()
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

    /// Writes into `delta` every slot changed since the last checkpoint and
    /// every record of a slot closed since; returns the number of window
    /// records and the sum of their CRCs once `delta` is committed.
    ///
    /// Every changed accumulator is snapshotted, which also empties its
    /// replay log: the checkpoint and the failure-recovery snapshot are the
    /// same bytes.
    pub fn checkpoint_into(&mut self, delta: &mut WindowDelta) -> Result<(u64, u32), StateError> {
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
                lanes: slot.lanes.iter().map(Lane::state).collect(),
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
        self.retiring_into(delta)?;
        Ok((self.persisted.count, self.persisted.crc_sum))
    }

    /// Writes a record for each retiring version the stored checkpoint does
    /// not hold yet, and deletes those of versions retired since.
    fn retiring_into(&mut self, delta: &mut WindowDelta) -> Result<(), StateError> {
        for (a, plugin) in self.plugins.iter().enumerate() {
            let now = plugin.retiring.as_ref().map(|r| (r, hash(&r.component)));
            let stored = self.persisted.retiring.get(&a).copied();
            match now {
                Some((r, h)) if stored != Some(h) => {
                    let info = r.instance.info();
                    let record = RetiringState {
                        aggregation: a as u32,
                        plugin: info.name.clone(),
                        version: info.version.clone(),
                        state_version: info.state_version,
                        component: r.component.to_vec(),
                    };
                    delta
                        .retiring_put
                        .push((a as u32, encode_record(&record)?.0));
                    self.persisted.retiring.insert(a, h);
                }
                None if stored.is_some() => {
                    delta.retiring_delete.push(a as u32);
                    self.persisted.retiring.remove(&a);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Takes up a checkpoint's retiring version of aggregation `a` (before
    /// any slot is restored), or, with `Err`, why it cannot be run: the
    /// windows that need it then report that.
    pub fn restore_retiring(
        &mut self,
        a: usize,
        instance: Result<Box<dyn Aggregation>, String>,
        component: Arc<[u8]>,
    ) {
        let Some(plugin) = self.plugins.get_mut(a) else {
            return;
        };
        self.persisted.retiring.insert(a, hash(&component));
        match instance {
            Ok(instance) => {
                let outputs = plugin
                    .instance
                    .outputs()
                    .iter()
                    .map(|o| instance.outputs().iter().position(|x| x.name == o.name))
                    .collect();
                plugin.retiring = Some(Retiring {
                    instance,
                    component,
                    outputs,
                    lanes: 0,
                });
            }
            Err(why) => {
                self.unrunnable_retiring.insert(a, Arc::from(why));
            }
        }
    }

    /// After the slots of a checkpoint are restored: a retiring version that
    /// holds none of them goes.
    pub fn restored(&mut self) {
        for a in 0..self.plugins.len() {
            self.retire_if_done(a);
        }
        self.unrunnable_retiring.clear();
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
            let lane = state.lanes.get(a).unwrap_or(&LaneState::Fresh);
            let (own, mut version, shadow) = match lane {
                LaneState::Retiring(own) => (own.as_ref(), Version::Retiring, None),
                LaneState::Shadowed(own, shadow) => {
                    (own.as_ref(), Version::Current, Some(shadow.as_ref()))
                }
                own => (own, Version::Current, None),
            };
            let outcome = self.restore_acc(a, version, own);
            match (version, &mut self.plugins[a].retiring) {
                (Version::Retiring, Some(r)) => r.lanes += 1,
                // Failed above: no instance to route it to.
                (Version::Retiring, None) => version = Version::Current,
                _ => {}
            }
            let mut lane = Lane::new(Err(Arc::from("")));
            lane.version = version;
            self.slots[id].lanes.push(lane);
            match outcome {
                Restoring::Done(acc, snapshot) => {
                    let lane = &mut self.slots[id].lanes[a];
                    lane.acc = Ok(acc);
                    lane.snapshot = snapshot;
                }
                Restoring::Failed(why) => self.slots[id].lanes[a].acc = Err(why),
                Restoring::CallFailed(e) => {
                    self.fail(a, version, Some(id), e);
                    continue;
                }
            }
            let Some(shadow) = shadow else { continue };
            if self.slots[id].lanes[a].acc.is_err() || self.plugins[a].retiring.is_none() {
                continue;
            }
            match self.restore_acc(a, Version::Retiring, shadow) {
                Restoring::Done(acc, snapshot) => {
                    self.slots[id].lanes[a].shadow = Some(Shadow {
                        acc: Ok(acc),
                        snapshot,
                    });
                }
                Restoring::Failed(why) => {
                    self.slots[id].lanes[a].shadow = Some(Shadow {
                        acc: Err(why),
                        snapshot: None,
                    });
                }
                Restoring::CallFailed(e) => self.shadow_failed(a, id, e),
            }
        }
        id
    }

    /// One accumulator of aggregation `a` in `version`, from a checkpoint's `state`.
    fn restore_acc(&mut self, a: usize, version: Version, state: &LaneState) -> Restoring {
        if let LaneState::Failed(why) = state {
            return Restoring::Failed(Arc::from(why.as_str()));
        }
        let plugin = &mut self.plugins[a];
        if let Some(why) = &plugin.quarantined {
            return Restoring::Failed(Arc::clone(why));
        }
        if version == Version::Retiring && plugin.retiring.is_none() {
            return Restoring::Failed(self.unrunnable_retiring.get(&a).cloned().unwrap_or_else(
                || Arc::from("the checkpoint holds this window in a retiring plugin version it did not keep"),
            ));
        }
        let instance = plugin.of(version);
        let state_version = instance.info().state_version;
        let called = match state {
            LaneState::Fresh => instance.create().map(|acc| (acc, None)),
            LaneState::Snapshot(bytes) => instance
                .restore(bytes, state_version)
                .map(|acc| (acc, Some(bytes.clone()))),
            LaneState::Failed(_) | LaneState::Retiring(_) | LaneState::Shadowed(..) => {
                return Restoring::Failed(Arc::from(
                    "the checkpoint record nests one retiring state in another",
                ));
            }
        };
        match called {
            Ok((acc, snapshot)) => Restoring::Done(acc, snapshot),
            Err(e) => Restoring::CallFailed(e),
        }
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
    use crate::plugin::native;

    fn count(store: &mut WindowStore, id: usize) -> Option<f64> {
        store.finish(id).values[0][0]
    }

    #[test]
    fn replace_plugin_moves_every_open_window_or_none() {
        let mut store = WindowStore::new(vec![native::aggregation("count", "{}").unwrap()], 4, 5);
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
                native::aggregation("sum", "{}").unwrap(),
                Arc::from(&[][..]),
            )
            .expect_err("sum cannot restore count's state");
        assert!(refused.contains("corrupt sum state"), "{refused}");
        assert_eq!(store.instance(0).info().name, "count");

        // A fresh count instance takes both windows with what they held.
        assert_eq!(
            store.replace_plugin(
                0,
                native::aggregation("count", "{}").unwrap(),
                Arc::from(&[][..])
            ),
            Ok(Swap::Moved(2))
        );
        store.push(a, &[Some(1.0)], 7);
        assert_eq!(count(&mut store, a), Some(7.0));
        assert_eq!(count(&mut store, b), Some(1.0));
    }
}
