//! Where events come from: JSON-lines files and stdin, or Kafka topics.

mod file;
pub mod read_ahead;

pub use file::{InputFile, LineBatch, LineSource, open_reader};

use std::fmt;

/// Where one event came from, as late records and dead letters report it.
#[derive(Debug, Clone, Copy)]
pub enum Origin<'a> {
    /// A line of a file (1-based).
    Line(u64),
    /// A Kafka message.
    Kafka {
        /// Topic name.
        topic: &'a str,
        /// Partition number.
        partition: i32,
        /// Offset in the partition.
        offset: i64,
    },
}

/// The JSON members that locate the event: `"line":3` or
/// `"topic":"t","partition":0,"offset":17`.
impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Origin::Line(n) => write!(f, r#""line":{n}"#),
            Origin::Kafka {
                topic,
                partition,
                offset,
            } => {
                let mut quoted = String::with_capacity(topic.len() + 2);
                crate::decode::write_json_string(&mut quoted, topic);
                write!(
                    f,
                    r#""topic":{quoted},"partition":{partition},"offset":{offset}"#
                )
            }
        }
    }
}
