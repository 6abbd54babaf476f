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
                return Ok(!batch.lines.is_empty());
            }
            self.offset += n as u64;
            self.line_no += 1;
            if std::mem::take(&mut self.at_start) && batch.data[start..].starts_with(BOM) {
                // Counted in the offset, kept out of the event.
                batch.data.drain(start..start + BOM.len());
            }
            let mut end = batch.data.len();
            while end > start && matches!(batch.data[end - 1], b'\n' | b'\r') {
                end -= 1;
            }
            if batch.data[start..end].iter().all(u8::is_ascii_whitespace) {
                batch.data.truncate(start);
            } else {
                batch.lines.push((self.line_no, start..end));
            }
            // On a live stream, the next line may be a long time coming:
            // what has arrived goes now (whole lines only).
            if self.live && !batch.lines.is_empty() && !self.reader.buffer().contains(&b'\n') {
                return Ok(true);
            }
        }
        Ok(true)
    }
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
