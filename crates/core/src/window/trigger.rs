//! The host side of trigger plugins: one trigger state per window, what the
//! host tells it and when, and how its decisions become emissions.
//!
//! The trigger decides; the operator emits. So that a failing trigger never
//! costs a window its result, each window falls back to the host's own
//! event-time rule (fire at the end, then once per late element) as soon as
//! its trigger fails, and every emission of that window then carries the
//! error. A call that takes the instance down (a trap, a timeout) restarts
//! it, and the other windows' triggers start again as new; after
//! `quarantine_after` failures in a row the plugin is not called again.
//!
//! A window with no trigger state here behaves as one whose trigger is "as
//! new and interested in late elements only": that is what a checkpoint
//! leaves out (see [`TriggerRecord`]), and it is how the default event-time
//! trigger spends its time, so on-time events cost it no call.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_config::PluginLimits;

use super::Window;
use crate::decode::KeyId;
use crate::plugin::{
    Action, Decision, ElementInterest, Elements, PluginError, TriggerPolicy,
    WindowTriggerHandle as WindowTrigger,
};

/// The `errors` index under which a trigger failure is reported in a
/// [`super::WindowResult`]: printed as the key `"trigger"`.
pub const TRIGGER_ERROR: usize = usize::MAX;

/// When a window's trigger wants to hear of elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Interest {
    /// After this many more.
    After(u32),
    /// Only late ones.
    Late,
    /// Never.
    Never,
}

impl From<ElementInterest> for Interest {
    fn from(i: ElementInterest) -> Self {
        match i {
            ElementInterest::After(n) => Interest::After(n.max(1)),
            ElementInterest::Late => Interest::Late,
            ElementInterest::None => Interest::Never,
        }
    }
}

/// What the operator should do with a window after a trigger call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Firing {
    /// Emit its result now.
    pub fire: bool,
    /// Empty its state (after emitting, if `fire`).
    pub purge: bool,
}

/// One window's trigger.
#[derive(Debug)]
enum Handle {
    /// A live state in the plugin.
    Live(WindowTrigger),
    /// Its state was lost with an instance; the next use creates it anew.
    Fresh,
    /// The trigger failed for this window: the host's rule applies.
    Failed(Arc<str>),
}

#[derive(Debug)]
struct WindowState {
    handle: Handle,
    interest: Interest,
    /// Elements since the trigger last heard of any, and their time range.
    seen: u32,
    min: i64,
    max: i64,
    /// The watermark the last of them arrived under.
    seen_under: i64,
    /// Called since its last snapshot.
    changed: bool,
    /// Its last snapshot (empty: as new).
    snapshot: Vec<u8>,
}

impl WindowState {
    fn new(handle: Handle) -> Self {
        Self {
            handle,
            interest: Interest::After(1),
            seen: 0,
            min: i64::MAX,
            max: i64::MIN,
            seen_under: i64::MIN,
            changed: true,
            snapshot: Vec::new(),
        }
    }
}

impl WindowState {
    /// A window's state when there is none: as new, interested in late
    /// elements only.
    fn untracked() -> Self {
        Self {
            interest: Interest::Late,
            ..Self::new(Handle::Fresh)
        }
    }

    /// The elements its trigger has not heard of yet, as `(count, min, max)`
    /// event time, now counted as told; `None` when there are none.
    fn take_untold(&mut self) -> Option<(u32, i64, i64)> {
        if self.seen == 0 {
            return None;
        }
        let untold = (self.seen, self.min, self.max);
        self.seen = 0;
        self.min = i64::MAX;
        self.max = i64::MIN;
        Some(untold)
    }
}

/// A window's trigger as a checkpoint keeps it. Windows whose trigger is as
/// new and interested in late elements only have no record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerRecord {
    /// The window's key.
    pub key: KeyId,
    /// The window's start.
    pub start: i64,
    /// The trigger's snapshot bytes; `None`: it had failed, with why.
    pub state: Result<Vec<u8>, String>,
    /// Its interest in elements, and what it has not yet heard of.
    pub interest: Interest,
    /// Elements not yet told: their count, time range, and the watermark
    /// the last of them arrived under (they are told under it).
    pub seen: (u32, i64, i64, i64),
    /// Event-time timers it set.
    pub event_timers: Vec<i64>,
    /// Processing-time timers it set, as wall-clock due times.
    pub processing_timers: Vec<i64>,
}

/// Every window's trigger state, and the plugin that decides for them.
pub struct Triggers {
    instance: Box<dyn TriggerPolicy>,
    windows: HashMap<(KeyId, i64), WindowState>,
    /// How many windows want to hear of elements by count: when none does,
    /// an on-time event for an existing window needs no lookup here.
    counting: usize,
    /// Processing-time timers: (due, key, window start).
    processing: BTreeSet<(i64, KeyId, i64)>,
    /// For each watched column, its (aggregation, output) index.
    watches: Vec<(usize, usize)>,
    consecutive_failures: u32,
    quarantine_after: u32,
    quarantined: Option<Arc<str>>,
    /// Failed calls over the run.
    pub failures: u64,
    state_version: u32,
    /// State format 0: the trigger keeps nothing per window, so a window's
    /// state that only waits for late elements is dropped between calls.
    stateless: bool,
    /// A stateless trigger's one state, which every window's calls use (a
    /// merge excepted, which takes two): made once, never given back while
    /// the instance lives. A state per window cost a create and a release
    /// call around each of its calls, four of a window's six.
    shared: Option<WindowTrigger>,
    purge_warned: bool,
    /// Timers pending per window (absent: none), and the most a window may
    /// have (`plugins.timers_per_window`).
    pending: HashMap<(KeyId, i64), Pending>,
    timers_per_window: u32,
    /// Queued event-time timers that no longer stand for anything (their
    /// window closed or merged away), for the operator to unqueue.
    void: Vec<EventTimer>,
}

/// The timers one window's trigger has pending.
#[derive(Debug, Default)]
struct Pending {
    /// Event times of its event-time timers.
    event: BTreeSet<i64>,
    /// Due times of its processing-time timers.
    processing: BTreeSet<i64>,
}

impl Pending {
    fn len(&self) -> usize {
        self.event.len() + self.processing.len()
    }
}

/// A new event-time timer a decision asked for: (time, key, window start).
pub type EventTimer = (i64, KeyId, i64);

impl Triggers {
    /// Triggers decided by `instance`, previewing the `watches` columns,
    /// under the pipeline's plugin `limits` (how many failures in a row
    /// quarantine it, how many timers a window may hold).
    pub fn new(
        instance: Box<dyn TriggerPolicy>,
        watches: Vec<(usize, usize)>,
        limits: &PluginLimits,
    ) -> Self {
        let state_version = instance.info().map_or(0, |i| i.state_version);
        let timers_per_window = limits.timers_per_window;
        let quarantine_after = limits.quarantine_after;
        Self {
            instance,
            windows: HashMap::new(),
            counting: 0,
            processing: BTreeSet::new(),
            watches,
            consecutive_failures: 0,
            quarantine_after,
            quarantined: None,
            failures: 0,
            state_version,
            stateless: state_version == 0,
            shared: None,
            purge_warned: false,
            pending: HashMap::new(),
            timers_per_window,
            void: Vec::new(),
        }
    }

    /// The most timers a window may have pending, and the most calls for
    /// event-time timers it gets in one advance of the watermark.
    pub fn timers_per_window(&self) -> u32 {
        self.timers_per_window
    }

    /// An event-time timer of the window at `time` fell due (and left the queue).
    pub fn timer_fired(&mut self, key: KeyId, start: i64, time: i64) {
        if let Some(p) = self.pending.get_mut(&(key, start)) {
            p.event.remove(&time);
            if p.len() == 0 {
                self.pending.remove(&(key, start));
            }
        }
    }

    /// Queued event-time timers to unqueue since the last call: those of
    /// windows that closed or merged away.
    pub fn take_void(&mut self) -> Vec<EventTimer> {
        std::mem::take(&mut self.void)
    }

    /// Forgets every timer of the window: its processing-time timers here,
    /// its event-time timers into [`Self::take_void`].
    fn void_timers(&mut self, key: KeyId, start: i64) {
        if let Some(p) = self.pending.remove(&(key, start)) {
            for due in p.processing {
                self.processing.remove(&(due, key, start));
            }
            self.void
                .extend(p.event.into_iter().map(|time| (time, key, start)));
        }
    }

    /// Fails the window's trigger for breaking a rule the host enforces
    /// outside any one call (`message` says which): the window fires by the
    /// host's rule from now on.
    pub fn refuse(&mut self, key: KeyId, start: i64, message: String) {
        let error = PluginError::Call {
            plugin: self.instance.label().to_string(),
            message,
        };
        self.fail(key, start, error);
    }

    /// The trigger plugin's label, for messages and checkpoints.
    pub fn label(&self) -> &str {
        self.instance.label()
    }

    /// Whether an element for an existing window that is not late can skip
    /// the trigger entirely.
    pub fn quiet(&self) -> bool {
        self.counting == 0
    }

    /// The columns previews must hold, as (aggregation, output) indexes.
    pub fn watches(&self) -> &[(usize, usize)] {
        &self.watches
    }

    /// Why the window's trigger no longer decides, if it does not.
    pub fn error(&self, key: KeyId, start: i64) -> Option<Arc<str>> {
        if let Some(why) = &self.quarantined {
            return Some(Arc::clone(why));
        }
        match self.windows.get(&(key, start)).map(|w| &w.handle) {
            Some(Handle::Failed(why)) => Some(Arc::clone(why)),
            _ => None,
        }
    }

    /// Warns once that purging is not possible for this window shape.
    pub fn warn_no_purge(&mut self) {
        if !self.purge_warned {
            self.purge_warned = true;
            tracing::warn!(
                "trigger {} asked to purge a sliding window, whose panes other windows share: \
                 firings stay cumulative",
                self.instance.label()
            );
        }
    }

    /// Sets a window's interest, keeping the count of counting windows.
    fn set_interest(&mut self, key: KeyId, start: i64, interest: Interest) {
        if let Some(w) = self.windows.get_mut(&(key, start)) {
            let was = matches!(w.interest, Interest::After(_));
            let now = matches!(interest, Interest::After(_));
            w.interest = interest;
            match (was, now) {
                (false, true) => self.counting += 1,
                (true, false) => self.counting -= 1,
                _ => {}
            }
        }
    }

    /// The state of a window with none here: as new, interested in late
    /// elements only (what a missing state means, see the module docs).
    fn untracked(&mut self, key: KeyId, start: i64) -> &mut WindowState {
        self.windows
            .entry((key, start))
            .or_insert_with(WindowState::untracked)
    }

    /// The live handle of a window's trigger, created if it has none yet.
    /// `Err` carries why the host's rule applies instead.
    fn handle(&mut self, key: KeyId, window: Window) -> Result<WindowTrigger, Arc<str>> {
        if let Some(why) = &self.quarantined {
            return Err(Arc::clone(why));
        }
        let existing = self
            .windows
            .get(&(key, window.start))
            .map(|w| match &w.handle {
                Handle::Live(h) => Ok(Some(*h)),
                Handle::Fresh => Ok(None),
                Handle::Failed(why) => Err(Arc::clone(why)),
            });
        match existing {
            Some(Ok(Some(h))) => return Ok(h),
            Some(Err(why)) => return Err(why),
            Some(Ok(None)) => {}
            None => {
                self.untracked(key, window.start);
            }
        }
        let made = match self.shared {
            Some(h) => Ok(h),
            None => self.instance.create(window),
        };
        match made {
            Ok(h) => {
                if self.stateless {
                    self.shared = Some(h);
                }
                if let Some(w) = self.windows.get_mut(&(key, window.start)) {
                    w.handle = Handle::Live(h);
                }
                Ok(h)
            }
            Err(e) => Err(self.fail(key, window.start, e)),
        }
    }

    /// Gives a window's trigger state back, unless it is the shared one.
    fn give_back(&mut self, h: WindowTrigger) {
        if self.shared != Some(h) && !self.instance.is_poisoned() {
            let _ = self.instance.release(h);
        }
    }

    /// Records a failed call for the window: it falls back to the host's
    /// rule; a lost instance is restarted; too many failures in a row
    /// quarantine the plugin.
    fn fail(&mut self, key: KeyId, start: i64, e: PluginError) -> Arc<str> {
        let why: Arc<str> = Arc::from(format!("trigger {e}"));
        tracing::warn!(key, start, "{why}");
        self.failures += 1;
        self.consecutive_failures += 1;
        self.set_interest(key, start, Interest::Late);
        if let Some(w) = self.windows.get_mut(&(key, start)) {
            w.handle = Handle::Failed(Arc::clone(&why));
            w.changed = true;
        }
        if self.quarantine_after > 0 && self.consecutive_failures >= self.quarantine_after {
            let q: Arc<str> = Arc::from(format!(
                "{why} (failure {} in a row: trigger {} is quarantined, windows fire by the \
                 event-time rule)",
                self.consecutive_failures,
                self.instance.label()
            ));
            tracing::warn!("{q}");
            self.quarantined = Some(q);
        } else if self.instance.is_poisoned() {
            self.shared = None;
            match self.instance.reopen() {
                Ok(()) => {
                    for w in self.windows.values_mut() {
                        if matches!(w.handle, Handle::Live(_)) {
                            w.handle = Handle::Fresh;
                            w.changed = true;
                        }
                    }
                }
                Err(e) => {
                    self.quarantined = Some(Arc::from(format!(
                        "trigger {e} (restarting it after: {why})"
                    )));
                }
            }
        }
        why
    }

    /// Turns a call's outcome into what to do, applying its interest.
    ///
    /// A failed call leaves the window to the host's rule: `fallback` is
    /// whether that rule fires now.
    fn decided(
        &mut self,
        key: KeyId,
        start: i64,
        outcome: Result<Decision, PluginError>,
        timers: &mut Vec<EventTimer>,
        fallback: bool,
    ) -> Firing {
        let outcome = outcome.and_then(|d| {
            let pending = self.pending.get(&(key, start)).map_or(0, Pending::len);
            let asked = d.event_timers.len() + d.processing_delays.len();
            let cap = self.timers_per_window;
            if pending + asked > cap as usize {
                return Err(PluginError::Call {
                    plugin: self.instance.label().to_string(),
                    message: format!(
                        "asked for {asked} more timers for a window with {pending} pending \
                         (at most {cap} per window: plugins.timers_per_window)"
                    ),
                });
            }
            Ok(d)
        });
        match outcome {
            Ok(d) => {
                self.consecutive_failures = 0;
                self.set_interest(key, start, d.interest.into());
                if let Some(w) = self.windows.get_mut(&(key, start)) {
                    w.changed = true;
                }
                timers.extend(d.event_timers.iter().map(|&t| (t, key, start)));
                let now = now_ms();
                if !d.event_timers.is_empty() || !d.processing_delays.is_empty() {
                    let pending = self.pending.entry((key, start)).or_default();
                    pending.event.extend(d.event_timers.iter().copied());
                    for &delay in &d.processing_delays {
                        let due = now.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX));
                        self.processing.insert((due, key, start));
                        pending.processing.insert(due);
                    }
                }
                if self.stateless && d.processing_delays.is_empty() {
                    self.forget_if_idle(key, start);
                }
                match d.action {
                    Action::Continue => Firing::default(),
                    Action::Fire => Firing {
                        fire: true,
                        purge: false,
                    },
                    Action::FireAndPurge => Firing {
                        fire: true,
                        purge: true,
                    },
                    Action::Purge => Firing {
                        fire: false,
                        purge: true,
                    },
                }
            }
            Err(e) => {
                self.fail(key, start, e);
                Firing {
                    fire: fallback,
                    purge: false,
                }
            }
        }
    }

    /// Drops the state of a stateless trigger's window that waits for late
    /// elements only, has none untold and no processing timer pending: a
    /// missing state means exactly that (see the module docs).
    fn forget_if_idle(&mut self, key: KeyId, start: i64) {
        let idle = self.windows.get(&(key, start)).is_some_and(|w| {
            w.interest == Interest::Late && w.seen == 0 && matches!(w.handle, Handle::Live(_))
        });
        if idle
            && self
                .pending
                .get(&(key, start))
                .is_none_or(|p| p.processing.is_empty())
        {
            // Its pending event timers still count against the window.
            self.release_state(key, start);
        }
    }

    /// The host's own rule, for a window whose trigger cannot decide.
    fn host_rule(fire: bool) -> Firing {
        Firing { fire, purge: false }
    }

    /// One element entered `window` under `watermark`. `new` says the window
    /// has just been opened. A trigger that is not asked (its interest) or
    /// cannot decide (failed) leaves it to the host's rule: fire if late.
    ///
    /// `preview` is called only when the trigger is about to be asked and
    /// watches columns; it returns their values with this element counted.
    // One element of one window, told with the state it arrived under: the
    // arguments are that element, not a group worth a struct of its own.
    #[allow(clippy::too_many_arguments)]
    pub fn on_element(
        &mut self,
        key: KeyId,
        window: Window,
        time: i64,
        watermark: i64,
        new: bool,
        timers: &mut Vec<EventTimer>,
        preview: impl FnOnce(&[(usize, usize)]) -> Vec<Option<f64>>,
    ) -> Firing {
        let late = watermark >= window.end;
        if new && !self.windows.contains_key(&(key, window.start)) {
            self.windows
                .insert((key, window.start), WindowState::new(Handle::Fresh));
            self.counting += 1;
        }
        let interest = self
            .windows
            .get(&(key, window.start))
            .map_or(Interest::Late, |w| w.interest);
        let ask = match interest {
            Interest::After(n) => match self.windows.get_mut(&(key, window.start)) {
                Some(w) => {
                    w.seen += 1;
                    w.min = w.min.min(time);
                    w.max = w.max.max(time);
                    w.seen_under = watermark;
                    w.seen >= n
                }
                None => late,
            },
            Interest::Late => late,
            Interest::Never => false,
        };
        if !ask {
            return Firing::default();
        }
        let Ok(handle) = self.handle(key, window) else {
            return Self::host_rule(late);
        };
        let untold = self
            .windows
            .get_mut(&(key, window.start))
            .and_then(WindowState::take_untold)
            .unwrap_or((1, time, time));
        let batch = self.elements(untold, preview);
        let outcome = self.instance.on_elements(handle, window, &batch, watermark);
        self.decided(key, window.start, outcome, timers, late)
    }

    /// The batch a trigger is told of: `(count, min, max)` of its elements,
    /// with the watched columns' preview when it watches any.
    fn elements(
        &self,
        (count, min_time, max_time): (u32, i64, i64),
        preview: impl FnOnce(&[(usize, usize)]) -> Vec<Option<f64>>,
    ) -> Elements {
        Elements {
            count,
            min_time,
            max_time,
            preview: if self.watches.is_empty() {
                Vec::new()
            } else {
                preview(&self.watches)
            },
        }
    }

    /// Tells `window`'s trigger of the elements it has not heard of yet
    /// (fewer than it asked to wait for), so that a timer call finds it up to
    /// date: a count trigger then sees its remainder at the window's end.
    /// They are told under the watermark they arrived under.
    pub fn tell_pending(
        &mut self,
        key: KeyId,
        window: Window,
        timers: &mut Vec<EventTimer>,
        preview: impl FnOnce(&[(usize, usize)]) -> Vec<Option<f64>>,
    ) -> Firing {
        let Some(w) = self.windows.get_mut(&(key, window.start)) else {
            return Firing::default();
        };
        let under = w.seen_under;
        let Some(untold) = w.take_untold() else {
            return Firing::default();
        };
        let Ok(handle) = self.handle(key, window) else {
            return Firing::default();
        };
        let batch = self.elements(untold, preview);
        let outcome = self.instance.on_elements(handle, window, &batch, under);
        self.decided(key, window.start, outcome, timers, false)
    }

    /// The watermark reached `time` for `window` (its end, or a timer its
    /// trigger set). The host's rule fires at the end.
    pub fn on_event_time(
        &mut self,
        key: KeyId,
        window: Window,
        time: i64,
        watermark: i64,
        timers: &mut Vec<EventTimer>,
    ) -> Firing {
        let at_end = time >= window.end;
        let Ok(handle) = self.handle(key, window) else {
            return Self::host_rule(at_end);
        };
        let outcome = self
            .instance
            .on_event_time(handle, window, time, watermark)
            .and_then(|d| match d.event_timers.iter().find(|&&t| t <= time) {
                // A timer at or before `time` is due already: the host would
                // call again at once, for ever, and no single call would be
                // slow.
                Some(&again) => Err(PluginError::Call {
                    plugin: self.instance.label().to_string(),
                    message: format!(
                        "asked, when called for event time {time}, for a timer at {again}, \
                         which is not later"
                    ),
                }),
                None => Ok(d),
            });
        self.decided(key, window.start, outcome, timers, at_end)
    }

    /// Processing-time timers due by `now`, removed: (due, key, window start).
    pub fn due_processing(&mut self, now: i64) -> Vec<(i64, KeyId, i64)> {
        let mut due = Vec::new();
        while let Some(&first) = self.processing.first() {
            if first.0 > now {
                break;
            }
            self.processing.pop_first();
            let (time, key, start) = first;
            if let Some(p) = self.pending.get_mut(&(key, start)) {
                p.processing.remove(&time);
                if p.len() == 0 {
                    self.pending.remove(&(key, start));
                }
            }
            due.push(first);
        }
        due
    }

    /// A processing-time timer of `window` fell due at `time`.
    pub fn on_processing_time(
        &mut self,
        key: KeyId,
        window: Window,
        time: i64,
        watermark: i64,
        timers: &mut Vec<EventTimer>,
    ) -> Firing {
        if !self.windows.contains_key(&(key, window.start)) {
            return Firing::default();
        }
        let Ok(handle) = self.handle(key, window) else {
            return Firing::default();
        };
        let outcome = self
            .instance
            .on_processing_time(handle, window, time, watermark);
        self.decided(key, window.start, outcome, timers, false)
    }

    /// Sessions starting at `from` (in order) merged into the one starting
    /// at `into`, now `window`: their triggers merge into one, kept under
    /// the merged window's start.
    pub fn merge(
        &mut self,
        key: KeyId,
        into: i64,
        from: &[i64],
        window: Window,
        timers: &mut Vec<EventTimer>,
    ) -> Firing {
        let mut firing = Firing::default();
        for &other in from {
            // Its timers go with it (a merge decision asks again for what
            // the merged window needs).
            self.void_timers(key, other);
            // No state: as new and late-only, which merges like any other.
            let state = self
                .windows
                .remove(&(key, other))
                .unwrap_or_else(WindowState::untracked);
            if matches!(state.interest, Interest::After(_)) {
                self.counting -= 1;
            }
            // Elements the absorbed trigger had not heard of yet are the
            // merged window's now (even if it kept no state).
            if state.seen > 0 {
                let w = self.untracked(key, into);
                w.seen += state.seen;
                w.min = w.min.min(state.min);
                w.max = w.max.max(state.max);
                w.seen_under = w.seen_under.max(state.seen_under);
            }
            // A fresh state (never called, or restored as new) merges as
            // the trigger's new state would: skipping it would leave the
            // merged window's interest as it was before a restart.
            // The shared state of a stateless trigger is `into`'s too: the
            // absorbed window's is made for the merge.
            let from_handle = match state.handle {
                Handle::Live(h) if self.shared != Some(h) => h,
                Handle::Live(_) | Handle::Fresh => match self.instance.create(window) {
                    Ok(h) => h,
                    Err(e) => {
                        self.fail(key, into, e);
                        continue;
                    }
                },
                Handle::Failed(_) => continue,
            };
            let into_window = Window {
                start: into,
                end: window.end,
            };
            if let Ok(into_handle) = self.handle(key, into_window) {
                let outcome = self.instance.merge(into_handle, from_handle, window);
                let v = self.decided(key, into, outcome, timers, false);
                firing.fire |= v.fire;
                firing.purge |= v.purge;
            }
            self.give_back(from_handle);
        }
        if into != window.start {
            // Timers are queued under a window's start: `into`'s no longer
            // name the merged window.
            self.void_timers(key, into);
            if let Some(state) = self.windows.remove(&(key, into)) {
                self.windows.insert((key, window.start), state);
            }
        }
        firing
    }

    /// Forgets a window's trigger and its timers (the window is past its
    /// allowed lateness); see [`Self::take_void`].
    pub fn drop_window(&mut self, key: KeyId, start: i64) {
        self.void_timers(key, start);
        self.release_state(key, start);
    }

    /// Forgets a window's trigger state, giving its handle back.
    fn release_state(&mut self, key: KeyId, start: i64) {
        if let Some(state) = self.windows.remove(&(key, start)) {
            if matches!(state.interest, Interest::After(_)) {
                self.counting -= 1;
            }
            if let Handle::Live(h) = state.handle
                && self.quarantined.is_none()
            {
                self.give_back(h);
            }
        }
    }

    /// Forgets every window's trigger and timer (a Kafka consumer that lost
    /// its partitions hands their windows on).
    pub fn clear(&mut self) {
        let keys: Vec<(KeyId, i64)> = self.windows.keys().copied().collect();
        for (key, start) in keys {
            self.drop_window(key, start);
        }
        self.processing.clear();
        self.pending.clear();
        self.void.clear();
    }

    /// Starts of the windows of `key` with trigger state, for cleaning up
    /// sliding windows.
    pub fn starts_of(&self, key: KeyId) -> Vec<i64> {
        self.windows
            .keys()
            .filter(|(k, _)| *k == key)
            .map(|&(_, s)| s)
            .collect()
    }

    /// The records a checkpoint keeps: every window whose trigger is not as
    /// new and late-only. `event_timers` are the pending trigger timers per
    /// (key, window start).
    pub fn records(
        &mut self,
        event_timers: &HashMap<(KeyId, i64), Vec<i64>>,
    ) -> Vec<TriggerRecord> {
        let mut processing: HashMap<(KeyId, i64), Vec<i64>> = HashMap::new();
        for &(due, key, start) in &self.processing {
            processing.entry((key, start)).or_default().push(due);
        }
        let keys: Vec<(KeyId, i64)> = self.windows.keys().copied().collect();
        let mut records = Vec::new();
        for (key, start) in keys {
            let snapshot = {
                let Some(w) = self.windows.get(&(key, start)) else {
                    continue;
                };
                match (&w.handle, w.changed) {
                    (Handle::Live(h), true) => Some(*h),
                    _ => None,
                }
            };
            if let Some(h) = snapshot {
                match self.instance.snapshot(h) {
                    Ok(bytes) => {
                        if let Some(w) = self.windows.get_mut(&(key, start)) {
                            w.snapshot = bytes;
                            w.changed = false;
                        }
                    }
                    Err(e) => {
                        self.fail(key, start, e);
                    }
                }
            }
            let Some(w) = self.windows.get(&(key, start)) else {
                continue;
            };
            let state = match &w.handle {
                Handle::Failed(why) => Err(why.to_string()),
                Handle::Live(_) => Ok(w.snapshot.clone()),
                Handle::Fresh => Ok(Vec::new()),
            };
            let event = event_timers.get(&(key, start)).cloned().unwrap_or_default();
            let proc = processing.remove(&(key, start)).unwrap_or_default();
            let trivial = matches!(&state, Ok(b) if b.is_empty())
                && w.interest == Interest::Late
                && w.seen == 0
                && event.is_empty()
                && proc.is_empty();
            if !trivial {
                records.push(TriggerRecord {
                    key,
                    start,
                    state,
                    interest: w.interest,
                    seen: (w.seen, w.min, w.max, w.seen_under),
                    event_timers: event,
                    processing_timers: proc,
                });
            }
        }
        records.sort_by_key(|r| (r.key, r.start));
        records
    }

    /// Takes back a checkpoint's trigger records (the event timers are the
    /// caller's to re-create).
    pub fn restore(&mut self, records: &[TriggerRecord]) {
        for r in records {
            let handle = match &r.state {
                Err(why) => Handle::Failed(Arc::from(why.as_str())),
                Ok(bytes) if bytes.is_empty() => Handle::Fresh,
                Ok(bytes) => match self.instance.restore(bytes, self.state_version) {
                    Ok(h) => Handle::Live(h),
                    Err(e) => {
                        self.windows
                            .insert((r.key, r.start), WindowState::new(Handle::Fresh));
                        self.counting += 1;
                        self.fail(r.key, r.start, e);
                        continue;
                    }
                },
            };
            let mut state = WindowState::new(handle);
            state.interest = r.interest;
            (state.seen, state.min, state.max, state.seen_under) = r.seen;
            state.changed = false;
            if let Ok(bytes) = &r.state {
                state.snapshot = bytes.clone();
            }
            if matches!(r.interest, Interest::After(_)) {
                self.counting += 1;
            }
            self.windows.insert((r.key, r.start), state);
            for &due in &r.processing_timers {
                self.processing.insert((due, r.key, r.start));
            }
            if !r.event_timers.is_empty() || !r.processing_timers.is_empty() {
                let pending = self.pending.entry((r.key, r.start)).or_default();
                pending.event.extend(r.event_timers.iter().copied());
                pending
                    .processing
                    .extend(r.processing_timers.iter().copied());
            }
        }
    }

    /// The trigger plugin's (name, version, state version), for checkpoints.
    pub fn identity(&self) -> (String, String, u32) {
        match self.instance.info() {
            Some(i) => (i.name.clone(), i.version.clone(), i.state_version),
            None => (String::new(), String::new(), 0),
        }
    }
}

/// The wall clock in milliseconds since the epoch: processing time.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One step of a script run against [`Triggers`].
    #[derive(Clone, Copy)]
    enum Step {
        /// An element at `time` of `window` under `watermark`; `new` window.
        Element(Window, i64, i64, bool),
        /// Untold elements of `window` told (as before its end timer).
        Pending(Window),
        /// The watermark reached `window`'s end.
        End(Window, i64),
        /// The session at the first start absorbed the one at the second,
        /// becoming the window.
        Merge(i64, i64, Window),
    }

    fn early() -> Triggers {
        let instance = crate::plugin::native::trigger("early", r#"{"every_events": 3}"#).unwrap();
        let limits = PluginLimits {
            quarantine_after: 3,
            ..PluginLimits::default()
        };
        Triggers::new(instance, Vec::new(), &limits)
    }

    fn run(triggers: &mut Triggers, steps: &[Step]) -> Vec<Firing> {
        let mut timers = Vec::new();
        let none = |_: &[(usize, usize)]| Vec::new();
        steps
            .iter()
            .map(|&step| match step {
                Step::Element(w, t, wm, new) => {
                    triggers.on_element(1, w, t, wm, new, &mut timers, none)
                }
                Step::Pending(w) => triggers.tell_pending(1, w, &mut timers, none),
                Step::End(w, wm) => triggers.on_event_time(1, w, w.end, wm, &mut timers),
                Step::Merge(into, from, w) => triggers.merge(1, into, &[from], w, &mut timers),
            })
            .collect()
    }

    /// A checkpoint taken between any two steps and restored into a new
    /// instance decides every later step as the uninterrupted run does:
    /// including a merge with a window whose state was as new (recorded
    /// without bytes) and elements counted after the window's end.
    #[test]
    fn a_restored_checkpoint_decides_as_the_uninterrupted_run() {
        let a = Window { start: 0, end: 10 };
        let b = Window { start: 12, end: 20 };
        let ab = Window { start: 0, end: 20 };
        let c = Window { start: 30, end: 40 };
        let d = Window { start: 42, end: 50 };
        let cd = Window { start: 30, end: 50 };
        let steps = [
            Step::Element(a, 0, 0, true),
            Step::Element(a, 1, 0, false),
            Step::Element(a, 2, 0, false),
            Step::Element(a, 3, 0, false),
            Step::Pending(a),
            Step::End(a, 10),
            Step::Element(b, 12, 10, true),
            Step::Element(b, 13, 10, false),
            Step::Element(b, 14, 10, false),
            Step::Element(b, 15, 10, false),
            Step::Merge(0, 12, ab),
            Step::Element(ab, 5, 10, false),
            Step::Element(ab, 6, 10, false),
            Step::Element(ab, 7, 10, false),
            Step::Element(ab, 8, 25, false),
            Step::Pending(ab),
            Step::End(ab, 25),
            // Two sessions fired on time, then bridged by late elements.
            Step::Element(c, 30, 25, true),
            Step::End(c, 40),
            Step::Element(d, 42, 40, true),
            Step::End(d, 50),
            Step::Merge(30, 42, cd),
            Step::Element(cd, 41, 50, false),
            Step::Element(cd, 41, 50, false),
            Step::Element(cd, 41, 50, false),
        ];
        let expected = run(&mut early(), &steps);
        let fired = expected.iter().filter(|v| v.fire).count();
        assert_eq!(fired, 9, "{expected:?}");
        for split in 0..=steps.len() {
            let mut first = early();
            let mut got = run(&mut first, &steps[..split]);
            let records = first.records(&HashMap::new());
            let mut second = early();
            second.restore(&records);
            got.extend(run(&mut second, &steps[split..]));
            assert_eq!(got, expected, "checkpoint after step {split}");
        }
    }

    /// The event-time trigger, counting the states it makes and is given back.
    struct Counting {
        inner: Box<dyn TriggerPolicy>,
        made: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        given_back: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl TriggerPolicy for Counting {
        fn label(&self) -> &str {
            self.inner.label()
        }
        fn info(&self) -> Option<&crate::plugin::PluginInfo> {
            self.inner.info()
        }
        fn watches(&self) -> &[String] {
            self.inner.watches()
        }
        fn is_poisoned(&self) -> bool {
            self.inner.is_poisoned()
        }
        fn reopen(&mut self) -> Result<(), PluginError> {
            self.inner.reopen()
        }
        fn create(&mut self, window: Window) -> Result<WindowTrigger, PluginError> {
            self.made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.inner.create(window)
        }
        fn restore(&mut self, state: &[u8], version: u32) -> Result<WindowTrigger, PluginError> {
            self.made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.inner.restore(state, version)
        }
        fn on_elements(
            &mut self,
            t: WindowTrigger,
            window: Window,
            batch: &Elements,
            watermark: i64,
        ) -> Result<Decision, PluginError> {
            self.inner.on_elements(t, window, batch, watermark)
        }
        fn on_event_time(
            &mut self,
            t: WindowTrigger,
            window: Window,
            time: i64,
            watermark: i64,
        ) -> Result<Decision, PluginError> {
            self.inner.on_event_time(t, window, time, watermark)
        }
        fn on_processing_time(
            &mut self,
            t: WindowTrigger,
            window: Window,
            time: i64,
            watermark: i64,
        ) -> Result<Decision, PluginError> {
            self.inner.on_processing_time(t, window, time, watermark)
        }
        fn merge(
            &mut self,
            into: WindowTrigger,
            from: WindowTrigger,
            window: Window,
        ) -> Result<Decision, PluginError> {
            assert_ne!(into, from, "a merge of a state into itself");
            self.inner.merge(into, from, window)
        }
        fn snapshot(&mut self, t: WindowTrigger) -> Result<Vec<u8>, PluginError> {
            self.inner.snapshot(t)
        }
        fn release(&mut self, t: WindowTrigger) -> Result<(), PluginError> {
            self.given_back
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.inner.release(t)
        }
    }

    /// A stateless trigger's windows share one state: windows opened,
    /// asked, fired and merged make no state of their own, but for the
    /// absorbed side of each merge (two states, never one twice), and
    /// fire as they always did.
    #[test]
    fn a_stateless_trigger_makes_one_state_for_all_windows() {
        use std::sync::atomic::Ordering::Relaxed;
        let made = std::sync::Arc::default();
        let given_back = std::sync::Arc::default();
        let instance = Box::new(Counting {
            inner: crate::plugin::native::trigger("event-time", "{}").unwrap(),
            made: std::sync::Arc::clone(&made),
            given_back: std::sync::Arc::clone(&given_back),
        });
        let mut triggers = Triggers::new(instance, Vec::new(), &PluginLimits::default());
        let mut steps = Vec::new();
        for i in 0..100 {
            let w = Window {
                start: i * 100,
                end: i * 100 + 10,
            };
            steps.push(Step::Element(w, w.start, w.start, true));
            steps.push(Step::Element(w, w.start + 1, w.start, false));
            steps.push(Step::End(w, w.end));
        }
        let a = Window {
            start: 20_000,
            end: 20_010,
        };
        let b = Window {
            start: 20_012,
            end: 20_020,
        };
        let ab = Window {
            start: 20_000,
            end: 20_020,
        };
        steps.extend([
            Step::Element(a, 20_000, 19_000, true),
            Step::Element(b, 20_012, 19_000, true),
            Step::Merge(20_000, 20_012, ab),
            Step::End(ab, 20_020),
        ]);
        let fired = run(&mut triggers, &steps);
        assert_eq!(fired.iter().filter(|f| f.fire).count(), 101, "{fired:?}");
        assert_eq!(
            made.load(Relaxed),
            2,
            "one shared state and one for the merge"
        );
        assert_eq!(given_back.load(Relaxed), 1, "the merge's own state only");
    }
}
