//! `reload:`: hot reload of the pipeline's plugin files (the reloader itself
//! is `sluice_wasm::reload`).

use serde::Deserialize;

/// The pipeline's `reload:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// Watch the directories of the pipeline's plugin files (default true).
    #[serde(default = "yes")]
    pub watch: bool,
    /// `IP:port` of the admin endpoint (`POST /admin/reload`); must be a
    /// loopback address, since the endpoint has no authentication.
    #[serde(default)]
    pub admin: Option<String>,
    /// Generated cases per law when a new version is law-checked.
    #[serde(default = "default_law_cases")]
    pub law_cases: usize,
}

fn yes() -> bool {
    true
}

fn default_law_cases() -> usize {
    50
}
