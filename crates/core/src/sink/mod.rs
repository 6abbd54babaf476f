//! Where records go: window results, late events and dead letters, each a
//! JSON-lines file, stdout/stderr, or a Kafka topic.

mod record;

pub use record::{
    OutputNames, late_reason, write_dead_letter, write_duplicate, write_late, write_result,
    write_result_marked,
};

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::IoError;

/// Where a [`JsonlWriter`] writes.
enum Target {
    File(File),
    Stdout(std::io::Stdout),
    Stderr(std::io::Stderr),
}

impl Write for Target {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Target::File(f) => f.write(buf),
            Target::Stdout(o) => o.write(buf),
            Target::Stderr(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Target::File(f) => f.flush(),
            Target::Stdout(o) => o.flush(),
            Target::Stderr(e) => e.flush(),
        }
    }
}

/// A JSON-lines output: a file (created or truncated), stdout (`-`) or stderr.
pub struct JsonlWriter {
    path: PathBuf,
    out: BufWriter<Target>,
    records: u64,
    /// Bytes written since the file was created (files only).
    bytes: u64,
}

impl JsonlWriter {
    /// Creates `path`, or writes stdout for `-`.
    pub fn create(path: &Path) -> Result<Self, IoError> {
        Self::open(path, None)
    }

    /// Opens `path` to carry on a run restored from a checkpoint: the file is
    /// cut back to `length` bytes (what the checkpoint covers; the rest is
    /// written again by the replay) and written from there. A file shorter
    /// than `length` is an error: output the checkpoint counted on is gone.
    pub fn resume(path: &Path, length: u64) -> Result<Self, IoError> {
        Self::open(path, Some(length))
    }

    fn open(path: &Path, resume_at: Option<u64>) -> Result<Self, IoError> {
        let fail = |action: &'static str| {
            move |source| IoError {
                action,
                path: path.to_path_buf(),
                source,
            }
        };
        let target = if path == Path::new("-") {
            Target::Stdout(std::io::stdout())
        } else {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(fail("creating the directory of"))?;
            }
            match resume_at {
                None => Target::File(File::create(path).map_err(fail("creating"))?),
                Some(length) => {
                    let mut file = std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .open(path)
                        .map_err(fail("opening"))?;
                    let found = file.metadata().map_err(fail("reading the size of"))?.len();
                    if found < length {
                        return Err(IoError {
                            action: "resuming",
                            path: path.to_path_buf(),
                            source: std::io::Error::other(format!(
                                "the checkpoint covers {length} bytes of it but it has {found}: \
                                 output was lost outside sluice"
                            )),
                        });
                    }
                    file.set_len(length).map_err(fail("truncating"))?;
                    file.seek(SeekFrom::Start(length))
                        .map_err(fail("seeking in"))?;
                    Target::File(file)
                }
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(1 << 16, target),
            records: 0,
            bytes: resume_at.unwrap_or(0),
        })
    }

    /// Writes to stderr, for late and dead-letter records nobody configured a place for.
    pub fn stderr() -> Self {
        Self {
            path: PathBuf::from("<stderr>"),
            out: BufWriter::new(Target::Stderr(std::io::stderr())),
            records: 0,
            bytes: 0,
        }
    }

    /// Writes one record (a JSON object without the newline).
    pub fn write_line(&mut self, line: &str) -> Result<(), IoError> {
        self.records += 1;
        self.bytes += line.len() as u64 + 1;
        self.out
            .write_all(line.as_bytes())
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|source| self.error(source))
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The file's length once flushed; `None` for a standard stream.
    pub fn file_length(&self) -> Option<u64> {
        matches!(self.out.get_ref(), Target::File(_)).then_some(self.bytes)
    }

    /// Pushes buffered records to the file.
    pub fn flush(&mut self) -> Result<(), IoError> {
        self.out.flush().map_err(|source| self.error(source))
    }

    /// Flushes and waits until the file's contents are on disk, so that a
    /// checkpoint never counts on output a power cut could take back.
    pub fn sync(&mut self) -> Result<(), IoError> {
        self.flush()?;
        if let Target::File(f) = self.out.get_ref() {
            f.sync_data().map_err(|source| self.error(source))?;
        }
        Ok(())
    }

    fn error(&self, source: std::io::Error) -> IoError {
        IoError {
            action: "writing",
            path: self.path.clone(),
            source,
        }
    }
}
