//! Partial aggregates for sliding windows, so that a fired window costs a
//! few plugin calls however many panes it covers.
//!
//! A sliding window of size `W` covers `W / pane` panes (600 for 60 s windows
//! sliding by 100 ms). Merging them all afresh for every window makes the
//! number of plugin `merge` calls per window grow with `W / slide`. Here each
//! key's timeline is cut into blocks of length `W`, aligned like the windows
//! (same offset). A window `[s, s + W)` contains exactly one block boundary
//! `b` in `(s, s + W]`: it is the *suffix* `[s, b)` of one block and the
//! *prefix* `[b, s + W)` of the next (empty when `s` is on a boundary). Per
//! key and aggregation the store keeps, as extra accumulators of the same
//! plugin instance:
//!
//! - `S(t)`, for window starts `t` of a block: the merge of the block's panes
//!   from `t` to the block's end, built right to left, each from the panes of
//!   one slide and `S(t + slide)`;
//! - `P(u)`, for window ends `u` in a block: the merge of the block's panes
//!   from its start to `u`, built left to right from `P(u - slide)`.
//!
//! Each partial costs three calls (create and two merges when a slide holds
//! one pane) and serves one window, whose result is then `S(s)` merged with
//! `P(s + W)` and finished: O(1) calls per window, amortized, whatever
//! `W / slide` is. This is the two-stacks sliding-window aggregation with the
//! stacks cut at fixed block boundaries, so that a change to one pane drops
//! only the partials of its own block that cover it.
//!
//! # Order: a function of the input alone
//!
//! Floating-point merges are not associative, so a result depends on how its
//! merges are grouped, not only on the values. Every settled (on-time or
//! late) sliding-window result is therefore computed by one fixed sequence
//! of plugin calls, the *canonical tree*, which depends only on the window's
//! bounds and the states of its panes:
//!
//! - `S(t) = create; merge the panes of [t, min(t + slide, b)) in time order;
//!   merge S(t + slide)` (the last term absent at the top of the block), for
//!   `t` stepping by `slide` down from the block's end `b` to the window's start;
//! - `P(u) = create; merge P(u - slide); merge the panes of
//!   [max(u - slide, b), u) in time order` (the first term absent at the
//!   bottom), for `u` stepping by `slide` up from the block's start to the
//!   window's end;
//! - the result: `finish S(s)` when `s` is on a boundary; for an on-time
//!   firing, `merge P(e) into S(s); finish`; for a late one, `create;
//!   merge S(s); merge P(e); finish`.
//!
//! Cached partials are only a way of not repeating calls: a cached `S(t)` or
//! `P(u)` is exactly what the tree computes for it now (see Validity), so a
//! result is the same bits whether it was built from the cache, built afresh
//! because nothing was cached (after a restore from a checkpoint, a plugin
//! instance reopened after a failure, the cache switched off or over its
//! memory budget), or half and half. Pane states themselves are a function
//! of the input (values are added one at a time, snapshots restore exactly),
//! so a run restarted from any checkpoint writes the same bytes as one that
//! never stopped, whatever the plugin's memory did in either. Early firings
//! and trigger previews, whose panes still change with nearly every event,
//! merge their panes in one left fold, also a function of the panes alone.
//!
//! **Validity.** A cached partial is always the merge of the current
//! accumulators of the panes it covers: whatever changes a pane (its first
//! buffered value since its last flush, a failure, opening or closing it)
//! drops the partials that cover it, `S(t)` for `t <=` the pane and `P(u)`
//! for `u >` the pane, in the pane's block. Closing a pane also drops the
//! key's older blocks, whose windows are all done. Only settled windows (on
//! time or late, whose panes are behind the watermark) use partials.
//!
//! **Failures, reloads, checkpoints.** A pane that failed for an aggregation
//! makes its windows go the plain way, which reports the failure as before.
//! A failed call on a partial drops the aggregation's partials (rebuilding
//! the instance if the call took it down) and computes the window afresh;
//! after [`FAST_FAILURE_LIMIT`] such failures the aggregation computes every
//! window afresh for the rest of the run. A hot reload or a quarantine drops
//! the partials (they belong to the old instance). Checkpoints do not store
//! them: they are rebuilt lazily after a restore.
//!
//! **Memory.** Per key and aggregation, at most the suffixes of one block
//! (on-time firings consume them) and the prefixes of the windows still
//! within their allowed lateness (an on-time firing drops the older ones):
//! at most `W / slide + lateness / slide + 1` accumulators, about half of
//! that on average, plus what late firings rebuild. When an
//! instance runs out of memory while it holds partials, it is reopened with
//! only the open panes and the aggregation keeps at most half as many
//! partials from then on ([`Partials::budget`]); windows beyond the budget
//! are computed afresh, slower, to the same bits.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::{Accumulator, Outputs, Version, WindowStore};
use crate::decode::KeyId;
use crate::plugin::PluginError;
use crate::plugin::grouped::OutputValue;
use crate::window::{Window, align};

/// Failed calls on partials after which an aggregation stops using them.
pub(crate) const FAST_FAILURE_LIMIT: u32 = 3;

/// How many times one window's result is tried when a call fails for want
/// of memory or the partials change under it (each try after the first
/// follows a reopened instance, whose heap holds only the open panes).
const TRIES: usize = 3;

/// How a sliding window's result is put together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fold {
    /// Merge every pane of the window afresh, in one left fold (the window
    /// is still open: an early firing).
    Panes,
    /// The canonical tree, leaving the partials cached for later firings.
    Partials,
    /// The canonical tree, using up the window's own suffix: its on-time
    /// firing, after which the suffix is only needed again by a late firing.
    PartialsOnce,
}

/// The window geometry partials are cut by, in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    size: i64,
    slide: i64,
    offset: i64,
    /// The allowed lateness: how long after its end a window may fire again.
    lateness: i64,
}

/// One block's partials for one key and aggregation.
#[derive(Debug, Default)]
struct Block {
    /// `S(t)` by window start `t`.
    suffixes: BTreeMap<i64, Accumulator>,
    /// `P(u)` by window end `u`.
    prefixes: BTreeMap<i64, Accumulator>,
}

impl Block {
    fn is_empty(&self) -> bool {
        self.suffixes.is_empty() && self.prefixes.is_empty()
    }

    fn len(&self) -> usize {
        self.suffixes.len() + self.prefixes.len()
    }

    fn drain_into(self, a: usize, out: &mut Vec<(usize, Accumulator)>) {
        out.extend(self.suffixes.into_values().map(|acc| (a, acc)));
        out.extend(self.prefixes.into_values().map(|acc| (a, acc)));
    }
}

/// Per aggregation: key, then block start, then that block's partials.
type Blocks = HashMap<KeyId, BTreeMap<i64, Block>>;

/// The cached partial aggregates of a sliding-window store.
#[derive(Debug, Default)]
pub(crate) struct Partials {
    /// Set for sliding windows with partials switched on.
    geo: Option<Geometry>,
    /// Switched off by [`WindowStore::set_partials`].
    off: bool,
    per_agg: Vec<Blocks>,
    /// Failed calls on partials, per aggregation.
    failures: Vec<u32>,
    /// Partials held, per aggregation.
    held: Vec<usize>,
    /// Most partials an aggregation may hold, set when its instance ran
    /// out of memory while holding them: half of what it held then.
    budget: Vec<Option<usize>>,
}

/// Why a window's result is not (yet) taken from the canonical tree.
enum Fallback {
    /// Its panes say so (one failed): the plain merge reports it as before.
    Plain,
    /// Flushing its panes changed the cached partials (an instance was
    /// reopened for memory): compute it again.
    Again,
    /// A call failed.
    Plugin(PluginError),
}

impl From<PluginError> for Fallback {
    fn from(e: PluginError) -> Self {
        Fallback::Plugin(e)
    }
}

/// An accumulator used in building a result: cached (the cache keeps it)
/// or owned by the computation (released when done with).
#[derive(Debug, Clone, Copy)]
struct Part {
    acc: Accumulator,
    owned: bool,
}

impl Partials {
    fn block_start(geo: Geometry, pane: i64) -> i64 {
        align(pane, geo.size, geo.offset)
    }

    /// Drops the partials covering pane `pane` of `key` (for aggregation `a`,
    /// or all), collecting their accumulators into `stale`.
    fn invalidate(
        &mut self,
        a: Option<usize>,
        key: KeyId,
        pane: i64,
        stale: &mut Vec<(usize, Accumulator)>,
    ) {
        let Some(geo) = self.geo else { return };
        let start = Self::block_start(geo, pane);
        for (i, blocks) in self.per_agg.iter_mut().enumerate() {
            if a.is_some_and(|a| a != i) {
                continue;
            }
            let Some(keyed) = blocks.get_mut(&key) else {
                continue;
            };
            let Some(block) = keyed.get_mut(&start) else {
                continue;
            };
            let before = block.len();
            // Suffixes starting after the pane and prefixes ending at or
            // before it do not cover it. Most calls drop nothing (a pane's
            // first value since a flush, ahead of its block's partials),
            // and a split allocates: split only when something goes.
            if block
                .suffixes
                .first_key_value()
                .is_some_and(|(&s, _)| s <= pane)
            {
                let kept = block.suffixes.split_off(&(pane + 1));
                let dropped = std::mem::replace(&mut block.suffixes, kept);
                stale.extend(dropped.into_values().map(|acc| (i, acc)));
            }
            if block
                .prefixes
                .last_key_value()
                .is_some_and(|(&e, _)| e > pane)
            {
                let dropped = block.prefixes.split_off(&(pane + 1));
                stale.extend(dropped.into_values().map(|acc| (i, acc)));
            }
            self.held[i] -= before - block.len();
            if block.is_empty() {
                keyed.remove(&start);
                if keyed.is_empty() {
                    blocks.remove(&key);
                }
            }
        }
    }

    /// Drops every block of `key` before the one holding `pane` (all of
    /// them with `everything`), collecting their accumulators into `stale`.
    fn drop_before(
        &mut self,
        key: KeyId,
        pane: i64,
        everything: bool,
        stale: &mut Vec<(usize, Accumulator)>,
    ) {
        let Some(geo) = self.geo else { return };
        let start = Self::block_start(geo, pane);
        for (a, blocks) in self.per_agg.iter_mut().enumerate() {
            let Some(keyed) = blocks.get_mut(&key) else {
                continue;
            };
            let old = if everything {
                std::mem::take(keyed)
            } else if keyed.first_key_value().is_some_and(|(&s, _)| s < start) {
                let kept = keyed.split_off(&start);
                std::mem::replace(keyed, kept)
            } else {
                // No block before: nothing to split off (a split allocates).
                BTreeMap::new()
            };
            for block in old.into_values() {
                self.held[a] -= block.len();
                block.drain_into(a, stale);
            }
            if keyed.is_empty() {
                blocks.remove(&key);
            }
        }
    }

    /// Forgets aggregation `a`'s partials without releasing them (their
    /// instance is gone or no longer called); all aggregations' with `None`.
    fn forget(&mut self, a: Option<usize>) {
        for (i, blocks) in self.per_agg.iter_mut().enumerate() {
            if a.is_none_or(|a| a == i) {
                blocks.clear();
                self.held[i] = 0;
            }
        }
    }

    /// Every cached partial, removed.
    fn drain(&mut self) -> Vec<(usize, Accumulator)> {
        let mut all = Vec::new();
        for (a, blocks) in self.per_agg.iter_mut().enumerate() {
            for (_, keyed) in blocks.drain() {
                for block in keyed.into_values() {
                    block.drain_into(a, &mut all);
                }
            }
            self.held[a] = 0;
        }
        all
    }

    fn block(&self, a: usize, key: KeyId, start: i64) -> Option<&Block> {
        self.per_agg.get(a)?.get(&key)?.get(&start)
    }

    fn block_mut(&mut self, a: usize, key: KeyId, start: i64) -> Option<&mut Block> {
        Some(
            self.per_agg
                .get_mut(a)?
                .entry(key)
                .or_default()
                .entry(start)
                .or_default(),
        )
    }

    /// How many more partials aggregation `a` may cache.
    fn room(&self, a: usize) -> usize {
        match (self.budget.get(a), self.held.get(a)) {
            (Some(Some(budget)), Some(&held)) => budget.saturating_sub(held),
            _ => usize::MAX,
        }
    }

    /// Caches `S(t)` (`suffix`) or `P(t)` of `key`'s block `block` for
    /// aggregation `a`.
    fn insert(&mut self, a: usize, key: KeyId, block: i64, t: i64, acc: Accumulator, suffix: bool) {
        if let Some(b) = self.block_mut(a, key, block) {
            let replaced = if suffix {
                b.suffixes.insert(t, acc)
            } else {
                b.prefixes.insert(t, acc)
            };
            // Never one already there: only missing partials are built.
            debug_assert!(replaced.is_none());
            if replaced.is_none() {
                self.held[a] += 1;
            }
        }
    }

    /// Drops aggregation `a`'s prefixes `P(u)` of `key`'s block `block` for
    /// `u < before`, collecting them into `stale`.
    fn trim_prefixes(
        &mut self,
        a: usize,
        key: KeyId,
        block: i64,
        before: i64,
        stale: &mut Vec<(usize, Accumulator)>,
    ) {
        let Some(b) = self
            .per_agg
            .get_mut(a)
            .and_then(|blocks| blocks.get_mut(&key))
            .and_then(|keyed| keyed.get_mut(&block))
        else {
            return;
        };
        let kept = b.prefixes.split_off(&before);
        let dropped = std::mem::replace(&mut b.prefixes, kept);
        self.held[a] -= dropped.len();
        stale.extend(dropped.into_values().map(|acc| (a, acc)));
    }

    /// Takes `S(t)` of `key`'s block `block` for aggregation `a` out of the cache.
    fn take_suffix(&mut self, a: usize, key: KeyId, block: i64, t: i64) {
        let taken = self
            .per_agg
            .get_mut(a)
            .and_then(|blocks| blocks.get_mut(&key))
            .and_then(|keyed| keyed.get_mut(&block))
            .and_then(|b| b.suffixes.remove(&t));
        if taken.is_some() {
            self.held[a] -= 1;
        }
    }

    /// How many partial accumulators are cached, over all keys and aggregations.
    fn len(&self) -> usize {
        self.held.iter().sum()
    }
}

impl WindowStore {
    /// Keeps partial aggregates for sliding windows of `size` every `slide`
    /// with `lateness` allowed (see the module doc); called once by the
    /// operator of a sliding window.
    pub fn use_partials(&mut self, size: i64, slide: i64, offset: i64, lateness: i64) {
        if size > 0 && slide > 0 {
            self.partials.geo = Some(Geometry {
                size,
                slide,
                offset,
                lateness: lateness.max(0),
            });
            let n = self.plugins.len();
            self.partials.per_agg = (0..n).map(|_| Blocks::new()).collect();
            self.partials.failures = vec![0; n];
            self.partials.held = vec![0; n];
            self.partials.budget = vec![None; n];
        }
    }

    /// Switches partial aggregates on (the default) or off; off, every
    /// firing computes its canonical tree afresh: the same results, more
    /// slowly, which the tests check.
    pub fn set_partials(&mut self, on: bool) {
        self.partials.off = !on;
        if !on {
            let stale = self.partials.drain();
            self.release_partials(stale);
        }
    }

    /// How many partial accumulators are held now (for tests and memory).
    pub fn partials_held(&self) -> usize {
        self.partials.len()
    }

    /// Aggregation `a`'s instance ran out of memory: from now on it keeps
    /// at most half the partials it held (at least one block's worth is
    /// no use then: the budget may be zero). Returns that budget, if the
    /// aggregation held any partials.
    pub(super) fn halve_partials(&mut self, a: usize) -> Option<usize> {
        let held = *self.partials.held.get(a)?;
        let budget = self.partials.budget.get_mut(a)?;
        let halved = budget.map_or(held, |b| b.min(held)) / 2;
        *budget = Some(halved);
        Some(halved)
    }

    /// Drops the partials covering `key`'s pane starting at `pane`, for
    /// aggregation `a` or all: the pane changed.
    pub(super) fn pane_changed(&mut self, a: Option<usize>, key: KeyId, pane: i64) {
        if self.partials.geo.is_none() {
            return;
        }
        let mut stale = Vec::new();
        self.partials.invalidate(a, key, pane, &mut stale);
        self.release_partials(stale);
    }

    /// A pane of `key` starting at `pane` closed: its partials and those of
    /// the key's older blocks go (all of the key's when it has no pane left).
    pub(super) fn pane_closed(&mut self, key: KeyId, pane: i64) {
        if self.partials.geo.is_none() {
            return;
        }
        let mut stale = Vec::new();
        self.partials.invalidate(None, key, pane, &mut stale);
        let last = !self.by_key.contains_key(&key);
        self.partials.drop_before(key, pane, last, &mut stale);
        self.release_partials(stale);
    }

    /// Forgets aggregation `a`'s partials (all with `None`) without calling
    /// the plugin: its instance was replaced or is no longer called.
    pub(super) fn forget_partials(&mut self, a: Option<usize>) {
        self.partials.forget(a);
    }

    /// Releases every partial (the store is being emptied).
    pub(super) fn drop_partials(&mut self) {
        let stale = self.partials.drain();
        self.release_partials(stale);
    }

    fn release_partials(&mut self, stale: Vec<(usize, Accumulator)>) {
        for (a, acc) in stale {
            self.release_scratch(a, acc);
        }
    }

    /// Gives back an accumulator of aggregation `a`'s current instance that
    /// no window holds (a partial, a scratch). A failed release only leaks
    /// guest memory; a trap is handled (and the instance rebuilt) as any
    /// failed call.
    fn release_scratch(&mut self, a: usize, acc: Accumulator) {
        let plugin = &mut self.plugins[a];
        if plugin.quarantined.is_some() || plugin.instance.is_poisoned() {
            return;
        }
        if let Err(e) = plugin.instance.release(acc) {
            if self.plugins[a].instance.is_poisoned() {
                self.partial_failed(a, e);
            } else {
                tracing::warn!(
                    aggregation = %self.name(a),
                    "releasing a partial aggregate: {e}"
                );
            }
        }
    }

    /// The result of `key`'s sliding window `window`, or `None` when it has
    /// no pane. `fold` says how (see the module doc).
    pub fn finish_window(&mut self, key: KeyId, window: Window, fold: Fold) -> Option<Outputs> {
        let has_pane = self.by_key.get(&key).is_some_and(|map| {
            window.start < window.end && map.range(window.start..window.end).next().is_some()
        });
        if !has_pane {
            return None;
        }
        let geo = match (self.partials.geo, fold) {
            (Some(geo), Fold::Partials | Fold::PartialsOnce) => geo,
            _ => {
                let panes = self.range(key, window.start, window.end);
                return Some(self.finish_merged(&panes));
            }
        };
        let mut out = Outputs {
            values: Vec::with_capacity(self.plugins.len()),
            errors: Vec::new(),
        };
        for a in 0..self.plugins.len() {
            let values = self.settled_result(a, key, window, geo, fold == Fold::PartialsOnce);
            self.push_outputs(&mut out, a, values);
        }
        Some(out)
    }

    /// Aggregation `a`'s result for the settled `window` of `key`: its
    /// canonical tree (see the module doc), from cached partials where they
    /// are, afresh where not.
    fn settled_result(
        &mut self,
        a: usize,
        key: KeyId,
        window: Window,
        geo: Geometry,
        consume: bool,
    ) -> Result<Vec<Option<OutputValue>>, Arc<str>> {
        // A quarantined plugin is not called: the plain way reports the same
        // error as before. A window holding panes of a retiring version
        // finishes there, by the plain way.
        if self.plugins[a].quarantined.is_some() || self.window_retires(a, key, window) {
            return self.merged_panes(a, key, window);
        }
        let mut recovered = false;
        // Partials live in the current version only: while an older
        // version retires, every window is computed afresh.
        let mut cache = !self.partials.off
            && self.plugins[a].retiring.is_none()
            && self
                .partials
                .failures
                .get(a)
                .is_some_and(|&n| n < FAST_FAILURE_LIMIT);
        for _ in 0..TRIES {
            match self.canonical(a, key, window, geo, consume, cache) {
                Ok(values) => {
                    self.plugins[a].consecutive_failures = 0;
                    return Ok(values);
                }
                Err(Fallback::Plain) => return self.merged_panes(a, key, window),
                Err(Fallback::Again) => {}
                Err(Fallback::Plugin(e)) if cache => {
                    // This window afresh: the same calls, none of them on
                    // the partials that may be what failed.
                    self.partial_failed(a, e);
                    cache = false;
                }
                Err(Fallback::Plugin(e)) => {
                    if recovered || !self.recover_memory(a, Version::Current, &e) {
                        return Err(self.fail(a, Version::Current, None, e));
                    }
                    recovered = true;
                }
            }
        }
        Err(Arc::from(format!(
            "plugin {}: the window's partial aggregates kept changing while it was computed",
            self.plugins[a].instance.label()
        )))
    }

    /// Whether any pane of `key` in `window` holds aggregation `a` in its
    /// retiring version.
    fn window_retires(&self, a: usize, key: KeyId, window: Window) -> bool {
        self.plugins[a].retiring.is_some()
            && self.range(key, window.start, window.end).iter().any(|&id| {
                self.slots
                    .get(id)
                    .is_some_and(|s| s.lanes[a].version == Version::Retiring)
            })
    }

    /// Aggregation `a`'s result for `window`, merging its panes afresh in
    /// one left fold: early firings, and windows whose panes report a
    /// failure or finish in a retiring version.
    fn merged_panes(
        &mut self,
        a: usize,
        key: KeyId,
        window: Window,
    ) -> Result<Vec<Option<OutputValue>>, Arc<str>> {
        let panes = self.range(key, window.start, window.end);
        for &id in &panes {
            self.flush(id);
        }
        self.merge_panes(a, &panes)
    }

    /// A call on a partial failed: counted apart from the plugin's failures
    /// (the computation afresh that follows counts if it fails too); the
    /// instance is rebuilt if the call took it down, and every partial of
    /// the aggregation goes with it.
    fn partial_failed(&mut self, a: usize, e: PluginError) {
        if let Some(n) = self.partials.failures.get_mut(a) {
            *n += 1;
        }
        if self.plugins[a].instance.out_of_memory().is_some() {
            // Not the plugin's fault: `recover_memory` says what to raise.
            self.recover_memory(a, Version::Current, &e);
            return;
        }
        tracing::warn!(
            aggregation = %self.name(a),
            "aggregation `{}`: a partial aggregate failed ({e}); computing the window afresh",
            self.name(a)
        );
        if self
            .partials
            .failures
            .get(a)
            .is_some_and(|&n| n >= FAST_FAILURE_LIMIT)
        {
            tracing::warn!(
                aggregation = %self.name(a),
                "aggregation `{}`: partial aggregates failed {FAST_FAILURE_LIMIT} times: \
                 computing every window afresh for the rest of the run (same results, slower)",
                self.name(a)
            );
        }
        // Cached partials are only read by calls (merged from, or taken
        // out of the cache before being merged into), so a failure that
        // leaves the instance up leaves them whole.
        let plugin = &self.plugins[a];
        if plugin.quarantined.is_none() && plugin.instance.is_poisoned() {
            self.rebuild(a, Version::Current, &e.to_string());
        }
    }

    /// Aggregation `a`'s canonical tree for `window`: `S(start)` merged with
    /// `P(end)` and finished. With `cache`, partials are taken from the
    /// cache and the ones built are kept there (as the budget allows);
    /// without, everything is built afresh and released.
    fn canonical(
        &mut self,
        a: usize,
        key: KeyId,
        window: Window,
        geo: Geometry,
        consume: bool,
        cache: bool,
    ) -> Result<Vec<Option<OutputValue>>, Fallback> {
        // Every pane flushed first: a flush that reopens the instance (for
        // memory) then happens before any partial of this window is held.
        self.ready_panes(a, key, window.start, window.end)?;
        let block = Partials::block_start(geo, window.start);
        let boundary = block + geo.size;
        let suffix = self.suffix(a, key, block, window.start, geo, cache)?;
        let prefix = if boundary < window.end {
            match self.prefix(a, key, boundary, window.end, geo, cache) {
                Ok(prefix) => Some(prefix),
                Err(e) => {
                    self.give_back(a, suffix);
                    return Err(e);
                }
            }
        } else {
            None
        };
        let values = match prefix {
            None => {
                let values = self.plugins[a].instance.finish(suffix.acc);
                self.give_back(a, suffix);
                values?
            }
            Some(prefix) if consume => {
                // `S(start)` becomes the whole window: out of the cache first,
                // so that a failure cannot leave it there half merged.
                if !suffix.owned {
                    self.partials.take_suffix(a, key, block, window.start);
                }
                let instance = &mut self.plugins[a].instance;
                let values = instance
                    .merge(suffix.acc, prefix.acc)
                    .and_then(|()| instance.finish(suffix.acc));
                self.give_back(
                    a,
                    Part {
                        acc: suffix.acc,
                        owned: true,
                    },
                );
                self.give_back(a, prefix);
                // An on-time firing: the prefixes of windows that ended more
                // than the allowed lateness ago serve no firing any more, and
                // the next prefix is built from this window's.
                let mut stale = Vec::new();
                self.partials.trim_prefixes(
                    a,
                    key,
                    boundary,
                    window.end.saturating_sub(geo.lateness),
                    &mut stale,
                );
                self.release_partials(stale);
                values?
            }
            Some(prefix) => {
                let instance = &mut self.plugins[a].instance;
                let scratch = match instance.create() {
                    Ok(scratch) => scratch,
                    Err(e) => {
                        self.give_back(a, suffix);
                        self.give_back(a, prefix);
                        return Err(e.into());
                    }
                };
                let values = instance
                    .merge(scratch, suffix.acc)
                    .and_then(|()| instance.merge(scratch, prefix.acc))
                    .and_then(|()| instance.finish(scratch));
                self.give_back(
                    a,
                    Part {
                        acc: scratch,
                        owned: true,
                    },
                );
                self.give_back(a, suffix);
                self.give_back(a, prefix);
                values?
            }
        };
        Ok(values)
    }

    /// Releases `part` if the computation owns it (the cache keeps the others).
    fn give_back(&mut self, a: usize, part: Part) {
        if part.owned {
            self.release_scratch(a, part.acc);
        }
    }

    /// Flushes `key`'s panes in `[from, to)` and checks that none failed for
    /// aggregation `a`.
    fn ready_panes(&mut self, a: usize, key: KeyId, from: i64, to: i64) -> Result<(), Fallback> {
        let ids = self.range(key, from, to);
        for &id in &ids {
            self.flush(id);
        }
        let failed = ids
            .iter()
            .any(|&id| self.slots.get(id).is_some_and(|s| s.lanes[a].acc.is_err()));
        if failed {
            return Err(Fallback::Plain);
        }
        Ok(())
    }

    /// Aggregation `a`'s accumulators of `key`'s panes in `[from, to)`, in order.
    fn pane_accs(
        &self,
        a: usize,
        key: KeyId,
        from: i64,
        to: i64,
    ) -> Result<Vec<Accumulator>, Fallback> {
        let mut accs = Vec::new();
        if let Some(map) = self.by_key.get(&key) {
            for (_, &id) in map.range(from..to) {
                match self.slots.get(id).map(|s| &s.lanes[a].acc) {
                    Some(Ok(acc)) => accs.push(*acc),
                    Some(Err(_)) => return Err(Fallback::Plain),
                    None => {}
                }
            }
        }
        Ok(accs)
    }

    /// A new accumulator holding `first` (if any) then `rest`, in that order.
    fn fold_new(
        &mut self,
        a: usize,
        first: &[Accumulator],
        rest: &[Accumulator],
    ) -> Result<Accumulator, Fallback> {
        let instance = &mut self.plugins[a].instance;
        let acc = instance.create()?;
        let mut merged = Ok(());
        for &from in first.iter().chain(rest) {
            merged = instance.merge(acc, from);
            if merged.is_err() {
                break;
            }
        }
        if let Err(e) = merged {
            if !instance.is_poisoned() {
                let _ = instance.release(acc);
            }
            return Err(Fallback::Plugin(e));
        }
        Ok(acc)
    }

    /// One step of a chain: the new partial from `panes` and `next` (the
    /// partial before it in the chain, merged after the panes for a suffix
    /// and before them for a prefix), cached at `t` if `cache`; `next` is
    /// given back if the computation owned it.
    #[allow(clippy::too_many_arguments)] // one step of two chains that differ only in order
    fn chain_step(
        &mut self,
        a: usize,
        key: KeyId,
        block: i64,
        t: i64,
        panes: &[Accumulator],
        next: Option<Part>,
        cache: bool,
        suffix: bool,
    ) -> Result<Part, Fallback> {
        let previous: Vec<Accumulator> = next.iter().map(|p| p.acc).collect();
        let built = if suffix {
            self.fold_new(a, panes, &previous)
        } else {
            self.fold_new(a, &previous, panes)
        };
        if let Some(next) = next {
            self.give_back(a, next);
        }
        let acc = built?;
        if cache {
            self.partials.insert(a, key, block, t, acc, suffix);
            Ok(Part { acc, owned: false })
        } else {
            Ok(Part { acc, owned: true })
        }
    }

    /// `S(start)` of block `block` for aggregation `a` of `key`: with
    /// `cache`, built from the nearest cached suffix to its right (or the
    /// block's end); without, from the block's end.
    #[allow(clippy::too_many_arguments)] // the window's coordinates, and whether to cache
    fn suffix(
        &mut self,
        a: usize,
        key: KeyId,
        block: i64,
        start: i64,
        geo: Geometry,
        cache: bool,
    ) -> Result<Part, Fallback> {
        let end = block + geo.size;
        let nearest = |p: &Partials| -> (Option<Accumulator>, i64, Option<Accumulator>) {
            if !cache {
                return (None, end, None);
            }
            let b = p.block(a, key, block);
            let exact = b.and_then(|b| b.suffixes.get(&start)).copied();
            let right = b.and_then(|b| b.suffixes.range(start + 1..).next());
            (
                exact,
                right.map_or(end, |(&t, _)| t),
                right.map(|(_, &acc)| acc),
            )
        };
        let (exact, upper, _) = nearest(&self.partials);
        if let Some(acc) = exact {
            return Ok(Part { acc, owned: false });
        }
        self.ready_panes(a, key, start, upper)?;
        // Flushing can change the partials (a pane that failed, an instance
        // reopened for memory): start over then.
        let (exact, again, above) = nearest(&self.partials);
        if exact.is_some() || again != upper {
            return Err(Fallback::Again);
        }
        let mut above = above.map(|acc| Part { acc, owned: false });
        let mut upper = upper;
        // The window starts in [start, upper), right to left.
        let mut t = start + (upper - 1 - start) / geo.slide * geo.slide;
        // Within a memory budget, the partials cached are those needed
        // soonest: the leftmost, which the next windows start at.
        let steps = usize::try_from((t - start) / geo.slide + 1).unwrap_or(usize::MAX);
        let mut uncached = steps.saturating_sub(self.partials.room(a));
        loop {
            let keep = cache && uncached == 0;
            uncached = uncached.saturating_sub(1);
            let panes = match self.pane_accs(a, key, t, upper) {
                Ok(panes) => panes,
                Err(e) => {
                    if let Some(p) = above {
                        self.give_back(a, p);
                    }
                    return Err(e);
                }
            };
            let part = self.chain_step(a, key, block, t, &panes, above, keep, true)?;
            if t - geo.slide < start {
                return Ok(part);
            }
            above = Some(part);
            upper = t;
            t -= geo.slide;
        }
    }

    /// `P(end)` of the block starting at `block` for aggregation `a` of
    /// `key`: with `cache`, built from the nearest cached prefix to its
    /// left (or the block's start); without, from the block's start.
    #[allow(clippy::too_many_arguments)] // the window's coordinates, and whether to cache
    fn prefix(
        &mut self,
        a: usize,
        key: KeyId,
        block: i64,
        end: i64,
        geo: Geometry,
        cache: bool,
    ) -> Result<Part, Fallback> {
        let nearest = |p: &Partials| -> (Option<Accumulator>, i64, Option<Accumulator>) {
            if !cache {
                return (None, block, None);
            }
            let b = p.block(a, key, block);
            let exact = b.and_then(|b| b.prefixes.get(&end)).copied();
            let left = b.and_then(|b| b.prefixes.range(..end).next_back());
            (
                exact,
                left.map_or(block, |(&u, _)| u),
                left.map(|(_, &acc)| acc),
            )
        };
        let (exact, lower, _) = nearest(&self.partials);
        if let Some(acc) = exact {
            return Ok(Part { acc, owned: false });
        }
        self.ready_panes(a, key, lower, end)?;
        let (exact, again, below) = nearest(&self.partials);
        if exact.is_some() || again != lower {
            return Err(Fallback::Again);
        }
        let mut below = below.map(|acc| Part { acc, owned: false });
        let mut lower = lower;
        // The window ends in (lower, end], left to right.
        let mut u = end - (end - lower - 1) / geo.slide * geo.slide;
        // Within a memory budget, the rightmost are cached: the next
        // prefix is built from the last.
        let steps = usize::try_from((end - u) / geo.slide + 1).unwrap_or(usize::MAX);
        let mut uncached = steps.saturating_sub(self.partials.room(a));
        loop {
            let keep = cache && uncached == 0;
            uncached = uncached.saturating_sub(1);
            let panes = match self.pane_accs(a, key, lower, u) {
                Ok(panes) => panes,
                Err(e) => {
                    if let Some(p) = below {
                        self.give_back(a, p);
                    }
                    return Err(e);
                }
            };
            let part = self.chain_step(a, key, block, u, &panes, below, keep, false)?;
            if u >= end {
                return Ok(part);
            }
            below = Some(part);
            lower = u;
            u += geo.slide;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::grouped::PerWindow;
    use crate::plugin::native;

    const KEY: KeyId = 7;

    /// Adds one value at `time` to the 100 ms pane holding it.
    fn add(store: &mut WindowStore, time: i64) {
        let start = time - time.rem_euclid(100);
        let id = match store.find(KEY, start) {
            Some(id) => id,
            None => store.open(
                KEY,
                Window {
                    start,
                    end: start + 100,
                },
            ),
        };
        store.push(id, &[Some(1.0)], time);
    }

    /// The count of the 1 s window starting at `start`.
    fn count(store: &mut WindowStore, start: i64, fold: Fold) -> Option<f64> {
        let window = Window {
            start,
            end: start + 1_000,
        };
        store
            .finish_window(KEY, window, fold)
            .expect("has panes")
            .values[0][0]
            .as_ref()?
            .number()
    }

    #[test]
    fn partials_follow_pane_changes_reloads_and_closes() {
        // Batches of one value: every push is handed to the plugin at once.
        let mut store = WindowStore::new(
            vec![PerWindow::boxed(
                native::aggregation("count", "{}").unwrap(),
            )],
            1,
            5,
        );
        // 1 s windows every 100 ms: ten panes per window, blocks of 1 s.
        store.use_partials(1_000, 100, 0, 10_000);
        for t in (0..2_000).step_by(100) {
            add(&mut store, t);
        }
        // [300, 1300) = S(300) of block 0 (suffixes 300..900 built: 7)
        // and P(1300) of block 1000 (prefixes 1100, 1200, 1300: 3).
        assert_eq!(count(&mut store, 300, Fold::Partials), Some(10.0));
        assert_eq!(store.partials_held(), 10);
        // The plain merge agrees.
        assert_eq!(count(&mut store, 300, Fold::Panes), Some(10.0));

        // A value in pane 500 drops S(300), S(400), S(500) and nothing else.
        add(&mut store, 550);
        assert_eq!(store.partials_held(), 7);
        assert_eq!(count(&mut store, 300, Fold::Partials), Some(11.0));
        assert_eq!(store.partials_held(), 10);

        // An on-time firing uses up its suffix: P(1400..1600) built, S(600) gone.
        assert_eq!(count(&mut store, 600, Fold::PartialsOnce), Some(10.0));
        assert_eq!(store.partials_held(), 12);
        // Fired again (late), S(600) is rebuilt from S(700).
        assert_eq!(count(&mut store, 600, Fold::Partials), Some(10.0));
        assert_eq!(store.partials_held(), 13);

        // A window on a block boundary is one suffix, kept after firing.
        assert_eq!(count(&mut store, 1_000, Fold::PartialsOnce), Some(10.0));
        assert_eq!(store.partials_held(), 23);

        // A new pane inside folded ranges drops what covers it.
        let mut fresh = WindowStore::new(
            vec![PerWindow::boxed(
                native::aggregation("count", "{}").unwrap(),
            )],
            1,
            5,
        );
        fresh.use_partials(1_000, 100, 0, 10_000);
        add(&mut fresh, 100);
        add(&mut fresh, 900);
        add(&mut fresh, 1_200);
        assert_eq!(count(&mut fresh, 100, Fold::Partials), Some(2.0));
        add(&mut fresh, 450);
        add(&mut fresh, 1_050);
        assert_eq!(count(&mut fresh, 100, Fold::Partials), Some(4.0));

        // A hot reload drops the partials: they lived in the old instance.
        assert_eq!(
            store.replace_plugin(
                0,
                PerWindow::boxed(native::aggregation("count", "{}").unwrap()),
                std::sync::Arc::from(&[][..])
            ),
            Ok(super::super::Swap::Moved(20))
        );
        assert_eq!(store.partials_held(), 0);
        assert_eq!(count(&mut store, 300, Fold::Partials), Some(11.0));
        assert!(store.partials_held() > 0);

        // Closing panes in time order drops their block's covering partials
        // and the older blocks; the last pane takes the rest.
        for t in (0..1_000).step_by(100) {
            let id = store.find(KEY, t).expect("open pane");
            store.close(id);
        }
        let held = store.partials_held();
        assert!(held <= 10, "{held} partials after block 0 closed");
        for t in (1_000..2_000).step_by(100) {
            let id = store.find(KEY, t).expect("open pane");
            store.close(id);
        }
        assert_eq!(store.partials_held(), 0);

        // Switched off, nothing is cached.
        fresh.set_partials(false);
        assert_eq!(fresh.partials_held(), 0);
        assert_eq!(count(&mut fresh, 100, Fold::Partials), Some(4.0));
        assert_eq!(fresh.partials_held(), 0);
    }
}
