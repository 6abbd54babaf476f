//! Event-time watermarks with bounded out-of-orderness.
//!
//! `W = max event time seen - max_out_of_orderness`, tracked per input
//! partition; the pipeline's watermark is the minimum over partitions, so one
//! partition that lags holds the others back rather than making its events late.
//! The watermark depends only on the events read so far, never on the clock,
//! which is what makes a run's output reproducible byte for byte.

/// The watermark before any event: nothing is late yet.
pub const MIN_WATERMARK: i64 = i64::MIN;

/// The watermark after the end of input: every window is complete.
pub const END_OF_INPUT: i64 = i64::MAX;

/// The watermark state of every input partition, as a checkpoint keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WatermarkState {
    /// The pipeline watermark.
    pub current: i64,
    /// The largest event time seen per partition.
    pub max_seen: Vec<i64>,
    /// Which partitions are idle.
    pub idle: Vec<bool>,
}

/// Per-partition bounded-out-of-orderness watermarks and their minimum.
#[derive(Debug, Clone)]
pub struct Watermarks {
    delay: i64,
    max_seen: Vec<i64>,
    /// Partitions that delivered nothing for a while (or are finished) and so
    /// do not hold the minimum back.
    idle: Vec<bool>,
    current: i64,
}

impl Watermarks {
    /// Watermarks for `partitions` inputs trailing their largest event time by `delay_ms`.
    pub fn new(delay_ms: i64, partitions: usize) -> Self {
        Self {
            delay: delay_ms.max(0),
            max_seen: vec![MIN_WATERMARK; partitions.max(1)],
            idle: vec![false; partitions.max(1)],
            current: MIN_WATERMARK,
        }
    }

    /// The pipeline watermark.
    pub fn current(&self) -> i64 {
        self.current
    }

    /// The pipeline watermark as an event time, for people and metrics:
    /// `None` before the first event and once the end of input has moved it
    /// to [`END_OF_INPUT`].
    pub fn known(&self) -> Option<i64> {
        (self.current != MIN_WATERMARK && self.current != END_OF_INPUT).then_some(self.current)
    }

    /// Notes an event time from `partition`; returns the new watermark if it advanced.
    ///
    /// An event makes an idle partition active again.
    pub fn observe(&mut self, partition: usize, time: i64) -> Option<i64> {
        let slot = self.max_seen.get_mut(partition)?;
        let was_idle = std::mem::replace(&mut self.idle[partition], false);
        if time <= *slot && !was_idle {
            return None;
        }
        *slot = (*slot).max(time);
        self.advance()
    }

    /// Marks `partition` idle (or active again); returns the new watermark if
    /// that let it advance.
    ///
    /// While every partition is idle the watermark stays where it is: with no
    /// events there is no evidence that time has moved on.
    pub fn set_idle(&mut self, partition: usize, idle: bool) -> Option<i64> {
        let flag = self.idle.get_mut(partition)?;
        if *flag == idle {
            return None;
        }
        *flag = idle;
        self.advance()
    }

    /// Whether `partition` is idle.
    pub fn is_idle(&self, partition: usize) -> bool {
        self.idle.get(partition).copied().unwrap_or(false)
    }

    /// Starts `partition` as if events up to `time` had been seen: a resumed
    /// consumer continues from the watermark its predecessor committed.
    /// Returns the new watermark if it advanced.
    pub fn seed(&mut self, partition: usize, time: i64) -> Option<i64> {
        let slot = self.max_seen.get_mut(partition)?;
        *slot = (*slot).max(time);
        self.advance()
    }

    /// The largest event time seen on `partition`.
    pub fn max_seen(&self, partition: usize) -> i64 {
        self.max_seen
            .get(partition)
            .copied()
            .unwrap_or(MIN_WATERMARK)
    }

    fn advance(&mut self) -> Option<i64> {
        let min = self
            .max_seen
            .iter()
            .zip(&self.idle)
            .filter(|(_, idle)| !**idle)
            .map(|(t, _)| *t)
            .min()?;
        let candidate = if min == MIN_WATERMARK {
            MIN_WATERMARK
        } else {
            min.saturating_sub(self.delay)
        };
        if candidate > self.current {
            self.current = candidate;
            Some(candidate)
        } else {
            None
        }
    }

    /// The state a checkpoint keeps.
    pub fn state(&self) -> WatermarkState {
        WatermarkState {
            current: self.current,
            max_seen: self.max_seen.clone(),
            idle: self.idle.clone(),
        }
    }

    /// Takes back a checkpoint's state; partitions it does not name start
    /// fresh, and the watermark never goes back.
    pub fn restore(&mut self, state: &WatermarkState) {
        for (slot, t) in self.max_seen.iter_mut().zip(&state.max_seen) {
            *slot = *t;
        }
        for (slot, idle) in self.idle.iter_mut().zip(&state.idle) {
            *slot = *idle;
        }
        self.current = self.current.max(state.current);
    }

    /// Marks the end of input: the watermark jumps to +infinity.
    pub fn finish(&mut self) -> i64 {
        self.current = END_OF_INPUT;
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trails_the_maximum_and_never_goes_back() {
        let mut w = Watermarks::new(5_000, 1);
        assert_eq!(w.observe(0, 10_000), Some(5_000));
        assert_eq!(w.observe(0, 8_000), None);
        assert_eq!(w.current(), 5_000);
        assert_eq!(w.observe(0, 12_000), Some(7_000));
        assert_eq!(w.finish(), END_OF_INPUT);
    }

    #[test]
    fn the_slowest_partition_holds_it_back() {
        let mut w = Watermarks::new(0, 2);
        assert_eq!(w.observe(0, 100), None);
        assert_eq!(w.current(), MIN_WATERMARK);
        assert_eq!(w.observe(1, 50), Some(50));
        assert_eq!(w.observe(0, 200), None);
        assert_eq!(w.observe(1, 300), Some(200));
    }

    #[test]
    fn an_idle_partition_stops_holding_it_back_until_it_speaks_again() {
        let mut w = Watermarks::new(0, 2);
        assert_eq!(w.observe(0, 100), None);
        assert_eq!(w.set_idle(1, true), Some(100));
        assert_eq!(w.observe(0, 150), Some(150));
        // Its next event is behind: the watermark waits for it again, never goes back.
        assert_eq!(w.observe(1, 120), None);
        assert_eq!(w.observe(0, 200), None);
        assert_eq!(w.observe(1, 180), Some(180));
        // All idle: no evidence that time moved on.
        w.set_idle(0, true);
        assert_eq!(w.set_idle(1, true), None);
        assert_eq!(w.current(), 180);
    }
}
