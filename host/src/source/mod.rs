//! Where events come from. Today: JSON-lines files and stdin.

mod file;

pub use file::{LineBatch, LineSource};
