//! How long a plugin's calls take, and a warning when they come close to
//! the call deadline.
//!
//! A plugin whose calls each take most of the deadline never fails, yet
//! slows a run many times over; without a word in the log an operator
//! cannot tell which aggregation to blame. So every call's time is kept
//! (the last [`RECENT`] of them), and a call that takes more than half the
//! deadline brings a warning with the recent calls' percentiles, at most
//! once per [`WARN_EVERY`] per plugin.

use std::time::{Duration, Instant};

/// How many of the latest call times the percentiles are taken over.
pub const RECENT: usize = 1024;

/// Least time between two warnings about the same plugin.
pub const WARN_EVERY: Duration = Duration::from_secs(60);

/// The call times of one plugin (across restarts of its instance).
#[derive(Debug)]
pub struct CallTimes {
    /// The latest call times, in microseconds, as a ring.
    recent: Vec<u32>,
    next: usize,
    /// Calls over half the deadline since the last warning.
    slow: u64,
    warned: Option<Instant>,
}

impl Default for CallTimes {
    fn default() -> Self {
        Self::new()
    }
}

impl CallTimes {
    /// No calls yet.
    pub fn new() -> Self {
        Self {
            recent: Vec::new(),
            next: 0,
            slow: 0,
            warned: None,
        }
    }

    /// Records a call that took `took` under a `deadline`; `ok` says whether
    /// it succeeded (a failed call is reported as such already, so only a
    /// slow success brings a warning). Returns the warning's text when one
    /// is due now.
    pub fn record(&mut self, took: Duration, deadline: Duration, ok: bool) -> Option<String> {
        let micros = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
        if self.recent.len() < RECENT {
            self.recent.push(micros);
        } else {
            self.recent[self.next] = micros;
        }
        self.next = (self.next + 1) % RECENT;
        if !ok || took < deadline / 2 {
            return None;
        }
        self.slow += 1;
        let now = Instant::now();
        if self
            .warned
            .is_some_and(|at| now.duration_since(at) < WARN_EVERY)
        {
            return None;
        }
        self.warned = Some(now);
        let slow = std::mem::take(&mut self.slow);
        Some(format!(
            "calls run close to the {} call deadline ({slow} {} over half of it{}); \
             the last {} calls took {}",
            humantime::format_duration(deadline),
            if slow == 1 { "call" } else { "calls" },
            if slow > 1 {
                " since the last warning"
            } else {
                ""
            },
            self.recent.len(),
            self.percentiles()
        ))
    }

    /// `p50 1ms, p90 2ms, p99 850ms, max 900ms` over the recent calls.
    pub fn percentiles(&self) -> String {
        let mut sorted = self.recent.clone();
        sorted.sort_unstable();
        let at = |q: f64| {
            let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
            sorted.get(i).copied().unwrap_or(0)
        };
        let show = |micros: u32| {
            let d = Duration::from_micros(u64::from(micros));
            if d >= Duration::from_millis(1) {
                humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
            } else {
                format!("{micros}us")
            }
        };
        format!(
            "p50 {}, p90 {}, p99 {}, max {}",
            show(at(0.5)),
            show(at(0.9)),
            show(at(0.99)),
            show(sorted.last().copied().unwrap_or(0))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINE: Duration = Duration::from_secs(1);

    #[test]
    fn fast_calls_and_slow_failures_bring_no_warning() {
        let mut times = CallTimes::new();
        for _ in 0..5000 {
            assert_eq!(times.record(Duration::from_millis(3), DEADLINE, true), None);
        }
        assert_eq!(times.record(Duration::from_secs(1), DEADLINE, false), None);
        assert_eq!(times.recent.len(), RECENT);
    }

    #[test]
    fn a_call_over_half_the_deadline_warns_with_percentiles_then_waits() {
        let mut times = CallTimes::new();
        for _ in 0..98 {
            times.record(Duration::from_millis(2), DEADLINE, true);
        }
        times.record(Duration::from_micros(700), DEADLINE, true);
        let warning = times
            .record(Duration::from_millis(850), DEADLINE, true)
            .expect("a warning");
        assert_eq!(
            warning,
            "calls run close to the 1s call deadline (1 call over half of it); \
             the last 100 calls took p50 2ms, p90 2ms, p99 2ms, max 850ms"
        );
        // The next slow call is counted, not warned about, for a while.
        assert_eq!(
            times.record(Duration::from_millis(900), DEADLINE, true),
            None
        );
        assert_eq!(times.slow, 1);
    }
}
