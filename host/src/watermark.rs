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

/// Per-partition bounded-out-of-orderness watermarks and their minimum.
#[derive(Debug, Clone)]
pub struct Watermarks {
    delay: i64,
    max_seen: Vec<i64>,
    current: i64,
}

impl Watermarks {
    /// Watermarks for `partitions` inputs trailing their largest event time by `delay_ms`.
    pub fn new(delay_ms: i64, partitions: usize) -> Self {
        Self {
            delay: delay_ms.max(0),
            max_seen: vec![MIN_WATERMARK; partitions.max(1)],
            current: MIN_WATERMARK,
        }
    }

    /// The pipeline watermark.
    pub fn current(&self) -> i64 {
        self.current
    }

    /// Notes an event time from `partition`; returns the new watermark if it advanced.
    pub fn observe(&mut self, partition: usize, time: i64) -> Option<i64> {
        let slot = self.max_seen.get_mut(partition)?;
        if time <= *slot {
            return None;
        }
        *slot = time;
        let min = self.max_seen.iter().copied().min().unwrap_or(MIN_WATERMARK);
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
}
