//! The `sluice` binary's library: one pipeline run wired together from its
//! configuration, and the operations around it.
//!
//! [`pipeline`] opens the plugins, outputs and state a config names and
//! drives events from a file or Kafka source through `sluice_core`'s
//! stages; [`admin`] takes reload requests; [`metrics`] serves what a long
//! run is doing, and [`status`] shows it on a live page; [`progress`]
//! shows how far a file run has got; [`logging`] writes
//! the host's diagnostics; [`scaffold`] creates new plugin projects; and
//! [`error`] groups every error by whose problem it is, for the exit code.
//!
//! The engine itself lives in the crates this one wires together:
//! `sluice-config` (what a pipeline says), `sluice-core` (windows,
//! watermarks, triggers, checkpoints), `sluice-wasm` (the plugin sandbox),
//! `sluice-rocks` (durable state) and `sluice-kafka` (Kafka in and out).

#![warn(missing_docs)]

pub mod admin;
pub mod error;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod progress;
pub mod scaffold;
pub mod status;
