//! The keyed window operator: routes decoded events into window state, asks
//! each window's trigger what to do, and emits what it says.
//!
//! The shapes (`tumbling`, `sliding`, `session`) say where an event goes;
//! the trigger (see `trigger`) says when a window emits; this module joins
//! the two. A plugin that fails does not stop it: the failure becomes an
//! `errors` entry of the windows concerned, so the `Result`s here carry no
//! plugin failure.

use std::collections::HashMap;

use super::persist::{HealthState, SlotState, WindowDelta};
use super::sliding::{self, Sliding};
use super::store::{PluginHealth, Swap, Timer, TimerKind, WindowStore};
use super::trigger::{EventTimer, Firing, TRIGGER_ERROR, TriggerRecord, Triggers};
use super::{EmitKind, Window, WindowResult, WindowSpec, session, tumbling};
use crate::decode::KeyId;
use crate::plugin::grouped::{GroupedAggregation, OutputValue};
use crate::plugin::{OutputSpec, PluginError};
use crate::record::StateError;

/// The most windows firing at one watermark step whose outputs are asked
/// for in one call per aggregation: bounds the outputs held at once.
const PREFETCH_LIMIT: usize = 4096;

/// What became of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    /// Added to its window(s).
    Accepted,
    /// Too late for every window it belongs to; the window named is its latest.
    Late(Window),
}

/// Window state for all keys of one pipeline, and the rules that fire it.
pub struct WindowOperator {
    spec: WindowSpec,
    lateness: i64,
    store: WindowStore,
    triggers: Triggers,
    /// Event-time timers the last trigger calls asked for.
    asked: Vec<EventTimer>,
}

impl WindowOperator {
    /// An operator for `spec`, keeping windows `lateness_ms` past their end,
    /// aggregating with `aggs` (one per configured aggregation, in order)
    /// and firing as `triggers` decide; an aggregation whose plugin fails
    /// `quarantine_after` calls in a row is no longer called (0: never).
    pub fn new(
        spec: WindowSpec,
        lateness_ms: i64,
        aggs: Vec<Box<dyn GroupedAggregation>>,
        triggers: Triggers,
        batch_size: usize,
        quarantine_after: u32,
    ) -> Self {
        let mut store = WindowStore::new(aggs, batch_size, quarantine_after);
        store.set_merges_slots(spec.needs_merge());
        if let WindowSpec::Sliding {
            size,
            slide,
            offset,
        } = spec
        {
            store.use_partials(size, slide, offset, lateness_ms);
        }
        Self {
            spec,
            lateness: lateness_ms.max(0),
            store,
            triggers,
            asked: Vec::new(),
        }
    }

    /// Names the aggregations as the pipeline does, so that the log can say
    /// which one a plugin failure or a memory limit concerns.
    pub fn set_aggregation_names(&mut self, names: Vec<String>) {
        self.store.set_names(names);
    }

    /// Switches the partial aggregates of sliding windows on (the default)
    /// or off. Off, every firing computes its window's merges afresh: the
    /// same results to the bit, at a cost that grows with `size / slide`;
    /// the reference the tests and the bench compare against.
    pub fn set_sliding_partials(&mut self, on: bool) {
        self.store.set_partials(on);
    }

    /// How many partial-aggregate accumulators sliding windows hold now,
    /// over all keys and aggregations: their memory cost, in accumulators.
    pub fn sliding_partials_held(&self) -> usize {
        self.store.partials_held()
    }

    /// Failed trigger calls over the run.
    pub fn trigger_failures(&self) -> u64 {
        self.triggers.failures
    }

    /// The trigger plugin's (name, version, state version).
    pub fn trigger_identity(&self) -> (String, String, u32) {
        self.triggers.identity()
    }

    /// Swaps aggregation `a`'s plugin for a new version between batches:
    /// open windows move to it, or finish on the old one if the new version
    /// has another state format (see `WindowStore::replace_plugin`).
    /// `component` is the running version's code, kept in checkpoints while
    /// it retires.
    ///
    /// Refused when the trigger previews a column of `a` that the new
    /// version does not declare at the same place: the trigger resolved its
    /// columns at start and would read another value.
    pub fn replace_plugin(
        &mut self,
        a: usize,
        new: Box<dyn GroupedAggregation>,
        component: std::sync::Arc<[u8]>,
    ) -> Result<Swap, String> {
        let old = self.store.outputs(a);
        for &(_, o) in self.triggers.watches().iter().filter(|(wa, _)| *wa == a) {
            let (was, now) = (old.get(o), new.outputs().get(o));
            if was.map(|x| &x.name) != now.map(|x| &x.name) {
                return Err(format!(
                    "the trigger previews output `{}`, which the new version does not declare \
                     in the same place",
                    was.map_or("?", |x| x.name.as_str())
                ));
            }
        }
        self.store.replace_plugin(a, new, component)
    }

    /// Aggregation `a`'s retiring version, if it still finishes windows: its
    /// label and how many windows it holds.
    pub fn retiring(&self, a: usize) -> Option<(&str, usize)> {
        self.store.retiring(a)
    }

    /// Takes up a checkpoint's retiring version of aggregation `a` before
    /// [`Self::restore`]; `Err` says why it cannot run, and its windows report that.
    pub fn restore_retiring(
        &mut self,
        a: usize,
        instance: Result<Box<dyn GroupedAggregation>, String>,
        component: std::sync::Arc<[u8]>,
    ) {
        self.store.restore_retiring(a, instance, component);
    }

    /// Aggregation `a`'s running plugin instance, to describe it.
    pub fn plugin_live(&self, a: usize) -> &dyn GroupedAggregation {
        self.store.instance(a)
    }

    /// The outputs aggregation `a`'s plugin declares now.
    pub fn plugin_outputs(&self, a: usize) -> &[OutputSpec] {
        self.store.outputs(a)
    }

    /// How each aggregation's plugin has fared so far (failed calls,
    /// quarantine), in configuration order: for metrics and the run summary.
    pub fn plugin_health(&self) -> Vec<PluginHealth> {
        self.store.health()
    }

    /// How many windows (or panes, or sessions) hold state now.
    pub fn open_windows(&self) -> usize {
        self.store.open_slots()
    }

    /// Adds one event, given the watermark as it was when the event arrived.
    /// Emissions its window's trigger asks for are appended to `out`.
    /// `values` is the event's [`crate::decode::Row`] (or, for aggregations
    /// of one number each, a slice of those numbers).
    pub fn on_event<'a>(
        &mut self,
        key: KeyId,
        time: i64,
        values: impl Into<crate::decode::Row<'a>>,
        watermark: i64,
        out: &mut Vec<WindowResult>,
    ) -> Result<EventOutcome, PluginError> {
        let values = values.into();
        let lateness = self.lateness;
        let routed = match self.spec {
            WindowSpec::Tumbling { size, offset } => tumbling::on_event(
                &mut self.store,
                (size, offset, lateness),
                key,
                time,
                values,
                watermark,
            )
            .map(|(window, new)| self.element(key, window, time, watermark, new, out)),
            WindowSpec::Sliding { .. } => {
                let geo = self.sliding().unwrap_or(Sliding {
                    size: 1,
                    slide: 1,
                    offset: 0,
                    lateness,
                });
                sliding::on_event(&mut self.store, geo, key, time, values, watermark).map(
                    |routed| {
                        // The windows holding the pane, earliest first, less
                        // those nothing is told of: past their allowed
                        // lateness, or (under a quiet trigger) on time and
                        // not new. Those are skipped in runs, so an event
                        // costs no `size / slide` loop.
                        let (first, last) = geo.start_bounds(routed.pane);
                        let too_late = watermark.saturating_sub(lateness).saturating_sub(geo.size);
                        let mut start = geo.next_start_after(first, too_late);
                        while start <= last {
                            let window = Window {
                                start,
                                end: start + geo.size,
                            };
                            let late = window.end <= watermark;
                            // A new pane of a window that has others is
                            // not a new window: its trigger already knows it.
                            let new = routed.opened(start);
                            if new || late || !self.triggers.quiet() {
                                self.element(key, window, time, watermark, new, out);
                            } else if start <= routed.opened.0 {
                                // On time from here on (lateness only falls
                                // as starts grow): on to the new windows.
                                start = geo.next_start_after(start, routed.opened.0);
                                continue;
                            } else {
                                break;
                            }
                            start += geo.slide;
                        }
                    },
                )
            }
            WindowSpec::Session { gap } => session::on_event(
                &mut self.store,
                (gap, lateness),
                key,
                time,
                values,
                watermark,
            )
            .map(|routed| {
                let window = routed.window;
                if !routed.absorbed.is_empty() || routed.was != window.start {
                    let firing = self.triggers.merge(
                        key,
                        routed.was,
                        &routed.absorbed,
                        window,
                        &mut self.asked,
                    );
                    self.apply(key, window, emit_kind(watermark, window), firing, out);
                }
                self.element(key, window, time, watermark, routed.new, out);
            }),
        };
        self.arm_asked();
        Ok(match routed {
            Ok(()) => EventOutcome::Accepted,
            Err(window) => EventOutcome::Late(window),
        })
    }

    /// Tells `window`'s trigger of one element (when it wants to hear) and
    /// does what it says.
    fn element(
        &mut self,
        key: KeyId,
        window: Window,
        time: i64,
        watermark: i64,
        new: bool,
        out: &mut Vec<WindowResult>,
    ) {
        if !new && window.end > watermark && self.triggers.quiet() {
            return;
        }
        let sliding = self.sliding();
        let store = &mut self.store;
        let firing = self.triggers.on_element(
            key,
            window,
            time,
            watermark,
            new,
            &mut self.asked,
            |watches| preview(store, sliding, key, window, watches),
        );
        self.apply(key, window, emit_kind(watermark, window), firing, out);
    }

    /// Tells `window`'s trigger of elements it has not heard of yet, and does
    /// what it says, marking a firing `emit`.
    fn tell_pending(
        &mut self,
        key: KeyId,
        window: Window,
        emit: EmitKind,
        out: &mut Vec<WindowResult>,
    ) {
        let sliding = self.sliding();
        let store = &mut self.store;
        let firing = self
            .triggers
            .tell_pending(key, window, &mut self.asked, |watches| {
                preview(store, sliding, key, window, watches)
            });
        self.apply(key, window, emit, firing, out);
    }

    /// Emits and/or purges a window as a trigger decided.
    fn apply(
        &mut self,
        key: KeyId,
        window: Window,
        emit: EmitKind,
        firing: Firing,
        out: &mut Vec<WindowResult>,
    ) {
        if firing.fire {
            let before = out.len();
            match self.sliding() {
                Some(geo) => sliding::fire(&mut self.store, geo, key, window.start, emit, out),
                None => {
                    if let Some(id) = self.store.find(key, window.start) {
                        let outputs = self.store.finish(id);
                        out.push(WindowResult {
                            key,
                            window: self.store.bounds(id).unwrap_or(window),
                            emit,
                            outputs: outputs.values,
                            errors: outputs.errors,
                        });
                    }
                }
            }
            if out.len() > before
                && let Some(why) = self.triggers.error(key, window.start)
                && let Some(result) = out.last_mut()
            {
                result.errors.push((TRIGGER_ERROR, why));
            }
        }
        if firing.purge {
            match self.sliding() {
                Some(_) => self.triggers.warn_no_purge(),
                None => {
                    if let Some(id) = self.store.find(key, window.start) {
                        self.store.purge(id);
                    }
                }
            }
        }
    }

    /// Queues the event-time timers trigger calls asked for, and unqueues
    /// those of windows that closed or merged away.
    fn arm_asked(&mut self) {
        for (time, key, start) in std::mem::take(&mut self.asked) {
            self.store.add_timer(Timer {
                time,
                kind: TimerKind::Trigger,
                key,
                start,
            });
        }
        for (time, key, start) in self.triggers.take_void() {
            self.store.remove_timer(&Timer {
                time,
                kind: TimerKind::Trigger,
                key,
                start,
            });
        }
    }

    /// The bounds of `key`'s window starting at `start`, if it still exists.
    fn window_of(&self, key: KeyId, start: i64) -> Option<Window> {
        match self.spec {
            WindowSpec::Tumbling { size, .. } => Some(Window {
                start,
                end: start + size,
            }),
            WindowSpec::Sliding { size, .. } => Some(Window {
                start,
                end: start + size,
            }),
            WindowSpec::Session { .. } => {
                let id = self.store.find(key, start)?;
                self.store.bounds(id)
            }
        }
    }

    /// Fires and cleans up every window the new `watermark` has passed, in
    /// order of time, then key, then window start.
    pub fn on_watermark(
        &mut self,
        watermark: i64,
        out: &mut Vec<WindowResult>,
    ) -> Result<(), PluginError> {
        self.fire_due(watermark, out, None)
    }

    /// [`WindowOperator::on_watermark`], also saying which timer each run
    /// of results came from: `(tag, results)` pairs appended to `tags`, in
    /// the order of `out`. Operators that each hold some of the keys (see
    /// [`FiringTag`]) fire in an order that merging by tag makes the same
    /// as one operator holding them all.
    pub fn on_watermark_tagged(
        &mut self,
        watermark: i64,
        out: &mut Vec<WindowResult>,
        tags: &mut Vec<(FiringTag, u32)>,
    ) -> Result<(), PluginError> {
        self.fire_due(watermark, out, Some(tags))
    }

    fn fire_due(
        &mut self,
        watermark: i64,
        out: &mut Vec<WindowResult>,
        mut tags: Option<&mut Vec<(FiringTag, u32)>>,
    ) -> Result<(), PluginError> {
        if !self.store.has_due(watermark) {
            return Ok(());
        }
        self.store.flush_all();
        // The windows firing now are evaluated in one call per aggregation
        // (a sliding window's outputs come from its panes, merged).
        if self.sliding().is_none() {
            let firing = self.store.due_to_fire(watermark, PREFETCH_LIMIT);
            self.store.prefetch(&firing);
        }
        // Calls for trigger timers per window in this advance: a trigger
        // that asks for the next millisecond each time would otherwise be
        // called for every millisecond the watermark passed.
        let mut timer_calls: HashMap<(KeyId, i64), u32> = HashMap::new();
        let sessions = matches!(self.spec, WindowSpec::Session { .. });
        // The results since `mark` came from the timer tagged `tag`.
        let mut mark = out.len();
        let mut tag = FiringTag::default();
        while let Some(timer) = self.store.pop_due(watermark) {
            if let Some(tags) = tags.as_deref_mut() {
                record_run(tags, tag, &mut mark, out.len());
                tag = FiringTag::of(&timer);
            }
            let key = timer.key;
            if sessions
                && timer.kind != TimerKind::Trigger
                && let Some(bounds) = self
                    .store
                    .find(key, timer.start)
                    .and_then(|id| self.store.bounds(id))
            {
                // A session's timer left behind as the session grew (see
                // `session`): set again at the session's end.
                let due = match timer.kind {
                    TimerKind::Fire => bounds.end,
                    _ => bounds.end.saturating_add(self.lateness),
                };
                if timer.time < due {
                    self.store.add_timer(Timer { time: due, ..timer });
                    continue;
                }
            }
            if timer.kind == TimerKind::Trigger {
                self.triggers.timer_fired(key, timer.start, timer.time);
                // A failed trigger no longer decides: its timers are void.
                if self.triggers.error(key, timer.start).is_some() {
                    continue;
                }
            }
            match timer.kind {
                TimerKind::Fire | TimerKind::Trigger => {
                    let Some(window) = self.window_of(key, timer.start) else {
                        continue;
                    };
                    if timer.kind == TimerKind::Trigger {
                        // A timer after the window's cleanup finds no window
                        // to decide for; calling would bring its trigger back.
                        if timer.time > window.end.saturating_add(self.lateness) {
                            continue;
                        }
                        let calls = timer_calls.entry((key, timer.start)).or_default();
                        *calls += 1;
                        let cap = self.triggers.timers_per_window();
                        if *calls > cap {
                            self.triggers.refuse(
                                key,
                                timer.start,
                                format!(
                                    "kept asking for event-time timers: more than {cap} fell \
                                     due by watermark {watermark} (plugins.timers_per_window)"
                                ),
                            );
                            continue;
                        }
                    }
                    let (time, emit) = match timer.kind {
                        TimerKind::Fire => (window.end, EmitKind::OnTime),
                        _ => (timer.time, emit_kind(timer.time, window)),
                    };
                    // Elements not yet told arrived before this time.
                    let told_at = if timer.kind == TimerKind::Fire {
                        EmitKind::Early
                    } else {
                        emit
                    };
                    self.tell_pending(key, window, told_at, out);
                    let firing =
                        self.triggers
                            .on_event_time(key, window, time, watermark, &mut self.asked);
                    self.apply(key, window, emit, firing, out);
                    self.arm_asked();
                }
                TimerKind::Cleanup => match self.sliding() {
                    Some(geo) => {
                        if let Some(id) = self.store.find(key, timer.start) {
                            self.store.close(id);
                        }
                        for start in self.triggers.starts_of(key) {
                            if (start + geo.size).saturating_add(self.lateness) <= timer.time {
                                self.triggers.drop_window(key, start);
                            }
                        }
                    }
                    None => {
                        if let Some(id) = self.store.find(key, timer.start) {
                            self.store.close(id);
                        }
                        self.triggers.drop_window(key, timer.start);
                    }
                },
            }
            if timer.kind == TimerKind::Cleanup {
                // Unqueues the closed windows' trigger timers.
                self.arm_asked();
            }
        }
        if let Some(tags) = tags {
            record_run(tags, tag, &mut mark, out.len());
        }
        self.store.drop_prefetched();
        Ok(())
    }

    /// Runs the processing-time timers due by the wall clock `now` (ms since
    /// the epoch), under `watermark`.
    pub fn on_processing_time(&mut self, now: i64, watermark: i64, out: &mut Vec<WindowResult>) {
        self.processing_due(now, watermark, out, None);
    }

    /// [`WindowOperator::on_processing_time`] with the tags of
    /// [`WindowOperator::on_watermark_tagged`].
    pub fn on_processing_time_tagged(
        &mut self,
        now: i64,
        watermark: i64,
        out: &mut Vec<WindowResult>,
        tags: &mut Vec<(FiringTag, u32)>,
    ) {
        self.processing_due(now, watermark, out, Some(tags));
    }

    fn processing_due(
        &mut self,
        now: i64,
        watermark: i64,
        out: &mut Vec<WindowResult>,
        mut tags: Option<&mut Vec<(FiringTag, u32)>>,
    ) {
        for (due, key, start) in self.triggers.due_processing(now) {
            let mark = out.len();
            self.processing_timer(due, key, start, watermark, out);
            if let Some(tags) = tags.as_deref_mut() {
                let tag = FiringTag {
                    time: due,
                    kind: 0,
                    key,
                    start,
                };
                let mut mark = mark;
                record_run(tags, tag, &mut mark, out.len());
            }
        }
    }

    fn processing_timer(
        &mut self,
        due: i64,
        key: KeyId,
        start: i64,
        watermark: i64,
        out: &mut Vec<WindowResult>,
    ) {
        let Some(window) = self.window_of(key, start) else {
            return;
        };
        self.tell_pending(key, window, emit_kind(watermark, window), out);
        let firing = self
            .triggers
            .on_processing_time(key, window, due, watermark, &mut self.asked);
        self.apply(key, window, emit_kind(watermark, window), firing, out);
        self.arm_asked();
    }
}

/// Where a run of results stands in the order one operator holding every
/// key would have fired them: the timer that fired them, as `(time, kind,
/// key, start)`. Key ids are the pipeline's, so two operators holding
/// disjoint keys never give one tag twice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct FiringTag {
    /// The timer's time.
    pub time: i64,
    /// Its kind's rank (fire, trigger, cleanup).
    pub kind: u8,
    /// The key whose window it is.
    pub key: KeyId,
    /// The window's start.
    pub start: i64,
}

impl FiringTag {
    fn of(timer: &Timer) -> Self {
        Self {
            time: timer.time,
            kind: timer.kind as u8,
            key: timer.key,
            start: timer.start,
        }
    }
}

/// Records that the results `*mark..len` came from `tag`, if there are any.
fn record_run(tags: &mut Vec<(FiringTag, u32)>, tag: FiringTag, mark: &mut usize, len: usize) {
    if len > *mark {
        tags.push((tag, (len - *mark) as u32));
        *mark = len;
    }
}

/// How an emission at event time `at` of `window` is marked, apart from the
/// on-time firing at its end.
fn emit_kind(at: i64, window: Window) -> EmitKind {
    if at < window.end {
        EmitKind::Early
    } else {
        EmitKind::Late
    }
}

/// The current values of the watched columns of `key`'s `window`.
fn preview(
    store: &mut WindowStore,
    sliding: Option<Sliding>,
    key: KeyId,
    window: Window,
    watches: &[(usize, usize)],
) -> Vec<Option<f64>> {
    let outputs = match sliding {
        Some(_) => {
            let panes = store.range(key, window.start, window.end);
            store.finish_merged(&panes)
        }
        None => match store.find(key, window.start) {
            Some(id) => store.finish(id),
            None => return vec![None; watches.len()],
        },
    };
    watches
        .iter()
        .map(|&(a, o)| {
            outputs
                .values
                .get(a)
                .and_then(|v| v.get(o))
                .and_then(|v| v.as_ref())
                .and_then(OutputValue::number)
        })
        .collect()
}

impl WindowOperator {
    /// The earliest start of any open window, pane or session; events older
    /// than it no longer affect any state, so their source positions may be
    /// committed.
    pub fn oldest_open_start(&self) -> Option<i64> {
        self.store.oldest_start()
    }

    /// Drops all window state without emitting it: a consumer that lost its
    /// partitions leaves their windows to the new owner, who rebuilds them by
    /// replaying from the committed offsets.
    pub fn clear(&mut self) -> Result<(), PluginError> {
        self.triggers.clear();
        self.store.clear()
    }

    /// The trigger state a checkpoint keeps (see [`TriggerRecord`]).
    pub fn trigger_records(&mut self) -> Vec<TriggerRecord> {
        let timers = self.store.trigger_timers();
        self.triggers.records(&timers)
    }
}

impl WindowOperator {
    /// The sliding geometry, for a sliding window.
    fn sliding(&self) -> Option<Sliding> {
        match self.spec {
            WindowSpec::Sliding {
                size,
                slide,
                offset,
            } => Some(Sliding {
                size,
                slide,
                offset,
                lateness: self.lateness,
            }),
            WindowSpec::Tumbling { .. } | WindowSpec::Session { .. } => None,
        }
    }

    /// Adds to `delta` the window state changed since the last checkpoint;
    /// returns the checkpoint's window-record count and CRC sum.
    pub fn checkpoint_into(&mut self, delta: &mut WindowDelta) -> Result<(u64, u32), StateError> {
        self.store.checkpoint_into(delta)
    }

    /// Each aggregation's plugin failure record, for a checkpoint.
    pub fn health_state(&self) -> Vec<HealthState> {
        self.store.health_state()
    }

    /// Each aggregation's plugin `(name, version, state version)`.
    pub fn plugin_infos(&self) -> Vec<(String, String, u32)> {
        self.store
            .plugin_infos()
            .map(|(n, v, s)| (n.to_string(), v.to_string(), s))
            .collect()
    }

    /// Rebuilds the window state of a checkpoint taken at `watermark`.
    ///
    /// Timers are re-created rather than stored: a checkpoint is taken after
    /// every timer due at its watermark has run, so the pending timers are
    /// exactly those each open slot's shape sets that are due later.
    pub fn restore(
        &mut self,
        health: &[HealthState],
        slots: &[(SlotState, u32)],
        triggers: &[TriggerRecord],
        watermark: i64,
    ) {
        self.triggers.restore(triggers);
        for r in triggers {
            for &time in &r.event_timers {
                self.store.add_timer(Timer {
                    time,
                    kind: TimerKind::Trigger,
                    key: r.key,
                    start: r.start,
                });
            }
        }
        self.store.restore_health(health);
        for (slot, crc) in slots {
            self.store.restore_slot(slot, *crc);
        }
        self.store.restored();
        let lateness = self.lateness;
        for (key, bounds) in self.store.slot_bounds() {
            let cleanup = |time: i64, start: i64| Timer {
                time,
                kind: TimerKind::Cleanup,
                key,
                start,
            };
            match self.sliding() {
                None => {
                    if bounds.end > watermark {
                        self.store.add_timer(Timer {
                            time: bounds.end,
                            kind: TimerKind::Fire,
                            key,
                            start: bounds.start,
                        });
                    }
                    self.store
                        .add_timer(cleanup(bounds.end.saturating_add(lateness), bounds.start));
                }
                Some(geo) => {
                    for start in geo.window_starts(bounds.start) {
                        if start + geo.size > watermark {
                            self.store.add_timer(Timer {
                                time: start + geo.size,
                                kind: TimerKind::Fire,
                                key,
                                start,
                            });
                        }
                    }
                    let last = super::align(bounds.start, geo.slide, geo.offset) + geo.size;
                    self.store
                        .add_timer(cleanup(last.saturating_add(lateness), bounds.start));
                }
            }
        }
    }
}
