//! The trigger half of the law checker behind `sluice plugin test`: drives
//! a trigger through generated histories of one window and checks what the
//! host relies on.
//!
//! The host calls a trigger for one window at a time: with elements when
//! its interest asks for them, when the watermark reaches a timer it set or
//! the window's end, when a processing-time delay it asked for falls due.
//! Checkpoints and hot reloads carry each window's trigger state as
//! snapshot bytes, and a restarted run must decide exactly as the
//! uninterrupted one would have. So a correct trigger:
//! - decides the same for the same calls (no hidden clock or randomness);
//! - decides the rest of a history the same after its state is snapshotted
//!   and restored at any point;
//! - refuses to restore a state version it does not know;
//! - asks, when called for event time T, only for timers later than T (the
//!   host takes an earlier one as a failure: it would be due at once, again
//!   and again).
//!
//! Histories come from a deterministic PRNG, so `--seed` repeats a run; a
//! failure names the case, the call and both decisions.

use std::collections::BTreeSet;

use super::laws::{LawOptions, LawReport, LawResult, Outcome, Rng};
use super::{Decision, ElementInterest, Elements, PluginError, TriggerPolicy, Window};

const DETERMINISTIC: &str = "the same calls give the same decisions";
const ROUND_TRIP: &str = "a restored state decides as the original";
const UNKNOWN_VERSION: &str = "restore refuses an unknown state version";
const LATER_TIMERS: &str = "event-time timers are later than the time called for";

/// Calls one history makes at most: a trigger that keeps asking for
/// timers is cut off there rather than run for ever.
const MAX_CALLS: usize = 2_000;

/// Checks every trigger law against `instance` (an opened trigger).
pub fn check(instance: &mut dyn TriggerPolicy, options: &LawOptions) -> LawReport {
    let version = instance.info().map_or(0, |i| i.state_version);
    let mut results = Vec::new();
    let mut record = |law: &'static str, outcome: Outcome| results.push(LawResult { law, outcome });

    record(
        DETERMINISTIC,
        run(instance, options, 0, |t, case| {
            let first = history(t, case, None)?;
            t.reopen()?;
            let second = history(t, case, None)?;
            Ok(same(&second.decisions, &first.decisions))
        }),
    );
    record(
        ROUND_TRIP,
        run(instance, options, 1, |t, case| {
            let whole = history(t, case, None)?;
            let restored = history(t, case, Some((case.restore_at, version)))?;
            Ok(same(&restored.decisions, &whole.decisions))
        }),
    );
    record(
        UNKNOWN_VERSION,
        if version == 0 {
            Outcome::Skipped("keeps no state per window (state version 0)".into())
        } else {
            run(instance, options, 2, |t, case| {
                unknown_version(t, case, version)
            })
        },
    );
    record(
        LATER_TIMERS,
        run(instance, options, 3, |t, case| {
            Ok(history(t, case, None)?.early_timer)
        }),
    );
    LawReport { results }
}

/// One generated history: the window and the seed of its calls.
#[derive(Debug, Clone, Copy)]
struct Case {
    seed: u64,
    window: Window,
    /// The call before which a round trip snapshots and restores the state.
    restore_at: usize,
}

/// Runs a law over `options.cases` generated cases; the first failure (or
/// plugin error) ends it. The instance is reopened after an error, so that
/// the next law starts from a live one.
fn run(
    instance: &mut dyn TriggerPolicy,
    options: &LawOptions,
    law: u64,
    mut check: impl FnMut(&mut dyn TriggerPolicy, &Case) -> Result<Option<String>, PluginError>,
) -> Outcome {
    let mut rng = Rng::new(options.seed ^ law.wrapping_mul(0x2545_f491_4f6c_dd1d));
    for index in 0..options.cases {
        let start = (rng.below(1_000) as i64) * 1_000;
        let size = [1_000, 10_000, 60_000][rng.below(3) as usize];
        let case = Case {
            seed: rng.next(),
            window: Window {
                start,
                end: start + size,
            },
            restore_at: rng.below(24) as usize,
        };
        match check(instance, &case) {
            Ok(None) => {}
            Ok(Some(why)) => {
                return Outcome::Fail(format!("case {index} ({:?}): {why}", case.window));
            }
            Err(e) => {
                let _ = instance.reopen();
                return Outcome::Fail(format!("case {index}: {e}"));
            }
        }
    }
    Outcome::Pass(options.cases)
}

/// `None` when `got` equals `want`; otherwise the first call they differ at.
fn same(got: &[String], want: &[String]) -> Option<String> {
    let at = got
        .iter()
        .zip(want)
        .position(|(g, w)| g != w)
        .unwrap_or(got.len().min(want.len()));
    match (got.get(at), want.get(at)) {
        (None, None) => None,
        (g, w) => Some(format!(
            "call {at}: got {}, want {}",
            g.map_or("no call", String::as_str),
            w.map_or("no call", String::as_str)
        )),
    }
}

/// Restoring a window's state with a version one above the trigger's must fail.
fn unknown_version(
    t: &mut dyn TriggerPolicy,
    case: &Case,
    version: u32,
) -> Result<Option<String>, PluginError> {
    let handle = t.create(case.window)?;
    let batch = Elements {
        count: 1,
        min_time: case.window.start,
        max_time: case.window.start,
        preview: vec![Some(1.0); t.watches().len()],
    };
    t.on_elements(handle, case.window, &batch, case.window.start - 1)?;
    let bytes = t.snapshot(handle)?;
    t.release(handle)?;
    if bytes.is_empty() {
        // An empty snapshot is a state as new, which any version reads: this
        // case says nothing about versions.
        return Ok(None);
    }
    let next = version.saturating_add(1);
    match t.restore(&bytes, next) {
        Ok(restored) => {
            t.release(restored)?;
            Ok(Some(format!(
                "restored a state of version {next}, but it writes version {version}"
            )))
        }
        Err(_) => {
            // The refusal may have cost the instance; start the next case afresh.
            t.reopen()?;
            Ok(None)
        }
    }
}

/// What one history gave: every call with its decision, and the first
/// event-time timer that was not later than the time called for.
#[derive(Debug, Default)]
struct History {
    decisions: Vec<String>,
    early_timer: Option<String>,
}

/// Elements that arrived since the trigger last heard of any.
#[derive(Debug, Default)]
struct Untold {
    count: u32,
    min_time: i64,
    max_time: i64,
}

/// Drives one window through the calls the host would make for `case`:
/// elements (on time, and late once the watermark passed the end), the
/// watermark advancing over the timers the trigger set and the window's end
/// and on into the allowed lateness, processing-time delays falling due on
/// a simulated clock. With `restore`, the window's state is snapshotted,
/// released and restored (with that state version) before that call.
fn history(
    t: &mut dyn TriggerPolicy,
    case: &Case,
    restore: Option<(usize, u32)>,
) -> Result<History, PluginError> {
    let mut rng = Rng::new(case.seed);
    let w = case.window;
    let size = w.end - w.start;
    let horizon = w.end + size;
    let watches = t.watches().len();
    let mut handle = t.create(w)?;
    let mut h = History::default();
    let mut watermark = w.start - 1;
    let mut clock: i64 = 1_700_000_000_000;
    let mut timers = BTreeSet::new();
    let mut delays = BTreeSet::new();
    let mut interest = ElementInterest::After(1);
    let mut untold = Untold::default();
    let mut ended = false;
    let mut calls = 0;

    // Notes a decision: its timers and delays are due later, its interest
    // says when to tell of elements next.
    let note = |h: &mut History,
                call: String,
                d: Decision,
                timers: &mut BTreeSet<i64>,
                delays: &mut BTreeSet<i64>,
                interest: &mut ElementInterest,
                clock: i64,
                called_for: Option<i64>| {
        for &at in &d.event_timers {
            match called_for {
                Some(time) if at <= time => {
                    if h.early_timer.is_none() {
                        h.early_timer = Some(format!(
                            "{call} asked for a timer at {at}, which is not later than {time}"
                        ));
                    }
                }
                _ => {
                    timers.insert(at);
                }
            }
        }
        for &ms in &d.processing_delays {
            delays.insert(clock.saturating_add(ms.min(i64::MAX as u64) as i64));
        }
        *interest = d.interest;
        h.decisions.push(format!("{call} -> {d:?}"));
    };

    while watermark < horizon && calls < MAX_CALLS {
        if restore.is_some_and(|(at, _)| at == calls)
            && let Some((_, version)) = restore
        {
            let bytes = t.snapshot(handle)?;
            t.release(handle)?;
            handle = t.restore(&bytes, version)?;
        }
        match rng.below(6) {
            0..=2 => {
                // An element of this window; late once the watermark passed its end.
                let time = w.start + rng.below(size as u64) as i64;
                if untold.count == 0 {
                    untold.min_time = time;
                    untold.max_time = time;
                }
                untold.count += 1;
                untold.min_time = untold.min_time.min(time);
                untold.max_time = untold.max_time.max(time);
                let tell = match interest {
                    ElementInterest::After(n) => untold.count >= n.max(1),
                    ElementInterest::Late => watermark >= w.end,
                    ElementInterest::None => false,
                };
                if tell {
                    let batch = Elements {
                        count: untold.count,
                        min_time: untold.min_time,
                        max_time: untold.max_time,
                        preview: (0..watches)
                            .map(|_| (rng.below(5) != 0).then(|| rng.unit() * 1_000.0))
                            .collect(),
                    };
                    untold = Untold::default();
                    let call = format!("on_elements({batch:?}, watermark {watermark})");
                    let d = t.on_elements(handle, w, &batch, watermark)?;
                    calls += 1;
                    note(
                        &mut h,
                        call,
                        d,
                        &mut timers,
                        &mut delays,
                        &mut interest,
                        clock,
                        None,
                    );
                }
            }
            3 | 4 => {
                // The watermark moves on; timers (and the end) it passes fall due in order.
                watermark += 1 + rng.below((size / 4).max(1) as u64) as i64;
                loop {
                    let next_timer = timers.first().copied().filter(|&at| at <= watermark);
                    let end = (!ended && w.end <= watermark).then_some(w.end);
                    let time = match (next_timer, end) {
                        (Some(a), Some(b)) => a.min(b),
                        (Some(a), None) => a,
                        (None, Some(b)) => b,
                        (None, None) => break,
                    };
                    if Some(time) == next_timer {
                        timers.remove(&time);
                    }
                    if Some(time) == end {
                        ended = true;
                    }
                    if calls >= MAX_CALLS {
                        break;
                    }
                    let call = format!("on_event_time({time}, watermark {watermark})");
                    let d = t.on_event_time(handle, w, time, watermark)?;
                    calls += 1;
                    note(
                        &mut h,
                        call,
                        d,
                        &mut timers,
                        &mut delays,
                        &mut interest,
                        clock,
                        Some(time),
                    );
                }
            }
            _ => {
                // Wall-clock time passes; the earliest delay asked for falls due.
                if let Some(due) = delays.pop_first() {
                    clock = clock.max(due);
                    let call = format!("on_processing_time({due}, watermark {watermark})");
                    let d = t.on_processing_time(handle, w, due, watermark)?;
                    calls += 1;
                    note(
                        &mut h,
                        call,
                        d,
                        &mut timers,
                        &mut delays,
                        &mut interest,
                        clock,
                        None,
                    );
                }
            }
        }
    }
    t.release(handle)?;
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::native;

    /// Every built-in trigger, with configs that exercise its branches.
    const BUILTINS: [(&str, &str); 6] = [
        ("event-time", "{}"),
        ("early", r#"{"every_events": 3}"#),
        ("early", r#"{"every": "5s"}"#),
        ("early", r#"{"every_events": 2, "every": "1s"}"#),
        ("count", r#"{"every_events": 4}"#),
        ("count", r#"{"every_events": 3, "purge": false}"#),
    ];

    #[test]
    fn every_builtin_trigger_passes_every_law() {
        for (name, config) in BUILTINS {
            let mut t = native::trigger(name, config).expect("opens");
            let report = check(t.as_mut(), &LawOptions::default());
            assert!(report.passed(), "{name} {config}: {report:?}");
        }
    }

    /// One way a trigger can be wrong, put into a correct one.
    #[derive(Clone, Copy, PartialEq)]
    enum Flaw {
        /// Its snapshot is empty: a restored window starts as new.
        Forgets,
        /// It fires on every 7th call it ever served, across reopens.
        Counts,
        /// It restores any state version.
        Lenient,
        /// When called for event time T it asks for a timer at T.
        Eager,
    }

    /// `builtin/early` (every 3 elements) with a flaw.
    struct Flawed {
        inner: Box<dyn TriggerPolicy>,
        flaw: Flaw,
        calls: u64,
    }

    impl Flawed {
        fn new(flaw: Flaw) -> Self {
            Self {
                inner: native::trigger("early", r#"{"every_events": 3}"#).expect("opens"),
                flaw,
                calls: 0,
            }
        }

        fn tamper(&mut self, mut d: Decision, time: Option<i64>) -> Decision {
            self.calls += 1;
            if self.flaw == Flaw::Counts && self.calls.is_multiple_of(7) {
                d.action = super::super::Action::Fire;
            }
            if let (Flaw::Eager, Some(time)) = (self.flaw, time) {
                d.event_timers.push(time);
            }
            d
        }
    }

    impl TriggerPolicy for Flawed {
        fn label(&self) -> &str {
            self.inner.label()
        }
        fn info(&self) -> Option<&super::super::PluginInfo> {
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
        fn create(
            &mut self,
            window: Window,
        ) -> Result<super::super::WindowTriggerHandle, PluginError> {
            self.inner.create(window)
        }
        fn restore(
            &mut self,
            state: &[u8],
            state_version: u32,
        ) -> Result<super::super::WindowTriggerHandle, PluginError> {
            let version = match self.flaw {
                Flaw::Lenient => self.info().map_or(0, |i| i.state_version),
                _ => state_version,
            };
            self.inner.restore(state, version)
        }
        fn on_elements(
            &mut self,
            t: super::super::WindowTriggerHandle,
            window: Window,
            batch: &Elements,
            watermark: i64,
        ) -> Result<Decision, PluginError> {
            let d = self.inner.on_elements(t, window, batch, watermark)?;
            Ok(self.tamper(d, None))
        }
        fn on_event_time(
            &mut self,
            t: super::super::WindowTriggerHandle,
            window: Window,
            time: i64,
            watermark: i64,
        ) -> Result<Decision, PluginError> {
            let d = self.inner.on_event_time(t, window, time, watermark)?;
            Ok(self.tamper(d, Some(time)))
        }
        fn on_processing_time(
            &mut self,
            t: super::super::WindowTriggerHandle,
            window: Window,
            time: i64,
            watermark: i64,
        ) -> Result<Decision, PluginError> {
            let d = self.inner.on_processing_time(t, window, time, watermark)?;
            Ok(self.tamper(d, None))
        }
        fn merge(
            &mut self,
            into: super::super::WindowTriggerHandle,
            from: super::super::WindowTriggerHandle,
            window: Window,
        ) -> Result<Decision, PluginError> {
            self.inner.merge(into, from, window)
        }
        fn snapshot(
            &mut self,
            t: super::super::WindowTriggerHandle,
        ) -> Result<Vec<u8>, PluginError> {
            match self.flaw {
                Flaw::Forgets => Ok(Vec::new()),
                _ => self.inner.snapshot(t),
            }
        }
        fn release(&mut self, t: super::super::WindowTriggerHandle) -> Result<(), PluginError> {
            self.inner.release(t)
        }
    }

    /// The laws a flawed trigger fails, by name.
    fn failed(flaw: Flaw) -> Vec<&'static str> {
        let mut t = Flawed::new(flaw);
        check(&mut t, &LawOptions::default())
            .results
            .into_iter()
            .filter(|r| matches!(r.outcome, Outcome::Fail(_)))
            .map(|r| r.law)
            .collect()
    }

    #[test]
    fn each_flaw_is_caught_by_its_law() {
        assert_eq!(failed(Flaw::Forgets), [ROUND_TRIP]);
        assert!(failed(Flaw::Counts).contains(&DETERMINISTIC));
        assert_eq!(failed(Flaw::Lenient), [UNKNOWN_VERSION]);
        assert_eq!(failed(Flaw::Eager), [LATER_TIMERS]);
    }
}
