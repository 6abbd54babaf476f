//! One output of a pipeline (results, late events, dead letters,
//! duplicates), wherever it goes: a JSON-lines file or a Kafka topic.

use sluice_core::sink::JsonlWriter;
use sluice_core::state::OutputPosition;
use sluice_kafka::KafkaWriter;

use crate::error::Error;

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
    ) -> Result<(), Error> {
        match self {
            Output::File(w) => w.write_line(line)?,
            Output::Kafka(w) => w.send(key, line, reason)?,
        }
        Ok(())
    }

    /// Where the output stands, for a checkpoint (after [`Output::sync`]);
    /// `None` for a standard stream.
    pub fn position(&self) -> Option<OutputPosition> {
        match self {
            Output::File(w) => w.file_length().map(OutputPosition::File),
            Output::Kafka(w) => w.position().map(OutputPosition::Topic),
        }
    }

    /// Moves records kept while a Kafka producer's queue was full on to it;
    /// returns whether some are still kept (the output is backlogged).
    pub fn drain(&mut self) -> Result<bool, Error> {
        Ok(match self {
            Output::File(_) => false,
            Output::Kafka(w) => w.drain()?,
        })
    }

    /// Records read back at a restore that the replay has not emitted again.
    pub fn pending(&self) -> usize {
        match self {
            Output::File(_) => 0,
            Output::Kafka(w) => w.pending(),
        }
    }

    /// Like [`Output::flush`], and for a file also waits for the disk.
    pub fn sync(&mut self) -> Result<(), Error> {
        match self {
            Output::File(w) => w.sync()?,
            Output::Kafka(w) => w.flush()?,
        }
        Ok(())
    }

    /// Makes everything written so far durable (written to the file, or
    /// acknowledged by the brokers).
    pub fn flush(&mut self) -> Result<(), Error> {
        match self {
            Output::File(w) => w.flush()?,
            Output::Kafka(w) => w.flush()?,
        }
        Ok(())
    }
}
