//! Finding plugins by reference: `builtin/NAME` for the default plugins that
//! are compiled into the binary, or a path to a `.wasm` component.
//!
//! Each distinct plugin is compiled once per run, however many aggregations use it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use sluice_core::plugin::PluginError;

use crate::engine::{AnyAggregator, PluginEngine};

/// The prefix that names a default plugin.
pub const BUILTIN_PREFIX: &str = "builtin/";

/// Names of the default aggregator plugins shipped in this binary (`stats`, `count`, ...).
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    sluice_builtins::aggregator_names()
}

/// Names of the default trigger plugins (`event-time`, `early`, `count`).
pub fn builtin_trigger_names() -> impl Iterator<Item = &'static str> {
    sluice_builtins::trigger_names()
}

/// Reads the bytes a trigger reference points to: `builtin/NAME` for the
/// default triggers (a namespace of their own: `builtin/count` the trigger is
/// not `builtin/count` the aggregator), or a path.
pub fn trigger_bytes(reference: &str, base_dir: &Path) -> Result<Vec<u8>, PluginError> {
    if let Some(name) = reference.strip_prefix(BUILTIN_PREFIX) {
        return sluice_builtins::trigger(name)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| PluginError::Load {
                plugin: reference.to_string(),
                message: format!(
                    "no such built-in trigger; built-in triggers are: {}",
                    builtin_trigger_names().collect::<Vec<_>>().join(", ")
                ),
            });
    }
    plugin_bytes(reference, base_dir)
}

/// The component bytes of a default aggregator plugin.
pub fn builtin_bytes(name: &str) -> Option<&'static [u8]> {
    sluice_builtins::aggregator(name)
}

/// Reads the bytes a plugin reference points to; relative paths are taken
/// from `base_dir` (the pipeline config's directory).
pub fn plugin_bytes(reference: &str, base_dir: &Path) -> Result<Vec<u8>, PluginError> {
    if let Some(name) = reference.strip_prefix(BUILTIN_PREFIX) {
        return builtin_bytes(name)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| PluginError::Load {
                plugin: reference.to_string(),
                message: format!(
                    "no such built-in plugin; built-ins are: {}",
                    builtin_names().collect::<Vec<_>>().join(", ")
                ),
            });
    }
    let path = resolve_path(reference, base_dir);
    std::fs::read(&path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            " (a plugin built from source lands there only once built: build it, or fix the path)"
        } else {
            ""
        };
        PluginError::Load {
            plugin: reference.to_string(),
            message: format!("cannot read {}: {e}{hint}", path.display()),
        }
    })
}

fn resolve_path(reference: &str, base_dir: &Path) -> PathBuf {
    let path = Path::new(reference);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

/// Compiles plugins on first use and hands out the compiled component after.
pub struct PluginRegistry<'e> {
    engine: &'e PluginEngine,
    base_dir: PathBuf,
    compiled: HashMap<String, AnyAggregator>,
}

impl<'e> PluginRegistry<'e> {
    /// A registry compiling with `engine`, resolving paths from `base_dir`.
    pub fn new(engine: &'e PluginEngine, base_dir: impl Into<PathBuf>) -> Self {
        Self {
            engine,
            base_dir: base_dir.into(),
            compiled: HashMap::new(),
        }
    }

    /// The compiled plugin for `reference`, of interface 0.1 or 0.2.
    pub fn get(&mut self, reference: &str) -> Result<AnyAggregator, PluginError> {
        if let Some(plugin) = self.compiled.get(reference) {
            return Ok(plugin.clone());
        }
        let bytes = plugin_bytes(reference, &self.base_dir)?;
        let plugin = self.engine.compile_any(reference, &bytes)?;
        self.compiled.insert(reference.to_string(), plugin.clone());
        Ok(plugin)
    }
}
