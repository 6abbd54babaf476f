//! Errors the host reports, by whose problem they are.
//!
//! A pipeline author needs to know whether to fix their config, their plugin,
//! or their environment; the variants say which, and carry the name of the
//! key, file or plugin concerned.

use std::path::PathBuf;

use thiserror::Error;

/// A bad pipeline configuration: the user's to fix.
#[derive(Debug, Error)]
#[error("config error: {0}")]
pub struct ConfigError(pub String);

/// A plugin that could not be loaded, configured or called.
#[derive(Debug, Error)]
pub enum PluginError {
    /// The host could not set up the wasm runtime itself.
    #[error("plugin runtime: {what}: {message}")]
    Setup {
        /// What the host was doing.
        what: &'static str,
        /// The underlying error.
        message: String,
    },
    /// The plugin file is missing, is not a component, or has the wrong world.
    #[error("plugin {plugin}: {message}")]
    Load {
        /// The plugin reference or path.
        plugin: String,
        /// What is wrong with it.
        message: String,
    },
    /// The plugin rejected its configuration.
    #[error("plugin {plugin} rejected its config: {message}")]
    Config {
        /// The plugin.
        plugin: String,
        /// The plugin's own explanation.
        message: String,
    },
    /// A call into the plugin trapped, timed out, ran out of memory or
    /// returned something the host cannot use.
    #[error("plugin {plugin} {message}")]
    Call {
        /// The plugin, with its name and version.
        plugin: String,
        /// What went wrong.
        message: String,
    },
}

impl PluginError {
    pub(crate) fn setup(what: &'static str, error: impl std::fmt::Display) -> Self {
        Self::Setup {
            what,
            message: error.to_string(),
        }
    }
}

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

/// The Kafka cluster refused or failed a request: the environment's problem
/// (brokers down, topic missing), to be retried after it is fixed.
#[derive(Debug, Error)]
#[error("kafka: {what}: {message}")]
pub struct KafkaError {
    /// What the host was doing.
    pub what: String,
    /// librdkafka's explanation.
    pub message: String,
}

/// Any error that stops a run.
#[derive(Debug, Error)]
pub enum Error {
    /// See [`ConfigError`].
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// See [`PluginError`].
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// See [`IoError`].
    #[error(transparent)]
    Io(#[from] IoError),
    /// See [`KafkaError`].
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// See [`crate::state::StateError`]: the state directory or a checkpoint.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}
