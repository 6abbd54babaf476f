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
//! **Order.** Panes are folded in time order (a suffix before a prefix, each
//! pane before the partial after it), so plugins whose merge is not
//! commutative give what the plain merge gives. The grouping differs from the
//! plain left fold, which the associativity required of mergeable plugins
//! allows; merges that are exact (counts, integer sums, min, max, sketch bins)
//! give identical numbers, floating-point moments may differ in the last bits
//! (as merged panes already do from a single accumulator).
//!
//! **Validity.** A cached partial is always the merge of the current
//! accumulators of the panes it covers: whatever changes a pane (its first
//! buffered value since its last flush, a failure, opening or closing it)
//! drops the partials that cover it, `S(t)` for `t <=` the pane and `P(u)`
//! for `u >` the pane, in the pane's block. Closing a pane also drops the
//! key's older blocks, whose windows are all done. Only settled windows (on
//! time or late, whose panes are behind the watermark) use partials; early
//! firings and trigger previews merge their panes as before, since those
//! panes still change with nearly every event.
//!
//! **Failures, reloads, checkpoints.** A pane that failed for an aggregation
//! makes its windows go the plain way, which reports the failure as before.
//! A failed call on a partial falls back to the plain merge for that window
//! (after rebuilding the instance if the call took it down, which drops all
//! partials); after [`FAST_FAILURE_LIMIT`] such failures the aggregation
//! keeps to the plain merge for the rest of the run. A hot reload or a
//! quarantine drops the partials (they belong to the old instance).
//! Checkpoints do not store them: they are rebuilt lazily after a restore.
//!
//! **Memory.** Per key and aggregation, at most the suffixes of one block
//! and the prefixes of the blocks whose panes are open: about `2 W / slide`
//! accumulators with no allowed lateness (on-time firings consume their
//! suffix), plus `lateness / slide` more per extra block kept open.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::{Outputs, WindowStore};
use crate::decode::KeyId;
use crate::plugin::{AccumulatorHandle as Accumulator, PluginError};
use crate::window::{Window, align};

/// Failed calls on partials after which an aggregation stops using them.
pub(crate) const FAST_FAILURE_LIMIT: u32 = 3;

/// How a sliding window's result is put together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fold {
    /// Merge every pane of the window afresh (the window is still open).
    Panes,
    /// From partials, leaving them cached for later firings.
    Partials,
    /// From partials, using up the window's own suffix: its on-time firing,
    /// after which the suffix is only needed again by a late firing.
    PartialsOnce,
}

/// The window geometry partials are cut by, in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    size: i64,
    slide: i64,
    offset: i64,
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
}

/// Why a window's result is not taken from partials.
enum Fallback {
    /// Its panes say so (one failed): the plain merge reports it as before.
    Plain,
    /// A call on a partial failed.
    Plugin(PluginError),
}

impl From<PluginError> for Fallback {
    fn from(e: PluginError) -> Self {
        Fallback::Plugin(e)
    }
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
            // Suffixes starting after the pane and prefixes ending at or
            // before it do not cover it.
            let kept = block.suffixes.split_off(&(pane + 1));
            let dropped = std::mem::replace(&mut block.suffixes, kept);
            stale.extend(dropped.into_values().map(|acc| (i, acc)));
            let dropped = block.prefixes.split_off(&(pane + 1));
            stale.extend(dropped.into_values().map(|acc| (i, acc)));
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
            } else {
                let kept = keyed.split_off(&start);
                std::mem::replace(keyed, kept)
            };
            for block in old.into_values() {
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

    /// How many partial accumulators are cached, over all keys and aggregations.
    fn len(&self) -> usize {
        self.per_agg
            .iter()
            .flat_map(|blocks| blocks.values())
            .flat_map(|keyed| keyed.values())
            .map(|b| b.suffixes.len() + b.prefixes.len())
            .sum()
    }
}

impl WindowStore {
    /// Keeps partial aggregates for sliding windows of `size` every `slide`
    /// (see the module doc); called once by the operator of a sliding window.
    pub fn use_partials(&mut self, size: i64, slide: i64, offset: i64) {
        if size > 0 && slide > 0 {
            self.partials.geo = Some(Geometry {
                size,
                slide,
                offset,
            });
            self.partials.per_agg = (0..self.plugins.len()).map(|_| Blocks::new()).collect();
            self.partials.failures = vec![0; self.plugins.len()];
        }
    }

    /// Switches partial aggregates on (the default) or off; off, every
    /// firing merges all of its window's panes afresh, which gives the same
    /// results more slowly: the reference the tests compare against.
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
            let plugin = &mut self.plugins[a];
            if plugin.quarantined.is_some() || plugin.instance.is_poisoned() {
                continue;
            }
            // A failed release only leaks guest memory; a trap is handled
            // (and the instance rebuilt) as any failed call.
            if let Err(e) = plugin.instance.release(acc) {
                if self.plugins[a].instance.is_poisoned() {
                    self.partial_failed(a, e);
                } else {
                    tracing::warn!(aggregation = a, "releasing a partial aggregate: {e}");
                }
            }
        }
    }

    /// The result of `key`'s sliding window `window`, or `None` when it has
    /// no pane. `fold` says whether partials may be used.
    pub fn finish_window(&mut self, key: KeyId, window: Window, fold: Fold) -> Option<Outputs> {
        let has_pane = self.by_key.get(&key).is_some_and(|map| {
            window.start < window.end && map.range(window.start..window.end).next().is_some()
        });
        if !has_pane {
            return None;
        }
        let geo = match (self.partials.geo, fold) {
            (Some(geo), Fold::Partials | Fold::PartialsOnce) if !self.partials.off => geo,
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
            // A quarantined plugin is not called; the plain way reports
            // the same error as before (a pane's own, or the quarantine).
            // While an older version retires, some windows finish there:
            // partials (current version only) wait until it has gone.
            let fast = self.plugins[a].quarantined.is_none()
                && self.plugins[a].retiring.is_none()
                && self
                    .partials
                    .failures
                    .get(a)
                    .is_some_and(|&n| n < FAST_FAILURE_LIMIT);
            let values = if fast {
                match self.result_from_partials(a, key, window, geo, fold == Fold::PartialsOnce) {
                    Ok(values) => {
                        self.plugins[a].consecutive_failures = 0;
                        Ok(values)
                    }
                    Err(Fallback::Plain) => self.merged_panes(a, key, window),
                    Err(Fallback::Plugin(e)) => {
                        self.partial_failed(a, e);
                        self.merged_panes(a, key, window)
                    }
                }
            } else {
                self.merged_panes(a, key, window)
            };
            self.push_outputs(&mut out, a, values);
        }
        Some(out)
    }

    /// Aggregation `a`'s result for `window`, merging its panes afresh.
    fn merged_panes(
        &mut self,
        a: usize,
        key: KeyId,
        window: Window,
    ) -> Result<Vec<Option<f64>>, Arc<str>> {
        let panes = self.range(key, window.start, window.end);
        for &id in &panes {
            self.flush(id);
        }
        self.merge_panes(a, &panes)
    }

    /// A call on a partial failed: counted apart from the plugin's failures
    /// (the plain merge that follows counts if it fails too); the instance is
    /// rebuilt if the call took it down.
    fn partial_failed(&mut self, a: usize, e: PluginError) {
        if let Some(n) = self.partials.failures.get_mut(a) {
            *n += 1;
        }
        tracing::warn!(
            aggregation = a,
            "a partial aggregate failed ({e}); merging the window's panes instead"
        );
        if self
            .partials
            .failures
            .get(a)
            .is_some_and(|&n| n >= FAST_FAILURE_LIMIT)
        {
            tracing::warn!(
                aggregation = a,
                "partial aggregates failed {FAST_FAILURE_LIMIT} times: merging panes for the rest of the run"
            );
        }
        let plugin = &self.plugins[a];
        if plugin.quarantined.is_none() && plugin.instance.is_poisoned() {
            self.rebuild(a, super::Version::Current, &e.to_string());
        }
    }

    /// Aggregation `a`'s result for `window` from `S(start)` and `P(end)`.
    fn result_from_partials(
        &mut self,
        a: usize,
        key: KeyId,
        window: Window,
        geo: Geometry,
        consume: bool,
    ) -> Result<Vec<Option<f64>>, Fallback> {
        let block = Partials::block_start(geo, window.start);
        let boundary = block + geo.size;
        let suffix = self.suffix(a, key, block, window.start, geo)?;
        let prefix = if boundary < window.end {
            Some(self.prefix(a, key, boundary, window.end, geo)?)
        } else {
            None
        };
        let instance = &mut self.plugins[a].instance;
        match prefix {
            None => Ok(instance.finish(suffix)?),
            Some(prefix) if consume => {
                // `S(start)` becomes the whole window: out of the cache first,
                // so that a failure cannot leave it there half merged.
                if let Some(b) = self.partials.block_mut(a, key, block) {
                    b.suffixes.remove(&window.start);
                }
                let instance = &mut self.plugins[a].instance;
                let values = instance
                    .merge(suffix, prefix)
                    .and_then(|()| instance.finish(suffix));
                if !instance.is_poisoned() {
                    instance.release(suffix)?;
                }
                Ok(values?)
            }
            Some(prefix) => {
                let scratch = instance.create()?;
                let values = instance
                    .merge(scratch, suffix)
                    .and_then(|()| instance.merge(scratch, prefix))
                    .and_then(|()| instance.finish(scratch));
                if !instance.is_poisoned() {
                    instance.release(scratch)?;
                }
                Ok(values?)
            }
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

    /// `S(start)` of block `block` for aggregation `a` of `key`: built from
    /// the nearest cached suffix to its right (or the block's end).
    fn suffix(
        &mut self,
        a: usize,
        key: KeyId,
        block: i64,
        start: i64,
        geo: Geometry,
    ) -> Result<Accumulator, Fallback> {
        let end = block + geo.size;
        let nearest = |p: &Partials| -> (Option<Accumulator>, i64, Option<Accumulator>) {
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
            return Ok(acc);
        }
        self.ready_panes(a, key, start, upper)?;
        // Flushing can drop partials (a pane that failed): start over then.
        let (exact, again, mut above) = nearest(&self.partials);
        if exact.is_some() || again != upper {
            return Err(Fallback::Plain);
        }
        let mut upper = upper;
        // The window starts in [start, upper), right to left.
        let mut t = start + (upper - 1 - start) / geo.slide * geo.slide;
        loop {
            let panes = self.pane_accs(a, key, t, upper)?;
            let acc = self.fold_new(a, &panes, above.as_slice())?;
            if let Some(b) = self.partials.block_mut(a, key, block) {
                b.suffixes.insert(t, acc);
            }
            above = Some(acc);
            upper = t;
            if t - geo.slide < start {
                return Ok(acc);
            }
            t -= geo.slide;
        }
    }

    /// `P(end)` of the block starting at `block` for aggregation `a` of
    /// `key`: built from the nearest cached prefix to its left (or the
    /// block's start).
    fn prefix(
        &mut self,
        a: usize,
        key: KeyId,
        block: i64,
        end: i64,
        geo: Geometry,
    ) -> Result<Accumulator, Fallback> {
        let nearest = |p: &Partials| -> (Option<Accumulator>, i64, Option<Accumulator>) {
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
            return Ok(acc);
        }
        self.ready_panes(a, key, lower, end)?;
        let (exact, again, mut below) = nearest(&self.partials);
        if exact.is_some() || again != lower {
            return Err(Fallback::Plain);
        }
        let mut lower = lower;
        // The window ends in (lower, end], left to right.
        let mut u = end - (end - lower - 1) / geo.slide * geo.slide;
        loop {
            let panes = self.pane_accs(a, key, lower, u)?;
            let acc = self.fold_new(a, below.as_slice(), &panes)?;
            if let Some(b) = self.partials.block_mut(a, key, block) {
                b.prefixes.insert(u, acc);
            }
            below = Some(acc);
            lower = u;
            if u >= end {
                return Ok(acc);
            }
            u += geo.slide;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
    }

    #[test]
    fn partials_follow_pane_changes_reloads_and_closes() {
        // Batches of one value: every push is handed to the plugin at once.
        let mut store = WindowStore::new(vec![native::aggregation("count", "{}").unwrap()], 1, 5);
        // 1 s windows every 100 ms: ten panes per window, blocks of 1 s.
        store.use_partials(1_000, 100, 0);
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
        let mut fresh = WindowStore::new(vec![native::aggregation("count", "{}").unwrap()], 1, 5);
        fresh.use_partials(1_000, 100, 0);
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
                native::aggregation("count", "{}").unwrap(),
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
