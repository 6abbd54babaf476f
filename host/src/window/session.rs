//! Session windows: per key, a burst of events separated from the next by more
//! than the gap. An event opens `[t, t + gap)`; sessions that touch or overlap
//! it merge into one, which may bridge sessions that were apart until now.

use super::store::{Timer, TimerKind, WindowStore};
use super::{EmitKind, Window, WindowResult};
use crate::decode::KeyId;

fn timers(key: KeyId, window: Window, lateness: i64) -> [Timer; 2] {
    [
        Timer {
            time: window.end,
            kind: TimerKind::Fire,
            key,
            start: window.start,
        },
        Timer {
            time: window.end.saturating_add(lateness),
            kind: TimerKind::Cleanup,
            key,
            start: window.start,
        },
    ]
}

/// Routes one event into its session; `Err(window)` when it is late.
pub(super) fn on_event(
    store: &mut WindowStore,
    (gap, lateness): (i64, i64),
    key: KeyId,
    time: i64,
    values: &[Option<f64>],
    watermark: i64,
    out: &mut Vec<WindowResult>,
) -> Result<(), Window> {
    let own = Window {
        start: time,
        end: time + gap,
    };
    // Sessions of a key never touch one another, so the ones meeting `own` are
    // the latest that start by its end, as long as they reach its start.
    let mut touching: Vec<usize> = store
        .starting_at_or_before(key, own.end)
        .take_while(|&id| store.bounds(id).is_some_and(|w| w.end >= own.start))
        .collect();
    touching.reverse();

    let (id, window) = if let Some(&first) = touching.first() {
        let mut merged = own;
        for &id in &touching {
            if let Some(w) = store.bounds(id) {
                merged.start = merged.start.min(w.start);
                merged.end = merged.end.max(w.end);
                for timer in timers(key, w, lateness) {
                    store.remove_timer(&timer);
                }
            }
        }
        for &other in &touching[1..] {
            store.merge_into(first, other);
        }
        store.set_bounds(first, merged);
        (first, merged)
    } else {
        if watermark >= own.end.saturating_add(lateness) {
            return Err(own);
        }
        (store.open(key, own), own)
    };
    let [fire, cleanup] = timers(key, window, lateness);
    if window.end > watermark {
        store.add_timer(fire);
    }
    store.add_timer(cleanup);
    store.push(id, values, time);
    if window.end <= watermark {
        let outputs = store.finish(id);
        out.push(WindowResult {
            key,
            window,
            emit: EmitKind::Late,
            outputs: outputs.values,
            errors: outputs.errors,
        });
    }
    Ok(())
}
