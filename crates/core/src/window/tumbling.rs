//! Tumbling windows: fixed length, back to back, one window per event.

use super::store::{Timer, TimerKind, WindowStore};
use super::{Window, align};
use crate::decode::{KeyId, Row};

/// Routes one event into its tumbling window. Returns the window and whether
/// it was just opened; `Err(window)` when the event is late for it.
pub(super) fn on_event(
    store: &mut WindowStore,
    (size, offset, lateness): (i64, i64, i64),
    key: KeyId,
    time: i64,
    values: Row<'_>,
    watermark: i64,
) -> Result<(Window, bool), Window> {
    let start = align(time, size, offset);
    let window = Window {
        start,
        end: start + size,
    };
    if watermark >= window.end.saturating_add(lateness) {
        return Err(window);
    }
    let (id, new) = match store.find(key, start) {
        Some(id) => (id, false),
        None => {
            let id = store.open(key, window);
            if window.end > watermark {
                store.add_timer(Timer {
                    time: window.end,
                    kind: TimerKind::Fire,
                    key,
                    start,
                });
            }
            store.add_timer(Timer {
                time: window.end.saturating_add(lateness),
                kind: TimerKind::Cleanup,
                key,
                start,
            });
            (id, true)
        }
    };
    store.push(id, values, time);
    Ok((window, new))
}
