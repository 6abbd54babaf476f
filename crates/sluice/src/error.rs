//! Errors that stop a run, by whose problem they are.
//!
//! A pipeline author needs to know whether to fix their config, their
//! plugin, or their environment; the variants say which (and the binary
//! maps them to exit codes), and each carries the name of the key, file or
//! plugin concerned. The variants wrap the errors of the crates that raise
//! them.

use thiserror::Error;

pub use sluice_config::ConfigError;
pub use sluice_core::IoError;
pub use sluice_core::plugin::PluginError;
pub use sluice_core::state::StateError;
pub use sluice_kafka::KafkaError;

/// The input broke a limit the pipeline sets on it (`dead_letter_limits`:
/// the share or the rate of dead letters): the data's problem, or the
/// config's view of it, to look at before running again.
#[derive(Debug, Error)]
#[error("input: {0}")]
pub struct InputError(pub String);

/// Any error that stops a run.
#[derive(Debug, Error)]
pub enum Error {
    /// A bad pipeline configuration: the user's to fix.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A plugin that could not be loaded, configured or called.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// An input or output the host could not use.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The Kafka cluster refused or failed a request.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The state directory or a checkpoint.
    #[error(transparent)]
    State(#[from] StateError),
    /// See [`InputError`].
    #[error(transparent)]
    Input(#[from] InputError),
    /// A thread running window shards (`parallelism`) could not start or
    /// stopped.
    #[error("{0}")]
    Worker(String),
}

impl Error {
    /// The process exit code: 2 for what the user must fix before running
    /// again (config, plugin), 1 for the environment (I/O, Kafka, state), 3
    /// for input that broke a limit set on it.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::Plugin(_) => 2,
            Error::Io(_) | Error::Kafka(_) | Error::State(_) | Error::Worker(_) => 1,
            Error::Input(_) => 3,
        }
    }
}
