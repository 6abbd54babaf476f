//! A file read and decoded ahead of the pipeline on other threads.
//!
//! Decoding JSON is most of what a file replay costs (docs/performance.md,
//! File replay), and the window operator, its plugins and the
//! outputs are single-threaded by design (one watermark, deterministic
//! order). So a reader thread cuts the file into batches of lines and deals
//! them out in turn to decoder threads; the pipeline takes the decoded
//! batches back in the same turn, hence in file order, and only copies each
//! event out. The results are the same as decoding on the pipeline's own
//! thread: decoding one line does not depend on any other.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::{LineBatch, LineSource};
use crate::decode::{Cell, Event, EventDecoder};
use crate::error::IoError;

/// Batches each decoder may hold decoded, waiting for the pipeline: enough to
/// keep the decoders busy while the pipeline works through one, bounded so
/// that memory stays a few batches whatever the file's size.
const QUEUED: usize = 2;

/// One batch of lines and, per line, its decoded event or why it has none.
#[derive(Debug, Default)]
pub struct DecodedBatch {
    lines: LineBatch,
    /// The rendered keys back to back; `key_ends[i]` ends line `i`'s.
    keys: String,
    key_ends: Vec<usize>,
    times: Vec<i64>,
    /// `values_per_line` values per line.
    values: Vec<Option<f64>>,
    values_per_line: usize,
    /// `cells_per_line` typed cells per line, their text back to back;
    /// `text_ends[i]` ends line `i`'s (cells point into their line's text).
    cells: Vec<Cell>,
    cells_per_line: usize,
    text: String,
    text_ends: Vec<usize>,
    errors: Vec<Option<String>>,
    /// Per line, the time its source stamped it with (Kafka messages);
    /// empty for a file's lines.
    message_times: Vec<Option<i64>>,
    /// The source's `(bytes, lines)` position after the batch.
    pub position: (u64, u64),
}

impl DecodedBatch {
    /// The batch's lines with their line numbers.
    pub fn lines(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.lines.iter()
    }

    /// Adds a message's value, stamped `time` by its source, to be decoded.
    pub fn push_message(&mut self, number: u64, value: &[u8], time: Option<i64>) {
        self.lines.push(number, value);
        self.message_times.push(time);
    }

    /// How many lines (or messages) the batch holds.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether the batch holds no line (or message).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Empties the batch for reuse: its buffers keep their capacity, so a
    /// recycled batch is filled and decoded without allocating.
    pub fn clear(&mut self) {
        self.lines.clear();
        self.keys.clear();
        self.key_ends.clear();
        self.times.clear();
        self.values.clear();
        self.cells.clear();
        self.text.clear();
        self.text_ends.clear();
        self.errors.clear();
        self.message_times.clear();
        self.position = (0, 0);
    }

    /// Puts line `i`'s event into `event`, or says why the line has none.
    pub fn load(&self, i: usize, event: &mut Event) -> Result<(), String> {
        if let Some(Some(why)) = self.errors.get(i) {
            return Err(why.clone());
        }
        let start = if i == 0 { 0 } else { self.key_ends[i - 1] };
        event.key.clear();
        event.key.push_str(&self.keys[start..self.key_ends[i]]);
        event.time = self.times[i];
        let n = self.values_per_line;
        event.values.clear();
        event
            .values
            .extend_from_slice(&self.values[i * n..(i + 1) * n]);
        let c = self.cells_per_line;
        event.cells.clear();
        event.text.clear();
        if c > 0 {
            event
                .cells
                .extend_from_slice(&self.cells[i * c..(i + 1) * c]);
            let start = if i == 0 { 0 } else { self.text_ends[i - 1] };
            event.text.push_str(&self.text[start..self.text_ends[i]]);
        }
        Ok(())
    }

    /// Decodes every line, as the pipeline's own decoder would.
    pub fn decode(&mut self, decoder: &mut EventDecoder, event: &mut Event) {
        let n = decoder.values_per_event();
        self.values_per_line = n;
        let c = decoder.cells_per_event();
        self.cells_per_line = c;
        for (i, (_, line)) in self.lines.iter().enumerate() {
            let stamp = self.message_times.get(i).copied().flatten();
            match decoder.decode_at(line, stamp, event) {
                Ok(()) => {
                    self.keys.push_str(&event.key);
                    self.times.push(event.time);
                    self.values.extend_from_slice(&event.values);
                    if c > 0 {
                        self.cells.extend_from_slice(&event.cells);
                        self.text.push_str(&event.text);
                    }
                    self.errors.push(None);
                }
                Err(why) => {
                    // No event: placeholders keep the other lines' indexes.
                    self.times.push(0);
                    self.values.extend(std::iter::repeat_n(None, n));
                    self.cells.extend(std::iter::repeat_n(Cell::Missing, c));
                    self.errors.push(Some(why));
                }
            }
            self.key_ends.push(self.keys.len());
            if c > 0 {
                self.text_ends.push(self.text.len());
            }
        }
    }
}

/// Decoded batches of a file, in file order.
pub struct ReadAhead {
    path: PathBuf,
    decoded: Vec<Receiver<Result<DecodedBatch, IoError>>>,
    /// Batches the pipeline is done with, back to the reader to be filled
    /// again: their buffers keep their capacity, so a steady replay reads
    /// and decodes without allocating or touching fresh pages.
    recycled: SyncSender<DecodedBatch>,
    turn: usize,
    threads: Vec<JoinHandle<()>>,
}

impl ReadAhead {
    /// Starts reading `source` in batches of `batch_size` lines, decoded by
    /// `decoders` threads with copies of `decoder`.
    pub fn start(
        path: &Path,
        mut source: LineSource,
        batch_size: usize,
        decoder: &EventDecoder,
        decoders: usize,
    ) -> Result<Self, IoError> {
        let decoders = decoders.max(1);
        let path = path.to_path_buf();
        let mut to_decoders: Vec<SyncSender<Result<DecodedBatch, IoError>>> = Vec::new();
        let mut decoded = Vec::new();
        let mut threads = Vec::new();
        // At most as many batches as can be in flight at once come back;
        // any more are dropped (see `recycle`).
        let (recycled, spare) = sync_channel::<DecodedBatch>(decoders * (2 * QUEUED + 1) + 1);
        for i in 0..decoders {
            let (to_decoder, lines) = sync_channel::<Result<DecodedBatch, IoError>>(QUEUED);
            let (to_pipeline, out) = sync_channel(QUEUED);
            let mut decoder = decoder.clone();
            threads.push(spawn(&path, format!("sluice-decode-{i}"), move || {
                let mut event = Event::default();
                for batch in lines {
                    let batch = batch.map(|mut b| {
                        b.decode(&mut decoder, &mut event);
                        b
                    });
                    if to_pipeline.send(batch).is_err() {
                        return;
                    }
                }
            })?);
            to_decoders.push(to_decoder);
            decoded.push(out);
        }
        threads.push(spawn(&path, "sluice-read".into(), move || {
            let mut turn = 0;
            loop {
                let mut batch = spare.try_recv().unwrap_or_default();
                batch.clear();
                let read = source.next_batch(&mut batch.lines, batch_size);
                batch.position = source.position();
                let (more, message) = match read {
                    Ok(true) => (true, Ok(batch)),
                    Ok(false) => return,
                    Err(e) => (false, Err(e)),
                };
                if to_decoders[turn].send(message).is_err() || !more {
                    return;
                }
                turn = (turn + 1) % to_decoders.len();
            }
        })?);
        Ok(Self {
            path,
            decoded,
            recycled,
            turn: 0,
            threads,
        })
    }

    /// The next decoded batch; `None` at the end of the file.
    pub fn next_batch(&mut self) -> Result<Option<DecodedBatch>, IoError> {
        let Ok(batch) = self.decoded[self.turn].recv() else {
            // The reader stopped here: every earlier batch was taken.
            return self.join().map(|()| None);
        };
        self.turn = (self.turn + 1) % self.decoded.len();
        Ok(Some(batch?))
    }

    /// Hands back a batch the pipeline is done with, for the reader to
    /// fill again. Dropped instead if the reader has enough spares or has
    /// stopped.
    pub fn recycle(&self, batch: DecodedBatch) {
        // Either way the batch is not needed here any more.
        let _ = self.recycled.try_send(batch);
    }

    fn join(&mut self) -> Result<(), IoError> {
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                return Err(thread_error(&self.path, "a reading thread panicked".into()));
            }
        }
        Ok(())
    }
}

fn spawn(
    path: &Path,
    name: String,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, IoError> {
    std::thread::Builder::new()
        .name(name)
        .spawn(f)
        .map_err(|e| thread_error(path, format!("starting a reading thread: {e}")))
}

fn thread_error(path: &Path, message: String) -> IoError {
    IoError {
        action: "reading",
        path: path.to_path_buf(),
        source: std::io::Error::other(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_config::{AggregationConfig, MissingPolicy, TimeConfig, TimeFormat};

    fn decoder() -> EventDecoder {
        let agg = |field: Option<&str>| AggregationConfig {
            name: "a".into(),
            plugin: "builtin/stats".into(),
            field: field.map(Into::into),
            inputs: None,
            config: None,
            on_missing: MissingPolicy::DeadLetter,
        };
        EventDecoder::new(
            &["service".into()],
            &TimeConfig {
                field: "ts".into(),
                format: TimeFormat::EpochMillis,
            },
            &[agg(Some("latency_ms")), agg(None)],
        )
    }

    /// Whatever the batch size and the number of decoders, the batches come
    /// back in file order with each line's event or error exactly as one
    /// decoder on one thread gives them, and with the source's position,
    /// also when each batch is handed back to be filled again.
    #[test]
    fn decoded_batches_match_decoding_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("in.jsonl");
        let mut text = String::new();
        for i in 0..500 {
            match i % 37 {
                5 => text.push_str("not json\n"),
                11 => text.push_str(&format!("{{\"ts\":{i},\"service\":\"s{i}\"}}\n")),
                17 => text.push_str("   \n"),
                _ => text.push_str(&format!(
                    "{{\"ts\":{i},\"service\":\"s{}\",\"latency_ms\":{}.5}}\n",
                    i % 7,
                    i * 3
                )),
            }
        }
        std::fs::write(&path, &text).expect("written");
        let mut one = decoder();
        let mut expected = Vec::new();
        let mut number = 0;
        for line in text.lines() {
            number += 1;
            if line.trim().is_empty() {
                continue;
            }
            let mut event = Event::default();
            let outcome = one.decode(line.as_bytes(), &mut event);
            expected.push((number, outcome.map(|()| event)));
        }
        for (batch_size, decoders) in [(1, 1), (7, 2), (64, 3), (1024, 2)] {
            let source = LineSource::open(&path).expect("opens");
            let mut ahead =
                ReadAhead::start(&path, source, batch_size, &decoder(), decoders).expect("starts");
            let mut got = Vec::new();
            let mut position = (0, 0);
            while let Some(batch) = ahead.next_batch().expect("reads") {
                for (i, (number, _)) in batch.lines().enumerate() {
                    let mut event = Event::default();
                    let outcome = batch.load(i, &mut event);
                    got.push((number, outcome.map(|()| event)));
                }
                position = batch.position;
                // Filled again by the reader: a recycled batch must hold
                // nothing of its last lines.
                ahead.recycle(batch);
            }
            assert_eq!(
                got, expected,
                "batch size {batch_size}, {decoders} decoders"
            );
            assert_eq!(position, (text.len() as u64, number));
        }
    }
}
