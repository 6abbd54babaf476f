//! Sliding windows, kept as panes.
//!
//! A window of `size` starting every `slide` overlaps `size / slide` others, so
//! adding each event to every window would multiply the work. Instead the
//! timeline is cut into panes of `gcd(size, slide)`: each event updates exactly
//! one pane, and a window's result merges the panes it covers when it fires,
//! through partial aggregates when the window is settled (`store::partials`),
//! so that firing costs a few plugin calls whatever `size / slide` is.

use super::store::{Fold, Timer, TimerKind, WindowStore};
use super::{EmitKind, Window, WindowResult, align, gcd};
use crate::decode::{KeyId, Row};

/// Sliding-window geometry in milliseconds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sliding {
    pub size: i64,
    pub slide: i64,
    pub offset: i64,
    pub lateness: i64,
}

impl Sliding {
    fn pane_size(&self) -> i64 {
        gcd(self.size, self.slide)
    }

    /// The first and last starts of the windows that contain the pane
    /// starting at `pane`.
    pub(super) fn start_bounds(&self, pane: i64) -> (i64, i64) {
        let last = align(pane, self.slide, self.offset);
        // Windows start every `slide`; those with start + size > pane contain it.
        let first = last - ((self.size - 1 - (pane - last)) / self.slide) * self.slide;
        (first, last)
    }

    /// The first window start after `after`, counting from the start `from`
    /// (`from` itself when it is after).
    pub(super) fn next_start_after(&self, from: i64, after: i64) -> i64 {
        if from > after {
            return from;
        }
        let steps = (i128::from(after) - i128::from(from)) / i128::from(self.slide) + 1;
        i64::try_from(i128::from(from) + steps * i128::from(self.slide)).unwrap_or(i64::MAX)
    }

    /// Starts of the windows that contain the pane starting at `pane`, earliest first.
    pub(super) fn window_starts(&self, pane: i64) -> impl Iterator<Item = i64> + use<> {
        let (first, last) = self.start_bounds(pane);
        let slide = self.slide;
        (0..)
            .map(move |k| first + k * slide)
            .take_while(move |&s| s <= last)
    }
}

/// Where one event went: its pane and the windows it opened.
pub(super) struct Routed {
    /// The pane's start.
    pub pane: i64,
    /// Window starts `s` with `opened.0 < s <= opened.1` are windows the
    /// event's pane opened: it is their only pane. Empty when the pane existed.
    pub opened: (i64, i64),
}

impl Routed {
    /// Whether the window starting at `start` was opened by this event.
    pub fn opened(&self, start: i64) -> bool {
        self.opened.0 < start && start <= self.opened.1
    }
}

/// Routes one event into its pane; `Err(window)` when the event is late for
/// every window.
///
/// A new pane opens the windows holding no other pane of the key: only
/// those get a firing timer (the others have one) and are new to triggers.
pub(super) fn on_event(
    store: &mut WindowStore,
    geo: Sliding,
    key: KeyId,
    time: i64,
    values: Row<'_>,
    watermark: i64,
) -> Result<Routed, Window> {
    let pane_size = geo.pane_size();
    let pane = align(time, pane_size, geo.offset);
    let last_start = align(pane, geo.slide, geo.offset);
    let last_window = Window {
        start: last_start,
        end: last_start + geo.size,
    };
    if watermark >= last_window.end.saturating_add(geo.lateness) {
        return Err(last_window);
    }
    let (id, opened) = match store.find(key, pane) {
        Some(id) => (id, (0, 0)),
        None => {
            // The key's nearest panes before and after this one: a window
            // is new when it holds neither.
            let before = store.starting_at_or_before(key, pane).next();
            let before = before.and_then(|id| store.bounds(id)).map(|b| b.start);
            let after = store.range(key, pane + 1, pane + geo.size).first().copied();
            let after = after.and_then(|id| store.bounds(id)).map(|b| b.start);
            let opened = (
                before.unwrap_or(i64::MIN),
                after.map_or(i64::MAX, |a| a - geo.size),
            );
            let id = store.open(
                key,
                Window {
                    start: pane,
                    end: pane + pane_size,
                },
            );
            for start in geo.window_starts(pane) {
                let end = start + geo.size;
                if end > watermark && opened.0 < start && start <= opened.1 {
                    store.add_timer(Timer {
                        time: end,
                        kind: TimerKind::Fire,
                        key,
                        start,
                    });
                }
            }
            store.add_timer(Timer {
                time: last_window.end.saturating_add(geo.lateness),
                kind: TimerKind::Cleanup,
                key,
                start: pane,
            });
            (id, opened)
        }
    };
    store.push(id, values, time);
    Ok(Routed { pane, opened })
}

/// Emits the window of `key` starting at `start`, from its panes as `fold`
/// says (see `store::partials`); nothing when it has no pane.
pub(super) fn fire(
    store: &mut WindowStore,
    geo: Sliding,
    key: KeyId,
    start: i64,
    emit: EmitKind,
    out: &mut Vec<WindowResult>,
) {
    let window = Window {
        start,
        end: start + geo.size,
    };
    // Early firings see panes that still change with every event: partials
    // would be rebuilt at once. Settled windows (on time, late) use them.
    let fold = match emit {
        EmitKind::Early => Fold::Panes,
        EmitKind::Late => Fold::Partials,
        EmitKind::OnTime => Fold::PartialsOnce,
    };
    let Some(outputs) = store.finish_window(key, window, fold) else {
        return;
    };
    out.push(WindowResult {
        key,
        window,
        emit,
        outputs: outputs.values,
        errors: outputs.errors,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_of_a_pane() {
        let geo = Sliding {
            size: 10_000,
            slide: 5_000,
            offset: 0,
            lateness: 0,
        };
        assert_eq!(geo.pane_size(), 5_000);
        assert_eq!(geo.window_starts(5_000).collect::<Vec<_>>(), vec![0, 5_000]);
        let geo = Sliding {
            size: 10_000,
            slide: 4_000,
            offset: 0,
            lateness: 0,
        };
        // Panes of 2s; the pane [6s, 8s) lies in windows starting at 0s and 4s.
        assert_eq!(geo.window_starts(6_000).collect::<Vec<_>>(), vec![0, 4_000]);
        // The pane [8s, 10s) lies in windows starting at 0s, 4s and 8s.
        assert_eq!(
            geo.window_starts(8_000).collect::<Vec<_>>(),
            vec![0, 4_000, 8_000]
        );
        assert_eq!(
            geo.window_starts(-2_000).collect::<Vec<_>>(),
            vec![-8_000, -4_000]
        );
    }
}
