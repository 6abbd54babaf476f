//! Progress of a file or stdin run, so that a long replay is not silent
//! until it ends: a bar (bytes of the file, events/s, watermark, ETA) when
//! stderr is a terminal, and otherwise an `info` line every
//! [`LINE_EVERY`] (the same figures; a live stream has no size, so no
//! share or ETA).
//!
//! Updated between batches with figures the run has anyway; it reads no
//! clock more often than once per batch.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a progress line is logged when stderr is not a terminal.
pub const LINE_EVERY: Duration = Duration::from_secs(10);

/// How a run shows its progress.
pub struct Progress {
    /// The bar, when stderr is a terminal and the input has a size.
    bar: Option<ProgressBar>,
    /// The input's size in bytes, for a regular file.
    total: Option<u64>,
    started: Instant,
    /// Byte offset and events read when the run started (a resumed run
    /// starts past 0), for the rates.
    first: (u64, u64),
    last_line: Instant,
    /// The last figures given: byte offset, events read, watermark.
    last: (u64, u64, Option<i64>),
}

impl Progress {
    /// Progress of a run over an input of `total` bytes (`None`: a live
    /// stream), starting at byte `offset` with `events` already read.
    /// `bar` asks for a bar when stderr is a terminal (text logs); JSON
    /// logs never get one, since the bar would break their lines.
    pub fn start(total: Option<u64>, offset: u64, events: u64, bar: bool) -> Self {
        let bar = match total {
            Some(len) if bar && std::io::stderr().is_terminal() => {
                let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
                // The template is a constant: a mistake in it shows in every
                // run, and the plain style is a fine fallback meanwhile.
                let style = ProgressStyle::with_template(
                    "{bar:16.cyan/blue} {percent:>3}% of {total_bytes}, {msg}, ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar());
                pb.set_style(style.progress_chars("=> "));
                pb.set_position(offset);
                Some(pb)
            }
            _ => None,
        };
        let now = Instant::now();
        Self {
            bar,
            total,
            started: now,
            first: (offset, events),
            last_line: now,
            last: (offset, events, None),
        }
    }

    /// Notes that the run has read up to byte `offset`, `events` events in
    /// all, with the watermark at `watermark` (ms; `None` before the first event).
    pub fn update(&mut self, offset: u64, events: u64, watermark: Option<i64>) {
        self.last = (offset, events, watermark);
        let now = Instant::now();
        if let Some(bar) = &self.bar {
            bar.set_position(offset);
            bar.set_message(self.figures(now));
            return;
        }
        if now.duration_since(self.last_line) >= LINE_EVERY {
            self.last_line = now;
            tracing::info!(
                events,
                bytes = offset,
                watermark_ms = watermark,
                "progress: {}",
                self.line(now)
            );
        }
    }

    /// Ends the bar (the summary follows it).
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    /// Events/s since the start, and the watermark.
    fn figures(&self, now: Instant) -> String {
        let (_, events, watermark) = self.last;
        let seconds = now.duration_since(self.started).as_secs_f64().max(1e-3);
        let rate = events.saturating_sub(self.first.1) as f64 / seconds;
        format!("{} ev/s, watermark {}", si(rate), watermark_text(watermark))
    }

    /// A progress line: the share of the input and the ETA for a file.
    fn line(&self, now: Instant) -> String {
        let (offset, events, _) = self.last;
        let mut line = format!("{events} events, {}", self.figures(now));
        if let Some(total) = self.total.filter(|&t| t > 0) {
            let share = offset as f64 / total as f64 * 100.0;
            line.push_str(&format!(", {share:.0}% of the input"));
            let done = offset.saturating_sub(self.first.0) as f64;
            let seconds = now.duration_since(self.started).as_secs_f64();
            if done > 0.0 {
                let left = total.saturating_sub(offset) as f64 * seconds / done;
                line.push_str(&format!(", about {left:.0} s left"));
            }
        }
        line
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `rate` with a k/M suffix: 3.1M, 850k, 12.
fn si(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.1}M", rate / 1e6)
    } else if rate >= 1e3 {
        format!("{:.0}k", rate / 1e3)
    } else {
        format!("{rate:.0}")
    }
}

/// The watermark as UTC time, or "none" before the first event.
fn watermark_text(watermark: Option<i64>) -> String {
    let Some(watermark) = watermark else {
        return "none".into();
    };
    chrono::DateTime::from_timestamp_millis(watermark).map_or_else(
        || format!("{watermark} ms"),
        |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_watermarks_read_as_people_write_them() {
        assert_eq!(si(3_140_000.0), "3.1M");
        assert_eq!(si(850_400.0), "850k");
        assert_eq!(si(12.2), "12");
        assert_eq!(watermark_text(None), "none");
        assert_eq!(
            watermark_text(Some(1_767_225_600_000)),
            "2026-01-01 00:00:00"
        );
    }

    #[test]
    fn a_file_line_gives_its_share_and_time_left() {
        let mut p = Progress::start(Some(1000), 0, 0, false);
        p.started -= Duration::from_secs(10);
        p.last = (250, 5000, Some(1_767_225_600_000));
        let line = p.line(Instant::now());
        assert!(line.starts_with("5000 events, 500 ev/s, watermark 2026-01-01 00:00:00"));
        assert!(line.contains("25% of the input"), "{line}");
        assert!(line.contains("about 30 s left"), "{line}");
    }
}
