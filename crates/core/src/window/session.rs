//! Session windows: per key, a burst of events separated from the next by more
//! than the gap. An event opens `[t, t + gap)`; sessions that touch or overlap
//! it merge into one, which may bridge sessions that were apart until now.
//!
//! A session's firing and cleanup timers may lag behind its end: an event
//! that only moves the end of a session that has not fired leaves them be,
//! and a timer that falls due before the session's end (or end plus the
//! allowed lateness) is set again there instead of running. Timers of one
//! watermark step still run in (time, kind, key, start) order, so what is
//! emitted, and when, is what timers moved on every event would give.

use super::Window;
use super::store::{Timer, TimerKind, WindowStore};
use crate::decode::{KeyId, Row};

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

/// Sets a session's timers: the firing one while its end is ahead of the
/// watermark (a session the watermark has passed has fired), and the
/// cleanup one.
fn add_timers(store: &mut WindowStore, key: KeyId, window: Window, lateness: i64, watermark: i64) {
    let [fire, cleanup] = timers(key, window, lateness);
    if window.end > watermark {
        store.add_timer(fire);
    }
    store.add_timer(cleanup);
}

/// Where an event went: its session, and which sessions that became.
pub(super) struct Routed {
    /// The session holding the event now.
    pub window: Window,
    /// It was opened by this event.
    pub new: bool,
    /// The start the session had before this event (it may grow earlier).
    pub was: i64,
    /// Starts of the other sessions merged into it, in order.
    pub absorbed: Vec<i64>,
}

/// Routes one event into its session; `Err(window)` when it is late.
pub(super) fn on_event(
    store: &mut WindowStore,
    (gap, lateness): (i64, i64),
    key: KeyId,
    time: i64,
    values: Row<'_>,
    watermark: i64,
) -> Result<Routed, Window> {
    let own = Window {
        start: time,
        end: time + gap,
    };
    // Sessions of a key never touch one another, so the ones meeting `own` are
    // the latest that start by its end, as long as they reach its start.
    let mut meeting = store
        .starting_at_or_before(key, own.end)
        .take_while(|&id| store.bounds(id).is_some_and(|w| w.end >= own.start));
    let (latest, more) = (meeting.next(), meeting.next().is_some());
    drop(meeting);
    // Most events land in one session that is open already: it only grows
    // (or not at all), and nothing needs a list or a lookup.
    if let (Some(id), false) = (latest, more)
        && let Some(was) = store.bounds(id)
    {
        let window = Window {
            start: was.start.min(own.start),
            end: was.end.max(own.end),
        };
        if window.start == was.start && was.end > watermark {
            // Only the end moved, and the session has not fired: its timers
            // stay where they are and move on when they fall due (see
            // `WindowOperator::on_watermark`), one move per watermark step
            // rather than two removals and two insertions per event.
            store.set_bounds(id, window);
        } else if window != was {
            for timer in timers(key, was, lateness) {
                store.remove_timer(&timer);
            }
            store.set_bounds(id, window);
            add_timers(store, key, window, lateness, watermark);
        }
        store.push(id, values, time);
        return Ok(Routed {
            window,
            new: false,
            was: was.start,
            absorbed: Vec::new(),
        });
    }
    let mut touching: Vec<usize> = store
        .starting_at_or_before(key, own.end)
        .take_while(|&id| store.bounds(id).is_some_and(|w| w.end >= own.start))
        .collect();
    touching.reverse();

    let routed = if let Some(&first) = touching.first() {
        let mut merged = own;
        let mut starts = Vec::with_capacity(touching.len());
        for &id in &touching {
            if let Some(w) = store.bounds(id) {
                merged.start = merged.start.min(w.start);
                merged.end = merged.end.max(w.end);
                starts.push(w.start);
                for timer in timers(key, w, lateness) {
                    store.remove_timer(&timer);
                }
            }
        }
        for &other in &touching[1..] {
            store.merge_into(first, other);
        }
        store.set_bounds(first, merged);
        Routed {
            window: merged,
            new: false,
            was: starts.first().copied().unwrap_or(merged.start),
            absorbed: starts.into_iter().skip(1).collect(),
        }
    } else {
        if watermark >= own.end.saturating_add(lateness) {
            return Err(own);
        }
        store.open(key, own);
        Routed {
            window: own,
            new: true,
            was: own.start,
            absorbed: Vec::new(),
        }
    };
    let window = routed.window;
    add_timers(store, key, window, lateness, watermark);
    if let Some(id) = store.find(key, window.start) {
        store.push(id, values, time);
    }
    Ok(routed)
}
