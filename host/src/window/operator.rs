//! The keyed window operator: routes decoded events into window state and
//! fires windows as the watermark passes them.
//!
//! A plugin that fails does not stop it: the failure becomes an `errors`
//! entry of the windows concerned (see `store` for how the other windows
//! keep their state), so the `Result`s here carry no plugin failure.

use super::sliding::{self, Sliding};
use super::store::{PluginHealth, Timer, TimerKind, WindowStore};
use super::{EmitKind, Window, WindowResult, WindowSpec, session, tumbling};
use crate::decode::KeyId;
use crate::error::PluginError;
use crate::plugin::AggregationInstance;
use crate::state::{CheckpointDelta, HealthState, SlotState, StateError};

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
}

impl WindowOperator {
    /// An operator for `spec`, keeping windows `lateness_ms` past their end,
    /// aggregating with `aggs` (one per configured aggregation, in order).
    pub fn new(
        spec: WindowSpec,
        lateness_ms: i64,
        aggs: Vec<AggregationInstance>,
        batch_size: usize,
    ) -> Self {
        Self {
            spec,
            lateness: lateness_ms.max(0),
            store: WindowStore::new(aggs, batch_size),
        }
    }

    /// Swaps aggregation `a`'s plugin for a new version between batches,
    /// moving open windows to it (see `WindowStore::replace_plugin`).
    /// Returns how many accumulators moved.
    pub fn replace_plugin(
        &mut self,
        a: usize,
        new: crate::plugin::AggregationInstance,
    ) -> Result<usize, String> {
        self.store.replace_plugin(a, new)
    }

    /// Aggregation `a`'s running plugin instance, to describe it.
    pub fn plugin_live(&self, a: usize) -> &crate::plugin::AggregationInstance {
        self.store.instance(a)
    }

    /// The outputs aggregation `a`'s plugin declares now.
    pub fn plugin_outputs(&self, a: usize) -> &[crate::plugin::bindings::OutputSpec] {
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
    /// Late re-emissions it causes are appended to `out`.
    pub fn on_event(
        &mut self,
        key: KeyId,
        time: i64,
        values: &[Option<f64>],
        watermark: i64,
        out: &mut Vec<WindowResult>,
    ) -> Result<EventOutcome, PluginError> {
        let store = &mut self.store;
        let routed = match self.spec {
            WindowSpec::Tumbling { size, offset } => tumbling::on_event(
                store,
                (size, offset, self.lateness),
                key,
                time,
                values,
                watermark,
                out,
            ),
            WindowSpec::Sliding {
                size,
                slide,
                offset,
            } => sliding::on_event(
                store,
                Sliding {
                    size,
                    slide,
                    offset,
                    lateness: self.lateness,
                },
                key,
                time,
                values,
                watermark,
                out,
            ),
            WindowSpec::Session { gap } => session::on_event(
                store,
                (gap, self.lateness),
                key,
                time,
                values,
                watermark,
                out,
            ),
        };
        Ok(match routed {
            Ok(()) => EventOutcome::Accepted,
            Err(window) => EventOutcome::Late(window),
        })
    }

    /// Fires and cleans up every window the new `watermark` has passed, in
    /// order of time, then key, then window start.
    pub fn on_watermark(
        &mut self,
        watermark: i64,
        out: &mut Vec<WindowResult>,
    ) -> Result<(), PluginError> {
        if !self.store.has_due(watermark) {
            return Ok(());
        }
        self.store.flush_all();
        while let Some(timer) = self.store.pop_due(watermark) {
            match self.sliding() {
                Some(geo) => sliding::on_timer(&mut self.store, geo, timer, out),
                None => slot_timer(&mut self.store, timer, out),
            }
        }
        Ok(())
    }
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
        self.store.clear()
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
    pub fn checkpoint_into(
        &mut self,
        delta: &mut CheckpointDelta,
    ) -> Result<(u64, u32), StateError> {
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
    pub fn restore(&mut self, health: &[HealthState], slots: &[(SlotState, u32)], watermark: i64) {
        self.store.restore_health(health);
        for (slot, crc) in slots {
            self.store.restore_slot(slot, *crc);
        }
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

/// A due timer for a window kept as one slot (tumbling windows, sessions).
fn slot_timer(store: &mut WindowStore, timer: Timer, out: &mut Vec<WindowResult>) {
    let Some(id) = store.find(timer.key, timer.start) else {
        return;
    };
    match timer.kind {
        TimerKind::Fire => {
            let outputs = store.finish(id);
            if let Some(window) = store.bounds(id) {
                out.push(WindowResult {
                    key: timer.key,
                    window,
                    emit: EmitKind::OnTime,
                    outputs: outputs.values,
                    errors: outputs.errors,
                });
            }
        }
        TimerKind::Cleanup => store.close(id),
    }
}
