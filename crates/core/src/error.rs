//! The error of an input or output the host could not use. Plugin errors
//! are [`crate::plugin::PluginError`], checkpoint errors
//! [`crate::state::StateError`]; the binary groups them all by whose
//! problem they are.

use std::path::PathBuf;

use thiserror::Error;

/// An input or output the host could not use: a file, stdin, stdout.
#[derive(Debug, Error)]
#[error("{action} {path}: {source}")]
pub struct IoError {
    /// What the host was doing (`reading`, `writing`, `opening`).
    pub action: &'static str,
    /// The file concerned (`-` for stdin or stdout).
    pub path: PathBuf,
    /// The operating system's error.
    #[source]
    pub source: std::io::Error,
}
