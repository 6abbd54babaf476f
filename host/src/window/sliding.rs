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
use crate::decode::KeyId;

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

    /// Starts of the windows that contain the pane starting at `pane`, earliest first.
    pub(super) fn window_starts(&self, pane: i64) -> impl Iterator<Item = i64> + use<> {
        let last = align(pane, self.slide, self.offset);
        let (size, slide) = (self.size, self.slide);
        // Windows start every `slide`; those with start + size > pane contain it.
        let first = last - ((size - 1 - (pane - last)) / slide) * slide;
        (0..)
            .map(move |k| first + k * slide)
            .take_while(move |&s| s <= last)
    }
}

/// Routes one event into its pane. Returns the pane's start and whether it
/// was just opened; `Err(window)` when the event is late for every window.
pub(super) fn on_event(
    store: &mut WindowStore,
    geo: Sliding,
    key: KeyId,
    time: i64,
    values: &[Option<f64>],
    watermark: i64,
) -> Result<(i64, bool), Window> {
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
    let (id, new) = match store.find(key, pane) {
        Some(id) => (id, false),
        None => {
            let id = store.open(
                key,
                Window {
                    start: pane,
                    end: pane + pane_size,
                },
            );
            for start in geo.window_starts(pane) {
                let end = start + geo.size;
                if end > watermark {
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
            (id, true)
        }
    };
    store.push(id, values, time);
    Ok((pane, new))
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
