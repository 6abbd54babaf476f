//! What plugins print: their stdout and stderr, line by line, into the
//! host's log.
//!
//! A plugin's standard library prints panics to stderr, and authors debug
//! with `eprintln!`; a stream that fails or fills up makes such a plugin
//! trap (Rust's `eprintln!` panics when a write fails). So writes always
//! succeed at once, and what is written goes to the log as `info` lines
//! attributed to the aggregation (or trigger), each escaped and cut to the
//! message limit (see [`sluice_core::plugin::untrusted`]), at most `log_lines_per_second`
//! of them per plugin on average. A Rust panic's message is kept apart
//! rather than logged, for the error that reports the failed call.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use wasmtime_wasi::async_trait;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use sluice_core::plugin::untrusted::{bounded, bounded_part};

/// How many seconds of the line rate a plugin may print in one burst.
const BURST_SECONDS: u32 = 10;

/// Bytes of a line kept however small the message limit, so that the first
/// line of a Rust panic (`thread '..' panicked at FILE:LINE:COL:`) is seen.
const PANIC_LINE: usize = 256;

/// Bytes one write may hand over; a larger write is split by the guest.
const WRITE_PERMIT: usize = 64 << 10;

/// Which stream a line was printed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// The printed output of one plugin (one aggregation or trigger), shared by
/// the streams of every instance it runs in, so that a restart neither
/// resets its line budget nor loses whom its lines are attributed to.
pub(crate) struct PluginOutput(Mutex<Printed>);

/// The state behind [`PluginOutput`].
struct Printed {
    /// Whose lines these are, as the log says: ``aggregation `latency` ``.
    who: String,
    /// Longest line logged, in bytes (before escaping).
    limit: usize,
    /// Lines per second, on average; 0 logs none.
    rate: u32,
    /// Lines that may be logged now (a token bucket of `rate * BURST_SECONDS`).
    tokens: f64,
    refilled: Instant,
    /// Lines not logged since the last line that was, for lack of tokens.
    dropped: u64,
    /// The line being written on each stream, cut to `limit` bytes, and
    /// how long it is in all.
    partial: [(Vec<u8>, usize); 2],
    /// The message of a Rust panic printed during the current call (cut to
    /// about `limit` bytes) and its whole length, while it is being read
    /// and once complete.
    panic: Option<(String, usize)>,
    reading_panic: bool,
    /// The last stderr line of the current call, for a failure that is
    /// not a panic (a C plugin's `assert`, say).
    last_stderr: Option<String>,
}

impl PluginOutput {
    /// Output attributed to `who`, lines cut to `limit` bytes, at most
    /// `rate` lines per second on average.
    pub(crate) fn new(who: String, limit: usize, rate: u32) -> Arc<Self> {
        Arc::new(Self(Mutex::new(Printed {
            who,
            limit,
            rate,
            tokens: f64::from(rate.saturating_mul(BURST_SECONDS)),
            refilled: Instant::now(),
            dropped: 0,
            partial: [(Vec::new(), 0), (Vec::new(), 0)],
            panic: None,
            reading_panic: false,
            last_stderr: None,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Printed> {
        // A panic while holding the lock leaves nothing half-done that
        // matters more than losing a log line.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whose output this is, as the log names it.
    pub(crate) fn who(&self) -> String {
        self.lock().who.clone()
    }

    /// Attributes later lines to `who`.
    pub(crate) fn set_who(&self, who: String) {
        self.lock().who = who;
    }

    /// Forgets what the previous call printed, so that a failure is
    /// explained by its own call's output.
    pub(crate) fn begin_call(&self) {
        let mut p = self.lock();
        p.panic = None;
        p.reading_panic = false;
        p.last_stderr = None;
    }

    /// What the current call printed that explains its failure: the
    /// message of a Rust panic (`Ok`), or else its last stderr line (`Err`),
    /// each escaped and cut to the limit.
    pub(crate) fn explanation(&self) -> Option<Result<String, String>> {
        let mut p = self.lock();
        // A panic message is complete without its final newline.
        if p.partial[Stream::Stderr as usize].1 > 0 {
            p.end_line(Stream::Stderr);
        }
        let limit = p.limit;
        if let Some((message, total)) = &p.panic {
            let trimmed = message.trim();
            return Some(Ok(if trimmed.is_empty() {
                "(no message)".to_string()
            } else if *total > message.len() {
                bounded_part(trimmed, limit, *total)
            } else {
                bounded(trimmed, limit).into_owned()
            }));
        }
        p.last_stderr.clone().map(Err)
    }

    /// A stream that writes into this output.
    pub(crate) fn stream(self: &Arc<Self>, stream: Stream) -> LogStream {
        LogStream {
            output: Arc::clone(self),
            stream,
        }
    }

    fn write(&self, stream: Stream, mut bytes: &[u8]) {
        let mut p = self.lock();
        while !bytes.is_empty() {
            let (line, rest) = match bytes.iter().position(|&b| b == b'\n') {
                Some(i) => (&bytes[..i], Some(&bytes[i + 1..])),
                None => (bytes, None),
            };
            // At least a panic's first line is kept whole, to be told
            // apart (the limit applies when the line is logged).
            let keep = p.limit.max(PANIC_LINE);
            let (kept, total) = &mut p.partial[stream as usize];
            let room = keep.saturating_sub(kept.len());
            kept.extend_from_slice(&line[..line.len().min(room)]);
            *total += line.len();
            match rest {
                Some(rest) => {
                    p.end_line(stream);
                    bytes = rest;
                }
                None => break,
            }
        }
    }
}

impl Drop for PluginOutput {
    fn drop(&mut self) {
        let p = self.0.get_mut().unwrap_or_else(|e| e.into_inner());
        if p.dropped > 0 {
            tracing::info!(
                "{}: {} more lines of plugin output not logged (over {} lines per second)",
                p.who,
                p.dropped,
                p.rate
            );
        }
    }
}

impl Printed {
    /// Ends the line being written on `stream`, if any: logs it, or takes it
    /// as part of a panic message.
    fn end_line(&mut self, stream: Stream) {
        let (kept, total) = std::mem::take(&mut self.partial[stream as usize]);
        let text = String::from_utf8_lossy(&kept);
        if stream == Stream::Stderr && self.take_panic_line(&text, total) {
            return;
        }
        if total == 0 {
            // An empty line is not worth a log line.
            return;
        }
        let line = bounded_part(&text, self.limit, total);
        if stream == Stream::Stderr {
            self.last_stderr = Some(line.clone());
        }
        self.log(stream, &line);
    }

    /// Reads a Rust panic off stderr: `thread '..' panicked at src/lib.rs:3:5:`,
    /// the message's lines, then `note: ..`. Returns whether `line` was part of it.
    fn take_panic_line(&mut self, line: &str, total: usize) -> bool {
        // `thread '<unnamed>' panicked at ..`, or with the thread's id:
        // `thread '<unnamed>' (1) panicked at ..`.
        if line.starts_with("thread '") && line.contains(" panicked at ") {
            self.panic = Some((String::new(), 0));
            self.reading_panic = true;
            return true;
        }
        if !self.reading_panic {
            return false;
        }
        if line.starts_with("note: ") {
            self.reading_panic = false;
            return true;
        }
        let limit = self.limit;
        if let Some((message, seen)) = &mut self.panic {
            // Lines join with a newline, which counts as one byte.
            *seen += total + usize::from(*seen > 0);
            if message.len() < limit {
                if !message.is_empty() {
                    message.push('\n');
                }
                message.push_str(line);
            }
        }
        true
    }

    /// Logs one line if the budget allows, saying first how many were not.
    fn log(&mut self, stream: Stream, line: &str) {
        if self.rate == 0 {
            return;
        }
        let now = Instant::now();
        let capacity = f64::from(self.rate.saturating_mul(BURST_SECONDS));
        let earned = now.duration_since(self.refilled).as_secs_f64() * f64::from(self.rate);
        self.tokens = (self.tokens + earned).min(capacity);
        self.refilled = now;
        if self.tokens < 1.0 {
            self.dropped += 1;
            return;
        }
        self.tokens -= 1.0;
        if self.dropped > 0 {
            tracing::info!(
                "{}: {} lines of plugin output not logged (over {} lines per second)",
                self.who,
                self.dropped,
                self.rate
            );
            self.dropped = 0;
        }
        tracing::info!("{} {}: {line}", self.who, stream.as_str());
    }
}

/// A plugin's stdout or stderr: every write succeeds at once and goes to
/// its [`PluginOutput`].
pub(crate) struct LogStream {
    output: Arc<PluginOutput>,
    stream: Stream,
}

#[async_trait]
impl Pollable for LogStream {
    async fn ready(&mut self) {}
}

#[async_trait]
impl OutputStream for LogStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.output.write(self.stream, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_read_apart_from_the_lines_around_it() {
        let out = PluginOutput::new("plugin x".into(), 64, 0);
        out.begin_call();
        out.write(
            Stream::Stderr,
            b"before\nthread '<unnamed>' panicked at src/lib.rs:3:5:\n",
        );
        out.write(Stream::Stderr, b"boom\x1b[2J\nsecond ");
        out.write(Stream::Stderr, b"line\nnote: run with `RUST_BACKTRACE=1`\n");
        assert_eq!(
            out.explanation(),
            Some(Ok("boom\\u{1b}[2J\\nsecond line".to_string()))
        );
        // The next call starts afresh.
        out.begin_call();
        assert_eq!(out.explanation(), None);
    }

    #[test]
    fn without_a_panic_the_last_stderr_line_explains_escaped_and_cut() {
        let out = PluginOutput::new("plugin x".into(), 32, 0);
        out.begin_call();
        out.write(Stream::Stdout, b"on stdout\n");
        out.write(Stream::Stderr, &[b'y'; 100]);
        out.write(Stream::Stderr, b"\nAssertion failed:\r x");
        assert_eq!(
            out.explanation(),
            Some(Err("Assertion failed:\\r x".to_string()))
        );
        out.begin_call();
        out.write(Stream::Stderr, &[b'y'; 100]);
        out.write(Stream::Stderr, b"\n\n");
        assert_eq!(
            out.explanation(),
            Some(Err(format!("{} [cut: 100 bytes in all]", "y".repeat(32))))
        );
    }

    #[test]
    fn a_long_panic_message_is_cut_with_its_whole_length() {
        let out = PluginOutput::new("plugin x".into(), 16, 0);
        out.begin_call();
        out.write(Stream::Stderr, b"thread 'main' panicked at a.rs:1:1:\n");
        out.write(Stream::Stderr, &[b'z'; 40]);
        out.write(Stream::Stderr, b"\nmore\n");
        // 40 bytes, a newline, 4 bytes.
        assert_eq!(
            out.explanation(),
            Some(Ok(format!("{} [cut: 45 bytes in all]", "z".repeat(16))))
        );
    }
}
