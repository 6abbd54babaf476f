//! Tumbling windows: fixed length, back to back, one window per event.

use super::store::{Timer, TimerKind, WindowStore};
use super::{EmitKind, Window, WindowResult, align};
use crate::decode::KeyId;

/// Routes one event into its tumbling window; `Err(window)` when it is late for it.
#[allow(clippy::too_many_arguments)]
pub(super) fn on_event(
    store: &mut WindowStore,
    (size, offset, lateness): (i64, i64, i64),
    key: KeyId,
    time: i64,
    values: &[Option<f64>],
    watermark: i64,
    out: &mut Vec<WindowResult>,
) -> Result<(), Window> {
    let start = align(time, size, offset);
    let window = Window {
        start,
        end: start + size,
    };
    if watermark >= window.end.saturating_add(lateness) {
        return Err(window);
    }
    let id = match store.find(key, start) {
        Some(id) => id,
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
            id
        }
    };
    store.push(id, values, time);
    if window.end <= watermark {
        // Within the allowed lateness of a window that has already fired.
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
