//! `sluice plugin new`: a new plugin (a Rust crate against the SDK, or a
//! Python, JavaScript or C project) that builds as it is, so that a plugin
//! author starts from working code and edits it rather than from a blank
//! page and the WIT file.

use std::path::{Path, PathBuf};

use crate::error::{ConfigError, Error, IoError};

/// Where this checkout's SDK lives; a scaffold depends on it by path.
pub fn default_sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk")
}

/// The language a scaffold is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    /// A crate against `sluice-sdk`, built with cargo for wasm32-wasip2.
    Rust,
    /// `app.py` and `aggregator.py`, built with componentize-py.
    Python,
    /// One ES module, built with componentize-js.
    Js,
    /// One C file against `wit-bindgen c` bindings, built with clang and wasm-tools.
    C,
}

/// This checkout's root: a non-Rust scaffold's `build.sh` uses its WIT
/// package and `scripts/common.sh`.
pub fn default_checkout_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Creates `dir/name/` with a plugin in `language` that builds as it is;
/// returns the directory. Rust gets `Cargo.toml` and `src/lib.rs` (against
/// the SDK at `sdk`); the others get their sources and a `build.sh` that
/// builds with the checkout at `checkout`. Refuses a bad name or an
/// existing directory.
pub fn new_plugin(
    name: &str,
    language: Language,
    dir: &Path,
    sdk: &Path,
    checkout: &Path,
) -> Result<PathBuf, Error> {
    let valid = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        return Err(ConfigError(format!(
            "plugin name {name:?}: use lowercase letters, digits, `-` or `_`, starting with a letter"
        ))
        .into());
    }
    let root = dir.join(name);
    if root.exists() {
        return Err(ConfigError(format!("{} already exists", root.display())).into());
    }
    let (what, base) = match language {
        Language::Rust => ("finding the SDK at", sdk),
        _ => ("finding the sluice checkout at", checkout),
    };
    let base = std::fs::canonicalize(base).map_err(|source| IoError {
        action: what,
        path: base.to_path_buf(),
        source,
    })?;
    let write = |path: PathBuf, text: String| {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| IoError {
                action: "creating",
                path: parent.to_path_buf(),
                source,
            })?;
        }
        std::fs::write(&path, text).map_err(|source| IoError {
            action: "writing",
            path,
            source,
        })
    };
    let file = name.replace('-', "_");
    let root_text = base.display().to_string();
    // Templates name their blanks `{name}`, `{file}` (the name as a file
    // stem), `{lang}` and `{root}` (this checkout).
    let fill = |template: &str, lang: &str| {
        template
            .replace("{name}", name)
            .replace("{file}", &file)
            .replace("{lang}", lang)
            .replace("{root}", &root_text)
    };
    let build_sh = |lang: &str| fill(include_str!("templates/build.sh"), lang);
    match language {
        Language::Rust => {
            write(root.join("Cargo.toml"), cargo_toml(name, &base))?;
            write(root.join("src/lib.rs"), lib_rs(name))?;
        }
        Language::Python => {
            write(
                root.join("app.py"),
                fill(include_str!("templates/app.py"), "python"),
            )?;
            let resources = fill(include_str!("templates/aggregator.py"), "python");
            write(root.join("aggregator.py"), resources)?;
            write_script(&root.join("build.sh"), build_sh("python"))?;
        }
        Language::Js => {
            let js = fill(include_str!("templates/plugin.js"), "js");
            write(root.join(format!("{file}.js")), js)?;
            write_script(&root.join("build.sh"), build_sh("js"))?;
        }
        Language::C => {
            let c = fill(include_str!("templates/plugin.c"), "c");
            write(root.join(format!("{file}.c")), c)?;
            write_script(&root.join("build.sh"), build_sh("c"))?;
        }
    }
    Ok(root)
}

/// What to do after [`new_plugin`] made `root`: how to build the plugin,
/// where its component lands, how to check it with the law checker, and the
/// line that uses it in a pipeline. `target_dir` is the cargo target
/// directory a Rust build will use (`CARGO_TARGET_DIR`, if set), since that
/// decides where the component is written.
pub fn next_steps(
    name: &str,
    language: Language,
    root: &Path,
    target_dir: Option<&Path>,
) -> String {
    let file = name.replace('-', "_");
    let root_text = root.display();
    let (build, wasm) = match language {
        Language::Rust => (
            format!("cd {root_text} && cargo build --release --target wasm32-wasip2"),
            target_dir
                .map_or_else(|| root.join("target"), Path::to_path_buf)
                .join(format!("wasm32-wasip2/release/{file}.wasm")),
        ),
        _ => (
            format!("{root_text}/build.sh"),
            root.join(format!("{file}.wasm")),
        ),
    };
    let wasm = wasm.display();
    format!(
        "created {root_text}
next steps:
  build it:   {build}
  component:  {wasm}
  check it:   sluice plugin test {wasm}
  use it:     in a pipeline's aggregations:
                - {{ name: {name}, plugin: {wasm}, field: <a numeric field> }}
"
    )
}

/// Writes an executable script.
fn write_script(path: &Path, text: String) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt as _;
    let io = |source| IoError {
        action: "writing",
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(path, text).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
    Ok(())
}

fn cargo_toml(name: &str, sdk: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"

# A sluice plugin: build with
#   cargo build --release --target wasm32-wasip2
# and use target/wasm32-wasip2/release/{file}.wasm in a pipeline's `plugin:`.
[lib]
crate-type = ["cdylib"]

[dependencies]
sluice-sdk = {{ path = "{sdk}" }}
serde = {{ version = "1", features = ["derive"] }}

[profile.release]
lto = true
strip = true
codegen-units = 1

# Standalone: not part of any enclosing workspace.
[workspace]
"#,
        file = name.replace('-', "_"),
        sdk = sdk.display()
    )
}

fn lib_rs(name: &str) -> String {
    format!(
        r##"//! The `{name}` sluice plugin: the mean of the values above a threshold.
//!
//! Edit `Config`, `State` and the methods below; `sluice plugin test` checks
//! that what you wrote merges and snapshots correctly.

use serde::{{Deserialize, Serialize}};
use sluice_sdk::{{Aggregator, Info, Output, export_aggregator}};

/// The configured aggregation, shared by every window.
pub struct Plugin {{
    above: f64,
}}

/// `{{"above": 0}}`: values at or below it are ignored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {{
    #[serde(default)]
    above: f64,
}}

/// What one window keeps; serde makes it snapshotable.
#[derive(Default, Serialize, Deserialize)]
pub struct State {{
    count: u64,
    sum: f64,
}}

impl Aggregator for Plugin {{
    type Config = Config;
    type State = State;
    const INFO: Info = Info::mergeable(
        "{name}",
        env!("CARGO_PKG_VERSION"),
        "Mean of the values above a threshold.",
    )
    .with_config_help(r#"{{"above": 0}}"#);

    fn new(config: Config) -> Result<Self, String> {{
        if !config.above.is_finite() {{
            return Err("above: must be a finite number".into());
        }}
        Ok(Plugin {{ above: config.above }})
    }}

    fn outputs(&self) -> Vec<Output> {{
        vec![
            Output::integer("count", "values above the threshold"),
            Output::float("mean", "their mean; null when there are none"),
        ]
    }}

    fn create(&self) -> State {{
        State::default()
    }}

    fn add(&self, state: &mut State, values: &[f64], _times: &[i64]) {{
        for &v in values.iter().filter(|&&v| v > self.above) {{
            state.count += 1;
            state.sum += v;
        }}
    }}

    fn merge(&self, state: &mut State, other: &State) -> Result<(), String> {{
        state.count += other.count;
        state.sum += other.sum;
        Ok(())
    }}

    fn finish(&self, state: &State) -> Vec<Option<f64>> {{
        let mean = (state.count > 0).then(|| state.sum / state.count as f64);
        vec![Some(state.count as f64), mean]
    }}
}}

export_aggregator!(Plugin);
"##
    )
}
