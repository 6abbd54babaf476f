//! Where records go: window results, late events and dead letters, each a
//! JSON-lines file, stdout/stderr, or a Kafka topic.

mod kafka;
mod record;

pub use kafka::KafkaWriter;
pub use record::{
    OutputNames, late_reason, write_dead_letter, write_duplicate, write_late, write_result,
    write_result_marked,
};

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::IoError;

/// A JSON-lines output: a file (created or truncated), stdout (`-`) or stderr.
pub struct JsonlWriter {
    path: PathBuf,
    out: BufWriter<Box<dyn Write>>,
    records: u64,
}

impl JsonlWriter {
    /// Creates `path`, or writes stdout for `-`.
    pub fn create(path: &Path) -> Result<Self, IoError> {
        let out: Box<dyn Write> = if path == Path::new("-") {
            Box::new(std::io::stdout())
        } else {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|source| IoError {
                    action: "creating the directory of",
                    path: path.to_path_buf(),
                    source,
                })?;
            }
            Box::new(File::create(path).map_err(|source| IoError {
                action: "creating",
                path: path.to_path_buf(),
                source,
            })?)
        };
        Ok(Self {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(1 << 16, out),
            records: 0,
        })
    }

    /// Writes to stderr, for late and dead-letter records nobody configured a place for.
    pub fn stderr() -> Self {
        Self {
            path: PathBuf::from("<stderr>"),
            out: BufWriter::new(Box::new(std::io::stderr())),
            records: 0,
        }
    }

    /// Writes one record (a JSON object without the newline).
    pub fn write_line(&mut self, line: &str) -> Result<(), IoError> {
        self.records += 1;
        self.out
            .write_all(line.as_bytes())
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|source| self.error(source))
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Pushes buffered records to the file.
    pub fn flush(&mut self) -> Result<(), IoError> {
        self.out.flush().map_err(|source| self.error(source))
    }

    fn error(&self, source: std::io::Error) -> IoError {
        IoError {
            action: "writing",
            path: self.path.clone(),
            source,
        }
    }
}

/// One output of a pipeline, wherever it goes.
pub enum Output {
    /// A JSON-lines file or a standard stream.
    File(JsonlWriter),
    /// A Kafka topic.
    Kafka(KafkaWriter),
}

impl Output {
    /// Writes one record; `key` becomes the Kafka message key and `reason`
    /// a `reason` header (files carry both inside the record already).
    pub fn write(
        &mut self,
        key: Option<&str>,
        line: &str,
        reason: Option<&str>,
    ) -> Result<(), crate::error::Error> {
        match self {
            Output::File(w) => w.write_line(line)?,
            Output::Kafka(w) => w.send(key, line, reason)?,
        }
        Ok(())
    }

    /// Makes everything written so far durable (written to the file, or
    /// acknowledged by the brokers).
    pub fn flush(&mut self) -> Result<(), crate::error::Error> {
        match self {
            Output::File(w) => w.flush()?,
            Output::Kafka(w) => w.flush()?,
        }
        Ok(())
    }
}
