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

/// Reads non-blank lines from a file (or stdin for `-`), numbering them.
pub struct LineSource {
    path: PathBuf,
    reader: Box<dyn BufRead + Send>,
    line_no: u64,
    /// Bytes consumed, blank lines included.
    offset: u64,
}

impl LineSource {
    /// Opens `path`; `-` is stdin.
    pub fn open(path: &Path) -> Result<Self, IoError> {
        Self::open_at(path, 0, 0)
    }

    /// Opens `path` to carry on after `offset` bytes holding `line` lines,
    /// where a checkpoint left it. Stdin cannot seek: only offset 0 works.
    pub fn open_at(path: &Path, offset: u64, line: u64) -> Result<Self, IoError> {
        let fail = |action: &'static str| {
            move |source| IoError {
                action,
                path: path.to_path_buf(),
                source,
            }
        };
        let reader: Box<dyn Read + Send> = if path == Path::new("-") {
            if offset > 0 {
                return Err(fail("resuming")(std::io::Error::other(
                    "stdin cannot seek back to a checkpoint",
                )));
            }
            Box::new(std::io::stdin())
        } else {
            let mut file = File::open(path).map_err(fail("opening"))?;
            let metadata = file.metadata().map_err(fail("reading the size of"))?;
            if !metadata.is_file() {
                // A FIFO or device: read from where it is; it has no past to
                // seek back to.
                if offset > 0 {
                    return Err(fail("resuming")(std::io::Error::other(
                        "it is not a regular file, so it cannot seek back to a checkpoint",
                    )));
                }
                return Ok(Self {
                    path: path.to_path_buf(),
                    reader: Box::new(BufReader::with_capacity(1 << 16, Box::new(file))),
                    line_no: line,
                    offset,
                });
            }
            let length = metadata.len();
            if length < offset {
                return Err(fail("resuming")(std::io::Error::other(format!(
                    "the checkpoint read {offset} bytes of it but it now has {length}: \
                     it is not the input the state was built from"
                ))));
            }
            file.seek(SeekFrom::Start(offset))
                .map_err(fail("seeking in"))?;
            Box::new(file)
        };
        Ok(Self {
            path: path.to_path_buf(),
            reader: Box::new(BufReader::with_capacity(1 << 16, reader)),
            line_no: line,
            offset,
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
            let mut end = batch.data.len();
            while end > start && matches!(batch.data[end - 1], b'\n' | b'\r') {
                end -= 1;
            }
            if batch.data[start..end].iter().all(u8::is_ascii_whitespace) {
                batch.data.truncate(start);
                continue;
            }
            batch.lines.push((self.line_no, start..end));
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
