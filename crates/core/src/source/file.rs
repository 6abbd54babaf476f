//! A JSON-lines source over a file or stdin, read in batches of lines.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::error::IoError;

/// A batch of lines: one buffer of bytes and where each line lies in it.
#[derive(Debug, Default)]
pub struct LineBatch {
    data: Vec<u8>,
    lines: Vec<(u64, Range<usize>)>,
}

impl LineBatch {
    /// The lines, with their 1-based line numbers in the input.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.lines
            .iter()
            .map(|(n, range)| (*n, &self.data[range.clone()]))
    }

    /// How many lines the batch holds.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether the batch holds no line.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Empties the batch, keeping its buffers for the next records.
    pub fn clear(&mut self) {
        self.data.clear();
        self.lines.clear();
    }

    /// Adds one record (a Kafka message's value), numbered `number`.
    pub fn push(&mut self, number: u64, bytes: &[u8]) {
        let start = self.data.len();
        self.data.extend_from_slice(bytes);
        self.lines.push((number, start..self.data.len()));
    }
}

/// An input checked before any output is opened: a missing or unreadable
/// source is reported while the previous run's outputs are still intact.
pub struct InputFile {
    path: PathBuf,
    kind: InputKind,
}

/// What an input is, as far as reading it goes.
enum InputKind {
    Stdin,
    /// A regular file, opened: it can seek back to a checkpoint, and is
    /// read as a replay rather than a live stream.
    Regular(File),
    /// A FIFO or a device, not opened yet: opening a FIFO waits for its
    /// writer, which may only start once the run is up.
    Stream,
}

impl InputFile {
    /// Checks `path` (`-` is stdin): a regular file is opened now, a FIFO or
    /// device is only looked at (opening it would wait for a writer).
    pub fn open(path: &Path) -> Result<Self, IoError> {
        let fail = |action: &'static str| {
            move |source| IoError {
                action,
                path: path.to_path_buf(),
                source,
            }
        };
        let kind = if path == Path::new("-") {
            InputKind::Stdin
        } else {
            let metadata = std::fs::metadata(path).map_err(fail("opening"))?;
            if metadata.is_dir() {
                return Err(fail("reading")(std::io::Error::other(
                    "it is a directory, not a file of JSON lines",
                )));
            }
            if metadata.is_file() {
                InputKind::Regular(File::open(path).map_err(fail("opening"))?)
            } else {
                InputKind::Stream
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            kind,
        })
    }

    /// Whether the input is a live stream (stdin, a FIFO, a device) rather
    /// than a regular file.
    pub fn is_live(&self) -> bool {
        !matches!(self.kind, InputKind::Regular(_))
    }
}

/// The byte-order mark some editors put at the start of a UTF-8 file.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Reads non-blank lines from a file (or stdin for `-`), numbering them.
pub struct LineSource {
    path: PathBuf,
    reader: BufReader<Box<dyn Read + Send>>,
    /// A live stream (stdin, a FIFO): a batch ends where the lines that
    /// have arrived end, rather than waiting to fill up.
    live: bool,
    line_no: u64,
    /// Bytes consumed, blank lines included.
    offset: u64,
    /// Whether the next line is the input's first, whose byte-order mark
    /// (if any) is no part of the event.
    at_start: bool,
}

impl LineSource {
    /// Opens `path`; `-` is stdin.
    pub fn open(path: &Path) -> Result<Self, IoError> {
        Self::open_at(path, 0, 0)
    }

    /// Opens `path` to carry on after `offset` bytes holding `line` lines,
    /// where a checkpoint left it. Stdin cannot seek: only offset 0 works.
    pub fn open_at(path: &Path, offset: u64, line: u64) -> Result<Self, IoError> {
        Self::start(InputFile::open(path)?, offset, line)
    }

    /// Reads `input` from after `offset` bytes holding `line` lines.
    pub fn start(input: InputFile, offset: u64, line: u64) -> Result<Self, IoError> {
        let path = input.path.as_path();
        let fail = |action: &'static str| {
            move |source| IoError {
                action,
                path: path.to_path_buf(),
                source,
            }
        };
        let live = input.is_live();
        let reader: Box<dyn Read + Send> = match input.kind {
            InputKind::Stdin => {
                if offset > 0 {
                    return Err(fail("resuming")(std::io::Error::other(
                        "stdin cannot seek back to a checkpoint",
                    )));
                }
                Box::new(std::io::stdin())
            }
            InputKind::Stream => {
                // A FIFO or device: read from where it is; it has no past to
                // seek back to.
                if offset > 0 {
                    return Err(fail("resuming")(std::io::Error::other(
                        "it is not a regular file, so it cannot seek back to a checkpoint",
                    )));
                }
                Box::new(File::open(path).map_err(fail("opening"))?)
            }
            InputKind::Regular(mut file) => {
                let length = file.metadata().map_err(fail("reading the size of"))?.len();
                if length < offset {
                    return Err(fail("resuming")(std::io::Error::other(format!(
                        "the checkpoint read {offset} bytes of it but it now has {length}: \
                         it is not the input the state was built from"
                    ))));
                }
                file.seek(SeekFrom::Start(offset))
                    .map_err(fail("seeking in"))?;
                Box::new(file)
            }
        };
        Ok(Self {
            path: input.path,
            reader: BufReader::with_capacity(1 << 16, reader),
            live,
            line_no: line,
            offset,
            at_start: offset == 0,
        })
    }

    /// `(bytes, lines)` consumed so far: where a checkpoint resumes.
    pub fn position(&self) -> (u64, u64) {
        (self.offset, self.line_no)
    }

    /// Fills `batch` with up to `max` lines; returns false at end of input.
    pub fn next_batch(&mut self, batch: &mut LineBatch, max: usize) -> Result<bool, IoError> {
        batch.clear();
        while batch.lines.len() < max {
            // The whole lines already buffered go in one copy; a line that
            // runs past the buffer (or the input's first, which may start
            // with a byte order mark) is read on its own.
            let took = !self.at_start && self.take_buffered(batch, max);
            if !took && !self.read_line(batch)? {
                return Ok(!batch.lines.is_empty());
            }
            // On a live stream, the next line may be a long time coming:
            // what has arrived goes now (whole lines only).
            if self.live && !batch.lines.is_empty() && !self.reader.buffer().contains(&b'\n') {
                return Ok(true);
            }
        }
        Ok(true)
    }

    /// Reads one line into `batch`, however far it runs past the reader's
    /// buffer; false at the end of the input.
    fn read_line(&mut self, batch: &mut LineBatch) -> Result<bool, IoError> {
        let start = batch.data.len();
        let n = self
            .reader
            .read_until(b'\n', &mut batch.data)
            .map_err(|source| IoError {
                action: "reading",
                path: self.path.clone(),
                source,
            })?;
        if n == 0 {
            return Ok(false);
        }
        self.offset += n as u64;
        self.line_no += 1;
        if std::mem::take(&mut self.at_start) && batch.data[start..].starts_with(BOM) {
            // Counted in the offset, kept out of the event.
            batch.data.drain(start..start + BOM.len());
        }
        match content_len(&batch.data[start..]) {
            Some(len) => batch.lines.push((self.line_no, start..start + len)),
            None => batch.data.truncate(start),
        }
        Ok(true)
    }

    /// Moves the whole lines in the reader's buffer, up to `max` lines in
    /// `batch`, into `batch` with one copy; false when the buffer holds no
    /// whole line. Each line is kept as [`LineSource::read_line`] keeps it
    /// (by [`content_len`]), and every line's bytes are counted.
    fn take_buffered(&mut self, batch: &mut LineBatch, max: usize) -> bool {
        let buffered = self.reader.buffer();
        let base = batch.data.len();
        let mut used = 0;
        for newline in memchr::memchr_iter(b'\n', buffered) {
            if batch.lines.len() >= max {
                break;
            }
            self.line_no += 1;
            if let Some(len) = content_len(&buffered[used..newline]) {
                batch
                    .lines
                    .push((self.line_no, base + used..base + used + len));
            }
            used = newline + 1;
        }
        if used == 0 {
            return false;
        }
        batch.data.extend_from_slice(&buffered[..used]);
        self.offset += used as u64;
        self.reader.consume(used);
        true
    }
}

/// How much of `line` is the line itself, its end-of-line bytes (`\n`,
/// `\r`) trimmed; `None` for a blank line, which is skipped.
fn content_len(line: &[u8]) -> Option<usize> {
    let mut end = line.len();
    while end > 0 && matches!(line[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    (!line[..end].iter().all(u8::is_ascii_whitespace)).then_some(end)
}

/// A buffered reader of `path`, or of stdin for `-`.
pub fn open_reader(path: &Path) -> Result<Box<dyn BufRead + Send>, IoError> {
    Ok(if path == Path::new("-") {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        Box::new(BufReader::new(File::open(path).map_err(|source| {
            IoError {
                action: "opening",
                path: path.to_path_buf(),
                source,
            }
        })?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One line of a generated input: its text and how it ends.
    fn line() -> impl Strategy<Value = (String, &'static str)> {
        let text = prop_oneof![
            4 => "[a-z{}\":,0-9 ]{1,40}",
            1 => "[ \t]{0,3}",
            // Longer than the reader's buffer, so lines cross refills.
            1 => "[a-z]{1,3}".prop_map(|s| s.repeat(30_000)),
        ];
        (text, prop_oneof![Just("\n"), Just("\r\n"), Just("\r\r\n")])
    }

    /// What reading `input` must give, worked out separately: per line that
    /// is not blank, its number, its text without the end of line (and the
    /// first without a byte-order mark), and the bytes up to its end.
    fn expected(input: &[u8]) -> Vec<(u64, Vec<u8>, u64)> {
        let mut out = Vec::new();
        let mut at = 0;
        for (i, piece) in input.split_inclusive(|&b| b == b'\n').enumerate() {
            at += piece.len() as u64;
            let mut text = piece;
            if i == 0 {
                text = text.strip_prefix(BOM).unwrap_or(text);
            }
            while let [rest @ .., b'\n' | b'\r'] = text {
                text = rest;
            }
            if !text.iter().all(u8::is_ascii_whitespace) {
                out.push((i as u64 + 1, text.to_vec(), at));
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Whole buffered lines are taken in one copy and any other line
        /// one by one; either way each batch holds the lines, numbers and
        /// resume positions that reading the input line by line gives.
        #[test]
        fn batches_hold_every_line_and_position(
            lines in prop::collection::vec(line(), 0..60),
            bom in any::<bool>(),
            last_newline in any::<bool>(),
            max in 1usize..40,
        ) {
            let mut input = if bom { BOM.to_vec() } else { Vec::new() };
            for (text, end) in &lines {
                input.extend_from_slice(text.as_bytes());
                input.extend_from_slice(end.as_bytes());
            }
            if !last_newline && input.ends_with(b"\n") {
                input.pop();
            }
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("in.jsonl");
            std::fs::write(&path, &input).expect("writes");
            let want = expected(&input);

            let mut source = LineSource::open(&path).expect("opens");
            let mut batch = LineBatch::default();
            let mut got = Vec::new();
            while source.next_batch(&mut batch, max).expect("reads") {
                prop_assert!(batch.len() <= max);
                for (number, text) in batch.iter() {
                    got.push((number, text.to_vec()));
                }
                // A full batch stops right after its last line; the last
                // batch at the end of the input.
                let (offset, _) = source.position();
                let until = if batch.len() == max { want[got.len() - 1].2 } else { input.len() as u64 };
                prop_assert_eq!(offset, until);
            }
            prop_assert_eq!(source.position().0, input.len() as u64);
            let want: Vec<(u64, Vec<u8>)> = want.into_iter().map(|(n, t, _)| (n, t)).collect();
            prop_assert_eq!(got, want);
        }
    }
}
